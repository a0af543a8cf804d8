//! The runtime rules' judgement of one observed item: the one pure
//! function behind the enforcer's identity decisions and
//! `palisade policy replay` (which judges what pods did against a policy
//! they did not yet run under).
//!
//! Names, ports and egress are judged as the enforcer judges them;
//! executables by location and content (`allowedExecutables`,
//! `zeroDrift`).

use std::fmt;
use std::net::IpAddr;

use crate::net::EgressRule;
use crate::observe::Observed;
use crate::policy::{glob_match, Mode, RuntimeRules};

/// A rule an observed item breaks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// On `deniedProcesses` by name.
    DeniedProcess { name: String },
    /// Not on a non-empty `allowedProcesses`.
    UnexpectedProcess { name: String },
    /// Not allowed by `allowedExecutables` / `zeroDrift`.
    ExecutableNotAllowed(ExecutableRefusal),
    /// A port not on a non-empty `allowedListenPorts`.
    UnexpectedListener { port: u16 },
    /// A destination no `egressAllow` entry allows.
    UnexpectedEgress { address: IpAddr, port: u16 },
}

impl Finding {
    /// The rule id, as the enforcer reports it.
    pub fn rule(&self) -> &'static str {
        match self {
            Finding::DeniedProcess { .. } => "behavior/denied-process",
            Finding::UnexpectedProcess { .. } => "behavior/unexpected-process",
            Finding::ExecutableNotAllowed(_) => EXECUTABLE_NOT_ALLOWED,
            Finding::UnexpectedListener { .. } => "behavior/unexpected-listener",
            Finding::UnexpectedEgress { .. } => "behavior/unexpected-egress",
        }
    }
}

pub const EXECUTABLE_NOT_ALLOWED: &str = "behavior/executable-not-allowed";

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::DeniedProcess { name } => write!(f, "denied process {name}"),
            Finding::UnexpectedProcess { name } => {
                write!(f, "process {name} is not in the allowed list")
            }
            Finding::ExecutableNotAllowed(why) => write!(f, "{why}"),
            Finding::UnexpectedListener { port } => write!(f, "listener on port {port}"),
            Finding::UnexpectedEgress { address, port } => {
                write!(
                    f,
                    "connection to {address}:{port} is not in the egress allow-list"
                )
            }
        }
    }
}

/// Why an executable is not allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExecutableRefusal {
    /// No entry names its path (and it is not the image's own under
    /// `zeroDrift`).
    NotListed { path: String, from_image: bool },
    /// Its path is listed, but it is not the image's file and its content
    /// is not what the list says (a copy or a replacement).
    OtherContent {
        path: String,
        sha256: Option<String>,
    },
}

impl fmt::Display for ExecutableRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExecutableRefusal::NotListed { path, from_image } => {
                write!(f, "executable {path} is not on the allowed list")?;
                if !from_image {
                    write!(f, " and not from the image")?;
                }
                Ok(())
            }
            ExecutableRefusal::OtherContent { path, sha256 } => write!(
                f,
                "executable {path} is not the listed content (sha256 {})",
                sha256.as_deref().unwrap_or("unknown")
            ),
        }
    }
}

/// What the enforcer knows of an executable.
#[derive(Debug, Clone, Copy)]
pub struct ExecutableFacts<'a> {
    pub path: &'a str,
    pub sha256: Option<&'a str>,
    /// The container image's own file, unchanged since it started.
    pub from_image: bool,
}

/// `allowedExecutables` and `zeroDrift` on one executable: `None` when it
/// is allowed, or when the rules do not limit executables.
pub fn executable(rules: &RuntimeRules, exe: &ExecutableFacts<'_>) -> Option<ExecutableRefusal> {
    if !rules.limits_executables() || (rules.zero_drift && exe.from_image) {
        return None;
    }
    let listed: Vec<_> = rules
        .allowed_executables
        .iter()
        .filter(|a| glob_match(&a.path, exe.path))
        .collect();
    if listed.is_empty() {
        return Some(ExecutableRefusal::NotListed {
            path: exe.path.to_string(),
            from_image: exe.from_image,
        });
    }
    // The image's own file at a listed path is allowed whatever its hash:
    // a new image changes hashes, and the next draft learns the new one.
    let content_allowed = exe.from_image
        || listed
            .iter()
            .any(|a| a.sha256.is_none() || a.sha256.as_deref() == exe.sha256);
    (!content_allowed).then(|| ExecutableRefusal::OtherContent {
        path: exe.path.to_string(),
        sha256: exe.sha256.map(String::from),
    })
}

/// `deniedProcesses` and `allowedProcesses` on a process known by `names`
/// (its `comm` and its executable's base name).
pub fn process_names(rules: &RuntimeRules, names: &[&str]) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(name) = rules
        .denied_processes
        .iter()
        .find(|d| names.contains(&d.as_str()))
    {
        findings.push(Finding::DeniedProcess { name: name.clone() });
    }
    if !rules.allowed_processes.is_empty()
        && !rules
            .allowed_processes
            .iter()
            .any(|a| names.contains(&a.as_str()))
    {
        findings.push(Finding::UnexpectedProcess {
            name: names.first().copied().unwrap_or_default().to_string(),
        });
    }
    findings
}

/// Whether `allowedListenPorts` allows a listener on `port`.
pub fn listener_allowed(rules: &RuntimeRules, port: u16) -> bool {
    rules.allowed_listen_ports.is_empty() || rules.allowed_listen_ports.contains(&port)
}

/// Whether `egressAllow` allows a connection to `address:port`. Entries
/// that do not parse allow nothing (validation refuses them first).
pub fn egress_allowed(rules: &RuntimeRules, address: IpAddr, port: u16) -> bool {
    rules.egress_allow.is_empty()
        || rules
            .egress_allow
            .iter()
            .filter_map(|r| EgressRule::parse(r).ok())
            .any(|r| r.allows(address, port))
}

/// Every rule `item` breaks under `rules`.
pub fn judge(rules: &RuntimeRules, item: &Observed) -> Vec<Finding> {
    match item {
        Observed::Executable {
            path,
            sha256,
            from_image,
        } => {
            let facts = ExecutableFacts {
                path,
                sha256: sha256.as_deref(),
                from_image: *from_image,
            };
            let mut findings: Vec<Finding> = executable(rules, &facts)
                .map(Finding::ExecutableNotAllowed)
                .into_iter()
                .collect();
            // The executable's name is one of the names a process goes by.
            let name = path.rsplit('/').next().unwrap_or(path);
            findings.extend(
                process_names(rules, &[name])
                    .into_iter()
                    .filter(|f| matches!(f, Finding::DeniedProcess { .. })),
            );
            findings
        }
        Observed::Process { name, .. } => process_names(rules, &[name]),
        Observed::Listen { port, .. } => {
            if listener_allowed(rules, *port) {
                Vec::new()
            } else {
                vec![Finding::UnexpectedListener { port: *port }]
            }
        }
        Observed::Egress { address, port, .. } => {
            if egress_allowed(rules, *address, *port) {
                Vec::new()
            } else {
                vec![Finding::UnexpectedEgress {
                    address: *address,
                    port: *port,
                }]
            }
        }
    }
}

/// What a finding leads to under a policy's mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Learning: nothing is reported.
    Learned,
    Reported,
    /// Reported and the process stopped.
    Killed,
}

impl Outcome {
    pub fn of(mode: Mode) -> Self {
        match mode {
            Mode::Learn => Outcome::Learned,
            Mode::Audit => Outcome::Reported,
            Mode::Enforce => Outcome::Killed,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::observe::Protocol;
    use crate::policy::AllowedExecutable;

    const SH: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const APP: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn allow(path: &str, sha256: Option<&str>) -> AllowedExecutable {
        AllowedExecutable {
            path: path.into(),
            sha256: sha256.map(String::from),
        }
    }

    fn exe(path: &str, sha256: &str, from_image: bool) -> Observed {
        Observed::Executable {
            path: path.into(),
            sha256: Some(sha256.into()),
            from_image,
        }
    }

    fn listed() -> RuntimeRules {
        RuntimeRules {
            allowed_executables: vec![allow("/app/server", Some(APP)), allow("/bin/sh", Some(SH))],
            ..RuntimeRules::default()
        }
    }

    #[test]
    fn without_identity_rules_every_executable_is_allowed() {
        let rules = RuntimeRules::default();
        assert!(judge(&rules, &exe("/tmp/x", SH, false)).is_empty());
    }

    #[test]
    fn a_listed_executable_with_its_content_is_allowed() {
        assert!(judge(&listed(), &exe("/app/server", APP, false)).is_empty());
        assert!(judge(&listed(), &exe("/bin/sh", SH, true)).is_empty());
    }

    #[test]
    fn a_copied_shell_is_refused_by_location() {
        let found = judge(&listed(), &exe("/tmp/x", SH, false));
        assert_eq!(
            found,
            vec![Finding::ExecutableNotAllowed(
                ExecutableRefusal::NotListed {
                    path: "/tmp/x".into(),
                    from_image: false
                }
            )]
        );
        assert_eq!(found[0].rule(), EXECUTABLE_NOT_ALLOWED);
    }

    #[test]
    fn a_shell_copied_over_a_listed_program_is_refused_by_content() {
        let found = judge(&listed(), &exe("/app/server", SH, false));
        assert!(matches!(
            &found[..],
            [Finding::ExecutableNotAllowed(
                ExecutableRefusal::OtherContent { .. }
            )]
        ));
    }

    #[test]
    fn the_images_own_file_at_a_listed_path_follows_an_image_upgrade() {
        // The new image's /app/server has another hash: allowed, not flagged.
        assert!(judge(&listed(), &exe("/app/server", SH, true)).is_empty());
    }

    #[test]
    fn zero_drift_allows_the_image_and_the_list_and_nothing_else() {
        let rules = RuntimeRules {
            zero_drift: true,
            allowed_executables: vec![allow("/data/tool", Some(APP))],
            ..RuntimeRules::default()
        };
        assert!(judge(&rules, &exe("/usr/bin/anything", SH, true)).is_empty());
        assert!(judge(&rules, &exe("/data/tool", APP, false)).is_empty());
        assert_eq!(judge(&rules, &exe("/data/tool", SH, false)).len(), 1);
        assert_eq!(judge(&rules, &exe("/usr/bin/dropped", SH, false)).len(), 1);
    }

    #[test]
    fn a_prefix_entry_without_hash_allows_any_content_below_it() {
        let rules = RuntimeRules {
            allowed_executables: vec![allow("/opt/tools/*", None)],
            ..RuntimeRules::default()
        };
        assert!(judge(&rules, &exe("/opt/tools/a", SH, false)).is_empty());
        assert_eq!(judge(&rules, &exe("/opt/other", SH, false)).len(), 1);
    }

    #[test]
    fn names_ports_and_egress_are_judged_as_the_enforcer_does() {
        let rules = RuntimeRules {
            denied_processes: vec!["nc".into()],
            allowed_processes: vec!["server".into(), "nc".into()],
            allowed_listen_ports: vec![8080],
            egress_allow: vec!["10.0.0.0/8:443".into()],
            ..RuntimeRules::default()
        };
        let process = |name: &str| Observed::Process {
            name: name.into(),
            parent: String::new(),
        };
        assert!(judge(&rules, &process("server")).is_empty());
        assert_eq!(
            judge(&rules, &process("nc")),
            vec![Finding::DeniedProcess { name: "nc".into() }]
        );
        assert_eq!(
            judge(&rules, &process("sh"))[0].rule(),
            "behavior/unexpected-process"
        );
        let listen = |port| Observed::Listen {
            protocol: Protocol::Tcp,
            port,
        };
        assert!(judge(&rules, &listen(8080)).is_empty());
        assert_eq!(judge(&rules, &listen(9000)).len(), 1);
        let egress = |address: &str, port| Observed::Egress {
            address: address.parse().unwrap(),
            port,
            protocol: Protocol::Tcp,
        };
        assert!(judge(&rules, &egress("10.1.2.3", 443)).is_empty());
        assert_eq!(judge(&rules, &egress("10.1.2.3", 80)).len(), 1);
        assert_eq!(
            judge(&rules, &exe("/usr/bin/nc", SH, true))[0].rule(),
            "behavior/denied-process"
        );
    }

    #[test]
    fn learning_reports_nothing() {
        assert_eq!(Outcome::of(Mode::Learn), Outcome::Learned);
        assert!(Outcome::of(Mode::Enforce) > Outcome::of(Mode::Audit));
    }
}
