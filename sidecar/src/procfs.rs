//! What /proc tells about the pod's processes. With a shared process
//! namespace, stat/status/cmdline are readable for every process; exe, root
//! and fds only for processes of the enforcer's own UID.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proc {
    pub pid: i32,
    pub ppid: i32,
    pub comm: String,
    /// Start time in clock ticks since boot: (pid, start) names a process.
    pub start: u64,
}

pub fn pids(proc_root: &Path) -> Vec<i32> {
    let Ok(entries) = fs::read_dir(proc_root) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

/// Parses `/proc/PID/stat`; the comm field may hold spaces and parens,
/// so fields are counted from the last ')'.
pub fn parse_stat(text: &str) -> Option<(String, i32, u64)> {
    let open = text.find('(')?;
    let close = text.rfind(')')?;
    let comm = text.get(open + 1..close)?.to_string();
    let fields: Vec<&str> = text.get(close + 2..)?.split_whitespace().collect();
    // After comm: state(0) ppid(1) ... starttime is field 22 overall, 19 here.
    let ppid = fields.get(1)?.parse().ok()?;
    let start = fields.get(19)?.parse().ok()?;
    Some((comm, ppid, start))
}

/// Everything about a process that is cheap to read.
pub fn read(proc_root: &Path, pid: i32) -> Option<Proc> {
    let dir = proc_root.join(pid.to_string());
    let (comm, ppid, start) = parse_stat(&fs::read_to_string(dir.join("stat")).ok()?)?;
    Some(Proc {
        pid,
        ppid,
        comm,
        start,
    })
}

/// Effective UID from /proc/PID/status. Not the owner of /proc/PID: that
/// turns to root when a process makes itself non-dumpable.
pub fn uid(proc_root: &Path, pid: i32) -> u32 {
    fs::read_to_string(proc_root.join(pid.to_string()).join("status"))
        .ok()
        .and_then(|s| parse_status_euid(&s))
        .unwrap_or(u32::MAX)
}

/// `Uid:\treal\teffective\tsaved\tfs` -> effective.
pub fn parse_status_euid(status: &str) -> Option<u32> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// Real, effective and saved UIDs and GIDs from /proc/PID/status.
pub fn ids(proc_root: &Path, pid: i32) -> Option<crate::rules::Ids> {
    let status = fs::read_to_string(proc_root.join(pid.to_string()).join("status")).ok()?;
    let three = |prefix: &str| -> Option<[u32; 3]> {
        let mut it = status
            .lines()
            .find_map(|l| l.strip_prefix(prefix))?
            .split_whitespace()
            .map(|n| n.parse::<u32>().ok());
        Some([it.next()??, it.next()??, it.next()??])
    };
    Some(crate::rules::Ids {
        uids: three("Uid:")?,
        gids: three("Gid:")?,
    })
}

/// The last PID handed out in the reader's PID namespace: it moves with
/// every fork and thread, even ones that end before any scan sees them.
pub fn ns_last_pid(proc_root: &Path) -> Option<i32> {
    fs::read_to_string(proc_root.join("sys/kernel/ns_last_pid"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

pub fn pid_max(proc_root: &Path) -> i32 {
    fs::read_to_string(proc_root.join("sys/kernel/pid_max"))
        .ok()
        .and_then(|t| t.trim().parse().ok())
        .unwrap_or(4_194_304)
}

/// Whether `pid` names a live task (process or thread): threads are not
/// listed in /proc, yet /proc/TID answers.
pub fn task_exists(proc_root: &Path, pid: i32) -> bool {
    fs::symlink_metadata(proc_root.join(pid.to_string())).is_ok()
}

pub fn cmdline(proc_root: &Path, pid: i32) -> Vec<String> {
    fs::read(proc_root.join(pid.to_string()).join("cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// `KEY=value` entries of the process's environment (same UID only).
pub fn environ(proc_root: &Path, pid: i32) -> Vec<String> {
    fs::read(proc_root.join(pid.to_string()).join("environ"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Paths of the executable mappings in /proc/PID/maps (same UID only),
/// as the kernel names them (relative to the reader's root).
pub fn executable_mappings(proc_root: &Path, pid: i32) -> Vec<String> {
    let Ok(text) = fs::read_to_string(proc_root.join(pid.to_string()).join("maps")) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|line| {
            let mut f = line.splitn(6, ' ');
            let perms = f.nth(1)?;
            let path = f.nth(3)?.trim_start();
            (perms.contains('x') && (path.starts_with('/'))).then(|| path.to_string())
        })
        .collect()
}

/// The executable as the kernel names it: a path, `PATH (deleted)`, or
/// `/memfd:NAME (deleted)`. Needs the process's UID (or CAP_SYS_PTRACE).
pub fn exe_link(proc_root: &Path, pid: i32) -> std::io::Result<String> {
    fs::read_link(proc_root.join(pid.to_string()).join("exe"))
        .map(|p| p.to_string_lossy().into_owned())
}

/// The process's root directory as seen from here, e.g. `/` or a chroot.
pub fn root_link(proc_root: &Path, pid: i32) -> Option<PathBuf> {
    fs::read_link(proc_root.join(pid.to_string()).join("root")).ok()
}

/// Identity of the process's root filesystem (one per container).
pub fn root_id(proc_root: &Path, pid: i32) -> Option<(u64, u64)> {
    let meta = fs::metadata(proc_root.join(pid.to_string()).join("root/")).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Socket inodes the process holds (`socket:[N]` fd links).
pub fn socket_inodes(proc_root: &Path, pid: i32) -> Vec<u64> {
    let Ok(fds) = fs::read_dir(proc_root.join(pid.to_string()).join("fd")) else {
        return Vec::new();
    };
    fds.flatten()
        .filter_map(|fd| {
            let target = fs::read_link(fd.path()).ok()?;
            let text = target.to_str()?;
            text.strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Sends SIGKILL to the process `pid` started at `start` (clock ticks),
/// through a pidfd: once the descriptor is open, it names that process and
/// no other even if the PID is reused, and the start time read after
/// opening it proves it is the one that was judged.
#[allow(unsafe_code)] // pidfd_open and pidfd_send_signal have no safe wrapper in nix
pub fn kill_exact(proc_root: &Path, pid: i32, start: u64) -> crate::rules::Action {
    use crate::rules::{Action, NotKilled};
    use nix::libc;
    // SAFETY: pidfd_open takes a PID and flags and returns a new fd or -1;
    // no memory is shared with the kernel.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        let errno = nix::errno::Errno::last();
        return match errno {
            nix::errno::Errno::ESRCH => Action::NotKilled(NotKilled::Exited),
            // Kernels before 5.3: fall back to kill(2), after the same check.
            nix::errno::Errno::ENOSYS => match read(proc_root, pid) {
                Some(p) if p.start == start => {
                    match nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    ) {
                        Ok(()) => Action::Killed,
                        Err(e) => Action::KillFailed(e.to_string()),
                    }
                }
                _ => Action::NotKilled(NotKilled::Exited),
            },
            e => Action::KillFailed(e.to_string()),
        };
    }
    // SAFETY: `fd` was just returned by pidfd_open and is owned here only.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd as i32) };
    match read(proc_root, pid) {
        Some(p) if p.start == start => {}
        _ => return Action::NotKilled(NotKilled::Exited),
    }
    // SAFETY: pidfd_send_signal reads only its integer arguments (the
    // siginfo pointer is null); `fd` stays open for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            std::os::fd::AsRawFd::as_raw_fd(&fd),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if rc == 0 {
        Action::Killed
    } else {
        match nix::errno::Errno::last() {
            nix::errno::Errno::ESRCH => Action::NotKilled(NotKilled::Exited),
            e => Action::KillFailed(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_comm() {
        let line = "4242 (my (odd) app) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 200";
        assert_eq!(
            parse_stat(line),
            Some(("my (odd) app".to_string(), 1, 987654))
        );
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn reads_its_own_process() {
        let me = std::process::id() as i32;
        let proc = read(Path::new("/proc"), me).unwrap();
        assert_eq!(proc.pid, me);
        assert!(pids(Path::new("/proc")).contains(&me));
        assert!(exe_link(Path::new("/proc"), me).unwrap().starts_with('/'));
        assert!(!cmdline(Path::new("/proc"), me).is_empty());
        assert_eq!(uid(Path::new("/proc"), me), nix::unistd::geteuid().as_raw());
        assert!(ns_last_pid(Path::new("/proc")).is_some());
    }

    #[test]
    fn kills_only_the_process_that_was_judged() {
        use crate::rules::{Action, NotKilled};
        let proc_root = Path::new("/proc");
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let start = read(proc_root, pid).unwrap().start;
        // Same PID, another start time: a reused PID is left alone.
        assert_eq!(
            kill_exact(proc_root, pid, start + 1),
            Action::NotKilled(NotKilled::Exited)
        );
        assert_eq!(kill_exact(proc_root, pid, start), Action::Killed);
        assert!(!child.wait().unwrap().success());
    }
}
