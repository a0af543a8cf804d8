//! What the background audit found in one namespace, as the
//! `palisade-admission` PolicyReport (wgpolicyk8s.io/v1alpha2). Pure: the
//! writer decides when to send it.
//!
//! One report per namespace, never one per resource (Kyverno's
//! per-resource admission reports filled etcd, kyverno#8974), and each is
//! bounded: failures first, at most `max_results` results and
//! [`MAX_REPORT_BYTES`] of them; the summary still counts every finding and
//! an annotation says how many were cut.

use palisade_common::policy::Mode;
use palisade_engine::policy::Violation;
use serde_json::{json, Value};

pub const REPORT_NAME: &str = "palisade-admission";
/// Label telling Palisade's reports apart (`admission`, `runtime`).
pub const REPORT_LABEL: &str = "palisade.dev/report";
pub const TOTAL_ANNOTATION: &str = "palisade.dev/results-total";
pub const OMITTED_ANNOTATION: &str = "palisade.dev/results-omitted";
/// Results stop here whatever `max_results` says: etcd refuses objects
/// over 1.5 MiB, and custom rules' messages have no fixed length.
pub const MAX_REPORT_BYTES: usize = 512 * 1024;

/// A finding's result, in the order reports list them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Outcome {
    /// An enforce-mode rule the workload breaks (admitted before the
    /// policy, or the policy changed since).
    Fail,
    /// The workload could not be judged (e.g. an unreadable spec).
    Error,
    /// An audit-mode rule it breaks.
    Warn,
    /// Covered by an active PolicyException.
    Skip,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [Outcome::Fail, Outcome::Error, Outcome::Warn, Outcome::Skip];

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Fail => "fail",
            Outcome::Error => "error",
            Outcome::Warn => "warn",
            Outcome::Skip => "skip",
        }
    }
}

/// One finding about one workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditResult {
    pub policy: String,
    pub rule: String,
    /// Field path in the object, empty for an [`Outcome::Error`].
    pub path: String,
    pub message: String,
    pub outcome: Outcome,
}

impl AuditResult {
    pub fn from_violation(violation: &Violation) -> Self {
        let outcome = match violation.mode {
            _ if violation.is_excepted() => Outcome::Skip,
            Mode::Enforce => Outcome::Fail,
            // At admission, learning warns as auditing does.
            Mode::Audit | Mode::Learn => Outcome::Warn,
        };
        Self {
            policy: violation.policy.clone(),
            rule: violation.rule.clone(),
            path: violation.path.clone(),
            message: violation.detail(),
            outcome,
        }
    }

    /// A workload the policies could not judge.
    pub fn unreadable(message: String) -> Self {
        Self {
            policy: "palisade".into(),
            rule: "audit/unreadable".into(),
            path: String::new(),
            message,
            outcome: Outcome::Error,
        }
    }
}

/// The workload a result is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
}

/// A workload and what was found, as the report lists it.
#[derive(Debug, Clone)]
pub struct AuditedObject {
    pub resource: ResourceRef,
    pub results: Vec<AuditResult>,
    /// When its results last changed (seconds since the epoch).
    pub since_secs: i64,
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_results: usize,
    pub max_bytes: usize,
}

/// Findings by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    pub fail: usize,
    pub error: usize,
    pub warn: usize,
    pub skip: usize,
}

impl Summary {
    pub fn add(&mut self, outcome: Outcome) {
        *self.count_mut(outcome) += 1;
    }

    pub fn count(&self, outcome: Outcome) -> usize {
        match outcome {
            Outcome::Fail => self.fail,
            Outcome::Error => self.error,
            Outcome::Warn => self.warn,
            Outcome::Skip => self.skip,
        }
    }

    fn count_mut(&mut self, outcome: Outcome) -> &mut usize {
        match outcome {
            Outcome::Fail => &mut self.fail,
            Outcome::Error => &mut self.error,
            Outcome::Warn => &mut self.warn,
            Outcome::Skip => &mut self.skip,
        }
    }

    pub fn total(&self) -> usize {
        self.fail + self.error + self.warn + self.skip
    }
}

/// The namespace's report, or `None` when nothing was found (no report
/// object then: clean namespaces cost the apiserver nothing).
pub fn build<'a>(
    namespace: &str,
    objects: impl IntoIterator<Item = &'a AuditedObject>,
    limits: Limits,
) -> Option<Value> {
    let mut findings: Vec<(&AuditedObject, &AuditResult)> = objects
        .into_iter()
        .flat_map(|o| o.results.iter().map(move |r| (o, r)))
        .collect();
    if findings.is_empty() {
        return None;
    }
    // Worst first, then a stable order so an unchanged namespace renders
    // the same bytes (the writer skips writes that change nothing).
    findings.sort_by(|(a, x), (b, y)| {
        (
            x.outcome,
            &a.resource.kind,
            &a.resource.name,
            &x.policy,
            &x.rule,
            &x.path,
        )
            .cmp(&(
                y.outcome,
                &b.resource.kind,
                &b.resource.name,
                &y.policy,
                &y.rule,
                &y.path,
            ))
    });
    let mut summary = Summary::default();
    let mut results = Vec::new();
    let mut bytes = 0;
    for (object, result) in &findings {
        summary.add(result.outcome);
        if results.len() >= limits.max_results {
            continue;
        }
        let entry = result_json(namespace, object, result);
        let size = entry.to_string().len();
        if bytes + size > limits.max_bytes {
            continue;
        }
        bytes += size;
        results.push(entry);
    }
    let omitted = summary.total() - results.len();
    let mut annotations = serde_json::Map::new();
    annotations.insert(TOTAL_ANNOTATION.into(), summary.total().to_string().into());
    if omitted > 0 {
        annotations.insert(OMITTED_ANNOTATION.into(), omitted.to_string().into());
    }
    Some(json!({
        "apiVersion": "wgpolicyk8s.io/v1alpha2",
        "kind": "PolicyReport",
        "metadata": {
            "name": REPORT_NAME,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "palisade", REPORT_LABEL: "admission"},
            "annotations": annotations,
        },
        "summary": {"pass": 0, "fail": summary.fail, "warn": summary.warn,
            "error": summary.error, "skip": summary.skip},
        "results": results,
    }))
}

fn result_json(namespace: &str, object: &AuditedObject, result: &AuditResult) -> Value {
    let r = &object.resource;
    let mut entry = json!({
        "source": "palisade",
        "policy": result.policy,
        "rule": result.rule,
        "category": "admission",
        "result": result.outcome.as_str(),
        "message": result.message,
        "timestamp": {"seconds": object.since_secs, "nanos": 0},
        "resources": [{"apiVersion": r.api_version, "kind": r.kind, "name": r.name,
            "namespace": namespace, "uid": r.uid}],
    });
    if !result.path.is_empty() {
        entry["properties"] = json!({"path": result.path});
    }
    entry
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_engine::policy::ExceptionNote;

    fn object(name: &str, outcomes: &[Outcome]) -> AuditedObject {
        AuditedObject {
            resource: ResourceRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: name.into(),
                uid: format!("uid-{name}"),
            },
            results: outcomes
                .iter()
                .enumerate()
                .map(|(i, &outcome)| AuditResult {
                    policy: "p".into(),
                    rule: format!("rule-{i}"),
                    path: "spec.template.spec.containers[0].image".into(),
                    message: "m".into(),
                    outcome,
                })
                .collect(),
            since_secs: 7,
        }
    }

    const ROOMY: Limits = Limits {
        max_results: 100,
        max_bytes: MAX_REPORT_BYTES,
    };

    #[test]
    fn a_clean_namespace_has_no_report() {
        assert!(build("shop", &[object("api", &[])], ROOMY).is_none());
    }

    #[test]
    fn failures_come_first_and_the_summary_counts_everything() {
        let objects = [
            object("b", &[Outcome::Warn, Outcome::Skip]),
            object("a", &[Outcome::Warn, Outcome::Fail]),
        ];
        let report = build("shop", &objects, ROOMY).unwrap();
        assert_eq!(report["metadata"]["name"], REPORT_NAME);
        assert_eq!(report["metadata"]["labels"][REPORT_LABEL], "admission");
        let results = report["results"].as_array().unwrap();
        let order: Vec<_> = results
            .iter()
            .map(|r| {
                (
                    r["result"].as_str().unwrap(),
                    r["resources"][0]["name"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            order,
            [("fail", "a"), ("warn", "a"), ("warn", "b"), ("skip", "b")]
        );
        assert_eq!(report["summary"]["fail"], 1);
        assert_eq!(report["summary"]["warn"], 2);
        assert_eq!(report["summary"]["skip"], 1);
        assert_eq!(results[0]["resources"][0]["uid"], "uid-a");
        assert_eq!(
            results[0]["properties"]["path"],
            "spec.template.spec.containers[0].image"
        );
        assert!(report["metadata"]["annotations"]
            .get(OMITTED_ANNOTATION)
            .is_none());
        // The same findings in another order render the same report.
        let again = build("shop", [&objects[1], &objects[0]], ROOMY).unwrap();
        assert_eq!(report, again);
    }

    #[test]
    fn cut_reports_keep_failures_and_say_how_many_were_cut() {
        let objects: Vec<_> = (0..50)
            .map(|i| object(&format!("w{i:02}"), &[Outcome::Warn, Outcome::Fail]))
            .collect();
        let report = build(
            "shop",
            &objects,
            Limits {
                max_results: 10,
                max_bytes: MAX_REPORT_BYTES,
            },
        )
        .unwrap();
        let results = report["results"].as_array().unwrap();
        assert_eq!(results.len(), 10);
        assert!(results.iter().all(|r| r["result"] == "fail"));
        assert_eq!(report["summary"]["fail"], 50);
        assert_eq!(report["summary"]["warn"], 50);
        assert_eq!(report["metadata"]["annotations"][TOTAL_ANNOTATION], "100");
        assert_eq!(report["metadata"]["annotations"][OMITTED_ANNOTATION], "90");
        // The byte budget holds whatever the count allows.
        let report = build(
            "shop",
            &objects,
            Limits {
                max_results: 1000,
                max_bytes: 4096,
            },
        )
        .unwrap();
        let kept = report["results"].as_array().unwrap();
        assert!(!kept.is_empty() && kept.len() < 100);
        assert!(serde_json::to_string(&report["results"]).unwrap().len() <= 4096 + kept.len());
        assert_eq!(
            report["metadata"]["annotations"][OMITTED_ANNOTATION],
            (100 - kept.len()).to_string()
        );
    }

    #[test]
    fn violations_become_results_by_mode_and_exception() {
        let violation = |mode, exception| Violation {
            policy: "no-latest".into(),
            mode,
            rule: "images/disallowedTags".into(),
            path: "spec.containers[0].image".into(),
            message: "tag latest is not allowed".into(),
            exception,
        };
        let fail = AuditResult::from_violation(&violation(Mode::Enforce, None));
        assert_eq!(fail.outcome, Outcome::Fail);
        assert_eq!(
            fail.message,
            "spec.containers[0].image: tag latest is not allowed"
        );
        assert_eq!(
            AuditResult::from_violation(&violation(Mode::Audit, None)).outcome,
            Outcome::Warn
        );
        let excepted = AuditResult::from_violation(&violation(
            Mode::Enforce,
            Some(ExceptionNote::Excepted(
                "legacy (owner o; until t: r)".into(),
            )),
        ));
        assert_eq!(excepted.outcome, Outcome::Skip);
        assert!(excepted
            .message
            .ends_with("(excepted by PolicyException legacy (owner o; until t: r))"));
        let expired = AuditResult::from_violation(&violation(
            Mode::Enforce,
            Some(ExceptionNote::Expired("legacy".into())),
        ));
        assert_eq!(expired.outcome, Outcome::Fail);
        assert!(expired
            .message
            .ends_with("(PolicyException legacy has expired)"));
    }
}
