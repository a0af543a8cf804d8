//! Pushed policies and exceptions: every push or delete appends a revision
//! (deletions are revisions without a document), so history is never lost
//! and replicas notice changes by the change marker.

use palisade_common::exception::PolicyException;
use palisade_common::policy::PolicyDocument;
use palisade_common::wire::PolicyRecord;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::{now_ms, Backend, Store, StoreError, PUSH_CHANNEL};

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
    author: String,
}

impl StoredRevision {
    fn from_row(row: &AnyRow) -> Result<Self, StoreError> {
        Ok(Self {
            name: row.try_get(0)?,
            revision: row.try_get(1)?,
            updated_ms: row.try_get(2)?,
            body: row.try_get(3)?,
            author: row.try_get(4)?,
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

impl Store {
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
                    if self.backend == Backend::Postgres {
                        // Delivered to every listening replica at commit,
                        // and only if the revision commits.
                        sqlx::query("SELECT pg_notify($1, '')")
                            .bind(PUSH_CHANNEL)
                            .execute(&mut *tx)
                            .await?;
                    }
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
            "SELECT r.name, r.revision, r.created_ms, r.document, r.author FROM {table} r
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
            "SELECT name, revision, created_ms, document, author FROM {}
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
    pub async fn policy_history(
        &self,
        name: &str,
    ) -> Result<Vec<Authored<PolicyRecord>>, StoreError> {
        self.history(Revisions::Policies, name)
            .await?
            .iter()
            .map(|stored| Authored::of(stored, policy_record))
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
    pub async fn exception_history(
        &self,
        name: &str,
    ) -> Result<Vec<Authored<StoredException>>, StoreError> {
        self.history(Revisions::Exceptions, name)
            .await?
            .iter()
            .map(|stored| Authored::of(stored, exception_record))
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

/// A revision as history shows it: the record and who pushed it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Authored<T> {
    #[serde(flatten)]
    pub record: T,
    /// The identity that pushed it, e.g. `admin-token:1a2b3c4d`.
    pub author: String,
}

impl<T> Authored<T> {
    fn of(
        stored: &StoredRevision,
        record: impl Fn(&StoredRevision) -> Result<T, StoreError>,
    ) -> Result<Self, StoreError> {
        Ok(Self {
            record: record(stored)?,
            author: stored.author.clone(),
        })
    }

    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> Authored<U> {
        Authored {
            record: f(self.record),
            author: self.author,
        }
    }
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

fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
mod tests {
    use super::super::tests::{each_backend, policy};
    use super::*;
    use palisade_common::policy::Mode;

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
    async fn history_names_who_pushed_each_revision() {
        each_backend(|store| async move {
            store
                .put_policy(&policy("a", "audit"), "admin-token:aaaaaaaa")
                .await
                .unwrap();
            store
                .put_policy(&policy("a", "enforce"), "admin-token:bbbbbbbb")
                .await
                .unwrap();
            let history = store.policy_history("a").await.unwrap();
            assert_eq!(
                history
                    .iter()
                    .map(|r| (r.record.revision, r.author.as_str()))
                    .collect::<Vec<_>>(),
                [(2, "admin-token:bbbbbbbb"), (1, "admin-token:aaaaaaaa")]
            );
            let shown = serde_json::to_value(&history[0]).unwrap();
            assert_eq!(shown["author"], "admin-token:bbbbbbbb");
            assert_eq!(
                shown["name"], "a",
                "the record's own fields stay at the top level"
            );

            let exception: PolicyException = serde_json::from_value(serde_json::json!({
                "apiVersion": "palisade.dev/v1alpha1", "kind": "PolicyException",
                "metadata": {"name": "e"},
                "spec": {"policy": "a", "rules": ["*"], "expiresAt": "2027-01-01T00:00:00Z",
                         "reason": "r", "owner": "o"}
            }))
            .unwrap();
            store
                .put_exception(&exception, "admin-token:cccccccc")
                .await
                .unwrap();
            let history = store.exception_history("e").await.unwrap();
            assert_eq!(history[0].author, "admin-token:cccccccc");
        })
        .await;
    }

    /// PostgreSQL only: a revision committed through one replica's store is
    /// announced to another's listener at once.
    #[tokio::test]
    async fn a_revision_is_announced_to_listening_replicas() {
        let Ok(pg) = std::env::var("PALISADE_TEST_POSTGRES_URL") else {
            return;
        };
        let url = Store::create_postgres_database(&pg, &super::super::tests::unique_name())
            .await
            .unwrap();
        let (pushing, listening) = (
            Store::open(&url).await.unwrap(),
            Store::open(&url).await.unwrap(),
        );
        let mut listener = listening.push_listener().await.unwrap().unwrap();
        pushing
            .put_policy(&policy("a", "audit"), "admin")
            .await
            .unwrap();
        let heard = tokio::time::timeout(std::time::Duration::from_secs(5), listener.recv())
            .await
            .expect("announced within 5 s")
            .unwrap();
        assert_eq!(heard.channel(), PUSH_CHANNEL);
        let dir = tempfile::tempdir().unwrap();
        let sqlite = format!("sqlite://{}", dir.path().join("p.db").display());
        assert!(Store::open(&sqlite)
            .await
            .unwrap()
            .push_listener()
            .await
            .unwrap()
            .is_none());
    }
}
