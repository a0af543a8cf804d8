//! `palisade-launch`: confines an app with Landlock before exec'ing it, so
//! that the app and everything it starts can neither run code that is not
//! in the image's program directories, nor change those directories, nor
//! signal or trace the enforcer beside it.
//!
//! What Landlock does not govern (another process's resource limits,
//! MPTCP sockets, optionally executable memfds) a seccomp filter of the
//! launcher's own refuses (`syscalls`).
//!
//! The decisions (argument parsing, ruleset derivation, refusals, coverage,
//! whether to run) are pure functions; `sandbox` and `seccomp` are the only
//! modules that touch the kernel.

#![forbid(unsafe_code)]

pub mod args;
pub mod coverage;
pub mod enforcer;
pub mod plan;
pub mod policy;
pub mod sandbox;
pub mod seccomp;
pub mod syscalls;

use args::OnUnsupported;
use coverage::Level;

/// The environment variable that may carry the launch policy (JSON).
pub const POLICY_ENV: &str = "PALISADE_LAUNCH_POLICY";

/// Whether to start the app once the kernel has said what it enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Run,
    Refuse,
}

/// Failing open is a choice: with `refuse`, an app the kernel could not
/// confine at all is not started. Partial coverage always runs, because
/// every protection that is enforced is worth having.
pub fn decide(level: Level, on_unsupported: OnUnsupported) -> Decision {
    match (level, on_unsupported) {
        (Level::None, OnUnsupported::Refuse) => Decision::Refuse,
        _ => Decision::Run,
    }
}

/// Exit codes, following `env(1)`: the launcher's own failures never look
/// like the app's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Bad arguments or launch policy.
    Usage = 125,
    /// Refused to run unconfined, or the command could not be executed.
    CannotRun = 126,
    /// The command was not found.
    NotFound = 127,
}

impl Exit {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit code for a failed exec.
    pub fn for_exec_error(error: &std::io::Error) -> Self {
        match error.kind() {
            std::io::ErrorKind::NotFound => Self::NotFound,
            _ => Self::CannotRun,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuse_stops_only_an_app_the_kernel_could_not_confine_at_all() {
        assert_eq!(decide(Level::None, OnUnsupported::Refuse), Decision::Refuse);
        assert_eq!(decide(Level::Partial, OnUnsupported::Refuse), Decision::Run);
        assert_eq!(decide(Level::Full, OnUnsupported::Refuse), Decision::Run);
    }

    #[test]
    fn run_starts_the_app_whatever_the_kernel_enforced() {
        for level in [Level::None, Level::Partial, Level::Full] {
            assert_eq!(decide(level, OnUnsupported::Run), Decision::Run);
        }
    }

    #[test]
    fn a_missing_command_exits_127_and_a_denied_one_126() {
        let missing = std::io::Error::from(std::io::ErrorKind::NotFound);
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(Exit::for_exec_error(&missing).code(), 127);
        assert_eq!(Exit::for_exec_error(&denied).code(), 126);
    }
}
