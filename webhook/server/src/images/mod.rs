//! Image commands for prevention. A confined container that sets no
//! `command` runs its image's ENTRYPOINT and CMD; the injector can wrap it
//! only when it knows them. This looks them up in the image config in the
//! registry ([`registry`]), with the pod's `imagePullSecrets`, cached by
//! manifest digest, within a deadline. What cannot be learnt in time comes
//! back as a failure, and the container is admitted unconfined.
//!
//! The answer carries the manifest digest the tag named, which the injector
//! pins the image to: the command it wraps is the one the node runs. For a
//! multi-platform image every Linux platform is looked up, and the command
//! is taken only where the platforms the pod may land on agree
//! ([`platforms`]).
//!
//! The image name is the pod author's, so every lookup is bounded: which
//! registries may be contacted and where they may send the server
//! ([`gate`]), how many images one review may look up, how many lookups run
//! at once, how much of a manifest, config or token answer is read
//! ([`registry`]), and what a failure may tell the author ([`failure`]).

mod auth;
mod cache;
mod failure;
mod gate;
mod platforms;
mod registry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use futures_util::{stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::Secret;
use oci_client::manifest::{OciImageManifest, OciManifest};
use oci_client::Reference;
use palisade_engine::admission::mutate::{ImageCommand, ImageCommands};
use palisade_engine::admission::ImageLookups;
use palisade_engine::settings::ImageLookupSettings;
use serde::Deserialize;
use tokio::sync::{OnceCell, Semaphore};

use crate::metrics::{LookupResult, Metrics};
use auth::{credential_for, Credential};
use cache::{CacheLimits, ImageConfig, LookupCache};
use failure::LookupFailure;
use gate::Reach;
use platforms::{PlatformConfig, Platforms};
use registry::{RegistryClient, Session};

/// Images one review may look up; the rest stay unconfined.
const MAX_IMAGES_PER_REVIEW: usize = 8;
/// Registry lookups in flight at once, over all reviews.
const MAX_CONCURRENT_FETCHES: usize = 16;
/// Platform manifests (and their configs) of one index read at once.
const PLATFORMS_AT_ONCE: usize = 4;
/// An image config is a few KiB; anything this large is not one.
const MAX_CONFIG_BYTES: usize = 1024 * 1024;
/// ENTRYPOINT and CMD of one image, all its platforms together: real ones
/// are a few hundred bytes; this bounds the cache at `cache_entries` times
/// it.
const MAX_COMMAND_BYTES: usize = 32 * 1024;
/// Pull secrets' data of one review: `(data key, bytes)`.
type SecretData = Vec<(String, Vec<u8>)>;

pub struct ImageResolver {
    settings: ImageLookupSettings,
    kube: Option<kube::Client>,
    registry: RegistryClient,
    cache: Mutex<LookupCache>,
    fetches: Semaphore,
    metrics: Arc<Metrics>,
}

impl ImageResolver {
    /// `kube` reads pull secrets (none without it). Fails only when no
    /// HTTP client can be built (TLS backend).
    pub fn new(
        settings: ImageLookupSettings,
        kube: Option<kube::Client>,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        let limits = CacheLimits {
            capacity: settings.cache_entries,
            tag_ttl: Duration::from_secs(settings.tag_ttl_secs),
            failure_ttl: Duration::from_secs(settings.failure_ttl_secs),
        };
        let reach = Reach {
            allowed: settings.allowed_registries.clone(),
            insecure: settings.insecure_registries.clone(),
        };
        let registry = RegistryClient::new(reach, Duration::from_millis(settings.timeout_ms))?;
        Ok(Self {
            settings,
            kube,
            registry,
            cache: Mutex::new(LookupCache::new(limits)),
            fetches: Semaphore::new(MAX_CONCURRENT_FETCHES),
            metrics,
        })
    }

    /// Looks up the images of `lookups` at once; each answers within the
    /// configured timeout or as a failure.
    pub async fn resolve(&self, lookups: &ImageLookups) -> ImageCommands {
        let timeout = Duration::from_millis(self.settings.timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        // Pull secrets are read once per review, and only if some image
        // is not in the cache.
        let secrets = OnceCell::new();
        let review = Review {
            lookups,
            secrets: &secrets,
            deadline,
        };
        let (looked_up, too_many) = lookups
            .images
            .split_at(lookups.images.len().min(MAX_IMAGES_PER_REVIEW));
        let arch = lookups.arch.as_deref();
        let answers = join_all(looked_up.iter().map(|image| async {
            let looked_up = tokio::time::timeout_at(deadline, self.command(image, &review))
                .await
                .unwrap_or(Err(LookupFailure::TimedOut));
            let decided = looked_up.and_then(|(digest, platforms)| {
                platforms
                    .command_for(arch)
                    .map(|config| known(digest, config))
            });
            let command = decided.unwrap_or_else(|failure| self.failed(image, failure));
            (image.clone(), command)
        }))
        .await;
        let skipped = too_many.iter().map(|image| {
            (
                image.clone(),
                self.failed(image, LookupFailure::TooManyImages),
            )
        });
        answers.into_iter().chain(skipped).collect()
    }

    /// The manifest digest `image` names now and its configs.
    async fn command(
        &self,
        image: &str,
        review: &Review<'_>,
    ) -> Result<(String, Platforms), LookupFailure> {
        let reference: Reference = image.parse().map_err(|_| LookupFailure::Invalid)?;
        let whole = reference.whole();
        let cached = self
            .lock_cache()
            .get(&whole, reference.digest(), Instant::now());
        if let Some(found) = cached {
            self.metrics.count_lookup(LookupResult::Cached);
            return Ok(found);
        }
        let registry = reference.resolve_registry().to_string();
        let settings = &self.settings;
        if !gate::may_contact(
            &registry,
            &settings.allowed_registries,
            &settings.insecure_registries,
        ) {
            return Err(LookupFailure::NotAllowed);
        }
        let credential = self.credential(&registry, review).await;
        // An outage is remembered per registry and credential (hashed):
        // the next pod does not wait for the same registry again.
        let attempt = attempt_key(&whole, credential.as_ref());
        if let Some(failure) = self.lock_cache().recent_failure(&attempt, Instant::now()) {
            self.metrics.count_lookup(LookupResult::FailureCached);
            return Err(failure);
        }
        let _permit = self
            .fetches
            .acquire()
            .await
            .map_err(|_| LookupFailure::Unreachable)?;
        let started = Instant::now();
        let fetched = tokio::time::timeout_at(review.deadline, self.fetch(&reference, credential))
            .await
            .unwrap_or(Err(LookupFailure::TimedOut));
        // A timeout is the registry's only when it had the time: one that
        // came of waiting for a slot behind other registries' lookups is
        // not remembered against this one.
        let had_time = started.elapsed() * 2 >= Duration::from_millis(self.settings.timeout_ms);
        if let Err(failure) = fetched {
            if failure.is_outage() && (failure != LookupFailure::TimedOut || had_time) {
                self.lock_cache().fail(&attempt, failure, Instant::now());
            }
        }
        fetched
    }

    /// Asks the registry: the current digest (one HEAD), then the manifest
    /// and config(s) unless that digest's are kept. For an index, the
    /// config of every Linux platform (a few at a time): which one a node
    /// runs is decided only after admission.
    async fn fetch(
        &self,
        reference: &Reference,
        credential: Option<Credential>,
    ) -> Result<(String, Platforms), LookupFailure> {
        let session = self.registry.session(reference, credential.as_ref());
        let digest = session.digest().await?;
        let now = Instant::now();
        if reference.digest().is_none() {
            self.lock_cache().saw_tag(&reference.whole(), &digest, now);
        }
        if let Some(platforms) = self.lock_cache().by_digest(&digest, now) {
            self.metrics.count_lookup(LookupResult::Revalidated);
            return Ok((digest, platforms));
        }
        let platforms = match session.manifest(&digest).await? {
            OciManifest::Image(manifest) => Platforms::single(config(&session, &manifest).await?),
            OciManifest::ImageIndex(index) => {
                let entries = platforms::linux_entries(&index.manifests);
                if entries.len() > platforms::MAX_PLATFORMS {
                    return Err(LookupFailure::TooManyPlatforms);
                }
                // Platforms sharing a manifest are read once.
                let mut distinct: Vec<String> =
                    entries.iter().map(|(_, d)| d.to_string()).collect();
                distinct.sort_unstable();
                distinct.dedup();
                // A few at a time: what one lookup holds at once stays
                // bounded whatever the index lists.
                let read = stream::iter(distinct)
                    .map(|digest| platform_config(&session, digest))
                    .buffer_unordered(PLATFORMS_AT_ONCE)
                    .try_collect::<HashMap<String, ImageConfig>>()
                    .await?;
                let configs = entries
                    .into_iter()
                    .filter_map(|(platform, digest)| {
                        let config = read.get(digest)?.clone();
                        Some(PlatformConfig { platform, config })
                    })
                    .collect();
                Platforms::from_index(configs)
            }
        };
        // What is kept is bounded by what one entry may hold, whatever the
        // registry serves.
        if platforms.command_bytes() > MAX_COMMAND_BYTES {
            return Err(LookupFailure::TooLarge);
        }
        self.lock_cache()
            .store(&digest, platforms.clone(), Instant::now());
        self.metrics.count_lookup(LookupResult::Fetched);
        Ok((digest, platforms))
    }

    /// The first pull secret of the pod with an entry for `registry`.
    async fn credential(&self, registry: &str, review: &Review<'_>) -> Option<Credential> {
        let secrets = review
            .secrets
            .get_or_init(|| self.read_pull_secrets(review.lookups))
            .await;
        secrets
            .iter()
            .find_map(|(key, data)| credential_for(key, data, registry))
    }

    async fn read_pull_secrets(&self, lookups: &ImageLookups) -> SecretData {
        let Some(kube) = self.kube.as_ref().filter(|_| self.settings.pull_secrets) else {
            return Vec::new();
        };
        let api: kube::Api<Secret> = kube::Api::namespaced(kube.clone(), &lookups.namespace);
        let mut data = Vec::new();
        for name in &lookups.pull_secrets {
            match api.get_opt(name).await {
                Ok(Some(secret)) => data.extend(
                    secret
                        .data
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(key, value)| (key, value.0)),
                ),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(secret = %name, namespace = %lookups.namespace, error = %e, "cannot read pull secret")
                }
            }
        }
        data
    }

    fn failed(&self, image: &str, failure: LookupFailure) -> ImageCommand {
        tracing::warn!(%image, reason = %failure, "image command lookup failed");
        self.metrics.count_lookup(LookupResult::Failed);
        ImageCommand::Failed(failure.to_string())
    }

    /// Forgets every config, digest and failure (the next lookups ask the
    /// registry).
    pub fn clear_cache(&self) {
        let mut cache = self.lock_cache();
        *cache = LookupCache::new(cache.limits());
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, LookupCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// One review's lookups, sharing its pull secrets and deadline.
struct Review<'a> {
    lookups: &'a ImageLookups,
    secrets: &'a OnceCell<SecretData>,
    deadline: tokio::time::Instant,
}

/// The config of one platform of an index, by its manifest's digest.
async fn platform_config(
    session: &Session<'_>,
    digest: String,
) -> Result<(String, ImageConfig), LookupFailure> {
    let OciManifest::Image(manifest) = session.manifest(&digest).await? else {
        // An index inside an index: no runtime picks from it.
        return Err(LookupFailure::Invalid);
    };
    let config = config(session, &manifest).await?;
    Ok((digest, config))
}

/// ENTRYPOINT and CMD from the config blob `manifest` names, within the
/// size limit and checked against its digest.
async fn config(
    session: &Session<'_>,
    manifest: &OciImageManifest,
) -> Result<ImageConfig, LookupFailure> {
    let declared = usize::try_from(manifest.config.size).unwrap_or(usize::MAX);
    if declared > MAX_CONFIG_BYTES {
        return Err(LookupFailure::TooLarge);
    }
    let body = session
        .blob(&manifest.config.digest, MAX_CONFIG_BYTES)
        .await?;
    image_config(&body).ok_or(LookupFailure::Invalid)
}

/// The failure cache's key: the reference and a hash of the credential
/// (never the credential itself).
fn attempt_key(reference: &str, credential: Option<&Credential>) -> String {
    match credential {
        None => format!("{reference} anonymous"),
        Some(c) => format!("{reference} {}", hex::encode(c.fingerprint())),
    }
}

/// What the pod runs, and the digest to pin its image to so that a tag
/// moved later does not start another command under the launcher.
fn known(digest: String, config: &ImageConfig) -> ImageCommand {
    ImageCommand::Known {
        entrypoint: config.entrypoint.clone(),
        cmd: config.cmd.clone(),
        digest,
    }
}

/// ENTRYPOINT and CMD from an OCI (or Docker) image config.
fn image_config(config: &[u8]) -> Option<ImageConfig> {
    #[derive(Deserialize)]
    struct Image {
        #[serde(default)]
        config: Option<Runtime>,
    }
    #[derive(Deserialize)]
    struct Runtime {
        #[serde(default, rename = "Entrypoint")]
        entrypoint: Option<Vec<String>>,
        #[serde(default, rename = "Cmd")]
        cmd: Option<Vec<String>>,
    }
    let image: Image = serde_json::from_slice(config).ok()?;
    let runtime = image.config;
    Some(ImageConfig {
        entrypoint: runtime
            .as_ref()
            .and_then(|r| r.entrypoint.clone())
            .unwrap_or_default(),
        cmd: runtime.and_then(|r| r.cmd).unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_keyed_by_a_hash_of_the_whole_credential() {
        let cred = |password: &str| Credential {
            username: "AWS".into(),
            password: password.into(),
        };
        let a = attempt_key("r/app:1", Some(&cred("token-a")));
        let b = attempt_key("r/app:1", Some(&cred("token-b")));
        assert_ne!(a, b, "same user name, other password: another attempt");
        assert!(!a.contains("token-a") && !a.contains("AWS"));
        assert_ne!(a, attempt_key("r/app:1", None));
    }

    #[test]
    fn configs_without_a_command_or_not_images() {
        let config = image_config(br#"{"config": {"Entrypoint": ["/bin/app"], "Cmd": null}}"#);
        assert_eq!(
            config,
            Some(ImageConfig {
                entrypoint: vec!["/bin/app".into()],
                cmd: vec![]
            })
        );
        assert_eq!(
            image_config(b"{}"),
            Some(ImageConfig {
                entrypoint: vec![],
                cmd: vec![]
            })
        );
        assert_eq!(image_config(b"[1]"), None);
    }
}
