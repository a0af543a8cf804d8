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
    let stat = Stat::parse(text)?;
    Some((stat.comm, stat.ppid, stat.start))
}

/// The fields of `/proc/PID/stat` the enforcer uses.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stat {
    comm: String,
    ppid: i32,
    start: u64,
    /// What the parent is sent when the task ends: -1 only for a thread
    /// that is not its group's leader (a process always has one, though
    /// it may be 0). Absent from stat lines of very old kernels.
    exit_signal: Option<i32>,
    /// The kernel's PF_* flags of the task.
    flags: u64,
}

/// PF_FORKNOEXEC: forked and not exec'd since (include/linux/sched.h).
const PF_FORKNOEXEC: u64 = 0x0000_0040;

impl Stat {
    fn parse(text: &str) -> Option<Self> {
        let open = text.find('(')?;
        let close = text.rfind(')')?;
        let comm = text.get(open + 1..close)?.to_string();
        // After comm: state(0) ppid(1) ... flags (field 9 overall) is 6
        // here, starttime (22) 19, exit_signal (38) 35.
        let mut fields = text.get(close + 2..)?.split_ascii_whitespace();
        let ppid = fields.nth(1)?.parse().ok()?;
        let flags = fields.nth(4)?.parse().ok()?;
        let start = fields.nth(12)?.parse().ok()?;
        let exit_signal = fields.nth(15).and_then(|f| f.parse().ok());
        Some(Self {
            comm,
            ppid,
            start,
            exit_signal,
            flags,
        })
    }

    fn is_thread(&self) -> bool {
        self.exit_signal == Some(-1)
    }

    fn proc(self, pid: i32) -> Proc {
        Proc {
            pid,
            ppid: self.ppid,
            comm: self.comm,
            start: self.start,
        }
    }
}

/// `/proc/PID/NAME` (or `/proc/PID` for an empty name) in one allocation:
/// the paths the enforcer builds for every process it looks at.
fn pid_path(proc_root: &Path, pid: i32, name: &str) -> PathBuf {
    use std::fmt::Write;
    let root = proc_root.as_os_str();
    let mut path = std::ffi::OsString::with_capacity(root.len() + name.len() + 13);
    path.push(root);
    let _ = write!(path, "/{pid}");
    if !name.is_empty() {
        let _ = write!(path, "/{name}");
    }
    PathBuf::from(path)
}

/// Reads a small /proc file with one read: procfs hands a record out
/// whole, so the size lookup and the second read `fs::read` makes (two
/// of its five system calls) are saved on every process looked at.
fn read_small<'a>(path: &Path, buf: &'a mut [u8]) -> std::io::Result<&'a str> {
    use std::io::Read;
    let len = fs::File::open(path)?.read(buf)?;
    if len == buf.len() {
        return Err(std::io::Error::other("record larger than expected"));
    }
    std::str::from_utf8(&buf[..len]).map_err(std::io::Error::other)
}

/// Reads a whole /proc file into a buffer sized for it up front: procfs
/// reports no size, so `fs::read` would look it up, then read in doubling
/// steps from 32 bytes (ten reads for a process's maps, each a system call).
fn read_all(path: &Path, expected: usize) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut file = fs::File::open(path)?;
    let mut buf = vec![0u8; expected.max(64)];
    let mut len = 0;
    loop {
        if len == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        match file.read(&mut buf[len..])? {
            0 => break,
            n => len += n,
        }
    }
    buf.truncate(len);
    Ok(buf)
}

/// A stat line is about 300 bytes; a 64-byte name and every counter at
/// its widest stay under this.
const STAT_MAX: usize = 2048;

fn stat(proc_root: &Path, pid: i32) -> std::io::Result<Option<Stat>> {
    let mut buf = [0u8; STAT_MAX];
    Ok(Stat::parse(read_small(
        &pid_path(proc_root, pid, "stat"),
        &mut buf,
    )?))
}

/// Everything about a process that is cheap to read.
pub fn read(proc_root: &Path, pid: i32) -> Option<Proc> {
    Some(stat(proc_root, pid).ok()??.proc(pid))
}

/// What a PID handed out since the last look is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    Process(Proc),
    /// A process that has not exec'd since its fork: still a copy of its
    /// parent's program, and maybe about to exec.
    Fork(Proc),
    /// A thread of some process: /proc/TID answers, yet it is no process.
    Thread,
    /// Ended (or not visible to the enforcer).
    Gone,
}

/// Looks at `pid` with a single read of its stat: a process, a fork not
/// yet exec'd, a thread or gone. Threads are told apart without reading
/// /proc/PID/status.
pub fn probe(proc_root: &Path, pid: i32) -> Probe {
    match stat(proc_root, pid) {
        Ok(Some(stat)) if stat.is_thread() => Probe::Thread,
        Ok(Some(stat)) if stat.flags & PF_FORKNOEXEC != 0 => Probe::Fork(stat.proc(pid)),
        Ok(Some(stat)) => Probe::Process(stat.proc(pid)),
        Ok(None) | Err(_) => Probe::Gone,
    }
}

/// The process's name (as in its stat), or None once it has gone.
pub fn comm(proc_root: &Path, pid: i32) -> Option<String> {
    let mut buf = [0u8; 128];
    let text = read_small(&pid_path(proc_root, pid, "comm"), &mut buf).ok()?;
    Some(text.strip_suffix('\n').unwrap_or(text).to_string())
}

/// Effective UID from /proc/PID/status. Not the owner of /proc/PID: that
/// turns to root when a process makes itself non-dumpable.
pub fn uid(proc_root: &Path, pid: i32) -> u32 {
    read_all(&pid_path(proc_root, pid, "status"), 2048)
        .ok()
        .and_then(|s| parse_status_euid(&String::from_utf8_lossy(&s)))
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
    let status = read_all(&pid_path(proc_root, pid, "status"), 2048).ok()?;
    let status = String::from_utf8_lossy(&status);
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
    // Read on every wake-up: one read, no allocation for the text.
    let mut buf = [0u8; 32];
    read_small(&proc_root.join("sys/kernel/ns_last_pid"), &mut buf)
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
    fs::symlink_metadata(pid_path(proc_root, pid, "")).is_ok()
}

pub fn cmdline(proc_root: &Path, pid: i32) -> Vec<String> {
    nul_separated(&pid_path(proc_root, pid, "cmdline"), 1024)
}

/// The non-empty NUL-separated strings of a /proc file (`cmdline`,
/// `environ`); empty when it cannot be read.
fn nul_separated(path: &Path, capacity: usize) -> Vec<String> {
    read_all(path, capacity)
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Whether the process's arguments are laid out: not yet, mid-exec,
/// between the switch to the new program and the new stack's setup.
pub fn has_arguments(proc_root: &Path, pid: i32) -> bool {
    use std::io::Read;
    let mut one = [0u8; 1];
    fs::File::open(pid_path(proc_root, pid, "cmdline"))
        .and_then(|mut f| f.read(&mut one))
        .is_ok_and(|n| n > 0)
}

/// `KEY=value` entries of the process's environment (same UID only).
pub fn environ(proc_root: &Path, pid: i32) -> Vec<String> {
    nul_separated(&pid_path(proc_root, pid, "environ"), 4096)
}

/// Paths of the executable mappings in /proc/PID/maps (same UID only),
/// as the kernel names them (relative to the reader's root).
pub fn executable_mappings(proc_root: &Path, pid: i32) -> Vec<String> {
    // Lossy: one path that is not UTF-8 must not hide every other mapping.
    let Ok(raw) = read_all(&pid_path(proc_root, pid, "maps"), 16 * 1024) else {
        return Vec::new();
    };
    let text = String::from_utf8_lossy(&raw);
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
    exe_link_path(proc_root, pid).map(|p| p.to_string_lossy().into_owned())
}

/// [`exe_link`] as the kernel wrote it, for comparing without a copy.
pub fn exe_link_path(proc_root: &Path, pid: i32) -> std::io::Result<PathBuf> {
    fs::read_link(pid_path(proc_root, pid, "exe"))
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

/// The ID of the container `pid` runs in, from its cgroup (see
/// [`parse_container_id`]); empty when the cgroup names none.
pub fn container_id(proc_root: &Path, pid: i32) -> String {
    // One line per hierarchy: a dozen under cgroup v1, one under v2.
    read_all(&pid_path(proc_root, pid, "cgroup"), 1024)
        .ok()
        .and_then(|bytes| parse_container_id(&String::from_utf8_lossy(&bytes)).map(String::from))
        .unwrap_or_default()
}

/// The container ID in a `/proc/PID/cgroup` text: the last component of
/// a cgroup path, once the runtimes' decorations are off (`cri-containerd-`,
/// `docker-`, `crio-` and `.scope` under the systemd driver; the bare ID
/// under cgroupfs), when it is 64 hex digits. What the pod's status calls
/// `containerID` (`containerd://<id>`), so the service can name the
/// container. The first line that names one wins: every hierarchy holds
/// the process in the same container. Seen from inside another container's
/// cgroup namespace, the path starts with `/..`; its last component is
/// still the container's.
pub fn parse_container_id(cgroup: &str) -> Option<&str> {
    cgroup.lines().find_map(|line| {
        let path = line.splitn(3, ':').nth(2)?;
        let last = path.rsplit('/').next()?;
        let last = last.strip_suffix(".scope").unwrap_or(last);
        let id = ["cri-containerd-", "docker-", "crio-"]
            .iter()
            .find_map(|prefix| last.strip_prefix(prefix))
            .unwrap_or(last);
        is_container_id(id).then_some(id)
    })
}

fn is_container_id(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|b| b.is_ascii_hexdigit())
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

    const ID: &str = "3f9a1c2b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";

    #[test]
    fn a_container_id_is_read_from_every_runtimes_cgroup_path() {
        let systemd = format!(
            "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{ID}.scope\n"
        );
        assert_eq!(parse_container_id(&systemd), Some(ID));
        let cgroupfs_v1 = format!(
            "12:pids:/kubepods/besteffort/pod5678/{ID}\n11:memory:/kubepods/besteffort/pod5678/{ID}\n"
        );
        assert_eq!(parse_container_id(&cgroupfs_v1), Some(ID));
        let docker = format!("0::/system.slice/docker-{ID}.scope\n");
        assert_eq!(parse_container_id(&docker), Some(ID));
        let crio = format!("0::/kubepods.slice/crio-{ID}.scope\n");
        assert_eq!(parse_container_id(&crio), Some(ID));
        let other_namespace = format!("0::/../../cri-containerd-{ID}.scope\n");
        assert_eq!(parse_container_id(&other_namespace), Some(ID));
    }

    #[test]
    fn a_cgroup_that_names_no_container_gives_none() {
        assert_eq!(parse_container_id("0::/\n"), None);
        assert_eq!(
            parse_container_id("0::/user.slice/user-1000.slice/session-3.scope\n"),
            None
        );
        assert_eq!(
            parse_container_id("12:pids:/kubepods/besteffort/pod5678/abc\n"),
            None,
            "too short for an ID"
        );
        assert_eq!(parse_container_id(""), None);
        assert_eq!(parse_container_id("garbage without colons"), None);
    }

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
    fn parses_the_exit_signal_that_tells_threads_from_processes() {
        // The 52 fields after the name in today's kernels.
        let line = |exit_signal: &str| {
            let mut fields = vec!["0"; 52];
            (fields[0], fields[1], fields[6], fields[19], fields[35]) =
                ("S", "1", "4194368", "555", exit_signal);
            format!("7 (w w) {}", fields.join(" "))
        };
        let process = Stat::parse(&line("17")).unwrap();
        assert_eq!((process.start, process.exit_signal), (555, Some(17)));
        assert_eq!(process.flags & PF_FORKNOEXEC, PF_FORKNOEXEC);
        assert!(!process.is_thread());
        assert!(Stat::parse(&line("-1")).unwrap().is_thread());
        // A process whose parent asked for no signal is still a process.
        assert!(!Stat::parse(&line("0")).unwrap().is_thread());
    }

    #[test]
    fn probes_tell_a_process_from_its_threads_and_from_a_gone_pid() {
        let proc_root = Path::new("/proc");
        let me = std::process::id() as i32;
        assert!(matches!(probe(proc_root, me), Probe::Process(p) if p.pid == me));
        let (tx, rx) = std::sync::mpsc::channel();
        let (stop, wait) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            tx.send(nix::unistd::gettid().as_raw()).unwrap();
            let _ = wait.recv();
        });
        let tid = rx.recv().unwrap();
        assert_eq!(probe(proc_root, tid), Probe::Thread);
        stop.send(()).unwrap();
        thread.join().unwrap();
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        child.wait().unwrap();
        assert_eq!(probe(proc_root, pid), Probe::Gone);
        // A fork that has not exec'd is told apart from one that has.
        let mut execd = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let pid = execd.id() as i32;
        // (until its exec is done, it is still the fork)
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while matches!(probe(proc_root, pid), Probe::Fork(_))
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        assert!(matches!(probe(proc_root, pid), Probe::Process(p) if p.comm == "sleep"));
        execd.kill().unwrap();
        execd.wait().unwrap();
    }

    #[test]
    fn builds_proc_paths() {
        assert_eq!(
            pid_path(Path::new("/proc"), 42, "stat"),
            Path::new("/proc/42/stat")
        );
        assert_eq!(
            pid_path(Path::new("/host/proc"), 7, ""),
            Path::new("/host/proc/7")
        );
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
        assert_eq!(comm(Path::new("/proc"), me), Some(proc.comm.clone()));
        assert!(!executable_mappings(Path::new("/proc"), me).is_empty());
        assert!(!environ(Path::new("/proc"), me).is_empty());
        assert!(ids(Path::new("/proc"), me).is_some());
        assert!(has_arguments(Path::new("/proc"), me));
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
