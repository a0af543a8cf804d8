//! Image commands for prevention. A confined container that sets no
//! `command` runs its image's ENTRYPOINT and CMD; the injector can wrap it
//! only when it knows them. This looks them up in the image config in the
//! registry (oci-client), with the pod's `imagePullSecrets`, cached by
//! manifest digest, within a deadline. What cannot be learnt in time comes
//! back as a failure, and the container is admitted unconfined.

mod auth;
mod cache;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use k8s_openapi::api::core::v1::Secret;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use palisade_engine::admission::mutate::{ImageCommand, ImageCommands};
use palisade_engine::admission::ImageLookups;
use palisade_engine::settings::ImageLookupSettings;
use serde::Deserialize;

use crate::metrics::{LookupResult, Metrics};
pub use auth::{credential_for, Credential};
use cache::{CacheLimits, Cached, ImageConfig, LookupCache};

/// Registry clients kept, one per credential (a client keeps the first
/// credential it is given for a registry, so pods with different secrets
/// never share one).
const MAX_CLIENTS: usize = 64;

pub struct ImageResolver {
    settings: ImageLookupSettings,
    kube: Option<kube::Client>,
    clients: Mutex<HashMap<Option<(String, Credential)>, Client>>,
    cache: Mutex<LookupCache>,
    metrics: Arc<Metrics>,
}

impl ImageResolver {
    /// `kube` reads pull secrets (none without it).
    pub fn new(
        settings: ImageLookupSettings,
        kube: Option<kube::Client>,
        metrics: Arc<Metrics>,
    ) -> Self {
        let limits = CacheLimits {
            capacity: settings.cache_entries,
            tag_ttl: Duration::from_secs(settings.tag_ttl_secs),
            failure_ttl: Duration::from_secs(settings.failure_ttl_secs),
        };
        Self {
            settings,
            kube,
            clients: Mutex::new(HashMap::new()),
            cache: Mutex::new(LookupCache::new(limits)),
            metrics,
        }
    }

    /// Looks up every image of `lookups` at once; each answers within the
    /// configured timeout or as a failure.
    pub async fn resolve(&self, lookups: &ImageLookups) -> ImageCommands {
        let timeout = Duration::from_millis(self.settings.timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        // The registry gets `timeout` (a late answer is remembered as a
        // failure); reading pull secrets a little more, so a stuck
        // apiserver cannot hold the review either.
        let last_resort = deadline + Duration::from_millis(100);
        let answers = join_all(lookups.images.iter().map(|image| async move {
            let lookup = self.command(image, lookups, deadline);
            let command = match tokio::time::timeout_at(last_resort, lookup).await {
                Ok(command) => command,
                Err(_) => {
                    let reason = format!("pull secrets not read within {} ms", timeout.as_millis());
                    self.metrics.count_lookup(LookupResult::Failed);
                    tracing::warn!(%image, %reason, "image command lookup failed");
                    ImageCommand::Failed(reason)
                }
            };
            (image.clone(), command)
        }))
        .await;
        answers.into_iter().collect()
    }

    async fn command(
        &self,
        image: &str,
        lookups: &ImageLookups,
        deadline: tokio::time::Instant,
    ) -> ImageCommand {
        let reference: Reference = match image.parse() {
            Ok(reference) => reference,
            Err(e) => return self.failed(image, &format!("not an image reference: {e}")),
        };
        let whole = reference.whole();
        let cached = self
            .lock_cache()
            .get(&whole, reference.digest(), Instant::now());
        if let Cached::Config(config) = cached {
            self.metrics.count_lookup(LookupResult::Cached);
            return known(config);
        }
        let registry = reference.resolve_registry().to_string();
        let credential = self.credential(&registry, lookups).await;
        // A failure is remembered per credential: a pod without access
        // does not hold back one with it.
        let attempt = match &credential {
            Some(c) => format!("{whole} as {}", c.username),
            None => format!("{whole} anonymously"),
        };
        if let Some(reason) = self.lock_cache().recent_failure(&attempt, Instant::now()) {
            self.metrics.count_lookup(LookupResult::FailureCached);
            return ImageCommand::Failed(reason);
        }
        let fetched =
            tokio::time::timeout_at(deadline, self.fetch(&reference, registry, credential));
        match fetched.await {
            Ok(Ok(config)) => known(config),
            Ok(Err(reason)) => self.failed(&attempt, &reason),
            Err(_) => {
                let timeout = self.settings.timeout_ms;
                self.failed(&attempt, &format!("no answer within {timeout} ms"))
            }
        }
    }

    /// Asks the registry: the current digest (one HEAD), then the config
    /// unless that digest's is kept.
    async fn fetch(
        &self,
        reference: &Reference,
        registry: String,
        credential: Option<Credential>,
    ) -> Result<ImageConfig, String> {
        let auth = match &credential {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        let client = self.client(credential.map(|c| (registry, c)))?;
        let digest = match reference.digest() {
            Some(digest) => digest.to_string(),
            None => client
                .fetch_manifest_digest(reference, &auth)
                .await
                .map_err(|e| e.to_string())?,
        };
        let now = Instant::now();
        if reference.digest().is_none() {
            self.lock_cache().saw_tag(&reference.whole(), &digest, now);
        }
        if let Some(config) = self.lock_cache().by_digest(&digest, now) {
            self.metrics.count_lookup(LookupResult::Revalidated);
            return Ok(config);
        }
        let pinned = reference.clone_with_digest(digest.clone());
        let (_, _, config) = client
            .pull_manifest_and_config(&pinned, &auth)
            .await
            .map_err(|e| e.to_string())?;
        let config = image_config(&config)?;
        self.lock_cache()
            .store(&digest, config.clone(), Instant::now());
        self.metrics.count_lookup(LookupResult::Fetched);
        Ok(config)
    }

    /// The first pull secret of the pod with an entry for `registry`.
    async fn credential(&self, registry: &str, lookups: &ImageLookups) -> Option<Credential> {
        let kube = self.kube.as_ref().filter(|_| self.settings.pull_secrets)?;
        let secrets: kube::Api<Secret> = kube::Api::namespaced(kube.clone(), &lookups.namespace);
        for name in &lookups.pull_secrets {
            let secret = match secrets.get_opt(name).await {
                Ok(Some(secret)) => secret,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(secret = %name, namespace = %lookups.namespace, error = %e, "cannot read pull secret");
                    continue;
                }
            };
            let data = secret.data.unwrap_or_default();
            let found = data
                .iter()
                .find_map(|(key, value)| credential_for(key, &value.0, registry));
            if found.is_some() {
                return found;
            }
        }
        None
    }

    fn client(&self, key: Option<(String, Credential)>) -> Result<Client, String> {
        let mut clients = self.clients.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(client) = clients.get(&key) {
            return Ok(client.clone());
        }
        if clients.len() >= MAX_CLIENTS {
            clients.clear();
        }
        let protocol = if self.settings.insecure_registries.is_empty() {
            ClientProtocol::Https
        } else {
            ClientProtocol::HttpsExcept(self.settings.insecure_registries.clone())
        };
        let timeout = Duration::from_millis(self.settings.timeout_ms);
        let config = ClientConfig {
            protocol,
            connect_timeout: Some(timeout),
            read_timeout: Some(timeout),
            ..ClientConfig::default()
        };
        let client = Client::try_from(config).map_err(|e| format!("registry client: {e}"))?;
        clients.insert(key, client.clone());
        Ok(client)
    }

    fn failed(&self, reference: &str, reason: &str) -> ImageCommand {
        tracing::warn!(image = %reference, %reason, "image command lookup failed");
        self.metrics.count_lookup(LookupResult::Failed);
        self.lock_cache().fail(reference, reason, Instant::now());
        ImageCommand::Failed(reason.to_string())
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

fn known(config: ImageConfig) -> ImageCommand {
    ImageCommand::Known {
        entrypoint: config.entrypoint,
        cmd: config.cmd,
    }
}

/// ENTRYPOINT and CMD from an OCI (or Docker) image config.
fn image_config(config: &str) -> Result<ImageConfig, String> {
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
    let image: Image =
        serde_json::from_str(config).map_err(|e| format!("image config is not an image's: {e}"))?;
    let runtime = image.config;
    Ok(ImageConfig {
        entrypoint: runtime
            .as_ref()
            .and_then(|r| r.entrypoint.clone())
            .unwrap_or_default(),
        cmd: runtime.and_then(|r| r.cmd).unwrap_or_default(),
    })
}
