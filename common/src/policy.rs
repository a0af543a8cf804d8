//! Policy documents: what security teams write and push, what the webhook
//! evaluates at admission and what the enforcer applies at run time.
//!
//! ```yaml
//! apiVersion: palisade.dev/v1alpha1
//! kind: RuntimePolicy
//! metadata: { name: restricted }
//! spec:
//!   mode: enforce
//!   selector: { namespaces: ["*"], excludeNamespaces: [kube-system] }
//!   admission: { podSecurity: restricted, disallowedTags: [latest] }
//!   runtime: { deniedProcesses: [sh, bash] }
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub const API_VERSION: &str = "palisade.dev/v1alpha1";
pub const KIND: &str = "RuntimePolicy";

/// A Kubernetes-style policy document.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyDocument {
    pub api_version: String,
    pub kind: String,
    pub metadata: PolicyMetadata,
    pub spec: PolicySpec,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyMetadata {
    pub name: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    #[serde(default)]
    pub mode: Mode,
    #[serde(default)]
    pub selector: Selector,
    #[serde(default)]
    pub admission: AdmissionRules,
    /// Only policies with a runtime section reach enforcers: an
    /// admission-only `enforce` policy must not turn on drift kills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeRules>,
}

/// Audit reports violations (admission warnings, runtime events); enforce
/// denies admission and stops violating processes. Learn reports nothing
/// at run time while enforcers' observations accumulate for
/// `palisade policy draft` (at admission it warns, as audit does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Learn,
    #[default]
    Audit,
    Enforce,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Learn => "learn",
            Mode::Audit => "audit",
            Mode::Enforce => "enforce",
        }
    }

    /// How strict: learn < audit < enforce.
    pub fn strictness(self) -> u8 {
        match self {
            Mode::Learn => 0,
            Mode::Audit => 1,
            Mode::Enforce => 2,
        }
    }
}

/// Which workloads a policy applies to. Empty means every namespace.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Selector {
    /// Namespace names; `*` matches all, a trailing `*` matches a prefix.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_namespaces: Vec<String>,
    /// Pod labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
}

impl Selector {
    pub fn matches(&self, namespace: &str, pod_labels: &BTreeMap<String, String>) -> bool {
        let included =
            self.namespaces.is_empty() || self.namespaces.iter().any(|p| glob_match(p, namespace));
        let excluded = self
            .exclude_namespaces
            .iter()
            .any(|p| glob_match(p, namespace));
        let labels_match = self
            .pod_labels
            .iter()
            .all(|(k, v)| pod_labels.get(k) == Some(v));
        included && !excluded && labels_match
    }
}

/// `*` alone matches everything; a trailing `*` matches a prefix.
pub fn glob_match(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PodSecurityLevel {
    Privileged,
    Baseline,
    Restricted,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdmissionRules {
    /// Pod Security Standards level to enforce.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod_security: Option<PodSecurityLevel>,
    /// Image prefixes allowed, e.g. `registry.k8s.io` or `ghcr.io/acme/`.
    /// Empty allows every registry.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_registries: Vec<String>,
    /// Tags that may not be used, e.g. `latest`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disallowed_tags: Vec<String>,
    /// Images with neither tag nor digest resolve to `latest`; deny them
    /// when true.
    #[serde(default)]
    pub disallow_untagged: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub required_resources: Option<RequiredResources>,
    /// Pods must carry the enforcer sidecar (catches fail-open injection).
    #[serde(default)]
    pub require_enforcer: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub custom: Vec<CustomRule>,
}

/// Resource names (`cpu`, `memory`, ...) every container must set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RequiredResources {
    #[serde(default)]
    pub limits: Vec<String>,
    #[serde(default)]
    pub requests: Vec<String>,
}

/// A condition over a field path of the Pod, e.g.
/// `spec.containers[*].imagePullPolicy Equals Always`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CustomRule {
    pub name: String,
    /// Dotted path from the Pod root; `[*]` iterates a list, `[N]` indexes.
    pub path: String,
    pub operator: Operator,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Operator {
    Equals,
    NotEquals,
    In,
    NotIn,
    Exists,
    NotExists,
    /// The value must be a string matching the regular expression.
    Matches,
}

/// What the enforcer watches and allows at run time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuntimeRules {
    /// Report executables that were not in the image at container start.
    #[serde(default = "default_true")]
    pub drift: bool,
    /// Process names (comm or exe basename) that may never run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub denied_processes: Vec<String>,
    /// When non-empty, only these process names may run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_processes: Vec<String>,
    /// Executables allowed by location and content. When this is non-empty
    /// or `zeroDrift` is on, any other executable breaks
    /// `behavior/executable-not-allowed`: a renamed or copied shell is
    /// neither where the list says nor what it says.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_executables: Vec<AllowedExecutable>,
    /// Allow exactly the executables of the container's own image (each
    /// unchanged since the container started), plus `allowedExecutables`.
    /// Follows the image: a new image digest brings its own programs.
    #[serde(default, skip_serializing_if = "is_false")]
    pub zero_drift: bool,
    /// Ports the pod may listen on. Absent allows any; `[]` allows none
    /// (what a draft says of a workload that never listened).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_listen_ports: Option<Vec<u16>>,
    /// Egress destinations as `CIDR` or `CIDR:port`. Absent allows any;
    /// `[]` allows none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress_allow: Option<Vec<String>>,
    /// Directories watched for new executable files.
    #[serde(default = "default_watched_paths")]
    pub watched_paths: Vec<String>,
    /// Prevent as well as detect: app containers start under
    /// `palisade-launch`, which confines them with Landlock (execution only
    /// from program directories, no writes there, no signals or ptrace to
    /// the enforcer; TCP allow-lists under `enforce`). Opt-in.
    #[serde(default, skip_serializing_if = "is_false")]
    pub prevent: bool,
    /// Program directories of the image beyond `/bin`, `/sbin`, `/usr`,
    /// `/lib`, `/lib64` (and the directory of the container's command).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub program_dirs: Vec<String>,
    /// With `prevent`: the launcher refuses memfds that could be executed
    /// (`memfd_create` without `MFD_NOEXEC_SEAL`), closing fileless
    /// execution on nodes without `vm.memfd_noexec=2`. Opt-in: some
    /// programs need such memfds (JIT double-mapping, browsers).
    #[serde(default, skip_serializing_if = "is_false")]
    pub deny_executable_memfd: bool,
    /// What an enforcing policy does with a process of the app's UID that
    /// made itself non-dumpable (`prctl(PR_SET_DUMPABLE, 0)`): its
    /// executable, root, memory maps and sockets are then closed to the
    /// enforcer, so no drift or identity rule can judge it. `kill` (the
    /// default) stops it under `enforce`; `report` only reports it. Under
    /// `audit` it is always only reported.
    ///
    /// Ordinary programs that do this are agents holding secrets
    /// (`ssh-agent`, `gpg-agent` on Debian, `rbw-agent`, keybase, password
    /// managers) and processes whose credentials changed (setuid/setgid or
    /// file-capability executables, a root process dropping to the app's
    /// UID); a restricted pod (no privilege escalation, non-root) has none
    /// of the latter. Name such agents in `allowedNonDumpable` rather than
    /// turning this to `report`.
    #[serde(default, skip_serializing_if = "NonDumpable::is_default")]
    pub non_dumpable: NonDumpable,
    /// Process names (`comm`, as /proc/PID/stat shows it even for a hidden
    /// process) that may make themselves non-dumpable: reported neither as
    /// hiding nor stopped for it. Names on `allowedProcesses` count too.
    /// A name is chosen by whoever starts the process: this trusts it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_non_dumpable: Vec<String>,
}

/// One entry of `allowedExecutables`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowedExecutable {
    /// Absolute path in the container; a trailing `*` matches a prefix.
    pub path: String,
    /// Lower-case hex SHA-256 the file must have. Absent: any content at
    /// that path. A file of the container's own image at a listed path is
    /// allowed whatever its hash (an image upgrade changes hashes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

impl RuntimeRules {
    /// Whether executables are judged by identity at all.
    pub fn limits_executables(&self) -> bool {
        self.zero_drift || !self.allowed_executables.is_empty()
    }
}

/// See [`RuntimeRules::non_dumpable`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NonDumpable {
    /// Stopped under `enforce`, reported under `audit`.
    #[default]
    Kill,
    /// Reported only, in every mode.
    Report,
}

impl NonDumpable {
    fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

impl RuntimeRules {
    /// Whether a process named `comm` may make itself non-dumpable under
    /// these rules.
    pub fn allows_non_dumpable(&self, comm: &str) -> bool {
        self.allowed_non_dumpable
            .iter()
            .chain(&self.allowed_processes)
            .any(|name| name == comm)
    }
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Default for RuntimeRules {
    fn default() -> Self {
        Self {
            drift: true,
            denied_processes: Vec::new(),
            allowed_processes: Vec::new(),
            allowed_executables: Vec::new(),
            zero_drift: false,
            allowed_listen_ports: None,
            egress_allow: None,
            watched_paths: default_watched_paths(),
            prevent: false,
            program_dirs: Vec::new(),
            deny_executable_memfd: false,
            non_dumpable: NonDumpable::default(),
            allowed_non_dumpable: Vec::new(),
        }
    }
}

fn default_true() -> bool {
    true
}

fn default_watched_paths() -> Vec<String> {
    ["/tmp", "/var/tmp", "/dev/shm"]
        .into_iter()
        .map(String::from)
        .collect()
}

/// A policy that failed validation, with every problem found.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("policy {name:?} is invalid: {}", problems.join("; "))]
pub struct InvalidPolicy {
    pub name: String,
    pub problems: Vec<String>,
}

impl PolicyDocument {
    /// Parses one YAML or JSON document and validates it.
    pub fn from_yaml(text: &str) -> Result<Self, ParseError> {
        let doc: PolicyDocument = serde_yaml::from_str(text).map_err(ParseError::Syntax)?;
        doc.validate()?;
        Ok(doc)
    }

    /// Checks everything serde cannot: names, versions, regexes, CIDRs.
    pub fn validate(&self) -> Result<(), InvalidPolicy> {
        let mut problems = Vec::new();
        if self.api_version != API_VERSION {
            problems.push(format!(
                "apiVersion: expected {API_VERSION:?}, got {:?}",
                self.api_version
            ));
        }
        if self.kind != KIND {
            problems.push(format!("kind: expected {KIND:?}, got {:?}", self.kind));
        }
        if !is_dns_label(&self.metadata.name) {
            problems.push(format!(
                "metadata.name: {:?} must be a DNS label (lowercase alphanumerics and '-', at most 63)",
                self.metadata.name
            ));
        }
        for (i, rule) in self.spec.admission.custom.iter().enumerate() {
            let at = format!("spec.admission.custom[{i}]");
            if let Err(problem) = rule.check() {
                problems.push(format!("{at}: {problem}"));
            }
        }
        if let Some(runtime) = &self.spec.runtime {
            for (i, entry) in runtime.egress_allow.iter().flatten().enumerate() {
                if let Err(problem) = crate::net::EgressRule::parse(entry) {
                    problems.push(format!("spec.runtime.egressAllow[{i}]: {problem}"));
                }
            }
            for (i, path) in runtime.watched_paths.iter().enumerate() {
                if !path.starts_with('/') {
                    problems.push(format!(
                        "spec.runtime.watchedPaths[{i}]: {path:?} must be absolute"
                    ));
                }
            }
            for (i, path) in runtime.program_dirs.iter().enumerate() {
                if let Err(problem) = crate::launch::check_program_dir(path) {
                    problems.push(format!("spec.runtime.programDirs[{i}]: {problem}"));
                }
            }
            for (i, allowed) in runtime.allowed_executables.iter().enumerate() {
                let at = format!("spec.runtime.allowedExecutables[{i}]");
                if !allowed.path.starts_with('/') {
                    problems.push(format!("{at}.path: {:?} must be absolute", allowed.path));
                }
                if let Some(h) = allowed
                    .sha256
                    .as_deref()
                    .filter(|h| !crate::observe::is_sha256_hex(h))
                {
                    problems.push(format!(
                        "{at}.sha256: {h:?} must be 64 lower-case hex digits"
                    ));
                }
            }
            for (i, name) in runtime.allowed_non_dumpable.iter().enumerate() {
                if let Err(problem) = check_process_name(name) {
                    problems.push(format!("spec.runtime.allowedNonDumpable[{i}]: {problem}"));
                }
            }
        }
        for (i, name) in self.spec.admission.allowed_registries.iter().enumerate() {
            if name.is_empty() {
                problems.push(format!("spec.admission.allowedRegistries[{i}]: empty"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidPolicy {
                name: self.metadata.name.clone(),
                problems,
            })
        }
    }
}

impl CustomRule {
    fn check(&self) -> Result<(), String> {
        if !is_dns_label(&self.name) {
            return Err(format!("name {:?} must be a DNS label", self.name));
        }
        crate::path::FieldPath::parse(&self.path).map_err(|e| format!("path: {e}"))?;
        match (self.operator, &self.value) {
            (Operator::Exists | Operator::NotExists, _) => Ok(()),
            (_, None) => Err(format!("operator {:?} needs a value", self.operator)),
            (Operator::In | Operator::NotIn, Some(v)) if !v.is_array() => {
                Err(format!("operator {:?} needs a list value", self.operator))
            }
            (Operator::Matches, Some(serde_json::Value::String(re))) => regex::Regex::new(re)
                .map(drop)
                .map_err(|e| format!("value: invalid regex: {e}")),
            (Operator::Matches, Some(_)) => Err("operator Matches needs a string value".into()),
            _ => Ok(()),
        }
    }
}

/// A process name as the kernel keeps it (`comm`): never empty, at most
/// 15 bytes (longer names could never match), no `/`.
fn check_process_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err("empty".into())
    } else if name.contains('/') {
        Err(format!("{name:?} is a path; name the process"))
    } else if name.len() > 15 {
        Err(format!(
            "{name:?} is longer than the 15 bytes the kernel keeps of a process name"
        ))
    } else {
        Ok(())
    }
}

pub(crate) fn is_dns_label(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("not a valid policy document: {0}")]
    Syntax(#[source] serde_yaml::Error),
    #[error(transparent)]
    Invalid(#[from] InvalidPolicy),
    #[error(transparent)]
    InvalidException(#[from] crate::exception::InvalidException),
}

/// One document of a policy source: a policy or an exception to one.
// A handful of documents live at a time (a source's parse): boxing the
// larger variant would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum Document {
    Policy(PolicyDocument),
    Exception(crate::exception::PolicyException),
}

impl From<PolicyDocument> for Document {
    fn from(doc: PolicyDocument) -> Self {
        Self::Policy(doc)
    }
}

impl Document {
    /// Parses one YAML or JSON document by its `kind` and validates it.
    pub fn from_yaml(text: &str) -> Result<Self, ParseError> {
        #[derive(Deserialize)]
        struct Kind {
            #[serde(default)]
            kind: String,
        }
        let kind: Kind = serde_yaml::from_str(text).map_err(ParseError::Syntax)?;
        if kind.kind == crate::exception::EXCEPTION_KIND {
            let exception: crate::exception::PolicyException =
                serde_yaml::from_str(text).map_err(ParseError::Syntax)?;
            exception.validate()?;
            Ok(Self::Exception(exception))
        } else {
            PolicyDocument::from_yaml(text).map(Self::Policy)
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Self::Policy(p) => &p.metadata.name,
            Self::Exception(e) => &e.metadata.name,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Self::Policy(_) => KIND,
            Self::Exception(_) => crate::exception::EXCEPTION_KIND,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: { name: restricted }
spec:
  mode: enforce
  selector: { namespaces: ["team-*"], excludeNamespaces: [team-legacy] }
  admission:
    podSecurity: restricted
    disallowedTags: [latest]
    custom:
      - name: pull-always
        path: spec.containers[*].imagePullPolicy
        operator: Equals
        value: Always
  runtime:
    deniedProcesses: [sh]
    egressAllow: ["10.0.0.0/8:443"]
"#;

    #[test]
    fn parses_a_full_document() {
        let doc = PolicyDocument::from_yaml(GOOD).expect("valid");
        assert_eq!(doc.spec.mode, Mode::Enforce);
        assert_eq!(
            doc.spec.admission.pod_security,
            Some(PodSecurityLevel::Restricted)
        );
        let runtime = doc.spec.runtime.as_ref().expect("runtime section");
        assert!(runtime.drift, "drift defaults to on");
        assert_eq!(runtime.watched_paths.len(), 3);
    }

    #[test]
    fn unknown_fields_are_rejected_with_their_name() {
        let bad = GOOD.replace("disallowedTags", "disallowedTagz");
        let err = PolicyDocument::from_yaml(&bad).unwrap_err().to_string();
        assert!(err.contains("disallowedTagz"), "{err}");
    }

    #[test]
    fn validation_lists_every_problem_with_its_path() {
        let bad = GOOD
            .replace("name: restricted", "name: Not_A_Label")
            .replace("value: Always", "")
            .replace("10.0.0.0/8:443", "10.0.0.0/33");
        let err = PolicyDocument::from_yaml(&bad).unwrap_err().to_string();
        assert!(err.contains("metadata.name"), "{err}");
        assert!(err.contains("spec.admission.custom[0]"), "{err}");
        assert!(err.contains("spec.runtime.egressAllow[0]"), "{err}");
    }

    #[test]
    fn hidden_processes_are_stopped_under_enforce_unless_the_policy_says_otherwise() {
        let doc = PolicyDocument::from_yaml(GOOD).unwrap();
        let runtime = doc.spec.runtime.unwrap();
        assert_eq!(runtime.non_dumpable, NonDumpable::Kill);
        assert!(!runtime.allows_non_dumpable("ssh-agent"));
        let text = serde_json::to_string(&runtime).unwrap();
        assert!(
            !text.contains("nonDumpable"),
            "the default is left out, so enforcers that predate it still read the policy: {text}"
        );
        let report = GOOD.replace(
            "deniedProcesses: [sh]",
            "deniedProcesses: [sh]\n    nonDumpable: report\n    allowedNonDumpable: [ssh-agent]",
        );
        let runtime = PolicyDocument::from_yaml(&report)
            .unwrap()
            .spec
            .runtime
            .unwrap();
        assert_eq!(runtime.non_dumpable, NonDumpable::Report);
        assert!(runtime.allows_non_dumpable("ssh-agent"));
        let allowed = RuntimeRules {
            allowed_processes: vec!["app".into()],
            ..RuntimeRules::default()
        };
        assert!(allowed.allows_non_dumpable("app"), "allowed to run at all");
    }

    #[test]
    fn a_hidden_process_name_that_could_never_match_is_refused() {
        let bad = GOOD.replace(
            "deniedProcesses: [sh]",
            "deniedProcesses: [sh]\n    allowedNonDumpable: [\"/usr/bin/ssh-agent\", \"\", a-very-long-agent-name]",
        );
        let err = PolicyDocument::from_yaml(&bad).unwrap_err().to_string();
        assert!(
            err.contains("allowedNonDumpable[0]: \"/usr/bin/ssh-agent\" is a path"),
            "{err}"
        );
        assert!(err.contains("allowedNonDumpable[1]: empty"), "{err}");
        assert!(err.contains("allowedNonDumpable[2]"), "{err}");
        let kill = GOOD.replace(
            "deniedProcesses: [sh]",
            "deniedProcesses: [sh]\n    nonDumpable: stop",
        );
        let err = PolicyDocument::from_yaml(&kill).unwrap_err().to_string();
        assert!(err.contains("stop"), "{err}");
    }

    #[test]
    fn selector_globs_and_exclusions() {
        let doc = PolicyDocument::from_yaml(GOOD).unwrap();
        let none = BTreeMap::new();
        assert!(doc.spec.selector.matches("team-a", &none));
        assert!(!doc.spec.selector.matches("team-legacy", &none));
        assert!(!doc.spec.selector.matches("default", &none));
        assert!(Selector::default().matches("anything", &none));
    }
}
