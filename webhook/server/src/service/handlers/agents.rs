//! `/api/v1/heartbeat` and `/api/v1/agents`: enforcer liveness.

use std::sync::Arc;

use warp::http::StatusCode;

use crate::reply::json_error;
use crate::service::{internal, ok, Reply, ServiceState};
use bytes::Bytes;
use palisade_common::wire::Heartbeat;

use crate::service::{forbidden_for, reporter, Reporter};

pub async fn record_heartbeat(
    auth: Option<String>,
    body: Bytes,
    state: Arc<ServiceState>,
) -> Reply {
    let caller = match reporter(&state, auth.as_deref()).await {
        Ok(c) => c,
        Err(reply) => return reply,
    };
    let beat: Heartbeat = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("malformed heartbeat: {e}"),
            )
        }
    };
    if beat.pod.namespace.is_empty() || beat.pod.name.is_empty() || beat.agent.boot_id.is_empty() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "pod.namespace, pod.name and agent.bootId are required",
        );
    }
    if let Reporter::Workload(w) = &caller {
        if !w.may_report_for(&beat.pod.namespace, &beat.pod.name) {
            return forbidden_for(w, &beat.pod.namespace, &beat.pod.name);
        }
    }
    match state.store.record_heartbeat(&beat).await {
        Ok(event) => {
            if let Some(e) = event {
                tracing::info!(namespace = %beat.pod.namespace, pod = %beat.pod.name, rule = %e.rule, "{}", e.message);
            }
            ok(&serde_json::json!({"state": beat.agent.state}))
        }
        Err(e) => internal(e),
    }
}

pub async fn list_agents(state: Arc<ServiceState>) -> Reply {
    match state.store.agents().await {
        Ok(agents) => ok(&agents),
        Err(e) => internal(e),
    }
}
