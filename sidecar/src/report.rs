//! Reports: events are queued (bounded), sent in batches, retried with
//! backoff, and spooled to disk while the service is unreachable, so
//! nothing is lost across outages or restarts. What cannot be kept (full
//! queue, full spool) is counted and reported as soon as possible.

use std::fs::OpenOptions;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use palisade_common::wire::{Event, EventKind, ReportBatch};

use crate::config::Settings;

// Slots are allocated up front: 1024 events is about 256 KiB.
const QUEUE: usize = 1024;
const BATCH: usize = 500;
const SPOOL_FILE: &str = "spool.jsonl";

/// Cheap to clone; `report` never blocks the watcher.
#[derive(Clone)]
pub struct Reporter {
    tx: SyncSender<Event>,
    ids: Arc<EventIds>,
    dropped: Arc<AtomicU64>,
}

/// `BOOT-SEQ`: unique per enforcer start, stable across retries.
pub struct EventIds {
    boot: String,
    seq: AtomicU64,
}

impl EventIds {
    pub fn new() -> Self {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
            .map(|u| u.trim().replace('-', "")[..16].to_string())
            .unwrap_or_else(|_| format!("{:x}", std::process::id()));
        Self {
            boot,
            seq: AtomicU64::new(0),
        }
    }

    pub fn next(&self) -> String {
        format!("{}-{}", self.boot, self.seq.fetch_add(1, Ordering::Relaxed))
    }
}

impl Default for EventIds {
    fn default() -> Self {
        Self::new()
    }
}

impl Reporter {
    pub fn next_id(&self) -> String {
        self.ids.next()
    }

    pub fn report(&self, event: Event) {
        tracing::info!(rule = %event.rule, message = %event.message, action = ?event.action, "event");
        if self.tx.try_send(event).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Starts the sender thread. Dropping every `Reporter` clone makes it flush
/// and end; join the handle to wait for that.
pub fn spawn(settings: Settings, agent: ureq::Agent) -> (Reporter, JoinHandle<()>) {
    let (tx, rx) = sync_channel(QUEUE);
    let dropped = Arc::new(AtomicU64::new(0));
    let ids = Arc::new(EventIds::new());
    let reporter = Reporter {
        tx,
        ids: ids.clone(),
        dropped: dropped.clone(),
    };
    let handle = std::thread::Builder::new()
        .name("reporter".into())
        .stack_size(256 * 1024)
        .spawn(move || Sender::new(settings, agent, dropped, ids).run(rx))
        .expect("spawn reporter thread");
    (reporter, handle)
}

struct Sender {
    settings: Settings,
    agent: ureq::Agent,
    spool: PathBuf,
    dropped: Arc<AtomicU64>,
    dropped_reported: u64,
    ids: Arc<EventIds>,
    retry_at: Instant,
    backoff: Duration,
}

impl Sender {
    fn new(
        settings: Settings,
        agent: ureq::Agent,
        dropped: Arc<AtomicU64>,
        ids: Arc<EventIds>,
    ) -> Self {
        let spool = settings.state_dir.join(SPOOL_FILE);
        Self {
            settings,
            agent,
            spool,
            dropped,
            dropped_reported: 0,
            ids,
            retry_at: Instant::now(),
            backoff: Duration::from_millis(500),
        }
    }

    fn run(mut self, rx: Receiver<Event>) {
        loop {
            let mut batch = Vec::new();
            let open = match rx.recv_timeout(Duration::from_millis(500)) {
                Ok(event) => {
                    batch.push(event);
                    while batch.len() < BATCH {
                        match rx.try_recv() {
                            Ok(e) => batch.push(e),
                            Err(_) => break,
                        }
                    }
                    true
                }
                Err(RecvTimeoutError::Timeout) => true,
                Err(RecvTimeoutError::Disconnected) => false,
            };
            batch.extend(self.drop_notice());
            if open {
                self.deliver(batch, false);
            } else {
                // Shutdown: one last attempt now, else keep it on disk.
                self.deliver(batch, true);
                return;
            }
        }
    }

    /// An agent event when events were dropped since the last notice.
    fn drop_notice(&mut self) -> Option<Event> {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped == self.dropped_reported {
            return None;
        }
        let new = dropped - self.dropped_reported;
        self.dropped_reported = dropped;
        Some(Event {
            id: self.ids.next(),
            time_ms: now_ms(),
            kind: EventKind::Agent,
            rule: "agent/events-dropped".into(),
            policy: None,
            mode: Default::default(),
            message: format!("{new} events dropped (queue or spool full); {dropped} in total"),
            process: None,
            action: None,
        })
    }

    fn deliver(&mut self, batch: Vec<Event>, final_attempt: bool) {
        if self.settings.policy_url.is_none() {
            // Standalone: the log line per event is the report.
            return;
        }
        if Instant::now() < self.retry_at && !final_attempt {
            self.spool_events(&batch);
            return;
        }
        let mut pending = self.take_spool();
        pending.extend(batch);
        for (i, chunk) in pending.chunks(BATCH).enumerate() {
            if let Err(e) = self.send(chunk) {
                tracing::warn!(error = %e, events = pending.len() - i * BATCH, "policy service unreachable; spooling reports");
                self.spool_events(&pending[i * BATCH..]);
                self.retry_at = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
                return;
            }
        }
        self.backoff = Duration::from_millis(500);
    }

    fn send(&self, events: &[Event]) -> Result<(), String> {
        if events.is_empty() {
            return Ok(());
        }
        let base = self.settings.policy_url.as_deref().unwrap_or_default();
        let url = format!("{}/api/v1/reports", base.trim_end_matches('/'));
        let batch = ReportBatch {
            pod: self.settings.pod.clone(),
            events: events.to_vec(),
        };
        let mut request = self.agent.post(&url);
        if let Some(header) = self.settings.token.as_ref().and_then(|t| t.header()) {
            request = request.header("Authorization", &header);
        }
        match request.send_json(&batch) {
            Ok(resp) if resp.status().is_success() => Ok(()),
            // A batch the service will never accept is not retried forever.
            Ok(resp) if resp.status() == 400 => {
                tracing::error!("policy service rejected a report batch as malformed; dropping it");
                self.dropped
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                Ok(())
            }
            Ok(resp) => Err(format!("HTTP {}", resp.status())),
            Err(e) => Err(e.to_string()),
        }
    }

    fn spool_events(&self, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let used = std::fs::metadata(&self.spool).map(|m| m.len()).unwrap_or(0);
        let mut lines = Vec::new();
        let mut kept = 0;
        for e in events {
            let line = serde_json::to_string(e).unwrap_or_default();
            if used + (lines.len() + line.len() + 1) as u64 > self.settings.spool_max_bytes {
                break;
            }
            lines.extend_from_slice(line.as_bytes());
            lines.push(b'\n');
            kept += 1;
        }
        let written = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.spool)
            .and_then(|mut f| f.write_all(&lines));
        let lost = match written {
            Ok(()) => events.len() - kept,
            Err(e) => {
                tracing::error!(error = %e, "cannot write the report spool");
                events.len()
            }
        };
        self.dropped.fetch_add(lost as u64, Ordering::Relaxed);
    }

    /// Everything spooled so far (the file is emptied; failures re-spool).
    fn take_spool(&self) -> Vec<Event> {
        let Ok(text) = std::fs::read_to_string(&self.spool) else {
            return Vec::new();
        };
        let _ = std::fs::remove_file(&self.spool);
        text.lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
