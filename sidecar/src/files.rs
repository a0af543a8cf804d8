//! New executable files in watched directories (/tmp, /dev/shm...) of each
//! container, by inotify through /proc/PID/root (needs the container's UID).

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, WatchDescriptor};

pub struct FileWatcher {
    inotify: Inotify,
    /// Watch -> (directory as seen from here, directory inside the container).
    watches: HashMap<WatchDescriptor, (PathBuf, String)>,
    watched: HashSet<PathBuf>,
    reported: HashSet<(PathBuf, u64)>,
}

/// A file that became executable in a watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewExecutable {
    /// Path inside the container.
    pub path: String,
    pub size: u64,
}

impl FileWatcher {
    pub fn new() -> nix::Result<Self> {
        Ok(Self {
            inotify: Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC)?,
            watches: HashMap::new(),
            watched: HashSet::new(),
            reported: HashSet::new(),
        })
    }

    /// Watches `dir` (absolute, inside the container) under `root`.
    /// Re-adding a watched directory is a no-op.
    pub fn watch(&mut self, root: &Path, dir: &str) -> nix::Result<()> {
        let host = root.join(dir.trim_start_matches('/'));
        let resolved = std::fs::canonicalize(&host).unwrap_or(host.clone());
        if !self.watched.insert(resolved) {
            return Ok(());
        }
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_ATTRIB;
        let wd = self.inotify.add_watch(&host, mask)?;
        self.watches.insert(wd, (host, dir.to_string()));
        Ok(())
    }

    /// Executable files created or made executable since the last call.
    pub fn poll(&mut self) -> Vec<NewExecutable> {
        let mut out = Vec::new();
        while let Ok(events) = self.inotify.read_events() {
            if events.is_empty() {
                break;
            }
            for event in events {
                let (Some(name), Some((host_dir, dir))) = (event.name, self.watches.get(&event.wd))
                else {
                    continue;
                };
                let host = host_dir.join(&name);
                let Ok(meta) = std::fs::metadata(&host) else {
                    continue;
                };
                if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
                    continue;
                }
                if self.reported.insert((host.clone(), meta.ino())) {
                    out.push(NewExecutable {
                        path: format!("{}/{}", dir.trim_end_matches('/'), name.to_string_lossy()),
                        size: meta.size(),
                    });
                }
            }
        }
        out
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
        watcher.watch(root.path(), "/tmp").unwrap();
        watcher.watch(root.path(), "/tmp").unwrap();
        std::fs::write(root.path().join("tmp/data"), b"x").unwrap();
        assert!(watcher.poll().is_empty(), "not executable");
        let tool = root.path().join("tmp/tool");
        std::fs::write(&tool, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, std::fs::Permissions::from_mode(0o755)).unwrap();
        let found = watcher.poll();
        assert_eq!(
            found,
            [NewExecutable {
                path: "/tmp/tool".into(),
                size: 10
            }]
        );
        assert!(watcher.poll().is_empty(), "reported once");
    }
}
