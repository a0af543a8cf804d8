//! `/api/v1/heartbeat` and `/api/v1/enforcers`: enforcer liveness.

use std::sync::Arc;

use bytes::Bytes;
use palisade_common::wire::Heartbeat;

use crate::service::{forbidden_for, ok, reporter, Answer, ApiError, Reporter, ServiceState};

/// Stores a heartbeat (through the batch writer) and answers once it is
/// written.
pub async fn record_heartbeat(
    auth: Option<String>,
    body: Bytes,
    state: Arc<ServiceState>,
) -> Answer {
    let caller = reporter(&state, auth.as_deref()).await?;
    let beat = parse_heartbeat(&body)?;
    if let Reporter::Workload(w) = &caller {
        if !w.may_report_for(&beat.pod.namespace, &beat.pod.name) {
            return Err(forbidden_for(w, &beat.pod.namespace, &beat.pod.name));
        }
    }
    let reply = serde_json::json!({"state": beat.enforcer.state});
    state
        .heartbeats
        .record(beat)
        .await
        .map_err(|e| state.not_written(e))?;
    ok(&reply)
}

/// Longest text field of a heartbeat.
const MAX_FIELD_BYTES: usize = 512;

/// A heartbeat body, with what the service needs of it present.
pub(super) fn parse_heartbeat(body: &[u8]) -> Result<Heartbeat, ApiError> {
    let beat: Heartbeat = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("malformed heartbeat: {e}")))?;
    if beat.pod.namespace.is_empty() || beat.pod.name.is_empty() || beat.enforcer.boot_id.is_empty()
    {
        return Err(ApiError::bad_request(
            "pod.namespace, pod.name and enforcer.bootId are required",
        ));
    }
    // Heartbeats are written in batches: one the database would refuse
    // (a NUL in a text column) must be refused here, on its own.
    let fields = [
        ("pod.namespace", &beat.pod.namespace),
        ("pod.name", &beat.pod.name),
        ("pod.uid", &beat.pod.uid),
        ("enforcer.bootId", &beat.enforcer.boot_id),
        ("enforcer.policyEtag", &beat.enforcer.policy_etag),
        ("enforcer.reason", &beat.enforcer.reason),
    ];
    for (name, value) in fields {
        if value.len() > MAX_FIELD_BYTES || value.chars().any(char::is_control) {
            return Err(ApiError::bad_request(format!(
                "{name} must be at most {MAX_FIELD_BYTES} bytes without control characters"
            )));
        }
    }
    Ok(beat)
}

pub async fn list_enforcers(state: Arc<ServiceState>) -> Answer {
    ok(&state.store.enforcers().await?)
}
