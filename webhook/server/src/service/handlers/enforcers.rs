//! `/api/v1/heartbeat` and `/api/v1/enforcers`: enforcer liveness.

use std::sync::Arc;

use bytes::Bytes;
use palisade_common::wire::Heartbeat;

use crate::service::{forbidden_for, ok, reporter, Answer, ApiError, Reporter, ServiceState};

pub async fn record_heartbeat(
    auth: Option<String>,
    body: Bytes,
    state: Arc<ServiceState>,
) -> Answer {
    let caller = reporter(&state, auth.as_deref()).await?;
    let beat: Heartbeat = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed heartbeat: {e}")))?;
    if beat.pod.namespace.is_empty() || beat.pod.name.is_empty() || beat.enforcer.boot_id.is_empty()
    {
        return Err(ApiError::bad_request(
            "pod.namespace, pod.name and enforcer.bootId are required",
        ));
    }
    if let Reporter::Workload(w) = &caller {
        if !w.may_report_for(&beat.pod.namespace, &beat.pod.name) {
            return Err(forbidden_for(w, &beat.pod.namespace, &beat.pod.name));
        }
    }
    if let Some(e) = state.store.record_heartbeat(&beat).await? {
        tracing::info!(namespace = %beat.pod.namespace, pod = %beat.pod.name, rule = %e.rule, "{}", e.message);
    }
    ok(&serde_json::json!({"state": beat.enforcer.state}))
}

pub async fn list_enforcers(state: Arc<ServiceState>) -> Answer {
    ok(&state.store.enforcers().await?)
}
