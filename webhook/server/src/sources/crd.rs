//! RuntimePolicy and PolicyException custom resources
//! (`runtimepolicies.palisade.dev`, `policyexceptions.palisade.dev`),
//! watched with kube-rs and merged into the active policy set. A resource
//! that is not a valid document is reported and left out; the others stay
//! active.

use std::sync::Arc;

use futures_util::StreamExt;
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::reflector::{self, reflector};
use kube::runtime::{watcher, WatchStreamExt};
use palisade_common::exception::{ExceptionSpec, PolicyException, EXCEPTION_KIND};
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

pub fn exception_resource() -> ApiResource {
    ApiResource {
        group: "palisade.dev".into(),
        version: "v1alpha1".into(),
        api_version: API_VERSION.into(),
        kind: EXCEPTION_KIND.into(),
        plural: "policyexceptions".into(),
    }
}

/// Why a resource defines no policy or exception.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("{kind} {name:?}: spec: {source}")]
    Spec {
        kind: &'static str,
        name: String,
        source: serde_json::Error,
    },
    #[error(transparent)]
    Invalid(#[from] palisade_common::policy::InvalidPolicy),
    #[error(transparent)]
    InvalidException(#[from] palisade_common::exception::InvalidException),
}

fn metadata(object: &DynamicObject) -> PolicyMetadata {
    PolicyMetadata {
        name: object.metadata.name.clone().unwrap_or_default(),
        labels: object.metadata.labels.clone().unwrap_or_default(),
        annotations: Default::default(),
    }
}

fn spec<T: serde::de::DeserializeOwned>(
    object: &DynamicObject,
    kind: &'static str,
) -> Result<T, CrdError> {
    serde_json::from_value(object.data.get("spec").cloned().unwrap_or_default()).map_err(|source| {
        CrdError::Spec {
            kind,
            name: object.metadata.name.clone().unwrap_or_default(),
            source,
        }
    })
}

/// The policy a resource defines, or why it does not define one.
pub fn to_policy(object: &DynamicObject) -> Result<PolicyDocument, CrdError> {
    let doc = PolicyDocument {
        api_version: API_VERSION.into(),
        kind: KIND.into(),
        metadata: metadata(object),
        spec: spec::<PolicySpec>(object, KIND)?,
    };
    doc.validate()?;
    Ok(doc)
}

/// The exception a resource defines, or why it does not define one.
pub fn to_exception(object: &DynamicObject) -> Result<PolicyException, CrdError> {
    let exception = PolicyException {
        api_version: API_VERSION.into(),
        kind: EXCEPTION_KIND.into(),
        metadata: metadata(object),
        spec: spec::<ExceptionSpec>(object, EXCEPTION_KIND)?,
    };
    exception.validate()?;
    Ok(exception)
}

/// Mirrors every RuntimePolicy and PolicyException into `policies` until
/// the streams end.
pub async fn watch(client: kube::Client, policies: Arc<PolicyStore>, metrics: Arc<Metrics>) {
    let exceptions = {
        let (policies, metrics) = (policies.clone(), metrics.clone());
        mirror(client.clone(), exception_resource(), move |objects| {
            sync_exceptions(objects, &policies, &metrics)
        })
    };
    let runtime_policies = mirror(client, resource(), move |objects| {
        sync_policies(objects, &policies, &metrics)
    });
    tokio::join!(runtime_policies, exceptions);
}

/// Calls `sync` with every object of `resource` once a listing is complete
/// and on every change after it (deletions included).
async fn mirror(client: kube::Client, resource: ApiResource, sync: impl Fn(&[Arc<DynamicObject>])) {
    let api: Api<DynamicObject> = Api::all_with(client, &resource);
    let writer = reflector::store::Writer::new(resource.clone());
    let store = writer.as_reader();
    let stream = reflector(
        writer,
        watcher(api, watcher::Config::default()).default_backoff(),
    );
    let mut stream = std::pin::pin!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(watcher::Event::InitDone | watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                sync(&store.state())
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(kind = %resource.kind, error = %e, "watch interrupted; retrying")
            }
        }
    }
}

fn sync_policies(objects: &[Arc<DynamicObject>], policies: &PolicyStore, metrics: &Metrics) {
    let mut docs = valid(objects, to_policy, metrics);
    docs.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    record_reload(
        policies,
        metrics,
        policies.set_crds(docs),
        "RuntimePolicy resources",
    );
}

fn sync_exceptions(objects: &[Arc<DynamicObject>], policies: &PolicyStore, metrics: &Metrics) {
    let mut exceptions = valid(objects, to_exception, metrics);
    exceptions.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    record_reload(
        policies,
        metrics,
        policies.set_exception_crds(exceptions),
        "PolicyException resources",
    );
}

/// The documents the objects define; the others are logged and counted.
fn valid<T>(
    objects: &[Arc<DynamicObject>],
    convert: impl Fn(&DynamicObject) -> Result<T, CrdError>,
    metrics: &Metrics,
) -> Vec<T> {
    objects
        .iter()
        .filter_map(|object| match convert(object) {
            Ok(doc) => Some(doc),
            Err(e) => {
                metrics.policy_reload_failures.inc();
                tracing::error!(error = %e, "custom resource ignored");
                None
            }
        })
        .collect()
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

    #[test]
    fn exception_resources_become_exceptions_or_precise_errors() {
        let mut o = DynamicObject::new("legacy-root", &exception_resource());
        o.data = serde_json::json!({"spec": {
            "policy": "restricted", "rules": ["podSecurity/runAsNonRoot"],
            "selector": {"namespaces": ["billing"]},
            "expiresAt": "2027-03-31T00:00:00Z", "reason": "vendor image", "owner": "billing"
        }});
        let exception = to_exception(&o).unwrap();
        assert_eq!(exception.metadata.name, "legacy-root");
        assert_eq!(exception.spec.policy, "restricted");
        o.data["spec"]["expiresAt"] = serde_json::json!("soon");
        let err = to_exception(&o).unwrap_err().to_string();
        assert!(
            err.contains("legacy-root") && err.contains("expiresAt"),
            "{err}"
        );
    }
}
