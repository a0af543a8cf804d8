//! The launch policy: what the injector derives from the RuntimePolicies
//! that select a pod (those with `prevent: true`), handed to
//! `palisade-launch` as JSON in `PALISADE_LAUNCH_POLICY`.

use std::path::{Component, Path, PathBuf};

use crate::net::EgressRule;
use serde::{Deserialize, Serialize};

/// Where an image keeps its programs when the policy names none of its own.
/// Directories that do not exist in the image are skipped (and reported).
pub const DEFAULT_PROGRAM_DIRS: [&str; 5] = ["/bin", "/sbin", "/usr", "/lib", "/lib64"];

/// Directories every container can write: never program directories,
/// because allowing execution there is exactly the drift we prevent.
pub const WRITABLE_BY_NATURE: [&str; 3] = ["/tmp", "/var/tmp", "/dev/shm"];

/// Where the launcher is installed in app containers (a read-only
/// emptyDir the install step fills).
pub const LAUNCHER_DIR: &str = "/palisade/launch";
/// The launcher binary as app containers see it.
pub const LAUNCHER_PATH: &str = "/palisade/launch/palisade-launch";
/// The variable carrying the launch policy.
pub const POLICY_ENV: &str = "PALISADE_LAUNCH_POLICY";
/// The abstract unix socket, in the pod's network namespace, on which the
/// enforcer takes each launcher's coverage report. The launcher connects
/// before it confines itself: once confined (Landlock ABI 6) it could not.
pub const REPORT_SOCKET: &str = "palisade.dev/launch-coverage";
/// The largest coverage report the enforcer reads.
pub const REPORT_MAX_BYTES: usize = 16 * 1024;
/// The rule of the event that carries a container's coverage report to
/// the policy service (`palisade status --coverage` asks for it by name).
pub const COVERAGE_RULE: &str = "enforcer/prevention";
/// What the enforcer answers once it has the report; the launcher waits
/// for it (briefly) so that it is still itself while the enforcer checks
/// who sent the report.
pub const REPORT_ACK: &[u8] = b"ok\n";

/// What Landlock enforced of what the launcher asked of it (node settings
/// such as `vm.memfd_noexec` are listed in the report, but do not count:
/// the launcher cannot change them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CoverageLevel {
    Full,
    Partial,
    None,
}

impl CoverageLevel {
    /// As people read it (the event message, `palisade status`).
    pub fn as_str(self) -> &'static str {
        match self {
            CoverageLevel::Full => "full",
            CoverageLevel::Partial => "partial",
            CoverageLevel::None => "none",
        }
    }
}

/// Landlock as the running kernel offers it to the launcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", tag = "state", content = "abi")]
pub enum LandlockSupport {
    /// Available with this ABI version.
    Available(u8),
    /// Built in but not enabled at boot (`lsm=` without landlock).
    NotEnabled,
    /// Not in the kernel, or its syscalls are blocked (e.g. by a seccomp
    /// profile that predates Landlock).
    NotImplemented,
    /// Applying failed before the kernel reported its ABI.
    Unknown,
}

/// The coverage report as the enforcer reads it: the launcher writes more
/// (program directories, ports), which stays in the container's log. The
/// enforcer forwards it as is on `enforcer/prevention` events, so it is also
/// written, in the launcher's own field names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CoverageSummary {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
    pub level: CoverageLevel,
    pub landlock: LandlockSupport,
    #[serde(default)]
    pub enforced: Vec<String>,
    #[serde(default)]
    pub not_enforced: Vec<NotEnforcedSummary>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotEnforcedSummary {
    pub protection: String,
    pub reason: String,
}

/// Why a directory cannot be a program directory.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramDirError {
    #[error("{0} must be absolute")]
    Relative(String),
    #[error("{0} must not contain '.' or '..'")]
    NotNormal(String),
    #[error("/ would allow execution everywhere and deny every write")]
    Root,
    #[error("{0} is writable by every process")]
    Writable(&'static str),
    #[error("{dir} overlaps {temp}, which every process can write")]
    Overlaps { dir: String, temp: &'static str },
}

/// Checks one program directory: absolute, normal, not `/`, and not a
/// directory every process can write (or one containing it).
pub fn check_program_dir(dir: impl AsRef<Path>) -> Result<(), ProgramDirError> {
    let dir = dir.as_ref();
    let shown = || dir.display().to_string();
    if !dir.is_absolute() {
        return Err(ProgramDirError::Relative(shown()));
    }
    if dir
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(ProgramDirError::NotNormal(shown()));
    }
    if dir.parent().is_none() {
        return Err(ProgramDirError::Root);
    }
    match WRITABLE_BY_NATURE
        .iter()
        .find(|t| dir.starts_with(t) || Path::new(t).starts_with(dir))
    {
        Some(temp) if dir == Path::new(temp) => Err(ProgramDirError::Writable(temp)),
        Some(temp) => Err(ProgramDirError::Overlaps { dir: shown(), temp }),
        None => Ok(()),
    }
}

/// The typed launch policy. Field names follow the RuntimePolicy's
/// `spec.runtime` so the injector copies them without translation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LaunchPolicy {
    /// Program directories of the image beyond the defaults (e.g. `/app`,
    /// `/opt/app/bin`): execution is allowed beneath them, writes are not.
    #[serde(default)]
    pub program_dirs: Vec<PathBuf>,
    /// Set from the policy's `mode: enforce`: only then are TCP bind and
    /// connect restricted, because a wrong port list breaks the app.
    #[serde(default)]
    pub enforce_network: bool,
    /// Ports the app may listen on; empty leaves bind unrestricted.
    #[serde(default)]
    pub allowed_listen_ports: Vec<u16>,
    /// `CIDR` or `CIDR:port`. Landlock filters by port only, so connect is
    /// restricted only when every entry names a port.
    #[serde(default)]
    pub egress_allow: Vec<String>,
    /// Keep the app from reaching abstract unix sockets created outside its
    /// sandbox (the enforcer's, other containers' in the pod's netns).
    #[serde(default = "default_true")]
    pub scope_abstract_unix_sockets: bool,
    /// Refuse memfds that could be executed (`memfd_create` without
    /// `MFD_NOEXEC_SEAL`): closes fileless execution where the node does not
    /// set `vm.memfd_noexec=2`, at the price of programs that need such
    /// memfds (some JITs' double mapping, some browsers). Opt-in; left out
    /// when false, so launchers that predate it read the policy.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deny_executable_memfd: bool,
}

fn default_true() -> bool {
    true
}

impl Default for LaunchPolicy {
    fn default() -> Self {
        Self {
            program_dirs: Vec::new(),
            enforce_network: false,
            allowed_listen_ports: Vec::new(),
            egress_allow: Vec::new(),
            scope_abstract_unix_sockets: true,
            deny_executable_memfd: false,
        }
    }
}

/// Why a launch policy cannot be used; every problem is listed at once.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PolicyError {
    #[error("launch policy is not valid JSON: {0}")]
    Syntax(String),
    #[error("launch policy is invalid: {}", .0.join("; "))]
    Invalid(Vec<String>),
}

/// TCP restrictions the policy asks for, in Landlock's terms (ports only).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpRequest {
    /// `Some(ports)`: bind is denied except on these ports.
    pub bind: Option<Vec<u16>>,
    /// `Some(ports)`: connect is denied except to these ports.
    pub connect: Option<Vec<u16>>,
}

impl LaunchPolicy {
    /// Parses and validates the JSON form.
    pub fn from_json(text: &str) -> Result<Self, PolicyError> {
        let policy: Self =
            serde_json::from_str(text).map_err(|e| PolicyError::Syntax(e.to_string()))?;
        policy.validate()?;
        Ok(policy)
    }

    /// Checks what serde cannot: absolute, normal paths that do not turn
    /// the whole filesystem or a temp dir into a program directory.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let mut problems = Vec::new();
        for (i, dir) in self.program_dirs.iter().enumerate() {
            if let Err(problem) = check_program_dir(dir) {
                problems.push(format!("programDirs[{i}]: {problem}"));
            }
        }
        for (i, entry) in self.egress_allow.iter().enumerate() {
            if let Err(problem) = EgressRule::parse(entry) {
                problems.push(format!("egressAllow[{i}]: {problem}"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(PolicyError::Invalid(problems))
        }
    }

    /// The defaults followed by the policy's own directories, deduplicated.
    pub fn requested_program_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = DEFAULT_PROGRAM_DIRS.iter().map(PathBuf::from).collect();
        for dir in &self.program_dirs {
            if !dirs.contains(dir) {
                dirs.push(dir.clone());
            }
        }
        dirs
    }

    /// The TCP allow-lists to enforce, if any. Only for enforcing policies,
    /// only for non-empty lists, and connect only when every egress entry
    /// names a port (an entry without one allows every port).
    pub fn tcp_request(&self) -> TcpRequest {
        if !self.enforce_network {
            return TcpRequest::default();
        }
        let bind = (!self.allowed_listen_ports.is_empty())
            .then(|| sorted_unique(self.allowed_listen_ports.iter().copied()));
        let ports: Option<Vec<u16>> = self
            .egress_allow
            .iter()
            .map(|e| EgressRule::parse(e).ok().and_then(|r| r.port))
            .collect();
        let connect = ports
            .filter(|p| !p.is_empty())
            .map(|p| sorted_unique(p.into_iter()));
        TcpRequest { bind, connect }
    }
}

fn sorted_unique(ports: impl Iterator<Item = u16>) -> Vec<u16> {
    let mut v: Vec<u16> = ports.collect();
    v.sort_unstable();
    v.dedup();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(json: &str) -> LaunchPolicy {
        LaunchPolicy::from_json(json).expect("valid policy")
    }

    #[test]
    fn an_empty_policy_uses_the_default_program_dirs_and_restricts_no_tcp() {
        let p = policy("{}");
        assert_eq!(
            p.requested_program_dirs(),
            DEFAULT_PROGRAM_DIRS.map(PathBuf::from).to_vec()
        );
        assert_eq!(p.tcp_request(), TcpRequest::default());
        assert!(p.scope_abstract_unix_sockets);
    }

    #[test]
    fn policy_program_dirs_are_added_to_the_defaults_once() {
        let p = policy(r#"{"programDirs": ["/app", "/usr", "/app"]}"#);
        let dirs = p.requested_program_dirs();
        assert_eq!(dirs.iter().filter(|d| d.as_os_str() == "/usr").count(), 1);
        assert_eq!(dirs.iter().filter(|d| d.as_os_str() == "/app").count(), 1);
    }

    #[test]
    fn unknown_fields_and_bad_json_are_rejected_with_the_cause() {
        let err = LaunchPolicy::from_json(r#"{"programDir": []}"#).unwrap_err();
        assert!(err.to_string().contains("programDir"), "{err}");
        assert!(matches!(
            LaunchPolicy::from_json("{"),
            Err(PolicyError::Syntax(_))
        ));
    }

    #[test]
    fn root_relative_dotted_and_temp_program_dirs_are_all_reported() {
        let err = LaunchPolicy::from_json(
            r#"{"programDirs": ["/", "app", "/usr/../tmp", "/tmp/bin", "/var", "/dev/shm"],
                "egressAllow": ["nope"]}"#,
        )
        .unwrap_err();
        let PolicyError::Invalid(problems) = err else {
            panic!("expected Invalid");
        };
        assert_eq!(problems.len(), 7, "{problems:?}");
        assert!(problems[0].starts_with("programDirs[0]: /"));
        assert!(problems[4].contains("overlaps /var/tmp"), "{problems:?}");
        assert!(problems[6].starts_with("egressAllow[0]"));
    }

    #[test]
    fn tcp_is_restricted_only_when_the_policy_enforces() {
        let audit = policy(r#"{"allowedListenPorts": [8080], "egressAllow": ["10.0.0.0/8:443"]}"#);
        assert_eq!(audit.tcp_request(), TcpRequest::default());
        let enforce = policy(
            r#"{"enforceNetwork": true, "allowedListenPorts": [9090, 8080, 8080],
                "egressAllow": ["10.0.0.0/8:443", "[fd00::/8]:53", "1.2.3.4:443"]}"#,
        );
        assert_eq!(
            enforce.tcp_request(),
            TcpRequest {
                bind: Some(vec![8080, 9090]),
                connect: Some(vec![53, 443]),
            }
        );
    }

    #[test]
    fn an_egress_entry_without_a_port_leaves_connect_unrestricted() {
        let p = policy(
            r#"{"enforceNetwork": true, "egressAllow": ["10.0.0.0/8:443", "192.168.0.0/16"]}"#,
        );
        assert_eq!(p.tcp_request().connect, None);
    }

    #[test]
    fn empty_lists_leave_bind_and_connect_unrestricted_even_when_enforcing() {
        let p = policy(r#"{"enforceNetwork": true}"#);
        assert_eq!(p.tcp_request(), TcpRequest::default());
    }
}
