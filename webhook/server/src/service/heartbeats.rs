//! Heartbeats wait in a bounded queue and are written together: at 10,000
//! enforcers a heartbeat arrives every 100 µs, and one transaction per
//! heartbeat would spend the database on commits. One writer drains the
//! queue: whatever arrived while it wrote the last batch is the next batch,
//! so a quiet service writes each heartbeat at once and a busy one writes
//! hundreds per commit. A full queue is back-pressure: the caller answers
//! `429` and the enforcer comes back later.

use std::sync::Arc;

use palisade_common::wire::{Event, Heartbeat};
use tokio::sync::{mpsc, oneshot};

use crate::db::{Store, StoreError};
use crate::metrics::Metrics;

/// Most heartbeats written in one transaction.
const MAX_BATCH: usize = 1000;
/// How long a heartbeat someone waits for may wait for room in the queue.
const ROOM_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Where a handler's heartbeat goes.
#[derive(Clone)]
pub struct Heartbeats {
    queue: mpsc::Sender<Queued>,
}

struct Queued {
    beat: Heartbeat,
    /// Who waits for the write, if anyone.
    written: Option<oneshot::Sender<Result<Option<Event>, Arc<StoreError>>>>,
}

/// The queue held `capacity` heartbeats not yet written.
#[derive(Debug, thiserror::Error)]
#[error("{capacity} heartbeats are waiting to be written")]
pub struct Full {
    pub capacity: usize,
}

/// Why a heartbeat someone waited for was not written.
#[derive(Debug, thiserror::Error)]
pub enum NotWritten {
    #[error(transparent)]
    Full(#[from] Full),
    #[error("storage: {0}")]
    Store(Arc<StoreError>),
    #[error("the service is stopping")]
    Stopping,
}

impl Heartbeats {
    /// Starts the writer; it ends when every `Heartbeats` is dropped.
    pub fn start(store: Store, metrics: Arc<Metrics>, capacity: usize) -> Self {
        let (queue, receiver) = mpsc::channel(capacity.max(1));
        tokio::spawn(write_loop(store, metrics, receiver));
        Self { queue }
    }

    /// Queues `beat` without waiting for it to be written.
    pub fn send(&self, beat: Heartbeat) -> Result<(), NotWritten> {
        self.enqueue(Queued {
            beat,
            written: None,
        })
    }

    /// Queues `beat` and waits until it is written: the event it caused,
    /// if any (as [`Store::record_heartbeat`]). A full queue is waited on
    /// for up to [`ROOM_WAIT`]: this is the heartbeat an enforcer sends once
    /// (its last, or news it must not lose), not the periodic one.
    pub async fn record(&self, beat: Heartbeat) -> Result<Option<Event>, NotWritten> {
        let (written, outcome) = oneshot::channel();
        let queued = Queued {
            beat,
            written: Some(written),
        };
        match self.queue.send_timeout(queued, ROOM_WAIT).await {
            Ok(()) => {}
            Err(mpsc::error::SendTimeoutError::Timeout(_)) => {
                return Err(NotWritten::Full(Full {
                    capacity: self.queue.max_capacity(),
                }))
            }
            Err(mpsc::error::SendTimeoutError::Closed(_)) => return Err(NotWritten::Stopping),
        }
        match outcome.await {
            Ok(Ok(event)) => Ok(event),
            Ok(Err(e)) => Err(NotWritten::Store(e)),
            Err(_) => Err(NotWritten::Stopping),
        }
    }

    fn enqueue(&self, queued: Queued) -> Result<(), NotWritten> {
        self.queue.try_send(queued).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => NotWritten::Full(Full {
                capacity: self.queue.max_capacity(),
            }),
            // The writer is gone: this replica is stopping.
            mpsc::error::TrySendError::Closed(_) => NotWritten::Stopping,
        })
    }
}

async fn write_loop(store: Store, metrics: Arc<Metrics>, mut receiver: mpsc::Receiver<Queued>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (beats, waiting): (Vec<Heartbeat>, Vec<_>) =
            batch.drain(..).map(|q| (q.beat, q.written)).unzip();
        let started = std::time::Instant::now();
        let outcome = match store.record_heartbeats(&beats).await {
            // One heartbeat the database refuses must not cost the others
            // theirs: each is written alone, with its own outcome.
            Err(e) if beats.len() > 1 => {
                tracing::debug!(error = %e, heartbeats = beats.len(), "heartbeat batch refused; writing one by one");
                let mut each = Vec::with_capacity(beats.len());
                for beat in &beats {
                    each.push(
                        store
                            .record_heartbeats(std::slice::from_ref(beat))
                            .await
                            .map(|mut events| events.pop().flatten())
                            .map_err(Arc::new),
                    );
                }
                Ok(each)
            }
            Err(e) => Err(e),
            Ok(events) => Ok(events.into_iter().map(Ok).collect()),
        };
        metrics
            .heartbeat_batch_seconds
            .observe(started.elapsed().as_secs_f64());
        let outcomes: Vec<Result<Option<Event>, Arc<StoreError>>> = match outcome {
            Ok(outcomes) => {
                for (beat, outcome) in beats.iter().zip(&outcomes) {
                    match outcome {
                        Ok(Some(e)) => {
                            tracing::info!(namespace = %beat.pod.namespace, pod = %beat.pod.name, rule = %e.rule, "{}", e.message)
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::warn!(namespace = %beat.pod.namespace, pod = %beat.pod.name, error = %e, "cannot store a heartbeat");
                            metrics.heartbeats_failed.inc();
                            continue;
                        }
                    }
                    metrics.heartbeats_written.inc();
                }
                outcomes
            }
            Err(e) => {
                tracing::warn!(error = %e, heartbeats = beats.len(), "cannot store heartbeats");
                metrics.heartbeats_failed.inc_by(beats.len() as u64);
                let e = Arc::new(e);
                beats.iter().map(|_| Err(e.clone())).collect()
            }
        };
        for (written, outcome) in waiting.into_iter().zip(outcomes) {
            if let Some(written) = written {
                let _ = written.send(outcome);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_common::wire::EnforcerState;

    fn beat(pod: &str) -> Heartbeat {
        crate::db::tests::mk_beat(pod, "b1", EnforcerState::Running)
    }

    #[tokio::test]
    async fn a_full_queue_refuses_at_once_and_a_drained_one_takes_again() {
        let (queue, mut receiver) = mpsc::channel(2);
        let heartbeats = Heartbeats { queue };
        heartbeats.send(beat("a")).unwrap();
        heartbeats.send(beat("b")).unwrap();
        let full = heartbeats.send(beat("c")).unwrap_err();
        assert!(matches!(full, NotWritten::Full(Full { capacity: 2 })));
        assert_eq!(full.to_string(), "2 heartbeats are waiting to be written");
        assert_eq!(receiver.recv().await.unwrap().beat.pod.name, "a");
        heartbeats.send(beat("c")).unwrap();
        drop(receiver);
        assert!(matches!(
            heartbeats.send(beat("d")),
            Err(NotWritten::Stopping)
        ));
    }

    #[tokio::test]
    async fn heartbeats_waited_for_are_written_and_answered_with_their_event() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("palisade.db").display());
        let store = Store::open(&url).await.unwrap();
        let heartbeats = Heartbeats::start(store.clone(), Arc::new(Metrics::new()), 100);
        let mut stopping = beat("a");
        stopping.enforcer.state = EnforcerState::Stopping;
        let (first, second) =
            tokio::join!(heartbeats.record(beat("b")), heartbeats.record(stopping));
        assert_eq!(first.unwrap(), None);
        assert_eq!(second.unwrap().unwrap().rule, "enforcer/stopped");
        assert_eq!(store.enforcers().await.unwrap().len(), 2);
    }
}
