//! The decisions: whether a pod gets the enforcer, and with what resources.
//! Pure functions of the pod's view and the settings.

use std::borrow::Cow;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use palisade_common::INJECT_ANNOTATION;

use super::view::PodShape;
use super::{MutateError, Section, OS_LABEL, RESOURCE_OVERRIDES};
use crate::admission::reason::SkipReason;
use crate::quantity::{is_valid_quantity, Quantity};
use crate::settings::ResourceDefaults;

/// What the skip decision reads from a pod.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkipFacts {
    /// `palisade.dev/inject: "false"`.
    pub opted_out: bool,
    /// `spec.os.name: windows`, or a `kubernetes.io/os: windows` node
    /// selector (the older way, still common): the Linux enforcer image
    /// cannot run there, and as a native sidecar it would hold the app back.
    pub windows: bool,
    pub host_pid: bool,
    pub host_network: bool,
}

/// Why a pod gets no enforcer, if it gets none. Pure, and shared by the
/// injector and `requireEnforcer`, so both decide alike.
pub fn decide_skip(facts: SkipFacts, skip_host_network: bool) -> Option<SkipReason> {
    if facts.opted_out {
        Some(SkipReason::OptedOut)
    } else if facts.windows {
        Some(SkipReason::Windows)
    } else if facts.host_pid {
        Some(SkipReason::HostPid)
    } else if skip_host_network && facts.host_network {
        Some(SkipReason::HostNetwork)
    } else {
        None
    }
}

/// [`decide_skip`] for the mutation's view of a pod.
pub fn skip_reason(pod: &PodShape, skip_host_network: bool) -> Option<SkipReason> {
    let spec = pod.spec();
    let facts = SkipFacts {
        opted_out: pod.annotation(INJECT_ANNOTATION) == Some("false"),
        windows: spec.os.as_ref().and_then(|os| os.name.as_deref()) == Some("windows")
            || spec
                .node_selector
                .as_ref()
                .and_then(|s| s.get(OS_LABEL))
                .map(String::as_str)
                == Some("windows"),
        host_pid: spec.host_pid == Some(true),
        host_network: spec.host_network == Some(true),
    };
    decide_skip(facts, skip_host_network)
}

/// Name for an injected volume: `base`, or `base-1`, `base-2`... the first
/// one no volume of the pod (nor one chosen earlier) has.
pub(super) fn unique_name(base: &'static str, taken: &BTreeSet<String>) -> Cow<'static, str> {
    if !taken.contains(base) {
        return Cow::Borrowed(base);
    }
    (1..)
        .map(|n| format!("{base}-{n}"))
        .find(|name| !taken.contains(name))
        .map(Cow::Owned)
        .unwrap_or(Cow::Borrowed(base))
}

/// The limit to default for a container that requests `request` of a
/// resource but sets no limit: the default limit, raised to the request
/// when that is larger (so the container stays valid and the
/// `resource-limits` policy still finds a limit).
pub(super) fn limit_for_request<'a>(
    request: Option<Cow<'a, str>>,
    default_limit: &'a str,
) -> Cow<'a, str> {
    match request {
        Some(request) if Quantity::compare(&request, default_limit) == Some(Ordering::Greater) => {
            request
        }
        _ => Cow::Borrowed(default_limit),
    }
}

/// The enforcer's resources: the configured ones with the pod's annotations
/// merged in, made consistent. An annotation wins over a default it
/// contradicts: an annotated request above the default limit raises the
/// limit to it, an annotated limit below the default request lowers the
/// request to it. Annotations that contradict each other (request above
/// limit, both annotated) are refused. Resources the pod sets at pod level
/// are left out (the enforcer shares the pod's budget).
pub fn sidecar_resources(
    defaults: &ResourceDefaults,
    annotation: impl Fn(&str) -> Option<String>,
    pod_level_sets: impl Fn(&str) -> bool,
) -> Result<ResourceDefaults, MutateError> {
    let mut resources = defaults.clone();
    let mut annotated: BTreeMap<(&str, Section), &'static str> = BTreeMap::new();
    for (key, section, name) in RESOURCE_OVERRIDES {
        let Some(value) = annotation(key) else {
            continue;
        };
        if !is_valid_quantity(&value) {
            return Err(MutateError::BadOverride {
                annotation: key.into(),
                value,
            });
        }
        let map = match section {
            Section::Requests => &mut resources.requests,
            Section::Limits => &mut resources.limits,
        };
        map.insert(name.into(), value);
        annotated.insert((name, section), key);
    }
    let names: BTreeSet<String> = resources.requests.keys().cloned().collect();
    for name in names {
        let (Some(request), Some(limit)) =
            (resources.requests.get(&name), resources.limits.get(&name))
        else {
            continue;
        };
        if Quantity::compare(request, limit) != Some(Ordering::Greater) {
            continue;
        }
        let request_key = annotated.get(&(name.as_str(), Section::Requests)).copied();
        let limit_key = annotated.get(&(name.as_str(), Section::Limits)).copied();
        match (request_key, limit_key) {
            (Some(request_annotation), Some(limit_annotation)) => {
                return Err(MutateError::ConflictingOverrides {
                    request_annotation,
                    request: request.clone(),
                    limit_annotation,
                    limit: limit.clone(),
                })
            }
            (None, Some(_)) => {
                let limit = limit.clone();
                resources.requests.insert(name, limit);
            }
            // An annotated request (or, with unvalidated settings, two
            // defaults) raises the limit.
            _ => {
                let request = request.clone();
                resources.limits.insert(name, request);
            }
        }
    }
    resources.requests.retain(|name, _| !pod_level_sets(name));
    resources.limits.retain(|name, _| !pod_level_sets(name));
    Ok(resources)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::InjectionSettings;

    #[test]
    fn limit_for_request_is_the_larger_of_request_and_default() {
        assert_eq!(limit_for_request(Some("2Gi".into()), "512Mi"), "2Gi");
        assert_eq!(limit_for_request(Some("0.5Gi".into()), "512Mi"), "512Mi");
        assert_eq!(limit_for_request(Some("100m".into()), "1"), "1");
        assert_eq!(limit_for_request(None, "1"), "1");
        assert_eq!(
            limit_for_request(Some("garbage".into()), "1"),
            "1",
            "the apiserver refuses the pod for its own quantity"
        );
    }

    fn annotated(pairs: &[(&str, &str)]) -> Result<ResourceDefaults, MutateError> {
        let defaults = InjectionSettings::default().sidecar_resources;
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        sidecar_resources(&defaults, |k| map.get(k).cloned(), |_| false)
    }

    #[test]
    fn an_annotated_request_above_the_default_limit_raises_the_limit() {
        let r = annotated(&[("palisade.dev/sidecar-memory", "100Mi")]).unwrap();
        assert_eq!(r.requests["memory"], "100Mi");
        assert_eq!(r.limits["memory"], "100Mi");
        assert_eq!(r.limits["cpu"], "100m");
    }

    #[test]
    fn an_annotated_limit_below_the_default_request_lowers_the_request() {
        let r = annotated(&[("palisade.dev/sidecar-cpu-limit", "5m")]).unwrap();
        assert_eq!(r.requests["cpu"], "5m");
        assert_eq!(r.limits["cpu"], "5m");
    }

    #[test]
    fn annotations_that_contradict_each_other_are_refused() {
        let err = annotated(&[
            ("palisade.dev/sidecar-cpu", "1"),
            ("palisade.dev/sidecar-cpu-limit", "500m"),
        ])
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "metadata.annotations: palisade.dev/sidecar-cpu=\"1\" exceeds \
             palisade.dev/sidecar-cpu-limit=\"500m\"; a request must not exceed its limit"
        );
        // Consistent annotations pass, whatever the defaults.
        let r = annotated(&[
            ("palisade.dev/sidecar-memory", "1Gi"),
            ("palisade.dev/sidecar-memory-limit", "1Gi"),
        ])
        .unwrap();
        assert_eq!(r.requests["memory"], "1Gi");
    }
}
