//! The audited workloads and what was found in each, by namespace. Pure:
//! the watch feeds it, the writer reads reports out of it. Only pod
//! templates are kept, not whole objects, so memory follows what policies
//! judge rather than what the apiserver stores (status, managed fields).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use palisade_engine::admission::template::TemplateLocation;
use serde_json::Value;

use super::report::{self, AuditResult, AuditedObject, Limits, ResourceRef, Summary};

/// Judges a pod template found at a location, in a namespace.
pub trait Judge {
    fn judge(
        &self,
        namespace: &str,
        template: &Value,
        location: TemplateLocation,
    ) -> Vec<AuditResult>;
}

impl<F> Judge for F
where
    F: Fn(&str, &Value, TemplateLocation) -> Vec<AuditResult>,
{
    fn judge(
        &self,
        namespace: &str,
        template: &Value,
        location: TemplateLocation,
    ) -> Vec<AuditResult> {
        self(namespace, template, location)
    }
}

/// A workload seen by the watch: its identity and its pod template.
#[derive(Debug, Clone)]
pub struct Workload {
    pub namespace: String,
    pub resource: ResourceRef,
    pub template: Value,
    pub location: TemplateLocation,
}

/// Kind and name within a namespace.
type Key = (String, String);

/// The kind name namespace changes come under.
pub const NAMESPACE_KIND: &str = "Namespace";

/// Which namespaces get a report: those carrying `key=value` (the
/// webhooks' opt-in label, so the audit covers what admission covers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamespaceLabel {
    pub key: String,
    pub value: String,
}

impl NamespaceLabel {
    pub fn new(key: &str, value: &str) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
        }
    }

    fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        labels.get(&self.key) == Some(&self.value)
    }
}

struct Entry {
    audited: AuditedObject,
    template: Value,
    location: TemplateLocation,
}

#[derive(Default)]
pub struct Inventory {
    namespaces: BTreeMap<String, BTreeMap<Key, Entry>>,
    /// Namespaces whose findings changed since the last [`Self::take_dirty`].
    dirty: BTreeSet<String>,
    /// Kinds being relisted (after a watch restart), with what was seen so
    /// far: what the relist does not show again is gone.
    relisting: BTreeMap<String, HashSet<(String, String)>>,
    /// `None`: every namespace is reported.
    scope: Option<NamespaceLabel>,
    /// Namespaces carrying the scope's label.
    selected: BTreeSet<String>,
}

impl Inventory {
    /// Reports only for namespaces labelled `scope` (all when `None`).
    pub fn scoped(scope: Option<NamespaceLabel>) -> Self {
        Self {
            scope,
            ..Self::default()
        }
    }

    fn in_scope(&self, namespace: &str) -> bool {
        self.scope.is_none() || self.selected.contains(namespace)
    }

    /// A namespace's labels, as its watch saw them: one that enters or
    /// leaves the scope gets its report written or deleted.
    pub fn namespace_labels(&mut self, namespace: &str, labels: &BTreeMap<String, String>) {
        if let Some(seen) = self.relisting.get_mut(NAMESPACE_KIND) {
            seen.insert((namespace.to_string(), String::new()));
        }
        let Some(scope) = &self.scope else { return };
        let changed = if scope.matches(labels) {
            self.selected.insert(namespace.to_string())
        } else {
            self.selected.remove(namespace)
        };
        if changed {
            self.dirty.insert(namespace.to_string());
        }
    }

    pub fn namespace_gone(&mut self, namespace: &str) {
        if self.selected.remove(namespace) {
            self.dirty.insert(namespace.to_string());
        }
    }

    /// Adds or updates a workload. Its template is judged again only if it
    /// changed (status updates cost nothing).
    pub fn upsert(&mut self, workload: Workload, judge: &impl Judge, now_secs: i64) {
        let kind = workload.resource.kind.clone();
        if let Some(seen) = self.relisting.get_mut(&kind) {
            seen.insert((workload.namespace.clone(), workload.resource.name.clone()));
        }
        let key = (kind, workload.resource.name.clone());
        let objects = self
            .namespaces
            .entry(workload.namespace.clone())
            .or_default();
        if let Some(entry) = objects.get_mut(&key) {
            if entry.template == workload.template && entry.location == workload.location {
                if entry.audited.resource != workload.resource {
                    entry.audited.resource = workload.resource;
                    if !entry.audited.results.is_empty() {
                        self.dirty.insert(workload.namespace);
                    }
                }
                return;
            }
        }
        let results = judge.judge(&workload.namespace, &workload.template, workload.location);
        let previous = objects.get(&key).map(|e| &e.audited.results);
        let changed = match previous {
            Some(previous) => *previous != results,
            None => !results.is_empty(),
        };
        let since_secs = match objects.get(&key) {
            Some(entry) if !changed => entry.audited.since_secs,
            _ => now_secs,
        };
        objects.insert(
            key,
            Entry {
                audited: AuditedObject {
                    resource: workload.resource,
                    results,
                    since_secs,
                },
                template: workload.template,
                location: workload.location,
            },
        );
        if changed {
            self.dirty.insert(workload.namespace);
        }
    }

    pub fn remove(&mut self, namespace: &str, kind: &str, name: &str) {
        let Some(objects) = self.namespaces.get_mut(namespace) else {
            return;
        };
        if let Some(entry) = objects.remove(&(kind.to_string(), name.to_string())) {
            if !entry.audited.results.is_empty() {
                self.dirty.insert(namespace.to_string());
            }
        }
        if objects.is_empty() {
            self.namespaces.remove(namespace);
        }
    }

    /// A watch of `kind` starts listing everything again.
    pub fn relist_started(&mut self, kind: &str) {
        self.relisting.insert(kind.to_string(), HashSet::new());
    }

    /// The relist of `kind` is complete: what it did not show was deleted
    /// while the watch was down.
    pub fn relist_done(&mut self, kind: &str) {
        let Some(seen) = self.relisting.remove(kind) else {
            return;
        };
        if kind == NAMESPACE_KIND {
            let gone: Vec<String> = self
                .selected
                .iter()
                .filter(|ns| !seen.contains(&((*ns).clone(), String::new())))
                .cloned()
                .collect();
            for namespace in gone {
                self.namespace_gone(&namespace);
            }
            return;
        }
        let gone: Vec<(String, String)> = self
            .namespaces
            .iter()
            .flat_map(|(namespace, objects)| {
                objects
                    .keys()
                    .filter(|(k, _)| k == kind)
                    .map(move |(_, name)| (namespace.clone(), name.clone()))
            })
            .filter(|key| !seen.contains(key))
            .collect();
        for (namespace, name) in gone {
            self.remove(&namespace, kind, &name);
        }
    }

    /// Judges every workload again (policies or exceptions changed).
    pub fn rejudge_all(&mut self, judge: &impl Judge, now_secs: i64) {
        for (namespace, objects) in &mut self.namespaces {
            for entry in objects.values_mut() {
                let results = judge.judge(namespace, &entry.template, entry.location);
                if results != entry.audited.results {
                    entry.audited.results = results;
                    entry.audited.since_secs = now_secs;
                    self.dirty.insert(namespace.clone());
                }
            }
        }
    }

    /// Namespaces whose report may have changed, once each.
    pub fn take_dirty(&mut self) -> BTreeSet<String> {
        std::mem::take(&mut self.dirty)
    }

    /// Marks a namespace for another try (its write failed).
    pub fn mark_dirty(&mut self, namespace: String) {
        self.dirty.insert(namespace);
    }

    /// The namespace's report, `None` when it has no findings or is out
    /// of scope.
    pub fn report(&self, namespace: &str, limits: Limits) -> Option<Value> {
        if !self.in_scope(namespace) {
            return None;
        }
        let objects = self.namespaces.get(namespace)?;
        report::build(namespace, objects.values().map(|e| &e.audited), limits)
    }

    /// Workloads audited.
    pub fn len(&self) -> usize {
        self.namespaces.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.namespaces.is_empty()
    }

    /// Every reported finding by outcome, for metrics.
    pub fn summary(&self) -> Summary {
        let mut summary = Summary::default();
        let in_scope = self
            .namespaces
            .iter()
            .filter(|(namespace, _)| self.in_scope(namespace));
        for entry in in_scope.flat_map(|(_, objects)| objects.values()) {
            for result in &entry.audited.results {
                summary.add(result.outcome);
            }
        }
        summary
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::report::Outcome;
    use palisade_engine::admission::template::locate;
    use serde_json::json;
    use std::cell::Cell;

    fn workload(namespace: &str, name: &str, image: &str) -> Workload {
        Workload {
            namespace: namespace.into(),
            resource: ResourceRef {
                api_version: "apps/v1".into(),
                kind: "Deployment".into(),
                name: name.into(),
                uid: format!("uid-{name}"),
            },
            template: json!({"spec": {"containers": [{"name": "app", "image": image}]}}),
            location: locate("apps", "Deployment").unwrap(),
        }
    }

    /// Finds `:latest` images, and counts its calls.
    struct LatestIsBad(Cell<usize>);

    impl Judge for LatestIsBad {
        fn judge(&self, _: &str, template: &Value, _: TemplateLocation) -> Vec<AuditResult> {
            self.0.set(self.0.get() + 1);
            let image = template["spec"]["containers"][0]["image"].as_str().unwrap();
            if image.ends_with(":latest") {
                vec![AuditResult {
                    policy: "no-latest".into(),
                    rule: "images/disallowedTags".into(),
                    path: "spec.template.spec.containers[0].image".into(),
                    message: "latest".into(),
                    outcome: Outcome::Fail,
                }]
            } else {
                Vec::new()
            }
        }
    }

    const LIMITS: Limits = Limits {
        max_results: 10,
        max_bytes: 1 << 20,
    };

    #[test]
    fn only_changed_findings_make_a_namespace_dirty() {
        let judge = LatestIsBad(Cell::new(0));
        let mut inventory = Inventory::default();
        inventory.upsert(workload("shop", "clean", "nginx:1.27"), &judge, 1);
        assert!(
            inventory.take_dirty().is_empty(),
            "nothing found, nothing to write"
        );
        inventory.upsert(workload("shop", "api", "nginx:latest"), &judge, 2);
        assert_eq!(inventory.take_dirty(), BTreeSet::from(["shop".to_string()]));
        let report = inventory.report("shop", LIMITS).unwrap();
        assert_eq!(report["results"][0]["resources"][0]["name"], "api");
        assert_eq!(report["results"][0]["timestamp"]["seconds"], 2);
        // A status update leaves the template alone: not judged again.
        let calls = judge.0.get();
        inventory.upsert(workload("shop", "api", "nginx:latest"), &judge, 3);
        assert_eq!(judge.0.get(), calls);
        assert!(inventory.take_dirty().is_empty());
        // Fixed: the namespace's report goes.
        inventory.upsert(workload("shop", "api", "nginx:1.27"), &judge, 4);
        assert_eq!(inventory.take_dirty().len(), 1);
        assert!(inventory.report("shop", LIMITS).is_none());
        assert_eq!(inventory.len(), 2);
    }

    #[test]
    fn deletions_and_relists_remove_workloads() {
        let judge = LatestIsBad(Cell::new(0));
        let mut inventory = Inventory::default();
        inventory.upsert(workload("a", "x", "nginx:latest"), &judge, 1);
        inventory.upsert(workload("b", "y", "nginx:latest"), &judge, 1);
        inventory.take_dirty();
        inventory.remove("a", "Deployment", "x");
        assert_eq!(inventory.take_dirty(), BTreeSet::from(["a".to_string()]));
        assert!(inventory.report("a", LIMITS).is_none());
        // A relist that no longer shows b/y: deleted while the watch was down.
        inventory.upsert(workload("a", "x", "nginx:latest"), &judge, 2);
        inventory.take_dirty();
        inventory.relist_started("Deployment");
        inventory.upsert(workload("a", "x", "nginx:latest"), &judge, 3);
        inventory.relist_done("Deployment");
        assert_eq!(inventory.take_dirty(), BTreeSet::from(["b".to_string()]));
        assert_eq!(inventory.len(), 1);
    }

    #[test]
    fn only_namespaces_with_the_label_are_reported() {
        let judge = LatestIsBad(Cell::new(0));
        let scope = NamespaceLabel::new("palisade.dev/inject", "enabled");
        let mut inventory = Inventory::scoped(Some(scope));
        inventory.upsert(workload("shop", "api", "nginx:latest"), &judge, 1);
        assert!(
            inventory.report("shop", LIMITS).is_none(),
            "not labelled (yet)"
        );
        inventory.take_dirty();
        let opted_in = BTreeMap::from([("palisade.dev/inject".to_string(), "enabled".to_string())]);
        inventory.namespace_labels("shop", &opted_in);
        assert_eq!(inventory.take_dirty().len(), 1);
        assert!(inventory.report("shop", LIMITS).is_some());
        assert_eq!(inventory.summary().fail, 1);
        // Labels seen again unchanged: nothing to write.
        inventory.namespace_labels("shop", &opted_in);
        assert!(inventory.take_dirty().is_empty());
        // The label is removed while the watch is down: the relist notices.
        inventory.relist_started(NAMESPACE_KIND);
        inventory.relist_done(NAMESPACE_KIND);
        assert_eq!(inventory.take_dirty().len(), 1);
        assert!(inventory.report("shop", LIMITS).is_none());
        assert_eq!(inventory.summary().fail, 0);
    }

    #[test]
    fn policy_changes_rejudge_everything() {
        let mut inventory = Inventory::default();
        inventory.upsert(
            workload("a", "x", "nginx:latest"),
            &LatestIsBad(Cell::new(0)),
            1,
        );
        inventory.take_dirty();
        let lenient = |_: &str, _: &Value, _: TemplateLocation| Vec::<AuditResult>::new();
        inventory.rejudge_all(&lenient, 5);
        assert_eq!(inventory.take_dirty().len(), 1);
        assert!(inventory.report("a", LIMITS).is_none());
        inventory.rejudge_all(&lenient, 6);
        assert!(
            inventory.take_dirty().is_empty(),
            "unchanged verdicts write nothing"
        );
        assert_eq!(inventory.summary().total(), 0);
    }
}
