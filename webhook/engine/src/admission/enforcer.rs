//! Which container is the enforcer. A name anyone can type is not enough: a
//! container named `palisade-enforcer` is the enforcer only when its image
//! is the configured enforcer image's repository (and digest, when the
//! configured image pins one). Anything else under that name would switch
//! runtime protection off, so it is refused.

use std::fmt;

use palisade_common::ENFORCER_CONTAINER;

use crate::policy::images;

/// The configured enforcer image, normalised for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnforcerIdentity {
    /// The configured image, as written, for messages.
    image: String,
    /// `registry/repository`, Docker Hub's short names expanded.
    repository: String,
    digest: Option<String>,
}

/// How a container named `palisade-enforcer` relates to the configured
/// enforcer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The configured enforcer (any tag of its repository, so pods made by
    /// an older release still count).
    Genuine,
    /// Same name, another image: refused.
    Impostor,
}

/// A container that takes the enforcer's name without its image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct ImpostorError {
    /// Field path of the container, e.g. `spec.containers[1]`.
    pub path: String,
    /// What is wrong, without the path.
    pub reason: String,
}

fn normalise(image: &str) -> (String, Option<String>) {
    let parsed = images::parse(image);
    let repository = if parsed.registry == "docker.io" && !parsed.repository.contains('/') {
        format!("docker.io/library/{}", parsed.repository)
    } else {
        format!("{}/{}", parsed.registry, parsed.repository)
    };
    (repository, parsed.digest.map(str::to_string))
}

impl EnforcerIdentity {
    pub fn new(image: &str) -> Self {
        let (repository, digest) = normalise(image);
        Self {
            image: image.to_string(),
            repository,
            digest,
        }
    }

    /// Whether `image` is the configured enforcer: same repository, and the
    /// same digest when the configuration pins one.
    pub fn matches(&self, image: &str) -> bool {
        let (repository, digest) = normalise(image);
        repository == self.repository
            && match &self.digest {
                Some(want) => digest.as_deref() == Some(want.as_str()),
                None => true,
            }
    }

    /// `None` for containers with another name.
    pub fn claim(&self, name: Option<&str>, image: Option<&str>) -> Option<Claim> {
        if name != Some(ENFORCER_CONTAINER) {
            return None;
        }
        Some(match image {
            Some(image) if self.matches(image) => Claim::Genuine,
            _ => Claim::Impostor,
        })
    }

    pub fn impostor(&self, path: impl fmt::Display, found: Option<&str>) -> ImpostorError {
        ImpostorError {
            path: path.to_string(),
            reason: format!(
                "container name {ENFORCER_CONTAINER:?} is reserved for the Palisade enforcer \
                 (image {}), but this container runs {:?}; rename the container",
                self.image,
                found.unwrap_or("")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_tag_of_the_configured_repository_is_the_enforcer() {
        let id = EnforcerIdentity::new("ghcr.io/palisade-dev/palisade-enforcer:0.1.0");
        assert!(id.matches("ghcr.io/palisade-dev/palisade-enforcer:0.1.0"));
        assert!(id.matches("ghcr.io/palisade-dev/palisade-enforcer:0.0.9"));
        assert!(id.matches("ghcr.io/palisade-dev/palisade-enforcer@sha256:abc"));
        assert!(id.matches("ghcr.io/palisade-dev/palisade-enforcer"));
    }

    #[test]
    fn another_repository_or_registry_is_not_the_enforcer() {
        let id = EnforcerIdentity::new("ghcr.io/palisade-dev/palisade-enforcer:0.1.0");
        for image in [
            "busybox:1.36",
            "palisade-enforcer:0.1.0",
            "docker.io/palisade-dev/palisade-enforcer:0.1.0",
            "ghcr.io/palisade-dev/palisade-enforcer-fake:0.1.0",
            "ghcr.io/evil/palisade-enforcer:0.1.0",
            "",
        ] {
            assert!(!id.matches(image), "{image}");
        }
    }

    #[test]
    fn a_pinned_digest_must_match_too() {
        let id = EnforcerIdentity::new("ghcr.io/palisade-dev/palisade-enforcer:0.1.0@sha256:aaa");
        assert!(id.matches("ghcr.io/palisade-dev/palisade-enforcer@sha256:aaa"));
        assert!(id.matches("ghcr.io/palisade-dev/palisade-enforcer:0.1.0@sha256:aaa"));
        assert!(!id.matches("ghcr.io/palisade-dev/palisade-enforcer:0.1.0"));
        assert!(!id.matches("ghcr.io/palisade-dev/palisade-enforcer@sha256:bbb"));
    }

    #[test]
    fn docker_hub_short_names_are_normalised() {
        let id = EnforcerIdentity::new("enforcer:1");
        assert!(id.matches("docker.io/library/enforcer:2"));
        assert!(id.matches("library/enforcer"));
        assert!(!id.matches("docker.io/other/enforcer:1"));
    }

    #[test]
    fn only_the_reserved_name_makes_a_claim() {
        let id = EnforcerIdentity::new("ghcr.io/palisade-dev/palisade-enforcer:0.1.0");
        assert_eq!(id.claim(Some("app"), Some("busybox")), None);
        assert_eq!(
            id.claim(
                Some(ENFORCER_CONTAINER),
                Some("ghcr.io/palisade-dev/palisade-enforcer:9")
            ),
            Some(Claim::Genuine)
        );
        assert_eq!(
            id.claim(Some(ENFORCER_CONTAINER), Some("busybox")),
            Some(Claim::Impostor)
        );
        assert_eq!(
            id.claim(Some(ENFORCER_CONTAINER), None),
            Some(Claim::Impostor)
        );
        let message = id
            .impostor("spec.containers[1]", Some("busybox"))
            .to_string();
        assert!(message.contains("spec.containers[1]"), "{message}");
        assert!(message.contains("reserved"), "{message}");
        assert!(message.contains("\"busybox\""), "{message}");
    }
}
