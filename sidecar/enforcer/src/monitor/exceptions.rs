//! The bundle's PolicyExceptions as the monitor holds them: re-read with
//! each bundle, and when the next one expires, so that what it let run is
//! judged again at that instant.

use super::*;

/// The exceptions in force for this pod and the pod labels they select on.
#[derive(Default)]
pub(super) struct Exceptions {
    pub(super) active: Vec<PolicyException>,
    pub(super) labels: BTreeMap<String, String>,
    /// When the next of them expires.
    pub(super) next_expiry: Option<SystemTime>,
}

impl Exceptions {
    /// Takes a new bundle's exceptions (and the pod's labels now).
    pub(super) fn refresh(
        &mut self,
        bundle: &RuntimeBundle,
        labels: BTreeMap<String, String>,
        now: SystemTime,
    ) {
        self.active = bundle.exceptions.clone();
        self.labels = labels;
        self.next_expiry = self
            .active
            .iter()
            .filter_map(PolicyException::expires)
            .filter(|at| *at > now)
            .min();
    }

    /// Whether one of them ran out since the last refresh: the verdicts
    /// change as with a new bundle.
    pub(super) fn expired(&self, now: SystemTime) -> bool {
        self.next_expiry.is_some_and(|at| now >= at)
    }

    /// What they say now about `policy`'s verdict on a `rule` finding in
    /// this pod (the same decision admission makes).
    pub(super) fn decide(
        &self,
        namespace: &str,
        policy: &RuntimePolicy,
        rule: Rule,
    ) -> Decision<'_> {
        let target = Target {
            policy: &policy.name,
            rule: rule.as_str(),
            namespace,
            pod_labels: &self.labels,
        };
        PolicyException::decide(&self.active, &target, SystemTime::now())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use palisade_common::policy::RuntimeRules;

    fn exception(name: &str, expires_at: &str) -> PolicyException {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "palisade.dev/v1alpha1",
            "kind": "PolicyException",
            "metadata": {"name": name},
            "spec": {
                "policy": "runtime",
                "rules": ["behavior/*"],
                "selector": {"namespaces": ["shop"], "podLabels": {"app": "web"}},
                "expiresAt": expires_at,
                "reason": "migration",
                "owner": "shop-team"
            }
        }))
        .unwrap()
    }

    /// RFC 3339 times the tests use, as the exceptions write them.
    fn at(text: &str) -> SystemTime {
        let secs = match text {
            "2026-03-01T00:00:00Z" => 1772323200,
            "2026-05-31T23:59:59Z" => 1780271999,
            "2026-06-01T00:00:00Z" => 1780272000,
            _ => panic!("no such time in the tests: {text}"),
        };
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn the_next_expiry_is_the_earliest_still_to_come_and_passing_it_changes_verdicts() {
        let bundle = RuntimeBundle {
            etag: "e1".into(),
            policies: Vec::new(),
            exceptions: vec![
                exception("past", "2026-01-01T00:00:00Z"),
                exception("later", "2026-12-31T00:00:00Z"),
                exception("sooner", "2026-06-01T00:00:00Z"),
            ],
        };
        let labels = BTreeMap::from([("app".to_string(), "web".to_string())]);
        let mut held = Exceptions::default();
        let now = at("2026-03-01T00:00:00Z");
        held.refresh(&bundle, labels, now);
        assert_eq!(held.next_expiry, Some(at("2026-06-01T00:00:00Z")));
        assert!(!held.expired(now));
        assert!(held.expired(at("2026-06-01T00:00:00Z")));
        assert!(!held.expired(at("2026-05-31T23:59:59Z")));
    }

    #[test]
    fn a_finding_is_excepted_only_for_the_policy_and_pod_the_exception_names() {
        let bundle = RuntimeBundle {
            etag: "e1".into(),
            policies: Vec::new(),
            exceptions: vec![exception("open", "2999-01-01T00:00:00Z")],
        };
        let policy = |name: &str| RuntimePolicy {
            name: name.into(),
            mode: Mode::Enforce,
            rules: RuntimeRules::default(),
        };
        let mut held = Exceptions::default();
        let web = BTreeMap::from([("app".to_string(), "web".to_string())]);
        held.refresh(&bundle, web, SystemTime::now());
        let excepted = |held: &Exceptions, namespace, name: &str| {
            matches!(
                held.decide(namespace, &policy(name), Rule::DeniedProcess),
                Decision::Excepted(_)
            )
        };
        assert!(excepted(&held, "shop", "runtime"));
        assert!(!excepted(&held, "shop", "other"));
        assert!(!excepted(&held, "bank", "runtime"));
        let api = BTreeMap::from([("app".to_string(), "api".to_string())]);
        held.refresh(&bundle, api, SystemTime::now() + Duration::from_secs(1));
        assert!(!excepted(&held, "shop", "runtime"));
    }
}
