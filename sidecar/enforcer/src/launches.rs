//! Coverage reports from the launchers of the pod's app containers: what
//! Landlock enforces in each container, forwarded to the policy service as
//! `enforcer/prevention` events (the container's log alone reaches nobody).
//!
//! The socket is abstract, in the pod's network namespace, so any process
//! in the pod can connect. A report is taken only from a process that the
//! container runtime started (its parent is outside the pod's PID
//! namespace, so `ppid` reads 0) and that is still running the launcher
//! from its read-only volume: the launcher waits for the answer before it
//! execs the app. An app cannot forge its container's coverage this way;
//! what it can do (bind the name first if the enforcer restarts) is
//! reported.

use std::io::{Read, Write};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use palisade_common::launch::{
    CoverageSummary, LandlockSupport, LAUNCHER_PATH, REPORT_ACK, REPORT_MAX_BYTES, REPORT_SOCKET,
};
use palisade_common::wire::Event;

use crate::report::{now_ms, Reporter};
use crate::rules::{self, Rule};
use crate::{drift, procfs};

/// How long one launcher may take to send its report.
const READ_PATIENCE: Duration = Duration::from_secs(1);

/// Who is on the other end of a connection, as /proc tells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub pid: i32,
    /// `None`: the process is gone or unreadable.
    pub ppid: Option<i32>,
    pub start: Option<u64>,
    /// The executable's path inside its container, or the kernel's link
    /// when the file is deleted (`None`: unreadable).
    pub exe: Option<String>,
}

/// Why a report was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the sender is gone or unreadable")]
    Unknown,
    #[error("the sender was started inside the pod (parent {0}), not by the container runtime")]
    NotStartedByRuntime(i32),
    #[error("the sender runs {0}, not {LAUNCHER_PATH}")]
    NotTheLauncher(String),
    #[error("the report is not valid: {0}")]
    Malformed(String),
    #[error("the report names no container")]
    NoContainer,
}

/// Talks only to the launcher a container started with: a process the
/// runtime started (`ppid` 0) running the launcher from its volume.
/// Checked as the connection is accepted, so that nothing else gets the
/// read time, and again once the report is in (the launcher waits for the
/// answer, so it is still the launcher then).
pub fn authenticate(peer: &Peer) -> Result<(), Refusal> {
    match (peer.ppid, &peer.exe) {
        (None, _) | (_, None) => Err(Refusal::Unknown),
        (Some(ppid), _) if ppid != 0 => Err(Refusal::NotStartedByRuntime(ppid)),
        (_, Some(exe)) if exe != LAUNCHER_PATH => Err(Refusal::NotTheLauncher(exe.clone())),
        _ => Ok(()),
    }
}

/// The report in `line`, which must name its container.
pub fn parse(line: &str) -> Result<CoverageSummary, Refusal> {
    let summary: CoverageSummary =
        serde_json::from_str(line.trim_end()).map_err(|e| Refusal::Malformed(e.to_string()))?;
    match &summary.container {
        Some(name) if !name.is_empty() => Ok(summary),
        _ => Err(Refusal::NoContainer),
    }
}

/// One line for people: the container, the level, what is and is not
/// enforced and why.
pub fn describe(summary: &CoverageSummary) -> String {
    let container = summary.container.as_deref().unwrap_or("?");
    let level = summary.level.as_str();
    let landlock = match summary.landlock {
        LandlockSupport::Available(abi) => format!("Landlock ABI {abi}"),
        LandlockSupport::NotEnabled => "Landlock not enabled on the node".into(),
        LandlockSupport::NotImplemented => "Landlock unavailable (kernel or seccomp)".into(),
        LandlockSupport::Unknown => "Landlock could not be applied".into(),
    };
    let mut text = format!("container {container}: prevention {level} ({landlock})");
    if !summary.enforced.is_empty() {
        text.push_str(&format!("; enforced: {}", summary.enforced.join(", ")));
    }
    if !summary.not_enforced.is_empty() {
        let missing: Vec<String> = summary
            .not_enforced
            .iter()
            .map(|n| format!("{} ({})", n.protection, n.reason))
            .collect();
        text.push_str(&format!("; not enforced: {}", missing.join(", ")));
    }
    text
}

/// The `enforcer/prevention` event for one report: the text for people, the
/// summary itself for tools (`palisade status --coverage`).
pub fn coverage_event(id: String, time_ms: i64, summary: CoverageSummary) -> Event {
    Event::enforcer(
        id,
        time_ms,
        Rule::LaunchCoverage.as_str(),
        describe(&summary),
    )
    .with_coverage(summary)
}

/// Binds the socket. Done first thing at start: the app containers start
/// after the enforcer, so the name is free unless something took it.
pub fn bind() -> std::io::Result<UnixListener> {
    UnixListener::bind_addr(&SocketAddr::from_abstract_name(REPORT_SOCKET)?)
}

/// Says that coverage reports cannot be received (the name is taken: an
/// app squatting it after an enforcer restart would collect them).
pub fn report_unavailable(reporter: &Reporter, error: &std::io::Error) {
    tracing::warn!(%error, "cannot receive the launchers' coverage reports");
    reporter.report(Event::enforcer(
        reporter.next_id(),
        now_ms(),
        Rule::LaunchCoverage.as_str(),
        format!("cannot receive the launchers' coverage reports on @{REPORT_SOCKET}: {error}"),
    ));
}

/// Serves the socket on its own thread until the process exits.
pub fn spawn(
    listener: UnixListener,
    proc_root: PathBuf,
    reporter: Reporter,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("launches".into())
        .stack_size(128 * 1024)
        .spawn(move || serve(&listener, &proc_root, &reporter))
}

fn serve(listener: &UnixListener, proc_root: &Path, reporter: &Reporter) {
    let mut refused: u64 = 0;
    for stream in listener.incoming() {
        let Ok(stream) = stream else {
            // e.g. out of file descriptors: do not spin.
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        match take(&stream, proc_root) {
            Ok((summary, peer)) => {
                // The launcher waits for this before it becomes the app.
                let _ = (&stream).write_all(REPORT_ACK);
                let container = summary.container.clone().unwrap_or_default();
                let start = peer.start.unwrap_or_default().to_string();
                let id = rules::stable_id(
                    "l",
                    &[
                        Rule::LaunchCoverage.as_str(),
                        &container,
                        &peer.pid.to_string(),
                        &start,
                    ],
                );
                let event = coverage_event(id, now_ms(), summary);
                tracing::info!(pid = peer.pid, message = %event.message, "launch coverage");
                reporter.report(event);
            }
            Err(refusal) => {
                // Logged, bounded: a process looping on connect must not
                // fill the log.
                refused += 1;
                if refused.is_power_of_two() {
                    tracing::warn!(%refusal, refused, "coverage report refused");
                }
            }
        }
    }
}

fn take(stream: &UnixStream, proc_root: &Path) -> Result<(CoverageSummary, Peer), Refusal> {
    let pid = nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .map_err(|_| Refusal::Unknown)?
        .pid();
    let before = peer(proc_root, pid);
    authenticate(&before)?;
    let line = read_line(stream, Instant::now() + READ_PATIENCE)?;
    let after = peer(proc_root, pid);
    authenticate(&after)?;
    if after.start != before.start {
        return Err(Refusal::Unknown);
    }
    parse(&line).map(|summary| (summary, after))
}

/// One line of at most [`REPORT_MAX_BYTES`], all of it within `deadline`
/// (a per-read timeout alone would let a sender drip one byte at a time).
fn read_line(stream: &UnixStream, deadline: Instant) -> Result<String, Refusal> {
    let mut line = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline
            .checked_duration_since(Instant::now())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| Refusal::Malformed("not sent in time".into()))?;
        let _ = stream.set_read_timeout(Some(left));
        let n = (&*stream)
            .read(&mut chunk)
            .map_err(|e| Refusal::Malformed(e.to_string()))?;
        if n == 0 {
            return Err(Refusal::Malformed("closed before a full line".into()));
        }
        line.extend_from_slice(&chunk[..n]);
        if let Some(end) = line.iter().position(|b| *b == b'\n') {
            line.truncate(end);
            return String::from_utf8(line).map_err(|e| Refusal::Malformed(e.to_string()));
        }
        if line.len() > REPORT_MAX_BYTES {
            return Err(Refusal::Malformed("too long".into()));
        }
    }
}

/// The facts /proc gives about `pid`.
fn peer(proc_root: &Path, pid: i32) -> Peer {
    let proc = procfs::read(proc_root, pid);
    Peer {
        pid,
        ppid: proc.as_ref().map(|p| p.ppid),
        start: proc.as_ref().map(|p| p.start),
        exe: procfs::exe_link(proc_root, pid).ok().map(|link| {
            // As the container sees it (the link is relative to our root).
            let root = procfs::root_link(proc_root, pid);
            match drift::container_path(&link, root.as_deref()) {
                (path, false) => path,
                (_, true) => link,
            }
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_common::launch::CoverageLevel;

    const REPORT: &str = r#"{"event":"palisade-launch/coverage","container":"app","level":"partial","landlock":{"state":"available","abi":5},"noNewPrivs":true,"enforced":["execOnlyFromProgramDirs","ptraceScoped"],"notEnforced":[{"protection":"signalScoped","reason":"kernelAbiTooOld","needsAbi":6}],"programDirs":["/bin"]}"#;

    fn launcher(ppid: i32) -> Peer {
        Peer {
            pid: 42,
            ppid: Some(ppid),
            start: Some(7),
            exe: Some(LAUNCHER_PATH.into()),
        }
    }

    fn judge(peer: &Peer, line: &str) -> Result<CoverageSummary, Refusal> {
        authenticate(peer).and_then(|()| parse(line))
    }

    #[test]
    fn a_report_from_the_containers_launcher_is_taken_and_described() {
        let summary = judge(&launcher(0), REPORT).unwrap();
        assert_eq!(summary.level, CoverageLevel::Partial);
        assert_eq!(
            describe(&summary),
            "container app: prevention partial (Landlock ABI 5); enforced: \
             execOnlyFromProgramDirs, ptraceScoped; not enforced: signalScoped (kernelAbiTooOld)"
        );
    }

    #[test]
    fn the_app_cannot_forge_a_report() {
        assert_eq!(
            judge(&launcher(17), REPORT),
            Err(Refusal::NotStartedByRuntime(17)),
            "a process the app started"
        );
        let mut other = launcher(0);
        other.exe = Some("/tmp/palisade-launch".into());
        assert_eq!(
            judge(&other, REPORT),
            Err(Refusal::NotTheLauncher("/tmp/palisade-launch".into())),
            "the container's own entrypoint, but not the launcher (it has exec'd)"
        );
        let gone = Peer {
            ppid: None,
            exe: None,
            ..launcher(0)
        };
        assert_eq!(judge(&gone, REPORT), Err(Refusal::Unknown));
    }

    #[test]
    fn a_sender_dripping_bytes_gets_one_deadline_not_one_per_read() {
        let (reader, writer) = UnixStream::pair().unwrap();
        let drip = std::thread::spawn(move || {
            for _ in 0..20 {
                if (&writer).write_all(b"{").is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        let started = Instant::now();
        let refused = read_line(&reader, Instant::now() + Duration::from_millis(150));
        assert!(matches!(refused, Err(Refusal::Malformed(_))), "{refused:?}");
        assert!(started.elapsed() < Duration::from_millis(500));
        drop(reader);
        drip.join().unwrap();
        let (reader, writer) = UnixStream::pair().unwrap();
        (&writer).write_all(b"{\"a\":1}\nrest").unwrap();
        assert_eq!(
            read_line(&reader, Instant::now() + Duration::from_secs(5)).unwrap(),
            "{\"a\":1}"
        );
    }

    #[test]
    fn malformed_and_anonymous_reports_are_refused() {
        assert!(matches!(
            judge(&launcher(0), "{not json"),
            Err(Refusal::Malformed(_))
        ));
        let anonymous = REPORT.replace(r#""container":"app","#, "");
        assert_eq!(judge(&launcher(0), &anonymous), Err(Refusal::NoContainer));
    }

    #[test]
    fn the_prevention_event_carries_the_summary_and_its_description() {
        let summary = judge(&launcher(0), REPORT).unwrap();
        let event = coverage_event("l-1".into(), 9, summary.clone());
        assert_eq!(event.rule, "enforcer/prevention");
        assert_eq!(event.message, describe(&summary));
        assert_eq!(event.coverage, Some(summary));
    }

    #[test]
    fn a_kernel_without_landlock_says_so() {
        let summary = judge(
            &launcher(0),
            r#"{"container":"web","level":"none","landlock":{"state":"notEnabled"},"enforced":[],"notEnforced":[{"protection":"execOnlyFromProgramDirs","reason":"landlockNotEnabled"}]}"#,
        )
        .unwrap();
        assert_eq!(
            describe(&summary),
            "container web: prevention none (Landlock not enabled on the node); not enforced: \
             execOnlyFromProgramDirs (landlockNotEnabled)"
        );
    }
}
