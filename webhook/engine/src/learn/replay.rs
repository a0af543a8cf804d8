//! A policy replayed against what workloads were recorded doing: which of
//! their items it would have reported or killed, judged by
//! `palisade_common::judge`, the function behind the enforcer's own
//! decisions, so a replay that finds nothing means the enforcer would
//! have found nothing in the same behaviour.
//!
//! Exceptions are not applied: a replay answers what the policy itself
//! says.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use palisade_common::judge::{Finding, Judge, Outcome};
use palisade_common::observe::{
    Observed, ObservedKind, WorkloadObservations, WorkloadRecord, WorkloadRef,
};
use palisade_common::policy::{Mode, PolicyDocument};

use super::{plural, printable, rfc3339, tally};

/// What a policy would have done to recorded behaviour.
#[derive(Debug, Clone, PartialEq)]
pub struct Replay {
    pub policy: String,
    pub mode: Mode,
    /// Whether the policy has a `runtime` section; without one it reaches
    /// no enforcer, so nothing is judged.
    pub has_runtime: bool,
    /// The workloads it selects, in the order given.
    pub workloads: Vec<WorkloadReplay>,
    /// Workloads recorded that it does not select.
    pub not_selected: usize,
}

/// One selected workload's findings.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadReplay {
    pub workload: WorkloadRef,
    /// Distinct items judged.
    pub judged: usize,
    /// Items the service did not record (its bound): not judged.
    pub overflow: u64,
    /// Weightiest outcome first, then by rule and item.
    pub findings: Vec<ReplayFinding>,
}

/// A rule one recorded item breaks, with what the item's record says.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayFinding {
    pub finding: Finding,
    pub item: Observed,
    pub outcome: Outcome,
    /// Summed across containers.
    pub count: u64,
    pub first_ms: i64,
    pub last_ms: i64,
    pub containers: Vec<String>,
}

impl ReplayFinding {
    /// The rule id, as the enforcer would report it.
    pub fn rule(&self) -> &'static str {
        self.finding.rule()
    }
}

/// Whether `policy` reaches the enforcers of `workload`'s pods: it has
/// runtime rules and its selector matches the workload's namespace and
/// pod labels. Only these workloads' items are worth fetching for a replay.
pub fn selects(policy: &PolicyDocument, workload: &WorkloadRecord) -> bool {
    policy.spec.runtime.is_some()
        && policy
            .spec
            .selector
            .matches(&workload.workload.namespace, &workload.pod_labels)
}

/// Judges every item of every workload `policy` selects.
pub fn replay(policy: &PolicyDocument, observed: &[WorkloadObservations]) -> Replay {
    let spec = &policy.spec;
    let mut replay = Replay {
        policy: policy.metadata.name.clone(),
        mode: spec.mode,
        has_runtime: spec.runtime.is_some(),
        workloads: Vec::new(),
        not_selected: 0,
    };
    let Some(rules) = &spec.runtime else {
        replay.not_selected = observed.len();
        return replay;
    };
    let outcome = Outcome::of(spec.mode);
    let judge = Judge::new(rules);
    for workload in observed {
        let record = &workload.workload;
        if !selects(policy, record) {
            replay.not_selected += 1;
            continue;
        }
        let items = tally(&workload.observed);
        let mut findings: Vec<ReplayFinding> = items
            .iter()
            .flat_map(|(item, seen)| {
                judge
                    .judge(item)
                    .into_iter()
                    .map(move |finding| ReplayFinding {
                        finding,
                        item: (*item).clone(),
                        outcome,
                        count: seen.count,
                        first_ms: seen.first_ms,
                        last_ms: seen.last_ms,
                        containers: seen.containers.iter().cloned().collect(),
                    })
            })
            .collect();
        findings.sort_by(|a, b| {
            b.outcome
                .cmp(&a.outcome)
                .then_with(|| a.rule().cmp(b.rule()))
                .then_with(|| a.item.cmp(&b.item))
        });
        replay.workloads.push(WorkloadReplay {
            workload: record.workload.clone(),
            judged: items.len(),
            overflow: record.overflow,
            findings,
        });
    }
    replay
}

impl Replay {
    /// Whether anything would have been reported or killed: what a CI
    /// gate fails on. Findings under `learn` are not.
    pub fn would_act(&self) -> bool {
        self.workloads
            .iter()
            .flat_map(|w| &w.findings)
            .any(|f| f.outcome != Outcome::Learned)
    }
}

/// `would kill`, `would report`, `learned only`.
fn outcome_text(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Killed => "would kill",
        Outcome::Reported => "would report",
        Outcome::Learned => "learned only",
    }
}

/// (singular, plural, what a count of it is) per kind of item.
fn kind_words(kind: ObservedKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        ObservedKind::Executable => ("executable", "executables", "execs"),
        ObservedKind::Process => ("process", "processes", "starts"),
        ObservedKind::Listen => ("listener", "listeners", "times seen"),
        ObservedKind::Egress => ("destination", "destinations", "connections"),
    }
}

/// Distinct items and their summed counts, per outcome and kind. An item
/// breaking two rules counts once.
#[derive(Debug, Default)]
struct Sums<'a> {
    by: BTreeMap<(Outcome, ObservedKind), (BTreeSet<&'a Observed>, u64)>,
}

impl<'a> Sums<'a> {
    fn add(&mut self, findings: &'a [ReplayFinding]) {
        for f in findings {
            let (items, count) = self.by.entry((f.outcome, f.item.kind())).or_default();
            if items.insert(&f.item) {
                *count = count.saturating_add(f.count);
            }
        }
    }

    /// `would kill 3 distinct executables (41 execs), 1 destination (2
    /// connections); would report ...`, weightiest outcome first.
    fn text(&self) -> Option<String> {
        let mut parts: Vec<String> = Vec::new();
        for outcome in [Outcome::Killed, Outcome::Reported, Outcome::Learned] {
            let kinds: Vec<String> = self
                .by
                .iter()
                .filter(|((o, _), _)| *o == outcome)
                .map(|((_, kind), (items, count))| {
                    let (one, many, unit) = kind_words(*kind);
                    let n = items.len() as u64;
                    let noun = if n == 1 { one } else { many };
                    format!("{n} distinct {noun} ({count} {unit})")
                })
                .collect();
            if !kinds.is_empty() {
                parts.push(format!("{} {}", outcome_text(outcome), kinds.join(", ")));
            }
        }
        (!parts.is_empty()).then(|| parts.join("; "))
    }
}

/// Left-aligned columns, two spaces apart, indented.
fn table(indent: &str, header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        format!("{indent}{}\n", padded.join("  ").trim_end())
    };
    let mut out = line(header);
    for row in rows {
        out.push_str(&line(&row.iter().map(String::as_str).collect::<Vec<_>>()));
    }
    out
}

impl fmt::Display for Replay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = printable(&self.policy);
        if !self.has_runtime {
            return writeln!(
                f,
                "Policy {name} has no runtime section: it reaches no enforcer, so it selects \
                 nothing to judge at run time."
            );
        }
        writeln!(
            f,
            "Policy {name} (mode {}) selects {} of {}:",
            self.mode.as_str(),
            self.workloads.len(),
            plural(
                (self.workloads.len() + self.not_selected) as u64,
                "recorded workload",
                "recorded workloads"
            ),
        )?;
        let mut total = Sums::default();
        let mut acting = 0;
        for workload in &self.workloads {
            let mut sums = Sums::default();
            sums.add(&workload.findings);
            total.add(&workload.findings);
            let shown = printable(&workload.workload.to_string()).into_owned();
            let judged = plural(workload.judged as u64, "item", "items");
            match sums.text() {
                Some(text) => writeln!(f, "\n{shown}: {text}; {judged} judged")?,
                None => writeln!(
                    f,
                    "\n{shown}: nothing would be reported or killed; {judged} judged"
                )?,
            }
            if workload
                .findings
                .iter()
                .any(|x| x.outcome != Outcome::Learned)
            {
                acting += 1;
            }
            if workload.overflow > 0 {
                writeln!(
                    f,
                    "  WARNING: incomplete: {} were not recorded, so not judged",
                    plural(workload.overflow, "item", "items")
                )?;
            }
            if workload.findings.is_empty() {
                continue;
            }
            let rows: Vec<Vec<String>> = workload
                .findings
                .iter()
                .map(|x| {
                    vec![
                        outcome_text(x.outcome).to_string(),
                        x.rule().to_string(),
                        printable(&x.item.to_string()).into_owned(),
                        x.count.to_string(),
                        rfc3339(x.first_ms),
                        rfc3339(x.last_ms),
                        printable(&x.containers.join(",")).into_owned(),
                    ]
                })
                .collect();
            let header = [
                "OUTCOME",
                "RULE",
                "ITEM",
                "COUNT",
                "FIRST",
                "LAST",
                "CONTAINERS",
            ];
            f.write_str(&table("  ", &header, &rows))?;
        }
        let clean = self.workloads.len() - acting;
        let over = plural(self.workloads.len() as u64, "workload", "workloads");
        match total.text() {
            Some(text) => writeln!(f, "\nTotal ({over}): {text}; {clean} clean."),
            None => writeln!(f, "\nTotal ({over}): nothing would be reported or killed."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::learn::fixtures::*;
    use crate::learn::{draft, DraftOptions};
    use palisade_common::judge::{EXECUTABLE_NOT_ALLOWED, NEW_EXECUTABLE};

    /// `web` as recorded in `namespace`.
    fn web_in(namespace: &str) -> WorkloadObservations {
        let mut observed = web();
        observed.workload.workload.namespace = namespace.into();
        observed
    }

    fn drafted(mode: Mode) -> PolicyDocument {
        let options = DraftOptions {
            mode,
            zero_drift: false,
        };
        PolicyDocument::from_yaml(&draft(&web(), &options)).unwrap()
    }

    /// `web` with a shell copied to /tmp and run 41 times.
    fn attacked() -> WorkloadObservations {
        let mut observed = web();
        observed.observed.push(record(exe("/tmp/x", SH, false), 41));
        observed
    }

    #[test]
    fn a_draft_replayed_against_what_it_was_drafted_from_finds_nothing() {
        let replay = replay(&drafted(Mode::Enforce), &[web()]);
        assert_eq!(replay.workloads.len(), 1);
        assert_eq!(replay.workloads[0].judged, 6);
        assert!(replay.workloads[0].findings.is_empty(), "{replay}");
        assert!(!replay.would_act());
        let text = replay.to_string();
        assert!(
            text.contains(
                "shop/deployment/web: nothing would be reported or killed; 6 items judged"
            ),
            "{text}"
        );
        assert!(
            text.contains("\nTotal (1 workload): nothing would be reported or killed.\n"),
            "{text}"
        );
    }

    #[test]
    fn a_shell_copied_to_tmp_would_be_killed_under_enforce() {
        let replay = replay(&drafted(Mode::Enforce), &[attacked()]);
        let findings = &replay.workloads[0].findings;
        // Not on the list, and (the draft keeps drift on) not the image's.
        let rules: Vec<&str> = findings.iter().map(ReplayFinding::rule).collect();
        assert_eq!(rules, [EXECUTABLE_NOT_ALLOWED, NEW_EXECUTABLE], "{replay}");
        assert!(findings
            .iter()
            .all(|f| f.outcome == Outcome::Killed && f.count == 41));
        assert!(replay.would_act());
        let text = replay.to_string();
        assert!(
            text.contains(
                "shop/deployment/web: would kill 1 distinct executable (41 execs); 7 items judged"
            ),
            "{text}"
        );
        assert!(
            text.contains("would kill  behavior/executable-not-allowed  executable /tmp/x"),
            "{text}"
        );
        assert!(
            text.starts_with(
                "Policy learned-deployment-web (mode enforce) selects 1 of 1 recorded workload:\n"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(
                "\nTotal (1 workload): would kill 1 distinct executable (41 execs); 0 clean.\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn the_same_shell_would_only_be_reported_under_audit_and_learned_under_learn() {
        let audit = replay(&drafted(Mode::Audit), &[attacked()]);
        assert_eq!(audit.workloads[0].findings[0].outcome, Outcome::Reported);
        assert!(audit.would_act());
        assert!(audit
            .to_string()
            .contains("would report 1 distinct executable (41 execs)"));

        let learn = replay(&drafted(Mode::Learn), &[attacked()]);
        assert_eq!(learn.workloads[0].findings[0].outcome, Outcome::Learned);
        assert!(!learn.would_act(), "learning reports nothing");
    }

    #[test]
    fn workloads_the_selector_does_not_match_are_not_judged() {
        let mut other_labels = attacked();
        other_labels
            .workload
            .pod_labels
            .insert("app".into(), "api".into());
        let replay = replay(&drafted(Mode::Enforce), &[web_in("other"), other_labels]);
        assert!(replay.workloads.is_empty());
        assert_eq!(replay.not_selected, 2);
        assert!(!replay.would_act());
        assert!(replay
            .to_string()
            .contains("selects 0 of 2 recorded workloads"));
    }

    #[test]
    fn a_policy_without_runtime_rules_judges_nothing_and_says_so() {
        let mut policy = drafted(Mode::Enforce);
        policy.spec.runtime = None;
        let replay = replay(&policy, &[attacked()]);
        assert!(!replay.has_runtime && replay.workloads.is_empty());
        assert!(
            replay.to_string().contains("has no runtime section"),
            "{replay}"
        );
    }

    #[test]
    fn items_seen_in_several_containers_are_one_finding_with_their_sums() {
        let mut observed = attacked();
        let mut again = record(exe("/tmp/x", SH, false), 9);
        again.container = "sidecar".into();
        again.last_ms = T0 + 7_200_000;
        observed.observed.push(again);
        observed.workload.overflow = 3;
        let replay = replay(&drafted(Mode::Enforce), &[observed]);
        let finding = &replay.workloads[0].findings[0];
        assert_eq!((finding.count, finding.last_ms), (50, T0 + 7_200_000));
        assert_eq!(finding.containers, ["app", "sidecar"]);
        assert!(replay
            .to_string()
            .contains("WARNING: incomplete: 3 items were not recorded"));
    }
}
