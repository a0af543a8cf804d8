//! Multi-platform images: which command a pod runs when its image is an
//! index. A pod is admitted before it is scheduled, so its node's
//! architecture is unknown then; the injector may wrap the image's command
//! only when every platform the pod could land on starts the same one.
//! Pure: the registry answers come in, a decision goes out.

use oci_client::manifest::ImageIndexEntry;

use super::cache::ImageConfig;
use super::failure::LookupFailure;

/// The platforms of one index that are looked up; an index with more Linux
/// platforms than this is not one lookups take on.
pub const MAX_PLATFORMS: usize = 16;

/// A Linux platform of an index entry (`None` on an entry: the index does
/// not say, and runtimes take it for any platform).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platform {
    pub architecture: String,
    pub variant: Option<String>,
}

impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "linux/{}", self.architecture)?;
        match &self.variant {
            Some(variant) => write!(f, "/{variant}"),
            None => Ok(()),
        }
    }
}

/// One runnable manifest of an image and its config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlatformConfig {
    pub platform: Option<Platform>,
    pub config: ImageConfig,
}

/// The image configs behind one manifest digest: one for an image
/// manifest, one per Linux platform for an index. What the cache keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Platforms(Vec<PlatformConfig>);

impl Platforms {
    /// A single-platform image.
    pub fn single(config: ImageConfig) -> Self {
        Self(vec![PlatformConfig {
            platform: None,
            config,
        }])
    }

    pub fn from_index(configs: Vec<PlatformConfig>) -> Self {
        Self(configs)
    }

    /// The command the pod runs on whichever node it lands: `arch` is the
    /// architecture the pod selects (`kubernetes.io/arch` in its
    /// `nodeSelector`), `None` for any. The platforms that may run there
    /// must agree; if they do not, nothing is wrapped (the wrong command
    /// would be a broken pod on some nodes).
    ///
    /// With an architecture, the entries naming it are the candidates, as
    /// a runtime prefers them (every variant of it, since the node's is
    /// not known); entries without a platform count only when no entry has
    /// one. Without exact entries a runtime may fall back to a compatible
    /// architecture (386 on amd64, arm on arm64), which is not guessed.
    pub fn command_for(&self, arch: Option<&str>) -> Result<&ImageConfig, LookupFailure> {
        let candidates: Vec<&PlatformConfig> = match arch.map(normalize_arch) {
            None => self.0.iter().collect(),
            Some(arch) => {
                let exact: Vec<_> = self
                    .0
                    .iter()
                    .filter(|p| p.platform.as_ref().is_some_and(|p| p.architecture == arch))
                    .collect();
                if exact.is_empty() && self.0.iter().all(|p| p.platform.is_none()) {
                    self.0.iter().collect()
                } else {
                    exact
                }
            }
        };
        let (first, rest) = candidates.split_first().ok_or(LookupFailure::NoPlatform)?;
        if rest.iter().all(|p| p.config == first.config) {
            Ok(&first.config)
        } else {
            Err(LookupFailure::PlatformsDisagree)
        }
    }

    /// Bytes of command kept (what the cache holds for this digest).
    pub fn command_bytes(&self) -> usize {
        self.0.iter().map(|p| p.config.bytes()).sum()
    }
}

/// GOARCH names as runtimes normalise them (`uname -m` spellings too).
fn normalize_arch(arch: &str) -> &str {
    match arch {
        "x86_64" | "x86-64" => "amd64",
        "aarch64" => "arm64",
        "armhf" | "armel" => "arm",
        "i386" | "i686" => "386",
        other => other,
    }
}

/// The entries of an index a Linux node may run, with their platform:
/// other systems' and attestation manifests (`unknown/unknown`) are left
/// out, entries without a platform kept.
pub fn linux_entries(entries: &[ImageIndexEntry]) -> Vec<(Option<Platform>, &str)> {
    entries
        .iter()
        .filter_map(|entry| match &entry.platform {
            None => Some((None, entry.digest.as_str())),
            Some(p) if p.os == "linux" => Some((
                Some(Platform {
                    architecture: normalize_arch(&p.architecture).to_string(),
                    variant: p.variant.clone(),
                }),
                entry.digest.as_str(),
            )),
            Some(_) => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(program: &str) -> ImageConfig {
        ImageConfig {
            entrypoint: vec![program.to_string()],
            cmd: vec![],
        }
    }

    fn on(arch: &str, program: &str) -> PlatformConfig {
        PlatformConfig {
            platform: Some(Platform {
                architecture: arch.into(),
                variant: None,
            }),
            config: config(program),
        }
    }

    #[test]
    fn platforms_that_agree_give_their_command_wherever_the_pod_lands() {
        let agree = Platforms::from_index(vec![on("amd64", "/app"), on("arm64", "/app")]);
        assert_eq!(agree.command_for(None), Ok(&config("/app")));
        assert_eq!(agree.command_for(Some("arm64")), Ok(&config("/app")));
        assert_eq!(
            Platforms::single(config("/app")).command_for(Some("s390x")),
            Ok(&config("/app")),
            "a single-platform image says nothing of platforms"
        );
    }

    #[test]
    fn platforms_that_disagree_are_decided_only_by_the_pods_architecture() {
        let differ = Platforms::from_index(vec![on("amd64", "/app"), on("arm64", "/app-arm")]);
        assert_eq!(
            differ.command_for(None),
            Err(LookupFailure::PlatformsDisagree)
        );
        assert_eq!(differ.command_for(Some("amd64")), Ok(&config("/app")));
        assert_eq!(differ.command_for(Some("arm64")), Ok(&config("/app-arm")));
        assert_eq!(differ.command_for(Some("aarch64")), Ok(&config("/app-arm")));
        assert_eq!(
            differ.command_for(Some("riscv64")),
            Err(LookupFailure::NoPlatform)
        );
        let any = |program: &str| PlatformConfig {
            platform: None,
            config: config(program),
        };
        // Without a selector an entry without a platform may run, so it
        // must agree; with one, runtimes prefer the entries naming it.
        let mixed = Platforms::from_index(vec![on("amd64", "/app"), any("/other")]);
        assert_eq!(
            mixed.command_for(None),
            Err(LookupFailure::PlatformsDisagree)
        );
        assert_eq!(mixed.command_for(Some("amd64")), Ok(&config("/app")));
        // No entry names the architecture: a runtime might fall back to a
        // compatible one (386 on amd64), which is not guessed.
        let fallback = Platforms::from_index(vec![on("386", "/x"), any("/y")]);
        assert_eq!(
            fallback.command_for(Some("amd64")),
            Err(LookupFailure::NoPlatform)
        );
        let unnamed = Platforms::from_index(vec![any("/y"), any("/y")]);
        assert_eq!(unnamed.command_for(Some("amd64")), Ok(&config("/y")));
    }

    #[test]
    fn only_linux_entries_are_runnable() {
        let entries: Vec<ImageIndexEntry> = serde_json::from_value(serde_json::json!([
            {"mediaType": "m", "digest": "sha256:a", "size": 1,
             "platform": {"os": "linux", "architecture": "arm", "variant": "v7"}},
            {"mediaType": "m", "digest": "sha256:w", "size": 1,
             "platform": {"os": "windows", "architecture": "amd64"}},
            {"mediaType": "m", "digest": "sha256:att", "size": 1,
             "platform": {"os": "unknown", "architecture": "unknown"}},
            {"mediaType": "m", "digest": "sha256:n", "size": 1}
        ]))
        .unwrap();
        let runnable = linux_entries(&entries);
        let digests: Vec<&str> = runnable.iter().map(|(_, d)| *d).collect();
        assert_eq!(digests, ["sha256:a", "sha256:n"]);
        assert_eq!(
            runnable[0].0.as_ref().map(ToString::to_string).as_deref(),
            Some("linux/arm/v7")
        );
    }
}
