//! The service's query strings, typed: what each endpoint accepts, parsed
//! into what it means, with an error that names the parameter.

use std::collections::BTreeMap;
use std::time::Duration;

use palisade_common::wire::EventKind;
use serde::Deserialize;

use crate::db::EventQuery;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("label {0:?} must be key=value")]
    Label(String),
    #[error("wait must be a number of seconds")]
    Wait,
    #[error("{0} must be an integer (unix milliseconds)")]
    Number(&'static str),
    #[error("kind {0:?} must be drift, behavior or enforcer")]
    Kind(String),
}

/// `GET /api/v1/policies/{name}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct PolicyQuery {
    /// `true`: every stored revision instead of the active one.
    pub history: Option<String>,
}

impl PolicyQuery {
    pub fn wants_history(&self) -> bool {
        self.history.as_deref() == Some("true")
    }
}

/// `GET /api/v1/bundle`, as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct BundleQuery {
    pub namespace: Option<String>,
    /// `k=v,k2=v2`: the pod's labels.
    pub labels: Option<String>,
    /// Seconds to wait for a change from `etag`.
    pub wait: Option<String>,
    pub etag: Option<String>,
}

/// `GET /api/v1/bundle`, understood.
#[derive(Debug, PartialEq, Eq)]
pub struct BundleRequest {
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    pub wait: Duration,
    pub etag: String,
}

impl BundleQuery {
    /// `max_wait` caps the long-poll.
    pub fn parse(self, max_wait: Duration) -> Result<BundleRequest, QueryError> {
        let namespace = self
            .namespace
            .filter(|n| !n.is_empty())
            .ok_or(QueryError::Missing("namespace"))?;
        let labels = parse_labels(self.labels.as_deref().unwrap_or(""))?;
        let wait = match self.wait {
            None => Duration::ZERO,
            Some(w) => w
                .parse::<f64>()
                .ok()
                .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                .ok_or(QueryError::Wait)?
                .min(max_wait),
        };
        Ok(BundleRequest {
            namespace,
            labels,
            wait,
            etag: self.etag.unwrap_or_default(),
        })
    }
}

/// `labels=k=v,k2=v2` into a map.
fn parse_labels(text: &str) -> Result<BTreeMap<String, String>, QueryError> {
    text.split(',')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            pair.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| QueryError::Label(pair.to_string()))
        })
        .collect()
}

/// `GET /api/v1/events`, as sent.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct EventsQuery {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub kind: Option<String>,
    /// Exact rule id (`enforcer/prevention`).
    pub rule: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub limit: Option<String>,
}

impl EventsQuery {
    pub fn parse(self) -> Result<EventQuery, QueryError> {
        Ok(EventQuery {
            kind: self
                .kind
                .map(|k| EventKind::parse(&k).ok_or(QueryError::Kind(k)))
                .transpose()?,
            since_ms: number("since", self.since.as_deref())?,
            until_ms: number("until", self.until.as_deref())?,
            limit: number("limit", self.limit.as_deref())?.unwrap_or(100),
            rule: self.rule.filter(|r| !r.is_empty()),
            namespace: self.namespace,
            pod: self.pod,
        })
    }
}

/// `GET /api/v1/workloads`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WorkloadsQuery {
    pub namespace: Option<String>,
}

impl WorkloadsQuery {
    /// The namespace to list, `None` for all (an empty one is all too).
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref().filter(|n| !n.is_empty())
    }
}

/// `GET /api/v1/workloads/{namespace}/{kind}/{name}`.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub struct WorkloadQuery {
    /// Only items last seen at or after this (unix milliseconds).
    pub since: Option<String>,
}

impl WorkloadQuery {
    pub fn since_ms(&self) -> Result<Option<i64>, QueryError> {
        number("since", self.since.as_deref())
    }
}

fn number(key: &'static str, value: Option<&str>) -> Result<Option<i64>, QueryError> {
    value
        .map(|v| v.parse::<i64>().map_err(|_| QueryError::Number(key)))
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bundle_query_needs_a_namespace_and_caps_the_wait() {
        let max = Duration::from_secs(30);
        assert_eq!(
            BundleQuery::default().parse(max),
            Err(QueryError::Missing("namespace"))
        );
        let request = BundleQuery {
            namespace: Some("shop".into()),
            labels: Some("app=cart,tier=web".into()),
            wait: Some("600".into()),
            etag: Some("abc".into()),
        }
        .parse(max)
        .unwrap();
        assert_eq!(request.wait, max);
        assert_eq!(request.labels.get("tier").map(String::as_str), Some("web"));
        let bad = |labels: &str, wait: &str| {
            BundleQuery {
                namespace: Some("shop".into()),
                labels: Some(labels.into()),
                wait: Some(wait.into()),
                etag: None,
            }
            .parse(max)
            .unwrap_err()
            .to_string()
        };
        assert_eq!(bad("app", "1"), "label \"app\" must be key=value");
        assert_eq!(bad("", "soon"), "wait must be a number of seconds");
        assert_eq!(bad("", "-1"), "wait must be a number of seconds");
        let jittered = BundleQuery {
            namespace: Some("shop".into()),
            wait: Some("8.25".into()),
            ..BundleQuery::default()
        }
        .parse(max)
        .unwrap();
        assert_eq!(jittered.wait, Duration::from_millis(8250));
    }

    #[test]
    fn events_query_names_the_bad_parameter() {
        let err = EventsQuery {
            until: Some("yesterday".into()),
            ..Default::default()
        }
        .parse()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "until must be an integer (unix milliseconds)"
        );
        let err = EventsQuery {
            kind: Some("network".into()),
            ..Default::default()
        }
        .parse()
        .unwrap_err();
        assert!(err.to_string().contains("\"network\""));
        assert_eq!(EventsQuery::default().parse().unwrap().limit, 100);
    }

    #[test]
    fn workload_query_names_a_bad_number() {
        let err = WorkloadQuery {
            since: Some("1h".into()),
        }
        .since_ms()
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "since must be an integer (unix milliseconds)"
        );
        assert_eq!(WorkloadQuery::default().since_ms(), Ok(None));
    }

    #[test]
    fn events_query_filters_by_one_exact_rule_and_ignores_an_empty_one() {
        let rule = |rule: Option<&str>| {
            EventsQuery {
                kind: Some("enforcer".into()),
                rule: rule.map(String::from),
                ..Default::default()
            }
            .parse()
            .unwrap()
        };
        let q = rule(Some("enforcer/prevention"));
        assert_eq!(q.rule.as_deref(), Some("enforcer/prevention"));
        assert_eq!(q.kind, Some(EventKind::Enforcer));
        assert_eq!(rule(Some("")).rule, None);
        assert_eq!(rule(None).rule, None);
    }
}
