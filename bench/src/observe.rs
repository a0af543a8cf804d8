//! `palisade-bench observe`: busy pods' enforcers sending observation
//! batches to a running policy service, hour by hour of simulated time
//! (rounds sent back to back), with the database's size after each hour;
//! then what `palisade policy draft` costs on the largest workload.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::Full;
use hyper::Request;
use palisade_bench::learn::{Pod, Profile};
use palisade_common::observe::WorkloadObservations;
use palisade_common::wire::IngestResult;
use palisade_engine::learn::{draft, DraftOptions};
use sqlx::Row;

use super::{post, send, Client};

pub struct Simulation {
    pub namespace: String,
    pub pods: usize,
    pub noisy: usize,
    pub apps: usize,
    pub hours: u64,
    pub rounds_per_hour: u64,
    pub interval: Duration,
    pub connections: usize,
    pub fetches: usize,
}

/// What one hour of simulated time brought.
#[derive(Debug, Default, Clone, Copy)]
struct Sent {
    batches: u64,
    items: u64,
    stored: u64,
}

impl std::ops::AddAssign for Sent {
    fn add_assign(&mut self, other: Self) {
        self.batches += other.batches;
        self.items += other.items;
        self.stored += other.stored;
    }
}

pub async fn run(
    client: Client,
    token: String,
    database: &str,
    sim: Simulation,
) -> anyhow::Result<()> {
    let database = Database::from_str(database)?;
    let interval_ms = i64::try_from(sim.interval.as_millis())?;
    let rounds = sim.hours * sim.rounds_per_hour;
    // Simulated time ends now: the last round's items are the newest.
    let start_ms = now_ms() - rounds as i64 * interval_ms;
    let pods: Vec<Pod> = (0..sim.pods)
        .map(|i| {
            let profile = if i < sim.noisy {
                Profile::Noisy
            } else {
                Profile::Steady
            };
            Pod::new(i, i % sim.apps.max(1), profile)
        })
        .collect();
    let habitual: usize = pods.iter().map(Pod::habitual_items).sum();
    println!(
        "{}",
        serde_json::json!({"label": "pods", "pods": sim.pods, "noisy": sim.noisy,
            "habitual_items": habitual, "interval_s": sim.interval.as_secs(),
            "rounds_per_hour": sim.rounds_per_hour})
    );
    let mut groups: Vec<Vec<Pod>> = (0..sim.connections.max(1)).map(|_| Vec::new()).collect();
    for (i, pod) in pods.into_iter().enumerate() {
        groups[i % sim.connections.max(1)].push(pod);
    }
    let mut before = database.measure().await?;
    for hour in 0..sim.hours {
        let first = hour * sim.rounds_per_hour;
        let rounds = first..first + sim.rounds_per_hour;
        let started = Instant::now();
        let mut tasks = Vec::new();
        for mut group in groups {
            let (client, token, namespace) = (client.clone(), token.clone(), sim.namespace.clone());
            let rounds = rounds.clone();
            tasks.push(tokio::spawn(async move {
                let mut sender = client.connect().await?;
                let mut sent = Sent::default();
                for round in rounds {
                    for pod in &mut group {
                        let batch = pod.batch(&namespace, round, start_ms, interval_ms);
                        let body = Bytes::from(serde_json::to_vec(&batch)?);
                        let (status, reply) = send(
                            &mut sender,
                            post("/api/v1/observations", Some(&token), body),
                        )
                        .await?;
                        if status != 200 {
                            bail!("HTTP {status}: {}", String::from_utf8_lossy(&reply));
                        }
                        let result: IngestResult = serde_json::from_slice(&reply)?;
                        sent += Sent {
                            batches: 1,
                            items: batch.observations.len() as u64,
                            stored: result.stored as u64,
                        };
                    }
                }
                Ok::<_, anyhow::Error>((group, sent))
            }));
        }
        groups = Vec::new();
        let mut sent = Sent::default();
        for task in tasks {
            let (group, one) = task.await??;
            groups.push(group);
            sent += one;
        }
        let seconds = started.elapsed().as_secs_f64();
        let after = database.measure().await?;
        let real_rate = sim.pods as f64 / sim.interval.as_secs_f64();
        println!(
            "{}",
            serde_json::json!({
                "label": "hour", "hour": hour + 1, "database": database.name(),
                "batches": sent.batches, "items": sent.items, "stored": sent.stored,
                "seconds": round1(seconds),
                "batches_per_sec": (sent.batches as f64 / seconds).round(),
                "items_per_sec": (sent.items as f64 / seconds).round(),
                "times_real_time": round1(sent.batches as f64 / seconds / real_rate),
                "rows": after.rows, "workloads": after.workloads,
                "items_stored": after.items, "overflow": after.overflow,
                "bytes": after.bytes, "table_bytes": after.table_bytes,
                "index_bytes": after.index_bytes,
                "growth_bytes": after.bytes as i64 - before.bytes as i64,
                "growth_table_bytes": after.table_bytes as i64 - before.table_bytes as i64,
                "growth_rows": after.rows as i64 - before.rows as i64,
                "largest_index": after.largest_index.0, "largest_index_bytes": after.largest_index.1,
                "dead_rows": after.dead_rows,
                "hot_update_pct": after.hot_update_pct.map(round1),
            })
        );
        before = after;
    }
    // The pods with the most items: the noisy ones, at the bound.
    let biggest = groups
        .iter()
        .flatten()
        .find(|p| p.profile == Profile::Noisy)
        .or_else(|| groups.iter().flatten().next())
        .context("no pods")?
        .name
        .clone();
    fetch_and_draft(&client, &token, &sim.namespace, &biggest, sim.fetches).await
}

/// `GET /api/v1/workloads/{ns}/pod/{name}` `fetches` times, and the draft
/// of what it answered: median and slowest of each.
async fn fetch_and_draft(
    client: &Client,
    token: &str,
    namespace: &str,
    pod: &str,
    fetches: usize,
) -> anyhow::Result<()> {
    let mut sender = client.connect().await?;
    let path = format!("/api/v1/workloads/{namespace}/pod/{pod}");
    let mut fetch_ms = Vec::new();
    let mut draft_ms = Vec::new();
    let mut answer = (0, 0, 0);
    for _ in 0..fetches.max(1) {
        let request = Request::get(&path)
            .header("host", "localhost")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::new()))?;
        let started = Instant::now();
        let (status, body) = send(&mut sender, request).await?;
        if status != 200 {
            bail!(
                "GET {path}: HTTP {status}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        let observed: WorkloadObservations = serde_json::from_slice(&body)?;
        fetch_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        let yaml = draft(&observed, &DraftOptions::default());
        draft_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        answer = (observed.observed.len(), body.len(), yaml.len());
    }
    let (p50_fetch, max_fetch) = median_max(&mut fetch_ms);
    let (p50_draft, max_draft) = median_max(&mut draft_ms);
    println!(
        "{}",
        serde_json::json!({
            "label": "draft", "workload": format!("{namespace}/pod/{pod}"),
            "items": answer.0, "response_bytes": answer.1, "draft_bytes": answer.2,
            "fetches": fetch_ms.len(),
            "fetch_p50_ms": round1(p50_fetch), "fetch_max_ms": round1(max_fetch),
            "draft_p50_ms": round1(p50_draft), "draft_max_ms": round1(max_draft),
        })
    );
    Ok(())
}

fn median_max(values: &mut [f64]) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    (
        values[values.len() / 2],
        values.last().copied().unwrap_or_default(),
    )
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// The service's database, read beside it.
enum Database {
    Sqlite(PathBuf),
    Postgres(String),
}

/// How big the observations are.
#[derive(Debug, Default, Clone)]
struct Storage {
    /// The whole database: SQLite's file after a checkpoint (its WAL
    /// folded in), PostgreSQL's `pg_database_size`.
    bytes: u64,
    /// The `observations` and `workloads` tables with their indexes.
    table_bytes: u64,
    /// Of those, their indexes.
    index_bytes: u64,
    rows: i64,
    workloads: i64,
    items: i64,
    overflow: i64,
    /// The largest index of `observations`, and its size.
    largest_index: (String, i64),
    /// PostgreSQL: row versions updates left behind, not yet vacuumed.
    dead_rows: Option<i64>,
    /// PostgreSQL: updates of `observations` that wrote no index entry
    /// (heap-only tuples), per cent of all its updates.
    hot_update_pct: Option<f64>,
}

impl FromStr for Database {
    type Err = anyhow::Error;

    fn from_str(url: &str) -> anyhow::Result<Self> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            let path = path.split('?').next().unwrap_or(path);
            Ok(Database::Sqlite(PathBuf::from(path)))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Database::Postgres(url.to_string()))
        } else {
            bail!("{url:?}: expected sqlite://PATH or postgres://...")
        }
    }
}

impl Database {
    fn name(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "sqlite",
            Database::Postgres(_) => "postgresql",
        }
    }

    async fn measure(&self) -> anyhow::Result<Storage> {
        // CAST: a SUM of BIGINT is NUMERIC on PostgreSQL.
        const COUNTS: &str = "SELECT (SELECT COUNT(*) FROM observations), COUNT(*), \
             CAST(COALESCE(SUM(items), 0) AS BIGINT), CAST(COALESCE(SUM(overflow), 0) AS BIGINT) \
             FROM workloads";
        match self {
            Database::Sqlite(path) => {
                use sqlx::sqlite::SqliteConnectOptions;
                use sqlx::{ConnectOptions, Connection};
                let mut db = SqliteConnectOptions::new()
                    .filename(path)
                    .create_if_missing(false)
                    .connect()
                    .await
                    .with_context(|| format!("opening {}", path.display()))?;
                // Fold the WAL into the file, so its size is the data's.
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .execute(&mut db)
                    .await?;
                let pages: i64 = sqlx::query_scalar("PRAGMA page_count")
                    .fetch_one(&mut db)
                    .await?;
                let page_size: i64 = sqlx::query_scalar("PRAGMA page_size")
                    .fetch_one(&mut db)
                    .await?;
                let sizes = sqlx::query(
                    "SELECT COALESCE(SUM(pgsize), 0), \
                       COALESCE(SUM(CASE WHEN m.type = 'index' THEN pgsize ELSE 0 END), 0) \
                     FROM dbstat JOIN sqlite_master m ON m.name = dbstat.name \
                     WHERE m.tbl_name IN ('observations', 'workloads')",
                )
                .fetch_one(&mut db)
                .await?;
                let largest = sqlx::query(
                    "SELECT m.name, SUM(pgsize) FROM dbstat JOIN sqlite_master m \
                       ON m.name = dbstat.name \
                     WHERE m.type = 'index' AND m.tbl_name = 'observations' \
                     GROUP BY m.name ORDER BY 2 DESC LIMIT 1",
                )
                .fetch_one(&mut db)
                .await?;
                let row = sqlx::query(COUNTS).fetch_one(&mut db).await?;
                let storage = Storage {
                    bytes: (pages * page_size) as u64,
                    table_bytes: sizes.try_get::<i64, _>(0)? as u64,
                    index_bytes: sizes.try_get::<i64, _>(1)? as u64,
                    rows: row.try_get(0)?,
                    workloads: row.try_get(1)?,
                    items: row.try_get(2)?,
                    overflow: row.try_get(3)?,
                    largest_index: (largest.try_get(0)?, largest.try_get(1)?),
                    dead_rows: None,
                    hot_update_pct: None,
                };
                db.close().await?;
                Ok(storage)
            }
            Database::Postgres(url) => {
                use sqlx::Connection;
                let mut db = sqlx::PgConnection::connect(url).await?;
                let row = sqlx::query(
                    "SELECT pg_database_size(current_database()), \
                     pg_total_relation_size('observations') + pg_total_relation_size('workloads'), \
                     pg_indexes_size('observations') + pg_indexes_size('workloads'), \
                     (SELECT COALESCE(SUM(n_dead_tup), 0)::BIGINT FROM pg_stat_user_tables \
                      WHERE relname IN ('observations', 'workloads')), \
                     (SELECT (100.0 * n_tup_hot_upd / GREATEST(n_tup_upd, 1))::FLOAT8 \
                      FROM pg_stat_user_tables WHERE relname = 'observations')",
                )
                .fetch_one(&mut db)
                .await?;
                let largest = sqlx::query(
                    "SELECT indexrelname::TEXT, pg_relation_size(indexrelid) \
                     FROM pg_stat_user_indexes WHERE relname = 'observations' \
                     ORDER BY 2 DESC LIMIT 1",
                )
                .fetch_one(&mut db)
                .await?;
                let counts = sqlx::query(COUNTS).fetch_one(&mut db).await?;
                let storage = Storage {
                    bytes: row.try_get::<i64, _>(0)? as u64,
                    table_bytes: row.try_get::<i64, _>(1)? as u64,
                    index_bytes: row.try_get::<i64, _>(2)? as u64,
                    dead_rows: Some(row.try_get(3)?),
                    hot_update_pct: Some(row.try_get(4)?),
                    largest_index: (largest.try_get(0)?, largest.try_get(1)?),
                    rows: counts.try_get(0)?,
                    workloads: counts.try_get(1)?,
                    items: counts.try_get(2)?,
                    overflow: counts.try_get(3)?,
                };
                db.close().await?;
                Ok(storage)
            }
        }
    }
}
