//! The active policy set and its evaluation against a pod template.

pub mod images;
pub mod pod;
pub mod pss;
pub mod rules;

// `policy::custom` is public API from before custom rules joined the others.
pub use rules::custom;

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use palisade_common::exception::{Decision, PolicyException, Target};
use palisade_common::launch::LaunchPolicy;
use palisade_common::path::{FieldPath, FieldSet};
use palisade_common::policy::{Document, Mode, PolicyDocument, RuntimeRules};
use palisade_common::wire::{RuntimeBundle, RuntimePolicy};
use pod::PodSpec;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use custom::CompiledRule;
use rules::{enforcer, registries, resources, tags, untagged};

use crate::admission::reason::SkipReason;

/// What every list allows, where an empty list allows everything. Lists
/// with nothing in common cannot be expressed (empty means "any"), so the
/// shortest one is kept.
fn allowed_by_all<'a, T: Clone + PartialEq + 'a>(lists: impl Iterator<Item = &'a [T]>) -> Vec<T> {
    let lists: Vec<&[T]> = lists.filter(|l| !l.is_empty()).collect();
    let Some(first) = lists.first() else {
        return Vec::new();
    };
    let common: Vec<T> = first
        .iter()
        .filter(|x| lists.iter().all(|l| l.contains(x)))
        .cloned()
        .collect();
    if common.is_empty() {
        lists
            .iter()
            .min_by_key(|l| l.len())
            .map(|l| l.to_vec())
            .unwrap_or_default()
    } else {
        common
    }
}

/// A broken rule, relative to the pod template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// A [`rules::RuleId`], written out: `podSecurity/privileged`,
    /// `images/allowedRegistries`, `custom/x`.
    pub rule: String,
    pub path: String,
    pub message: String,
}

/// A finding attributed to a policy, with the path in the admitted object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub policy: String,
    pub mode: Mode,
    pub rule: String,
    pub path: String,
    pub message: String,
    /// What a PolicyException says about it, if one names it.
    pub exception: Option<ExceptionNote>,
}

/// A PolicyException naming a violation, described for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExceptionNote {
    /// An active exception: the violation neither denies nor kills.
    Excepted(String),
    /// Only an expired one: the rule applies again.
    Expired(String),
}

impl Violation {
    /// Whether an active PolicyException covers it.
    pub fn is_excepted(&self) -> bool {
        matches!(self.exception, Some(ExceptionNote::Excepted(_)))
    }

    /// Whether it denies admission: enforce mode and no active exception.
    /// The webhook and `palisade check` both ask this.
    pub fn denies(&self) -> bool {
        self.mode == Mode::Enforce && !self.is_excepted()
    }
}

impl Violation {
    /// The field path, the message and what an exception says, without
    /// the policy and rule (reports carry those in fields of their own).
    pub fn detail(&self) -> String {
        let note = match &self.exception {
            Some(ExceptionNote::Expired(exception)) => {
                format!(" (PolicyException {exception} has expired)")
            }
            Some(ExceptionNote::Excepted(exception)) => {
                format!(" (excepted by PolicyException {exception})")
            }
            None => String::new(),
        };
        format!("{}: {}{note}", self.path, self.message)
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}: {}", self.policy, self.rule, self.detail())
    }
}

/// The pod template under evaluation (a Pod, or a workload's template).
pub struct PodView<'a> {
    /// `{metadata, spec}` as JSON, or at least the fields in the policy
    /// set's [`PolicySet::reads`]; custom rules and raw checks read it.
    pub raw: Cow<'a, Value>,
    pub spec: PodSpec,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// True for a Pod itself (rules like requireEnforcer only apply there).
    pub is_pod: bool,
    /// What admission found about the enforcer (it knows the configured
    /// image; policies do not).
    pub enforcer: EnforcerVerdict,
}

/// The pod's enforcer as admission judged it, for `requireEnforcer`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum EnforcerVerdict {
    /// Not judged (offline and unit use): a container with the enforcer's
    /// name counts.
    #[default]
    ByName,
    /// The configured enforcer image runs under the enforcer's name.
    Present,
    Missing,
    /// The pod gets no enforcer for a reason its spec states (Windows,
    /// hostPID, hostNetwork when configured).
    Exempt(SkipReason),
    /// A container takes the enforcer's name without its image: the
    /// message says which and why.
    Impostor {
        path: String,
        message: String,
    },
}

impl<'a> PodView<'a> {
    pub fn parse(raw: &'a Value, is_pod: bool) -> Result<Self, serde_json::Error> {
        let spec = match raw.get("spec") {
            Some(spec) => PodSpec::deserialize(spec)?,
            None => return Err(serde::de::Error::missing_field("spec")),
        };
        let string_map = |key: &str| -> Result<BTreeMap<String, String>, serde_json::Error> {
            match raw.get("metadata").and_then(|m| m.get(key)) {
                Some(v) if !v.is_null() => BTreeMap::deserialize(v),
                _ => Ok(BTreeMap::new()),
            }
        };
        Ok(Self {
            raw: Cow::Borrowed(raw),
            spec,
            labels: string_map("labels")?,
            annotations: string_map("annotations")?,
            is_pod,
            enforcer: EnforcerVerdict::default(),
        })
    }

    /// A Pod from its JSON text, in one pass: the spec typed, and of the
    /// rest only the fields `reads` names (a typical pod's managedFields,
    /// status and most of its spec are never built as JSON values).
    pub fn from_json(text: &str, reads: &FieldSet) -> Result<PodView<'static>, serde_json::Error> {
        let pod = pod::ParsedPod::from_json(text, reads)?;
        Ok(PodView {
            raw: Cow::Owned(pod.raw),
            spec: pod.spec,
            labels: pod.labels,
            annotations: pod.annotations,
            is_pod: true,
            enforcer: EnforcerVerdict::default(),
        })
    }

    /// Every container image, with the container it belongs to (its path
    /// and name).
    fn images(&self) -> impl Iterator<Item = (ContainerPath, &str, &str)> {
        let spec = &self.spec;
        let lists = [
            (
                "spec.initContainers",
                spec.init_containers.as_deref().unwrap_or_default(),
            ),
            ("spec.containers", spec.containers.as_slice()),
        ];
        lists
            .into_iter()
            .flat_map(|(list, cs)| {
                cs.iter().enumerate().filter_map(move |(index, c)| {
                    Some((
                        ContainerPath { list, index },
                        c.name.as_str(),
                        c.image.as_deref()?,
                    ))
                })
            })
            .chain(
                spec.ephemeral_containers
                    .iter()
                    .flatten()
                    .enumerate()
                    .filter_map(|(index, c)| {
                        let list = "spec.ephemeralContainers";
                        Some((
                            ContainerPath { list, index },
                            c.name.as_str(),
                            c.image.as_deref()?,
                        ))
                    }),
            )
    }
}

/// `spec.containers[2]`: written out only when a finding names it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContainerPath {
    pub list: &'static str,
    pub index: usize,
}

impl fmt::Display for ContainerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.list, self.index)
    }
}

struct CompiledPolicy {
    doc: PolicyDocument,
    custom: Vec<CompiledRule>,
}

/// Validated, compiled policies; immutable once built (reload swaps sets).
#[derive(Default)]
pub struct PolicySet {
    policies: Vec<CompiledPolicy>,
    /// The raw fields evaluation reads beyond the typed spec.
    reads: FieldSet,
    /// Some policy asks for prevention (`runtime.prevent`): only then does
    /// admission read what prevention needs (labels, commands).
    prevention: bool,
    /// PolicyExceptions, by name; `PolicyException::decide` reads them.
    exceptions: Vec<PolicyException>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot read policy directory {path}: {source}")]
    ReadDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot read {path}: {source}")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: document {index}: {source}")]
    Document {
        path: PathBuf,
        index: usize,
        source: palisade_common::policy::ParseError,
    },
    #[error("{path}: {source}")]
    Compile {
        path: PathBuf,
        source: custom::CompileError,
    },
    #[error("{kind} {name:?} is defined twice ({first} and {second})")]
    Duplicate {
        kind: &'static str,
        name: String,
        first: String,
        second: String,
    },
}

/// The policies (with runtime rules) and exceptions that select one pod,
/// as positions in the [`PolicySet`] that made it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuntimeSelection {
    policies: Vec<usize>,
    exceptions: Vec<usize>,
}

impl PolicySet {
    /// Compiles validated documents; `origin` names where each came from.
    pub fn from_documents<D: Into<Document>>(
        docs: impl IntoIterator<Item = (String, D)>,
    ) -> Result<Self, LoadError> {
        let mut policies: Vec<CompiledPolicy> = Vec::new();
        let mut exceptions: Vec<PolicyException> = Vec::new();
        let mut origins: BTreeMap<(&'static str, String), String> = BTreeMap::new();
        for (origin, doc) in docs {
            let doc: Document = doc.into();
            let key = (doc.kind(), doc.name().to_string());
            if let Some(first) = origins.insert(key, origin.clone()) {
                return Err(LoadError::Duplicate {
                    kind: doc.kind(),
                    name: doc.name().to_string(),
                    first,
                    second: origin,
                });
            }
            let doc = match doc {
                Document::Policy(doc) => doc,
                Document::Exception(exception) => {
                    exceptions.push(exception);
                    continue;
                }
            };
            let custom = doc
                .spec
                .admission
                .custom
                .iter()
                .map(CompiledRule::compile)
                .collect::<Result<_, _>>()
                .map_err(|source| LoadError::Compile {
                    path: PathBuf::from(&origin),
                    source,
                })?;
            policies.push(CompiledPolicy { doc, custom });
        }
        exceptions.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        policies.sort_by(|a, b| a.doc.metadata.name.cmp(&b.doc.metadata.name));
        let mut reads = FieldSet::default();
        for path in pss::RAW_FIELDS {
            reads.insert(&FieldPath::parse(path).expect("valid built-in path"));
        }
        for rule in policies.iter().flat_map(|p| &p.custom) {
            reads.insert(rule.path());
        }
        let prevention = policies
            .iter()
            .any(|p| p.doc.spec.runtime.as_ref().is_some_and(|r| r.prevent));
        Ok(Self {
            policies,
            reads,
            prevention,
            exceptions,
        })
    }

    /// The fields of a pod evaluation reads as raw JSON (custom rule
    /// paths, and the Pod Security checks made on raw JSON).
    pub fn reads(&self) -> &FieldSet {
        &self.reads
    }

    /// Every `*.yaml`/`*.yml`/`*.json` file in `dir` (multi-document YAML
    /// allowed). Any bad document fails the whole load, naming file and index.
    pub fn load_dir(dir: &Path) -> Result<Self, LoadError> {
        Self::from_documents(load_dir_documents(dir)?)
    }

    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    pub fn documents(&self) -> impl Iterator<Item = &PolicyDocument> {
        self.policies.iter().map(|p| &p.doc)
    }

    /// Every PolicyException, expired ones included, by name.
    pub fn exceptions(&self) -> &[PolicyException] {
        &self.exceptions
    }

    /// Runtime rules of the policies selecting a pod, with a content tag
    /// that is the same on every replica for the same rules.
    pub fn runtime_bundle(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> RuntimeBundle {
        self.bundle_of(&self.runtime_selection(namespace, labels))
    }

    /// Which policies with runtime rules, and which of their exceptions,
    /// select a pod. Pods with the same selection get the same bundle, so
    /// a service can encode it once for all of them.
    pub fn runtime_selection(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> RuntimeSelection {
        let policies: Vec<usize> = (0..self.policies.len())
            .filter(|&i| {
                let doc = &self.policies[i].doc;
                doc.spec.runtime.is_some() && doc.spec.selector.matches(namespace, labels)
            })
            .collect();
        let exceptions = (0..self.exceptions.len())
            .filter(|&i| {
                let e = &self.exceptions[i];
                e.spec.selector.matches(namespace, labels)
                    && policies
                        .iter()
                        .any(|&p| self.policies[p].doc.metadata.name == e.spec.policy)
            })
            .collect();
        RuntimeSelection {
            policies,
            exceptions,
        }
    }

    /// The bundle of a selection made by [`PolicySet::runtime_selection`]
    /// on this same set.
    pub fn bundle_of(&self, selection: &RuntimeSelection) -> RuntimeBundle {
        let policies: Vec<RuntimePolicy> = selection
            .policies
            .iter()
            .filter_map(|&i| {
                let doc = &self.policies.get(i)?.doc;
                Some(RuntimePolicy {
                    name: doc.metadata.name.clone(),
                    mode: doc.spec.mode,
                    rules: doc.spec.runtime.clone()?,
                })
            })
            .collect();
        let exceptions: Vec<PolicyException> = selection
            .exceptions
            .iter()
            .filter_map(|&i| self.exceptions.get(i).cloned())
            .collect();
        // Without exceptions the tag is what it was before they existed, so
        // replicas of both releases agree during a rolling upgrade.
        let canonical = if exceptions.is_empty() {
            serde_json::to_vec(&policies)
        } else {
            serde_json::to_vec(&(&policies, &exceptions))
        }
        .unwrap_or_default();
        let etag = hex::encode(&Sha256::digest(&canonical)[..16]);
        RuntimeBundle {
            etag,
            policies,
            exceptions,
        }
    }

    /// Whether any policy asks for prevention.
    pub fn has_prevention(&self) -> bool {
        self.prevention
    }

    /// The launch policy for a pod the policies with `runtime.prevent`
    /// select; `None` when none does. Policies add up: program
    /// directories are the union, and so is refusing executable memfds;
    /// network allow-lists come from enforcing policies only, and where
    /// several give one, only what all allow.
    pub fn launch_policy(
        &self,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Option<LaunchPolicy> {
        let preventing: Vec<(Mode, &RuntimeRules)> = self
            .policies
            .iter()
            .filter(|p| p.doc.spec.selector.matches(namespace, labels))
            .filter_map(|p| {
                let rules = p.doc.spec.runtime.as_ref()?;
                rules.prevent.then_some((p.doc.spec.mode, rules))
            })
            .collect();
        if preventing.is_empty() {
            return None;
        }
        let mut policy = LaunchPolicy {
            deny_executable_memfd: preventing.iter().any(|(_, r)| r.deny_executable_memfd),
            ..LaunchPolicy::default()
        };
        for (_, rules) in &preventing {
            for dir in &rules.program_dirs {
                let dir = PathBuf::from(dir);
                if !policy.program_dirs.contains(&dir) {
                    policy.program_dirs.push(dir);
                }
            }
        }
        let enforcing: Vec<&RuntimeRules> = preventing
            .iter()
            .filter(|(mode, _)| *mode == Mode::Enforce)
            .map(|(_, rules)| *rules)
            .collect();
        policy.enforce_network = !enforcing.is_empty();
        // Landlock restricts what a list names; an empty list (none
        // allowed) is the enforcer's to judge, and leaves the launcher's
        // TCP rules open.
        policy.allowed_listen_ports = allowed_by_all(
            enforcing
                .iter()
                .map(|r| r.allowed_listen_ports.as_deref().unwrap_or_default()),
        );
        policy.egress_allow = allowed_by_all(
            enforcing
                .iter()
                .map(|r| r.egress_allow.as_deref().unwrap_or_default()),
        );
        Some(policy)
    }

    /// All violations of the policies selecting `namespace` and the pod's
    /// labels, each with what the PolicyExceptions say about it now.
    /// `prefix` turns template paths into object paths.
    pub fn evaluate(
        &self,
        namespace: &str,
        pod: &PodView<'_>,
        prefix: impl Fn(&str) -> String,
    ) -> Vec<Violation> {
        self.evaluate_at(namespace, pod, prefix, SystemTime::now())
    }

    /// [`Self::evaluate`] at a given time (exceptions expire).
    pub fn evaluate_at(
        &self,
        namespace: &str,
        pod: &PodView<'_>,
        prefix: impl Fn(&str) -> String,
        now: SystemTime,
    ) -> Vec<Violation> {
        let mut out = Vec::new();
        for policy in &self.policies {
            let spec = &policy.doc.spec;
            if !spec.selector.matches(namespace, &pod.labels) {
                continue;
            }
            for finding in findings(policy, pod) {
                let target = Target {
                    policy: &policy.doc.metadata.name,
                    rule: &finding.rule,
                    namespace,
                    pod_labels: &pod.labels,
                };
                let exception = match PolicyException::decide(&self.exceptions, &target, now) {
                    Decision::None => None,
                    Decision::Excepted(e) => Some(ExceptionNote::Excepted(e.describe())),
                    Decision::Expired(e) => Some(ExceptionNote::Expired(e.describe())),
                };
                out.push(Violation {
                    policy: policy.doc.metadata.name.clone(),
                    mode: spec.mode,
                    rule: finding.rule,
                    path: prefix(&finding.path),
                    message: finding.message,
                    exception,
                });
            }
        }
        out
    }
}

fn findings(policy: &CompiledPolicy, pod: &PodView<'_>) -> Vec<Finding> {
    let rules = &policy.doc.spec.admission;
    let mut out = Vec::new();
    if let Some(level) = rules.pod_security {
        let raw_spec = pod.raw.get("spec").unwrap_or(&Value::Null);
        out.extend(pss::check(level, &pod.spec, &pod.annotations, raw_spec));
    }
    let image_rules = !rules.allowed_registries.is_empty()
        || !rules.disallowed_tags.is_empty()
        || rules.disallow_untagged;
    for (container, name, image) in pod.images().filter(|_| image_rules) {
        let parsed = images::parse(image);
        // Paths move (the enforcer is inserted); names stay.
        let named = |mut finding: Finding| {
            finding.message = format!("container {name:?}: {}", finding.message);
            finding
        };
        out.extend(
            registries::check(&rules.allowed_registries, container, image, &parsed).map(named),
        );
        out.extend(tags::check(&rules.disallowed_tags, container, image, &parsed).map(named));
        out.extend(untagged::check(rules.disallow_untagged, container, image, &parsed).map(named));
    }
    if let Some(required) = &rules.required_resources {
        out.extend(resources::check(required, &pod.spec));
    }
    if rules.require_enforcer {
        out.extend(enforcer::check(pod));
    }
    for rule in &policy.custom {
        out.extend(rule.evaluate(&pod.raw));
    }
    out
}

/// The documents of every policy file in `dir`, each with its file name.
pub fn load_dir_documents(dir: &Path) -> Result<Vec<(String, Document)>, LoadError> {
    let mut docs = Vec::new();
    for path in policy_files(dir)? {
        let text = std::fs::read_to_string(&path).map_err(|source| LoadError::ReadFile {
            path: path.clone(),
            source,
        })?;
        for (index, doc) in split_yaml_documents(&text).into_iter().enumerate() {
            let parsed = Document::from_yaml(doc).map_err(|source| LoadError::Document {
                path: path.clone(),
                index,
                source,
            })?;
            docs.push((path.display().to_string(), parsed));
        }
    }
    Ok(docs)
}

fn policy_files(dir: &Path) -> Result<Vec<PathBuf>, LoadError> {
    let read_dir = |source| LoadError::ReadDir {
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_dir)? {
        let path = entry.map_err(read_dir)?.path();
        // Kubernetes ConfigMap mounts hold `..data` symlinks; skip dotfiles.
        let hidden = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with('.'));
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        if !hidden && path.is_file() && matches!(ext, "yaml" | "yml" | "json") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Splits multi-document YAML on `---` lines, dropping empty documents.
pub fn split_yaml_documents(text: &str) -> Vec<&str> {
    let mut docs = Vec::new();
    let mut start = 0;
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            docs.push(&text[start..offset]);
            start = offset + line.len();
        }
        offset += line.len();
    }
    docs.push(&text[start..]);
    docs.into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_common::ENFORCER_CONTAINER;
    use serde_json::json;

    /// One policy directory with a policy and an exception to one of its
    /// rules for one workload: the exception holds until its expiry, and
    /// every violation it does not name still denies.
    #[test]
    fn exceptions_from_the_policy_directory_apply_until_they_expire() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("policy.yaml"),
            "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {name: no-latest}\n\
             spec: {mode: enforce, admission: {disallowedTags: [latest], disallowUntagged: true}}\n\
             ---\napiVersion: palisade.dev/v1alpha1\nkind: PolicyException\nmetadata: {name: legacy-latest}\n\
             spec: {policy: no-latest, rules: [images/disallowedTags], selector: {namespaces: [billing], podLabels: {app: legacy}},\n\
             expiresAt: '2027-03-31T00:00:00Z', reason: vendor ships latest only, owner: billing}\n",
        )
        .unwrap();
        let set = PolicySet::load_dir(dir.path()).unwrap();
        assert_eq!((set.len(), set.exceptions().len()), (1, 1));
        let pod = |app: &str, image: &str| {
            json!({"metadata": {"labels": {"app": app}},
                   "spec": {"containers": [{"name": "c", "image": image}]}})
        };
        let judge = |pod: &Value, namespace: &str, now: &str| {
            let view = PodView::parse(pod, true).unwrap();
            set.evaluate_at(
                namespace,
                &view,
                |p| p.to_string(),
                humantime::parse_rfc3339(now).unwrap(),
            )
        };
        let before = "2027-01-01T00:00:00Z";
        let legacy = judge(&pod("legacy", "vendor/app:latest"), "billing", before);
        assert_eq!(legacy.len(), 1);
        assert!(legacy[0].is_excepted() && !legacy[0].denies());
        assert!(
            legacy[0].to_string().ends_with(
                "(excepted by PolicyException legacy-latest (owner billing; until \
                 2027-03-31T00:00:00Z: vendor ships latest only))"
            ),
            "{}",
            legacy[0]
        );
        // Another rule of the same policy, another workload, another
        // namespace: not excepted.
        let untagged = judge(&pod("legacy", "vendor/app"), "billing", before);
        assert!(untagged.iter().all(Violation::denies), "{untagged:?}");
        assert!(judge(&pod("web", "vendor/app:latest"), "billing", before)[0].denies());
        assert!(judge(&pod("legacy", "vendor/app:latest"), "shop", before)[0].denies());
        // Expired: denies again, and says which exception ran out.
        let expired = judge(
            &pod("legacy", "vendor/app:latest"),
            "billing",
            "2027-04-01T00:00:00Z",
        );
        assert!(expired[0].denies());
        assert!(
            expired[0]
                .to_string()
                .contains("PolicyException legacy-latest (owner billing"),
            "{}",
            expired[0]
        );
        assert!(expired[0].to_string().ends_with("has expired)"));
    }

    #[test]
    fn an_exception_and_a_policy_may_share_a_name_but_two_exceptions_may_not() {
        let exception = |name: &str| {
            Document::from_yaml(&format!(
                "apiVersion: palisade.dev/v1alpha1\nkind: PolicyException\nmetadata: {{name: {name}}}\n\
                 spec: {{policy: p, rules: ['*'], selector: {{namespaces: [shop]}}, expiresAt: '2027-01-01T00:00:00Z', reason: r, owner: o}}\n"
            ))
            .unwrap()
        };
        let policy = Document::from_yaml(
            "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {name: p}\nspec: {}\n",
        )
        .unwrap();
        assert!(PolicySet::from_documents([
            ("a".to_string(), policy),
            ("b".to_string(), exception("p"))
        ])
        .is_ok());
        let err = PolicySet::from_documents([
            ("a".to_string(), exception("x")),
            ("b".to_string(), exception("x")),
        ])
        .err()
        .unwrap()
        .to_string();
        assert!(
            err.starts_with("PolicyException \"x\" is defined twice"),
            "{err}"
        );
    }

    #[test]
    fn one_preventing_policy_asking_to_refuse_executable_memfds_makes_the_launcher_refuse_them() {
        let doc = |name: &str, runtime: &str| {
            let yaml = format!(
                "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {{name: {name}}}\n\
                 spec: {{mode: audit, runtime: {runtime}}}\n"
            );
            (name.to_string(), PolicyDocument::from_yaml(&yaml).unwrap())
        };
        let labels = BTreeMap::new();
        let plain = PolicySet::from_documents([doc("a", "{prevent: true}")]).unwrap();
        assert!(
            !plain
                .launch_policy("ns", &labels)
                .unwrap()
                .deny_executable_memfd
        );
        let asked = PolicySet::from_documents([
            doc("a", "{prevent: true}"),
            doc("b", "{prevent: true, denyExecutableMemfd: true}"),
        ])
        .unwrap();
        assert!(
            asked
                .launch_policy("ns", &labels)
                .unwrap()
                .deny_executable_memfd
        );
        let not_preventing =
            PolicySet::from_documents([doc("c", "{denyExecutableMemfd: true}")]).unwrap();
        assert!(not_preventing.launch_policy("ns", &labels).is_none());
    }

    /// Parsing a Pod's text in one pass (the webhook) and parsing it as a
    /// JSON value first (templates, offline checks) find the same
    /// violations, with the repository's policies and a custom rule on a
    /// field the typed spec also reads.
    #[test]
    fn text_and_value_parsing_find_the_same_violations() {
        let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies"));
        let mut docs = load_dir_documents(dir).unwrap();
        let extra = r#"
apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: { name: zz-images }
spec:
  mode: enforce
  admission:
    custom:
      - { name: pull-always, path: "spec.containers[*].imagePullPolicy", operator: Equals, value: Always }
      - { name: team, path: metadata.labels.team, operator: Exists }
"#;
        docs.push((
            "extra".into(),
            PolicyDocument::from_yaml(extra).unwrap().into(),
        ));
        let set = PolicySet::from_documents(docs).unwrap();
        let fixtures = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/fixtures/admission"
        ));
        let mut pods = vec![json!({
            "metadata": {"labels": {"app": "x"}, "annotations": {"a": "b"}},
            "spec": {"hostPID": true, "automountServiceAccountToken": true,
                "volumes": [{"name": "h", "hostPath": {"path": "/"}}, {"name": "n", "nfs": {}}],
                "initContainers": [{"name": "i", "image": "docker.io/x"}],
                "containers": [{"name": "c", "image": "x:latest", "imagePullPolicy": "IfNotPresent",
                    "securityContext": {"privileged": true, "capabilities": {"add": ["SYS_ADMIN"]}},
                    "ports": [{"containerPort": 80, "hostPort": 80}]}]}
        })];
        for name in ["pod-create.json", "pod-privileged.json"] {
            let review: Value =
                serde_json::from_str(&std::fs::read_to_string(fixtures.join(name)).unwrap())
                    .unwrap();
            pods.push(review["request"]["object"].clone());
        }
        for pod in pods {
            let text = pod.to_string();
            let from_text = PodView::from_json(&text, set.reads()).unwrap();
            let from_value = PodView::parse(&pod, true).unwrap();
            let found = set.evaluate("demo", &from_text, str::to_string);
            assert!(found.iter().any(|v| v.rule == "custom/team"), "{found:?}");
            assert_eq!(found, set.evaluate("demo", &from_value, str::to_string));
        }
    }

    fn set(yaml: &str) -> PolicySet {
        let docs = split_yaml_documents(yaml)
            .into_iter()
            .map(|d| ("test".to_string(), Document::from_yaml(d).unwrap()));
        PolicySet::from_documents(docs).unwrap()
    }

    const POLICIES: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: { name: images }
spec:
  mode: enforce
  admission:
    allowedRegistries: [registry.k8s.io, ghcr.io/acme/]
    disallowedTags: [latest]
    disallowUntagged: true
    requiredResources: { limits: [memory] }
---
apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: { name: audit-only }
spec:
  mode: audit
  selector: { namespaces: [prod] }
  admission:
    podSecurity: baseline
"#;

    fn violations(pod: Value, ns: &str) -> Vec<Violation> {
        let view = PodView::parse(&pod, true).unwrap();
        set(POLICIES).evaluate(ns, &view, |p| p.to_string())
    }

    #[test]
    fn image_and_resource_rules_name_the_field() {
        let pod = json!({"metadata": {}, "spec": {"containers": [
            {"name": "a", "image": "ghcr.io/acme/api:latest", "resources": {"limits": {"memory": "1Gi"}}},
            {"name": "b", "image": "docker.io/nginx"}
        ]}});
        let v = violations(pod, "default");
        let got: Vec<(&str, &str)> = v
            .iter()
            .map(|v| (v.rule.as_str(), v.path.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                ("images/disallowedTags", "spec.containers[0].image"),
                ("images/allowedRegistries", "spec.containers[1].image"),
                ("images/disallowUntagged", "spec.containers[1].image"),
                (
                    "resources/required",
                    "spec.containers[1].resources.limits.memory"
                ),
            ]
        );
        assert!(v.iter().all(|v| v.mode == Mode::Enforce));
        assert_eq!(
            v[0].to_string(),
            "[images] images/disallowedTags: spec.containers[0].image: container \"a\": image tag \"latest\" is not allowed (\"ghcr.io/acme/api:latest\")"
        );
    }

    #[test]
    fn selectors_scope_policies() {
        let pod = json!({"spec": {"hostPID": true, "containers": [
            {"name": "a", "image": "registry.k8s.io/pause:3.9", "resources": {"limits": {"memory": "1"}}}]}});
        assert!(violations(pod.clone(), "default").is_empty());
        let v = violations(pod, "prod");
        assert_eq!(v.len(), 1);
        assert_eq!(
            (v[0].policy.as_str(), v[0].mode),
            ("audit-only", Mode::Audit)
        );
    }

    #[test]
    fn duplicate_names_are_refused() {
        let one = PolicyDocument::from_yaml(split_yaml_documents(POLICIES)[0]).unwrap();
        let err = PolicySet::from_documents([("a".into(), one.clone()), ("b".into(), one)])
            .err()
            .unwrap();
        assert!(err.to_string().contains("defined twice"), "{err}");
    }

    #[test]
    fn load_dir_names_the_broken_file_and_document() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), POLICIES).unwrap();
        assert_eq!(PolicySet::load_dir(dir.path()).unwrap().len(), 2);
        std::fs::write(dir.path().join("b.yaml"), "---\nkind: RuntimePolicy\n").unwrap();
        let err = PolicySet::load_dir(dir.path()).err().unwrap().to_string();
        assert!(err.contains("b.yaml: document 0"), "{err}");
    }

    #[test]
    fn runtime_bundles_carry_only_policies_with_runtime_rules_and_follow_selectors() {
        let policies = format!(
            "{POLICIES}---\napiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {{name: shells}}\nspec:\n  mode: enforce\n  selector: {{podLabels: {{tier: web}}}}\n  runtime: {{deniedProcesses: [sh]}}\n"
        );
        let set = set(&policies);
        let web: BTreeMap<String, String> = [("tier".to_string(), "web".to_string())].into();
        let prod_web = set.runtime_bundle("prod", &web);
        // "images" (enforce) and "audit-only" judge admission only: enforcers
        // never see them, so their mode cannot arm runtime kills.
        let names: Vec<&str> = prod_web.policies.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["shells"]);
        assert_eq!(prod_web.policies[0].rules.denied_processes, ["sh"]);
        let other = set.runtime_bundle("default", &BTreeMap::new());
        assert!(other.policies.is_empty());
        assert_ne!(other.etag, prod_web.etag);
        assert_eq!(
            set.runtime_bundle("prod", &web).etag,
            prod_web.etag,
            "stable"
        );
    }

    #[test]
    fn runtime_bundles_carry_the_exceptions_selecting_the_pod() {
        let shells =
            "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {name: shells}\n\
                      spec: {mode: enforce, runtime: {deniedProcesses: [sh]}}\n";
        let exception = |name: &str, policy: &str, namespace: &str| {
            format!(
                "---\napiVersion: palisade.dev/v1alpha1\nkind: PolicyException\nmetadata: {{name: {name}}}\n\
                 spec: {{policy: {policy}, rules: ['behavior/*'], selector: {{namespaces: [{namespace}]}},\n\
                 expiresAt: '2027-01-01T00:00:00Z', reason: r, owner: o}}\n"
            )
        };
        let without = set(shells).runtime_bundle("prod", &BTreeMap::new());
        let with = set(&format!(
            "{shells}{}{}{}",
            exception("prod-shells", "shells", "prod"),
            exception("dev-shells", "shells", "dev"),
            exception("other-policy", "images", "prod"),
        ))
        .runtime_bundle("prod", &BTreeMap::new());
        let names: Vec<&str> = with
            .exceptions
            .iter()
            .map(|e| e.metadata.name.as_str())
            .collect();
        assert_eq!(
            names,
            ["prod-shells"],
            "its namespace, a policy in the bundle"
        );
        assert_ne!(with.etag, without.etag, "an exception is a new bundle");
        assert!(without.exceptions.is_empty());
        let text = serde_json::to_string(&without).unwrap();
        assert!(!text.contains("exceptions"), "{text}");
    }

    #[test]
    fn splits_documents() {
        assert_eq!(
            split_yaml_documents("a: 1\n---\nb: 2\n---\n# only a comment\n"),
            ["a: 1\n", "b: 2\n"]
        );
    }

    #[test]
    fn a_pod_level_limit_satisfies_required_container_limits() {
        let pod = json!({"metadata": {}, "spec": {
            "resources": {"limits": {"memory": "1Gi"}},
            "containers": [{"name": "a", "image": "registry.k8s.io/pause:3.10"}]
        }});
        assert!(violations(pod, "default").is_empty());
    }

    const REQUIRE_ENFORCER: &str = r#"
apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: { name: require-enforcer }
spec:
  mode: enforce
  admission: { requireEnforcer: true }
"#;

    fn enforcer_findings(verdict: EnforcerVerdict) -> Vec<(String, String, String)> {
        let pod = json!({"metadata": {}, "spec": {"containers": [
            {"name": ENFORCER_CONTAINER, "image": "busybox:1.36"}
        ]}});
        let mut view = PodView::parse(&pod, true).unwrap();
        view.enforcer = verdict;
        set(REQUIRE_ENFORCER)
            .evaluate("default", &view, |p| p.to_string())
            .into_iter()
            .map(|v| (v.rule, v.path, v.message))
            .collect()
    }

    #[test]
    fn require_enforcer_follows_the_verdict_of_admission_not_the_container_name() {
        assert!(enforcer_findings(EnforcerVerdict::Present).is_empty());
        assert!(enforcer_findings(EnforcerVerdict::Exempt(SkipReason::Windows)).is_empty());
        assert_eq!(
            enforcer_findings(EnforcerVerdict::Missing)[0].1,
            "spec.containers"
        );
        let impostor = enforcer_findings(EnforcerVerdict::Impostor {
            path: "spec.containers[0]".into(),
            message: "container name is reserved".into(),
        });
        assert_eq!(
            impostor,
            [(
                "enforcer/required".to_string(),
                "spec.containers[0]".to_string(),
                "container name is reserved".to_string()
            )]
        );
        // Unjudged (offline) views fall back to the name.
        assert!(enforcer_findings(EnforcerVerdict::ByName).is_empty());
    }
}
