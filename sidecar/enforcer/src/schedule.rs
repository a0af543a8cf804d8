//! Which processes a pass looks at, and when: the pure decisions behind
//! the enforcer's process passes (the /proc reads are in `monitor` and
//! `procfs`).
//!
//! A new process must cost the same however many are already in the pod.
//! The PIDs handed out since the last pass are exactly those between the
//! last pass's reading of the PID namespace's last-PID counter and this
//! one's: a pass probes those, and re-reads the few processes that may
//! still change (young ones, between fork and exec). Older processes are
//! re-read on a time budget instead of on every exec signal: an old
//! process that execs in place is judged within one interval of the exec
//! signal (250 ms by default, where it used to be the next pass); one that
//! execs without any signal (a static program run from memory) or loses
//! its executable, within a sweep. The budget is what the pod's size still
//! costs: one executable-link read per old process and interval while exec
//! signals keep coming, whatever their rate.

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

/// Past pid_max the kernel hands out PIDs again from here (RESERVED_PIDS
/// in kernel/pid.c, in every PID namespace once its counter has passed
/// it): PIDs below it are never reused, and a window that wraps skips them.
pub const PID_WRAP_TO: i32 = 300;

/// The widest window probed PID by PID: wider, one listing of /proc costs
/// less than probing each PID.
pub const MAX_WINDOW: u64 = 4096;

/// More tasks a second than a pod starts: a window is trusted only while
/// the counter cannot have gone all the way round since the last pass (a
/// counter that comes back to where it was looks like no fork at all).
const MAX_FORK_RATE: u64 = 20_000;

/// Every process is listed, and looked at by its executable link, at
/// least once every this many intervals: what no signal shows (an exec
/// from memory, a deleted executable, a process the window missed) is
/// seen then. A readable process that only renames itself is not judged
/// again: the name is its own choice, its program is what was judged.
pub const SWEEP_EVERY: u32 = 8;

/// Processes younger than this are re-read on every pass: fork and exec
/// come close together, and a pass may land between them.
pub const YOUNG: Duration = Duration::from_secs(2);

/// The PIDs handed out between two readings of the last-PID counter:
/// `(after, upto]`, across the wrap at pid_max.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PidWindow {
    after: i32,
    upto: i32,
    pid_max: i32,
}

impl PidWindow {
    pub fn new(after: i32, upto: i32, pid_max: i32) -> Self {
        Self {
            after,
            upto,
            pid_max,
        }
    }

    /// Before the wrap, and after it if it wrapped.
    fn ranges(&self) -> (RangeInclusive<i32>, Option<RangeInclusive<i32>>) {
        if self.upto >= self.after {
            (self.after + 1..=self.upto, None)
        } else {
            (
                self.after + 1..=self.pid_max - 1,
                Some(PID_WRAP_TO..=self.upto),
            )
        }
    }

    /// How many PIDs it holds.
    pub fn len(&self) -> u64 {
        let (a, b) = self.ranges();
        span(&a) + b.as_ref().map_or(0, span)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Its PIDs in the order the kernel handed them out.
    pub fn pids(&self) -> impl Iterator<Item = i32> {
        let (a, b) = self.ranges();
        a.chain(b.into_iter().flatten())
    }

    /// The last `n` PIDs handed out: all of them when there are no more.
    pub fn tail(&self, n: u64) -> Self {
        let len = self.len();
        if len <= n {
            return *self;
        }
        let skip = i64::try_from(len - n).unwrap_or(i64::MAX);
        let (a, _) = self.ranges();
        let first_part = i64::try_from(span(&a)).unwrap_or(i64::MAX);
        let after = if skip < first_part {
            i64::from(self.after) + skip
        } else {
            // Skips all of the part before the wrap.
            i64::from(PID_WRAP_TO) - 1 + (skip - first_part)
        };
        Self {
            after: i32::try_from(after).unwrap_or(self.upto),
            ..*self
        }
    }
}

fn span(r: &RangeInclusive<i32>) -> u64 {
    u64::try_from(i64::from(*r.end()) - i64::from(*r.start()) + 1).unwrap_or(0)
}

/// Why a pass lists every process instead of probing the PIDs handed out
/// since the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListAll {
    /// Nothing is known yet.
    FirstPass,
    /// The last-PID counter cannot be read.
    NoCounter,
    /// So long since the last pass that the counter may have gone round.
    LongGap,
    /// More PIDs handed out than are worth probing one by one.
    WideWindow,
    /// The policy changed: everything alive is judged again.
    Rejudge,
    /// The periodic full look (see [`SWEEP_EVERY`]).
    Sweep,
}

impl ListAll {
    /// Whether what is known still names the right processes, so a known
    /// PID needs only a look at its executable link (see [`Look::Link`]).
    /// Not when PIDs may have been handed out unseen: a known PID may be
    /// another process by now, with the same executable but other
    /// arguments, and only its start time tells.
    pub fn known_still_valid(self) -> bool {
        match self {
            ListAll::Sweep => true,
            ListAll::FirstPass
            | ListAll::NoCounter
            | ListAll::LongGap
            | ListAll::WideWindow
            | ListAll::Rejudge => false,
        }
    }
}

/// What one pass does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Every process listed (the unknown ones read in full, the known ones
    /// too unless [`ListAll::known_still_valid`]), and why.
    pub list_all: Option<ListAll>,
    /// The PIDs handed out since the last pass, when known (their last
    /// [`MAX_WINDOW`] on a wide window): probed one by one when nothing
    /// is listed; checked for "started and gone" either way.
    pub window: Option<PidWindow>,
    /// Re-read processes past [`YOUNG`] too (their executable link, in
    /// full when it changed): an exec signal came and the last such
    /// re-read is an interval old.
    pub recheck_old: bool,
}

/// When passes look at what: the state between passes.
#[derive(Debug)]
pub struct Schedule {
    interval: Duration,
    pid_max: i32,
    last_pid: Option<i32>,
    last_pass: Option<Instant>,
    last_recheck: Option<Instant>,
    last_sweep: Option<Instant>,
    /// An exec signal came since old processes were last re-read.
    exec_pending: bool,
}

impl Schedule {
    pub fn new(interval: Duration, pid_max: i32) -> Self {
        Self {
            interval,
            pid_max,
            last_pid: None,
            last_pass: None,
            last_recheck: None,
            last_sweep: None,
            exec_pending: false,
        }
    }

    /// The last-PID counter as the last pass read it.
    pub fn last_pid(&self) -> Option<i32> {
        self.last_pid
    }

    /// Whether a pass is due at `now` without any new signal: one a
    /// regular interval after the last, or the re-read an exec signal
    /// asked for once its interval has passed.
    pub fn due(&self, now: Instant) -> bool {
        let since = |t: Option<Instant>| t.is_none_or(|t| now.duration_since(t) >= self.interval);
        since(self.last_pass) || (self.exec_pending && since(self.last_recheck))
    }

    /// The plan for a pass at `now`, with the last-PID counter at
    /// `last_pid`; `exec_signal`: an exec signal came since the last
    /// pass; `rejudge`: the policy changed.
    pub fn plan(
        &mut self,
        now: Instant,
        last_pid: Option<i32>,
        exec_signal: bool,
        rejudge: bool,
    ) -> Plan {
        self.exec_pending |= exec_signal;
        let elapsed = |t: Option<Instant>| t.map(|t| now.duration_since(t));
        let wrap_safe =
            Duration::from_secs_f64(f64::from(self.pid_max.max(1)) / MAX_FORK_RATE as f64);
        let window = match (self.last_pid, last_pid) {
            (Some(before), Some(now_pid))
                if elapsed(self.last_pass).is_some_and(|e| e < wrap_safe) =>
            {
                Some(PidWindow::new(before, now_pid, self.pid_max))
            }
            _ => None,
        };
        let sweep_due = elapsed(self.last_sweep).is_none_or(|e| e >= self.interval * SWEEP_EVERY);
        let list_all = if rejudge {
            Some(ListAll::Rejudge)
        } else if last_pid.is_none() {
            Some(ListAll::NoCounter)
        } else if self.last_pid.is_none() {
            Some(ListAll::FirstPass)
        } else if window.is_none() {
            Some(ListAll::LongGap)
        } else if window.is_some_and(|w| w.len() > MAX_WINDOW) {
            Some(ListAll::WideWindow)
        } else if sweep_due {
            Some(ListAll::Sweep)
        } else {
            None
        };
        let recheck_old = list_all.is_none()
            && self.exec_pending
            && elapsed(self.last_recheck).is_none_or(|e| e >= self.interval);
        if list_all.is_some() || recheck_old {
            self.last_recheck = Some(now);
            self.exec_pending = false;
        }
        if list_all.is_some() {
            self.last_sweep = Some(now);
        }
        self.last_pass = Some(now);
        self.last_pid = last_pid.or(self.last_pid);
        Plan {
            list_all,
            window: window.map(|w| w.tail(MAX_WINDOW)),
            recheck_old,
        }
    }
}

/// How a known process is looked at in a pass that lists nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look {
    /// Not at all this pass.
    Skip,
    /// Its executable link (its name where the link is unreadable); in
    /// full only if that changed. Enough: an exec changes the link, and
    /// the name along with it before its arguments appear (see
    /// [`Settled`]).
    Link,
    /// Everything, as a new process.
    Full,
}

/// Whether what was judged of a process is final.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    Yes,
    /// Found mid-exec (or its executable not yet readable): judged again
    /// on the next pass.
    No,
}

/// How to look at a known process of age `age` in a pass that lists
/// nothing; `recheck_old`: this pass re-reads old processes.
pub fn look(age: Duration, settled: Settled, recheck_old: bool) -> Look {
    match settled {
        Settled::No => Look::Full,
        Settled::Yes if age < YOUNG || recheck_old => Look::Link,
        Settled::Yes => Look::Skip,
    }
}

/// Whether a process needs looking at on every pass.
pub fn watched(age: Duration, settled: Settled) -> bool {
    settled == Settled::No || age < YOUNG
}

/// What is remembered of a judged process's program: its executable link
/// (when readable) and its name. The name is part of it because mid-exec
/// the link can already be the new program while the name is the old.
pub fn image(link: Option<&str>, comm: &str) -> String {
    match link {
        Some(link) => format!("{link}\0{comm}"),
        None => comm.to_string(),
    }
}

/// Whether `image` was taken with the executable link `link`.
pub fn same_link(image: &str, link: &str) -> bool {
    image
        .strip_prefix(link)
        .is_some_and(|rest| rest.starts_with('\0'))
}

/// Whether `image` was taken, with no readable link, under the name `comm`.
pub fn same_name(image: &str, comm: &str) -> bool {
    image == comm
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn pids(w: PidWindow) -> Vec<i32> {
        w.pids().collect()
    }

    #[test]
    fn a_window_holds_exactly_the_pids_handed_out_since_the_last_pass() {
        let w = PidWindow::new(100, 105, 32768);
        assert_eq!(pids(w), vec![101, 102, 103, 104, 105]);
        assert_eq!(w.len(), 5);
        assert!(PidWindow::new(100, 100, 32768).is_empty());
        assert_eq!(pids(PidWindow::new(100, 100, 32768)), Vec::<i32>::new());
    }

    #[test]
    fn a_window_wraps_at_pid_max_to_the_first_reusable_pid() {
        let w = PidWindow::new(32765, 302, 32768);
        assert_eq!(pids(w), vec![32766, 32767, 300, 301, 302]);
        assert_eq!(w.len(), 5);
        // Wrapped, with nothing yet handed out after the wrap.
        let w = PidWindow::new(32766, 299, 32768);
        assert_eq!(pids(w), vec![32767]);
        assert_eq!(w.len(), 1);
    }

    #[test]
    fn the_tail_of_a_window_is_its_last_pids() {
        let w = PidWindow::new(100, 110, 32768);
        assert_eq!(pids(w.tail(3)), vec![108, 109, 110]);
        assert_eq!(w.tail(100), w);
        let wrapped = PidWindow::new(32765, 302, 32768);
        assert_eq!(pids(wrapped.tail(4)), vec![32767, 300, 301, 302]);
        assert_eq!(pids(wrapped.tail(2)), vec![301, 302]);
        assert_eq!(wrapped.tail(2).len(), 2);
    }

    fn schedule() -> (Schedule, Instant) {
        (Schedule::new(250 * MS, 32768), Instant::now())
    }

    #[test]
    fn the_first_pass_lists_everything_and_later_ones_probe_the_window() {
        let (mut s, t0) = schedule();
        let first = s.plan(t0, Some(500), false, false);
        assert_eq!(first.list_all, Some(ListAll::FirstPass));
        assert_eq!(first.window, None);
        let next = s.plan(t0 + 10 * MS, Some(503), true, false);
        assert_eq!(next.list_all, None);
        assert_eq!(next.window, Some(PidWindow::new(500, 503, 32768)));
        let quiet = s.plan(t0 + 20 * MS, Some(503), false, false);
        assert_eq!(quiet.list_all, None);
        assert!(quiet.window.is_some_and(|w| w.is_empty()));
    }

    #[test]
    fn without_the_counter_every_pass_lists_everything() {
        let (mut s, t0) = schedule();
        for i in 0..3 {
            let plan = s.plan(t0 + i * 10 * MS, None, true, false);
            assert_eq!(plan.list_all, Some(ListAll::NoCounter));
            assert_eq!(plan.window, None);
        }
    }

    #[test]
    fn a_wide_window_lists_everything_and_counts_only_its_tail() {
        let (mut s, t0) = schedule();
        s.plan(t0, Some(1000), false, false);
        let plan = s.plan(t0 + 10 * MS, Some(9000), true, false);
        assert_eq!(plan.list_all, Some(ListAll::WideWindow));
        let w = plan.window.expect("the tail is still checked");
        assert_eq!(w.len(), MAX_WINDOW);
        assert_eq!(w.pids().last(), Some(9000));
    }

    #[test]
    fn a_long_gap_distrusts_the_window_the_counter_may_have_gone_round() {
        let (mut s, t0) = schedule();
        s.plan(t0, Some(1000), false, false);
        // 32768 PIDs at 20k a second take 1.6 s.
        let plan = s.plan(t0 + Duration::from_secs(2), Some(1000), false, false);
        assert_eq!(plan.list_all, Some(ListAll::LongGap));
        assert_eq!(plan.window, None);
        // With pid_max at 4M the same gap is safe.
        let mut big = Schedule::new(250 * MS, 4_194_304);
        big.plan(t0, Some(1000), false, false);
        let plan = big.plan(t0 + Duration::from_secs(2), Some(1000), false, false);
        assert_eq!(plan.list_all, Some(ListAll::Sweep));
        assert!(plan.window.is_some());
    }

    #[test]
    fn a_policy_change_lists_everything_but_still_counts_the_window() {
        let (mut s, t0) = schedule();
        s.plan(t0, Some(1000), false, false);
        let plan = s.plan(t0 + 10 * MS, Some(1002), false, true);
        assert_eq!(plan.list_all, Some(ListAll::Rejudge));
        assert_eq!(plan.window, Some(PidWindow::new(1000, 1002, 32768)));
    }

    #[test]
    fn exec_signals_re_read_old_processes_at_most_once_an_interval() {
        let (mut s, t0) = schedule();
        s.plan(t0, Some(1000), false, false);
        // The first pass was a full look: old processes are fresh.
        let soon = s.plan(t0 + 10 * MS, Some(1001), true, false);
        assert!(!soon.recheck_old);
        assert!(!s.due(t0 + 20 * MS));
        // The signal is remembered: the re-read comes once the interval is up,
        // on a pass of its own if nothing else wakes the enforcer.
        assert!(s.due(t0 + 250 * MS));
        let later = s.plan(t0 + 250 * MS, Some(1001), false, false);
        assert!(later.recheck_old);
        assert_eq!(later.list_all, None);
        // Many signals within an interval: one re-read.
        let mut rechecks = 0;
        for i in 1..=25 {
            let plan = s.plan(
                t0 + 250 * MS + i * 10 * MS,
                Some(1001 + i as i32),
                true,
                false,
            );
            rechecks += u32::from(plan.recheck_old);
        }
        assert_eq!(rechecks, 1);
    }

    #[test]
    fn without_exec_signals_old_processes_wait_for_the_sweep() {
        let (mut s, t0) = schedule();
        s.plan(t0, Some(1000), false, false);
        let mut sweeps = Vec::new();
        for i in 1..=16u32 {
            let plan = s.plan(t0 + 250 * MS * i, Some(1000), false, false);
            assert!(!plan.recheck_old);
            if plan.list_all == Some(ListAll::Sweep) {
                sweeps.push(i);
            }
        }
        assert_eq!(sweeps, vec![8, 16]);
    }

    #[test]
    fn only_the_sweep_trusts_what_is_known_of_each_pid() {
        assert!(ListAll::Sweep.known_still_valid());
        for blind in [
            ListAll::FirstPass,
            ListAll::NoCounter,
            ListAll::LongGap,
            ListAll::WideWindow,
            ListAll::Rejudge,
        ] {
            assert!(!blind.known_still_valid(), "{blind:?}");
        }
    }

    #[test]
    fn a_pass_is_due_an_interval_after_the_last() {
        let (mut s, t0) = schedule();
        assert!(s.due(t0));
        s.plan(t0, Some(1), false, false);
        assert!(!s.due(t0 + 100 * MS));
        assert!(s.due(t0 + 250 * MS));
    }

    #[test]
    fn young_and_unsettled_processes_are_looked_at_on_every_pass() {
        assert_eq!(look(MS, Settled::Yes, false), Look::Link);
        assert_eq!(look(YOUNG * 2, Settled::Yes, false), Look::Skip);
        assert_eq!(look(YOUNG * 2, Settled::Yes, true), Look::Link);
        assert_eq!(look(YOUNG * 2, Settled::No, false), Look::Full);
        assert!(watched(MS, Settled::Yes));
        assert!(watched(YOUNG * 2, Settled::No));
        assert!(!watched(YOUNG * 2, Settled::Yes));
    }

    #[test]
    fn an_image_is_recognised_by_its_link_or_without_one_by_its_name() {
        let img = image(Some("/usr/bin/python3.11"), "python3");
        assert!(same_link(&img, "/usr/bin/python3.11"));
        assert!(!same_link(&img, "/usr/bin/python3"));
        assert!(!same_link(&img, "/usr/bin/python3.11 (deleted)"));
        assert!(!same_link("", "/usr/bin/python3"));
        let hidden = image(None, "enforcer");
        assert!(same_name(&hidden, "enforcer"));
        assert!(!same_name(&hidden, "sh"));
        assert!(!same_link(&hidden, "enforcer"));
    }
}
