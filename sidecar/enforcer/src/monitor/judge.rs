//! Judging one process: its container's baseline, the facts the checks
//! need (identity, image, hidden or not), the checks themselves
//! (`checks`), the kill, and what it ran for the observations.

use palisade_common::judge::{self, ExecutableFacts};

use super::*;
use crate::drift::ImageCheck;

/// What a process's events say of it besides what stat tells.
struct Reported {
    exe: Option<String>,
    cmdline: Vec<String>,
    sha256: Option<[u8; 32]>,
}

/// Whether an executable is the container image's own file, unchanged.
struct ImageView {
    /// Against the container's baseline whatever the process's age: what
    /// the observations and `allowedExecutables` / `zeroDrift` go by.
    whole: ImageCheck,
    /// As the drift rules see it: `Unknown` for a process that predates
    /// the container's first baseline.
    drift: ImageCheck,
}

impl Monitor {
    /// The container's baseline and watches, set up the first time one of
    /// its processes is seen.
    pub(super) fn container(&mut self, pid: i32, bundle: &RuntimeBundle) -> Option<(u64, u64)> {
        let id = procfs::root_id(self.proc_root(), pid)?;
        let root = self.proc_root().join(pid.to_string()).join("root");
        if !self.files.containers.contains_key(&id) {
            // Watch first: files dropped while the baseline is taken are seen.
            self.watch_dirs(&root, bundle);
            let started = Instant::now();
            let (baseline, source) = Baseline::load_or_scan(&root, &self.settings.state_dir, id);
            tracing::info!(
                pid,
                executables = baseline.len(),
                complete = baseline.is_complete(),
                took_ms = started.elapsed().as_millis() as u64,
                source = match source {
                    BaselineSource::Scanned => "scanned",
                    BaselineSource::Persisted => "kept from the container's first look",
                },
                "baseline for a container"
            );
            self.files.containers.insert(
                id,
                Container {
                    baseline,
                    source,
                    denied_for: String::new(),
                    denied_content: Vec::new(),
                },
            );
            // The walk read every program: those opens are not execs.
            if let Some(f) = self.files.watcher.as_mut() {
                f.forget_opens();
            }
            // The walk's transient allocations are freed; hand the pages
            // back so they do not count against the pod's memory.
            // SAFETY: malloc_trim only releases free heap memory.
            #[cfg(target_env = "gnu")]
            #[allow(unsafe_code)]
            unsafe {
                nix::libc::malloc_trim(0);
            }
        }
        let container = self.files.containers.get_mut(&id)?;
        if container.denied_for != bundle.etag {
            container.denied_for = bundle.etag.clone();
            container.denied_content = denied_content(&root, &mut container.baseline, bundle);
            if let Some(f) = self.files.watcher.as_mut() {
                f.forget_opens();
            }
        }
        Some(id)
    }

    /// Judges one process with the checks (`checks`): drift, identity,
    /// hiding and names; reports what is new and stops it where an
    /// enforcing policy says so. What it runs is added to the observations
    /// whatever the verdict.
    pub(super) fn evaluate_process(
        &mut self,
        proc: &Proc,
        exe: io::Result<String>,
        bundle: &RuntimeBundle,
        may_defer: bool,
    ) -> View {
        // Read once: the report keeps the first MAX_ARGS, the script check
        // (`foreign_code`) looks at them all.
        let args = procfs::cmdline(self.proc_root(), proc.pid);
        let argv: Vec<String> = args.iter().take(MAX_ARGS).cloned().collect();
        // Between switching to the new program and laying out its
        // arguments, an exec shows the new executable with no arguments
        // (and maybe the old name): judged on the next pass instead.
        if may_defer && exe.is_ok() && argv.is_empty() {
            return View::MidExec;
        }
        let root_id = self.container(proc.pid, bundle);
        let mut violations = Vec::new();
        let mut exe_path = None;
        let mut identity = ExeIdentity::default();
        let mut ran = None;
        // What `allowedExecutables` may pin: path and content of a file
        // that is still there (a deleted one's path says nothing).
        let mut pinnable: Option<(String, String)> = None;
        match &exe {
            Ok(link) => {
                self.procs.hidden.remove(&proc.pid);
                self.procs.transitions.remove(&proc.pid);
                let root_link = procfs::root_link(self.proc_root(), proc.pid);
                let (path, deleted) = drift::container_path(link, root_link.as_deref());
                identity = self.identity(proc.pid, &path, root_id);
                let image = self.image_view(proc.pid, root_id, &path, &identity);
                if let Some(policy) = strictest(bundle.policies.iter().filter(|p| p.rules.drift)) {
                    let facts = checks::DriftFacts {
                        path: &path,
                        deleted,
                        image: image.drift,
                    };
                    violations.extend(checks::drift(
                        policy,
                        &proc.comm,
                        &facts,
                        &watched_paths(bundle),
                    ));
                    violations.extend(self.foreign_code(
                        proc,
                        root_link.as_deref(),
                        &path,
                        &args,
                        bundle,
                        policy,
                    ));
                }
                let sha256 = identity.sha256.map(hex::encode);
                if !deleted {
                    pinnable = sha256.clone().map(|s| (path.clone(), s));
                }
                // A deleted one: the file at that path now is not what runs.
                let from_image = !deleted && image.whole == ImageCheck::Unchanged;
                let facts = ExecutableFacts {
                    path: &path,
                    sha256: sha256.as_deref(),
                    from_image,
                };
                violations.extend(checks::executable(&bundle.policies, &facts, |p| {
                    self.weight(p, Rule::ExecutableNotAllowed)
                }));
                ran = Some(Observed::Executable {
                    path: path.clone(),
                    sha256,
                    from_image,
                });
                exe_path = Some(path);
            }
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                violations.extend(self.judge_unreadable(proc, bundle));
            }
            Err(_) => {}
        }
        let exe_name = exe_path.as_deref().map(rules::base_name);
        let names: Vec<&str> = std::iter::once(proc.comm.as_str())
            .chain(exe_name)
            .collect();
        let applet = if identity.multicall {
            rules::applet(exe_name.unwrap_or_default(), &argv)
        } else {
            None
        };
        let denied_content = root_id
            .and_then(|id| self.files.containers.get(&id))
            .map(|c| c.denied_content.as_slice())
            .unwrap_or_default();
        let process = rules::ProcessNames {
            names: &names,
            applet,
            identity: &identity,
            denied_content,
        };
        violations.extend(checks::names(
            &bundle.policies,
            &proc.comm,
            &process,
            |p, rule| self.weight(p, rule),
        ));
        let pins = |p: &RuntimePolicy| {
            pinnable.as_ref().is_some_and(|(path, sha256)| {
                let facts = ExecutableFacts {
                    path: path.as_str(),
                    sha256: Some(sha256.as_str()),
                    from_image: false,
                };
                judge::pinned(&p.rules, &facts)
            })
        };
        checks::attribute_drift(
            &mut violations,
            &bundle.policies,
            |p, rule| self.weight(p, rule),
            pins,
        );
        self.observe_run(proc, ran);
        let what = Reported {
            exe: exe_path,
            cmdline: argv,
            sha256: identity.sha256,
        };
        self.act(proc, violations, what);
        View::Complete
    }

    /// Reports what `proc` broke that was not reported before and, when an
    /// enforcing policy says so, stops it first: its events say how that
    /// went.
    fn act(&mut self, proc: &Proc, mut violations: Vec<Violation<'_>>, what: Reported) {
        // The checks never attribute a finding to a learning policy; should
        // one ever, it neither reports nor stops.
        violations.retain(|v| self.acted_mode(v) != Mode::Learn);
        violations.retain(|v| self.procs.reported.insert((proc.pid, proc.start, v.rule)));
        if violations.is_empty() {
            return;
        }
        let info = ProcessInfo {
            pid: proc.pid,
            ppid: proc.ppid,
            uid: procfs::uid(self.proc_root(), proc.pid),
            comm: proc.comm.clone(),
            exe: what.exe,
            cmdline: what.cmdline,
            sha256: what.sha256.map(hex::encode),
        };
        let action = rules::kills(
            violations
                .iter()
                .map(|v| (v.rule, self.acted_mode(v), v.policy.rules.non_dumpable)),
        )
        .then(|| procfs::kill_exact(self.proc_root(), proc.pid, proc.start));
        for v in violations {
            let id = process_event_id(&v, self.acted_mode(&v), proc);
            self.emit(&v, id, Some(info.clone()), action.clone());
        }
    }

    /// A process whose executable the enforcer may not read: why is kept
    /// for coverage. A non-dumpable one of its own UID is judged by its
    /// name once a credential change that may have hidden it has had its
    /// moment (`judged_now`), and stopped where the policy says so (see
    /// `kills`); a name the policy allows to hide is left alone.
    fn judge_unreadable<'b>(
        &mut self,
        proc: &Proc,
        bundle: &'b RuntimeBundle,
    ) -> Option<Violation<'b>> {
        let ids = procfs::ids(self.proc_root(), proc.pid)?;
        let why = rules::why_unreadable(ids, self.own_uid, self.own_gid);
        self.procs.hidden.insert(proc.pid, why);
        if why != Unreadable::NonDumpable {
            return None;
        }
        checks::non_dumpable(&bundle.policies, &proc.comm, proc.pid, |p| {
            self.weight(p, Rule::NonDumpableProcess)
        })
        .filter(|_| self.judged_now(proc))
    }

    /// Whether `path` is the container image's own file, unchanged (see
    /// [`ImageView`]). The content compared is the running executable's
    /// (`identity`, hashed once per file version), not a second read of
    /// the file.
    fn image_view(
        &self,
        pid: i32,
        root_id: Option<(u64, u64)>,
        path: &str,
        identity: &ExeIdentity,
    ) -> ImageView {
        let Some(container) = root_id.and_then(|id| self.files.containers.get(&id)) else {
            return ImageView {
                whole: ImageCheck::Unknown,
                drift: ImageCheck::Unknown,
            };
        };
        let root = self.proc_root().join(pid.to_string()).join("root");
        let now = std::fs::metadata(drift::inside(&root, path))
            .ok()
            .map(|m| drift::Entry::of(&m, None));
        let whole = drift::image_check(Some(&container.baseline), path, now.as_ref(), || {
            identity.sha256
        });
        // Processes already running when a container's first baseline is
        // taken predate it: only what the path tells counts for drift. A
        // baseline kept from before a restart judges everything.
        let predates = self.first_pass && container.source != BaselineSource::Persisted;
        ImageView {
            whole,
            drift: if predates { ImageCheck::Unknown } else { whole },
        }
    }

    /// Adds one run of `proc` to the observations: what it runs (when
    /// readable) and its name with its parent's. Once per exec: a process
    /// judged again is not another run. Its container is read from its
    /// cgroup the first time it is seen.
    fn observe_run(&mut self, proc: &Proc, ran: Option<Observed>) {
        if !self.reporter.observing() {
            return;
        }
        let run = match &ran {
            Some(Observed::Executable { path, .. }) => format!("{path}\0{}", proc.comm),
            _ => proc.comm.clone(),
        };
        let parent = self
            .procs
            .notes
            .get(&proc.ppid)
            .map(|n| n.comm.clone())
            .unwrap_or_default();
        if self
            .procs
            .notes
            .get(&proc.pid)
            .is_none_or(|n| n.start != proc.start)
        {
            let note = Note {
                start: proc.start,
                container: procfs::container_id(self.proc_root(), proc.pid),
                comm: String::new(),
                recorded: String::new(),
            };
            self.procs.notes.insert(proc.pid, note);
        }
        let Some(note) = self.procs.notes.get_mut(&proc.pid) else {
            return;
        };
        note.comm.clone_from(&proc.comm);
        if note.recorded == run {
            return;
        }
        note.recorded = run;
        if let Some(item) = ran {
            self.reporter.observe(&note.container, item);
        }
        let item = Observed::Process {
            name: proc.comm.clone(),
            parent,
        };
        self.reporter.observe(&note.container, item);
    }

    /// Whether a non-dumpable process is judged on this look, or left the
    /// time `hidden::grace` gives it to finish a credential change
    /// (`settle_hidden` looks again once that is up).
    pub(super) fn judged_now(&mut self, proc: &Proc) -> bool {
        if let Some(t) = self
            .procs
            .transitions
            .get(&proc.pid)
            .filter(|t| t.start == proc.start)
        {
            let due = t.since.elapsed() >= t.grace;
            if due {
                self.procs.transitions.remove(&proc.pid);
            }
            return due;
        }
        let known_for = self
            .procs
            .known
            .get(&proc.pid)
            .filter(|seen| seen.start == proc.start)
            .map_or(Duration::ZERO, |seen| seen.first_seen.elapsed());
        let origin = if self.procs.hidden.get(&proc.ppid) == Some(&Unreadable::NonDumpable) {
            Origin::HiddenParent
        } else if proc.ppid == 0
            && owners::alone_in_cgroup(self.proc_root(), proc.pid, &[self.self_pid])
        {
            Origin::NewContainer
        } else {
            Origin::Other
        };
        let grace = hidden::grace(origin);
        if known_for >= grace || self.procs.transitions.len() >= MAX_TRANSITIONS {
            return true;
        }
        let now = Instant::now();
        self.procs.transitions.insert(
            proc.pid,
            Transition {
                start: proc.start,
                since: now.checked_sub(known_for).unwrap_or(now),
                grace,
            },
        );
        false
    }

    /// Judges the non-dumpable processes whose grace is up and that are
    /// still hidden (one that exec'd since was judged for what it runs).
    pub fn settle_hidden(&mut self) {
        if self.procs.transitions.is_empty() {
            return;
        }
        let due: Vec<(i32, u64)> = self
            .procs
            .transitions
            .iter()
            .filter(|(_, t)| t.since.elapsed() >= t.grace)
            .map(|(pid, t)| (*pid, t.start))
            .collect();
        if due.is_empty() {
            return;
        }
        let bundle = self.policy.current();
        for (pid, start) in due {
            match procfs::read(self.proc_root(), pid) {
                Some(proc) if proc.start == start => {
                    // What was judged of it is judged again, now.
                    if let Some(seen) = self.procs.known.get_mut(&pid) {
                        seen.image.clear();
                    }
                    self.observe(proc, &bundle);
                }
                _ => {}
            }
            self.procs.transitions.remove(&pid);
        }
    }

    /// Libraries and scripts that are not the image's: what an exec check
    /// alone misses (an image interpreter running a dropped script, an
    /// image program with a dropped library preloaded).
    pub(super) fn foreign_code<'a>(
        &self,
        proc: &Proc,
        root_link: Option<&Path>,
        exe: &str,
        argv: &[String],
        bundle: &RuntimeBundle,
        policy: &'a RuntimePolicy,
    ) -> Vec<Violation<'a>> {
        let mut violations = Vec::new();
        let temp_dirs = watched_paths(bundle);
        let mapped = procfs::executable_mappings(self.proc_root(), proc.pid);
        let inside: Vec<String> = mapped
            .iter()
            .map(|m| {
                let (p, deleted) = drift::container_path(m, root_link);
                if deleted {
                    format!("{p} (deleted)")
                } else {
                    p
                }
            })
            // The executable itself is judged by the exec rules.
            .filter(|p| p.trim_end_matches(" (deleted)") != exe && !p.starts_with("/memfd:"))
            .collect();
        let mut libraries = rules::foreign_mappings(inside.iter().map(String::as_str), &temp_dirs);
        for p in rules::preload_from_tmp(&procfs::environ(self.proc_root(), proc.pid), &temp_dirs) {
            if !libraries.contains(&p) {
                libraries.push(p);
            }
        }
        if !libraries.is_empty() {
            violations.push(Violation {
                rule: Rule::ForeignLibrary,
                policy,
                message: format!(
                    "{} loads code that is not in the image: {}",
                    proc.comm,
                    libraries.join(", ")
                ),
            });
        }
        if let Some(script) = rules::script_from_tmp(rules::base_name(exe), argv, &temp_dirs) {
            violations.push(Violation {
                rule: Rule::ScriptFromTmp,
                policy,
                message: format!(
                    "{} runs the script {script} from a temporary directory",
                    proc.comm
                ),
            });
        }
        violations
    }

    /// Content identity of a process's executable: from the baseline when
    /// the file is the image's unchanged one, else hashed (once per file
    /// version, cached).
    pub(super) fn identity(
        &mut self,
        pid: i32,
        path: &str,
        root_id: Option<(u64, u64)>,
    ) -> ExeIdentity {
        let exe = self.proc_root().join(pid.to_string()).join("exe");
        let Ok(meta) = std::fs::metadata(&exe) else {
            return ExeIdentity::default();
        };
        let key = (meta.dev(), meta.ino(), meta.ctime(), meta.size());
        if let Some(found) = self.procs.identities.get(&key) {
            return found.clone();
        }
        let now = drift::Entry::of(&meta, None);
        let proc_root = self.settings.proc_root.clone();
        let hash = || drift::hash_exe(&proc_root, pid, drift::HASH_LIMIT);
        let sha256 = match root_id.and_then(|id| self.files.containers.get_mut(&id)) {
            Some(c) if c.baseline.get(path).is_some() => c
                .baseline
                .content(path, &now, hash)
                .or_else(|| drift::hash_exe(&proc_root, pid, drift::HASH_LIMIT)),
            _ => hash(),
        };
        // The enforcer's own reads look like execs to the watcher.
        if let Some(f) = self.files.watcher.as_mut() {
            f.forget_opens();
        }
        // Hard-linked busybox installs name it `sh`, `ls`...: many links.
        let multicall = rules::is_multicall(rules::base_name(path)) || meta.nlink() > 8;
        let identity = ExeIdentity { sha256, multicall };
        if self.procs.identities.len() >= IDENTITY_CACHE_MAX {
            self.procs.identities.clear();
        }
        self.procs.identities.insert(key, identity.clone());
        identity
    }
}
