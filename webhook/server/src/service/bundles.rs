//! Runtime bundles encoded once per policy selection. A push wakes every
//! long-poll a replica holds (thousands); each needs its pod's bundle as
//! JSON. Pods differ in labels but few differ in which policies select
//! them, so the bundle of each selection is built, tagged and encoded once
//! per policy set and shared.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use palisade_engine::policy::{PolicySet, RuntimeSelection};

/// Selections kept per policy set; more (a selector per pod) start over.
const MAX_SELECTIONS: usize = 4096;

/// A bundle ready to send.
#[derive(Debug)]
pub struct EncodedBundle {
    pub etag: String,
    pub json: Vec<u8>,
}

#[derive(Default)]
pub struct BundleCache {
    cached: Mutex<Option<Cached>>,
}

struct Cached {
    /// The set these bundles were built from.
    set: Arc<PolicySet>,
    bundles: HashMap<RuntimeSelection, Arc<EncodedBundle>>,
}

impl BundleCache {
    /// The bundle for a pod in `namespace` with `labels` under `set`.
    pub fn get(
        &self,
        set: &Arc<PolicySet>,
        namespace: &str,
        labels: &BTreeMap<String, String>,
    ) -> Arc<EncodedBundle> {
        let selection = set.runtime_selection(namespace, labels);
        let mut cached = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        let current = match cached.as_mut() {
            Some(c) if Arc::ptr_eq(&c.set, set) && c.bundles.len() < MAX_SELECTIONS => c,
            _ => cached.insert(Cached {
                set: set.clone(),
                bundles: HashMap::new(),
            }),
        };
        if let Some(bundle) = current.bundles.get(&selection) {
            return bundle.clone();
        }
        let bundle = set.bundle_of(&selection);
        let encoded = Arc::new(EncodedBundle {
            json: serde_json::to_vec(&bundle).unwrap_or_default(),
            etag: bundle.etag,
        });
        current.bundles.insert(selection, encoded.clone());
        encoded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_common::wire::RuntimeBundle;

    fn set(yaml: &str) -> Arc<PolicySet> {
        let docs = palisade_engine::policy::split_yaml_documents(yaml)
            .into_iter()
            .map(|d| {
                let doc = palisade_common::policy::Document::from_yaml(d).unwrap();
                ("test".to_string(), doc)
            });
        Arc::new(PolicySet::from_documents(docs).unwrap())
    }

    const POLICIES: &str = "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {name: web}\nspec:\n  selector: {podLabels: {app: web}}\n  runtime: {deniedProcesses: [nc]}\n";

    #[test]
    fn pods_of_one_selection_share_one_encoding_and_a_new_set_starts_over() {
        let cache = BundleCache::default();
        let first = set(POLICIES);
        let labels = |app: &str, pod: &str| {
            BTreeMap::from([("app".into(), app.into()), ("pod".into(), pod.into())])
        };
        let a = cache.get(&first, "shop", &labels("web", "a"));
        let b = cache.get(&first, "shop", &labels("web", "b"));
        assert!(Arc::ptr_eq(&a, &b), "one selection, one encoding");
        let other = cache.get(&first, "shop", &labels("db", "c"));
        assert_ne!(other.etag, a.etag);

        // What is sent is what the set itself says the pod's bundle is.
        let sent: RuntimeBundle = serde_json::from_slice(&a.json).unwrap();
        assert_eq!(sent, first.runtime_bundle("shop", &labels("web", "a")));
        assert_eq!(sent.etag, a.etag);

        let second = set(&POLICIES.replace("[nc]", "[nc, curl]"));
        let after = cache.get(&second, "shop", &labels("web", "a"));
        assert_ne!(
            after.etag, a.etag,
            "a new set is never answered from the old"
        );
        let sent: RuntimeBundle = serde_json::from_slice(&after.json).unwrap();
        assert_eq!(sent.policies[0].rules.denied_processes, ["nc", "curl"]);
    }
}
