//! `palisade status`: for each pod of a namespace (or all), whether it runs
//! the current enforcer, which of its containers are confined, why a pod
//! has no enforcer, and which workloads a restart would fix (`--restart`
//! rolls them, as `kubectl rollout restart` does). The verdicts come from
//! the engine's `rollout` module; this file only talks to the apiserver,
//! and with `--coverage` to the policy service, for what the kernel
//! enforced in each confined container (the launchers' reports) and which
//! protections each pod's enforcer says are off (its heartbeats).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, ReplicaSet, StatefulSet};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, Patch, PatchParams};
use palisade_common::launch::{CoverageSummary, LandlockSupport, COVERAGE_RULE};
use palisade_common::wire::{EnforcerRecord, EventKind, Liveness, ProtectionOff, StoredEvent};
use palisade_common::INJECT_LABEL;
use palisade_engine::admission::enforcer::EnforcerIdentity;
use palisade_engine::rollout::{
    assess, label_set_at, Assessment, Expected, Injection, NamespaceFacts,
};
use palisade_engine::settings::Settings;
use serde::Serialize;

use crate::client::{table, Client, EventFilter};

/// The value of [`INJECT_LABEL`] that opts a namespace in.
const OPTED_IN: &str = "enabled";
/// Coverage reports read per namespace, newest first: one per container
/// start, so this covers many restarts of every pod.
const REPORTS_PER_NAMESPACE: u32 = 1000;

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
    /// Reports are matched by uid: a pod recreated under the same name is
    /// another pod.
    #[serde(skip)]
    pub uid: String,
    /// Its phase is Succeeded or Failed: nothing left in it to protect.
    #[serde(skip)]
    pub finished: bool,
    /// With `--coverage`: per confined container, what the kernel enforced
    /// (`None`: no report arrived from this pod).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kernel: Option<BTreeMap<String, Option<CoverageSummary>>>,
    /// With `--coverage`, for pods with an enforcer: what it last told the
    /// policy service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat: Option<Heard>,
}

/// What a pod's enforcer last said in its heartbeats.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Heard {
    /// `None`: no heartbeat ever came from this very pod.
    pub state: Option<Liveness>,
    /// What it cannot protect in the pod, and why (while it reports).
    pub protections_off: Vec<ProtectionOff>,
}

impl Heard {
    /// Whether some protection is off in the pod: the enforcer says so, or
    /// it is not reporting at all.
    fn any_off(&self) -> bool {
        self.state != Some(Liveness::Reporting) || !self.protections_off.is_empty()
    }
}

impl PodReport {
    /// The containers the injector started under the launcher.
    fn confined(&self) -> &[String] {
        match &self.assessment.injection {
            Injection::Injected { confined, .. } => confined,
            Injection::NotInjected { .. } => &[],
        }
    }
}

pub async fn run(
    scope: Scope,
    output: Output,
    restart: bool,
    settings: &Settings,
    coverage_from: Option<&Client>,
) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("connecting to the cluster (KUBECONFIG, ~/.kube/config or in-cluster)")?;
    let mut reports = gather(&client, &scope, settings).await?;
    if let Some(service) = coverage_from {
        let found = kernel_reports(service, &reports).await?;
        attach_kernel(&mut reports, &found);
        let enforcers = service.enforcers().await.with_context(|| {
            format!(
                "reading the enforcers' heartbeats from the policy service at {} (--server)",
                service.server()
            )
        })?;
        attach_heartbeats(&mut reports, &enforcers);
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&reports)?),
        Output::Table => {
            let coverage = coverage_from.is_some();
            print!(
                "{}{}",
                render(&reports, coverage),
                summary(&reports, coverage)
            );
        }
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
                uid: pod.metadata.uid.clone().unwrap_or_default(),
                finished: matches!(
                    pod.status.as_ref().and_then(|s| s.phase.as_deref()),
                    Some("Succeeded" | "Failed")
                ),
                kernel: None,
                heartbeat: None,
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

/// The launchers' reports in the namespaces that have a confined
/// container (the others have nothing to report), one query each.
async fn kernel_reports(service: &Client, reports: &[PodReport]) -> anyhow::Result<KernelReports> {
    let namespaces: BTreeSet<&str> = reports
        .iter()
        .filter(|r| !r.confined().is_empty())
        .map(|r| r.namespace.as_str())
        .collect();
    let mut found = KernelReports::default();
    for namespace in namespaces {
        let filter = EventFilter {
            namespace: Some(namespace.to_string()),
            kind: Some(EventKind::Enforcer),
            rule: Some(COVERAGE_RULE.to_string()),
            limit: REPORTS_PER_NAMESPACE,
            ..Default::default()
        };
        let events = service.events(&filter).await.with_context(|| {
            format!(
                "reading the coverage reports of namespace {namespace} from the policy service \
                 at {} (--server)",
                service.server()
            )
        })?;
        if events.len() >= REPORTS_PER_NAMESPACE as usize {
            eprintln!(
                "warning: namespace {namespace} has more than {REPORTS_PER_NAMESPACE} coverage \
                 reports; only the newest were read, so pods whose reports are older show \
                 \"no report\""
            );
        }
        found.add(events);
    }
    Ok(found)
}

/// A pod's container, as its enforcer reported it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct ContainerKey {
    namespace: String,
    pod: String,
    uid: String,
    container: String,
}

/// The newest coverage report of each container of each pod.
#[derive(Debug, Default)]
pub struct KernelReports(BTreeMap<ContainerKey, (i64, CoverageSummary)>);

impl KernelReports {
    /// Keeps the newer report of a container (it restarted and was
    /// confined again). Events without a summary (the enforcer could not
    /// receive reports, or predates summaries) say nothing of a container.
    pub fn add(&mut self, events: impl IntoIterator<Item = StoredEvent>) {
        for stored in events {
            let event = stored.event;
            if event.rule != COVERAGE_RULE {
                continue;
            }
            let Some(summary) = event.coverage else {
                continue;
            };
            let Some(container) = summary.container.clone() else {
                continue;
            };
            let key = ContainerKey {
                namespace: stored.pod.namespace,
                pod: stored.pod.name,
                uid: stored.pod.uid,
                container,
            };
            match self.0.get(&key) {
                Some((newest, _)) if *newest >= event.time_ms => {}
                _ => {
                    self.0.insert(key, (event.time_ms, summary));
                }
            }
        }
    }

    /// What the kernel enforced in each confined container of `pod`.
    fn for_pod(&self, pod: &PodReport) -> BTreeMap<String, Option<CoverageSummary>> {
        pod.confined()
            .iter()
            .map(|container| {
                let key = ContainerKey {
                    namespace: pod.namespace.clone(),
                    pod: pod.pod.clone(),
                    uid: pod.uid.clone(),
                    container: container.clone(),
                };
                let found = self.0.get(&key).map(|(_, summary)| summary.clone());
                (container.clone(), found)
            })
            .collect()
    }
}

/// Gives every pod its `kernel` field (empty when nothing is confined).
pub fn attach_kernel(reports: &mut [PodReport], found: &KernelReports) {
    for report in reports {
        report.kernel = Some(found.for_pod(report));
    }
}

/// One container in the KERNEL column: the level, then Landlock's ABI and
/// what it left out, or why Landlock did nothing at all.
pub fn kernel_cell(container: &str, report: Option<&CoverageSummary>) -> String {
    let Some(summary) = report else {
        return format!("{container}: no report");
    };
    let level = summary.level.as_str();
    let mut detail = match summary.landlock {
        LandlockSupport::Available(abi) => format!("ABI {abi}"),
        LandlockSupport::NotEnabled => "Landlock not enabled".to_string(),
        LandlockSupport::NotImplemented => "Landlock unavailable".to_string(),
        LandlockSupport::Unknown => "Landlock not applied".to_string(),
    };
    // Without Landlock nothing is enforced, for that one reason.
    let available = matches!(summary.landlock, LandlockSupport::Available(_));
    if available && !summary.not_enforced.is_empty() {
        let missing: Vec<&str> = summary
            .not_enforced
            .iter()
            .map(|n| n.protection.as_str())
            .collect();
        detail.push_str(&format!("; not enforced: {}", missing.join(", ")));
    }
    format!("{container}: {level} ({detail})")
}

fn kernel_column(report: &PodReport) -> String {
    match &report.kernel {
        Some(kernel) if !kernel.is_empty() => kernel
            .iter()
            .map(|(container, summary)| kernel_cell(container, summary.as_ref()))
            .collect::<Vec<_>>()
            .join("; "),
        _ => "-".to_string(),
    }
}

/// Gives every running pod with an enforcer its `heartbeat` field, from
/// the service's enforcers list (a finished pod's enforcer has stopped with
/// nothing left to protect). Rows are kept per pod name: one left by a pod
/// this one replaced under the same name is not this pod's (enforcers too
/// old to send a uid are taken at their word).
pub fn attach_heartbeats(reports: &mut [PodReport], enforcers: &[EnforcerRecord]) {
    for report in reports {
        let injected = matches!(report.assessment.injection, Injection::Injected { .. });
        if !injected || report.finished {
            continue;
        }
        let found = enforcers.iter().find(|a| {
            a.pod.namespace == report.namespace
                && a.pod.name == report.pod
                && (a.pod.uid == report.uid || a.pod.uid.is_empty())
        });
        report.heartbeat = Some(match found {
            Some(enforcer) => Heard {
                state: Some(enforcer.state),
                protections_off: enforcer.protections_off.clone(),
            },
            None => Heard {
                state: None,
                protections_off: Vec::new(),
            },
        });
    }
}

/// The PROTECTIONS OFF column: each protection with its reason, or
/// everything when the enforcer is not reporting.
pub fn protections_cell(heard: Option<&Heard>) -> String {
    let Some(heard) = heard else {
        return "-".to_string();
    };
    match heard.state {
        None => "all: no heartbeat from its enforcer".to_string(),
        Some(Liveness::Missing) => "all: enforcer missing (no heartbeat)".to_string(),
        Some(Liveness::Stopped) => "all: enforcer stopped".to_string(),
        Some(Liveness::Reporting) if heard.protections_off.is_empty() => "none".to_string(),
        Some(Liveness::Reporting) => heard
            .protections_off
            .iter()
            .map(|off| format!("{} ({})", off.protection.as_str(), off.reason))
            .collect::<Vec<_>>()
            .join("; "),
    }
}

/// The line under the table: how many pods, how many with an enforcer,
/// to restart and, with `--coverage`, with some protection off.
pub fn summary(reports: &[PodReport], coverage: bool) -> String {
    let injected = reports
        .iter()
        .filter(|r| matches!(r.assessment.injection, Injection::Injected { .. }))
        .count();
    let restart = reports
        .iter()
        .filter(|r| r.assessment.restart.is_some())
        .count();
    let pods = match reports.len() {
        1 => "1 pod".to_string(),
        n => format!("{n} pods"),
    };
    let mut line = format!("{pods}: {injected} with an enforcer, {restart} to restart");
    if coverage {
        let off = reports
            .iter()
            .filter(|r| r.heartbeat.as_ref().is_some_and(Heard::any_off))
            .count();
        line.push_str(&format!(", {off} with protections off"));
    }
    line + "\n"
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

/// One row per pod: enforcer release or why none, prevention as planned,
/// with `coverage` as the kernel enforced it and the protections the
/// enforcer reports off, and what a restart would do.
pub fn render(reports: &[PodReport], coverage: bool) -> String {
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
            let mut row = vec![r.namespace.clone(), r.pod.clone(), enforcer, prevention];
            if coverage {
                row.push(kernel_column(r));
                row.push(protections_cell(r.heartbeat.as_ref()));
            }
            row.push(restart);
            row
        })
        .collect();
    let header: &[&str] = if coverage {
        &[
            "NAMESPACE",
            "POD",
            "ENFORCER",
            "PREVENTION",
            "KERNEL",
            "PROTECTIONS OFF",
            "RESTART",
        ]
    } else {
        &["NAMESPACE", "POD", "ENFORCER", "PREVENTION", "RESTART"]
    };
    table(header, &rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_common::launch::{CoverageLevel, NotEnforcedSummary};
    use palisade_common::wire::{EnforcerProtection, Event, PodRef};
    use palisade_engine::rollout::Missing;

    /// A pod injected by this release, with `confined` app containers.
    fn mk_pod(pod: &str, uid: &str, confined: &[&str]) -> PodReport {
        PodReport {
            namespace: "shop".into(),
            pod: pod.into(),
            workload: None,
            assessment: Assessment {
                injection: Injection::Injected {
                    version: "0.1.0".into(),
                    confined: confined.iter().map(|c| c.to_string()).collect(),
                    unconfined: BTreeMap::new(),
                },
                restart: None,
            },
            uid: uid.into(),
            finished: false,
            kernel: None,
            heartbeat: None,
        }
    }

    fn mk_summary(
        container: &str,
        level: CoverageLevel,
        landlock: LandlockSupport,
    ) -> CoverageSummary {
        CoverageSummary {
            container: Some(container.into()),
            level,
            landlock,
            enforced: Vec::new(),
            not_enforced: Vec::new(),
        }
    }

    /// An `enforcer/prevention` event from `pod` (uid `uid`) at `time_ms`.
    fn mk_event(pod: &str, uid: &str, time_ms: i64, summary: CoverageSummary) -> StoredEvent {
        StoredEvent {
            pod: PodRef {
                namespace: "shop".into(),
                name: pod.into(),
                uid: uid.into(),
            },
            received_ms: time_ms,
            event: Event::enforcer(
                format!("{uid}-{time_ms}"),
                time_ms,
                COVERAGE_RULE,
                "m".into(),
            )
            .with_coverage(summary),
        }
    }

    fn full(container: &str, abi: u8) -> CoverageSummary {
        mk_summary(
            container,
            CoverageLevel::Full,
            LandlockSupport::Available(abi),
        )
    }

    #[test]
    fn the_newest_report_of_each_container_of_this_very_pod_is_kept() {
        let mut found = KernelReports::default();
        found.add(vec![
            // Newest first, as the service answers; order must not matter.
            mk_event("cart-0", "new", 3_000, full("app", 7)),
            mk_event("cart-0", "new", 1_000, full("app", 5)),
            mk_event("cart-0", "new", 4_000, full("app", 6)),
            // The pod this one replaced, under the same name.
            mk_event("cart-0", "old", 9_000, full("sidecar", 7)),
        ]);
        let mut reports = vec![mk_pod("cart-0", "new", &["app", "sidecar"])];
        attach_kernel(&mut reports, &found);
        let kernel = reports[0].kernel.as_ref().unwrap();
        assert_eq!(kernel["app"], Some(full("app", 6)));
        assert_eq!(
            kernel["sidecar"], None,
            "the old pod's report is not this pod's"
        );
    }

    #[test]
    fn events_without_a_summary_or_of_another_rule_say_nothing() {
        let mut found = KernelReports::default();
        let mut other = mk_event("cart-0", "u", 1_000, full("app", 7));
        other.event.rule = "enforcer/started".into();
        let mut bare = mk_event("cart-0", "u", 2_000, full("app", 7));
        bare.event.coverage = None;
        found.add(vec![other, bare]);
        let mut reports = vec![mk_pod("cart-0", "u", &["app"]), mk_pod("web-0", "w", &[])];
        attach_kernel(&mut reports, &found);
        assert_eq!(reports[0].kernel.as_ref().unwrap()["app"], None);
        assert_eq!(reports[1].kernel.as_ref().map(BTreeMap::len), Some(0));
    }

    #[test]
    fn a_kernel_cell_names_the_level_the_abi_and_what_is_missing_or_why() {
        assert_eq!(
            kernel_cell("app", Some(&full("app", 7))),
            "app: full (ABI 7)"
        );
        let mut partial = mk_summary("app", CoverageLevel::Partial, LandlockSupport::Available(3));
        partial.not_enforced = ["tcpBind", "tcpConnect"]
            .map(|p| NotEnforcedSummary {
                protection: p.into(),
                reason: "kernelAbiTooOld".into(),
            })
            .to_vec();
        assert_eq!(
            kernel_cell("app", Some(&partial)),
            "app: partial (ABI 3; not enforced: tcpBind, tcpConnect)"
        );
        let mut none = mk_summary("app", CoverageLevel::None, LandlockSupport::NotEnabled);
        none.not_enforced = partial.not_enforced.clone();
        assert_eq!(
            kernel_cell("app", Some(&none)),
            "app: none (Landlock not enabled)"
        );
        assert_eq!(kernel_cell("app", None), "app: no report");
    }

    /// An enforcer's row in the service's enforcers list.
    fn mk_enforcer(
        pod: &str,
        uid: &str,
        state: Liveness,
        off: &[(EnforcerProtection, &str)],
    ) -> EnforcerRecord {
        EnforcerRecord {
            pod: PodRef {
                namespace: "shop".into(),
                name: pod.into(),
                uid: uid.into(),
            },
            boot_id: "b1".into(),
            heartbeat_ms: 10_000,
            last_seen_ms: 1_000,
            state,
            dropped: 0,
            unobserved: 0,
            policy_etag: "etag".into(),
            protections_off: off
                .iter()
                .map(|(protection, reason)| ProtectionOff {
                    protection: *protection,
                    reason: reason.to_string(),
                })
                .collect(),
        }
    }

    const DRIFT_OFF: (EnforcerProtection, &str) = (
        EnforcerProtection::Drift,
        "app runs as uid 1001, the enforcer as 65532",
    );

    #[test]
    fn the_kernel_and_protections_columns_and_fields_appear_only_with_coverage() {
        let plain = vec![mk_pod("cart-0", "u", &["app"])];
        let table = render(&plain, false);
        assert!(
            !table.contains("KERNEL") && !table.contains("PROTECTIONS OFF"),
            "{table}"
        );
        assert_eq!(
            summary(&plain, false),
            "1 pod: 1 with an enforcer, 0 to restart\n"
        );
        let json = serde_json::to_value(&plain).unwrap();
        assert!(
            json[0].get("kernel").is_none()
                && json[0].get("uid").is_none()
                && json[0].get("heartbeat").is_none(),
            "{json}"
        );

        let mut found = KernelReports::default();
        found.add(vec![mk_event("cart-0", "u", 1_000, full("app", 7))]);
        let mut covered = vec![
            mk_pod("cart-0", "u", &["app", "worker"]),
            mk_pod("web-0", "w", &[]),
        ];
        attach_kernel(&mut covered, &found);
        attach_heartbeats(
            &mut covered,
            &[mk_enforcer(
                "cart-0",
                "u",
                Liveness::Reporting,
                &[DRIFT_OFF],
            )],
        );
        assert_eq!(
            render(&covered, true),
            "NAMESPACE  POD     ENFORCER  PREVENTION            KERNEL                                PROTECTIONS OFF                                      RESTART\n\
             shop       cart-0  0.1.0     confined: app,worker  app: full (ABI 7); worker: no report  drift (app runs as uid 1001, the enforcer as 65532)  -\n\
             shop       web-0   0.1.0     -                     -                                     all: no heartbeat from its enforcer                  -\n"
        );
        assert_eq!(
            summary(&covered, true),
            "2 pods: 2 with an enforcer, 0 to restart, 2 with protections off\n"
        );
        let json = serde_json::to_value(&covered).unwrap();
        assert_eq!(json[0]["kernel"]["app"]["landlock"]["abi"], 7);
        assert!(json[0]["kernel"]["worker"].is_null(), "{json}");
        assert_eq!(
            json[0]["heartbeat"],
            serde_json::json!({"state": "reporting", "protectionsOff": [
                {"protection": "drift", "reason": "app runs as uid 1001, the enforcer as 65532"}]})
        );
        assert_eq!(
            json[1]["heartbeat"],
            serde_json::json!({"state": null, "protectionsOff": []})
        );
    }

    #[test]
    fn heartbeats_are_matched_to_this_very_pod_and_only_to_running_pods_with_an_enforcer() {
        let mut reports = vec![
            mk_pod("cart-0", "new", &[]),
            mk_pod("web-0", "w", &[]),
            PodReport {
                finished: true,
                ..mk_pod("job-0", "j", &[])
            },
            PodReport {
                assessment: Assessment {
                    injection: Injection::NotInjected {
                        reason: Missing::NamespaceNotOptedIn,
                    },
                    restart: None,
                },
                ..mk_pod("plain-0", "p", &[])
            },
        ];
        attach_heartbeats(
            &mut reports,
            &[
                // Left by the pod this one replaced under the same name.
                mk_enforcer("cart-0", "old", Liveness::Reporting, &[DRIFT_OFF]),
                // An enforcer too old to send its pod's uid.
                mk_enforcer("web-0", "", Liveness::Reporting, &[]),
                mk_enforcer("plain-0", "p", Liveness::Reporting, &[DRIFT_OFF]),
                mk_enforcer("job-0", "j", Liveness::Stopped, &[]),
            ],
        );
        assert_eq!(
            reports[0].heartbeat,
            Some(Heard {
                state: None,
                protections_off: Vec::new()
            })
        );
        assert_eq!(
            reports[1].heartbeat.as_ref().and_then(|h| h.state),
            Some(Liveness::Reporting)
        );
        assert_eq!(
            reports[2].heartbeat, None,
            "a finished pod has nothing left to protect"
        );
        assert_eq!(reports[3].heartbeat, None, "no enforcer, nothing heard");
        assert_eq!(protections_cell(reports[3].heartbeat.as_ref()), "-");
        assert_eq!(
            summary(&reports, true).trim_end().rsplit(", ").next(),
            Some("1 with protections off")
        );
    }

    #[test]
    fn every_protection_is_off_while_the_enforcer_is_not_reporting() {
        let heard = |state, off: &[(EnforcerProtection, &str)]| {
            let mut reports = vec![mk_pod("cart-0", "u", &[])];
            attach_heartbeats(&mut reports, &[mk_enforcer("cart-0", "u", state, off)]);
            protections_cell(reports[0].heartbeat.as_ref())
        };
        assert_eq!(heard(Liveness::Reporting, &[]), "none");
        assert_eq!(
            heard(
                Liveness::Reporting,
                &[
                    DRIFT_OFF,
                    (EnforcerProtection::Stopping, "no kill permission")
                ]
            ),
            "drift (app runs as uid 1001, the enforcer as 65532); stopping (no kill permission)"
        );
        // What a missing enforcer last said no longer bounds what is off.
        assert_eq!(
            heard(Liveness::Missing, &[DRIFT_OFF]),
            "all: enforcer missing (no heartbeat)"
        );
        assert_eq!(heard(Liveness::Stopped, &[]), "all: enforcer stopped");
    }

    #[test]
    fn the_summary_counts_pods_to_restart_and_with_protections_off() {
        let mut reports = vec![
            mk_pod("a", "a", &[]),
            mk_pod("b", "b", &[]),
            mk_pod("c", "c", &[]),
        ];
        reports[2].assessment.restart = Some("its enforcer is from 0.0.9".into());
        attach_heartbeats(
            &mut reports,
            &[
                mk_enforcer("a", "a", Liveness::Reporting, &[]),
                mk_enforcer("b", "b", Liveness::Reporting, &[DRIFT_OFF]),
                mk_enforcer("c", "c", Liveness::Missing, &[]),
            ],
        );
        assert_eq!(
            summary(&reports, true),
            "3 pods: 3 with an enforcer, 1 to restart, 2 with protections off\n"
        );
        assert_eq!(
            summary(&[], false),
            "0 pods: 0 with an enforcer, 0 to restart\n"
        );
    }
}
