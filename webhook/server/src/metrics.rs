//! Prometheus metrics, rendered in the text exposition format at `/metrics`.

use palisade_common::exception::{ExceptionState, PolicyException};
use palisade_common::wire::Liveness;
use prometheus_client::encoding::{
    text::encode, EncodeLabelSet, EncodeLabelValue, LabelValueEncoder,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::audit::report::{Outcome, Summary};
use crate::db::EnforcerTotals;
use palisade_engine::admission::reason::{InjectionResult, ReasonLabel};
use palisade_engine::admission::{mutate, Endpoint, Outcome as AdmissionOutcome};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub endpoint: Endpoint,
    pub outcome: AdmissionOutcome,
}

/// `palisade_injections_total`: what the injector did to a Pod and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct InjectionLabels {
    pub result: InjectionResult,
    pub reason: ReasonLabel,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    pub endpoint: Endpoint,
}

/// An enforcer's state as the service sees it.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EnforcerLabels {
    pub state: EnforcerState,
}

#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct EnforcerState(pub Liveness);

impl EncodeLabelValue for EnforcerState {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.0.as_str())
    }
}

/// `palisade_image_lookups_total`: how a registry lookup of an image's
/// command was answered.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum LookupResult {
    /// From the cache, no request.
    Cached,
    /// The tag's digest asked again, its config kept.
    Revalidated,
    /// Manifest and config fetched.
    Fetched,
    /// Failed now.
    Failed,
    /// Failed recently, not asked again.
    FailureCached,
}

impl EncodeLabelValue for LookupResult {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        let label = match self {
            LookupResult::Cached => "cached",
            LookupResult::Revalidated => "revalidated",
            LookupResult::Fetched => "fetched",
            LookupResult::Failed => "failed",
            LookupResult::FailureCached => "failure-cached",
        };
        std::fmt::Write::write_str(encoder, label)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LookupLabels {
    pub result: LookupResult,
}

/// `palisade_policy_exceptions{state}`: active, expiring (within 7 days),
/// expired.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct ExceptionStateLabel(pub ExceptionState);

impl EncodeLabelValue for ExceptionStateLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        let label = match self.0 {
            ExceptionState::Active => "active",
            ExceptionState::Expiring => "expiring",
            ExceptionState::Expired => "expired",
        };
        std::fmt::Write::write_str(encoder, label)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ExceptionLabels {
    pub state: ExceptionStateLabel,
}

/// `palisade_audit_report_writes_total{op}`: what the background audit
/// asked of the apiserver.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum AuditWrite {
    Apply,
    Delete,
    Failed,
}

impl EncodeLabelValue for AuditWrite {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        let label = match self {
            AuditWrite::Apply => "apply",
            AuditWrite::Delete => "delete",
            AuditWrite::Failed => "failed",
        };
        std::fmt::Write::write_str(encoder, label)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditWriteLabels {
    pub op: AuditWrite,
}

/// `palisade_busy_replies_total{refused}`: what a replica refused with `429`.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Refused {
    Heartbeat,
    Reports,
    Observations,
}

impl EncodeLabelValue for Refused {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        let label = match self {
            Refused::Heartbeat => "heartbeat",
            Refused::Reports => "reports",
            Refused::Observations => "observations",
        };
        std::fmt::Write::write_str(encoder, label)
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BusyLabels {
    pub refused: Refused,
}

/// `palisade_audit_findings{result}`: fail, error, warn, skip.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub struct AuditOutcomeLabel(pub Outcome);

impl EncodeLabelValue for AuditOutcomeLabel {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.0.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AuditFindingLabels {
    pub result: AuditOutcomeLabel,
}

pub struct Metrics {
    registry: Registry,
    /// Registry lookups of image commands (prevention), by result.
    pub image_lookups: Family<LookupLabels, Counter>,
    /// Enforcers by state (the shared database's view: every replica
    /// reports the same numbers).
    pub enforcers: Family<EnforcerLabels, Gauge>,
    /// Events reporting enforcers dropped (spool full), summed.
    pub enforcer_events_dropped: Gauge,
    /// Processes reporting enforcers counted as run unobserved, summed.
    pub enforcer_processes_unobserved: Gauge,
    pub admission_requests: Family<RequestLabels, Counter>,
    pub injections: Family<InjectionLabels, Counter>,
    pub admission_duration: Family<EndpointLabels, Histogram>,
    pub policies_loaded: Gauge,
    /// Documents left out because another source defines the same name.
    pub policies_shadowed: Gauge,
    /// PolicyExceptions in the active set by state (the metric to alert on
    /// before one runs out).
    pub policy_exceptions: Family<ExceptionLabels, Gauge>,
    pub policy_reloads: Counter,
    pub policy_reload_failures: Counter,
    pub tls_reloads: Counter,
    pub tls_reload_failures: Counter,
    pub events_received: Counter,
    pub events_stored: Counter,
    /// Observed items enforcers sent (each a sum of sightings).
    pub observations_received: Counter,
    /// Observed items not stored: beyond a workload's bound at the
    /// service, or beyond an enforcer's own (its batch's `overflow`).
    pub observation_items_overflowed: Counter,
    /// Heartbeats written to the database (in batches).
    pub heartbeats_written: Counter,
    /// Heartbeats whose batch the database refused.
    pub heartbeats_failed: Counter,
    /// Time to write one batch of heartbeats.
    pub heartbeat_batch_seconds: Histogram,
    /// Requests answered `429` (back-pressure), by what was refused.
    pub busy: Family<BusyLabels, Counter>,
    /// TLS connections this replica holds.
    pub connections_open: Gauge,
    /// Connections closed at once because this replica held its limit.
    pub connections_refused: Counter,
    /// 1 while this replica hears pushes through PostgreSQL `LISTEN`.
    pub push_listener_up: Gauge,
    /// 1 while this replica holds the audit Lease.
    pub audit_leader: Gauge,
    pub audit_evaluations: Counter,
    pub audit_writes: Family<AuditWriteLabels, Counter>,
    pub audit_workloads: Gauge,
    pub audit_findings: Family<AuditFindingLabels, Gauge>,
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("palisade");
        let admission_requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "admission_requests",
            "AdmissionReview requests by endpoint and outcome",
            admission_requests.clone(),
        );
        let injections = Family::<InjectionLabels, Counter>::default();
        registry.register(
            "injections",
            "Pods seen by the injector, by result (injected, degraded, skipped) and reason",
            injections.clone(),
        );
        let policy_exceptions = Family::<ExceptionLabels, Gauge>::default();
        registry.register(
            "policy_exceptions",
            "PolicyExceptions in the active set by state (expiring: within 7 days)",
            policy_exceptions.clone(),
        );
        let image_lookups = Family::<LookupLabels, Counter>::default();
        registry.register(
            "image_lookups",
            "Registry lookups of image commands for prevention, by result",
            image_lookups.clone(),
        );
        let admission_duration = Family::<EndpointLabels, Histogram>::new_with_constructor(|| {
            // 25 µs .. ~400 ms
            Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
                0.000_025, 2.0, 15,
            ))
        });
        registry.register(
            "admission_duration_seconds",
            "Time to decode, evaluate and encode one AdmissionReview",
            admission_duration.clone(),
        );
        let policies_loaded = Gauge::default();
        registry.register(
            "policies_loaded",
            "Policies in the active set",
            policies_loaded.clone(),
        );
        let policies_shadowed = Gauge::default();
        registry.register(
            "policies_shadowed",
            "Policies and exceptions left out because a source of higher precedence (files, resources, pushes) defines the same name",
            policies_shadowed.clone(),
        );
        let policy_reloads = Counter::default();
        registry.register(
            "policy_reloads",
            "Successful policy set reloads",
            policy_reloads.clone(),
        );
        let policy_reload_failures = Counter::default();
        registry.register(
            "policy_reload_failures",
            "Policy reloads rejected (previous set kept)",
            policy_reload_failures.clone(),
        );
        let tls_reloads = Counter::default();
        registry.register(
            "tls_reloads",
            "Serving certificate reloads",
            tls_reloads.clone(),
        );
        let tls_reload_failures = Counter::default();
        registry.register(
            "tls_reload_failures",
            "Serving certificate reloads that failed (previous kept)",
            tls_reload_failures.clone(),
        );
        let enforcers = Family::<EnforcerLabels, Gauge>::default();
        registry.register(
            "enforcers",
            "Enforcers by state: reporting, missing (silent past their heartbeat) or stopped",
            enforcers.clone(),
        );
        let enforcer_events_dropped = Gauge::default();
        registry.register(
            "enforcer_events_dropped",
            "Events reporting enforcers dropped because their spool was full (sum of their totals)",
            enforcer_events_dropped.clone(),
        );
        let enforcer_processes_unobserved = Gauge::default();
        registry.register(
            "enforcer_processes_unobserved",
            "Processes reporting enforcers know ran without being seen (sum of their totals)",
            enforcer_processes_unobserved.clone(),
        );
        let events_received = Counter::default();
        registry.register(
            "report_events_received",
            "Enforcer events received (including retried duplicates)",
            events_received.clone(),
        );
        let events_stored = Counter::default();
        registry.register(
            "report_events_stored",
            "Enforcer events stored (new)",
            events_stored.clone(),
        );
        let observations_received = Counter::default();
        registry.register(
            "observations_received",
            "Observed items enforcers sent (each a sum of sightings in one container)",
            observations_received.clone(),
        );
        let observation_items_overflowed = Counter::default();
        registry.register(
            "observation_items_overflowed",
            "Observed items not stored because a workload reached service.max_items_per_workload, or an enforcer its own bound",
            observation_items_overflowed.clone(),
        );
        let heartbeats_written = Counter::default();
        registry.register(
            "heartbeats_written",
            "Enforcer heartbeats written to the database",
            heartbeats_written.clone(),
        );
        let heartbeats_failed = Counter::default();
        registry.register(
            "heartbeats_failed",
            "Enforcer heartbeats not written: the database refused their batch",
            heartbeats_failed.clone(),
        );
        // 100 µs .. ~1.6 s
        let heartbeat_batch_seconds = Histogram::new(
            prometheus_client::metrics::histogram::exponential_buckets(0.000_1, 2.0, 15),
        );
        registry.register(
            "heartbeat_batch_duration_seconds",
            "Time to write one batch of heartbeats",
            heartbeat_batch_seconds.clone(),
        );
        let busy = Family::<BusyLabels, Counter>::default();
        registry.register(
            "busy_replies",
            "Requests answered 429 with Retry-After (back-pressure), by what was refused",
            busy.clone(),
        );
        let connections_open = Gauge::default();
        registry.register(
            "connections_open",
            "TLS connections this replica holds",
            connections_open.clone(),
        );
        let connections_refused = Counter::default();
        registry.register(
            "connections_refused",
            "Connections closed at once because this replica held max_connections",
            connections_refused.clone(),
        );
        let push_listener_up = Gauge::default();
        registry.register(
            "push_listener_up",
            "1 while this replica hears pushes at once through PostgreSQL LISTEN (else it polls)",
            push_listener_up.clone(),
        );
        let audit_leader = Gauge::default();
        registry.register(
            "audit_leader",
            "1 while this replica holds the background audit's Lease",
            audit_leader.clone(),
        );
        let audit_evaluations = Counter::default();
        registry.register(
            "audit_evaluations",
            "Workload templates judged by the background audit",
            audit_evaluations.clone(),
        );
        let audit_writes = Family::<AuditWriteLabels, Counter>::default();
        registry.register(
            "audit_report_writes",
            "Admission PolicyReport writes to the apiserver by operation (apply, delete, failed)",
            audit_writes.clone(),
        );
        let audit_workloads = Gauge::default();
        registry.register(
            "audit_workloads",
            "Workloads the background audit holds",
            audit_workloads.clone(),
        );
        let audit_findings = Family::<AuditFindingLabels, Gauge>::default();
        registry.register(
            "audit_findings",
            "Background audit findings by result (fail, error, warn, skip)",
            audit_findings.clone(),
        );
        Self {
            registry,
            heartbeats_written,
            heartbeats_failed,
            heartbeat_batch_seconds,
            busy,
            connections_open,
            connections_refused,
            push_listener_up,
            audit_leader,
            audit_evaluations,
            audit_writes,
            audit_workloads,
            audit_findings,
            enforcers,
            enforcer_events_dropped,
            enforcer_processes_unobserved,
            image_lookups,
            policy_exceptions,
            events_received,
            events_stored,
            observations_received,
            observation_items_overflowed,
            admission_requests,
            injections,
            admission_duration,
            policies_loaded,
            policies_shadowed,
            policy_reloads,
            policy_reload_failures,
            tls_reloads,
            tls_reload_failures,
        }
    }

    pub fn count_audit_write(&self, op: AuditWrite) {
        self.audit_writes
            .get_or_create(&AuditWriteLabels { op })
            .inc();
    }

    pub fn record_audit(&self, workloads: usize, findings: &Summary) {
        self.audit_workloads.set(workloads as i64);
        for outcome in Outcome::ALL {
            self.audit_findings
                .get_or_create(&AuditFindingLabels {
                    result: AuditOutcomeLabel(outcome),
                })
                .set(findings.count(outcome) as i64);
        }
    }

    pub fn count(&self, endpoint: Endpoint, outcome: AdmissionOutcome) {
        self.admission_requests
            .get_or_create(&RequestLabels { endpoint, outcome })
            .inc();
    }

    /// Counts one injector decision: one sample per degrade reason, so
    /// each reason can be alerted on alone.
    pub fn count_injection(&self, outcome: &mutate::Outcome) {
        let count = |result, reason| {
            self.injections
                .get_or_create(&InjectionLabels { result, reason })
                .inc();
        };
        match outcome {
            mutate::Outcome::Skipped { reason, .. } => {
                count(InjectionResult::Skipped, ReasonLabel::Skipped(*reason))
            }
            mutate::Outcome::Injected { degraded, .. } if degraded.is_empty() => {
                count(InjectionResult::Injected, ReasonLabel::None)
            }
            mutate::Outcome::Injected { degraded, .. } => {
                for reason in degraded {
                    count(InjectionResult::Degraded, ReasonLabel::Degraded(*reason));
                }
            }
        }
    }

    /// Sets the enforcer gauges from the database's totals.
    pub fn set_enforcers(&self, totals: &[EnforcerTotals]) {
        for state in [Liveness::Reporting, Liveness::Missing, Liveness::Stopped] {
            let count = totals
                .iter()
                .find(|t| t.state == state)
                .map_or(0, |t| t.enforcers);
            self.enforcers
                .get_or_create(&EnforcerLabels {
                    state: EnforcerState(state),
                })
                .set(count as i64);
        }
        let reporting = totals.iter().find(|t| t.state == Liveness::Reporting);
        self.enforcer_events_dropped
            .set(reporting.map_or(0, |t| t.dropped) as i64);
        self.enforcer_processes_unobserved
            .set(reporting.map_or(0, |t| t.unobserved) as i64);
    }

    /// Counts `exceptions` by their state at `now`.
    pub fn set_exceptions(&self, exceptions: &[PolicyException], now: std::time::SystemTime) {
        for state in [
            ExceptionState::Active,
            ExceptionState::Expiring,
            ExceptionState::Expired,
        ] {
            let count = exceptions.iter().filter(|e| e.state(now) == state).count();
            self.policy_exceptions
                .get_or_create(&ExceptionLabels {
                    state: ExceptionStateLabel(state),
                })
                .set(count as i64);
        }
    }

    pub fn count_lookup(&self, result: LookupResult) {
        self.image_lookups
            .get_or_create(&LookupLabels { result })
            .inc();
    }

    pub fn observe(&self, endpoint: Endpoint, seconds: f64) {
        self.admission_duration
            .get_or_create(&EndpointLabels { endpoint })
            .observe(seconds);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_engine::admission::reason::{DegradeReason, SkipReason};

    #[test]
    fn injection_reasons_are_labels() {
        let metrics = Metrics::new();
        metrics.count_injection(&mutate::Outcome::Skipped {
            reason: SkipReason::HostPid,
            defaulted: vec![],
        });
        metrics.count_injection(&mutate::Outcome::Injected {
            defaulted: vec![],
            degraded: vec![DegradeReason::ProcessNamespaceNotShared],
        });
        metrics.count_injection(&mutate::Outcome::Injected {
            defaulted: vec![],
            degraded: vec![],
        });
        let text = metrics.render();
        for line in [
            r#"palisade_injections_total{result="skipped",reason="host-pid"} 1"#,
            r#"palisade_injections_total{result="degraded",reason="process-namespace-not-shared"} 1"#,
            r#"palisade_injections_total{result="injected",reason="none"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
    }
}
