//! System calls the launcher refuses with a seccomp filter of its own:
//! what an app could do to its enforcer, or around its allow-lists, that
//! Landlock does not govern. Pure: which refusals a launch asks for, and
//! the argument tests that define each one. `seccomp` hands them to the
//! kernel.
//!
//! An unprivileged filter is allowed under `no_new_privs` and is inherited
//! by every process the app starts; it can test a system call's number and
//! its register arguments, never what a pointer points at or a path.

use serde::Serialize;

use crate::plan::RulesetPlan;

/// One refusal the filter can carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Refusal {
    /// `prlimit64` that sets the limits of another process: same-UID
    /// processes may otherwise lower the enforcer's `RLIMIT_CPU` (the
    /// kernel kills it, no signal involved) or `RLIMIT_NOFILE` (it goes
    /// blind). Reading another process's limits, and setting one's own
    /// (`setrlimit`, which libcs send as `prlimit64(0, ...)`), stay allowed.
    ForeignResourceLimits,
    /// `socket(..., IPPROTO_MPTCP)`: Landlock's TCP rules do not apply to
    /// MPTCP sockets, so both allow-lists would be bypassed. Answered as a
    /// kernel without MPTCP answers, so programs that try MPTCP first (Go's
    /// listeners do) fall back to TCP, which the rules govern.
    MptcpSockets,
    /// `io_uring_setup`, wherever MPTCP is refused: an io_uring makes
    /// sockets (`IORING_OP_SOCKET`) without the `socket` call the filter
    /// sees. Answered as a kernel with io_uring disabled answers
    /// (`kernel.io_uring_disabled`), which programs survive by falling back
    /// to ordinary calls.
    IoUring,
    /// `memfd_create` without `MFD_NOEXEC_SEAL`: a memfd has no path, so
    /// Landlock never sees its execution. Opt-in, because programs create
    /// memfds for shared memory and JIT double-mapping without the flag;
    /// answered as a kernel without memfds answers, which many of them
    /// survive by falling back to files (which Landlock governs).
    ExecutableMemfd,
}

/// The argument a refusal looks at, and how.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgTest {
    /// The 32-bit argument at this index is not zero.
    NonZero32(u8),
    /// The 64-bit argument (a pointer) at this index is not NULL.
    NonNull(u8),
    /// The 32-bit argument at this index equals the value.
    Equals32(u8, u32),
    /// The 32-bit argument at this index has none of the bits in the mask.
    LacksBits32(u8, u32),
    /// The 32-bit argument at this index has one of the bits in the mask.
    HasBits32(u8, u32),
}

/// One way a system call matches: every test holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Match {
    pub syscall: Syscall,
    pub all: Vec<ArgTest>,
}

/// The system calls the filter looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Syscall {
    Prlimit64,
    Socket,
    IoUringSetup,
    MemfdCreate,
}

pub const IPPROTO_MPTCP: u32 = 262;
pub const MFD_NOEXEC_SEAL: u32 = 0x0008;
pub const MFD_EXEC: u32 = 0x0010;

/// The errno each refusal answers with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// What the kernel answers a process without the right.
    NotPermitted,
    /// What a kernel built without MPTCP answers.
    ProtocolNotSupported,
    /// What a kernel without the call answers.
    NoSuchCall,
}

impl Refusal {
    /// The calls this refusal matches; any one of them is refused.
    pub fn matches(self) -> Vec<Match> {
        match self {
            Refusal::ForeignResourceLimits => vec![Match {
                syscall: Syscall::Prlimit64,
                // prlimit64(pid, resource, new_limit, old_limit)
                all: vec![ArgTest::NonZero32(0), ArgTest::NonNull(2)],
            }],
            Refusal::MptcpSockets => vec![Match {
                syscall: Syscall::Socket,
                // socket(domain, type, protocol)
                all: vec![ArgTest::Equals32(2, IPPROTO_MPTCP)],
            }],
            Refusal::IoUring => vec![Match {
                syscall: Syscall::IoUringSetup,
                all: Vec::new(),
            }],
            Refusal::ExecutableMemfd => vec![
                // memfd_create(name, flags): neither sealed against
                // execution, nor asking for it explicitly.
                Match {
                    syscall: Syscall::MemfdCreate,
                    all: vec![ArgTest::LacksBits32(1, MFD_NOEXEC_SEAL)],
                },
                Match {
                    syscall: Syscall::MemfdCreate,
                    all: vec![ArgTest::HasBits32(1, MFD_EXEC)],
                },
            ],
        }
    }

    pub fn answer(self) -> Answer {
        match self {
            Refusal::ForeignResourceLimits => Answer::NotPermitted,
            Refusal::MptcpSockets => Answer::ProtocolNotSupported,
            Refusal::IoUring => Answer::NotPermitted,
            Refusal::ExecutableMemfd => Answer::NoSuchCall,
        }
    }
}

/// The refusals a launch asks for: resource limits always; MPTCP where a
/// TCP allow-list is enforced (elsewhere MPTCP bypasses nothing); memfds
/// when the policy opts in.
pub fn requested(plan: &RulesetPlan, deny_executable_memfd: bool) -> Vec<Refusal> {
    let mut refusals = vec![Refusal::ForeignResourceLimits];
    if plan.tcp.bind.is_some() || plan.tcp.connect.is_some() {
        refusals.push(Refusal::MptcpSockets);
        refusals.push(Refusal::IoUring);
    }
    if deny_executable_memfd {
        refusals.push(Refusal::ExecutableMemfd);
    }
    refusals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::TcpRequest;

    const SELF: u64 = 0;
    const OTHER: u64 = 4242;
    const LIMIT_PTR: u64 = 0x7fff_0000;
    const AF_INET: u64 = 2;
    const SOCK_STREAM: u64 = 1;
    const MFD_CLOEXEC: u64 = 1;

    /// Whether a call with these arguments is refused, as the filter decides:
    /// the model the tests check the filter's intent against.
    fn refuses(refusal: Refusal, syscall: Syscall, args: [u64; 6]) -> bool {
        refusal
            .matches()
            .iter()
            .filter(|m| m.syscall == syscall)
            .any(|m| m.all.iter().all(|t| holds(*t, &args)))
    }

    fn holds(test: ArgTest, args: &[u64; 6]) -> bool {
        let low = |i: u8| args[usize::from(i)] as u32;
        match test {
            ArgTest::NonZero32(i) => low(i) != 0,
            ArgTest::NonNull(i) => args[usize::from(i)] != 0,
            ArgTest::Equals32(i, v) => low(i) == v,
            ArgTest::LacksBits32(i, mask) => low(i) & mask == 0,
            ArgTest::HasBits32(i, mask) => low(i) & mask != 0,
        }
    }

    fn plan(tcp: TcpRequest) -> RulesetPlan {
        RulesetPlan {
            tcp,
            ..RulesetPlan::default()
        }
    }

    #[test]
    fn setting_another_processs_limits_is_refused_and_everything_else_about_limits_is_not() {
        let r = Refusal::ForeignResourceLimits;
        let call = |pid, new| refuses(r, Syscall::Prlimit64, [pid, 7, new, 0, 0, 0]);
        assert!(
            call(OTHER, LIMIT_PTR),
            "prlimit --pid <enforcer> --nofile=..."
        );
        assert!(!call(OTHER, 0), "reading another process's limits");
        assert!(!call(SELF, LIMIT_PTR), "setrlimit on oneself");
        assert!(!call(SELF, 0), "getrlimit");
    }

    #[test]
    fn only_mptcp_sockets_are_refused() {
        let r = Refusal::MptcpSockets;
        let socket = |proto| refuses(r, Syscall::Socket, [AF_INET, SOCK_STREAM, proto, 0, 0, 0]);
        assert!(socket(u64::from(IPPROTO_MPTCP)));
        assert!(!socket(0), "plain TCP");
        assert!(!socket(6), "IPPROTO_TCP");
        assert!(!socket(17), "IPPROTO_UDP");
    }

    #[test]
    fn only_memfds_that_may_be_executed_are_refused() {
        let r = Refusal::ExecutableMemfd;
        let memfd = |flags| refuses(r, Syscall::MemfdCreate, [0x1000, flags, 0, 0, 0, 0]);
        assert!(memfd(MFD_CLOEXEC), "executable by default");
        assert!(
            memfd(u64::from(MFD_EXEC) | MFD_CLOEXEC),
            "asked to be executable"
        );
        assert!(!memfd(u64::from(MFD_NOEXEC_SEAL) | MFD_CLOEXEC));
    }

    #[test]
    fn refusals_never_reach_other_calls() {
        for r in [
            Refusal::ForeignResourceLimits,
            Refusal::MptcpSockets,
            Refusal::IoUring,
            Refusal::ExecutableMemfd,
        ] {
            for call in [
                Syscall::Prlimit64,
                Syscall::Socket,
                Syscall::IoUringSetup,
                Syscall::MemfdCreate,
            ] {
                if r.matches().iter().all(|m| m.syscall != call) {
                    assert!(!refuses(r, call, [u64::MAX; 6]), "{r:?} on {call:?}");
                }
            }
        }
    }

    #[test]
    fn mptcp_is_refused_only_where_a_tcp_allow_list_is_enforced() {
        assert_eq!(
            requested(&plan(TcpRequest::default()), false),
            vec![Refusal::ForeignResourceLimits]
        );
        let bind = TcpRequest {
            bind: Some(vec![8080]),
            connect: None,
        };
        assert!(requested(&plan(bind.clone()), false).contains(&Refusal::MptcpSockets));
        assert!(
            requested(&plan(bind), false).contains(&Refusal::IoUring),
            "io_uring makes sockets without socket()"
        );
        let connect = TcpRequest {
            bind: None,
            connect: Some(vec![443]),
        };
        assert!(requested(&plan(connect), false).contains(&Refusal::MptcpSockets));
    }

    #[test]
    fn executable_memfds_are_refused_only_when_the_policy_opts_in() {
        assert!(!requested(&plan(TcpRequest::default()), false).contains(&Refusal::ExecutableMemfd));
        assert!(requested(&plan(TcpRequest::default()), true).contains(&Refusal::ExecutableMemfd));
    }
}
