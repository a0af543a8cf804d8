//! Drift from the image: a baseline of each container's executables taken
//! when the enforcer first sees the container, and the classification of a
//! process's executable against it.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::rules::Rule;

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
/// Where a command name is looked up, as a shell's PATH would.
pub const PATH_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];
const MAX_BASELINE_FILES: usize = 50_000;
const MAX_DEPTH: usize = 4;
/// Larger executables keep only their metadata fingerprint.
pub const HASH_LIMIT: u64 = 64 * 1024 * 1024;
const MAX_SYMLINKS: usize = 40;

/// An executable at baseline time. `ctime` is what a same-size overwrite
/// with a restored mtime cannot restore (only the clock's owner can), and
/// the content hash is the file's identity (a renamed copy keeps it).
///
/// Images hold gigabytes of programs and the enforcer runs on a tenth of a
/// core, so the hash is taken the first time the file is used (run, or
/// named by a denied process) while its metadata is still the baseline's:
/// until then, ctime guards it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub ino: u64,
    pub size: u64,
    pub mtime: i64,
    pub ctime: i64,
    pub sha256: Option<[u8; 32]>,
}

impl Entry {
    pub fn of(meta: &fs::Metadata, sha256: Option<[u8; 32]>) -> Self {
        Self {
            ino: meta.ino(),
            size: meta.size(),
            mtime: meta.mtime(),
            ctime: meta.ctime(),
            sha256,
        }
    }

    fn same_metadata(&self, other: &Entry) -> bool {
        (self.ino, self.size, self.mtime, self.ctime)
            == (other.ino, other.size, other.mtime, other.ctime)
    }
}

/// Executables by a hash of their path: an image holds thousands, and the
/// enforcer must stay small (a 64-bit key, not the path, per file).
#[derive(Debug, Default)]
pub struct Baseline {
    files: HashMap<u64, Entry>,
}

fn path_key(path: &str) -> u64 {
    let digest = Sha256::digest(path.as_bytes());
    u64::from_le_bytes(digest[..8].try_into().unwrap_or_default())
}

/// Where the baseline came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BaselineSource {
    /// Taken now: the container's first look.
    Scanned,
    /// The one taken when this enforcer first saw the container (kept in
    /// the state directory): files dropped before a restart stay drift.
    Persisted,
}

impl Baseline {
    /// Walks the program directories under `root` (a container's root as
    /// seen through /proc/PID/root), hashing each executable.
    pub fn scan(root: &Path) -> Self {
        let mut files = HashMap::new();
        for dir in PROGRAM_DIRS {
            walk(root, &Path::new("/").join(dir), 0, &mut files);
        }
        files.shrink_to_fit();
        Self { files }
    }

    /// The container's first baseline from `state_dir` when there is one
    /// for this root and boot; else scanned and saved there.
    pub fn load_or_scan(
        root: &Path,
        state_dir: &Path,
        root_id: (u64, u64),
    ) -> (Self, BaselineSource) {
        let file = state_dir.join(format!("baseline-{}-{}.txt", root_id.0, root_id.1));
        let boot = boot_id();
        if let Some(b) = fs::read_to_string(&file)
            .ok()
            .and_then(|t| Self::parse(&t, &boot))
        {
            return (b, BaselineSource::Persisted);
        }
        let baseline = Self::scan(root);
        if let Err(e) = baseline.save(&file, &boot) {
            tracing::warn!(error = %e, "cannot keep the baseline; a restart will take a new one");
        }
        (baseline, BaselineSource::Scanned)
    }

    fn save(&self, file: &Path, boot: &str) -> std::io::Result<()> {
        let tmp = file.with_extension("tmp");
        let mut out = std::io::BufWriter::new(fs::File::create(&tmp)?);
        writeln!(out, "{boot}")?;
        for (key, e) in &self.files {
            let hash = e.sha256.map(hex::encode).unwrap_or_else(|| "-".into());
            writeln!(
                out,
                "{key} {} {} {} {} {hash}",
                e.ino, e.size, e.mtime, e.ctime
            )?;
        }
        out.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        fs::rename(tmp, file)
    }

    /// A saved baseline, unless it was taken before the node's last boot
    /// (inode numbers then name other files).
    fn parse(text: &str, boot: &str) -> Option<Self> {
        let mut lines = text.lines();
        if lines.next()? != boot {
            return None;
        }
        let mut files = HashMap::new();
        for line in lines {
            let f: Vec<&str> = line.split(' ').collect();
            let [key, ino, size, mtime, ctime, hash] = f.as_slice() else {
                return None;
            };
            let sha256 = match *hash {
                "-" => None,
                h => Some(hex::decode(h).ok()?.try_into().ok()?),
            };
            files.insert(
                key.parse().ok()?,
                Entry {
                    ino: ino.parse().ok()?,
                    size: size.parse().ok()?,
                    mtime: mtime.parse().ok()?,
                    ctime: ctime.parse().ok()?,
                    sha256,
                },
            );
        }
        Some(Self { files })
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.files.get(&path_key(path))
    }

    /// The content hash of `path` as it is `now`, if its metadata is still
    /// the baseline's: taken once (`hash`), then kept.
    pub fn content(
        &mut self,
        path: &str,
        now: &Entry,
        hash: impl FnOnce() -> Option<[u8; 32]>,
    ) -> Option<[u8; 32]> {
        let entry = self.files.get_mut(&path_key(path))?;
        if !entry.same_metadata(now) {
            return None;
        }
        if entry.sha256.is_none() {
            entry.sha256 = hash();
        }
        entry.sha256
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

fn boot_id() -> String {
    fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|b| b.trim().to_string())
        .unwrap_or_default()
}

fn walk(root: &Path, dir: &Path, depth: usize, files: &mut HashMap<u64, Entry>) {
    if depth > MAX_DEPTH || files.len() >= MAX_BASELINE_FILES {
        return;
    }
    let Ok(entries) = fs::read_dir(inside(root, &dir.to_string_lossy())) else {
        return;
    };
    for entry in entries.flatten() {
        let path = dir.join(entry.file_name());
        let path_text = path.to_string_lossy();
        // Links are followed inside the container's root: an absolute
        // target (/etc/alternatives/...) means the container's file, not
        // the enforcer's. (Directories walked are already resolved, so only
        // links need the walk.)
        let is_link = entry.file_type().is_ok_and(|t| t.is_symlink());
        let real = if is_link {
            resolve_in_root(root, &path_text)
        } else {
            path_text.to_string()
        };
        let Ok(meta) = fs::metadata(inside(root, &real)) else {
            continue;
        };
        if meta.is_dir() {
            if real == path_text {
                walk(root, &path, depth + 1, files);
            }
        } else if meta.is_file() && meta.permissions().mode() & 0o111 != 0 {
            let known = files.get(&path_key(&real)).copied();
            let e = known.unwrap_or_else(|| Entry::of(&meta, None));
            files.insert(path_key(&path_text), e);
            // The kernel reports the resolved path of what runs: record it too.
            files.insert(path_key(&real), e);
        }
        if files.len() >= MAX_BASELINE_FILES {
            return;
        }
    }
}

/// `path` (absolute, inside the container) with every symbolic link
/// resolved as the container sees it: absolute targets restart at the
/// container's root, `..` never climbs above it. Components that do not
/// exist are kept as they are.
pub fn resolve_in_root(root: &Path, path: &str) -> String {
    let mut todo: Vec<OsString> = components(Path::new(path));
    todo.reverse();
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        done.push(part);
        let here = root.join(done.iter().collect::<PathBuf>());
        let Ok(target) = fs::read_link(&here) else {
            continue;
        };
        links += 1;
        if links > MAX_SYMLINKS {
            break;
        }
        done.pop();
        if target.is_absolute() {
            done.clear();
        }
        let mut more = components(&target);
        more.reverse();
        todo.extend(more);
    }
    let joined: PathBuf = done.iter().collect();
    format!("/{}", joined.to_string_lossy())
}

fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

/// Whether an executable is the image's, as far as the baseline tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageCheck {
    /// No baseline for this container (its root is unreadable, or the
    /// process predates the enforcer).
    Unknown,
    NotInImage,
    Unchanged,
    Modified,
}

/// Compares the file as it is now with the baseline. Metadata that moved
/// (a `chmod`, a copy-up) is only a modification if the content did too.
pub fn image_check(
    baseline: Option<&Baseline>,
    path: &str,
    now: Option<&Entry>,
    content_now: impl FnOnce() -> Option<[u8; 32]>,
) -> ImageCheck {
    let Some(baseline) = baseline else {
        return ImageCheck::Unknown;
    };
    let Some(before) = baseline.get(path) else {
        return ImageCheck::NotInImage;
    };
    let Some(now) = now else {
        return ImageCheck::Unchanged;
    };
    if before.same_metadata(now) {
        return ImageCheck::Unchanged;
    }
    match (before.sha256, content_now()) {
        (Some(a), Some(b)) if a == b => ImageCheck::Unchanged,
        _ => ImageCheck::Modified,
    }
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
    pub fn rule(&self) -> Rule {
        match self {
            Finding::Fileless => Rule::FilelessExec,
            Finding::Deleted => Rule::DeletedExecutable,
            Finding::FromTemporaryDir(_) => Rule::ExecFromTmp,
            Finding::NotInImage => Rule::NewExecutable,
            Finding::Modified => Rule::ModifiedExecutable,
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

/// Classifies an executable from its path and what the baseline says.
pub fn classify(
    path: &str,
    deleted: bool,
    temp_dirs: &[String],
    image: ImageCheck,
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
    match image {
        ImageCheck::NotInImage => out.push(Finding::NotInImage),
        ImageCheck::Modified => out.push(Finding::Modified),
        ImageCheck::Unknown | ImageCheck::Unchanged => {}
    }
    out
}

/// SHA-256 of a file, when it is at most `limit` bytes.
pub fn hash_file(path: &Path, limit: u64) -> Option<[u8; 32]> {
    let file = fs::File::open(path).ok()?;
    if file.metadata().ok()?.len() > limit {
        return None;
    }
    hash_reader(file, limit)
}

fn hash_reader(file: fs::File, limit: u64) -> Option<[u8; 32]> {
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
    Some(hasher.finalize().into())
}

/// SHA-256 of the running executable (readable even when deleted or
/// fileless, through /proc/PID/exe), up to `limit` bytes.
pub fn hash_exe(proc_root: &Path, pid: i32, limit: u64) -> Option<[u8; 32]> {
    let file = fs::File::open(proc_root.join(pid.to_string()).join("exe")).ok()?;
    hash_reader(file, limit)
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

    fn executable(path: &Path, content: &[u8]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
        std::fs::set_permissions(path, fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn now(root: &Path, path: &str) -> Option<Entry> {
        fs::metadata(inside(root, path))
            .ok()
            .map(|m| Entry::of(&m, None))
    }

    fn check(baseline: &Baseline, root: &Path, path: &str) -> ImageCheck {
        image_check(Some(baseline), path, now(root, path).as_ref(), || {
            hash_file(&inside(root, path), HASH_LIMIT)
        })
    }

    #[test]
    fn classifies_against_a_real_baseline() {
        let root = tempfile::tempdir().unwrap();
        let tool = root.path().join("usr/bin/tool");
        executable(&tool, b"#!/bin/sh\n");
        std::fs::write(root.path().join("usr/bin/data.txt"), b"x").unwrap();
        let baseline = Baseline::scan(root.path());
        assert_eq!(baseline.len(), 1, "only executables");

        assert_eq!(
            check(&baseline, root.path(), "/usr/bin/tool"),
            ImageCheck::Unchanged
        );
        assert!(classify("/usr/bin/tool", false, &temp(), ImageCheck::Unchanged).is_empty());
        assert_eq!(
            classify(
                "/usr/bin/new",
                false,
                &temp(),
                check(&baseline, root.path(), "/usr/bin/new")
            ),
            [Finding::NotInImage]
        );
        assert_eq!(
            classify("/tmp/x", true, &temp(), ImageCheck::NotInImage),
            [
                Finding::Deleted,
                Finding::FromTemporaryDir("/tmp".into()),
                Finding::NotInImage
            ]
        );
        assert_eq!(
            classify("/memfd:payload", true, &temp(), ImageCheck::NotInImage),
            [Finding::Fileless]
        );
        std::fs::write(&tool, b"#!/bin/sh\necho changed\n").unwrap();
        assert_eq!(
            check(&baseline, root.path(), "/usr/bin/tool"),
            ImageCheck::Modified
        );
        // Without a baseline (root unreadable), only path-based findings.
        assert!(classify("/usr/bin/new", false, &temp(), ImageCheck::Unknown).is_empty());
    }

    #[test]
    fn a_same_size_overwrite_with_the_old_mtime_restored_is_modified() {
        let root = tempfile::tempdir().unwrap();
        let tool = root.path().join("usr/bin/tool");
        executable(&tool, b"#!/bin/sh\necho good\n");
        let before = fs::metadata(&tool).unwrap();
        let baseline = Baseline::scan(root.path());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        // Same size, same inode, mtime put back as it was.
        fs::OpenOptions::new()
            .write(true)
            .open(&tool)
            .unwrap()
            .write_all(b"#!/bin/sh\necho evil\n")
            .unwrap();
        let f = fs::File::options().write(true).open(&tool).unwrap();
        f.set_modified(before.modified().unwrap()).unwrap();
        let after = fs::metadata(&tool).unwrap();
        assert_eq!(
            (after.size(), after.mtime(), after.ino()),
            (before.size(), before.mtime(), before.ino())
        );
        assert_eq!(
            check(&baseline, root.path(), "/usr/bin/tool"),
            ImageCheck::Modified
        );
    }

    #[test]
    fn a_chmod_of_a_program_already_used_is_not_a_modification() {
        let root = tempfile::tempdir().unwrap();
        let tool = root.path().join("usr/bin/tool");
        executable(&tool, b"#!/bin/sh\n");
        let mut baseline = Baseline::scan(root.path());
        // First use: its content is taken while the metadata is the image's.
        let now = now(root.path(), "/usr/bin/tool").unwrap();
        assert!(baseline
            .content("/usr/bin/tool", &now, || hash_file(&tool, HASH_LIMIT))
            .is_some());
        std::thread::sleep(std::time::Duration::from_millis(1100));
        std::fs::set_permissions(&tool, fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(
            check(&baseline, root.path(), "/usr/bin/tool"),
            ImageCheck::Unchanged
        );
    }

    #[test]
    fn links_resolve_inside_the_container_root_not_the_enforcers() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        executable(&r.join("usr/lib/jvm/java-17/bin/java"), b"java");
        std::fs::create_dir_all(r.join("etc/alternatives")).unwrap();
        std::fs::create_dir_all(r.join("usr/bin")).unwrap();
        std::os::unix::fs::symlink(
            "/usr/lib/jvm/java-17/bin/java",
            r.join("etc/alternatives/java"),
        )
        .unwrap();
        std::os::unix::fs::symlink("/etc/alternatives/java", r.join("usr/bin/java")).unwrap();
        std::os::unix::fs::symlink("usr/bin", r.join("bin")).unwrap();
        assert_eq!(
            resolve_in_root(r, "/bin/java"),
            "/usr/lib/jvm/java-17/bin/java"
        );
        assert_eq!(
            resolve_in_root(r, "/bin/../../../usr/bin/java"),
            "/usr/lib/jvm/java-17/bin/java"
        );
        assert_eq!(resolve_in_root(r, "/nowhere/x"), "/nowhere/x");
        // The kernel names what runs by its real path: it is in the baseline.
        let mut baseline = Baseline::scan(r);
        assert!(baseline.get("/usr/lib/jvm/java-17/bin/java").is_some());
        assert!(baseline.get("/usr/bin/java").is_some());
        let real = "/usr/lib/jvm/java-17/bin/java";
        let now = fs::metadata(inside(r, real))
            .map(|m| Entry::of(&m, None))
            .unwrap();
        let hash = || hash_file(&inside(r, real), HASH_LIMIT);
        assert_eq!(
            baseline.content(real, &now, hash),
            Some(Sha256::digest(b"java").into())
        );
        assert_eq!(
            baseline.content(real, &now, || None),
            Some(Sha256::digest(b"java").into()),
            "kept"
        );
    }

    #[test]
    fn the_first_baseline_survives_a_restart_and_a_dropped_file_stays_drift() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        executable(&root.path().join("usr/bin/tool"), b"tool");
        let (first, source) = Baseline::load_or_scan(root.path(), state.path(), (1, 2));
        assert_eq!(source, BaselineSource::Scanned);
        // Dropped while the enforcer was down.
        executable(&root.path().join("usr/bin/dropped"), b"evil");
        let (again, source) = Baseline::load_or_scan(root.path(), state.path(), (1, 2));
        assert_eq!(source, BaselineSource::Persisted);
        assert_eq!(again.len(), first.len());
        assert!(again.get("/usr/bin/dropped").is_none());
        assert_eq!(again.get("/usr/bin/tool"), first.get("/usr/bin/tool"));
        let (other, source) = Baseline::load_or_scan(root.path(), state.path(), (1, 3));
        assert_eq!(source, BaselineSource::Scanned, "another container");
        assert!(other.get("/usr/bin/dropped").is_some());
    }

    #[test]
    fn hashes_its_own_executable() {
        let h = hash_exe(Path::new("/proc"), std::process::id() as i32, 1 << 30);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(h, hash_file(&exe, 1 << 30));
        assert!(h.is_some());
    }
}
