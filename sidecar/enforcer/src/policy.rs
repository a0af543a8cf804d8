//! The runtime policy in force: fetched from the policy service by
//! long-poll, cached on disk (the last good one survives restarts and
//! outages), or built-in audit defaults when neither is available.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use palisade_common::policy::{Mode, RuntimeRules};
use palisade_common::wire::{RuntimeBundle, RuntimePolicy};

use crate::config::Settings;

const CACHE_FILE: &str = "policy.json";
const LONG_POLL_SECS: u64 = 25;

pub struct PolicyHolder {
    current: RwLock<Arc<RuntimeBundle>>,
}

/// Audit-only defaults: drift, shells and common attacker tooling.
pub fn builtin_defaults() -> RuntimeBundle {
    let denied = [
        "sh", "bash", "dash", "ash", "zsh", "nc", "ncat", "socat", "curl", "wget",
    ];
    RuntimeBundle {
        etag: "builtin".into(),
        policies: vec![RuntimePolicy {
            name: "builtin-defaults".into(),
            mode: Mode::Audit,
            rules: RuntimeRules {
                denied_processes: denied.iter().map(|s| s.to_string()).collect(),
                ..RuntimeRules::default()
            },
        }],
        exceptions: Vec::new(),
    }
}

impl PolicyHolder {
    /// The cached policy if there is one, else the built-in defaults.
    pub fn start(state_dir: &Path) -> (Self, &'static str) {
        let (bundle, source) = match load_cache(state_dir) {
            Some(b) => (b, "cache"),
            None => (builtin_defaults(), "built-in defaults"),
        };
        (
            Self {
                current: RwLock::new(Arc::new(bundle)),
            },
            source,
        )
    }

    pub fn current(&self) -> Arc<RuntimeBundle> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn replace(&self, bundle: RuntimeBundle) {
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(bundle);
    }
}

fn cache_path(state_dir: &Path) -> PathBuf {
    state_dir.join(CACHE_FILE)
}

fn load_cache(state_dir: &Path) -> Option<RuntimeBundle> {
    let text = std::fs::read_to_string(cache_path(state_dir)).ok()?;
    serde_json::from_str(&text).ok()
}

/// Written to a temporary file and renamed, so a crash never leaves half a policy.
fn save_cache(state_dir: &Path, bundle: &RuntimeBundle) -> std::io::Result<()> {
    let tmp = state_dir.join(format!("{CACHE_FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec(bundle).unwrap_or_default())?;
    std::fs::rename(tmp, cache_path(state_dir))
}

/// Long-polls the service for changes until `stop`; on errors keeps the
/// current policy and retries with backoff.
pub fn fetch_loop(
    client: ureq::Agent,
    settings: Settings,
    holder: Arc<PolicyHolder>,
    stop: Arc<AtomicBool>,
) {
    let Some(base) = settings.policy_url.clone() else {
        return;
    };
    let url = format!("{}/api/v1/bundle", base.trim_end_matches('/'));
    let labels = settings.labels_query();
    let mut backoff = Duration::from_millis(500);
    while !stop.load(Ordering::Relaxed) {
        let etag = holder.current().etag.clone();
        let mut request = client
            .get(&url)
            .query("namespace", &settings.pod.namespace)
            .query("labels", &labels)
            .query("etag", &etag)
            .query("wait", LONG_POLL_SECS.to_string());
        if let Some(header) = settings.token.as_ref().and_then(|t| t.header()) {
            request = request.header("Authorization", &header);
        }
        match request.call() {
            Ok(mut resp) if resp.status() == 200 => {
                match resp.body_mut().read_json::<RuntimeBundle>() {
                    Ok(bundle) => {
                        tracing::info!(etag = %bundle.etag, policies = bundle.policies.len(), "runtime policy updated");
                        if let Err(e) = save_cache(&settings.state_dir, &bundle) {
                            tracing::warn!(error = %e, "cannot cache the policy");
                        }
                        holder.replace(bundle);
                        backoff = Duration::from_millis(500);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable policy from the service; keeping the current one");
                        sleep_unless_stopped(&stop, backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
            Ok(resp) if resp.status() == 304 => backoff = Duration::from_millis(500),
            Ok(resp) => {
                tracing::warn!(
                    status = resp.status().as_u16(),
                    "policy service refused the policy request"
                );
                sleep_unless_stopped(&stop, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
            Err(e) => {
                tracing::warn!(error = %e, "policy service unreachable; keeping the current policy");
                sleep_unless_stopped(&stop, backoff);
                backoff = (backoff * 2).min(Duration::from_secs(30));
            }
        }
    }
}

pub fn sleep_unless_stopped(stop: &AtomicBool, total: Duration) {
    let step = Duration::from_millis(50);
    let mut slept = Duration::ZERO;
    while slept < total && !stop.load(Ordering::Relaxed) {
        std::thread::sleep(step);
        slept += step;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_survives_restarts_and_defaults_fill_in() {
        let dir = tempfile::tempdir().unwrap();
        let (holder, source) = PolicyHolder::start(dir.path());
        assert_eq!(source, "built-in defaults");
        assert_eq!(holder.current().policies[0].mode, Mode::Audit);

        let mut pushed = builtin_defaults();
        pushed.etag = "v2".into();
        pushed.policies[0].mode = Mode::Enforce;
        save_cache(dir.path(), &pushed).unwrap();
        let (holder, source) = PolicyHolder::start(dir.path());
        assert_eq!(source, "cache");
        assert_eq!(*holder.current(), pushed);

        std::fs::write(dir.path().join(CACHE_FILE), "{broken").unwrap();
        assert_eq!(PolicyHolder::start(dir.path()).1, "built-in defaults");
    }
}
