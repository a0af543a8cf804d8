//! `/api/v1/policies`: what admins list, push, read and delete.

use std::sync::Arc;

use crate::service::auth::Author;
use crate::service::{ok, Answer, ApiError, ServiceState};
use crate::sources::PUSHED_ORIGIN;
use bytes::Bytes;
use palisade_common::policy::PolicyDocument;
use palisade_common::wire::PolicyRecord;

use super::refresh_local_set;
use super::versioned::{self, Kind};
use crate::service::query::PolicyQuery;

const POLICY: Kind = Kind("policy");

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

pub async fn list(state: Arc<ServiceState>) -> Answer {
    let pushed = state.store.current_policies().await?;
    ok(&active_records(&state, pushed))
}

pub async fn push(author: Author, body: Bytes, state: Arc<ServiceState>) -> Answer {
    let text = std::str::from_utf8(&body)
        .map_err(|_| ApiError::bad_request("policy must be UTF-8 YAML or JSON"))?;
    let doc = PolicyDocument::from_yaml(text).map_err(|e| ApiError::bad_request(e.to_string()))?;
    state.policies.check_push(&doc)?;
    let revision = state.store.put_policy(&doc, author.as_str()).await?;
    refresh_local_set(&state).await;
    tracing::info!(policy = %doc.metadata.name, revision, author = author.as_str(), "policy pushed");
    ok(&serde_json::json!({"name": doc.metadata.name, "revision": revision}))
}

pub async fn get(name: String, query: PolicyQuery, state: Arc<ServiceState>) -> Answer {
    if query.wants_history() {
        return versioned::history(POLICY, state.store.policy_history(&name).await?);
    }
    let pushed = state.store.current_policies().await?;
    versioned::named(POLICY, &name, active_records(&state, pushed), |r| &r.name)
}

/// Deletes the pushed policy of that name, even one a file shadows (else
/// it would come back when the file goes).
pub async fn delete(name: String, author: Author, state: Arc<ServiceState>) -> Answer {
    let deleted = state.store.delete_policy(&name, author.as_str()).await?;
    let in_directory = || {
        state
            .policies
            .directory_documents()
            .into_iter()
            .find(|(_, d)| d.metadata.name == name)
            .map(|(origin, _)| format!("the policy directory ({origin})"))
    };
    versioned::deleted(&state, POLICY, name.clone(), deleted, in_directory).await
}
