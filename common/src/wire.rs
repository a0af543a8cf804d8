//! What travels between the enforcer and the policy service: the runtime
//! policy bundle a pod fetches, and the report batches it sends.

use serde::{Deserialize, Serialize};

use crate::policy::{Mode, RuntimeRules};

/// Runtime rules of every policy selecting one pod.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeBundle {
    /// Content hash: equal bundles have equal tags on every replica.
    pub etag: String,
    pub policies: Vec<RuntimePolicy>,
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
    Agent,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::Drift => "drift",
            EventKind::Behavior => "behavior",
            EventKind::Agent => "agent",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "drift" => Some(EventKind::Drift),
            "behavior" => Some(EventKind::Behavior),
            "agent" => Some(EventKind::Agent),
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
}
