//! `/api/v1/reports`: event batches from enforcers, stored once each.

use std::sync::Arc;

use bytes::Bytes;
use palisade_common::wire::{IngestResult, ReportBatch};

use crate::metrics::Refused;
use crate::service::{forbidden_for, ok, reporter, Answer, ApiError, Reporter, ServiceState};

pub async fn ingest_reports(auth: Option<String>, body: Bytes, state: Arc<ServiceState>) -> Answer {
    let caller = reporter(&state, auth.as_deref()).await?;
    let mut batch: ReportBatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed report batch: {e}")))?;
    rename_legacy_rules(&mut batch);
    check_batch(&batch, state.settings.max_batch_events)
        .map_err(|problem| ApiError::bad_request(problem.to_string()))?;
    if let Reporter::Workload(w) = &caller {
        if !w.may_report_for(&batch.pod.namespace, &batch.pod.name) {
            return Err(forbidden_for(w, &batch.pod.namespace, &batch.pod.name));
        }
    }
    let _turn = state.write_turn(Refused::Reports).await?;
    let stored = state.store.insert_events(&batch.pod, &batch.events).await?;
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

/// Enforcers of earlier releases, still running in pods made before an
/// upgrade, name their own events `agent/...`: stored as `enforcer/...`, so
/// that one query finds both.
fn rename_legacy_rules(batch: &mut ReportBatch) {
    for event in &mut batch.events {
        if let Some(rest) = event.rule.strip_prefix("agent/") {
            event.rule = format!("enforcer/{rest}");
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_enforcers_own_events_are_stored_under_the_enforcer_name() {
        let body = r#"{"pod": {"namespace": "shop", "name": "web-0", "uid": "u"},
            "events": [
              {"id": "1", "timeMs": 1, "kind": "agent", "rule": "agent/started", "message": "up"},
              {"id": "2", "timeMs": 2, "kind": "drift", "rule": "drift/exec-from-tmp", "message": "m"}
            ]}"#;
        let mut batch: ReportBatch = serde_json::from_str(body).unwrap();
        rename_legacy_rules(&mut batch);
        assert_eq!(
            batch.events[0].kind,
            palisade_common::wire::EventKind::Enforcer
        );
        assert_eq!(batch.events[0].rule, "enforcer/started");
        assert_eq!(batch.events[1].rule, "drift/exec-from-tmp");
    }
}
