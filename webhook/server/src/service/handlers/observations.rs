//! `/api/v1/observations` and `/api/v1/workloads`: what enforcers saw
//! their pods do, added up per workload (enforcers post), and read back
//! per workload with the mode the current policies give it (admins).

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use palisade_common::observe::{
    ObservationBatch, ObservedRecord, WorkloadRecord, WorkloadRef, MAX_TEXT,
};
use palisade_common::policy::{Mode, PolicyDocument};
use palisade_common::wire::IngestResult;

use crate::metrics::Refused;
use crate::service::query::{WorkloadQuery, WorkloadsQuery};
use crate::service::{forbidden_for, ok, reporter, Answer, ApiError, Reporter, ServiceState};

/// `POST /api/v1/observations`: one enforcer's sums, added to its
/// workload's. The workload is resolved from the pod (or is the pod
/// itself); that never fails the batch.
pub async fn ingest(auth: Option<String>, body: Bytes, state: Arc<ServiceState>) -> Answer {
    let caller = reporter(&state, auth.as_deref()).await?;
    let batch: ObservationBatch = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad_request(format!("malformed observation batch: {e}")))?;
    check_batch(&batch, state.settings.max_batch_events)
        .map_err(|problem| ApiError::bad_request(problem.to_string()))?;
    if let Reporter::Workload(w) = &caller {
        if !w.may_report_for(&batch.pod.namespace, &batch.pod.name) {
            return Err(forbidden_for(w, &batch.pod.namespace, &batch.pod.name));
        }
    }
    let ids: Vec<&str> = batch
        .observations
        .iter()
        .map(|o| o.container.as_str())
        .collect();
    let pod = state.workloads.resolve(&batch.pod, &ids).await;
    let records: Vec<ObservedRecord> = batch
        .observations
        .iter()
        .map(|o| {
            let (container, image) = pod.container(&o.container);
            ObservedRecord {
                container,
                item: o.item.clone(),
                image,
                count: o.count,
                first_ms: o.first_ms,
                last_ms: o.last_ms,
            }
        })
        .collect();
    let _turn = state.write_turn(Refused::Observations).await?;
    let recorded = state
        .store
        .record_observations(
            &pod.workload,
            &pod.labels,
            &records,
            batch.overflow,
            state.settings.max_items_per_workload,
        )
        .await?;
    let received = batch.observations.len();
    state.metrics.observations_received.inc_by(received as u64);
    let overflowed = recorded.overflowed.saturating_add(batch.overflow);
    state
        .metrics
        .observation_items_overflowed
        .inc_by(overflowed);
    if recorded.new_items > 0 || overflowed > 0 {
        tracing::debug!(namespace = %batch.pod.namespace, pod = %batch.pod.name,
            workload = %pod.workload, new_items = recorded.new_items, overflowed,
            "observations stored");
    }
    ok(&IngestResult {
        received,
        stored: recorded.stored,
    })
}

/// `GET /api/v1/workloads[?namespace=]`.
pub async fn list_workloads(query: WorkloadsQuery, state: Arc<ServiceState>) -> Answer {
    let mut workloads = state.store.workloads(query.namespace()).await?;
    let policies = state.policies.current();
    for record in &mut workloads {
        with_mode(record, policies.documents());
    }
    ok(&workloads)
}

/// `GET /api/v1/workloads/{namespace}/{kind}/{name}[?since=]`; the kind
/// in any case (`deployment`).
pub async fn get_workload(
    namespace: String,
    kind: String,
    name: String,
    query: WorkloadQuery,
    state: Arc<ServiceState>,
) -> Answer {
    let since = query
        .since_ms()
        .map_err(|problem| ApiError::bad_request(problem.to_string()))?;
    let wanted = WorkloadRef {
        namespace,
        kind,
        name,
    };
    match state.store.workload_observations(&wanted, since).await? {
        Some(mut found) => {
            with_mode(&mut found.workload, state.policies.current().documents());
            ok(&found)
        }
        None => Err(ApiError::not_found(format!(
            "no observations of workload {wanted}: no enforcer in its pods has sent any \
             (GET /api/v1/workloads lists the workloads observed)"
        ))),
    }
}

fn with_mode<'a>(record: &mut WorkloadRecord, policies: impl Iterator<Item = &'a PolicyDocument>) {
    record.mode = strictest_mode(policies, &record.workload.namespace, &record.pod_labels);
}

/// The strictest mode among the runtime policies (those with `runtime`,
/// the only ones enforcers apply) selecting pods of `namespace` with
/// `labels`; `None` when none does.
fn strictest_mode<'a>(
    policies: impl Iterator<Item = &'a PolicyDocument>,
    namespace: &str,
    labels: &BTreeMap<String, String>,
) -> Option<Mode> {
    policies
        .filter(|p| p.spec.runtime.is_some() && p.spec.selector.matches(namespace, labels))
        .map(|p| p.spec.mode)
        .max_by_key(|mode| mode.strictness())
}

/// Why an observation batch is refused as a whole.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum BatchError {
    #[error("pod.namespace and pod.name are required")]
    NoPod,
    #[error("{count} observations in one batch; the limit is {limit}")]
    TooMany { count: usize, limit: usize },
    #[error("observations[{index}]: {problem}")]
    Item { index: usize, problem: String },
    #[error("observations[{0}].container must be at most {MAX_TEXT} bytes")]
    Container(usize),
}

fn check_batch(batch: &ObservationBatch, max_observations: usize) -> Result<(), BatchError> {
    if batch.pod.namespace.is_empty() || batch.pod.name.is_empty() {
        return Err(BatchError::NoPod);
    }
    if batch.observations.len() > max_observations {
        return Err(BatchError::TooMany {
            count: batch.observations.len(),
            limit: max_observations,
        });
    }
    for (index, observation) in batch.observations.iter().enumerate() {
        observation
            .item
            .check()
            .map_err(|problem| BatchError::Item { index, problem })?;
        if observation.container.len() > MAX_TEXT {
            return Err(BatchError::Container(index));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use palisade_common::observe::{Observation, Observed, Protocol};
    use palisade_common::wire::PodRef;

    use super::*;

    fn policy(name: &str, mode: &str, selector: &str, runtime: bool) -> PolicyDocument {
        let runtime = if runtime {
            "runtime: {drift: true}"
        } else {
            ""
        };
        PolicyDocument::from_yaml(&format!(
            "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {{name: {name}}}\n\
             spec:\n  mode: {mode}\n  selector: {selector}\n  {runtime}\n"
        ))
        .unwrap()
    }

    #[test]
    fn a_workload_is_in_the_strictest_mode_of_the_runtime_policies_selecting_it() {
        let web: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let policies = [
            policy("learn-all", "learn", "{}", true),
            policy("audit-web", "audit", "{podLabels: {app: web}}", true),
            policy("enforce-other", "enforce", "{namespaces: [other]}", true),
            policy("admission-only", "enforce", "{}", false),
        ];
        assert_eq!(
            strictest_mode(policies.iter(), "shop", &web),
            Some(Mode::Audit)
        );
        assert_eq!(
            strictest_mode(policies.iter(), "shop", &BTreeMap::new()),
            Some(Mode::Learn)
        );
        assert_eq!(
            strictest_mode(policies.iter(), "other", &web),
            Some(Mode::Enforce)
        );
        assert_eq!(strictest_mode(policies[3..].iter(), "shop", &web), None);
    }

    fn batch(items: Vec<Observed>) -> ObservationBatch {
        ObservationBatch {
            pod: PodRef {
                namespace: "shop".into(),
                name: "web-0".into(),
                uid: "u".into(),
            },
            observations: items
                .into_iter()
                .map(|item| Observation {
                    container: "abc".into(),
                    item,
                    count: 1,
                    first_ms: 1,
                    last_ms: 1,
                })
                .collect(),
            overflow: 0,
        }
    }

    #[test]
    fn a_batch_names_the_observation_that_is_wrong() {
        let listen = Observed::Listen {
            protocol: Protocol::Tcp,
            port: 80,
        };
        let relative = Observed::Executable {
            path: "bin/sh".into(),
            sha256: None,
            from_image: false,
        };
        assert_eq!(check_batch(&batch(vec![listen.clone()]), 10), Ok(()));
        let err = check_batch(&batch(vec![listen.clone(), relative]), 10).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("observations[1]: executable path"),
            "{err}"
        );
        assert_eq!(
            check_batch(&batch(vec![listen.clone(); 3]), 2),
            Err(BatchError::TooMany { count: 3, limit: 2 })
        );
        let mut long = batch(vec![listen.clone()]);
        long.observations[0].container = "x".repeat(MAX_TEXT + 1);
        assert_eq!(check_batch(&long, 10), Err(BatchError::Container(0)));
        let mut nameless = batch(vec![listen]);
        nameless.pod.name.clear();
        assert_eq!(check_batch(&nameless, 10), Err(BatchError::NoPod));
    }
}
