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
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use palisade_common::exception::{Decision, PolicyException, Target};
use palisade_common::net::EgressRule;
use palisade_common::policy::Mode;
use palisade_common::wire::{Event, EventKind, ProcessInfo, RuntimeBundle, RuntimePolicy};

use crate::config::Settings;
use crate::drift::{self, Baseline, BaselineSource};
use crate::files::{FileWatcher, NewExecutable, Purpose};
use crate::policy::PolicyHolder;
use crate::procfs::{self, Proc};
use crate::report::{now_ms, Reporter};
use crate::rules::{
    self, strictest, Action, ExeIdentity, NotKilled, ProcessVerdict, Rule, SocketRole, Unreadable,
    Weight,
};
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

/// Known processes are re-read (name, start, executable link) on every
/// pass that follows an exec signal, and otherwise every Nth pass, which
/// is when an exec that opened nothing watched (a static binary from
/// memory) or a deleted executable is seen.
const RECHECK_EVERY: u64 = 8;
/// Processes younger than this are re-read on every pass: fork and exec
/// come close together, and a pass may land between them.
const YOUNG: Duration = Duration::from_secs(2);
/// PIDs of one window checked one by one for "started and gone".
const MAX_WINDOW_CHECKS: i32 = 4096;
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

/// What the enforcer could and could not see on its first pass.
#[derive(Debug, Default, Clone)]
pub struct Coverage {
    pub processes: usize,
    pub unreadable: HashMap<Unreadable, usize>,
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
    last_pass: Option<Instant>,
    passes: u64,
    last_pid: Option<i32>,
    /// PIDs the previous pass listed: judged, even if gone by now.
    listed_before: HashSet<i32>,
    pid_max: i32,
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
        let pid_max = procfs::pid_max(&settings.proc_root);
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
            last_pass: None,
            passes: 0,
            last_pid: None,
            listed_before: HashSet::new(),
            pid_max,
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

    /// What the first pass could see, for `agent/started`.
    pub fn coverage(&self) -> Coverage {
        let mut unreadable = HashMap::new();
        for why in self.hidden.values() {
            *unreadable.entry(*why).or_default() += 1;
        }
        Coverage {
            processes: self.known.len(),
            unreadable,
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
                self.known.clear();
                self.reported.clear();
                self.listeners.clear();
                self.egress.clear();
                self.last_socket_scan = None;
                self.last_full_socket_scan = None;
            }
        }
        let activity = self.files.as_mut().map(|f| f.poll()).unwrap_or_default();
        self.exec_signals += activity.exec_opens;
        let last_pid = procfs::ns_last_pid(self.proc_root());
        let forked = last_pid.is_some() && last_pid != self.last_pid;
        let due = self
            .last_pass
            .is_none_or(|t| t.elapsed() >= self.settings.interval);
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

    fn process_pass(&mut self, bundle: &RuntimeBundle, last_pid: Option<i32>, rejudge: bool) {
        let recheck_all =
            self.exec_signals > 0 || rejudge || self.passes.is_multiple_of(RECHECK_EVERY);
        let exec_seen = self.exec_signals > 0;
        self.exec_signals = 0;
        self.passes += 1;
        self.last_pass = Some(Instant::now());
        let pids = procfs::pids(self.proc_root());
        let alive: HashSet<i32> = pids.iter().copied().collect();
        self.known.retain(|pid, _| alive.contains(pid));
        self.hidden.retain(|pid, _| alive.contains(pid));
        self.reported.retain(|(pid, _, _)| alive.contains(pid));
        for pid in pids {
            // PID 1 is the pod's infrastructure (pause) process.
            if pid == self.self_pid || pid == 1 {
                continue;
            }
            match self.known.get_mut(&pid) {
                Some(seen) if seen.retries > 0 => seen.retries -= 1,
                Some(seen) if !recheck_all && seen.first_seen.elapsed() > YOUNG => continue,
                _ => {}
            }
            let Some(proc) = procfs::read(self.proc_root(), pid) else {
                continue;
            };
            let exe = procfs::exe_link(self.proc_root(), pid);
            // The name is part of what was judged: mid-exec, the link can
            // already be the new program while the name is still the old.
            let image = match &exe {
                Ok(link) => format!("{link}\0{}", proc.comm),
                Err(_) => proc.comm.clone(),
            };
            let (first_seen, deferred) = match self.known.get(&pid) {
                Some(seen) if seen.start == proc.start && seen.image == image => continue,
                Some(seen) if seen.start == proc.start => (seen.first_seen, seen.deferred),
                _ => (Instant::now(), 0),
            };
            let retries = if exe.is_err() { UNREADABLE_RETRIES } else { 0 };
            let may_defer = deferred < MAX_DEFERRALS;
            let view = self.evaluate_process(&proc, exe, bundle, may_defer);
            self.known.insert(
                pid,
                Seen {
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
                },
            );
        }
        self.count_unobserved(last_pid, exec_seen, &alive);
        self.listed_before = alive;
    }

    /// PIDs handed out since the last pass that no pass saw as a process
    /// and that are not live threads: tasks that started and ended in
    /// between. Counted only when an exec signal came in the same window,
    /// so an app that churns threads is not taken for one that runs
    /// programs.
    fn count_unobserved(&mut self, last_pid: Option<i32>, exec_seen: bool, listed: &HashSet<i32>) {
        let (Some(before), Some(now)) = (self.last_pid, last_pid) else {
            self.last_pid = last_pid.or(self.last_pid);
            return;
        };
        self.last_pid = Some(now);
        let allocated = rules::pids_allocated(before, now, self.pid_max);
        if allocated == 0 || !exec_seen || now < before {
            return;
        }
        let first = (before + 1).max(now - MAX_WINDOW_CHECKS + 1);
        let gone = (first..=now)
            .filter(|pid| *pid != self.self_pid)
            .filter(|pid| !listed.contains(pid) && !self.listed_before.contains(pid))
            .filter(|pid| !self.known.contains_key(pid))
            .filter(|pid| !procfs::task_exists(self.proc_root(), *pid))
            .count() as u64;
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
            let (baseline, source) = Baseline::load_or_scan(&root, &self.settings.state_dir, id);
            tracing::info!(
                pid,
                executables = baseline.len(),
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
                    let policy = strictest(bundle.policies.iter().filter(|p| p.rules.drift))
                        .or_else(|| strictest(bundle.policies.iter()));
                    if let (Unreadable::NonDumpable, Some(policy)) = (why, policy) {
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
        let action = rules::kills(violations.iter().map(|v| (v.rule, self.acted_mode(v))))
            .then(|| procfs::kill_exact(self.proc_root(), proc.pid, proc.start));
        for v in violations {
            let id = process_event_id(&v, self.acted_mode(&v), proc);
            self.emit(&v, id, Some(info.clone()), action.clone());
        }
        View::Complete
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
            let (process, action) = self.owner_action(socket.inode, self.acted_mode(&v));
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
            let (process, action) = self.owner_action(socket.inode, self.acted_mode(&v));
            let id = socket_event_id(&v, self.acted_mode(&v), socket);
            self.emit(&v, id, process, action);
        }
    }

    /// The process holding socket `inode` (when its fds are readable) and,
    /// under enforce, the outcome of stopping it.
    fn owner_action(&self, inode: u64, mode: Mode) -> (Option<ProcessInfo>, Option<Action>) {
        let owner = (inode != 0)
            .then(|| {
                self.known
                    .keys()
                    .copied()
                    .find(|pid| procfs::socket_inodes(self.proc_root(), *pid).contains(&inode))
            })
            .flatten()
            .and_then(|pid| procfs::read(self.proc_root(), pid));
        let info = owner.as_ref().map(|p| ProcessInfo {
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
        });
        let action = (mode == Mode::Enforce).then(|| match &owner {
            Some(p) => procfs::kill_exact(self.proc_root(), p.pid, p.start),
            None if inode == 0 => Action::NotKilled(NotKilled::NoOwner),
            None if self.hidden.values().any(|w| *w == Unreadable::NonDumpable) => {
                Action::NotKilled(NotKilled::OwnerHidden)
            }
            None if !self.hidden.is_empty() => Action::NotKilled(NotKilled::OwnerOtherUid),
            None => Action::NotKilled(NotKilled::NoOwner),
        });
        (info, action)
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

/// What this enforcer can observe with its UID and capabilities, said once
/// at start so operators know which detections are active, and what the
/// first pass found it could not see.
pub fn observable_signals(settings: &Settings, coverage: &Coverage) -> String {
    let proc_root = &settings.proc_root;
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    let ptrace = std::fs::read_to_string(proc_root.join("self/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << 19) != 0);
    let others = if ptrace || uid == 0 {
        "all processes"
    } else {
        "processes of the same UID and GID"
    };
    let sockets = PathBuf::from(proc_root).join("self/net/tcp").exists();
    let last_pid = procfs::ns_last_pid(proc_root).is_some();
    let mut text = format!(
        "uid {uid} gid {gid}: process list, names and command lines of every process; \
         executables, container roots (drift, inotify) and socket owners of {others}; \
         pod sockets {}; short-lived process count {}; stopping processes: {others}",
        if sockets { "visible" } else { "not visible" },
        if last_pid { "active" } else { "not available" },
    );
    let blind: usize = coverage.unreadable.values().sum();
    if blind > 0 {
        let mut why: Vec<String> = coverage
            .unreadable
            .iter()
            .map(|(w, n)| format!("{n} ({w})"))
            .collect();
        why.sort();
        text.push_str(&format!(
            "; NOT COVERED: drift and identity of {blind} of {} processes: {}",
            coverage.processes,
            why.join(", ")
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_report_never_claims_coverage_it_does_not_have() {
        let settings = Settings::from_env(|_| None).unwrap();
        let full = observable_signals(&settings, &Coverage::default());
        assert!(!full.contains("NOT COVERED"), "{full}");
        let mut unreadable = HashMap::new();
        unreadable.insert(Unreadable::OtherUid(0), 2);
        unreadable.insert(Unreadable::NonDumpable, 1);
        let partial = observable_signals(
            &settings,
            &Coverage {
                processes: 5,
                unreadable,
            },
        );
        assert!(
            partial.contains("NOT COVERED: drift and identity of 3 of 5 processes"),
            "{partial}"
        );
        assert!(
            partial.contains("2 (uid 0, not the enforcer's)"),
            "{partial}"
        );
        assert!(
            partial.contains("1 (non-dumpable process of the enforcer's UID)"),
            "{partial}"
        );
    }
}
