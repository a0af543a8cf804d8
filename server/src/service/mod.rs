//! The central policy service under `/api/v1`:
//!
//! | Method | Path | Who | What |
//! | --- | --- | --- | --- |
//! | GET | `/api/v1/policies` | admin | active policies (directory and pushed) |
//! | PUT | `/api/v1/policies` | admin | push a policy (YAML or JSON); new revision |
//! | GET | `/api/v1/policies/{name}` | admin | one policy; `?history=true` for every revision |
//! | DELETE | `/api/v1/policies/{name}` | admin | delete a pushed policy |
//! | GET | `/api/v1/bundle` | enforcer | runtime rules for a pod; long-poll on `etag` |
//! | POST | `/api/v1/reports` | enforcer | a batch of events (idempotent by event id) |
//! | POST | `/api/v1/heartbeat` | enforcer | liveness; silence becomes `agent/missing` |
//! | GET | `/api/v1/agents` | admin | every enforcer and whether it is reporting |
//! | GET | `/api/v1/events` | admin | stored events by namespace, pod, kind, time |

pub mod auth;
pub mod query;
pub mod reports;
pub mod sync;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use palisade_common::policy::PolicyDocument;
use palisade_common::wire::{Heartbeat, IngestResult, PolicyRecord, ReportBatch};
use serde::Serialize;
use tokio::sync::watch;
use warp::filters::BoxedFilter;
use warp::http::{Response, StatusCode};
use warp::{Filter, Rejection};

use crate::db::Store;
use crate::metrics::Metrics;
use crate::reply::{json_error, json_reply, limited_body, Unauthorized};
use crate::sources::PolicyStore;
use auth::{Role, Tokens};
use palisade_engine::policy::LoadError;
use palisade_engine::settings::ServiceSettings;
use query::{BundleQuery, EventsQuery, PolicyQuery};

pub struct ServiceState {
    pub settings: ServiceSettings,
    pub store: Store,
    pub policies: Arc<PolicyStore>,
    pub tokens: Tokens,
    pub metrics: Arc<Metrics>,
    /// Flips to true when shutdown starts: long-polls return at once.
    pub stopping: watch::Receiver<bool>,
    /// In-cluster verification of enforcers' service-account tokens.
    pub reviewer: Option<auth::TokenReviewer>,
}

/// Who is reporting or fetching policy.
enum Reporter {
    /// A configured report (or admin) token: trusted for any pod.
    Trusted,
    /// A pod's own token: limited to that pod.
    Workload(auth::Workload),
}

async fn reporter(state: &ServiceState, header: Option<&str>) -> Result<Reporter, Reply> {
    if state.tokens.allows(header, Role::Reporter) {
        return Ok(Reporter::Trusted);
    }
    if let Some(reviewer) = &state.reviewer {
        match reviewer.review(header).await {
            Ok(Some(workload)) => return Ok(Reporter::Workload(workload)),
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "TokenReview failed");
                return Err(json_error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("cannot verify the token with the API server: {e}"),
                ));
            }
        }
    }
    Err(unauthorized())
}

fn forbidden_for(workload: &auth::Workload, namespace: &str, pod: &str) -> Reply {
    json_error(
        StatusCode::FORBIDDEN,
        &format!(
            "token of {}/{} ({}) cannot act for pod {namespace}/{pod}",
            workload.namespace,
            workload.pod.as_deref().unwrap_or("any pod"),
            workload.service_account
        ),
    )
}

type Reply = Response<Vec<u8>>;

/// Routes under `/api/v1`.
pub fn routes(state: Arc<ServiceState>, max_body: u64) -> BoxedFilter<(Reply,)> {
    let admin = admin_only(state.clone());
    let with_state = warp::any().map(move || state.clone());
    let auth = warp::header::optional::<String>("authorization");
    let api = warp::path("api").and(warp::path("v1"));

    let list = api
        .and(warp::path("policies"))
        .and(warp::path::end())
        .and(warp::get())
        .and(admin.clone())
        .and(with_state.clone())
        .then(list_policies);
    let push = api
        .and(warp::path("policies"))
        .and(warp::path::end())
        .and(warp::put())
        .and(admin.clone())
        .and(limited_body(max_body))
        .and(with_state.clone())
        .then(push_policy);
    let get = api
        .and(warp::path!("policies" / String))
        .and(warp::get())
        .and(admin.clone())
        .and(warp::query::<PolicyQuery>())
        .and(with_state.clone())
        .then(get_policy);
    let delete = api
        .and(warp::path!("policies" / String))
        .and(warp::delete())
        .and(admin.clone())
        .and(with_state.clone())
        .then(delete_policy);
    let bundle = api
        .and(warp::path("bundle"))
        .and(warp::path::end())
        .and(warp::get())
        .and(warp::query::<BundleQuery>())
        .and(auth)
        .and(with_state.clone())
        .then(runtime_bundle);
    let reports = api
        .and(warp::path("reports"))
        .and(warp::path::end())
        .and(warp::post())
        .and(auth)
        .and(limited_body(max_body))
        .and(with_state.clone())
        .then(ingest_reports);
    let heartbeat = api
        .and(warp::path("heartbeat"))
        .and(warp::path::end())
        .and(warp::post())
        .and(auth)
        .and(limited_body(max_body))
        .and(with_state.clone())
        .then(record_heartbeat);
    let agents = api
        .and(warp::path("agents"))
        .and(warp::path::end())
        .and(warp::get())
        .and(admin.clone())
        .and(with_state.clone())
        .then(list_agents);
    let events = api
        .and(warp::path("events"))
        .and(warp::path::end())
        .and(warp::get())
        .and(admin)
        .and(warp::query::<EventsQuery>())
        .and(with_state)
        .then(query_events);
    list.or(push)
        .unify()
        .or(get)
        .unify()
        .or(delete)
        .unify()
        .or(bundle)
        .unify()
        .or(reports)
        .unify()
        .or(heartbeat)
        .unify()
        .or(agents)
        .unify()
        .or(events)
        .unify()
        .boxed()
}

/// Passes callers with an admin token; the others are refused (401) before
/// their body is read.
fn admin_only(state: Arc<ServiceState>) -> impl Filter<Extract = (), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization")
        .and_then(move |auth: Option<String>| {
            let allowed = state.tokens.allows(auth.as_deref(), Role::Admin);
            async move {
                if allowed {
                    Ok(())
                } else {
                    Err(warp::reject::custom(Unauthorized))
                }
            }
        })
        .untuple_one()
}

fn unauthorized() -> Reply {
    json_error(StatusCode::UNAUTHORIZED, "missing or invalid bearer token")
}

fn internal(e: impl std::fmt::Display) -> Reply {
    tracing::error!(error = %e, "policy service request failed");
    json_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string())
}

fn ok<T: Serialize>(body: &T) -> Reply {
    json_reply(StatusCode::OK, body)
}

/// Directory policies (revision 0) and pushed ones, by name.
fn active_records(state: &ServiceState, pushed: Vec<PolicyRecord>) -> Vec<PolicyRecord> {
    let mut records: Vec<PolicyRecord> = state
        .policies
        .directory_documents()
        .into_iter()
        .map(|(origin, document)| PolicyRecord {
            name: document.metadata.name.clone(),
            revision: 0,
            updated_ms: 0,
            source: format!("directory ({origin})"),
            document,
        })
        .chain(pushed)
        .collect();
    records.sort_by(|a, b| a.name.cmp(&b.name));
    records
}

async fn list_policies(state: Arc<ServiceState>) -> Reply {
    match state.store.current_policies().await {
        Ok(pushed) => ok(&active_records(&state, pushed)),
        Err(e) => internal(e),
    }
}

async fn push_policy(body: Bytes, state: Arc<ServiceState>) -> Reply {
    let Ok(text) = std::str::from_utf8(&body) else {
        return json_error(StatusCode::BAD_REQUEST, "policy must be UTF-8 YAML or JSON");
    };
    let doc = match PolicyDocument::from_yaml(text) {
        Ok(doc) => doc,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    match state.policies.check_push(&doc) {
        Ok(()) => {}
        Err(e @ LoadError::Duplicate { .. }) => {
            return json_error(StatusCode::CONFLICT, &e.to_string())
        }
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    }
    let revision = match state.store.put_policy(&doc, "admin").await {
        Ok(r) => r,
        Err(e) => return internal(e),
    };
    // Visible on this replica at once; other replicas pick it up on sync.
    if let Err(e) = sync::sync_once(&state.store, &state.policies, &state.metrics).await {
        tracing::warn!(error = %e, "stored, but the local policy set is not refreshed yet");
    }
    tracing::info!(policy = %doc.metadata.name, revision, "policy pushed");
    ok(&serde_json::json!({"name": doc.metadata.name, "revision": revision}))
}

async fn get_policy(name: String, query: PolicyQuery, state: Arc<ServiceState>) -> Reply {
    if query.wants_history() {
        return match state.store.policy_history(&name).await {
            Ok(h) if h.is_empty() => json_error(StatusCode::NOT_FOUND, "no such pushed policy"),
            Ok(h) => ok(&h),
            Err(e) => internal(e),
        };
    }
    match state.store.current_policies().await {
        Ok(pushed) => match active_records(&state, pushed)
            .into_iter()
            .find(|r| r.name == name)
        {
            Some(record) => ok(&record),
            None => json_error(StatusCode::NOT_FOUND, &format!("no policy named {name:?}")),
        },
        Err(e) => internal(e),
    }
}

async fn delete_policy(name: String, state: Arc<ServiceState>) -> Reply {
    if state
        .policies
        .directory_documents()
        .iter()
        .any(|(_, d)| d.metadata.name == name)
    {
        return json_error(
            StatusCode::CONFLICT,
            &format!("policy {name:?} is defined in the policy directory; remove the file instead"),
        );
    }
    match state.store.delete_policy(&name, "admin").await {
        Ok(true) => {
            if let Err(e) = sync::sync_once(&state.store, &state.policies, &state.metrics).await {
                tracing::warn!(error = %e, "stored, but the local policy set is not refreshed yet");
            }
            ok(&serde_json::json!({"deleted": name}))
        }
        Ok(false) => json_error(
            StatusCode::NOT_FOUND,
            &format!("no pushed policy named {name:?}"),
        ),
        Err(e) => internal(e),
    }
}

/// Long-poll: with `etag` equal to the current bundle's, waits up to
/// `wait` seconds for a change and answers 304 if none came.
async fn runtime_bundle(
    query: BundleQuery,
    auth: Option<String>,
    state: Arc<ServiceState>,
) -> Reply {
    // Enforcers in a cluster fetch with their pod-bound token, as they report.
    let who = match reporter(&state, auth.as_deref()).await {
        Ok(who) => who,
        Err(reply) => return reply,
    };
    let max_wait = Duration::from_secs(state.settings.max_wait_secs);
    let request = match query.parse(max_wait) {
        Ok(r) => r,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    if let Reporter::Workload(workload) = &who {
        if workload.namespace != request.namespace {
            return forbidden_for(workload, &request.namespace, "*");
        }
    }
    let mut changes = state.policies.subscribe();
    let mut stopping = state.stopping.clone();
    let deadline = tokio::time::Instant::now() + request.wait;
    loop {
        let bundle = state
            .policies
            .current()
            .runtime_bundle(&request.namespace, &request.labels);
        if bundle.etag != request.etag {
            return ok(&bundle);
        }
        if *stopping.borrow() {
            break;
        }
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { break },
            _ = stopping.changed() => break,
            () = tokio::time::sleep_until(deadline) => break,
        }
    }
    Response::builder()
        .status(StatusCode::NOT_MODIFIED)
        .body(Vec::new())
        .unwrap_or_default()
}

async fn ingest_reports(auth: Option<String>, body: Bytes, state: Arc<ServiceState>) -> Reply {
    let caller = match reporter(&state, auth.as_deref()).await {
        Ok(c) => c,
        Err(reply) => return reply,
    };
    let batch: ReportBatch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("malformed report batch: {e}"),
            )
        }
    };
    if let Err(problem) = check_batch(&batch, state.settings.max_batch_events) {
        return json_error(StatusCode::BAD_REQUEST, &problem.to_string());
    }
    if let Reporter::Workload(w) = &caller {
        if !w.may_report_for(&batch.pod.namespace, &batch.pod.name) {
            return forbidden_for(w, &batch.pod.namespace, &batch.pod.name);
        }
    }
    match state.store.insert_events(&batch.pod, &batch.events).await {
        Ok(stored) => {
            state
                .metrics
                .events_received
                .inc_by(batch.events.len() as u64);
            state.metrics.events_stored.inc_by(stored as u64);
            ok(&IngestResult {
                received: batch.events.len(),
                stored,
            })
        }
        Err(e) => internal(e),
    }
}

async fn record_heartbeat(auth: Option<String>, body: Bytes, state: Arc<ServiceState>) -> Reply {
    let caller = match reporter(&state, auth.as_deref()).await {
        Ok(c) => c,
        Err(reply) => return reply,
    };
    let beat: Heartbeat = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                &format!("malformed heartbeat: {e}"),
            )
        }
    };
    if beat.pod.namespace.is_empty() || beat.pod.name.is_empty() || beat.agent.boot_id.is_empty() {
        return json_error(
            StatusCode::BAD_REQUEST,
            "pod.namespace, pod.name and agent.bootId are required",
        );
    }
    if let Reporter::Workload(w) = &caller {
        if !w.may_report_for(&beat.pod.namespace, &beat.pod.name) {
            return forbidden_for(w, &beat.pod.namespace, &beat.pod.name);
        }
    }
    match state.store.record_heartbeat(&beat).await {
        Ok(event) => {
            if let Some(e) = event {
                tracing::info!(namespace = %beat.pod.namespace, pod = %beat.pod.name, rule = %e.rule, "{}", e.message);
            }
            ok(&serde_json::json!({"state": beat.agent.state}))
        }
        Err(e) => internal(e),
    }
}

async fn list_agents(state: Arc<ServiceState>) -> Reply {
    match state.store.agents().await {
        Ok(agents) => ok(&agents),
        Err(e) => internal(e),
    }
}

/// Why a report batch is refused as a whole.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
enum BatchError {
    #[error("pod.namespace and pod.name are required")]
    NoPod,
    #[error("{count} events in one batch; the limit is {limit}")]
    TooMany { count: usize, limit: usize },
    #[error("events[{0}].id must be 1..=128 characters")]
    BadId(usize),
}

fn check_batch(batch: &ReportBatch, max_events: usize) -> Result<(), BatchError> {
    if batch.pod.namespace.is_empty() || batch.pod.name.is_empty() {
        return Err(BatchError::NoPod);
    }
    if batch.events.len() > max_events {
        return Err(BatchError::TooMany {
            count: batch.events.len(),
            limit: max_events,
        });
    }
    match batch
        .events
        .iter()
        .position(|e| e.id.is_empty() || e.id.len() > 128)
    {
        Some(i) => Err(BatchError::BadId(i)),
        None => Ok(()),
    }
}

async fn query_events(query: EventsQuery, state: Arc<ServiceState>) -> Reply {
    match query.parse() {
        Ok(q) => match state.store.query_events(&q).await {
            Ok(events) => ok(&events),
            Err(e) => internal(e),
        },
        Err(problem) => json_error(StatusCode::BAD_REQUEST, &problem.to_string()),
    }
}
