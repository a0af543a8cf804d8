//! The enforcer's I/O side: what /proc, inotify and the socket tables say,
//! judged by `rules` against the runtime policy; violations reported and,
//! under enforce policies, the offending process killed where permitted.
//!
//! Passes are driven by events, not only by the clock: an open in a
//! program or library directory (every exec does one) or a move of the PID
//! namespace's last-PID counter (every fork does one) starts a pass at
//! once, so short-lived processes are judged while they still exist. What
//! still slips between two passes is counted from the last-PID counter and
//! reported as `agent/unobserved-processes`, never silently lost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use palisade_common::exception::{Decision, PolicyException, Target};
use palisade_common::net::EgressRule;
use palisade_common::policy::Mode;
use palisade_common::wire::{Event, EventKind, ProcessInfo, RuntimeBundle, RuntimePolicy};

use crate::config::Settings;
use crate::coverage::{Coverage, Signal};
use crate::drift::{self, Baseline, BaselineSource};
use crate::files::{FileWatcher, NewExecutable, Purpose};
use crate::hidden::{self, Candidate, HiddenOwner, Origin};
use crate::owners::{self, Holder};
use crate::policy::PolicyHolder;
use crate::procfs::{self, Proc};
use crate::report::{now_ms, Reporter};
use crate::rules::{
    self, strictest, Action, ExeIdentity, NotKilled, ProcessVerdict, Rule, SocketRole, Unreadable,
    Weight,
};
use crate::schedule::{self, ListAll, Look, PidWindow, Schedule, Settled, YOUNG};
use crate::sockets::{self, Proto, Socket};

const MAX_ARGS: usize = 16;

/// Where programs and the dynamic loader live: every exec of a program
/// from the image, and every exec of a dynamically linked one from
/// anywhere, opens a file in one of these.
const EXEC_DIRS: &[&str] = &[
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/lib",
    "/lib64",
    "/usr/lib",
    "/usr/lib64",
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
];

/// A process as last seen: a change of start time or executable is a new
/// exec (or, for the executable link, a deletion).
/// A non-dumpable process given `grace` (see `hidden::grace`) since
/// `since` before it is judged.
struct Transition {
    start: u64,
    since: Instant,
    grace: Duration,
}

/// Processes in transition at most; beyond, each is judged at once.
const MAX_TRANSITIONS: usize = 1024;

struct Seen {
    start: u64,
    image: String,
    /// Passes left during which an unreadable executable is retried on every
    /// pass: a container's first process may still be changing to its UID.
    retries: u8,
    first_seen: Instant,
    /// Passes that found it mid-exec and left it for the next.
    deferred: u8,
}

impl Seen {
    fn settled(&self) -> Settled {
        // Empty: left mid-exec for the next pass.
        if self.retries > 0 || self.image.is_empty() {
            Settled::No
        } else {
            Settled::Yes
        }
    }
}

const UNREADABLE_RETRIES: u8 = 16;

/// Passes that may leave a mid-exec process for the next one; bounded so a
/// program started with no arguments at all is still judged.
const MAX_DEFERRALS: u8 = 3;

/// Whether a process was judged on all it will show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Complete,
    MidExec,
}

/// At most one `agent/unobserved-processes` event per this long; the
/// counts in between are summed into it.
const UNOBSERVED_REPORT_EVERY: Duration = Duration::from_secs(10);
const IDENTITY_CACHE_MAX: usize = 1024;
/// The socket tables are read at least this often even when the pod's
/// socket counts did not move (one socket replacing another keeps them).
const FULL_SOCKET_SCAN_EVERY: Duration = Duration::from_secs(10);

/// A broken rule, attributed to the policy that judges it most strictly.
struct Violation<'a> {
    rule: Rule,
    policy: &'a RuntimePolicy,
    message: String,
}

/// A container's image as the enforcer knows it.
struct Container {
    baseline: Baseline,
    source: BaselineSource,
    /// Policy version `denied_content` was computed for.
    denied_for: String,
    /// Content of what each denied name is in this image (`sh` -> dash).
    denied_content: Vec<(String, [u8; 32])>,
}

/// A socket finding is about this socket of this process: a second
/// listener on the same port is a second finding.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct SocketKey {
    proto: Proto,
    local: (IpAddr, u16),
    remote: (IpAddr, u16),
    inode: u64,
}

#[derive(Default)]
struct Unobserved {
    pending: u64,
    last_report: Option<Instant>,
}

pub struct Monitor {
    settings: Settings,
    policy: Arc<PolicyHolder>,
    reporter: Reporter,
    self_pid: i32,
    own_uid: u32,
    own_gid: u32,
    known: HashMap<i32, Seen>,
    /// Rules already reported per process (a re-exec or deletion re-judges
    /// the process; only what is new is reported).
    reported: HashSet<(i32, u64, Rule)>,
    /// Processes whose executable could not be read, and why.
    hidden: HashMap<i32, Unreadable>,
    /// Non-dumpable processes left time to finish a credential change.
    transitions: HashMap<i32, Transition>,
    containers: HashMap<(u64, u64), Container>,
    identities: HashMap<(u64, u64, i64, u64), ExeIdentity>,
    files: Option<FileWatcher>,
    listeners: HashSet<SocketKey>,
    egress: HashSet<SocketKey>,
    etag: String,
    first_pass: bool,
    last_socket_scan: Option<Instant>,
    /// Socket counts at the last table read (see `sockets::fingerprint`).
    socket_counts: Option<Vec<u64>>,
    last_full_socket_scan: Option<Instant>,
    /// Which processes each pass looks at (see `schedule`).
    schedule: Schedule,
    /// Known processes looked at on every pass: young or unsettled ones.
    watched: HashSet<i32>,
    /// PIDs handed out that the last pass found no process for, and
    /// whether an exec signal came with them: looked at once more before
    /// they count as unobserved, since the counter moves before a new
    /// process shows in /proc (and a listing would find it on the next
    /// pass).
    unseen: Vec<(i32, bool)>,
    exec_signals: u32,
    unobserved: Unobserved,
    ephemeral: (u16, u16),
    /// The current bundle's PolicyExceptions and the pod's labels they
    /// select on (re-read with each new bundle).
    exceptions: Vec<PolicyException>,
    labels: BTreeMap<String, String>,
    /// When the next of them expires.
    next_expiry: Option<SystemTime>,
}

impl Monitor {
    pub fn new(settings: Settings, policy: Arc<PolicyHolder>, reporter: Reporter) -> Self {
        let files = match FileWatcher::new() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable; new files are not watched and execs wake no pass");
                None
            }
        };
        let schedule = Schedule::new(settings.interval, procfs::pid_max(&settings.proc_root));
        let ephemeral = sockets::ephemeral_ports(&settings.proc_root);
        Self {
            settings,
            policy,
            reporter,
            self_pid: std::process::id() as i32,
            own_uid: nix::unistd::geteuid().as_raw(),
            own_gid: nix::unistd::getegid().as_raw(),
            known: HashMap::new(),
            reported: HashSet::new(),
            hidden: HashMap::new(),
            transitions: HashMap::new(),
            containers: HashMap::new(),
            identities: HashMap::new(),
            files,
            listeners: HashSet::new(),
            egress: HashSet::new(),
            etag: String::new(),
            first_pass: true,
            last_socket_scan: None,
            socket_counts: None,
            last_full_socket_scan: None,
            schedule,
            watched: HashSet::new(),
            unseen: Vec::new(),
            exec_signals: 0,
            unobserved: Unobserved::default(),
            ephemeral,
            exceptions: Vec::new(),
            labels: BTreeMap::new(),
            next_expiry: None,
        }
    }

    /// What the PolicyExceptions say now about `policy`'s verdict on a
    /// `rule` finding in this pod (the same decision admission makes).
    fn decide(&self, policy: &RuntimePolicy, rule: Rule) -> Decision<'_> {
        let target = Target {
            policy: &policy.name,
            rule: rule.as_str(),
            namespace: &self.settings.pod.namespace,
            pod_labels: &self.labels,
        };
        PolicyException::decide(&self.exceptions, &target, SystemTime::now())
    }

    fn exception(&self, v: &Violation<'_>) -> Decision<'_> {
        self.decide(v.policy, v.rule)
    }

    /// How much `policy`'s verdict on a `rule` finding weighs (see
    /// [`Weight`]): an active exception to it weighs less than enforcement.
    fn weight(&self, policy: &RuntimePolicy, rule: Rule) -> Weight {
        match self.decide(policy, rule) {
            Decision::Excepted(_) => Weight::Excepted,
            Decision::None | Decision::Expired(_) => Weight::of(policy.mode),
        }
    }

    /// The mode a violation is acted on in: an active exception turns
    /// enforce into audit (reported, never killed).
    fn acted_mode(&self, v: &Violation<'_>) -> Mode {
        match self.exception(v) {
            Decision::Excepted(_) => Mode::Audit,
            Decision::None | Decision::Expired(_) => v.policy.mode,
        }
    }

    fn proc_root(&self) -> &Path {
        &self.settings.proc_root
    }

    /// Sleeps until an exec signal arrives or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        match &self.files {
            Some(files) => {
                files.wait(timeout);
            }
            None => std::thread::sleep(timeout),
        }
    }

    /// What the enforcer can see now (for `agent/started` and heartbeats).
    /// With `settled`, a process it cannot see counts only once it has
    /// been known for `YOUNG`: an exec chain switching UIDs or a short
    /// `kubectl exec` is no lasting blindness (see `coverage::next_causes`).
    pub fn coverage(&self, settled: bool) -> Coverage {
        let mut unreadable = HashMap::new();
        for (pid, why) in &self.hidden {
            let young = self
                .known
                .get(pid)
                .is_none_or(|seen| seen.first_seen.elapsed() < YOUNG);
            if !(settled && young) {
                *unreadable.entry(*why).or_default() += 1;
            }
        }
        let mut missing = Vec::new();
        if !self.proc_root().join("self/net/tcp").exists() {
            missing.push(Signal::SocketTables);
        }
        if procfs::ns_last_pid(self.proc_root()).is_none() {
            missing.push(Signal::LastPidCounter);
        }
        if self.files.is_none() {
            missing.push(Signal::Inotify);
        }
        Coverage {
            uid: self.own_uid,
            gid: self.own_gid,
            processes: self.known.len(),
            unreadable,
            missing,
        }
    }

    pub fn tick(&mut self) {
        let bundle = self.policy.current();
        let bundle_changed = bundle.etag != self.etag;
        // An exception running out changes the verdicts as a new bundle
        // does: what it let run is judged again (and stopped under enforce).
        let now = SystemTime::now();
        let exception_expired = self.next_expiry.is_some_and(|at| now >= at);
        let policy_changed = bundle_changed || exception_expired;
        if policy_changed {
            self.etag = bundle.etag.clone();
            self.exceptions = bundle.exceptions.clone();
            self.labels = self.settings.labels();
            self.next_expiry = self
                .exceptions
                .iter()
                .filter_map(PolicyException::expires)
                .filter(|at| *at > now)
                .min();
            if !self.first_pass {
                // Re-judge everything alive under the new policy: what was
                // allowed in audit is stopped once enforce arrives.
                tracing::info!(
                    exception_expired,
                    "policy changed: re-judging live processes and sockets"
                );
                // The pass forgets what it knew of processes itself, once
                // it has counted what ran unseen (see `list_all`).
                self.listeners.clear();
                self.egress.clear();
                self.last_socket_scan = None;
                self.last_full_socket_scan = None;
            }
        }
        let activity = self.files.as_mut().map(|f| f.poll()).unwrap_or_default();
        self.exec_signals += activity.exec_opens;
        let last_pid = procfs::ns_last_pid(self.proc_root());
        let forked = last_pid.is_some() && last_pid != self.schedule.last_pid();
        let due = self.schedule.due(Instant::now());
        if due || forked || self.exec_signals > 0 || policy_changed {
            self.process_pass(&bundle, last_pid, policy_changed);
        }
        if !activity.new_files.is_empty() {
            self.check_files(&bundle, activity.new_files);
        }
        self.report_unobserved();
        // Socket tables are costly to read on big hosts (see sockets.rs):
        // they are scanned on their own, slower, schedule.
        if self
            .last_socket_scan
            .is_none_or(|t| t.elapsed() >= self.settings.socket_interval)
        {
            self.last_socket_scan = Some(Instant::now());
            let counts = sockets::fingerprint(self.proc_root());
            let full_due = self
                .last_full_socket_scan
                .is_none_or(|t| t.elapsed() >= FULL_SOCKET_SCAN_EVERY);
            if counts.is_none() || counts != self.socket_counts || full_due {
                self.socket_counts = counts;
                self.last_full_socket_scan = Some(Instant::now());
                self.check_sockets(&bundle);
            }
        }
        self.first_pass = false;
    }

    /// One look at the pod's processes. What it costs depends on what
    /// happened since the last, not on how many processes there are: the
    /// PIDs handed out since are probed, the young and unsettled processes
    /// looked at again, and old ones re-read only on the schedule's budget
    /// (see `schedule`). Every process is listed and read in full only when
    /// the new PIDs are not known, and on the periodic sweep.
    fn process_pass(&mut self, bundle: &RuntimeBundle, last_pid: Option<i32>, rejudge: bool) {
        let exec_seen = self.exec_signals > 0;
        self.exec_signals = 0;
        let plan = self
            .schedule
            .plan(Instant::now(), last_pid, exec_seen, rejudge);
        let unobserved = std::mem::take(&mut self.unseen)
            .into_iter()
            .filter(|(pid, exec)| self.still_unseen(*pid, bundle) && (*exec || exec_seen))
            .count() as u64;
        self.count_unobserved(unobserved);
        let gone = match plan.list_all {
            Some(why) => {
                tracing::trace!(?why, "listing every process");
                let gone = self.list_all(bundle, plan.window, why);
                if why.known_still_valid() {
                    self.look_again(bundle, true);
                }
                gone
            }
            None => {
                // Known ones first: what the window defers waits a pass.
                self.look_again(bundle, plan.recheck_old);
                self.probe_window(bundle, plan.window, exec_seen)
            }
        };
        self.unseen = gone.into_iter().map(|pid| (pid, exec_seen)).collect();
    }

    /// Whether a PID the last pass found no process for is still none
    /// (judging it if it is one now).
    fn still_unseen(&mut self, pid: i32, bundle: &RuntimeBundle) -> bool {
        match procfs::probe(self.proc_root(), pid) {
            procfs::Probe::Process(proc) | procfs::Probe::Fork(proc) => {
                self.observe(proc, bundle);
                false
            }
            procfs::Probe::Thread => false,
            procfs::Probe::Gone => !self.known.contains_key(&pid),
        }
    }

    /// Lists every process and reads in full those not known, or all of
    /// them when what is known may name other processes by now (see
    /// `ListAll::known_still_valid`). Returns the PIDs of `window` no
    /// process was found for.
    fn list_all(
        &mut self,
        bundle: &RuntimeBundle,
        window: Option<PidWindow>,
        why: ListAll,
    ) -> Vec<i32> {
        let pids = procfs::pids(self.proc_root());
        let alive: HashSet<i32> = pids.iter().copied().collect();
        // Before what has exited is forgotten: a PID an earlier pass saw
        // was judged, even if it is gone now. Live threads are no process.
        let gone: Vec<i32> = window.map_or_else(Vec::new, |w| {
            w.pids()
                .filter(|pid| *pid != self.self_pid)
                .filter(|pid| !alive.contains(pid) && !self.known.contains_key(pid))
                .filter(|pid| !procfs::task_exists(self.proc_root(), *pid))
                .collect()
        });
        if why == ListAll::Rejudge {
            // Re-judge everything alive under the new policy: what was
            // allowed in audit is stopped once enforce arrives.
            self.known.clear();
            self.reported.clear();
        }
        self.known.retain(|pid, _| alive.contains(pid));
        self.hidden.retain(|pid, _| alive.contains(pid));
        self.watched.retain(|pid| alive.contains(pid));
        // Findings of processes gone, and of a reused PID's earlier owner.
        let known = &self.known;
        self.reported
            .retain(|(pid, start, _)| known.get(pid).is_some_and(|seen| seen.start == *start));
        for pid in pids {
            // PID 1 is the pod's infrastructure (pause) process.
            if pid == self.self_pid || pid == 1 {
                continue;
            }
            if why.known_still_valid() && self.known.contains_key(&pid) {
                continue;
            }
            match procfs::read(self.proc_root(), pid) {
                Some(proc) => self.observe(proc, bundle),
                None => self.forget(pid),
            }
        }
        gone
    }

    /// Probes each PID handed out since the last pass (one stat read
    /// each): processes are judged, threads passed over. Returns the PIDs
    /// no process was found for: ended already, or not yet in /proc.
    fn probe_window(
        &mut self,
        bundle: &RuntimeBundle,
        window: Option<PidWindow>,
        exec_seen: bool,
    ) -> Vec<i32> {
        let Some(window) = window else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        for pid in window.pids() {
            if pid == self.self_pid || pid == 1 {
                continue;
            }
            match procfs::probe(self.proc_root(), pid) {
                // The exec signal that woke this pass is likely its own,
                // still under way: judged on its next look (every pass
                // while young), once the exec is through. Judged now, its
                // name, link and executable could each be read on a
                // different side of the exec. A copy of a judged parent
                // has nothing new to judge meanwhile.
                procfs::Probe::Fork(proc) if exec_seen && self.copy_of_judged_parent(&proc) => {
                    self.defer(&proc)
                }
                procfs::Probe::Process(proc) | procfs::Probe::Fork(proc) => {
                    self.observe(proc, bundle)
                }
                procfs::Probe::Thread => {}
                // Known: listed by an earlier pass after it read the
                // counter, so seen and judged.
                procfs::Probe::Gone if self.known.contains_key(&pid) => self.forget(pid),
                procfs::Probe::Gone => gone.push(pid),
            }
        }
        gone
    }

    /// Looks again at known processes: the watched ones (young, mid-exec,
    /// executable not yet readable) on every pass, all of them when
    /// `recheck_old`. So an old process that execs in place is judged
    /// within one interval of the exec signal, plus up to one PID poll for
    /// the wake-up (2-300 ms measured at the defaults), not on the pass the
    /// signal wakes: the schedule re-reads old processes at most once an
    /// interval while signals keep coming. One that execs with no signal at
    /// all (a static program run from memory) is judged on the next sweep.
    /// Re-reading every process on every exec signal made each new process
    /// cost as much as the pod holds.
    fn look_again(&mut self, bundle: &RuntimeBundle, recheck_old: bool) {
        let pids: Vec<i32> = if recheck_old {
            self.known.keys().copied().collect()
        } else {
            self.watched.iter().copied().collect()
        };
        let now = Instant::now();
        for pid in pids {
            let Some(seen) = self.known.get(&pid) else {
                self.watched.remove(&pid);
                continue;
            };
            let age = now.saturating_duration_since(seen.first_seen);
            let settled = seen.settled();
            let full = match schedule::look(age, settled, recheck_old) {
                Look::Skip => false,
                Look::Full => true,
                Look::Link => match self.same_program(pid, &seen.image) {
                    Some(same) => !same,
                    None => {
                        self.forget(pid);
                        continue;
                    }
                },
            };
            if full {
                match procfs::read(self.proc_root(), pid) {
                    Some(proc) => self.observe(proc, bundle),
                    None => self.forget(pid),
                }
            } else if !schedule::watched(age, settled) {
                self.watched.remove(&pid);
            }
        }
    }

    /// Whether `pid` still runs the program judged as `image`, from its
    /// executable link alone (its name where the link is unreadable: another
    /// UID, non-dumpable, or exited but not yet reaped): a readlink instead
    /// of a stat read and a readlink. None once it has gone.
    fn same_program(&self, pid: i32, image: &str) -> Option<bool> {
        match procfs::exe_link_path(self.proc_root(), pid) {
            Ok(link) => Some(schedule::same_link(image, &link.to_string_lossy())),
            Err(_) => procfs::comm(self.proc_root(), pid).map(|c| schedule::same_name(image, &c)),
        }
    }

    /// Judges `proc` unless it is what was judged before: new, exec'd
    /// since, or its executable deleted.
    fn observe(&mut self, proc: Proc, bundle: &RuntimeBundle) {
        let pid = proc.pid;
        let exe = procfs::exe_link(self.proc_root(), pid);
        let image = schedule::image(exe.as_ref().ok().map(String::as_str), &proc.comm);
        let now = Instant::now();
        let (first_seen, deferred) = match self.known.get_mut(&pid) {
            Some(seen) if seen.start == proc.start && seen.image == image => {
                seen.retries = seen.retries.saturating_sub(1);
                let watched = schedule::watched(
                    now.saturating_duration_since(seen.first_seen),
                    seen.settled(),
                );
                self.watch(pid, watched);
                return;
            }
            Some(seen) if seen.start == proc.start => (seen.first_seen, seen.deferred),
            _ => (now, 0),
        };
        // An exec switches the executable, then the name, then lays out
        // the arguments: a name read before the link may still be the old
        // program's, and a pass that the link's change set off reads it
        // right in that gap. Once the arguments are there it is final.
        let (proc, image) = match &exe {
            Ok(link) if procfs::has_arguments(self.proc_root(), pid) => {
                match procfs::read(self.proc_root(), pid) {
                    Some(now) if now.start == proc.start && now.comm != proc.comm => {
                        let image = schedule::image(Some(link), &now.comm);
                        (now, image)
                    }
                    _ => (proc, image),
                }
            }
            _ => (proc, image),
        };
        let retries = if exe.is_err() { UNREADABLE_RETRIES } else { 0 };
        let may_defer = deferred < MAX_DEFERRALS;
        let view = self.evaluate_process(&proc, exe, bundle, may_defer);
        let seen = Seen {
            start: proc.start,
            // Left empty, the next pass judges it again.
            image: if view == View::MidExec {
                String::new()
            } else {
                image
            },
            retries,
            first_seen,
            deferred: deferred + u8::from(view == View::MidExec),
        };
        let watched = schedule::watched(now.saturating_duration_since(first_seen), seen.settled());
        self.known.insert(pid, seen);
        self.watch(pid, watched);
    }

    /// Whether `proc`, not exec'd since its fork, still runs the program
    /// its parent was judged for.
    fn copy_of_judged_parent(&self, proc: &Proc) -> bool {
        let Some(parent) = self.known.get(&proc.ppid) else {
            return false;
        };
        parent.settled() == Settled::Yes
            && procfs::exe_link_path(self.proc_root(), proc.pid)
                .is_ok_and(|link| schedule::same_link(&parent.image, &link.to_string_lossy()))
    }

    /// Leaves `proc` for the next pass, as one found mid-exec is.
    fn defer(&mut self, proc: &Proc) {
        let seen = Seen {
            start: proc.start,
            image: String::new(),
            retries: 0,
            first_seen: Instant::now(),
            deferred: 1,
        };
        self.known.insert(proc.pid, seen);
        self.watched.insert(proc.pid);
    }

    fn watch(&mut self, pid: i32, watched: bool) {
        if watched {
            self.watched.insert(pid);
        } else {
            self.watched.remove(&pid);
        }
    }

    /// A process found gone. Its reported findings are dropped on the
    /// next full listing: they name its start time, so a reused PID is
    /// never taken for it.
    fn forget(&mut self, pid: i32) {
        self.known.remove(&pid);
        self.hidden.remove(&pid);
        self.watched.remove(&pid);
    }

    /// Counts PIDs handed out that no pass saw as a process and that are
    /// gone: tasks that started and ended between passes. Only those that
    /// came with an exec signal are counted, so an app that churns threads
    /// is not taken for one that runs programs.
    fn count_unobserved(&mut self, gone: u64) {
        if gone == 0 {
            return;
        }
        self.unobserved.pending += gone;
        // Counted at once (heartbeats carry it); the event sums them up.
        self.reporter.add_unobserved(gone);
    }

    fn report_unobserved(&mut self) {
        if self.unobserved.pending == 0
            || self
                .unobserved
                .last_report
                .is_some_and(|t| t.elapsed() < UNOBSERVED_REPORT_EVERY)
        {
            return;
        }
        let n = std::mem::take(&mut self.unobserved.pending);
        self.unobserved.last_report = Some(Instant::now());
        let total = self.reporter.unobserved();
        self.reporter.report(Event {
            id: self.reporter.next_id(),
            time_ms: now_ms(),
            kind: Rule::UnobservedProcesses.kind(),
            rule: Rule::UnobservedProcesses.as_str().into(),
            policy: None,
            mode: Mode::Audit,
            message: format!(
                "{n} processes ran unobserved: started and exited between two scans \
                 ({total} since start); programs ran that no rule could judge"
            ),
            process: None,
            action: None,
            exception: None,
            coverage: None,
        });
    }

    /// The container's baseline and watches, set up the first time one of
    /// its processes is seen.
    fn container(&mut self, pid: i32, bundle: &RuntimeBundle) -> Option<(u64, u64)> {
        let id = procfs::root_id(self.proc_root(), pid)?;
        let root = self.proc_root().join(pid.to_string()).join("root");
        if !self.containers.contains_key(&id) {
            // Watch first: files dropped while the baseline is taken are seen.
            self.watch_dirs(&root, bundle);
            let started = Instant::now();
            let (baseline, source) = Baseline::load_or_scan(&root, &self.settings.state_dir, id);
            tracing::info!(
                pid,
                executables = baseline.len(),
                complete = baseline.is_complete(),
                took_ms = started.elapsed().as_millis() as u64,
                source = match source {
                    BaselineSource::Scanned => "scanned",
                    BaselineSource::Persisted => "kept from the container's first look",
                },
                "baseline for a container"
            );
            self.containers.insert(
                id,
                Container {
                    baseline,
                    source,
                    denied_for: String::new(),
                    denied_content: Vec::new(),
                },
            );
            // The walk read every program: those opens are not execs.
            if let Some(f) = self.files.as_mut() {
                f.forget_opens();
            }
            // The walk's transient allocations are freed; hand the pages
            // back so they do not count against the pod's memory.
            // SAFETY: malloc_trim only releases free heap memory.
            #[cfg(target_env = "gnu")]
            #[allow(unsafe_code)]
            unsafe {
                nix::libc::malloc_trim(0);
            }
        }
        let container = self.containers.get_mut(&id)?;
        if container.denied_for != bundle.etag {
            container.denied_for = bundle.etag.clone();
            container.denied_content = denied_content(&root, &mut container.baseline, bundle);
            if let Some(f) = self.files.as_mut() {
                f.forget_opens();
            }
        }
        Some(id)
    }

    fn evaluate_process(
        &mut self,
        proc: &Proc,
        exe: io::Result<String>,
        bundle: &RuntimeBundle,
        may_defer: bool,
    ) -> View {
        let argv: Vec<String> = procfs::cmdline(self.proc_root(), proc.pid)
            .into_iter()
            .take(MAX_ARGS)
            .collect();
        // Between switching to the new program and laying out its
        // arguments, an exec shows the new executable with no arguments
        // (and maybe the old name): judged on the next pass instead.
        if may_defer && exe.is_ok() && argv.is_empty() {
            return View::MidExec;
        }
        let root = self.proc_root().join(proc.pid.to_string()).join("root");
        let root_id = self.container(proc.pid, bundle);
        let mut violations = Vec::new();
        let mut exe_path = None;
        let mut sha256 = None;
        let mut identity = ExeIdentity::default();
        match &exe {
            Ok(link) => {
                self.hidden.remove(&proc.pid);
                self.transitions.remove(&proc.pid);
                let root_link = procfs::root_link(self.proc_root(), proc.pid);
                let (path, deleted) = drift::container_path(link, root_link.as_deref());
                identity = self.identity(proc.pid, &path, root_id);
                sha256 = identity.sha256;
                if let Some(policy) = strictest(bundle.policies.iter().filter(|p| p.rules.drift)) {
                    // Processes already running when a container's first
                    // baseline is taken predate it: only what the path tells
                    // counts for them. A baseline kept from before a restart
                    // judges everything.
                    let baseline = root_id
                        .and_then(|id| self.containers.get(&id))
                        .filter(|c| !self.first_pass || c.source == BaselineSource::Persisted)
                        .map(|c| &c.baseline);
                    let file = drift::inside(&root, &path);
                    let now = std::fs::metadata(&file)
                        .ok()
                        .map(|m| drift::Entry::of(&m, None));
                    let image = drift::image_check(baseline, &path, now.as_ref(), || {
                        drift::hash_file(&file, drift::HASH_LIMIT)
                    });
                    let temp_dirs = watched_paths(bundle);
                    for finding in drift::classify(&path, deleted, &temp_dirs, image) {
                        let message = match &finding {
                            drift::Finding::Fileless => {
                                format!("{} runs from memory ({path})", proc.comm)
                            }
                            drift::Finding::Deleted => {
                                format!("{} runs a deleted executable {path}", proc.comm)
                            }
                            drift::Finding::FromTemporaryDir(dir) => {
                                format!("{path} executed from {dir}")
                            }
                            drift::Finding::NotInImage => {
                                format!("{path} is not in the container image")
                            }
                            drift::Finding::Modified => {
                                format!("{path} changed since the container started")
                            }
                        };
                        violations.push(Violation {
                            rule: finding.rule(),
                            policy,
                            message,
                        });
                    }
                }
                if let Some(policy) = strictest(bundle.policies.iter().filter(|p| p.rules.drift)) {
                    self.foreign_code(
                        proc,
                        root_link.as_deref(),
                        &path,
                        bundle,
                        policy,
                        &mut violations,
                    );
                }
                exe_path = Some(path);
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                let why = procfs::ids(self.proc_root(), proc.pid)
                    .map(|ids| rules::why_unreadable(ids, self.own_uid, self.own_gid));
                if let Some(why) = why {
                    self.hidden.insert(proc.pid, why);
                    // Its name is all that is left to judge it by (stat
                    // stays readable): a name the policy allows to hide is
                    // left alone; anything else is judged once a credential
                    // change that may have hidden it has had its moment
                    // (`judged_now`), and stopped where the policy says so
                    // (see `kills`).
                    let policy = hidden::judge_non_dumpable(&bundle.policies, &proc.comm, |p| {
                        self.weight(p, Rule::NonDumpableProcess)
                    });
                    let judged = matches!((why, policy), (Unreadable::NonDumpable, Some(_)))
                        && self.judged_now(proc);
                    if let (true, Some(policy)) = (judged, policy) {
                        violations.push(Violation {
                            rule: Rule::NonDumpableProcess,
                            policy,
                            message: format!(
                                "{} (pid {}) runs as the enforcer's UID but made itself \
                                 non-dumpable: its executable, root and sockets cannot be checked",
                                proc.comm, proc.pid
                            ),
                        });
                    }
                }
            }
            Err(_) => {}
        }
        let exe_name = exe_path.as_deref().map(rules::base_name);
        let names: Vec<&str> = std::iter::once(proc.comm.as_str())
            .chain(exe_name)
            .collect();
        let applet = if identity.multicall {
            rules::applet(exe_name.unwrap_or_default(), &argv)
        } else {
            None
        };
        let denied_content = root_id
            .and_then(|id| self.containers.get(&id))
            .map(|c| c.denied_content.as_slice())
            .unwrap_or_default();
        let process = rules::ProcessNames {
            names: &names,
            applet,
            identity: &identity,
            denied_content,
        };
        for verdict in
            rules::judge_process(&bundle.policies, &process, |p, rule| self.weight(p, rule))
        {
            let rule = verdict.rule();
            let (policy, message) = match verdict {
                ProcessVerdict::Denied(policy, by) => (
                    policy,
                    format!("denied process {} started ({by})", proc.comm),
                ),
                ProcessVerdict::Unexpected(policy) => (
                    policy,
                    format!("process {} is not in the allowed list", proc.comm),
                ),
            };
            violations.push(Violation {
                rule,
                policy,
                message,
            });
        }
        // Drift findings were attributed before their rules were known:
        // each goes to the weightiest drift policy for its own rule (one
        // policy's exception must not silence another's enforcement).
        for v in &mut violations {
            if v.rule.kind() == EventKind::Drift {
                let drift = bundle.policies.iter().filter(|p| p.rules.drift);
                if let Some(policy) = rules::weightiest(drift, |p| self.weight(p, v.rule)) {
                    v.policy = policy;
                }
            }
        }
        violations.retain(|v| self.reported.insert((proc.pid, proc.start, v.rule)));
        if violations.is_empty() {
            return View::Complete;
        }
        let info = ProcessInfo {
            pid: proc.pid,
            ppid: proc.ppid,
            uid: procfs::uid(self.proc_root(), proc.pid),
            comm: proc.comm.clone(),
            exe: exe_path,
            cmdline: argv,
            sha256: sha256.map(hex::encode),
        };
        let action = rules::kills(
            violations
                .iter()
                .map(|v| (v.rule, self.acted_mode(v), v.policy.rules.non_dumpable)),
        )
        .then(|| procfs::kill_exact(self.proc_root(), proc.pid, proc.start));
        for v in violations {
            let id = process_event_id(&v, self.acted_mode(&v), proc);
            self.emit(&v, id, Some(info.clone()), action.clone());
        }
        View::Complete
    }

    /// Whether a non-dumpable process is judged on this look, or left the
    /// time `hidden::grace` gives it to finish a credential change
    /// (`settle_hidden` looks again once that is up).
    fn judged_now(&mut self, proc: &Proc) -> bool {
        if let Some(t) = self
            .transitions
            .get(&proc.pid)
            .filter(|t| t.start == proc.start)
        {
            let due = t.since.elapsed() >= t.grace;
            if due {
                self.transitions.remove(&proc.pid);
            }
            return due;
        }
        let known_for = self
            .known
            .get(&proc.pid)
            .filter(|seen| seen.start == proc.start)
            .map_or(Duration::ZERO, |seen| seen.first_seen.elapsed());
        let origin = if self.hidden.get(&proc.ppid) == Some(&Unreadable::NonDumpable) {
            Origin::HiddenParent
        } else if proc.ppid == 0
            && owners::alone_in_cgroup(self.proc_root(), proc.pid, &[self.self_pid])
        {
            Origin::NewContainer
        } else {
            Origin::Other
        };
        let grace = hidden::grace(origin);
        if known_for >= grace || self.transitions.len() >= MAX_TRANSITIONS {
            return true;
        }
        let now = Instant::now();
        self.transitions.insert(
            proc.pid,
            Transition {
                start: proc.start,
                since: now.checked_sub(known_for).unwrap_or(now),
                grace,
            },
        );
        false
    }

    /// Judges the non-dumpable processes whose grace is up and that are
    /// still hidden (one that exec'd since was judged for what it runs).
    pub fn settle_hidden(&mut self) {
        if self.transitions.is_empty() {
            return;
        }
        let due: Vec<(i32, u64)> = self
            .transitions
            .iter()
            .filter(|(_, t)| t.since.elapsed() >= t.grace)
            .map(|(pid, t)| (*pid, t.start))
            .collect();
        if due.is_empty() {
            return;
        }
        let bundle = self.policy.current();
        for (pid, start) in due {
            match procfs::read(self.proc_root(), pid) {
                Some(proc) if proc.start == start => {
                    // What was judged of it is judged again, now.
                    if let Some(seen) = self.known.get_mut(&pid) {
                        seen.image.clear();
                    }
                    self.observe(proc, &bundle);
                }
                _ => {}
            }
            self.transitions.remove(&pid);
        }
    }

    /// Libraries and scripts that are not the image's: what an exec check
    /// alone misses (an image interpreter running a dropped script, an
    /// image program with a dropped library preloaded).
    fn foreign_code<'a>(
        &self,
        proc: &Proc,
        root_link: Option<&Path>,
        exe: &str,
        bundle: &RuntimeBundle,
        policy: &'a RuntimePolicy,
        violations: &mut Vec<Violation<'a>>,
    ) {
        let temp_dirs = watched_paths(bundle);
        let mapped = procfs::executable_mappings(self.proc_root(), proc.pid);
        let inside: Vec<String> = mapped
            .iter()
            .map(|m| {
                let (p, deleted) = drift::container_path(m, root_link);
                if deleted {
                    format!("{p} (deleted)")
                } else {
                    p
                }
            })
            // The executable itself is judged by the exec rules.
            .filter(|p| p.trim_end_matches(" (deleted)") != exe && !p.starts_with("/memfd:"))
            .collect();
        let mut libraries = rules::foreign_mappings(inside.iter().map(String::as_str), &temp_dirs);
        for p in rules::preload_from_tmp(&procfs::environ(self.proc_root(), proc.pid), &temp_dirs) {
            if !libraries.contains(&p) {
                libraries.push(p);
            }
        }
        if !libraries.is_empty() {
            violations.push(Violation {
                rule: Rule::ForeignLibrary,
                policy,
                message: format!(
                    "{} loads code that is not in the image: {}",
                    proc.comm,
                    libraries.join(", ")
                ),
            });
        }
        let argv = procfs::cmdline(self.proc_root(), proc.pid);
        if let Some(script) = rules::script_from_tmp(rules::base_name(exe), &argv, &temp_dirs) {
            violations.push(Violation {
                rule: Rule::ScriptFromTmp,
                policy,
                message: format!(
                    "{} runs the script {script} from a temporary directory",
                    proc.comm
                ),
            });
        }
    }

    /// Content identity of a process's executable: from the baseline when
    /// the file is the image's unchanged one, else hashed (once per file
    /// version, cached).
    fn identity(&mut self, pid: i32, path: &str, root_id: Option<(u64, u64)>) -> ExeIdentity {
        let exe = self.proc_root().join(pid.to_string()).join("exe");
        let Ok(meta) = std::fs::metadata(&exe) else {
            return ExeIdentity::default();
        };
        let key = (meta.dev(), meta.ino(), meta.ctime(), meta.size());
        if let Some(found) = self.identities.get(&key) {
            return found.clone();
        }
        let now = drift::Entry::of(&meta, None);
        let proc_root = self.settings.proc_root.clone();
        let hash = || drift::hash_exe(&proc_root, pid, drift::HASH_LIMIT);
        let sha256 = match root_id.and_then(|id| self.containers.get_mut(&id)) {
            Some(c) if c.baseline.get(path).is_some() => c
                .baseline
                .content(path, &now, hash)
                .or_else(|| drift::hash_exe(&proc_root, pid, drift::HASH_LIMIT)),
            _ => hash(),
        };
        // The enforcer's own reads look like execs to the watcher.
        if let Some(f) = self.files.as_mut() {
            f.forget_opens();
        }
        // Hard-linked busybox installs name it `sh`, `ls`...: many links.
        let multicall = rules::is_multicall(rules::base_name(path)) || meta.nlink() > 8;
        let identity = ExeIdentity { sha256, multicall };
        if self.identities.len() >= IDENTITY_CACHE_MAX {
            self.identities.clear();
        }
        self.identities.insert(key, identity.clone());
        identity
    }

    fn emit(
        &self,
        v: &Violation<'_>,
        id: String,
        process: Option<ProcessInfo>,
        action: Option<Action>,
    ) {
        // Excepted events are reported, never dropped: the exception is
        // visible wherever the event is.
        let (message, exception) = match self.exception(v) {
            Decision::None => (v.message.clone(), None),
            Decision::Excepted(e) => (
                format!(
                    "{} (excepted by PolicyException {})",
                    v.message,
                    e.describe()
                ),
                Some(e.metadata.name.clone()),
            ),
            Decision::Expired(e) => (
                format!(
                    "{} (PolicyException {} has expired)",
                    v.message,
                    e.describe()
                ),
                None,
            ),
        };
        self.reporter.report(Event {
            id,
            time_ms: now_ms(),
            kind: v.rule.kind(),
            rule: v.rule.as_str().to_string(),
            policy: Some(v.policy.name.clone()),
            mode: v.policy.mode,
            message,
            process,
            action: action.map(|a| a.to_string()),
            exception,
            coverage: None,
        });
    }

    fn watch_dirs(&mut self, root: &Path, bundle: &RuntimeBundle) {
        let Some(files) = self.files.as_mut() else {
            return;
        };
        for dir in watched_paths(bundle) {
            if let Err(e) = files.watch(root, &dir, Purpose::NewFiles) {
                tracing::warn!(dir, error = %e, "cannot watch directory for new executables");
            }
        }
        for dir in EXEC_DIRS {
            // Missing directories are normal (no /lib64 on arm64...).
            let _ = files.watch(root, dir, Purpose::Programs);
        }
    }

    fn check_files(&mut self, bundle: &RuntimeBundle, found: Vec<NewExecutable>) {
        let Some(policy) = strictest(bundle.policies.iter().filter(|p| p.rules.drift)) else {
            return;
        };
        let by_path: HashMap<String, NewExecutable> =
            found.iter().map(|f| (f.path.clone(), f.clone())).collect();
        let (single, more) = rules::aggregate_files(found.into_iter().map(|f| f.path).collect());
        for path in single {
            let Some(file) = by_path.get(&path) else {
                continue;
            };
            let v = Violation {
                rule: Rule::NewExecutableFile,
                policy,
                message: format!(
                    "executable file {} ({} bytes) appeared",
                    file.path, file.size
                ),
            };
            let id = rules::stable_id(
                "f",
                &[
                    v.rule.as_str(),
                    &policy.name,
                    &file.path,
                    &file.ino.to_string(),
                    &file.ctime.to_string(),
                ],
            );
            self.emit(&v, id, None, None);
        }
        for (dir, n, example) in more {
            let v = Violation {
                rule: Rule::NewExecutableFile,
                policy,
                message: format!("{n} more executable files appeared in {dir} (e.g. {example})"),
            };
            self.emit(&v, self.reporter.next_id(), None, None);
        }
    }

    fn check_sockets(&mut self, bundle: &RuntimeBundle) {
        let own: HashSet<u64> = procfs::socket_inodes(self.proc_root(), self.self_pid)
            .into_iter()
            .collect();
        let egress_rules: Vec<(&RuntimePolicy, Vec<EgressRule>)> = bundle
            .policies
            .iter()
            .filter(|p| !p.rules.egress_allow.is_empty())
            .map(|p| {
                (
                    p,
                    p.rules
                        .egress_allow
                        .iter()
                        .filter_map(|r| EgressRule::parse(r).ok())
                        .collect(),
                )
            })
            .collect();
        let sockets = sockets::all(self.proc_root());
        let listening: HashSet<(Proto, IpAddr, u16)> = sockets
            .iter()
            .filter(|s| s.is_tcp_listener())
            .map(|s| (s.proto, s.local.0, s.local.1))
            .collect();
        let mut present = HashSet::new();
        for socket in &sockets {
            if socket.inode != 0 && own.contains(&socket.inode) {
                continue;
            }
            let key = SocketKey {
                proto: socket.proto,
                local: socket.local,
                remote: socket.remote,
                inode: socket.inode,
            };
            present.insert(key);
            match rules::socket_role(socket, &listening, self.ephemeral) {
                SocketRole::Listener if self.listeners.insert(key) => {
                    self.judge_listener(socket, bundle)
                }
                SocketRole::Egress if self.egress.insert(key) => {
                    self.judge_egress(socket, &egress_rules)
                }
                _ => {}
            }
        }
        // Closed sockets are forgotten: the next one on that port or to
        // that address is a new finding.
        self.listeners.retain(|k| present.contains(k));
        self.egress.retain(|k| present.contains(k));
    }

    fn judge_listener(&self, socket: &Socket, bundle: &RuntimeBundle) {
        let port = socket.local.1;
        let policy = rules::weightiest(
            bundle.policies.iter().filter(|p| {
                !p.rules.allowed_listen_ports.is_empty()
                    && !p.rules.allowed_listen_ports.contains(&port)
            }),
            |p| self.weight(p, Rule::UnexpectedListener),
        );
        if let Some(policy) = policy {
            let v = Violation {
                rule: Rule::UnexpectedListener,
                policy,
                message: format!("{:?} listener on {}:{port}", socket.proto, socket.local.0),
            };
            let (process, action) = self.owner_action(socket.inode, &v);
            let id = socket_event_id(&v, self.acted_mode(&v), socket);
            self.emit(&v, id, process, action);
        }
    }

    fn judge_egress(&self, socket: &Socket, egress_rules: &[(&RuntimePolicy, Vec<EgressRule>)]) {
        let (ip, port) = socket.remote;
        let policy = rules::weightiest(
            egress_rules
                .iter()
                .filter(|(_, rules)| !rules.iter().any(|r| r.allows(ip, port)))
                .map(|(p, _)| *p),
            |p| self.weight(p, Rule::UnexpectedEgress),
        );
        if let Some(policy) = policy {
            let proto = match socket.proto {
                Proto::Tcp => "TCP",
                Proto::Udp => "UDP",
            };
            let v = Violation {
                rule: Rule::UnexpectedEgress,
                policy,
                message: format!(
                    "{proto} connection to {ip}:{port} is not in the egress allow-list"
                ),
            };
            let (process, action) = self.owner_action(socket.inode, &v);
            let id = socket_event_id(&v, self.acted_mode(&v), socket);
            self.emit(&v, id, process, action);
        }
    }

    /// The process holding socket `inode` and, under enforce, the outcome
    /// of stopping it. When no process with readable descriptors holds it,
    /// those whose descriptors are closed are the suspects, and
    /// `hidden::hidden_owner` decides whether they are stopped.
    fn owner_action(&self, inode: u64, v: &Violation<'_>) -> (Option<ProcessInfo>, Option<Action>) {
        let mode = self.acted_mode(v);
        let enforce = mode == Mode::Enforce;
        if inode == 0 {
            return (
                None,
                enforce.then_some(Action::NotKilled(NotKilled::NoOwner)),
            );
        }
        // PID 1 is the pod's infrastructure (pause) process, never the app.
        let suspects = match owners::find(self.proc_root(), inode, &[self.self_pid, 1]) {
            Holder::Found(pid) => {
                let Some(owner) = procfs::read(self.proc_root(), pid) else {
                    return (
                        None,
                        enforce.then_some(Action::NotKilled(NotKilled::Exited)),
                    );
                };
                let action =
                    enforce.then(|| procfs::kill_exact(self.proc_root(), owner.pid, owner.start));
                return (Some(self.process_info(&owner)), action);
            }
            Holder::Unreadable(pids) => pids,
        };
        let candidates: Vec<Candidate> = suspects
            .into_iter()
            .filter_map(|pid| {
                let ids = procfs::ids(self.proc_root(), pid)?;
                Some(Candidate {
                    pid,
                    why: rules::why_unreadable(ids, self.own_uid, self.own_gid),
                })
            })
            .collect();
        let stop = match hidden::hidden_owner(&candidates, mode, v.policy.rules.non_dumpable) {
            HiddenOwner::Leave(why) => return (None, enforce.then_some(Action::NotKilled(why))),
            HiddenOwner::Stop(pids) => pids,
        };
        let stopped: Vec<(Proc, Action)> = stop
            .into_iter()
            .filter_map(|pid| procfs::read(self.proc_root(), pid))
            // One that turned readable since is not a suspect any more.
            .filter(|p| owners::still_unreadable(self.proc_root(), p.pid))
            .map(|p| {
                let action = procfs::kill_exact(self.proc_root(), p.pid, p.start);
                (p, action)
            })
            .collect();
        match stopped.as_slice() {
            [] => (None, Some(Action::NotKilled(NotKilled::Exited))),
            [(p, action)] => (Some(self.process_info(p)), Some(action.clone())),
            [(_, first), ..] => {
                let killed = stopped.iter().filter(|(_, a)| *a == Action::Killed).count();
                let action = if killed > 0 {
                    Action::KilledAll(killed)
                } else {
                    first.clone()
                };
                (None, Some(action))
            }
        }
    }

    /// What a socket event says about its process: what stat, status and
    /// cmdline tell, readable even for a hidden one.
    fn process_info(&self, p: &Proc) -> ProcessInfo {
        ProcessInfo {
            pid: p.pid,
            ppid: p.ppid,
            uid: procfs::uid(self.proc_root(), p.pid),
            comm: p.comm.clone(),
            exe: None,
            cmdline: procfs::cmdline(self.proc_root(), p.pid)
                .into_iter()
                .take(MAX_ARGS)
                .collect(),
            sha256: None,
        }
    }
}

/// What each denied name is in this image, by content: `sh` is whatever
/// /bin/sh resolves to inside the container. Multi-call binaries are left
/// out (busybox is every applet; the applet decides for those).
fn denied_content(
    root: &Path,
    baseline: &mut Baseline,
    bundle: &RuntimeBundle,
) -> Vec<(String, [u8; 32])> {
    let mut names: Vec<&String> = bundle
        .policies
        .iter()
        .flat_map(|p| p.rules.denied_processes.iter())
        .collect();
    names.sort();
    names.dedup();
    let mut out = Vec::new();
    for name in names {
        for dir in drift::PATH_DIRS {
            let real = drift::resolve_in_root(root, &format!("{dir}/{name}"));
            let file = drift::inside(root, &real);
            let Ok(meta) = std::fs::metadata(&file) else {
                continue;
            };
            if !meta.is_file() || rules::is_multicall(rules::base_name(&real)) || meta.nlink() > 8 {
                continue;
            }
            let now = drift::Entry::of(&meta, None);
            let hash = baseline
                .content(&real, &now, || drift::hash_file(&file, drift::HASH_LIMIT))
                .or_else(|| drift::hash_file(&file, drift::HASH_LIMIT));
            if let Some(h) = hash {
                if !out.contains(&(name.clone(), h)) {
                    out.push((name.clone(), h));
                }
            }
        }
    }
    out
}

/// The same finding about the same process gets the same id, across
/// restarts of the enforcer; a stricter policy or mode is a new finding.
/// Stable across restarts for the same finding; `mode` is the mode it was
/// acted on in, so the kill after an exception expires is a new event.
fn process_event_id(v: &Violation<'_>, mode: Mode, proc: &Proc) -> String {
    rules::stable_id(
        "p",
        &[
            v.rule.as_str(),
            &v.policy.name,
            mode_str(mode),
            &proc.pid.to_string(),
            &proc.start.to_string(),
        ],
    )
}

fn socket_event_id(v: &Violation<'_>, mode: Mode, s: &Socket) -> String {
    rules::stable_id(
        "s",
        &[
            v.rule.as_str(),
            &v.policy.name,
            mode_str(mode),
            &s.inode.to_string(),
            &format!("{:?}{:?}", s.local, s.remote),
        ],
    )
}

fn mode_str(mode: Mode) -> &'static str {
    match mode {
        Mode::Audit => "audit",
        Mode::Enforce => "enforce",
    }
}

/// Watched directories of every drift-enabled policy.
fn watched_paths(bundle: &RuntimeBundle) -> Vec<String> {
    let mut dirs: Vec<String> = bundle
        .policies
        .iter()
        .filter(|p| p.rules.drift)
        .flat_map(|p| p.rules.watched_paths.iter().cloned())
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}
