//! Wiring: settings -> policies, certificates, metrics -> a running server.
//! Used by the `palisade serve` command and by the integration tests.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::db::Store;
use crate::http::{self, AppState};
use crate::images::ImageResolver;
use crate::metrics::Metrics;
use crate::service::auth::{TokenReviewer, Tokens};
use crate::service::heartbeats::Heartbeats;
use crate::service::{sync, ServiceState};
use crate::sources::{self, PolicyStore};
use crate::tls::{self, CertStore};
use crate::workloads::WorkloadResolver;
use palisade_engine::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("loading policies: {0}")]
    Policies(#[from] palisade_engine::policy::LoadError),
    #[error("setting up TLS: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("opening the database: {0}")]
    Store(#[from] crate::db::StoreError),
    #[error("policy service tokens: {0}")]
    Tokens(#[from] crate::service::auth::TokenError),
    #[error("connecting to the Kubernetes API (TokenReview, CRDs, audit, PolicyReports): {0}")]
    Kube(#[from] kube::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// A server running in the background.
pub struct Running {
    pub addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Running {
    /// Stops accepting, lets in-flight requests finish, and waits.
    pub async fn shutdown(mut self) {
        self.state.ready.store(false, Ordering::Relaxed);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }

    /// Resolves when the server ends on its own (it only ends on shutdown).
    pub async fn wait(mut self) {
        let _ = (&mut self.task).await;
    }

    pub fn stopper(&mut self) -> Option<oneshot::Sender<()>> {
        self.stop.take()
    }
}

pub async fn start(settings: Settings) -> Result<Running, StartError> {
    let metrics = Arc::new(Metrics::new());
    let policies = Arc::new(PolicyStore::open(&settings.policies.dir)?);
    metrics.policies_loaded.set(policies.current().len() as i64);
    tracing::info!(
        dir = %settings.policies.dir.display(),
        policies = policies.current().len(),
        "policies loaded"
    );

    let (stopping_tx, stopping) = watch::channel(false);
    let mut background = Vec::new();
    if settings.policies.watch_crds {
        let client = kube::Client::try_default().await?;
        background.push(tokio::spawn(crate::sources::crd::watch(
            client,
            policies.clone(),
            metrics.clone(),
        )));
        tracing::info!("watching RuntimePolicy and PolicyException resources");
    }
    if settings.audit.enabled {
        background.push(tokio::spawn(crate::audit::run(
            kube::Client::try_default().await?,
            settings.clone(),
            policies.clone(),
            metrics.clone(),
            stopping.clone(),
        )));
        tracing::info!("background audit enabled");
    }
    let service = if settings.service.enabled {
        let data_dir = &settings.service.data_dir;
        std::fs::create_dir_all(data_dir).map_err(|source| StartError::DataDir {
            path: data_dir.clone(),
            source,
        })?;
        let store = Store::open(&settings.service.database_url()).await?;
        // Pushed policies are part of the set before readiness.
        sync::sync_once(&store, &policies, &metrics).await?;
        let pushed = Arc::new(tokio::sync::Notify::new());
        background.push(tokio::spawn(sync::sync_loop(
            store.clone(),
            policies.clone(),
            Duration::from_millis(settings.service.sync_interval_ms),
            pushed.clone(),
            metrics.clone(),
        )));
        background.push(tokio::spawn(sync::listen_loop(
            store.clone(),
            pushed,
            metrics.clone(),
        )));
        tracing::info!(database = %redact(&settings.service.database_url()), "policy service enabled");
        // In a cluster (it verifies enforcers' tokens or writes
        // PolicyReports) the service also reads reporting pods and their
        // owners, to store observations per workload. Out of one (a local
        // `palisade serve`, the test suite) it asks no apiserver at all.
        let in_cluster =
            settings.service.token_review || settings.service.policy_report_interval_secs > 0;
        let kube = if in_cluster {
            Some(kube::Client::try_default().await?)
        } else {
            None
        };
        if let Some(client) = kube
            .clone()
            .filter(|_| settings.service.policy_report_interval_secs > 0)
        {
            background.push(tokio::spawn(crate::service::reports::publish_loop(
                client,
                store.clone(),
                Duration::from_secs(settings.service.policy_report_interval_secs),
            )));
        }
        let reviewer = kube
            .clone()
            .filter(|_| settings.service.token_review)
            .map(|client| TokenReviewer::new(client, &settings.service.token_audience));
        let heartbeats = Heartbeats::start(
            store.clone(),
            metrics.clone(),
            settings.service.max_queued_heartbeats,
        );
        Some(Arc::new(ServiceState {
            settings: settings.service.clone(),
            heartbeats,
            writes: tokio::sync::Semaphore::new(crate::service::CONCURRENT_WRITES),
            bundles: Default::default(),
            store,
            policies: policies.clone(),
            tokens: Tokens::load(&settings.service)?,
            metrics: metrics.clone(),
            stopping,
            reviewer,
            workloads: WorkloadResolver::new(kube),
        }))
    } else {
        None
    };

    let certs = CertStore::from_settings(&settings.tls)?;
    let acceptor = TlsAcceptor::from(certs.server_config()?);
    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: settings.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartError::Bind {
        addr: settings.listen,
        source,
    })?;

    background.extend([
        tokio::spawn(sources::watch_directory(
            policies.clone(),
            Duration::from_secs(settings.policies.reload_interval_secs),
            metrics.clone(),
        )),
        tokio::spawn(tls::watch(
            certs,
            Duration::from_secs(settings.tls.reload_interval_secs),
            metrics.clone(),
        )),
    ]);
    let open_files = http::raise_open_files_limit();
    let options = http::ServeOptions {
        grace: Duration::from_secs(settings.shutdown_grace_secs),
        header_read_timeout: Duration::from_secs(settings.header_read_timeout_secs),
        max_connections: http::connection_limit(settings.max_connections, open_files),
    };
    tracing::info!(
        open_files,
        max_connections = options.max_connections,
        "connection limit"
    );
    let drain = Duration::from_secs(settings.shutdown_drain_secs);
    let images = image_resolver(&settings.injection.image_lookup, &metrics).await;
    let state = Arc::new(AppState {
        webhook: palisade_engine::admission::Webhook::new(&settings),
        settings,
        policies,
        metrics,
        ready: false.into(),
        service,
        images,
    });
    let routes = http::routes(state.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let serving_state = state.clone();
    let serving_state_for_close = state.clone();
    let serve_metrics = state.metrics.clone();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
            // Drain: /readyz answers 503 while requests are still served,
            // so load balancers and endpoint controllers move traffic away
            // before the listener closes.
            serving_state.ready.store(false, Ordering::Relaxed);
            let _ = stopping_tx.send(true);
            if !drain.is_zero() {
                tracing::info!(
                    drain_secs = drain.as_secs(),
                    "shutting down: /readyz answers 503, still serving"
                );
                tokio::time::sleep(drain).await;
            }
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
        };
        http::serve(listener, acceptor, routes, shutdown, options, serve_metrics).await;
        for task in background {
            task.abort();
        }
        if let Some(service) = &serving_state_for_close.service {
            service.store.close().await;
        }
    });
    // Policies are loaded and the socket is bound: ready for traffic.
    state.ready.store(true, Ordering::Relaxed);
    tracing::info!(%addr, "serving /mutate, /validate, /healthz, /readyz, /metrics over TLS");
    Ok(Running {
        addr,
        state,
        stop: Some(stop),
        task,
    })
}

/// A database URL without its password, for logs.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_string(),
    }
}

/// The registry lookups prevention uses, when enabled. Pull secrets are
/// read through the apiserver when one is reachable; without it, lookups
/// are anonymous.
async fn image_resolver(
    settings: &palisade_engine::settings::ImageLookupSettings,
    metrics: &Arc<Metrics>,
) -> Option<Arc<ImageResolver>> {
    if !settings.enabled {
        return None;
    }
    let kube = if settings.pull_secrets {
        match kube::Client::try_default().await {
            Ok(client) => Some(client),
            Err(e) => {
                tracing::info!(error = %e, "no apiserver client: image lookups ignore pull secrets");
                None
            }
        }
    } else {
        None
    };
    match ImageResolver::new(settings.clone(), kube, metrics.clone()) {
        Ok(resolver) => Some(Arc::new(resolver)),
        Err(e) => {
            tracing::error!(error = %e, "cannot build the registry client: image lookups are off");
            None
        }
    }
}
