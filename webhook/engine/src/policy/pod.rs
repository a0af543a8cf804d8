//! The parts of a pod that policies judge, typed, plus the raw JSON of
//! the fields custom rules read, from one pass over the object's text.
//! Everything else (environment, probes, volume mounts, tolerations,
//! managedFields...) is skipped unparsed, so an admission builds only what
//! it decides on. The leaf types are k8s-openapi's; field names match its
//! `PodSpec`.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::api::core::v1::{
    ContainerPort, HostPathVolumeSource, PodOS, PodSecurityContext, ResourceRequirements,
    SecurityContext,
};
use palisade_common::path::{FieldSet, Key};
use serde::de::{DeserializeOwned, DeserializeSeed, Error as _, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::{Map, Value};

#[derive(Debug, Clone, Default)]
pub struct PodSpec {
    pub containers: Vec<Container>,
    pub init_containers: Option<Vec<Container>>,
    pub ephemeral_containers: Option<Vec<Container>>,
    pub security_context: Option<PodSecurityContext>,
    pub host_network: Option<bool>,
    pub host_pid: Option<bool>,
    pub host_ipc: Option<bool>,
    pub os: Option<PodOS>,
    pub volumes: Option<Vec<Volume>>,
    /// Pod-level requests and limits (PodLevelResources): a pod-level
    /// limit bounds every container that sets none of its own.
    pub resources: Option<ResourceRequirements>,
    pub node_selector: Option<BTreeMap<String, String>>,
}

/// A container of any list (init, app, ephemeral).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Container {
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default)]
    pub image: Option<String>,
    #[serde(default)]
    pub security_context: Option<SecurityContext>,
    #[serde(default)]
    pub ports: Option<Vec<ContainerPort>>,
    #[serde(default)]
    pub resources: Option<ResourceRequirements>,
}

/// A volume's name and whether it is a hostPath; the restricted profile's
/// volume-type check reads the raw JSON instead (newer sources included).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Volume {
    #[serde(default, deserialize_with = "null_as_default")]
    pub name: String,
    #[serde(default)]
    pub host_path: Option<HostPathVolumeSource>,
}

/// A Pod read for evaluation.
pub struct ParsedPod {
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub spec: PodSpec,
    /// The fields `reads` names (and possibly more), as JSON.
    pub raw: Value,
}

impl ParsedPod {
    /// Reads a Pod's JSON text in one pass: the spec typed, labels and
    /// annotations, and of the rest only what `reads` names.
    pub fn from_json(text: &str, reads: &FieldSet) -> Result<Self, serde_json::Error> {
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let pod = deserializer.deserialize_map(PodVisitor(reads))?;
        deserializer.end()?;
        Ok(pod)
    }
}

struct PodVisitor<'r>(&'r FieldSet);

impl<'de> Visitor<'de> for PodVisitor<'_> {
    type Value = ParsedPod;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a pod object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ParsedPod, A::Error> {
        let mut raw = Map::new();
        let mut spec = None;
        let (mut labels, mut annotations) = (None, None);
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let read = self.0.child(key.as_str());
            match key.as_str() {
                "spec" => {
                    let (typed, spec_raw) = map.next_value_seed(SpecSeed(read))?;
                    spec = Some(typed);
                    raw.insert("spec".into(), spec_raw);
                }
                "metadata" => {
                    let metadata: Option<Metadata> =
                        typed_and_raw(&mut map, read, "metadata", &mut raw)?;
                    let metadata = metadata.unwrap_or_default();
                    labels = metadata.labels;
                    annotations = metadata.annotations;
                }
                _ => read_or_skip(&mut map, read, key, &mut raw)?,
            }
        }
        Ok(ParsedPod {
            labels: labels.unwrap_or_default(),
            annotations: annotations.unwrap_or_default(),
            spec: spec.ok_or_else(|| A::Error::missing_field("spec"))?,
            raw: Value::Object(raw),
        })
    }
}

#[derive(Debug, Default, Deserialize)]
struct Metadata {
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
}

/// The next value typed; when `read` (raw JSON is wanted too), parsed once
/// as a whole JSON value, kept in `raw`, and typed from it.
fn typed_and_raw<'de, A, T>(
    map: &mut A,
    read: Option<&FieldSet>,
    key: &str,
    raw: &mut Map<String, Value>,
) -> Result<T, A::Error>
where
    A: MapAccess<'de>,
    T: DeserializeOwned,
{
    if read.is_none() {
        return map.next_value();
    }
    let value: Value = map.next_value()?;
    let typed = T::deserialize(&value).map_err(A::Error::custom)?;
    raw.insert(key.to_string(), value);
    Ok(typed)
}

/// The next value, as far as `read` reaches into it, kept in `raw` under
/// `key`; skipped unparsed when no rule reads it.
fn read_or_skip<'de, A: MapAccess<'de>>(
    map: &mut A,
    read: Option<&FieldSet>,
    key: Key<'de>,
    raw: &mut Map<String, Value>,
) -> Result<(), A::Error> {
    match read {
        Some(read) => {
            let value = map.next_value_seed(read.seed())?;
            raw.insert(key.into_string(), value);
        }
        None => {
            map.next_value::<IgnoredAny>()?;
        }
    }
    Ok(())
}

/// The spec typed, and its fields `reads` names as JSON.
struct SpecSeed<'r>(Option<&'r FieldSet>);

impl<'de> DeserializeSeed<'de> for SpecSeed<'_> {
    type Value = (PodSpec, Value);

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        match self.0 {
            // A rule reads the whole spec: parse it once as JSON, type it from that.
            Some(reads) if reads.is_whole() => {
                let value = Value::deserialize(deserializer)?;
                let spec = PodSpec::deserialize(&value).map_err(D::Error::custom)?;
                Ok((spec, value))
            }
            reads => deserializer.deserialize_map(SpecVisitor(reads)),
        }
    }
}

struct SpecVisitor<'r>(Option<&'r FieldSet>);

impl<'de> Visitor<'de> for SpecVisitor<'_> {
    type Value = (PodSpec, Value);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a pod spec object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut spec = PodSpec::default();
        let mut raw = Map::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            let read = self.0.and_then(|r| r.child(key.as_str()));
            let raw = &mut raw;
            match key.as_str() {
                "containers" => {
                    let containers: Option<_> = typed_and_raw(&mut map, read, "containers", raw)?;
                    spec.containers = containers.unwrap_or_default();
                }
                "initContainers" => {
                    spec.init_containers = typed_and_raw(&mut map, read, "initContainers", raw)?
                }
                "ephemeralContainers" => {
                    spec.ephemeral_containers =
                        typed_and_raw(&mut map, read, "ephemeralContainers", raw)?
                }
                "securityContext" => {
                    spec.security_context = typed_and_raw(&mut map, read, "securityContext", raw)?
                }
                "hostNetwork" => {
                    spec.host_network = typed_and_raw(&mut map, read, "hostNetwork", raw)?
                }
                "hostPID" => spec.host_pid = typed_and_raw(&mut map, read, "hostPID", raw)?,
                "hostIPC" => spec.host_ipc = typed_and_raw(&mut map, read, "hostIPC", raw)?,
                "os" => spec.os = typed_and_raw(&mut map, read, "os", raw)?,
                "volumes" => spec.volumes = typed_and_raw(&mut map, read, "volumes", raw)?,
                "resources" => spec.resources = typed_and_raw(&mut map, read, "resources", raw)?,
                "nodeSelector" => {
                    spec.node_selector = typed_and_raw(&mut map, read, "nodeSelector", raw)?
                }
                _ => read_or_skip(&mut map, read, key, raw)?,
            }
        }
        Ok((spec, Value::Object(raw)))
    }
}

impl<'de> Deserialize<'de> for PodSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(SpecSeed(None).deserialize(deserializer)?.0)
    }
}

/// JSON null reads as the empty value, as the API server treats it.
fn null_as_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_the_judged_fields_and_skips_the_rest() {
        let spec: PodSpec = serde_json::from_value(json!({
            "hostPID": true, "hostIPC": false, "hostNetwork": true,
            "os": {"name": "linux"},
            "securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "a", "image": "x:1", "env": [{"name": "E", "value": "v"}],
                "ports": [{"containerPort": 80, "hostPort": 8080}],
                "securityContext": {"privileged": true},
                "livenessProbe": {"httpGet": {"port": 80}}}],
            "initContainers": null,
            "volumes": [{"name": "h", "hostPath": {"path": "/"}}, {"name": "p", "projected": {"sources": []}}],
            "tolerations": [{"key": "k", "operator": "Exists"}]
        }))
        .unwrap();
        assert_eq!(spec.host_pid, Some(true));
        assert_eq!(spec.host_ipc, Some(false));
        assert_eq!(spec.os.unwrap().name, "linux");
        let c = &spec.containers[0];
        assert_eq!(c.security_context.as_ref().unwrap().privileged, Some(true));
        assert_eq!(c.ports.as_ref().unwrap()[0].host_port, Some(8080));
        assert!(spec.init_containers.is_none());
        let volumes = spec.volumes.unwrap();
        assert!(volumes[0].host_path.is_some());
        assert_eq!(volumes[1].name, "p");
    }

    #[test]
    fn one_pass_reads_typed_fields_and_the_raw_fields_rules_name() {
        use palisade_common::path::FieldPath;
        let text = r#"{"apiVersion":"v1","kind":"Pod",
            "metadata":{"name":"web","labels":{"app":"web"},"annotations":{"a":"b"},"managedFields":[{}]},
            "spec":{"automountServiceAccountToken":true,"hostNetwork":true,
              "containers":[{"name":"c","image":"x:1","securityContext":{"privileged":true}}],
              "volumes":[{"name":"v","nfs":{"server":"s","path":"/"}}],
              "tolerations":[{"key":"k"}]},
            "status":{"phase":"Pending"}}"#;
        let whole: Value = serde_json::from_str(text).unwrap();
        let paths = [
            "spec.automountServiceAccountToken",
            "spec.volumes",
            "spec.containers[*].image",
            "metadata.labels.app",
            "status.phase",
        ];
        let mut reads = FieldSet::default();
        for p in paths {
            reads.insert(&FieldPath::parse(p).unwrap());
        }
        let pod = ParsedPod::from_json(text, &reads).unwrap();
        assert_eq!(pod.labels["app"], "web");
        assert_eq!(pod.annotations["a"], "b");
        assert_eq!(pod.spec.host_network, Some(true));
        assert_eq!(pod.spec.containers[0].image.as_deref(), Some("x:1"));
        assert_eq!(
            pod.spec.containers[0]
                .security_context
                .as_ref()
                .unwrap()
                .privileged,
            Some(true),
            "typed in full even when a rule reads part of the list"
        );
        assert_eq!(pod.spec.volumes.as_ref().unwrap()[0].name, "v");
        for p in paths {
            let path = FieldPath::parse(p).unwrap();
            assert_eq!(path.resolve(&pod.raw), path.resolve(&whole), "{p}");
        }
        assert!(
            pod.raw["spec"].get("tolerations").is_none(),
            "unread fields skipped"
        );

        let mut whole_spec = FieldSet::default();
        whole_spec.insert(&FieldPath::parse("spec").unwrap());
        let pod = ParsedPod::from_json(text, &whole_spec).unwrap();
        assert_eq!(pod.raw["spec"], whole["spec"]);
        assert_eq!(pod.spec.host_network, Some(true));
    }

    #[test]
    fn a_pod_without_a_spec_or_with_bad_types_is_an_error() {
        let reads = FieldSet::default();
        let err = ParsedPod::from_json(r#"{"metadata":{}}"#, &reads)
            .err()
            .unwrap();
        assert!(err.to_string().contains("missing field `spec`"), "{err}");
        assert!(ParsedPod::from_json(r#"{"spec":{"hostPID":"yes"}}"#, &reads).is_err());
        assert!(ParsedPod::from_json(r#"{"spec":{}} x"#, &reads).is_err());
        assert!(ParsedPod::from_json(r#"[]"#, &reads).is_err());
    }

    #[test]
    fn nulls_read_as_empty() {
        let spec: PodSpec =
            serde_json::from_value(json!({"containers": null, "volumes": [{"name": null}]}))
                .unwrap();
        assert!(spec.containers.is_empty());
        assert_eq!(spec.volumes.unwrap()[0].name, "");
    }
}
