//! The injector's promise as a property: for any valid pod (generated
//! across the dimensions the injector decides on: hostPID, OS, process
//! namespace sharing, pod-level resources, request-only and limit-only
//! containers, volume names the injector also uses, override annotations,
//! native or classic sidecar), the patched pod passes the apiserver's
//! validation rules for every field the injector touches, keeps the
//! `resource-limits` policy satisfied, and a second pass changes nothing.
//!
//! The checks below restate those apiserver rules (pkg/apis/core/validation)
//! independently of the injector's code.

use std::collections::{BTreeMap, BTreeSet};

use palisade_common::launch::{LaunchPolicy, LAUNCHER_DIR, LAUNCHER_PATH};
use palisade_common::{ENFORCER_CONTAINER, STATUS_ANNOTATION};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

use super::mutate::{
    ImageCommand, ImageCommands, Injector, LaunchShape, MutateError, PodShape, Prevent,
    API_TOKEN_DIR, INSTALL_CONTAINER,
};
use crate::quantity::Quantity;
use crate::settings::InjectionSettings;

const RESOURCES: [&str; 2] = ["cpu", "memory"];

fn nanos(v: &Value) -> Option<u128> {
    Quantity::parse(v.as_str()?).ok().map(Quantity::nanos)
}

fn containers(spec: &Value) -> impl Iterator<Item = (&'static str, &Value)> {
    let list = |key: &'static str| {
        spec[key]
            .as_array()
            .into_iter()
            .flatten()
            .map(move |c| (key, c))
    };
    list("initContainers").chain(list("containers"))
}

/// What the apiserver would refuse in `pod`, among the fields the injector
/// writes; empty when it would accept them.
pub(crate) fn apiserver_problems(pod: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let spec = &pod["spec"];
    let mut names = BTreeSet::new();
    for (_, c) in containers(spec) {
        if !names.insert(c["name"].as_str().unwrap_or("")) {
            problems.push(format!("container name {} used twice", c["name"]));
        }
    }
    let volumes: Vec<&str> = spec["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|v| v["name"].as_str().unwrap_or(""))
        .collect();
    let volume_set: BTreeSet<&str> = volumes.iter().copied().collect();
    if volume_set.len() != volumes.len() {
        problems.push(format!("volume names not unique: {volumes:?}"));
    }
    let windows = spec["os"]["name"] == "windows";
    for (list, c) in containers(spec) {
        let name = &c["name"];
        let mut paths = BTreeSet::new();
        for m in c["volumeMounts"].as_array().into_iter().flatten() {
            if !volume_set.contains(m["name"].as_str().unwrap_or("")) {
                problems.push(format!("{name}: mount of unknown volume {}", m["name"]));
            }
            if !paths.insert(m["mountPath"].as_str().unwrap_or("")) {
                problems.push(format!("{name}: mountPath {} twice", m["mountPath"]));
            }
        }
        let mut env = BTreeSet::new();
        for e in c["env"].as_array().into_iter().flatten() {
            if !env.insert(e["name"].as_str().unwrap_or("")) {
                problems.push(format!("{name}: env {} twice", e["name"]));
            }
        }
        for r in RESOURCES {
            let (req, lim) = (&c["resources"]["requests"][r], &c["resources"]["limits"][r]);
            if let (Some(q), Some(l)) = (nanos(req), nanos(lim)) {
                if q > l {
                    problems.push(format!("{name}: {r} request {req} above limit {lim}"));
                }
            }
        }
        if let Some(policy) = c.get("restartPolicy") {
            if list != "initContainers" || policy != "Always" {
                problems.push(format!("{name}: restartPolicy {policy} in {list}"));
            }
        }
        if windows {
            const LINUX_ONLY: [&str; 9] = [
                "seLinuxOptions",
                "seccompProfile",
                "capabilities",
                "readOnlyRootFilesystem",
                "privileged",
                "allowPrivilegeEscalation",
                "procMount",
                "runAsUser",
                "runAsGroup",
            ];
            for field in LINUX_ONLY {
                if c["securityContext"].get(field).is_some() {
                    problems.push(format!("{name}: {field} forbidden on windows"));
                }
            }
        }
    }
    if spec["shareProcessNamespace"] == true && spec["hostPID"] == true {
        problems.push("hostPID and shareProcessNamespace together".into());
    }
    // Windows pods may not set shareProcessNamespace at all (false
    // included), nor hostPID.
    if windows
        && spec
            .get("shareProcessNamespace")
            .is_some_and(|v| !v.is_null())
    {
        problems.push("shareProcessNamespace forbidden on windows".into());
    }
    if windows && spec["hostPID"] == true {
        problems.push("hostPID forbidden on windows".into());
    }
    if windows && !spec["resources"].is_null() {
        problems.push("pod-level resources forbidden on windows".into());
    }
    problems.extend(pod_level_problems(spec));
    problems
}

/// PodLevelResources: aggregate container requests within the pod's
/// requests, each container limit within the pod's limit.
fn pod_level_problems(spec: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let pod = &spec["resources"];
    if pod.is_null() {
        return problems;
    }
    for r in RESOURCES {
        // Container requests default to limits.
        let request = |c: &Value| {
            nanos(&c["resources"]["requests"][r])
                .or_else(|| nanos(&c["resources"]["limits"][r]))
                .unwrap_or(0)
        };
        let mut sidecars = 0u128;
        let mut peak = 0u128;
        for c in spec["initContainers"].as_array().into_iter().flatten() {
            if c["restartPolicy"] == "Always" {
                sidecars += request(c);
            } else {
                peak = peak.max(sidecars + request(c));
            }
        }
        let app: u128 = spec["containers"]
            .as_array()
            .into_iter()
            .flatten()
            .map(request)
            .sum();
        let aggregate = peak.max(sidecars + app);
        let pod_request = nanos(&pod["requests"][r]).or_else(|| nanos(&pod["limits"][r]));
        if let Some(pod_request) = pod_request {
            if aggregate > pod_request {
                problems.push(format!(
                    "{r}: containers request {aggregate}n > pod {pod_request}n"
                ));
            }
        }
        if let Some(pod_limit) = nanos(&pod["limits"][r]) {
            for (_, c) in containers(spec) {
                if nanos(&c["resources"]["limits"][r]).is_some_and(|l| l > pod_limit) {
                    problems.push(format!("{r}: {} limit above the pod's", c["name"]));
                }
            }
        }
    }
    problems
}

// ---------------------------------------------------------------- generators

fn quantity(resource: &'static str) -> impl Strategy<Value = &'static str> {
    match resource {
        "cpu" => prop::sample::select(vec!["50m", "100m", "250m", "1", "2", "1500m"]),
        _ => prop::sample::select(vec!["16Mi", "64Mi", "128Mi", "512Mi", "1Gi", "2Gi"]),
    }
}

/// Per resource: nothing, a request, a limit, or both (request <= limit).
fn resource_choice(
    resource: &'static str,
) -> impl Strategy<Value = (Option<&'static str>, Option<&'static str>)> {
    (
        prop::option::of(quantity(resource)),
        prop::option::of(quantity(resource)),
    )
        .prop_map(|(a, b)| match (a, b) {
            (Some(a), Some(b)) if Quantity::compare(a, b) == Some(std::cmp::Ordering::Greater) => {
                (Some(b), Some(a))
            }
            pair => pair,
        })
}

fn resources() -> impl Strategy<Value = Option<Value>> {
    (
        resource_choice("cpu"),
        resource_choice("memory"),
        any::<bool>(),
    )
        .prop_map(|(cpu, memory, explicit_empty)| {
            let mut requests = Map::new();
            let mut limits = Map::new();
            for (name, (req, lim)) in [("cpu", cpu), ("memory", memory)] {
                if let Some(q) = req {
                    requests.insert(name.into(), json!(q));
                }
                if let Some(q) = lim {
                    limits.insert(name.into(), json!(q));
                }
            }
            if requests.is_empty() && limits.is_empty() && !explicit_empty {
                return None;
            }
            let mut resources = Map::new();
            if !requests.is_empty() {
                resources.insert("requests".into(), Value::Object(requests));
            }
            if !limits.is_empty() {
                resources.insert("limits".into(), Value::Object(limits));
            }
            Some(Value::Object(resources))
        })
}

const VOLUME_NAMES: [&str; 6] = [
    "data",
    super::mutate::STATE_VOLUME,
    "palisade-enforcer-state-1",
    super::mutate::PODINFO_VOLUME,
    super::mutate::NO_API_TOKEN_VOLUME,
    super::mutate::TOKEN_VOLUME,
];

fn container(name: String, volumes: Vec<&'static str>) -> impl Strategy<Value = Value> {
    let mount = if volumes.is_empty() {
        Just(None).boxed()
    } else {
        prop::option::of(prop::sample::select(volumes)).boxed()
    };
    let command = prop::option::of(prop::sample::select(vec![
        json!(["/pause"]),
        json!(["/app/bin/server", "--port", "8080"]),
        json!(["sh", "-c", "exec server"]),
    ]));
    let env = prop::option::of(Just(json!([{"name": "MODE", "value": "prod"}])));
    (resources(), mount, command, env).prop_map(move |(resources, mount, command, env)| {
        let mut c = json!({"name": name, "image": "registry.k8s.io/pause:3.10"});
        if let Some(r) = resources {
            c["resources"] = r;
        }
        if let Some(command) = command {
            c["command"] = command;
        }
        if let Some(env) = env {
            c["env"] = env;
        }
        if let Some(volume) = mount {
            c["volumeMounts"] = json!([{"name": volume, "mountPath": "/data"}]);
        }
        c
    })
}

const OVERRIDES: [&str; 4] = [
    "palisade.dev/sidecar-cpu",
    "palisade.dev/sidecar-memory",
    "palisade.dev/sidecar-cpu-limit",
    "palisade.dev/sidecar-memory-limit",
];

fn annotations() -> impl Strategy<Value = BTreeMap<String, String>> {
    let override_value = |key: &'static str| {
        let resource = if key.contains("cpu") { "cpu" } else { "memory" };
        prop::option::weighted(0.3, quantity(resource)).prop_map(move |q| (key, q))
    };
    (
        override_value(OVERRIDES[0]),
        override_value(OVERRIDES[1]),
        override_value(OVERRIDES[2]),
        override_value(OVERRIDES[3]),
        prop::bool::weighted(0.1),
    )
        .prop_map(|(a, b, c, d, opt_out)| {
            let mut map: BTreeMap<String, String> = [a, b, c, d]
                .into_iter()
                .filter_map(|(k, v)| Some((k.to_string(), v?.to_string())))
                .collect();
            if opt_out {
                map.insert("palisade.dev/inject".into(), "false".into());
            }
            map
        })
}

fn pod() -> impl Strategy<Value = Value> {
    let volumes = prop::sample::subsequence(VOLUME_NAMES.to_vec(), 0..=4);
    (volumes, 1..=3usize, 0..=2usize).prop_flat_map(|(volumes, apps, inits)| {
        // Containers mount the pod's own volumes (when it has any).
        let mountable = if volumes.is_empty() {
            vec![]
        } else {
            volumes.clone()
        };
        let app = (0..apps)
            .map(|i| container(format!("app{i}"), mountable.clone()))
            .collect::<Vec<_>>();
        let init = (0..inits)
            .map(|i| container(format!("init{i}"), mountable.clone()))
            .collect::<Vec<_>>();
        (
            Just(volumes),
            app,
            init,
            any::<bool>(),
            prop::option::of(any::<bool>()),
            prop::sample::select(vec![None, Some("linux"), Some("windows"), Some("selector")]),
            any::<bool>(),
            prop::option::weighted(0.3, resources()),
            annotations(),
            prop::bool::weighted(0.15),
        )
            .prop_map(
                |(
                    volumes,
                    apps,
                    inits,
                    host_pid,
                    share,
                    os,
                    host_network,
                    pod_level,
                    annotations,
                    empty_annotations,
                )| {
                    let mut spec = json!({"containers": apps});
                    if !inits.is_empty() {
                        spec["initContainers"] = json!(inits);
                    }
                    if !volumes.is_empty() {
                        spec["volumes"] = json!(volumes
                            .iter()
                            .map(|v| json!({"name": v, "emptyDir": {}}))
                            .collect::<Vec<_>>());
                    }
                    if host_pid {
                        spec["hostPID"] = json!(true);
                    }
                    if let Some(share) = share {
                        spec["shareProcessNamespace"] = json!(share);
                    }
                    match os {
                        // Bound to Windows nodes by the older node selector.
                        Some("selector") => {
                            spec["nodeSelector"] = json!({"kubernetes.io/os": "windows"})
                        }
                        Some(os) => spec["os"] = json!({"name": os}),
                        None => {}
                    }
                    if host_network {
                        spec["hostNetwork"] = json!(true);
                    }
                    if let Some(Some(resources)) = pod_level {
                        spec["resources"] = resources;
                    }
                    let mut metadata = json!({"name": "p"});
                    if !annotations.is_empty() || empty_annotations {
                        metadata["annotations"] = json!(annotations);
                    }
                    json!({"metadata": metadata, "spec": spec})
                },
            )
    })
}

fn settings() -> impl Strategy<Value = InjectionSettings> {
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(|(native, skip_hn, service)| {
        InjectionSettings {
            native_sidecar: native,
            skip_host_network: skip_hn,
            policy_service_url: service.then(|| "https://policy.palisade-system.svc".into()),
            ..InjectionSettings::default()
        }
    })
}

/// Volume mounts in the generated pods refer to a fixed list; those not
/// in the pod's volumes make the input itself invalid.
fn input_is_valid(pod: &Value) -> bool {
    apiserver_problems(pod).is_empty()
}

/// Whether the annotations contradict each other (request above limit,
/// both annotated): the one case the injector refuses.
fn overrides_conflict(pod: &Value) -> bool {
    let a = &pod["metadata"]["annotations"];
    [("cpu", 0, 2), ("memory", 1, 3)]
        .iter()
        .any(
            |(_, req, lim)| match (nanos(&a[OVERRIDES[*req]]), nanos(&a[OVERRIDES[*lim]])) {
                (Some(q), Some(l)) => q > l,
                _ => false,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        max_global_rejects: 10_000,
        ..ProptestConfig::default()
    })]

    #[test]
    fn every_patched_pod_is_one_the_apiserver_accepts(
        pod in pod(),
        settings in settings(),
        prevent in any::<bool>(),
        looked_up in any::<bool>(),
    ) {
        prop_assume!(input_is_valid(&pod));
        let injector = Injector::new(&settings);
        let shape = PodShape::from_value(&pod).unwrap();
        let launch = LaunchPolicy::default();
        let needs = LaunchShape::from_value(&pod).unwrap();
        // Every image's command known (as the registry would give it), or
        // nothing looked up.
        let images: ImageCommands = if looked_up {
            needs.images_without_command(|_, _| false).into_iter().enumerate().map(|(i, image)| {
                let entrypoint = if i % 2 == 0 { vec!["/opt/app/bin/run".to_string()] } else { vec![] };
                (image, ImageCommand::Known { entrypoint, cmd: vec!["/usr/bin/serve".into(), "--port".into()], digest: format!("sha256:{i:064x}") })
            }).collect()
        } else {
            ImageCommands::default()
        };
        let confine = prevent.then_some(Prevent { policy: &launch, shape: &needs, images: &images });
        let mutation = match injector.plan(&shape, confine) {
            Ok(mutation) => mutation,
            Err(MutateError::ConflictingOverrides { .. }) => {
                prop_assert!(overrides_conflict(&pod));
                return Ok(());
            }
            Err(e) => return Err(TestCaseError::fail(format!("{e}"))),
        };
        prop_assert!(!overrides_conflict(&pod) || skipped(&mutation.outcome),
            "contradicting overrides must be refused");
        let mut out = pod.clone();
        mutation.apply(&mut out).unwrap();

        let problems = apiserver_problems(&out);
        prop_assert!(problems.is_empty(), "{problems:?}\n{out:#}");

        // The enforcer, when injected, is there once, gets no API token,
        // and shares the process namespace unless the pod refused that.
        let enforcers: Vec<&Value> = containers(&out["spec"])
            .filter(|(_, c)| c["name"] == ENFORCER_CONTAINER)
            .map(|(_, c)| c)
            .collect();
        let status: Value = serde_json::from_str(
            out["metadata"]["annotations"][STATUS_ANNOTATION].as_str().unwrap_or("null"),
        ).unwrap();
        let windows = pod["spec"]["os"]["name"] == "windows"
            || pod["spec"]["nodeSelector"]["kubernetes.io/os"] == "windows";
        prop_assert!(!windows || skipped(&mutation.outcome), "a Linux enforcer in a Windows pod");
        if skipped(&mutation.outcome) {
            prop_assert!(enforcers.is_empty());
            prop_assert!(status["skipped"].is_string(), "{status}");
        } else {
            prop_assert_eq!(enforcers.len(), 1);
            let mounts = enforcers[0]["volumeMounts"].as_array().unwrap();
            prop_assert!(mounts.iter().any(|m| m["mountPath"] == API_TOKEN_DIR));
            // Mounts never reach a volume the pod brought along.
            for m in mounts {
                prop_assert!(!pod["spec"]["volumes"].as_array().into_iter().flatten()
                    .any(|v| v["name"] == m["name"]), "{m}");
            }
            let refused = pod["spec"]["shareProcessNamespace"] == false;
            prop_assert_eq!(out["spec"]["shareProcessNamespace"] == true, !refused);
            prop_assert_eq!(status["degraded"].is_array(), refused);
        }

        // The shipped resource-limits policy finds a limit for every
        // container, unless the pod set a pod-level request but no limit
        // (its own choice, not the injector's).
        for (_, c) in containers(&out["spec"]) {
            for r in RESOURCES {
                let pod_level = &out["spec"]["resources"];
                let covered = !c["resources"]["limits"][r].is_null()
                    || !pod_level["limits"][r].is_null()
                    || !pod_level["requests"][r].is_null();
                prop_assert!(covered, "{} has no {r} limit", c["name"]);
            }
        }

        // Prevention: every app container with a command starts under the
        // launcher, installed by the first init container.
        if prevent && !skipped(&mutation.outcome) {
            prop_assert_eq!(&out["spec"]["initContainers"][0]["name"], INSTALL_CONTAINER);
            for c in out["spec"]["containers"].as_array().unwrap() {
                if c["name"] == ENFORCER_CONTAINER || c["command"].is_null() {
                    continue;
                }
                prop_assert_eq!(&c["command"][0], LAUNCHER_PATH);
                prop_assert!(c["volumeMounts"].as_array().unwrap().iter()
                    .any(|m| m["mountPath"] == LAUNCHER_DIR && m["readOnly"] == true), "{c}");
            }
        }

        // Idempotent: a second pass plans nothing.
        let needs = LaunchShape::from_value(&out).unwrap();
        let confine = prevent.then_some(Prevent { policy: &launch, shape: &needs, images: &images });
        let again = injector.plan(&PodShape::from_value(&out).unwrap(), confine).unwrap();
        prop_assert!(again.ops.is_empty(), "{:?}", again.ops);
    }
}

fn skipped(outcome: &super::mutate::Outcome) -> bool {
    matches!(outcome, super::mutate::Outcome::Skipped { .. })
}

#[test]
fn the_checker_catches_what_the_apiserver_refuses() {
    let bad = json!({"spec": {
        "hostPID": true, "shareProcessNamespace": true,
        "os": {"name": "windows"},
        "resources": {"limits": {"cpu": "1"}},
        "volumes": [{"name": "a"}, {"name": "a"}],
        "containers": [
            {"name": "x", "resources": {"requests": {"memory": "2Gi"}, "limits": {"memory": "1Gi", "cpu": "2"}},
             "securityContext": {"runAsUser": 1},
             "volumeMounts": [{"name": "b", "mountPath": "/m"}, {"name": "a", "mountPath": "/m"}]},
            {"name": "x", "restartPolicy": "Always"}
        ]
    }});
    let problems = apiserver_problems(&bad).join("\n");
    for expected in [
        "container name \"x\" used twice",
        "volume names not unique",
        "mount of unknown volume \"b\"",
        "mountPath \"/m\" twice",
        "memory request \"2Gi\" above limit \"1Gi\"",
        "restartPolicy",
        "runAsUser forbidden on windows",
        "hostPID and shareProcessNamespace together",
        "shareProcessNamespace forbidden on windows",
        "cpu: \"x\" limit above the pod's",
        "cpu: containers request 2000000000n > pod 1000000000n",
    ] {
        assert!(problems.contains(expected), "{expected} in\n{problems}");
    }
}

/// Pods from the generator, kept in the repository so the e2e suite sends
/// the same shapes through a real apiserver. Regenerate with
/// `PALISADE_WRITE_GENERATED_PODS=1 cargo test -p palisade-engine --lib generated_pods`.
const GENERATED_PODS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../tests/fixtures/admission/generated-pods.json"
);

/// `count` valid pods without contradicting override annotations, from a
/// fixed seed.
fn generate_pods(count: usize) -> Vec<Value> {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::{RngAlgorithm, TestRng, TestRunner};
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]);
    let mut runner = TestRunner::new_with_rng(ProptestConfig::default(), rng);
    let strategy = pod();
    let mut pods = Vec::new();
    while pods.len() < count {
        let mut pod = strategy.new_tree(&mut runner).unwrap().current();
        if input_is_valid(&pod) && !overrides_conflict(&pod) {
            if pods.len() % 2 == 1 {
                // The e2e suite's prevention policy selects these.
                pod["metadata"]["labels"]["palisade.dev/e2e-prevent"] = json!("true");
            }
            pod["metadata"]["name"] = json!(format!("generated-{}", pods.len()));
            pod["apiVersion"] = json!("v1");
            pod["kind"] = json!("Pod");
            pods.push(pod);
        }
    }
    pods
}

#[test]
fn generated_pods_for_the_e2e_suite_are_valid_and_patch_into_valid_pods() {
    if std::env::var_os("PALISADE_WRITE_GENERATED_PODS").is_some() {
        let list = json!({"apiVersion": "v1", "kind": "List", "items": generate_pods(80)});
        let text = serde_json::to_string_pretty(&list).unwrap() + "\n";
        std::fs::write(GENERATED_PODS, text).unwrap();
    }
    let list: Value =
        serde_json::from_str(&std::fs::read_to_string(GENERATED_PODS).unwrap()).unwrap();
    let items = list["items"].as_array().unwrap();
    assert!(items.len() >= 80);
    let injector = Injector::new(&InjectionSettings::default());
    for pod in items {
        let mut pod = pod.clone();
        pod.as_object_mut().unwrap().remove("apiVersion");
        pod.as_object_mut().unwrap().remove("kind");
        assert!(input_is_valid(&pod), "{pod:#}");
        let mutation = injector
            .plan(&PodShape::from_value(&pod).unwrap(), None)
            .unwrap();
        mutation.apply(&mut pod).unwrap();
        let problems = apiserver_problems(&pod);
        assert!(problems.is_empty(), "{problems:?}\n{pod:#}");
    }
}
