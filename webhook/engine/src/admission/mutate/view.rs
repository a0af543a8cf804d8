//! The view: the fields of a pod the injector reads, and nothing else.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use palisade_common::ENFORCER_CONTAINER;

use super::{read_text, read_value, MutateError, Section};

/// The fields of a pod the mutation reads; everything else is skipped
/// unparsed. Nulls read as absent, as the API server treats them.
#[derive(Debug, Default, Deserialize)]
pub struct PodShape {
    #[serde(default)]
    pub(super) metadata: Option<MetadataShape>,
    #[serde(default)]
    pub(super) spec: Option<SpecShape>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct MetadataShape {
    #[serde(default)]
    pub(super) annotations: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SpecShape {
    #[serde(default)]
    pub(super) containers: Option<Vec<ContainerShape>>,
    #[serde(default)]
    pub(super) init_containers: Option<Vec<ContainerShape>>,
    #[serde(default)]
    pub(super) volumes: Option<Vec<NamedShape>>,
    #[serde(default)]
    pub(super) host_network: Option<bool>,
    #[serde(default, rename = "hostPID")]
    pub(super) host_pid: Option<bool>,
    #[serde(default)]
    pub(super) share_process_namespace: Option<bool>,
    #[serde(default)]
    pub(super) security_context: Option<SecurityContextShape>,
    #[serde(default)]
    pub(super) os: Option<NamedShape>,
    #[serde(default)]
    pub(super) node_selector: Option<BTreeMap<String, String>>,
    /// Pod-level resources (PodLevelResources).
    #[serde(default)]
    pub(super) resources: Option<ResourcesShape>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ContainerShape {
    #[serde(default)]
    pub(super) name: Option<String>,
    #[serde(default)]
    pub(super) image: Option<String>,
    #[serde(default)]
    pub(super) resources: Option<ResourcesShape>,
    #[serde(default)]
    pub(super) security_context: Option<SecurityContextShape>,
    #[serde(default)]
    pub(super) volume_mounts: Option<Vec<NamedShape>>,
}

/// Quantities stay JSON values: the apiserver sends strings, but a number
/// must not make the whole pod unreadable.
#[derive(Debug, Default, Deserialize)]
pub(super) struct ResourcesShape {
    #[serde(default)]
    pub(super) requests: Option<BTreeMap<String, Value>>,
    #[serde(default)]
    pub(super) limits: Option<BTreeMap<String, Value>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SecurityContextShape {
    #[serde(default)]
    pub(super) run_as_user: Option<i64>,
    #[serde(default)]
    pub(super) run_as_group: Option<i64>,
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct NamedShape {
    #[serde(default)]
    pub(super) name: Option<String>,
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
    pub(super) fn with_spec(self) -> Result<Self, MutateError> {
        match self.spec {
            Some(_) => Ok(self),
            None => Err(MutateError::NotAnObject("spec")),
        }
    }

    pub(super) fn annotation(&self, key: &str) -> Option<&str> {
        let annotations = self.metadata.as_ref()?.annotations.as_ref()?;
        annotations.get(key).map(String::as_str)
    }

    pub(super) fn spec(&self) -> &SpecShape {
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

    pub(super) fn containers(&self, list: ContainerList) -> &[ContainerShape] {
        let spec = self.spec();
        let containers = match list {
            ContainerList::Init => spec.init_containers.as_deref(),
            ContainerList::App => spec.containers.as_deref(),
        };
        containers.unwrap_or_default()
    }

    /// Every container with its list and index.
    pub(super) fn all_containers(
        &self,
    ) -> impl Iterator<Item = (ContainerList, usize, &ContainerShape)> {
        [ContainerList::Init, ContainerList::App]
            .into_iter()
            .flat_map(move |list| {
                self.containers(list)
                    .iter()
                    .enumerate()
                    .map(move |(i, c)| (list, i, c))
            })
    }

    pub(super) fn volume_names(&self) -> BTreeSet<&str> {
        self.spec()
            .volumes
            .as_deref()
            .unwrap_or_default()
            .iter()
            .filter_map(|v| v.name.as_deref())
            .collect()
    }

    /// Whether the pod sets `resource` in its pod-level `spec.resources`.
    pub(super) fn pod_level_sets(&self, resource: &str) -> bool {
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
    pub(super) fn app_identity(&self) -> Option<(i64, Option<i64>)> {
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
    pub(super) fn section(&self, section: Section) -> Option<&BTreeMap<String, Value>> {
        match section {
            Section::Requests => self.requests.as_ref(),
            Section::Limits => self.limits.as_ref(),
        }
    }

    pub(super) fn sets(&self, resource: &str) -> bool {
        [Section::Requests, Section::Limits]
            .into_iter()
            .any(|s| self.section(s).is_some_and(|m| m.contains_key(resource)))
    }
}

impl ContainerShape {
    pub(super) fn get(&self, section: Section, resource: &str) -> Option<&Value> {
        self.resources.as_ref()?.section(section)?.get(resource)
    }
}

/// A quantity as the apiserver would read it (a string, or a bare number).
pub(super) fn quantity_text(value: &Value) -> Option<Cow<'_, str>> {
    match value {
        Value::String(s) => Some(Cow::Borrowed(s)),
        Value::Number(n) => Some(Cow::Owned(n.to_string())),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ContainerList {
    Init,
    App,
}

impl ContainerList {
    pub(super) fn field(self) -> &'static str {
        match self {
            ContainerList::Init => "initContainers",
            ContainerList::App => "containers",
        }
    }
}
