//! Drift from the image: a baseline of each container's executables taken
//! when the enforcer first sees the container, and the classification of a
//! process's executable against it.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::rules::Rule;

/// Where programs usually are: walked first, so that a scan its budget
/// cuts short has covered them. The rest of the image follows.
const PROGRAM_DIRS: &[&str] = &[
    "/bin",
    "/sbin",
    "/usr/bin",
    "/usr/sbin",
    "/usr/local/bin",
    "/usr/local/sbin",
    "/usr/libexec",
    "/opt",
    "/app",
    "/usr/lib",
    "/usr/local/lib",
];
/// Never the image: kernel file systems, and temporary directories, where
/// whatever runs is drift even if it was there at the first look.
const NOT_IMAGE: &[&str] = &["/proc", "/sys", "/dev", "/tmp", "/var/tmp"];
/// Where a command name is looked up, as a shell's PATH would.
pub const PATH_DIRS: &[&str] = &[
    "/usr/local/sbin",
    "/usr/local/bin",
    "/usr/sbin",
    "/usr/bin",
    "/sbin",
    "/bin",
];
/// Executables kept (a 64-bit key and 32 bytes of metadata each).
const MAX_BASELINE_FILES: usize = 50_000;

/// How much of an image one scan reads: programs may be at any depth
/// (`/app/vendor/a/b/c/bin/tool`), so the walk is bounded by the entries
/// it reads and the time it takes, never by depth. What a scan cut short
/// did not reach is judged by its change time (see [`image_check`]).
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub entries: usize,
    pub time: Duration,
}

impl Default for Budget {
    /// Nothing is judged while the walk runs. These machines read about
    /// 120,000 entries a second (a host root of 178,000 in 1.5 s); under
    /// the injector's 100m CPU limit the time bound cuts first, and what
    /// is left is judged by change time at no loss.
    fn default() -> Self {
        Self {
            entries: 300_000,
            time: Duration::from_secs(2),
        }
    }
}
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

/// Metadata of one executable as the scan found it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Meta {
    ino: u64,
    size: u64,
    mtime: i64,
    ctime: i64,
}

impl Meta {
    fn of(e: &Entry) -> Self {
        Self {
            ino: e.ino,
            size: e.size,
            mtime: e.mtime,
            ctime: e.ctime,
        }
    }
}

/// Executables by a hash of their path: an image holds thousands, and the
/// enforcer must stay small (a 64-bit key, not the path, per file; content
/// hashes apart, since few files are ever hashed).
#[derive(Debug, Default)]
pub struct Baseline {
    files: HashMap<u64, Meta>,
    hashes: HashMap<u64, [u8; 32]>,
    /// When the scan began, in Unix seconds.
    taken_at: i64,
    /// Whether the scan read the whole image within its budget.
    complete: bool,
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
    /// Walks the image under `root` (a container's root as seen through
    /// /proc/PID/root) within the default budget, recording each
    /// executable's metadata (hashed later, on first use).
    pub fn scan(root: &Path) -> Self {
        Self::scan_within(root, Budget::default())
    }

    pub fn scan_within(root: &Path, budget: Budget) -> Self {
        let taken_at = unix_now();
        let mut walk = Walk {
            root,
            budget,
            started: Instant::now(),
            entries: 0,
            cut: false,
            dirs: HashSet::new(),
            files: HashMap::new(),
        };
        for dir in PROGRAM_DIRS {
            // `/bin` may be a link to `usr/bin`: the kernel names what
            // runs by the real path.
            let real = resolve_in_root(root, dir);
            walk.tree(&real);
        }
        walk.tree("/");
        let mut files = walk.files;
        files.shrink_to_fit();
        Self {
            files,
            hashes: HashMap::new(),
            taken_at,
            complete: !walk.cut,
        }
    }

    /// Whether the scan read the whole image.
    pub fn is_complete(&self) -> bool {
        self.complete
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
        let saved_at = fs::metadata(&file).map_or(0, |m| m.mtime());
        if let Some(b) = fs::read_to_string(&file)
            .ok()
            .and_then(|t| Self::parse(&t, &boot, saved_at))
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
        let extent = if self.complete { "complete" } else { "partial" };
        writeln!(out, "# {} {extent}", self.taken_at)?;
        for (key, e) in &self.files {
            let hash = self
                .hashes
                .get(key)
                .map(hex::encode)
                .unwrap_or_else(|| "-".into());
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
    /// (inode numbers then name other files). One saved before scans had
    /// a header was walked to a fixed depth: partial, taken by `saved_at`.
    fn parse(text: &str, boot: &str, saved_at: i64) -> Option<Self> {
        let mut lines = text.lines().peekable();
        if lines.next()? != boot {
            return None;
        }
        let (taken_at, complete) = match lines.peek().and_then(|l| l.strip_prefix("# ")) {
            Some(header) => {
                let (at, extent) = header.split_once(' ')?;
                let complete = match extent {
                    "complete" => true,
                    "partial" => false,
                    _ => return None,
                };
                lines.next();
                (at.parse().ok()?, complete)
            }
            None => (saved_at, false),
        };
        let mut files = HashMap::new();
        let mut hashes = HashMap::new();
        for line in lines {
            let f: Vec<&str> = line.split(' ').collect();
            let [key, ino, size, mtime, ctime, hash] = f.as_slice() else {
                return None;
            };
            let key: u64 = key.parse().ok()?;
            if *hash != "-" {
                hashes.insert(key, hex::decode(hash).ok()?.try_into().ok()?);
            }
            files.insert(
                key,
                Meta {
                    ino: ino.parse().ok()?,
                    size: size.parse().ok()?,
                    mtime: mtime.parse().ok()?,
                    ctime: ctime.parse().ok()?,
                },
            );
        }
        Some(Self {
            files,
            hashes,
            taken_at,
            complete,
        })
    }

    pub fn get(&self, path: &str) -> Option<Entry> {
        let key = path_key(path);
        let m = self.files.get(&key)?;
        Some(Entry {
            ino: m.ino,
            size: m.size,
            mtime: m.mtime,
            ctime: m.ctime,
            sha256: self.hashes.get(&key).copied(),
        })
    }

    /// The content hash of `path` as it is `now`, if its metadata is still
    /// the baseline's: taken once (`hash`), then kept.
    pub fn content(
        &mut self,
        path: &str,
        now: &Entry,
        hash: impl FnOnce() -> Option<[u8; 32]>,
    ) -> Option<[u8; 32]> {
        let key = path_key(path);
        if *self.files.get(&key)? != Meta::of(now) {
            return None;
        }
        if let Some(known) = self.hashes.get(&key) {
            return Some(*known);
        }
        // At most one per executable: bounded by the files kept.
        let taken = hash()?;
        self.hashes.insert(key, taken);
        Some(taken)
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

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Whether `path` (absolute, inside the container) is under a directory
/// that is never the image.
fn never_image(path: &str) -> bool {
    NOT_IMAGE.iter().any(|d| Path::new(path).starts_with(d))
}

/// One scan's walk: depth-first with its own stack (one directory open at
/// a time, whatever the depth), each directory read once (bind mounts and
/// the program directories walked first are met again).
struct Walk<'a> {
    root: &'a Path,
    budget: Budget,
    started: Instant,
    entries: usize,
    cut: bool,
    dirs: HashSet<(u64, u64)>,
    files: HashMap<u64, Meta>,
}

impl Walk<'_> {
    fn exhausted(&mut self) -> bool {
        // The clock is read every 1024 entries: a stat costs about a microsecond.
        let late = self.entries.is_multiple_of(1024) && self.started.elapsed() >= self.budget.time;
        if self.entries >= self.budget.entries || late || self.files.len() >= MAX_BASELINE_FILES {
            self.cut = true;
        }
        self.cut
    }

    /// Walks the real directory `start` (links already resolved).
    fn tree(&mut self, start: &str) {
        let mut pending = vec![PathBuf::from(start)];
        while let Some(dir) = pending.pop() {
            if self.exhausted() {
                return;
            }
            let dir_text = dir.to_string_lossy().into_owned();
            if never_image(&dir_text) {
                continue;
            }
            let host = inside(self.root, &dir_text);
            // Not followed if it is a link: its target is walked on its own.
            let Ok(meta) = fs::symlink_metadata(&host) else {
                continue;
            };
            if !meta.is_dir() || !self.dirs.insert((meta.dev(), meta.ino())) {
                continue;
            }
            let Ok(entries) = fs::read_dir(&host) else {
                continue;
            };
            for entry in entries.flatten() {
                self.entries += 1;
                if self.exhausted() {
                    return;
                }
                let path = dir.join(entry.file_name());
                let Ok(kind) = entry.file_type() else {
                    continue;
                };
                if kind.is_dir() {
                    pending.push(path);
                } else if kind.is_symlink() {
                    self.link(&path.to_string_lossy());
                } else if kind.is_file() {
                    if let Ok(meta) = entry.metadata() {
                        self.record(&path.to_string_lossy(), &meta);
                    }
                }
            }
        }
    }

    /// A link to an executable is recorded under its own path and its
    /// target's, resolved inside the container's root: an absolute target
    /// (/etc/alternatives/...) means the container's file, not the
    /// enforcer's.
    fn link(&mut self, path: &str) {
        let real = resolve_in_root(self.root, path);
        let Ok(meta) = fs::metadata(inside(self.root, &real)) else {
            return;
        };
        if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
            return;
        }
        let known = self.files.get(&path_key(&real)).copied();
        let m = known.unwrap_or_else(|| Meta::of(&Entry::of(&meta, None)));
        self.files.insert(path_key(path), m);
        self.files.insert(path_key(&real), m);
    }

    fn record(&mut self, path: &str, meta: &fs::Metadata) {
        if meta.permissions().mode() & 0o111 != 0 {
            self.files
                .insert(path_key(path), Meta::of(&Entry::of(meta, None)));
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
        // A scan cut short may not have reached it. A file whose change
        // time is older than the scan was there, unchanged, at the
        // container's first look: only the clock's owner can set a change
        // time, and writing, renaming or linking a file sets it to now.
        let predates = now.is_some_and(|n| n.ctime < baseline.taken_at);
        return if !baseline.complete && predates && !never_image(path) {
            ImageCheck::Unchanged
        } else {
            ImageCheck::NotInImage
        };
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
    fn a_program_deep_in_the_image_is_in_the_baseline_wherever_it_lives() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        executable(&r.join("app/vendor/a/b/c/bin/tool"), b"tool");
        executable(&r.join("srv/x/y/z/w/v/u/bin/other"), b"other");
        let mut deep = PathBuf::from("home/app");
        for i in 0..200 {
            deep.push(format!("d{i}"));
        }
        executable(&r.join(&deep).join("bottom"), b"bottom");
        let baseline = Baseline::scan(r);
        assert!(baseline.is_complete());
        for path in [
            "/app/vendor/a/b/c/bin/tool",
            "/srv/x/y/z/w/v/u/bin/other",
            &format!("/{}/bottom", deep.display()),
        ] {
            assert_eq!(check(&baseline, r, path), ImageCheck::Unchanged, "{path}");
        }
    }

    #[test]
    fn kernel_and_temporary_directories_are_never_the_image() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for path in [
            "tmp/x",
            "var/tmp/x",
            "dev/shm/x",
            "proc/1/exe",
            "usr/bin/tool",
        ] {
            executable(&r.join(path), b"x");
        }
        std::os::unix::fs::symlink("/", r.join("usr/bin/loop")).unwrap();
        let baseline = Baseline::scan(r);
        assert!(baseline.is_complete(), "a link back to / is not followed");
        assert_eq!(baseline.len(), 1);
        assert!(baseline.get("/usr/bin/tool").is_some());
        assert!(baseline.get("/tmp/x").is_none());
    }

    #[test]
    fn what_a_scan_cut_short_did_not_reach_is_judged_by_its_change_time() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        executable(&r.join("usr/bin/first"), b"first");
        for i in 0..50 {
            executable(&r.join(format!("srv/many/f{i}")), b"x");
        }
        executable(&r.join("srv/zzz/late"), b"late");
        executable(&r.join("tmp/early"), b"early");
        // Change times count in whole seconds.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let budget = Budget {
            entries: 10,
            time: Duration::from_secs(60),
        };
        let baseline = Baseline::scan_within(r, budget);
        assert!(!baseline.is_complete());
        assert!(
            baseline.get("/usr/bin/first").is_some(),
            "program dirs first"
        );
        assert!(baseline.get("/srv/zzz/late").is_none(), "not reached");
        assert_eq!(
            check(&baseline, r, "/srv/zzz/late"),
            ImageCheck::Unchanged,
            "there before the scan"
        );
        executable(&r.join("srv/zzz/dropped"), b"evil");
        assert_eq!(
            check(&baseline, r, "/srv/zzz/dropped"),
            ImageCheck::NotInImage
        );
        assert_eq!(
            check(&baseline, r, "/tmp/early"),
            ImageCheck::NotInImage,
            "a temporary directory is never the image"
        );
        // Renaming an image program sets its change time: drift again.
        fs::rename(r.join("srv/zzz/late"), r.join("srv/zzz/renamed")).unwrap();
        assert_eq!(
            check(&baseline, r, "/srv/zzz/renamed"),
            ImageCheck::NotInImage
        );
        let complete = Baseline::scan(r);
        executable(&r.join("srv/zzz/after"), b"after");
        assert_eq!(
            check(&complete, r, "/srv/zzz/after"),
            ImageCheck::NotInImage
        );
    }

    #[test]
    fn a_partial_baseline_stays_partial_across_a_restart() {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        executable(&root.path().join("usr/bin/tool"), b"tool");
        let partial = Baseline::scan_within(
            root.path(),
            Budget {
                entries: 1,
                time: Duration::from_secs(60),
            },
        );
        let file = state.path().join("b.txt");
        partial.save(&file, "boot").unwrap();
        let text = fs::read_to_string(&file).unwrap();
        let again = Baseline::parse(&text, "boot", 0).unwrap();
        assert!(!again.is_complete());
        assert_eq!(again.taken_at, partial.taken_at);
        assert!(Baseline::parse(&text, "other boot", 0).is_none());
        // Saved before scans had a header: partial, taken when saved.
        let old = format!("boot\n{} 1 2 3 4 -\n", path_key("/usr/bin/tool"));
        let old = Baseline::parse(&old, "boot", 77).unwrap();
        assert!(!old.is_complete());
        assert_eq!(old.taken_at, 77);
        assert_eq!(old.get("/usr/bin/tool").map(|e| e.ino), Some(1));
    }

    #[test]
    fn hashes_its_own_executable() {
        let h = hash_exe(Path::new("/proc"), std::process::id() as i32, 1 << 30);
        let exe = std::env::current_exe().unwrap();
        assert_eq!(h, hash_file(&exe, 1 << 30));
        assert!(h.is_some());
    }
}
