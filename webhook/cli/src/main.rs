//! `palisade`: the control plane binary and its command-line tools.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

mod client;
mod learn;
#[cfg(feature = "server")]
mod live;
mod offline;
#[cfg(feature = "server")]
mod status;

/// Admission allocates a little per request; mimalloc keeps that cheap
/// on glibc and on musl (the container image) alike.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use client::{Client, EventFilter, Kind};
use palisade_common::policy::{Document, Mode};
use palisade_common::wire::EventKind;
use palisade_engine::learn::DraftOptions;
use palisade_engine::policy::{load_dir_documents, split_yaml_documents, PolicySet};
#[cfg(feature = "server")]
use palisade_engine::settings::LogFormat;
use palisade_engine::settings::Settings;

/// Exit codes, as `diff` has them: 0 nothing found, 1 something found
/// (`check`: a denial; `policy replay`: something would be reported or
/// killed), 2 the command failed.
#[derive(Parser)]
#[command(
    name = "palisade",
    version,
    about = "Kubernetes admission and runtime protection",
    after_help = "Exit status: 0 when all is well, 1 when `check` or `policy replay` found \
                  something, 2 on errors."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the webhook server and policy service (the default).
    Serve {
        /// YAML settings file; `PALISADE_*` variables override it.
        #[arg(long, env = "PALISADE_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Print manifests with the enforcer injected into every pod template.
    Inject {
        /// Manifest file (multi-document YAML); `-` reads stdin.
        #[arg(short = 'f', long = "filename", default_value = "-")]
        file: String,
        #[arg(long, env = "PALISADE_CONFIG")]
        config: Option<PathBuf>,
        /// Policies to consult for prevention (`runtime.prevent`); without
        /// them apps are not confined.
        #[arg(long)]
        policies: Option<PathBuf>,
        /// Namespace for objects that name none.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
    },
    /// Check manifests against policies; exits 1 on enforce violations.
    Check {
        #[arg(short = 'f', long = "filename", default_value = "-")]
        file: String,
        #[arg(long, default_value = "policies")]
        policies: PathBuf,
        /// Namespace for objects that name none (with --cluster: the
        /// namespace to read).
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// Check the workloads running in the cluster instead of -f.
        #[arg(long)]
        cluster: bool,
        /// With --cluster: every namespace.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
        /// Judge every policy as if it were in enforce mode: what an
        /// enforce switch would deny.
        #[arg(long)]
        as_enforce: bool,
    },
    /// Manage policies in the policy service.
    Policy {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        action: PolicyAction,
    },
    /// Manage PolicyExceptions in the policy service.
    Exception {
        #[command(flatten)]
        conn: Connection,
        #[command(subcommand)]
        action: ExceptionAction,
    },
    /// Per pod: is the enforcer injected, from which release, which
    /// containers are confined, why not, and what a restart would fix;
    /// with --coverage, what is enforced and which protections are off;
    /// with --workloads, what the policy service has observed per workload.
    Status {
        /// Namespace to look at (default: every namespace).
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        /// Pod label selector (e.g. app=web).
        #[arg(short = 'l', long)]
        selector: Option<String>,
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: OutputFormat,
        /// Restart the Deployments, StatefulSets and DaemonSets whose pods
        /// need it (as `kubectl rollout restart`).
        #[arg(long)]
        restart: bool,
        /// The release the webhook runs, when it is not this CLI's: pods
        /// injected by another release are reported as needing a restart.
        #[arg(long)]
        injector_version: Option<String>,
        /// Settings (excluded namespaces, hostNetwork handling) as the
        /// webhook runs them.
        #[arg(long, env = "PALISADE_CONFIG")]
        config: Option<PathBuf>,
        /// Also show what the kernel enforced in each confined container
        /// (the launchers' reports) and which protections each pod's
        /// enforcer says are off and why (its heartbeats), read from the
        /// policy service.
        #[arg(long)]
        coverage: bool,
        /// Instead of pods: each workload the enforcers reported
        /// observations for, its runtime mode, how long it has been
        /// observed and when it last showed something new (from the policy
        /// service; no apiserver needed).
        #[arg(long, conflicts_with_all = ["selector", "restart", "coverage", "injector_version"])]
        workloads: bool,
        // The policy service, for --coverage and --workloads.
        #[command(flatten)]
        conn: Connection,
    },
    /// Show runtime events reported by enforcers.
    Events {
        #[command(flatten)]
        conn: Connection,
        #[arg(short = 'n', long)]
        namespace: Option<String>,
        #[arg(long)]
        pod: Option<String>,
        /// drift, behavior or enforcer
        #[arg(long, value_parser = parse_kind)]
        kind: Option<EventKind>,
        /// One rule exactly (e.g. enforcer/prevention).
        #[arg(long)]
        rule: Option<String>,
        /// Only events newer than this (e.g. 30m, 2h, 7d).
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
}

#[derive(Subcommand)]
enum PolicyAction {
    /// Push policy documents (multi-document YAML allowed).
    Push {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
    /// List active policies.
    List,
    /// Delete a pushed policy.
    Delete { name: String },
    /// Print a RuntimePolicy drafted from what a workload's enforcers saw
    /// it do (executables by path and hash, processes, ports, egress),
    /// each entry commented with how often and when it was seen.
    Draft {
        /// The workload: deployment/web, statefulset/db, pod/web-0, ...
        workload: learn::WorkloadName,
        /// The workload's namespace.
        #[arg(short = 'n', long, default_value = "default")]
        namespace: String,
        /// The draft's spec.mode: learn, audit or enforce.
        #[arg(long, value_parser = learn::parse_mode, default_value = "audit")]
        mode: Mode,
        /// Allow the image's own executables by construction (zeroDrift)
        /// and list only the others.
        #[arg(long)]
        zero_drift: bool,
        /// Only what was seen within this long (e.g. 24h, 7d); default all.
        #[arg(long, value_parser = learn::parse_since)]
        since: Option<Duration>,
    },
    /// Judge a policy file against what the pods it selects did, with the
    /// enforcer's judgement, and print what it would have reported or
    /// killed. Exits 1 when anything would have been, 0 otherwise.
    Replay {
        /// Policy file (YAML; `-` reads stdin).
        file: String,
        /// How far back to replay (e.g. 30m, 24h, 7d).
        #[arg(long, value_parser = learn::parse_since, default_value = "24h")]
        since: Duration,
        /// Only workloads of this namespace.
        #[arg(short = 'n', long)]
        namespace: Option<String>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum OutputFormat {
    Table,
    Json,
}

#[derive(Subcommand)]
enum ExceptionAction {
    /// Push PolicyException documents (multi-document YAML allowed).
    Push {
        #[arg(short = 'f', long = "filename", required = true)]
        files: Vec<String>,
    },
    /// List exceptions from every source, with their state (active,
    /// expiring within 7 days, expired) and expiry.
    List,
    /// Delete a pushed exception.
    Delete { name: String },
}

#[derive(Args)]
struct Connection {
    #[arg(
        long,
        global = true,
        env = "PALISADE_SERVER",
        default_value = "https://localhost:8443"
    )]
    server: String,
    /// Admin token; defaults to the contents of --token-file.
    #[arg(long, global = true, env = "PALISADE_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[arg(long, global = true, default_value = "data/admin.token")]
    token_file: PathBuf,
    /// CA certificate of the server (the generated one by default).
    #[arg(
        long,
        global = true,
        env = "PALISADE_CA_FILE",
        default_value = "data/tls/ca.crt"
    )]
    ca_file: PathBuf,
}

impl Connection {
    fn client(&self) -> anyhow::Result<Client> {
        let token = match &self.token {
            Some(t) => t.clone(),
            None => std::fs::read_to_string(&self.token_file).with_context(|| {
                format!(
                    "no --token given and cannot read {}",
                    self.token_file.display()
                )
            })?,
        };
        let ca = self.ca_file.exists().then_some(self.ca_file.as_path());
        Ok(Client::new(&self.server, &token, ca)?)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command.unwrap_or(Command::Serve {
        config: std::env::var_os("PALISADE_CONFIG").map(PathBuf::from),
    });
    match run(command).await {
        Ok(code) => code,
        Err(e) => {
            // As `main` returning the error would print it, but with 2:
            // 1 says that `check` or `replay` found something.
            eprintln!("Error: {e:?}");
            ExitCode::from(2)
        }
    }
}

async fn run(command: Command) -> anyhow::Result<ExitCode> {
    let done = |()| ExitCode::SUCCESS;
    match command {
        Command::Serve { config } => serve(config).await.map(done),
        Command::Inject {
            file,
            config,
            policies,
            namespace,
        } => {
            let settings = load_settings(config.as_deref())?;
            let policies = policies
                .map(|dir| {
                    PolicySet::load_dir(&dir)
                        .with_context(|| format!("loading policies from {}", dir.display()))
                })
                .transpose()?;
            let text = read_input(&file)?;
            let injected = offline::inject(&text, &settings, policies.as_ref(), &namespace)
                .with_context(|| format!("injecting {file}"))?;
            print!("{injected}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            file,
            policies,
            namespace,
            cluster,
            all_namespaces,
            as_enforce,
        } => {
            let source = match (cluster, all_namespaces) {
                (false, _) => CheckSource::File(file),
                (true, false) => CheckSource::Cluster(Some(namespace.clone())),
                (true, true) => CheckSource::Cluster(None),
            };
            check(source, &policies, &namespace, as_enforce).await
        }
        Command::Policy { conn, action } => policy(conn, action).await,
        Command::Exception { conn, action } => exception(conn, action).await.map(done),
        Command::Status {
            namespace,
            selector,
            output,
            restart,
            injector_version,
            config,
            coverage,
            workloads,
            conn,
        } => {
            if workloads {
                let json = output == OutputFormat::Json;
                learn::workloads(&conn.client()?, namespace.as_deref(), json).await?;
                return Ok(ExitCode::SUCCESS);
            }
            let scope = StatusScope {
                namespace,
                selector,
                injector_version,
            };
            let service = coverage.then(|| conn.client()).transpose()?;
            status(scope, output, restart, config, service)
                .await
                .map(done)
        }
        Command::Events {
            conn,
            namespace,
            pod,
            kind,
            rule,
            since,
            limit,
        } => {
            let since_ms = match since {
                None => None,
                Some(since) => {
                    let Some(ago) = client::parse_duration_ms(&since) else {
                        bail!("--since {since:?}: expected a duration such as 30m, 2h or 7d");
                    };
                    Some(client::now_ms() - ago)
                }
            };
            let filter = EventFilter {
                namespace,
                pod,
                kind,
                rule,
                since_ms,
                limit,
            };
            let events = conn.client()?.events(&filter).await?;
            print!("{}", client::events_table(&events));
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `--kind`, checked before anything is sent.
fn parse_kind(text: &str) -> Result<EventKind, String> {
    EventKind::parse(text).ok_or_else(|| "expected drift, behavior or enforcer".to_string())
}

fn load_settings(config: Option<&Path>) -> anyhow::Result<Settings> {
    Settings::load(config, std::env::vars()).with_context(|| match config {
        Some(path) => format!("loading settings from {}", path.display()),
        None => "loading settings from defaults and PALISADE_* variables".to_string(),
    })
}

fn read_input(file: &str) -> anyhow::Result<String> {
    if file == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading stdin")?;
        Ok(text)
    } else {
        std::fs::read_to_string(file).with_context(|| format!("reading {file}"))
    }
}

/// Where `palisade check` reads objects.
enum CheckSource {
    File(String),
    /// Live workloads of one namespace, or of all.
    Cluster(Option<String>),
}

async fn check(
    source: CheckSource,
    policies: &Path,
    namespace: &str,
    as_enforce: bool,
) -> anyhow::Result<ExitCode> {
    let documents = load_dir_documents(policies)
        .with_context(|| format!("loading policies from {}", policies.display()))?;
    let documents = documents.into_iter().map(|(origin, doc)| match doc {
        Document::Policy(mut policy) if as_enforce => {
            policy.spec.mode = Mode::Enforce;
            (origin, Document::Policy(policy))
        }
        other => (origin, other),
    });
    let set = PolicySet::from_documents(documents)
        .with_context(|| format!("loading policies from {}", policies.display()))?;
    let settings = load_settings(None)?;
    let (text, what, show_namespace) = match source {
        CheckSource::File(file) => (read_input(&file)?, file, false),
        CheckSource::Cluster(scope) => {
            let list = live_workloads(scope.as_deref()).await?;
            (
                serde_json::to_string(&list)?,
                "the cluster".to_string(),
                true,
            )
        }
    };
    let results = offline::check(&text, namespace, &settings, &set)
        .with_context(|| format!("checking {what}"))?;
    for object in &results {
        let prefix = if show_namespace {
            format!("{}/", object.namespace)
        } else {
            String::new()
        };
        for v in &object.violations {
            let verdict = if v.denies() { "deny" } else { "warn" };
            println!("{prefix}{}/{}: {verdict}: {v}", object.kind, object.name);
        }
    }
    let total: usize = results.iter().map(|r| r.violations.len()).sum();
    let denied = results
        .iter()
        .filter(|r| r.violations.iter().any(|v| v.denies()))
        .count();
    eprintln!(
        "{} object(s) checked, {total} violation(s), {denied} object(s) denied{}",
        results.len(),
        if as_enforce {
            " (every policy as enforce)"
        } else {
            ""
        }
    );
    Ok(if offline::has_enforced(&results) {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(feature = "server")]
async fn live_workloads(namespace: Option<&str>) -> anyhow::Result<serde_json::Value> {
    live::workloads(namespace).await
}

#[cfg(not(feature = "server"))]
async fn live_workloads(_namespace: Option<&str>) -> anyhow::Result<serde_json::Value> {
    bail!("this palisade was built without the apiserver client (cargo feature `server`)")
}

async fn policy(conn: Connection, action: PolicyAction) -> anyhow::Result<ExitCode> {
    let client = conn.client()?;
    match action {
        PolicyAction::Push { files } => push(&client, Kind::Policy, &files).await?,
        PolicyAction::List => print!("{}", client::policies_table(&client.list().await?)),
        PolicyAction::Delete { name } => {
            client.delete(Kind::Policy, &name).await?;
            println!("policy/{name} deleted");
        }
        PolicyAction::Draft {
            workload,
            namespace,
            mode,
            zero_drift,
            since,
        } => {
            let options = DraftOptions { mode, zero_drift };
            learn::draft(&client, &namespace, &workload, &options, since).await?;
        }
        PolicyAction::Replay {
            file,
            since,
            namespace,
        } => {
            let text = read_input(&file)?;
            return learn::replay(&client, &file, &text, since, namespace.as_deref()).await;
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn exception(conn: Connection, action: ExceptionAction) -> anyhow::Result<()> {
    let client = conn.client()?;
    match action {
        ExceptionAction::Push { files } => push(&client, Kind::Exception, &files).await?,
        ExceptionAction::List => print!(
            "{}",
            client::exceptions_table(&client.list_exceptions().await?)
        ),
        ExceptionAction::Delete { name } => {
            client.delete(Kind::Exception, &name).await?;
            println!("policyexception/{name} deleted");
        }
    }
    Ok(())
}

/// Pushes every document of every file, in order; stops at the first
/// refusal, naming the file.
async fn push(client: &Client, kind: Kind, files: &[String]) -> anyhow::Result<()> {
    let noun = match kind {
        Kind::Policy => "policy",
        Kind::Exception => "policyexception",
    };
    for file in files {
        let text = read_input(file)?;
        for doc in split_yaml_documents(&text) {
            let (name, revision) = client
                .push(kind, doc)
                .await
                .with_context(|| format!("pushing {file}"))?;
            println!("{noun}/{name} pushed (revision {revision})");
        }
    }
    Ok(())
}

/// Which pods `palisade status` looks at, against which release.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
struct StatusScope {
    namespace: Option<String>,
    selector: Option<String>,
    injector_version: Option<String>,
}

#[cfg(feature = "server")]
async fn status(
    scope: StatusScope,
    output: OutputFormat,
    restart: bool,
    config: Option<PathBuf>,
    coverage_from: Option<Client>,
) -> anyhow::Result<()> {
    let settings = load_settings(config.as_deref())?;
    let output = match output {
        OutputFormat::Table => status::Output::Table,
        OutputFormat::Json => status::Output::Json,
    };
    status::run(
        status::Scope {
            namespace: scope.namespace,
            selector: scope.selector,
            injector_version: scope.injector_version,
        },
        output,
        restart,
        &settings,
        coverage_from.as_ref(),
    )
    .await
}

#[cfg(not(feature = "server"))]
async fn status(
    _scope: StatusScope,
    _output: OutputFormat,
    _restart: bool,
    _config: Option<PathBuf>,
    _coverage_from: Option<Client>,
) -> anyhow::Result<()> {
    bail!("this palisade was built without the apiserver client (cargo feature `server`)")
}

#[cfg(not(feature = "server"))]
async fn serve(_config: Option<PathBuf>) -> anyhow::Result<()> {
    bail!("this palisade was built without the server (cargo feature `server`); inject, check, policy and events work")
}

#[cfg(feature = "server")]
async fn serve(config: Option<PathBuf>) -> anyhow::Result<()> {
    let settings = load_settings(config.as_deref())?;
    init_tracing(settings.log.format, &settings.log.level)?;
    let mut running = palisade_server::app::start(settings)
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

#[cfg(feature = "server")]
fn init_tracing(format: LogFormat, level: &str) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(level))
        .with_context(|| format!("invalid log level {level:?}"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == LogFormat::Json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// SIGTERM (Kubernetes) or Ctrl-C.
#[cfg(feature = "server")]
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
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
