//! `/api/v1/reports`: event batches from enforcers, stored once each.

use std::sync::Arc;

use warp::http::StatusCode;

use crate::reply::json_error;
use crate::service::{internal, ok, Reply, ServiceState};
use bytes::Bytes;
use palisade_common::wire::{IngestResult, ReportBatch};

use crate::service::{forbidden_for, reporter, Reporter};

pub async fn ingest_reports(auth: Option<String>, body: Bytes, state: Arc<ServiceState>) -> Reply {
    let caller = match reporter(&state, auth.as_deref()).await {
        Ok(c) => c,
        Err(reply) => return reply,
    };
    let batch: ReportBatch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("malformed report batch: {e}"),
            )
        }
    };
    if let Err(problem) = check_batch(&batch, state.settings.max_batch_events) {
        return json_error(StatusCode::BAD_REQUEST, &problem.to_string());
    }
    if let Reporter::Workload(w) = &caller {
        if !w.may_report_for(&batch.pod.namespace, &batch.pod.name) {
            return forbidden_for(w, &batch.pod.namespace, &batch.pod.name);
        }
    }
    match state.store.insert_events(&batch.pod, &batch.events).await {
        Ok(stored) => {
            state
                .metrics
                .events_received
                .inc_by(batch.events.len() as u64);
            state.metrics.events_stored.inc_by(stored as u64);
            ok(&IngestResult {
                received: batch.events.len(),
                stored,
            })
        }
        Err(e) => internal(e),
    }
}

/// Why a report batch is refused as a whole.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum BatchError {
    #[error("pod.namespace and pod.name are required")]
    NoPod,
    #[error("{count} events in one batch; the limit is {limit}")]
    TooMany { count: usize, limit: usize },
    #[error("events[{0}].id must be 1..=128 characters")]
    BadId(usize),
}

fn check_batch(batch: &ReportBatch, max_events: usize) -> Result<(), BatchError> {
    if batch.pod.namespace.is_empty() || batch.pod.name.is_empty() {
        return Err(BatchError::NoPod);
    }
    if batch.events.len() > max_events {
        return Err(BatchError::TooMany {
            count: batch.events.len(),
            limit: max_events,
        });
    }
    match batch
        .events
        .iter()
        .position(|e| e.id.is_empty() || e.id.len() > 128)
    {
        Some(i) => Err(BatchError::BadId(i)),
        None => Ok(()),
    }
}
