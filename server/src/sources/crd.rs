//! RuntimePolicy custom resources (`runtimepolicies.palisade.dev`), watched
//! with kube-rs and merged into the active policy set. A resource that is
//! not a valid policy is reported and left out; the others stay active.

use std::sync::Arc;

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, reflector};
use kube::runtime::{watcher, WatchStreamExt};
use palisade_common::policy::{PolicyDocument, PolicyMetadata, PolicySpec, API_VERSION, KIND};

use super::{record_reload, PolicyStore};
use crate::metrics::Metrics;

pub fn resource() -> ApiResource {
    ApiResource {
        group: "palisade.dev".into(),
        version: "v1alpha1".into(),
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        plural: "runtimepolicies".into(),
    }
}

/// Why a RuntimePolicy resource defines no policy.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("RuntimePolicy {name:?}: spec: {source}")]
    Spec {
        name: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Invalid(#[from] palisade_common::policy::InvalidPolicy),
}

/// The policy a resource defines, or why it does not define one.
pub fn to_policy(object: &DynamicObject) -> Result<PolicyDocument, CrdError> {
    let name = object.metadata.name.clone().unwrap_or_default();
    let spec: PolicySpec = serde_json::from_value(
        object.data.get("spec").cloned().unwrap_or_default(),
    )
    .map_err(|source| CrdError::Spec {
        name: name.clone(),
        source,
    })?;
    let doc = PolicyDocument {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        metadata: PolicyMetadata {
            name,
            labels: object.metadata.labels.clone().unwrap_or_default(),
            annotations: Default::default(),
        },
        spec,
    };
    doc.validate()?;
    Ok(doc)
}

/// Mirrors every RuntimePolicy into `policies` until the stream ends.
pub async fn watch(client: kube::Client, policies: Arc<PolicyStore>, metrics: Arc<Metrics>) {
    let api: Api<DynamicObject> = Api::all_with(client, &resource());
    let writer = reflector::store::Writer::new(resource());
    let store = writer.as_reader();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            // Re-read the whole store once a listing is complete and on
            // every change after it (deletions included).
            Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                sync(&store.state(), &policies, &metrics)
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "RuntimePolicy watch interrupted; retrying"),
        }
    }
}

fn sync(objects: &[Arc<DynamicObject>], policies: &PolicyStore, metrics: &Metrics) {
    let mut docs = Vec::new();
    for object in objects {
        match to_policy(object) {
            Ok(doc) => docs.push(doc),
            Err(e) => {
                metrics.policy_reload_failures.inc();
                tracing::error!(error = %e, "RuntimePolicy resource ignored");
            }
        }
    }
    docs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    record_reload(
        policies,
        metrics,
        policies.set_crds(docs),
        "RuntimePolicy resources",
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(spec: serde_json::Value) -> DynamicObject {
        let mut o = DynamicObject::new("no-latest", &resource());
        o.data = serde_json::json!({"spec": spec});
        o
    }

    #[test]
    fn resources_become_policies_or_precise_errors() {
        let doc = to_policy(&object(serde_json::json!({
            "mode": "enforce", "admission": {"disallowedTags": ["latest"]}
        })))
        .unwrap();
        assert_eq!(doc.metadata.name, "no-latest");
        assert_eq!(doc.spec.admission.disallowed_tags, ["latest"]);
        let err = to_policy(&object(serde_json::json!({"mode": "sometimes"})))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("no-latest") && err.contains("sometimes"),
            "{err}"
        );
    }
}
