//! The plan: the JSON patch operations that turn a pod into the injected
//! pod, and the [`Injector`] that makes them.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::value::{to_raw_value, RawValue};
use serde_json::{json, Value};

use palisade_common::{ENFORCER_CONTAINER, STATUS_ANNOTATION};

use super::container::{
    enforcer_env, enforcer_volumes, mounts_named, restricted_security_context, volumes_named,
    EnforcerContainer, EnforcerVolume,
};
use super::decisions::{limit_for_request, sidecar_resources, skip_reason, unique_name};
use super::view::{quantity_text, ContainerList, ContainerShape, PodShape};
use super::{
    ImageCommands, LaunchFor, LaunchShape, MutateError, Outcome, Prevent, Prevention, Section,
};
use crate::admission::enforcer::{Claim, EnforcerIdentity, ImpostorError};
use crate::admission::reason::{DegradeReason, SkipReason};
use crate::settings::InjectionSettings;

/// One JSON patch operation; the mutation only ever adds (an `add` onto an
/// existing member replaces it, which is how nulls are filled in).
#[derive(Debug, Serialize)]
pub struct AddOp {
    op: &'static str,
    pub path: String,
    pub value: Box<RawValue>,
}

impl AddOp {
    pub(super) fn new(path: String, value: Box<RawValue>) -> Self {
        Self {
            op: "add",
            path,
            value,
        }
    }

    pub(super) fn json<T: Serialize + ?Sized>(path: String, value: &T) -> Self {
        Self::new(path, raw_json(value))
    }
}

/// `value` as raw JSON. Maps of strings, numbers and bools always serialise.
pub(super) fn raw_json<T: Serialize + ?Sized>(value: &T) -> Box<RawValue> {
    to_raw_value(value).unwrap_or_else(|_| raw("null"))
}

pub(super) fn raw(json: &str) -> Box<RawValue> {
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
pub(super) fn pointer_token(key: &str) -> String {
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

/// The enforcer, its volumes and mounts, built once from the settings; each
/// pod only varies the enforcer's UID and resources, and volume names when
/// the pod already uses the usual ones.
pub struct Injector {
    pub(super) settings: InjectionSettings,
    pub(super) identity: EnforcerIdentity,
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
pub(super) fn list_exists(ops: &[AddOp], path: &str, present: bool) -> bool {
    present || ops.iter().any(|op| op.path == path)
}

/// Appends `items` to the list at `path`, creating the list with them when
/// it will not exist ([`list_exists`]), so plans that add to the same list
/// compose.
pub(super) fn append(ops: &mut Vec<AddOp>, path: &str, present: bool, items: Vec<Box<RawValue>>) {
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
