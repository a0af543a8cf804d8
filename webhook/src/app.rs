//! Wiring: settings -> policies, certificates, metrics -> a running server.
//! Used by the `palisade serve` command and by the integration tests.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::policy::store::{self, PolicyStore};
use crate::server::{self, AppState};
use crate::tls::{self, CertStore};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("loading policies: {0}")]
    Policies(#[from] crate::policy::LoadError),
    #[error("setting up TLS: {0}")]
    Tls(#[from] tls::TlsError),
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

    let watchers = [
        tokio::spawn(store::watch(
            policies.clone(),
            Duration::from_secs(settings.policies.reload_interval_secs),
            metrics.clone(),
        )),
        tokio::spawn(tls::watch(
            certs,
            Duration::from_secs(settings.tls.reload_interval_secs),
            metrics.clone(),
        )),
    ];
    let grace = Duration::from_secs(settings.shutdown_grace_secs);
    let state = Arc::new(AppState {
        settings,
        policies,
        metrics,
        ready: false.into(),
    });
    let routes = server::routes(state.clone());
    let (stop, stopped) = oneshot::channel::<()>();
    let serving_state = state.clone();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
            serving_state.ready.store(false, Ordering::Relaxed);
            tracing::info!("shutting down: no new connections, finishing in-flight requests");
        };
        server::serve(listener, acceptor, routes, shutdown, grace).await;
        for w in watchers {
            w.abort();
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
