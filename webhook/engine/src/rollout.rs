//! Whether a running pod has the current enforcer, why not, and whether a
//! restart would change that: the decisions behind `palisade status`,
//! apart from the apiserver calls that gather the facts.
//!
//! Labelling a namespace changes nothing for pods already running (the
//! injector only sees pods being created), which is the first thing users
//! of every injector trip over; this module says so per pod.

use std::collections::BTreeMap;

use palisade_common::STATUS_ANNOTATION;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::admission::enforcer::{Claim, EnforcerIdentity};
use crate::admission::mutate::{skip_reason, PodShape};
use crate::admission::reason::SkipReason;

/// What is known about the pod's namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NamespaceFacts {
    /// Labelled `palisade.dev/inject=enabled`.
    pub opted_in: bool,
    /// Left alone by the webhooks (`admission.excluded_namespaces`).
    pub excluded: bool,
    /// When the opt-in label was last set (from the namespace's managed
    /// fields), in milliseconds since the epoch.
    pub opted_in_since_ms: Option<i64>,
}

/// Why a pod runs without the enforcer (serialised as [`Missing::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missing {
    /// The namespace is not labelled `palisade.dev/inject=enabled`.
    NamespaceNotOptedIn,
    /// The namespace is one the webhooks never touch.
    NamespaceExcluded,
    /// The pod opts out, or its spec rules the enforcer out (hostNetwork,
    /// hostPID, Windows): a restart changes nothing.
    Skipped(SkipReason),
    /// Created before the namespace was labelled: a restart injects it.
    CreatedBeforeOptIn,
    /// Created in an opted-in namespace without going through the webhook
    /// (it was down and `failurePolicy: Ignore` let the pod in).
    MissedAtCreation,
    /// A container takes the enforcer's name with another image: no
    /// enforcer runs, and a restart changes nothing.
    Impostor,
}

/// What a pod is judged against: the webhook's settings and release.
#[derive(Debug, Clone)]
pub struct Expected {
    pub enforcer: EnforcerIdentity,
    /// The injector's release (its status annotations carry it).
    pub version: String,
    pub skip_host_network: bool,
}

/// The pod as `palisade status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase", tag = "state")]
pub enum Injection {
    Injected {
        /// The release that injected it (from the status annotation).
        version: String,
        /// App containers started under `palisade-launch`.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        confined: Vec<String>,
        /// App containers running without prevention, and why.
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        unconfined: BTreeMap<String, String>,
    },
    NotInjected {
        reason: Missing,
    },
}

/// The verdict on one pod.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Assessment {
    pub injection: Injection,
    /// Why restarting the pod's workload would bring it up to date, if it
    /// would.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
}

/// The status annotation's fields read here (written by `mutate`).
#[derive(Debug, Default, Deserialize)]
struct StatusAnnotation {
    #[serde(default)]
    version: String,
    #[serde(default)]
    prevention: Option<PreventionStatus>,
}

#[derive(Debug, Default, Deserialize)]
struct PreventionStatus {
    #[serde(default)]
    confined: Vec<String>,
    #[serde(default)]
    unconfined: BTreeMap<String, String>,
}

/// Judges `pod` (a Pod object as the apiserver returns it).
pub fn assess(pod: &Value, namespace: &NamespaceFacts, expected: &Expected) -> Assessment {
    let current_version = expected.version.as_str();
    let annotation = pod
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(STATUS_ANNOTATION))
        .and_then(Value::as_str)
        .and_then(|text| serde_json::from_str::<StatusAnnotation>(text).ok());
    let claim = enforcer_claim(pod, &expected.enforcer);
    if claim == Some(Claim::Impostor) {
        return Assessment {
            injection: Injection::NotInjected {
                reason: Missing::Impostor,
            },
            restart: None,
        };
    }
    if claim == Some(Claim::Genuine) {
        let status = annotation.unwrap_or_default();
        let prevention = status.prevention.unwrap_or_default();
        let restart = (status.version != current_version).then(|| {
            let had = if status.version.is_empty() {
                "an unknown release"
            } else {
                status.version.as_str()
            };
            format!("its enforcer is from {had}, not {current_version}")
        });
        return Assessment {
            injection: Injection::Injected {
                version: status.version,
                confined: prevention.confined,
                unconfined: prevention.unconfined,
            },
            restart,
        };
    }
    let shape: PodShape = serde_json::from_value(pod.clone()).unwrap_or_default();
    let reason = if namespace.excluded {
        Missing::NamespaceExcluded
    } else if !namespace.opted_in {
        Missing::NamespaceNotOptedIn
    } else if let Some(skip) = skip_reason(&shape, expected.skip_host_network) {
        Missing::Skipped(skip)
    } else {
        let created = pod
            .pointer("/metadata/creationTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_millis() as i64);
        match (created, namespace.opted_in_since_ms) {
            (Some(created), Some(since)) if created < since => Missing::CreatedBeforeOptIn,
            _ => Missing::MissedAtCreation,
        }
    };
    let restart = match reason {
        Missing::CreatedBeforeOptIn => Some("created before the namespace was labelled".into()),
        Missing::MissedAtCreation => {
            Some("created without the webhook (down at the time, failurePolicy Ignore)".into())
        }
        _ => None,
    };
    Assessment {
        injection: Injection::NotInjected { reason },
        restart,
    }
}

/// What the container named like the enforcer is, if there is one: the
/// name alone (or the status annotation, which the pod's author can write)
/// proves nothing.
fn enforcer_claim(pod: &Value, identity: &EnforcerIdentity) -> Option<Claim> {
    ["/spec/containers", "/spec/initContainers"]
        .iter()
        .filter_map(|p| pod.pointer(p).and_then(Value::as_array))
        .flatten()
        .find_map(|c| {
            identity.claim(
                c.get("name").and_then(Value::as_str),
                c.get("image").and_then(Value::as_str),
            )
        })
}

/// When `label` was last set on an object, from its managed fields
/// (`metadata.managedFields[].fieldsV1`), in milliseconds since the epoch.
pub fn label_set_at(object: &Value, label: &str) -> Option<i64> {
    let key = format!("f:{label}");
    object
        .pointer("/metadata/managedFields")?
        .as_array()?
        .iter()
        .filter(|entry| {
            entry
                .pointer("/fieldsV1/f:metadata/f:labels")
                .and_then(|labels| labels.get(&key))
                .is_some()
        })
        .filter_map(|entry| entry.get("time")?.as_str())
        .filter_map(|t| humantime::parse_rfc3339(t).ok())
        .filter_map(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .max()
}

impl Serialize for Missing {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl Missing {
    pub fn as_str(self) -> &'static str {
        match self {
            Missing::NamespaceNotOptedIn => "namespace-not-opted-in",
            Missing::NamespaceExcluded => "namespace-excluded",
            Missing::Skipped(reason) => reason.as_str(),
            Missing::CreatedBeforeOptIn => "created-before-opt-in",
            Missing::MissedAtCreation => "missed-at-creation",
            Missing::Impostor => "impostor",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_common::ENFORCER_CONTAINER;
    use serde_json::json;

    fn opted_in_at(ms: i64) -> NamespaceFacts {
        NamespaceFacts {
            opted_in: true,
            excluded: false,
            opted_in_since_ms: Some(ms),
        }
    }

    fn pod(created: &str, extra: Value) -> Value {
        let mut pod = json!({
            "metadata": {"name": "p", "creationTimestamp": created, "annotations": {}},
            "spec": {"containers": [{"name": "app", "image": "app:1"}]}
        });
        if let (Some(p), Some(e)) = (pod.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                p.insert(k.clone(), v.clone());
            }
        }
        pod
    }

    const NOON: i64 = 1_800_000_000_000; // 2027-01-15T08:00:00Z
    const ENFORCER_IMAGE: &str = "ghcr.io/palisade-dev/palisade-enforcer:0.1.0";

    fn expected() -> Expected {
        Expected {
            enforcer: EnforcerIdentity::new(ENFORCER_IMAGE),
            version: "0.1.0".into(),
            skip_host_network: true,
        }
    }

    #[test]
    fn a_pod_older_than_the_label_needs_a_restart_a_newer_one_was_missed() {
        let old = assess(
            &pod("2027-01-01T00:00:00Z", json!({})),
            &opted_in_at(NOON),
            &expected(),
        );
        assert_eq!(
            old.injection,
            Injection::NotInjected {
                reason: Missing::CreatedBeforeOptIn
            }
        );
        assert!(old
            .restart
            .unwrap()
            .contains("before the namespace was labelled"));
        let new = assess(
            &pod("2027-02-01T00:00:00Z", json!({})),
            &opted_in_at(NOON),
            &expected(),
        );
        assert_eq!(
            new.injection,
            Injection::NotInjected {
                reason: Missing::MissedAtCreation
            }
        );
        assert!(new.restart.is_some());
    }

    #[test]
    fn spec_and_namespace_reasons_are_not_fixed_by_a_restart() {
        let host_pid = pod(
            "2027-01-01T00:00:00Z",
            json!({"spec": {"hostPID": true, "containers": []}}),
        );
        let verdict = assess(&host_pid, &opted_in_at(0), &expected());
        assert_eq!(
            verdict.injection,
            Injection::NotInjected {
                reason: Missing::Skipped(SkipReason::HostPid)
            }
        );
        assert_eq!(verdict.restart, None);
        let plain = pod("2027-01-01T00:00:00Z", json!({}));
        let off = assess(&plain, &NamespaceFacts::default(), &expected());
        assert_eq!(
            off.injection,
            Injection::NotInjected {
                reason: Missing::NamespaceNotOptedIn
            }
        );
        assert_eq!(off.restart, None);
    }

    #[test]
    fn an_injected_pod_from_another_release_needs_a_restart() {
        let injected = |version: &str| {
            let status = format!(
                r#"{{"version":"{version}","sidecar":"palisade-enforcer","native":true,"prevention":{{"confined":["app"],"unconfined":{{"proxy":"image-lookup-failed"}}}}}}"#
            );
            pod(
                "2027-01-01T00:00:00Z",
                json!({
                    "metadata": {"annotations": {STATUS_ANNOTATION: status}},
                    "spec": {"initContainers": [{"name": ENFORCER_CONTAINER, "image": ENFORCER_IMAGE}], "containers": [{"name": "app"}]}
                }),
            )
        };
        let current = assess(&injected("0.1.0"), &opted_in_at(0), &expected());
        assert_eq!(current.restart, None);
        assert_eq!(
            current.injection,
            Injection::Injected {
                version: "0.1.0".into(),
                confined: vec!["app".into()],
                unconfined: [("proxy".to_string(), "image-lookup-failed".to_string())].into(),
            }
        );
        let old = assess(&injected("0.0.9"), &opted_in_at(0), &expected());
        assert_eq!(
            old.restart.as_deref(),
            Some("its enforcer is from 0.0.9, not 0.1.0")
        );
    }

    #[test]
    fn a_container_posing_as_the_enforcer_is_no_enforcer() {
        let status = r#"{"version":"0.1.0","prevention":{"confined":["app"]}}"#;
        let impostor = pod(
            "2027-01-01T00:00:00Z",
            json!({
                "metadata": {"annotations": {STATUS_ANNOTATION: status}},
                "spec": {"containers": [{"name": "app"}, {"name": ENFORCER_CONTAINER, "image": "busybox"}]}
            }),
        );
        let verdict = assess(&impostor, &opted_in_at(0), &expected());
        assert_eq!(
            verdict.injection,
            Injection::NotInjected {
                reason: Missing::Impostor
            }
        );
        assert_eq!(verdict.restart, None);
    }

    #[test]
    fn the_label_time_comes_from_the_managed_field_that_set_it() {
        let namespace = json!({"metadata": {"managedFields": [
            {"manager": "kubectl-create", "time": "2027-01-01T00:00:00Z",
             "fieldsV1": {"f:metadata": {"f:labels": {"f:team": {}}}}},
            {"manager": "kubectl-label", "time": "2027-01-15T08:00:00Z",
             "fieldsV1": {"f:metadata": {"f:labels": {"f:palisade.dev/inject": {}}}}}
        ]}});
        assert_eq!(label_set_at(&namespace, "palisade.dev/inject"), Some(NOON));
        assert_eq!(label_set_at(&namespace, "other"), None);
    }
}
