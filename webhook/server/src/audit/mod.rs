//! Background audit: the workloads already in the cluster judged by the
//! admission policies (the same `evaluate_template` the webhook runs) on
//! start, on every change, when policies change and when an exception
//! expires, into one bounded `palisade-admission` PolicyReport per
//! namespace, next to the enforcers' `palisade-runtime` ones.
//!
//! With several replicas, the one holding the Lease audits
//! (kube-lease-manager); the others only wait. A new leader adopts the
//! reports its predecessor wrote, so none goes stale.

pub mod inventory;
pub mod report;
pub mod watch;
pub mod writer;

use std::pin::pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures_util::StreamExt;
use kube_lease_manager::{LeaseCreateMode, LeaseManager, LeaseParams};
use palisade_engine::admission::template::TemplateLocation;
use palisade_engine::admission::Webhook;
use palisade_engine::policy::PolicySet;
use palisade_engine::settings::Settings;
use serde_json::Value;
use tokio::sync::watch as signal;

use crate::metrics::Metrics;
use crate::sources::PolicyStore;
use inventory::{Inventory, NamespaceLabel};
use report::{AuditResult, Limits, MAX_REPORT_BYTES};
use watch::Change;
use writer::Writer;

/// Runs for the life of the server: waits for the Lease, audits while
/// holding it, and lets it go on shutdown so another replica takes over
/// at once rather than after the Lease expires.
pub async fn run(
    client: kube::Client,
    settings: Settings,
    policies: Arc<PolicyStore>,
    metrics: Arc<Metrics>,
    mut stopping: signal::Receiver<bool>,
) {
    let audit = &settings.audit;
    let identity = identity();
    let duration = audit.lease_duration_secs;
    let params = LeaseParams::new(identity.clone(), duration, (duration / 3).max(1));
    let manager = loop {
        match LeaseManager::new(
            client.clone(),
            &audit.lease_name,
            &audit.lease_namespace,
            params.clone(),
            LeaseCreateMode::AutoCreate,
        )
        .await
        {
            Ok(manager) => break manager,
            Err(e) => {
                tracing::warn!(error = %e, lease = %audit.lease_name, namespace = %audit.lease_namespace,
                    "cannot reach the audit Lease; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                    _ = stopping.wait_for(|s| *s) => return,
                }
            }
        }
    };
    let (mut leading, lease_task) = manager.watch().await;
    tracing::info!(%identity, lease = %audit.lease_name, "background audit waiting for the Lease");
    loop {
        tokio::select! {
            held = leading.wait_for(|l| *l) => if held.is_err() { break },
            _ = stopping.wait_for(|s| *s) => break,
        }
        tracing::info!(%identity, "holding the audit Lease: auditing");
        metrics.audit_leader.set(1);
        tokio::select! {
            () = audit_while_leading(client.clone(), &settings, &policies, &metrics) => {}
            _ = leading.wait_for(|l| !*l) => tracing::warn!(%identity, "lost the audit Lease: audit stopped"),
            _ = stopping.wait_for(|s| *s) => {
                metrics.audit_leader.set(0);
                break;
            }
        }
        metrics.audit_leader.set(0);
    }
    // Closing the channel makes the manager release the Lease.
    drop(leading);
    if let Ok(Err(e)) = lease_task.await {
        tracing::warn!(error = %e, "releasing the audit Lease");
    }
}

/// This replica's name in the Lease: the pod name, made unique.
fn identity() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "palisade".into());
    format!("{host}-{:08x}", rand::random::<u32>())
}

/// The audit proper; returns only if the watch stream ends.
async fn audit_while_leading(
    client: kube::Client,
    settings: &Settings,
    policies: &PolicyStore,
    metrics: &Metrics,
) {
    let audit = &settings.audit;
    let webhook = Webhook::new(settings);
    let mut changes = pin!(watch::changes(
        client.clone(),
        &settings.admission.excluded_namespaces
    ));
    let mut generation = policies.subscribe();
    let mut current = policies.current();
    // Settings are validated at start: the label parses.
    let scope = audit
        .scope_label()
        .ok()
        .flatten()
        .map(|(key, value)| NamespaceLabel::new(key, value));
    let mut inventory = Inventory::scoped(scope);
    let mut writer = Writer::new(
        client,
        Limits {
            max_results: audit.max_results_per_report,
            max_bytes: MAX_REPORT_BYTES,
        },
    );
    let mut adopted = match writer.adopt_existing().await {
        Ok(namespaces) => namespaces,
        Err(e) => {
            tracing::warn!(error = %e, "cannot list earlier admission PolicyReports");
            Default::default()
        }
    };
    // Reports wait until every kind has been listed once: a namespace's
    // first report is complete, and a stale one is not deleted early.
    let mut listed = std::collections::HashSet::new();
    let mut flush = tokio::time::interval(Duration::from_secs(audit.flush_interval_secs));
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let expiry = next_expiry(&current);
        tokio::select! {
            change = changes.next() => {
                let Some(change) = change else { return };
                let judge = judge(&webhook, &current);
                match change {
                    Change::Relisting(kind) => inventory.relist_started(kind),
                    Change::Listed(kind) => {
                        inventory.relist_done(kind);
                        if listed.insert(kind) && listed.len() == watch::kind_count() {
                            tracing::info!(workloads = inventory.len(), "audit: every kind listed");
                        }
                    }
                    Change::Seen(workload) => {
                        metrics.audit_evaluations.inc();
                        inventory.upsert(workload, &judge, now_secs());
                    }
                    Change::Gone { namespace, kind, name } => inventory.remove(&namespace, kind, &name),
                    Change::Namespace { name, labels } => inventory.namespace_labels(&name, &labels),
                    Change::NamespaceGone(name) => inventory.namespace_gone(&name),
                }
            }
            changed = generation.changed() => {
                if changed.is_err() { return }
                current = policies.current();
                metrics.audit_evaluations.inc_by(inventory.len() as u64);
                inventory.rejudge_all(&judge(&webhook, &current), now_secs());
            }
            () = sleep_until(expiry) => {
                // An exception ran out: what it covered fails again.
                metrics.audit_evaluations.inc_by(inventory.len() as u64);
                inventory.rejudge_all(&judge(&webhook, &current), now_secs());
            }
            _ = flush.tick() => {
                if listed.len() < watch::kind_count() {
                    continue;
                }
                let mut namespaces = inventory.take_dirty();
                namespaces.append(&mut adopted);
                writer.flush(&mut inventory, namespaces, metrics).await;
                metrics.record_audit(inventory.len(), &inventory.summary());
            }
        }
    }
}

/// The webhook's own judgement of a template under `policies`.
fn judge<'a>(
    webhook: &'a Webhook,
    policies: &'a PolicySet,
) -> impl Fn(&str, &Value, TemplateLocation) -> Vec<AuditResult> + 'a {
    move |namespace, template, location| match webhook
        .evaluate_template(template, location, namespace, policies)
    {
        Ok(violations) => violations.iter().map(AuditResult::from_violation).collect(),
        Err(message) => vec![AuditResult::unreadable(message)],
    }
}

/// When the next PolicyException in the set expires, if any still will.
fn next_expiry(policies: &PolicySet) -> Option<SystemTime> {
    let now = SystemTime::now();
    policies
        .exceptions()
        .iter()
        .filter_map(|e| e.expires())
        .filter(|t| *t > now)
        .min()
}

async fn sleep_until(when: Option<SystemTime>) {
    match when {
        Some(when) => {
            let wait = when
                .duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO);
            // Just past the instant, so the exception counts as expired.
            tokio::time::sleep(wait + Duration::from_millis(10)).await
        }
        None => std::future::pending().await,
    }
}

fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}
