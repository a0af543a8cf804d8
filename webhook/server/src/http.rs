//! HTTPS server: warp routes served over rustls by hyper, with graceful
//! shutdown (stop accepting, let in-flight requests finish).

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use warp::http::{header, Response, StatusCode};
use warp::{Filter, Rejection, Reply};

use tracing::Instrument;

use crate::images::ImageResolver;
use crate::metrics::Metrics;
use crate::reply::{json_error, limited_body, rejection_reply};
use crate::sources::PolicyStore;
use palisade_engine::admission::mutate::ImageCommands;
use palisade_engine::admission::{self, Endpoint, Outcome};
use palisade_engine::settings::Settings;

/// Everything a request handler needs.
pub struct AppState {
    pub settings: Settings,
    /// The admission decisions, precomputed from `settings`.
    pub webhook: admission::Webhook,
    pub policies: Arc<PolicyStore>,
    pub metrics: Arc<Metrics>,
    /// False while starting and once shutdown begins (drains load balancers).
    pub ready: AtomicBool,
    /// The policy service, when that role is enabled.
    pub service: Option<Arc<crate::service::ServiceState>>,
    /// Registry lookups of image commands for prevention, when enabled.
    pub images: Option<Arc<ImageResolver>>,
}

/// All routes: `/mutate`, `/validate`, `/healthz`, `/readyz`, `/metrics`.
pub fn routes(
    state: Arc<AppState>,
) -> impl Filter<Extract = (impl Reply,), Error = Infallible> + Clone {
    let with_state = {
        let state = state.clone();
        warp::any().map(move || state.clone())
    };
    let limit = state.settings.admission.max_body_bytes;
    let review = |endpoint: Endpoint| {
        warp::path(endpoint.as_str())
            .and(warp::path::end())
            .and(warp::post())
            .and(limited_body(limit))
            .and(with_state.clone())
            .and_then(move |body: Bytes, state: Arc<AppState>| async move {
                Ok::<_, Infallible>(handle_review(endpoint, &body, &state).await)
            })
    };
    let healthz = warp::path("healthz")
        .and(warp::path::end())
        .and(warp::get())
        .map(|| "ok");
    let readyz = warp::path("readyz")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<AppState>| {
            if state.ready.load(Ordering::Relaxed) {
                warp::reply::with_status("ready", StatusCode::OK)
            } else {
                warp::reply::with_status("not ready", StatusCode::SERVICE_UNAVAILABLE)
            }
        });
    let metrics = warp::path("metrics")
        .and(warp::path::end())
        .and(warp::get())
        .and(with_state.clone())
        .map(|state: Arc<AppState>| {
            warp::reply::with_header(
                state.metrics.render(),
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )
        });
    let service = match &state.service {
        Some(service) => crate::service::routes(service.clone(), limit),
        None => warp::any()
            .and_then(|| async { Err::<Response<Vec<u8>>, Rejection>(warp::reject::not_found()) })
            .boxed(),
    };
    // Boxed: a request's future is as large as the largest route's, and
    // the enforcers' long-polls (under `service`) are most of the requests
    // held at once.
    review(Endpoint::Mutate)
        .boxed()
        .or(review(Endpoint::Validate).boxed())
        .or(healthz)
        .or(readyz)
        .or(metrics)
        .or(service)
        .recover(rejection_reply)
}

async fn handle_review(endpoint: Endpoint, body: &[u8], state: &AppState) -> Response<Vec<u8>> {
    let started = Instant::now();
    let reply = match admission::decode(body) {
        Err(e) => {
            state.metrics.count(endpoint, Outcome::Unreadable);
            tracing::warn!(endpoint = endpoint.as_str(), error = %e, "rejected AdmissionReview");
            json_error(StatusCode::BAD_REQUEST, &e.to_string())
        }
        Ok(req) => {
            let span = tracing::info_span!(
                "admission",
                endpoint = endpoint.as_str(),
                uid = %req.uid,
                namespace = req.namespace.as_deref().unwrap_or(""),
                kind = %req.kind.kind,
                name = %req.name,
                operation = ?req.operation,
                dry_run = req.dry_run,
            );
            decide(endpoint, &req, state).instrument(span).await
        }
    };
    state
        .metrics
        .observe(endpoint, started.elapsed().as_secs_f64());
    reply
}

/// The engine's answer to a decoded review. Only a pod that prevention
/// confines and that runs an image's own command waits for a registry
/// lookup; everything else is decided without awaiting anything.
async fn decide(
    endpoint: Endpoint,
    req: &admission::Request,
    state: &AppState,
) -> Response<Vec<u8>> {
    let policies = state.policies.current();
    let (response, outcome) = if endpoint == Endpoint::Mutate {
        let lookups = state
            .images
            .as_ref()
            .and_then(|resolver| Some((resolver, state.webhook.image_lookups(req, &policies)?)));
        let images = match lookups {
            Some((resolver, lookups)) => resolver.resolve(&lookups).await,
            None => ImageCommands::default(),
        };
        let (response, outcome, injection) =
            state.webhook.mutate_explained(req, &policies, &images);
        // Dry runs change nothing, so they count as no injection.
        if let Some(injection) = injection.filter(|_| !req.dry_run) {
            state.metrics.count_injection(&injection);
        }
        (response, outcome)
    } else {
        state.webhook.validate(req, &policies)
    };
    state.metrics.count(endpoint, outcome);
    match outcome {
        Outcome::Denied | Outcome::Invalid => {
            tracing::info!(outcome = outcome.as_str(), message = %response.status.message, "admission decided")
        }
        _ => tracing::debug!(outcome = outcome.as_str(), "admission decided"),
    }
    Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(admission::encode(&response))
        .unwrap_or_default()
}

/// hyper's HTTP/1 read buffer, the least it allows: each held connection
/// (an enforcer's long-poll, most of them) keeps one. It also bounds a
/// request's head (request line and headers), as nginx's default does.
const HTTP1_BUFFER_BYTES: usize = 8 * 1024;

/// Connection limits of [`serve`].
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// In-flight requests get this long after `shutdown` resolves.
    pub grace: Duration,
    /// An HTTP/1 client must send a request's headers within this time, or
    /// the connection is closed (a slow client cannot hold it forever).
    /// Idle keep-alive connections are closed after this long too.
    pub header_read_timeout: Duration,
    /// Connections held at once; one more is closed as soon as it is
    /// accepted, so that its client backs off (or reaches another replica)
    /// instead of the process running out of file descriptors.
    pub max_connections: usize,
}

/// Raises the soft open-files limit to the hard one (each held connection
/// is a file descriptor); returns the limit in force.
pub fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!(error = %e, soft, hard, "cannot raise the open-files limit");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit");
            1024
        }
    }
}

/// The connection limit for `configured` (0: from the open-files limit,
/// keeping 256 descriptors for the database, files and the kubelet's probes).
pub fn connection_limit(configured: usize, open_files: u64) -> usize {
    match configured {
        0 => (open_files.saturating_sub(256) as usize).max(64),
        n => n,
    }
}

/// Serves `routes` over TLS on `listener` until `shutdown` resolves, then
/// waits up to `options.grace` for in-flight connections.
pub async fn serve<F, R>(
    listener: TcpListener,
    tls: TlsAcceptor,
    routes: F,
    shutdown: impl Future<Output = ()>,
    options: ServeOptions,
    metrics: Arc<Metrics>,
) where
    F: Filter<Extract = (R,), Error = Infallible> + Clone + Send + Sync + 'static,
    R: Reply,
{
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(options.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            metrics.connections_refused.inc();
            tracing::debug!(%peer, limit = options.max_connections, "connection refused: limit reached");
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let tls = tls.clone();
        let metrics = metrics.clone();
        let service = TowerToHyperService::new(warp::service(routes.clone()));
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _open = OpenConnection::new(slot, &metrics);
            let stream = match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await
            {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
            let io = TokioIo::new(stream);
            let ended = if h2 {
                // The apiserver's, mostly: boxed, so that the many HTTP/1
                // connections enforcers hold do not carry HTTP/2's state.
                let connection = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .serve_connection(io, service);
                Box::pin(watcher.watch(connection)).await
            } else {
                let connection = http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(options.header_read_timeout)
                    .max_buf_size(HTTP1_BUFFER_BYTES)
                    // No read while a request is being answered: that read
                    // would need a second buffer for each waiting long-poll.
                    // A client gone meanwhile is noticed when its answer is
                    // written, at most `service.max_wait_secs` later.
                    .half_close(true)
                    .serve_connection(io, service);
                watcher.watch(connection).await
            };
            if let Err(e) = ended {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(options.grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("in-flight connections did not finish within the grace period");
    }
}

/// One held connection: its slot and its count in `connections_open`,
/// both given back when it ends however it ends.
struct OpenConnection<'a> {
    _slot: tokio::sync::OwnedSemaphorePermit,
    metrics: &'a Metrics,
}

impl<'a> OpenConnection<'a> {
    fn new(slot: tokio::sync::OwnedSemaphorePermit, metrics: &'a Metrics) -> Self {
        metrics.connections_open.inc();
        Self {
            _slot: slot,
            metrics,
        }
    }
}

impl Drop for OpenConnection<'_> {
    fn drop(&mut self) {
        self.metrics.connections_open.dec();
    }
}
