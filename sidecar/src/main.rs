//! `palisade-enforcer`: the runtime agent injected into each pod.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use palisade_common::wire::{Event, EventKind};
use palisade_enforcer::config::Settings;
use palisade_enforcer::monitor::{observable_signals, Monitor};
use palisade_enforcer::policy::{self, PolicyHolder};
use palisade_enforcer::report::{self, now_ms};

fn main() -> anyhow::Result<()> {
    // One malloc arena for all threads: the enforcer is mostly idle and must
    // stay within a few MiB of RSS in every pod.
    // SAFETY: mallopt only tunes the allocator; called before other threads exist.
    // (musl, the static build, has a single small heap and needs no tuning.)
    #[cfg(target_env = "gnu")]
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
    let settings =
        Settings::from_env(|k| std::env::var(k).ok()).context("reading PALISADE_* settings")?;
    std::fs::create_dir_all(&settings.state_dir)
        .with_context(|| format!("creating state directory {}", settings.state_dir.display()))?;

    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, stop.clone()).context("installing signal handlers")?;
    }

    let (holder, source) = PolicyHolder::start(&settings.state_dir);
    let holder = Arc::new(holder);
    tracing::info!(source, etag = %holder.current().etag, "runtime policy loaded");

    let (policy_agent, report_agent) = palisade_enforcer::http::agents(&settings)?;
    let (reporter, sender) = report::spawn(settings.clone(), report_agent);
    let fetcher = {
        let (settings, holder, stop) = (settings.clone(), holder.clone(), stop.clone());
        std::thread::Builder::new()
            .name("policy".into())
            .stack_size(256 * 1024)
            .spawn(move || policy::fetch_loop(policy_agent, settings, holder, stop))
            .context("starting the policy thread")?
    };

    let mut monitor = Monitor::new(settings.clone(), holder, reporter.clone());
    // "Started" once the first pass has taken baselines and set watches.
    monitor.tick();
    let signals = observable_signals(&settings);
    tracing::info!(%signals, "enforcer started");
    reporter.report(Event {
        id: reporter.next_id(),
        time_ms: now_ms(),
        kind: EventKind::Agent,
        rule: "agent/started".into(),
        policy: None,
        mode: Default::default(),
        message: format!("policy from {source}; {signals}"),
        process: None,
        action: None,
    });
    drop(reporter);
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        monitor.tick();
        let rest = settings.interval.saturating_sub(started.elapsed());
        policy::sleep_unless_stopped(&stop, rest.max(Duration::from_millis(1)));
    }

    tracing::info!("stopping: flushing reports");
    drop(monitor); // the last Reporter: the sender flushes and ends
    let _ = sender.join();
    // The fetcher may sit in a long-poll; the process exit ends it.
    drop(fetcher);
    Ok(())
}
