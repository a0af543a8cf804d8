//! `/api/v1/policies`: what admins list, push, read and delete.

use std::sync::Arc;

use warp::http::StatusCode;

use crate::reply::json_error;
use crate::service::{internal, ok, Reply, ServiceState};
use crate::sources::PUSHED_ORIGIN;
use bytes::Bytes;
use palisade_common::policy::PolicyDocument;
use palisade_common::wire::PolicyRecord;

use super::{push_refused, refresh_local_set};
use crate::service::query::PolicyQuery;

/// Directory policies (revision 0) and pushed ones, by name, each saying
/// whether another source keeps it out of force.
fn active_records(state: &ServiceState, pushed: Vec<PolicyRecord>) -> Vec<PolicyRecord> {
    let not_in_force = |name: &str, origin: &str| {
        state
            .policies
            .not_in_force(palisade_common::policy::KIND, name, origin)
    };
    let mut records: Vec<PolicyRecord> = state
        .policies
        .directory_documents()
        .into_iter()
        .map(|(origin, document)| PolicyRecord {
            name: document.metadata.name.clone(),
            revision: 0,
            updated_ms: 0,
            not_in_force: not_in_force(&document.metadata.name, &origin),
            source: format!("directory ({origin})"),
            document,
        })
        .chain(pushed.into_iter().map(|record| PolicyRecord {
            not_in_force: not_in_force(&record.name, PUSHED_ORIGIN),
            ..record
        }))
        .collect();
    records.sort_by(|a, b| a.name.cmp(&b.name));
    records
}

pub async fn list(state: Arc<ServiceState>) -> Reply {
    match state.store.current_policies().await {
        Ok(pushed) => ok(&active_records(&state, pushed)),
        Err(e) => internal(e),
    }
}

pub async fn push(body: Bytes, state: Arc<ServiceState>) -> Reply {
    let Ok(text) = std::str::from_utf8(&body) else {
        return json_error(StatusCode::BAD_REQUEST, "policy must be UTF-8 YAML or JSON");
    };
    let doc = match PolicyDocument::from_yaml(text) {
        Ok(doc) => doc,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match state.policies.check_push(&doc) {
        Ok(()) => {}
        Err(e) => return push_refused(e),
    }
    let revision = match state.store.put_policy(&doc, "admin").await {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    refresh_local_set(&state).await;
    tracing::info!(policy = %doc.metadata.name, revision, "policy pushed");
    ok(&serde_json::json!({"name": doc.metadata.name, "revision": revision}))
}

pub async fn get(name: String, query: PolicyQuery, state: Arc<ServiceState>) -> Reply {
    if query.wants_history() {
        return match state.store.policy_history(&name).await {
            Ok(h) if h.is_empty() => json_error(StatusCode::NOT_FOUND, "no such pushed policy"),
            Ok(h) => ok(&h),
            Err(e) => internal(e),
        };
    }
    match state.store.current_policies().await {
        Ok(pushed) => match active_records(&state, pushed)
            .into_iter()
            .find(|r| r.name == name)
        {
            Some(record) => ok(&record),
            None => json_error(StatusCode::NOT_FOUND, &format!("no policy named {name:?}")),
        },
        Err(e) => internal(e),
    }
}

/// Deletes the pushed policy of that name, even one a file shadows (else
/// it would come back when the file goes).
pub async fn delete(name: String, state: Arc<ServiceState>) -> Reply {
    match state.store.delete_policy(&name, "admin").await {
        Ok(true) => {
            refresh_local_set(&state).await;
            ok(&serde_json::json!({"deleted": name}))
        }
        Ok(false)
            if state
                .policies
                .directory_documents()
                .iter()
                .any(|(_, d)| d.metadata.name == name) =>
        {
            json_error(
                StatusCode::CONFLICT,
                &format!(
                    "policy {name:?} is defined in the policy directory; remove the file instead"
                ),
            )
        }
        Ok(false) => json_error(
            StatusCode::NOT_FOUND,
            &format!("no pushed policy named {name:?}"),
        ),
        Err(e) => internal(e),
    }
}
