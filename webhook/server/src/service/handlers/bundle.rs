//! An enforcer's runtime rules, long-polled: `GET /api/v1/bundle`, and
//! `POST /api/v1/sync`, the same long-poll carrying the enforcer's
//! heartbeat, so that an enforcer holds one connection, not two.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use palisade_common::wire::Heartbeat;
use warp::http::{header, Response, StatusCode};

use crate::service::query::{BundleQuery, BundleRequest};
use crate::service::{forbidden_for, reporter, Answer, ApiError, Reporter, ServiceState};

/// Long-poll: with `etag` equal to the current bundle's, waits up to
/// `wait` seconds for a change and answers 304 if none came.
pub async fn runtime_bundle(
    query: BundleQuery,
    auth: Option<String>,
    state: Arc<ServiceState>,
) -> Answer {
    let request = Box::pin(accept_bundle(query, auth, &state)).await?;
    wait_for_change(&state, &request).await
}

// The checks before a long-poll waits run in a future of their own (boxed
// by the caller), so that what they hold, a token review's state, the
// request body (which would pin hyper's 8 KiB read buffer) and the token,
// is freed before the wait: a waiting long-poll is what each connected
// enforcer costs the service.

async fn accept_bundle(
    query: BundleQuery,
    auth: Option<String>,
    state: &ServiceState,
) -> Result<BundleRequest, ApiError> {
    // Enforcers in a cluster fetch with their pod-bound token, as they report.
    let who = reporter(state, auth.as_deref()).await?;
    let request = parse(query, state)?;
    if let Reporter::Workload(workload) = &who {
        if workload.namespace != request.namespace {
            return Err(forbidden_for(workload, &request.namespace, "*"));
        }
    }
    Ok(request)
}

/// A heartbeat (the body, as `POST /api/v1/heartbeat` takes it) and then
/// the long-poll of `GET /api/v1/bundle` (the query). The heartbeat is
/// queued, not waited for; a full queue is a `429` before any waiting.
pub async fn sync(
    query: BundleQuery,
    auth: Option<String>,
    body: Bytes,
    state: Arc<ServiceState>,
) -> Answer {
    let request = Box::pin(accept_sync(query, auth, body, &state)).await?;
    wait_for_change(&state, &request).await
}

async fn accept_sync(
    query: BundleQuery,
    auth: Option<String>,
    body: Bytes,
    state: &ServiceState,
) -> Result<BundleRequest, ApiError> {
    let who = reporter(state, auth.as_deref()).await?;
    let request = parse(query, state)?;
    let beat = super::enforcers::parse_heartbeat(&body)?;
    if beat.pod.namespace != request.namespace {
        return Err(ApiError::bad_request(format!(
            "the heartbeat is of a pod in {:?}, the bundle asked for {:?}",
            beat.pod.namespace, request.namespace
        )));
    }
    if let Reporter::Workload(w) = &who {
        if !w.may_report_for(&beat.pod.namespace, &beat.pod.name) {
            return Err(forbidden_for(w, &beat.pod.namespace, &beat.pod.name));
        }
    }
    queue(state, beat)?;
    Ok(request)
}

fn parse(query: BundleQuery, state: &ServiceState) -> Result<BundleRequest, ApiError> {
    let max_wait = Duration::from_secs(state.settings.max_wait_secs);
    query
        .parse(max_wait)
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

fn queue(state: &ServiceState, beat: Heartbeat) -> Result<(), ApiError> {
    state
        .heartbeats
        .send(beat)
        .map_err(|e| state.not_written(e))
}

/// The pod's bundle once it differs from `request.etag`, or 304 when
/// `request.wait` passes first. A replica that is stopping answers 503
/// instead of an early 304, so that enforcers back off (and reconnect to
/// another replica) rather than poll it in a loop.
async fn wait_for_change(state: &ServiceState, request: &BundleRequest) -> Answer {
    let mut changes = state.policies.subscribe();
    let mut stopping = state.stopping.clone();
    let deadline = tokio::time::Instant::now() + request.wait;
    loop {
        let set = state.policies.current();
        let bundle = state.bundles.get(&set, &request.namespace, &request.labels);
        if bundle.etag != request.etag {
            return Ok(Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(bundle.json.clone())
                .unwrap_or_default());
        }
        if *stopping.borrow() {
            return Err(ApiError::Stopping);
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return Err(ApiError::Stopping) },
            _ = stopping.changed() => return Err(ApiError::Stopping),
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    Ok(Response::builder()
        .status(StatusCode::NOT_MODIFIED)
        .body(Vec::new())
        .unwrap_or_default())
}
