//! What travels between the enforcer and the policy service: the runtime
//! policy bundle a pod fetches, and the report batches it sends.

use serde::{Deserialize, Serialize};

use crate::launch::CoverageSummary;
use crate::policy::{Mode, RuntimeRules};

/// Runtime rules of every policy selecting one pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeBundle {
    /// Content hash: equal bundles have equal tags on every replica.
    pub etag: String,
    pub policies: Vec<RuntimePolicy>,
    /// PolicyExceptions selecting the pod that name one of `policies`,
    /// expired ones included: the enforcer decides expiry itself, with
    /// `PolicyException::decide`, as time passes between bundles.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exceptions: Vec<crate::exception::PolicyException>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimePolicy {
    pub name: String,
    pub mode: Mode,
    pub rules: RuntimeRules,
}

/// The reporting pod.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    #[serde(default)]
    pub uid: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReportBatch {
    pub pod: PodRef,
    pub events: Vec<Event>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EventKind {
    /// The container diverged from its image (new or changed executables).
    Drift,
    /// A process, listener or connection the policy does not allow.
    Behavior,
    /// The enforcer's own state: started, signals available, drops.
    /// (`agent` is what earlier enforcers sent.)
    #[serde(alias = "agent")]
    Enforcer,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Drift => "drift",
            EventKind::Behavior => "behavior",
            EventKind::Enforcer => "enforcer",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "drift" => Some(EventKind::Drift),
            "behavior" => Some(EventKind::Behavior),
            "enforcer" | "agent" => Some(EventKind::Enforcer),
            _ => None,
        }
    }
}

/// One observation. `id` is unique per event and stable across retries,
/// so re-sent batches are stored once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    pub id: String,
    /// Unix time in milliseconds.
    pub time_ms: i64,
    pub kind: EventKind,
    /// e.g. `drift/exec-from-tmp`, `behavior/denied-process`.
    pub rule: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    #[serde(default)]
    pub mode: Mode,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process: Option<ProcessInfo>,
    /// What the enforcer did: `killed`, `kill-failed: EPERM`...
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// The active PolicyException that covers this finding: reported, not
    /// acted on (PolicyReports list it as `skip`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exception: Option<String>,
    /// What the kernel enforced in one confined container, on
    /// `enforcer/prevention` events only: read by `palisade status --coverage`
    /// so that nobody parses `message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coverage: Option<CoverageSummary>,
}

impl Event {
    /// An event about the enforcer itself (`enforcer/...`): no policy, no
    /// process, nothing acted on.
    pub fn enforcer(id: String, time_ms: i64, rule: &str, message: String) -> Self {
        Event {
            id,
            time_ms,
            kind: EventKind::Enforcer,
            rule: rule.to_string(),
            policy: None,
            mode: Mode::Audit,
            message,
            process: None,
            action: None,
            exception: None,
            coverage: None,
        }
    }

    /// The same event carrying a launcher's coverage report.
    pub fn with_coverage(self, summary: CoverageSummary) -> Self {
        Event {
            coverage: Some(summary),
            ..self
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProcessInfo {
    pub pid: i32,
    pub ppid: i32,
    pub uid: u32,
    pub comm: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<String>,
    #[serde(default)]
    pub cmdline: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

/// A stored event as the query API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredEvent {
    pub pod: PodRef,
    pub received_ms: i64,
    #[serde(flatten)]
    pub event: Event,
}

/// What an enforcer says about itself on every heartbeat (and when it
/// stops): the service notices silence from it, and can tell a restart
/// (new `boot_id`) from a resumed process.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnforcerStatus {
    /// Unique per enforcer start.
    pub boot_id: String,
    pub started_ms: i64,
    /// The enforcer promises a heartbeat at least this often; silence for
    /// several of these is reported as `enforcer/missing`.
    pub heartbeat_ms: u64,
    pub state: EnforcerState,
    /// Why it stops (`SIGTERM`...), when `state` is `stopping`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    /// Events it could not keep (queue or spool full) since it started.
    #[serde(default)]
    pub dropped: u64,
    /// Processes that started and exited between two of its scans.
    #[serde(default)]
    pub unobserved: u64,
    /// The runtime policy bundle it enforces (the bundle's etag; `builtin`
    /// before the first fetch): tells which pods run the current policy.
    #[serde(default)]
    pub policy_etag: String,
    /// Protections this enforcer cannot give its pod, and why (empty when
    /// it sees everything it needs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protections_off: Vec<ProtectionOff>,
}

/// What an enforcer protects a pod with; each can be off in one pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EnforcerProtection {
    /// Executables not in the image, modified, deleted or memfd
    /// executables, new executable files.
    Drift,
    /// Content identity of executables (renamed or copied programs).
    ProcessIdentity,
    /// Stopping offenders under an enforcing policy.
    Stopping,
    /// The processes that own listeners and connections.
    SocketOwners,
    /// The pod's sockets: listeners and egress.
    Sockets,
    /// Counting processes that started and exited between two scans.
    ShortLivedCount,
    /// One a newer enforcer names and this release does not know: kept
    /// rather than refusing the whole heartbeat.
    #[serde(other)]
    Other,
}

impl EnforcerProtection {
    pub fn as_str(self) -> &'static str {
        match self {
            EnforcerProtection::Drift => "drift",
            EnforcerProtection::ProcessIdentity => "processIdentity",
            EnforcerProtection::Stopping => "stopping",
            EnforcerProtection::SocketOwners => "socketOwners",
            EnforcerProtection::Sockets => "sockets",
            EnforcerProtection::ShortLivedCount => "shortLivedCount",
            EnforcerProtection::Other => "other",
        }
    }
}

/// One protection that is off in a pod, and why (`app runs as uid 1001,
/// the enforcer as 65532`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProtectionOff {
    pub protection: EnforcerProtection,
    pub reason: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EnforcerState {
    Running,
    /// Shutting down on purpose: its silence afterwards is expected.
    Stopping,
}

/// `POST /api/v1/heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub pod: PodRef,
    #[serde(alias = "agent")]
    pub enforcer: EnforcerStatus,
}

/// Where the service believes an enforcer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Liveness {
    Reporting,
    /// Silent for longer than its heartbeats allow.
    Missing,
    /// Said it was stopping.
    Stopped,
}

impl Liveness {
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Reporting => "reporting",
            Liveness::Missing => "missing",
            Liveness::Stopped => "stopped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "reporting" => Some(Liveness::Reporting),
            "missing" => Some(Liveness::Missing),
            "stopped" => Some(Liveness::Stopped),
            _ => None,
        }
    }
}

/// One enforcer as `GET /api/v1/enforcers` lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnforcerRecord {
    pub pod: PodRef,
    pub boot_id: String,
    pub heartbeat_ms: u64,
    pub last_seen_ms: i64,
    pub state: Liveness,
    pub dropped: u64,
    pub unobserved: u64,
    /// The policy bundle it last said it enforces.
    pub policy_etag: String,
    /// What it last said it cannot protect in its pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub protections_off: Vec<ProtectionOff>,
}

/// Result of an ingestion: how many events were new.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IngestResult {
    pub received: usize,
    pub stored: usize,
}

/// A stored policy revision, as listed by the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRecord {
    pub name: String,
    pub revision: i64,
    pub updated_ms: i64,
    /// `api` for pushed policies, `directory` for files.
    pub source: String,
    pub document: crate::policy::PolicyDocument,
    /// Why it is not in force: another source defines the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_in_force: Option<String>,
}

/// A PolicyException as listed by the API, with its state now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExceptionRecord {
    pub name: String,
    /// 0 for files and resources; pushed ones count their revisions.
    pub revision: i64,
    pub updated_ms: i64,
    /// `api`, `directory (FILE)` or `PolicyException resource`.
    pub source: String,
    pub state: crate::exception::ExceptionState,
    pub document: crate::exception::PolicyException,
    /// Why it is not in force: another source defines the same name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_in_force: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::launch::{CoverageLevel, LandlockSupport, NotEnforcedSummary};

    #[test]
    fn coverage_round_trips_in_the_launchers_field_names_and_is_absent_otherwise() {
        let plain = Event::enforcer("1".into(), 5, "enforcer/started", "up".into());
        let text = serde_json::to_string(&plain).unwrap();
        assert!(!text.contains("coverage"), "{text}");
        let summary = CoverageSummary {
            container: Some("app".into()),
            level: CoverageLevel::Partial,
            landlock: LandlockSupport::Available(3),
            enforced: vec!["execOnlyFromProgramDirs".into()],
            not_enforced: vec![NotEnforcedSummary {
                protection: "tcpConnect".into(),
                reason: "kernelAbiTooOld".into(),
            }],
        };
        let event = Event::enforcer("2".into(), 6, "enforcer/prevention", "m".into())
            .with_coverage(summary.clone());
        let value = serde_json::to_value(&event).unwrap();
        assert_eq!(value["coverage"]["landlock"]["abi"], 3);
        assert_eq!(
            value["coverage"]["notEnforced"][0]["protection"],
            "tcpConnect"
        );
        let back: Event = serde_json::from_value(value).unwrap();
        assert_eq!(back.coverage, Some(summary));
    }
}
