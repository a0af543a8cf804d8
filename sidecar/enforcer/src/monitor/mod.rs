//! The enforcer's I/O side: what /proc, inotify and the socket tables say,
//! judged by `rules` against the runtime policy; violations reported and,
//! under enforce policies, the offending process killed where permitted.
//!
//! Passes are driven by events, not only by the clock: an open in a
//! program or library directory (every exec does one) or a move of the PID
//! namespace's last-PID counter (every fork does one) starts a pass at
//! once, so short-lived processes are judged while they still exist. What
//! still slips between two passes is counted from the last-PID counter and
//! reported as `enforcer/unobserved-processes`, never silently lost.
//!
//! The tick lives here, over four parts of state, each with its file:
//! `pass` (the processes: looking at them, what was reported, what ran
//! unobserved), `network` (the pod's sockets), `new_files` (inotify and
//! each container's image) and `exceptions` (the bundle's
//! PolicyExceptions). `judge` judges one process with the pure `checks`.
//! What was judged is also summed into the reporter's observations,
//! whatever the policies say of it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::io;
use std::net::IpAddr;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use palisade_common::exception::{Decision, PolicyException, Target};
use palisade_common::observe::Observed;
use palisade_common::policy::Mode;
use palisade_common::wire::{Event, ProcessInfo, RuntimeBundle, RuntimePolicy};

use crate::checks::{self, Violation};
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
    self, strictest, Action, ExeIdentity, NotKilled, Rule, SocketRole, Unreadable, Weight,
};
use crate::schedule::{self, ListAll, Look, PidWindow, Schedule, Settled, YOUNG};
use crate::sockets::{self, Proto, Socket};

use exceptions::Exceptions;
use network::Sockets;
use new_files::Files;
use pass::Processes;

mod exceptions;
mod judge;
mod network;
mod new_files;
mod pass;

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

/// At most one `enforcer/unobserved-processes` event per this long; the
/// counts in between are summed into it.
const UNOBSERVED_REPORT_EVERY: Duration = Duration::from_secs(10);
const IDENTITY_CACHE_MAX: usize = 1024;
/// The socket tables are read at least this often even when the pod's
/// socket counts did not move (one socket replacing another keeps them).
const FULL_SOCKET_SCAN_EVERY: Duration = Duration::from_secs(10);

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

/// What observations need of a process beyond what a pass reads: its
/// container (one read of its cgroup per process) and its name, which its
/// children name as their parent.
struct Note {
    start: u64,
    container: String,
    comm: String,
    /// The run last added to the observations (executable and name), so a
    /// process judged again (a policy change, a hidden one looked at once
    /// more) is not counted as another run.
    recorded: String,
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
    /// The pod's processes: what each was, what was reported of it, which
    /// to look at next (`pass`).
    procs: Processes,
    /// The pod's sockets and when their tables were read (`network`).
    sockets: Sockets,
    /// Program directories watched and each container's image (`new_files`).
    files: Files,
    /// The bundle's PolicyExceptions (`exceptions`).
    exceptions: Exceptions,
    etag: String,
    first_pass: bool,
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
            procs: Processes::new(schedule),
            sockets: Sockets::new(ephemeral),
            files: Files::new(files),
            exceptions: Exceptions::default(),
            etag: String::new(),
            first_pass: true,
        }
    }

    /// What the PolicyExceptions say now about `policy`'s verdict on a
    /// `rule` finding in this pod (the same decision admission makes).
    fn decide(&self, policy: &RuntimePolicy, rule: Rule) -> Decision<'_> {
        self.exceptions
            .decide(&self.settings.pod.namespace, policy, rule)
    }

    fn exception(&self, v: &Violation<'_>) -> Decision<'_> {
        self.decide(v.policy, v.rule)
    }

    /// How much `policy`'s verdict on a `rule` finding weighs (see
    /// [`Weight`]): an active exception to it weighs less than enforcement;
    /// a learning policy weighs least, excepted or not.
    fn weight(&self, policy: &RuntimePolicy, rule: Rule) -> Weight {
        let excepted = matches!(self.decide(policy, rule), Decision::Excepted(_));
        Weight::judged(policy.mode, excepted)
    }

    /// The mode a violation is acted on in: an active exception turns
    /// enforce into audit (reported, never killed); learn stays learn
    /// (neither).
    fn acted_mode(&self, v: &Violation<'_>) -> Mode {
        let excepted = matches!(self.exception(v), Decision::Excepted(_));
        rules::acted_mode(v.policy.mode, excepted)
    }

    fn proc_root(&self) -> &Path {
        &self.settings.proc_root
    }

    /// Sleeps until an exec signal arrives or `timeout` passes.
    pub fn wait(&self, timeout: Duration) {
        match &self.files.watcher {
            Some(files) => {
                files.wait(timeout);
            }
            None => std::thread::sleep(timeout),
        }
    }

    /// What the enforcer can see now (for `enforcer/started` and heartbeats).
    /// With `settled`, a process it cannot see counts only once it has
    /// been known for `YOUNG`: an exec chain switching UIDs or a short
    /// `kubectl exec` is no lasting blindness (see `coverage::next_causes`).
    pub fn coverage(&self, settled: bool) -> Coverage {
        let mut unreadable = HashMap::new();
        for (pid, why) in &self.procs.hidden {
            let young = self
                .procs
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
        if self.files.watcher.is_none() {
            missing.push(Signal::Inotify);
        }
        Coverage {
            uid: self.own_uid,
            gid: self.own_gid,
            processes: self.procs.known.len(),
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
        let exception_expired = self.exceptions.expired(now);
        let policy_changed = bundle_changed || exception_expired;
        if policy_changed {
            self.etag = bundle.etag.clone();
            self.exceptions
                .refresh(&bundle, self.settings.labels(), now);
            if !self.first_pass {
                // Re-judge everything alive under the new policy: what was
                // allowed in audit is stopped once enforce arrives.
                tracing::info!(
                    exception_expired,
                    "policy changed: re-judging live processes and sockets"
                );
                // The pass forgets what it knew of processes itself, once
                // it has counted what ran unseen (see `list_all`).
                self.sockets.forget_verdicts();
            }
        }
        let activity = self
            .files
            .watcher
            .as_mut()
            .map(|f| f.poll())
            .unwrap_or_default();
        self.procs.exec_signals += activity.exec_opens;
        let last_pid = procfs::ns_last_pid(self.proc_root());
        let forked = last_pid.is_some() && last_pid != self.procs.schedule.last_pid();
        let due = self.procs.schedule.due(Instant::now());
        if due || forked || self.procs.exec_signals > 0 || policy_changed {
            self.process_pass(&bundle, last_pid, policy_changed);
        }
        if !activity.new_files.is_empty() {
            self.check_files(&bundle, activity.new_files);
        }
        self.report_unobserved();
        // Socket tables are costly to read on big hosts (see sockets.rs):
        // they are scanned on their own, slower, schedule.
        if self
            .sockets
            .scan_due(self.settings.socket_interval, &self.settings.proc_root)
        {
            self.check_sockets(&bundle);
        }
        self.first_pass = false;
    }

    fn emit(
        &self,
        v: &Violation<'_>,
        id: String,
        process: Option<ProcessInfo>,
        action: Option<Action>,
    ) {
        // The checks never attribute a finding to a learning policy; should
        // one ever, it still reports nothing.
        if self.acted_mode(v) == Mode::Learn {
            return;
        }
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
        .filter(|p| p.mode != Mode::Learn)
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
            mode.as_str(),
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
            mode.as_str(),
            &s.inode.to_string(),
            &format!("{:?}{:?}", s.local, s.remote),
        ],
    )
}

/// Watched directories of every drift-enabled policy that reports (a
/// learning policy's new files would be reported by nobody).
fn watched_paths(bundle: &RuntimeBundle) -> Vec<String> {
    let mut dirs: Vec<String> = bundle
        .policies
        .iter()
        .filter(|p| p.rules.drift && p.mode != Mode::Learn)
        .flat_map(|p| p.rules.watched_paths.iter().cloned())
        .collect();
    dirs.sort();
    dirs.dedup();
    dirs
}
