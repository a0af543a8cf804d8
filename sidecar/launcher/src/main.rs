#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitCode};

use anyhow::{anyhow, Context};
use palisade_launch::args::{self, Invocation, LaunchArgs, USAGE};
use palisade_launch::coverage::{self, Coverage, Protection};
use palisade_launch::policy::LaunchPolicy;
use palisade_launch::{decide, enforcer, sandbox, Decision, Exit, POLICY_ENV};

/// A failure and the exit code it maps to.
struct Failure {
    exit: Exit,
    error: anyhow::Error,
}

impl Failure {
    fn usage(error: impl Into<anyhow::Error>) -> Self {
        Self {
            exit: Exit::Usage,
            error: error.into(),
        }
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("palisade-launch: {:#}", failure.error);
            ExitCode::from(failure.exit.code())
        }
    }
}

/// Returns only on `--help`, `--version` or failure: on success the process
/// has become the app.
fn run() -> Result<(), Failure> {
    let launch = match args::parse(std::env::args_os().skip(1)) {
        Ok(Invocation::Launch(launch)) => launch,
        Ok(Invocation::Help) => {
            println!("{USAGE}");
            return Ok(());
        }
        Ok(Invocation::Install(dir)) => {
            return install(&dir).map_err(|error| Failure {
                exit: Exit::CannotRun,
                error,
            })
        }
        Ok(Invocation::Version) => {
            println!("palisade-launch {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        Err(error) => return Err(Failure::usage(anyhow!("{error}\n{USAGE}"))),
    };
    let policy = load_policy(&launch).map_err(Failure::usage)?;

    // Opened before the sandbox exists, which could deny creating them.
    let report_file = launch.report_file.as_deref().map(open_report);
    let to_enforcer = launch
        .container
        .as_ref()
        .map(|_| enforcer::connect(enforcer::CONNECT_PATIENCE));

    let (plan, dirs) = sandbox::plan_from_disk(&policy);
    let applied = sandbox::apply(&plan);
    let mut report = coverage::coverage(&plan, &dirs.missing, &applied);
    report.container = launch.container.clone();
    let line = report_line(&report);
    emit(&line, report_file);
    if let Some(Err(error)) = to_enforcer
        .map(|stream| stream.and_then(|s| enforcer::send(s, &line, enforcer::ANSWER_PATIENCE)))
    {
        eprintln!("palisade-launch: the coverage report did not reach the enforcer: {error}");
    }

    let program = &launch.command[0];
    if decide(report.level, launch.on_unsupported) == Decision::Refuse {
        return Err(Failure {
            exit: Exit::CannotRun,
            error: anyhow!(
                "refusing to run {} unconfined: the kernel enforces none of the requested \
                 protections (--on-unsupported=refuse)",
                Path::new(program).display()
            ),
        });
    }
    // The policy is the launcher's business, not the app's.
    let error = Command::new(program)
        .args(&launch.command[1..])
        .env_remove(POLICY_ENV)
        .exec();
    let hint = if error.kind() == std::io::ErrorKind::PermissionDenied
        && report
            .enforced
            .contains(&Protection::ExecOnlyFromProgramDirs)
    {
        format!(
            " (execution is allowed only beneath the program directories {:?})",
            plan.program_dirs
        )
    } else {
        String::new()
    };
    Err(Failure {
        exit: Exit::for_exec_error(&error),
        error: anyhow::Error::new(error).context(format!(
            "cannot execute {}{hint}",
            Path::new(program).display()
        )),
    })
}

/// Copies this executable to `dir/palisade-launch`, read-only and
/// executable, through a rename so that an app container starting at the
/// same time never runs a half-written launcher.
fn install(dir: &Path) -> anyhow::Result<()> {
    let source = std::env::current_exe().context("cannot find this executable")?;
    let target = dir.join("palisade-launch");
    let partial = dir.join(".palisade-launch.partial");
    std::fs::copy(&source, &partial)
        .with_context(|| format!("cannot copy {} to {}", source.display(), partial.display()))?;
    std::fs::set_permissions(&partial, std::fs::Permissions::from_mode(0o555))
        .with_context(|| format!("cannot make {} executable", partial.display()))?;
    std::fs::rename(&partial, &target)
        .with_context(|| format!("cannot move the launcher to {}", target.display()))?;
    println!("installed {}", target.display());
    Ok(())
}

/// `--policy FILE` wins over `$PALISADE_LAUNCH_POLICY`; with neither, the
/// defaults apply (image program directories, scoping, no TCP lists).
fn load_policy(launch: &LaunchArgs) -> anyhow::Result<LaunchPolicy> {
    if let Some(file) = &launch.policy_file {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read the launch policy {}", file.display()))?;
        return LaunchPolicy::from_json(&text)
            .with_context(|| format!("in the launch policy {}", file.display()));
    }
    match std::env::var(POLICY_ENV) {
        Ok(text) if !text.trim().is_empty() => {
            LaunchPolicy::from_json(&text).with_context(|| format!("in ${POLICY_ENV}"))
        }
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(LaunchPolicy::default()),
        Err(error) => Err(anyhow!("${POLICY_ENV}: {error}")),
    }
}

fn open_report(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write the report to {}", path.display()))
}

fn report_line(report: &Coverage) -> String {
    match serde_json::to_string(report) {
        Ok(line) => line,
        Err(error) => format!(
            r#"{{"event":"{}","error":"{error}"}}"#,
            coverage::COVERAGE_EVENT
        ),
    }
}

/// Writes the report as one JSON line. A report that cannot be written must
/// not keep the app from starting: it goes to stderr instead.
fn emit(line: &str, file: Option<anyhow::Result<File>>) {
    match file.map(|f| f.and_then(|mut f| Ok(f.write_all(format!("{line}\n").as_bytes())?))) {
        Some(Ok(())) => return,
        Some(Err(error)) => eprintln!("palisade-launch: {error:#}"),
        None => {}
    }
    eprintln!("{line}");
}
