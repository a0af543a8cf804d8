//! Processes the enforcer cannot inspect. A process of the enforcer's own
//! UID that made itself non-dumpable closes its executable, root, memory
//! maps and file descriptors to it; its name, command line, IDs and start
//! time stay readable, and it can still be signalled. What the policies
//! say about such a process, and who is stopped for a forbidden socket
//! that no readable process holds. Pure decisions: `monitor` gathers the
//! facts and acts on them.

use std::time::Duration;

use palisade_common::policy::{Mode, NonDumpable};
use palisade_common::wire::RuntimePolicy;

use crate::rules::{weightiest, NotKilled, Unreadable, Weight};

/// The policy that judges a non-dumpable process named `comm`: among the
/// policies that do not allow that name to hide, the weightiest (an
/// enforcing one before an auditing one) and, among equals, one that stops
/// hidden processes, so that one policy saying `report` never overrules
/// another that stops them. None when every policy allows the name, and
/// when only learning policies would judge it.
pub fn judge_non_dumpable<'p>(
    policies: &'p [RuntimePolicy],
    comm: &str,
    weight: impl Fn(&RuntimePolicy) -> Weight,
) -> Option<&'p RuntimePolicy> {
    weightiest(
        policies
            .iter()
            .filter(|p| !p.rules.allows_non_dumpable(comm)),
        |p| (weight(p), p.rules.non_dumpable == NonDumpable::Kill),
    )
    .filter(|p| weight(p).reports())
}

/// Where a newly non-dumpable process came from, as far as /proc tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Forked by a process already hidden: a fork inherits it.
    HiddenParent,
    /// Started from outside the pod's PID namespace (parent PID 0: the
    /// container runtime) in a cgroup no other process is in: a
    /// container's first process, which the runtime holds, non-dumpable
    /// and already of the container's user, until it starts the container.
    NewContainer,
    /// Anything else.
    Other,
}

/// A credential change makes a process non-dumpable until its next exec:
/// the runtime's `runc init` between taking the container's user and
/// running the command (containers, `kubectl exec`, exec probes),
/// `setpriv`, `su`. Such a process hides for a moment; one that hides on
/// purpose stays hidden.
pub const TRANSITION: Duration = Duration::from_secs(2);
/// How long the runtime may hold a new container's first process.
pub const CONTAINER_START: Duration = Duration::from_secs(30);

/// How long a process seen non-dumpable is left to finish what made it so
/// before it is judged. A child of a hidden process gets no time, so
/// forking anew never buys any.
pub fn grace(origin: Origin) -> Duration {
    match origin {
        Origin::HiddenParent => Duration::ZERO,
        Origin::NewContainer => CONTAINER_START,
        Origin::Other => TRANSITION,
    }
}

/// A process whose descriptors the enforcer could not read: it may hold a
/// socket that no readable process holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    pub pid: i32,
    pub why: Unreadable,
}

/// What to do about a forbidden socket that no readable process holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HiddenOwner {
    /// These processes are the only ones that could hold it.
    Stop(Vec<i32>),
    Leave(NotKilled),
}

/// Who is stopped for a socket that the policy judging it (acted on in
/// `mode`, saying `hidden` about hidden processes) forbids, when only
/// `candidates` could hold it.
///
/// A process of another UID or GID among them may be the holder, and
/// cannot be told apart or (another UID) signalled: nothing is stopped.
/// Otherwise only non-dumpable processes of the enforcer's own UID can
/// hold it, and hiding is what keeps the enforcer from telling which: where
/// the policy stops hidden processes, all of them are stopped. That
/// includes one whose name the policy allows to hide: being allowed to hide
/// is not being allowed to listen or connect.
pub fn hidden_owner(candidates: &[Candidate], mode: Mode, hidden: NonDumpable) -> HiddenOwner {
    if candidates.is_empty() {
        return HiddenOwner::Leave(NotKilled::NoOwner);
    }
    if candidates.iter().any(|c| c.why != Unreadable::NonDumpable) {
        return HiddenOwner::Leave(NotKilled::OwnerOtherUid);
    }
    if mode != Mode::Enforce || hidden != NonDumpable::Kill {
        return HiddenOwner::Leave(NotKilled::OwnerHidden);
    }
    HiddenOwner::Stop(candidates.iter().map(|c| c.pid).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_common::policy::RuntimeRules;

    fn policy(name: &str, mode: Mode, hidden: NonDumpable, allowed: &[&str]) -> RuntimePolicy {
        RuntimePolicy {
            name: name.into(),
            mode,
            rules: RuntimeRules {
                non_dumpable: hidden,
                allowed_non_dumpable: allowed.iter().map(|s| s.to_string()).collect(),
                ..RuntimeRules::default()
            },
        }
    }

    fn judge<'p>(policies: &'p [RuntimePolicy], comm: &str) -> Option<&'p str> {
        judge_non_dumpable(policies, comm, |p| Weight::of(p.mode)).map(|p| p.name.as_str())
    }

    #[test]
    fn a_policy_that_stops_hidden_processes_judges_before_one_that_only_reports_them() {
        let policies = [
            policy("audit", Mode::Audit, NonDumpable::Kill, &[]),
            policy("reports", Mode::Enforce, NonDumpable::Report, &[]),
            policy("stops", Mode::Enforce, NonDumpable::Kill, &[]),
        ];
        assert_eq!(judge(&policies, "x"), Some("stops"));
        assert_eq!(judge(&policies[..2], "x"), Some("reports"));
        assert_eq!(judge(&policies[..1], "x"), Some("audit"));
    }

    #[test]
    fn a_name_a_policy_allows_to_hide_is_judged_only_by_the_others() {
        let policies = [
            policy(
                "enforcers-ok",
                Mode::Enforce,
                NonDumpable::Kill,
                &["ssh-agent"],
            ),
            policy("audit", Mode::Audit, NonDumpable::Kill, &[]),
        ];
        assert_eq!(judge(&policies, "ssh-agent"), Some("audit"));
        assert_eq!(judge(&policies[..1], "ssh-agent"), None);
        assert_eq!(judge(&policies[..1], "sh"), Some("enforcers-ok"));
        let mut only_app = policy("only-app", Mode::Enforce, NonDumpable::Kill, &[]);
        only_app.rules.allowed_processes = vec!["app".into()];
        assert_eq!(
            judge(std::slice::from_ref(&only_app), "app"),
            None,
            "a name on allowedProcesses may run, hidden or not"
        );
    }

    #[test]
    fn a_learning_policy_never_judges_a_hidden_process() {
        let policies = [
            policy("learn", Mode::Learn, NonDumpable::Kill, &[]),
            policy("audit", Mode::Audit, NonDumpable::Kill, &["x"]),
        ];
        assert_eq!(judge(&policies, "x"), None);
        assert_eq!(judge(&policies, "y"), Some("audit"));
    }

    #[test]
    fn an_excepted_policy_weighs_less_than_an_enforcing_one() {
        let policies = [
            policy("excepted", Mode::Enforce, NonDumpable::Kill, &[]),
            policy("audit", Mode::Audit, NonDumpable::Kill, &[]),
        ];
        let weight = |p: &RuntimePolicy| {
            if p.name == "excepted" {
                Weight::Excepted
            } else {
                Weight::of(p.mode)
            }
        };
        assert_eq!(
            judge_non_dumpable(&policies, "x", weight).map(|p| p.name.as_str()),
            Some("excepted"),
            "reported as excepted, so the exception's owner sees it used"
        );
    }

    #[test]
    fn a_credential_change_gets_a_moment_and_a_child_of_a_hidden_process_none() {
        assert_eq!(grace(Origin::HiddenParent), Duration::ZERO);
        assert_eq!(grace(Origin::Other), TRANSITION);
        assert!(grace(Origin::NewContainer) > TRANSITION);
    }

    fn hidden(pid: i32) -> Candidate {
        Candidate {
            pid,
            why: Unreadable::NonDumpable,
        }
    }

    #[test]
    fn the_only_hidden_processes_that_could_hold_a_forbidden_socket_are_stopped() {
        let stop = |c: &[Candidate]| hidden_owner(c, Mode::Enforce, NonDumpable::Kill);
        assert_eq!(stop(&[hidden(7)]), HiddenOwner::Stop(vec![7]));
        assert_eq!(
            stop(&[hidden(7), hidden(9)]),
            HiddenOwner::Stop(vec![7, 9]),
            "nothing tells which one holds it"
        );
        assert_eq!(stop(&[]), HiddenOwner::Leave(NotKilled::NoOwner));
    }

    #[test]
    fn a_process_of_another_uid_that_could_hold_the_socket_leaves_it_unattributed() {
        let other = Candidate {
            pid: 3,
            why: Unreadable::OtherUid(0),
        };
        assert_eq!(
            hidden_owner(&[hidden(7), other], Mode::Enforce, NonDumpable::Kill),
            HiddenOwner::Leave(NotKilled::OwnerOtherUid)
        );
    }

    #[test]
    fn hidden_holders_are_left_under_audit_or_where_the_policy_only_reports_them() {
        assert_eq!(
            hidden_owner(&[hidden(7)], Mode::Audit, NonDumpable::Kill),
            HiddenOwner::Leave(NotKilled::OwnerHidden)
        );
        assert_eq!(
            hidden_owner(&[hidden(7)], Mode::Enforce, NonDumpable::Report),
            HiddenOwner::Leave(NotKilled::OwnerHidden)
        );
    }
}
