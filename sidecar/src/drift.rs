//! Drift from the image: a baseline of each container's executables taken
//! when the enforcer first sees the container, and the classification of a
//! process's executable against it.

use std::collections::HashMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

/// Directories whose executables make up the image's programs.
const PROGRAM_DIRS: &[&str] = &[
    "bin",
    "sbin",
    "usr/bin",
    "usr/sbin",
    "usr/local/bin",
    "usr/local/sbin",
    "usr/libexec",
    "opt",
    "app",
];
const MAX_BASELINE_FILES: usize = 50_000;
const MAX_DEPTH: usize = 4;

/// (inode, size, mtime) of an executable at baseline time.
type Fingerprint = (u64, u64, i64);

/// Executables by a hash of their path: an image holds thousands, and the
/// enforcer must stay small (a 64-bit key, not the path, per file).
#[derive(Debug, Default)]
pub struct Baseline {
    files: HashMap<u64, Fingerprint>,
}

fn path_key(path: &str) -> u64 {
    let digest = Sha256::digest(path.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
}

impl Baseline {
    /// Walks the program directories under `root` (a container's root as
    /// seen through /proc/PID/root).
    pub fn scan(root: &Path) -> Self {
        let mut files = HashMap::new();
        for dir in PROGRAM_DIRS {
            walk(root, &Path::new("/").join(dir), 0, &mut files);
        }
        files.shrink_to_fit();
        Self { files }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

fn walk(root: &Path, dir: &Path, depth: usize, files: &mut HashMap<u64, Fingerprint>) {
    if depth > MAX_DEPTH || files.len() >= MAX_BASELINE_FILES {
        return;
    }
    let Ok(entries) = fs::read_dir(root.join(dir.strip_prefix("/").unwrap_or(dir))) else {
        return;
    };
    for entry in entries.flatten() {
        let path = dir.join(entry.file_name());
        // symlink_metadata: links are recorded by their own path below.
        let Ok(meta) = fs::metadata(entry.path()) else {
            continue;
        };
        if meta.is_dir() {
            walk(root, &path, depth + 1, files);
        } else if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            files.insert(path_key(&path.to_string_lossy()), fingerprint(&meta));
            // Programs are usually exec'd through symlinks (/bin -> usr/bin);
            // the kernel reports the resolved path, so record that too.
            if let Ok(real) = fs::canonicalize(entry.path()) {
                if let Ok(rel) = real.strip_prefix(root) {
                    files.insert(
                        path_key(&Path::new("/").join(rel).to_string_lossy()),
                        fingerprint(&meta),
                    );
                }
            }
        }
        if files.len() >= MAX_BASELINE_FILES {
            return;
        }
    }
}

fn fingerprint(meta: &fs::Metadata) -> Fingerprint {
    (meta.ino(), meta.size(), meta.mtime())
}

/// What is wrong with an executable, if anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// Executed from memory (memfd), no file on disk.
    Fileless,
    /// The file was deleted after the process started.
    Deleted,
    /// Under a temporary directory (/tmp, /var/tmp, /dev/shm...).
    FromTemporaryDir(String),
    /// Not among the image's executables.
    NotInImage,
    /// Among them, but changed since.
    Modified,
}

impl Finding {
    pub fn rule(&self) -> &'static str {
        match self {
            Finding::Fileless => "drift/fileless-exec",
            Finding::Deleted => "drift/deleted-executable",
            Finding::FromTemporaryDir(_) => "drift/exec-from-tmp",
            Finding::NotInImage => "drift/new-executable",
            Finding::Modified => "drift/modified-executable",
        }
    }
}

/// The executable's path inside its container: the kernel's exe link
/// minus the container root as seen from here, and minus " (deleted)".
pub fn container_path(exe_link: &str, root_link: Option<&Path>) -> (String, bool) {
    let (path, deleted) = match exe_link.strip_suffix(" (deleted)") {
        Some(p) => (p, true),
        None => (exe_link, false),
    };
    let inside = match root_link.filter(|r| *r != Path::new("/")) {
        Some(root) => Path::new(path)
            .strip_prefix(root)
            .map(|rel| Path::new("/").join(rel).to_string_lossy().into_owned())
            .unwrap_or_else(|_| path.to_string()),
        None => path.to_string(),
    };
    (inside, deleted)
}

/// Classifies an executable. `current` is the file's metadata now (through
/// the container root); `baseline` is `None` when the root is unreadable.
pub fn classify(
    path: &str,
    deleted: bool,
    temp_dirs: &[String],
    baseline: Option<&Baseline>,
    current: Option<&fs::Metadata>,
) -> Vec<Finding> {
    let mut out = Vec::new();
    if path.starts_with("/memfd:") {
        out.push(Finding::Fileless);
        return out;
    }
    if deleted {
        out.push(Finding::Deleted);
    }
    if let Some(dir) = temp_dirs
        .iter()
        .find(|d| Path::new(path).starts_with(d.as_str()))
    {
        out.push(Finding::FromTemporaryDir(dir.clone()));
    }
    if let Some(baseline) = baseline {
        match (baseline.files.get(&path_key(path)), current) {
            (None, _) => out.push(Finding::NotInImage),
            (Some(before), Some(now)) if *before != fingerprint(now) => out.push(Finding::Modified),
            _ => {}
        }
    }
    out
}

/// SHA-256 of the running executable (readable even when deleted or
/// fileless, through /proc/PID/exe), up to `limit` bytes.
pub fn hash_exe(proc_root: &Path, pid: i32, limit: u64) -> Option<String> {
    let file = fs::File::open(proc_root.join(pid.to_string()).join("exe")).ok()?;
    let mut hasher = Sha256::new();
    let mut reader = file.take(limit);
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).ok()?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Some(hex::encode(hasher.finalize()))
}

/// `root` joined with an absolute path inside it.
pub fn inside(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp() -> Vec<String> {
        vec!["/tmp".into(), "/dev/shm".into()]
    }

    #[test]
    fn container_paths_strip_roots_and_deleted_markers() {
        assert_eq!(
            container_path("/usr/bin/sleep", Some(Path::new("/"))),
            ("/usr/bin/sleep".into(), false)
        );
        assert_eq!(
            container_path("/x/merged/tmp/evil (deleted)", Some(Path::new("/x/merged"))),
            ("/tmp/evil".into(), true)
        );
    }

    #[test]
    fn classifies_against_a_real_baseline() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("usr/bin")).unwrap();
        let tool = root.path().join("usr/bin/tool");
        std::fs::write(&tool, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&tool, fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(root.path().join("usr/bin/data.txt"), b"x").unwrap();
        let baseline = Baseline::scan(root.path());
        assert_eq!(baseline.len(), 1, "only executables");

        let meta = fs::metadata(&tool).unwrap();
        assert!(classify(
            "/usr/bin/tool",
            false,
            &temp(),
            Some(&baseline),
            Some(&meta)
        )
        .is_empty());
        assert_eq!(
            classify("/usr/bin/new", false, &temp(), Some(&baseline), None),
            [Finding::NotInImage]
        );
        assert_eq!(
            classify("/tmp/x", true, &temp(), Some(&baseline), None),
            [
                Finding::Deleted,
                Finding::FromTemporaryDir("/tmp".into()),
                Finding::NotInImage
            ]
        );
        assert_eq!(
            classify("/memfd:payload", true, &temp(), Some(&baseline), None),
            [Finding::Fileless]
        );

        std::fs::write(&tool, b"#!/bin/sh\necho changed\n").unwrap();
        let changed = fs::metadata(&tool).unwrap();
        assert_eq!(
            classify(
                "/usr/bin/tool",
                false,
                &temp(),
                Some(&baseline),
                Some(&changed)
            ),
            [Finding::Modified]
        );
        // Without a baseline (root unreadable), only path-based findings.
        assert!(classify("/usr/bin/new", false, &temp(), None, None).is_empty());
    }

    #[test]
    fn hashes_its_own_executable() {
        let h = hash_exe(Path::new("/proc"), std::process::id() as i32, 1 << 30).unwrap();
        assert_eq!(h.len(), 64);
    }
}
