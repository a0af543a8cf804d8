//! The central policy service under `/api/v1`:
//!
//! | Method | Path | Who | What |
//! | --- | --- | --- | --- |
//! | GET | `/api/v1/policies` | admin | active policies (directory and pushed) |
//! | PUT | `/api/v1/policies` | admin | push a policy (YAML or JSON); new revision |
//! | GET | `/api/v1/policies/{name}` | admin | one policy; `?history=true` for every revision |
//! | DELETE | `/api/v1/policies/{name}` | admin | delete a pushed policy |
//! | GET | `/api/v1/exceptions` | admin | PolicyExceptions (files, resources, pushed) with their state |
//! | PUT | `/api/v1/exceptions` | admin | push a PolicyException; new revision |
//! | GET | `/api/v1/exceptions/{name}` | admin | one exception; `?history=true` for every revision |
//! | DELETE | `/api/v1/exceptions/{name}` | admin | delete a pushed exception |
//! | GET | `/api/v1/bundle` | enforcer | runtime rules for a pod; long-poll on `etag` |
//! | POST | `/api/v1/reports` | enforcer | a batch of events (idempotent by event id) |
//! | POST | `/api/v1/heartbeat` | enforcer | liveness; silence becomes `enforcer/missing`, a new boot `enforcer/returned` |
//! | POST | `/api/v1/sync` | enforcer | a heartbeat, then the long-poll of `/api/v1/bundle` (one connection per enforcer) |
//! | GET | `/api/v1/enforcers` | admin | every enforcer, whether it is reporting, which protections it reports off |
//! | GET | `/api/v1/events` | admin | stored events by namespace, pod, kind, time |
//! | POST | `/api/v1/observations` | enforcer | what a pod's enforcer saw, summed; added to its workload's totals |
//! | GET | `/api/v1/workloads` | admin | workloads observed, with the mode of the runtime policies selecting them |
//! | GET | `/api/v1/workloads/{namespace}/{kind}/{name}` | admin | one workload's observed items; `?since=` |

pub mod auth;
mod bundles;
mod error;
mod handlers;
pub mod heartbeats;
pub mod query;
pub mod reports;
pub mod sync;

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::watch;
use warp::filters::BoxedFilter;
use warp::http::{Response, StatusCode};
use warp::{Filter, Rejection};

use crate::db::Store;
use crate::metrics::{BusyLabels, Metrics, Refused};
use crate::reply::{json_reply, limited_body, Unauthorized};
use crate::sources::PolicyStore;
use crate::workloads::WorkloadResolver;
use auth::{Author, Role, Tokens};
pub use bundles::BundleCache;
pub(crate) use error::{Answer, ApiError};
use heartbeats::{Heartbeats, NotWritten};
use palisade_engine::settings::ServiceSettings;
use query::{BundleQuery, EventsQuery, PolicyQuery, WorkloadQuery, WorkloadsQuery};

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
    /// Which workload a reporting pod belongs to (the pod itself without
    /// a cluster).
    pub workloads: WorkloadResolver,
    /// Heartbeats on their way to the database, written in batches.
    pub heartbeats: Heartbeats,
    /// Report and observation batches being written; one that cannot get
    /// a turn within `settings.write_wait_ms` is refused with `429`.
    pub writes: tokio::sync::Semaphore,
    /// The encoded runtime bundle of each policy selection, per policy set.
    pub bundles: BundleCache,
}

impl ServiceState {
    /// A `429` for `refused`, counted.
    pub(crate) fn busy(&self, refused: Refused, message: impl Into<String>) -> ApiError {
        self.metrics
            .busy
            .get_or_create(&BusyLabels { refused })
            .inc();
        ApiError::Busy {
            message: message.into(),
        }
    }

    /// The answer for a heartbeat that was not written.
    pub(crate) fn not_written(&self, error: NotWritten) -> ApiError {
        match error {
            NotWritten::Full(full) => self.busy(Refused::Heartbeat, full.to_string()),
            NotWritten::Store(e) => ApiError::Batch(e),
            NotWritten::Stopping => ApiError::Stopping,
        }
    }

    /// A turn to write a batch `refused` would be, or a `429` when none
    /// comes within `settings.write_wait_ms`.
    pub(crate) async fn write_turn(
        &self,
        refused: Refused,
    ) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
        let wait = std::time::Duration::from_millis(self.settings.write_wait_ms);
        match tokio::time::timeout(wait, self.writes.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            Ok(Err(_)) => Err(ApiError::Stopping),
            Err(_) => Err(self.busy(
                refused,
                format!("no write could start within {} ms", wait.as_millis()),
            )),
        }
    }
}

/// Writes that may wait for the database at once, per replica: enough to
/// keep every pooled connection busy, few enough that a slow database
/// turns into `429`s rather than a pile of waiting requests.
/// (Below the PostgreSQL pool of 16, which heartbeats and reads share.)
pub const CONCURRENT_WRITES: usize = 12;

/// Who is reporting or fetching policy.
pub(crate) enum Reporter {
    /// A configured report (or admin) token: trusted for any pod.
    Trusted,
    /// A pod's own token: limited to that pod.
    Workload(auth::Workload),
}

pub(crate) async fn reporter(
    state: &ServiceState,
    header: Option<&str>,
) -> Result<Reporter, ApiError> {
    if state.tokens.allows(header, Role::Reporter) {
        return Ok(Reporter::Trusted);
    }
    if let Some(reviewer) = &state.reviewer {
        if let Some(workload) = reviewer
            .review(header)
            .await
            .map_err(ApiError::TokenReview)?
        {
            return Ok(Reporter::Workload(workload));
        }
    }
    Err(ApiError::unauthorized())
}

pub(crate) fn forbidden_for(workload: &auth::Workload, namespace: &str, pod: &str) -> ApiError {
    ApiError::forbidden(format!(
        "token of {}/{} ({}) cannot act for pod {namespace}/{pod}",
        workload.namespace,
        workload.pod.as_deref().unwrap_or("any pod"),
        workload.service_account
    ))
}

pub(crate) type Reply = Response<Vec<u8>>;

/// Routes under `/api/v1`.
pub fn routes(state: Arc<ServiceState>, max_body: u64) -> BoxedFilter<(Reply,)> {
    use handlers::{bundle, enforcers, events, exceptions, ingest, observations, policies};
    let author = admin_only(state.clone());
    let admin = author.clone().map(|_: Author| ()).untuple_one();
    let with_state = warp::any().map(move || state.clone());
    let auth = warp::header::optional::<String>("authorization");
    let api = warp::path("api").and(warp::path("v1"));

    let sync = api
        .and(warp::path("sync"))
        .and(warp::path::end())
        .and(warp::post())
        .and(warp::query::<BundleQuery>())
        .and(auth)
        .and(limited_body(max_body))
        .and(with_state.clone())
        .then(bundle::sync)
        .boxed();
    let list = api
        .and(warp::path("policies"))
        .and(warp::path::end())
        .and(warp::get())
        .and(admin.clone())
        .and(with_state.clone())
        .then(policies::list);
    let push = api
        .and(warp::path("policies"))
        .and(warp::path::end())
        .and(warp::put())
        .and(author.clone())
        .and(limited_body(max_body))
        .and(with_state.clone())
        .then(policies::push);
    let get = api
        .and(warp::path!("policies" / String))
        .and(warp::get())
        .and(admin.clone())
        .and(warp::query::<PolicyQuery>())
        .and(with_state.clone())
        .then(policies::get);
    let delete = api
        .and(warp::path!("policies" / String))
        .and(warp::delete())
        .and(author.clone())
        .and(with_state.clone())
        .then(policies::delete);
    let list_exceptions = api
        .and(warp::path("exceptions"))
        .and(warp::path::end())
        .and(warp::get())
        .and(admin.clone())
        .and(with_state.clone())
        .then(exceptions::list);
    let push_exception = api
        .and(warp::path("exceptions"))
        .and(warp::path::end())
        .and(warp::put())
        .and(author.clone())
        .and(limited_body(max_body))
        .and(with_state.clone())
        .then(exceptions::push);
    let get_exception = api
        .and(warp::path!("exceptions" / String))
        .and(warp::get())
        .and(admin.clone())
        .and(warp::query::<PolicyQuery>())
        .and(with_state.clone())
        .then(exceptions::get);
    let delete_exception = api
        .and(warp::path!("exceptions" / String))
        .and(warp::delete())
        .and(author.clone())
        .and(with_state.clone())
        .then(exceptions::delete);
    let bundle = api
        .and(warp::path("bundle"))
        .and(warp::path::end())
        .and(warp::get())
        .and(warp::query::<BundleQuery>())
        .and(auth)
        .and(with_state.clone())
        .then(bundle::runtime_bundle);
    let reports = api
        .and(warp::path("reports"))
        .and(warp::path::end())
        .and(warp::post())
        .and(auth)
        .and(limited_body(max_body))
        .and(with_state.clone())
        .then(ingest::ingest_reports);
    let heartbeat = api
        .and(warp::path("heartbeat"))
        .and(warp::path::end())
        .and(warp::post())
        .and(auth)
        .and(limited_body(max_body))
        .and(with_state.clone())
        .then(enforcers::record_heartbeat);
    // `agents` is the path earlier CLIs ask for.
    let enforcers = api
        .and(warp::path("enforcers").or(warp::path("agents")).unify())
        .and(warp::path::end())
        .and(warp::get())
        .and(admin.clone())
        .and(with_state.clone())
        .then(enforcers::list_enforcers);
    let events = api
        .and(warp::path("events"))
        .and(warp::path::end())
        .and(warp::get())
        .and(admin.clone())
        .and(warp::query::<EventsQuery>())
        .and(with_state.clone())
        .then(events::query_events);
    let observe = api
        .and(warp::path("observations"))
        .and(warp::path::end())
        .and(warp::post())
        .and(auth)
        .and(limited_body(max_body))
        .and(with_state.clone())
        .then(observations::ingest);
    let workloads = api
        .and(warp::path("workloads"))
        .and(warp::path::end())
        .and(warp::get())
        .and(admin.clone())
        .and(warp::query::<WorkloadsQuery>())
        .and(with_state.clone())
        .then(observations::list_workloads);
    let workload = api
        .and(warp::path!("workloads" / String / String / String))
        .and(warp::get())
        .and(admin)
        .and(warp::query::<WorkloadQuery>())
        .and(with_state)
        .then(observations::get_workload);
    // Apart from the rest, boxed: a request's future is as large as the
    // largest route's, and each connected enforcer holds a long-poll.
    let rest = list
        .or(push)
        .unify()
        .or(get)
        .unify()
        .or(delete)
        .unify()
        .or(list_exceptions)
        .unify()
        .or(push_exception)
        .unify()
        .or(get_exception)
        .unify()
        .or(delete_exception)
        .unify()
        .or(bundle)
        .unify()
        .or(reports)
        .unify()
        .or(heartbeat)
        .unify()
        .or(enforcers)
        .unify()
        .or(events)
        .unify()
        .or(observe)
        .unify()
        .or(workloads)
        .unify()
        .or(workload)
        .unify()
        .boxed();
    sync.or(rest).unify().map(error::respond).boxed()
}

/// Passes callers with an admin token, as the author of what they change;
/// the others are refused (401) before their body is read.
fn admin_only(
    state: Arc<ServiceState>,
) -> impl Filter<Extract = (Author,), Error = Rejection> + Clone {
    warp::header::optional::<String>("authorization").and_then(move |auth: Option<String>| {
        let author = state.tokens.admin(auth.as_deref());
        async move { author.ok_or_else(|| warp::reject::custom(Unauthorized)) }
    })
}

pub(crate) fn ok<T: Serialize>(body: &T) -> Answer {
    Ok(json_reply(StatusCode::OK, body))
}
