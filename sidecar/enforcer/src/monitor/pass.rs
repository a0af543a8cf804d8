//! A pass over the pod's processes: which PIDs to look at (from the
//! last-PID counter, see `schedule`), looking at them, and counting what
//! ran unobserved.

use super::*;

/// What the monitor keeps of the pod's processes between passes.
pub(super) struct Processes {
    pub(super) known: HashMap<i32, Seen>,
    /// Rules already reported per process (a re-exec or deletion re-judges
    /// the process; only what is new is reported).
    pub(super) reported: HashSet<(i32, u64, Rule)>,
    /// Processes whose executable could not be read, and why.
    pub(super) hidden: HashMap<i32, Unreadable>,
    /// Non-dumpable processes left time to finish a credential change.
    pub(super) transitions: HashMap<i32, Transition>,
    /// Per live process that was judged, for the observations.
    pub(super) notes: HashMap<i32, Note>,
    pub(super) identities: HashMap<(u64, u64, i64, u64), ExeIdentity>,
    /// Which processes each pass looks at (see `schedule`).
    pub(super) schedule: Schedule,
    /// Known processes looked at on every pass: young or unsettled ones.
    pub(super) watched: HashSet<i32>,
    /// PIDs handed out that the last pass found no process for, and
    /// whether an exec signal came with them: looked at once more before
    /// they count as unobserved, since the counter moves before a new
    /// process shows in /proc (and a listing would find it on the next
    /// pass).
    pub(super) unseen: Vec<(i32, bool)>,
    pub(super) exec_signals: u32,
    pub(super) unobserved: Unobserved,
}

impl Processes {
    pub(super) fn new(schedule: Schedule) -> Self {
        Self {
            known: HashMap::new(),
            reported: HashSet::new(),
            hidden: HashMap::new(),
            transitions: HashMap::new(),
            notes: HashMap::new(),
            identities: HashMap::new(),
            schedule,
            watched: HashSet::new(),
            unseen: Vec::new(),
            exec_signals: 0,
            unobserved: Unobserved::default(),
        }
    }
}

impl Monitor {
    /// One look at the pod's processes. What it costs depends on what
    /// happened since the last, not on how many processes there are: the
    /// PIDs handed out since are probed, the young and unsettled processes
    /// looked at again, and old ones re-read only on the schedule's budget
    /// (see `schedule`). Every process is listed and read in full only when
    /// the new PIDs are not known, and on the periodic sweep.
    pub(super) fn process_pass(
        &mut self,
        bundle: &RuntimeBundle,
        last_pid: Option<i32>,
        rejudge: bool,
    ) {
        let exec_seen = self.procs.exec_signals > 0;
        self.procs.exec_signals = 0;
        let plan = self
            .procs
            .schedule
            .plan(Instant::now(), last_pid, exec_seen, rejudge);
        let unobserved = std::mem::take(&mut self.procs.unseen)
            .into_iter()
            .filter(|(pid, exec)| self.still_unseen(*pid, bundle) && (*exec || exec_seen))
            .count() as u64;
        self.count_unobserved(unobserved);
        let gone = match plan.list_all {
            Some(why) => {
                tracing::trace!(?why, "listing every process");
                let gone = self.list_all(bundle, plan.window, why);
                if why.known_still_valid() {
                    self.look_again(bundle, true);
                }
                gone
            }
            None => {
                // Known ones first: what the window defers waits a pass.
                self.look_again(bundle, plan.recheck_old);
                self.probe_window(bundle, plan.window, exec_seen)
            }
        };
        self.procs.unseen = gone.into_iter().map(|pid| (pid, exec_seen)).collect();
    }

    /// Whether a PID the last pass found no process for is still none
    /// (judging it if it is one now).
    pub(super) fn still_unseen(&mut self, pid: i32, bundle: &RuntimeBundle) -> bool {
        match procfs::probe(self.proc_root(), pid) {
            procfs::Probe::Process(proc) | procfs::Probe::Fork(proc) => {
                self.observe(proc, bundle);
                false
            }
            procfs::Probe::Thread => false,
            procfs::Probe::Gone => !self.procs.known.contains_key(&pid),
        }
    }

    /// Lists every process and reads in full those not known, or all of
    /// them when what is known may name other processes by now (see
    /// `ListAll::known_still_valid`). Returns the PIDs of `window` no
    /// process was found for.
    pub(super) fn list_all(
        &mut self,
        bundle: &RuntimeBundle,
        window: Option<PidWindow>,
        why: ListAll,
    ) -> Vec<i32> {
        let pids = procfs::pids(self.proc_root());
        let alive: HashSet<i32> = pids.iter().copied().collect();
        // Before what has exited is forgotten: a PID an earlier pass saw
        // was judged, even if it is gone now. Live threads are no process.
        let gone: Vec<i32> = window.map_or_else(Vec::new, |w| {
            w.pids()
                .filter(|pid| *pid != self.self_pid)
                .filter(|pid| !alive.contains(pid) && !self.procs.known.contains_key(pid))
                .filter(|pid| !procfs::task_exists(self.proc_root(), *pid))
                .collect()
        });
        if why == ListAll::Rejudge {
            // Re-judge everything alive under the new policy: what was
            // allowed in audit is stopped once enforce arrives.
            self.procs.known.clear();
            self.procs.reported.clear();
        }
        self.procs.known.retain(|pid, _| alive.contains(pid));
        self.procs.hidden.retain(|pid, _| alive.contains(pid));
        self.procs.notes.retain(|pid, _| alive.contains(pid));
        self.procs.watched.retain(|pid| alive.contains(pid));
        // Findings of processes gone, and of a reused PID's earlier owner.
        let known = &self.procs.known;
        self.procs
            .reported
            .retain(|(pid, start, _)| known.get(pid).is_some_and(|seen| seen.start == *start));
        for pid in pids {
            // PID 1 is the pod's infrastructure (pause) process.
            if pid == self.self_pid || pid == 1 {
                continue;
            }
            if why.known_still_valid() && self.procs.known.contains_key(&pid) {
                continue;
            }
            match procfs::read(self.proc_root(), pid) {
                Some(proc) => self.observe(proc, bundle),
                None => self.forget(pid),
            }
        }
        gone
    }

    /// Probes each PID handed out since the last pass (one stat read
    /// each): processes are judged, threads passed over. Returns the PIDs
    /// no process was found for: ended already, or not yet in /proc.
    pub(super) fn probe_window(
        &mut self,
        bundle: &RuntimeBundle,
        window: Option<PidWindow>,
        exec_seen: bool,
    ) -> Vec<i32> {
        let Some(window) = window else {
            return Vec::new();
        };
        let mut gone = Vec::new();
        for pid in window.pids() {
            if pid == self.self_pid || pid == 1 {
                continue;
            }
            match procfs::probe(self.proc_root(), pid) {
                // The exec signal that woke this pass is likely its own,
                // still under way: judged on its next look (every pass
                // while young), once the exec is through. Judged now, its
                // name, link and executable could each be read on a
                // different side of the exec. A copy of a judged parent
                // has nothing new to judge meanwhile.
                procfs::Probe::Fork(proc) if exec_seen && self.copy_of_judged_parent(&proc) => {
                    self.defer(&proc)
                }
                procfs::Probe::Process(proc) | procfs::Probe::Fork(proc) => {
                    self.observe(proc, bundle)
                }
                procfs::Probe::Thread => {}
                // Known: listed by an earlier pass after it read the
                // counter, so seen and judged.
                procfs::Probe::Gone if self.procs.known.contains_key(&pid) => self.forget(pid),
                procfs::Probe::Gone => gone.push(pid),
            }
        }
        gone
    }

    /// Looks again at known processes: the watched ones (young, mid-exec,
    /// executable not yet readable) on every pass, all of them when
    /// `recheck_old`. So an old process that execs in place is judged
    /// within one interval of the exec signal, plus up to one PID poll for
    /// the wake-up (2-300 ms measured at the defaults), not on the pass the
    /// signal wakes: the schedule re-reads old processes at most once an
    /// interval while signals keep coming. One that execs with no signal at
    /// all (a static program run from memory) is judged on the next sweep.
    /// Re-reading every process on every exec signal made each new process
    /// cost as much as the pod holds.
    pub(super) fn look_again(&mut self, bundle: &RuntimeBundle, recheck_old: bool) {
        let pids: Vec<i32> = if recheck_old {
            self.procs.known.keys().copied().collect()
        } else {
            self.procs.watched.iter().copied().collect()
        };
        let now = Instant::now();
        for pid in pids {
            let Some(seen) = self.procs.known.get(&pid) else {
                self.procs.watched.remove(&pid);
                continue;
            };
            let age = now.saturating_duration_since(seen.first_seen);
            let settled = seen.settled();
            let full = match schedule::look(age, settled, recheck_old) {
                Look::Skip => false,
                Look::Full => true,
                Look::Link => match self.same_program(pid, &seen.image) {
                    Some(same) => !same,
                    None => {
                        self.forget(pid);
                        continue;
                    }
                },
            };
            if full {
                match procfs::read(self.proc_root(), pid) {
                    Some(proc) => self.observe(proc, bundle),
                    None => self.forget(pid),
                }
            } else if !schedule::watched(age, settled) {
                self.procs.watched.remove(&pid);
            }
        }
    }

    /// Whether `pid` still runs the program judged as `image`, from its
    /// executable link alone (its name where the link is unreadable: another
    /// UID, non-dumpable, or exited but not yet reaped): a readlink instead
    /// of a stat read and a readlink. None once it has gone.
    pub(super) fn same_program(&self, pid: i32, image: &str) -> Option<bool> {
        match procfs::exe_link_path(self.proc_root(), pid) {
            Ok(link) => Some(schedule::same_link(image, &link.to_string_lossy())),
            Err(_) => procfs::comm(self.proc_root(), pid).map(|c| schedule::same_name(image, &c)),
        }
    }

    /// Judges `proc` unless it is what was judged before: new, exec'd
    /// since, or its executable deleted.
    pub(super) fn observe(&mut self, proc: Proc, bundle: &RuntimeBundle) {
        let pid = proc.pid;
        let exe = procfs::exe_link(self.proc_root(), pid);
        let image = schedule::image(exe.as_ref().ok().map(String::as_str), &proc.comm);
        let now = Instant::now();
        let (first_seen, deferred) = match self.procs.known.get_mut(&pid) {
            Some(seen) if seen.start == proc.start && seen.image == image => {
                seen.retries = seen.retries.saturating_sub(1);
                let watched = schedule::watched(
                    now.saturating_duration_since(seen.first_seen),
                    seen.settled(),
                );
                self.watch(pid, watched);
                return;
            }
            Some(seen) if seen.start == proc.start => (seen.first_seen, seen.deferred),
            _ => (now, 0),
        };
        // An exec switches the executable, then the name, then lays out
        // the arguments: a name read before the link may still be the old
        // program's, and a pass that the link's change set off reads it
        // right in that gap. Once the arguments are there it is final.
        let (proc, image) = match &exe {
            Ok(link) if procfs::has_arguments(self.proc_root(), pid) => {
                match procfs::read(self.proc_root(), pid) {
                    Some(now) if now.start == proc.start && now.comm != proc.comm => {
                        let image = schedule::image(Some(link), &now.comm);
                        (now, image)
                    }
                    _ => (proc, image),
                }
            }
            _ => (proc, image),
        };
        let retries = if exe.is_err() { UNREADABLE_RETRIES } else { 0 };
        let may_defer = deferred < MAX_DEFERRALS;
        let view = self.evaluate_process(&proc, exe, bundle, may_defer);
        let seen = Seen {
            start: proc.start,
            // Left empty, the next pass judges it again.
            image: if view == View::MidExec {
                String::new()
            } else {
                image
            },
            retries,
            first_seen,
            deferred: deferred + u8::from(view == View::MidExec),
        };
        let watched = schedule::watched(now.saturating_duration_since(first_seen), seen.settled());
        self.procs.known.insert(pid, seen);
        self.watch(pid, watched);
    }

    /// Whether `proc`, not exec'd since its fork, still runs the program
    /// its parent was judged for.
    pub(super) fn copy_of_judged_parent(&self, proc: &Proc) -> bool {
        let Some(parent) = self.procs.known.get(&proc.ppid) else {
            return false;
        };
        parent.settled() == Settled::Yes
            && procfs::exe_link_path(self.proc_root(), proc.pid)
                .is_ok_and(|link| schedule::same_link(&parent.image, &link.to_string_lossy()))
    }

    /// Leaves `proc` for the next pass, as one found mid-exec is.
    pub(super) fn defer(&mut self, proc: &Proc) {
        let seen = Seen {
            start: proc.start,
            image: String::new(),
            retries: 0,
            first_seen: Instant::now(),
            deferred: 1,
        };
        self.procs.known.insert(proc.pid, seen);
        self.procs.watched.insert(proc.pid);
    }

    pub(super) fn watch(&mut self, pid: i32, watched: bool) {
        if watched {
            self.procs.watched.insert(pid);
        } else {
            self.procs.watched.remove(&pid);
        }
    }

    /// A process found gone. Its reported findings are dropped on the
    /// next full listing: they name its start time, so a reused PID is
    /// never taken for it.
    pub(super) fn forget(&mut self, pid: i32) {
        self.procs.known.remove(&pid);
        self.procs.hidden.remove(&pid);
        self.procs.notes.remove(&pid);
        self.procs.watched.remove(&pid);
    }

    /// Counts PIDs handed out that no pass saw as a process and that are
    /// gone: tasks that started and ended between passes. Only those that
    /// came with an exec signal are counted, so an app that churns threads
    /// is not taken for one that runs programs.
    pub(super) fn count_unobserved(&mut self, gone: u64) {
        if gone == 0 {
            return;
        }
        self.procs.unobserved.pending += gone;
        // Counted at once (heartbeats carry it); the event sums them up.
        self.reporter.add_unobserved(gone);
    }

    pub(super) fn report_unobserved(&mut self) {
        if self.procs.unobserved.pending == 0
            || self
                .procs
                .unobserved
                .last_report
                .is_some_and(|t| t.elapsed() < UNOBSERVED_REPORT_EVERY)
        {
            return;
        }
        let n = std::mem::take(&mut self.procs.unobserved.pending);
        self.procs.unobserved.last_report = Some(Instant::now());
        let total = self.reporter.unobserved();
        self.reporter.report(Event {
            id: self.reporter.next_id(),
            time_ms: now_ms(),
            kind: Rule::UnobservedProcesses.kind(),
            rule: Rule::UnobservedProcesses.as_str().into(),
            policy: None,
            mode: Mode::Audit,
            message: format!(
                "{n} processes ran unobserved: started and exited between two scans \
                 ({total} since start); programs ran that no rule could judge"
            ),
            process: None,
            action: None,
            exception: None,
            coverage: None,
        });
    }
}
