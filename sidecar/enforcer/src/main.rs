//! `palisade-enforcer`: the runtime enforcer injected into each pod.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use palisade_common::wire::Event;
use palisade_enforcer::config::Settings;
use palisade_enforcer::coverage::{self, observable_signals, ProtectionsWatch};
use palisade_enforcer::launches;
use palisade_enforcer::limits::LimitsWatch;
use palisade_enforcer::monitor::Monitor;
use palisade_enforcer::policy::{self, PolicyHolder};
use palisade_enforcer::report::{self, now_ms, Reporter};
use palisade_enforcer::rules::Rule;

/// How often what the enforcer can see is looked at again for heartbeats.
const PROTECTIONS_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

fn main() -> anyhow::Result<()> {
    // One malloc arena for all threads: the enforcer is mostly idle and must
    // stay within a few MiB of RSS in every pod.
    // SAFETY: mallopt only tunes the allocator; called before other threads exist.
    // (musl, the static build, has a single small heap and needs no tuning.)
    #[cfg(target_env = "gnu")]
    #[allow(unsafe_code)]
    unsafe {
        nix::libc::mallopt(nix::libc::M_ARENA_MAX, 1);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(false)
        .init();
    // The app runs as the same UID: non-dumpable, the enforcer's memory,
    // fds and /proc entries are closed to it (no ptrace, no reading its
    // token from /proc/PID/environ or its fds).
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!(error = %e, "cannot make the enforcer non-dumpable");
    }
    let settings =
        Settings::from_env(|k| std::env::var(k).ok()).context("reading PALISADE_* settings")?;
    // First: the app containers' launchers report to it as they start.
    let launch_reports = launches::bind();
    std::fs::create_dir_all(&settings.state_dir)
        .with_context(|| format!("creating state directory {}", settings.state_dir.display()))?;

    let term = Arc::new(AtomicBool::new(false));
    let int = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGTERM, term.clone())
        .context("installing signal handlers")?;
    signal_hook::flag::register(signal_hook::consts::SIGINT, int.clone())
        .context("installing signal handlers")?;
    let stop = Arc::new(AtomicBool::new(false));

    let (holder, source) = PolicyHolder::start(&settings.state_dir);
    let holder = Arc::new(holder);
    tracing::info!(source, etag = %holder.current().etag, "runtime policy loaded");

    let (policy_client, report_client) = palisade_enforcer::http::clients(&settings)?;
    let reporter = Reporter::new(
        &settings.state_dir,
        settings.policy_url.is_none(),
        settings.spool_max_bytes,
    );
    let sender = report::spawn(settings.clone(), report_client, &reporter, holder.clone());
    match launch_reports {
        Ok(listener) => {
            launches::spawn(listener, settings.proc_root.clone(), reporter.clone())
                .context("starting the launch report thread")?;
        }
        Err(error) => launches::report_unavailable(&reporter, &error),
    }
    let fetcher = {
        let (settings, holder, stop) = (settings.clone(), holder.clone(), stop.clone());
        let reporter = reporter.clone();
        std::thread::Builder::new()
            .name("policy".into())
            .stack_size(256 * 1024)
            .spawn(move || policy::sync_loop(policy_client, settings, holder, reporter, stop))
            .context("starting the policy thread")?
    };

    // Read before anything else could have changed them: the enforcer
    // never changes its own limits, so every later change is someone else's.
    let mut limits = LimitsWatch::new(settings.proc_root.join("self"));
    let mut monitor = Monitor::new(settings.clone(), holder, reporter.clone());
    // "Started" once the first pass has taken baselines and set watches.
    monitor.tick();
    let first = monitor.coverage(false);
    let signals = observable_signals(&settings, &first);
    let (mut protections, off) = ProtectionsWatch::new(&first);
    let off_text = coverage::describe(&off);
    tracing::info!(%signals, protections = %off_text, "enforcer started");
    reporter.set_protections_off(off);
    reporter.report(Event::enforcer(
        format!("{}-started", reporter.boot_id()),
        now_ms(),
        Rule::EnforcerStarted.as_str(),
        format!("policy from {source}; {off_text}; {signals}"),
    ));
    let mut protections_checked = Instant::now();
    let reason = loop {
        if term.load(Ordering::Relaxed) {
            break "SIGTERM";
        }
        if int.load(Ordering::Relaxed) {
            break "SIGINT";
        }
        // Wakes at once on an exec signal; otherwise looks at the
        // last-PID counter every `pid_poll`.
        let started = Instant::now();
        monitor.wait(settings.pid_poll);
        monitor.tick();
        monitor.settle_hidden();
        for change in limits.check() {
            reporter.report(Event::enforcer(
                reporter.next_id(),
                now_ms(),
                Rule::LimitsChanged.as_str(),
                change.describe(limits.cpu_used()),
            ));
        }
        if protections_checked.elapsed() >= PROTECTIONS_EVERY {
            protections_checked = Instant::now();
            let (all, settled) = (monitor.coverage(false), monitor.coverage(true));
            if let Some(off) = protections.update(&all, &settled) {
                let text = coverage::describe(&off);
                tracing::warn!(protections = %text, "what the enforcer can protect changed");
                reporter.set_protections_off(off);
                reporter.report(Event::enforcer(
                    reporter.next_id(),
                    now_ms(),
                    Rule::ProtectionsChanged.as_str(),
                    text,
                ));
            }
        }
        // A storm of execs must not turn into a busy loop.
        if started.elapsed() < std::time::Duration::from_millis(1) {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    };
    stop.store(true, Ordering::Relaxed);

    // The last heartbeat tells the service this silence is expected.
    tracing::info!(reason, "stopping: flushing reports");
    drop(monitor);
    sender.stop(reason);
    // The fetcher may sit in a long-poll; the process exit ends it.
    drop(fetcher);
    Ok(())
}
