//! AdmissionReview in, AdmissionReview out: decoding, the mutate and
//! validate decisions, and encoding. Pure functions of the request and the
//! settings/policies, so they are tested without a server.

pub mod enforcer;
pub mod mutate;
#[cfg(test)]
mod properties;
pub mod reason;
pub mod review;
pub mod template;

use std::collections::BTreeMap;

use kube_core::admission::Operation;
use palisade_common::path::{FieldPath, FieldSet};
use prometheus_client::encoding::{EncodeLabelValue, LabelValueEncoder};
use serde_json::Value;

use crate::policy::pod::PodSpec;
use crate::policy::{EnforcerVerdict, PodView, PolicySet, Violation};
use crate::settings::Settings;
use enforcer::Claim;

pub use review::{decode, encode, Request, Response, ReviewError};

/// The two admission endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// `/mutate`: enforcer injection and resource defaults.
    Mutate,
    /// `/validate`: policy evaluation.
    Validate,
}

impl Endpoint {
    /// The URL path segment, also the metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Mutate => "mutate",
            Endpoint::Validate => "validate",
        }
    }
}

/// What happened, for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Allowed,
    Patched,
    Skipped,
    Warned,
    Denied,
    /// Answered with an AdmissionResponse refusing a malformed object.
    Invalid,
    /// The AdmissionReview itself could not be decoded (HTTP 400, no
    /// AdmissionResponse).
    Unreadable,
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
            Outcome::Unreadable => "error",
        }
    }
}

impl EncodeLabelValue for Endpoint {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// The admission decisions, with what they need precomputed from the
/// settings (the enforcer container, volumes, excluded namespaces).
pub struct Webhook {
    excluded_namespaces: Vec<String>,
    injector: mutate::Injector,
}

/// Registry lookups `/mutate` wants for a pod (see
/// [`Webhook::image_lookups`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageLookups {
    /// The pod's namespace, where its pull secrets are.
    pub namespace: String,
    /// Image references as the pod spec writes them, each once.
    pub images: Vec<String>,
    /// `spec.imagePullSecrets`.
    pub pull_secrets: Vec<String>,
    /// The architecture the pod selects, if it does: the platform of a
    /// multi-platform image it runs.
    pub arch: Option<String>,
}

/// A Pod being created (not a subresource): what `/mutate` injects into.
fn creates_pod(req: &Request) -> bool {
    req.kind.group.is_empty()
        && req.kind.kind == "Pod"
        && req.operation == Operation::Create
        && req.sub_resource.is_none()
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
    /// `policies` decide whether the pod's apps start confined
    /// (`runtime.prevent`).
    pub fn mutate(&self, req: &Request, policies: &PolicySet) -> (Response, Outcome) {
        let (response, outcome, _) =
            self.mutate_explained(req, policies, mutate::ImageCommands::NONE);
        (response, outcome)
    }

    /// The registry lookups `/mutate` wants before it plans `req`: the
    /// images of app containers that run their image's own command in a
    /// pod that policies confine. `None` when there are none, which is
    /// decided without parsing the pod unless some policy asks for
    /// prevention.
    pub fn image_lookups(&self, req: &Request, policies: &PolicySet) -> Option<ImageLookups> {
        if !policies.has_prevention() || !self.plans(req) {
            return None;
        }
        let object = object_text(req)?;
        let pod = mutate::PodShape::from_json(object).ok()?;
        if mutate::skip_reason(&pod, self.injector.settings().skip_host_network).is_some() {
            return None;
        }
        let shape = mutate::LaunchShape::from_json(object).ok()?;
        let namespace = req.namespace.clone().unwrap_or_default();
        policies.launch_policy(&namespace, shape.labels())?;
        let identity = self.injector.identity();
        let images =
            shape.images_without_command(|name, image| identity.claim(name, image).is_some());
        (!images.is_empty()).then(|| ImageLookups {
            namespace,
            images,
            pull_secrets: shape.pull_secrets(),
            arch: shape.architecture(),
        })
    }

    /// Whether `/mutate` plans `req` at all: a Pod being created, outside
    /// the excluded namespaces.
    fn plans(&self, req: &Request) -> bool {
        creates_pod(req) && !self.excluded(req)
    }

    /// Like [`Webhook::mutate`], with the image commands looked up for
    /// [`Webhook::image_lookups`], and with what the injector decided (for
    /// the injection metrics); `None` when it did not look at the pod.
    pub fn mutate_explained(
        &self,
        req: &Request,
        policies: &PolicySet,
        images: &mutate::ImageCommands,
    ) -> (Response, Outcome, Option<mutate::Outcome>) {
        let allow = Response::allow(req);
        if !creates_pod(req) {
            return (allow, Outcome::Allowed, None);
        }
        if self.excluded(req) {
            return (allow, Outcome::Skipped, None);
        }
        let Some(object) = object_text(req) else {
            let (response, outcome) = no_object(allow);
            return (response, outcome, None);
        };
        let planned = mutate::PodShape::from_json(object).and_then(|pod| {
            // What prevention needs is read only when a policy asks for it.
            let prevention = if policies.has_prevention() {
                let needs = mutate::LaunchShape::from_json(object)?;
                let namespace = req.namespace.as_deref().unwrap_or_default();
                policies
                    .launch_policy(namespace, needs.labels())
                    .map(|policy| (policy, needs))
            } else {
                None
            };
            let prevent = prevention.as_ref().map(|(policy, shape)| mutate::Prevent {
                policy,
                shape,
                images,
            });
            self.injector.plan(&pod, prevent)
        });
        let mutation = match planned {
            Ok(mutation) => mutation,
            Err(mutate::MutateError::Impostor(e)) => {
                let message = format!("denied by Palisade: {e}");
                return (allow.deny(403, "Forbidden", message), Outcome::Denied, None);
            }
            Err(e) => {
                return (
                    allow.deny(400, "BadRequest", e.to_string()),
                    Outcome::Invalid,
                    None,
                )
            }
        };
        let mut response = allow;
        for (image, reason) in images.failures() {
            response.warnings.push(format!(
                "Palisade: containers running {image} start without prevention: \
                 its command could not be looked up ({reason})"
            ));
        }
        let mut result = Outcome::Patched;
        match &mutation.outcome {
            mutate::Outcome::Skipped { reason, .. } => {
                response
                    .audit_annotations
                    .insert("injection-skipped".into(), reason.as_str().into());
                result = Outcome::Skipped;
            }
            mutate::Outcome::Injected { degraded, .. } if !degraded.is_empty() => {
                let reasons: Vec<&str> = degraded.iter().map(|r| r.as_str()).collect();
                response
                    .audit_annotations
                    .insert("injection-degraded".into(), reasons.join(","));
            }
            mutate::Outcome::Injected { .. } => {}
        }
        if mutation.ops.is_empty() {
            let unchanged = if result == Outcome::Skipped {
                result
            } else {
                Outcome::Allowed
            };
            return (response, unchanged, Some(mutation.outcome));
        }
        let patch = mutation.patch_json();
        (response.with_patch(patch), result, Some(mutation.outcome))
    }

    /// Whether the pod carries the configured enforcer, an impostor under
    /// its name, or is exempt from carrying one for a reason its spec
    /// states (the injector skips it whoever asks).
    pub fn enforcer_verdict(
        &self,
        spec: &PodSpec,
        annotations: &std::collections::BTreeMap<String, String>,
    ) -> EnforcerVerdict {
        let identity = self.injector.identity();
        let lists = [
            (
                "spec.initContainers",
                spec.init_containers.as_deref().unwrap_or_default(),
            ),
            ("spec.containers", spec.containers.as_slice()),
        ];
        let mut present = false;
        for (list, containers) in lists {
            for (index, c) in containers.iter().enumerate() {
                match identity.claim(Some(&c.name), c.image.as_deref()) {
                    None => {}
                    Some(Claim::Genuine) => present = true,
                    Some(Claim::Impostor) => {
                        let path = format!("{list}[{index}]");
                        let e = identity.impostor(&path, c.image.as_deref());
                        return EnforcerVerdict::Impostor {
                            path,
                            message: e.reason,
                        };
                    }
                }
            }
        }
        if present {
            return EnforcerVerdict::Present;
        }
        let facts = mutate::SkipFacts {
            opted_out: annotations
                .get(palisade_common::INJECT_ANNOTATION)
                .is_some_and(|v| v == "false"),
            windows: spec.os.as_ref().is_some_and(|os| os.name == "windows")
                || spec
                    .node_selector
                    .as_ref()
                    .and_then(|s| s.get(mutate::OS_LABEL))
                    .is_some_and(|os| os == "windows"),
            host_pid: spec.host_pid == Some(true),
            host_network: spec.host_network == Some(true),
        };
        match mutate::decide_skip(facts, self.injector.settings().skip_host_network) {
            Some(reason) if reason.is_spec_derived() => EnforcerVerdict::Exempt(reason),
            _ => EnforcerVerdict::Missing,
        }
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
        // Like Pod Security admission: an update that leaves what policies
        // judge as it was is not re-judged (finalizer or status-like edits
        // on old objects).
        if req.operation == Operation::Update && judged_fields_unchanged(req, text, location) {
            return (allow, Outcome::Allowed);
        }
        let namespace = req.namespace.as_deref().unwrap_or_default();
        let violations = if location.pointer.is_empty() {
            PodView::from_json(text, policies.reads())
                .map(|mut pod| {
                    pod.enforcer = self.enforcer_verdict(&pod.spec, &pod.annotations);
                    policies.evaluate(namespace, &pod, |p| location.field(p))
                })
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
        let mut inserted = None;
        let judged = if is_pod {
            template
        } else {
            let mut copy = template.clone();
            let launch =
                |labels: &BTreeMap<String, String>| policies.launch_policy(namespace, labels);
            let launch = policies
                .has_prevention()
                .then_some(&launch as &mutate::LaunchFor);
            self.injector
                .inject(&mut copy, launch)
                .map_err(|e| format!("{}: {e}", location.field_prefix))?;
            inserted =
                template::Inserted::find(template, &copy, palisade_common::ENFORCER_CONTAINER);
            effective = copy;
            &effective
        };
        let mut view = PodView::parse(judged, is_pod)
            .map_err(|e| format!("cannot read {}: {e}", location.field("spec")))?;
        view.enforcer = self.enforcer_verdict(&view.spec, &view.annotations);
        Ok(policies.evaluate(namespace, &view, |p| {
            location.field(&template::manifest_path(p, inserted))
        }))
    }
}

/// Annotation prefix of the AppArmor profiles Pod Security judges.
const APPARMOR_ANNOTATION_PREFIX: &str = "container.apparmor.security.beta.kubernetes.io/";

/// Whether an update leaves what policies judge at `location` as it was
/// (compared as JSON values, so formatting does not matter). A workload's
/// template is compared whole: its spec, labels (policy selectors) and
/// annotations (AppArmor profiles), since any change there rolls out new
/// pods. A Pod's own labels and annotations change for many reasons that
/// leave the running pod as it was, so of its metadata only the AppArmor
/// annotations count.
fn judged_fields_unchanged(
    req: &Request,
    text: &str,
    location: template::TemplateLocation,
) -> bool {
    let Some(old) = &req.old_object else {
        return false;
    };
    let is_pod = location.pointer.is_empty();
    let mut fields = vec!["spec", "metadata.annotations"];
    if !is_pod {
        fields.push("metadata.labels");
    }
    let Ok(paths) = fields
        .iter()
        .map(|f| FieldPath::parse(&location.field(f)))
        .collect::<Result<Vec<_>, _>>()
    else {
        return false;
    };
    let mut set = FieldSet::default();
    for path in &paths {
        set.insert(path);
    }
    let (Ok(old), Ok(new)) = (set.extract(old.get()), set.extract(text)) else {
        return false;
    };
    paths.iter().zip(&fields).all(|(path, field)| {
        let (before, after) = (path.resolve(&old), path.resolve(&new));
        if is_pod && *field == "metadata.annotations" {
            let apparmor = |resolved: &[palisade_common::path::Resolved<'_>]| {
                resolved
                    .iter()
                    .filter_map(|r| r.value?.as_object())
                    .flat_map(|m| m.iter())
                    .filter(|(k, _)| k.starts_with(APPARMOR_ANNOTATION_PREFIX))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect::<Vec<_>>()
            };
            apparmor(&before) == apparmor(&after)
        } else {
            before == after
        }
    })
}

/// Enforce-mode violations deny; audit-mode ones become warnings, and so do
/// violations an active PolicyException covers, whatever the mode: the
/// exception is visible in every response it changes.
fn respond(allow: Response, violations: Vec<Violation>) -> (Response, Outcome) {
    if violations.is_empty() {
        return (allow, Outcome::Allowed);
    }
    let (enforced, warned): (Vec<_>, Vec<_>) = violations.into_iter().partition(Violation::denies);
    let (excepted, audited): (Vec<_>, Vec<_>) =
        warned.into_iter().partition(Violation::is_excepted);
    let mut response = allow;
    let joined = |list: &[Violation]| {
        list.iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")
    };
    response
        .warnings
        .extend(audited.iter().map(|v| format!("palisade audit: {v}")));
    response
        .warnings
        .extend(excepted.iter().map(|v| format!("palisade excepted: {v}")));
    if !audited.is_empty() {
        response
            .audit_annotations
            .insert("audit-violations".into(), joined(&audited));
    }
    if !excepted.is_empty() {
        response
            .audit_annotations
            .insert("excepted-violations".into(), joined(&excepted));
    }
    if enforced.is_empty() {
        return (response, Outcome::Warned);
    }
    let message = format!("denied by Palisade: {}", joined(&enforced));
    (response.deny(403, "Forbidden", message), Outcome::Denied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::ExceptionNote;
    use palisade_common::policy::Mode;
    use serde_json::json;

    fn update(kind: (&str, &str), old: Value, new: Value) -> Request {
        let review = json!({
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {
                "uid": "u", "name": "n", "namespace": "ns", "operation": "UPDATE",
                "kind": {"group": kind.0, "version": "v1", "kind": kind.1},
                "resource": {"group": kind.0, "version": "v1", "resource": "x"},
                "userInfo": {},
                "object": new, "oldObject": old
            }
        });
        decode(review.to_string().as_bytes()).unwrap()
    }

    fn unchanged(kind: (&str, &str), old: Value, new: Value) -> bool {
        let req = update(kind, old, new);
        let text = req.object.as_ref().unwrap().get().to_string();
        let location = template::locate(kind.0, kind.1).unwrap();
        judged_fields_unchanged(&req, &text, location)
    }

    const APPARMOR: &str = "container.apparmor.security.beta.kubernetes.io/app";

    #[test]
    fn a_pod_relabelled_or_annotated_is_not_rejudged_but_an_apparmor_change_is() {
        let pod = |labels: Value, annotations: Value| {
            json!({"metadata": {"labels": labels, "annotations": annotations},
                   "spec": {"containers": [{"name": "app", "image": "x:1"}]}})
        };
        let old = pod(json!({"a": "1"}), json!({"note": "x"}));
        assert!(unchanged(
            ("", "Pod"),
            old.clone(),
            pod(json!({"a": "2"}), json!({"note": "y"}))
        ));
        assert!(!unchanged(
            ("", "Pod"),
            old,
            pod(
                json!({"a": "1"}),
                json!({"note": "x", APPARMOR: "unconfined"})
            )
        ));
    }

    #[test]
    fn a_workload_whose_template_labels_or_annotations_change_is_rejudged() {
        let deployment = |labels: Value, annotations: Value| {
            json!({"metadata": {"labels": {"owner": "x"}}, "spec": {"template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": {"containers": [{"name": "app", "image": "x:1"}]}}}})
        };
        let old = deployment(json!({"app": "a"}), json!({}));
        let kind = ("apps", "Deployment");
        assert!(unchanged(kind, old.clone(), old.clone()));
        assert!(!unchanged(
            kind,
            old.clone(),
            deployment(json!({"app": "a", "tier": "web"}), json!({}))
        ));
        assert!(!unchanged(
            kind,
            old.clone(),
            deployment(json!({"app": "a"}), json!({APPARMOR: "unconfined"}))
        ));
        // The workload's own metadata is not its pods'.
        let mut relabelled = old.clone();
        relabelled["metadata"]["labels"]["owner"] = json!("y");
        assert!(unchanged(kind, old, relabelled));
    }

    #[test]
    fn the_enforcer_verdict_names_impostors_and_exempts_spec_derived_skips() {
        let webhook = Webhook::new(&Settings::default());
        let verdict = |spec: Value, annotations: Value| {
            let pod = json!({"metadata": {"annotations": annotations}, "spec": spec});
            let view = PodView::parse(&pod, true).unwrap();
            webhook.enforcer_verdict(&view.spec, &view.annotations)
        };
        let image = Settings::default().injection.image;
        let with = |name: &str, image: &str| json!({"containers": [{"name": "app", "image": "x:1"}, {"name": name, "image": image}]});
        assert_eq!(
            verdict(with(palisade_common::ENFORCER_CONTAINER, &image), json!({})),
            EnforcerVerdict::Present
        );
        assert!(matches!(
            verdict(with(palisade_common::ENFORCER_CONTAINER, "busybox:1"), json!({})),
            EnforcerVerdict::Impostor { path, .. } if path == "spec.containers[1]"
        ));
        assert_eq!(
            verdict(with("other", &image), json!({})),
            EnforcerVerdict::Missing
        );
        assert_eq!(
            verdict(
                json!({"os": {"name": "windows"}, "containers": [{"name": "app"}]}),
                json!({})
            ),
            EnforcerVerdict::Exempt(reason::SkipReason::Windows)
        );
        assert_eq!(
            verdict(
                json!({"nodeSelector": {"kubernetes.io/os": "windows"}, "containers": [{"name": "app"}]}),
                json!({})
            ),
            EnforcerVerdict::Exempt(reason::SkipReason::Windows)
        );
        assert_eq!(
            verdict(
                json!({"hostPID": true, "containers": [{"name": "app"}]}),
                json!({})
            ),
            EnforcerVerdict::Exempt(reason::SkipReason::HostPid)
        );
        // Opting out is exempt by the policy's own rule, not as a verdict.
        assert_eq!(
            verdict(
                json!({"containers": [{"name": "app"}]}),
                json!({"palisade.dev/inject": "false"})
            ),
            EnforcerVerdict::Missing
        );
    }

    #[test]
    fn an_excepted_violation_is_allowed_and_visible_in_warnings_and_audit_annotations() {
        let request = update(("", "Pod"), json!({}), json!({}));
        let violation = |rule: &str, exception| Violation {
            policy: "no-latest".into(),
            mode: Mode::Enforce,
            rule: rule.into(),
            path: "spec.containers[0].image".into(),
            message: "m".into(),
            exception,
        };
        let excepted = violation(
            "images/disallowedTags",
            Some(ExceptionNote::Excepted(
                "legacy (owner o; until t: r)".into(),
            )),
        );
        let (response, outcome) = respond(Response::allow(&request), vec![excepted]);
        assert_eq!(outcome, Outcome::Warned);
        assert!(response.allowed);
        assert_eq!(
            response.warnings,
            ["palisade excepted: [no-latest] images/disallowedTags: spec.containers[0].image: m \
              (excepted by PolicyException legacy (owner o; until t: r))"]
        );
        assert!(response.audit_annotations["excepted-violations"].contains("legacy"));
        // An expired exception denies again, naming it; a covered
        // violation beside a denied one stays a warning.
        let expired = violation(
            "images/disallowedTags",
            Some(ExceptionNote::Expired(
                "legacy (owner o; until t: r)".into(),
            )),
        );
        let covered = violation(
            "images/disallowUntagged",
            Some(ExceptionNote::Excepted(
                "other (owner o; until t: r)".into(),
            )),
        );
        let (response, outcome) = respond(Response::allow(&request), vec![expired, covered]);
        assert_eq!(outcome, Outcome::Denied);
        assert!(response
            .status
            .message
            .contains("PolicyException legacy (owner o; until t: r) has expired"));
        assert!(response.warnings[0]
            .starts_with("palisade excepted: [no-latest] images/disallowUntagged"));
    }

    #[test]
    fn a_pod_prevention_cannot_read_is_refused_with_a_clear_error_where_a_policy_confines_it() {
        let review = |command: Value| {
            let pod = json!({"metadata": {"name": "web"},
                             "spec": {"containers": [{"name": "web", "image": "x:1", "command": command}]}});
            let review = json!({
                "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                "request": {
                    "uid": "u", "name": "web", "namespace": "ns", "operation": "CREATE",
                    "kind": {"group": "", "version": "v1", "kind": "Pod"},
                    "resource": {"group": "", "version": "v1", "resource": "pods"},
                    "userInfo": {}, "object": pod
                }
            });
            decode(review.to_string().as_bytes()).unwrap()
        };
        let confine_all = palisade_common::policy::Document::from_yaml(
            "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {name: confine}\n\
             spec: {mode: enforce, runtime: {prevent: true}}\n",
        )
        .unwrap();
        let confining = PolicySet::from_documents([("test".to_string(), confine_all)]).unwrap();
        let webhook = Webhook::new(&Settings::default());
        // The injector does not read `command`: without prevention the pod
        // is planned as usual.
        let malformed = review(json!("web"));
        let (_, outcome) = webhook.mutate(&malformed, &PolicySet::default());
        assert_eq!(outcome, Outcome::Patched);
        let (response, outcome) = webhook.mutate(&malformed, &confining);
        assert_eq!(outcome, Outcome::Invalid);
        assert!(!response.allowed && response.patch.is_none());
        assert_eq!(response.status.code, 400);
        assert!(
            response
                .status
                .message
                .contains("spec.containers[0].command: invalid type: string \"web\""),
            "{}",
            response.status.message
        );
        let (_, outcome) = webhook.mutate(&review(json!(["/bin/web"])), &confining);
        assert_eq!(outcome, Outcome::Patched);
    }
}
