//! The I/O edge: reads the filesystem the plan needs and hands the plan to
//! the kernel through the `landlock` crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use landlock::{
    AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, LandlockStatus, NetPort, PathBeneath,
    PathFd, RestrictionStatus, Ruleset, RulesetAttr, RulesetCreatedAttr, RulesetError,
    RulesetStatus, Scope, ABI,
};

use crate::coverage::{Applied, LandlockSupport, RulesetState};
use crate::plan::{Entry, EntryKind, Grant, ResolvedDirs, RulesetPlan};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot open {path} for a Landlock rule: {source}")]
    Path {
        path: PathBuf,
        source: landlock::PathFdError,
    },
    #[error("Landlock refused the ruleset: {0}")]
    Ruleset(#[from] RulesetError),
}

/// Canonicalises the requested program directories: Landlock rules bind to
/// inodes, so `/bin -> usr/bin` must be compared as `/usr/bin`.
pub fn resolve_program_dirs(requested: &[PathBuf]) -> ResolvedDirs {
    let mut resolved = ResolvedDirs::default();
    for dir in requested {
        match dir.canonicalize() {
            Ok(real) if real.is_dir() => {
                if !resolved.present.contains(&real) {
                    resolved.present.push(real);
                }
            }
            _ => resolved.missing.push(dir.clone()),
        }
    }
    resolved
}

/// Lists the given directories without following symlinks; a directory
/// that cannot be read is left out (the plan reports it).
pub fn list_dirs(dirs: &BTreeSet<PathBuf>) -> BTreeMap<PathBuf, Vec<Entry>> {
    dirs.iter()
        .filter_map(|dir| Some((dir.clone(), list_dir(dir)?)))
        .collect()
}

fn list_dir(dir: &Path) -> Option<Vec<Entry>> {
    let entries = std::fs::read_dir(dir).ok()?;
    Some(
        entries
            .filter_map(Result::ok)
            .filter_map(|e| {
                let file_type = e.file_type().ok()?;
                let kind = if file_type.is_symlink() {
                    EntryKind::Symlink
                } else if file_type.is_dir() {
                    EntryKind::Dir
                } else {
                    EntryKind::File
                };
                Some(Entry {
                    name: e.file_name(),
                    kind,
                })
            })
            .collect(),
    )
}

/// Rights beneath a writable directory. `IoctlDev` is deliberately not
/// handled: device ioctls are not drift, and handling it would need grants
/// for every device the app opens.
fn write_tree() -> BitFlags<AccessFs> {
    AccessFs::from_write(ABI::V3)
}

fn write_file() -> BitFlags<AccessFs> {
    AccessFs::WriteFile | AccessFs::Truncate
}

fn grant_access(grant: Grant) -> BitFlags<AccessFs> {
    match grant {
        Grant::Execute => AccessFs::Execute.into(),
        Grant::WriteTree => write_tree(),
        Grant::WriteFile => write_file(),
    }
}

/// Sets `no_new_privs` and restricts this (single-threaded) process with
/// the plan. Returns what the kernel enforced; an error after Landlock was
/// accepted is reported in `Applied::error`, never as partial success.
pub fn apply(plan: &RulesetPlan) -> Applied {
    // Set first and unconditionally: it is required for Landlock without
    // privileges, and worth having (no setuid gains) even where Landlock is
    // missing.
    let _ = nix::sys::prctl::set_no_new_privs();
    let no_new_privs = nix::sys::prctl::get_no_new_privs().unwrap_or(false);
    let memfd_noexec = std::fs::read_to_string("/proc/sys/vm/memfd_noexec")
        .ok()
        .and_then(|v| v.trim().parse().ok());
    // Independent of Landlock: a kernel without it still takes the filter.
    let (refused, seccomp_error) = match crate::seccomp::install(&plan.refusals) {
        Ok(()) => (plan.refusals.clone(), None),
        Err(error) => (Vec::new(), Some(error.to_string())),
    };
    let (support, ruleset, no_new_privs, error) = match restrict(plan) {
        Ok(status) => (
            support(status.landlock),
            match status.ruleset {
                RulesetStatus::FullyEnforced => RulesetState::Full,
                RulesetStatus::PartiallyEnforced => RulesetState::Partial,
                RulesetStatus::NotEnforced => RulesetState::None,
            },
            no_new_privs || status.no_new_privs,
            None,
        ),
        Err(error) => (
            LandlockSupport::Unknown,
            RulesetState::None,
            no_new_privs,
            Some(error.to_string()),
        ),
    };
    Applied {
        support,
        ruleset,
        no_new_privs,
        error,
        memfd_noexec,
        refused,
        seccomp_error,
    }
}

fn support(status: LandlockStatus) -> LandlockSupport {
    match status {
        LandlockStatus::Available { effective_abi, .. } => {
            LandlockSupport::Available(effective_abi as u8)
        }
        LandlockStatus::NotEnabled => LandlockSupport::NotEnabled,
        LandlockStatus::NotImplemented => LandlockSupport::NotImplemented,
    }
}

fn restrict(plan: &RulesetPlan) -> Result<RestrictionStatus, ApplyError> {
    let mut ruleset = Ruleset::default()
        // ABI 1 denies every rename between directories: rather than break
        // the app, the whole ruleset is dropped there (the report says so).
        .set_compatibility(CompatLevel::SoftRequirement)
        .handle_access(AccessFs::Refer)?
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(write_tree() | AccessFs::Execute)?;
    if plan.tcp.bind.is_some() {
        ruleset = ruleset.handle_access(AccessNet::BindTcp)?;
    }
    if plan.tcp.connect.is_some() {
        ruleset = ruleset.handle_access(AccessNet::ConnectTcp)?;
    }
    let mut scopes = BitFlags::<Scope>::empty();
    if plan.scope_signals {
        scopes |= Scope::Signal;
    }
    if plan.scope_abstract_unix_sockets {
        scopes |= Scope::AbstractUnixSocket;
    }
    if !scopes.is_empty() {
        ruleset = ruleset.scope(scopes)?;
    }
    let mut created = ruleset.create()?;
    for rule in &plan.rules {
        let fd = PathFd::new(&rule.path).map_err(|source| ApplyError::Path {
            path: rule.path.clone(),
            source,
        })?;
        created = created.add_rule(PathBeneath::new(fd, grant_access(rule.grant)))?;
    }
    for port in plan.tcp.bind.iter().flatten() {
        created = created.add_rule(NetPort::new(*port, AccessNet::BindTcp))?;
    }
    for port in plan.tcp.connect.iter().flatten() {
        created = created.add_rule(NetPort::new(*port, AccessNet::ConnectTcp))?;
    }
    Ok(created.restrict_self()?)
}

/// Reads what the plan needs from disk and derives it.
pub fn plan_from_disk(policy: &crate::policy::LaunchPolicy) -> (RulesetPlan, ResolvedDirs) {
    let dirs = resolve_program_dirs(&policy.requested_program_dirs());
    let program_dirs = crate::plan::outermost(&dirs.present);
    let listings = list_dirs(&crate::plan::ancestors_to_list(&program_dirs));
    let mut plan = crate::plan::derive_plan(
        &program_dirs,
        &listings,
        policy.tcp_request(),
        policy.scope_abstract_unix_sockets,
    );
    plan.refusals = crate::syscalls::requested(&plan, policy.deny_executable_memfd);
    (plan, dirs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn program_dirs_resolve_through_symlinks_and_missing_ones_are_reported() {
        let root = tempfile::tempdir().expect("tempdir");
        let real = root.path().join("usr-bin");
        std::fs::create_dir(&real).expect("mkdir");
        symlink(&real, root.path().join("bin")).expect("symlink");
        std::fs::write(root.path().join("file"), b"").expect("write");
        let requested = [
            root.path().join("bin"),
            real.clone(),
            root.path().join("lib64"),
            root.path().join("file"),
        ];
        let resolved = resolve_program_dirs(&requested);
        assert_eq!(
            resolved.present,
            vec![real.canonicalize().expect("canonical")]
        );
        assert_eq!(
            resolved.missing,
            vec![root.path().join("lib64"), root.path().join("file")]
        );
    }

    #[test]
    fn listings_name_symlinks_as_such_instead_of_following_them() {
        let root = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir(root.path().join("usr")).expect("mkdir");
        symlink("usr", root.path().join("bin")).expect("symlink");
        std::fs::write(root.path().join(".dockerenv"), b"").expect("write");
        let dirs = BTreeSet::from([root.path().to_path_buf(), root.path().join("gone")]);
        let listings = list_dirs(&dirs);
        assert!(!listings.contains_key(&root.path().join("gone")));
        let mut entries = listings[root.path()].clone();
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        let kinds: Vec<(String, EntryKind)> = entries
            .into_iter()
            .map(|e| (e.name.to_string_lossy().into_owned(), e.kind))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (".dockerenv".into(), EntryKind::File),
                ("bin".into(), EntryKind::Symlink),
                ("usr".into(), EntryKind::Dir),
            ]
        );
    }
}
