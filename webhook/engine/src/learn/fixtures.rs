//! Recorded workloads the draft and replay tests share: a web server from
//! its image that listens on 8080 and connects out.

use palisade_common::observe::{
    Observed, ObservedRecord, Protocol, WorkloadObservations, WorkloadRecord, WorkloadRef,
};
use palisade_common::policy::Mode;

pub const T0: i64 = 1_796_630_462_000; // 2026-12-07T08:01:02Z
pub const SERVER: &str = "2222222222222222222222222222222222222222222222222222222222222222";
pub const SH: &str = "1111111111111111111111111111111111111111111111111111111111111111";

pub fn record(item: Observed, count: u64) -> ObservedRecord {
    ObservedRecord {
        container: "app".into(),
        item,
        image: "registry.example.com/web@sha256:abc".into(),
        count,
        first_ms: T0,
        last_ms: T0 + 3_600_000,
    }
}

pub fn exe(path: &str, sha256: &str, from_image: bool) -> Observed {
    Observed::Executable {
        path: path.into(),
        sha256: Some(sha256.into()),
        from_image,
    }
}

pub fn workload(labels: &[(&str, &str)], observed: Vec<ObservedRecord>) -> WorkloadObservations {
    WorkloadObservations {
        workload: WorkloadRecord {
            workload: WorkloadRef {
                namespace: "shop".into(),
                kind: "Deployment".into(),
                name: "web".into(),
            },
            pod_labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            mode: Some(Mode::Learn),
            first_ms: T0,
            last_new_ms: T0 + 60_000,
            last_seen_ms: T0 + 3_600_000,
            items: observed.len() as u64,
            overflow: 0,
        },
        observed,
    }
}

/// A web server from the image, which connects out and listens.
pub fn web() -> WorkloadObservations {
    workload(
        &[("app", "web"), ("pod-template-hash", "5d8f7c")],
        vec![
            record(exe("/app/bin/server", SERVER, true), 1),
            record(exe("/usr/bin/curl", SH, true), 12),
            record(
                Observed::Process {
                    name: "server".into(),
                    parent: "containerd-shim".into(),
                },
                1,
            ),
            record(
                Observed::Listen {
                    protocol: Protocol::Tcp,
                    port: 8080,
                },
                3,
            ),
            record(
                Observed::Egress {
                    address: "10.0.0.7".parse().unwrap(),
                    port: 5432,
                    protocol: Protocol::Tcp,
                },
                40,
            ),
            record(
                Observed::Egress {
                    address: "fd00::1".parse().unwrap(),
                    port: 443,
                    protocol: Protocol::Tcp,
                },
                2,
            ),
        ],
    )
}
