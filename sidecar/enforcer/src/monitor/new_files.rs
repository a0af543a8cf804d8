//! The files side: inotify on program and watched directories (execs
//! wake a pass; new executable files are reported), and each container's
//! image baseline.

use super::*;

/// Watched directories and what the monitor knows of each container's image.
pub(super) struct Files {
    /// None when inotify is unavailable: passes then run on the clock.
    pub(super) watcher: Option<FileWatcher>,
    /// By container root (device, inode).
    pub(super) containers: HashMap<(u64, u64), Container>,
}

impl Files {
    pub(super) fn new(watcher: Option<FileWatcher>) -> Self {
        Self {
            watcher,
            containers: HashMap::new(),
        }
    }
}

impl Monitor {
    pub(super) fn watch_dirs(&mut self, root: &Path, bundle: &RuntimeBundle) {
        let Some(files) = self.files.watcher.as_mut() else {
            return;
        };
        for dir in watched_paths(bundle) {
            if let Err(e) = files.watch(root, &dir, Purpose::NewFiles) {
                tracing::warn!(dir, error = %e, "cannot watch directory for new executables");
            }
        }
        for dir in EXEC_DIRS {
            // Missing directories are normal (no /lib64 on arm64...).
            let _ = files.watch(root, dir, Purpose::Programs);
        }
    }

    pub(super) fn check_files(&mut self, bundle: &RuntimeBundle, found: Vec<NewExecutable>) {
        let Some(policy) = strictest(bundle.policies.iter().filter(|p| p.rules.drift)) else {
            return;
        };
        let by_path: HashMap<String, NewExecutable> =
            found.iter().map(|f| (f.path.clone(), f.clone())).collect();
        let (single, more) = rules::aggregate_files(found.into_iter().map(|f| f.path).collect());
        for path in single {
            let Some(file) = by_path.get(&path) else {
                continue;
            };
            let v = Violation {
                rule: Rule::NewExecutableFile,
                policy,
                message: format!(
                    "executable file {} ({} bytes) appeared",
                    file.path, file.size
                ),
            };
            let id = rules::stable_id(
                "f",
                &[
                    v.rule.as_str(),
                    &policy.name,
                    &file.path,
                    &file.ino.to_string(),
                    &file.ctime.to_string(),
                ],
            );
            self.emit(&v, id, None, None);
        }
        for (dir, n, example) in more {
            let v = Violation {
                rule: Rule::NewExecutableFile,
                policy,
                message: format!("{n} more executable files appeared in {dir} (e.g. {example})"),
            };
            self.emit(&v, self.reporter.next_id(), None, None);
        }
    }
}
