//! Micro-benchmarks: one AdmissionReview decoded, decided and encoded, for
//! a typical Pod and a large one (40 containers), on /mutate and /validate,
//! beside the floor (a kube-rs parse and re-serialise, no decision).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use palisade_engine::admission::{self, Webhook};
use palisade_engine::policy::PolicySet;
use palisade_engine::settings::Settings;
use serde_json::{json, Value};

fn fixture() -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../tests/fixtures/admission/pod-create.json"
    );
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// The typical pod with `n` containers.
fn large(n: usize) -> Vec<u8> {
    let mut review = fixture();
    let template = review["request"]["object"]["spec"]["containers"][0].clone();
    let containers: Vec<Value> = (0..n)
        .map(|i| {
            let mut c = template.clone();
            c["name"] = json!(format!("c{i}"));
            c["env"] = json!((0..10)
                .map(|j| json!({"name": format!("V{j}"), "value": "x"}))
                .collect::<Vec<_>>());
            c
        })
        .collect();
    review["request"]["object"]["spec"]["containers"] = json!(containers);
    serde_json::to_vec(&review).unwrap()
}

fn bench(c: &mut Criterion) {
    let webhook = Webhook::new(&Settings::default());
    let policies = PolicySet::load_dir(std::path::Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../policies"
    )))
    .unwrap();
    let typical = serde_json::to_vec(&fixture()).unwrap();
    let big = large(40);
    for (name, body) in [("typical", &typical), ("large", &big)] {
        c.bench_function(&format!("mutate/{name}"), |b| {
            b.iter(|| {
                let req = admission::decode(black_box(body)).unwrap();
                admission::encode(&webhook.mutate(&req, &policies).0)
            })
        });
        c.bench_function(&format!("validate/{name}"), |b| {
            b.iter(|| {
                let req = admission::decode(black_box(body)).unwrap();
                admission::encode(&webhook.validate(&req, &policies).0)
            })
        });
        c.bench_function(&format!("floor/{name}"), |b| {
            b.iter(|| palisade_bench::floor_review(black_box(body)))
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
