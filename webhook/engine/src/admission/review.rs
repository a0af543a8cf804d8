//! The AdmissionReview wire format (admission.k8s.io/v1): the request
//! fields Palisade decides on, and the response it writes.
//!
//! The admitted object is kept as raw JSON text: each decision parses only
//! what it reads (mutation a small typed view, validation a full tree), so
//! no request pays for a generic parse it does not need.

use std::collections::BTreeMap;

use kube_core::admission::Operation;
use kube_core::{GroupVersionKind, Status};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub const API_VERSION: &str = "admission.k8s.io/v1";

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("malformed AdmissionReview: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error(
        "unsupported AdmissionReview {api_version}/{kind} (expected {API_VERSION}/AdmissionReview)"
    )]
    Unsupported { api_version: String, kind: String },
    #[error("AdmissionReview has no request")]
    MissingRequest,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReviewIn {
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    request: Option<Request>,
}

/// The part of an AdmissionRequest Palisade reads; other fields are skipped.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub uid: String,
    pub kind: GroupVersionKind,
    #[serde(default)]
    pub sub_resource: Option<String>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub operation: Operation,
    #[serde(default)]
    pub dry_run: bool,
    /// The object as sent (JSON text), parsed by whichever decision needs it.
    #[serde(default)]
    pub object: Option<Box<RawValue>>,
    #[serde(default)]
    pub old_object: Option<Box<RawValue>>,
}

/// Decodes and checks an AdmissionReview body.
pub fn decode(body: &[u8]) -> Result<Request, ReviewError> {
    let review: ReviewIn = serde_json::from_slice(body)?;
    if review.api_version != API_VERSION || review.kind != "AdmissionReview" {
        return Err(ReviewError::Unsupported {
            api_version: review.api_version,
            kind: review.kind,
        });
    }
    review.request.ok_or(ReviewError::MissingRequest)
}

/// An AdmissionResponse being built.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Response {
    pub uid: String,
    pub allowed: bool,
    pub status: Status,
    /// RFC 6902 JSON patch; the API's `[]byte`, hence base64 on the wire.
    #[serde(
        skip_serializing_if = "Option::is_none",
        serialize_with = "base64_bytes"
    )]
    pub patch: Option<Vec<u8>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub audit_annotations: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

impl Response {
    /// Allows `request`, changing nothing.
    pub fn allow(request: &Request) -> Self {
        Self {
            uid: request.uid.clone(),
            allowed: true,
            status: Status::success(),
            patch: None,
            patch_type: None,
            audit_annotations: BTreeMap::new(),
            warnings: Vec::new(),
        }
    }

    /// Refuses the request with an HTTP-style `code`, `reason` and message.
    pub fn deny(mut self, code: u16, reason: &str, message: String) -> Self {
        self.allowed = false;
        self.status = Status::failure(&message, reason).with_code(code);
        self.patch = None;
        self.patch_type = None;
        self
    }

    /// Allows with a JSON patch (serialised RFC 6902 operations).
    pub fn with_patch(mut self, patch: Vec<u8>) -> Self {
        self.patch = Some(patch);
        self.patch_type = Some("JSONPatch");
        self
    }
}

fn base64_bytes<S: serde::Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
    use base64::Engine;
    match bytes {
        Some(b) => s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b)),
        None => s.serialize_none(),
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: &'a Response,
}

/// The AdmissionReview carrying `response`.
pub fn encode(response: &Response) -> Vec<u8> {
    let review = ReviewOut {
        api_version: API_VERSION,
        kind: "AdmissionReview",
        response,
    };
    // Strings, maps and a Status: serialising them cannot fail.
    serde_json::to_vec(&review).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube_core::admission::{AdmissionResponse, AdmissionReview};
    use kube_core::DynamicObject;

    fn review(request: &str) -> Vec<u8> {
        format!(
            r#"{{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{request}}}"#
        )
        .into_bytes()
    }

    #[test]
    fn decodes_the_fields_decisions_read_and_keeps_the_object_raw() {
        let body = review(
            r#"{"uid":"u1","kind":{"group":"","version":"v1","kind":"Pod"},
                "resource":{"group":"","version":"v1","resource":"pods"},
                "namespace":"demo","operation":"CREATE","userInfo":{"username":"x"},
                "dryRun":true,"object":{"metadata":{"name":"web"},"spec":{}},"oldObject":null}"#,
        );
        let req = decode(&body).unwrap();
        assert_eq!(req.uid, "u1");
        assert_eq!(req.kind.kind, "Pod");
        assert_eq!(req.namespace.as_deref(), Some("demo"));
        assert_eq!(req.operation, Operation::Create);
        assert!(req.dry_run);
        assert_eq!(
            req.object.unwrap().get(),
            r#"{"metadata":{"name":"web"},"spec":{}}"#
        );
        assert!(req.old_object.is_none());
    }

    #[test]
    fn refuses_other_versions_and_missing_requests() {
        let err = decode(
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":null}"#,
        )
        .unwrap_err();
        assert!(matches!(err, ReviewError::Unsupported { .. }), "{err}");
        let err = decode(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#)
            .unwrap_err();
        assert!(matches!(err, ReviewError::MissingRequest), "{err}");
        assert!(matches!(
            decode(b"[1,2").unwrap_err(),
            ReviewError::Malformed(_)
        ));
        // A request without its required fields is malformed, not a panic.
        assert!(decode(&review(r#"{"uid":"u"}"#)).is_err());
    }

    #[test]
    fn kube_clients_read_the_encoded_response() {
        let req = decode(&review(
            r#"{"uid":"u2","kind":{"group":"","version":"v1","kind":"Pod"},"operation":"CREATE"}"#,
        ))
        .unwrap();
        let mut denied = Response::allow(&req).deny(403, "Forbidden", "no".into());
        denied.warnings.push("careful".into());
        denied
            .audit_annotations
            .insert("audit-violations".into(), "x".into());
        let back: AdmissionReview<DynamicObject> =
            serde_json::from_slice(&encode(&denied)).unwrap();
        let back: &AdmissionResponse = back.response.as_ref().unwrap();
        assert_eq!(back.uid, "u2");
        assert!(!back.allowed);
        assert_eq!(back.result.code, 403);
        assert_eq!(back.result.reason, "Forbidden");
        assert_eq!(back.result.message, "no");
        assert_eq!(back.warnings.as_deref(), Some(&["careful".to_string()][..]));
        assert_eq!(back.audit_annotations["audit-violations"], "x");

        let patched =
            Response::allow(&req).with_patch(br#"[{"op":"add","path":"/a","value":1}]"#.to_vec());
        let raw: serde_json::Value = serde_json::from_slice(&encode(&patched)).unwrap();
        assert_eq!(raw["response"]["patchType"], "JSONPatch");
        assert_eq!(
            raw["response"]["patch"],
            "W3sib3AiOiJhZGQiLCJwYXRoIjoiL2EiLCJ2YWx1ZSI6MX1d"
        );
    }
}
