//! Why a lookup failed, in words safe to show the pod's author: a category,
//! never the registry's own text (which an attacker's registry chooses, and
//! which would make admission a probe of what the server can reach).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupFailure {
    /// The registry refused the credentials (or their absence).
    Unauthorized,
    /// No such repository, tag or digest.
    NotFound,
    /// Connection refused, DNS, TLS, or a 5xx.
    Unreachable,
    /// No answer before the deadline.
    TimedOut,
    /// The registry is not one lookups may contact.
    NotAllowed,
    /// A manifest or config over the size limit.
    TooLarge,
    /// Not a reference, or what came back is not an image.
    Invalid,
    /// The platforms of a multi-platform image the pod may run on start
    /// different commands (its `nodeSelector` can pick one architecture).
    PlatformsDisagree,
    /// No Linux platform of the image matches the pod's architecture.
    NoPlatform,
    /// An index with more Linux platforms than lookups take on.
    TooManyPlatforms,
    /// More images in one pod than one review looks up.
    TooManyImages,
}

impl LookupFailure {
    /// What a registry's refusal means: the status only, never its body.
    pub fn from_status(status: u16) -> Self {
        match status {
            401 | 403 => LookupFailure::Unauthorized,
            404 => LookupFailure::NotFound,
            429 | 500.. => LookupFailure::Unreachable,
            _ => LookupFailure::Invalid,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            LookupFailure::Unauthorized => "the registry refused access",
            LookupFailure::NotFound => "image not found in its registry",
            LookupFailure::Unreachable => "registry unreachable",
            LookupFailure::TimedOut => "registry did not answer in time",
            LookupFailure::NotAllowed => "registry not allowed for lookups",
            LookupFailure::TooLarge => "image manifest, config or command too large",
            LookupFailure::Invalid => "not a usable image",
            LookupFailure::PlatformsDisagree => {
                "the image's platforms start different commands (select one with nodeSelector kubernetes.io/arch)"
            }
            LookupFailure::NoPlatform => "no Linux platform of the image matches the pod",
            LookupFailure::TooManyPlatforms => "the image index has too many platforms",
            LookupFailure::TooManyImages => "too many images in the pod to look up",
        }
    }

    /// Whether the next pod should wait before asking again: only for
    /// outages. A refusal or a missing image depends on who asks and is
    /// asked again (one pod's bad credentials never decide another's).
    pub fn is_outage(self) -> bool {
        matches!(self, LookupFailure::Unreachable | LookupFailure::TimedOut)
    }
}

impl std::fmt::Display for LookupFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_answers_map_to_categories_and_only_outages_are_remembered() {
        assert_eq!(LookupFailure::from_status(401), LookupFailure::Unauthorized);
        assert_eq!(LookupFailure::from_status(403), LookupFailure::Unauthorized);
        assert_eq!(LookupFailure::from_status(404), LookupFailure::NotFound);
        assert_eq!(LookupFailure::from_status(429), LookupFailure::Unreachable);
        assert_eq!(LookupFailure::from_status(503), LookupFailure::Unreachable);
        assert_eq!(LookupFailure::from_status(418), LookupFailure::Invalid);
        assert!(!LookupFailure::Unauthorized.is_outage());
        assert!(!LookupFailure::NotFound.is_outage());
        assert!(LookupFailure::Unreachable.is_outage());
        assert!(LookupFailure::TimedOut.is_outage());
    }
}
