//! `resources/required`: every container sets the listed requests and
//! limits, or the pod sets them at pod level.

use palisade_common::policy::RequiredResources;

use super::RuleId;
use crate::policy::pod::PodSpec;
use crate::policy::Finding;

/// A finding for each required resource a container leaves unset.
pub(crate) fn check(required: &RequiredResources, spec: &PodSpec) -> Vec<Finding> {
    let mut out = Vec::new();
    let lists = [
        (
            "spec.initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("spec.containers", spec.containers.as_slice()),
    ];
    for (list, containers) in lists {
        for (i, c) in containers.iter().enumerate() {
            let res = c.resources.as_ref();
            for (section, names, present) in [
                (
                    "limits",
                    &required.limits,
                    res.and_then(|r| r.limits.as_ref()),
                ),
                (
                    "requests",
                    &required.requests,
                    res.and_then(|r| r.requests.as_ref()),
                ),
            ] {
                // A pod-level value covers containers without their own
                // (the injector leaves those resources to the pod).
                let pod_level = spec.resources.as_ref().and_then(|r| match section {
                    "limits" => r.limits.as_ref(),
                    _ => r.requests.as_ref(),
                });
                for name in names {
                    if !present.is_some_and(|m| m.contains_key(name))
                        && !pod_level.is_some_and(|m| m.contains_key(name))
                    {
                        out.push(Finding {
                            rule: RuleId::RequiredResources.to_string(),
                            path: format!("{list}[{i}].resources.{section}.{name}"),
                            message: format!("container {:?} must set {section}.{name}", c.name),
                        });
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;
    use serde_json::json;

    use super::*;

    fn required() -> RequiredResources {
        RequiredResources {
            limits: vec!["memory".into()],
            requests: vec!["cpu".into()],
        }
    }

    #[test]
    fn each_missing_resource_is_named_at_its_field() {
        let spec = PodSpec::deserialize(json!({"containers": [
            {"name": "app", "resources": {"limits": {"memory": "1Gi"}}}
        ]}))
        .unwrap();
        let paths: Vec<String> = check(&required(), &spec)
            .into_iter()
            .map(|f| f.path)
            .collect();
        assert_eq!(paths, ["spec.containers[0].resources.requests.cpu"]);
    }

    #[test]
    fn pod_level_resources_cover_containers_without_their_own() {
        let spec = PodSpec::deserialize(json!({
            "resources": {"limits": {"memory": "1Gi"}, "requests": {"cpu": "1"}},
            "containers": [{"name": "app"}]
        }))
        .unwrap();
        assert!(check(&required(), &spec).is_empty());
    }
}
