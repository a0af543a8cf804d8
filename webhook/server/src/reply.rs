//! What every route shares: JSON replies, one error shape
//! (`{"error": ...}`), request bodies read with a size limit, and the
//! mapping of warp's rejections to those replies. Kept apart from `http`
//! and `service` so neither imports the other for them.

use std::convert::Infallible;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use warp::http::{header, Response, StatusCode};
use warp::{Filter, Rejection};

/// Body too large for `admission.max_body_bytes`.
#[derive(Debug)]
struct BodyTooLarge;
impl warp::reject::Reject for BodyTooLarge {}

#[derive(Debug)]
struct BodyUnreadable(String);
impl warp::reject::Reject for BodyUnreadable {}

/// No valid bearer token for the route's role.
#[derive(Debug)]
pub struct Unauthorized;
impl warp::reject::Reject for Unauthorized {}

/// The request body, refused early by Content-Length and, for streamed
/// bodies without one, as soon as `limit` bytes are exceeded.
pub fn limited_body(limit: u64) -> impl Filter<Extract = (Bytes,), Error = Rejection> + Clone {
    warp::header::optional::<u64>("content-length")
        .and(warp::body::stream())
        .and_then(move |length: Option<u64>, stream| async move {
            if length.is_some_and(|l| l > limit) {
                return Err(warp::reject::custom(BodyTooLarge));
            }
            collect_limited(stream, limit).await
        })
}

async fn collect_limited<S, B>(stream: S, limit: u64) -> Result<Bytes, Rejection>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut stream = std::pin::pin!(stream);
    let mut body = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk = chunk.map_err(|e| warp::reject::custom(BodyUnreadable(e.to_string())))?;
        if (body.len() + chunk.remaining()) as u64 > limit {
            return Err(warp::reject::custom(BodyTooLarge));
        }
        while chunk.has_remaining() {
            let part = chunk.chunk();
            body.extend_from_slice(part);
            let n = part.len();
            chunk.advance(n);
        }
    }
    Ok(body.freeze())
}

pub fn json_error(status: StatusCode, message: &str) -> Response<Vec<u8>> {
    json_reply(status, &serde_json::json!({"error": message}))
}

pub fn json_reply<T: serde::Serialize>(status: StatusCode, body: &T) -> Response<Vec<u8>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(serde_json::to_vec(body).unwrap_or_default())
        .unwrap_or_default()
}

/// Every rejection as a JSON error with the status it means.
pub async fn rejection_reply(rejection: Rejection) -> Result<Response<Vec<u8>>, Infallible> {
    let (status, message) = if rejection.is_not_found() {
        (StatusCode::NOT_FOUND, "not found".to_string())
    } else if rejection.find::<BodyTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "request body exceeds admission.max_body_bytes".to_string(),
        )
    } else if let Some(BodyUnreadable(e)) = rejection.find::<BodyUnreadable>() {
        (
            StatusCode::BAD_REQUEST,
            format!("cannot read request body: {e}"),
        )
    } else if rejection.find::<Unauthorized>().is_some() {
        (
            StatusCode::UNAUTHORIZED,
            "missing or invalid bearer token".to_string(),
        )
    } else if let Some(e) = rejection.find::<warp::reject::InvalidQuery>() {
        (StatusCode::BAD_REQUEST, e.to_string())
    } else if rejection.find::<warp::reject::MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method not allowed".to_string(),
        )
    } else if let Some(e) = rejection.find::<warp::reject::InvalidHeader>() {
        (StatusCode::BAD_REQUEST, e.to_string())
    } else {
        (StatusCode::INTERNAL_SERVER_ERROR, format!("{rejection:?}"))
    };
    Ok(json_error(status, &message))
}
