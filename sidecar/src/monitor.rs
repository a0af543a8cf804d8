//! One pass over the pod: new or re-exec'd processes, sockets and watched
//! directories, judged against the runtime policy; violations reported and,
//! under enforce policies, the offending process killed where permitted.

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use palisade_common::net::EgressRule;
use palisade_common::policy::Mode;
use palisade_common::wire::{Event, EventKind, ProcessInfo, RuntimeBundle, RuntimePolicy};

use crate::config::Settings;
use crate::drift::{self, Baseline};
use crate::files::FileWatcher;
use crate::policy::PolicyHolder;
use crate::procfs::{self, Proc};
use crate::report::{now_ms, Reporter};
use crate::sockets::{self, Proto};

const HASH_LIMIT: u64 = 64 * 1024 * 1024;
const MAX_ARGS: usize = 16;

/// A process as last seen: a change of start time or executable is a new
/// exec (or, for the executable link, a deletion).
#[derive(PartialEq, Eq)]
struct Seen {
    start: u64,
    image: String,
    /// Passes left during which an unreadable executable is retried on every
    /// pass: a container's first process may still be changing to its UID.
    retries: u8,
}

const UNREADABLE_RETRIES: u8 = 16;

/// A new PID is judged on the pass that first lists it. Known processes are
/// re-read (name, start, executable link) every Nth pass only, which is
/// when an exec in place, a reused PID or a deleted executable is seen:
/// reading every /proc/PID/stat on every pass is most of the enforcer's CPU.
const RECHECK_EVERY: u64 = 8;

/// A broken rule, attributed to the policy that judges it most strictly.
struct Violation<'a> {
    rule: &'static str,
    policy: &'a RuntimePolicy,
    message: String,
}

pub struct Monitor {
    settings: Settings,
    policy: Arc<PolicyHolder>,
    reporter: Reporter,
    self_pid: i32,
    known: HashMap<i32, Seen>,
    /// Rules already reported per process (a re-exec or deletion re-judges
    /// the process; only what is new is reported).
    reported: HashSet<(i32, u64, &'static str)>,
    baselines: HashMap<(u64, u64), Baseline>,
    files: Option<FileWatcher>,
    listeners: HashSet<(Proto, u16)>,
    egress: HashSet<(IpAddr, u16)>,
    first_pass: bool,
    last_socket_scan: Option<std::time::Instant>,
    passes: u64,
}

impl Monitor {
    pub fn new(settings: Settings, policy: Arc<PolicyHolder>, reporter: Reporter) -> Self {
        let files = match FileWatcher::new() {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "inotify unavailable; new files are not watched");
                None
            }
        };
        Self {
            settings,
            policy,
            reporter,
            self_pid: std::process::id() as i32,
            known: HashMap::new(),
            reported: HashSet::new(),
            baselines: HashMap::new(),
            files,
            listeners: HashSet::new(),
            egress: HashSet::new(),
            first_pass: true,
            last_socket_scan: None,
            passes: 0,
        }
    }

    fn proc_root(&self) -> &Path {
        &self.settings.proc_root
    }

    pub fn tick(&mut self) {
        let bundle = self.policy.current();
        let recheck = self.passes.is_multiple_of(RECHECK_EVERY);
        self.passes += 1;
        let pids = procfs::pids(self.proc_root());
        let alive: HashSet<i32> = pids.iter().copied().collect();
        self.known.retain(|pid, _| alive.contains(pid));
        self.reported.retain(|(pid, _, _)| alive.contains(pid));
        for pid in pids {
            // PID 1 is the pod's infrastructure (pause) process.
            if pid == self.self_pid || pid == 1 {
                continue;
            }
            match self.known.get_mut(&pid) {
                Some(seen) if seen.retries > 0 => seen.retries -= 1,
                Some(_) if !recheck => continue,
                _ => {}
            }
            let Some(proc) = procfs::read(self.proc_root(), pid) else {
                continue;
            };
            let exe = procfs::exe_link(self.proc_root(), pid).ok();
            let image = exe.clone().unwrap_or_else(|| proc.comm.clone());
            if let Some(seen) = self.known.get(&pid) {
                if seen.start == proc.start && seen.image == image {
                    continue;
                }
            }
            let retries = if exe.is_none() { UNREADABLE_RETRIES } else { 0 };
            let seen = Seen {
                start: proc.start,
                image,
                retries,
            };
            self.known.insert(pid, seen);
            self.evaluate_process(&proc, exe.as_deref(), &bundle);
        }
        // Socket tables are costly to read on big hosts (see sockets.rs):
        // they are scanned on their own, slower, schedule.
        if self
            .last_socket_scan
            .is_none_or(|t| t.elapsed() >= self.settings.socket_interval)
        {
            self.last_socket_scan = Some(std::time::Instant::now());
            self.check_sockets(&bundle);
        }
        self.check_files(&bundle);
        self.first_pass = false;
    }

    fn evaluate_process(&mut self, proc: &Proc, exe: Option<&str>, bundle: &RuntimeBundle) {
        let root = self.proc_root().join(proc.pid.to_string()).join("root");
        let root_id = procfs::root_id(self.proc_root(), proc.pid);
        if let Some(id) = root_id {
            if !self.baselines.contains_key(&id) {
                // Watch first: files dropped while the baseline is taken are seen.
                self.watch_dirs(&root, bundle);
                let baseline = Baseline::scan(&root);
                tracing::info!(
                    pid = proc.pid,
                    executables = baseline.len(),
                    "baseline taken for a container"
                );
                self.baselines.insert(id, baseline);
                // The walk's transient allocations are freed; hand the pages
                // back so they do not count against the pod's memory.
                // SAFETY: malloc_trim only releases free heap memory.
                #[cfg(target_env = "gnu")]
                unsafe {
                    nix::libc::malloc_trim(0);
                }
            }
        }
        let mut violations = Vec::new();
        let mut exe_path = None;
        let drift_policy = strictest(bundle.policies.iter().filter(|p| p.rules.drift));
        if let (Some(exe), Some(policy)) = (exe, drift_policy) {
            let root_link = procfs::root_link(self.proc_root(), proc.pid);
            let (path, deleted) = drift::container_path(exe, root_link.as_deref());
            // Processes already running when the enforcer started predate the
            // baseline: only what the path itself tells counts for them.
            let baseline = match (self.first_pass, root_id) {
                (false, Some(id)) => self.baselines.get(&id),
                _ => None,
            };
            let current = std::fs::metadata(drift::inside(&root, &path)).ok();
            let temp_dirs = watched_paths(bundle);
            for finding in drift::classify(&path, deleted, &temp_dirs, baseline, current.as_ref()) {
                let message = match &finding {
                    drift::Finding::Fileless => format!("{} runs from memory ({path})", proc.comm),
                    drift::Finding::Deleted => {
                        format!("{} runs a deleted executable {path}", proc.comm)
                    }
                    drift::Finding::FromTemporaryDir(dir) => format!("{path} executed from {dir}"),
                    drift::Finding::NotInImage => format!("{path} is not in the container image"),
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
            exe_path = Some(path);
        }
        let exe_name = exe_path
            .as_deref()
            .and_then(|p| Path::new(p).file_name())
            .and_then(|n| n.to_str());
        let names: Vec<&str> = std::iter::once(proc.comm.as_str())
            .chain(exe_name)
            .collect();
        let denied = strictest(bundle.policies.iter().filter(|p| {
            p.rules
                .denied_processes
                .iter()
                .any(|d| names.contains(&d.as_str()))
        }));
        if let Some(policy) = denied {
            violations.push(Violation {
                rule: "behavior/denied-process",
                policy,
                message: format!("denied process {} started", proc.comm),
            });
        }
        let unexpected = strictest(bundle.policies.iter().filter(|p| {
            !p.rules.allowed_processes.is_empty()
                && !p
                    .rules
                    .allowed_processes
                    .iter()
                    .any(|a| names.contains(&a.as_str()))
        }));
        if let Some(policy) = unexpected {
            violations.push(Violation {
                rule: "behavior/unexpected-process",
                policy,
                message: format!("process {} is not in the allowed list", proc.comm),
            });
        }
        violations.retain(|v| self.reported.insert((proc.pid, proc.start, v.rule)));
        if violations.is_empty() {
            return;
        }
        let is_drift = violations.iter().any(|v| v.rule.starts_with("drift/"));
        let info = ProcessInfo {
            pid: proc.pid,
            ppid: proc.ppid,
            uid: procfs::uid(self.proc_root(), proc.pid),
            comm: proc.comm.clone(),
            exe: exe_path,
            cmdline: procfs::cmdline(self.proc_root(), proc.pid)
                .into_iter()
                .take(MAX_ARGS)
                .collect(),
            sha256: if is_drift {
                drift::hash_exe(self.proc_root(), proc.pid, HASH_LIMIT)
            } else {
                None
            },
        };
        let action = violations
            .iter()
            .any(|v| v.policy.mode == Mode::Enforce)
            .then(|| stop_process(proc.pid));
        for v in violations {
            self.emit(&v, Some(info.clone()), action.clone());
        }
    }

    fn emit(&self, v: &Violation<'_>, process: Option<ProcessInfo>, action: Option<String>) {
        let kind = if v.rule.starts_with("drift/") {
            EventKind::Drift
        } else {
            EventKind::Behavior
        };
        self.reporter.report(Event {
            id: self.reporter.next_id(),
            time_ms: now_ms(),
            kind,
            rule: v.rule.to_string(),
            policy: Some(v.policy.name.clone()),
            mode: v.policy.mode,
            message: v.message.clone(),
            process,
            action,
        });
    }

    fn watch_dirs(&mut self, root: &Path, bundle: &RuntimeBundle) {
        let Some(files) = self.files.as_mut() else {
            return;
        };
        for dir in watched_paths(bundle) {
            if let Err(e) = files.watch(root, &dir) {
                tracing::warn!(dir, error = %e, "cannot watch directory for new executables");
            }
        }
    }

    fn check_files(&mut self, bundle: &RuntimeBundle) {
        let Some(files) = self.files.as_mut() else {
            return;
        };
        let found = files.poll();
        let Some(policy) = strictest(bundle.policies.iter().filter(|p| p.rules.drift)) else {
            return;
        };
        for file in found {
            let v = Violation {
                rule: "drift/new-executable-file",
                policy,
                message: format!(
                    "executable file {} ({} bytes) appeared",
                    file.path, file.size
                ),
            };
            self.emit(&v, None, None);
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
        // Accepted connections share their local port with a listener:
        // they are inbound, not egress.
        let listening: HashSet<u16> = sockets
            .iter()
            .filter(|s| s.is_listener())
            .map(|s| s.local.1)
            .collect();
        for socket in sockets {
            if own.contains(&socket.inode) {
                continue;
            }
            if socket.is_listener() && self.listeners.insert((socket.proto, socket.local.1)) {
                let port = socket.local.1;
                let policy = strictest(bundle.policies.iter().filter(|p| {
                    !p.rules.allowed_listen_ports.is_empty()
                        && !p.rules.allowed_listen_ports.contains(&port)
                }));
                if let Some(policy) = policy {
                    let v = Violation {
                        rule: "behavior/unexpected-listener",
                        policy,
                        message: format!(
                            "{:?} listener on {}:{port}",
                            socket.proto, socket.local.0
                        ),
                    };
                    let (process, action) = self.owner_action(socket.inode, policy.mode);
                    self.emit(&v, process, action);
                }
            }
            if socket.is_egress()
                && !listening.contains(&socket.local.1)
                && self.egress.insert(socket.remote)
            {
                let (ip, port) = socket.remote;
                let policy = strictest(
                    egress_rules
                        .iter()
                        .filter(|(_, rules)| !rules.iter().any(|r| r.allows(ip, port)))
                        .map(|(p, _)| *p),
                );
                if let Some(policy) = policy {
                    let v = Violation {
                        rule: "behavior/unexpected-egress",
                        policy,
                        message: format!(
                            "connection to {ip}:{port} is not in the egress allow-list"
                        ),
                    };
                    let (process, action) = self.owner_action(socket.inode, policy.mode);
                    self.emit(&v, process, action);
                }
            }
        }
    }

    /// The process holding socket `inode` (when its fds are readable) and,
    /// under enforce, the outcome of stopping it.
    fn owner_action(&self, inode: u64, mode: Mode) -> (Option<ProcessInfo>, Option<String>) {
        let owner = self
            .known
            .keys()
            .copied()
            .find(|pid| procfs::socket_inodes(self.proc_root(), *pid).contains(&inode))
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
            Some(p) => stop_process(p.pid),
            None => "kill-failed: owner not visible (different UID)".to_string(),
        });
        (info, action)
    }
}

/// The enforce-mode policy among `policies` if any, else the first.
fn strictest<'a>(policies: impl Iterator<Item = &'a RuntimePolicy>) -> Option<&'a RuntimePolicy> {
    let mut first = None;
    for p in policies {
        if p.mode == Mode::Enforce {
            return Some(p);
        }
        first.get_or_insert(p);
    }
    first
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

fn stop_process(pid: i32) -> String {
    match kill(Pid::from_raw(pid), Signal::SIGKILL) {
        Ok(()) => "killed".to_string(),
        Err(e) => format!("kill-failed: {e}"),
    }
}

/// What this enforcer can observe with its UID and capabilities, said once
/// at start so operators know which detections are active.
pub fn observable_signals(settings: &Settings) -> String {
    let proc_root = &settings.proc_root;
    let uid = nix::unistd::geteuid().as_raw();
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
        "processes of the same UID"
    };
    let sockets = PathBuf::from(proc_root).join("self/net/tcp").exists();
    format!(
        "uid {uid}: process list, names and command lines of every process; \
         executables, container roots (drift, inotify) and socket owners of {others}; \
         pod sockets {}; stopping processes: {others}",
        if sockets { "visible" } else { "not visible" }
    )
}
