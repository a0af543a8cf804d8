//! The injector's plan, checked end to end on pods.

use palisade_common::{ENFORCER_CONTAINER, INJECT_ANNOTATION, STATUS_ANNOTATION};
use serde_json::json;

use super::*;
use crate::settings::InjectionSettings;

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

    p["spec"]["containers"][0]["securityContext"] = json!({"runAsUser": 1001, "runAsGroup": 3000});
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
