//! `/api/v1/bundle`: an enforcer's runtime rules, long-polled.

use std::sync::Arc;

use std::time::Duration;

use warp::http::{Response, StatusCode};

use crate::service::query::BundleQuery;
use crate::service::{forbidden_for, ok, reporter, Answer, ApiError, Reporter, ServiceState};

/// Long-poll: with `etag` equal to the current bundle's, waits up to
/// `wait` seconds for a change and answers 304 if none came.
pub async fn runtime_bundle(
    query: BundleQuery,
    auth: Option<String>,
    state: Arc<ServiceState>,
) -> Answer {
    // Enforcers in a cluster fetch with their pod-bound token, as they report.
    let who = reporter(&state, auth.as_deref()).await?;
    let max_wait = Duration::from_secs(state.settings.max_wait_secs);
    let request = query
        .parse(max_wait)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    if let Reporter::Workload(workload) = &who {
        if workload.namespace != request.namespace {
            return Err(forbidden_for(workload, &request.namespace, "*"));
        }
    }
    let mut changes = state.policies.subscribe();
    let mut stopping = state.stopping.clone();
    let deadline = tokio::time::Instant::now() + request.wait;
    loop {
        let bundle = state
            .policies
            .current()
            .runtime_bundle(&request.namespace, &request.labels);
        if bundle.etag != request.etag {
            return ok(&bundle);
        }
        if *stopping.borrow() {
            break;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            _ = stopping.changed() => break,
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    Ok(Response::builder()
        .status(StatusCode::NOT_MODIFIED)
        .body(Vec::new())
        .unwrap_or_default())
}
