//! The active policy set, built from its sources: the policy directory
//! (re-read when files change), policies pushed through the API (synced
//! from the database) and, when watched, Palisade policy CRDs (`crd`). A
//! combination that fails to build never replaces the working set.
//! Subscribers are woken on every change (sidecar long-polls).

pub mod crd;

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use palisade_common::exception::PolicyException;
use palisade_common::policy::{Document, PolicyDocument};
use tokio::sync::watch;

use crate::metrics::Metrics;
use palisade_engine::policy::{load_dir_documents, LoadError, PolicySet};

type Documents = Vec<(String, Document)>;

/// Policies and exceptions by where they come from; the active set is all
/// of them.
#[derive(Clone, Default, PartialEq)]
struct Sources {
    directory: Documents,
    pushed: Documents,
    pushed_exceptions: Documents,
    crds: Documents,
    exception_crds: Documents,
}

impl Sources {
    fn all(&self) -> impl Iterator<Item = (String, Document)> + '_ {
        self.directory
            .iter()
            .chain(&self.pushed)
            .chain(&self.pushed_exceptions)
            .chain(&self.crds)
            .chain(&self.exception_crds)
            .cloned()
    }
}

pub struct PolicyStore {
    dir: PathBuf,
    sources: RwLock<Sources>,
    current: RwLock<Arc<PolicySet>>,
    fingerprint: RwLock<Vec<(PathBuf, SystemTime, u64)>>,
    generation: watch::Sender<u64>,
}

/// Where a pushed policy came from, for conflict messages.
pub const PUSHED_ORIGIN: &str = "policy API";
/// Where a RuntimePolicy custom resource came from.
pub const CRD_ORIGIN: &str = "RuntimePolicy resource";
/// Where a PolicyException custom resource came from.
pub const EXCEPTION_CRD_ORIGIN: &str = "PolicyException resource";

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

impl PolicyStore {
    /// Loads `dir` once; a failure here is fatal to start-up (no readiness
    /// without policies).
    pub fn open(dir: &Path) -> Result<Self, LoadError> {
        let fingerprint = fingerprint(dir);
        let documents = load_dir_documents(dir)?;
        let set = PolicySet::from_documents(documents.clone())?;
        Ok(Self {
            dir: dir.to_path_buf(),
            sources: RwLock::new(Sources {
                directory: documents,
                ..Sources::default()
            }),
            current: RwLock::new(Arc::new(set)),
            fingerprint: RwLock::new(fingerprint),
            generation: watch::channel(0).0,
        })
    }

    pub fn current(&self) -> Arc<PolicySet> {
        read(&self.current).clone()
    }

    /// Changes on every new active set.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }

    /// Policies defined by files (pushes may not shadow them).
    pub fn directory_documents(&self) -> Vec<(String, PolicyDocument)> {
        read(&self.sources)
            .directory
            .iter()
            .filter_map(|(origin, doc)| match doc {
                Document::Policy(p) => Some((origin.clone(), p.clone())),
                Document::Exception(_) => None,
            })
            .collect()
    }

    /// Reloads when a file was added, removed or modified. Ok(true) when a
    /// new set is active.
    pub fn reload_if_changed(&self) -> Result<bool, LoadError> {
        let now = fingerprint(&self.dir);
        {
            let mut seen = write(&self.fingerprint);
            if *seen == now {
                return Ok(false);
            }
            // Remember the attempt so a broken file is reported once, not
            // on every tick; fixing it changes the fingerprint again.
            *seen = now;
        }
        let directory = load_dir_documents(&self.dir)?;
        self.replace(|s| s.directory = directory)
    }

    /// Replaces the pushed policies (from the database). Ok(true) when the
    /// active set changed.
    pub fn set_pushed(&self, pushed: Vec<PolicyDocument>) -> Result<bool, LoadError> {
        let pushed = pushed
            .into_iter()
            .map(|d| (PUSHED_ORIGIN.to_string(), d.into()))
            .collect();
        self.replace(|s| s.pushed = pushed)
    }

    /// Replaces the policies defined as RuntimePolicy resources.
    pub fn set_crds(&self, crds: Vec<PolicyDocument>) -> Result<bool, LoadError> {
        let crds = crds
            .into_iter()
            .map(|d| (CRD_ORIGIN.to_string(), d.into()))
            .collect();
        self.replace(|s| s.crds = crds)
    }

    /// Replaces the pushed exceptions (from the database).
    pub fn set_pushed_exceptions(
        &self,
        exceptions: Vec<PolicyException>,
    ) -> Result<bool, LoadError> {
        let exceptions = exceptions
            .into_iter()
            .map(|e| (PUSHED_ORIGIN.to_string(), Document::Exception(e)))
            .collect();
        self.replace(|s| s.pushed_exceptions = exceptions)
    }

    /// Exceptions not pushed (files and resources), with where each is from.
    pub fn unpushed_exceptions(&self) -> Vec<(String, PolicyException)> {
        let sources = read(&self.sources);
        sources
            .directory
            .iter()
            .chain(&sources.exception_crds)
            .filter_map(|(origin, doc)| match doc {
                Document::Exception(e) => Some((origin.clone(), e.clone())),
                Document::Policy(_) => None,
            })
            .collect()
    }

    /// Would `exception`, pushed, build? (A name clash with a file or a
    /// resource is refused.)
    pub fn check_push_exception(&self, exception: &PolicyException) -> Result<(), LoadError> {
        let mut candidate = read(&self.sources).clone();
        let name = &exception.metadata.name;
        candidate
            .pushed_exceptions
            .retain(|(_, d)| !matches!(d, Document::Exception(e) if &e.metadata.name == name));
        candidate.pushed_exceptions.push((
            PUSHED_ORIGIN.to_string(),
            Document::Exception(exception.clone()),
        ));
        PolicySet::from_documents(candidate.all()).map(drop)
    }

    /// Replaces the exceptions defined as PolicyException resources.
    pub fn set_exception_crds(&self, exceptions: Vec<PolicyException>) -> Result<bool, LoadError> {
        let exceptions = exceptions
            .into_iter()
            .map(|e| (EXCEPTION_CRD_ORIGIN.to_string(), Document::Exception(e)))
            .collect();
        self.replace(|s| s.exception_crds = exceptions)
    }

    /// Applies `change` to the sources and activates the result, unless it
    /// changes nothing or does not build (then the previous set stays).
    fn replace(&self, change: impl FnOnce(&mut Sources)) -> Result<bool, LoadError> {
        let mut sources = write(&self.sources);
        let mut next = sources.clone();
        change(&mut next);
        if next == *sources {
            return Ok(false);
        }
        let set = PolicySet::from_documents(next.all())?;
        *sources = next;
        *write(&self.current) = Arc::new(set);
        self.generation.send_modify(|g| *g += 1);
        Ok(true)
    }

    /// Would `doc`, pushed, build? Checks compilation and name clashes with
    /// the directory without changing anything.
    pub fn check_push(&self, doc: &PolicyDocument) -> Result<(), LoadError> {
        let mut candidate = read(&self.sources).clone();
        candidate.pushed.retain(
            |(_, d)| !matches!(d, Document::Policy(p) if p.metadata.name == doc.metadata.name),
        );
        candidate
            .pushed
            .push((PUSHED_ORIGIN.to_string(), doc.clone().into()));
        PolicySet::from_documents(candidate.all()).map(drop)
    }
}

fn fingerprint(dir: &Path) -> Vec<(PathBuf, SystemTime, u64)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            // Follow symlinks: ConfigMap mounts swap `..data` links.
            let meta = std::fs::metadata(e.path()).ok()?;
            Some((e.path(), meta.modified().ok()?, meta.len()))
        })
        .collect();
    out.sort();
    out
}

/// Polls the directory for changes every `every`, forever.
pub async fn watch_directory(store: Arc<PolicyStore>, every: Duration, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = store.reload_if_changed();
        record_reload(&store, &metrics, result, "policy directory");
    }
}

/// Logs and counts the outcome of a reload attempt.
pub fn record_reload(
    store: &PolicyStore,
    metrics: &Metrics,
    result: Result<bool, LoadError>,
    source: &str,
) {
    // Exceptions expire as time passes, reload or not.
    metrics.set_exceptions(store.current().exceptions(), SystemTime::now());
    match result {
        Ok(true) => {
            let set = store.current();
            metrics.policy_reloads.inc();
            metrics.policies_loaded.set(set.len() as i64);
            tracing::info!(policies = set.len(), source, "policy set reloaded");
        }
        Ok(false) => {}
        Err(e) => {
            metrics.policy_reload_failures.inc();
            tracing::error!(error = %e, source, "policy reload rejected; keeping the previous set");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {name: NAME}\nspec: {}\n";

    fn doc(name: &str) -> PolicyDocument {
        PolicyDocument::from_yaml(&POLICY.replace("NAME", name)).unwrap()
    }

    #[test]
    fn reloads_good_changes_and_keeps_the_last_good_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), POLICY.replace("NAME", "a")).unwrap();
        let store = PolicyStore::open(dir.path()).unwrap();
        let changes = store.subscribe();
        assert_eq!(store.current().len(), 1);
        assert!(!store.reload_if_changed().unwrap());

        std::fs::write(dir.path().join("b.yaml"), POLICY.replace("NAME", "b")).unwrap();
        assert!(store.reload_if_changed().unwrap());
        assert_eq!(store.current().len(), 2);
        assert!(changes.has_changed().unwrap());

        std::fs::write(dir.path().join("c.yaml"), "spec: [broken").unwrap();
        assert!(store.reload_if_changed().is_err());
        assert_eq!(store.current().len(), 2, "last good set stays active");
        assert!(
            !store.reload_if_changed().unwrap(),
            "broken file reported once"
        );
    }

    #[test]
    fn pushed_policies_join_the_set_but_cannot_shadow_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), POLICY.replace("NAME", "a")).unwrap();
        let store = PolicyStore::open(dir.path()).unwrap();
        assert!(store.check_push(&doc("x")).is_ok());
        let err = store.check_push(&doc("a")).unwrap_err().to_string();
        assert!(err.contains("defined twice"), "{err}");

        assert!(store.set_pushed(vec![doc("x")]).unwrap());
        assert!(
            !store.set_pushed(vec![doc("x")]).unwrap(),
            "no change, no reload"
        );
        assert_eq!(store.current().len(), 2);
        assert!(store.set_pushed(vec![doc("a")]).is_err());
        assert_eq!(store.current().len(), 2, "previous set kept");
        assert!(store.set_pushed(vec![]).unwrap());
        assert_eq!(store.current().len(), 1);
    }
}
