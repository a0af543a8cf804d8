//! What /proc still tells about processes whose descriptors may be closed
//! to the enforcer. Who holds a socket, from /proc/PID/fd: unlike
//! `procfs::socket_inodes`, a process whose descriptors are closed is told
//! apart from one that holds no socket, since it is a suspect. And which
//! cgroup a process is in (readable for every process), which tells a new
//! container's first process from one started in a container already there.

use std::fs;
use std::io;
use std::path::Path;

use crate::procfs;

/// The holder of a socket, or the processes that could hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Holder {
    Found(i32),
    /// No readable process holds it; these processes' descriptors could
    /// not be read.
    Unreadable(Vec<i32>),
}

/// Looks at every live process of the pod except `skip`: a process that
/// started after the last pass may hold it.
pub fn find(proc_root: &Path, inode: u64, skip: &[i32]) -> Holder {
    let mut unreadable = Vec::new();
    for pid in procfs::pids(proc_root) {
        if skip.contains(&pid) {
            continue;
        }
        match socket_inodes(proc_root, pid) {
            Ok(inodes) if inodes.contains(&inode) => return Holder::Found(pid),
            Ok(_) => {}
            // A zombie holds no descriptors, yet its fd directory turns
            // root's once its memory is gone.
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied && !exited(proc_root, pid) => {
                unreadable.push(pid)
            }
            // Gone since the listing.
            Err(_) => {}
        }
    }
    Holder::Unreadable(unreadable)
}

/// Socket inodes the process holds; an error when its descriptors cannot
/// be listed (PermissionDenied: another UID, or non-dumpable).
pub fn socket_inodes(proc_root: &Path, pid: i32) -> io::Result<Vec<u64>> {
    let fds = fs::read_dir(proc_root.join(pid.to_string()).join("fd"))?;
    Ok(fds
        .flatten()
        .filter_map(|fd| {
            let target = fs::read_link(fd.path()).ok()?;
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect())
}

/// Whether the process has exited and waits to be reaped (state Z or X in
/// /proc/PID/stat), or is gone.
fn exited(proc_root: &Path, pid: i32) -> bool {
    fs::read_to_string(proc_root.join(pid.to_string()).join("stat"))
        .map_or(true, |stat| exited_state(&stat))
}

/// The state field follows the command name, which may hold `)`.
fn exited_state(stat: &str) -> bool {
    stat.rfind(')')
        .and_then(|i| stat.get(i + 1..))
        .and_then(|rest| rest.split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X")
}

/// Whether the process's descriptors are still closed to the enforcer:
/// checked again right before it is stopped for what it may hold.
pub fn still_unreadable(proc_root: &Path, pid: i32) -> bool {
    matches!(socket_inodes(proc_root, pid), Err(e) if e.kind() == io::ErrorKind::PermissionDenied)
        && !exited(proc_root, pid)
}

/// The process's cgroup memberships, as /proc/PID/cgroup lists them.
pub fn cgroup(proc_root: &Path, pid: i32) -> Option<String> {
    fs::read_to_string(proc_root.join(pid.to_string()).join("cgroup")).ok()
}

/// Whether no live process but `pid` (and `skip`) is in `pid`'s cgroup.
pub fn alone_in_cgroup(proc_root: &Path, pid: i32, skip: &[i32]) -> bool {
    let Some(own) = cgroup(proc_root, pid) else {
        return false;
    };
    !procfs::pids(proc_root)
        .into_iter()
        .filter(|p| *p != pid && !skip.contains(p))
        .any(|p| cgroup(proc_root, p).as_ref() == Some(&own))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_holder_of_its_own_socket() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let me = std::process::id() as i32;
        let proc_root = Path::new("/proc");
        let mine = socket_inodes(proc_root, me).unwrap();
        assert!(!mine.is_empty());
        let inode = mine[0];
        assert_eq!(find(proc_root, inode, &[]), Holder::Found(me));
        assert!(!still_unreadable(proc_root, me));
        match find(proc_root, inode, &[me]) {
            Holder::Unreadable(pids) => assert!(!pids.contains(&me)),
            Holder::Found(pid) => assert_ne!(pid, me, "skipped"),
        }
        drop(listener);
    }

    #[test]
    fn a_zombie_is_no_suspect() {
        assert!(exited_state("7 (a) b) Z 1 7 7 0"));
        assert!(!exited_state("7 (sleep) S 1 7 7 0"));
        assert!(!exited_state("garbage"));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id() as i32;
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(exited(Path::new("/proc"), pid), "not reaped yet");
        child.wait().unwrap();
        assert!(exited(Path::new("/proc"), pid), "gone");
    }

    #[test]
    fn a_process_shares_its_cgroup_with_its_children() {
        let proc_root = Path::new("/proc");
        let me = std::process::id() as i32;
        assert!(cgroup(proc_root, me).is_some());
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let alone = alone_in_cgroup(proc_root, me, &[]);
        let _ = child.kill();
        let _ = child.wait();
        assert!(!alone);
        assert!(
            !alone_in_cgroup(proc_root, -1, &[]),
            "gone: not a new container"
        );
    }
}
