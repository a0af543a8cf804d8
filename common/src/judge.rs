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
    /// Under `drift`, an executable that is not the image's own and that
    /// no `allowedExecutables` entry pins by content.
    Drift { path: String },
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
            Finding::Drift { .. } => NEW_EXECUTABLE,
        }
    }
}

pub const EXECUTABLE_NOT_ALLOWED: &str = "behavior/executable-not-allowed";
pub const NEW_EXECUTABLE: &str = "drift/new-executable";

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
            Finding::Drift { path } => {
                write!(f, "{path} is not the image's own file (new or changed)")
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

/// Whether an `allowedExecutables` entry names this executable by path
/// *and* content. A program the team reviewed and pinned is not drift,
/// wherever it came from; one listed by path alone still is (a copy put
/// there would pass). Fileless programs are never pinned: their path says
/// nothing of what runs. (A deleted one's caller knows and asks not.)
pub fn pinned(rules: &RuntimeRules, exe: &ExecutableFacts<'_>) -> bool {
    let Some(sha256) = exe.sha256 else {
        return false;
    };
    !exe.path.starts_with("/memfd:")
        && rules
            .allowed_executables
            .iter()
            .any(|a| a.sha256.as_deref() == Some(sha256) && glob_match(&a.path, exe.path))
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

/// `egressAllow` parsed once. Entries that do not parse allow nothing
/// (validation refuses them first).
#[derive(Debug, Clone)]
struct EgressAllow(Option<Vec<EgressRule>>);

impl EgressAllow {
    fn of(rules: &RuntimeRules) -> Self {
        Self(rules.egress_allow.as_ref().map(|entries| {
            entries
                .iter()
                .filter_map(|e| EgressRule::parse(e).ok())
                .collect()
        }))
    }

    /// Any when the list is absent, none when it is empty.
    fn allows(&self, address: IpAddr, port: u16) -> bool {
        self.0
            .as_ref()
            .is_none_or(|list| list.iter().any(|r| r.allows(address, port)))
    }
}

/// One policy's runtime rules, made ready to judge many items: what needs
/// parsing is parsed once. A replay judges a week of a workload's items
/// with one; the enforcer makes one per policy per socket scan.
#[derive(Debug, Clone)]
pub struct Judge<'a> {
    rules: &'a RuntimeRules,
    egress: EgressAllow,
}

impl<'a> Judge<'a> {
    pub fn new(rules: &'a RuntimeRules) -> Self {
        Self {
            rules,
            egress: EgressAllow::of(rules),
        }
    }

    /// Whether `allowedListenPorts` allows a listener on `port`: any when
    /// the list is absent, none when it is empty.
    pub fn listener_allowed(&self, port: u16) -> bool {
        self.rules
            .allowed_listen_ports
            .as_ref()
            .is_none_or(|ports| ports.contains(&port))
    }

    /// Whether `egressAllow` allows a connection to `address:port`: any
    /// when the list is absent, none when it is empty.
    pub fn egress_allowed(&self, address: IpAddr, port: u16) -> bool {
        self.egress.allows(address, port)
    }

    /// Every rule `item` breaks.
    pub fn judge(&self, item: &Observed) -> Vec<Finding> {
        let rules = self.rules;
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
                // Drift by origin only: the temporary-directory rule depends
                // on the pod's volumes, which observations do not carry.
                if rules.drift && !from_image && !pinned(rules, &facts) {
                    findings.push(Finding::Drift { path: path.clone() });
                }
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
                if self.listener_allowed(*port) {
                    Vec::new()
                } else {
                    vec![Finding::UnexpectedListener { port: *port }]
                }
            }
            Observed::Egress { address, port, .. } => {
                if self.egress_allowed(*address, *port) {
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

    fn judge(rules: &RuntimeRules, item: &Observed) -> Vec<Finding> {
        Judge::new(rules).judge(item)
    }
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

    /// Drift judged apart: these tests are about identity and names.
    fn identity_only() -> RuntimeRules {
        RuntimeRules {
            drift: false,
            ..RuntimeRules::default()
        }
    }

    fn listed() -> RuntimeRules {
        RuntimeRules {
            allowed_executables: vec![allow("/app/server", Some(APP)), allow("/bin/sh", Some(SH))],
            ..identity_only()
        }
    }

    #[test]
    fn without_identity_rules_every_executable_is_allowed() {
        let rules = identity_only();
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
            ..identity_only()
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
            ..identity_only()
        };
        assert!(judge(&rules, &exe("/opt/tools/a", SH, false)).is_empty());
        assert_eq!(judge(&rules, &exe("/opt/other", SH, false)).len(), 1);
    }

    #[test]
    fn names_ports_and_egress_are_judged_as_the_enforcer_does() {
        let rules = RuntimeRules {
            denied_processes: vec!["nc".into()],
            allowed_processes: vec!["server".into(), "nc".into()],
            allowed_listen_ports: Some(vec![8080]),
            egress_allow: Some(vec!["10.0.0.0/8:443".into()]),
            ..identity_only()
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
    fn under_drift_a_pinned_program_is_not_drift_and_a_path_alone_pins_nothing() {
        let rules = RuntimeRules {
            drift: true,
            allowed_executables: vec![allow("/data/tool", Some(APP)), allow("/opt/*", None)],
            ..identity_only()
        };
        // Dropped during learning and pinned by the draft: runs on.
        assert!(judge(&rules, &exe("/data/tool", APP, false)).is_empty());
        // Another content at the pinned path: not allowed, and drift.
        let rules_broken: Vec<_> = judge(&rules, &exe("/data/tool", SH, false))
            .iter()
            .map(Finding::rule)
            .collect();
        assert_eq!(rules_broken, [EXECUTABLE_NOT_ALLOWED, NEW_EXECUTABLE]);
        // Listed by path alone: allowed by the list, still drift.
        assert_eq!(
            judge(&rules, &exe("/opt/x", SH, false)),
            vec![Finding::Drift {
                path: "/opt/x".into()
            }]
        );
        // The image's own file is never drift.
        let image_only = RuntimeRules {
            drift: true,
            ..identity_only()
        };
        assert!(judge(&image_only, &exe("/usr/bin/env", SH, true)).is_empty());
        assert_eq!(judge(&image_only, &exe("/tmp/x", SH, false)).len(), 1);
    }

    #[test]
    fn nothing_fileless_or_unhashed_is_pinned() {
        let rules = RuntimeRules {
            allowed_executables: vec![allow("*", Some(SH))],
            ..identity_only()
        };
        let facts = |path, sha256| ExecutableFacts {
            path,
            sha256,
            from_image: false,
        };
        assert!(pinned(&rules, &facts("/data/x", Some(SH))));
        assert!(!pinned(&rules, &facts("/memfd:x", Some(SH))));
        assert!(!pinned(&rules, &facts("/data/x", None)));
        assert!(!pinned(&rules, &facts("/data/x", Some(APP))));
    }

    #[test]
    fn an_absent_list_allows_any_and_an_empty_one_none() {
        let absent = identity_only();
        let empty = RuntimeRules {
            allowed_listen_ports: Some(Vec::new()),
            egress_allow: Some(Vec::new()),
            ..identity_only()
        };
        let address = "10.1.2.3".parse().unwrap();
        let (absent_judge, empty_judge) = (Judge::new(&absent), Judge::new(&empty));
        assert!(absent_judge.listener_allowed(9090));
        assert!(absent_judge.egress_allowed(address, 443));
        assert!(!empty_judge.listener_allowed(9090));
        assert!(!empty_judge.egress_allowed(address, 443));
        // As written in a policy, and back.
        let yaml = "allowedListenPorts: []\negressAllow: []\n";
        let parsed: RuntimeRules = serde_yaml::from_str(yaml).unwrap();
        assert_eq!(parsed.allowed_listen_ports, Some(Vec::new()));
        let absent_again: RuntimeRules = serde_yaml::from_str("drift: true\n").unwrap();
        assert_eq!(absent_again.egress_allow, None);
        let written = serde_json::to_value(&absent_again).unwrap();
        assert!(written.get("egressAllow").is_none(), "{written}");
    }

    #[test]
    fn learning_reports_nothing() {
        assert_eq!(Outcome::of(Mode::Learn), Outcome::Learned);
        assert!(Outcome::of(Mode::Enforce) > Outcome::of(Mode::Audit));
    }
}
