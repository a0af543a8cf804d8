//! Sidecar injection and resource defaulting for a pod-shaped object
//! (`{metadata, spec}`: a Pod or any workload's pod template).
//!
//! The mutation is planned from a small typed view of the pod as a list of
//! JSON patch `add` operations: the webhook sends them as they are, and the
//! offline commands and template validation apply them to a JSON value, so
//! both run the same plan. A plan for an already-mutated pod is empty
//! (idempotent, safe under `reinvocationPolicy: IfNeeded`).
//!
//! Every plan yields a pod the apiserver accepts, whatever the input pod
//! (given the input was itself valid); the property test in
//! `admission/properties.rs` checks the rules below against generated
//! pods:
//!
//! - Skipped (no enforcer, resource defaults still apply, reason in the
//!   status annotation): opted out by annotation, `hostNetwork` with
//!   `injection.skip_host_network`, `hostPID` (the apiserver forbids
//!   `shareProcessNamespace` with it), Windows pods (`spec.os.name`).
//! - Degraded (enforcer injected, reason in the status annotation): an
//!   explicit `shareProcessNamespace: false` is kept.
//! - Container defaults never put a request above a limit: a container
//!   that requests a resource but sets no limit gets the default limit or
//!   its request, whichever is larger.
//! - Resources the pod sets at pod level (`spec.resources`) are neither
//!   defaulted on containers nor given to the enforcer: containers without
//!   their own values share the pod's budget, which cannot then be exceeded.
//! - Injected volume names never take a name the pod uses (`-1`, `-2`...
//!   are appended until free).
//! - The enforcer mounts an empty directory at the service-account token
//!   path, so the ServiceAccount admission plugin gives it no API token
//!   (and, having nothing to add, causes no second `/mutate` call).

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::api::core::v1::{Capabilities, SeccompProfile, SecurityContext};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::{to_raw_value, RawValue};
use serde_json::{json, Value};

use palisade_common::{ENFORCER_CONTAINER, INJECT_ANNOTATION, STATUS_ANNOTATION};

use super::enforcer::{Claim, EnforcerIdentity, ImpostorError};
use super::reason::{DegradeReason, SkipReason};
use crate::quantity::{is_valid_quantity, Quantity};
use crate::settings::{InjectionSettings, PullPolicy, ResourceDefaults};

mod prevent;

pub use prevent::{
    ImageCommand, ImageCommands, LaunchFor, LaunchShape, Prevent, Prevention, Unconfined,
    INSTALL_CONTAINER, LAUNCH_VOLUME,
};

/// Volume the enforcer keeps its policy cache and report spool in.
pub const STATE_VOLUME: &str = "palisade-enforcer-state";
pub const STATE_DIR: &str = "/var/run/palisade";
/// Downward API volume with the pod's labels (they select runtime policies).
pub const PODINFO_VOLUME: &str = "palisade-podinfo";
pub const PODINFO_DIR: &str = "/etc/palisade/podinfo";
/// Projected service-account token the enforcer reports with.
pub const TOKEN_VOLUME: &str = "palisade-token";
pub const TOKEN_DIR: &str = "/var/run/secrets/palisade";
/// Empty directory over the API token path: the ServiceAccount admission
/// plugin skips containers that already mount something there.
pub const NO_API_TOKEN_VOLUME: &str = "palisade-no-api-token";
pub const API_TOKEN_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

/// Node label naming the node's operating system.
pub const OS_LABEL: &str = "kubernetes.io/os";

/// Per-pod overrides of the sidecar's resources, merged over the defaults.
pub const RESOURCE_OVERRIDES: [(&str, Section, &str); 4] = [
    ("palisade.dev/sidecar-cpu", Section::Requests, "cpu"),
    ("palisade.dev/sidecar-memory", Section::Requests, "memory"),
    ("palisade.dev/sidecar-cpu-limit", Section::Limits, "cpu"),
    (
        "palisade.dev/sidecar-memory-limit",
        Section::Limits,
        "memory",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Section {
    Requests,
    Limits,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pod has the sidecar and defaults once the plan is applied
    /// (possibly already had).
    Injected {
        /// Containers whose resources are defaulted by this plan.
        defaulted: Vec<String>,
        /// What the enforcer cannot see in this pod; empty: everything.
        degraded: Vec<DegradeReason>,
    },
    /// No enforcer, for this reason; resources are still defaulted.
    Skipped {
        reason: SkipReason,
        defaulted: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MutateError {
    #[error("metadata.annotations[{annotation:?}]: {value:?} is not a resource quantity")]
    BadOverride { annotation: String, value: String },
    #[error(
        "metadata.annotations: {request_annotation}={request:?} exceeds \
         {limit_annotation}={limit:?}; a request must not exceed its limit"
    )]
    ConflictingOverrides {
        request_annotation: &'static str,
        request: String,
        limit_annotation: &'static str,
        limit: String,
    },
    #[error(transparent)]
    Impostor(#[from] ImpostorError),
    #[error("{0} must be an object")]
    NotAnObject(&'static str),
    #[error("cannot read the pod: {0}")]
    Unreadable(String),
}

/// Reads a view of the object from its JSON text. A failure is read again
/// with path tracking so that the error names the field
/// (`spec.containers[0].command: invalid type ...`); the common, successful
/// read pays nothing for it.
pub(crate) fn read_text<'de, T: Deserialize<'de>>(text: &'de str) -> Result<T, MutateError> {
    serde_json::from_str(text).map_err(|error| {
        let mut reader = serde_json::Deserializer::from_str(text);
        unreadable(
            error,
            serde_path_to_error::deserialize::<_, T>(&mut reader).err(),
        )
    })
}

/// Like [`read_text`], from a parsed value.
pub(crate) fn read_value<T: DeserializeOwned>(value: &Value) -> Result<T, MutateError> {
    T::deserialize(value)
        .map_err(|error| unreadable(error, serde_path_to_error::deserialize::<_, T>(value).err()))
}

/// The error, prefixed with the field it is in when the tracked read names
/// one; otherwise as the first read gave it (an error at the top, or one
/// the tracked read does not see, such as trailing characters).
fn unreadable<E: std::fmt::Display>(
    error: serde_json::Error,
    tracked: Option<serde_path_to_error::Error<E>>,
) -> MutateError {
    match tracked.filter(|t| t.path().iter().next().is_some()) {
        Some(t) => MutateError::Unreadable(format!("{}: {}", t.path(), t.inner())),
        None => MutateError::Unreadable(error.to_string()),
    }
}

// ---------------------------------------------------------------- the view

/// The fields of a pod the mutation reads; everything else is skipped
/// unparsed. Nulls read as absent, as the API server treats them.
#[derive(Debug, Default, Deserialize)]
pub struct PodShape {
    #[serde(default)]
    metadata: Option<MetadataShape>,
    #[serde(default)]
    spec: Option<SpecShape>,
}

#[derive(Debug, Default, Deserialize)]
struct MetadataShape {
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SpecShape {
    #[serde(default)]
    containers: Option<Vec<ContainerShape>>,
    #[serde(default)]
    init_containers: Option<Vec<ContainerShape>>,
    #[serde(default)]
    volumes: Option<Vec<NamedShape>>,
    #[serde(default)]
    host_network: Option<bool>,
    #[serde(default, rename = "hostPID")]
    host_pid: Option<bool>,
    #[serde(default)]
    share_process_namespace: Option<bool>,
    #[serde(default)]
    security_context: Option<SecurityContextShape>,
    #[serde(default)]
    os: Option<NamedShape>,
    #[serde(default)]
    node_selector: Option<BTreeMap<String, String>>,
    /// Pod-level resources (PodLevelResources).
    #[serde(default)]
    resources: Option<ResourcesShape>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerShape {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    resources: Option<ResourcesShape>,
    #[serde(default)]
    security_context: Option<SecurityContextShape>,
    #[serde(default)]
    volume_mounts: Option<Vec<NamedShape>>,
}

/// Quantities stay JSON values: the apiserver sends strings, but a number
/// must not make the whole pod unreadable.
#[derive(Debug, Default, Deserialize)]
struct ResourcesShape {
    #[serde(default)]
    requests: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    limits: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecurityContextShape {
    #[serde(default)]
    run_as_user: Option<i64>,
    #[serde(default)]
    run_as_group: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct NamedShape {
    #[serde(default)]
    name: Option<String>,
}

impl PodShape {
    /// Reads the view from the object's JSON text.
    pub fn from_json(text: &str) -> Result<Self, MutateError> {
        let shape: Self = read_text(text)?;
        shape.with_spec()
    }

    pub fn from_value(value: &Value) -> Result<Self, MutateError> {
        if !value.is_object() {
            return Err(MutateError::NotAnObject("object"));
        }
        let shape: Self = read_value(value)?;
        shape.with_spec()
    }

    /// A pod without a spec cannot be mutated (nor admitted).
    fn with_spec(self) -> Result<Self, MutateError> {
        match self.spec {
            Some(_) => Ok(self),
            None => Err(MutateError::NotAnObject("spec")),
        }
    }

    fn annotation(&self, key: &str) -> Option<&str> {
        let annotations = self.metadata.as_ref()?.annotations.as_ref()?;
        annotations.get(key).map(String::as_str)
    }

    fn spec(&self) -> &SpecShape {
        static EMPTY: SpecShape = SpecShape {
            containers: None,
            init_containers: None,
            volumes: None,
            host_network: None,
            host_pid: None,
            share_process_namespace: None,
            security_context: None,
            os: None,
            node_selector: None,
            resources: None,
        };
        self.spec.as_ref().unwrap_or(&EMPTY)
    }

    fn containers(&self, list: ContainerList) -> &[ContainerShape] {
        let spec = self.spec();
        let containers = match list {
            ContainerList::Init => spec.init_containers.as_deref(),
            ContainerList::App => spec.containers.as_deref(),
        };
        containers.unwrap_or_default()
    }

    /// Every container with its list and index.
    fn all_containers(&self) -> impl Iterator<Item = (ContainerList, usize, &ContainerShape)> {
        [ContainerList::Init, ContainerList::App]
            .into_iter()
            .flat_map(move |list| {
                self.containers(list)
                    .iter()
                    .enumerate()
                    .map(move |(i, c)| (list, i, c))
            })
    }

    fn volume_names(&self) -> BTreeSet<&str> {
        self.spec()
            .volumes
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.name.as_deref())
            .collect()
    }

    /// Whether the pod sets `resource` in its pod-level `spec.resources`.
    fn pod_level_sets(&self, resource: &str) -> bool {
        self.spec()
            .resources
            .as_ref()
            .is_some_and(|r| r.sets(resource))
    }

    /// The application's UID, so the enforcer can read its /proc entries
    /// (exe, root, fds need the same UID). Root is never copied.
    /// The app's UID and, when declared, its GID: the first app container
    /// that sets a user, else the pod's. Reading another process's
    /// `/proc/PID/exe`, root and fds needs both to match, so the enforcer
    /// takes both. Root (or no declared user) gives `None`.
    fn app_identity(&self) -> Option<(i64, Option<i64>)> {
        let pod = self.spec().security_context.as_ref();
        let pod_group = pod.and_then(|sc| sc.run_as_group);
        self.containers(ContainerList::App)
            .iter()
            .filter(|c| c.name.as_deref() != Some(ENFORCER_CONTAINER))
            .find_map(|c| {
                let sc = c.security_context.as_ref()?;
                Some((sc.run_as_user?, sc.run_as_group.or(pod_group)))
            })
            .or_else(|| pod.and_then(|sc| Some((sc.run_as_user?, pod_group))))
            .filter(|(uid, _)| *uid > 0)
    }
}

impl ResourcesShape {
    fn section(&self, section: Section) -> Option<&BTreeMap<String, Value>> {
        match section {
            Section::Requests => self.requests.as_ref(),
            Section::Limits => self.limits.as_ref(),
        }
    }

    fn sets(&self, resource: &str) -> bool {
        [Section::Requests, Section::Limits]
            .into_iter()
            .any(|s| self.section(s).is_some_and(|m| m.contains_key(resource)))
    }
}

impl ContainerShape {
    fn get(&self, section: Section, resource: &str) -> Option<&Value> {
        self.resources.as_ref()?.section(section)?.get(resource)
    }
}

/// A quantity as the apiserver would read it (a string, or a bare number).
fn quantity_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContainerList {
    Init,
    App,
}

impl ContainerList {
    fn field(self) -> &'static str {
        match self {
            ContainerList::Init => "initContainers",
            ContainerList::App => "containers",
        }
    }
}

// ---------------------------------------------------------------- decisions

/// What the skip decision reads from a pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkipFacts {
    /// `palisade.dev/inject: "false"`.
    pub opted_out: bool,
    /// `spec.os.name: windows`, or a `kubernetes.io/os: windows` node
    /// selector (the older way, still common): the Linux enforcer image
    /// cannot run there, and as a native sidecar it would hold the app back.
    pub windows: bool,
    pub host_pid: bool,
    pub host_network: bool,
}

/// Why a pod gets no enforcer, if it gets none. Pure, and shared by the
/// injector and `requireEnforcer`, so both decide alike.
pub fn decide_skip(facts: SkipFacts, skip_host_network: bool) -> Option<SkipReason> {
    if facts.opted_out {
        Some(SkipReason::OptedOut)
    } else if facts.windows {
        Some(SkipReason::Windows)
    } else if facts.host_pid {
        Some(SkipReason::HostPid)
    } else if skip_host_network && facts.host_network {
        Some(SkipReason::HostNetwork)
    } else {
        None
    }
}

/// [`decide_skip`] for the mutation's view of a pod.
pub fn skip_reason(pod: &PodShape, skip_host_network: bool) -> Option<SkipReason> {
    let spec = pod.spec();
    let facts = SkipFacts {
        opted_out: pod.annotation(INJECT_ANNOTATION) == Some("false"),
        windows: spec.os.as_ref().and_then(|os| os.name.as_deref()) == Some("windows")
            || spec
                .node_selector
                .as_ref()
                .and_then(|s| s.get(OS_LABEL))
                .map(String::as_str)
                == Some("windows"),
        host_pid: spec.host_pid == Some(true),
        host_network: spec.host_network == Some(true),
    };
    decide_skip(facts, skip_host_network)
}

/// Name for an injected volume: `base`, or `base-1`, `base-2`... the first
/// one no volume of the pod (nor one chosen earlier) has.
fn unique_name(base: &'static str, taken: &BTreeSet<String>) -> Cow<'static, str> {
    if !taken.contains(base) {
        return Cow::Borrowed(base);
    }
    (1..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !taken.contains(name))
        .map(Cow::Owned)
        .unwrap_or(Cow::Borrowed(base))
}

/// The limit to default for a container that requests `request` of a
/// resource but sets no limit: the default limit, raised to the request
/// when that is larger (so the container stays valid and the
/// `resource-limits` policy still finds a limit).
fn limit_for_request<'a>(request: Option<Cow<'a, str>>, default_limit: &'a str) -> Cow<'a, str> {
    match request {
        Some(request) if Quantity::compare(&request, default_limit) == Some(Ordering::Greater) => {
            request
        }
        _ => Cow::Borrowed(default_limit),
    }
}

/// The enforcer's resources: the configured ones with the pod's annotations
/// merged in, made consistent. An annotation wins over a default it
/// contradicts: an annotated request above the default limit raises the
/// limit to it, an annotated limit below the default request lowers the
/// request to it. Annotations that contradict each other (request above
/// limit, both annotated) are refused. Resources the pod sets at pod level
/// are left out (the enforcer shares the pod's budget).
pub fn sidecar_resources(
    defaults: &ResourceDefaults,
    annotation: impl Fn(&str) -> Option<String>,
    pod_level_sets: impl Fn(&str) -> bool,
) -> Result<ResourceDefaults, MutateError> {
    let mut resources = defaults.clone();
    let mut annotated: BTreeMap<(&str, Section), &'static str> = BTreeMap::new();
    for (key, section, name) in RESOURCE_OVERRIDES {
        let Some(value) = annotation(key) else {
            continue;
        };
        if !is_valid_quantity(&value) {
            return Err(MutateError::BadOverride {
                annotation: key.into(),
                value,
            });
        }
        let map = match section {
            Section::Requests => &mut resources.requests,
            Section::Limits => &mut resources.limits,
        };
        map.insert(name.into(), value);
        annotated.insert((name, section), key);
    }
    let names: BTreeSet<String> = resources.requests.keys().cloned().collect();
    for name in names {
        let (Some(request), Some(limit)) =
            (resources.requests.get(&name), resources.limits.get(&name))
        else {
            continue;
        };
        if Quantity::compare(request, limit) != Some(Ordering::Greater) {
            continue;
        }
        let request_key = annotated.get(&(name.as_str(), Section::Requests)).copied();
        let limit_key = annotated.get(&(name.as_str(), Section::Limits)).copied();
        match (request_key, limit_key) {
            (Some(request_annotation), Some(limit_annotation)) => {
                return Err(MutateError::ConflictingOverrides {
                    request_annotation,
                    request: request.clone(),
                    limit_annotation,
                    limit: limit.clone(),
                })
            }
            (None, Some(_)) => {
                let limit = limit.clone();
                resources.requests.insert(name, limit);
            }
            // An annotated request (or, with unvalidated settings, two
            // defaults) raises the limit.
            _ => {
                let request = request.clone();
                resources.limits.insert(name, request);
            }
        }
    }
    resources.requests.retain(|name, _| !pod_level_sets(name));
    resources.limits.retain(|name, _| !pod_level_sets(name));
    Ok(resources)
}

// ---------------------------------------------------------------- the plan

/// One JSON patch operation; the mutation only ever adds (an `add` onto an
/// existing member replaces it, which is how nulls are filled in).
#[derive(Debug, Serialize)]
pub struct AddOp {
    op: &'static str,
    pub path: String,
    pub value: Box<RawValue>,
}

impl AddOp {
    fn new(path: String, value: Box<RawValue>) -> Self {
        Self {
            op: "add",
            path,
            value,
        }
    }

    fn json<T: Serialize + ?Sized>(path: String, value: &T) -> Self {
        Self::new(path, raw_json(value))
    }
}

/// `value` as raw JSON. Maps of strings, numbers and bools always serialise.
fn raw_json<T: Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    to_raw_value(value).unwrap_or_else(|_| raw("null"))
}

fn raw(json: &str) -> Box<RawValue> {
    RawValue::from_string(json.to_string()).expect("valid JSON literal")
}

/// The operations turning a pod into the injected pod, and what they do.
#[derive(Debug)]
pub struct Mutation {
    pub ops: Vec<AddOp>,
    pub outcome: Outcome,
}

impl Mutation {
    /// The RFC 6902 patch document.
    pub fn patch_json(&self) -> Vec<u8> {
        // Strings and raw JSON: serialising them cannot fail.
        serde_json::to_vec(&self.ops).unwrap_or_default()
    }

    /// Applies the operations to `pod` (the value the plan was made from).
    pub fn apply(&self, pod: &mut Value) -> Result<(), MutateError> {
        if self.ops.is_empty() {
            return Ok(());
        }
        let patch: json_patch::Patch = serde_json::from_slice(&self.patch_json())
            .map_err(|e| MutateError::Unreadable(e.to_string()))?;
        json_patch::patch(pod, &patch).map_err(|e| MutateError::Unreadable(e.to_string()))
    }
}

/// JSON pointer token for an object key (RFC 6901 escaping).
fn pointer_token(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

/// The `palisade.dev/status` annotation: what the injector did and why.
#[derive(Serialize)]
struct Status<'a> {
    version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sidecar: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    native: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<SkipReason>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    degraded: &'a [DegradeReason],
    #[serde(skip_serializing_if = "Option::is_none")]
    prevention: Option<&'a Prevention>,
}

/// A volume the enforcer mounts: its base name, definition (without the
/// name) and mount (without the name).
struct EnforcerVolume {
    name: &'static str,
    volume: Value,
    mount: Value,
}

/// The enforcer, its volumes and mounts, built once from the settings; each
/// pod only varies the enforcer's UID and resources, and volume names when
/// the pod already uses the usual ones.
pub struct Injector {
    settings: InjectionSettings,
    identity: EnforcerIdentity,
    /// The enforcer's environment (JSON array).
    enforcer_env: Box<RawValue>,
    volumes: Vec<EnforcerVolume>,
    /// Mounts and volumes with the usual names, serialised once for the
    /// common case of a pod that uses none of them.
    usual_mounts: Box<RawValue>,
    usual_volumes: Vec<Box<RawValue>>,
}

impl Injector {
    pub fn new(settings: &InjectionSettings) -> Self {
        let volumes = enforcer_volumes(settings);
        let usual: BTreeMap<&'static str, Cow<'static, str>> = volumes
            .iter()
            .map(|v| (v.name, Cow::Borrowed(v.name)))
            .collect();
        let usual_mounts =
            to_raw_value(&mounts_named(&volumes, &usual)).unwrap_or_else(|_| raw("[]"));
        let usual_volumes = volumes_named(&volumes, &usual)
            .iter()
            .map(|v| to_raw_value(v).unwrap_or_else(|_| raw("null")))
            .collect();
        Self {
            settings: settings.clone(),
            identity: EnforcerIdentity::new(&settings.image),
            enforcer_env: to_raw_value(&enforcer_env(settings)).unwrap_or_else(|_| raw("[]")),
            volumes,
            usual_mounts,
            usual_volumes,
        }
    }

    pub fn identity(&self) -> &EnforcerIdentity {
        &self.identity
    }

    pub fn settings(&self) -> &InjectionSettings {
        &self.settings
    }

    /// Plans the mutation of the object given as JSON text, without
    /// prevention (see [`Injector::plan`] for it).
    pub fn plan_json(&self, object: &str) -> Result<Mutation, MutateError> {
        self.plan(&PodShape::from_json(object)?, None)
    }

    /// Injects the enforcer and defaults resources in `pod`, in place (the
    /// offline commands, and workload templates judged as their pods).
    /// `launch`, when some policy asks for prevention, gives the launch
    /// policy for the pod's labels (`None`: the pod is not confined).
    pub fn inject(
        &self,
        pod: &mut Value,
        launch: Option<&LaunchFor<'_>>,
    ) -> Result<Outcome, MutateError> {
        let shape = PodShape::from_value(pod)?;
        let prevention = match launch {
            Some(launch) => {
                let needs = LaunchShape::from_value(pod)?;
                launch(needs.labels()).map(|policy| (policy, needs))
            }
            None => None,
        };
        let prevent = prevention.as_ref().map(|(policy, shape)| Prevent {
            policy,
            shape,
            images: ImageCommands::NONE,
        });
        let mutation = self.plan(&shape, prevent)?;
        mutation.apply(pod)?;
        Ok(mutation.outcome)
    }

    /// The genuine enforcer of the pod, if any; a container that takes its
    /// name without its image is an error.
    fn find_enforcer<'p>(
        &self,
        pod: &'p PodShape,
    ) -> Result<Option<&'p ContainerShape>, ImpostorError> {
        let mut genuine = None;
        for (list, index, c) in pod.all_containers() {
            match self.identity.claim(c.name.as_deref(), c.image.as_deref()) {
                None => {}
                Some(Claim::Genuine) => genuine = genuine.or(Some(c)),
                Some(Claim::Impostor) => {
                    return Err(self.identity.impostor(
                        format_args!("spec.{}[{index}]", list.field()),
                        c.image.as_deref(),
                    ))
                }
            }
        }
        Ok(genuine)
    }

    /// Skipped pods (see [`skip_reason`]) get resource defaults and the
    /// status annotation only: defaults apply to every pod, as
    /// LimitRanger's would.
    ///
    /// With `prevent` (policies asking for prevention select the pod), app
    /// containers start confined by `palisade-launch` (see `prevent`).
    pub fn plan(
        &self,
        pod: &PodShape,
        prevent: Option<Prevent<'_>>,
    ) -> Result<Mutation, MutateError> {
        let enforcer = self.find_enforcer(pod)?;
        let mut ops = Vec::new();
        let defaulted = self.default_container_resources(pod, &mut ops);
        if let Some(reason) = skip_reason(pod, self.settings.skip_host_network) {
            let status = Status {
                version: env!("CARGO_PKG_VERSION"),
                sidecar: None,
                native: None,
                skipped: Some(reason),
                degraded: &[],
                prevention: None,
            };
            self.add_status(pod, &status, &mut ops);
            return Ok(Mutation {
                ops,
                outcome: Outcome::Skipped { reason, defaulted },
            });
        }
        let run_as = pod
            .app_identity()
            .unwrap_or((self.settings.default_run_as_user, None));
        match enforcer {
            None => self.add_enforcer(pod, run_as, &mut ops)?,
            Some(enforcer) => self.restore_volumes(pod, enforcer, &mut ops),
        }
        let prevention = match prevent {
            Some(prevent) => Some(self.add_prevention(pod, prevent, run_as, &mut ops)?),
            None => None,
        };
        let mut degraded = Vec::new();
        match pod.spec().share_process_namespace {
            Some(true) => {}
            // The pod's author chose separate process namespaces (e.g. so
            // containers cannot signal each other): kept, at the cost of
            // the enforcer's process signals.
            Some(false) => degraded.push(DegradeReason::ProcessNamespaceNotShared),
            None => ops.push(AddOp::new(
                "/spec/shareProcessNamespace".into(),
                raw("true"),
            )),
        }
        let status = Status {
            version: env!("CARGO_PKG_VERSION"),
            sidecar: Some(ENFORCER_CONTAINER),
            native: Some(self.settings.native_sidecar),
            skipped: None,
            degraded: &degraded,
            prevention: prevention.as_ref(),
        };
        self.add_status(pod, &status, &mut ops);
        Ok(Mutation {
            ops,
            outcome: Outcome::Injected {
                defaulted,
                degraded,
            },
        })
    }

    /// Like LimitRanger: for each defaulted resource a container sets
    /// neither a request nor a limit for, set both; a container that only
    /// requests it gets a limit of at least its request. Resources set at
    /// pod level are left to the pod's budget.
    fn default_container_resources(&self, pod: &PodShape, ops: &mut Vec<AddOp>) -> Vec<String> {
        let defaults = &self.settings.container_defaults;
        let resource_names: BTreeSet<&str> = defaults
            .requests
            .keys()
            .chain(defaults.limits.keys())
            .map(String::as_str)
            .collect();
        let mut defaulted = Vec::new();
        for (list, index, container) in pod.all_containers() {
            if self
                .identity
                .claim(container.name.as_deref(), container.image.as_deref())
                .is_some()
            {
                continue;
            }
            let mut requests: BTreeMap<&str, &str> = BTreeMap::new();
            let mut limits: BTreeMap<&str, Cow<'_, str>> = BTreeMap::new();
            for &name in &resource_names {
                if pod.pod_level_sets(name) {
                    continue;
                }
                let request = container.get(Section::Requests, name);
                let limit = container.get(Section::Limits, name);
                match (request, limit) {
                    (None, None) => {
                        if let Some(q) = defaults.requests.get(name) {
                            requests.insert(name, q);
                        }
                        if let Some(q) = defaults.limits.get(name) {
                            limits.insert(name, Cow::Borrowed(q.as_str()));
                        }
                    }
                    (Some(request), None) => {
                        if let Some(default_limit) = defaults.limits.get(name) {
                            let limit = limit_for_request(quantity_text(request), default_limit);
                            limits.insert(name, limit);
                        }
                    }
                    // A limit alone: the apiserver defaults the request to it.
                    _ => {}
                }
            }
            if requests.is_empty() && limits.is_empty() {
                continue;
            }
            let base = format!("/spec/{}/{index}/resources", list.field());
            match &container.resources {
                None => {
                    let mut resources = BTreeMap::new();
                    if !requests.is_empty() {
                        resources.insert("requests", json!(requests));
                    }
                    if !limits.is_empty() {
                        resources.insert("limits", json!(limits));
                    }
                    ops.push(AddOp::json(base, &resources));
                }
                Some(existing) => {
                    let limits: BTreeMap<&str, &str> =
                        limits.iter().map(|(k, v)| (*k, v.as_ref())).collect();
                    for (section, present, map) in [
                        ("requests", existing.requests.is_some(), &requests),
                        ("limits", existing.limits.is_some(), &limits),
                    ] {
                        if map.is_empty() {
                            continue;
                        }
                        if present {
                            for (name, quantity) in map {
                                let path = format!("{base}/{section}/{}", pointer_token(name));
                                ops.push(AddOp::json(path, quantity));
                            }
                        } else {
                            ops.push(AddOp::json(format!("{base}/{section}"), map));
                        }
                    }
                }
            }
            defaulted.push(container.name.clone().unwrap_or_default());
        }
        defaulted
    }

    fn add_enforcer(
        &self,
        pod: &PodShape,
        (run_as_user, run_as_group): (i64, Option<i64>),
        ops: &mut Vec<AddOp>,
    ) -> Result<(), MutateError> {
        let settings = &self.settings;
        let resources = sidecar_resources(
            &settings.sidecar_resources,
            |key| pod.annotation(key).map(str::to_string),
            |name| pod.pod_level_sets(name),
        )?;
        // Volume names: the usual ones unless the pod already uses them
        // (checked first, so the common case allocates nothing).
        let existing = pod.volume_names();
        let renamed = self.volumes.iter().any(|v| existing.contains(v.name));
        let mut names = BTreeMap::new();
        if renamed {
            let mut taken: BTreeSet<String> = existing.into_iter().map(str::to_string).collect();
            for v in &self.volumes {
                let name = unique_name(v.name, &taken);
                taken.insert(name.to_string());
                names.insert(v.name, name);
            }
        }
        let custom_mounts;
        let mounts: &RawValue = if renamed {
            custom_mounts =
                to_raw_value(&mounts_named(&self.volumes, &names)).unwrap_or_else(|_| raw("[]"));
            &custom_mounts
        } else {
            &self.usual_mounts
        };
        let container = EnforcerContainer {
            name: ENFORCER_CONTAINER,
            image: &settings.image,
            image_pull_policy: settings.image_pull_policy,
            env: &self.enforcer_env,
            resources,
            security_context: restricted_security_context(run_as_user, run_as_group),
            volume_mounts: mounts,
            restart_policy: settings.native_sidecar.then_some("Always"),
        };
        let container = to_raw_value(&container).unwrap_or_else(|_| raw("null"));
        let list = if self.settings.native_sidecar {
            ContainerList::Init
        } else {
            ContainerList::App
        };
        let exists = match list {
            ContainerList::Init => pod.spec().init_containers.is_some(),
            ContainerList::App => pod.spec().containers.is_some(),
        };
        ops.push(match (exists, list) {
            (false, _) => {
                let array = format!("[{}]", container.get());
                let array = RawValue::from_string(array).unwrap_or_else(|_| raw("[]"));
                AddOp::new(format!("/spec/{}", list.field()), array)
            }
            // Native sidecars go first so they start before other init containers.
            (true, ContainerList::Init) => AddOp::new("/spec/initContainers/0".into(), container),
            (true, ContainerList::App) => AddOp::new("/spec/containers/-".into(), container),
        });
        let volumes: Vec<Box<RawValue>> = if renamed {
            volumes_named(&self.volumes, &names)
                .iter()
                .map(|v| to_raw_value(v).unwrap_or_else(|_| raw("null")))
                .collect()
        } else {
            self.usual_volumes.clone()
        };
        push_volumes(pod, volumes, ops);
        Ok(())
    }

    /// The pod has the enforcer (reinvocation, or a manifest injected
    /// offline): re-adds volumes its mounts name that the pod lost, under
    /// the names it mounts them by.
    fn restore_volumes(&self, pod: &PodShape, enforcer: &ContainerShape, ops: &mut Vec<AddOp>) {
        let existing = pod.volume_names();
        let mut missing = Vec::new();
        for mount in enforcer.volume_mounts.as_deref().unwrap_or_default() {
            let Some(name) = mount.name.as_deref() else {
                continue;
            };
            if existing.contains(name) {
                continue;
            }
            let ours = self.volumes.iter().find(|v| {
                name == v.name
                    || name
                        .strip_prefix(v.name)
                        .and_then(|rest| rest.strip_prefix('-'))
                        .is_some_and(|n| n.parse::<u32>().is_ok())
            });
            if let Some(volume) = ours {
                let mut value = volume.volume.clone();
                value["name"] = json!(name);
                missing.push(to_raw_value(&value).unwrap_or_else(|_| raw("null")));
            }
        }
        if !missing.is_empty() {
            push_volumes(pod, missing, ops);
        }
    }

    fn add_status(&self, pod: &PodShape, status: &Status<'_>, ops: &mut Vec<AddOp>) {
        let status = serde_json::to_string(status).unwrap_or_default();
        if pod.annotation(STATUS_ANNOTATION) == Some(status.as_str()) {
            return;
        }
        let metadata = pod.metadata.as_ref();
        ops.push(match metadata.map(|m| m.annotations.is_some()) {
            Some(true) => AddOp::json(
                format!("/metadata/annotations/{}", pointer_token(STATUS_ANNOTATION)),
                &status,
            ),
            Some(false) => AddOp::json(
                "/metadata/annotations".into(),
                &json!({STATUS_ANNOTATION: status}),
            ),
            None => AddOp::json(
                "/metadata".into(),
                &json!({"annotations": {STATUS_ANNOTATION: status}}),
            ),
        });
    }
}

fn push_volumes(pod: &PodShape, volumes: Vec<Box<RawValue>>, ops: &mut Vec<AddOp>) {
    append(ops, "/spec/volumes", pod.spec().volumes.is_some(), volumes);
}

/// Whether the list at `path` exists when the patch applies: the pod has
/// it (`present`) or an earlier operation of this plan creates it.
fn list_exists(ops: &[AddOp], path: &str, present: bool) -> bool {
    present || ops.iter().any(|op| op.path == path)
}

/// Appends `items` to the list at `path`, creating the list with them when
/// it will not exist ([`list_exists`]), so plans that add to the same list
/// compose.
fn append(ops: &mut Vec<AddOp>, path: &str, present: bool, items: Vec<Box<RawValue>>) {
    if items.is_empty() {
        return;
    }
    if list_exists(ops, path, present) {
        ops.extend(
            items
                .into_iter()
                .map(|item| AddOp::new(format!("{path}/-"), item)),
        );
    } else {
        ops.push(AddOp::json(path.into(), &items));
    }
}

/// The enforcer's mounts with the volume names chosen for this pod.
fn mounts_named(
    volumes: &[EnforcerVolume],
    names: &BTreeMap<&'static str, Cow<'static, str>>,
) -> Vec<Value> {
    volumes
        .iter()
        .map(|v| {
            let mut mount = v.mount.clone();
            mount["name"] = json!(names.get(v.name).map_or(v.name, |n| n.as_ref()));
            mount
        })
        .collect()
}

fn volumes_named(
    volumes: &[EnforcerVolume],
    names: &BTreeMap<&'static str, Cow<'static, str>>,
) -> Vec<Value> {
    volumes
        .iter()
        .map(|v| {
            let mut volume = json!({"name": names.get(v.name).map_or(v.name, |n| n.as_ref())});
            if let (Some(target), Some(source)) = (volume.as_object_mut(), v.volume.as_object()) {
                target.extend(source.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            volume
        })
        .collect()
}

/// The enforcer container as patched into pods: the fixed parts are
/// serialised once (in [`Injector::new`]), so each pod costs one write.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnforcerContainer<'a> {
    name: &'static str,
    image: &'a str,
    image_pull_policy: PullPolicy,
    env: &'a RawValue,
    resources: ResourceDefaults,
    security_context: SecurityContext,
    volume_mounts: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    restart_policy: Option<&'static str>,
}

/// Passes Pod Security "restricted"; never root.
fn restricted_security_context(run_as_user: i64, run_as_group: Option<i64>) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(run_as_user),
        run_as_group,
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..SecurityContext::default()
    }
}

/// The enforcer's environment: pod identity from the downward API, where
/// its state and labels are, the policy service.
fn enforcer_env(settings: &InjectionSettings) -> Vec<Value> {
    let field_env = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let mut env = vec![
        field_env("PALISADE_POD_NAME", "metadata.name"),
        field_env("PALISADE_POD_NAMESPACE", "metadata.namespace"),
        field_env("PALISADE_POD_UID", "metadata.uid"),
        json!({"name": "PALISADE_STATE_DIR", "value": STATE_DIR}),
        json!({"name": "PALISADE_LABELS_FILE", "value": format!("{PODINFO_DIR}/labels")}),
    ];
    if let Some(url) = &settings.policy_service_url {
        env.push(json!({"name": "PALISADE_POLICY_URL", "value": url}));
        env.push(
            json!({"name": "PALISADE_REPORT_TOKEN_FILE", "value": format!("{TOKEN_DIR}/token")}),
        );
    }
    if let Some(ca) = &settings.policy_service_ca {
        env.push(json!({"name": "PALISADE_CA_PEM", "value": ca}));
    }
    env
}

/// The volumes the enforcer mounts, by their usual names.
fn enforcer_volumes(settings: &InjectionSettings) -> Vec<EnforcerVolume> {
    let mut volumes = vec![
        EnforcerVolume {
            name: STATE_VOLUME,
            volume: json!({"emptyDir": {"sizeLimit": "64Mi"}}),
            mount: json!({"mountPath": STATE_DIR}),
        },
        EnforcerVolume {
            name: PODINFO_VOLUME,
            volume: json!({"downwardAPI": {"items": [
                {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}
            ]}}),
            mount: json!({"mountPath": PODINFO_DIR, "readOnly": true}),
        },
        EnforcerVolume {
            name: NO_API_TOKEN_VOLUME,
            volume: json!({"emptyDir": {"sizeLimit": "1Mi"}}),
            mount: json!({"mountPath": API_TOKEN_DIR, "readOnly": true}),
        },
    ];
    if settings.policy_service_url.is_some() {
        volumes.push(EnforcerVolume {
            name: TOKEN_VOLUME,
            volume: json!({"projected": {"sources": [{"serviceAccountToken": {
                "audience": settings.report_token_audience, "expirationSeconds": 3600, "path": "token"
            }}]}}),
            mount: json!({"mountPath": TOKEN_DIR, "readOnly": true}),
        });
    }
    volumes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The enforcer as an ordinary container (`injection.native_sidecar:
    /// false`), so tests can index it in `containers`.
    fn classic() -> InjectionSettings {
        InjectionSettings {
            native_sidecar: false,
            ..InjectionSettings::default()
        }
    }

    fn pod() -> Value {
        json!({
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"containers": [
                {"name": "app", "image": "nginx:1.27"},
                {"name": "sized", "image": "busybox:1.36",
                 "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}}
            ]}
        })
    }

    /// The plan for `pod` as a json-patch document, so tests check the
    /// operations with an independent RFC 6902 implementation.
    fn patch_for(
        pod: &Value,
        settings: &InjectionSettings,
    ) -> Result<(json_patch::Patch, Outcome), MutateError> {
        let mutation = Injector::new(settings).plan(&PodShape::from_value(pod)?, None)?;
        let patch = serde_json::from_slice(&mutation.patch_json()).unwrap();
        Ok((patch, mutation.outcome))
    }

    fn apply(original: &Value, patch: &json_patch::Patch) -> Value {
        let mut doc = original.clone();
        json_patch::patch(&mut doc, patch).expect("patch applies");
        doc
    }

    fn injected(pod: &Value, settings: &InjectionSettings) -> Value {
        apply(pod, &patch_for(pod, settings).unwrap().0)
    }

    /// The status annotation, parsed (prevention's tests use it too).
    pub(super) fn status(pod: &Value) -> Value {
        serde_json::from_str(
            pod["metadata"]["annotations"][STATUS_ANNOTATION]
                .as_str()
                .expect("status annotation"),
        )
        .unwrap()
    }

    fn names(list: &Value) -> Vec<&str> {
        list.as_array()
            .map(|a| a.iter().filter_map(|v| v["name"].as_str()).collect())
            .unwrap_or_default()
    }

    #[test]
    fn an_unreadable_pod_is_named_by_its_field_or_by_the_parsers_own_words() {
        let err = PodShape::from_json(r#"{"spec": {"containers": [{"name": 7}]}}"#).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("cannot read the pod: spec.containers[0].name: invalid type"),
            "{err}"
        );
        let err = PodShape::from_json(r#"{"spec": {}} trailing"#).unwrap_err();
        assert!(err.to_string().contains("trailing characters"), "{err}");
        let err = PodShape::from_value(&json!({"spec": {"containers": "x"}})).unwrap_err();
        assert!(
            err.to_string().contains("spec.containers: invalid type"),
            "{err}"
        );
    }

    #[test]
    fn injects_a_restricted_sidecar_and_shares_the_process_namespace() {
        let original = pod();
        let (patch, outcome) = patch_for(&original, &classic()).unwrap();
        let out = apply(&original, &patch);
        assert_eq!(
            outcome,
            Outcome::Injected {
                defaulted: vec!["app".into()],
                degraded: vec![]
            }
        );
        assert_eq!(out["spec"]["shareProcessNamespace"], json!(true));
        let sidecar = &out["spec"]["containers"][2];
        assert_eq!(sidecar["name"], ENFORCER_CONTAINER);
        let sc = &sidecar["securityContext"];
        assert_eq!(sc["runAsNonRoot"], json!(true));
        assert_eq!(sc["allowPrivilegeEscalation"], json!(false));
        assert_eq!(sc["readOnlyRootFilesystem"], json!(true));
        assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(sc["runAsUser"], json!(65532));
        assert_eq!(sidecar["resources"]["limits"]["memory"], "32Mi");
        let env = names(&sidecar["env"]);
        assert!(env.contains(&"PALISADE_POD_UID"), "{env:?}");
        assert_eq!(out["spec"]["volumes"][0]["name"], STATE_VOLUME);
        assert_eq!(status(&out)["sidecar"], ENFORCER_CONTAINER);
        assert_eq!(status(&out)["native"], false);
    }

    #[test]
    fn the_default_is_a_native_sidecar_first_among_init_containers() {
        let mut p = pod();
        p["spec"]["initContainers"] = json!([{"name": "migrate", "image": "m:1"}]);
        let s = InjectionSettings::default();
        let out = injected(&p, &s);
        let init = &out["spec"]["initContainers"];
        assert_eq!(init[0]["name"], ENFORCER_CONTAINER);
        assert_eq!(init[0]["restartPolicy"], "Always");
        assert_eq!(init[1]["name"], "migrate");
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 2);
        assert_eq!(status(&out)["native"], true);
        assert!(patch_for(&out, &s).unwrap().0 .0.is_empty());
    }

    #[test]
    fn defaults_only_unset_resources() {
        let out = injected(&pod(), &classic());
        assert_eq!(
            out["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "1"
        );
        assert_eq!(
            out["spec"]["containers"][0]["resources"]["requests"]["memory"],
            "128Mi"
        );
        // Container with its own limits keeps them and gets no requests
        // (the apiserver defaults requests to limits).
        assert_eq!(
            out["spec"]["containers"][1]["resources"],
            json!({"limits": {"cpu": "2", "memory": "1Gi"}})
        );
    }

    #[test]
    fn a_request_above_the_default_limit_becomes_the_limit() {
        let mut p = pod();
        p["spec"]["containers"][0]["resources"] = json!({"requests": {"memory": "2Gi"}});
        let out = injected(&p, &classic());
        let r = &out["spec"]["containers"][0]["resources"];
        assert_eq!(r["requests"]["memory"], "2Gi");
        assert_eq!(r["limits"]["memory"], "2Gi");
        assert_eq!(r["limits"]["cpu"], "1", "cpu, set by neither, is defaulted");
        assert_eq!(r["requests"]["cpu"], "100m");
    }

    #[test]
    fn a_request_below_the_default_limit_gets_the_default_limit() {
        let mut p = pod();
        p["spec"]["containers"][0]["resources"] =
            json!({"requests": {"memory": "64Mi", "cpu": "1500m"}, "limits": null});
        let out = injected(&p, &classic());
        let r = &out["spec"]["containers"][0]["resources"];
        assert_eq!(r["limits"], json!({"memory": "512Mi", "cpu": "1500m"}));
    }

    #[test]
    fn limit_for_request_is_the_larger_of_request_and_default() {
        assert_eq!(limit_for_request(Some("2Gi".into()), "512Mi"), "2Gi");
        assert_eq!(limit_for_request(Some("0.5Gi".into()), "512Mi"), "512Mi");
        assert_eq!(limit_for_request(Some("100m".into()), "1"), "1");
        assert_eq!(limit_for_request(None, "1"), "1");
        assert_eq!(
            limit_for_request(Some("garbage".into()), "1"),
            "1",
            "the apiserver refuses the pod for its own quantity"
        );
    }

    #[test]
    fn pod_level_resources_are_neither_defaulted_nor_given_to_the_enforcer() {
        let mut p = pod();
        p["spec"]["resources"] = json!({"limits": {"memory": "256Mi"}});
        let out = injected(&p, &classic());
        let app = &out["spec"]["containers"][0]["resources"];
        assert_eq!(
            app,
            &json!({"requests": {"cpu": "100m"}, "limits": {"cpu": "1"}})
        );
        let enforcer = &out["spec"]["containers"][2]["resources"];
        assert_eq!(
            enforcer,
            &json!({"requests": {"cpu": "10m"}, "limits": {"cpu": "100m"}})
        );
    }

    #[test]
    fn second_pass_is_a_no_op() {
        for s in [classic(), InjectionSettings::default()] {
            let once = injected(&pod(), &s);
            let (patch, _) = patch_for(&once, &s).unwrap();
            assert!(patch.0.is_empty(), "{patch:?}");
        }
    }

    #[test]
    fn reinvocation_defaults_containers_added_by_others() {
        let mut once = injected(&pod(), &classic());
        once["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "late", "image": "x:1"}));
        let out = injected(&once, &classic());
        assert_eq!(
            names(&out["spec"]["containers"]),
            ["app", "sized", ENFORCER_CONTAINER, "late"]
        );
        assert_eq!(
            out["spec"]["containers"][3]["resources"]["limits"]["cpu"],
            "1"
        );
    }

    #[test]
    fn opted_out_pods_get_defaults_and_a_reason_but_no_enforcer() {
        let mut p = pod();
        p["metadata"]["annotations"] = json!({INJECT_ANNOTATION: "false"});
        let (patch, outcome) = patch_for(&p, &classic()).unwrap();
        let out = apply(&p, &patch);
        assert_eq!(
            outcome,
            Outcome::Skipped {
                reason: SkipReason::OptedOut,
                defaulted: vec!["app".into()]
            }
        );
        assert_eq!(names(&out["spec"]["containers"]), ["app", "sized"]);
        assert!(out["spec"].get("shareProcessNamespace").is_none());
        assert_eq!(
            out["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "1"
        );
        assert_eq!(status(&out)["skipped"], "opted-out");
        assert!(patch_for(&out, &classic()).unwrap().0 .0.is_empty());
    }

    #[test]
    fn opting_out_wins_over_every_other_reason() {
        let all = SkipFacts {
            opted_out: true,
            windows: true,
            host_pid: true,
            host_network: true,
        };
        assert_eq!(decide_skip(all, true), Some(SkipReason::OptedOut));
        let spec_only = SkipFacts {
            opted_out: false,
            ..all
        };
        assert_eq!(decide_skip(spec_only, true), Some(SkipReason::Windows));
        assert_eq!(decide_skip(SkipFacts::default(), true), None);
        let host_network = SkipFacts {
            host_network: true,
            ..SkipFacts::default()
        };
        assert_eq!(decide_skip(host_network, false), None);
        assert_eq!(
            decide_skip(host_network, true),
            Some(SkipReason::HostNetwork)
        );
    }

    #[test]
    fn host_network_pods_are_skipped_only_when_configured() {
        let mut p = pod();
        p["spec"]["hostNetwork"] = json!(true);
        let s = InjectionSettings {
            skip_host_network: true,
            ..classic()
        };
        assert!(matches!(
            patch_for(&p, &s).unwrap().1,
            Outcome::Skipped {
                reason: SkipReason::HostNetwork,
                ..
            }
        ));
        assert!(matches!(
            patch_for(&p, &classic()).unwrap().1,
            Outcome::Injected { .. }
        ));
    }

    #[test]
    fn host_pid_pods_are_skipped_without_share_process_namespace() {
        let mut p = pod();
        p["spec"]["hostPID"] = json!(true);
        let (patch, outcome) = patch_for(&p, &InjectionSettings::default()).unwrap();
        let out = apply(&p, &patch);
        assert!(matches!(
            outcome,
            Outcome::Skipped {
                reason: SkipReason::HostPid,
                ..
            }
        ));
        assert!(out["spec"].get("shareProcessNamespace").is_none());
        assert!(out["spec"].get("initContainers").is_none());
        assert_eq!(status(&out)["skipped"], "host-pid");
    }

    #[test]
    fn windows_pods_are_skipped() {
        let mut p = pod();
        p["spec"]["os"] = json!({"name": "windows"});
        let out = injected(&p, &InjectionSettings::default());
        assert_eq!(status(&out)["skipped"], "windows");
        assert!(out["spec"].get("shareProcessNamespace").is_none());
        assert!(out["spec"].get("initContainers").is_none());
        // So are pods bound to Windows nodes by the node selector alone.
        let mut selected = pod();
        selected["spec"]["nodeSelector"] = json!({OS_LABEL: "windows"});
        let out = injected(&selected, &InjectionSettings::default());
        assert_eq!(status(&out)["skipped"], "windows");
        // Linux pods that say so are injected as usual.
        p["spec"]["os"] = json!({"name": "linux"});
        assert!(matches!(
            patch_for(&p, &classic()).unwrap().1,
            Outcome::Injected { .. }
        ));
    }

    #[test]
    fn explicit_separate_process_namespaces_are_kept_and_the_enforcer_degraded() {
        let mut p = pod();
        p["spec"]["shareProcessNamespace"] = json!(false);
        let (patch, outcome) = patch_for(&p, &classic()).unwrap();
        let out = apply(&p, &patch);
        assert_eq!(out["spec"]["shareProcessNamespace"], false);
        assert_eq!(
            outcome,
            Outcome::Injected {
                defaulted: vec!["app".into()],
                degraded: vec![DegradeReason::ProcessNamespaceNotShared]
            }
        );
        assert_eq!(out["spec"]["containers"][2]["name"], ENFORCER_CONTAINER);
        assert_eq!(
            status(&out)["degraded"],
            json!(["process-namespace-not-shared"])
        );
        assert!(patch_for(&out, &classic()).unwrap().0 .0.is_empty());
    }

    #[test]
    fn sidecar_runs_as_the_app_uid_but_never_root() {
        let mut p = pod();
        p["spec"]["securityContext"] = json!({"runAsUser": 1000});
        let out = injected(&p, &classic());
        assert_eq!(
            out["spec"]["containers"][2]["securityContext"]["runAsUser"],
            1000
        );

        p["spec"]["securityContext"] = json!({"runAsUser": 0});
        let out = injected(&p, &classic());
        assert_eq!(
            out["spec"]["containers"][2]["securityContext"]["runAsUser"],
            65532
        );
    }

    #[test]
    fn sidecar_takes_the_app_gid_too_from_its_container_or_the_pod() {
        let sidecar_ids = |p: &Value| {
            let out = injected(p, &classic());
            let sc = out["spec"]["containers"][2]["securityContext"].clone();
            (sc["runAsUser"].clone(), sc["runAsGroup"].clone())
        };
        let mut p = pod();
        p["spec"]["securityContext"] = json!({"runAsUser": 1000, "runAsGroup": 2000});
        assert_eq!(sidecar_ids(&p), (json!(1000), json!(2000)));

        p["spec"]["containers"][0]["securityContext"] =
            json!({"runAsUser": 1001, "runAsGroup": 3000});
        assert_eq!(
            sidecar_ids(&p),
            (json!(1001), json!(3000)),
            "the container's own"
        );

        p["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 1001});
        assert_eq!(
            sidecar_ids(&p),
            (json!(1001), json!(2000)),
            "the pod's group"
        );

        p["spec"]["securityContext"] = json!({});
        p["spec"]["containers"][0]["securityContext"] = json!({});
        assert_eq!(
            sidecar_ids(&p),
            (json!(65532), Value::Null),
            "the image's group when unknown"
        );
    }

    #[test]
    fn resource_annotations_merge_with_defaults() {
        let mut p = pod();
        p["metadata"]["annotations"] = json!({"palisade.dev/sidecar-memory-limit": "64Mi"});
        let out = injected(&p, &classic());
        let r = &out["spec"]["containers"][2]["resources"];
        assert_eq!(r["limits"]["memory"], "64Mi");
        assert_eq!(r["limits"]["cpu"], "100m", "other defaults stay");

        p["metadata"]["annotations"] = json!({"palisade.dev/sidecar-cpu": "lots"});
        let err = patch_for(&p, &classic()).unwrap_err();
        assert!(
            err.to_string().contains("palisade.dev/sidecar-cpu"),
            "{err}"
        );
    }

    fn annotated(pairs: &[(&str, &str)]) -> Result<ResourceDefaults, MutateError> {
        let defaults = InjectionSettings::default().sidecar_resources;
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        sidecar_resources(&defaults, |k| map.get(k).cloned(), |_| false)
    }

    #[test]
    fn an_annotated_request_above_the_default_limit_raises_the_limit() {
        let r = annotated(&[("palisade.dev/sidecar-memory", "100Mi")]).unwrap();
        assert_eq!(r.requests["memory"], "100Mi");
        assert_eq!(r.limits["memory"], "100Mi");
        assert_eq!(r.limits["cpu"], "100m");
    }

    #[test]
    fn an_annotated_limit_below_the_default_request_lowers_the_request() {
        let r = annotated(&[("palisade.dev/sidecar-cpu-limit", "5m")]).unwrap();
        assert_eq!(r.requests["cpu"], "5m");
        assert_eq!(r.limits["cpu"], "5m");
    }

    #[test]
    fn annotations_that_contradict_each_other_are_refused() {
        let err = annotated(&[
            ("palisade.dev/sidecar-cpu", "1"),
            ("palisade.dev/sidecar-cpu-limit", "500m"),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "metadata.annotations: palisade.dev/sidecar-cpu=\"1\" exceeds \
             palisade.dev/sidecar-cpu-limit=\"500m\"; a request must not exceed its limit"
        );
        // Consistent annotations pass, whatever the defaults.
        let r = annotated(&[
            ("palisade.dev/sidecar-memory", "1Gi"),
            ("palisade.dev/sidecar-memory-limit", "1Gi"),
        ])
        .unwrap();
        assert_eq!(r.requests["memory"], "1Gi");
    }

    #[test]
    fn a_container_named_like_the_enforcer_with_another_image_is_refused() {
        let mut p = pod();
        p["spec"]["containers"][1]["name"] = json!(ENFORCER_CONTAINER);
        let err = patch_for(&p, &classic()).unwrap_err();
        let message = err.to_string();
        assert!(message.starts_with("spec.containers[1]: "), "{message}");
        assert!(
            message.contains("reserved for the Palisade enforcer"),
            "{message}"
        );

        // With the configured image's repository it is the enforcer.
        p["spec"]["containers"][1]["image"] = json!("ghcr.io/palisade-dev/palisade-enforcer:0.0.1");
        let out = injected(&p, &classic());
        assert_eq!(
            names(&out["spec"]["containers"]),
            ["app", ENFORCER_CONTAINER]
        );
    }

    #[test]
    fn injected_volume_names_never_take_the_pods_own() {
        let mut p = pod();
        p["spec"]["volumes"] = json!([
            {"name": STATE_VOLUME, "hostPath": {"path": "/etc"}},
            {"name": format!("{STATE_VOLUME}-1"), "emptyDir": {}},
            {"name": PODINFO_VOLUME, "emptyDir": {}}
        ]);
        let s = classic();
        let out = injected(&p, &s);
        let volumes = names(&out["spec"]["volumes"]);
        assert_eq!(
            volumes,
            [
                STATE_VOLUME,
                &format!("{STATE_VOLUME}-1"),
                PODINFO_VOLUME,
                &format!("{STATE_VOLUME}-2"),
                &format!("{PODINFO_VOLUME}-1"),
                NO_API_TOKEN_VOLUME,
            ]
        );
        let mounts = &out["spec"]["containers"][2]["volumeMounts"];
        assert_eq!(mounts[0]["name"], format!("{STATE_VOLUME}-2"));
        assert_eq!(mounts[0]["mountPath"], STATE_DIR);
        assert_eq!(mounts[1]["name"], format!("{PODINFO_VOLUME}-1"));
        // The pod's hostPath volume is not mounted into the enforcer.
        assert!(!names(mounts).contains(&STATE_VOLUME));
        assert!(patch_for(&out, &s).unwrap().0 .0.is_empty(), "idempotent");
    }

    #[test]
    fn the_enforcer_mounts_an_empty_directory_over_the_api_token_path() {
        let out = injected(&pod(), &classic());
        let mounts = out["spec"]["containers"][2]["volumeMounts"]
            .as_array()
            .unwrap();
        let token = mounts
            .iter()
            .find(|m| m["mountPath"] == API_TOKEN_DIR)
            .expect("a mount at the API token path");
        assert_eq!(token["name"], NO_API_TOKEN_VOLUME);
        let volume = out["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == NO_API_TOKEN_VOLUME)
            .unwrap();
        assert!(volume.get("emptyDir").is_some(), "{volume}");
    }

    #[test]
    fn volumes_the_enforcer_mounts_are_restored_if_lost() {
        let s = classic();
        let mut out = injected(&pod(), &s);
        out["spec"]["volumes"].as_array_mut().unwrap().remove(0);
        let again = injected(&out, &s);
        assert!(names(&again["spec"]["volumes"]).contains(&STATE_VOLUME));
    }

    #[test]
    fn with_a_policy_service_the_enforcer_gets_a_bound_token_and_the_ca() {
        let s = InjectionSettings {
            policy_service_url: Some("https://palisade-policy.palisade-system.svc".into()),
            policy_service_ca: Some("-----BEGIN CERTIFICATE-----".into()),
            ..classic()
        };
        let out = injected(&pod(), &s);
        let token = out["spec"]["volumes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == TOKEN_VOLUME)
            .expect("token volume");
        assert_eq!(
            token["projected"]["sources"][0]["serviceAccountToken"]["audience"],
            "palisade"
        );
        let sidecar = &out["spec"]["containers"][2];
        let env = |name: &str| {
            sidecar["env"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == name)
                .map(|e| e["value"].clone())
        };
        assert_eq!(
            env("PALISADE_REPORT_TOKEN_FILE"),
            Some(json!("/var/run/secrets/palisade/token"))
        );
        assert_eq!(
            env("PALISADE_CA_PEM"),
            Some(json!("-----BEGIN CERTIFICATE-----"))
        );
        assert!(patch_for(&out, &s).unwrap().0 .0.is_empty(), "idempotent");
    }

    #[test]
    fn missing_spec_is_an_error_not_a_panic() {
        let err = patch_for(&json!({"metadata": {}}), &classic()).unwrap_err();
        assert_eq!(err, MutateError::NotAnObject("spec"));
        assert!(patch_for(&json!("nope"), &classic()).is_err());
    }
}
