//! Command line of `palisade-launch`. Parsed by hand: the launcher sits in
//! front of every app start, so it stays small and starts fast.

use std::ffi::OsString;
use std::path::PathBuf;

pub const USAGE: &str = "\
usage: palisade-launch [--policy FILE] [--report FILE] [--container NAME] [--on-unsupported=run|refuse] -- COMMAND [ARG...]
       palisade-launch --install-to DIR

Confines COMMAND with Landlock, then execs it: execution only beneath the
image's program directories, no writes to them, no signals or ptrace to
processes outside the sandbox, TCP allow-lists when the policy enforces them.

  --policy FILE              launch policy (JSON); default: $PALISADE_LAUNCH_POLICY, else built-in defaults
  --report FILE              append the coverage report (one JSON line) to FILE instead of stderr
  --container NAME           the pod's container being started: the report also goes to the pod's enforcer
  --on-unsupported=run       run COMMAND even if the kernel enforces nothing (default)
  --on-unsupported=refuse    exit 126 instead of running COMMAND unconfined
  --install-to DIR           copy this binary to DIR/palisade-launch and exit
                             (an init container filling a shared volume)

exit codes: 125 bad arguments or policy, 126 refused or not executable, 127 command not found";

/// What to do when the kernel enforces none of the requested protections.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnUnsupported {
    /// Start the app anyway; the coverage report says `none`.
    #[default]
    Run,
    /// Do not start the app unconfined.
    Refuse,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchArgs {
    pub policy_file: Option<PathBuf>,
    pub report_file: Option<PathBuf>,
    /// The pod's container this launch starts (set by the injector): the
    /// coverage report then also goes to the pod's enforcer.
    pub container: Option<String>,
    pub on_unsupported: OnUnsupported,
    /// The original command, never empty.
    pub command: Vec<OsString>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invocation {
    Launch(LaunchArgs),
    /// Copy the launcher into a directory (a volume shared with the app).
    Install(PathBuf),
    Help,
    Version,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsageError {
    #[error("{0} needs a value")]
    MissingValue(&'static str),
    #[error("{0} given twice")]
    Repeated(&'static str),
    #[error("unknown option {0:?}")]
    UnknownOption(OsString),
    #[error("--on-unsupported must be run or refuse, not {0:?}")]
    BadOnUnsupported(OsString),
    #[error("expected `--` before the command, found {0:?}")]
    MissingSeparator(OsString),
    #[error("--container must be valid UTF-8")]
    BadContainerName,
    #[error("no command given after `--`")]
    MissingCommand,
}

/// Parses the arguments after the program name.
pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Invocation, UsageError> {
    let mut args = args.into_iter();
    let mut policy_file = None;
    let mut report_file = None;
    let mut container = None;
    let mut on_unsupported = None;
    loop {
        let Some(arg) = args.next() else {
            return Err(UsageError::MissingCommand);
        };
        if arg == "--" {
            break;
        }
        let text = arg.to_string_lossy();
        let (name, inline) = match text.split_once('=') {
            Some((name, value)) if name.starts_with("--") => {
                (name.to_owned(), Some(OsString::from(value)))
            }
            _ => (text.into_owned(), None),
        };
        let mut value = |flag: &'static str| {
            inline
                .clone()
                .or_else(|| args.next())
                .ok_or(UsageError::MissingValue(flag))
        };
        match name.as_str() {
            "-h" | "--help" => return Ok(Invocation::Help),
            "-V" | "--version" => return Ok(Invocation::Version),
            "--install-to" => return Ok(Invocation::Install(value("--install-to")?.into())),
            "--policy" => set_once(&mut policy_file, "--policy", value("--policy")?.into())?,
            "--report" => set_once(&mut report_file, "--report", value("--report")?.into())?,
            "--container" => {
                let name = value("--container")?;
                let name = name
                    .into_string()
                    .map_err(|_| UsageError::BadContainerName)?;
                set_once(&mut container, "--container", name)?;
            }
            "--on-unsupported" => {
                let v = value("--on-unsupported")?;
                let mode = match v.to_str() {
                    Some("run") => OnUnsupported::Run,
                    Some("refuse") => OnUnsupported::Refuse,
                    _ => return Err(UsageError::BadOnUnsupported(v)),
                };
                set_once(&mut on_unsupported, "--on-unsupported", mode)?;
            }
            other if other.starts_with('-') => return Err(UsageError::UnknownOption(arg)),
            _ => return Err(UsageError::MissingSeparator(arg)),
        }
    }
    let command: Vec<OsString> = args.collect();
    if command.is_empty() {
        return Err(UsageError::MissingCommand);
    }
    Ok(Invocation::Launch(LaunchArgs {
        policy_file,
        report_file,
        container,
        on_unsupported: on_unsupported.unwrap_or_default(),
        command,
    }))
}

fn set_once<T>(slot: &mut Option<T>, flag: &'static str, value: T) -> Result<(), UsageError> {
    if slot.replace(value).is_some() {
        return Err(UsageError::Repeated(flag));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(args: &[&str]) -> Result<Invocation, UsageError> {
        parse(args.iter().map(OsString::from))
    }

    fn launch(args: &[&str]) -> LaunchArgs {
        match parse_str(args) {
            Ok(Invocation::Launch(a)) => a,
            other => panic!("expected a launch, got {other:?}"),
        }
    }

    #[test]
    fn the_command_after_the_separator_is_kept_verbatim() {
        let a = launch(&["--", "/bin/sh", "-c", "--policy x"]);
        assert_eq!(
            a.command,
            ["/bin/sh", "-c", "--policy x"].map(OsString::from)
        );
        assert_eq!(a.on_unsupported, OnUnsupported::Run);
        assert_eq!(a.policy_file, None);
    }

    #[test]
    fn options_take_values_inline_or_as_the_next_argument() {
        let a = launch(&[
            "--policy",
            "/p.json",
            "--report=/r.jsonl",
            "--container",
            "app",
            "--on-unsupported=refuse",
            "--",
            "app",
        ]);
        assert_eq!(a.policy_file, Some(PathBuf::from("/p.json")));
        assert_eq!(a.report_file, Some(PathBuf::from("/r.jsonl")));
        assert_eq!(a.container.as_deref(), Some("app"));
        assert_eq!(a.on_unsupported, OnUnsupported::Refuse);
    }

    #[test]
    fn bad_arguments_are_named_in_the_error() {
        assert_eq!(
            parse_str(&["--on-unsupported=maybe", "--", "x"]),
            Err(UsageError::BadOnUnsupported("maybe".into()))
        );
        assert_eq!(
            parse_str(&["--bogus", "--", "x"]),
            Err(UsageError::UnknownOption("--bogus".into()))
        );
        assert_eq!(
            parse_str(&["/bin/sh"]),
            Err(UsageError::MissingSeparator("/bin/sh".into()))
        );
        assert_eq!(parse_str(&["--"]), Err(UsageError::MissingCommand));
        assert_eq!(parse_str(&[]), Err(UsageError::MissingCommand));
        assert_eq!(
            parse_str(&["--policy"]),
            Err(UsageError::MissingValue("--policy"))
        );
        assert_eq!(
            parse_str(&["--report=a", "--report", "b", "--", "x"]),
            Err(UsageError::Repeated("--report"))
        );
    }

    #[test]
    fn install_to_names_the_target_directory_and_needs_no_command() {
        assert_eq!(
            parse_str(&["--install-to", "/palisade/bin"]),
            Ok(Invocation::Install(PathBuf::from("/palisade/bin")))
        );
        assert_eq!(
            parse_str(&["--install-to"]),
            Err(UsageError::MissingValue("--install-to"))
        );
    }

    #[test]
    fn help_and_version_need_no_command() {
        assert_eq!(parse_str(&["--help"]), Ok(Invocation::Help));
        assert_eq!(parse_str(&["-V"]), Ok(Invocation::Version));
    }
}
