//! The active policy set, built from its sources: the policy directory
//! (re-read when files change), policies pushed through the API (synced
//! from the database) and, when watched, Palisade policy CRDs (`crd`). A
//! combination that fails to build never replaces the working set.
//! Subscribers are woken on every change (sidecar long-polls).
//!
//! A policy defined by two sources is taken from the first of: files,
//! resources, pushes ([`Shadowed`] lists the others). An exception defined
//! by two sources is in force from neither: exceptions only relax, so a
//! conflict grants nothing. Pushes are refused when they would be left
//! out, but a file or resource added later under a pushed name must not
//! freeze every other change: it is applied, and what is left out is
//! logged and counted. Twice within one source stays an error.

pub mod crd;

use std::collections::HashMap;
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

/// A document left out because another source defines the same kind and
/// name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shadowed {
    pub kind: &'static str,
    pub name: String,
    /// Where the document in force comes from (`None`: an exception
    /// defined twice, in force from neither).
    pub kept: Option<String>,
    /// Where the one left out comes from.
    pub dropped: String,
    /// Where the other definition comes from.
    pub other: String,
}

impl Shadowed {
    /// Why the document from `dropped` is not in force, for listings.
    pub fn reason(&self) -> String {
        match &self.kept {
            Some(kept) => format!("shadowed by {kept}"),
            None => format!("also defined by {}: in force from neither", self.other),
        }
    }
}

impl Sources {
    /// The documents in force, in precedence order (files, resources,
    /// pushes), and those a higher source shadows.
    fn effective(&self) -> (Documents, Vec<Shadowed>) {
        let by_precedence: [&Documents; 5] = [
            &self.directory,
            &self.crds,
            &self.exception_crds,
            &self.pushed,
            &self.pushed_exceptions,
        ];
        // The first source defining each name, and whether another does.
        let mut owners: HashMap<(&'static str, &str), (usize, &str, Option<&str>)> = HashMap::new();
        for (source, group) in by_precedence.iter().enumerate() {
            for (origin, doc) in group.iter() {
                let owner = owners
                    .entry((doc.kind(), doc.name()))
                    .or_insert((source, origin, None));
                if owner.0 != source && owner.2.is_none() {
                    owner.2 = Some(origin);
                }
            }
        }
        let mut documents = Vec::new();
        let mut shadowed = Vec::new();
        for (source, group) in by_precedence.into_iter().enumerate() {
            for (origin, doc) in group {
                let (first, first_origin, second) = owners[&(doc.kind(), doc.name())];
                let exception = matches!(doc, Document::Exception(_));
                let left_out = match second {
                    // One source: twice within it reaches PolicySet, which
                    // refuses it.
                    None => None,
                    Some(second) if exception => Some((
                        None,
                        if first == source {
                            second
                        } else {
                            first_origin
                        },
                    )),
                    Some(_) if first == source => None,
                    Some(_) => Some((Some(first_origin), first_origin)),
                };
                match left_out {
                    None => documents.push((origin.clone(), doc.clone())),
                    Some((kept, other)) => shadowed.push(Shadowed {
                        kind: doc.kind(),
                        name: doc.name().to_string(),
                        kept: kept.map(str::to_string),
                        dropped: origin.clone(),
                        other: other.to_string(),
                    }),
                }
            }
        }
        (documents, shadowed)
    }

    /// Builds the set in force; `pushed` names a pushed document that must
    /// not be shadowed (a push is refused rather than ignored).
    fn build(&self, pushed: Option<(&str, &str)>) -> Result<(PolicySet, Vec<Shadowed>), LoadError> {
        let (documents, shadowed) = self.effective();
        if let Some((kind, name)) = pushed {
            if let Some(clash) = shadowed
                .iter()
                .find(|s| s.kind == kind && s.name == name && s.dropped == PUSHED_ORIGIN)
            {
                return Err(LoadError::Duplicate {
                    kind: clash.kind,
                    name: clash.name.clone(),
                    first: clash.other.clone(),
                    second: clash.dropped.clone(),
                });
            }
        }
        Ok((PolicySet::from_documents(documents)?, shadowed))
    }
}

pub struct PolicyStore {
    dir: PathBuf,
    sources: RwLock<Sources>,
    current: RwLock<Arc<PolicySet>>,
    shadowed: RwLock<Vec<Shadowed>>,
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
            shadowed: RwLock::new(Vec::new()),
            fingerprint: RwLock::new(fingerprint),
            generation: watch::channel(0).0,
        })
    }

    pub fn current(&self) -> Arc<PolicySet> {
        read(&self.current).clone()
    }

    /// Documents left out because another source defines them too (see
    /// the module).
    pub fn shadowed(&self) -> Vec<Shadowed> {
        read(&self.shadowed).clone()
    }

    /// Why the `kind` named `name` from `origin` is not in force (`None`:
    /// it is, or it is not known).
    pub fn not_in_force(&self, kind: &str, name: &str, origin: &str) -> Option<String> {
        read(&self.shadowed)
            .iter()
            .find(|s| s.kind == kind && s.name == name && s.dropped == origin)
            .map(Shadowed::reason)
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
        candidate
            .build(Some((palisade_common::exception::EXCEPTION_KIND, name)))
            .map(drop)
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
        let (set, shadowed) = next.build(None)?;
        for s in shadowed
            .iter()
            .filter(|s| !read(&self.shadowed).contains(s))
        {
            tracing::warn!(kind = s.kind, name = %s.name, ignored = %s.dropped, reason = %s.reason(),
                "defined by two sources");
        }
        *sources = next;
        *write(&self.current) = Arc::new(set);
        *write(&self.shadowed) = shadowed;
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
        candidate
            .build(Some((palisade_common::policy::KIND, &doc.metadata.name)))
            .map(drop)
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
            metrics.policies_shadowed.set(store.shadowed().len() as i64);
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
        assert!(store.set_pushed(vec![]).unwrap());
        assert_eq!(store.current().len(), 1);
    }

    #[test]
    fn a_file_added_under_a_pushed_name_wins_without_freezing_the_set() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), POLICY.replace("NAME", "a")).unwrap();
        let store = PolicyStore::open(dir.path()).unwrap();
        assert!(store.set_pushed(vec![doc("x"), doc("y")]).unwrap());
        // Someone adds x.yaml while x is pushed, and b.yaml.
        std::fs::write(dir.path().join("x.yaml"), POLICY.replace("NAME", "x")).unwrap();
        std::fs::write(dir.path().join("b.yaml"), POLICY.replace("NAME", "b")).unwrap();
        assert!(
            store.reload_if_changed().unwrap(),
            "the directory change applies"
        );
        let set = store.current();
        assert_eq!(set.len(), 4, "a, b, x (the file's), y");
        assert_eq!(
            store.shadowed(),
            [Shadowed {
                kind: "RuntimePolicy",
                name: "x".into(),
                kept: Some(dir.path().join("x.yaml").display().to_string()),
                dropped: PUSHED_ORIGIN.into(),
                other: dir.path().join("x.yaml").display().to_string(),
            }]
        );
        // A new push of x is still refused, naming both.
        let err = store.check_push(&doc("x")).unwrap_err().to_string();
        assert!(
            err.contains("defined twice") && err.contains("x.yaml"),
            "{err}"
        );
        // Twice within one source stays an error, and the set stays.
        assert!(store.set_pushed(vec![doc("z"), doc("z")]).is_err());
        assert_eq!(store.current().len(), 4);
        // The file goes: the pushed x is in force again.
        std::fs::remove_file(dir.path().join("x.yaml")).unwrap();
        assert!(store.reload_if_changed().unwrap());
        assert!(store.shadowed().is_empty());
        assert_eq!(store.current().len(), 4, "a, b, x (pushed), y");
    }

    fn exception(name: &str, namespace: &str) -> PolicyException {
        let yaml = format!(
            "apiVersion: palisade.dev/v1alpha1\nkind: PolicyException\nmetadata: {{name: {name}}}\n\
             spec:\n  policy: a\n  rules: [\"drift/*\"]\n  selector: {{namespaces: [{namespace}]}}\n  \
             expiresAt: \"2099-01-01T00:00:00Z\"\n  reason: vendor image\n  owner: team\n"
        );
        match Document::from_yaml(&yaml).unwrap() {
            Document::Exception(e) => e,
            Document::Policy(_) => unreachable!("an exception"),
        }
    }

    #[test]
    fn an_exception_defined_by_two_sources_grants_nothing_until_one_goes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.yaml"), POLICY.replace("NAME", "a")).unwrap();
        let store = PolicyStore::open(dir.path()).unwrap();
        let names = |store: &PolicyStore| -> Vec<String> {
            let set = store.current();
            set.exceptions()
                .iter()
                .map(|e| e.metadata.name.clone())
                .collect()
        };
        assert!(store
            .set_pushed_exceptions(vec![
                exception("legacy", "billing"),
                exception("other", "x")
            ])
            .unwrap());
        assert_eq!(names(&store), ["legacy", "other"]);
        // A resource of the same name, wider: neither is in force.
        assert!(store
            .set_exception_crds(vec![exception("legacy", "payments")])
            .unwrap());
        assert_eq!(names(&store), ["other"], "a conflict grants nothing");
        let reason = store
            .not_in_force("PolicyException", "legacy", PUSHED_ORIGIN)
            .unwrap();
        assert!(reason.contains(EXCEPTION_CRD_ORIGIN), "{reason}");
        assert!(store
            .not_in_force("PolicyException", "legacy", EXCEPTION_CRD_ORIGIN)
            .is_some());
        assert!(store
            .check_push_exception(&exception("legacy", "billing"))
            .is_err());
        // The pushed one is deleted: the resource is in force alone.
        assert!(store
            .set_pushed_exceptions(vec![exception("other", "x")])
            .unwrap());
        assert_eq!(names(&store), ["legacy", "other"]);
        assert_eq!(
            store.current().exceptions()[0].spec.selector.namespaces,
            ["payments"]
        );
        assert!(store.shadowed().is_empty());
    }
}
