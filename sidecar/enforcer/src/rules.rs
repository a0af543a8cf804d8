//! The enforcer's decisions, apart from any I/O: which rule a finding
//! breaks, who a process really is, what a socket is, how many processes
//! ran between two scans, what to call an event. `monitor` gathers the
//! facts from /proc and acts on these answers.

use std::collections::HashSet;
use std::fmt;
use std::net::IpAddr;

use palisade_common::judge::EXECUTABLE_NOT_ALLOWED;
use palisade_common::launch::COVERAGE_RULE;
use palisade_common::policy::{Mode, NonDumpable};
use palisade_common::wire::{EventKind, RuntimePolicy};
use sha2::{Digest, Sha256};

use crate::sockets::{Proto, Socket, TcpState};

/// Every rule the enforcer reports, one name each on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Rule {
    FilelessExec,
    DeletedExecutable,
    ExecFromTmp,
    NewExecutable,
    ModifiedExecutable,
    NewExecutableFile,
    /// Code mapped into a process from a temporary directory, a deleted
    /// file or memory (an LD_PRELOAD drop), or named by LD_PRELOAD there.
    ForeignLibrary,
    /// An interpreter running a script from a temporary directory.
    ScriptFromTmp,
    DeniedProcess,
    UnexpectedProcess,
    /// An executable that `allowedExecutables` / `zeroDrift` do not
    /// allow: judged by where it is and what it is, so a renamed or copied
    /// shell is neither.
    ExecutableNotAllowed,
    /// A process of the enforcer's UID that made itself non-dumpable: its
    /// executable, root and sockets can no longer be checked.
    NonDumpableProcess,
    UnexpectedListener,
    UnexpectedEgress,
    EnforcerStarted,
    EnforcerStopped,
    EventsDropped,
    /// Processes started and exited between two scans, never judged.
    UnobservedProcesses,
    /// What Landlock enforces in one app container, from its launcher.
    LaunchCoverage,
    /// Someone changed the enforcer's resource limits (`prlimit`): a CPU
    /// limit gets it killed by the kernel, a file limit blinds it.
    LimitsChanged,
    /// The protections the enforcer cannot give its pod changed (a
    /// process of another UID appeared, or the last one left).
    ProtectionsChanged,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::FilelessExec => "drift/fileless-exec",
            Rule::DeletedExecutable => "drift/deleted-executable",
            Rule::ExecFromTmp => "drift/exec-from-tmp",
            Rule::NewExecutable => "drift/new-executable",
            Rule::ModifiedExecutable => "drift/modified-executable",
            Rule::NewExecutableFile => "drift/new-executable-file",
            Rule::ForeignLibrary => "drift/foreign-library",
            Rule::ScriptFromTmp => "drift/script-from-tmp",
            Rule::DeniedProcess => "behavior/denied-process",
            Rule::UnexpectedProcess => "behavior/unexpected-process",
            Rule::ExecutableNotAllowed => EXECUTABLE_NOT_ALLOWED,
            Rule::NonDumpableProcess => "behavior/non-dumpable-process",
            Rule::UnexpectedListener => "behavior/unexpected-listener",
            Rule::UnexpectedEgress => "behavior/unexpected-egress",
            Rule::EnforcerStarted => "enforcer/started",
            Rule::EnforcerStopped => "enforcer/stopped",
            Rule::EventsDropped => "enforcer/events-dropped",
            Rule::UnobservedProcesses => "enforcer/unobserved-processes",
            Rule::LaunchCoverage => COVERAGE_RULE,
            Rule::LimitsChanged => "enforcer/limits-changed",
            Rule::ProtectionsChanged => "enforcer/protections-changed",
        }
    }

    pub fn kind(self) -> EventKind {
        match self {
            Rule::FilelessExec
            | Rule::DeletedExecutable
            | Rule::ExecFromTmp
            | Rule::NewExecutable
            | Rule::ModifiedExecutable
            | Rule::NewExecutableFile
            | Rule::ForeignLibrary
            | Rule::ScriptFromTmp => EventKind::Drift,
            Rule::DeniedProcess
            | Rule::UnexpectedProcess
            | Rule::ExecutableNotAllowed
            | Rule::NonDumpableProcess
            | Rule::UnexpectedListener
            | Rule::UnexpectedEgress => EventKind::Behavior,
            Rule::EnforcerStarted
            | Rule::EnforcerStopped
            | Rule::EventsDropped
            | Rule::UnobservedProcesses
            | Rule::LaunchCoverage
            | Rule::LimitsChanged
            | Rule::ProtectionsChanged => EventKind::Enforcer,
        }
    }

    /// File events come in bursts and matter less than what a process
    /// did: when the queue is full they make room, never the reverse.
    pub fn priority(self) -> Priority {
        match self {
            Rule::NewExecutableFile => Priority::File,
            _ => Priority::Evidence,
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        ALL_RULES.iter().copied().find(|r| r.as_str() == text)
    }
}

const ALL_RULES: [Rule; 21] = [
    Rule::ForeignLibrary,
    Rule::ScriptFromTmp,
    Rule::FilelessExec,
    Rule::DeletedExecutable,
    Rule::ExecFromTmp,
    Rule::NewExecutable,
    Rule::ModifiedExecutable,
    Rule::NewExecutableFile,
    Rule::DeniedProcess,
    Rule::UnexpectedProcess,
    Rule::ExecutableNotAllowed,
    Rule::NonDumpableProcess,
    Rule::UnexpectedListener,
    Rule::UnexpectedEgress,
    Rule::EnforcerStarted,
    Rule::EnforcerStopped,
    Rule::EventsDropped,
    Rule::UnobservedProcesses,
    Rule::LaunchCoverage,
    Rule::LimitsChanged,
    Rule::ProtectionsChanged,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    File,
    Evidence,
}

/// What the enforcer did about a violation under an enforce policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Killed,
    /// Several processes stopped because any of them could be the one
    /// (see `hidden::hidden_owner`).
    KilledAll(usize),
    /// The kernel refused the signal (errno text).
    KillFailed(String),
    NotKilled(NotKilled),
}

/// Why a process could not be stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotKilled {
    /// It had already exited (or its PID now names another process).
    Exited,
    /// Socket owners are found through /proc/PID/fd; a non-dumpable
    /// process of the enforcer's UID hides its fds.
    OwnerHidden,
    /// The socket belongs to a process of another UID.
    OwnerOtherUid,
    /// No process holds the socket any more (e.g. TIME_WAIT).
    NoOwner,
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Action::Killed => f.write_str("killed"),
            Action::KilledAll(n) => write!(
                f,
                "killed: all {n} non-dumpable processes that could hold it"
            ),
            Action::KillFailed(e) => write!(f, "kill-failed: {e}"),
            Action::NotKilled(NotKilled::Exited) => f.write_str("not-killed: process exited"),
            Action::NotKilled(NotKilled::OwnerHidden) => f.write_str(
                "not-killed: owner hidden (a process of the enforcer's UID is non-dumpable)",
            ),
            Action::NotKilled(NotKilled::OwnerOtherUid) => {
                f.write_str("not-killed: owner not visible (different UID)")
            }
            Action::NotKilled(NotKilled::NoOwner) => {
                f.write_str("not-killed: no process holds the socket")
            }
        }
    }
}

/// Why /proc/PID/exe could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Unreadable {
    /// Same UID and GID as the enforcer, yet hidden: the process is
    /// non-dumpable.
    NonDumpable,
    /// Another UID (only CAP_SYS_PTRACE would see it).
    OtherUid(u32),
    /// The enforcer's UID but another GID: the kernel wants both to match.
    OtherGid(u32),
}

impl fmt::Display for Unreadable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unreadable::NonDumpable => f.write_str("non-dumpable process of the enforcer's UID"),
            Unreadable::OtherUid(u) => write!(f, "uid {u}, not the enforcer's"),
            Unreadable::OtherGid(g) => write!(f, "gid {g}, not the enforcer's"),
        }
    }
}

/// Real, effective and saved IDs from /proc/PID/status (always readable;
/// the ownership of /proc/PID itself turns to root for a non-dumpable
/// process, so it must not be used to tell these apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ids {
    pub uids: [u32; 3],
    pub gids: [u32; 3],
}

/// Reading another process's executable needs all its UIDs and GIDs to be
/// the reader's: when they are and it is still unreadable, the process
/// hid itself.
pub fn why_unreadable(target: Ids, own_uid: u32, own_gid: u32) -> Unreadable {
    if let Some(u) = target.uids.iter().find(|u| **u != own_uid) {
        Unreadable::OtherUid(*u)
    } else if let Some(g) = target.gids.iter().find(|g| **g != own_gid) {
        Unreadable::OtherGid(*g)
    } else {
        Unreadable::NonDumpable
    }
}

/// How much one policy's verdict on a finding weighs when several
/// policies flag it. An enforcing policy weighs most, so an exception to one
/// policy never silences another's enforcement. An excepted verdict comes
/// next: like an audit it is reported and not acted on, but it shows that
/// the exception was used, which is what its owner must be able to see.
/// A learning policy weighs least and is never reported: what it would
/// find is what the enforcer's observations record for a draft.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Weight {
    /// A learning policy: judged last, and what it judges is not reported.
    Learn,
    Audit,
    Excepted,
    Enforce,
}

impl Weight {
    pub fn of(mode: Mode) -> Self {
        match mode {
            Mode::Learn => Weight::Learn,
            Mode::Audit => Weight::Audit,
            Mode::Enforce => Weight::Enforce,
        }
    }

    /// The weight of a verdict in `mode`, when an active PolicyException
    /// does (`excepted`) or does not cover it. An exception to a learning
    /// policy changes nothing: there is nothing to except it from, and it
    /// must not turn a silent verdict into a reported one.
    pub fn judged(mode: Mode, excepted: bool) -> Self {
        match mode {
            Mode::Learn => Weight::Learn,
            _ if excepted => Weight::Excepted,
            _ => Weight::of(mode),
        }
    }

    /// Whether a verdict of this weight is reported (and may be acted on).
    pub fn reports(self) -> bool {
        self > Weight::Learn
    }
}

/// The mode a verdict is acted on in: an active exception turns enforce
/// into audit (reported, never killed); learn stays learn (neither).
pub fn acted_mode(mode: Mode, excepted: bool) -> Mode {
    match mode {
        Mode::Enforce if excepted => Mode::Audit,
        _ => mode,
    }
}

/// The first policy of the highest weight.
pub fn weightiest<'a, W: Ord + Copy>(
    policies: impl Iterator<Item = &'a RuntimePolicy>,
    weight: impl Fn(&RuntimePolicy) -> W,
) -> Option<&'a RuntimePolicy> {
    let mut best: Option<(&RuntimePolicy, W)> = None;
    for p in policies {
        let w = weight(p);
        if best.is_none_or(|(_, b)| w > b) {
            best = Some((p, w));
        }
    }
    best.map(|(p, _)| p)
}

/// The policy a finding is reported under: the weightiest of those that
/// flag it, or none when that is a learning policy (a learning policy is
/// never the reason for an event or a kill; one that reports wins over it).
pub fn reported_by<'a>(
    policies: impl Iterator<Item = &'a RuntimePolicy>,
    weight: impl Fn(&RuntimePolicy) -> Weight,
) -> Option<&'a RuntimePolicy> {
    weightiest(policies, &weight).filter(|p| weight(p).reports())
}

/// The enforce-mode policy among `policies` if any, else the first
/// auditing one; none when only learning policies are left.
pub fn strictest<'a>(
    policies: impl Iterator<Item = &'a RuntimePolicy>,
) -> Option<&'a RuntimePolicy> {
    reported_by(policies, |p| Weight::of(p.mode))
}

/// Who a running executable is, beyond the names it was given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExeIdentity {
    /// SHA-256 of the executable's content (None: unreadable or too big).
    pub sha256: Option<[u8; 32]>,
    /// A multi-call binary (busybox, toybox): the applet decides what runs.
    pub multicall: bool,
}

/// Names that make a binary multi-call: what it does comes from argv.
const MULTICALL: &[&str] = &["busybox", "toybox", "toolbox"];

pub fn is_multicall(file_name: &str) -> bool {
    MULTICALL.contains(&file_name)
}

/// The applet a multi-call binary runs: argv[0]'s base name, or argv[1]
/// when it was called by its own name (`busybox sh`).
pub fn applet<'a>(exe_name: &str, argv: &'a [String]) -> Option<&'a str> {
    let zero = argv.first().map(|a| base_name(a))?;
    if zero == exe_name || is_multicall(zero) {
        argv.get(1).map(|a| base_name(a))
    } else {
        Some(zero)
    }
}

pub fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// How a process matched a denied name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeniedBy {
    /// Its `comm` or executable name.
    Name(String),
    /// Its executable is the same file, or a copy, of what `name` is in the image.
    Content(String),
    /// A multi-call binary running the applet `name`.
    Applet(String),
}

impl fmt::Display for DeniedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeniedBy::Name(n) => write!(f, "named {n}"),
            DeniedBy::Content(n) => write!(f, "same executable as {n}"),
            DeniedBy::Applet(n) => write!(f, "multi-call applet {n}"),
        }
    }
}

/// Whether a process is one of `denied`. `names` are what it calls
/// itself (comm, executable base name); `denied_content` are the content
/// hashes of what each denied name is in the image (`sh` -> dash's hash).
/// For a multi-call binary its content says nothing (busybox is every
/// applet), so its applet decides.
pub fn denied_by(
    denied: &[String],
    names: &[&str],
    applet: Option<&str>,
    identity: &ExeIdentity,
    denied_content: &[(String, [u8; 32])],
) -> Option<DeniedBy> {
    if let Some(n) = denied.iter().find(|d| names.contains(&d.as_str())) {
        return Some(DeniedBy::Name(n.clone()));
    }
    if identity.multicall {
        return applet
            .and_then(|a| denied.iter().find(|d| d.as_str() == a))
            .map(|n| DeniedBy::Applet(n.clone()));
    }
    let hash = identity.sha256?;
    denied_content
        .iter()
        .find(|(name, h)| *h == hash && denied.contains(name))
        .map(|(name, _)| DeniedBy::Content(name.clone()))
}

/// What a process calls itself and what it is, as the monitor read it.
#[derive(Debug, Clone, Copy)]
pub struct ProcessNames<'a> {
    /// Its `comm` and its executable's base name.
    pub names: &'a [&'a str],
    /// The applet, when it is a multi-call binary.
    pub applet: Option<&'a str>,
    pub identity: &'a ExeIdentity,
    /// What each denied name is in this image, by content.
    pub denied_content: &'a [(String, [u8; 32])],
}

/// The process rules' verdict on one process.
#[derive(Debug, Clone, PartialEq)]
pub enum ProcessVerdict<'p> {
    /// On a policy's `deniedProcesses`, and why it counts as that name.
    Denied(&'p RuntimePolicy, DeniedBy),
    /// Not on a policy's non-empty `allowedProcesses`.
    Unexpected(&'p RuntimePolicy),
}

impl ProcessVerdict<'_> {
    pub fn rule(&self) -> Rule {
        match self {
            ProcessVerdict::Denied(..) => Rule::DeniedProcess,
            ProcessVerdict::Unexpected(_) => Rule::UnexpectedProcess,
        }
    }
}

/// Applies `deniedProcesses` and `allowedProcesses` of `policies` to one
/// process. Each rule is reported once, by the policy that is strictest
/// about it (an enforcing one before auditing ones), never by a learning
/// one.
pub fn judge_process<'p>(
    policies: &'p [RuntimePolicy],
    process: &ProcessNames<'_>,
    weight: impl Fn(&RuntimePolicy, Rule) -> Weight,
) -> Vec<ProcessVerdict<'p>> {
    let mut verdicts = Vec::new();
    let denials: Vec<(&RuntimePolicy, DeniedBy)> = policies
        .iter()
        .filter_map(|p| {
            denied_by(
                &p.rules.denied_processes,
                process.names,
                process.applet,
                process.identity,
                process.denied_content,
            )
            .map(|by| (p, by))
        })
        .collect();
    let judge = reported_by(denials.iter().map(|(p, _)| *p), |p| {
        weight(p, Rule::DeniedProcess)
    });
    if let Some((policy, by)) =
        judge.and_then(|j| denials.into_iter().find(|(p, _)| std::ptr::eq(*p, j)))
    {
        verdicts.push(ProcessVerdict::Denied(policy, by));
    }
    let allowed_by = |allowed: &[String]| {
        allowed
            .iter()
            .any(|a| process.names.contains(&a.as_str()) || process.applet == Some(a.as_str()))
    };
    let unexpected = reported_by(
        policies.iter().filter(|p| {
            !p.rules.allowed_processes.is_empty() && !allowed_by(&p.rules.allowed_processes)
        }),
        |p| weight(p, Rule::UnexpectedProcess),
    );
    if let Some(policy) = unexpected {
        verdicts.push(ProcessVerdict::Unexpected(policy));
    }
    verdicts
}

/// Whether a process that broke `broken` (each rule with the mode it is
/// acted on in and what its policy says about hidden processes) is killed:
/// an enforcing policy says so, for hiding alone only when that policy
/// stops hidden processes (`nonDumpable: kill`, its default).
pub fn kills(broken: impl IntoIterator<Item = (Rule, Mode, NonDumpable)>) -> bool {
    broken.into_iter().any(|(rule, mode, hidden)| {
        mode == Mode::Enforce && (rule != Rule::NonDumpableProcess || hidden == NonDumpable::Kill)
    })
}

/// What a socket is, for the pod's policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketRole {
    Listener,
    /// Accepted by one of the pod's listeners.
    Inbound,
    /// A connection the pod made to elsewhere (any TCP state that still
    /// names the peer, or a connected UDP socket).
    Egress,
    /// Loopback or the pod talking to itself.
    Local,
    /// Nothing to judge: closed, or an unconnected client UDP socket.
    Other,
}

/// Classifies `socket` given the pod's listening endpoints. An
/// established socket is inbound only when a listener owns exactly its
/// local address and port (or the wildcard address): a client that binds
/// a listener's port number on another address is still egress.
/// Unconnected UDP sockets on ephemeral ports are clients (resolvers), not
/// listeners.
pub fn socket_role(
    socket: &Socket,
    listeners: &HashSet<(Proto, IpAddr, u16)>,
    ephemeral: (u16, u16),
) -> SocketRole {
    let (local_ip, local_port) = socket.local;
    let (remote_ip, remote_port) = socket.remote;
    match socket.proto {
        Proto::Tcp => match socket.tcp_state() {
            Some(TcpState::Listen) => return SocketRole::Listener,
            Some(TcpState::Close) | None => return SocketRole::Other,
            _ => {}
        },
        Proto::Udp => {
            if remote_port == 0 {
                let client = (ephemeral.0..=ephemeral.1).contains(&local_port);
                return if client || local_port == 0 {
                    SocketRole::Other
                } else {
                    SocketRole::Listener
                };
            }
        }
    }
    let accepted = [local_ip, unspecified(local_ip)]
        .iter()
        .any(|ip| listeners.contains(&(socket.proto, *ip, local_port)));
    if accepted {
        SocketRole::Inbound
    } else if remote_ip.is_loopback() || remote_ip == local_ip {
        SocketRole::Local
    } else {
        SocketRole::Egress
    }
}

/// Whether `socket` is a connection the enforcer itself closed: a TCP
/// socket no process holds any more (inode 0: in TIME_WAIT and the other
/// closing states) whose peer is one of the enforcer's own connections'
/// (`own_peers`, the policy service). It would otherwise be judged as the
/// pod's egress. A connection of the app to that same peer is still judged
/// while the app holds it.
pub fn left_by_the_enforcer(socket: &Socket, own_peers: &HashSet<(IpAddr, u16)>) -> bool {
    socket.proto == Proto::Tcp && socket.inode == 0 && own_peers.contains(&socket.remote)
}

fn unspecified(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    }
}

/// An event id that is the same every time the same finding is made,
/// across restarts: the service stores each id once, so a restarted
/// enforcer re-judging live processes does not report them twice.
pub fn stable_id(prefix: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    format!("{prefix}-{}", hex::encode(&h.finalize()[..10]))
}

/// Executable mappings in `/proc/PID/maps` (paths already made relative to
/// the container) that do not come from the image: under a temporary
/// directory, deleted since, or anonymous memory files.
pub fn foreign_mappings<'a>(
    paths: impl Iterator<Item = &'a str>,
    temp_dirs: &[String],
) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for path in paths {
        let foreign =
            path.ends_with(" (deleted)") || path.starts_with("/memfd:") || in_dirs(path, temp_dirs);
        if foreign && !out.iter().any(|p| p == path) {
            out.push(path.to_string());
        }
    }
    out
}

/// `LD_PRELOAD` (colon or space separated) entries under temporary directories.
pub fn preload_from_tmp(environ: &[String], temp_dirs: &[String]) -> Vec<String> {
    environ
        .iter()
        .filter_map(|kv| kv.strip_prefix("LD_PRELOAD="))
        .flat_map(|v| v.split([':', ' ']))
        .filter(|p| in_dirs(p, temp_dirs))
        .map(String::from)
        .collect()
}

const INTERPRETERS: &[&str] = &[
    "sh", "bash", "dash", "ash", "zsh", "ksh", "perl", "ruby", "node", "php", "lua", "python",
    "python2", "python3",
];

fn is_interpreter(name: &str) -> bool {
    INTERPRETERS.contains(&name)
        || name
            .strip_prefix("python3.")
            .is_some_and(|v| v.chars().all(|c| c.is_ascii_digit()))
}

/// The script an interpreter runs from a temporary directory: its first
/// argument that is not an option, when it is a path under one.
pub fn script_from_tmp<'a>(
    exe_name: &str,
    argv: &'a [String],
    temp_dirs: &[String],
) -> Option<&'a str> {
    if !is_interpreter(exe_name) {
        return None;
    }
    let script = argv.iter().skip(1).find(|a| !a.starts_with('-'))?;
    in_dirs(script, temp_dirs).then_some(script.as_str())
}

fn in_dirs(path: &str, dirs: &[String]) -> bool {
    dirs.iter()
        .any(|d| std::path::Path::new(path).starts_with(d.as_str()))
}

/// Findings of one pass in a directory beyond which the rest are summed
/// up in one event (a burst of files must not flood the queue).
pub const FILE_BURST: usize = 16;

/// Splits a pass's new files into those reported one by one and, per
/// directory, how many more there were with one example.
pub fn aggregate_files(paths: Vec<String>) -> (Vec<String>, Vec<(String, usize, String)>) {
    let mut single = Vec::new();
    let mut more: Vec<(String, usize, String)> = Vec::new();
    let mut per_dir: std::collections::HashMap<String, usize> = Default::default();
    for path in paths {
        let dir = path
            .rsplit_once('/')
            .map_or("/", |(d, _)| if d.is_empty() { "/" } else { d })
            .to_string();
        let n = per_dir.entry(dir.clone()).or_default();
        *n += 1;
        if *n <= FILE_BURST {
            single.push(path);
        } else if let Some(entry) = more.iter_mut().find(|(d, _, _)| *d == dir) {
            entry.1 += 1;
        } else {
            more.push((dir, 1, path));
        }
    }
    (single, more)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sockets::Socket;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    fn runtime_policy(name: &str, mode: Mode, denied: &[&str], allowed: &[&str]) -> RuntimePolicy {
        RuntimePolicy {
            name: name.into(),
            mode,
            rules: palisade_common::policy::RuntimeRules {
                denied_processes: strings(denied),
                allowed_processes: strings(allowed),
                ..Default::default()
            },
        }
    }

    #[test]
    fn an_exception_to_one_policy_leaves_another_policys_enforcement_in_place() {
        let policies = [
            runtime_policy("baseline", Mode::Enforce, &["sh"], &[]),
            runtime_policy("pci", Mode::Enforce, &["sh"], &[]),
            runtime_policy("audit", Mode::Audit, &["sh"], &[]),
        ];
        let identity = ExeIdentity::default();
        let process = ProcessNames {
            names: &["sh"],
            applet: None,
            identity: &identity,
            denied_content: &[],
        };
        let judged_by = |excepted: &[&str]| {
            let verdicts = judge_process(&policies, &process, |p, _| {
                if excepted.contains(&p.name.as_str()) {
                    Weight::Excepted
                } else {
                    Weight::of(p.mode)
                }
            });
            match verdicts.as_slice() {
                [ProcessVerdict::Denied(p, _)] => p.name.clone(),
                other => panic!("{} verdicts", other.len()),
            }
        };
        assert_eq!(judged_by(&[]), "baseline");
        assert_eq!(judged_by(&["baseline"]), "pci", "pci has no exception");
        assert_eq!(
            judged_by(&["baseline", "pci"]),
            "baseline",
            "not killed, and reported as excepted rather than as an audit"
        );
    }

    #[test]
    fn the_enforcing_policy_judges_a_denied_process_and_unexpected_ones_are_named() {
        let policies = [
            runtime_policy("audit-shells", Mode::Audit, &["sh"], &[]),
            runtime_policy("enforce-shells", Mode::Enforce, &["sh"], &[]),
            runtime_policy("only-app", Mode::Audit, &[], &["app", "sleep"]),
        ];
        let identity = ExeIdentity::default();
        let judge = |names: &[&str], applet: Option<&str>| {
            judge_process(
                &policies,
                &ProcessNames {
                    names,
                    applet,
                    identity: &identity,
                    denied_content: &[],
                },
                |p, _| Weight::of(p.mode),
            )
            .into_iter()
            .map(|v| (v.rule(), policy_name(&v).to_string()))
            .collect::<Vec<_>>()
        };
        fn policy_name<'a>(v: &'a ProcessVerdict<'_>) -> &'a str {
            match v {
                ProcessVerdict::Denied(p, _) | ProcessVerdict::Unexpected(p) => &p.name,
            }
        }
        assert_eq!(
            judge(&["sh", "dash"], None),
            [
                (Rule::DeniedProcess, "enforce-shells".to_string()),
                (Rule::UnexpectedProcess, "only-app".to_string())
            ]
        );
        assert!(judge(&["app"], None).is_empty());
        // A multi-call binary is allowed by its applet.
        assert!(judge(&["busybox"], Some("sleep")).is_empty());
        assert_eq!(
            judge(&["busybox"], Some("nc")),
            [(Rule::UnexpectedProcess, "only-app".to_string())]
        );
    }

    #[test]
    fn a_learning_policy_is_never_the_reason_for_an_event_or_a_kill() {
        let policies = [
            runtime_policy("learn", Mode::Learn, &["sh"], &["app"]),
            runtime_policy("audit", Mode::Audit, &["sh"], &[]),
        ];
        let identity = ExeIdentity::default();
        let process = ProcessNames {
            names: &["sh"],
            applet: None,
            identity: &identity,
            denied_content: &[],
        };
        let verdicts = judge_process(&policies, &process, |p, _| Weight::of(p.mode));
        // The audit policy reports the shell; the learning one's list of
        // allowed names flags it too, and stays silent.
        assert!(
            matches!(verdicts.as_slice(), [ProcessVerdict::Denied(p, _)] if p.name == "audit"),
            "{verdicts:?}"
        );
        assert!(judge_process(&policies[..1], &process, |p, _| Weight::of(p.mode)).is_empty());
        assert_eq!(strictest(policies[..1].iter()), None);
        assert_eq!(
            strictest(policies.iter()).map(|p| p.name.as_str()),
            Some("audit")
        );
        assert!(!kills([(
            Rule::DeniedProcess,
            Mode::Learn,
            NonDumpable::Kill
        )]));
    }

    #[test]
    fn an_exception_turns_enforce_into_audit_and_leaves_learn_silent() {
        assert_eq!(Weight::judged(Mode::Enforce, true), Weight::Excepted);
        assert_eq!(Weight::judged(Mode::Audit, true), Weight::Excepted);
        assert_eq!(Weight::judged(Mode::Learn, true), Weight::Learn);
        assert_eq!(Weight::judged(Mode::Enforce, false), Weight::Enforce);
        assert!(!Weight::judged(Mode::Learn, true).reports());
        assert!(Weight::judged(Mode::Audit, false).reports());
        assert_eq!(acted_mode(Mode::Enforce, true), Mode::Audit);
        assert_eq!(acted_mode(Mode::Enforce, false), Mode::Enforce);
        assert_eq!(acted_mode(Mode::Learn, true), Mode::Learn);
        assert_eq!(acted_mode(Mode::Audit, true), Mode::Audit);
    }

    #[test]
    fn only_enforcing_policies_kill_and_for_hiding_alone_only_where_the_policy_says_so() {
        use NonDumpable::{Kill, Report};
        assert!(kills([(Rule::DeniedProcess, Mode::Enforce, Report)]));
        assert!(!kills([(Rule::DeniedProcess, Mode::Audit, Kill)]));
        assert!(kills([(Rule::NonDumpableProcess, Mode::Enforce, Kill)]));
        assert!(!kills([(Rule::NonDumpableProcess, Mode::Audit, Kill)]));
        assert!(!kills([(Rule::NonDumpableProcess, Mode::Enforce, Report)]));
        assert!(kills([
            (Rule::NonDumpableProcess, Mode::Enforce, Report),
            (Rule::DeniedProcess, Mode::Enforce, Report)
        ]));
    }

    #[test]
    fn every_rule_round_trips_through_its_wire_name() {
        for rule in ALL_RULES {
            assert_eq!(Rule::parse(rule.as_str()), Some(rule));
        }
        assert_eq!(Rule::NewExecutableFile.priority(), Priority::File);
        assert_eq!(Rule::DeniedProcess.priority(), Priority::Evidence);
    }

    #[test]
    fn a_hidden_process_of_the_same_uid_is_called_non_dumpable_not_other_uid() {
        let ids = |u: u32, g: u32| Ids {
            uids: [u; 3],
            gids: [g; 3],
        };
        assert_eq!(
            why_unreadable(ids(1000, 1000), 1000, 1000),
            Unreadable::NonDumpable
        );
        assert_eq!(
            why_unreadable(ids(0, 0), 1000, 1000),
            Unreadable::OtherUid(0)
        );
        assert_eq!(
            why_unreadable(ids(1000, 0), 1000, 1000),
            Unreadable::OtherGid(0)
        );
    }

    #[test]
    fn a_symlink_named_ls_to_the_shell_is_denied_by_content() {
        let dash = [7u8; 32];
        let denied = strings(&["sh"]);
        let identity = ExeIdentity {
            sha256: Some(dash),
            multicall: false,
        };
        // comm "ls", executable "dash": no name matches, the content does.
        let by = denied_by(
            &denied,
            &["ls", "dash"],
            None,
            &identity,
            &[("sh".into(), dash)],
        );
        assert_eq!(by, Some(DeniedBy::Content("sh".into())));
        let other = ExeIdentity {
            sha256: Some([1; 32]),
            multicall: false,
        };
        assert_eq!(
            denied_by(&denied, &["ls"], None, &other, &[("sh".into(), dash)]),
            None
        );
    }

    #[test]
    fn busybox_is_judged_by_its_applet_not_its_content() {
        let bb = [9u8; 32];
        let denied = strings(&["sh"]);
        let identity = ExeIdentity {
            sha256: Some(bb),
            multicall: true,
        };
        let content = [("sh".to_string(), bb)];
        let run = |argv: &[&str]| {
            let argv = strings(argv);
            let applet = applet("busybox", &argv);
            denied_by(&denied, &["busybox"], applet, &identity, &content)
        };
        assert_eq!(
            run(&["busybox", "sh", "-c", "id"]),
            Some(DeniedBy::Applet("sh".into()))
        );
        assert_eq!(
            run(&["/bin/sh", "-c", "id"]),
            Some(DeniedBy::Applet("sh".into()))
        );
        assert_eq!(run(&["ls", "-l"]), None, "other applets run freely");
        assert_eq!(run(&["busybox", "ls"]), None);
    }

    #[test]
    fn names_still_match_as_before() {
        let by = denied_by(
            &strings(&["nc"]),
            &["nc", "nc.openbsd"],
            None,
            &ExeIdentity::default(),
            &[],
        );
        assert_eq!(by, Some(DeniedBy::Name("nc".into())));
    }

    fn sock(proto: Proto, local: &str, remote: &str, state: u8) -> Socket {
        let ep = |s: &str| {
            let (ip, port) = s.rsplit_once(':').unwrap();
            (ip.parse().unwrap(), port.parse().unwrap())
        };
        Socket {
            proto,
            local: ep(local),
            remote: ep(remote),
            state,
            inode: 1,
        }
    }

    #[test]
    fn a_client_bound_to_a_listening_port_number_is_egress_not_inbound() {
        let listeners: HashSet<_> = [(Proto::Tcp, "192.0.2.2".parse().unwrap(), 8080)].into();
        let eph = (32768, 60999);
        let accepted = sock(Proto::Tcp, "192.0.2.2:8080", "192.0.2.1:40000", 0x01);
        assert_eq!(socket_role(&accepted, &listeners, eph), SocketRole::Inbound);
        let sneaky = sock(Proto::Tcp, "192.0.2.1:8080", "10.9.9.9:443", 0x01);
        assert_eq!(socket_role(&sneaky, &listeners, eph), SocketRole::Egress);
        let wildcard: HashSet<_> = [(Proto::Tcp, "0.0.0.0".parse().unwrap(), 8080)].into();
        assert_eq!(socket_role(&sneaky, &wildcard, eph), SocketRole::Inbound);
    }

    #[test]
    fn only_an_unowned_tcp_socket_to_the_enforcers_own_peer_is_left_by_it() {
        let own: HashSet<(IpAddr, u16)> = [("10.0.0.77".parse().unwrap(), 443)].into();
        let mut closed = sock(Proto::Tcp, "192.0.2.1:40000", "10.0.0.77:443", 0x06);
        closed.inode = 0;
        assert!(left_by_the_enforcer(&closed, &own));
        let mut held = closed.clone();
        held.inode = 7;
        assert!(!left_by_the_enforcer(&held, &own), "someone holds it");
        let mut elsewhere = sock(Proto::Tcp, "192.0.2.1:40001", "10.9.9.9:443", 0x06);
        elsewhere.inode = 0;
        assert!(!left_by_the_enforcer(&elsewhere, &own));
        let mut other_port = sock(Proto::Tcp, "192.0.2.1:40002", "10.0.0.77:80", 0x06);
        other_port.inode = 0;
        assert!(!left_by_the_enforcer(&other_port, &own));
    }

    #[test]
    fn short_connections_count_in_closing_states_too() {
        let none = HashSet::new();
        let eph = (32768, 60999);
        for state in [0x01, 0x02, 0x04, 0x05, 0x06, 0x08, 0x09, 0x0B] {
            let s = sock(Proto::Tcp, "192.0.2.1:40000", "10.9.9.9:443", state);
            assert_eq!(
                socket_role(&s, &none, eph),
                SocketRole::Egress,
                "{state:#x}"
            );
        }
        let closed = sock(Proto::Tcp, "192.0.2.1:40000", "10.9.9.9:443", 0x07);
        assert_eq!(socket_role(&closed, &none, eph), SocketRole::Other);
    }

    #[test]
    fn connected_udp_is_egress_and_an_ephemeral_unconnected_one_is_no_listener() {
        let none = HashSet::new();
        let eph = (32768, 60999);
        let dns = sock(Proto::Udp, "192.0.2.1:40000", "10.9.9.9:53", 0x01);
        assert_eq!(socket_role(&dns, &none, eph), SocketRole::Egress);
        let resolver = sock(Proto::Udp, "0.0.0.0:41000", "0.0.0.0:0", 0x07);
        assert_eq!(socket_role(&resolver, &none, eph), SocketRole::Other);
        let server = sock(Proto::Udp, "0.0.0.0:5353", "0.0.0.0:0", 0x07);
        assert_eq!(socket_role(&server, &none, eph), SocketRole::Listener);
    }

    #[test]
    fn stable_ids_repeat_for_the_same_finding_only() {
        let a = stable_id("p", &["behavior/denied-process", "1234", "99"]);
        assert_eq!(
            a,
            stable_id("p", &["behavior/denied-process", "1234", "99"])
        );
        assert_ne!(
            a,
            stable_id("p", &["behavior/denied-process", "1234", "100"])
        );
        assert_ne!(
            stable_id("p", &["ab", "c"]),
            stable_id("p", &["a", "bc"]),
            "parts are delimited"
        );
    }

    #[test]
    fn a_library_preloaded_from_tmp_is_foreign_and_image_libraries_are_not() {
        let temp = strings(&["/tmp", "/dev/shm"]);
        let maps = [
            "/usr/lib/x86_64-linux-gnu/libc.so.6",
            "/tmp/hook.so",
            "/tmp/hook.so",
            "/usr/lib/libgone.so (deleted)",
            "/memfd:jit",
        ];
        assert_eq!(
            foreign_mappings(maps.into_iter(), &temp),
            [
                "/tmp/hook.so",
                "/usr/lib/libgone.so (deleted)",
                "/memfd:jit"
            ]
        );
        let env = strings(&["PATH=/bin", "LD_PRELOAD=/usr/lib/ok.so:/dev/shm/x.so"]);
        assert_eq!(preload_from_tmp(&env, &temp), ["/dev/shm/x.so"]);
    }

    #[test]
    fn a_script_run_from_tmp_by_an_interpreter_is_drift() {
        let temp = strings(&["/tmp"]);
        let argv = strings(&["python3", "-u", "/tmp/x.py"]);
        assert_eq!(
            script_from_tmp("python3.11", &argv, &temp),
            Some("/tmp/x.py")
        );
        let argv = strings(&["bash", "/tmp/run.sh"]);
        assert_eq!(script_from_tmp("bash", &argv, &temp), Some("/tmp/run.sh"));
        let argv = strings(&["bash", "/app/run.sh"]);
        assert_eq!(script_from_tmp("bash", &argv, &temp), None);
        let argv = strings(&["tar", "/tmp/x"]);
        assert_eq!(
            script_from_tmp("tar", &argv, &temp),
            None,
            "not an interpreter"
        );
    }

    #[test]
    fn a_burst_of_files_is_summed_up_per_directory() {
        let paths: Vec<String> = (0..40).map(|i| format!("/tmp/f{i}")).collect();
        let (single, more) = aggregate_files(paths);
        assert_eq!(single.len(), FILE_BURST);
        assert_eq!(
            more,
            [("/tmp".to_string(), 40 - FILE_BURST, "/tmp/f16".to_string())]
        );
    }
}
