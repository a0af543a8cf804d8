//! Sidecar injection and resource defaulting for a pod-shaped object
//! (`{metadata, spec}`: a Pod or any workload's pod template).
//!
//! The mutation is planned from a small typed view of the pod as a list of
//! JSON patch `add` operations: the webhook sends them as they are, and the
//! offline commands and template validation apply them to a JSON value, so
//! both run the same plan. A plan for an already-mutated pod is empty
//! (idempotent, safe under `reinvocationPolicy: IfNeeded`).

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Capabilities, SeccompProfile, SecurityContext};
use serde::{Deserialize, Serialize};
use serde_json::value::{to_raw_value, RawValue};
use serde_json::{json, Value};

use palisade_common::{ENFORCER_CONTAINER, INJECT_ANNOTATION, STATUS_ANNOTATION};

use crate::config::{InjectionSettings, ResourceDefaults};
use crate::quantity::is_valid_quantity;

/// Volume the enforcer keeps its policy cache and report spool in.
pub const STATE_VOLUME: &str = "palisade-enforcer-state";
pub const STATE_DIR: &str = "/var/run/palisade";
/// Downward API volume with the pod's labels (they select runtime policies).
pub const PODINFO_VOLUME: &str = "palisade-podinfo";
pub const PODINFO_DIR: &str = "/etc/palisade/podinfo";
/// Projected service-account token the enforcer reports with.
pub const TOKEN_VOLUME: &str = "palisade-token";
pub const TOKEN_DIR: &str = "/var/run/secrets/palisade";

/// Per-pod overrides of the sidecar's resources, merged over the defaults.
const RESOURCE_OVERRIDES: [(&str, &str, &str); 4] = [
    ("palisade.dev/sidecar-cpu", "requests", "cpu"),
    ("palisade.dev/sidecar-memory", "requests", "memory"),
    ("palisade.dev/sidecar-cpu-limit", "limits", "cpu"),
    ("palisade.dev/sidecar-memory-limit", "limits", "memory"),
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The pod has the sidecar and defaults once the plan is applied
    /// (possibly already had).
    Injected {
        /// Containers whose resources are defaulted by this plan.
        defaulted: Vec<String>,
    },
    /// No enforcer, for this reason; resources are still defaulted.
    Skipped {
        reason: &'static str,
        defaulted: Vec<String>,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MutateError {
    #[error("metadata.annotations[{annotation:?}]: {value:?} is not a resource quantity")]
    BadOverride { annotation: String, value: String },
    #[error("{0} must be an object")]
    NotAnObject(&'static str),
    #[error("cannot read the pod: {0}")]
    Unreadable(String),
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
    #[serde(default)]
    share_process_namespace: Option<bool>,
    #[serde(default)]
    security_context: Option<SecurityContextShape>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ContainerShape {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    resources: Option<ResourcesShape>,
    #[serde(default)]
    security_context: Option<SecurityContextShape>,
}

#[derive(Debug, Default, Deserialize)]
struct ResourcesShape {
    #[serde(default)]
    requests: Option<BTreeMap<String, serde::de::IgnoredAny>>,
    #[serde(default)]
    limits: Option<BTreeMap<String, serde::de::IgnoredAny>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SecurityContextShape {
    #[serde(default)]
    run_as_user: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
struct NamedShape {
    #[serde(default)]
    name: Option<String>,
}

impl PodShape {
    /// Reads the view from the object's JSON text.
    pub fn from_json(text: &str) -> Result<Self, MutateError> {
        let shape: Self =
            serde_json::from_str(text).map_err(|e| MutateError::Unreadable(e.to_string()))?;
        shape.with_spec()
    }

    pub fn from_value(value: &Value) -> Result<Self, MutateError> {
        if !value.is_object() {
            return Err(MutateError::NotAnObject("object"));
        }
        let shape =
            PodShape::deserialize(value).map_err(|e| MutateError::Unreadable(e.to_string()))?;
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

    fn containers(&self, list: ContainerList) -> &[ContainerShape] {
        let spec = self.spec.as_ref();
        let containers = match list {
            ContainerList::Init => spec.and_then(|s| s.init_containers.as_deref()),
            ContainerList::App => spec.and_then(|s| s.containers.as_deref()),
        };
        containers.unwrap_or_default()
    }

    fn has_enforcer(&self) -> bool {
        [ContainerList::Init, ContainerList::App]
            .into_iter()
            .flat_map(|list| self.containers(list))
            .any(ContainerShape::is_enforcer)
    }

    /// The application's UID, so the enforcer can read its /proc entries
    /// (exe, root, fds need the same UID). Root is never copied.
    fn app_run_as_user(&self) -> Option<i64> {
        let user = |sc: &Option<SecurityContextShape>| sc.as_ref().and_then(|sc| sc.run_as_user);
        self.containers(ContainerList::App)
            .iter()
            .filter(|c| !c.is_enforcer())
            .find_map(|c| user(&c.security_context))
            .or_else(|| self.spec.as_ref().and_then(|s| user(&s.security_context)))
            .filter(|uid| *uid > 0)
    }
}

impl ContainerShape {
    fn is_enforcer(&self) -> bool {
        self.name.as_deref() == Some(ENFORCER_CONTAINER)
    }

    /// Whether the container sets `resource` as a request or a limit.
    fn sets(&self, resource: &str) -> bool {
        let Some(r) = &self.resources else {
            return false;
        };
        [&r.requests, &r.limits]
            .into_iter()
            .any(|section| section.as_ref().is_some_and(|s| s.contains_key(resource)))
    }
}

#[derive(Debug, Clone, Copy)]
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
        // Maps of strings, numbers and bools always serialise.
        let value = to_raw_value(value).unwrap_or_else(|_| raw("null"));
        Self::new(path, value)
    }
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

/// The enforcer, its volumes and the status annotation, built once from the
/// settings; each pod only varies the enforcer's UID and resources.
pub struct Injector {
    settings: InjectionSettings,
    /// The enforcer's environment and volume mounts (JSON arrays).
    enforcer_env: Box<RawValue>,
    enforcer_mounts: Box<RawValue>,
    /// (name, volume) the enforcer mounts.
    volumes: Vec<(&'static str, Box<RawValue>)>,
    status: String,
}

impl Injector {
    pub fn new(settings: &InjectionSettings) -> Self {
        let (env, mounts) = enforcer_env_and_mounts(settings);
        let mut volumes = vec![
            (
                STATE_VOLUME,
                json!({"name": STATE_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}}),
            ),
            (
                PODINFO_VOLUME,
                json!({"name": PODINFO_VOLUME, "downwardAPI": {"items": [
                    {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}
                ]}}),
            ),
        ];
        if settings.policy_service_url.is_some() {
            volumes.push((
                TOKEN_VOLUME,
                json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
                    "audience": settings.report_token_audience, "expirationSeconds": 3600, "path": "token"
                }}]}}),
            ));
        }
        let volumes = volumes
            .into_iter()
            .map(|(name, v)| (name, to_raw_value(&v).unwrap_or_else(|_| raw("null"))))
            .collect();
        let status = json!({
            "version": env!("CARGO_PKG_VERSION"),
            "sidecar": ENFORCER_CONTAINER,
            "native": settings.native_sidecar,
        })
        .to_string();
        Self {
            settings: settings.clone(),
            enforcer_env: to_raw_value(&env).unwrap_or_else(|_| raw("[]")),
            enforcer_mounts: to_raw_value(&mounts).unwrap_or_else(|_| raw("[]")),
            volumes,
            status,
        }
    }

    /// Plans the mutation of the object given as JSON text (the webhook).
    pub fn plan_json(&self, object: &str) -> Result<Mutation, MutateError> {
        self.plan(&PodShape::from_json(object)?)
    }

    /// Injects the enforcer and defaults resources in `pod`, in place (the
    /// offline commands, and workload templates judged as their pods).
    pub fn inject(&self, pod: &mut Value) -> Result<Outcome, MutateError> {
        let shape = PodShape::from_value(pod)?;
        let mutation = self.plan(&shape)?;
        mutation.apply(pod)?;
        Ok(mutation.outcome)
    }

    /// Opting out (annotation, hostNetwork when configured) skips the
    /// enforcer only: resource defaults apply to every pod, as LimitRanger's
    /// would.
    pub fn plan(&self, pod: &PodShape) -> Result<Mutation, MutateError> {
        let skip = if pod.annotation(INJECT_ANNOTATION) == Some("false") {
            Some("opted out by annotation")
        } else if self.settings.skip_host_network
            && pod.spec.as_ref().and_then(|s| s.host_network) == Some(true)
        {
            Some("hostNetwork pod")
        } else {
            None
        };
        let mut ops = Vec::new();
        let defaulted = self.default_container_resources(pod, &mut ops);
        if let Some(reason) = skip {
            return Ok(Mutation {
                ops,
                outcome: Outcome::Skipped { reason, defaulted },
            });
        }
        if !pod.has_enforcer() {
            ops.push(self.add_enforcer(pod)?);
        }
        self.add_volumes(pod, &mut ops);
        let spec = pod.spec.as_ref();
        if spec.and_then(|s| s.share_process_namespace) != Some(true) {
            ops.push(AddOp::new(
                "/spec/shareProcessNamespace".into(),
                raw("true"),
            ));
        }
        if pod.annotation(STATUS_ANNOTATION) != Some(&self.status) {
            ops.push(self.add_status(pod));
        }
        Ok(Mutation {
            ops,
            outcome: Outcome::Injected { defaulted },
        })
    }

    /// Like LimitRanger: for each defaulted resource a container sets
    /// neither a request nor a limit for, set both. A container that sets
    /// only a request keeps it and gets no limit (a default limit below it
    /// would be invalid).
    fn default_container_resources(&self, pod: &PodShape, ops: &mut Vec<AddOp>) -> Vec<String> {
        let defaults = &self.settings.container_defaults;
        let mut defaulted = Vec::new();
        for list in [ContainerList::Init, ContainerList::App] {
            for (index, container) in pod.containers(list).iter().enumerate() {
                if container.is_enforcer() {
                    continue;
                }
                let requests = unset_defaults(&defaults.requests, container);
                let limits = unset_defaults(&defaults.limits, container);
                if requests.is_empty() && limits.is_empty() {
                    continue;
                }
                let base = format!("/spec/{}/{index}/resources", list.field());
                match &container.resources {
                    None => {
                        let mut resources = BTreeMap::new();
                        for (section, map) in [("requests", &requests), ("limits", &limits)] {
                            if !map.is_empty() {
                                resources.insert(section, map);
                            }
                        }
                        ops.push(AddOp::json(base, &resources));
                    }
                    Some(existing) => {
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
        }
        defaulted
    }

    fn add_enforcer(&self, pod: &PodShape) -> Result<AddOp, MutateError> {
        let run_as_user = pod
            .app_run_as_user()
            .unwrap_or(self.settings.default_run_as_user);
        let settings = &self.settings;
        let container = EnforcerContainer {
            name: ENFORCER_CONTAINER,
            image: &settings.image,
            image_pull_policy: &settings.image_pull_policy,
            env: &self.enforcer_env,
            resources: self.sidecar_resources(pod)?,
            security_context: restricted_security_context(run_as_user),
            volume_mounts: &self.enforcer_mounts,
            restart_policy: settings.native_sidecar.then_some("Always"),
        };
        let container = to_raw_value(&container).unwrap_or_else(|_| raw("null"));
        let list = if self.settings.native_sidecar {
            ContainerList::Init
        } else {
            ContainerList::App
        };
        let exists = pod.spec.as_ref().is_some_and(|s| match list {
            ContainerList::Init => s.init_containers.is_some(),
            ContainerList::App => s.containers.is_some(),
        });
        Ok(match (exists, list) {
            (false, _) => {
                let array = format!("[{}]", container.get());
                let array = RawValue::from_string(array).unwrap_or_else(|_| raw("[]"));
                AddOp::new(format!("/spec/{}", list.field()), array)
            }
            // Native sidecars go first so they start before other init containers.
            (true, ContainerList::Init) => AddOp::new("/spec/initContainers/0".into(), container),
            (true, ContainerList::App) => AddOp::new("/spec/containers/-".into(), container),
        })
    }

    fn add_volumes(&self, pod: &PodShape, ops: &mut Vec<AddOp>) {
        let existing = pod.spec.as_ref().and_then(|s| s.volumes.as_deref());
        let missing: Vec<&RawValue> = self
            .volumes
            .iter()
            .filter(|(name, _)| {
                !existing
                    .unwrap_or_default()
                    .iter()
                    .any(|v| v.name.as_deref() == Some(name))
            })
            .map(|(_, volume)| &**volume)
            .collect();
        match existing {
            None => ops.push(AddOp::json("/spec/volumes".into(), &missing)),
            Some(_) => ops.extend(
                missing
                    .into_iter()
                    .map(|v| AddOp::new("/spec/volumes/-".into(), v.to_owned())),
            ),
        }
    }

    fn add_status(&self, pod: &PodShape) -> AddOp {
        let metadata = pod.metadata.as_ref();
        match metadata.map(|m| m.annotations.is_some()) {
            Some(true) => AddOp::json(
                format!("/metadata/annotations/{}", pointer_token(STATUS_ANNOTATION)),
                &self.status,
            ),
            Some(false) => AddOp::json(
                "/metadata/annotations".into(),
                &json!({STATUS_ANNOTATION: self.status}),
            ),
            None => AddOp::json(
                "/metadata".into(),
                &json!({"annotations": {STATUS_ANNOTATION: self.status}}),
            ),
        }
    }

    /// The configured sidecar resources with the pod's overrides merged in.
    fn sidecar_resources(&self, pod: &PodShape) -> Result<Cow<'_, ResourceDefaults>, MutateError> {
        let mut resources = Cow::Borrowed(&self.settings.sidecar_resources);
        for (key, section, name) in RESOURCE_OVERRIDES {
            if let Some(value) = pod.annotation(key) {
                if !is_valid_quantity(value) {
                    return Err(MutateError::BadOverride {
                        annotation: key.into(),
                        value: value.into(),
                    });
                }
                let resources = resources.to_mut();
                let map = if section == "requests" {
                    &mut resources.requests
                } else {
                    &mut resources.limits
                };
                map.insert(name.into(), value.into());
            }
        }
        Ok(resources)
    }
}

/// The defaults in `section` for resources the container sets nowhere.
fn unset_defaults<'a>(
    section: &'a BTreeMap<String, String>,
    container: &ContainerShape,
) -> BTreeMap<&'a str, &'a str> {
    section
        .iter()
        .filter(|(name, _)| !container.sets(name))
        .map(|(name, quantity)| (name.as_str(), quantity.as_str()))
        .collect()
}

/// The enforcer container as patched into pods: the fixed parts are
/// serialised once (in [`Injector::new`]), so each pod costs one write.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EnforcerContainer<'a> {
    name: &'static str,
    image: &'a str,
    image_pull_policy: &'a str,
    env: &'a RawValue,
    resources: Cow<'a, ResourceDefaults>,
    security_context: SecurityContext,
    volume_mounts: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    restart_policy: Option<&'static str>,
}

/// Passes Pod Security "restricted"; never root.
fn restricted_security_context(run_as_user: i64) -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(run_as_user),
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

/// The enforcer's environment (pod identity from the downward API, where
/// its state and labels are, the policy service) and volume mounts.
fn enforcer_env_and_mounts(settings: &InjectionSettings) -> (Vec<Value>, Vec<Value>) {
    let field_env = |name: &str, path: &str| json!({"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}});
    let mut env = vec![
        field_env("PALISADE_POD_NAME", "metadata.name"),
        field_env("PALISADE_POD_NAMESPACE", "metadata.namespace"),
        field_env("PALISADE_POD_UID", "metadata.uid"),
        json!({"name": "PALISADE_STATE_DIR", "value": STATE_DIR}),
        json!({"name": "PALISADE_LABELS_FILE", "value": format!("{PODINFO_DIR}/labels")}),
    ];
    let mut mounts = vec![
        json!({"name": STATE_VOLUME, "mountPath": STATE_DIR}),
        json!({"name": PODINFO_VOLUME, "mountPath": PODINFO_DIR, "readOnly": true}),
    ];
    if let Some(url) = &settings.policy_service_url {
        env.push(json!({"name": "PALISADE_POLICY_URL", "value": url}));
        env.push(
            json!({"name": "PALISADE_REPORT_TOKEN_FILE", "value": format!("{TOKEN_DIR}/token")}),
        );
        mounts.push(json!({"name": TOKEN_VOLUME, "mountPath": TOKEN_DIR, "readOnly": true}));
    }
    if let Some(ca) = &settings.policy_service_ca {
        env.push(json!({"name": "PALISADE_CA_PEM", "value": ca}));
    }
    (env, mounts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> InjectionSettings {
        InjectionSettings::default()
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
        let mutation = Injector::new(settings).plan(&PodShape::from_value(pod)?)?;
        let patch = serde_json::from_slice(&mutation.patch_json()).unwrap();
        Ok((patch, mutation.outcome))
    }

    fn apply(original: &Value, patch: &json_patch::Patch) -> Value {
        let mut doc = original.clone();
        json_patch::patch(&mut doc, patch).expect("patch applies");
        doc
    }

    #[test]
    fn injects_a_restricted_sidecar_and_shares_the_process_namespace() {
        let original = pod();
        let (patch, outcome) = patch_for(&original, &settings()).unwrap();
        let out = apply(&original, &patch);
        assert_eq!(
            outcome,
            Outcome::Injected {
                defaulted: vec!["app".into()]
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
        let env: Vec<&str> = sidecar["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["name"].as_str().unwrap())
            .collect();
        assert!(env.contains(&"PALISADE_POD_UID"), "{env:?}");
        assert_eq!(out["spec"]["volumes"][0]["name"], STATE_VOLUME);
        let status: Value = serde_json::from_str(
            out["metadata"]["annotations"][STATUS_ANNOTATION]
                .as_str()
                .unwrap(),
        )
        .unwrap();
        assert_eq!(status["sidecar"], ENFORCER_CONTAINER);
    }

    #[test]
    fn defaults_only_unset_resources() {
        let out = apply(&pod(), &patch_for(&pod(), &settings()).unwrap().0);
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
    fn request_only_resource_is_not_given_a_smaller_limit() {
        let mut p = pod();
        p["spec"]["containers"][0]["resources"] = json!({"requests": {"memory": "2Gi"}});
        let out = apply(&p, &patch_for(&p, &settings()).unwrap().0);
        let r = &out["spec"]["containers"][0]["resources"];
        assert_eq!(r["requests"]["memory"], "2Gi");
        assert!(r["limits"].get("memory").is_none());
        assert_eq!(r["limits"]["cpu"], "1", "cpu, set by neither, is defaulted");
    }

    #[test]
    fn second_pass_is_a_no_op() {
        let once = apply(&pod(), &patch_for(&pod(), &settings()).unwrap().0);
        let (patch, _) = patch_for(&once, &settings()).unwrap();
        assert!(patch.0.is_empty(), "{patch:?}");
    }

    #[test]
    fn reinvocation_defaults_containers_added_by_others() {
        let mut once = apply(&pod(), &patch_for(&pod(), &settings()).unwrap().0);
        once["spec"]["containers"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "late", "image": "x:1"}));
        let out = apply(&once, &patch_for(&once, &settings()).unwrap().0);
        let names: Vec<&str> = out["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["app", "sized", ENFORCER_CONTAINER, "late"]);
        assert_eq!(
            out["spec"]["containers"][3]["resources"]["limits"]["cpu"],
            "1"
        );
    }

    #[test]
    fn opt_out_annotation_and_host_network_skip() {
        let mut p = pod();
        p["metadata"]["annotations"] = json!({INJECT_ANNOTATION: "false"});
        let (patch, outcome) = patch_for(&p, &settings()).unwrap();
        let out = apply(&p, &patch);
        assert_eq!(
            outcome,
            Outcome::Skipped {
                reason: "opted out by annotation",
                defaulted: vec!["app".into()]
            }
        );
        assert_eq!(
            out["spec"]["containers"].as_array().unwrap().len(),
            2,
            "no sidecar"
        );
        assert!(out["spec"].get("shareProcessNamespace").is_none());
        assert_eq!(
            out["spec"]["containers"][0]["resources"]["limits"]["cpu"],
            "1"
        );

        let mut p = pod();
        p["spec"]["hostNetwork"] = json!(true);
        let s = InjectionSettings {
            skip_host_network: true,
            ..settings()
        };
        assert!(matches!(
            patch_for(&p, &s).unwrap().1,
            Outcome::Skipped {
                reason: "hostNetwork pod",
                ..
            }
        ));
        assert!(matches!(
            patch_for(&p, &settings()).unwrap().1,
            Outcome::Injected { .. }
        ));
    }

    #[test]
    fn native_sidecar_is_the_first_init_container() {
        let mut p = pod();
        p["spec"]["initContainers"] = json!([{"name": "migrate", "image": "m:1"}]);
        let s = InjectionSettings {
            native_sidecar: true,
            ..settings()
        };
        let out = apply(&p, &patch_for(&p, &s).unwrap().0);
        let init = &out["spec"]["initContainers"];
        assert_eq!(init[0]["name"], ENFORCER_CONTAINER);
        assert_eq!(init[0]["restartPolicy"], "Always");
        assert_eq!(init[1]["name"], "migrate");
        assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 2);
        assert!(patch_for(&out, &s).unwrap().0 .0.is_empty());
    }

    #[test]
    fn sidecar_runs_as_the_app_uid_but_never_root() {
        let mut p = pod();
        p["spec"]["securityContext"] = json!({"runAsUser": 1000});
        let out = apply(&p, &patch_for(&p, &settings()).unwrap().0);
        assert_eq!(
            out["spec"]["containers"][2]["securityContext"]["runAsUser"],
            1000
        );

        p["spec"]["securityContext"] = json!({"runAsUser": 0});
        let out = apply(&p, &patch_for(&p, &settings()).unwrap().0);
        assert_eq!(
            out["spec"]["containers"][2]["securityContext"]["runAsUser"],
            65532
        );
    }

    #[test]
    fn resource_annotations_merge_with_defaults() {
        let mut p = pod();
        p["metadata"]["annotations"] = json!({"palisade.dev/sidecar-memory-limit": "64Mi"});
        let out = apply(&p, &patch_for(&p, &settings()).unwrap().0);
        let r = &out["spec"]["containers"][2]["resources"];
        assert_eq!(r["limits"]["memory"], "64Mi");
        assert_eq!(r["limits"]["cpu"], "100m", "other defaults stay");

        p["metadata"]["annotations"] = json!({"palisade.dev/sidecar-cpu": "lots"});
        let err = patch_for(&p, &settings()).unwrap_err();
        assert!(
            err.to_string().contains("palisade.dev/sidecar-cpu"),
            "{err}"
        );
    }

    #[test]
    fn with_a_policy_service_the_enforcer_gets_a_bound_token_and_the_ca() {
        let s = InjectionSettings {
            policy_service_url: Some("https://palisade-policy.palisade-system.svc".into()),
            policy_service_ca: Some("-----BEGIN CERTIFICATE-----".into()),
            ..settings()
        };
        let out = apply(&pod(), &patch_for(&pod(), &s).unwrap().0);
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
        let err = patch_for(&json!({"metadata": {}}), &settings()).unwrap_err();
        assert_eq!(err, MutateError::NotAnObject("spec"));
        assert!(patch_for(&json!("nope"), &settings()).is_err());
    }
}
