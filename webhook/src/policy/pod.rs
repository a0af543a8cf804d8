//! The parts of a pod spec that policies judge, typed. Everything else
//! (environment, probes, volume mounts, volume sources, tolerations...) is
//! skipped unparsed, so an admission builds only what it decides on. The
//! leaf types are k8s-openapi's; field names match its `PodSpec`.

use k8s_openapi::api::core::v1::{
    ContainerPort, HostPathVolumeSource, PodOS, PodSecurityContext, ResourceRequirements,
    SecurityContext,
};
use serde::{Deserialize, Deserializer};

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    #[serde(default, deserialize_with = "null_as_default")]
    pub containers: Vec<Container>,
    #[serde(default)]
    pub init_containers: Option<Vec<Container>>,
    #[serde(default)]
    pub ephemeral_containers: Option<Vec<Container>>,
    #[serde(default)]
    pub security_context: Option<PodSecurityContext>,
    #[serde(default)]
    pub host_network: Option<bool>,
    #[serde(default, rename = "hostPID")]
    pub host_pid: Option<bool>,
    #[serde(default, rename = "hostIPC")]
    pub host_ipc: Option<bool>,
    #[serde(default)]
    pub os: Option<PodOS>,
    #[serde(default)]
    pub volumes: Option<Vec<Volume>>,
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
    fn nulls_read_as_empty() {
        let spec: PodSpec =
            serde_json::from_value(json!({"containers": null, "volumes": [{"name": null}]}))
                .unwrap();
        assert!(spec.containers.is_empty());
        assert_eq!(spec.volumes.unwrap()[0].name, "");
    }
}
