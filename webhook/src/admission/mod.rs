//! AdmissionReview in, AdmissionReview out: decoding, the mutate and
//! validate decisions, and encoding. Pure functions of the request and the
//! settings/policies, so they are tested without a server.

pub mod mutate;
pub mod template;

use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview, Operation};
use kube::core::DynamicObject;
use palisade_common::policy::Mode;
use serde_json::Value;

use crate::config::Settings;
use crate::policy::{PodView, PolicySet, Violation};

pub type Request = AdmissionRequest<DynamicObject>;

const REVIEW_API_VERSION: &str = "admission.k8s.io/v1";

#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("malformed AdmissionReview: {0}")]
    Malformed(#[from] serde_json::Error),
    #[error("unsupported AdmissionReview {api_version}/{kind} (expected {REVIEW_API_VERSION}/AdmissionReview)")]
    Unsupported { api_version: String, kind: String },
    #[error("AdmissionReview has no request")]
    MissingRequest,
}

/// Decodes and checks an AdmissionReview body.
pub fn decode(body: &[u8]) -> Result<Request, ReviewError> {
    let review: AdmissionReview<DynamicObject> = serde_json::from_slice(body)?;
    if review.types.api_version != REVIEW_API_VERSION || review.types.kind != "AdmissionReview" {
        return Err(ReviewError::Unsupported {
            api_version: review.types.api_version,
            kind: review.types.kind,
        });
    }
    review.try_into().map_err(|_| ReviewError::MissingRequest)
}

/// The AdmissionReview answer as the API defines it. kube's own type writes
/// the patch bytes as a JSON array of numbers; the API's `[]byte` is a
/// base64 string: four times smaller and much cheaper to write and parse.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ReviewOut<'a> {
    api_version: &'static str,
    kind: &'static str,
    response: ResponseOut<'a>,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct ResponseOut<'a> {
    uid: &'a str,
    allowed: bool,
    status: &'a kube::core::Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    patch_type: Option<&'static str>,
    #[serde(skip_serializing_if = "std::collections::HashMap::is_empty")]
    audit_annotations: &'a std::collections::HashMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: &'a Option<Vec<String>>,
}

pub fn encode(response: AdmissionResponse) -> Vec<u8> {
    use base64::Engine;
    let patch = response
        .patch
        .as_deref()
        .map(|p| base64::engine::general_purpose::STANDARD.encode(p));
    let out = ReviewOut {
        api_version: REVIEW_API_VERSION,
        kind: "AdmissionReview",
        response: ResponseOut {
            uid: &response.uid,
            allowed: response.allowed,
            status: &response.result,
            patch_type: patch.as_ref().map(|_| "JSONPatch"),
            patch,
            audit_annotations: &response.audit_annotations,
            warnings: &response.warnings,
        },
    };
    // Serialising plain structs of strings and maps cannot fail.
    serde_json::to_vec(&out).unwrap_or_default()
}

/// What happened, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allowed,
    Patched,
    Skipped,
    Warned,
    Denied,
    Invalid,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allowed => "allowed",
            Outcome::Patched => "patched",
            Outcome::Skipped => "skipped",
            Outcome::Warned => "warned",
            Outcome::Denied => "denied",
            Outcome::Invalid => "invalid",
        }
    }
}

fn reject(req: &Request, code: u16, reason: &str, message: String) -> AdmissionResponse {
    let mut response = AdmissionResponse::from(req).deny(message);
    response.result.code = code;
    response.result.reason = reason.to_string();
    response
}

fn excluded(req: &Request, settings: &Settings) -> bool {
    req.namespace.as_deref().is_some_and(|ns| {
        settings
            .admission
            .excluded_namespaces
            .iter()
            .any(|e| e == ns)
    })
}

fn object_value(req: &Request) -> Option<Result<Value, serde_json::Error>> {
    req.object.as_ref().map(serde_json::to_value)
}

/// `/mutate`: inject the enforcer into Pods being created.
pub fn mutate(req: &Request, settings: &Settings) -> (AdmissionResponse, Outcome) {
    let allow = AdmissionResponse::from(req);
    let is_pod = req.kind.group.is_empty() && req.kind.kind == "Pod";
    if !is_pod || req.operation != Operation::Create || req.sub_resource.is_some() {
        return (allow, Outcome::Allowed);
    }
    if excluded(req, settings) {
        return (allow, Outcome::Skipped);
    }
    let pod = match object_value(req) {
        Some(Ok(pod)) => pod,
        Some(Err(e)) => {
            return (
                reject(req, 400, "BadRequest", format!("cannot read object: {e}")),
                Outcome::Invalid,
            )
        }
        None => {
            return (
                reject(req, 400, "BadRequest", "request has no object".into()),
                Outcome::Invalid,
            )
        }
    };
    let (patch, outcome) = match mutate::patch_for(&pod, &settings.injection) {
        Ok(result) => result,
        Err(e) => {
            return (
                reject(req, 400, "BadRequest", e.to_string()),
                Outcome::Invalid,
            )
        }
    };
    let mut response = allow;
    let mut result = Outcome::Patched;
    if let mutate::Outcome::Skipped { reason, .. } = outcome {
        response
            .audit_annotations
            .insert("injection-skipped".into(), reason.into());
        result = Outcome::Skipped;
    }
    if patch.0.is_empty() {
        let unchanged = if result == Outcome::Skipped {
            result
        } else {
            Outcome::Allowed
        };
        return (response, unchanged);
    }
    match response.with_patch(patch) {
        Ok(response) => (response, result),
        Err(e) => (
            reject(req, 500, "InternalError", e.to_string()),
            Outcome::Invalid,
        ),
    }
}

/// `/validate`: evaluate the policy set on Pods and pod templates.
pub fn validate(
    req: &Request,
    settings: &Settings,
    policies: &PolicySet,
) -> (AdmissionResponse, Outcome) {
    let allow = AdmissionResponse::from(req);
    let Some(location) = template::locate(&req.kind.group, &req.kind.kind) else {
        return (allow, Outcome::Allowed);
    };
    let evaluated_subresource = matches!(
        req.sub_resource.as_deref(),
        None | Some("ephemeralcontainers")
    );
    if !matches!(req.operation, Operation::Create | Operation::Update)
        || !evaluated_subresource
        || excluded(req, settings)
    {
        return (allow, Outcome::Allowed);
    }
    let object = match object_value(req) {
        Some(Ok(v)) => v,
        Some(Err(e)) => {
            return (
                reject(req, 400, "BadRequest", format!("cannot read object: {e}")),
                Outcome::Invalid,
            )
        }
        None => {
            return (
                reject(req, 400, "BadRequest", "request has no object".into()),
                Outcome::Invalid,
            )
        }
    };
    let Some(template) = object.pointer(location.pointer) else {
        return (allow, Outcome::Allowed);
    };
    // Like Pod Security admission: an update that leaves the pod spec as it
    // was is not re-judged (label or finalizer edits on old pods).
    if req.operation == Operation::Update {
        let old_spec = req
            .old_object
            .as_ref()
            .and_then(|o| serde_json::to_value(o).ok())
            .and_then(|o| {
                o.pointer(location.pointer)
                    .and_then(|t| t.get("spec"))
                    .cloned()
            });
        if old_spec.as_ref() == template.get("spec") {
            return (allow, Outcome::Allowed);
        }
    }
    let namespace = req.namespace.as_deref().unwrap_or_default();
    let violations = match evaluate_template(template, location, namespace, settings, policies) {
        Ok(v) => v,
        Err(msg) => return (reject(req, 400, "BadRequest", msg), Outcome::Invalid),
    };
    respond(allow, violations)
}

/// Violations of `policies` by a pod template found at `location` in its
/// object. A workload's pods will pass through `/mutate`, so its template is
/// judged as those pods will be (enforcer added, resources defaulted): an
/// unchanged manifest is not refused for what the injector supplies.
pub fn evaluate_template(
    template: &Value,
    location: template::TemplateLocation,
    namespace: &str,
    settings: &Settings,
    policies: &PolicySet,
) -> Result<Vec<Violation>, String> {
    let is_pod = location.pointer.is_empty();
    let effective;
    let template = if is_pod {
        template
    } else {
        let mut copy = template.clone();
        mutate::inject(&mut copy, &settings.injection)
            .map_err(|e| format!("{}: {e}", location.field_prefix))?;
        effective = copy;
        &effective
    };
    let view = PodView::parse(template, is_pod)
        .map_err(|e| format!("cannot read {}: {e}", location.field("spec")))?;
    Ok(policies.evaluate(namespace, &view, |p| location.field(p)))
}

/// Enforce-mode violations deny; audit-mode ones become warnings.
fn respond(allow: AdmissionResponse, violations: Vec<Violation>) -> (AdmissionResponse, Outcome) {
    if violations.is_empty() {
        return (allow, Outcome::Allowed);
    }
    let (enforced, audited): (Vec<_>, Vec<_>) = violations
        .into_iter()
        .partition(|v| v.mode == Mode::Enforce);
    let mut response = allow;
    if !audited.is_empty() {
        response.warnings = Some(
            audited
                .iter()
                .map(|v| format!("palisade audit: {v}"))
                .collect(),
        );
        response.audit_annotations.insert(
            "audit-violations".into(),
            audited
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        );
    }
    if enforced.is_empty() {
        return (response, Outcome::Warned);
    }
    let message = format!(
        "denied by Palisade: {}",
        enforced
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    );
    let mut response = response.deny(message);
    response.result.code = 403;
    response.result.reason = "Forbidden".into();
    (response, Outcome::Denied)
}
