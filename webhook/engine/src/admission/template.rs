//! Where the pod template lives in each pod-bearing kind, so mutation and
//! validation work on Pods, Deployments, CronJobs... alike.

/// Location of the pod template (an object with `metadata` and `spec`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TemplateLocation {
    /// JSON pointer from the object root; empty for a Pod itself.
    pub pointer: &'static str,
    /// Field-path prefix used in messages; empty for a Pod.
    pub field_prefix: &'static str,
}

impl TemplateLocation {
    /// Field path of `field` (e.g. `spec.containers[0].image`) in the object.
    pub fn field(&self, field: &str) -> String {
        if self.field_prefix.is_empty() {
            field.to_string()
        } else {
            format!("{}.{field}", self.field_prefix)
        }
    }
}

const POD: TemplateLocation = TemplateLocation {
    pointer: "",
    field_prefix: "",
};
const WORKLOAD: TemplateLocation = TemplateLocation {
    pointer: "/spec/template",
    field_prefix: "spec.template",
};
const CRONJOB: TemplateLocation = TemplateLocation {
    pointer: "/spec/jobTemplate/spec/template",
    field_prefix: "spec.jobTemplate.spec.template",
};
const POD_TEMPLATE: TemplateLocation = TemplateLocation {
    pointer: "/template",
    field_prefix: "template",
};

/// The template location for a kind (by API group and kind), or `None` for
/// kinds that carry no pod.
pub fn locate(group: &str, kind: &str) -> Option<TemplateLocation> {
    match (group, kind) {
        ("", "Pod") => Some(POD),
        ("", "PodTemplate") => Some(POD_TEMPLATE),
        ("", "ReplicationController")
        | ("apps", "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet")
        | ("batch", "Job") => Some(WORKLOAD),
        ("batch", "CronJob") => Some(CRONJOB),
        _ => None,
    }
}

/// A container the injector added to a template: where it went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// `spec.initContainers` or `spec.containers`.
    pub list: &'static str,
    pub index: usize,
}

impl Inserted {
    /// The container named `name` in `injected` that `original` (the same
    /// pod template before injection) did not have.
    pub fn find(
        original: &serde_json::Value,
        injected: &serde_json::Value,
        name: &str,
    ) -> Option<Self> {
        let names = |template: &serde_json::Value, list: &str| -> Vec<String> {
            template
                .pointer(&format!("/spec/{list}"))
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
                .map(|c| {
                    c.get("name")
                        .and_then(|n| n.as_str())
                        .unwrap_or_default()
                        .to_string()
                })
                .collect()
        };
        [
            ("initContainers", "spec.initContainers"),
            ("containers", "spec.containers"),
        ]
        .into_iter()
        .find_map(|(key, list)| {
            if names(original, key).iter().any(|n| n == name) {
                return None;
            }
            let index = names(injected, key).iter().position(|n| n == name)?;
            Some(Inserted { list, index })
        })
    }
}

/// `path` (relative to the pod template) as the user's manifest has it: a
/// workload's template is judged with the enforcer added, so containers
/// after it moved one place; messages name the place the user wrote. The
/// enforcer's own path is left as injection made it.
pub fn manifest_path(path: &str, inserted: Option<Inserted>) -> String {
    let Some(inserted) = inserted else {
        return path.to_string();
    };
    let moved = path
        .strip_prefix(inserted.list)
        .and_then(|rest| rest.strip_prefix('['))
        .and_then(|rest| {
            let (index, tail) = rest.split_once(']')?;
            let index: usize = index.parse().ok()?;
            (index > inserted.index).then(|| format!("{}[{}]{tail}", inserted.list, index - 1))
        });
    moved.unwrap_or_else(|| path.to_string())
}

/// Kind and group from an `apiVersion` string (`apps/v1` -> `apps`).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_the_place_the_user_wrote() {
        let original = serde_json::json!({"spec": {
            "initContainers": [{"name": "setup"}],
            "containers": [{"name": "app"}]}});
        let injected = serde_json::json!({"spec": {
            "initContainers": [{"name": "palisade-enforcer"}, {"name": "setup"}],
            "containers": [{"name": "app"}]}});
        let inserted = Inserted::find(&original, &injected, "palisade-enforcer");
        assert_eq!(
            inserted,
            Some(Inserted {
                list: "spec.initContainers",
                index: 0
            })
        );
        let path = |p| manifest_path(p, inserted);
        assert_eq!(
            path("spec.initContainers[1].image"),
            "spec.initContainers[0].image"
        );
        assert_eq!(
            path("spec.initContainers[0].image"),
            "spec.initContainers[0].image"
        );
        assert_eq!(path("spec.containers[0].image"), "spec.containers[0].image");
        assert_eq!(path("spec.initContainers[12]"), "spec.initContainers[11]");
        assert_eq!(path("spec.hostNetwork"), "spec.hostNetwork");
        // A manifest that carries the enforcer itself: nothing was inserted.
        assert_eq!(
            Inserted::find(&injected, &injected, "palisade-enforcer"),
            None
        );
        assert_eq!(
            manifest_path("spec.initContainers[1]", None),
            "spec.initContainers[1]"
        );
    }

    #[test]
    fn every_pod_bearing_kind_is_located() {
        assert_eq!(locate("", "Pod").unwrap().field("spec"), "spec");
        assert_eq!(
            locate("apps", "Deployment")
                .unwrap()
                .field("spec.containers[0]"),
            "spec.template.spec.containers[0]"
        );
        assert_eq!(
            locate("batch", "CronJob").unwrap().pointer,
            "/spec/jobTemplate/spec/template"
        );
        assert!(locate("", "ConfigMap").is_none());
        assert_eq!(group_of("apps/v1"), "apps");
        assert_eq!(group_of("v1"), "");
    }
}
