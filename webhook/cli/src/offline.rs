//! Offline commands, like `istioctl kube-inject` and `kyverno apply`:
//! inject the enforcer into manifests, and check manifests against policies,
//! with the same code the webhooks run.

use std::collections::BTreeMap;

use serde_json::Value;

use palisade_engine::admission::mutate::LaunchFor;
use palisade_engine::admission::{template, Webhook};
use palisade_engine::policy::{split_yaml_documents, PolicySet, Violation};
use palisade_engine::settings::Settings;

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("document {index}: not valid YAML: {source}")]
    Yaml {
        index: usize,
        source: serde_yaml::Error,
    },
    #[error("document {index} ({kind} {name}): {message}")]
    Object {
        index: usize,
        kind: String,
        name: String,
        message: String,
    },
}

/// Every object in a multi-document YAML stream (`kind: List` unpacked).
fn objects(text: &str) -> Result<Vec<(usize, Value)>, OfflineError> {
    let mut out = Vec::new();
    for (index, doc) in split_yaml_documents(text).into_iter().enumerate() {
        let value: Value =
            serde_yaml::from_str(doc).map_err(|source| OfflineError::Yaml { index, source })?;
        match value.get("items").and_then(Value::as_array) {
            Some(items) if value.get("kind").and_then(Value::as_str) == Some("List") => {
                out.extend(items.iter().cloned().map(|item| (index, item)));
            }
            _ => out.push((index, value)),
        }
    }
    Ok(out)
}

fn describe(object: &Value) -> (String, String, Option<template::TemplateLocation>) {
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let location = template::locate(template::group_of(api_version), &kind);
    (kind, name, location)
}

/// The manifests with the enforcer injected into every pod template;
/// other objects pass through unchanged. With `policies`, those asking
/// for prevention that select an object (in its namespace, else
/// `namespace`) confine its apps.
pub fn inject(
    text: &str,
    settings: &Settings,
    policies: Option<&PolicySet>,
    namespace: &str,
) -> Result<String, OfflineError> {
    let injector = palisade_engine::admission::mutate::Injector::new(&settings.injection);
    let mut docs = Vec::new();
    for (index, mut object) in objects(text)? {
        let (kind, name, location) = describe(&object);
        let namespace = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(namespace)
            .to_string();
        if let Some(location) = location {
            if let Some(template) = object.pointer_mut(location.pointer) {
                let launch = |labels: &BTreeMap<String, String>| {
                    policies.and_then(|p| p.launch_policy(&namespace, labels))
                };
                let prevention = policies.is_some_and(PolicySet::has_prevention);
                injector
                    .inject(template, prevention.then_some(&launch as &LaunchFor))
                    .map_err(|e| OfflineError::Object {
                        index,
                        kind: kind.clone(),
                        name: name.clone(),
                        message: e.to_string(),
                    })?;
            }
        }
        docs.push(serde_yaml::to_string(&object).unwrap_or_default());
    }
    Ok(docs.join("---\n"))
}

/// One object's violations, for `palisade check`.
pub struct CheckedObject {
    /// The namespace it was judged in.
    pub namespace: String,
    pub kind: String,
    pub name: String,
    pub violations: Vec<Violation>,
}

/// Violations of `policies` by every pod-bearing object, as if admitted
/// into `namespace` (or the object's own namespace).
pub fn check(
    text: &str,
    namespace: &str,
    settings: &Settings,
    policies: &PolicySet,
) -> Result<Vec<CheckedObject>, OfflineError> {
    let webhook = Webhook::new(settings);
    let mut out = Vec::new();
    for (index, object) in objects(text)? {
        let (kind, name, location) = describe(&object);
        let (Some(location), Some(template)) =
            (location, location.and_then(|l| object.pointer(l.pointer)))
        else {
            continue;
        };
        let ns = object
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or(namespace);
        let violations = webhook
            .evaluate_template(template, location, ns, policies)
            .map_err(|message| OfflineError::Object {
                index,
                kind: kind.clone(),
                name: name.clone(),
                message,
            })?;
        out.push(CheckedObject {
            namespace: ns.to_string(),
            kind,
            name,
            violations,
        });
    }
    Ok(out)
}

/// Whether any violation would deny admission (the exit status):
/// enforce mode, not covered by an active PolicyException.
pub fn has_enforced(results: &[CheckedObject]) -> bool {
    results
        .iter()
        .flat_map(|r| &r.violations)
        .any(Violation::denies)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFESTS: &str = "apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {a: b}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: 'nginx:latest'}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: nightly}
spec:
  schedule: '@daily'
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: job, image: 'registry.k8s.io/busybox:1.36'}]
";

    #[test]
    fn injects_every_pod_template_and_keeps_other_objects() {
        let out = inject(MANIFESTS, &Settings::default(), None, "default").unwrap();
        let docs: Vec<Value> = split_yaml_documents(&out)
            .into_iter()
            .map(|d| serde_yaml::from_str(d).unwrap())
            .collect();
        assert_eq!(docs.len(), 3);
        assert_eq!(docs[0]["data"]["a"], "b");
        let names = |v: &Value| -> Vec<String> {
            v.as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect()
        };
        // The enforcer is a native sidecar: the first init container.
        let template = &docs[1]["spec"]["template"]["spec"];
        assert_eq!(names(&template["containers"]), ["api"]);
        assert_eq!(names(&template["initContainers"]), ["palisade-enforcer"]);
        let job = &docs[2]["spec"]["jobTemplate"]["spec"]["template"]["spec"];
        assert_eq!(names(&job["initContainers"]), ["palisade-enforcer"]);
        assert_eq!(job["initContainers"][0]["restartPolicy"], "Always");
        // Injecting the output again changes nothing.
        assert_eq!(
            inject(&out, &Settings::default(), None, "default").unwrap(),
            out
        );
    }

    #[test]
    fn check_reports_violations_with_template_paths() {
        let policies = PolicySet::load_dir(
            &std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies"),
        )
        .unwrap();
        let results = check(MANIFESTS, "default", &Settings::default(), &policies).unwrap();
        assert_eq!(results.len(), 2, "ConfigMap skipped");
        assert!(results[0]
            .violations
            .iter()
            .any(|v| v.rule == "images/disallowedTags"
                && v.path == "spec.template.spec.containers[0].image"));
        assert!(has_enforced(&results));
        assert!(
            results[1]
                .violations
                .iter()
                .all(|v| v.mode == palisade_common::policy::Mode::Audit),
            "{:?}",
            results[1]
                .violations
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn bad_yaml_names_the_document() {
        let err = inject("a: 1\n---\nb: [\n", &Settings::default(), None, "default")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("document 1"), "{err}");
    }
}
