//! `palisade check --cluster`: the pod-bearing objects running now, read
//! from the apiserver as one `List`, for the same offline check manifests
//! get. With every policy switched to enforce it answers "what would be
//! denied if we enforced today".

use anyhow::Context;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use kube::Resource;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

/// Workloads in `namespace` (every namespace when `None`), and the pods no
/// controller owns; pods of workloads are judged through their templates,
/// Jobs of CronJobs through the CronJob.
pub async fn workloads(namespace: Option<&str>) -> anyhow::Result<Value> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let mut items = Vec::new();
    items.extend(list::<Deployment>(&client, namespace, |_| true).await?);
    items.extend(list::<StatefulSet>(&client, namespace, |_| true).await?);
    items.extend(list::<DaemonSet>(&client, namespace, |_| true).await?);
    items.extend(list::<CronJob>(&client, namespace, |_| true).await?);
    items.extend(list::<Job>(&client, namespace, |job| !owned(job.meta())).await?);
    items.extend(list::<Pod>(&client, namespace, |pod| !owned(pod.meta())).await?);
    Ok(serde_json::json!({"apiVersion": "v1", "kind": "List", "items": items}))
}

/// Whether a controller owns the object.
fn owned(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> bool {
    meta.owner_references
        .as_ref()
        .is_some_and(|refs| refs.iter().any(|r| r.controller == Some(true)))
}

async fn list<K>(
    client: &kube::Client,
    namespace: Option<&str>,
    keep: impl Fn(&K) -> bool,
) -> anyhow::Result<Vec<Value>>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + std::fmt::Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let kind = K::kind(&K::DynamicType::default()).to_string();
    let listed = api
        .list(&ListParams::default())
        .await
        .with_context(|| format!("listing {kind}s"))?;
    let api_version = K::api_version(&K::DynamicType::default()).to_string();
    listed
        .items
        .into_iter()
        .filter(|object| keep(object))
        .map(|object| {
            let mut value = serde_json::to_value(&object)?;
            // List items come without their type; the check needs it.
            value["apiVersion"] = Value::String(api_version.clone());
            value["kind"] = Value::String(kind.clone());
            Ok(value)
        })
        .collect()
}
