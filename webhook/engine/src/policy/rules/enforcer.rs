//! `enforcer/required`: a Pod carries the genuine enforcer, unless it
//! opted out or its spec exempts it.

use palisade_common::{ENFORCER_CONTAINER, INJECT_ANNOTATION};

use super::RuleId;
use crate::policy::{EnforcerVerdict, Finding, PodView};

/// The finding for `pod`, if it should carry the enforcer and does not.
/// Templates are not judged: the enforcer is injected into their pods.
pub(crate) fn check(pod: &PodView<'_>) -> Option<Finding> {
    if !pod.is_pod || pod.annotations.get(INJECT_ANNOTATION).map(String::as_str) == Some("false") {
        return None;
    }
    let missing = || Finding {
        rule: RuleId::RequireEnforcer.to_string(),
        path: "spec.containers".into(),
        message: format!("the {ENFORCER_CONTAINER} sidecar is missing (was injection skipped?)"),
    };
    match &pod.enforcer {
        EnforcerVerdict::Present | EnforcerVerdict::Exempt(_) => None,
        EnforcerVerdict::Missing => Some(missing()),
        EnforcerVerdict::Impostor { path, message } => Some(Finding {
            rule: RuleId::RequireEnforcer.to_string(),
            path: path.clone(),
            message: message.clone(),
        }),
        EnforcerVerdict::ByName => {
            let has = pod
                .spec
                .containers
                .iter()
                .chain(pod.spec.init_containers.iter().flatten())
                .any(|c| c.name == ENFORCER_CONTAINER);
            (!has).then(missing)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    fn pod(annotations: Value, containers: Value) -> Value {
        json!({"metadata": {"annotations": annotations}, "spec": {"containers": containers}})
    }

    #[test]
    fn a_pod_without_the_enforcer_is_reported_at_its_containers() {
        let raw = pod(json!({}), json!([{"name": "app", "image": "nginx:1.27"}]));
        let finding = check(&PodView::parse(&raw, true).unwrap()).unwrap();
        assert_eq!(finding.rule, "enforcer/required");
        assert_eq!(finding.path, "spec.containers");
    }

    #[test]
    fn templates_opted_out_pods_and_exempt_pods_are_not_judged() {
        let raw = pod(json!({}), json!([{"name": "app", "image": "nginx:1.27"}]));
        assert_eq!(check(&PodView::parse(&raw, false).unwrap()), None);
        let mut exempt = PodView::parse(&raw, true).unwrap();
        exempt.enforcer = EnforcerVerdict::Exempt(crate::admission::reason::SkipReason::HostPid);
        assert_eq!(check(&exempt), None);
        let opted_out = pod(
            json!({INJECT_ANNOTATION: "false"}),
            json!([{"name": "app", "image": "nginx:1.27"}]),
        );
        assert_eq!(check(&PodView::parse(&opted_out, true).unwrap()), None);
    }

    #[test]
    fn by_name_a_container_called_like_the_enforcer_counts() {
        let raw = pod(
            json!({}),
            json!([{"name": ENFORCER_CONTAINER, "image": "busybox:1.36"}]),
        );
        assert_eq!(check(&PodView::parse(&raw, true).unwrap()), None);
    }
}
