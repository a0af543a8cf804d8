//! Pushed policies and exceptions live in the database; every replica mirrors them into
//! its policy set, at start and whenever the database's change marker moves.
//! On PostgreSQL a push through any replica is announced (`NOTIFY`) and heard
//! here at once (`LISTEN`); the periodic check of the marker remains, for
//! SQLite and for what a lost listener connection missed.
//! The same periodic pass notices enforcers that fell silent: an app that
//! stops or kills its enforcer cannot stop the service from seeing that.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use crate::db::{Store, StoreError};
use crate::metrics::Metrics;
use crate::sources::{record_reload, PolicyStore};

/// Re-reads the pushed policies into `policies`.
pub async fn sync_once(
    store: &Store,
    policies: &PolicyStore,
    metrics: &Metrics,
) -> Result<(), StoreError> {
    let pushed = store.current_policies().await?;
    let result = policies.set_pushed(pushed.into_iter().map(|r| r.document).collect());
    record_reload(policies, metrics, result, "policy database");
    let exceptions = store.current_exceptions().await?;
    let result =
        policies.set_pushed_exceptions(exceptions.into_iter().map(|r| r.exception).collect());
    record_reload(policies, metrics, result, "policy database (exceptions)");
    Ok(())
}

/// Every `every`: marks silent enforcers missing, counts enforcers and
/// checks the change marker. On `pushed`: checks the change marker at once.
pub async fn sync_loop(
    store: Store,
    policies: Arc<PolicyStore>,
    every: Duration,
    pushed: Arc<Notify>,
    metrics: Arc<Metrics>,
) {
    let mut seen = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let periodic = tokio::select! {
            _ = tick.tick() => true,
            () = pushed.notified() => false,
        };
        if periodic {
            check_enforcers(&store, &metrics).await;
        }
        match store.change_marker().await {
            Ok(marker) if Some(marker) == seen => {}
            Ok(marker) => match sync_once(&store, &policies, &metrics).await {
                Ok(()) => seen = Some(marker),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read pushed policies; keeping the current set")
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "policy database unreachable; keeping the current set")
            }
        }
    }
}

async fn check_enforcers(store: &Store, metrics: &Metrics) {
    match store.mark_missing_enforcers(crate::db::now_ms()).await {
        Ok(missing) => {
            for pod in missing {
                tracing::warn!(namespace = %pod.namespace, pod = %pod.name, "enforcer missing: no heartbeat");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot check enforcer heartbeats"),
    }
    match store.enforcer_totals().await {
        Ok(totals) => metrics.set_enforcers(&totals),
        Err(e) => tracing::warn!(error = %e, "cannot count enforcers"),
    }
}

/// PostgreSQL: wakes `pushed` for every push announced by any replica, and
/// once after each (re)connection (what was announced meanwhile is lost).
/// Returns at once on SQLite.
pub async fn listen_loop(store: Store, pushed: Arc<Notify>, metrics: Arc<Metrics>) {
    loop {
        match store.push_listener().await {
            Ok(None) => return,
            Ok(Some(mut listener)) => {
                metrics.push_listener_up.set(1);
                pushed.notify_one();
                loop {
                    match listener.try_recv().await {
                        Ok(Some(_)) => pushed.notify_one(),
                        // Lost; the next call reconnects.
                        Ok(None) => {
                            tracing::warn!("push listener lost its connection; reconnecting");
                            pushed.notify_one();
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "push listener failed; pushes arrive by polling until it is back");
                            break;
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for pushes; they arrive by polling until then")
            }
        }
        metrics.push_listener_up.set(0);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
