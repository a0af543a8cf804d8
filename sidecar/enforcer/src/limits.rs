//! The enforcer's own resource limits, watched for changes it did not
//! make. A process of its UID can lower them with `prlimit`: a CPU limit
//! gets the enforcer killed by the kernel with no signal anyone could
//! refuse, a file limit blinds it. Preventing that is the launcher's
//! seccomp filter; the enforcer reports what it notices
//! (`enforcer/limits-changed`), and never changes its own limits, so any
//! change is someone else's.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One resource limit, named as `getrlimit(2)` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    Cpu,
    FileSize,
    Data,
    Stack,
    Core,
    Rss,
    Processes,
    OpenFiles,
    LockedMemory,
    AddressSpace,
    FileLocks,
    PendingSignals,
    MsgqueueSize,
    NicePriority,
    RealtimePriority,
    RealtimeTimeout,
}

/// Each resource with its row label in /proc/PID/limits.
const ROWS: [(Resource, &str); 16] = [
    (Resource::Cpu, "Max cpu time"),
    (Resource::FileSize, "Max file size"),
    (Resource::Data, "Max data size"),
    (Resource::Stack, "Max stack size"),
    (Resource::Core, "Max core file size"),
    (Resource::Rss, "Max resident set"),
    (Resource::Processes, "Max processes"),
    (Resource::OpenFiles, "Max open files"),
    (Resource::LockedMemory, "Max locked memory"),
    (Resource::AddressSpace, "Max address space"),
    (Resource::FileLocks, "Max file locks"),
    (Resource::PendingSignals, "Max pending signals"),
    (Resource::MsgqueueSize, "Max msgqueue size"),
    (Resource::NicePriority, "Max nice priority"),
    (Resource::RealtimePriority, "Max realtime priority"),
    (Resource::RealtimeTimeout, "Max realtime timeout"),
];

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Cpu => "RLIMIT_CPU",
            Resource::FileSize => "RLIMIT_FSIZE",
            Resource::Data => "RLIMIT_DATA",
            Resource::Stack => "RLIMIT_STACK",
            Resource::Core => "RLIMIT_CORE",
            Resource::Rss => "RLIMIT_RSS",
            Resource::Processes => "RLIMIT_NPROC",
            Resource::OpenFiles => "RLIMIT_NOFILE",
            Resource::LockedMemory => "RLIMIT_MEMLOCK",
            Resource::AddressSpace => "RLIMIT_AS",
            Resource::FileLocks => "RLIMIT_LOCKS",
            Resource::PendingSignals => "RLIMIT_SIGPENDING",
            Resource::MsgqueueSize => "RLIMIT_MSGQUEUE",
            Resource::NicePriority => "RLIMIT_NICE",
            Resource::RealtimePriority => "RLIMIT_RTPRIO",
            Resource::RealtimeTimeout => "RLIMIT_RTTIME",
        }
    }

    /// What a lower limit does to the enforcer, where it matters.
    fn consequence(self) -> Option<&'static str> {
        match self {
            Resource::Cpu => {
                Some("the kernel kills the enforcer once it has used that much CPU time")
            }
            Resource::OpenFiles => {
                Some("the enforcer cannot open files, watches or connections beyond it")
            }
            Resource::AddressSpace | Resource::Data => {
                Some("allocations beyond it fail and the enforcer may abort")
            }
            Resource::Processes => Some("the enforcer cannot start threads beyond it"),
            Resource::FileSize => Some("its report spool cannot grow beyond it"),
            Resource::Stack => Some("a deeper stack kills the enforcer"),
            _ => None,
        }
    }
}

/// A soft or hard limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Value {
    Limited(u64),
    Unlimited,
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Limited(n) => write!(f, "{n}"),
            Value::Unlimited => f.write_str("unlimited"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub soft: Value,
    pub hard: Value,
}

pub type Limits = BTreeMap<Resource, Limit>;

fn value(text: &str) -> Option<Value> {
    match text {
        "unlimited" => Some(Value::Unlimited),
        n => n.parse().ok().map(Value::Limited),
    }
}

/// Parses /proc/PID/limits; rows it does not know or cannot read are left
/// out (a newer kernel may add rows).
pub fn parse(text: &str) -> Limits {
    let mut out = Limits::new();
    for line in text.lines() {
        let Some((resource, rest)) = ROWS
            .iter()
            .find_map(|(r, label)| line.strip_prefix(label).map(|rest| (*r, rest)))
        else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (Some(soft), Some(hard)) =
            (fields.next().and_then(value), fields.next().and_then(value))
        else {
            continue;
        };
        out.insert(resource, Limit { soft, hard });
    }
    out
}

/// A limit that changed between two readings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub resource: Resource,
    pub before: Limit,
    pub now: Limit,
}

/// Every limit that differs between `before` and `now`. A row missing from
/// one reading is no change (an unreadable row says nothing).
pub fn changes(before: &Limits, now: &Limits) -> Vec<Change> {
    now.iter()
        .filter_map(|(resource, now)| {
            let before = before.get(resource)?;
            (before != now).then_some(Change {
                resource: *resource,
                before: *before,
                now: *now,
            })
        })
        .collect()
}

impl Change {
    /// The event's message; `cpu_used` is the enforcer's CPU time so far,
    /// which says how close a CPU limit is.
    pub fn describe(&self, cpu_used: Option<Duration>) -> String {
        let mut text = format!(
            "{} of the enforcer changed from {}/{} to {}/{} (soft/hard) by another process: \
             the enforcer never changes its own limits",
            self.resource.as_str(),
            self.before.soft,
            self.before.hard,
            self.now.soft,
            self.now.hard,
        );
        if let Some(what) = self.resource.consequence() {
            text.push_str(&format!("; {what}"));
        }
        if let (Resource::Cpu, Some(used)) = (self.resource, cpu_used) {
            text.push_str(&format!(" (it has used {:.1} s)", used.as_secs_f64()));
        }
        text
    }
}

/// CPU time (user + system) from /proc/PID/stat, whose times are in
/// USER_HZ, 100 per second on every Linux.
pub fn parse_cpu_time(stat: &str) -> Option<Duration> {
    let after_comm = stat.get(stat.rfind(')')? + 2..)?;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    // utime and stime are fields 14 and 15 overall, 11 and 12 after comm.
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// How often the limits are read: a CPU limit below the CPU time already
/// used kills at once, and nothing can report that; any other is seen
/// within this.
const EVERY: Duration = Duration::from_millis(250);

/// The enforcer's limits as last read, and a look at them now and then.
pub struct LimitsWatch {
    proc_self: PathBuf,
    last: Limits,
    checked: Instant,
}

impl LimitsWatch {
    /// `proc_self` is /proc/self (a non-dumpable process still reads its
    /// own limits: the file is world-readable).
    pub fn new(proc_self: PathBuf) -> Self {
        let last = read(&proc_self);
        Self {
            proc_self,
            last,
            checked: Instant::now(),
        }
    }

    /// The limits changed since the last look, when a look is due.
    pub fn check(&mut self) -> Vec<Change> {
        if self.checked.elapsed() < EVERY {
            return Vec::new();
        }
        self.checked = Instant::now();
        let now = read(&self.proc_self);
        let found = changes(&self.last, &now);
        if !now.is_empty() {
            self.last = now;
        }
        found
    }

    pub fn cpu_used(&self) -> Option<Duration> {
        std::fs::read_to_string(self.proc_self.join("stat"))
            .ok()
            .and_then(|s| parse_cpu_time(&s))
    }
}

fn read(proc_self: &std::path::Path) -> Limits {
    std::fs::read_to_string(proc_self.join("limits"))
        .map(|t| parse(&t))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: &str = "\
Limit                     Soft Limit           Hard Limit           Units     
Max cpu time              unlimited            unlimited            seconds   
Max file size             unlimited            unlimited            bytes     
Max stack size            8388608              unlimited            bytes     
Max open files            20000                20000                files     
Max nice priority         0                    0                    
Max future thing          1                    1                    things    
";

    #[test]
    fn reads_every_row_the_kernel_writes() {
        let limits = parse(LIMITS);
        assert_eq!(limits.len(), 5, "the unknown row is left out");
        assert_eq!(
            limits[&Resource::OpenFiles],
            Limit {
                soft: Value::Limited(20000),
                hard: Value::Limited(20000)
            }
        );
        assert_eq!(limits[&Resource::Cpu].hard, Value::Unlimited);
        assert_eq!(limits[&Resource::NicePriority].soft, Value::Limited(0));
        let own = parse(&std::fs::read_to_string("/proc/self/limits").unwrap());
        assert_eq!(
            own.len(),
            ROWS.len(),
            "every row of this kernel's file is known"
        );
    }

    #[test]
    fn a_prlimit_of_open_files_is_one_change_naming_the_limit_and_both_values() {
        let before = parse(LIMITS);
        let after = parse(&LIMITS.replace(
            "Max open files            20000                20000",
            "Max open files            64                   64   ",
        ));
        let found = changes(&before, &after);
        assert_eq!(found.len(), 1);
        let text = found[0].describe(None);
        assert!(
            text.starts_with("RLIMIT_NOFILE of the enforcer changed from 20000/20000 to 64/64"),
            "{text}"
        );
        assert!(text.contains("cannot open files"), "{text}");
        assert!(changes(&after, &after).is_empty());
    }

    #[test]
    fn a_cpu_limit_says_how_much_cpu_the_enforcer_has_used() {
        let before = parse(LIMITS);
        let after = parse(&LIMITS.replace(
            "Max cpu time              unlimited            unlimited",
            "Max cpu time              1                    1        ",
        ));
        let found = changes(&before, &after);
        let text = found[0].describe(Some(Duration::from_millis(730)));
        assert!(
            text.starts_with("RLIMIT_CPU of the enforcer changed from unlimited/unlimited to 1/1"),
            "{text}"
        );
        assert!(text.ends_with("(it has used 0.7 s)"), "{text}");
    }

    #[test]
    fn an_unreadable_reading_is_no_change() {
        assert!(changes(&parse(LIMITS), &Limits::new()).is_empty());
        assert!(changes(&Limits::new(), &parse(LIMITS)).is_empty());
        assert!(parse("garbage\nMax open files   x  y\n").is_empty());
    }

    #[test]
    fn cpu_time_is_utime_plus_stime() {
        let stat = "42 (a b) S 1 42 42 0 -1 0 0 0 0 0 150 50 0 0 20 0 1 0 99 0 0";
        assert_eq!(parse_cpu_time(stat), Some(Duration::from_secs(2)));
        assert_eq!(parse_cpu_time("nonsense"), None);
        let own = std::fs::read_to_string("/proc/self/stat").unwrap();
        assert!(parse_cpu_time(&own).is_some());
    }

    #[test]
    fn the_watch_sees_another_process_lower_a_limit_with_prlimit() {
        let mut target = std::process::Command::new("sleep")
            .arg("10")
            .spawn()
            .unwrap();
        let mut watch = LimitsWatch::new(PathBuf::from(format!("/proc/{}", target.id())));
        watch.checked -= EVERY;
        assert!(watch.check().is_empty(), "nothing changed yet");
        let lowered = std::process::Command::new("prlimit")
            .args(["--pid", &target.id().to_string(), "--nofile=64:64"])
            .status()
            .unwrap();
        assert!(lowered.success());
        watch.checked -= EVERY;
        let found = watch.check();
        assert!(watch.check().is_empty(), "not due again yet");
        let _ = target.kill();
        let _ = target.wait();
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].resource, Resource::OpenFiles);
        assert_eq!(found[0].now.hard, Value::Limited(64));
        watch.checked -= EVERY;
        assert!(
            watch.check().is_empty(),
            "reported once; the process is gone now"
        );
    }
}
