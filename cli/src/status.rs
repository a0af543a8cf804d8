//! `palisade status`: for each pod of a namespace (or all), whether it runs
//! the current enforcer, which of its containers are confined, why a pod
//! has no enforcer, and which workloads a restart would fix (`--restart`
//! rolls them, as `kubectl rollout restart` does). The verdicts come from
//! the engine's `rollout` module; this file only talks to the apiserver.

use std::collections::BTreeSet;

use anyhow::Context;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use palisade_common::INJECT_LABEL;
use palisade_engine::admission::enforcer::EnforcerIdentity;
use palisade_engine::rollout::{
    assess, label_set_at, Assessment, Expected, Injection, NamespaceFacts,
};
use palisade_engine::settings::Settings;
use serde::Serialize;

use crate::client::table;

/// The value of [`INJECT_LABEL`] that opts a namespace in.
const OPTED_IN: &str = "enabled";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

pub struct Scope {
    /// `None`: every namespace.
    pub namespace: Option<String>,
    pub selector: Option<String>,
    /// The injector's release pods should carry (default: this CLI's).
    pub injector_version: Option<String>,
}

/// A workload whose pods a restart replaces.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Workload {
    pub kind: &'static str,
    pub namespace: String,
    pub name: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PodReport {
    pub namespace: String,
    pub pod: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<Workload>,
    #[serde(flatten)]
    pub assessment: Assessment,
}

pub async fn run(
    scope: Scope,
    output: Output,
    restart: bool,
    settings: &Settings,
) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let reports = gather(&client, &scope, settings).await?;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
        Output::Table => print!("{}", render(&reports)),
    }
    if restart {
        let workloads: BTreeSet<&Workload> = reports
            .iter()
            .filter(|r| r.assessment.restart.is_some())
            .filter_map(|r| r.workload.as_ref())
            .collect();
        for workload in workloads {
            restart_workload(&client, workload)
                .await
                .with_context(|| format!("restarting {}/{}", workload.kind, workload.name))?;
            eprintln!(
                "{}/{} restarted in {}",
                workload.kind.to_lowercase(),
                workload.name,
                workload.namespace
            );
        }
        let bare: Vec<&str> = reports
            .iter()
            .filter(|r| r.assessment.restart.is_some() && r.workload.is_none())
            .map(|r| r.pod.as_str())
            .collect();
        if !bare.is_empty() {
            eprintln!(
                "not restarted (no Deployment, StatefulSet or DaemonSet owns them; recreate them): {}",
                bare.join(", ")
            );
        }
    }
    Ok(())
}

async fn gather(
    client: &kube::Client,
    scope: &Scope,
    settings: &Settings,
) -> anyhow::Result<Vec<PodReport>> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let list = match &scope.namespace {
        Some(name) => vec![namespaces
            .get(name)
            .await
            .with_context(|| format!("reading namespace {name}"))?],
        None => {
            namespaces
                .list(&ListParams::default())
                .await
                .context("listing namespaces")?
                .items
        }
    };
    let expected = Expected {
        enforcer: EnforcerIdentity::new(&settings.injection.image),
        version: scope
            .injector_version
            .clone()
            .unwrap_or_else(|| env!("CARGO_PKG_VERSION").to_string()),
        skip_host_network: settings.injection.skip_host_network,
    };
    let mut reports = Vec::new();
    for namespace in list {
        let name = namespace.metadata.name.clone().unwrap_or_default();
        let raw = serde_json::to_value(&namespace)?;
        let facts = NamespaceFacts {
            opted_in: namespace
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(INJECT_LABEL))
                .map(String::as_str)
                == Some(OPTED_IN),
            excluded: settings.admission.excluded_namespaces.contains(&name),
            opted_in_since_ms: label_set_at(&raw, INJECT_LABEL),
        };
        let pods: Api<Pod> = Api::namespaced(client.clone(), &name);
        let mut params = ListParams::default();
        if let Some(selector) = &scope.selector {
            params = params.labels(selector);
        }
        let pods = pods
            .list(&params)
            .await
            .with_context(|| format!("listing pods in {name}"))?;
        for pod in pods.items {
            let value = serde_json::to_value(&pod)?;
            let assessment = assess(&value, &facts, &expected);
            let workload = owner(client, &name, &pod).await?;
            reports.push(PodReport {
                namespace: name.clone(),
                pod: pod.metadata.name.clone().unwrap_or_default(),
                workload,
                assessment,
            });
        }
    }
    Ok(reports)
}

/// The Deployment, StatefulSet or DaemonSet that owns `pod` (through its
/// ReplicaSet for a Deployment); `None` for bare pods, Jobs and others.
async fn owner(
    client: &kube::Client,
    namespace: &str,
    pod: &Pod,
) -> anyhow::Result<Option<Workload>> {
    let Some(reference) = pod
        .metadata
        .owner_references
        .as_ref()
        .and_then(|refs| refs.iter().find(|r| r.controller == Some(true)))
    else {
        return Ok(None);
    };
    let workload = |kind, name: &str| Workload {
        kind,
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    Ok(match reference.kind.as_str() {
        "StatefulSet" => Some(workload("StatefulSet", &reference.name)),
        "DaemonSet" => Some(workload("DaemonSet", &reference.name)),
        "ReplicaSet" => {
            let sets: Api<ReplicaSet> = Api::namespaced(client.clone(), namespace);
            sets.get_opt(&reference.name)
                .await
                .with_context(|| format!("reading replicaset {}", reference.name))?
                .and_then(|set| {
                    set.metadata
                        .owner_references?
                        .into_iter()
                        .find(|r| r.controller == Some(true) && r.kind == "Deployment")
                })
                .map(|deployment| workload("Deployment", &deployment.name))
        }
        _ => None,
    })
}

/// What `kubectl rollout restart` does: a new template annotation, so the
/// controller replaces every pod (through the webhook).
async fn restart_workload(client: &kube::Client, workload: &Workload) -> anyhow::Result<()> {
    let now = humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string();
    let patch = Patch::Merge(serde_json::json!({"spec": {"template": {"metadata": {
        "annotations": {"kubectl.kubernetes.io/restartedAt": now}}}}}));
    let params = PatchParams::default();
    let (ns, name) = (workload.namespace.as_str(), workload.name.as_str());
    match workload.kind {
        "Deployment" => drop(
            Api::<Deployment>::namespaced(client.clone(), ns)
                .patch(name, &params, &patch)
                .await?,
        ),
        "StatefulSet" => drop(
            Api::<StatefulSet>::namespaced(client.clone(), ns)
                .patch(name, &params, &patch)
                .await?,
        ),
        _ => drop(
            Api::<DaemonSet>::namespaced(client.clone(), ns)
                .patch(name, &params, &patch)
                .await?,
        ),
    }
    Ok(())
}

/// One row per pod: enforcer release or why none, prevention, and what a
/// restart would do.
pub fn render(reports: &[PodReport]) -> String {
    let rows: Vec<Vec<String>> = reports
        .iter()
        .map(|r| {
            let (enforcer, prevention) = match &r.assessment.injection {
                Injection::Injected {
                    version,
                    confined,
                    unconfined,
                } => {
                    let mut parts = Vec::new();
                    if !confined.is_empty() {
                        parts.push(format!("confined: {}", confined.join(",")));
                    }
                    for (container, why) in unconfined {
                        parts.push(format!("{container}: {why}"));
                    }
                    let prevention = if parts.is_empty() {
                        "-".to_string()
                    } else {
                        parts.join("; ")
                    };
                    (version.clone(), prevention)
                }
                Injection::NotInjected { reason } => {
                    (format!("none ({})", reason.as_str()), "-".to_string())
                }
            };
            let restart = match (&r.assessment.restart, &r.workload) {
                (None, _) => "-".to_string(),
                (Some(why), Some(w)) => format!("{}/{}: {why}", w.kind.to_lowercase(), w.name),
                (Some(why), None) => format!("recreate: {why}"),
            };
            vec![
                r.namespace.clone(),
                r.pod.clone(),
                enforcer,
                prevention,
                restart,
            ]
        })
        .collect();
    table(
        &["NAMESPACE", "POD", "ENFORCER", "PREVENTION", "RESTART"],
        &rows,
    )
}
