//! The one error every policy-service handler returns, and the reply it
//! becomes. The caller's mistakes keep their message, which says what to
//! fix; our own failures (the database) are logged under a request id and
//! the client sees only that id, never the database's words.

use std::sync::Arc;

use warp::http::{header, StatusCode};

use crate::db::StoreError;
use crate::reply::json_reply;
use crate::service::Reply;
use palisade_engine::policy::LoadError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The request is wrong, refused or names nothing: 4xx with `message`.
    #[error("{message}")]
    Client { status: StatusCode, message: String },
    /// The enforcer's token cannot be checked now; it may retry.
    #[error("cannot verify the token with the API server: {0}")]
    TokenReview(#[source] kube::Error),
    #[error("storage: {0}")]
    Store(#[from] StoreError),
    /// Storage failed for a batch this request was part of.
    #[error("storage: {0}")]
    Batch(Arc<StoreError>),
    /// Back-pressure: this replica takes no more of `refused` now; the
    /// caller keeps what it has and comes back after `Retry-After`.
    #[error("{message}; try again later")]
    Busy { message: String },
    /// The service is stopping; another replica will answer.
    #[error("the service is stopping")]
    Stopping,
}

/// The `Retry-After` of a `429`, in seconds: random within this range, so
/// that what one overload turned away does not come back all at once.
const RETRY_AFTER_SECS: std::ops::RangeInclusive<u64> = 1..=5;

/// What a handler answers: a reply, or the error that becomes one.
pub type Answer = Result<Reply, ApiError>;

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::client(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::client(StatusCode::NOT_FOUND, message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::client(StatusCode::CONFLICT, message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::client(StatusCode::FORBIDDEN, message)
    }

    pub fn unauthorized() -> Self {
        Self::client(StatusCode::UNAUTHORIZED, "missing or invalid bearer token")
    }

    fn client(status: StatusCode, message: impl Into<String>) -> Self {
        Self::Client {
            status,
            message: message.into(),
        }
    }

    /// `{"error": ...}` as every route answers; our own failures add the
    /// `requestId` under which the log has the cause.
    pub fn into_reply(self) -> Reply {
        match self {
            Self::Client { status, message } => {
                json_reply(status, &serde_json::json!({"error": message}))
            }
            // What the API server said helps the enforcer's operator and
            // holds nothing of ours.
            Self::TokenReview(ref e) => {
                tracing::warn!(error = %e, "TokenReview failed");
                json_reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &serde_json::json!({"error": self.to_string()}),
                )
            }
            Self::Store(e) => internal(&e),
            Self::Batch(e) => internal(&e),
            Self::Busy { .. } => {
                use rand::Rng;
                let mut reply = json_reply(
                    StatusCode::TOO_MANY_REQUESTS,
                    &serde_json::json!({"error": self.to_string()}),
                );
                let secs = rand::rng().random_range(RETRY_AFTER_SECS);
                reply
                    .headers_mut()
                    .insert(header::RETRY_AFTER, header::HeaderValue::from(secs));
                reply
            }
            Self::Stopping => json_reply(
                StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"error": self.to_string()}),
            ),
        }
    }
}

/// Our own failure: logged under a request id, which is all the client sees.
fn internal(e: &StoreError) -> Reply {
    let request_id = request_id();
    tracing::error!(%request_id, error = %e, "policy service request failed");
    json_reply(
        StatusCode::INTERNAL_SERVER_ERROR,
        &serde_json::json!({
            "error": format!("internal error; the server log has its cause under request id {request_id}"),
            "requestId": request_id,
        }),
    )
}

/// A pushed document that would not build: a name another source defines
/// is a conflict, anything else a bad request.
impl From<LoadError> for ApiError {
    fn from(error: LoadError) -> Self {
        let status = match error {
            LoadError::Duplicate { .. } => StatusCode::CONFLICT,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::client(status, error.to_string())
    }
}

/// Short and random: enough to find one failure in the log.
fn request_id() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 8];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// The reply for a handler's answer, whichever it is.
pub fn respond(answer: Answer) -> Reply {
    answer.unwrap_or_else(ApiError::into_reply)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(reply: &Reply) -> serde_json::Value {
        serde_json::from_slice(reply.body()).unwrap()
    }

    #[test]
    fn a_database_failure_shows_the_client_a_request_id_but_not_the_database_text() {
        let reply =
            ApiError::Store(StoreError::Url("postgres://user:hunter2@db".into())).into_reply();
        assert_eq!(reply.status(), StatusCode::INTERNAL_SERVER_ERROR);
        let shown = body(&reply);
        let id = shown["requestId"].as_str().unwrap();
        assert_eq!(id.len(), 16);
        let message = shown["error"].as_str().unwrap();
        assert!(message.contains(id), "{message}");
        assert!(!message.contains("hunter2"), "{message}");
    }

    #[test]
    fn back_pressure_is_a_429_that_says_when_to_come_back() {
        for _ in 0..20 {
            let reply = ApiError::Busy {
                message: "writes are queued".into(),
            }
            .into_reply();
            assert_eq!(reply.status(), StatusCode::TOO_MANY_REQUESTS);
            let secs: u64 = reply.headers()[header::RETRY_AFTER]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(RETRY_AFTER_SECS.contains(&secs), "{secs}");
            assert_eq!(body(&reply)["error"], "writes are queued; try again later");
        }
    }

    #[test]
    fn client_errors_keep_their_message_and_status() {
        let reply = ApiError::not_found("no policy named \"a\"").into_reply();
        assert_eq!(reply.status(), StatusCode::NOT_FOUND);
        assert_eq!(
            body(&reply),
            serde_json::json!({"error": "no policy named \"a\""})
        );
    }

    #[test]
    fn a_name_another_source_defines_is_a_conflict() {
        let duplicate = LoadError::Duplicate {
            kind: "RuntimePolicy",
            name: "a".into(),
            first: "x.yaml".into(),
            second: "api".into(),
        };
        assert_eq!(
            ApiError::from(duplicate).into_reply().status(),
            StatusCode::CONFLICT
        );
    }
}
