//! What the kernel actually enforced, derived purely from the plan and the
//! outcome of `landlock_restrict_self`. Never claims a protection the
//! kernel refused: a protection counts only when the ruleset was enforced
//! and the kernel's ABI has the feature behind it.

use std::path::PathBuf;

use serde::Serialize;

pub use palisade_common::launch::{CoverageLevel as Level, LandlockSupport};

use crate::plan::RulesetPlan;
use crate::syscalls::Refusal;

/// One protection the launcher can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Protection {
    /// execve only beneath program directories: no dropped binaries, no
    /// copies in temp dirs or emptyDirs, no memfd execution.
    ExecOnlyFromProgramDirs,
    /// No file created, written, removed, renamed or linked beneath the
    /// program directories.
    ProgramDirsWriteProtected,
    /// No truncation of files beneath the program directories.
    ProgramFilesTruncateProtected,
    /// No ptrace of, and no ptrace-guarded `/proc/<pid>/` access to,
    /// processes outside the sandbox (the enforcer).
    PtraceScoped,
    /// No signals to processes outside the sandbox (no SIGSTOP/SIGKILL of
    /// the enforcer).
    SignalScoped,
    /// No connections to abstract unix sockets created outside the sandbox.
    AbstractUnixSocketsScoped,
    /// TCP bind only on the allowed ports.
    TcpBindAllowList,
    /// TCP connect only to the allowed ports.
    TcpConnectAllowList,
    /// No writes beneath `/proc`: no other process's `oom_score_adj`.
    ProcWriteProtected,
    /// No `prlimit` on another process (the enforcer's CPU or open-file
    /// limits); seccomp.
    ForeignResourceLimitsDenied,
    /// No MPTCP sockets, which Landlock's TCP rules do not cover; seccomp,
    /// requested where a TCP allow-list is.
    MptcpDenied,
    /// No io_uring, which makes sockets without the `socket` call; seccomp,
    /// requested with `MptcpDenied`.
    IoUringDenied,
    /// No execution of memfds. Landlock does not check anonymous files
    /// against path rules, so this comes from the pid namespace's
    /// `vm.memfd_noexec = 2` (inherited from the node), or from the
    /// launcher's seccomp filter where the policy asks for it
    /// (`denyExecutableMemfd`); it is reported either way so that the gap
    /// is visible.
    MemfdExecDenied,
}

/// What gives a protection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The Landlock ruleset, from this ABI on.
    Landlock { min_abi: u8 },
    /// The launcher's seccomp filter.
    Seccomp(Refusal),
    /// The node's `vm.memfd_noexec=2`, or the filter's memfd refusal.
    MemfdNoexec,
}

impl Protection {
    /// Where the protection comes from. The filesystem part of Landlock
    /// waits for ABI 2 on purpose: ABI 1 cannot allow renaming files
    /// between directories, and breaking every app that does is worse than
    /// running it unconfined (the ruleset requires ABI 2 as a whole).
    pub fn source(self) -> Source {
        let landlock = |min_abi| Source::Landlock { min_abi };
        match self {
            Self::ExecOnlyFromProgramDirs
            | Self::ProgramDirsWriteProtected
            | Self::PtraceScoped
            | Self::ProcWriteProtected => landlock(2),
            Self::ProgramFilesTruncateProtected => landlock(3),
            Self::TcpBindAllowList | Self::TcpConnectAllowList => landlock(4),
            Self::SignalScoped | Self::AbstractUnixSocketsScoped => landlock(6),
            Self::ForeignResourceLimitsDenied => Source::Seccomp(Refusal::ForeignResourceLimits),
            Self::MptcpDenied => Source::Seccomp(Refusal::MptcpSockets),
            Self::IoUringDenied => Source::Seccomp(Refusal::IoUring),
            Self::MemfdExecDenied => Source::MemfdNoexec,
        }
    }

    fn is_landlocks(self) -> bool {
        matches!(self.source(), Source::Landlock { .. })
    }
}

/// The ruleset status `landlock_restrict_self` reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum RulesetState {
    Full,
    Partial,
    None,
}

/// The outcome of applying a plan, as the kernel reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub support: LandlockSupport,
    pub ruleset: RulesetState,
    pub no_new_privs: bool,
    /// Applying failed after the kernel accepted Landlock (e.g. a rule was
    /// refused); nothing from the ruleset is enforced then.
    pub error: Option<String>,
    /// `/proc/sys/vm/memfd_noexec` as this process sees it (`None`: the
    /// kernel predates it, 6.3).
    pub memfd_noexec: Option<u8>,
    /// What the seccomp filter the kernel took refuses.
    pub refused: Vec<Refusal>,
    /// Why the kernel took no filter, when it did not.
    pub seccomp_error: Option<String>,
}

/// Why a requested protection is not enforced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "reason")]
pub enum NotEnforcedReason {
    #[serde(rename_all = "camelCase")]
    KernelAbiTooOld {
        needs_abi: u8,
    },
    LandlockNotEnabled,
    LandlockUnavailable,
    ApplyFailed,
    /// A node setting the launcher cannot make (it needs privilege).
    #[serde(rename_all = "camelCase")]
    NodeSettingMissing {
        setting: &'static str,
    },
    /// The kernel took no seccomp filter (`seccompError` says why).
    SeccompFailed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NotEnforced {
    pub protection: Protection,
    #[serde(flatten)]
    pub reason: NotEnforcedReason,
}

/// The coverage report: one JSON line per launch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Coverage {
    pub event: &'static str,
    /// The pod's container, when the injector named it (`--container`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub level: Level,
    pub landlock: LandlockSupport,
    pub no_new_privs: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memfd_noexec: Option<u8>,
    pub enforced: Vec<Protection>,
    pub not_enforced: Vec<NotEnforced>,
    pub program_dirs: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub missing_program_dirs: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unlisted_dirs: Vec<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bind_ports: Option<Vec<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect_ports: Option<Vec<u16>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seccomp_error: Option<String>,
}

pub const COVERAGE_EVENT: &str = "palisade-launch/coverage";

/// The protections a plan asks for, in a stable order.
pub fn requested(plan: &RulesetPlan) -> Vec<Protection> {
    let mut wanted = vec![
        Protection::ExecOnlyFromProgramDirs,
        Protection::ProgramDirsWriteProtected,
        Protection::ProgramFilesTruncateProtected,
        Protection::PtraceScoped,
        Protection::ProcWriteProtected,
    ];
    if plan.scope_signals {
        wanted.push(Protection::SignalScoped);
    }
    if plan.scope_abstract_unix_sockets {
        wanted.push(Protection::AbstractUnixSocketsScoped);
    }
    if plan.tcp.bind.is_some() {
        wanted.push(Protection::TcpBindAllowList);
    }
    if plan.tcp.connect.is_some() {
        wanted.push(Protection::TcpConnectAllowList);
    }
    if plan.refusals.contains(&Refusal::ForeignResourceLimits) {
        wanted.push(Protection::ForeignResourceLimitsDenied);
    }
    if plan.refusals.contains(&Refusal::MptcpSockets) {
        wanted.push(Protection::MptcpDenied);
    }
    if plan.refusals.contains(&Refusal::IoUring) {
        wanted.push(Protection::IoUringDenied);
    }
    wanted.push(Protection::MemfdExecDenied);
    wanted
}

/// Derives the report from the plan and what the kernel said.
pub fn coverage(
    plan: &RulesetPlan,
    missing_program_dirs: &[PathBuf],
    applied: &Applied,
) -> Coverage {
    let mut enforced = Vec::new();
    let mut not_enforced = Vec::new();
    for protection in requested(plan) {
        let reason = match protection.source() {
            Source::Landlock { min_abi } => landlock_refusal(min_abi, applied),
            Source::Seccomp(refusal) => {
                (!applied.refused.contains(&refusal)).then_some(NotEnforcedReason::SeccompFailed)
            }
            Source::MemfdNoexec => (applied.memfd_noexec != Some(2)
                && !applied.refused.contains(&Refusal::ExecutableMemfd))
            .then(|| match applied.seccomp_error {
                Some(_) if plan.refusals.contains(&Refusal::ExecutableMemfd) => {
                    NotEnforcedReason::SeccompFailed
                }
                _ => NotEnforcedReason::NodeSettingMissing {
                    setting: "vm.memfd_noexec=2",
                },
            }),
        };
        match reason {
            None => enforced.push(protection),
            Some(reason) => not_enforced.push(NotEnforced { protection, reason }),
        }
    }
    let level = match (
        enforced.iter().any(|p| p.is_landlocks()),
        not_enforced.iter().any(|n| n.protection.is_landlocks()),
    ) {
        (false, _) => Level::None,
        (true, false) => Level::Full,
        (true, true) => Level::Partial,
    };
    let kept = |p: Protection, ports: &Option<Vec<u16>>| {
        enforced.contains(&p).then(|| ports.clone()).flatten()
    };
    Coverage {
        event: COVERAGE_EVENT,
        container: None,
        level,
        landlock: applied.support,
        no_new_privs: applied.no_new_privs,
        memfd_noexec: applied.memfd_noexec,
        bind_ports: kept(Protection::TcpBindAllowList, &plan.tcp.bind),
        connect_ports: kept(Protection::TcpConnectAllowList, &plan.tcp.connect),
        enforced,
        not_enforced,
        program_dirs: plan.program_dirs.clone(),
        missing_program_dirs: missing_program_dirs.to_vec(),
        unlisted_dirs: plan.unlisted_dirs.clone(),
        error: applied.error.clone(),
        seccomp_error: applied.seccomp_error.clone(),
    }
}

/// Why a Landlock protection that needs `needs_abi` is not enforced, if it
/// is not.
fn landlock_refusal(needs_abi: u8, applied: &Applied) -> Option<NotEnforcedReason> {
    match (applied.support, applied.ruleset, &applied.error) {
        (_, _, Some(_)) | (LandlockSupport::Unknown, _, _) => Some(NotEnforcedReason::ApplyFailed),
        (LandlockSupport::NotEnabled, _, _) => Some(NotEnforcedReason::LandlockNotEnabled),
        (LandlockSupport::NotImplemented, _, _) => Some(NotEnforcedReason::LandlockUnavailable),
        (LandlockSupport::Available(abi), _, _) if abi < needs_abi => {
            Some(NotEnforcedReason::KernelAbiTooOld { needs_abi })
        }
        // The ABI has it, but the kernel enforced nothing: say so rather
        // than trust the ABI number.
        (LandlockSupport::Available(_), RulesetState::None, _) => {
            Some(NotEnforcedReason::ApplyFailed)
        }
        (LandlockSupport::Available(_), _, _) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::TcpRequest;

    fn plan(tcp: TcpRequest) -> RulesetPlan {
        RulesetPlan {
            program_dirs: vec![PathBuf::from("/usr")],
            rules: Vec::new(),
            tcp,
            scope_signals: true,
            scope_abstract_unix_sockets: true,
            unlisted_dirs: Vec::new(),
            refusals: vec![Refusal::ForeignResourceLimits],
        }
    }

    fn applied(support: LandlockSupport, ruleset: RulesetState) -> Applied {
        Applied {
            support,
            ruleset,
            no_new_privs: true,
            error: None,
            // What most nodes have today.
            memfd_noexec: Some(0),
            refused: vec![Refusal::ForeignResourceLimits],
            seccomp_error: None,
        }
    }

    fn landlock_gaps(c: &Coverage) -> Vec<&NotEnforced> {
        c.not_enforced
            .iter()
            .filter(|n| n.protection != Protection::MemfdExecDenied)
            .collect()
    }

    fn with_ports() -> TcpRequest {
        TcpRequest {
            bind: Some(vec![8080]),
            connect: Some(vec![443]),
        }
    }

    #[test]
    fn abi_7_enforces_everything_requested() {
        let c = coverage(
            &plan(with_ports()),
            &[],
            &applied(LandlockSupport::Available(7), RulesetState::Full),
        );
        assert_eq!(c.level, Level::Full);
        assert!(landlock_gaps(&c).is_empty());
        assert_eq!(c.enforced.len(), 10);
        assert_eq!(c.bind_ports, Some(vec![8080]));
        assert_eq!(c.connect_ports, Some(vec![443]));
    }

    #[test]
    fn abi_4_enforces_files_and_tcp_but_not_signal_scoping() {
        let c = coverage(
            &plan(with_ports()),
            &[],
            &applied(LandlockSupport::Available(4), RulesetState::Partial),
        );
        assert_eq!(c.level, Level::Partial);
        assert!(c.enforced.contains(&Protection::TcpBindAllowList));
        assert_eq!(
            landlock_gaps(&c),
            vec![
                &NotEnforced {
                    protection: Protection::SignalScoped,
                    reason: NotEnforcedReason::KernelAbiTooOld { needs_abi: 6 },
                },
                &NotEnforced {
                    protection: Protection::AbstractUnixSocketsScoped,
                    reason: NotEnforcedReason::KernelAbiTooOld { needs_abi: 6 },
                },
            ]
        );
    }

    #[test]
    fn abi_2_keeps_drift_prevention_and_reports_ports_it_could_not_enforce() {
        let c = coverage(
            &plan(with_ports()),
            &[],
            &applied(LandlockSupport::Available(2), RulesetState::Partial),
        );
        assert_eq!(
            c.enforced,
            vec![
                Protection::ExecOnlyFromProgramDirs,
                Protection::ProgramDirsWriteProtected,
                Protection::PtraceScoped,
                Protection::ProcWriteProtected,
                Protection::ForeignResourceLimitsDenied,
            ]
        );
        assert_eq!(
            c.bind_ports, None,
            "ports are not claimed when not enforced"
        );
        assert_eq!(c.connect_ports, None);
    }

    #[test]
    fn abi_1_enforces_nothing_of_landlocks_because_renames_would_break() {
        let c = coverage(
            &plan(TcpRequest::default()),
            &[],
            &applied(LandlockSupport::Available(1), RulesetState::None),
        );
        assert_eq!(c.level, Level::None);
        assert_eq!(
            c.enforced,
            vec![Protection::ForeignResourceLimitsDenied],
            "the seccomp filter does not need Landlock"
        );
        assert!(landlock_gaps(&c)
            .iter()
            .all(|n| matches!(n.reason, NotEnforcedReason::KernelAbiTooOld { .. })));
    }

    #[test]
    fn a_kernel_without_landlock_is_reported_as_none_with_the_cause() {
        for (support, reason) in [
            (
                LandlockSupport::NotImplemented,
                NotEnforcedReason::LandlockUnavailable,
            ),
            (
                LandlockSupport::NotEnabled,
                NotEnforcedReason::LandlockNotEnabled,
            ),
        ] {
            let c = coverage(
                &plan(TcpRequest::default()),
                &[],
                &applied(support, RulesetState::None),
            );
            assert_eq!(c.level, Level::None);
            assert!(landlock_gaps(&c).iter().all(|n| n.reason == reason));
        }
    }

    #[test]
    fn a_recent_abi_with_nothing_enforced_is_not_trusted() {
        let c = coverage(
            &plan(TcpRequest::default()),
            &[],
            &applied(LandlockSupport::Available(7), RulesetState::None),
        );
        assert_eq!(c.level, Level::None);
    }

    #[test]
    fn an_apply_error_means_nothing_is_claimed() {
        let mut outcome = applied(LandlockSupport::Available(7), RulesetState::None);
        outcome.error = Some("add rule /opt: EBADF".into());
        let c = coverage(&plan(TcpRequest::default()), &[], &outcome);
        assert_eq!(c.level, Level::None);
        assert!(landlock_gaps(&c)
            .iter()
            .all(|n| n.reason == NotEnforcedReason::ApplyFailed));
    }

    #[test]
    fn memfd_execution_is_reported_missing_unless_the_node_sets_memfd_noexec_2() {
        let mut outcome = applied(LandlockSupport::Available(7), RulesetState::Full);
        let c = coverage(&plan(TcpRequest::default()), &[], &outcome);
        assert_eq!(
            c.not_enforced,
            vec![NotEnforced {
                protection: Protection::MemfdExecDenied,
                reason: NotEnforcedReason::NodeSettingMissing {
                    setting: "vm.memfd_noexec=2"
                },
            }]
        );
        assert_eq!(c.level, Level::Full, "the launcher did all it could");
        outcome.memfd_noexec = Some(2);
        let c = coverage(&plan(TcpRequest::default()), &[], &outcome);
        assert!(c.enforced.contains(&Protection::MemfdExecDenied));
        assert!(c.not_enforced.is_empty());
    }

    #[test]
    fn a_node_setting_alone_does_not_make_an_unconfined_app_look_covered() {
        let mut outcome = applied(LandlockSupport::NotImplemented, RulesetState::None);
        outcome.memfd_noexec = Some(2);
        let c = coverage(&plan(TcpRequest::default()), &[], &outcome);
        assert_eq!(c.level, Level::None);
    }

    #[test]
    fn the_policys_memfd_refusal_counts_as_memfd_execution_denied_without_the_node_setting() {
        let mut p = plan(TcpRequest::default());
        p.refusals.push(Refusal::ExecutableMemfd);
        let mut outcome = applied(LandlockSupport::Available(7), RulesetState::Full);
        outcome.refused = p.refusals.clone();
        let c = coverage(&p, &[], &outcome);
        assert!(c.enforced.contains(&Protection::MemfdExecDenied));
        outcome.refused.clear();
        outcome.seccomp_error = Some("seccomp: EINVAL".into());
        let c = coverage(&p, &[], &outcome);
        assert!(c.not_enforced.contains(&NotEnforced {
            protection: Protection::MemfdExecDenied,
            reason: NotEnforcedReason::SeccompFailed,
        }));
    }

    #[test]
    fn a_filter_the_kernel_refused_is_reported_and_leaves_the_landlock_level_alone() {
        let mut p = plan(with_ports());
        p.refusals.push(Refusal::MptcpSockets);
        let mut outcome = applied(LandlockSupport::Available(7), RulesetState::Full);
        outcome.refused.clear();
        outcome.seccomp_error = Some("seccomp: EACCES".into());
        let c = coverage(&p, &[], &outcome);
        assert_eq!(c.level, Level::Full);
        for protection in [
            Protection::ForeignResourceLimitsDenied,
            Protection::MptcpDenied,
        ] {
            assert!(c.not_enforced.contains(&NotEnforced {
                protection,
                reason: NotEnforcedReason::SeccompFailed,
            }));
        }
        assert_eq!(c.seccomp_error.as_deref(), Some("seccomp: EACCES"));
    }

    #[test]
    fn unrequested_tcp_lists_are_neither_enforced_nor_missing() {
        let c = coverage(
            &plan(TcpRequest::default()),
            &[],
            &applied(LandlockSupport::Available(7), RulesetState::Full),
        );
        assert_eq!(c.level, Level::Full);
        assert!(!c.enforced.contains(&Protection::TcpBindAllowList));
    }

    #[test]
    fn the_report_is_one_json_line_with_camel_case_names() {
        let c = coverage(
            &plan(TcpRequest::default()),
            &[PathBuf::from("/lib64")],
            &applied(LandlockSupport::Available(4), RulesetState::Partial),
        );
        let line = serde_json::to_string(&c).expect("serialises");
        assert!(!line.contains('\n'));
        for needle in [
            r#""event":"palisade-launch/coverage""#,
            r#""level":"partial""#,
            r#""landlock":{"state":"available","abi":4}"#,
            r#""missingProgramDirs":["/lib64"]"#,
            r#"{"protection":"signalScoped","reason":"kernelAbiTooOld","needsAbi":6}"#,
        ] {
            assert!(line.contains(needle), "{needle} in {line}");
        }
    }
}
