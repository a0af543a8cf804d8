//! Settings layered as built-in defaults < YAML file < `PALISADE_*`
//! environment (`__` separates levels: `PALISADE_INJECTION__IMAGE`), then
//! validated once at start so a typo fails loudly instead of at request time.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::quantity::{is_valid_quantity, Quantity};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address of the HTTPS server (admission, health, metrics).
    pub listen: SocketAddr,
    pub tls: TlsSettings,
    pub policies: PolicySettings,
    pub admission: AdmissionSettings,
    pub injection: InjectionSettings,
    pub log: LogSettings,
    pub service: ServiceSettings,
    pub audit: AuditSettings,
    /// Seconds in-flight requests get to finish after SIGTERM.
    pub shutdown_grace_secs: u64,
    /// Seconds `/readyz` answers 503 after SIGTERM while the listener still
    /// serves, so load balancers and endpoint controllers stop sending
    /// traffic before connections are refused.
    pub shutdown_drain_secs: u64,
    /// Seconds a client has to send a request's headers; a connection that
    /// dribbles a partial request is closed instead of held forever. An
    /// idle keep-alive connection is closed after this long too.
    pub header_read_timeout_secs: u64,
    /// Connections held at once; one more is closed as soon as it is
    /// accepted (its client retries, perhaps on another replica). 0: the
    /// open-files limit (raised to its hard limit at start) less 256.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSettings {
    /// PEM certificate chain; with `key_file`. Unset: a self-signed CA and
    /// serving certificate are generated at start.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Subject names of the generated certificate.
    pub self_signed_names: Vec<String>,
    /// Where the generated CA (`ca.crt`, for a webhook's caBundle) is written.
    pub self_signed_dir: Option<PathBuf>,
    /// How often certificate files are checked for rotation.
    pub reload_interval_secs: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    /// Directory of policy YAML files (multi-document allowed).
    pub dir: PathBuf,
    /// How often the directory is checked for changes.
    pub reload_interval_secs: u64,
    /// In-cluster: also watch RuntimePolicy resources (runtimepolicies.palisade.dev).
    pub watch_crds: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdmissionSettings {
    /// Larger AdmissionReview bodies are refused with 413.
    pub max_body_bytes: u64,
    /// Namespaces never mutated or validated, whatever the webhook
    /// configuration's selector says (the control plane's own, kube-system).
    pub excluded_namespaces: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct InjectionSettings {
    pub image: String,
    pub image_pull_policy: PullPolicy,
    /// Inject as an init container with `restartPolicy: Always` (Kubernetes
    /// native sidecar, GA in 1.33): the enforcer starts before the app and
    /// Jobs complete when their main container exits. False: an ordinary
    /// container appended to `containers`.
    pub native_sidecar: bool,
    /// Leave hostNetwork pods alone.
    pub skip_host_network: bool,
    /// UID for the enforcer when the app's UID is unknown or root.
    pub default_run_as_user: i64,
    /// Policy service URL handed to the enforcer.
    pub policy_service_url: Option<String>,
    /// PEM CA the enforcer verifies the policy service with.
    pub policy_service_ca: Option<String>,
    /// Audience of the projected service-account token the enforcer reports
    /// with (verified by TokenReview); mounted when a policy service is set.
    pub report_token_audience: String,
    pub sidecar_resources: ResourceDefaults,
    /// Applied to application containers that set no requests/limits.
    pub container_defaults: ResourceDefaults,
    /// Registry lookups of image commands, for prevention.
    pub image_lookup: ImageLookupSettings,
}

/// How `/mutate` learns the command of an image that a confined container
/// runs without `command` in its spec: from the image config in the
/// registry (ENTRYPOINT and CMD), cached by digest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ImageLookupSettings {
    /// False: such containers stay unconfined (`no-command`).
    pub enabled: bool,
    /// A pod's lookups together wait at most this long; then the pod is
    /// admitted with those containers unconfined.
    pub timeout_ms: u64,
    /// How long a tag keeps pointing at the digest it was last seen at.
    /// References by digest are cached without expiry.
    pub tag_ttl_secs: u64,
    /// A failed lookup is not retried for this long (a registry outage
    /// costs one timeout, not one per pod).
    pub failure_ttl_secs: u64,
    /// Image configs kept (least recently looked up dropped first).
    pub cache_entries: usize,
    /// Registries (`host[:port]`, or `*.domain`) lookups may contact.
    /// Empty: any, except loopback, private and link-local addresses, which
    /// must be listed here or in `insecure_registries` (a pod's image name
    /// must not make the server probe its own network).
    pub allowed_registries: Vec<String>,
    /// Registries (`host[:port]`) spoken to over plain HTTP.
    pub insecure_registries: Vec<String>,
    /// Read the pod's `imagePullSecrets` from its namespace (needs `get`
    /// on Secrets).
    pub pull_secrets: bool,
}

impl Default for ImageLookupSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            timeout_ms: 2000,
            tag_ttl_secs: 300,
            failure_ttl_secs: 10,
            cache_entries: 1024,
            allowed_registries: Vec::new(),
            insecure_registries: Vec::new(),
            pull_secrets: true,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ResourceDefaults {
    pub requests: BTreeMap<String, String>,
    pub limits: BTreeMap<String, String>,
}

impl ResourceDefaults {
    /// `(resource, request, limit)` for each resource whose request exceeds
    /// its limit: the apiserver refuses such a container, so such settings
    /// are refused at start.
    pub fn request_above_limit(&self) -> Vec<(&str, &str, &str)> {
        self.requests
            .iter()
            .filter_map(|(name, request)| {
                let limit = self.limits.get(name)?;
                (Quantity::compare(request, limit)? == std::cmp::Ordering::Greater).then_some((
                    name.as_str(),
                    request.as_str(),
                    limit.as_str(),
                ))
            })
            .collect()
    }
}

/// Background audit: the workloads already in the cluster judged by the
/// admission policies, on start, on every change and when policies
/// change, into one PolicyReport per namespace. With several replicas one
/// leader (a Lease) audits.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditSettings {
    pub enabled: bool,
    /// `key=value`: only namespaces with this label are reported (the
    /// chart sets the webhooks' opt-in label). Empty: every namespace
    /// admission does not exclude.
    pub namespace_label: String,
    /// A namespace's report is rewritten at most once per this many
    /// seconds, however many of its workloads change.
    pub flush_interval_secs: u64,
    /// Results kept per report (failures first); the summary still counts
    /// every finding and an annotation says how many were cut.
    pub max_results_per_report: usize,
    /// Where the leader Lease lives (the release namespace in-cluster).
    pub lease_namespace: String,
    pub lease_name: String,
    /// Seconds a leader's Lease lasts without renewal: how long reports may
    /// go stale after a leader dies.
    pub lease_duration_secs: u64,
}

impl AuditSettings {
    /// `namespace_label` as (key, value); `None` when empty (every
    /// namespace).
    pub fn scope_label(&self) -> Result<Option<(&str, &str)>, String> {
        let text = &self.namespace_label;
        if text.is_empty() {
            return Ok(None);
        }
        match text.split_once('=') {
            Some((key, value)) if !key.is_empty() => Ok(Some((key, value))),
            _ => Err(format!("{text:?} is not key=value")),
        }
    }
}

impl Default for AuditSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            namespace_label: String::new(),
            flush_interval_secs: 10,
            max_results_per_report: 500,
            lease_namespace: "palisade-system".into(),
            lease_name: "palisade-audit".into(),
            lease_duration_secs: 15,
        }
    }
}

/// The central policy service: policy push API, enforcer policy
/// distribution, report ingestion and queries (under `/api/v1`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceSettings {
    pub enabled: bool,
    /// Holds the SQLite database and generated tokens.
    pub data_dir: PathBuf,
    /// `sqlite://PATH` or `postgres://...`; unset: SQLite in `data_dir`.
    pub database_url: Option<String>,
    /// Bearer tokens for the policy and query API. Empty: one is generated
    /// into `data_dir/admin.token`.
    pub admin_tokens: Vec<String>,
    /// Bearer tokens enforcers report with. Empty: one is generated into
    /// `data_dir/report.token`.
    pub report_tokens: Vec<String>,
    /// How often pushed policies are re-read from the database (changes made
    /// through other replicas).
    pub sync_interval_ms: u64,
    /// Longest an enforcer's policy long-poll is held open.
    pub max_wait_secs: u64,
    /// Largest report batch accepted: events in a report, observations in
    /// an observation batch.
    pub max_batch_events: usize,
    /// Distinct observed items kept per workload; the ones beyond are only
    /// counted (the workload's `overflow`), so a noisy or hostile pod
    /// cannot grow the database without bound.
    pub max_items_per_workload: usize,
    /// In-cluster: also accept enforcers' projected service-account tokens,
    /// verified by TokenReview and bound to the reporting pod.
    pub token_review: bool,
    /// Audience those tokens must carry.
    pub token_audience: String,
    /// In-cluster: summarise each namespace's violations into a
    /// PolicyReport (wgpolicyk8s.io/v1alpha2) every this many seconds; 0: off.
    pub policy_report_interval_secs: u64,
    /// Heartbeats waiting to be written; one more is refused with `429`.
    pub max_queued_heartbeats: usize,
    /// How long a report or observation batch may wait for its turn to
    /// write before it is refused with `429` (the enforcer keeps it).
    pub write_wait_ms: u64,
}

impl Default for ServiceSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            data_dir: PathBuf::from("data"),
            database_url: None,
            admin_tokens: Vec::new(),
            report_tokens: Vec::new(),
            sync_interval_ms: 1000,
            max_wait_secs: 60,
            max_batch_events: 1000,
            max_items_per_workload: 2000,
            token_review: false,
            token_audience: "palisade".into(),
            policy_report_interval_secs: 0,
            max_queued_heartbeats: 20_000,
            write_wait_ms: 2000,
        }
    }
}

impl ServiceSettings {
    pub fn database_url(&self) -> String {
        self.database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("palisade.db").display()))
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", try_from = "String")]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

impl TryFrom<String> for LogFormat {
    type Error = String;

    /// Parsed by hand so a wrong value's error lists the choices.
    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("{text:?} must be text or json")),
        }
    }
}

/// When the kubelet pulls the enforcer image (a container's
/// `imagePullPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String")]
pub enum PullPolicy {
    Always,
    IfNotPresent,
    Never,
}

impl TryFrom<String> for PullPolicy {
    type Error = String;

    fn try_from(text: String) -> Result<Self, String> {
        match text.as_str() {
            "Always" => Ok(PullPolicy::Always),
            "IfNotPresent" => Ok(PullPolicy::IfNotPresent),
            "Never" => Ok(PullPolicy::Never),
            _ => Err(format!("{text:?} must be Always, IfNotPresent or Never")),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `palisade_server=debug`.
    pub level: String,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 8443)),
            tls: TlsSettings::default(),
            policies: PolicySettings::default(),
            admission: AdmissionSettings::default(),
            injection: InjectionSettings::default(),
            log: LogSettings::default(),
            service: ServiceSettings::default(),
            audit: AuditSettings::default(),
            shutdown_grace_secs: 10,
            shutdown_drain_secs: 5,
            header_read_timeout_secs: 10,
            max_connections: 0,
        }
    }
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            self_signed_names: vec!["localhost".into(), "127.0.0.1".into()],
            self_signed_dir: Some(PathBuf::from("data/tls")),
            reload_interval_secs: 10,
        }
    }
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("policies"),
            reload_interval_secs: 2,
            watch_crds: false,
        }
    }
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        Self {
            // The apiserver caps objects at ~3 MiB; a review carries two.
            max_body_bytes: 7 * 1024 * 1024,
            excluded_namespaces: vec!["kube-system".into(), "palisade-system".into()],
        }
    }
}

fn quantities(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl Default for InjectionSettings {
    fn default() -> Self {
        Self {
            image: format!(
                "ghcr.io/palisade-dev/palisade-enforcer:{}",
                env!("CARGO_PKG_VERSION")
            ),
            image_pull_policy: PullPolicy::IfNotPresent,
            native_sidecar: true,
            skip_host_network: false,
            default_run_as_user: 65532,
            policy_service_url: None,
            policy_service_ca: None,
            report_token_audience: "palisade".into(),
            sidecar_resources: ResourceDefaults {
                requests: quantities(&[("cpu", "10m"), ("memory", "16Mi")]),
                limits: quantities(&[("cpu", "100m"), ("memory", "32Mi")]),
            },
            container_defaults: ResourceDefaults {
                requests: quantities(&[("cpu", "100m"), ("memory", "128Mi")]),
                limits: quantities(&[("cpu", "1"), ("memory", "512Mi")]),
            },
            image_lookup: ImageLookupSettings::default(),
        }
    }
}

impl Default for LogSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: "info".into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("invalid configuration:\n  - {}", .0.join("\n  - "))]
    Invalid(Vec<String>),
}

/// Top-level settings keys, as `PALISADE_<KEY>` prefixes. Other
/// `PALISADE_*` variables (the config file path, tooling's own) are not
/// settings and are ignored; typos below a known key are still errors.
fn is_setting_var(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("PALISADE_") else {
        return false;
    };
    let top = rest.split("__").next().unwrap_or("").to_ascii_lowercase();
    matches!(
        top.as_str(),
        "listen"
            | "tls"
            | "policies"
            | "admission"
            | "injection"
            | "log"
            | "service"
            | "audit"
            | "shutdown_grace_secs"
            | "shutdown_drain_secs"
            | "header_read_timeout_secs"
            | "max_connections"
    )
}

impl Settings {
    /// Loads defaults, then `file` if given, then `PALISADE_*` variables
    /// from `env`.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self, ConfigError> {
        let env_map: config::Map<String, String> =
            env.into_iter().filter(|(k, _)| is_setting_var(k)).collect();
        let mut builder =
            config::Config::builder().add_source(config::Config::try_from(&Settings::default())?);
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(true));
        }
        let settings: Settings = builder
            .add_source(
                config::Environment::with_prefix("PALISADE")
                    .prefix_separator("_")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("admission.excluded_namespaces")
                    .with_list_parse_key("tls.self_signed_names")
                    .with_list_parse_key("service.admin_tokens")
                    .with_list_parse_key("injection.image_lookup.insecure_registries")
                    .with_list_parse_key("injection.image_lookup.allowed_registries")
                    .with_list_parse_key("service.report_tokens")
                    .try_parsing(true)
                    .source(Some(env_map)),
            )
            .build()?
            .try_deserialize()?;
        settings.validate()?;
        Ok(settings)
    }

    /// Every problem at once, each naming its key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut problems = Vec::new();
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            problems.push("tls.cert_file and tls.key_file must be set together".to_string());
        }
        if self.tls.cert_file.is_none() && self.tls.self_signed_names.is_empty() {
            problems.push("tls.self_signed_names must not be empty".to_string());
        }
        for (key, secs) in [
            ("tls.reload_interval_secs", self.tls.reload_interval_secs),
            (
                "policies.reload_interval_secs",
                self.policies.reload_interval_secs,
            ),
        ] {
            if secs == 0 {
                problems.push(format!("{key} must be at least 1"));
            }
        }
        if !(1024..=64 * 1024 * 1024).contains(&self.admission.max_body_bytes) {
            problems.push("admission.max_body_bytes must be between 1 KiB and 64 MiB".into());
        }
        if self.injection.image.trim().is_empty() {
            problems.push("injection.image must not be empty".into());
        }
        if self.injection.default_run_as_user <= 0 {
            problems.push("injection.default_run_as_user must be a non-root UID (> 0)".into());
        }
        for (key, defaults) in [
            (
                "injection.sidecar_resources",
                &self.injection.sidecar_resources,
            ),
            (
                "injection.container_defaults",
                &self.injection.container_defaults,
            ),
        ] {
            for (kind, map) in [
                ("requests", &defaults.requests),
                ("limits", &defaults.limits),
            ] {
                for (name, q) in map {
                    if !is_valid_quantity(q) {
                        problems.push(format!("{key}.{kind}.{name}: {q:?} is not a quantity"));
                    }
                }
            }
            for (name, request, limit) in defaults.request_above_limit() {
                problems.push(format!(
                    "{key}: requests.{name} ({request}) must not exceed limits.{name} ({limit})"
                ));
            }
        }
        let lookup = &self.injection.image_lookup;
        if !(100..=25_000).contains(&lookup.timeout_ms) {
            problems.push(
                "injection.image_lookup.timeout_ms must be between 100 and 25000 \
                 (the apiserver waits at most 30 s for a webhook)"
                    .into(),
            );
        }
        if lookup.cache_entries == 0 {
            problems.push("injection.image_lookup.cache_entries must be at least 1".into());
        }
        if self.header_read_timeout_secs == 0 {
            problems.push("header_read_timeout_secs must be at least 1".into());
        }
        if let Err(problem) = self.audit.scope_label() {
            problems.push(format!("audit.namespace_label: {problem}"));
        }
        if self.audit.flush_interval_secs == 0 {
            problems.push("audit.flush_interval_secs must be at least 1".into());
        }
        if !(1..=5000).contains(&self.audit.max_results_per_report) {
            problems.push("audit.max_results_per_report must be between 1 and 5000".into());
        }
        if !(2..=600).contains(&self.audit.lease_duration_secs) {
            problems.push("audit.lease_duration_secs must be between 2 and 600".into());
        }
        if self.service.sync_interval_ms < 50 {
            problems.push("service.sync_interval_ms must be at least 50".into());
        }
        if self.service.max_queued_heartbeats == 0 {
            problems.push("service.max_queued_heartbeats must be at least 1".into());
        }
        if !(10..=60_000).contains(&self.service.write_wait_ms) {
            problems.push("service.write_wait_ms must be between 10 and 60000".into());
        }
        if !(1..=600).contains(&self.service.max_wait_secs) {
            problems.push("service.max_wait_secs must be between 1 and 600".into());
        }
        if self.service.max_batch_events == 0 {
            problems.push("service.max_batch_events must be at least 1".into());
        }
        if self.service.max_items_per_workload == 0 {
            problems.push("service.max_items_per_workload must be at least 1".into());
        }
        for (key, tokens) in [
            ("service.admin_tokens", &self.service.admin_tokens),
            ("service.report_tokens", &self.service.report_tokens),
        ] {
            if tokens.iter().any(|t| t.len() < 16) {
                problems.push(format!("{key}: tokens must be at least 16 characters"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_top_level_key_is_settable_from_the_environment() {
        let keys = serde_json::to_value(Settings::default()).unwrap();
        for key in keys.as_object().unwrap().keys() {
            assert!(
                is_setting_var(&format!("PALISADE_{}", key.to_uppercase())),
                "{key}"
            );
        }
    }

    #[test]
    fn defaults_are_valid() {
        let s = Settings::load(None, env(&[])).unwrap();
        assert_eq!(s.listen.port(), 8443);
        assert_eq!(s.policies.dir, PathBuf::from("policies"));
    }

    #[test]
    fn the_audit_scope_is_a_label_pair() {
        let s = Settings::load(
            None,
            env(&[(
                "PALISADE_AUDIT__NAMESPACE_LABEL",
                "palisade.dev/inject=enabled",
            )]),
        )
        .unwrap();
        assert_eq!(
            s.audit.scope_label().unwrap(),
            Some(("palisade.dev/inject", "enabled"))
        );
        for bad in ["=enabled", "no-value-separator"] {
            let err = Settings::load(None, env(&[("PALISADE_AUDIT__NAMESPACE_LABEL", bad)]))
                .unwrap_err()
                .to_string();
            assert!(err.contains("audit.namespace_label"), "{err}");
        }
    }

    #[test]
    fn file_then_env_override_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("palisade.yaml");
        std::fs::write(
            &file,
            "listen: 127.0.0.1:9443\ninjection:\n  native_sidecar: false\n  image: file/image:1\n",
        )
        .unwrap();
        let s = Settings::load(
            Some(&file),
            env(&[
                ("PALISADE_INJECTION__IMAGE", "env/image:2"),
                ("PALISADE_ADMISSION__EXCLUDED_NAMESPACES", "a,b"),
                ("PALISADE_CONFIG", "ignored"),
                ("PALISADE_E2E_CACHE", "not a setting"),
            ]),
        )
        .unwrap();
        assert_eq!(s.listen.port(), 9443);
        assert!(!s.injection.native_sidecar);
        assert_eq!(s.injection.image, "env/image:2");
        assert_eq!(s.admission.excluded_namespaces, vec!["a", "b"]);
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.yaml");
        std::fs::write(&file, "injection:\n  imagee: x\n").unwrap();
        let err = Settings::load(Some(&file), env(&[]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("imagee"), "{err}");

        let err = Settings::load(
            None,
            env(&[
                (
                    "PALISADE_INJECTION__CONTAINER_DEFAULTS__LIMITS__CPU",
                    "lots",
                ),
                ("PALISADE_ADMISSION__MAX_BODY_BYTES", "12"),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("injection.container_defaults.limits.cpu"),
            "{err}"
        );
        assert!(err.contains("admission.max_body_bytes"), "{err}");

        // Closed sets are types: the error names the key and the choices.
        for (var, value, choices, key) in [
            ("PALISADE_LOG__FORMAT", "xml", "text or json", "log.format"),
            (
                "PALISADE_INJECTION__IMAGE_PULL_POLICY",
                "Sometimes",
                "Always, IfNotPresent or Never",
                "injection.image_pull_policy",
            ),
        ] {
            let err = Settings::load(None, env(&[(var, value)]))
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(value) && err.contains(choices) && err.contains(key),
                "{err}"
            );
        }
    }

    #[test]
    fn defaults_with_a_request_above_their_limit_are_refused_at_start() {
        let err = Settings::load(
            None,
            env(&[
                (
                    "PALISADE_INJECTION__CONTAINER_DEFAULTS__REQUESTS__MEMORY",
                    "1Gi",
                ),
                (
                    "PALISADE_INJECTION__SIDECAR_RESOURCES__REQUESTS__CPU",
                    "200m",
                ),
            ]),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains(
                "injection.container_defaults: requests.memory (1Gi) must not exceed limits.memory (512Mi)"
            ),
            "{err}"
        );
        assert!(
            err.contains("injection.sidecar_resources: requests.cpu (200m) must not exceed limits.cpu (100m)"),
            "{err}"
        );
        // Equal is fine, and units do not matter.
        Settings::load(
            None,
            env(&[(
                "PALISADE_INJECTION__CONTAINER_DEFAULTS__REQUESTS__MEMORY",
                "0.5Gi",
            )]),
        )
        .unwrap();
    }

    #[test]
    fn the_enforcer_is_a_native_sidecar_by_default() {
        assert!(Settings::default().injection.native_sidecar);
        let s = Settings::load(
            None,
            env(&[("PALISADE_INJECTION__NATIVE_SIDECAR", "false")]),
        )
        .unwrap();
        assert!(
            !s.injection.native_sidecar,
            "the classic mode stays available"
        );
    }
}
