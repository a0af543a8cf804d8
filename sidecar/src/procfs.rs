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

/// Owner of the process (read only when reporting it).
pub fn uid(proc_root: &Path, pid: i32) -> u32 {
    fs::metadata(proc_root.join(pid.to_string())).map_or(u32::MAX, |m| m.uid())
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
    }
}
