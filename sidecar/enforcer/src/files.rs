//! inotify through /proc/PID/root (needs the container's UID), for two
//! things: new executable files in watched directories (/tmp, /dev/shm...),
//! and opens in the directories programs and the dynamic loader live in,
//! which every exec causes: the enforcer wakes and scans when a process
//! starts instead of waiting for its next pass.

use std::collections::{HashMap, HashSet, VecDeque};
use std::os::fd::AsFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

use crate::drift::resolve_in_root;

/// Files remembered as reported; older ones are forgotten first (a
/// forgotten file that changes again is reported again, which is fine).
const REPORTED_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Report executables that appear here (and wake on their exec).
    NewFiles,
    /// Programs and libraries: an open here is (likely) an exec.
    Programs,
}

struct Watch {
    host: PathBuf,
    dir: String,
    purpose: Purpose,
}

pub struct FileWatcher {
    inotify: Inotify,
    watches: HashMap<WatchDescriptor, Watch>,
    watched: HashSet<PathBuf>,
    reported: BoundedSet,
    /// New files read while the enforcer's own opens were being dropped:
    /// handed out by the next `poll`.
    held: Activity,
}

/// A file that became executable in a watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewExecutable {
    /// Path inside the container.
    pub path: String,
    pub size: u64,
    pub ino: u64,
    pub ctime: i64,
}

/// What happened since the last poll.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Activity {
    /// Opens of files in program directories, or of executables in
    /// watched ones: a process (probably) started.
    pub exec_opens: u32,
    pub new_files: Vec<NewExecutable>,
}

/// What one read of the inotify queue found.
#[derive(Default)]
struct Queued {
    exec_opens: u32,
    overflows: u32,
    new_files: Vec<NewExecutable>,
}

impl FileWatcher {
    pub fn new() -> nix::Result<Self> {
        Ok(Self {
            inotify: Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?,
            watches: HashMap::new(),
            watched: HashSet::new(),
            reported: BoundedSet::new(REPORTED_MAX),
            held: Activity::default(),
        })
    }

    /// Watches `dir` (absolute, inside the container) under `root`, its
    /// links resolved inside the container. Re-adding one is a no-op.
    pub fn watch(&mut self, root: &Path, dir: &str, purpose: Purpose) -> nix::Result<()> {
        let resolved = resolve_in_root(root, dir);
        let host = root.join(resolved.trim_start_matches('/'));
        if !self.watched.insert(host.clone()) {
            return Ok(());
        }
        let mask = match purpose {
            Purpose::NewFiles => {
                AddWatchFlags::IN_CREATE
                    | AddWatchFlags::IN_CLOSE_WRITE
                    | AddWatchFlags::IN_MOVED_TO
                    | AddWatchFlags::IN_ATTRIB
                    | AddWatchFlags::IN_OPEN
            }
            Purpose::Programs => AddWatchFlags::IN_OPEN | AddWatchFlags::IN_ONLYDIR,
        };
        let wd = self.inotify.add_watch(&host, mask)?;
        self.watches.insert(
            wd,
            Watch {
                host,
                dir: resolved,
                purpose,
            },
        );
        Ok(())
    }

    /// Waits up to `timeout` for something to read; true when there is.
    pub fn wait(&self, timeout: Duration) -> bool {
        let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(self.inotify.as_fd(), PollFlags::POLLIN)];
        matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
    }

    /// Drops the opens queued so far: the enforcer's own reads while
    /// hashing would otherwise look like execs. New files queued with them
    /// are kept for the next `poll`; dropping them would let a file written
    /// while the enforcer hashes go unreported.
    pub fn forget_opens(&mut self) {
        let read = self.read();
        self.held.new_files.extend(read.new_files);
        // Lost events may have been new files: scan as if a process started.
        self.held.exec_opens += read.overflows;
    }

    pub fn poll(&mut self) -> Activity {
        let mut out = std::mem::take(&mut self.held);
        let read = self.read();
        out.exec_opens += read.exec_opens + read.overflows;
        out.new_files.extend(read.new_files);
        out
    }

    fn read(&mut self) -> Queued {
        let mut out = Queued::default();
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for event in events {
                if event.mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
                    // Lost events: assume the worst, scan now.
                    out.overflows += 1;
                    continue;
                }
                let (Some(name), Some(watch)) = (event.name, self.watches.get(&event.wd)) else {
                    continue;
                };
                if event.mask.contains(AddWatchFlags::IN_ISDIR) {
                    continue;
                }
                let opened = event.mask.contains(AddWatchFlags::IN_OPEN);
                if opened && watch.purpose == Purpose::Programs {
                    out.exec_opens += 1;
                    continue;
                }
                let host = watch.host.join(&name);
                let Ok(meta) = std::fs::metadata(&host) else {
                    continue;
                };
                if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
                    continue;
                }
                if opened {
                    out.exec_opens += 1;
                    continue;
                }
                let key = (host, meta.ino(), meta.ctime());
                if self.reported.insert(key_hash(&key)) {
                    out.new_files.push(NewExecutable {
                        path: format!(
                            "{}/{}",
                            watch.dir.trim_end_matches('/'),
                            name.to_string_lossy()
                        ),
                        size: meta.size(),
                        ino: meta.ino(),
                        ctime: meta.ctime(),
                    });
                }
            }
        }
        out
    }
}

fn key_hash(key: &(PathBuf, u64, i64)) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

/// A set that forgets its oldest members beyond `max`: dedup memory that
/// cannot grow with what an attacker writes.
pub struct BoundedSet {
    max: usize,
    members: HashSet<u64>,
    order: VecDeque<u64>,
}

impl BoundedSet {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            members: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// True when `key` is new.
    pub fn insert(&mut self, key: u64) -> bool {
        if !self.members.insert(key) {
            return false;
        }
        self.order.push_back(key);
        while self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.members.remove(&old);
            }
        }
        true
    }

    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_files_that_become_executable() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("tmp")).unwrap();
        let mut watcher = FileWatcher::new().unwrap();
        watcher
            .watch(root.path(), "/tmp", Purpose::NewFiles)
            .unwrap();
        watcher
            .watch(root.path(), "/tmp", Purpose::NewFiles)
            .unwrap();
        std::fs::write(root.path().join("tmp/data"), b"x").unwrap();
        assert!(watcher.poll().new_files.is_empty(), "not executable");
        let tool = root.path().join("tmp/tool");
        std::fs::write(&tool, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let found = watcher.poll().new_files;
        assert_eq!(found.len(), 1);
        assert_eq!((found[0].path.as_str(), found[0].size), ("/tmp/tool", 10));
        assert!(watcher.poll().new_files.is_empty(), "reported once");
    }

    #[test]
    fn an_exec_in_a_program_directory_wakes_the_watcher() {
        let root = tempfile::tempdir().unwrap();
        let bin = root.path().join("usr/bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::fs::copy("/bin/true", bin.join("true")).unwrap();
        std::os::unix::fs::symlink("usr/bin", root.path().join("bin")).unwrap();
        let mut watcher = FileWatcher::new().unwrap();
        watcher
            .watch(root.path(), "/bin", Purpose::Programs)
            .unwrap();
        assert!(!watcher.wait(Duration::from_millis(1)));
        std::process::Command::new(root.path().join("bin/true"))
            .status()
            .unwrap();
        assert!(watcher.wait(Duration::from_millis(100)));
        assert!(watcher.poll().exec_opens >= 1);
        // Listing the directory is no exec.
        let _ = std::fs::read_dir(&bin).unwrap().count();
        assert_eq!(watcher.poll().exec_opens, 0);
    }

    #[test]
    fn dropping_own_opens_keeps_new_files() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("tmp")).unwrap();
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        std::fs::copy("/bin/true", root.path().join("bin/true")).unwrap();
        let mut watcher = FileWatcher::new().unwrap();
        watcher
            .watch(root.path(), "/tmp", Purpose::NewFiles)
            .unwrap();
        watcher
            .watch(root.path(), "/bin", Purpose::Programs)
            .unwrap();
        // A file dropped while the enforcer reads a program to hash it.
        let tool = root.path().join("tmp/tool");
        std::fs::write(&tool, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let _ = std::fs::read(root.path().join("bin/true")).unwrap();
        watcher.forget_opens();
        let activity = watcher.poll();
        assert_eq!(activity.exec_opens, 0, "the enforcer's own read is no exec");
        assert_eq!(activity.new_files.len(), 1);
        assert_eq!(activity.new_files[0].path, "/tmp/tool");
        assert!(watcher.poll().new_files.is_empty(), "handed out once");
    }

    #[test]
    fn dedup_memory_is_bounded() {
        let mut set = BoundedSet::new(100);
        for i in 0..10_000 {
            assert!(set.insert(i));
        }
        assert_eq!(set.len(), 100);
        assert!(!set.insert(9_999), "recent keys are remembered");
        assert!(set.insert(0), "old ones forgotten");
    }
}
