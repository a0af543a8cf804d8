//! Any bytes as an AdmissionReview: decoding never panics, and for every
//! decodable Pod the mutation patch applies to the object, the plan made
//! from the JSON text equals the plan made from the parsed value, and a
//! second pass over the result patches nothing (idempotence); validation of
//! the same review never panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use palisade_common::launch::LaunchPolicy;
use palisade_common::policy::Document;
use palisade_engine::admission::mutate::{ImageCommand, ImageCommands, LaunchShape, PodShape, Prevent};
use palisade_engine::admission::{self, Outcome, Webhook};
use palisade_engine::settings::Settings;
use palisade_engine::policy::PolicySet;
use serde_json::Value;

fn policies() -> &'static PolicySet {
    static SET: OnceLock<PolicySet> = OnceLock::new();
    SET.get_or_init(|| {
        PolicySet::load_dir(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies")))
            .expect("repository policies load")
    })
}

/// A policy confining every pod, so that `/mutate` reads what prevention
/// needs of every review.
fn preventing() -> &'static PolicySet {
    static SET: OnceLock<PolicySet> = OnceLock::new();
    SET.get_or_init(|| {
        let doc = Document::from_yaml(
            "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {name: confine-all}\n\
             spec: {mode: enforce, runtime: {prevent: true}}\n",
        )
        .expect("the prevention policy parses");
        PolicySet::from_documents([("fuzz".to_string(), doc)]).expect("the prevention policy compiles")
    })
}

fn webhook() -> &'static Webhook {
    static WEBHOOK: OnceLock<Webhook> = OnceLock::new();
    WEBHOOK.get_or_init(|| Webhook::new(&Settings::default()))
}

fuzz_target!(|data: &[u8]| {
    let webhook = webhook();
    let Ok(req) = admission::decode(data) else { return };
    let _ = admission::encode(&webhook.validate(&req, policies()).0);
    let _ = admission::encode(&webhook.mutate(&req, policies()).0);
    let Some(text) = req.object.as_ref().map(|o| o.get()) else { return };
    let Ok(mut object) = serde_json::from_str::<Value>(text) else { return };
    let Ok(mutation) = webhook.injector().plan_json(text) else { return };
    let patch = mutation.patch_json();
    let from_value = PodShape::from_value(&object).and_then(|pod| webhook.injector().plan(&pod, None));
    let from_value = from_value.expect("a pod planned from its text plans from its value");
    assert_eq!(from_value.patch_json(), patch, "text and value plans differ");
    let patch: json_patch::Patch = serde_json::from_slice(&patch).expect("the plan is a JSON patch");
    let mut prevented = object.clone();
    json_patch::patch(&mut object, &patch).expect("the mutation patch applies to its object");
    let again = PodShape::from_value(&object)
        .and_then(|pod| webhook.injector().plan(&pod, None))
        .expect("a mutated pod mutates again");
    assert!(again.ops.is_empty(), "second pass must not patch: {:?}", again.ops);
    // With prevention on, and every image's own command known (as a
    // registry lookup gives it, `$` included): applies, and a second pass
    // changes nothing.
    let launch = LaunchPolicy::default();
    // Prevention reads more of the pod than injection does (command, args,
    // env, mounts, pull secrets): where a policy confines a pod with one of
    // those malformed, it is refused with a 400, never planned or patched.
    let Ok(needs) = LaunchShape::from_value(&prevented) else {
        let (response, outcome) = webhook.mutate(&req, preventing());
        match outcome {
            Outcome::Invalid => assert_eq!(response.status.code, 400, "{:?}", response.status),
            Outcome::Allowed | Outcome::Skipped => assert!(response.patch.is_none()),
            other => panic!("a pod prevention cannot read was answered {other:?}"),
        }
        return;
    };
    let images: ImageCommands = needs
        .images_without_command(|_, _| false)
        .into_iter()
        .map(|image| {
            let command = ImageCommand::Known {
                entrypoint: vec!["/opt/app/bin/run".into()],
                cmd: vec!["--name=$(HOSTNAME)".into(), image.clone()],
                digest: format!("sha256:{}", "ab".repeat(32)),
            };
            (image, command)
        })
        .collect();
    let plan = |pod: &Value| {
        let needs = LaunchShape::from_value(pod)?;
        let prevent = Prevent { policy: &launch, shape: &needs, images: &images };
        PodShape::from_value(pod).and_then(|shape| webhook.injector().plan(&shape, Some(prevent)))
    };
    let first = plan(&prevented).expect("a pod that plans without prevention plans with it");
    first.apply(&mut prevented).expect("the prevention patch applies");
    let again = plan(&prevented).expect("a confined pod plans again");
    assert!(again.ops.is_empty(), "second pass must not patch: {:?}", again.ops);
});
