//! What an enforcer's heartbeat tells about its pod, given what the service
//! last stored for that pod: pure, so every case is a unit test; `db`
//! stores the outcome and its event.
//!
//! A killed enforcer says nothing. The service learns of it either from
//! silence (several heartbeat intervals: `enforcer/missing`) or from its
//! successor: the kubelet restarts a native sidecar within seconds, usually
//! before the silence counts, so a new boot id in the same pod is often the
//! only sign that the pod went unwatched for a while.

use palisade_common::wire::{EnforcerState, EnforcerStatus, Event, Liveness};

/// What the service last stored for the enforcer of a pod (by namespace
/// and name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LastKnown {
    pub pod_uid: String,
    pub boot_id: String,
    pub state: Liveness,
    /// When its last heartbeat arrived, on the service's clock.
    pub last_seen_ms: i64,
}

/// How the previous enforcer of a pod ended, as far as the service knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreviousEnd {
    /// It said it was stopping (SIGTERM...).
    StoppedCleanly,
    /// It fell silent and had been reported missing.
    ReportedMissing,
    /// It fell silent without a word and its successor arrived before the
    /// silence counted as missing: killed or crashed.
    Silent,
}

impl PreviousEnd {
    pub fn stopped_cleanly(self) -> bool {
        self == PreviousEnd::StoppedCleanly
    }

    fn describe(self) -> &'static str {
        match self {
            PreviousEnd::StoppedCleanly => "had stopped cleanly",
            PreviousEnd::ReportedMissing => {
                "did not stop cleanly: it fell silent (killed, crashed or starved) and was reported missing"
            }
            PreviousEnd::Silent => {
                "did not stop cleanly: it fell silent without a word (killed or crashed)"
            }
        }
    }
}

/// A heartbeat that changes what the service knows of a pod's protection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Transition {
    /// It says it stops: its silence from now on is expected.
    Stopping { reason: String },
    /// Another enforcer process took over the same pod: the pod was
    /// unwatched between the previous one's end and this one's start.
    Restarted {
        previous_boot: String,
        previous: PreviousEnd,
        /// The previous enforcer's last heartbeat.
        last_heartbeat_ms: i64,
        /// From that heartbeat to this one (this boot's first).
        gap_ms: i64,
    },
    /// The same process heard from again after it was reported missing:
    /// it was stopped (SIGSTOP) or starved, not restarted.
    Resumed { last_heartbeat_ms: i64, gap_ms: i64 },
}

/// A stopped enforcer never runs again (a restart has a new boot), so a
/// running heartbeat of the boot stored as stopped was sent before the
/// stop (on the long-poll, while the stop went on the report connection)
/// and is old news: it changes nothing.
pub fn is_late_heartbeat(before: Option<&LastKnown>, enforcer: &EnforcerStatus) -> bool {
    before.is_some_and(|b| {
        b.state == Liveness::Stopped
            && b.boot_id == enforcer.boot_id
            && enforcer.state == EnforcerState::Running
    })
}

/// What `enforcer`'s heartbeat, arriving at `now_ms` from the pod with uid
/// `pod_uid`, means after `before` (`None`: the first heard from the pod).
pub fn transition(
    before: Option<&LastKnown>,
    pod_uid: &str,
    enforcer: &EnforcerStatus,
    now_ms: i64,
) -> Option<Transition> {
    if enforcer.state == EnforcerState::Stopping {
        return Some(Transition::Stopping {
            reason: enforcer.reason.clone(),
        });
    }
    let before = before?;
    // A pod recreated under the same name (StatefulSet) is another pod: its
    // enforcer is new, not back. Enforcers that send no uid cannot tell.
    let other_pod = !before.pod_uid.is_empty() && !pod_uid.is_empty() && before.pod_uid != pod_uid;
    if other_pod {
        return None;
    }
    let gap_ms = (now_ms - before.last_seen_ms).max(0);
    if before.boot_id != enforcer.boot_id {
        let previous = match before.state {
            Liveness::Stopped => PreviousEnd::StoppedCleanly,
            Liveness::Missing => PreviousEnd::ReportedMissing,
            Liveness::Reporting => PreviousEnd::Silent,
        };
        return Some(Transition::Restarted {
            previous_boot: before.boot_id.clone(),
            previous,
            last_heartbeat_ms: before.last_seen_ms,
            gap_ms,
        });
    }
    (before.state == Liveness::Missing).then_some(Transition::Resumed {
        last_heartbeat_ms: before.last_seen_ms,
        gap_ms,
    })
}

/// The rule of the event a restart or resumption records.
pub const RETURNED_RULE: &str = "enforcer/returned";
/// The rule of the event a clean stop records.
pub const STOPPED_RULE: &str = "enforcer/stopped";

impl Transition {
    /// The event recording this transition of enforcer `boot_id`. Its id
    /// is derived from what it reports, so replicas and retried heartbeats
    /// store it once.
    pub fn event(&self, boot_id: &str, now_ms: i64) -> Event {
        match self {
            Transition::Stopping { reason } => Event::enforcer(
                format!("stopped-{boot_id}"),
                now_ms,
                STOPPED_RULE,
                format!(
                    "enforcer stopping ({})",
                    if reason.is_empty() {
                        "reason unknown"
                    } else {
                        reason
                    }
                ),
            ),
            Transition::Restarted {
                previous_boot,
                previous,
                last_heartbeat_ms,
                gap_ms,
            } => Event::enforcer(
                format!("returned-{boot_id}-{last_heartbeat_ms}"),
                now_ms,
                RETURNED_RULE,
                format!(
                    "enforcer restarted after {} without heartbeats ({gap_ms} ms from the previous \
                     enforcer's last heartbeat to this one's first); the previous one (boot \
                     {previous_boot}) {}",
                    seconds(*gap_ms),
                    previous.describe()
                ),
            ),
            Transition::Resumed {
                last_heartbeat_ms,
                gap_ms,
            } => Event::enforcer(
                format!("returned-{boot_id}-{last_heartbeat_ms}"),
                now_ms,
                RETURNED_RULE,
                format!(
                    "enforcer resumed after {} without heartbeats ({gap_ms} ms): the same \
                     process, stopped or starved, not restarted",
                    seconds(*gap_ms)
                ),
            ),
        }
    }
}

fn seconds(ms: i64) -> String {
    format!("{}.{} s", ms / 1000, (ms % 1000) / 100)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mk_status(boot: &str, state: EnforcerState) -> EnforcerStatus {
        EnforcerStatus {
            boot_id: boot.into(),
            started_ms: 1,
            heartbeat_ms: 10_000,
            state,
            reason: if state == EnforcerState::Stopping {
                "SIGTERM".into()
            } else {
                String::new()
            },
            dropped: 0,
            unobserved: 0,
            policy_etag: String::new(),
            protections_off: Vec::new(),
        }
    }

    fn mk_known(boot: &str, state: Liveness, last_seen_ms: i64) -> LastKnown {
        LastKnown {
            pod_uid: "uid-1".into(),
            boot_id: boot.into(),
            state,
            last_seen_ms,
        }
    }

    fn running(boot: &str) -> EnforcerStatus {
        mk_status(boot, EnforcerState::Running)
    }

    #[test]
    fn only_a_running_heartbeat_of_the_stopped_boot_is_late() {
        let stopped = mk_known("b1", Liveness::Stopped, 10_000);
        assert!(is_late_heartbeat(Some(&stopped), &running("b1")));
        assert!(
            !is_late_heartbeat(Some(&stopped), &running("b2")),
            "a restart"
        );
        let stopping = mk_status("b1", EnforcerState::Stopping);
        assert!(!is_late_heartbeat(Some(&stopped), &stopping));
        let missing = mk_known("b1", Liveness::Missing, 10_000);
        assert!(
            !is_late_heartbeat(Some(&missing), &running("b1")),
            "resumed"
        );
        assert!(!is_late_heartbeat(None, &running("b1")));
    }

    #[test]
    fn a_new_boot_in_a_pod_whose_enforcer_fell_silent_is_a_restart_with_its_gap() {
        let before = mk_known("b1", Liveness::Reporting, 10_000);
        assert_eq!(
            transition(Some(&before), "uid-1", &running("b2"), 14_250),
            Some(Transition::Restarted {
                previous_boot: "b1".into(),
                previous: PreviousEnd::Silent,
                last_heartbeat_ms: 10_000,
                gap_ms: 4_250,
            })
        );
    }

    #[test]
    fn a_restart_says_whether_the_previous_enforcer_stopped_cleanly_or_was_missing() {
        let after = |state| match transition(
            Some(&mk_known("b1", state, 1_000)),
            "uid-1",
            &running("b2"),
            61_000,
        ) {
            Some(Transition::Restarted { previous, .. }) => previous,
            other => panic!("{other:?}"),
        };
        assert_eq!(after(Liveness::Stopped), PreviousEnd::StoppedCleanly);
        assert!(after(Liveness::Stopped).stopped_cleanly());
        assert_eq!(after(Liveness::Missing), PreviousEnd::ReportedMissing);
        assert!(!after(Liveness::Missing).stopped_cleanly());
        assert!(!after(Liveness::Reporting).stopped_cleanly());
    }

    #[test]
    fn the_same_boot_is_news_only_when_it_had_been_reported_missing() {
        let beat = running("b1");
        assert_eq!(
            transition(
                Some(&mk_known("b1", Liveness::Reporting, 1_000)),
                "uid-1",
                &beat,
                11_000
            ),
            None
        );
        assert_eq!(
            transition(
                Some(&mk_known("b1", Liveness::Missing, 1_000)),
                "uid-1",
                &beat,
                41_000
            ),
            Some(Transition::Resumed {
                last_heartbeat_ms: 1_000,
                gap_ms: 40_000
            })
        );
        assert_eq!(
            transition(
                Some(&mk_known("b1", Liveness::Stopped, 1_000)),
                "uid-1",
                &beat,
                2_000
            ),
            None
        );
    }

    #[test]
    fn the_first_heartbeat_of_a_pod_and_a_pod_recreated_under_its_name_are_no_return() {
        assert_eq!(transition(None, "uid-1", &running("b1"), 1_000), None);
        let old_pod = mk_known("b1", Liveness::Missing, 1_000);
        assert_eq!(
            transition(Some(&old_pod), "uid-2", &running("b2"), 90_000),
            None
        );
        // Without a uid on one side the pods cannot be told apart: a new
        // boot is then taken as a restart.
        assert!(matches!(
            transition(Some(&old_pod), "", &running("b2"), 90_000),
            Some(Transition::Restarted { .. })
        ));
    }

    #[test]
    fn a_stopping_heartbeat_is_a_stop_whatever_came_before() {
        let stopping = mk_status("b1", EnforcerState::Stopping);
        for before in [None, Some(mk_known("b0", Liveness::Reporting, 0))] {
            assert_eq!(
                transition(before.as_ref(), "uid-1", &stopping, 5),
                Some(Transition::Stopping {
                    reason: "SIGTERM".into()
                })
            );
        }
    }

    #[test]
    fn a_clock_step_backwards_never_makes_a_negative_gap() {
        let before = mk_known("b1", Liveness::Reporting, 10_000);
        assert!(matches!(
            transition(Some(&before), "uid-1", &running("b2"), 9_000),
            Some(Transition::Restarted { gap_ms: 0, .. })
        ));
    }

    #[test]
    fn the_returned_event_states_the_gap_and_how_the_previous_enforcer_ended() {
        let restart = Transition::Restarted {
            previous_boot: "b1".into(),
            previous: PreviousEnd::Silent,
            last_heartbeat_ms: 10_000,
            gap_ms: 4_250,
        };
        let event = restart.event("b2", 14_250);
        assert_eq!(event.rule, RETURNED_RULE);
        assert_eq!(event.id, "returned-b2-10000");
        assert_eq!(event.time_ms, 14_250);
        assert_eq!(
            event.message,
            "enforcer restarted after 4.2 s without heartbeats (4250 ms from the previous \
             enforcer's last heartbeat to this one's first); the previous one (boot b1) did not \
             stop cleanly: it fell silent without a word (killed or crashed)"
        );
        let clean = Transition::Restarted {
            previous_boot: "b1".into(),
            previous: PreviousEnd::StoppedCleanly,
            last_heartbeat_ms: 10_000,
            gap_ms: 4_250,
        };
        assert!(
            clean
                .event("b2", 14_250)
                .message
                .ends_with("(boot b1) had stopped cleanly"),
            "{}",
            clean.event("b2", 14_250).message
        );
        let resumed = Transition::Resumed {
            last_heartbeat_ms: 1_000,
            gap_ms: 41_000,
        }
        .event("b1", 42_000);
        assert_eq!(resumed.rule, RETURNED_RULE);
        assert!(
            resumed.message.starts_with("enforcer resumed after 41.0 s"),
            "{}",
            resumed.message
        );
        let stop = Transition::Stopping {
            reason: String::new(),
        }
        .event("b1", 5);
        assert_eq!(
            (stop.rule.as_str(), stop.id.as_str(), stop.message.as_str()),
            (
                STOPPED_RULE,
                "stopped-b1",
                "enforcer stopping (reason unknown)"
            )
        );
    }
}
