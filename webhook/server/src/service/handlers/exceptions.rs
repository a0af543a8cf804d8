//! `/api/v1/exceptions`: PolicyExceptions admins list (with their state
//! now, expired ones included), push, read and delete. Pushed ones are
//! versioned like policies; files and resources are listed beside them.

use std::sync::Arc;
use std::time::SystemTime;

use bytes::Bytes;
use palisade_common::policy::Document;
use palisade_common::wire::ExceptionRecord;
use warp::http::StatusCode;

use super::{push_refused, refresh_local_set};
use crate::db::StoredException;
use crate::reply::json_error;
use crate::service::query::PolicyQuery;
use crate::service::{internal, ok, Reply, ServiceState};
use crate::sources::PUSHED_ORIGIN;
use palisade_common::exception::EXCEPTION_KIND;

fn pushed_record(stored: StoredException, now: SystemTime) -> ExceptionRecord {
    ExceptionRecord {
        not_in_force: None,
        name: stored.exception.metadata.name.clone(),
        revision: stored.revision,
        updated_ms: stored.updated_ms,
        source: "api".into(),
        state: stored.exception.state(now),
        document: stored.exception,
    }
}

/// Files and resources (revision 0) and pushed ones, by name, each saying
/// whether a definition in another source keeps it out of force.
fn active_records(state: &ServiceState, pushed: Vec<StoredException>) -> Vec<ExceptionRecord> {
    let now = SystemTime::now();
    let not_in_force =
        |name: &str, origin: &str| state.policies.not_in_force(EXCEPTION_KIND, name, origin);
    let mut records: Vec<ExceptionRecord> = state
        .policies
        .unpushed_exceptions()
        .into_iter()
        .map(|(origin, exception)| ExceptionRecord {
            name: exception.metadata.name.clone(),
            revision: 0,
            updated_ms: 0,
            not_in_force: not_in_force(&exception.metadata.name, &origin),
            source: origin,
            state: exception.state(now),
            document: exception,
        })
        .chain(pushed.into_iter().map(|p| {
            let record = pushed_record(p, now);
            ExceptionRecord {
                not_in_force: not_in_force(&record.name, PUSHED_ORIGIN),
                ..record
            }
        }))
        .collect();
    records.sort_by(|a, b| a.name.cmp(&b.name));
    records
}

pub async fn list(state: Arc<ServiceState>) -> Reply {
    match state.store.current_exceptions().await {
        Ok(pushed) => ok(&active_records(&state, pushed)),
        Err(e) => internal(e),
    }
}

pub async fn push(body: Bytes, state: Arc<ServiceState>) -> Reply {
    let Ok(text) = std::str::from_utf8(&body) else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "exception must be UTF-8 YAML or JSON",
        );
    };
    let exception = match Document::from_yaml(text) {
        Ok(Document::Exception(e)) => e,
        Ok(Document::Policy(_)) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "kind: expected PolicyException (push policies to /api/v1/policies)",
            )
        }
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match state.policies.check_push_exception(&exception) {
        Ok(()) => {}
        Err(e) => return push_refused(e),
    }
    let revision = match state.store.put_exception(&exception, "admin").await {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    refresh_local_set(&state).await;
    let name = &exception.metadata.name;
    tracing::info!(exception = %name, revision, owner = %exception.spec.owner,
        expires_at = %exception.spec.expires_at, "policy exception pushed");
    ok(&serde_json::json!({"name": name, "revision": revision}))
}

pub async fn get(name: String, query: PolicyQuery, state: Arc<ServiceState>) -> Reply {
    if query.wants_history() {
        let now = SystemTime::now();
        return match state.store.exception_history(&name).await {
            Ok(h) if h.is_empty() => json_error(StatusCode::NOT_FOUND, "no such pushed exception"),
            Ok(h) => ok(&h
                .into_iter()
                .map(|s| pushed_record(s, now))
                .collect::<Vec<_>>()),
            Err(e) => internal(e),
        };
    }
    match state.store.current_exceptions().await {
        Ok(pushed) => match active_records(&state, pushed)
            .into_iter()
            .find(|r| r.name == name)
        {
            Some(record) => ok(&record),
            None => json_error(
                StatusCode::NOT_FOUND,
                &format!("no exception named {name:?}"),
            ),
        },
        Err(e) => internal(e),
    }
}

/// Deletes the pushed exception of that name, even one in conflict with a
/// file or resource (else it would come back when that goes).
pub async fn delete(name: String, state: Arc<ServiceState>) -> Reply {
    match state.store.delete_exception(&name, "admin").await {
        Ok(true) => {
            refresh_local_set(&state).await;
            ok(&serde_json::json!({"deleted": name}))
        }
        Ok(false) => match state
            .policies
            .unpushed_exceptions()
            .into_iter()
            .find(|(_, e)| e.metadata.name == name)
        {
            Some((origin, _)) => json_error(
                StatusCode::CONFLICT,
                &format!("exception {name:?} is defined by {origin}; remove it there"),
            ),
            None => json_error(
                StatusCode::NOT_FOUND,
                &format!("no pushed exception named {name:?}"),
            ),
        },
        Err(e) => internal(e),
    }
}
