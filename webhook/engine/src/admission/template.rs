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

/// Kind and group from an `apiVersion` string (`apps/v1` -> `apps`).
pub fn group_of(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

#[cfg(test)]
mod tests {
    use super::*;

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
