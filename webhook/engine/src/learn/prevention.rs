//! Whether a draft may turn prevention on: the launcher then stops every
//! executable outside the program directories and every write inside
//! them, so a wrong guess breaks the workload instead of reporting it.
//! Prevention is drafted only when everything that ran came from the
//! image, from directories that hold programs rather than scratch space.

use std::collections::BTreeSet;
use std::path::{Component, Path};

use palisade_common::launch::check_program_dir;

/// Where the launcher allows execution without `programDirs`.
const DEFAULT_PROGRAM_DIRS: &[&str] = &["/bin", "/sbin", "/usr", "/lib", "/lib64"];

/// Directories anyone in the container can write or that are not files of
/// the image: an executable there is not a program of the image, and
/// prevention would stop it.
const WRITABLE_DIRS: &[&str] = &["/tmp", "/var/tmp", "/dev/shm", "/run", "/var/run", "/proc"];

/// Whether prevention can be drafted for what was seen, and with which
/// program directories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Prevention {
    Safe {
        program_dirs: Vec<String>,
    },
    /// Why not: confining the app would stop something it was seen doing.
    Unsafe(Vec<String>),
}

/// Prevention stops every executable outside the program directories and
/// every write inside them, so it is drafted only when all that ran came
/// from the image, from directories that are programs' and not scratch
/// space.
pub(crate) fn plan<'a>(executables: impl IntoIterator<Item = (&'a str, bool)>) -> Prevention {
    let mut problems = Vec::new();
    let mut dirs: BTreeSet<&Path> = BTreeSet::new();
    let mut any = false;
    for (path, from_image) in executables {
        any = true;
        let file = Path::new(path);
        if !file.is_absolute() || file.components().any(|c| !is_normal(c)) {
            problems.push(format!("{path} is not a normal absolute path"));
            continue;
        }
        if !from_image {
            problems.push(format!("{path} ran but was not the image's own file"));
        }
        if let Some(dir) = writable_dir(path) {
            problems.push(format!(
                "{path} lives under {dir}, which is writable or not the image's"
            ));
            continue;
        }
        let Some(parent) = file.parent() else {
            continue;
        };
        if !DEFAULT_PROGRAM_DIRS.iter().any(|d| parent.starts_with(d)) {
            dirs.insert(parent);
        }
    }
    if !any {
        problems.push("no executable was seen".to_string());
    }
    // A directory below another listed one adds nothing.
    let outermost: Vec<&Path> = dirs
        .iter()
        .copied()
        .filter(|d| !dirs.iter().any(|o| o != d && d.starts_with(o)))
        .collect();
    for dir in &outermost {
        if let Err(e) = check_program_dir(dir) {
            problems.push(format!("program directory {}: {e}", dir.display()));
        }
    }
    if problems.is_empty() {
        Prevention::Safe {
            program_dirs: outermost
                .iter()
                .map(|d| d.to_string_lossy().into_owned())
                .collect(),
        }
    } else {
        Prevention::Unsafe(problems)
    }
}

/// The writable or scratch directory `path` lives under, if any.
pub(crate) fn writable_dir(path: &str) -> Option<&'static str> {
    WRITABLE_DIRS
        .iter()
        .copied()
        .find(|d| Path::new(path).starts_with(d))
}

fn is_normal(component: Component) -> bool {
    matches!(component, Component::RootDir | Component::Normal(_))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prevention_needs_every_executable_from_the_image_outside_scratch_space() {
        assert_eq!(
            plan([("/run/app/server", true)]),
            Prevention::Unsafe(vec![
                "/run/app/server lives under /run, which is writable or not the image's".into()
            ])
        );
        assert_eq!(
            plan([("/server", true)]),
            Prevention::Unsafe(vec![
                "program directory /: / would allow execution everywhere and deny every write"
                    .into()
            ])
        );
        assert!(matches!(
            &plan([("/usr/../tmp/x", true)]),
            Prevention::Unsafe(p) if p[0].contains("not a normal absolute path")
        ));
        assert!(matches!(plan([]), Prevention::Unsafe(_)));
        assert_eq!(
            plan([
                ("/opt/app/bin/a", true),
                ("/opt/app/b", true),
                ("/usr/bin/c", true)
            ]),
            Prevention::Safe {
                program_dirs: vec!["/opt/app".into()]
            }
        );
    }
}
