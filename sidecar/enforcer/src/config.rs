//! Settings from the environment the injector sets (`PALISADE_*`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use palisade_common::wire::PodRef;

#[derive(Debug, Clone)]
pub struct Settings {
    pub pod: PodRef,
    /// Policy service base URL; unset: standalone (defaults, stdout reports).
    pub policy_url: Option<String>,
    pub token: Option<TokenSource>,
    /// CA certificate of the policy service (file, or PEM inline).
    pub ca_file: Option<PathBuf>,
    pub ca_pem: Option<String>,
    /// Policy cache and report spool live here (an emptyDir in a pod).
    pub state_dir: PathBuf,
    /// `/proc`; tests point it elsewhere only for fixtures.
    pub proc_root: PathBuf,
    pub interval: Duration,
    /// How often the pod's socket tables are scanned (listeners, egress).
    pub socket_interval: Duration,
    /// How often the namespace's last-PID counter (and inotify) is looked
    /// at between passes: a fork since the last look starts a pass.
    pub pid_poll: Duration,
    /// How often the service hears from the enforcer at least.
    pub heartbeat: Duration,
    /// How often what the pod was seen doing is sent (when there is any).
    pub observations: Duration,
    /// Downward API file with the pod's labels (`key="value"` lines).
    pub labels_file: Option<PathBuf>,
    /// Largest spool file before events are dropped (and counted).
    pub spool_max_bytes: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: {problem}")]
    Invalid { var: &'static str, problem: String },
}

/// Where the bearer token comes from. Projected service-account tokens are
/// rotated by the kubelet, so a file is re-read for every request.
#[derive(Debug, Clone)]
pub enum TokenSource {
    Static(String),
    File(PathBuf),
}

impl TokenSource {
    pub fn header(&self) -> Option<String> {
        let token = match self {
            TokenSource::Static(t) => t.clone(),
            TokenSource::File(f) => std::fs::read_to_string(f).ok()?.trim().to_string(),
        };
        Some(format!("Bearer {token}"))
    }
}

impl Settings {
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let path = |var: &str| get(var).filter(|v| !v.is_empty()).map(PathBuf::from);
        let interval_ms = match get("PALISADE_INTERVAL_MS") {
            None => 250,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (10..=10_000).contains(n))
                .ok_or(ConfigError::Invalid {
                    var: "PALISADE_INTERVAL_MS",
                    problem: format!("{v:?} must be 10..=10000"),
                })?,
        };
        let socket_interval_ms = match get("PALISADE_SOCKET_INTERVAL_MS") {
            None => 1000,
            Some(v) => v
                .parse::<u64>()
                .ok()
                .filter(|n| (100..=60_000).contains(n))
                .ok_or(ConfigError::Invalid {
                    var: "PALISADE_SOCKET_INTERVAL_MS",
                    problem: format!("{v:?} must be 100..=60000"),
                })?,
        };
        let ranged = |var: &'static str, default: u64, range: std::ops::RangeInclusive<u64>| {
            match get(var) {
                None => Ok(default),
                Some(v) => v.parse::<u64>().ok().filter(|n| range.contains(n)).ok_or(
                    ConfigError::Invalid {
                        var,
                        problem: format!("{v:?} must be {}..={}", range.start(), range.end()),
                    },
                ),
            }
        };
        let pid_poll_ms = ranged("PALISADE_PID_POLL_MS", 50, 1..=1000)?;
        let heartbeat_ms = ranged("PALISADE_HEARTBEAT_MS", 10_000, 100..=300_000)?;
        let observations_ms = ranged("PALISADE_OBSERVATIONS_MS", 15_000, 100..=600_000)?;
        let token = match (
            get("PALISADE_REPORT_TOKEN"),
            path("PALISADE_REPORT_TOKEN_FILE"),
        ) {
            (Some(t), _) if !t.is_empty() => Some(TokenSource::Static(t)),
            (_, Some(file)) => {
                std::fs::metadata(&file).map_err(|e| ConfigError::Invalid {
                    var: "PALISADE_REPORT_TOKEN_FILE",
                    problem: format!("{}: {e}", file.display()),
                })?;
                Some(TokenSource::File(file))
            }
            _ => None,
        };
        Ok(Self {
            pod: PodRef {
                namespace: get("PALISADE_POD_NAMESPACE").unwrap_or_else(|| "default".into()),
                name: get("PALISADE_POD_NAME").unwrap_or_else(|| "unknown".into()),
                uid: get("PALISADE_POD_UID").unwrap_or_default(),
            },
            policy_url: get("PALISADE_POLICY_URL").filter(|v| !v.is_empty()),
            token,
            ca_file: path("PALISADE_CA_FILE"),
            ca_pem: get("PALISADE_CA_PEM").filter(|v| !v.is_empty()),
            state_dir: path("PALISADE_STATE_DIR")
                .unwrap_or_else(|| PathBuf::from("/var/run/palisade")),
            proc_root: path("PALISADE_PROC").unwrap_or_else(|| PathBuf::from("/proc")),
            interval: Duration::from_millis(interval_ms),
            socket_interval: Duration::from_millis(socket_interval_ms),
            pid_poll: Duration::from_millis(pid_poll_ms),
            heartbeat: Duration::from_millis(heartbeat_ms),
            observations: Duration::from_millis(observations_ms),
            labels_file: path("PALISADE_LABELS_FILE"),
            spool_max_bytes: 8 * 1024 * 1024,
        })
    }

    /// The pod's labels from the downward API labels file (`key="value"`
    /// lines); empty when there is none.
    pub fn labels(&self) -> BTreeMap<String, String> {
        let Some(text) = self
            .labels_file
            .as_ref()
            .and_then(|f| std::fs::read_to_string(f).ok())
        else {
            return BTreeMap::new();
        };
        text.lines()
            .filter_map(|line| line.split_once('='))
            .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
            .collect()
    }

    /// `key=value,key2=value2` from the downward API labels file.
    pub fn labels_query(&self) -> String {
        self.labels()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_bad_values() {
        let s = Settings::from_env(|_| None).unwrap();
        assert_eq!(s.interval, Duration::from_millis(250));
        assert!(s.policy_url.is_none());
        let err = Settings::from_env(|k| (k == "PALISADE_INTERVAL_MS").then(|| "1".to_string()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("PALISADE_INTERVAL_MS"), "{err}");
        assert_eq!(s.heartbeat, Duration::from_secs(10));
        let err = Settings::from_env(|k| (k == "PALISADE_HEARTBEAT_MS").then(|| "5".to_string()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("PALISADE_HEARTBEAT_MS"), "{err}");
        assert_eq!(s.observations, Duration::from_secs(15));
        let err =
            Settings::from_env(|k| (k == "PALISADE_OBSERVATIONS_MS").then(|| "0".to_string()))
                .unwrap_err()
                .to_string();
        assert!(err.contains("PALISADE_OBSERVATIONS_MS"), "{err}");
    }

    #[test]
    fn labels_from_the_downward_api_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("labels");
        std::fs::write(&file, "app=\"web\"\ntier=\"front\"\n").unwrap();
        let s = Settings::from_env(|k| {
            (k == "PALISADE_LABELS_FILE").then(|| file.display().to_string())
        })
        .unwrap();
        assert_eq!(s.labels_query(), "app=web,tier=front");
    }
}
