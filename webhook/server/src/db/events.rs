//! Enforcer reports in the `events` table: stored once each (by pod and
//! event id), queried by namespace, pod, kind, rule and time.

use palisade_common::wire::{Event, EventKind, PodRef, StoredEvent};
use sqlx::Row;

use super::{now_ms, Store, StoreError};

/// Filters for the event query API; all optional.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub kind: Option<EventKind>,
    /// Exact rule id, e.g. `enforcer/prevention`.
    pub rule: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: i64,
}

impl Store {
    /// Stores the events not stored before (by pod and event id); returns
    /// how many were new. Retried batches therefore never duplicate.
    pub async fn insert_events(&self, pod: &PodRef, events: &[Event]) -> Result<usize, StoreError> {
        let _turn = self.write_turn().await;
        self.insert_events_in_turn(pod, events).await
    }

    /// For a caller already holding the write turn, which it took for
    /// more than these events (an enforcer's row and the events it causes).
    pub(super) async fn insert_events_in_turn(
        &self,
        pod: &PodRef,
        events: &[Event],
    ) -> Result<usize, StoreError> {
        let received = now_ms();
        let insert = self.sql(
            "INSERT INTO events (namespace, pod, id, pod_uid, kind, rule, policy, mode, action, message, time_ms, received_ms, body)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
        );
        let mut stored = 0;
        let mut tx = self.pool.begin().await?;
        for event in events {
            let body = serde_json::to_string(event).unwrap_or_default();
            let result = sqlx::query(&insert)
                .bind(&pod.namespace)
                .bind(&pod.name)
                .bind(&event.id)
                .bind(&pod.uid)
                .bind(event.kind.as_str())
                .bind(&event.rule)
                .bind(event.policy.clone())
                .bind(event.mode.as_str())
                .bind(event.action.clone())
                .bind(&event.message)
                .bind(event.time_ms)
                .bind(received)
                .bind(body)
                .execute(&mut *tx)
                .await?;
            stored += result.rows_affected() as usize;
        }
        tx.commit().await?;
        Ok(stored)
    }

    /// Newest first.
    pub async fn query_events(&self, q: &EventQuery) -> Result<Vec<StoredEvent>, StoreError> {
        let mut sql = String::from(
            "SELECT namespace, pod, pod_uid, received_ms, body FROM events WHERE 1 = 1",
        );
        let mut texts: Vec<String> = Vec::new();
        let mut numbers: Vec<i64> = Vec::new();
        // Text filters bind first, then numeric ones, in this order.
        if let Some(ns) = &q.namespace {
            sql.push_str(" AND namespace = ?");
            texts.push(ns.clone());
        }
        if let Some(pod) = &q.pod {
            sql.push_str(" AND pod = ?");
            texts.push(pod.clone());
        }
        if let Some(kind) = q.kind {
            sql.push_str(" AND kind = ?");
            texts.push(kind.as_str().to_string());
        }
        if let Some(rule) = &q.rule {
            sql.push_str(" AND rule = ?");
            texts.push(rule.clone());
        }
        if let Some(since) = q.since_ms {
            sql.push_str(" AND time_ms >= ?");
            numbers.push(since);
        }
        if let Some(until) = q.until_ms {
            sql.push_str(" AND time_ms < ?");
            numbers.push(until);
        }
        sql.push_str(" ORDER BY time_ms DESC, id LIMIT ?");
        numbers.push(q.limit.clamp(1, 10_000));
        let sql = self.sql(&sql);
        let mut query = sqlx::query(&sql);
        for t in texts {
            query = query.bind(t);
        }
        for n in numbers {
            query = query.bind(n);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|row| {
                let body: String = row.try_get("body")?;
                let event: Event =
                    serde_json::from_str(&body).map_err(|source| StoreError::Corrupt {
                        name: "event".into(),
                        revision: 0,
                        source,
                    })?;
                Ok(StoredEvent {
                    pod: PodRef {
                        namespace: row.try_get("namespace")?,
                        name: row.try_get("pod")?,
                        uid: row.try_get("pod_uid")?,
                    },
                    received_ms: row.try_get("received_ms")?,
                    event,
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{each_backend, event};
    use super::*;

    #[tokio::test]
    async fn events_are_stored_once_and_queried_by_filters() {
        each_backend(|store| async move {
            let pod = PodRef {
                namespace: "team-a".into(),
                name: "web-1".into(),
                uid: "u1".into(),
            };
            let batch = vec![
                event("e1", 1_000, EventKind::Drift),
                event("e2", 2_000, EventKind::Behavior),
                event("e3", 3_000, EventKind::Drift),
            ];
            assert_eq!(store.insert_events(&pod, &batch).await.unwrap(), 3);
            // A retried batch stores nothing new.
            assert_eq!(store.insert_events(&pod, &batch).await.unwrap(), 0);
            let other = PodRef {
                namespace: "team-b".into(),
                name: "api".into(),
                uid: "u2".into(),
            };
            assert_eq!(
                store.insert_events(&other, &batch[..1]).await.unwrap(),
                1,
                "ids are per pod"
            );

            let all = store
                .query_events(&EventQuery {
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(all.len(), 4);
            let drift = store
                .query_events(&EventQuery {
                    namespace: Some("team-a".into()),
                    kind: Some(EventKind::Drift),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(
                drift
                    .iter()
                    .map(|e| e.event.id.as_str())
                    .collect::<Vec<_>>(),
                ["e3", "e1"]
            );
            assert_eq!(drift[0].pod, pod);
            let window = store
                .query_events(&EventQuery {
                    pod: Some("web-1".into()),
                    since_ms: Some(1_500),
                    until_ms: Some(3_000),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(window.len(), 1);
            assert_eq!(window[0].event, batch[1]);
        })
        .await;
    }

    #[tokio::test]
    async fn prevention_events_are_found_by_rule_with_their_coverage() {
        use palisade_common::launch::{CoverageLevel, CoverageSummary, LandlockSupport};
        each_backend(|store| async move {
            let pod = PodRef {
                namespace: "team-a".into(),
                name: "web-1".into(),
                uid: "u1".into(),
            };
            let coverage = CoverageSummary {
                container: Some("app".into()),
                level: CoverageLevel::Full,
                landlock: LandlockSupport::Available(7),
                enforced: vec!["execOnlyFromProgramDirs".into()],
                not_enforced: Vec::new(),
            };
            let prevention = Event::enforcer(
                "p1".into(),
                2_000,
                "enforcer/prevention",
                "container app: prevention full".into(),
            )
            .with_coverage(coverage.clone());
            let batch = vec![
                Event::enforcer("a1".into(), 1_000, "enforcer/started", "up".into()),
                prevention.clone(),
                event("d1", 3_000, EventKind::Drift),
            ];
            store.insert_events(&pod, &batch).await.unwrap();
            let found = store
                .query_events(&EventQuery {
                    namespace: Some("team-a".into()),
                    kind: Some(EventKind::Enforcer),
                    rule: Some("enforcer/prevention".into()),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(found.len(), 1, "{found:?}");
            assert_eq!(found[0].event, prevention);
            assert_eq!(found[0].event.coverage, Some(coverage));
            assert_eq!(found[0].pod.uid, "u1");
            let none = store
                .query_events(&EventQuery {
                    rule: Some("enforcer/prev".into()),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(none.is_empty(), "the rule matches exactly: {none:?}");
        })
        .await;
    }
}
