//! `/api/v1/events`: stored events for admins.

use std::sync::Arc;

use crate::service::query::EventsQuery;
use crate::service::{ok, Answer, ApiError, ServiceState};

pub async fn query_events(query: EventsQuery, state: Arc<ServiceState>) -> Answer {
    let query = query
        .parse()
        .map_err(|problem| ApiError::bad_request(problem.to_string()))?;
    ok(&state.store.query_events(&query).await?)
}
