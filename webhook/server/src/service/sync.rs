//! Pushed policies and exceptions live in the database; every replica mirrors them into
//! its policy set, at start and whenever the database's change marker moves.
//! The same periodic pass notices enforcers that fell silent: an app that
//! stops or kills its enforcer cannot stop the service from seeing that.

use std::sync::Arc;
use std::time::Duration;

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

/// Polls the change marker every `every`, forever.
pub async fn sync_loop(
    store: Store,
    policies: Arc<PolicyStore>,
    every: Duration,
    metrics: Arc<Metrics>,
) {
    let mut seen = None;
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
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
