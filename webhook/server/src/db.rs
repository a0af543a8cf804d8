//! Durable storage for pushed policies and exceptions (every revision kept) and enforcer
//! reports: embedded SQLite by default, PostgreSQL when several replicas
//! share one database. One code path through sqlx's `Any` driver; only the
//! schema and placeholder syntax differ.

use std::borrow::Cow;
use std::sync::Arc;

use palisade_common::exception::PolicyException;
use palisade_common::policy::{Mode, PolicyDocument};
use palisade_common::wire::{Event, EventKind, PodRef, PolicyRecord, StoredEvent};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

mod agents;
pub use agents::AgentTotals;

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
    CorruptAgent {
        namespace: String,
        pod: String,
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
}

/// Filters for the event query API; all optional.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub kind: Option<EventKind>,
    /// Exact rule id, e.g. `agent/prevention`.
    pub rule: Option<String>,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: i64,
}

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

/// The two kinds of pushed document, each with every revision kept in a
/// table of the same shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Revisions {
    Policies,
    Exceptions,
}

impl Revisions {
    fn table(self) -> &'static str {
        match self {
            Self::Policies => "policy_revisions",
            Self::Exceptions => "exception_revisions",
        }
    }
}

/// One stored revision, its document still JSON text.
struct StoredRevision {
    name: String,
    revision: i64,
    updated_ms: i64,
    body: String,
}

impl StoredRevision {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            name: row.try_get(0)?,
            revision: row.try_get(1)?,
            updated_ms: row.try_get(2)?,
            body: row.try_get(3)?,
        })
    }

    fn document<T: serde::de::DeserializeOwned>(&self) -> Result<T, StoreError> {
        serde_json::from_str(&self.body).map_err(|source| StoreError::Corrupt {
            name: self.name.clone(),
            revision: self.revision,
            source,
        })
    }
}

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
    // `palisade status --coverage`: a namespace's few `agent/prevention`
    // events among all its others.
    "CREATE INDEX IF NOT EXISTS events_by_rule ON events (namespace, rule, time_ms)",
    "CREATE TABLE IF NOT EXISTS agents (
        namespace TEXT NOT NULL, pod TEXT NOT NULL, pod_uid TEXT NOT NULL,
        boot_id TEXT NOT NULL, heartbeat_ms BIGINT NOT NULL, last_seen_ms BIGINT NOT NULL,
        state TEXT NOT NULL, dropped BIGINT NOT NULL, unobserved BIGINT NOT NULL,
        policy_etag TEXT NOT NULL DEFAULT '', protections_off TEXT NOT NULL DEFAULT '[]',
        PRIMARY KEY (namespace, pod))",
];

/// Columns added after their table was first released, for databases made
/// before: `CREATE TABLE IF NOT EXISTS` leaves an existing table as it was.
/// Each definition needs a default, for the rows already there.
const ADDED_COLUMNS: &[AddedColumn] = &[
    AddedColumn {
        table: "agents",
        column: "policy_etag",
        definition: "TEXT NOT NULL DEFAULT ''",
    },
    // The protections an enforcer reports off: `ProtectionOff`s as JSON.
    AddedColumn {
        table: "agents",
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
        };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let specific = match self.backend {
            Backend::Sqlite => SQLITE_SCHEMA,
            Backend::Postgres => POSTGRES_SCHEMA,
        };
        // One connection for the whole migration; on PostgreSQL replicas
        // starting together take turns (CREATE ... IF NOT EXISTS races there).
        let mut conn = self.pool.acquire().await?;
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_advisory_lock(7411001)")
                .execute(&mut *conn)
                .await?;
        }
        let mut result = Ok(());
        for ddl in specific.iter().chain(COMMON_SCHEMA) {
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

    /// Stores a new revision of `doc`; returns its revision number.
    pub async fn put_policy(&self, doc: &PolicyDocument, author: &str) -> Result<i64, StoreError> {
        self.put(Revisions::Policies, &doc.metadata.name, doc, author)
            .await
    }

    /// Stores a new revision of `exception`; returns its revision number.
    pub async fn put_exception(
        &self,
        exception: &PolicyException,
        author: &str,
    ) -> Result<i64, StoreError> {
        self.put(
            Revisions::Exceptions,
            &exception.metadata.name,
            exception,
            author,
        )
        .await
    }

    async fn put(
        &self,
        kind: Revisions,
        name: &str,
        doc: &impl serde::Serialize,
        author: &str,
    ) -> Result<i64, StoreError> {
        let body = serde_json::to_string(doc).map_err(|source| StoreError::Corrupt {
            name: name.to_string(),
            revision: 0,
            source,
        })?;
        self.append_revision(kind, name, Some(body), author).await
    }

    /// Records a deletion (history is kept). False when nothing was active.
    pub async fn delete_policy(&self, name: &str, author: &str) -> Result<bool, StoreError> {
        self.delete(Revisions::Policies, name, author).await
    }

    /// Records an exception's deletion. False when nothing was active.
    pub async fn delete_exception(&self, name: &str, author: &str) -> Result<bool, StoreError> {
        self.delete(Revisions::Exceptions, name, author).await
    }

    async fn delete(&self, kind: Revisions, name: &str, author: &str) -> Result<bool, StoreError> {
        let active = self.current(kind).await?.iter().any(|r| r.name == name);
        if active {
            self.append_revision(kind, name, None, author).await?;
        }
        Ok(active)
    }

    async fn append_revision(
        &self,
        kind: Revisions,
        name: &str,
        body: Option<String>,
        author: &str,
    ) -> Result<i64, StoreError> {
        let table = kind.table();
        let _turn = self.write_turn().await;
        // Two replicas racing for the same next revision: the UNIQUE
        // constraint refuses one, which retries.
        let mut attempts = 0;
        loop {
            let mut tx = self.pool.begin().await?;
            let row = sqlx::query(&self.sql(&format!(
                "SELECT COALESCE(MAX(revision), 0) FROM {table} WHERE name = ?"
            )))
            .bind(name)
            .fetch_one(&mut *tx)
            .await?;
            let revision: i64 = row.try_get(0)?;
            let inserted = sqlx::query(&self.sql(&format!(
                "INSERT INTO {table} (name, revision, deleted, document, author, created_ms) VALUES (?, ?, ?, ?, ?, ?)"
            )))
            .bind(name)
            .bind(revision + 1)
            .bind(body.is_none())
            .bind(body.clone())
            .bind(author)
            .bind(now_ms())
            .execute(&mut *tx)
            .await;
            match inserted {
                Ok(_) => {
                    tx.commit().await?;
                    return Ok(revision + 1);
                }
                Err(e) if attempts < 5 && is_unique_violation(&e) => attempts += 1,
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// The latest revision of every document of `kind` not deleted.
    async fn current(&self, kind: Revisions) -> Result<Vec<StoredRevision>, StoreError> {
        let table = kind.table();
        let rows = sqlx::query(&format!(
            "SELECT r.name, r.revision, r.created_ms, r.document FROM {table} r
             JOIN (SELECT name, MAX(revision) AS revision FROM {table} GROUP BY name) latest
               ON latest.name = r.name AND latest.revision = r.revision
             WHERE r.deleted = FALSE ORDER BY r.name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(StoredRevision::from_row).collect()
    }

    /// Every revision of `name`, newest first (deletions omitted).
    async fn history(
        &self,
        kind: Revisions,
        name: &str,
    ) -> Result<Vec<StoredRevision>, StoreError> {
        let rows = sqlx::query(&self.sql(&format!(
            "SELECT name, revision, created_ms, document FROM {}
             WHERE name = ? AND deleted = FALSE ORDER BY revision DESC",
            kind.table()
        )))
        .bind(name)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(StoredRevision::from_row).collect()
    }

    /// The latest revision of every policy not deleted.
    pub async fn current_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        self.current(Revisions::Policies)
            .await?
            .iter()
            .map(policy_record)
            .collect()
    }

    /// Every revision of policy `name`, newest first (deletions omitted).
    pub async fn policy_history(&self, name: &str) -> Result<Vec<PolicyRecord>, StoreError> {
        self.history(Revisions::Policies, name)
            .await?
            .iter()
            .map(policy_record)
            .collect()
    }

    /// The latest revision of every exception not deleted.
    pub async fn current_exceptions(&self) -> Result<Vec<StoredException>, StoreError> {
        self.current(Revisions::Exceptions)
            .await?
            .iter()
            .map(exception_record)
            .collect()
    }

    /// Every revision of exception `name`, newest first.
    pub async fn exception_history(&self, name: &str) -> Result<Vec<StoredException>, StoreError> {
        self.history(Revisions::Exceptions, name)
            .await?
            .iter()
            .map(exception_record)
            .collect()
    }

    /// Grows with every push or delete of either kind, on any replica.
    pub async fn change_marker(&self) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COALESCE(MAX(id), 0) FROM policy_revisions)
                  + (SELECT COALESCE(MAX(id), 0) FROM exception_revisions)",
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get(0)?)
    }

    /// Stores the events not stored before (by pod and event id); returns
    /// how many were new. Retried batches therefore never duplicate.
    pub async fn insert_events(&self, pod: &PodRef, events: &[Event]) -> Result<usize, StoreError> {
        let _turn = self.write_turn().await;
        self.insert_events_in_turn(pod, events).await
    }

    /// This process's turn to write (SQLite only; see `writes`).
    async fn write_turn(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.writes {
            Some(lock) => Some(lock.lock().await),
            None => None,
        }
    }

    async fn insert_events_in_turn(
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
                .bind(mode_str(event.mode))
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

fn policy_record(stored: &StoredRevision) -> Result<PolicyRecord, StoreError> {
    Ok(PolicyRecord {
        not_in_force: None,
        name: stored.name.clone(),
        revision: stored.revision,
        updated_ms: stored.updated_ms,
        source: "api".into(),
        document: stored.document()?,
    })
}

/// A pushed exception's revision.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredException {
    pub revision: i64,
    pub updated_ms: i64,
    pub exception: PolicyException,
}

fn exception_record(stored: &StoredRevision) -> Result<StoredException, StoreError> {
    Ok(StoredException {
        revision: stored.revision,
        updated_ms: stored.updated_ms,
        exception: stored.document()?,
    })
}

fn mode_str(mode: Mode) -> &'static str {
    match mode {
        Mode::Audit => "audit",
        Mode::Enforce => "enforce",
    }
}

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    fn unique_name() -> String {
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
    async fn exceptions_are_versioned_apart_from_policies_and_move_the_change_marker() {
        each_backend(|store| async move {
            let exception = |owner: &str| -> PolicyException {
                serde_json::from_value(serde_json::json!({
                    "apiVersion": "palisade.dev/v1alpha1", "kind": "PolicyException",
                    "metadata": {"name": "a"},
                    "spec": {"policy": "p", "rules": ["*"], "expiresAt": "2027-01-01T00:00:00Z",
                             "reason": "r", "owner": owner}
                }))
                .unwrap()
            };
            store
                .put_policy(&policy("a", "audit"), "admin")
                .await
                .unwrap();
            let before = store.change_marker().await.unwrap();
            assert_eq!(
                store
                    .put_exception(&exception("one"), "admin")
                    .await
                    .unwrap(),
                1
            );
            assert!(
                store.change_marker().await.unwrap() > before,
                "a push moves the marker"
            );
            assert_eq!(
                store
                    .put_exception(&exception("two"), "admin")
                    .await
                    .unwrap(),
                2
            );
            let current = store.current_exceptions().await.unwrap();
            assert_eq!(current.len(), 1);
            assert_eq!(
                (
                    current[0].revision,
                    current[0].exception.spec.owner.as_str()
                ),
                (2, "two")
            );
            assert_eq!(
                store.current_policies().await.unwrap().len(),
                1,
                "policies untouched"
            );
            let before = store.change_marker().await.unwrap();
            assert!(store.delete_exception("a", "admin").await.unwrap());
            assert!(!store.delete_exception("a", "admin").await.unwrap());
            assert!(
                store.change_marker().await.unwrap() > before,
                "a deletion moves the marker"
            );
            assert!(store.current_exceptions().await.unwrap().is_empty());
            assert_eq!(store.exception_history("a").await.unwrap().len(), 2);
            assert_eq!(
                store.current_policies().await.unwrap().len(),
                1,
                "the policy a stays"
            );
        })
        .await;
    }

    #[tokio::test]
    async fn policies_are_versioned_and_deletions_kept_in_history() {
        each_backend(|store| async move {
            assert_eq!(
                store
                    .put_policy(&policy("a", "audit"), "admin")
                    .await
                    .unwrap(),
                1
            );
            assert_eq!(
                store
                    .put_policy(&policy("a", "enforce"), "admin")
                    .await
                    .unwrap(),
                2
            );
            store
                .put_policy(&policy("b", "audit"), "admin")
                .await
                .unwrap();
            let current = store.current_policies().await.unwrap();
            assert_eq!(
                current
                    .iter()
                    .map(|p| (p.name.as_str(), p.revision))
                    .collect::<Vec<_>>(),
                [("a", 2), ("b", 1)]
            );
            assert_eq!(current[0].document.spec.mode, Mode::Enforce);

            let before = store.change_marker().await.unwrap();
            assert!(store.delete_policy("a", "admin").await.unwrap());
            assert!(!store.delete_policy("a", "admin").await.unwrap());
            assert!(store.change_marker().await.unwrap() > before);
            assert_eq!(store.current_policies().await.unwrap().len(), 1);
            assert_eq!(store.policy_history("a").await.unwrap().len(), 2);
            // Re-created after deletion: revisions keep counting.
            assert_eq!(
                store
                    .put_policy(&policy("a", "audit"), "admin")
                    .await
                    .unwrap(),
                4
            );
        })
        .await;
    }

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
            let prevention = Event::agent(
                "p1".into(),
                2_000,
                "agent/prevention",
                "container app: prevention full".into(),
            )
            .with_coverage(coverage.clone());
            let batch = vec![
                Event::agent("a1".into(), 1_000, "agent/started", "up".into()),
                prevention.clone(),
                event("d1", 3_000, EventKind::Drift),
            ];
            store.insert_events(&pod, &batch).await.unwrap();
            let found = store
                .query_events(&EventQuery {
                    namespace: Some("team-a".into()),
                    kind: Some(EventKind::Agent),
                    rule: Some("agent/prevention".into()),
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
                    rule: Some("agent/prev".into()),
                    limit: 100,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert!(none.is_empty(), "the rule matches exactly: {none:?}");
        })
        .await;
    }

    #[tokio::test]
    async fn a_database_from_an_older_release_gains_the_columns_added_since() {
        use palisade_common::wire::{AgentState, AgentStatus, Heartbeat};
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
            // The agents table as the first release made it, with a row.
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
            old.close().await;

            let store = Store::open(&url).await.unwrap();
            let agents = store.agents().await.unwrap();
            assert_eq!(agents.len(), 1, "{url}");
            assert_eq!(agents[0].policy_etag, "");
            assert!(agents[0].protections_off.is_empty());
            let beat = Heartbeat {
                pod: agents[0].pod.clone(),
                agent: AgentStatus {
                    boot_id: "b0".into(),
                    started_ms: 1,
                    heartbeat_ms: 10_000,
                    state: AgentState::Running,
                    reason: String::new(),
                    dropped: 0,
                    unobserved: 0,
                    policy_etag: "etag".into(),
                    protections_off: Vec::new(),
                },
            };
            store.record_heartbeat(&beat).await.unwrap();
            assert_eq!(store.agents().await.unwrap()[0].policy_etag, "etag");
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
