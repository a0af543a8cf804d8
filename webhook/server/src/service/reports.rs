//! In-cluster summaries: the newest violations of each namespace written as
//! a PolicyReport (wgpolicyk8s.io/v1alpha2), the format policy dashboards
//! and `kubectl get policyreport` read.

use std::collections::BTreeMap;
use std::time::Duration;

use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use palisade_common::policy::Mode;
use palisade_common::wire::StoredEvent;
use serde_json::json;

use crate::db::{EventQuery, Store};

pub const REPORT_NAME: &str = "palisade-runtime";
/// Violations kept per namespace report (the newest).
const RESULTS_PER_REPORT: i64 = 200;

pub fn resource() -> ApiResource {
    ApiResource {
        group: "wgpolicyk8s.io".into(),
        version: "v1alpha2".into(),
        api_version: "wgpolicyk8s.io/v1alpha2".into(),
        kind: "PolicyReport".into(),
        plural: "policyreports".into(),
    }
}

/// The PolicyReport for one namespace's events (newest first).
pub fn report_for(namespace: &str, events: &[StoredEvent]) -> serde_json::Value {
    let mut fail = 0;
    let mut warn = 0;
    let mut skip = 0;
    let results: Vec<serde_json::Value> = events
        .iter()
        .filter(|e| e.event.kind != palisade_common::wire::EventKind::Enforcer)
        .map(|e| {
            // A finding an active PolicyException covers was not acted on.
            let result = match (&e.event.exception, e.event.mode) {
                (Some(_), _) => "skip",
                (None, Mode::Enforce) => "fail",
                (None, Mode::Audit | Mode::Learn) => "warn",
            };
            match result {
                "skip" => skip += 1,
                "fail" => fail += 1,
                _ => warn += 1,
            }
            json!({
                "source": "palisade",
                "policy": e.event.policy.clone().unwrap_or_else(|| "palisade".into()),
                "rule": e.event.rule,
                "category": e.event.kind.as_str(),
                "result": result,
                "message": match &e.event.action {
                    Some(action) => format!("{} ({action})", e.event.message),
                    None => e.event.message.clone(),
                },
                "timestamp": {"seconds": e.event.time_ms / 1000, "nanos": 0},
                "resources": [{"apiVersion": "v1", "kind": "Pod", "name": e.pod.name, "namespace": namespace, "uid": e.pod.uid}],
            })
        })
        .collect();
    json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {"name": REPORT_NAME, "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "palisade",
                crate::audit::report::REPORT_LABEL: "runtime"}},
        "scope": {"kind": "Namespace", "name": namespace},
        "summary": {"pass": 0, "fail": fail, "warn": warn, "error": 0, "skip": skip},
        "results": results,
    })
}

/// Every `every`, rewrites the report of each namespace that has events
/// newer than the last pass.
pub async fn publish_loop(client: kube::Client, store: Store, every: Duration) {
    let mut since = 0i64;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let recent = match store
            .query_events(&EventQuery {
                since_ms: Some(since),
                limit: 10_000,
                ..Default::default()
            })
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read events for PolicyReports");
                continue;
            }
        };
        let namespaces: BTreeMap<String, i64> = recent
            .iter()
            .map(|e| (e.pod.namespace.clone(), e.event.time_ms))
            .fold(BTreeMap::new(), |mut acc, (ns, t)| {
                let newest = acc.entry(ns).or_insert(t);
                *newest = (*newest).max(t);
                acc
            });
        for (namespace, newest) in namespaces {
            match publish(&client, &store, &namespace).await {
                Ok(()) => since = since.max(newest + 1),
                Err(e) => tracing::warn!(namespace, error = %e, "cannot write PolicyReport"),
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum PublishError {
    #[error("reading events: {0}")]
    Store(#[from] crate::db::StoreError),
    #[error("applying the PolicyReport: {0}")]
    Api(#[from] kube::Error),
}

async fn publish(
    client: &kube::Client,
    store: &Store,
    namespace: &str,
) -> Result<(), PublishError> {
    let events = store
        .query_events(&EventQuery {
            namespace: Some(namespace.to_string()),
            limit: RESULTS_PER_REPORT,
            ..Default::default()
        })
        .await?;
    let report = report_for(namespace, &events);
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, &resource());
    let params = PatchParams::apply("palisade").force();
    api.patch(REPORT_NAME, &params, &Patch::Apply(&report))
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_common::wire::{Event, EventKind, PodRef};

    #[test]
    fn summarises_enforce_as_fail_and_audit_as_warn() {
        let event = |id: &str, mode: Mode, kind: EventKind| StoredEvent {
            pod: PodRef {
                namespace: "shop".into(),
                name: "cart-0".into(),
                uid: "u".into(),
            },
            received_ms: 0,
            event: Event {
                id: id.into(),
                time_ms: 5_000,
                kind,
                rule: "behavior/denied-process".into(),
                policy: Some("no-shells".into()),
                mode,
                message: "sh started".into(),
                process: None,
                action: Some("killed".into()),
                exception: None,
                coverage: None,
            },
        };
        let report = report_for(
            "shop",
            &[
                event("1", Mode::Enforce, EventKind::Behavior),
                event("2", Mode::Audit, EventKind::Drift),
                event("3", Mode::Audit, EventKind::Enforcer),
            ],
        );
        assert_eq!(report["summary"]["fail"], 1);
        assert_eq!(report["summary"]["warn"], 1);
        assert_eq!(
            report["results"].as_array().unwrap().len(),
            2,
            "enforcer events are not violations"
        );
        assert_eq!(report["results"][0]["message"], "sh started (killed)");
        assert_eq!(report["results"][0]["resources"][0]["name"], "cart-0");
        // Covered by an active PolicyException: neither fail nor warn.
        let mut excepted = event("4", Mode::Enforce, EventKind::Behavior);
        excepted.event.exception = Some("migration".into());
        excepted.event.action = None;
        let report = report_for("shop", &[excepted]);
        assert_eq!(report["summary"]["skip"], 1);
        assert_eq!(report["summary"]["fail"], 0);
        assert_eq!(report["results"][0]["result"], "skip");
    }
}
