//! What policies and exceptions share: both are pushed with revisions and
//! listed beside the definitions that files and resources give, so reading
//! one by name, reading its history and deleting one answer alike.

use serde::Serialize;

use super::refresh_local_set;
use crate::service::{ok, Answer, ApiError, ServiceState};

/// The kind of document, as answers name it: `policy`, `exception`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kind(pub &'static str);

/// `GET .../{name}`: the active record of that name, whatever its source.
pub(super) fn named<R: Serialize>(
    kind: Kind,
    name: &str,
    records: Vec<R>,
    name_of: impl Fn(&R) -> &str,
) -> Answer {
    match records.into_iter().find(|r| name_of(r) == name) {
        Some(record) => ok(&record),
        None => Err(ApiError::not_found(format!("no {} named {name:?}", kind.0))),
    }
}

/// `GET .../{name}?history`: every revision pushed, oldest first.
pub(super) fn history<R: Serialize>(kind: Kind, history: Vec<R>) -> Answer {
    if history.is_empty() {
        return Err(ApiError::not_found(format!("no such pushed {}", kind.0)));
    }
    ok(&history)
}

/// `DELETE .../{name}`, once the store said whether a pushed one was
/// deleted: a name another source defines (`defined_by`, its origin) is
/// refused, since deleting the push cannot remove it.
pub(super) async fn deleted(
    state: &ServiceState,
    kind: Kind,
    name: String,
    deleted: bool,
    defined_by: impl FnOnce() -> Option<String>,
) -> Answer {
    if deleted {
        refresh_local_set(state).await;
        return ok(&serde_json::json!({ "deleted": name }));
    }
    match defined_by() {
        Some(origin) => Err(ApiError::conflict(format!(
            "{} {name:?} is defined by {origin}; remove it there",
            kind.0
        ))),
        None => Err(ApiError::not_found(format!(
            "no pushed {} named {name:?}",
            kind.0
        ))),
    }
}
