//! `/api/v1/events`: stored events for admins.

use std::sync::Arc;

use warp::http::StatusCode;

use crate::reply::json_error;
use crate::service::query::EventsQuery;
use crate::service::{internal, ok, Reply, ServiceState};

pub async fn query_events(query: EventsQuery, state: Arc<ServiceState>) -> Reply {
    match query.parse() {
        Ok(q) => match state.store.query_events(&q).await {
            Ok(events) => ok(&events),
            Err(e) => internal(e),
        },
        Err(problem) => json_error(StatusCode::BAD_REQUEST, &problem.to_string()),
    }
}
