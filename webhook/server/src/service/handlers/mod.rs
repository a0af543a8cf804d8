//! One file per resource of the service API; each handler gets a caller
//! already authorised by the route (admin) or checks the reporter itself.

pub mod bundle;
pub mod enforcers;
pub mod events;
pub mod exceptions;
pub mod ingest;
pub mod observations;
pub mod policies;
mod versioned;

use crate::service::{sync, ServiceState};

/// After a push or delete: the change is visible on this replica at once
/// (other replicas pick it up on their next sync).
async fn refresh_local_set(state: &ServiceState) {
    if let Err(e) = sync::sync_once(&state.store, &state.policies, &state.metrics).await {
        tracing::warn!(error = %e, "stored, but the local policy set is not refreshed yet");
    }
}
