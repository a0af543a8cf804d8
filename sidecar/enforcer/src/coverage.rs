//! What the enforcer can and cannot see in its pod, and so which of its
//! protections are off and why: said in `enforcer/started`, carried by every
//! heartbeat (`EnforcerStatus.protections_off`) and kept current as processes
//! of other UIDs come and go. An enforcer that is blind must say so rather
//! than stay silent.

use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

use palisade_common::wire::{EnforcerProtection, ProtectionOff};

use crate::config::Settings;
use crate::procfs;
use crate::rules::Unreadable;

/// A source of facts the enforcer lacks in this pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// /proc/net/tcp* (the pod's sockets).
    SocketTables,
    /// /proc/sys/kernel/ns_last_pid (processes started between two scans).
    LastPidCounter,
    /// inotify (new executable files; execs waking a pass).
    Inotify,
}

/// What the enforcer could and could not see.
#[derive(Debug, Default, Clone)]
pub struct Coverage {
    /// The enforcer's own UID and GID.
    pub uid: u32,
    pub gid: u32,
    pub processes: usize,
    /// Processes whose executable it could not read, by why.
    pub unreadable: HashMap<Unreadable, usize>,
    pub missing: Vec<Signal>,
}

/// Why a protection is off, one fact each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Cause {
    Hidden(Unreadable),
    Missing(Signal),
}

/// The facts behind every protection that is off.
pub fn causes(coverage: &Coverage) -> BTreeSet<Cause> {
    coverage
        .unreadable
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(why, _)| Cause::Hidden(*why))
        .chain(coverage.missing.iter().map(|s| Cause::Missing(*s)))
        .collect()
}

/// The causes in force after a new look: a cause turns a protection off
/// once it holds for processes the enforcer has known for a while
/// (`settled`), and turns it on again only once no process shows it at all
/// (`all`). A process of another UID that lives a moment (an exec chain
/// switching UIDs) does not make the list flap.
pub fn next_causes(
    previous: &BTreeSet<Cause>,
    all: &BTreeSet<Cause>,
    settled: &BTreeSet<Cause>,
) -> BTreeSet<Cause> {
    settled
        .iter()
        .chain(previous.intersection(all))
        .copied()
        .collect()
}

const ORDER: [EnforcerProtection; 6] = [
    EnforcerProtection::Drift,
    EnforcerProtection::ProcessIdentity,
    EnforcerProtection::Stopping,
    EnforcerProtection::SocketOwners,
    EnforcerProtection::Sockets,
    EnforcerProtection::ShortLivedCount,
];

/// What is closed to the enforcer about a hidden process, as it matters to
/// `protection`; None when the protection does not depend on it.
fn closed(protection: EnforcerProtection, why: Unreadable) -> Option<&'static str> {
    use EnforcerProtection as P;
    match (protection, why) {
        (P::Drift, _) => Some("executables, container roots and memory maps are unreadable"),
        (P::ProcessIdentity, _) => Some("executables are unreadable"),
        (P::SocketOwners, _) => Some("file descriptors are unreadable"),
        // The kernel lets a process signal another of its real or effective UID.
        (P::Stopping, Unreadable::OtherUid(_)) => Some("signals need the same UID"),
        _ => None,
    }
}

fn missing(protection: EnforcerProtection, signal: Signal) -> Option<&'static str> {
    use EnforcerProtection as P;
    match (protection, signal) {
        (P::Sockets | P::SocketOwners, Signal::SocketTables) => {
            Some("/proc/net/tcp is not readable: the pod's sockets cannot be listed")
        }
        (P::ShortLivedCount, Signal::LastPidCounter) => {
            Some("/proc/sys/kernel/ns_last_pid is not readable")
        }
        (P::Drift, Signal::Inotify) => {
            Some("inotify is unavailable: new executable files are not seen")
        }
        _ => None,
    }
}

fn join_ids(ids: &[u32]) -> String {
    ids.iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Every protection `causes` turn off, once each, with all its reasons.
/// Reasons name UIDs and GIDs, never counts, so the list changes only when
/// what is hidden changes.
pub fn protections_off(causes: &BTreeSet<Cause>, uid: u32, gid: u32) -> Vec<ProtectionOff> {
    let uids: Vec<u32> = causes
        .iter()
        .filter_map(|c| match c {
            Cause::Hidden(Unreadable::OtherUid(u)) => Some(*u),
            _ => None,
        })
        .collect();
    let gids: Vec<u32> = causes
        .iter()
        .filter_map(|c| match c {
            Cause::Hidden(Unreadable::OtherGid(g)) => Some(*g),
            _ => None,
        })
        .collect();
    let non_dumpable = causes.contains(&Cause::Hidden(Unreadable::NonDumpable));
    let mut out = Vec::new();
    for protection in ORDER {
        let mut reasons = Vec::new();
        if let (false, Some(what)) = (uids.is_empty(), closed(protection, Unreadable::OtherUid(0)))
        {
            reasons.push(format!(
                "processes of uid {} (the enforcer runs as uid {uid}): {what}",
                join_ids(&uids)
            ));
        }
        if let (false, Some(what)) = (gids.is_empty(), closed(protection, Unreadable::OtherGid(0)))
        {
            reasons.push(format!(
                "processes of gid {} (the enforcer runs as gid {gid}): {what}",
                join_ids(&gids)
            ));
        }
        if let (true, Some(what)) = (non_dumpable, closed(protection, Unreadable::NonDumpable)) {
            reasons.push(format!(
                "non-dumpable processes of the enforcer's uid {uid}: {what}"
            ));
        }
        for cause in causes {
            if let Cause::Missing(signal) = cause {
                if let Some(why) = missing(protection, *signal) {
                    reasons.push(why.to_string());
                }
            }
        }
        if !reasons.is_empty() {
            out.push(ProtectionOff {
                protection,
                reason: reasons.join("; "),
            });
        }
    }
    out
}

/// `protections off: drift (why), ...` for a log line or an event.
pub fn describe(off: &[ProtectionOff]) -> String {
    if off.is_empty() {
        return "protections off: none".into();
    }
    let parts: Vec<String> = off
        .iter()
        .map(|p| format!("{} ({})", p.protection.as_str(), p.reason))
        .collect();
    format!("protections off: {}", parts.join(", "))
}

/// The protections off as last published, and what a new look changes.
#[derive(Debug, Default)]
pub struct ProtectionsWatch {
    causes: BTreeSet<Cause>,
}

impl ProtectionsWatch {
    /// Starts from what the first pass saw: processes that predate the
    /// enforcer all count.
    pub fn new(first: &Coverage) -> (Self, Vec<ProtectionOff>) {
        let causes = causes(first);
        let off = protections_off(&causes, first.uid, first.gid);
        (Self { causes }, off)
    }

    /// The new list when it changed.
    pub fn update(&mut self, all: &Coverage, settled: &Coverage) -> Option<Vec<ProtectionOff>> {
        let next = next_causes(&self.causes, &causes(all), &causes(settled));
        if next == self.causes {
            return None;
        }
        self.causes = next;
        Some(protections_off(&self.causes, all.uid, all.gid))
    }
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

    fn coverage(hidden: &[(Unreadable, usize)], missing: &[Signal]) -> Coverage {
        Coverage {
            uid: 65532,
            gid: 65532,
            processes: 5,
            unreadable: hidden.iter().copied().collect(),
            missing: missing.to_vec(),
        }
    }

    fn off(c: &Coverage) -> Vec<ProtectionOff> {
        protections_off(&causes(c), c.uid, c.gid)
    }

    fn names(off: &[ProtectionOff]) -> Vec<&'static str> {
        off.iter().map(|p| p.protection.as_str()).collect()
    }

    #[test]
    fn the_start_report_never_claims_coverage_it_does_not_have() {
        let settings = Settings::from_env(|_| None).unwrap();
        let full = observable_signals(&settings, &Coverage::default());
        assert!(!full.contains("NOT COVERED"), "{full}");
        let partial = observable_signals(
            &settings,
            &coverage(
                &[(Unreadable::OtherUid(0), 2), (Unreadable::NonDumpable, 1)],
                &[],
            ),
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

    #[test]
    fn an_enforcer_that_sees_everything_has_no_protection_off() {
        assert!(off(&coverage(&[], &[])).is_empty());
        assert_eq!(describe(&[]), "protections off: none");
    }

    #[test]
    fn an_app_of_another_uid_turns_off_drift_identity_socket_owners_and_stopping() {
        let blind = off(&coverage(&[(Unreadable::OtherUid(1000), 3)], &[]));
        assert_eq!(
            names(&blind),
            ["drift", "processIdentity", "stopping", "socketOwners"]
        );
        assert_eq!(
            blind[0].reason,
            "processes of uid 1000 (the enforcer runs as uid 65532): \
             executables, container roots and memory maps are unreadable"
        );
        assert!(blind[2].reason.contains("signals need the same UID"));
        let text = describe(&blind);
        assert!(
            text.starts_with(
                "protections off: drift (processes of uid 1000 (the enforcer runs as uid 65532)"
            ),
            "{text}"
        );
    }

    #[test]
    fn a_hidden_process_of_the_enforcers_uid_can_still_be_stopped() {
        let hidden = off(&coverage(&[(Unreadable::NonDumpable, 1)], &[]));
        assert_eq!(names(&hidden), ["drift", "processIdentity", "socketOwners"]);
        assert!(hidden[0]
            .reason
            .starts_with("non-dumpable processes of the enforcer's uid 65532"));
        let other_gid = off(&coverage(&[(Unreadable::OtherGid(5), 1)], &[]));
        assert_eq!(
            names(&other_gid),
            ["drift", "processIdentity", "socketOwners"]
        );
    }

    #[test]
    fn every_reason_for_one_protection_is_in_its_one_entry() {
        let both = off(&coverage(
            &[
                (Unreadable::OtherUid(0), 1),
                (Unreadable::OtherUid(1001), 1),
                (Unreadable::NonDumpable, 2),
            ],
            &[
                Signal::Inotify,
                Signal::SocketTables,
                Signal::LastPidCounter,
            ],
        ));
        assert_eq!(
            names(&both),
            [
                "drift",
                "processIdentity",
                "stopping",
                "socketOwners",
                "sockets",
                "shortLivedCount"
            ]
        );
        let drift = &both[0].reason;
        assert!(drift.starts_with("processes of uid 0, 1001 "), "{drift}");
        assert!(drift.contains("; non-dumpable processes"), "{drift}");
        assert!(
            drift.ends_with("new executable files are not seen"),
            "{drift}"
        );
    }

    #[test]
    fn a_process_of_another_uid_that_lives_a_moment_changes_nothing() {
        let start = coverage(&[], &[]);
        let (mut watch, first) = ProtectionsWatch::new(&start);
        assert!(first.is_empty());
        let moment = coverage(&[(Unreadable::OtherUid(0), 1)], &[]);
        assert_eq!(watch.update(&moment, &start), None, "not settled yet");
        assert_eq!(watch.update(&start, &start), None);
    }

    #[test]
    fn a_later_process_of_another_uid_turns_protections_off_until_it_is_gone() {
        let (mut watch, _) = ProtectionsWatch::new(&coverage(&[], &[]));
        let other = coverage(&[(Unreadable::OtherUid(2000), 1)], &[]);
        let off = watch.update(&other, &other).expect("changed");
        assert_eq!(names(&off)[0], "drift");
        // Another one of that UID appears: still off, nothing new to say.
        let young = coverage(&[(Unreadable::OtherUid(2000), 2)], &[]);
        assert_eq!(watch.update(&young, &other), None);
        // Only a young one is left: still off until none is.
        assert_eq!(watch.update(&other, &coverage(&[], &[])), None);
        let back = watch.update(&coverage(&[], &[]), &coverage(&[], &[]));
        assert_eq!(back, Some(Vec::new()));
    }

    #[test]
    fn processes_that_predate_the_enforcer_count_at_once() {
        let (_, first) = ProtectionsWatch::new(&coverage(&[(Unreadable::OtherUid(1000), 1)], &[]));
        assert_eq!(names(&first)[0], "drift");
    }
}
