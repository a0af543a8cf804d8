//! The I/O edge for `syscalls`: the refusals as a seccomp filter, through
//! the `seccompiler` crate (rust-vmm's, as Firecracker uses it), installed
//! on this single-threaded process before it execs the app.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use crate::syscalls::{Answer, ArgTest, Refusal, Syscall};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("this architecture ({0}) has no filter")]
    Architecture(&'static str),
    #[error("cannot build the seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("the kernel refused the seccomp filter: {0}")]
    Install(#[from] seccompiler::Error),
}

/// The x32 ABI reaches the same calls as x86_64 under numbers with this
/// bit set, and passes the filter's architecture check: each call is
/// matched under both numbers, or x32 would be a way around it.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: i64 = 0x4000_0000;

fn numbers(call: Syscall) -> Vec<i64> {
    let native = match call {
        Syscall::Prlimit64 => nix::libc::SYS_prlimit64,
        Syscall::Socket => nix::libc::SYS_socket,
        Syscall::IoUringSetup => nix::libc::SYS_io_uring_setup,
        Syscall::MemfdCreate => nix::libc::SYS_memfd_create,
    };
    #[cfg(target_arch = "x86_64")]
    return vec![native, native | X32_SYSCALL_BIT];
    #[cfg(not(target_arch = "x86_64"))]
    vec![native]
}

fn errno(answer: Answer) -> u32 {
    (match answer {
        Answer::NotPermitted => nix::libc::EPERM,
        Answer::ProtocolNotSupported => nix::libc::EPROTONOSUPPORT,
        Answer::NoSuchCall => nix::libc::ENOSYS,
    }) as u32
}

fn condition(test: ArgTest) -> Result<SeccompCondition, seccompiler::BackendError> {
    use SeccompCmpArgLen::{Dword, Qword};
    let (index, len, op, value) = match test {
        ArgTest::NonZero32(i) => (i, Dword, SeccompCmpOp::Ne, 0),
        ArgTest::NonNull(i) => (i, Qword, SeccompCmpOp::Ne, 0),
        ArgTest::Equals32(i, v) => (i, Dword, SeccompCmpOp::Eq, u64::from(v)),
        ArgTest::LacksBits32(i, mask) => (i, Dword, SeccompCmpOp::MaskedEq(u64::from(mask)), 0),
        ArgTest::HasBits32(i, mask) => (
            i,
            Dword,
            SeccompCmpOp::MaskedEq(u64::from(mask)),
            u64::from(mask),
        ),
    };
    SeccompCondition::new(index, len, op, value)
}

/// One filter per refusal: seccompiler gives a filter a single answer, and
/// stacked filters are all consulted (the refusals match disjoint calls, so
/// each filter allows what the others refuse).
fn program(refusal: Refusal) -> Result<BpfProgram, SeccompError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::Architecture(std::env::consts::ARCH))?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut unconditional = Vec::new();
    for m in refusal.matches() {
        let conditions = m
            .all
            .iter()
            .map(|t| condition(*t))
            .collect::<Result<Vec<_>, _>>()?;
        for number in numbers(m.syscall) {
            let chain = rules.entry(number).or_default();
            if conditions.is_empty() {
                // seccompiler's form of "every call": no rule at all.
                chain.clear();
                unconditional.push(number);
            } else if !unconditional.contains(&number) {
                chain.push(SeccompRule::new(conditions.clone())?);
            }
        }
    }
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno(refusal.answer())),
        arch,
    )?;
    Ok(filter.try_into()?)
}

/// Installs the refusals on the calling thread (and so on everything it
/// execs and starts). Sets `no_new_privs` itself, as unprivileged filters
/// require. Every filter is built before the first is installed, so a
/// build error installs nothing.
pub fn install(refusals: &[Refusal]) -> Result<(), SeccompError> {
    let programs = refusals
        .iter()
        .map(|r| program(*r))
        .collect::<Result<Vec<_>, _>>()?;
    for program in &programs {
        seccompiler::apply_filter(program)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;
    use socket2::{Domain, Protocol, Socket, Type};

    /// Runs `f` on a thread of its own with the refusals installed: a
    /// filter without TSYNC binds only the thread that installs it, so the
    /// rest of the test process is untouched.
    fn confined<T: Send + 'static>(
        refusals: &'static [Refusal],
        f: impl FnOnce() -> T + Send + 'static,
    ) -> T {
        std::thread::spawn(move || {
            install(refusals).expect("the filter installs without privilege");
            f()
        })
        .join()
        .expect("the confined thread finished")
    }

    fn socket_with(protocol: i32) -> Result<(), Errno> {
        Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::from(protocol)))
            .map(drop)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))
    }

    #[test]
    fn the_kernel_refuses_mptcp_sockets_as_a_kernel_without_mptcp_would_and_allows_tcp() {
        let (mptcp, tcp) = confined(&[Refusal::MptcpSockets], || {
            (
                socket_with(crate::syscalls::IPPROTO_MPTCP as i32),
                socket_with(nix::libc::IPPROTO_TCP),
            )
        });
        assert_eq!(mptcp, Err(Errno::EPROTONOSUPPORT));
        assert_eq!(tcp, Ok(()));
    }

    #[test]
    fn the_kernel_refuses_setting_another_processs_limits_but_not_ones_own() {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
        // util-linux's prlimit sets this test process's limit to its current
        // value under its PID: the call an app would make on its enforcer.
        let prlimit = move || {
            std::process::Command::new("prlimit")
                .arg(format!("--pid={}", std::process::id()))
                .arg(format!("--nofile={soft}:{hard}"))
                .output()
                .expect("prlimit (util-linux) runs")
        };
        assert!(prlimit().status.success(), "without the filter it works");
        let (foreign, own) = confined(&[Refusal::ForeignResourceLimits], move || {
            (prlimit(), setrlimit(Resource::RLIMIT_NOFILE, soft, hard))
        });
        assert!(!foreign.status.success());
        let said = String::from_utf8_lossy(&foreign.stderr);
        assert!(said.contains("Operation not permitted"), "{said}");
        assert_eq!(own, Ok(()));
    }

    #[test]
    fn the_kernel_refuses_io_uring_as_a_kernel_with_it_disabled_would() {
        // io_uring_setup(0, NULL) from a child (it inherits the filter):
        // the kernel itself answers EINVAL for 0 entries, the filter EPERM
        // before the kernel looks.
        let errno_of_setup = || {
            let out = std::process::Command::new("python3")
                .args([
                    "-c",
                    "import ctypes; libc = ctypes.CDLL(None, use_errno=True); \
                     libc.syscall(425, 0, None); print(ctypes.get_errno())",
                ])
                .output()
                .expect("python3 runs");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        assert_ne!(errno_of_setup(), "1", "without the filter, not EPERM");
        let confined_errno = confined(&[Refusal::IoUring], errno_of_setup);
        assert_eq!(confined_errno, (Errno::EPERM as i32).to_string());
    }

    #[test]
    fn the_filter_leaves_every_other_call_alone() {
        let listed = confined(
            &[Refusal::ForeignResourceLimits, Refusal::MptcpSockets],
            || std::fs::read_dir("/").map(|d| d.count()),
        );
        assert!(listed.expect("reading a directory works") > 0);
    }
}
