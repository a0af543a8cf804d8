//! AdmissionReview in, AdmissionReview out: decoding, the mutate and
//! validate decisions, and encoding. Pure functions of the request and the
//! settings/policies, so they are tested without a server.

pub mod mutate;
pub mod review;
pub mod template;

use kube::core::admission::Operation;
use palisade_common::path::{FieldPath, FieldSet};
use palisade_common::policy::Mode;
use serde_json::Value;

use crate::config::Settings;
use crate::policy::{PodView, PolicySet, Violation};

pub use review::{decode, encode, Request, Response, ReviewError};

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

/// The admission decisions, with what they need precomputed from the
/// settings (the enforcer container, volumes, excluded namespaces).
pub struct Webhook {
    excluded_namespaces: Vec<String>,
    injector: mutate::Injector,
}

/// The object under review; `None` when the request carries none.
fn object_text(req: &Request) -> Option<&str> {
    req.object
        .as_deref()
        .map(serde_json::value::RawValue::get)
        .filter(|text| *text != "null")
}

/// The answer to a request without the object it should carry.
fn no_object(allow: Response) -> (Response, Outcome) {
    let message = "request has no object".to_string();
    (allow.deny(400, "BadRequest", message), Outcome::Invalid)
}

impl Webhook {
    pub fn new(settings: &Settings) -> Self {
        Self {
            excluded_namespaces: settings.admission.excluded_namespaces.clone(),
            injector: mutate::Injector::new(&settings.injection),
        }
    }

    pub fn injector(&self) -> &mutate::Injector {
        &self.injector
    }

    fn excluded(&self, req: &Request) -> bool {
        req.namespace
            .as_deref()
            .is_some_and(|ns| self.excluded_namespaces.iter().any(|e| e == ns))
    }

    /// `/mutate`: inject the enforcer into Pods being created.
    pub fn mutate(&self, req: &Request) -> (Response, Outcome) {
        let allow = Response::allow(req);
        let is_pod = req.kind.group.is_empty() && req.kind.kind == "Pod";
        if !is_pod || req.operation != Operation::Create || req.sub_resource.is_some() {
            return (allow, Outcome::Allowed);
        }
        if self.excluded(req) {
            return (allow, Outcome::Skipped);
        }
        let Some(object) = object_text(req) else {
            return no_object(allow);
        };
        let mutation = match self.injector.plan_json(object) {
            Ok(mutation) => mutation,
            Err(e) => {
                return (
                    allow.deny(400, "BadRequest", e.to_string()),
                    Outcome::Invalid,
                )
            }
        };
        let mut response = allow;
        let mut result = Outcome::Patched;
        if let mutate::Outcome::Skipped { reason, .. } = mutation.outcome {
            response
                .audit_annotations
                .insert("injection-skipped".into(), reason.into());
            result = Outcome::Skipped;
        }
        if mutation.ops.is_empty() {
            let unchanged = if result == Outcome::Skipped {
                result
            } else {
                Outcome::Allowed
            };
            return (response, unchanged);
        }
        (response.with_patch(mutation.patch_json()), result)
    }

    /// `/validate`: evaluate the policy set on Pods and pod templates.
    pub fn validate(&self, req: &Request, policies: &PolicySet) -> (Response, Outcome) {
        let allow = Response::allow(req);
        let Some(location) = template::locate(&req.kind.group, &req.kind.kind) else {
            return (allow, Outcome::Allowed);
        };
        let evaluated_subresource = matches!(
            req.sub_resource.as_deref(),
            None | Some("ephemeralcontainers")
        );
        if !matches!(req.operation, Operation::Create | Operation::Update)
            || !evaluated_subresource
            || self.excluded(req)
        {
            return (allow, Outcome::Allowed);
        }
        let Some(text) = object_text(req) else {
            return no_object(allow);
        };
        // Like Pod Security admission: an update that leaves the pod spec as
        // it was is not re-judged (label or finalizer edits on old pods).
        if req.operation == Operation::Update && spec_unchanged(req, text, location) {
            return (allow, Outcome::Allowed);
        }
        let namespace = req.namespace.as_deref().unwrap_or_default();
        let violations = if location.pointer.is_empty() {
            PodView::from_json(text, policies.reads())
                .map(|pod| policies.evaluate(namespace, &pod, |p| location.field(p)))
                .map_err(|e| format!("cannot read {}: {e}", location.field("spec")))
        } else {
            match serde_json::from_str::<Value>(text) {
                Ok(object) => match object.pointer(location.pointer) {
                    Some(template) => {
                        self.evaluate_template(template, location, namespace, policies)
                    }
                    None => return (allow, Outcome::Allowed),
                },
                Err(e) => Err(format!("cannot read object: {e}")),
            }
        };
        match violations {
            Ok(violations) => respond(allow, violations),
            Err(message) => (allow.deny(400, "BadRequest", message), Outcome::Invalid),
        }
    }

    /// Violations of `policies` by a pod template found at `location` in its
    /// object. A workload's pods will pass through `/mutate`, so its
    /// template is judged as those pods will be (enforcer added, resources
    /// defaulted): an unchanged manifest is not refused for what the
    /// injector supplies.
    pub fn evaluate_template(
        &self,
        template: &Value,
        location: template::TemplateLocation,
        namespace: &str,
        policies: &PolicySet,
    ) -> Result<Vec<Violation>, String> {
        let is_pod = location.pointer.is_empty();
        let effective;
        let template = if is_pod {
            template
        } else {
            let mut copy = template.clone();
            self.injector
                .inject(&mut copy)
                .map_err(|e| format!("{}: {e}", location.field_prefix))?;
            effective = copy;
            &effective
        };
        let view = PodView::parse(template, is_pod)
            .map_err(|e| format!("cannot read {}: {e}", location.field("spec")))?;
        Ok(policies.evaluate(namespace, &view, |p| location.field(p)))
    }
}

/// Whether an update leaves the pod spec at `location` as it was (compared
/// as JSON values, so formatting does not matter).
fn spec_unchanged(req: &Request, text: &str, location: template::TemplateLocation) -> bool {
    let Some(old) = &req.old_object else {
        return false;
    };
    let Ok(spec_path) = FieldPath::parse(&location.field("spec")) else {
        return false;
    };
    let mut spec = FieldSet::default();
    spec.insert(&spec_path);
    match (spec.extract(old.get()), spec.extract(text)) {
        (Ok(old), Ok(new)) => spec_path.resolve(&old) == spec_path.resolve(&new),
        _ => false,
    }
}

/// Enforce-mode violations deny; audit-mode ones become warnings.
fn respond(allow: Response, violations: Vec<Violation>) -> (Response, Outcome) {
    if violations.is_empty() {
        return (allow, Outcome::Allowed);
    }
    let (enforced, audited): (Vec<_>, Vec<_>) = violations
        .into_iter()
        .partition(|v| v.mode == Mode::Enforce);
    let mut response = allow;
    if !audited.is_empty() {
        response.warnings = audited
            .iter()
            .map(|v| format!("palisade audit: {v}"))
            .collect();
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
    (response.deny(403, "Forbidden", message), Outcome::Denied)
}
