//! The pod-bearing objects of the audited namespaces, from one kube-rs
//! watcher per kind merged into one stream. Pods, Jobs and ReplicaSets a
//! controller owns are left out: their controller's template is judged
//! (as `palisade check --cluster` does).

use std::collections::BTreeMap;

use futures_util::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::{Namespace, Pod, ReplicationController};
use kube::api::{Api, ApiResource, DynamicObject};
use kube::runtime::{watcher, WatchStreamExt};
use palisade_engine::admission::template::{self, TemplateLocation};
use serde_json::{json, Value};

use super::inventory::{Workload, NAMESPACE_KIND};
use super::report::ResourceRef;

/// What a watch saw.
#[derive(Debug)]
pub enum Change {
    /// A kind is listed from scratch (start, or after a watch gap).
    Relisting(&'static str),
    Seen(Workload),
    /// The listing of a kind is complete.
    Listed(&'static str),
    Gone {
        namespace: String,
        kind: &'static str,
        name: String,
    },
    /// A namespace and its labels (the audit's scope follows them).
    Namespace {
        name: String,
        labels: BTreeMap<String, String>,
    },
    NamespaceGone(String),
}

struct Kind {
    name: &'static str,
    resource: ApiResource,
    /// Left out when a controller owns it.
    skip_owned: bool,
}

fn kind<K: k8s_openapi::Resource + kube::Resource<DynamicType = ()>>(skip_owned: bool) -> Kind {
    Kind {
        name: <K as k8s_openapi::Resource>::KIND,
        resource: ApiResource::erase::<K>(&()),
        skip_owned,
    }
}

fn kinds() -> Vec<Kind> {
    vec![
        kind::<Deployment>(false),
        kind::<StatefulSet>(false),
        kind::<DaemonSet>(false),
        kind::<CronJob>(false),
        kind::<ReplicaSet>(true),
        kind::<ReplicationController>(true),
        kind::<Job>(true),
        kind::<Pod>(true),
    ]
}

/// How many kinds [`changes`] watches (namespaces included): reports
/// wait until each has listed.
pub fn kind_count() -> usize {
    kinds().len() + 1
}

/// Every change to an audited object outside `excluded` namespaces.
pub fn changes(client: kube::Client, excluded: &[String]) -> BoxStream<'static, Change> {
    // The apiserver filters the excluded namespaces out for every kind.
    let fields = excluded
        .iter()
        .map(|ns| format!("metadata.namespace!={ns}"))
        .collect::<Vec<_>>()
        .join(",");
    let streams = kinds().into_iter().map(|kind| {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &kind.resource);
        let config = watcher::Config::default().fields(&fields);
        let name = kind.name;
        watcher(api, config)
            .default_backoff()
            .filter_map(move |event| {
                let change = match event {
                    Ok(watcher::Event::Init) => Some(Change::Relisting(name)),
                    Ok(watcher::Event::InitDone) => Some(Change::Listed(name)),
                    Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => {
                        seen(&kind, o)
                    }
                    Ok(watcher::Event::Delete(o)) => Some(Change::Gone {
                        namespace: o.metadata.namespace.unwrap_or_default(),
                        kind: name,
                        name: o.metadata.name.unwrap_or_default(),
                    }),
                    Err(e) => {
                        tracing::warn!(kind = name, error = %e, "audit watch interrupted; retrying");
                        None
                    }
                };
                std::future::ready(change)
            })
            .boxed()
    });
    let namespaces = watcher(Api::<Namespace>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .filter_map(|event| {
            let change = match event {
                Ok(watcher::Event::Init) => Some(Change::Relisting(NAMESPACE_KIND)),
                Ok(watcher::Event::InitDone) => Some(Change::Listed(NAMESPACE_KIND)),
                Ok(watcher::Event::Apply(ns) | watcher::Event::InitApply(ns)) => {
                    Some(Change::Namespace {
                        name: ns.metadata.name.unwrap_or_default(),
                        labels: ns.metadata.labels.unwrap_or_default(),
                    })
                }
                Ok(watcher::Event::Delete(ns)) => {
                    Some(Change::NamespaceGone(ns.metadata.name.unwrap_or_default()))
                }
                Err(e) => {
                    tracing::warn!(kind = NAMESPACE_KIND, error = %e, "audit watch interrupted; retrying");
                    None
                }
            };
            std::future::ready(change)
        })
        .boxed();
    stream::select_all(streams.chain(std::iter::once(namespaces))).boxed()
}

/// An owned object counts as gone: a controller may adopt a bare Pod or
/// Job, and its entry must then leave the report.
fn seen(kind: &Kind, object: DynamicObject) -> Option<Change> {
    let namespace = object.metadata.namespace.clone().unwrap_or_default();
    let name = object.metadata.name.clone().unwrap_or_default();
    let owned = object
        .metadata
        .owner_references
        .as_ref()
        .is_some_and(|refs| refs.iter().any(|r| r.controller == Some(true)));
    if kind.skip_owned && owned {
        return Some(Change::Gone {
            namespace,
            kind: kind.name,
            name,
        });
    }
    let location = template::locate(&kind.resource.group, &kind.resource.kind)?;
    let template = pod_template(&object, location)?;
    Some(Change::Seen(Workload {
        namespace,
        resource: ResourceRef {
            api_version: kind.resource.api_version.clone(),
            kind: kind.name.to_string(),
            name,
            uid: object.metadata.uid.clone().unwrap_or_default(),
        },
        template,
        location,
    }))
}

/// The pod template to judge: a workload's template, or for a Pod its
/// spec with the metadata policies read (labels, annotations).
fn pod_template(object: &DynamicObject, location: TemplateLocation) -> Option<Value> {
    if location.pointer.is_empty() {
        let meta = &object.metadata;
        return Some(json!({
            "metadata": {
                "name": meta.name,
                "labels": meta.labels,
                "annotations": meta.annotations,
            },
            "spec": object.data.get("spec")?,
        }));
    }
    object.data.pointer(location.pointer).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_watched_kind_has_a_template_location_and_a_name() {
        for kind in kinds() {
            assert!(
                template::locate(&kind.resource.group, &kind.resource.kind).is_some(),
                "{}",
                kind.resource.kind
            );
            assert_eq!(kind.name, kind.resource.kind);
        }
    }

    #[test]
    fn owned_pods_are_gone_and_bare_pods_keep_their_labels() {
        let pods = kinds()
            .into_iter()
            .find(|k| k.resource.kind == "Pod")
            .unwrap();
        let mut pod = DynamicObject::new("web", &pods.resource).within("shop");
        pod.metadata.labels = Some([("app".to_string(), "web".to_string())].into());
        pod.data = json!({"spec": {"containers": [{"name": "c", "image": "nginx"}]}, "status": {}});
        let Some(Change::Seen(workload)) = seen(&pods, pod.clone()) else {
            panic!("a bare pod is audited");
        };
        assert_eq!(workload.template["metadata"]["labels"]["app"], "web");
        assert_eq!(workload.template["spec"]["containers"][0]["image"], "nginx");
        assert!(workload.template.get("status").is_none());
        pod.metadata.owner_references = Some(vec![
            k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                controller: Some(true),
                kind: "ReplicaSet".into(),
                name: "web-1".into(),
                ..Default::default()
            },
        ]);
        assert!(matches!(seen(&pods, pod), Some(Change::Gone { .. })));
        let deployments = kinds().into_iter().next().unwrap();
        let mut deployment = DynamicObject::new("api", &deployments.resource).within("shop");
        deployment.data = json!({"spec": {"template": {"spec": {"containers": []}}}});
        let Some(Change::Seen(workload)) = seen(&deployments, deployment) else {
            panic!("a deployment is audited");
        };
        assert_eq!(workload.template, json!({"spec": {"containers": []}}));
        assert_eq!(workload.resource.api_version, "apps/v1");
    }
}
