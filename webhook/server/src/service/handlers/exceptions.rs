//! `/api/v1/exceptions`: PolicyExceptions admins list (with their state
//! now, expired ones included), push, read and delete. Pushed ones are
//! versioned like policies; files and resources are listed beside them.

use std::sync::Arc;
use std::time::SystemTime;

use super::refresh_local_set;
use super::versioned::{self, Kind};
use crate::db::StoredException;
use crate::service::auth::Author;
use crate::service::query::PolicyQuery;
use crate::service::{ok, Answer, ApiError, ServiceState};
use crate::sources::PUSHED_ORIGIN;
use bytes::Bytes;
use palisade_common::exception::EXCEPTION_KIND;
use palisade_common::policy::Document;
use palisade_common::wire::ExceptionRecord;

const EXCEPTION: Kind = Kind("exception");

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

pub async fn list(state: Arc<ServiceState>) -> Answer {
    let pushed = state.store.current_exceptions().await?;
    ok(&active_records(&state, pushed))
}

pub async fn push(author: Author, body: Bytes, state: Arc<ServiceState>) -> Answer {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("exception must be UTF-8 YAML or JSON"))?;
    let exception = match Document::from_yaml(text) {
        Ok(Document::Exception(e)) => e,
        Ok(Document::Policy(_)) => {
            return Err(ApiError::bad_request(
                "kind: expected PolicyException (push policies to /api/v1/policies)",
            ))
        }
        Err(e) => return Err(ApiError::bad_request(e.to_string())),
    };
    state.policies.check_push_exception(&exception)?;
    let revision = state
        .store
        .put_exception(&exception, author.as_str())
        .await?;
    refresh_local_set(&state).await;
    let name = &exception.metadata.name;
    tracing::info!(exception = %name, revision, owner = %exception.spec.owner,
        expires_at = %exception.spec.expires_at, author = author.as_str(),
        "policy exception pushed");
    ok(&serde_json::json!({"name": name, "revision": revision}))
}

pub async fn get(name: String, query: PolicyQuery, state: Arc<ServiceState>) -> Answer {
    if query.wants_history() {
        let now = SystemTime::now();
        let history: Vec<_> = state
            .store
            .exception_history(&name)
            .await?
            .into_iter()
            .map(|s| s.map(|stored| pushed_record(stored, now)))
            .collect();
        return versioned::history(EXCEPTION, history);
    }
    let pushed = state.store.current_exceptions().await?;
    versioned::named(EXCEPTION, &name, active_records(&state, pushed), |r| {
        &r.name
    })
}

/// Deletes the pushed exception of that name, even one in conflict with a
/// file or resource (else it would come back when that goes).
pub async fn delete(name: String, author: Author, state: Arc<ServiceState>) -> Answer {
    let deleted = state.store.delete_exception(&name, author.as_str()).await?;
    let elsewhere = || {
        state
            .policies
            .unpushed_exceptions()
            .into_iter()
            .find(|(_, e)| e.metadata.name == name)
            .map(|(origin, _)| origin)
    };
    versioned::deleted(&state, EXCEPTION, name.clone(), deleted, elsewhere).await
}
