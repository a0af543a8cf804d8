//! Durable storage for pushed policies and exceptions (every revision
//! kept), enforcer reports, and what enforcers observed per workload:
//! embedded SQLite by default, PostgreSQL when several replicas share one
//! database. One code path through sqlx's `Any` driver; only the schema and
//! placeholder syntax differ.

use std::borrow::Cow;
use std::sync::Arc;

use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Row};

mod enforcers;
mod events;
mod observations;
mod revisions;
pub use enforcers::EnforcerTotals;
pub use events::EventQuery;
pub use observations::Recorded;
pub use revisions::{Authored, StoredException};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("unsupported database URL {0:?} (expected sqlite://PATH or postgres://...)")]
    Url(String),
    #[error("stored policy {name:?} revision {revision} is unreadable: {source}")]
    Corrupt {
        name: String,
        revision: i64,
        source: serde_json::Error,
    },
    #[error("the stored state of the enforcer of {namespace}/{pod} is unreadable: {source}")]
    CorruptEnforcer {
        namespace: String,
        pod: String,
        source: serde_json::Error,
    },
    #[error("a stored observation of {workload} is unreadable: {source}")]
    CorruptObservation {
        workload: String,
        source: serde_json::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// SQLite has one writer at a time. A transaction that reads and then
    /// writes (a policy push) fails at once with "database is locked" when
    /// another connection committed in between, whatever the busy timeout:
    /// so this process's writes take turns here. (PostgreSQL: `None`.)
    writes: Option<Arc<tokio::sync::Mutex<()>>>,
    /// PostgreSQL: where [`Store::push_listener`] connects.
    listen_url: Option<Arc<str>>,
}

/// The PostgreSQL channel every committed policy or exception revision is
/// announced on (`NOTIFY` in the revision's transaction).
pub const PUSH_CHANNEL: &str = "palisade_revisions";

const SQLITE_SCHEMA: &[&str] = &[
    "PRAGMA journal_mode = WAL",
    "CREATE TABLE IF NOT EXISTS policy_revisions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL, revision BIGINT NOT NULL, deleted BOOLEAN NOT NULL,
        document TEXT, author TEXT NOT NULL, created_ms BIGINT NOT NULL,
        UNIQUE (name, revision))",
    "CREATE TABLE IF NOT EXISTS exception_revisions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL, revision BIGINT NOT NULL, deleted BOOLEAN NOT NULL,
        document TEXT, author TEXT NOT NULL, created_ms BIGINT NOT NULL,
        UNIQUE (name, revision))",
];

const POSTGRES_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS policy_revisions (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL, revision BIGINT NOT NULL, deleted BOOLEAN NOT NULL,
        document TEXT, author TEXT NOT NULL, created_ms BIGINT NOT NULL,
        UNIQUE (name, revision))",
    "CREATE TABLE IF NOT EXISTS exception_revisions (
        id BIGSERIAL PRIMARY KEY,
        name TEXT NOT NULL, revision BIGINT NOT NULL, deleted BOOLEAN NOT NULL,
        document TEXT, author TEXT NOT NULL, created_ms BIGINT NOT NULL,
        UNIQUE (name, revision))",
];

/// Tables whose DDL is the same on both databases.
const COMMON_SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS events (
        namespace TEXT NOT NULL, pod TEXT NOT NULL, id TEXT NOT NULL,
        pod_uid TEXT NOT NULL, kind TEXT NOT NULL, rule TEXT NOT NULL,
        policy TEXT, mode TEXT NOT NULL, action TEXT, message TEXT NOT NULL,
        time_ms BIGINT NOT NULL, received_ms BIGINT NOT NULL, body TEXT NOT NULL,
        PRIMARY KEY (namespace, pod, id))",
    "CREATE INDEX IF NOT EXISTS events_by_time ON events (time_ms)",
    "CREATE INDEX IF NOT EXISTS events_by_pod ON events (namespace, pod, time_ms)",
    // `palisade status --coverage`: a namespace's few `enforcer/prevention`
    // events among all its others.
    "CREATE INDEX IF NOT EXISTS events_by_rule ON events (namespace, rule, time_ms)",
    "CREATE TABLE IF NOT EXISTS enforcers (
        namespace TEXT NOT NULL, pod TEXT NOT NULL, pod_uid TEXT NOT NULL,
        boot_id TEXT NOT NULL, heartbeat_ms BIGINT NOT NULL, last_seen_ms BIGINT NOT NULL,
        state TEXT NOT NULL, dropped BIGINT NOT NULL, unobserved BIGINT NOT NULL,
        policy_etag TEXT NOT NULL DEFAULT '', protections_off TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (namespace, pod))",
    // What enforcers observed, per workload (`db/observations`): one row
    // per workload with its totals and bound, one per container and item.
    "CREATE TABLE IF NOT EXISTS workloads (
        namespace TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
        pod_labels TEXT NOT NULL, first_ms BIGINT NOT NULL, last_new_ms BIGINT NOT NULL,
        last_seen_ms BIGINT NOT NULL, items BIGINT NOT NULL, overflow BIGINT NOT NULL,
        PRIMARY KEY (namespace, kind, name))",
    "CREATE TABLE IF NOT EXISTS observations (
        namespace TEXT NOT NULL, kind TEXT NOT NULL, name TEXT NOT NULL,
        container TEXT NOT NULL, item_kind TEXT NOT NULL, item_key TEXT NOT NULL,
        item TEXT NOT NULL, image TEXT NOT NULL, count BIGINT NOT NULL,
        first_ms BIGINT NOT NULL, last_ms BIGINT NOT NULL,
        PRIMARY KEY (namespace, kind, name, container, item_kind, item_key))",
];

/// Earlier releases indexed items by when last seen. Every batch moves
/// `last_ms`, so that index took a new entry per counted item (on
/// PostgreSQL no update stayed heap-only) and held most of the table's
/// size; items are read per workload, by primary key. PostgreSQL drops it
/// without blocking the replicas still ingesting during an upgrade.
const SQLITE_DROPPED: &[&str] = &["DROP INDEX IF EXISTS observations_by_time"];
const POSTGRES_DROPPED: &[&str] = &["DROP INDEX CONCURRENTLY IF EXISTS observations_by_time"];

/// PostgreSQL storage settings, after the tables exist. Room in each page
/// lets a counter update write its new row version beside the old one
/// (heap-only, no index entry), so a busy workload's rows do not grow the
/// table and its primary key between vacuums.
const POSTGRES_STORAGE: &[&str] = &[
    "ALTER TABLE observations SET (fillfactor = 70)",
    "ALTER TABLE workloads SET (fillfactor = 70)",
];

/// Columns added after their table was first released, for databases made
/// before: `CREATE TABLE IF NOT EXISTS` leaves an existing table as it was.
/// Each definition needs a default, for the rows already there.
const ADDED_COLUMNS: &[AddedColumn] = &[
    AddedColumn {
        table: "enforcers",
        column: "policy_etag",
        definition: "TEXT NOT NULL DEFAULT ''",
    },
    // The protections an enforcer reports off: `ProtectionOff`s as JSON.
    AddedColumn {
        table: "enforcers",
        column: "protections_off",
        definition: "TEXT NOT NULL DEFAULT '[]'",
    },
];

struct AddedColumn {
    table: &'static str,
    column: &'static str,
    definition: &'static str,
}

impl Store {
    /// Opens (and creates the schema of) `url`: `sqlite://PATH` (the file is
    /// created) or `postgres://user:pass@host/db`.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(StoreError::Url(url.to_string()));
        };
        let options = AnyPoolOptions::new();
        let pool = match backend {
            Backend::Sqlite => {
                let url = if url.contains('?') {
                    url.to_string()
                } else {
                    format!("{url}?mode=rwc")
                };
                options
                    .max_connections(4)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            // Writers wait for each other instead of failing.
                            sqlx::query("PRAGMA busy_timeout = 5000")
                                .execute(&mut *conn)
                                .await?;
                            sqlx::query("PRAGMA synchronous = NORMAL")
                                .execute(&mut *conn)
                                .await?;
                            Ok(())
                        })
                    })
                    .connect(&url)
                    .await?
            }
            Backend::Postgres => options.max_connections(16).connect(url).await?,
        };
        let writes = (backend == Backend::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
        let store = Self {
            pool,
            backend,
            writes,
            listen_url: (backend == Backend::Postgres).then(|| Arc::from(url)),
        };
        store.migrate().await?;
        Ok(store)
    }

    /// PostgreSQL: a connection listening on [`PUSH_CHANNEL`], so that a
    /// push through any replica reaches this one at once. `None` on SQLite
    /// (one replica per database file: its own pushes are all there are).
    pub async fn push_listener(&self) -> Result<Option<sqlx::postgres::PgListener>, StoreError> {
        let Some(url) = &self.listen_url else {
            return Ok(None);
        };
        let mut listener = sqlx::postgres::PgListener::connect(url).await?;
        listener.listen(PUSH_CHANNEL).await?;
        Ok(Some(listener))
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let (specific, dropped, storage) = match self.backend {
            Backend::Sqlite => (SQLITE_SCHEMA, SQLITE_DROPPED, &[][..]),
            Backend::Postgres => (POSTGRES_SCHEMA, POSTGRES_DROPPED, POSTGRES_STORAGE),
        };
        // One connection for the whole migration; on PostgreSQL replicas
        // starting together take turns (CREATE ... IF NOT EXISTS races there).
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_lock(7411001)")
                .execute(&mut *conn)
                .await?;
        }
        let mut result = self.rename_tables(&mut conn).await;
        let all = specific
            .iter()
            .chain(COMMON_SCHEMA)
            .chain(dropped)
            .chain(storage);
        for ddl in all {
            if result.is_err() {
                break;
            }
            if let Err(e) = sqlx::query(ddl).execute(&mut *conn).await {
                result = Err(e.into());
                break;
            }
        }
        if result.is_ok() {
            result = self.add_columns(&mut conn).await;
        }
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_unlock(7411001)")
                .execute(&mut *conn)
                .await?;
        }
        result
    }

    /// Earlier releases called the pod-side component an agent: their
    /// `agents` table becomes `enforcers`, and their stored `agent/...`
    /// events `enforcer/...` ones. Runs once, before the schema is created.
    async fn rename_tables(&self, conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
        if !self.has_table(conn, "agents").await? || self.has_table(conn, "enforcers").await? {
            return Ok(());
        }
        sqlx::query("ALTER TABLE agents RENAME TO enforcers")
            .execute(&mut *conn)
            .await?;
        if self.has_table(conn, "events").await? {
            sqlx::query(
                "UPDATE events SET kind = 'enforcer', rule = 'enforcer/' || substr(rule, 7),
                   body = replace(replace(body, '\"kind\":\"agent\"', '\"kind\":\"enforcer\"'),
                                  '\"rule\":\"agent/', '\"rule\":\"enforcer/')
                 WHERE kind = 'agent' AND rule LIKE 'agent/%'",
            )
            .execute(&mut *conn)
            .await?;
        }
        Ok(())
    }

    async fn has_table(
        &self,
        conn: &mut sqlx::AnyConnection,
        table: &str,
    ) -> Result<bool, StoreError> {
        let query = match self.backend {
            Backend::Sqlite => {
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
            }
            Backend::Postgres => {
                "SELECT COUNT(*) FROM information_schema.tables
                 WHERE table_schema = current_schema() AND table_name = ?"
            }
        };
        let row = sqlx::query(&self.sql(query))
            .bind(table)
            .fetch_one(&mut *conn)
            .await?;
        Ok(row.try_get::<i64, _>(0)? > 0)
    }

    /// Adds the [`ADDED_COLUMNS`] a table made by an older release lacks.
    async fn add_columns(&self, conn: &mut sqlx::AnyConnection) -> Result<(), StoreError> {
        for added in ADDED_COLUMNS {
            let (table, column, definition) = (added.table, added.column, added.definition);
            match self.backend {
                Backend::Postgres => {
                    sqlx::query(&format!(
                        "ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {column} {definition}"
                    ))
                    .execute(&mut *conn)
                    .await?;
                }
                // SQLite has no `ADD COLUMN IF NOT EXISTS`; another process
                // opening the same file may add it between look and change.
                Backend::Sqlite => {
                    if sqlite_has_column(conn, table, column).await? {
                        continue;
                    }
                    let added = sqlx::query(&format!(
                        "ALTER TABLE {table} ADD COLUMN {column} {definition}"
                    ))
                    .execute(&mut *conn)
                    .await;
                    if let Err(e) = added {
                        if !sqlite_has_column(conn, table, column).await? {
                            return Err(e.into());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Creates database `name` on the PostgreSQL server of `server_url` and
    /// returns its URL (used to give each test, or each installation, its
    /// own database).
    pub async fn create_postgres_database(
        server_url: &str,
        name: &str,
    ) -> Result<String, StoreError> {
        sqlx::any::install_default_drivers();
        if !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(StoreError::Url(format!("database name {name:?}")));
        }
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .connect(server_url)
            .await?;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&pool)
            .await?;
        pool.close().await;
        let base = server_url.rsplit_once('/').map_or(server_url, |(b, _)| b);
        Ok(format!("{base}/{name}"))
    }

    /// `?` placeholders as the backend wants them (`$1`, `$2`... for PostgreSQL).
    fn sql<'a>(&self, query: &'a str) -> Cow<'a, str> {
        match self.backend {
            Backend::Sqlite => Cow::Borrowed(query),
            Backend::Postgres => {
                let mut out = String::with_capacity(query.len() + 8);
                let mut n = 0;
                for c in query.chars() {
                    if c == '?' {
                        n += 1;
                        out.push('$');
                        out.push_str(&n.to_string());
                    } else {
                        out.push(c);
                    }
                }
                Cow::Owned(out)
            }
        }
    }

    /// This process's turn to write (SQLite only; see `writes`).
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.writes {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}

async fn sqlite_has_column(
    conn: &mut sqlx::AnyConnection,
    table: &str,
    column: &str,
) -> Result<bool, StoreError> {
    let row = sqlx::query("SELECT COUNT(*) FROM pragma_table_info(?) WHERE name = ?")
        .bind(table)
        .bind(column)
        .fetch_one(&mut *conn)
        .await?;
    Ok(row.try_get::<i64, _>(0)? > 0)
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use palisade_common::policy::{Mode, PolicyDocument};
    use palisade_common::wire::{
        EnforcerState, EnforcerStatus, Event, EventKind, Heartbeat, PodRef,
    };

    pub(crate) fn policy(name: &str, mode: &str) -> PolicyDocument {
        PolicyDocument::from_yaml(&format!(
            "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {{name: {name}}}\nspec: {{mode: {mode}}}\n"
        ))
        .unwrap()
    }

    pub(crate) fn event(id: &str, time_ms: i64, kind: EventKind) -> Event {
        Event {
            id: id.into(),
            time_ms,
            kind,
            rule: "drift/exec-from-tmp".into(),
            policy: Some("runtime-defaults".into()),
            mode: Mode::Audit,
            message: "executed /tmp/x".into(),
            process: None,
            action: None,
            exception: None,
            coverage: None,
        }
    }

    /// A heartbeat of pod `pod` in namespace `shop`.
    pub(crate) fn mk_beat(pod: &str, boot: &str, state: EnforcerState) -> Heartbeat {
        Heartbeat {
            pod: PodRef {
                namespace: "shop".into(),
                name: pod.into(),
                uid: format!("uid-{pod}"),
            },
            enforcer: EnforcerStatus {
                boot_id: boot.into(),
                started_ms: 1,
                heartbeat_ms: 10_000,
                state,
                reason: String::new(),
                dropped: 0,
                unobserved: 0,
                policy_etag: "etag".into(),
                protections_off: Vec::new(),
            },
        }
    }

    pub(crate) fn unique_name() -> String {
        use rand::RngCore;
        format!("palisade_test_{}", rand::rng().next_u64())
    }

    /// Runs `check` against SQLite, and against PostgreSQL when
    /// `PALISADE_TEST_POSTGRES_URL` names a database.
    pub(crate) async fn each_backend<F, Fut>(check: F)
    where
        F: Fn(Store) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("palisade.db").display());
        check(Store::open(&url).await.unwrap()).await;
        if let Ok(pg) = std::env::var("PALISADE_TEST_POSTGRES_URL") {
            let url = Store::create_postgres_database(&pg, &unique_name())
                .await
                .expect("PostgreSQL reachable");
            check(Store::open(&url).await.unwrap()).await;
        }
    }

    #[tokio::test]
    async fn the_time_index_of_earlier_releases_is_dropped_and_postgres_pages_keep_room() {
        each_backend(|store| async move {
            // As an earlier release left it.
            sqlx::query("CREATE INDEX observations_by_time ON observations (last_ms)")
                .execute(&store.pool)
                .await
                .unwrap();
            store.migrate().await.unwrap();
            let indexes: i64 = match store.backend {
                Backend::Sqlite => sqlx::query_scalar(
                    "SELECT COUNT(*) FROM sqlite_master
                     WHERE type = 'index' AND name = 'observations_by_time'",
                ),
                Backend::Postgres => sqlx::query_scalar(
                    "SELECT COUNT(*) FROM pg_indexes WHERE indexname = 'observations_by_time'",
                ),
            }
            .fetch_one(&store.pool)
            .await
            .unwrap();
            assert_eq!(indexes, 0, "{:?}", store.backend);
            if store.backend == Backend::Postgres {
                for table in ["observations", "workloads"] {
                    let options: String = sqlx::query_scalar(
                        "SELECT array_to_string(reloptions, ',') FROM pg_class
                         WHERE relname = $1",
                    )
                    .bind(table)
                    .fetch_one(&store.pool)
                    .await
                    .unwrap();
                    assert_eq!(options, "fillfactor=70", "{table}");
                }
            }
        })
        .await;
    }

    #[tokio::test]
    async fn a_database_from_an_older_release_is_renamed_and_gains_the_columns_added_since() {
        use palisade_common::wire::{EnforcerState, EnforcerStatus, Heartbeat};
        let dir = tempfile::tempdir().unwrap();
        let mut urls = vec![format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("old.db").display()
        )];
        if let Ok(pg) = std::env::var("PALISADE_TEST_POSTGRES_URL") {
            urls.push(
                Store::create_postgres_database(&pg, &unique_name())
                    .await
                    .unwrap(),
            );
        }
        sqlx::any::install_default_drivers();
        for url in urls {
            // The table as the first release made it (named `agents`), with
            // a row, and one of that release's own events.
            let old = AnyPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await
                .unwrap();
            sqlx::query(
                "CREATE TABLE agents (
                    namespace TEXT NOT NULL, pod TEXT NOT NULL, pod_uid TEXT NOT NULL,
                    boot_id TEXT NOT NULL, heartbeat_ms BIGINT NOT NULL, last_seen_ms BIGINT NOT NULL,
                    state TEXT NOT NULL, dropped BIGINT NOT NULL, unobserved BIGINT NOT NULL,
                    PRIMARY KEY (namespace, pod))",
            )
            .execute(&old)
            .await
            .unwrap();
            sqlx::query(
                "INSERT INTO agents VALUES ('shop', 'web-0', 'u0', 'b0', 10000, 1, 'reporting', 0, 0)",
            )
            .execute(&old)
            .await
            .unwrap();
            for ddl in COMMON_SCHEMA
                .iter()
                .filter(|d| d.contains("TABLE IF NOT EXISTS events"))
            {
                sqlx::query(ddl).execute(&old).await.unwrap();
            }
            sqlx::query(
                "INSERT INTO events VALUES ('shop', 'web-0', 'e1', 'u0', 'agent', 'agent/started',
                 NULL, 'audit', NULL, 'up', 5, 5,
                 '{\"id\":\"e1\",\"timeMs\":5,\"kind\":\"agent\",\"rule\":\"agent/started\",\"mode\":\"audit\",\"message\":\"up\"}')",
            )
            .execute(&old)
            .await
            .unwrap();
            old.close().await;

            let store = Store::open(&url).await.unwrap();
            let enforcers = store.enforcers().await.unwrap();
            assert_eq!(enforcers.len(), 1, "{url}");
            assert_eq!(enforcers[0].policy_etag, "");
            assert!(enforcers[0].protections_off.is_empty());
            let beat = Heartbeat {
                pod: enforcers[0].pod.clone(),
                enforcer: EnforcerStatus {
                    boot_id: "b0".into(),
                    started_ms: 1,
                    heartbeat_ms: 10_000,
                    state: EnforcerState::Running,
                    reason: String::new(),
                    dropped: 0,
                    unobserved: 0,
                    policy_etag: "etag".into(),
                    protections_off: Vec::new(),
                },
            };
            store.record_heartbeat(&beat).await.unwrap();
            assert_eq!(store.enforcers().await.unwrap()[0].policy_etag, "etag");
            let renamed: (String, String, String) =
                sqlx::query_as("SELECT kind, rule, body FROM events WHERE id = 'e1'")
                    .fetch_one(&store.pool)
                    .await
                    .unwrap();
            assert_eq!(
                (&*renamed.0, &*renamed.1),
                ("enforcer", "enforcer/started"),
                "{url}"
            );
            let body: palisade_common::wire::Event = serde_json::from_str(&renamed.2).unwrap();
            assert_eq!(body.rule, "enforcer/started", "{url}");
            store.close().await;
            // Opening it again adds nothing twice.
            Store::open(&url).await.unwrap().close().await;
        }
    }

    #[tokio::test]
    async fn bad_urls_are_refused_clearly() {
        let err = Store::open("mysql://x").await.err().unwrap().to_string();
        assert!(err.contains("unsupported database URL"), "{err}");
    }
}
