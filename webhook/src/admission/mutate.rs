//! Sidecar injection and resource defaulting on a pod-shaped JSON value
//! (`{metadata, spec}`: a Pod or any workload's pod template).
//!
//! The value is edited in place and the JSON patch is the diff against the
//! original, so a second pass over an already-mutated pod yields an empty
//! patch (idempotent, safe under `reinvocationPolicy: IfNeeded`).

use serde_json::{json, Map, Value};

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
    /// The value now has the sidecar and defaults (possibly already had).
    Injected {
        /// Containers whose resources were defaulted in this pass.
        defaulted: Vec<String>,
    },
    /// No enforcer, for this reason; resources were still defaulted.
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
}

/// Injects the enforcer and defaults resources in `pod` (edited in place).
/// Opting out (annotation, hostNetwork when configured) skips the enforcer
/// only: resource defaults apply to every pod, as LimitRanger's would.
pub fn inject(pod: &mut Value, settings: &InjectionSettings) -> Result<Outcome, MutateError> {
    let skip = if annotation(pod, INJECT_ANNOTATION) == Some("false") {
        Some("opted out by annotation")
    } else if settings.skip_host_network
        && pod.pointer("/spec/hostNetwork") == Some(&Value::Bool(true))
    {
        Some("hostNetwork pod")
    } else {
        None
    };
    let sidecar_resources = match skip {
        None => Some(sidecar_resources(pod, &settings.sidecar_resources)?),
        Some(_) => None,
    };
    let run_as_user = app_run_as_user(pod).unwrap_or(settings.default_run_as_user);
    let spec = pod
        .get_mut("spec")
        .and_then(Value::as_object_mut)
        .ok_or(MutateError::NotAnObject("spec"))?;

    let defaulted = default_container_resources(spec, &settings.container_defaults);
    let (Some(sidecar_resources), None) = (sidecar_resources, skip) else {
        return Ok(Outcome::Skipped {
            reason: skip.unwrap_or_default(),
            defaulted,
        });
    };

    if !has_enforcer(spec) {
        let container = enforcer_container(settings, sidecar_resources, run_as_user);
        let list = if settings.native_sidecar {
            "initContainers"
        } else {
            "containers"
        };
        // Native sidecars go first so they start before other init containers.
        let containers = array_entry(spec, list);
        if settings.native_sidecar {
            containers.insert(0, container);
        } else {
            containers.push(container);
        }
    }
    let volumes = array_entry(spec, "volumes");
    let mut wanted = vec![
        json!({"name": STATE_VOLUME, "emptyDir": {"sizeLimit": "64Mi"}}),
        json!({"name": PODINFO_VOLUME, "downwardAPI": {"items": [
            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}}
        ]}}),
    ];
    if settings.policy_service_url.is_some() {
        wanted.push(json!({"name": TOKEN_VOLUME, "projected": {"sources": [{"serviceAccountToken": {
            "audience": settings.report_token_audience, "expirationSeconds": 3600, "path": "token"
        }}]}}));
    }
    for volume in wanted {
        if !volumes.iter().any(|v| v.get("name") == volume.get("name")) {
            volumes.push(volume);
        }
    }
    spec.insert("shareProcessNamespace".into(), Value::Bool(true));

    let status = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "sidecar": ENFORCER_CONTAINER,
        "native": settings.native_sidecar,
    })
    .to_string();
    let metadata = object_entry(
        pod.as_object_mut()
            .ok_or(MutateError::NotAnObject("object"))?,
        "metadata",
    );
    object_entry(metadata, "annotations").insert(STATUS_ANNOTATION.into(), Value::String(status));
    Ok(Outcome::Injected { defaulted })
}

/// JSON patch turning `original` into the injected pod. Empty when nothing
/// changes (already injected, skipped).
pub fn patch_for(
    original: &Value,
    settings: &InjectionSettings,
) -> Result<(json_patch::Patch, Outcome), MutateError> {
    let mut mutated = original.clone();
    let outcome = inject(&mut mutated, settings)?;
    Ok((json_patch::diff(original, &mutated), outcome))
}

fn annotation<'a>(pod: &'a Value, key: &str) -> Option<&'a str> {
    pod.get("metadata")?.get("annotations")?.get(key)?.as_str()
}

fn has_enforcer(spec: &Map<String, Value>) -> bool {
    ["containers", "initContainers"].iter().any(|list| {
        spec.get(*list).and_then(Value::as_array).is_some_and(|cs| {
            cs.iter()
                .any(|c| c.get("name").and_then(Value::as_str) == Some(ENFORCER_CONTAINER))
        })
    })
}

/// The application's UID, so the enforcer can read its /proc entries
/// (exe, root, fds need the same UID). Root is never copied.
fn app_run_as_user(pod: &Value) -> Option<i64> {
    let from_containers = pod
        .pointer("/spec/containers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|c| c.get("name").and_then(Value::as_str) != Some(ENFORCER_CONTAINER))
        .find_map(|c| {
            c.pointer("/securityContext/runAsUser")
                .and_then(Value::as_i64)
        });
    from_containers
        .or_else(|| {
            pod.pointer("/spec/securityContext/runAsUser")
                .and_then(Value::as_i64)
        })
        .filter(|uid| *uid > 0)
}

fn sidecar_resources(pod: &Value, defaults: &ResourceDefaults) -> Result<Value, MutateError> {
    let mut resources = defaults.clone();
    for (key, section, name) in RESOURCE_OVERRIDES {
        if let Some(value) = annotation(pod, key) {
            if !is_valid_quantity(value) {
                return Err(MutateError::BadOverride {
                    annotation: key.into(),
                    value: value.into(),
                });
            }
            let map = if section == "requests" {
                &mut resources.requests
            } else {
                &mut resources.limits
            };
            map.insert(name.into(), value.into());
        }
    }
    Ok(json!({"requests": resources.requests, "limits": resources.limits}))
}

fn enforcer_container(settings: &InjectionSettings, resources: Value, run_as_user: i64) -> Value {
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
    let mut container = json!({
        "name": ENFORCER_CONTAINER,
        "image": settings.image,
        "imagePullPolicy": settings.image_pull_policy,
        "env": env,
        "resources": resources,
        "securityContext": {
            "runAsNonRoot": true,
            "runAsUser": run_as_user,
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "volumeMounts": mounts,
    });
    if settings.native_sidecar {
        container["restartPolicy"] = json!("Always");
    }
    container
}

/// Like LimitRanger: for each defaulted resource a container sets neither a
/// request nor a limit for, set both. A container that sets only a request
/// keeps it and gets no limit (a default limit below it would be invalid).
fn default_container_resources(
    spec: &mut Map<String, Value>,
    defaults: &ResourceDefaults,
) -> Vec<String> {
    let mut defaulted = Vec::new();
    let names: Vec<&String> = defaults
        .requests
        .keys()
        .chain(defaults.limits.keys())
        .collect();
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for container in containers.iter_mut().filter_map(Value::as_object_mut) {
            if container.get("name").and_then(Value::as_str) == Some(ENFORCER_CONTAINER) {
                continue;
            }
            let mut changed = false;
            for name in &names {
                let set_in = |section: &str, c: &Map<String, Value>| {
                    c.get("resources")
                        .and_then(|r| r.get(section))
                        .and_then(|s| s.get(name.as_str()))
                        .is_some()
                };
                if set_in("requests", container) || set_in("limits", container) {
                    continue;
                }
                let resources = object_entry(container, "resources");
                for (section, map) in [
                    ("requests", &defaults.requests),
                    ("limits", &defaults.limits),
                ] {
                    if let Some(q) = map.get(name.as_str()) {
                        object_entry(resources, section).insert(name.to_string(), json!(q));
                        changed = true;
                    }
                }
            }
            if changed {
                let name = container.get("name").and_then(Value::as_str).unwrap_or("");
                defaulted.push(name.to_string());
            }
        }
    }
    defaulted
}

/// `map[key]` as an object, created (or replacing a null) when absent.
fn object_entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Map<String, Value> {
    let entry = map.entry(key).or_insert_with(|| Value::Object(Map::new()));
    if !entry.is_object() {
        *entry = Value::Object(Map::new());
    }
    entry.as_object_mut().expect("just made an object")
}

/// `map[key]` as an array, created (or replacing a null) when absent.
fn array_entry<'a>(map: &'a mut Map<String, Value>, key: &str) -> &'a mut Vec<Value> {
    let entry = map.entry(key).or_insert_with(|| Value::Array(Vec::new()));
    if !entry.is_array() {
        *entry = Value::Array(Vec::new());
    }
    entry.as_array_mut().expect("just made an array")
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
