//! What enforcers observed, per workload, in the `workloads` and
//! `observations` tables: the material `palisade policy draft` learns an
//! allowlist from and `palisade policy replay` judges a policy against.
//!
//! Stored aggregated: one row per workload, container and item, whose
//! count and first/last times every batch adds to (never one row per
//! exec), and bounded: a workload keeps at most `max_items` distinct items,
//! the ones beyond are only counted (`workloads.overflow`), so one noisy or
//! hostile pod cannot grow the database without end.

use std::collections::{BTreeMap, HashMap};

use palisade_common::observe::{
    Observed, ObservedKind, ObservedRecord, WorkloadObservations, WorkloadRecord, WorkloadRef,
};
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now_ms, Store, StoreError};

/// Counts (and overflows) saturate here: no sum can overflow a BIGINT on
/// either database, and every value survives a JSON reader that reads
/// numbers as doubles.
const MAX_COUNT: i64 = (1 << 53) - 1;

/// What one batch changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Items whose counts were stored: added to the workload or summed
    /// into what it had.
    pub stored: usize,
    /// Of those, items the workload had never shown.
    pub new_items: usize,
    /// Items left out because the workload had reached its bound.
    pub overflowed: u64,
}

impl Store {
    /// Adds one enforcer batch to `workload`'s totals, in one transaction:
    /// counts are summed, first/last times widened, the image and the pod
    /// labels replaced by the newest known. A new item beyond `max_items`
    /// is counted in the workload's `overflow` instead of stored, as is the
    /// enforcer's own `enforcer_overflow`. `last_new_ms` moves only when an
    /// item was added (a new workload starts at its first arrival).
    pub async fn record_observations(
        &self,
        workload: &WorkloadRef,
        pod_labels: &BTreeMap<String, String>,
        observed: &[ObservedRecord],
        enforcer_overflow: u64,
        max_items: usize,
    ) -> Result<Recorded, StoreError> {
        let observed = combine(observed);
        let now = now_ms();
        let labels = serde_json::to_string(pod_labels).unwrap_or_else(|_| "{}".into());
        let _turn = self.write_turn().await;
        let mut tx = self.pool.begin().await?;
        // First, so that on PostgreSQL the workload's row stays locked until
        // commit: replicas ingesting for the same workload take turns, and
        // the bound read below holds.
        sqlx::query(&self.sql(
            "INSERT INTO workloads (namespace, kind, name, pod_labels, first_ms, last_new_ms, last_seen_ms, items, overflow)
             VALUES (?, ?, ?, ?, ?, ?, ?, 0, 0)
             ON CONFLICT (namespace, kind, name) DO UPDATE SET
               last_seen_ms = excluded.last_seen_ms,
               pod_labels = CASE WHEN excluded.pod_labels = '{}' THEN workloads.pod_labels
                                 ELSE excluded.pod_labels END",
        ))
        .bind(&workload.namespace)
        .bind(&workload.kind)
        .bind(&workload.name)
        .bind(&labels)
        .bind(now)
        .bind(now)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(&self.sql(
            "SELECT items, overflow, last_new_ms FROM workloads
             WHERE namespace = ? AND kind = ? AND name = ?",
        ))
        .bind(&workload.namespace)
        .bind(&workload.kind)
        .bind(&workload.name)
        .fetch_one(&mut *tx)
        .await?;
        let mut items: i64 = row.try_get(0)?;
        let mut overflow: i64 = row.try_get(1)?;
        let mut last_new_ms: i64 = row.try_get(2)?;

        let existing = self.sql(
            "SELECT item FROM observations WHERE namespace = ? AND kind = ? AND name = ?
               AND container = ? AND item_kind = ? AND item_key = ?",
        );
        let upsert = format!(
            "INSERT INTO observations (namespace, kind, name, container, item_kind, item_key, item, image, count, first_ms, last_ms)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
             ON CONFLICT (namespace, kind, name, container, item_kind, item_key) DO UPDATE SET
               count = CASE WHEN observations.count + excluded.count > {MAX_COUNT} THEN {MAX_COUNT}
                            ELSE observations.count + excluded.count END,
               first_ms = CASE WHEN excluded.first_ms < observations.first_ms THEN excluded.first_ms
                               ELSE observations.first_ms END,
               last_ms = CASE WHEN excluded.last_ms > observations.last_ms THEN excluded.last_ms
                              ELSE observations.last_ms END,
               image = CASE WHEN excluded.image = '' THEN observations.image ELSE excluded.image END,
               item = excluded.item"
        );
        let upsert = self.sql(&upsert);
        let mut recorded = Recorded::default();
        let max_items = i64::try_from(max_items).unwrap_or(i64::MAX);
        for record in &observed {
            let kind = record.item.kind().as_str();
            let key = record.item.key();
            let before = sqlx::query(&existing)
                .bind(&workload.namespace)
                .bind(&workload.kind)
                .bind(&workload.name)
                .bind(&record.container)
                .bind(kind)
                .bind(&key)
                .fetch_optional(&mut *tx)
                .await?;
            let item = match before {
                // An unreadable stored item is replaced, not a reason to
                // refuse this workload's batches from now on.
                Some(row) => match decode_item(workload, &row.try_get::<String, _>(0)?) {
                    Ok(stored) => merge_items(&stored, &record.item),
                    Err(e) => {
                        tracing::warn!(error = %e, "replacing an unreadable stored observation");
                        record.item.clone()
                    }
                },
                None if items < max_items => {
                    items += 1;
                    last_new_ms = now;
                    recorded.new_items += 1;
                    record.item.clone()
                }
                None => {
                    recorded.overflowed += 1;
                    continue;
                }
            };
            sqlx::query(&upsert)
                .bind(&workload.namespace)
                .bind(&workload.kind)
                .bind(&workload.name)
                .bind(&record.container)
                .bind(kind)
                .bind(&key)
                .bind(serde_json::to_string(&item).unwrap_or_default())
                .bind(&record.image)
                .bind(count_value(record.count))
                .bind(record.first_ms)
                .bind(record.last_ms)
                .execute(&mut *tx)
                .await?;
            recorded.stored += 1;
        }
        overflow = overflow
            .saturating_add(saturated(recorded.overflowed))
            .saturating_add(saturated(enforcer_overflow))
            .min(MAX_COUNT);
        sqlx::query(&self.sql(
            "UPDATE workloads SET items = ?, overflow = ?, last_new_ms = ?
             WHERE namespace = ? AND kind = ? AND name = ?",
        ))
        .bind(items)
        .bind(overflow)
        .bind(last_new_ms)
        .bind(&workload.namespace)
        .bind(&workload.kind)
        .bind(&workload.name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(recorded)
    }

    /// Every workload with observations (of `namespace`, when given), by
    /// namespace, kind and name. `mode` is left `None`: which policies
    /// select a workload is the policy set's to say, not the database's.
    pub async fn workloads(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<WorkloadRecord>, StoreError> {
        let mut sql = format!("SELECT {WORKLOAD_COLUMNS} FROM workloads");
        if namespace.is_some() {
            sql.push_str(" WHERE namespace = ?");
        }
        sql.push_str(" ORDER BY namespace, kind, name");
        let sql = self.sql(&sql);
        let mut query = sqlx::query(&sql);
        if let Some(ns) = namespace {
            query = query.bind(ns);
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(workload_record).collect()
    }

    /// One workload and its items last seen at or after `since_ms` (all
    /// when `None`), by container and item; `None` when nothing was ever
    /// observed of it. The kind matches case-insensitively (`deployment`
    /// finds `Deployment`). Bounded by the per-workload item bound.
    pub async fn workload_observations(
        &self,
        workload: &WorkloadRef,
        since_ms: Option<i64>,
    ) -> Result<Option<WorkloadObservations>, StoreError> {
        let row = sqlx::query(&self.sql(&format!(
            "SELECT {WORKLOAD_COLUMNS} FROM workloads
             WHERE namespace = ? AND lower(kind) = lower(?) AND name = ?
             ORDER BY kind LIMIT 1"
        )))
        .bind(&workload.namespace)
        .bind(&workload.kind)
        .bind(&workload.name)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let record = workload_record(&row)?;
        let mut sql = String::from(
            "SELECT container, item, image, count, first_ms, last_ms FROM observations
             WHERE namespace = ? AND kind = ? AND name = ?",
        );
        if since_ms.is_some() {
            sql.push_str(" AND last_ms >= ?");
        }
        sql.push_str(" ORDER BY container, item_kind, item_key");
        let sql = self.sql(&sql);
        let mut query = sqlx::query(&sql)
            .bind(&record.workload.namespace)
            .bind(&record.workload.kind)
            .bind(&record.workload.name);
        if let Some(since) = since_ms {
            query = query.bind(since);
        }
        let rows = query.fetch_all(&self.pool).await?;
        let observed = rows
            .iter()
            .map(|row| observed_record(&record.workload, row))
            .collect::<Result<_, _>>()?;
        Ok(Some(WorkloadObservations {
            workload: record,
            observed,
        }))
    }
}

const WORKLOAD_COLUMNS: &str =
    "namespace, kind, name, pod_labels, first_ms, last_new_ms, last_seen_ms, items, overflow";

fn workload_record(row: &AnyRow) -> Result<WorkloadRecord, StoreError> {
    let workload = WorkloadRef {
        namespace: row.try_get("namespace")?,
        kind: row.try_get("kind")?,
        name: row.try_get("name")?,
    };
    let labels: String = row.try_get("pod_labels")?;
    let pod_labels =
        serde_json::from_str(&labels).map_err(|source| StoreError::CorruptObservation {
            workload: workload.to_string(),
            source,
        })?;
    Ok(WorkloadRecord {
        pod_labels,
        mode: None,
        first_ms: row.try_get("first_ms")?,
        last_new_ms: row.try_get("last_new_ms")?,
        last_seen_ms: row.try_get("last_seen_ms")?,
        items: row.try_get::<i64, _>("items")?.max(0) as u64,
        overflow: row.try_get::<i64, _>("overflow")?.max(0) as u64,
        workload,
    })
}

fn observed_record(workload: &WorkloadRef, row: &AnyRow) -> Result<ObservedRecord, StoreError> {
    Ok(ObservedRecord {
        container: row.try_get("container")?,
        item: decode_item(workload, &row.try_get::<String, _>("item")?)?,
        image: row.try_get("image")?,
        count: row.try_get::<i64, _>("count")?.max(0) as u64,
        first_ms: row.try_get("first_ms")?,
        last_ms: row.try_get("last_ms")?,
    })
}

fn decode_item(workload: &WorkloadRef, text: &str) -> Result<Observed, StoreError> {
    serde_json::from_str(text).map_err(|source| StoreError::CorruptObservation {
        workload: workload.to_string(),
        source,
    })
}

/// A count of sightings as stored: at least one (an item sent was seen).
fn count_value(count: u64) -> i64 {
    saturated(count).max(1)
}

/// At most [`MAX_COUNT`].
fn saturated(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX).min(MAX_COUNT)
}

/// The same item seen again: the key (path and hash) is the same, but an
/// executable that was once not the image's own stays so, since that is
/// what a reviewer of the workload must see.
fn merge_items(stored: &Observed, new: &Observed) -> Observed {
    match (stored, new) {
        (
            Observed::Executable {
                from_image: false, ..
            },
            Observed::Executable {
                path,
                sha256,
                from_image: true,
            },
        ) => Observed::Executable {
            path: path.clone(),
            sha256: sha256.clone(),
            from_image: false,
        },
        _ => new.clone(),
    }
}

/// A batch as the tables hold it: one entry per container and item (an
/// enforcer should sum them already; one that did not is summed here), in
/// the order they first appear, so that which items fit under the bound
/// does not depend on a hash. Each count is at least one, and each
/// first/last pair in order.
fn combine(observed: &[ObservedRecord]) -> Vec<ObservedRecord> {
    let mut out: Vec<ObservedRecord> = Vec::with_capacity(observed.len());
    let mut index: HashMap<(String, ObservedKind, String), usize> = HashMap::new();
    for record in observed {
        let (first_ms, last_ms) = if record.first_ms <= record.last_ms {
            (record.first_ms, record.last_ms)
        } else {
            (record.last_ms, record.first_ms)
        };
        let count = count_value(record.count) as u64;
        let key = (
            record.container.clone(),
            record.item.kind(),
            record.item.key(),
        );
        match index.get(&key) {
            Some(&i) => {
                let seen = &mut out[i];
                seen.count = (seen.count + count).min(MAX_COUNT as u64);
                seen.first_ms = seen.first_ms.min(first_ms);
                seen.last_ms = seen.last_ms.max(last_ms);
                seen.item = merge_items(&seen.item, &record.item);
                if !record.image.is_empty() {
                    seen.image.clone_from(&record.image);
                }
            }
            None => {
                index.insert(key, out.len());
                out.push(ObservedRecord {
                    count,
                    first_ms,
                    last_ms,
                    ..record.clone()
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use palisade_common::observe::Protocol;

    use super::super::tests::each_backend;
    use super::*;

    fn web() -> WorkloadRef {
        WorkloadRef {
            namespace: "shop".into(),
            kind: "Deployment".into(),
            name: "web".into(),
        }
    }

    fn exe(path: &str, from_image: bool) -> Observed {
        Observed::Executable {
            path: path.into(),
            sha256: Some("a".repeat(64)),
            from_image,
        }
    }

    fn seen(
        container: &str,
        item: Observed,
        count: u64,
        first_ms: i64,
        last_ms: i64,
    ) -> ObservedRecord {
        ObservedRecord {
            container: container.into(),
            item,
            image: "registry.example/web@sha256:1".into(),
            count,
            first_ms,
            last_ms,
        }
    }

    fn listen(port: u16) -> Observed {
        Observed::Listen {
            protocol: Protocol::Tcp,
            port,
        }
    }

    fn labels() -> BTreeMap<String, String> {
        [("app".to_string(), "web".to_string())].into()
    }

    #[test]
    fn a_batch_that_names_an_item_twice_is_summed_once_in_order() {
        let combined = combine(&[
            seen("app", listen(80), 2, 50, 60),
            seen("app", exe("/bin/sh", true), 1, 10, 10),
            seen("app", listen(80), 0, 90, 40),
            seen("sidecar", listen(80), 1, 5, 5),
        ]);
        assert_eq!(combined.len(), 3);
        assert_eq!(combined[0].item, listen(80));
        // The zero count is one sighting; its reversed times still widen.
        assert_eq!(
            (combined[0].count, combined[0].first_ms, combined[0].last_ms),
            (3, 40, 90)
        );
        assert_eq!(combined[2].container, "sidecar");
    }

    #[test]
    fn an_executable_once_not_from_the_image_stays_so() {
        assert_eq!(
            merge_items(&exe("/app/x", false), &exe("/app/x", true)),
            exe("/app/x", false)
        );
        assert_eq!(
            merge_items(&exe("/app/x", true), &exe("/app/x", false)),
            exe("/app/x", false)
        );
        assert_eq!(
            merge_items(&exe("/app/x", true), &exe("/app/x", true)),
            exe("/app/x", true)
        );
    }

    #[tokio::test]
    async fn batches_sum_counts_and_widen_first_and_last_seen() {
        each_backend(|store| async move {
            let first = vec![
                seen("app", exe("/app/server", true), 3, 1_000, 2_000),
                seen("app", listen(8080), 1, 1_500, 1_500),
            ];
            let got = store
                .record_observations(&web(), &labels(), &first, 0, 100)
                .await
                .unwrap();
            assert_eq!(
                got,
                Recorded {
                    stored: 2,
                    new_items: 2,
                    overflowed: 0
                }
            );
            let mut newer = seen("app", exe("/app/server", false), 2, 500, 3_000);
            newer.image.clear();
            let got = store
                .record_observations(&web(), &BTreeMap::new(), &[newer], 0, 100)
                .await
                .unwrap();
            assert_eq!((got.stored, got.new_items), (1, 0));

            let found = store
                .workload_observations(&web(), None)
                .await
                .unwrap()
                .expect("stored");
            assert_eq!(found.workload.items, 2);
            assert_eq!(found.workload.overflow, 0);
            assert_eq!(
                found.workload.pod_labels,
                labels(),
                "empty labels keep the known ones"
            );
            assert!(found.workload.last_new_ms >= found.workload.first_ms);
            let server = found
                .observed
                .iter()
                .find(|o| matches!(o.item, Observed::Executable { .. }))
                .unwrap();
            assert_eq!(
                (server.count, server.first_ms, server.last_ms),
                (5, 500, 3_000)
            );
            assert_eq!(server.item, exe("/app/server", false));
            assert_eq!(
                server.image, "registry.example/web@sha256:1",
                "an unknown image keeps the known one"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn a_workload_keeps_at_most_its_bound_and_counts_the_rest() {
        each_backend(|store| async move {
            let batch: Vec<_> = (0u16..5)
                .map(|p| seen("app", listen(p), 1, 10, 10))
                .collect();
            let got = store
                .record_observations(&web(), &labels(), &batch, 7, 3)
                .await
                .unwrap();
            assert_eq!(
                got,
                Recorded {
                    stored: 3,
                    new_items: 3,
                    overflowed: 2
                }
            );
            let before = store.workloads(None).await.unwrap()[0].clone();
            assert_eq!((before.items, before.overflow), (3, 9));

            // Known items are still summed at the bound; new ones overflow,
            // and the last news stays where it was.
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            let again = vec![
                seen("app", listen(0), 4, 20, 20),
                seen("app", listen(9), 1, 20, 20),
            ];
            let got = store
                .record_observations(&web(), &labels(), &again, 0, 3)
                .await
                .unwrap();
            assert_eq!((got.stored, got.new_items, got.overflowed), (1, 0, 1));
            let after = store.workloads(Some("shop")).await.unwrap()[0].clone();
            assert_eq!((after.items, after.overflow), (3, 10));
            assert_eq!(after.last_new_ms, before.last_new_ms);
            assert!(after.last_seen_ms > before.last_seen_ms);
            let found = store
                .workload_observations(&web(), None)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(found.observed.len(), 3);
            assert_eq!(
                found
                    .observed
                    .iter()
                    .find(|o| o.item == listen(0))
                    .unwrap()
                    .count,
                5
            );
        })
        .await;
    }

    #[tokio::test]
    async fn an_unreadable_stored_item_fails_reads_but_is_replaced_by_the_next_batch() {
        each_backend(|store| async move {
            let batch = [seen("app", listen(80), 1, 10, 10)];
            store
                .record_observations(&web(), &labels(), &batch, 0, 10)
                .await
                .unwrap();
            sqlx::query("UPDATE observations SET item = 'not json'")
                .execute(&store.pool)
                .await
                .unwrap();
            let err = store.workload_observations(&web(), None).await.unwrap_err();
            assert!(err.to_string().contains("shop/deployment/web"), "{err}");
            store
                .record_observations(&web(), &labels(), &batch, 0, 10)
                .await
                .unwrap();
            let found = store
                .workload_observations(&web(), None)
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                (found.observed[0].item.clone(), found.observed[0].count),
                (listen(80), 2)
            );
        })
        .await;
    }

    #[tokio::test]
    async fn queries_filter_by_last_seen_namespace_and_kind_in_any_case() {
        each_backend(|store| async move {
            let cart = WorkloadRef {
                namespace: "billing".into(),
                kind: "StatefulSet".into(),
                name: "cart".into(),
            };
            store
                .record_observations(
                    &web(),
                    &labels(),
                    &[
                        seen("app", listen(80), 1, 100, 100),
                        seen("app", listen(81), 1, 100, 300),
                    ],
                    0,
                    100,
                )
                .await
                .unwrap();
            store
                .record_observations(
                    &cart,
                    &BTreeMap::new(),
                    &[seen("db", listen(5432), 2, 50, 200)],
                    0,
                    100,
                )
                .await
                .unwrap();

            let lower = WorkloadRef {
                kind: "deployment".into(),
                ..web()
            };
            let recent = store
                .workload_observations(&lower, Some(200))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(recent.workload.workload, web());
            assert_eq!(recent.observed.len(), 1);
            assert_eq!(recent.observed[0].item, listen(81));
            let unknown = WorkloadRef {
                name: "nope".into(),
                ..web()
            };
            assert!(store
                .workload_observations(&unknown, None)
                .await
                .unwrap()
                .is_none());

            assert_eq!(store.workloads(None).await.unwrap().len(), 2);
            assert_eq!(
                store.workloads(Some("billing")).await.unwrap()[0].workload,
                cart
            );
        })
        .await;
    }
}
