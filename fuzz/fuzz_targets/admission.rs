//! Any bytes as an AdmissionReview: decoding never panics, and for every
//! decodable Pod the mutation patch applies to the object and a second
//! pass over the result patches nothing (idempotence); validation of the
//! same review never panics.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use palisade_webhook::admission::{self, mutate};
use palisade_webhook::config::Settings;
use palisade_webhook::policy::PolicySet;

fn policies() -> &'static PolicySet {
    static SET: OnceLock<PolicySet> = OnceLock::new();
    SET.get_or_init(|| {
        PolicySet::load_dir(std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../policies")))
            .expect("repository policies load")
    })
}

fuzz_target!(|data: &[u8]| {
    let settings = Settings::default();
    let Ok(req) = admission::decode(data) else { return };
    let _ = admission::encode(admission::validate(&req, &settings, policies()).0);
    let _ = admission::encode(admission::mutate(&req, &settings).0);
    let Some(Ok(object)) = req.object.as_ref().map(serde_json::to_value) else { return };
    if let Ok((patch, _)) = mutate::patch_for(&object, &settings.injection) {
        let mut patched = object.clone();
        json_patch::patch(&mut patched, &patch).expect("the mutation patch applies to its object");
        let (again, _) = mutate::patch_for(&patched, &settings.injection).expect("a mutated pod mutates again");
        assert!(again.0.is_empty(), "second pass must not patch: {again:?}");
    }
});
