//! The runtime policy in force: fetched from the policy service by
//! long-poll (which carries the periodic heartbeat too), cached on disk (the last good one survives restarts and
//! outages), or built-in audit defaults when neither is available.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use palisade_common::backoff::{self, Backoff};
use palisade_common::policy::{Mode, RuntimeRules};
use palisade_common::wire::{EnforcerState, Heartbeat, RuntimeBundle, RuntimePolicy};

use crate::config::Settings;
use crate::report::{Reporter, SendError};

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

/// Long-polls the service for changes until `stop`, each poll carrying
/// this enforcer's heartbeat (`POST /api/v1/sync`): one connection per
/// enforcer, one request per heartbeat interval. On errors keeps the
/// current policy and retries after the shared backoff (never before the
/// service's `Retry-After`). A service of an earlier release, without
/// `/sync`, gets a heartbeat and a `GET /api/v1/bundle` long-poll instead,
/// and `/sync` is tried again every [`RETRY_SYNC_AFTER`].
pub fn sync_loop(
    client: ureq::Agent,
    settings: Settings,
    holder: Arc<PolicyHolder>,
    reporter: Reporter,
    stop: Arc<AtomicBool>,
) {
    let Some(base) = settings.policy_url.clone() else {
        return;
    };
    let service = Service {
        client,
        base: format!("{}/api/v1", base.trim_end_matches('/')),
        settings: &settings,
    };
    let mut backoff = Backoff::default();
    let mut without_sync_since: Option<Instant> = None;
    while !stop.load(Ordering::Relaxed) {
        let etag = holder.current().etag.clone();
        let beat = reporter.heartbeat(&settings, EnforcerState::Running, "", &etag);
        // Long-polls that one push ended together must not stay together.
        let wait = backoff::jittered(
            settings.heartbeat.min(Duration::from_secs(LONG_POLL_SECS)),
            WAIT_SPREAD,
            fastrand::f64(),
        );
        let legacy = without_sync_since.is_some_and(|t| t.elapsed() < RETRY_SYNC_AFTER);
        let round = match legacy {
            false => service.sync(&beat, &etag, wait),
            true => service.heartbeat_then_poll(&beat, &etag, wait),
        };
        match round {
            Ok(Round::Updated(bundle)) => {
                tracing::info!(etag = %bundle.etag, policies = bundle.policies.len(), "runtime policy updated");
                if let Err(e) = save_cache(&settings.state_dir, &bundle) {
                    tracing::warn!(error = %e, "cannot cache the policy");
                }
                holder.replace(bundle);
                backoff.succeeded();
            }
            Ok(Round::Unchanged) => backoff.succeeded(),
            Ok(Round::NoSync) => {
                tracing::info!("the policy service has no /api/v1/sync (an earlier release); heartbeats go apart");
                without_sync_since = Some(Instant::now());
            }
            Err(e) => {
                tracing::warn!(error = %e, "policy service did not answer the policy request; keeping the current policy");
                // The heartbeat rides this request: never silent for longer
                // than one interval, whatever the backoff or Retry-After.
                let pause = backoff
                    .failed(e.retry_after(), fastrand::f64())
                    .min(settings.heartbeat);
                sleep_unless_stopped(&stop, pause);
            }
        }
    }
}

/// Share of the long-poll left out at random (see [`backoff::jittered`]).
const WAIT_SPREAD: f64 = 0.2;
/// How long an enforcer speaks the earlier protocol before asking again.
const RETRY_SYNC_AFTER: Duration = Duration::from_secs(600);

/// How one long-poll ended.
enum Round {
    Updated(RuntimeBundle),
    Unchanged,
    /// The service does not know `/sync`.
    NoSync,
}

struct Service<'a> {
    client: ureq::Agent,
    /// `https://.../api/v1`
    base: String,
    settings: &'a Settings,
}

impl Service<'_> {
    fn sync(&self, beat: &Heartbeat, etag: &str, wait: Duration) -> Result<Round, SendError> {
        let request = self
            .authorized(self.client.post(format!("{}/sync", self.base)))
            .query("namespace", &self.settings.pod.namespace)
            .query("labels", self.settings.labels_query())
            .query("etag", etag)
            .query("wait", format!("{:.3}", wait.as_secs_f64()));
        let response = request.send_json(beat)?;
        if response.status() == 404 {
            return Ok(Round::NoSync);
        }
        Self::round(response)
    }

    /// The earlier protocol: a heartbeat, then a long-poll in whole seconds.
    fn heartbeat_then_poll(
        &self,
        beat: &Heartbeat,
        etag: &str,
        wait: Duration,
    ) -> Result<Round, SendError> {
        let beat = self
            .authorized(self.client.post(format!("{}/heartbeat", self.base)))
            .send_json(beat);
        if let Err(e) = beat {
            tracing::debug!(error = %e, "heartbeat not delivered");
        }
        let response = self
            .authorized(self.client.get(format!("{}/bundle", self.base)))
            .query("namespace", &self.settings.pod.namespace)
            .query("labels", self.settings.labels_query())
            .query("etag", etag)
            .query("wait", wait.as_secs().max(1).to_string())
            .call()?;
        Self::round(response)
    }

    fn round(mut response: ureq::http::Response<ureq::Body>) -> Result<Round, SendError> {
        match response.status().as_u16() {
            200 => Ok(Round::Updated(response.body_mut().read_json()?)),
            304 => Ok(Round::Unchanged),
            _ => Err(SendError::from_response(&response)),
        }
    }

    fn authorized<B>(&self, request: ureq::RequestBuilder<B>) -> ureq::RequestBuilder<B> {
        match self.settings.token.as_ref().and_then(|t| t.header()) {
            Some(header) => request.header("Authorization", &header),
            None => request,
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
