//! The enforcer container: how the sidecar, its volumes and its mounts are
//! built from the settings.

use std::borrow::Cow;
use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Capabilities, SeccompProfile, SecurityContext};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};

use super::{
    API_TOKEN_DIR, NO_API_TOKEN_VOLUME, PODINFO_DIR, PODINFO_VOLUME, STATE_DIR, STATE_VOLUME,
    TOKEN_DIR, TOKEN_VOLUME,
};
use crate::settings::{InjectionSettings, PullPolicy, ResourceDefaults};

/// A volume the enforcer mounts: its base name, definition (without the
/// name) and mount (without the name).
pub(super) struct EnforcerVolume {
    pub(super) name: &'static str,
    pub(super) volume: Value,
    pub(super) mount: Value,
}

/// The enforcer's mounts with the volume names chosen for this pod.
pub(super) fn mounts_named(
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

pub(super) fn volumes_named(
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
pub(super) struct EnforcerContainer<'a> {
    pub(super) name: &'static str,
    pub(super) image: &'a str,
    pub(super) image_pull_policy: PullPolicy,
    pub(super) env: &'a RawValue,
    pub(super) resources: ResourceDefaults,
    pub(super) security_context: SecurityContext,
    pub(super) volume_mounts: &'a RawValue,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) restart_policy: Option<&'static str>,
}

/// Passes Pod Security "restricted"; never root.
pub(super) fn restricted_security_context(
    run_as_user: i64,
    run_as_group: Option<i64>,
) -> SecurityContext {
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
pub(super) fn enforcer_env(settings: &InjectionSettings) -> Vec<Value> {
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
pub(super) fn enforcer_volumes(settings: &InjectionSettings) -> Vec<EnforcerVolume> {
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
