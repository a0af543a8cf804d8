//! PolicyExceptions: a named, owned, expiring permission for some workloads
//! to break some rules of one policy. One object serves admission and run
//! time alike, and [`PolicyException::decide`] is the only place that says
//! whether an exception applies, so that an expired exception can never
//! apply in one path and not in another.
//!
//! ```yaml
//! apiVersion: palisade.dev/v1alpha1
//! kind: PolicyException
//! metadata: { name: legacy-billing-root }
//! spec:
//!   policy: restricted
//!   rules: [podSecurity/runAsNonRoot, "drift/*"]
//!   selector: { namespaces: [billing], podLabels: { app: legacy } }
//!   expiresAt: "2027-03-31T00:00:00Z"
//!   reason: vendor image runs as root until release 4.2
//!   owner: billing-team@example.com
//! ```

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::policy::{glob_match, is_dns_label, PolicyMetadata, Selector, API_VERSION};

pub const EXCEPTION_KIND: &str = "PolicyException";

/// Rules about the enforcer's presence; see [`PolicyException::names`].
const ENFORCER_RULES: &str = "enforcer/";

/// Exceptions expiring within this time are reported as expiring.
pub const EXPIRING_WITHIN: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicyException {
    pub api_version: String,
    pub kind: String,
    pub metadata: PolicyMetadata,
    pub spec: ExceptionSpec,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExceptionSpec {
    /// The policy whose rules are excepted.
    pub policy: String,
    /// Rule ids as violations and events name them (`podSecurity/runAsNonRoot`,
    /// `drift/exec-from-tmp`); a trailing `*` matches a prefix, `*` all.
    pub rules: Vec<String>,
    /// Which workloads: namespaces and pod labels, as a policy selects.
    #[serde(default)]
    pub selector: Selector,
    /// RFC 3339, UTC (`2027-03-31T00:00:00Z`). Required: an exception
    /// nobody has to renew is a policy change, not an exception.
    pub expires_at: String,
    pub reason: String,
    pub owner: String,
}

/// Where an exception stands at a given time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExceptionState {
    Active,
    /// Active, but expires within [`EXPIRING_WITHIN`].
    Expiring,
    Expired,
}

/// A violation or event an exception might cover.
#[derive(Debug, Clone, Copy)]
pub struct Target<'a> {
    pub policy: &'a str,
    pub rule: &'a str,
    pub namespace: &'a str,
    pub pod_labels: &'a BTreeMap<String, String>,
}

/// What the exceptions say about one target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision<'a> {
    /// Not covered by any exception.
    None,
    /// Covered by this active exception.
    Excepted(&'a PolicyException),
    /// Only expired exceptions cover it: the rule applies again, and the
    /// response says which exception ran out.
    Expired(&'a PolicyException),
}

/// A PolicyException that failed validation, with every problem found.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("PolicyException {name:?} is invalid: {}", problems.join("; "))]
pub struct InvalidException {
    pub name: String,
    pub problems: Vec<String>,
}

impl PolicyException {
    /// Checks everything serde cannot: names, the expiry, non-empty fields.
    pub fn validate(&self) -> Result<(), InvalidException> {
        let mut problems = Vec::new();
        if self.api_version != API_VERSION {
            problems.push(format!(
                "apiVersion: expected {API_VERSION:?}, got {:?}",
                self.api_version
            ));
        }
        if self.kind != EXCEPTION_KIND {
            problems.push(format!(
                "kind: expected {EXCEPTION_KIND:?}, got {:?}",
                self.kind
            ));
        }
        if !is_dns_label(&self.metadata.name) {
            problems.push(format!(
                "metadata.name: {:?} must be a DNS label",
                self.metadata.name
            ));
        }
        let spec = &self.spec;
        if !is_dns_label(&spec.policy) {
            problems.push(format!(
                "spec.policy: {:?} must name a policy (a DNS label)",
                spec.policy
            ));
        }
        // Namespaces are the boundary pod authors cannot cross (labels are
        // theirs to set): an exception names its namespaces exactly.
        if spec.selector.namespaces.is_empty() {
            problems.push(
                "spec.selector.namespaces: name the namespaces it applies to (pod labels alone \
                 would let any namespace's pods claim it)"
                    .into(),
            );
        }
        for (i, namespace) in spec.selector.namespaces.iter().enumerate() {
            if !is_dns_label(namespace) {
                problems.push(format!(
                    "spec.selector.namespaces[{i}]: {namespace:?} must be a namespace name (no wildcards)"
                ));
            }
        }
        if spec.rules.is_empty() {
            problems.push("spec.rules: name at least one rule (\"*\" for all)".into());
        }
        for (i, rule) in spec.rules.iter().enumerate() {
            if rule.trim().is_empty() {
                problems.push(format!("spec.rules[{i}]: empty"));
            }
        }
        if let Err(problem) = parse_expiry(&spec.expires_at) {
            problems.push(format!("spec.expiresAt: {problem}"));
        }
        for (field, value) in [("reason", &spec.reason), ("owner", &spec.owner)] {
            if value.trim().is_empty() {
                problems.push(format!("spec.{field}: required"));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidException {
                name: self.metadata.name.clone(),
                problems,
            })
        }
    }

    /// When it expires (validated documents always have one).
    pub fn expires(&self) -> Option<SystemTime> {
        parse_expiry(&self.spec.expires_at).ok()
    }

    pub fn state(&self, now: SystemTime) -> ExceptionState {
        match self.expires() {
            Some(at) if at > now => match at.duration_since(now) {
                Ok(left) if left <= EXPIRING_WITHIN => ExceptionState::Expiring,
                _ => ExceptionState::Active,
            },
            // Unparsable counts as expired: never grant on a doubt.
            _ => ExceptionState::Expired,
        }
    }

    /// Whether it names the target (expiry aside). `enforcer/...` rules
    /// are excepted only when named (`enforcer/*` or in full): a blanket
    /// `*` must not admit pods without the enforcer, which would then run
    /// unwatched long after the exception expires.
    fn names(&self, target: &Target<'_>) -> bool {
        let covers = |pattern: &String| {
            if target.rule.starts_with(ENFORCER_RULES) && !pattern.starts_with(ENFORCER_RULES) {
                return false;
            }
            glob_match(pattern, target.rule)
        };
        self.spec.policy == target.policy
            && self.spec.rules.iter().any(covers)
            && self
                .spec
                .selector
                .matches(target.namespace, target.pod_labels)
    }

    /// The one decision: which exception, if any, covers `target` at `now`.
    /// Active exceptions win over expired ones; among several, the first by
    /// name, so every path names the same one.
    pub fn decide<'a>(
        exceptions: &'a [PolicyException],
        target: &Target<'_>,
        now: SystemTime,
    ) -> Decision<'a> {
        let mut expired = None;
        let mut naming: Vec<&PolicyException> =
            exceptions.iter().filter(|e| e.names(target)).collect();
        naming.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        for exception in naming {
            match exception.state(now) {
                ExceptionState::Active | ExceptionState::Expiring => {
                    return Decision::Excepted(exception)
                }
                ExceptionState::Expired => {
                    expired.get_or_insert(exception);
                }
            }
        }
        expired.map_or(Decision::None, Decision::Expired)
    }

    /// `NAME (owner; until EXPIRY: reason)`, for warnings and events.
    pub fn describe(&self) -> String {
        format!(
            "{} (owner {}; until {}: {})",
            self.metadata.name, self.spec.owner, self.spec.expires_at, self.spec.reason
        )
    }
}

fn parse_expiry(text: &str) -> Result<SystemTime, String> {
    humantime::parse_rfc3339(text.trim()).map_err(|e| {
        format!("{text:?} is not an RFC 3339 UTC time like 2027-03-31T00:00:00Z ({e})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exception(name: &str, rules: &[&str], expires_at: &str) -> PolicyException {
        let yaml = format!(
            "apiVersion: palisade.dev/v1alpha1\nkind: PolicyException\nmetadata: {{name: {name}}}\n\
             spec:\n  policy: restricted\n  rules: {rules:?}\n  selector: {{namespaces: [billing], podLabels: {{app: legacy}}}}\n  \
             expiresAt: \"{expires_at}\"\n  reason: vendor image\n  owner: billing-team\n"
        );
        let e: PolicyException = serde_yaml::from_str(&yaml).unwrap();
        e.validate().unwrap();
        e
    }

    fn at(text: &str) -> SystemTime {
        humantime::parse_rfc3339(text).unwrap()
    }

    fn target<'a>(
        rule: &'a str,
        namespace: &'a str,
        labels: &'a BTreeMap<String, String>,
    ) -> Target<'a> {
        Target {
            policy: "restricted",
            rule,
            namespace,
            pod_labels: labels,
        }
    }

    #[test]
    fn an_exception_covers_its_rules_and_workloads_until_it_expires() {
        let legacy = BTreeMap::from([("app".to_string(), "legacy".to_string())]);
        let other = BTreeMap::new();
        let list = [exception(
            "legacy-root",
            &["podSecurity/runAsNonRoot", "drift/*"],
            "2027-03-31T00:00:00Z",
        )];
        let before = at("2027-01-01T00:00:00Z");
        let decide = |t: &Target<'_>, now| summary(PolicyException::decide(&list, t, now));
        assert_eq!(
            decide(
                &target("podSecurity/runAsNonRoot", "billing", &legacy),
                before
            ),
            Some("excepted legacy-root".into())
        );
        assert_eq!(
            decide(&target("drift/exec-from-tmp", "billing", &legacy), before),
            Some("excepted legacy-root".into()),
            "prefix"
        );
        assert_eq!(
            decide(
                &target("podSecurity/privileged", "billing", &legacy),
                before
            ),
            None,
            "another rule"
        );
        assert_eq!(
            decide(&target("podSecurity/runAsNonRoot", "shop", &legacy), before),
            None,
            "another namespace"
        );
        assert_eq!(
            decide(
                &target("podSecurity/runAsNonRoot", "billing", &other),
                before
            ),
            None,
            "another workload"
        );
        let after = at("2027-03-31T00:00:01Z");
        assert_eq!(
            decide(
                &target("podSecurity/runAsNonRoot", "billing", &legacy),
                after
            ),
            Some("expired legacy-root".into())
        );
        assert_eq!(
            decide(
                &target("podSecurity/runAsNonRoot", "billing", &legacy),
                at("2027-03-31T00:00:00Z")
            ),
            Some("expired legacy-root".into()),
            "expiresAt itself is expired"
        );
    }

    #[test]
    fn an_active_exception_wins_over_an_expired_one_and_names_are_stable() {
        let legacy = BTreeMap::from([("app".to_string(), "legacy".to_string())]);
        let list = [
            exception("zz-renewed", &["*"], "2028-01-01T00:00:00Z"),
            exception("aa-old", &["*"], "2026-01-01T00:00:00Z"),
            exception("mm-renewed", &["*"], "2028-01-01T00:00:00Z"),
        ];
        let decision = PolicyException::decide(
            &list,
            &target("images/disallowedTags", "billing", &legacy),
            at("2027-01-01T00:00:00Z"),
        );
        assert_eq!(summary(decision), Some("excepted mm-renewed".into()));
    }

    #[test]
    fn a_blanket_rule_does_not_excuse_a_missing_enforcer() {
        let legacy = BTreeMap::from([("app".to_string(), "legacy".to_string())]);
        let now = at("2027-01-01T00:00:00Z");
        let blanket = [exception("all", &["*"], "2027-03-31T00:00:00Z")];
        let missing = target("enforcer/required", "billing", &legacy);
        assert_eq!(
            summary(PolicyException::decide(&blanket, &missing, now)),
            None
        );
        let named = [exception("named", &["enforcer/*"], "2027-03-31T00:00:00Z")];
        assert_eq!(
            summary(PolicyException::decide(&named, &missing, now)),
            Some("excepted named".into())
        );
    }

    #[test]
    fn states_over_time() {
        let e = exception("x", &["*"], "2027-03-31T00:00:00Z");
        assert_eq!(e.state(at("2027-01-01T00:00:00Z")), ExceptionState::Active);
        assert_eq!(
            e.state(at("2027-03-25T00:00:00Z")),
            ExceptionState::Expiring
        );
        assert_eq!(e.state(at("2027-04-01T00:00:00Z")), ExceptionState::Expired);
    }

    #[test]
    fn invalid_exceptions_list_every_problem() {
        let e: PolicyException = serde_yaml::from_str(
            "apiVersion: palisade.dev/v1alpha1\nkind: PolicyException\nmetadata: {name: Bad_Name}\n\
             spec: {policy: '', rules: [], selector: {namespaces: ['team-*']}, expiresAt: next week, reason: ' ', owner: x}\n",
        )
        .unwrap();
        let problems = e.validate().unwrap_err().problems;
        assert_eq!(problems.len(), 6, "{problems:?}");
        for field in [
            "metadata.name",
            "spec.policy",
            "spec.selector.namespaces[0]",
            "spec.rules",
            "spec.expiresAt",
            "spec.reason",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(field)),
                "{field}: {problems:?}"
            );
        }
        let missing_expiry = serde_yaml::from_str::<PolicyException>(
            "apiVersion: palisade.dev/v1alpha1\nkind: PolicyException\nmetadata: {name: x}\n\
             spec: {policy: p, rules: ['*'], reason: r, owner: o}\n",
        );
        assert!(missing_expiry.is_err(), "expiresAt is required");
        let everywhere: PolicyException = serde_yaml::from_str(
            "apiVersion: palisade.dev/v1alpha1\nkind: PolicyException\nmetadata: {name: x}\n\
             spec: {policy: p, rules: ['*'], selector: {podLabels: {app: legacy}}, expiresAt: '2027-01-01T00:00:00Z', reason: r, owner: o}\n",
        )
        .unwrap();
        let problems = everywhere.validate().unwrap_err().problems;
        assert!(
            problems[0].starts_with("spec.selector.namespaces: name the namespaces"),
            "{problems:?}"
        );
    }

    /// `"excepted NAME"`, `"expired NAME"` or `None`.
    fn summary(decision: Decision<'_>) -> Option<String> {
        match decision {
            Decision::None => None,
            Decision::Excepted(e) => Some(format!("excepted {}", e.metadata.name)),
            Decision::Expired(e) => Some(format!("expired {}", e.metadata.name)),
        }
    }
}
