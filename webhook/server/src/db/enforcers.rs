//! Enforcer liveness in the `enforcers` table: one row per pod (by namespace
//! and name) with its enforcer's last heartbeat. What a heartbeat means is
//! decided in `crate::liveness`; this file reads and writes the rows.

use palisade_common::wire::{
    EnforcerRecord, EnforcerState, EnforcerStatus, Event, Heartbeat, Liveness, PodRef,
    ProtectionOff,
};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now_ms, Store, StoreError};
use crate::liveness::{self, LastKnown};

/// Silence for this many heartbeat intervals makes an enforcer missing.
const MISSING_AFTER_HEARTBEATS: i64 = 3;
/// Bounds on the interval an enforcer may announce, in milliseconds.
const HEARTBEAT_MS: std::ops::RangeInclusive<i64> = 100..=3_600_000;

/// The interval an enforcer announces, within [`HEARTBEAT_MS`].
fn heartbeat_ms(enforcer: &EnforcerStatus) -> i64 {
    (enforcer.heartbeat_ms as i64).clamp(*HEARTBEAT_MS.start(), *HEARTBEAT_MS.end())
}

/// Enforcers in one state, summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnforcerTotals {
    pub state: Liveness,
    pub enforcers: u64,
    pub dropped: u64,
    pub unobserved: u64,
}

impl Store {
    /// Records a heartbeat; returns the enforcer event it caused, if any
    /// (`enforcer/stopped` when it says it stops, `enforcer/returned` when
    /// another enforcer takes over the pod or a missing one is heard from
    /// again), already stored.
    pub async fn record_heartbeat(&self, beat: &Heartbeat) -> Result<Option<Event>, StoreError> {
        Ok(self
            .record_heartbeats(std::slice::from_ref(beat))
            .await?
            .pop()
            .flatten())
    }

    /// Records heartbeats together, one result per heartbeat in order (as
    /// [`Store::record_heartbeat`]). An enforcer that keeps reporting (same
    /// pod, same boot, still `reporting`) changes nothing but its figures:
    /// those are one conditional `UPDATE` each, in one transaction for the
    /// whole batch. Any other heartbeat (the first of a pod, a restart, a
    /// return, a stop) is compared with the stored row one by one.
    pub async fn record_heartbeats(
        &self,
        beats: &[Heartbeat],
    ) -> Result<Vec<Option<Event>>, StoreError> {
        let _turn = self.write_turn().await;
        let now = now_ms();
        let mut steady = vec![false; beats.len()];
        // Rows in one order on every replica: two batches touching the same
        // pods cannot deadlock.
        let mut order: Vec<usize> = (0..beats.len()).collect();
        order.sort_by(|&a, &b| {
            (&beats[a].pod.namespace, &beats[a].pod.name)
                .cmp(&(&beats[b].pod.namespace, &beats[b].pod.name))
        });
        let mut tx = self.pool.begin().await?;
        for i in order {
            let (beat, steady) = (&beats[i], &mut steady[i]);
            let enforcer = &beat.enforcer;
            if enforcer.state != EnforcerState::Running {
                continue;
            }
            let updated = sqlx::query(&self.sql(
                "UPDATE enforcers SET heartbeat_ms = ?, last_seen_ms = ?, dropped = ?, unobserved = ?,
                   policy_etag = ?, protections_off = ?
                 WHERE namespace = ? AND pod = ? AND pod_uid = ? AND boot_id = ? AND state = 'reporting'",
            ))
            .bind(heartbeat_ms(enforcer))
            .bind(now)
            .bind(enforcer.dropped as i64)
            .bind(enforcer.unobserved as i64)
            .bind(&enforcer.policy_etag)
            .bind(protections_json(&enforcer.protections_off))
            .bind(&beat.pod.namespace)
            .bind(&beat.pod.name)
            .bind(&beat.pod.uid)
            .bind(&enforcer.boot_id)
            .execute(&mut *tx)
            .await?;
            *steady = updated.rows_affected() == 1;
        }
        tx.commit().await?;
        let mut results = Vec::with_capacity(beats.len());
        for (beat, steady) in beats.iter().zip(steady) {
            results.push(match steady {
                true => None,
                false => self.record_changed_heartbeat(beat, now).await?,
            });
        }
        Ok(results)
    }

    /// A heartbeat that may change the pod's state: compared with the
    /// stored row, stored, and its event (if any) stored too. In turn.
    async fn record_changed_heartbeat(
        &self,
        beat: &Heartbeat,
        now: i64,
    ) -> Result<Option<Event>, StoreError> {
        let pod = &beat.pod;
        let enforcer = &beat.enforcer;
        let before = sqlx::query(&self.sql(
            "SELECT pod_uid, boot_id, state, last_seen_ms FROM enforcers WHERE namespace = ? AND pod = ?",
        ))
        .bind(&pod.namespace)
        .bind(&pod.name)
        .fetch_optional(&self.pool)
        .await?;
        let before = match before {
            Some(row) => Some(LastKnown {
                pod_uid: row.try_get(0)?,
                boot_id: row.try_get(1)?,
                state: Liveness::parse(&row.try_get::<String, _>(2)?)
                    .unwrap_or(Liveness::Reporting),
                last_seen_ms: row.try_get(3)?,
            }),
            None => None,
        };
        if liveness::is_late_heartbeat(before.as_ref(), enforcer) {
            return Ok(None);
        }
        let state = match enforcer.state {
            EnforcerState::Running => Liveness::Reporting,
            EnforcerState::Stopping => Liveness::Stopped,
        };
        sqlx::query(&self.sql(
            "INSERT INTO enforcers (namespace, pod, pod_uid, boot_id, heartbeat_ms, last_seen_ms, state, dropped, unobserved, policy_etag, protections_off)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (namespace, pod) DO UPDATE SET pod_uid = excluded.pod_uid,
               boot_id = excluded.boot_id, heartbeat_ms = excluded.heartbeat_ms,
               last_seen_ms = excluded.last_seen_ms, state = excluded.state,
               dropped = excluded.dropped, unobserved = excluded.unobserved,
               policy_etag = excluded.policy_etag, protections_off = excluded.protections_off",
        ))
        .bind(&pod.namespace)
        .bind(&pod.name)
        .bind(&pod.uid)
        .bind(&enforcer.boot_id)
        .bind(heartbeat_ms(enforcer))
        .bind(now)
        .bind(state.as_str())
        .bind(enforcer.dropped as i64)
        .bind(enforcer.unobserved as i64)
        .bind(&enforcer.policy_etag)
        .bind(protections_json(&enforcer.protections_off))
        .execute(&self.pool)
        .await?;
        let event = liveness::transition(before.as_ref(), &pod.uid, enforcer, now)
            .map(|t| t.event(&enforcer.boot_id, now));
        if let Some(e) = &event {
            self.insert_events_in_turn(pod, std::slice::from_ref(e))
                .await?;
        }
        Ok(event)
    }

    /// Marks enforcers silent for longer than their heartbeats allow as
    /// missing and stores one `enforcer/missing` event for each; returns them.
    /// Safe on several replicas: the state change is conditional and the
    /// event id is derived from the silence it reports.
    pub async fn mark_missing_enforcers(&self, now: i64) -> Result<Vec<PodRef>, StoreError> {
        let _turn = self.write_turn().await;
        let rows = sqlx::query(&self.sql(
            "SELECT namespace, pod, pod_uid, boot_id, last_seen_ms, heartbeat_ms FROM enforcers
             WHERE state = 'reporting' AND last_seen_ms + heartbeat_ms * ? < ?",
        ))
        .bind(MISSING_AFTER_HEARTBEATS)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        let mut missing = Vec::new();
        for row in rows {
            let pod = PodRef {
                namespace: row.try_get(0)?,
                name: row.try_get(1)?,
                uid: row.try_get(2)?,
            };
            let boot: String = row.try_get(3)?;
            let last_seen: i64 = row.try_get(4)?;
            let changed = sqlx::query(&self.sql(
                "UPDATE enforcers SET state = 'missing'
                 WHERE namespace = ? AND pod = ? AND state = 'reporting' AND last_seen_ms = ?",
            ))
            .bind(&pod.namespace)
            .bind(&pod.name)
            .bind(last_seen)
            .execute(&self.pool)
            .await?;
            if changed.rows_affected() == 0 {
                continue;
            }
            let event = Event::enforcer(
                format!("missing-{boot}-{last_seen}"),
                now,
                "enforcer/missing",
                format!(
                    "no heartbeat for {} s: the enforcer was stopped, killed or starved",
                    (now - last_seen) / 1000
                ),
            );
            self.insert_events_in_turn(&pod, &[event]).await?;
            missing.push(pod);
        }
        Ok(missing)
    }

    /// Every enforcer that ever sent a heartbeat.
    pub async fn enforcers(&self) -> Result<Vec<EnforcerRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT namespace, pod, pod_uid, boot_id, heartbeat_ms, last_seen_ms, state, dropped, unobserved, policy_etag, protections_off
             FROM enforcers ORDER BY namespace, pod",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(enforcer_record).collect()
    }

    /// Enforcers by state, with what the reporting ones say they dropped
    /// and failed to observe (their running totals, summed).
    pub async fn enforcer_totals(&self) -> Result<Vec<EnforcerTotals>, StoreError> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*), CAST(COALESCE(SUM(dropped), 0) AS BIGINT),
                    CAST(COALESCE(SUM(unobserved), 0) AS BIGINT)
             FROM enforcers GROUP BY state",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .filter_map(|row| {
                let state = Liveness::parse(&row.try_get::<String, _>(0).ok()?)?;
                Some((|| {
                    Ok(EnforcerTotals {
                        state,
                        enforcers: row.try_get::<i64, _>(1)? as u64,
                        dropped: row.try_get::<i64, _>(2)? as u64,
                        unobserved: row.try_get::<i64, _>(3)? as u64,
                    })
                })())
            })
            .collect()
    }
}

fn enforcer_record(row: &AnyRow) -> Result<EnforcerRecord, StoreError> {
    let pod = PodRef {
        namespace: row.try_get(0)?,
        name: row.try_get(1)?,
        uid: row.try_get(2)?,
    };
    let stored: String = row.try_get(10)?;
    // An unreadable list must not read as "nothing is off": that is the
    // very silence the column exists to end.
    let protections_off =
        serde_json::from_str(&stored).map_err(|source| StoreError::CorruptEnforcer {
            namespace: pod.namespace.clone(),
            pod: pod.name.clone(),
            source,
        })?;
    Ok(EnforcerRecord {
        pod,
        boot_id: row.try_get(3)?,
        heartbeat_ms: row.try_get::<i64, _>(4)? as u64,
        last_seen_ms: row.try_get(5)?,
        state: Liveness::parse(&row.try_get::<String, _>(6)?).unwrap_or(Liveness::Reporting),
        dropped: row.try_get::<i64, _>(7)? as u64,
        unobserved: row.try_get::<i64, _>(8)? as u64,
        policy_etag: row.try_get(9)?,
        protections_off,
    })
}

/// The column's text: a JSON array, as the wire type serialises it.
fn protections_json(off: &[ProtectionOff]) -> String {
    serde_json::to_string(off).unwrap_or_else(|_| "[]".into())
}

#[cfg(test)]
mod tests {
    use palisade_common::wire::EnforcerProtection;

    use super::super::tests::{each_backend, mk_beat};
    use super::*;

    fn drift_off() -> ProtectionOff {
        ProtectionOff {
            protection: EnforcerProtection::Drift,
            reason: "app runs as uid 1001, the enforcer as 65532".into(),
        }
    }

    #[tokio::test]
    async fn the_protections_an_enforcer_reports_off_are_stored_and_replaced_by_each_heartbeat() {
        each_backend(|store| async move {
            let mut beat = mk_beat("web-0", "b1", EnforcerState::Running);
            beat.enforcer.protections_off = vec![
                drift_off(),
                ProtectionOff {
                    protection: EnforcerProtection::SocketOwners,
                    reason: "fds of other UIDs unreadable".into(),
                },
            ];
            store.record_heartbeat(&beat).await.unwrap();
            store
                .record_heartbeat(&mk_beat("web-1", "b9", EnforcerState::Running))
                .await
                .unwrap();
            let enforcers = store.enforcers().await.unwrap();
            assert_eq!(enforcers[0].protections_off, beat.enforcer.protections_off);
            assert!(enforcers[1].protections_off.is_empty(), "{enforcers:?}");

            // It regained its sight: the next heartbeat clears the list.
            beat.enforcer.protections_off.clear();
            store.record_heartbeat(&beat).await.unwrap();
            assert!(store.enforcers().await.unwrap()[0]
                .protections_off
                .is_empty());
        })
        .await;
    }

    #[tokio::test]
    async fn a_restarted_enforcer_is_recorded_as_returned_once_with_its_gap() {
        each_backend(|store| async move {
            let first = mk_beat("web-0", "b1", EnforcerState::Running);
            assert_eq!(store.record_heartbeat(&first).await.unwrap(), None);
            // Killed: no stopping heartbeat, and back before the sweep.
            let second = mk_beat("web-0", "b2", EnforcerState::Running);
            let event = store
                .record_heartbeat(&second)
                .await
                .unwrap()
                .expect("a restart is news");
            assert_eq!(event.rule, liveness::RETURNED_RULE);
            assert!(
                event.message.contains("(boot b1) did not stop cleanly"),
                "{}",
                event.message
            );
            // Its next heartbeats are ordinary.
            assert_eq!(store.record_heartbeat(&second).await.unwrap(), None);
            let stored = store
                .query_events(&super::super::EventQuery {
                    rule: Some(liveness::RETURNED_RULE.into()),
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(stored.len(), 1, "{stored:?}");
            assert_eq!(stored[0].pod.uid, "uid-web-0");
            assert_eq!(store.enforcers().await.unwrap()[0].boot_id, "b2");
        })
        .await;
    }

    #[tokio::test]
    async fn a_restart_after_a_clean_stop_says_so() {
        each_backend(|store| async move {
            let mut stopping = mk_beat("web-0", "b1", EnforcerState::Stopping);
            stopping.enforcer.reason = "SIGTERM".into();
            let stopped = store.record_heartbeat(&stopping).await.unwrap().unwrap();
            assert_eq!(stopped.message, "enforcer stopping (SIGTERM)");
            let event = store
                .record_heartbeat(&mk_beat("web-0", "b2", EnforcerState::Running))
                .await
                .unwrap()
                .unwrap();
            assert!(
                event.message.ends_with("(boot b1) had stopped cleanly"),
                "{}",
                event.message
            );
        })
        .await;
    }

    #[tokio::test]
    async fn an_unreadable_protections_column_is_an_error_not_an_empty_list() {
        each_backend(|store| async move {
            store
                .record_heartbeat(&mk_beat("web-0", "b1", EnforcerState::Running))
                .await
                .unwrap();
            sqlx::query("UPDATE enforcers SET protections_off = 'not json'")
                .execute(&store.pool)
                .await
                .unwrap();
            let err = store.enforcers().await.unwrap_err().to_string();
            assert!(err.contains("shop/web-0"), "{err}");
        })
        .await;
    }

    #[tokio::test]
    async fn a_batch_of_heartbeats_answers_each_in_order_and_only_changes_make_events() {
        each_backend(|store| async move {
            let first = [
                mk_beat("a", "b1", EnforcerState::Running),
                mk_beat("b", "b1", EnforcerState::Running),
            ];
            assert_eq!(store.record_heartbeats(&first).await.unwrap(), [None, None]);
            let mut steady = mk_beat("a", "b1", EnforcerState::Running);
            steady.enforcer.dropped = 7;
            steady.enforcer.policy_etag = "v2".into();
            let batch = [
                steady,
                // Pod b's enforcer was replaced: the one heartbeat that is news.
                mk_beat("b", "b2", EnforcerState::Running),
                mk_beat("c", "b1", EnforcerState::Stopping),
            ];
            let events = store.record_heartbeats(&batch).await.unwrap();
            assert_eq!(events[0], None);
            assert_eq!(events[1].as_ref().unwrap().rule, "enforcer/returned");
            assert_eq!(events[2].as_ref().unwrap().rule, "enforcer/stopped");
            let all = store.enforcers().await.unwrap();
            let a = all.iter().find(|e| e.pod.name == "a").unwrap();
            assert_eq!((a.dropped, a.policy_etag.as_str()), (7, "v2"));
            let b = all.iter().find(|e| e.pod.name == "b").unwrap();
            assert_eq!(b.boot_id, "b2");
            let c = all.iter().find(|e| e.pod.name == "c").unwrap();
            assert_eq!(c.state, Liveness::Stopped);
            // Its last periodic heartbeat, written after its stop: old news.
            let late = [mk_beat("c", "b1", EnforcerState::Running)];
            assert_eq!(store.record_heartbeats(&late).await.unwrap(), [None]);
            let all = store.enforcers().await.unwrap();
            let c = all.iter().find(|e| e.pod.name == "c").unwrap();
            assert_eq!(c.state, Liveness::Stopped);
        })
        .await;
    }
}
