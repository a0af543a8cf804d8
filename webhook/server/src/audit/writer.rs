//! Sends reports to the apiserver: at most one write per changed
//! namespace per flush, none when the rendered report is what was last
//! written, and a delete when a namespace's findings are gone.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeSet, HashMap};
use std::hash::{Hash, Hasher};

use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};

use super::inventory::Inventory;
use super::report::{Limits, REPORT_LABEL, REPORT_NAME};
use crate::metrics::{AuditWrite, Metrics};
use crate::service::reports::resource;

/// Field manager of the audit's server-side applies.
const FIELD_MANAGER: &str = "palisade-audit";

pub struct Writer {
    client: kube::Client,
    limits: Limits,
    /// Hash of the report last written per namespace; `None` for a report
    /// found at start whose content is unknown.
    written: HashMap<String, Option<u64>>,
}

impl Writer {
    pub fn new(client: kube::Client, limits: Limits) -> Self {
        Self {
            client,
            limits,
            written: HashMap::new(),
        }
    }

    /// Namespaces holding an admission report from an earlier leader: each
    /// is rewritten or deleted at the first flush, so none goes stale.
    pub async fn adopt_existing(&mut self) -> Result<BTreeSet<String>, kube::Error> {
        let api: Api<DynamicObject> = Api::all_with(self.client.clone(), &resource());
        let params = ListParams::default().labels(&format!("{REPORT_LABEL}=admission"));
        let existing = api.list_metadata(&params).await?;
        let namespaces: BTreeSet<String> = existing
            .items
            .into_iter()
            .filter(|r| r.metadata.name.as_deref() == Some(REPORT_NAME))
            .filter_map(|r| r.metadata.namespace)
            .collect();
        for namespace in &namespaces {
            self.written.insert(namespace.clone(), None);
        }
        Ok(namespaces)
    }

    /// Writes the report of every namespace in `namespaces` that changed;
    /// a failed write is marked for the next flush.
    pub async fn flush(
        &mut self,
        inventory: &mut Inventory,
        namespaces: BTreeSet<String>,
        metrics: &Metrics,
    ) {
        for namespace in namespaces {
            let outcome = match inventory.report(&namespace, self.limits) {
                Some(report) => self.apply(&namespace, &report).await,
                None => self.delete(&namespace).await,
            };
            match outcome {
                Ok(Some(write)) => metrics.count_audit_write(write),
                Ok(None) => {}
                Err(e) => {
                    metrics.count_audit_write(AuditWrite::Failed);
                    tracing::warn!(namespace, error = %e, "cannot write the admission PolicyReport; retrying at the next flush");
                    inventory.mark_dirty(namespace);
                }
            }
        }
    }

    async fn apply(
        &mut self,
        namespace: &str,
        report: &serde_json::Value,
    ) -> Result<Option<AuditWrite>, kube::Error> {
        let mut hasher = DefaultHasher::new();
        report.to_string().hash(&mut hasher);
        let hash = hasher.finish();
        if self.written.get(namespace) == Some(&Some(hash)) {
            return Ok(None);
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource());
        api.patch(
            REPORT_NAME,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(report),
        )
        .await?;
        self.written.insert(namespace.to_string(), Some(hash));
        Ok(Some(AuditWrite::Apply))
    }

    async fn delete(&mut self, namespace: &str) -> Result<Option<AuditWrite>, kube::Error> {
        if !self.written.contains_key(namespace) {
            return Ok(None);
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource());
        match api.delete(REPORT_NAME, &DeleteParams::default()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e),
        }
        self.written.remove(namespace);
        Ok(Some(AuditWrite::Delete))
    }
}
