//! The ruleset plan: which paths get which Landlock grants, derived purely
//! from the program directories and listings of their ancestors.
//!
//! Landlock only allows: a handled right is denied unless a rule grants it
//! beneath a path, and grants along a path add up. "Write anywhere except
//! beneath the program directories" therefore becomes a write grant on every
//! sibling of every ancestor of a program directory, which is why the plan
//! needs those ancestors' listings.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::policy::TcpRequest;
use crate::syscalls::Refusal;

/// Outside the program directories yet never writable: beneath `/proc`, a
/// write reaches other processes of the same UID (the enforcer's
/// `oom_score_adj`, which would make it the kernel's first OOM victim).
/// Apps lose writes to their own `/proc/<pid>/` files too: Landlock rules
/// bind to inodes, and a process's `/proc` inodes are made afresh for each
/// lookup, so no rule can follow "self" reliably.
pub const NEVER_WRITABLE: [&str; 1] = ["/proc"];

/// What a directory entry is, as far as granting rights beneath it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    /// Regular files, sockets, fifos, devices: only file rights apply.
    File,
    /// Never granted: a rule follows the link, and a link at `/` into a
    /// program directory would otherwise make that directory writable. The
    /// target gets its own rule at its real path.
    Symlink,
}

/// One entry of an ancestor's listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: OsString,
    pub kind: EntryKind,
}

/// The rights one rule grants beneath (or on) a path.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Grant {
    /// Execute beneath a program directory.
    Execute,
    /// Every write right beneath a directory outside the program directories.
    WriteTree,
    /// Write and truncate an existing file that sits directly in an ancestor
    /// of a program directory (creating files there stays denied).
    WriteFile,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathRule {
    pub path: PathBuf,
    pub grant: Grant,
}

/// Everything the launcher will ask of Landlock.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RulesetPlan {
    pub program_dirs: Vec<PathBuf>,
    pub rules: Vec<PathRule>,
    pub tcp: TcpRequest,
    pub scope_signals: bool,
    pub scope_abstract_unix_sockets: bool,
    /// Ancestors that could not be listed: their other children stay
    /// read-only, which is safe but may break an app, so it is reported.
    pub unlisted_dirs: Vec<PathBuf>,
    /// What the launcher's seccomp filter refuses (see `syscalls`).
    pub refusals: Vec<Refusal>,
}

/// Program directories as the launcher found them on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResolvedDirs {
    /// Canonical paths (symlinks resolved) of the directories that exist.
    pub present: Vec<PathBuf>,
    /// Requested directories that do not exist in this image.
    pub missing: Vec<PathBuf>,
}

/// Keeps the outermost directories only: a rule beneath `/usr` already
/// covers `/usr/bin`, and nested entries would confuse the sibling walk.
pub fn outermost(dirs: &[PathBuf]) -> Vec<PathBuf> {
    let sorted: BTreeSet<&PathBuf> = dirs.iter().collect();
    let mut kept: Vec<PathBuf> = Vec::new();
    for dir in sorted {
        if !kept.iter().any(|k| dir.starts_with(k)) {
            kept.push(dir.clone());
        }
    }
    kept
}

/// The directories whose listings the plan needs: every proper ancestor of
/// every program directory, `/` included.
pub fn ancestors_to_list(program_dirs: &[PathBuf]) -> BTreeSet<PathBuf> {
    program_dirs
        .iter()
        .flat_map(|d| d.ancestors().skip(1).map(Path::to_path_buf))
        .collect()
}

/// Derives the plan. `listings` maps each ancestor from
/// [`ancestors_to_list`] to its entries; a missing listing is reported in
/// `unlisted_dirs` and its children get no write grant.
pub fn derive_plan(
    program_dirs: &[PathBuf],
    listings: &BTreeMap<PathBuf, Vec<Entry>>,
    tcp: TcpRequest,
    scope_abstract_unix_sockets: bool,
) -> RulesetPlan {
    let program_dirs = outermost(program_dirs);
    let ancestors = ancestors_to_list(&program_dirs);
    let mut rules: Vec<PathRule> = program_dirs
        .iter()
        .map(|d| PathRule {
            path: d.clone(),
            grant: Grant::Execute,
        })
        .collect();
    let mut unlisted_dirs = Vec::new();
    for ancestor in &ancestors {
        let Some(entries) = listings.get(ancestor) else {
            unlisted_dirs.push(ancestor.clone());
            continue;
        };
        let mut children: Vec<&Entry> = entries.iter().collect();
        children.sort_by(|a, b| a.name.cmp(&b.name));
        for entry in children {
            let path = ancestor.join(&entry.name);
            if program_dirs.contains(&path)
                || ancestors.contains(&path)
                || NEVER_WRITABLE.iter().any(|n| path == Path::new(n))
            {
                continue;
            }
            let grant = match entry.kind {
                EntryKind::Dir => Grant::WriteTree,
                EntryKind::File => Grant::WriteFile,
                EntryKind::Symlink => continue,
            };
            rules.push(PathRule { path, grant });
        }
    }
    RulesetPlan {
        program_dirs,
        rules,
        tcp,
        scope_signals: true,
        scope_abstract_unix_sockets,
        unlisted_dirs,
        refusals: Vec::new(),
    }
}

impl RulesetPlan {
    /// The grant that applies to `path` under this plan (the union along
    /// the path, as Landlock computes it), for tests and diagnostics.
    pub fn grants_at(&self, path: &Path) -> BTreeSet<Grant> {
        self.rules
            .iter()
            .filter(|r| path.starts_with(&r.path))
            .map(|r| r.grant)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> Entry {
        Entry {
            name: name.into(),
            kind: EntryKind::Dir,
        }
    }
    fn file(name: &str) -> Entry {
        Entry {
            name: name.into(),
            kind: EntryKind::File,
        }
    }
    fn link(name: &str) -> Entry {
        Entry {
            name: name.into(),
            kind: EntryKind::Symlink,
        }
    }
    fn paths(list: &[&str]) -> Vec<PathBuf> {
        list.iter().map(PathBuf::from).collect()
    }

    /// A merged-/usr Debian root, as most images have.
    fn debian_root() -> BTreeMap<PathBuf, Vec<Entry>> {
        BTreeMap::from([(
            PathBuf::from("/"),
            vec![
                link("bin"),
                dir("dev"),
                dir("etc"),
                dir("home"),
                link("lib"),
                link("lib64"),
                dir("proc"),
                link("sbin"),
                dir("tmp"),
                dir("usr"),
                dir("var"),
                dir("opt"),
                file(".dockerenv"),
            ],
        )])
    }

    fn plan_for(dirs: &[&str], listings: &BTreeMap<PathBuf, Vec<Entry>>) -> RulesetPlan {
        derive_plan(&paths(dirs), listings, TcpRequest::default(), true)
    }

    #[test]
    fn execution_is_granted_beneath_program_dirs_and_nowhere_else() {
        let plan = plan_for(&["/usr"], &debian_root());
        let exec = BTreeSet::from([Grant::Execute]);
        assert_eq!(plan.grants_at(Path::new("/usr/bin/ls")), exec);
        for writable in [
            "/tmp/x",
            "/var/tmp/x",
            "/dev/shm/x",
            "/home/app/x",
            "/opt/y",
        ] {
            assert!(
                !plan
                    .grants_at(Path::new(writable))
                    .contains(&Grant::Execute),
                "{writable}"
            );
        }
    }

    #[test]
    fn nothing_beneath_proc_is_writable_so_no_other_process_can_be_reached_through_it() {
        let mut listing = debian_root();
        let root = listing.get_mut(Path::new("/")).expect("root listing");
        assert!(root.iter().any(|e| e.name == "proc"));
        let plan = plan_for(&["/usr"], &listing);
        for path in ["/proc/1/oom_score_adj", "/proc/self/comm", "/proc"] {
            assert!(plan.grants_at(Path::new(path)).is_empty(), "{path}");
        }
        assert!(plan
            .grants_at(Path::new("/dev/null"))
            .contains(&Grant::WriteTree));
    }

    #[test]
    fn writes_are_granted_everywhere_except_beneath_program_dirs() {
        let plan = plan_for(&["/usr"], &debian_root());
        assert!(!plan
            .grants_at(Path::new("/usr/bin/ls"))
            .contains(&Grant::WriteTree));
        for writable in [
            "/tmp/x",
            "/var/tmp/x",
            "/dev/shm/x",
            "/dev/null",
            "/etc/app.conf",
        ] {
            assert_eq!(
                plan.grants_at(Path::new(writable)),
                BTreeSet::from([Grant::WriteTree]),
                "{writable}"
            );
        }
        assert_eq!(
            plan.grants_at(Path::new("/.dockerenv")),
            BTreeSet::from([Grant::WriteFile])
        );
    }

    #[test]
    fn symlinks_are_never_granted_so_a_link_into_usr_cannot_open_it_for_writing() {
        let plan = plan_for(&["/usr"], &debian_root());
        for linked in ["/bin", "/lib", "/lib64", "/sbin"] {
            assert!(
                plan.rules.iter().all(|r| r.path != Path::new(linked)),
                "{linked}"
            );
        }
    }

    #[test]
    fn a_nested_program_dir_leaves_its_siblings_writable_and_its_ancestors_unwritable() {
        let mut listings = debian_root();
        listings.insert(PathBuf::from("/opt"), vec![dir("app"), dir("data")]);
        listings.insert(
            PathBuf::from("/opt/app"),
            vec![dir("bin"), dir("logs"), file("app.conf")],
        );
        let plan = plan_for(&["/usr", "/opt/app/bin"], &listings);
        assert!(plan
            .grants_at(Path::new("/opt/app/bin/server"))
            .contains(&Grant::Execute));
        assert!(plan
            .grants_at(Path::new("/opt/app/logs/today"))
            .contains(&Grant::WriteTree));
        assert!(plan
            .grants_at(Path::new("/opt/data/x"))
            .contains(&Grant::WriteTree));
        assert_eq!(
            plan.grants_at(Path::new("/opt/app/app.conf")),
            BTreeSet::from([Grant::WriteFile])
        );
        // New entries directly in /opt/app would land in an ancestor: denied.
        assert!(plan.grants_at(Path::new("/opt/app/new-file")).is_empty());
        assert!(plan.unlisted_dirs.is_empty());
    }

    #[test]
    fn nested_program_dirs_collapse_into_the_outermost() {
        assert_eq!(
            outermost(&paths(&["/usr/local/bin", "/usr", "/opt/a", "/opt/ab"])),
            paths(&["/opt/a", "/opt/ab", "/usr"])
        );
        let plan = plan_for(&["/usr/local/bin", "/usr"], &debian_root());
        assert_eq!(plan.program_dirs, paths(&["/usr"]));
    }

    #[test]
    fn the_listings_needed_are_the_ancestors_of_every_program_dir() {
        assert_eq!(
            ancestors_to_list(&paths(&["/usr", "/opt/app/bin"])),
            BTreeSet::from_iter(paths(&["/", "/opt", "/opt/app"]))
        );
    }

    #[test]
    fn an_unlisted_ancestor_is_reported_and_its_children_stay_read_only() {
        let plan = plan_for(&["/usr", "/opt/app/bin"], &debian_root());
        assert_eq!(plan.unlisted_dirs, paths(&["/opt", "/opt/app"]));
        assert!(plan.grants_at(Path::new("/opt/data/x")).is_empty());
    }

    #[test]
    fn signals_are_always_scoped_and_abstract_sockets_follow_the_policy() {
        let plan = derive_plan(
            &paths(&["/usr"]),
            &debian_root(),
            TcpRequest::default(),
            false,
        );
        assert!(plan.scope_signals);
        assert!(!plan.scope_abstract_unix_sockets);
    }
}
