//! Reports: every event is written ahead to the spool file in the state
//! directory before anything else happens to it, sent in batches, and
//! removed from the spool only once the service has acknowledged it: an
//! outage, a restart or a SIGKILL at any moment loses nothing that was
//! reported (retries are safe, the service stores each id once).
//!
//! The queue is bounded. When it is full, file events make room for
//! process and socket evidence, never the reverse; what cannot be kept is
//! counted, reported as `enforcer/events-dropped` and carried in every
//! heartbeat. A heartbeat goes to the service at a fixed interval (riding
//! the policy long-poll, see `policy`), so it notices an enforcer that was
//! stopped or killed; this sender adds one at once when what it says
//! changes, and a last one when the enforcer stops.
//!
//! Observations (what the pod was seen doing, see `observations`) travel
//! the same way with less ceremony: summed in memory, sent every interval
//! and at shutdown, put back when a send fails. They are not spooled: a
//! draft is made from many pods' hours, and an enforcer killed loses at
//! most one interval of sums.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use palisade_common::backoff;
use palisade_common::observe::{ObservationBatch, Observed};
use palisade_common::policy::Mode;
use palisade_common::wire::{
    EnforcerState, EnforcerStatus, Event, Heartbeat, ProtectionOff, ReportBatch,
};

use crate::config::Settings;
use crate::observations::{Observations, Sums};

/// Observations per `POST /api/v1/observations`: below the service's
/// default `service.max_batch_events` (1,000), which bounds a batch of
/// either kind, so a full aggregator goes out in several requests instead
/// of being refused as one.
pub const OBSERVATIONS_PER_BATCH: usize = 500;
use crate::policy::PolicyHolder;
use crate::rules::{Priority, Rule};

const BATCH: usize = 500;
/// Events held (and spooled) at most; beyond, file events give way.
const MAX_PENDING: usize = 2048;
pub const SPOOL_FILE: &str = "spool.jsonl";

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("HTTP {0}")]
    Status(u16),
    /// `429`/`503`: the service asks to be left alone this long.
    #[error("HTTP {status}: the service is busy")]
    Busy {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("{0}")]
    Transport(#[from] ureq::Error),
}

impl SendError {
    /// An answer that is not a success: `Busy` when the service asked for
    /// a pause.
    pub fn from_response<B>(response: &ureq::http::Response<B>) -> Self {
        let status = response.status().as_u16();
        match status {
            429 | 503 => SendError::Busy {
                status,
                retry_after: backoff::retry_after(
                    response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()),
                ),
            },
            s => SendError::Status(s),
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            SendError::Busy { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Cheap to clone; `report` never waits for the network.
#[derive(Clone)]
pub struct Reporter {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
    ids: EventIds,
    dropped: AtomicU64,
    unobserved: AtomicU64,
    /// What the monitor last found it cannot protect: every heartbeat
    /// carries it.
    protections_off: Mutex<Vec<ProtectionOff>>,
    /// A heartbeat is due now, not at its interval: what it says changed.
    beat_now: AtomicBool,
    /// Sums of what the pod was seen doing since the last send.
    observations: Mutex<Observations>,
    /// No policy service: the log line per event is the report.
    standalone: bool,
    spool_max_bytes: u64,
    started_ms: i64,
}

struct Pending {
    seq: u64,
    priority: Priority,
    bytes: u64,
    event: Event,
}

struct Queue {
    pending: VecDeque<Pending>,
    bytes: u64,
    next_seq: u64,
    spool: PathBuf,
    /// Append handle of the spool.
    file: Option<File>,
    /// Why the enforcer stops, once it does.
    closing: Option<String>,
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

    pub fn boot(&self) -> &str {
        &self.boot
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
    /// A reporter whose spool lives in `state_dir`; events left there by a
    /// previous run are queued first.
    pub fn new(state_dir: &Path, standalone: bool, spool_max_bytes: u64) -> Self {
        let spool = state_dir.join(SPOOL_FILE);
        let mut queue = Queue {
            pending: VecDeque::new(),
            bytes: 0,
            next_seq: 0,
            spool: spool.clone(),
            file: None,
            closing: None,
        };
        if !standalone {
            if let Ok(text) = std::fs::read_to_string(&spool) {
                for line in text.lines() {
                    if let Ok(event) = serde_json::from_str::<Event>(line) {
                        queue.push(event, line.len() as u64 + 1);
                    }
                }
            }
            queue.file = open_append(&spool);
        }
        Self {
            shared: Arc::new(Shared {
                queue: Mutex::new(queue),
                wake: Condvar::new(),
                ids: EventIds::new(),
                dropped: AtomicU64::new(0),
                unobserved: AtomicU64::new(0),
                protections_off: Mutex::new(Vec::new()),
                beat_now: AtomicBool::new(false),
                observations: Mutex::new(Observations::default()),
                standalone,
                spool_max_bytes,
                started_ms: now_ms(),
            }),
        }
    }

    pub fn next_id(&self) -> String {
        self.shared.ids.next()
    }

    /// What a heartbeat says now: this enforcer, in `state`, promising one
    /// every `settings.heartbeat`, with `policy_etag` in force.
    pub fn heartbeat(
        &self,
        settings: &Settings,
        state: EnforcerState,
        reason: &str,
        policy_etag: &str,
    ) -> Heartbeat {
        Heartbeat {
            pod: settings.pod.clone(),
            enforcer: EnforcerStatus {
                boot_id: self.boot_id().to_string(),
                started_ms: self.shared.started_ms,
                heartbeat_ms: settings.heartbeat.as_millis() as u64,
                state,
                reason: reason.to_string(),
                dropped: self.dropped(),
                unobserved: self.unobserved(),
                policy_etag: policy_etag.to_string(),
                protections_off: self.protections_off(),
            },
        }
    }

    pub fn boot_id(&self) -> &str {
        self.shared.ids.boot()
    }

    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    /// Adds processes that ran unobserved.
    pub fn add_unobserved(&self, n: u64) {
        self.shared.unobserved.fetch_add(n, Ordering::Relaxed);
    }

    /// Processes that ran unobserved since the enforcer started.
    pub fn unobserved(&self) -> u64 {
        self.shared.unobserved.load(Ordering::Relaxed)
    }

    /// What the next heartbeats say is off in the pod; a change is sent
    /// at once rather than at the next interval.
    pub fn set_protections_off(&self, off: Vec<ProtectionOff>) {
        let mut current = self
            .shared
            .protections_off
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *current == off {
            return;
        }
        *current = off;
        drop(current);
        self.shared.beat_now.store(true, Ordering::Relaxed);
        // The sender waits on the queue's condition variable: taking the
        // queue's lock orders this wake after its check.
        drop(self.lock());
        self.shared.wake.notify_all();
    }

    pub fn protections_off(&self) -> Vec<ProtectionOff> {
        self.shared
            .protections_off
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Whether observations are kept: only with a service to send them to.
    pub fn observing(&self) -> bool {
        !self.shared.standalone
    }

    /// One sighting of `item` in `container` (an ID, or empty), summed
    /// into the next observation batch.
    pub fn observe(&self, container: &str, item: Observed) {
        if self.shared.standalone {
            return;
        }
        self.observations().record(container, item, now_ms());
    }

    fn observations(&self) -> MutexGuard<'_, Observations> {
        self.shared
            .observations
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Events waiting for the service's acknowledgement.
    pub fn pending(&self) -> usize {
        self.lock().pending.len()
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn report(&self, event: Event) {
        if self.shared.standalone {
            log(&event);
            return;
        }
        let line = serde_json::to_string(&event).unwrap_or_default();
        let bytes = line.len() as u64 + 1;
        let priority = Rule::parse(&event.rule).map_or(Priority::Evidence, Rule::priority);
        let mut q = self.lock();
        let full = |q: &Queue| {
            q.pending.len() >= MAX_PENDING || q.bytes + bytes > self.shared.spool_max_bytes
        };
        let mut evicted = false;
        while full(&q) {
            let victim = (priority == Priority::Evidence)
                .then(|| q.pending.iter().position(|p| p.priority == Priority::File))
                .flatten();
            match victim {
                Some(i) => {
                    if let Some(p) = q.pending.remove(i) {
                        q.bytes -= p.bytes;
                    }
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    evicted = true;
                }
                None => {
                    self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
        if evicted {
            // The spool still holds what was evicted: rewrite it.
            q.rewrite_spool();
        }
        let written = q
            .file
            .as_mut()
            .map(|f| f.write_all(format!("{line}\n").as_bytes()));
        if let Some(Err(e)) = written {
            tracing::error!(error = %e, "cannot write the report spool; events kept in memory only");
            q.file = None;
        }
        // Logged once on disk: a log line is proof the event survives a kill.
        log(&event);
        q.push(event, bytes);
        drop(q);
        self.shared.wake.notify_all();
    }
}

fn log(event: &Event) {
    tracing::info!(rule = %event.rule, message = %event.message, action = ?event.action, "event");
}

impl Queue {
    fn push(&mut self, event: Event, bytes: u64) {
        let priority = Rule::parse(&event.rule).map_or(Priority::Evidence, Rule::priority);
        self.pending.push_back(Pending {
            seq: self.next_seq,
            priority,
            bytes,
            event,
        });
        self.next_seq += 1;
        self.bytes += bytes;
    }

    /// Drops what the service acknowledged, from memory and from disk.
    fn acknowledge(&mut self, seqs: &[u64]) {
        let before = self.pending.len();
        self.pending.retain(|p| !seqs.contains(&p.seq));
        if self.pending.len() != before {
            self.bytes = self.pending.iter().map(|p| p.bytes).sum();
            self.rewrite_spool();
        }
    }

    /// The spool as exactly what is pending: written aside and renamed
    /// over, so a kill mid-way leaves the old or the new file, never half.
    fn rewrite_spool(&mut self) {
        if self.pending.is_empty() {
            self.file = None;
            let _ = std::fs::remove_file(&self.spool);
            self.file = open_append(&self.spool);
            return;
        }
        let tmp = self.spool.with_extension("tmp");
        let mut text = String::with_capacity(self.bytes as usize);
        for p in &self.pending {
            text.push_str(&serde_json::to_string(&p.event).unwrap_or_default());
            text.push('\n');
        }
        let result = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.spool));
        if let Err(e) = result {
            tracing::error!(error = %e, "cannot rewrite the report spool");
        }
        self.file = open_append(&self.spool);
    }
}

fn open_append(path: &Path) -> Option<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(
            |e| tracing::error!(error = %e, path = %path.display(), "cannot open the report spool"),
        )
        .ok()
}

/// Ends the sender: one last attempt to deliver, then a heartbeat saying
/// the enforcer stops and why.
pub struct SenderHandle {
    shared: Arc<Shared>,
    thread: JoinHandle<()>,
}

impl SenderHandle {
    pub fn stop(self, reason: &str) {
        self.shared
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closing = Some(reason.to_string());
        self.shared.wake.notify_all();
        let _ = self.thread.join();
    }
}

/// Starts the sender thread for `reporter`.
pub fn spawn(
    settings: Settings,
    client: ureq::Agent,
    reporter: &Reporter,
    policy: Arc<PolicyHolder>,
) -> SenderHandle {
    let sender = Sender {
        policy,
        settings,
        client,
        reporter: reporter.clone(),
        dropped_reported: 0,
        events: Backoff::default(),
        observations: Backoff::default(),
        observations_failing: false,
    };
    let thread = std::thread::Builder::new()
        .name("reporter".into())
        .stack_size(256 * 1024)
        .spawn(move || sender.run())
        .expect("spawn reporter thread");
    SenderHandle {
        shared: reporter.shared.clone(),
        thread,
    }
}

struct Sender {
    settings: Settings,
    /// Heartbeats say which policy bundle is in force.
    policy: Arc<PolicyHolder>,
    client: ureq::Agent,
    reporter: Reporter,
    dropped_reported: u64,
    events: Backoff,
    /// Apart from the events': a service that cannot take observations
    /// (an older one) must not hold up events.
    observations: Backoff,
    /// The last observation send failed (logged once per outage).
    observations_failing: bool,
}

/// When to try again after a failed send: the shared rules of
/// [`backoff`] (doubling from half a second to 30 s, half of each wait
/// random, never before the service's `Retry-After`); a success resets it.
#[derive(Debug, Clone, Copy)]
struct Backoff {
    retry_at: Instant,
    delays: backoff::Backoff,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            retry_at: Instant::now(),
            delays: backoff::Backoff::default(),
        }
    }
}

impl Backoff {
    fn ready(&self, now: Instant) -> bool {
        now >= self.retry_at
    }

    fn failed(&mut self, now: Instant, error: &SendError) {
        self.retry_at = now + self.delays.failed(error.retry_after(), fastrand::f64());
    }

    fn succeeded(&mut self, now: Instant) {
        self.retry_at = now;
        self.delays.succeeded();
    }
}

impl Sender {
    fn run(mut self) {
        if self.settings.policy_url.is_none() {
            // Standalone: nothing to send; wait for the end.
            let mut q = self.reporter.lock();
            while q.closing.is_none() {
                q = self
                    .reporter
                    .shared
                    .wake
                    .wait(q)
                    .unwrap_or_else(|p| p.into_inner());
            }
            return;
        }
        let mut next_observations = Instant::now() + self.settings.observations;
        loop {
            let Next {
                batch,
                more,
                closing,
            } = self.next_batch(next_observations);
            if let Some(notice) = self.drop_notice() {
                self.reporter.report(notice);
            }
            if !batch.is_empty() && (self.events.ready(Instant::now()) || closing.is_some()) {
                let then = if more && closing.is_none() {
                    Then::KeepOpen
                } else {
                    Then::Close
                };
                self.deliver(batch, then);
            }
            let now = Instant::now();
            if now >= next_observations || closing.is_some() {
                // Once more at shutdown, unless the service has just failed
                // to take the events: a stop must not wait out another
                // timeout for sums that are not spooled anyway.
                let ready = match closing {
                    Some(_) => self.events.ready(now),
                    None => self.observations.ready(now),
                };
                if ready {
                    self.send_observations();
                }
                next_observations = now + self.settings.observations;
            }
            // The periodic heartbeat rides the policy long-poll; this one
            // says at once what changed, or that the enforcer stops.
            let beat_now = self.reporter.shared.beat_now.swap(false, Ordering::Relaxed);
            if closing.is_some() || beat_now {
                let state = if closing.is_some() {
                    EnforcerState::Stopping
                } else {
                    EnforcerState::Running
                };
                if let Err(e) = self.heartbeat(state, closing.as_deref().unwrap_or_default()) {
                    tracing::debug!(error = %e, "heartbeat not delivered");
                }
            }
            if closing.is_some() {
                return;
            }
        }
    }

    /// Waits until there are events to send (and the backoff allows it),
    /// `due` comes (observations), a heartbeat is asked for, or the
    /// enforcer stops.
    fn next_batch(&self, due: Instant) -> Next {
        let mut q = self.reporter.lock();
        loop {
            let now = Instant::now();
            let sendable = !q.pending.is_empty() && self.events.ready(now);
            let beat_now = self.reporter.shared.beat_now.load(Ordering::Relaxed);
            if sendable || q.closing.is_some() || now >= due || beat_now {
                break;
            }
            let mut until = due;
            if !q.pending.is_empty() {
                until = until.min(self.events.retry_at);
            }
            q = self
                .reporter
                .shared
                .wake
                .wait_timeout(q, until.saturating_duration_since(now))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        let batch = q
            .pending
            .iter()
            .take(BATCH)
            .map(|p| (p.seq, p.event.clone()))
            .collect();
        Next {
            batch,
            more: q.pending.len() > BATCH,
            closing: q.closing.clone(),
        }
    }

    fn deliver(&mut self, batch: Vec<(u64, Event)>, then: Then) {
        let (seqs, events): (Vec<u64>, Vec<Event>) = batch.into_iter().unzip();
        match self.send(&events, then) {
            Ok(()) => {
                self.reporter.lock().acknowledge(&seqs);
                self.events.succeeded(Instant::now());
            }
            Err(e) => {
                tracing::warn!(error = %e, pending = self.reporter.pending(), "policy service did not take the reports; they stay spooled");
                self.events.failed(Instant::now(), &e);
            }
        }
    }

    /// Sends the observations summed since the last send, in batches of at
    /// most [`OBSERVATIONS_PER_BATCH`]. What cannot be sent goes back,
    /// merged with what comes meanwhile (still bounded), and is tried again
    /// after the backoff.
    fn send_observations(&mut self) {
        let sums = self.reporter.observations().take();
        if sums.is_empty() {
            return;
        }
        let mut overflow = sums.overflow;
        let mut pending = sums.observations;
        while !pending.is_empty() || overflow > 0 {
            let rest = pending.split_off(pending.len().min(OBSERVATIONS_PER_BATCH));
            let batch = ObservationBatch {
                pod: self.settings.pod.clone(),
                observations: std::mem::replace(&mut pending, rest),
                overflow: std::mem::take(&mut overflow),
            };
            let then = if pending.is_empty() && overflow == 0 {
                Then::Close
            } else {
                Then::KeepOpen
            };
            let error = match self.post("observations", &batch, then) {
                // Never accepted however often it is sent (the aggregator
                // keeps out what the service refuses, so this is a bug).
                Ok(Taken::Malformed) => {
                    tracing::error!(
                        items = batch.observations.len(),
                        "policy service rejected an observation batch as malformed; dropping it"
                    );
                    continue;
                }
                Ok(Taken::Yes) => continue,
                Err(e) => e,
            };
            if !std::mem::replace(&mut self.observations_failing, true) {
                tracing::warn!(%error, "observations not delivered; kept in memory and retried");
            } else {
                tracing::debug!(%error, "observations not delivered");
            }
            let mut unsent = batch.observations;
            unsent.append(&mut pending);
            self.reporter.observations().restore(Sums {
                observations: unsent,
                overflow: batch.overflow,
            });
            self.observations.failed(Instant::now(), &error);
            return;
        }
        self.observations.succeeded(Instant::now());
        if std::mem::take(&mut self.observations_failing) {
            tracing::info!("observations delivered again");
        }
    }

    /// An enforcer event when events were dropped since the last notice.
    fn drop_notice(&mut self) -> Option<Event> {
        let dropped = self.reporter.dropped();
        if dropped == self.dropped_reported {
            return None;
        }
        let new = dropped - self.dropped_reported;
        self.dropped_reported = dropped;
        Some(Event {
            id: self.reporter.next_id(),
            time_ms: now_ms(),
            kind: Rule::EventsDropped.kind(),
            rule: Rule::EventsDropped.as_str().into(),
            policy: None,
            mode: Mode::Audit,
            message: format!(
                "{new} events dropped (queue or spool full; file events give way first); {dropped} in total"
            ),
            process: None,
            action: None,
            exception: None,
            coverage: None,
        })
    }

    fn url(&self, path: &str) -> String {
        let base = self.settings.policy_url.as_deref().unwrap_or_default();
        format!("{}/api/v1/{path}", base.trim_end_matches('/'))
    }

    /// `Ok` for a success or a `400` (what the service will never take);
    /// any other answer is an error to retry.
    fn post<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
        then: Then,
    ) -> Result<Taken, SendError> {
        let mut request = self.client.post(&self.url(path));
        if let Some(header) = self.settings.token.as_ref().and_then(|t| t.header()) {
            request = request.header("Authorization", &header);
        }
        if then == Then::Close {
            request = request.header("Connection", "close");
        }
        let response = request.send_json(body)?;
        match response.status().as_u16() {
            200..=299 => Ok(Taken::Yes),
            400 => Ok(Taken::Malformed),
            _ => Err(SendError::from_response(&response)),
        }
    }

    fn send(&self, events: &[Event], then: Then) -> Result<(), SendError> {
        if events.is_empty() {
            return Ok(());
        }
        let batch = ReportBatch {
            pod: self.settings.pod.clone(),
            events: events.to_vec(),
        };
        match self.post("reports", &batch, then)? {
            Taken::Yes => Ok(()),
            // A batch the service will never accept is not retried forever.
            Taken::Malformed => {
                tracing::error!("policy service rejected a report batch as malformed; dropping it");
                self.reporter
                    .shared
                    .dropped
                    .fetch_add(events.len() as u64, Ordering::Relaxed);
                Ok(())
            }
        }
    }

    fn heartbeat(&self, state: EnforcerState, reason: &str) -> Result<(), SendError> {
        let etag = self.policy.current().etag.clone();
        let beat = self
            .reporter
            .heartbeat(&self.settings, state, reason, &etag);
        self.post("heartbeat", &beat, Then::Close).map(|_| ())
    }
}

/// What [`Sender::next_batch`] found to do.
struct Next {
    /// The oldest pending events, at most [`BATCH`].
    batch: Vec<(u64, Event)>,
    /// More are pending than this batch.
    more: bool,
    /// Why the enforcer stops, once it does.
    closing: Option<String>,
}

/// What becomes of the report connection after a request. Reports come in
/// bursts, mostly further apart than the service keeps an idle connection
/// (10 s): one kept between them would cost the service a connection's
/// memory per enforcer beside the long-poll, for nothing. So only a request
/// with more to follow keeps it open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    KeepOpen,
    Close,
}

/// What the service did with a batch.
enum Taken {
    Yes,
    /// `400`: malformed, and would be however often it was sent.
    Malformed,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_common::wire::EventKind;

    fn event(id: &str, rule: Rule) -> Event {
        Event {
            id: id.into(),
            time_ms: 1,
            kind: rule.kind(),
            rule: rule.as_str().into(),
            policy: None,
            mode: Mode::Audit,
            message: "m".into(),
            process: None,
            action: None,
            exception: None,
            coverage: None,
        }
    }

    fn spooled(dir: &Path) -> Vec<String> {
        std::fs::read_to_string(dir.join(SPOOL_FILE))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str::<Event>(l).unwrap().id)
            .collect()
    }

    /// One request read off `stream`: (path, whether it said
    /// `Connection: close`), or `None` at the end of the connection.
    fn read_request(
        stream: &mut std::io::BufReader<std::net::TcpStream>,
    ) -> Option<(String, bool)> {
        use std::io::{BufRead, Read};
        let mut line = String::new();
        if stream.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let path = line.split_whitespace().nth(1)?.to_string();
        let (mut length, mut close) = (0, false);
        loop {
            let mut header = String::new();
            stream.read_line(&mut header).ok()?;
            let header = header.trim_end().to_ascii_lowercase();
            if header.is_empty() {
                break;
            }
            if let Some(n) = header.strip_prefix("content-length:") {
                length = n.trim().parse().ok()?;
            }
            close |= header == "connection: close";
        }
        let mut body = vec![0; length];
        stream.read_exact(&mut body).ok()?;
        Some((path, close))
    }

    #[test]
    fn the_report_connection_stays_open_only_while_more_is_pending() {
        use std::io::Write;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, requests) = std::sync::mpsc::channel();
        // Answers every request; tells (connection, path, close) and the
        // end of each connection (path "EOF").
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let stream = stream.unwrap();
                let mut reader = std::io::BufReader::new(stream.try_clone().unwrap());
                let mut writer = stream;
                while let Some((path, close)) = read_request(&mut reader) {
                    let _ = tx.send((n, path, close));
                    let _ = writer.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n");
                }
                let _ = tx.send((n, "EOF".into(), true));
            }
        });
        let dir = tempfile::tempdir().unwrap();
        let mut settings = Settings::from_env(|_| None).unwrap();
        settings.policy_url = Some(url);
        settings.observations = Duration::from_secs(3600);
        let reporter = Reporter::new(dir.path(), false, 1 << 24);
        for i in 0..=BATCH {
            reporter.report(event(&format!("e{i}"), Rule::DeniedProcess));
        }
        let (policy, _) = crate::policy::PolicyHolder::start(dir.path());
        let client: ureq::Agent = ureq::Agent::config_builder().build().into();
        let handle = spawn(settings, client, &reporter, Arc::new(policy));
        let next = || requests.recv_timeout(Duration::from_secs(10)).unwrap();
        let report = "/api/v1/reports".to_string();
        assert_eq!(
            next(),
            (0, report.clone(), false),
            "500 of 501: more follow"
        );
        assert_eq!(
            next(),
            (0, report, true),
            "the last one, on the same connection"
        );
        assert_eq!(
            next(),
            (0, "EOF".into(), true),
            "and the enforcer closed it"
        );
        handle.stop("test");
        assert_eq!(next(), (1, "/api/v1/heartbeat".into(), true));
        assert_eq!(reporter.pending(), 0);
    }

    #[test]
    fn every_event_is_on_disk_before_it_is_sent_and_survives_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter::new(dir.path(), false, 1 << 20);
        reporter.report(event("a", Rule::DeniedProcess));
        reporter.report(event("b", Rule::ExecFromTmp));
        assert_eq!(spooled(dir.path()), ["a", "b"]);
        // A new process (after SIGKILL) picks them up again.
        let again = Reporter::new(dir.path(), false, 1 << 20);
        assert_eq!(again.pending(), 2);
    }

    #[test]
    fn only_what_the_service_acknowledged_leaves_the_spool() {
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter::new(dir.path(), false, 1 << 20);
        for id in ["a", "b", "c"] {
            reporter.report(event(id, Rule::DeniedProcess));
        }
        let seqs: Vec<u64> = reporter
            .lock()
            .pending
            .iter()
            .take(2)
            .map(|p| p.seq)
            .collect();
        reporter.lock().acknowledge(&seqs);
        assert_eq!(spooled(dir.path()), ["c"]);
        reporter.report(event("d", Rule::DeniedProcess));
        assert_eq!(spooled(dir.path()), ["c", "d"]);
        let all: Vec<u64> = reporter.lock().pending.iter().map(|p| p.seq).collect();
        reporter.lock().acknowledge(&all);
        assert!(spooled(dir.path()).is_empty());
    }

    #[test]
    fn a_burst_of_file_events_never_pushes_out_a_process_event() {
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter::new(dir.path(), false, 1 << 30);
        reporter.report(event("shell-1", Rule::DeniedProcess));
        for i in 0..MAX_PENDING + 100 {
            reporter.report(event(&format!("file-{i}"), Rule::NewExecutableFile));
        }
        reporter.report(event("shell-2", Rule::DeniedProcess));
        let q = reporter.lock();
        let ids: Vec<&str> = q.pending.iter().map(|p| p.event.id.as_str()).collect();
        assert!(ids.contains(&"shell-1") && ids.contains(&"shell-2"));
        assert_eq!(q.pending.len(), MAX_PENDING);
        drop(q);
        assert_eq!(reporter.dropped(), 102, "101 files refused, 1 evicted");
        assert_eq!(spooled(dir.path()).len(), MAX_PENDING);
        assert_eq!(
            Reporter::new(dir.path(), false, 1 << 30)
                .lock()
                .pending
                .iter()
                .filter(|p| p.event.kind == EventKind::Behavior)
                .count(),
            2
        );
    }

    #[test]
    fn a_change_of_what_is_off_is_sent_at_once_and_only_a_change() {
        use palisade_common::wire::EnforcerProtection;
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter::new(dir.path(), false, 1 << 20);
        let off = vec![ProtectionOff {
            protection: EnforcerProtection::Drift,
            reason: "processes of uid 1000".into(),
        }];
        reporter.set_protections_off(off.clone());
        assert_eq!(reporter.protections_off(), off);
        assert!(reporter.shared.beat_now.swap(false, Ordering::Relaxed));
        reporter.set_protections_off(off);
        assert!(
            !reporter.shared.beat_now.load(Ordering::Relaxed),
            "nothing new to say"
        );
    }

    #[test]
    fn standalone_enforcers_keep_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter::new(dir.path(), true, 1 << 20);
        reporter.report(event("a", Rule::DeniedProcess));
        assert_eq!(reporter.pending(), 0);
        assert!(!dir.path().join(SPOOL_FILE).exists());
        assert!(!reporter.observing());
        reporter.observe("", listen(8080));
        assert!(reporter.observations().is_empty());
    }

    fn listen(port: u16) -> Observed {
        Observed::Listen {
            protocol: palisade_common::observe::Protocol::Tcp,
            port,
        }
    }

    #[test]
    fn observations_are_summed_for_the_next_batch() {
        let dir = tempfile::tempdir().unwrap();
        let reporter = Reporter::new(dir.path(), false, 1 << 20);
        reporter.observe("", listen(8080));
        reporter.observe("", listen(8080));
        let sums = reporter.observations().take();
        assert_eq!(sums.observations.len(), 1);
        assert_eq!(sums.observations[0].count, 2);
        assert!(
            spooled(dir.path()).is_empty(),
            "observations are not spooled"
        );
    }

    #[test]
    fn a_failed_send_waits_doubling_to_30_s_never_before_retry_after_and_a_success_resets_it() {
        use palisade_common::backoff::{FIRST_RETRY, LAST_RETRY};
        let down = SendError::Status(502);
        let mut backoff = Backoff::default();
        let start = backoff.retry_at;
        assert!(backoff.ready(start));
        backoff.failed(start, &down);
        assert!(!backoff.ready(start));
        assert!(backoff.ready(start + FIRST_RETRY));
        for _ in 0..10 {
            backoff.failed(start, &down);
        }
        assert!(backoff.retry_at >= start + LAST_RETRY / 2);
        assert!(backoff.retry_at <= start + LAST_RETRY);
        backoff.succeeded(start);
        assert!(backoff.ready(start));
        let busy = SendError::Busy {
            status: 429,
            retry_after: Some(Duration::from_secs(4)),
        };
        backoff.failed(start, &busy);
        assert!(!backoff.ready(start + Duration::from_millis(3999)));
        assert!(backoff.ready(start + Duration::from_secs(4)));
    }
}
