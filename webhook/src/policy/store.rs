//! The active policy set, reloaded from its directory when files change. A
//! set that fails to load never replaces the working one.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use super::{LoadError, PolicySet};
use crate::metrics::Metrics;

pub struct PolicyStore {
    dir: PathBuf,
    current: RwLock<Arc<PolicySet>>,
    fingerprint: RwLock<Vec<(PathBuf, SystemTime, u64)>>,
}

impl PolicyStore {
    /// Loads `dir` once; a failure here is fatal to start-up (no readiness
    /// without policies).
    pub fn open(dir: &Path) -> Result<Self, LoadError> {
        let fingerprint = fingerprint(dir);
        let set = PolicySet::load_dir(dir)?;
        Ok(Self {
            dir: dir.to_path_buf(),
            current: RwLock::new(Arc::new(set)),
            fingerprint: RwLock::new(fingerprint),
        })
    }

    pub fn current(&self) -> Arc<PolicySet> {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reloads when a file was added, removed or modified. Ok(true) when a
    /// new set is active.
    pub fn reload_if_changed(&self) -> Result<bool, LoadError> {
        let now = fingerprint(&self.dir);
        {
            let mut seen = self.fingerprint.write().unwrap_or_else(|p| p.into_inner());
            if *seen == now {
                return Ok(false);
            }
            // Remember the attempt so a broken file is reported once, not
            // on every tick; fixing it changes the fingerprint again.
            *seen = now;
        }
        let set = PolicySet::load_dir(&self.dir)?;
        *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(set);
        Ok(true)
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

/// Polls for changes every `every`, forever.
pub async fn watch(store: Arc<PolicyStore>, every: Duration, metrics: Arc<Metrics>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.reload_if_changed() {
            Ok(true) => {
                let set = store.current();
                metrics.policy_reloads.inc();
                metrics.policies_loaded.set(set.len() as i64);
                tracing::info!(policies = set.len(), "policy set reloaded");
            }
            Ok(false) => {}
            Err(e) => {
                metrics.policy_reload_failures.inc();
                tracing::error!(error = %e, "policy reload rejected; keeping the previous set");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: &str = "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {name: NAME}\nspec: {}\n";

    #[test]
    fn reloads_good_changes_and_keeps_the_last_good_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), POLICY.replace("NAME", "a")).unwrap();
        let store = PolicyStore::open(dir.path()).unwrap();
        assert_eq!(store.current().len(), 1);
        assert!(!store.reload_if_changed().unwrap());

        std::fs::write(dir.path().join("b.yaml"), POLICY.replace("NAME", "b")).unwrap();
        assert!(store.reload_if_changed().unwrap());
        assert_eq!(store.current().len(), 2);

        std::fs::write(dir.path().join("c.yaml"), "spec: [broken").unwrap();
        assert!(store.reload_if_changed().is_err());
        assert_eq!(store.current().len(), 2, "last good set stays active");
        assert!(
            !store.reload_if_changed().unwrap(),
            "broken file reported once"
        );
    }
}
