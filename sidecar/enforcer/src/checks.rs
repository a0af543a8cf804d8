//! What one process breaks, check by check: drift, executable identity,
//! hiding and names. Each check is a pure function from what the monitor
//! read of the process to the violations it finds, each attributed to the
//! policy that judges it (never a learning one: see `rules::reported_by`).
//! `monitor::judge` reads the facts, runs the checks, and reports and
//! stops on their answers.

use palisade_common::judge::{self, ExecutableFacts, ExecutableRefusal};
use palisade_common::wire::{EventKind, RuntimePolicy};

use crate::drift::{self, ImageCheck};
use crate::hidden;
use crate::rules::{self, ProcessNames, ProcessVerdict, Rule, Weight};

/// A broken rule, attributed to the policy that judges it most strictly.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation<'p> {
    pub rule: Rule,
    pub policy: &'p RuntimePolicy,
    pub message: String,
}

/// An executable as the drift rules see it.
#[derive(Debug, Clone, Copy)]
pub struct DriftFacts<'a> {
    /// Path inside the container.
    pub path: &'a str,
    /// The file was deleted after the process started.
    pub deleted: bool,
    /// What the baseline says of it (`Unknown` for a process that predates
    /// the container's first baseline: only its path counts then).
    pub image: ImageCheck,
}

/// The drift rules on a process's executable, under `policy` (the
/// strictest drift policy: [`attribute_drift`] then gives each finding to
/// the policy weightiest for its own rule).
pub fn drift<'p>(
    policy: &'p RuntimePolicy,
    comm: &str,
    exe: &DriftFacts<'_>,
    temp_dirs: &[String],
) -> Vec<Violation<'p>> {
    let path = exe.path;
    drift::classify(path, exe.deleted, temp_dirs, exe.image)
        .into_iter()
        .map(|finding| {
            let message = match &finding {
                drift::Finding::Fileless => format!("{comm} runs from memory ({path})"),
                drift::Finding::Deleted => format!("{comm} runs a deleted executable {path}"),
                drift::Finding::FromTemporaryDir(dir) => format!("{path} executed from {dir}"),
                drift::Finding::NotInImage => format!("{path} is not in the container image"),
                drift::Finding::Modified => format!("{path} changed since the container started"),
            };
            Violation {
                rule: finding.rule(),
                policy,
                message,
            }
        })
        .collect()
}

/// Drift findings are made before their rules are known: each goes to the
/// weightiest reporting drift policy for its own rule, so one policy's
/// exception does not silence another's enforcement. A policy that pins
/// the executable by path and content (`pins`, see `judge::pinned`) does
/// not judge its origin: a finding about where the program came from is
/// dropped when every drift policy pins it. Running from memory or from a
/// deleted file is drift whatever the list says.
pub fn attribute_drift<'p>(
    violations: &mut Vec<Violation<'p>>,
    policies: &'p [RuntimePolicy],
    weight: impl Fn(&RuntimePolicy, Rule) -> Weight,
    pins: impl Fn(&RuntimePolicy) -> bool,
) {
    violations.retain_mut(|v| {
        if v.rule.kind() != EventKind::Drift {
            return true;
        }
        let about_origin = matches!(
            v.rule,
            Rule::NewExecutable | Rule::ExecFromTmp | Rule::ModifiedExecutable
        );
        let judging: Vec<&RuntimePolicy> = policies
            .iter()
            .filter(|p| p.rules.drift && !(about_origin && pins(p)))
            .collect();
        if judging.is_empty() {
            return !about_origin;
        }
        if let Some(policy) = rules::reported_by(judging.into_iter(), |p| weight(p, v.rule)) {
            v.policy = policy;
        }
        true
    });
}

/// `allowedExecutables` and `zeroDrift` on a process's executable: where
/// it is and what it is, so a renamed or copied program is neither. Among
/// the policies that limit executables and refuse this one, the weightiest
/// reporting one judges it, with its own reason.
pub fn executable<'p>(
    policies: &'p [RuntimePolicy],
    exe: &ExecutableFacts<'_>,
    weight: impl Fn(&RuntimePolicy) -> Weight,
) -> Option<Violation<'p>> {
    let refusals: Vec<(&RuntimePolicy, ExecutableRefusal)> = policies
        .iter()
        .filter(|p| p.rules.limits_executables())
        .filter_map(|p| judge::executable(&p.rules, exe).map(|why| (p, why)))
        .collect();
    let policy = rules::reported_by(refusals.iter().map(|(p, _)| *p), weight)?;
    let (_, why) = refusals
        .into_iter()
        .find(|(p, _)| std::ptr::eq(*p, policy))?;
    Some(Violation {
        rule: Rule::ExecutableNotAllowed,
        policy,
        message: why.to_string(),
    })
}

/// A process of the enforcer's UID that made itself non-dumpable: its name
/// is all that is left to judge it by (see `hidden::judge_non_dumpable`).
/// Whether it is judged on this look is the monitor's (`judged_now`).
pub fn non_dumpable<'p>(
    policies: &'p [RuntimePolicy],
    comm: &str,
    pid: i32,
    weight: impl Fn(&RuntimePolicy) -> Weight,
) -> Option<Violation<'p>> {
    let policy = hidden::judge_non_dumpable(policies, comm, weight)?;
    Some(Violation {
        rule: Rule::NonDumpableProcess,
        policy,
        message: format!(
            "{comm} (pid {pid}) runs as the enforcer's UID but made itself \
             non-dumpable: its executable, root and sockets cannot be checked"
        ),
    })
}

/// `deniedProcesses` and `allowedProcesses` on a process known by the
/// names, applet and content in `process` (see `rules::judge_process`).
pub fn names<'p>(
    policies: &'p [RuntimePolicy],
    comm: &str,
    process: &ProcessNames<'_>,
    weight: impl Fn(&RuntimePolicy, Rule) -> Weight,
) -> Vec<Violation<'p>> {
    rules::judge_process(policies, process, weight)
        .into_iter()
        .map(|verdict| {
            let rule = verdict.rule();
            let (policy, message) = match verdict {
                ProcessVerdict::Denied(policy, by) => {
                    (policy, format!("denied process {comm} started ({by})"))
                }
                ProcessVerdict::Unexpected(policy) => {
                    (policy, format!("process {comm} is not in the allowed list"))
                }
            };
            Violation {
                rule,
                policy,
                message,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::ExeIdentity;
    use palisade_common::policy::{AllowedExecutable, Mode, RuntimeRules};

    const SH: &str = "1111111111111111111111111111111111111111111111111111111111111111";
    const APP: &str = "2222222222222222222222222222222222222222222222222222222222222222";

    fn policy(name: &str, mode: Mode, rules: RuntimeRules) -> RuntimePolicy {
        RuntimePolicy {
            name: name.into(),
            mode,
            rules,
        }
    }

    fn listing(paths: &[(&str, &str)]) -> RuntimeRules {
        RuntimeRules {
            allowed_executables: paths
                .iter()
                .map(|(path, sha)| AllowedExecutable {
                    path: path.to_string(),
                    sha256: Some(sha.to_string()),
                })
                .collect(),
            ..RuntimeRules::default()
        }
    }

    fn by_mode(p: &RuntimePolicy) -> Weight {
        Weight::of(p.mode)
    }

    fn by_rule(p: &RuntimePolicy, _: Rule) -> Weight {
        Weight::of(p.mode)
    }

    fn facts<'a>(path: &'a str, sha: &'a str, from_image: bool) -> ExecutableFacts<'a> {
        ExecutableFacts {
            path,
            sha256: Some(sha),
            from_image,
        }
    }

    #[test]
    fn a_copied_shell_is_refused_by_the_enforcing_policy_that_lists_executables() {
        let policies = [
            policy("audit", Mode::Audit, listing(&[("/bin/sh", SH)])),
            policy("enforce", Mode::Enforce, listing(&[("/bin/sh", SH)])),
            policy("plain", Mode::Enforce, RuntimeRules::default()),
        ];
        let v = executable(&policies, &facts("/tmp/x", SH, false), by_mode).unwrap();
        assert_eq!(v.rule, Rule::ExecutableNotAllowed);
        assert_eq!(v.rule.as_str(), "behavior/executable-not-allowed");
        assert_eq!(v.policy.name, "enforce");
        assert_eq!(
            v.message,
            "executable /tmp/x is not on the allowed list and not from the image"
        );
        assert_eq!(
            executable(&policies, &facts("/bin/sh", SH, true), by_mode),
            None
        );
    }

    #[test]
    fn other_content_at_a_listed_path_is_refused_by_content() {
        let policies = [policy(
            "enforce",
            Mode::Enforce,
            listing(&[("/app/server", APP)]),
        )];
        let v = executable(&policies, &facts("/app/server", SH, false), by_mode).unwrap();
        assert!(
            v.message.contains("not the listed content"),
            "{}",
            v.message
        );
    }

    #[test]
    fn zero_drift_lets_the_image_run_and_still_refuses_a_copy() {
        let rules = RuntimeRules {
            zero_drift: true,
            ..RuntimeRules::default()
        };
        let policies = [policy("zero", Mode::Enforce, rules)];
        assert_eq!(
            executable(&policies, &facts("/usr/bin/tool", APP, true), by_mode),
            None
        );
        assert!(executable(&policies, &facts("/tmp/x", SH, false), by_mode).is_some());
    }

    #[test]
    fn a_learning_policy_never_refuses_an_executable() {
        let policies = [policy("learn", Mode::Learn, listing(&[("/bin/sh", SH)]))];
        assert_eq!(
            executable(&policies, &facts("/tmp/x", SH, false), by_mode),
            None
        );
    }

    #[test]
    fn drift_findings_carry_what_they_are_about() {
        let p = policy("drift", Mode::Audit, RuntimeRules::default());
        let temp = vec!["/tmp".to_string()];
        let exe = DriftFacts {
            path: "/tmp/evil",
            deleted: true,
            image: ImageCheck::NotInImage,
        };
        let found: Vec<(Rule, String)> = drift(&p, "evil", &exe, &temp)
            .into_iter()
            .map(|v| (v.rule, v.message))
            .collect();
        assert_eq!(
            found,
            [
                (
                    Rule::DeletedExecutable,
                    "evil runs a deleted executable /tmp/evil".to_string()
                ),
                (
                    Rule::ExecFromTmp,
                    "/tmp/evil executed from /tmp".to_string()
                ),
                (
                    Rule::NewExecutable,
                    "/tmp/evil is not in the container image".to_string()
                ),
            ]
        );
        let predates = DriftFacts {
            path: "/app/server",
            deleted: false,
            image: ImageCheck::Unknown,
        };
        assert!(drift(&p, "server", &predates, &temp).is_empty());
    }

    #[test]
    fn each_drift_finding_goes_to_the_weightiest_reporting_drift_policy() {
        let policies = [
            policy("audit", Mode::Audit, RuntimeRules::default()),
            policy("enforce", Mode::Enforce, RuntimeRules::default()),
            policy("learn", Mode::Learn, RuntimeRules::default()),
        ];
        let mut found = drift(
            &policies[0],
            "x",
            &DriftFacts {
                path: "/tmp/x",
                deleted: false,
                image: ImageCheck::NotInImage,
            },
            &["/tmp".to_string()],
        );
        let excepted = |p: &RuntimePolicy, rule: Rule| {
            Weight::judged(p.mode, p.name == "enforce" && rule == Rule::ExecFromTmp)
        };
        attribute_drift(&mut found, &policies, excepted, |_| false);
        let judged: Vec<(Rule, &str)> = found
            .iter()
            .map(|v| (v.rule, v.policy.name.as_str()))
            .collect();
        assert_eq!(
            judged,
            [
                (Rule::ExecFromTmp, "enforce"),
                (Rule::NewExecutable, "enforce")
            ],
            "excepted still outweighs audit, and learn never judges"
        );
    }

    #[test]
    fn a_pinned_program_is_not_drift_unless_it_runs_deleted() {
        let pinning = policy("enforce", Mode::Enforce, RuntimeRules::default());
        let auditing = policy("audit", Mode::Audit, RuntimeRules::default());
        let facts = |deleted| DriftFacts {
            path: "/tmp/tool",
            deleted,
            image: ImageCheck::NotInImage,
        };
        let temp = ["/tmp".to_string()];
        let pins = |p: &RuntimePolicy| p.name == "enforce";
        let rules_of = |found: &[Violation<'_>]| -> Vec<(Rule, String)> {
            found
                .iter()
                .map(|v| (v.rule, v.policy.name.clone()))
                .collect()
        };

        let only_pinning = std::slice::from_ref(&pinning);
        let mut found = drift(&pinning, "tool", &facts(false), &temp);
        attribute_drift(&mut found, only_pinning, by_rule, pins);
        assert!(found.is_empty(), "{:?}", rules_of(&found));

        let mut found = drift(&pinning, "tool", &facts(true), &temp);
        attribute_drift(&mut found, only_pinning, by_rule, pins);
        assert_eq!(
            rules_of(&found),
            [(Rule::DeletedExecutable, "enforce".to_string())]
        );

        // A policy that does not pin it still judges where it came from.
        let both = [pinning.clone(), auditing];
        let mut found = drift(&both[0], "tool", &facts(false), &temp);
        attribute_drift(&mut found, &both, by_rule, pins);
        assert_eq!(
            rules_of(&found),
            [
                (Rule::ExecFromTmp, "audit".to_string()),
                (Rule::NewExecutable, "audit".to_string())
            ]
        );
    }

    #[test]
    fn names_are_judged_with_what_matched() {
        let rules = RuntimeRules {
            denied_processes: vec!["sh".into()],
            ..RuntimeRules::default()
        };
        let policies = [
            policy("learn", Mode::Learn, rules.clone()),
            policy("audit", Mode::Audit, rules),
        ];
        let identity = ExeIdentity::default();
        let process = ProcessNames {
            names: &["sh", "dash"],
            applet: None,
            identity: &identity,
            denied_content: &[],
        };
        let found = names(&policies, "sh", &process, |p, _| Weight::of(p.mode));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].policy.name, "audit");
        assert_eq!(found[0].message, "denied process sh started (named sh)");
        assert!(names(&policies[..1], "sh", &process, |p, _| Weight::of(p.mode)).is_empty());
    }

    #[test]
    fn a_hidden_process_is_named_with_its_pid_and_never_judged_by_learning() {
        let policies = [policy("audit", Mode::Audit, RuntimeRules::default())];
        let v = non_dumpable(&policies, "implant", 42, by_mode).unwrap();
        assert_eq!(v.rule, Rule::NonDumpableProcess);
        assert!(v
            .message
            .starts_with("implant (pid 42) runs as the enforcer's UID"));
        let learning = [policy("learn", Mode::Learn, RuntimeRules::default())];
        assert_eq!(non_dumpable(&learning, "implant", 42, by_mode), None);
    }
}
