//! `palisade`: the control plane binary.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use palisade_webhook::{app, config::Settings};

#[derive(Parser)]
#[command(
    name = "palisade",
    version,
    about = "Kubernetes admission and runtime protection"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the admission webhook server (the default).
    Serve {
        /// YAML settings file; `PALISADE_*` variables override it.
        #[arg(long, env = "PALISADE_CONFIG")]
        config: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Serve {
        config: std::env::var_os("PALISADE_CONFIG").map(PathBuf::from),
    }) {
        Command::Serve { config } => serve(config).await,
    }
}

async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings =
        Settings::load(config.as_deref(), std::env::vars()).with_context(|| match &config {
            Some(path) => format!("loading settings from {}", path.display()),
            None => "loading settings from defaults and PALISADE_* variables".to_string(),
        })?;
    init_tracing(&settings.log.format, &settings.log.level)?;
    let mut running = app::start(settings)
        .await
        .context("starting the webhook server")?;
    let stop = running.stopper();
    tokio::spawn(async move {
        shutdown_signal().await;
        if let Some(stop) = stop {
            let _ = stop.send(());
        }
    });
    running.wait().await;
    tracing::info!("stopped");
    Ok(())
}

fn init_tracing(format: &str, level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .with_context(|| format!("invalid log level {level:?}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// SIGTERM (Kubernetes) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops the server");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
