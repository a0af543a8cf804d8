//! `palisade policy ...` and `palisade events`: a client of the policy
//! service API with table output.

use std::path::Path;

use palisade_common::observe::{WorkloadObservations, WorkloadRecord};
use palisade_common::wire::{
    EnforcerRecord, EventKind, ExceptionRecord, PolicyRecord, StoredEvent,
};
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid CA certificate {path}: {source}")]
    Ca {
        path: String,
        source: reqwest::Error,
    },
    #[error("request to {url} failed: {source}")]
    Http { url: String, source: reqwest::Error },
    #[error("{status}: {message}")]
    Api { status: StatusCode, message: String },
    #[error("{0:?} is not a name (lowercase letters, digits and '-')")]
    Name(String),
    #[error("{0:?} is not a Kubernetes name (lowercase letters, digits, '-' and '.')")]
    ObjectName(String),
    #[error("unexpected answer from {url}: {source}")]
    Decode {
        url: String,
        source: serde_json::Error,
    },
}

pub struct Client {
    http: reqwest::Client,
    server: String,
    token: String,
}

impl Client {
    /// `ca_file` verifies the server (e.g. the self-signed `ca.crt`);
    /// without it the system roots are used.
    pub fn new(server: &str, token: &str, ca_file: Option<&Path>) -> Result<Self, ClientError> {
        let mut builder = reqwest::Client::builder().use_rustls_tls();
        if let Some(path) = ca_file {
            let pem = std::fs::read(path).map_err(|source| ClientError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let cert = reqwest::Certificate::from_pem(&pem).map_err(|source| ClientError::Ca {
                path: path.display().to_string(),
                source,
            })?;
            builder = builder.add_root_certificate(cert);
        }
        let http = builder.build().map_err(|source| ClientError::Http {
            url: server.to_string(),
            source,
        })?;
        Ok(Self {
            http,
            server: server.trim_end_matches('/').to_string(),
            token: token.trim().to_string(),
        })
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<Value, ClientError> {
        let http = |source| ClientError::Http {
            url: url.to_string(),
            source,
        };
        let resp = request
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(http)?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            Ok(body)
        } else {
            let message = body["error"]
                .as_str()
                .unwrap_or("request failed")
                .to_string();
            Err(ClientError::Api { status, message })
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server)
    }

    /// Pushes one document of `kind`; returns (name, revision).
    pub async fn push(&self, kind: Kind, document: &str) -> Result<(String, i64), ClientError> {
        let url = self.url(kind.path());
        let body = self
            .send(self.http.put(&url).body(document.to_string()), &url)
            .await?;
        Ok((
            body["name"].as_str().unwrap_or_default().to_string(),
            body["revision"].as_i64().unwrap_or_default(),
        ))
    }

    pub async fn list(&self) -> Result<Vec<PolicyRecord>, ClientError> {
        let url = self.url(Kind::Policy.path());
        let body = self.send(self.http.get(&url), &url).await?;
        Ok(serde_json::from_value(body).unwrap_or_default())
    }

    pub async fn list_exceptions(&self) -> Result<Vec<ExceptionRecord>, ClientError> {
        let url = self.url(Kind::Exception.path());
        let body = self.send(self.http.get(&url), &url).await?;
        Ok(serde_json::from_value(body).unwrap_or_default())
    }

    pub async fn delete(&self, kind: Kind, name: &str) -> Result<(), ClientError> {
        // Names are DNS labels; anything else (`../policies/x`) would
        // address another resource.
        let valid = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !valid {
            return Err(ClientError::Name(name.to_string()));
        }
        let url = self.url(&format!("{}/{name}", kind.path()));
        self.send(self.http.delete(&url), &url).await.map(drop)
    }

    pub async fn events(&self, filter: &EventFilter) -> Result<Vec<StoredEvent>, ClientError> {
        let url = self.url("/api/v1/events");
        let body = self
            .send(self.http.get(&url).query(&filter.query()), &url)
            .await?;
        Ok(serde_json::from_value(body).unwrap_or_default())
    }

    /// Every enforcer that sent a heartbeat, with its state and what it
    /// reports off. An answer that does not parse is an error: read as an
    /// empty list it would say every enforcer is silent.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub async fn enforcers(&self) -> Result<Vec<EnforcerRecord>, ClientError> {
        let url = self.url("/api/v1/enforcers");
        let body = self.send(self.http.get(&url), &url).await?;
        serde_json::from_value(body).map_err(|source| ClientError::Decode { url, source })
    }

    /// GETs `url` and reads the answer as `T`. An answer that does not
    /// parse is an error: read as empty, it would say nothing was seen.
    async fn get<T: DeserializeOwned>(
        &self,
        url: String,
        query: &[(&str, String)],
    ) -> Result<T, ClientError> {
        let body = self.send(self.http.get(&url).query(query), &url).await?;
        serde_json::from_value(body).map_err(|source| ClientError::Decode { url, source })
    }

    /// Every workload enforcers reported observations for (one namespace,
    /// or all), with its mode and how long it has been observed.
    pub async fn workloads(
        &self,
        namespace: Option<&str>,
    ) -> Result<Vec<WorkloadRecord>, ClientError> {
        let query: Vec<(&str, String)> = namespace
            .map(|n| ("namespace", n.into()))
            .into_iter()
            .collect();
        self.get(self.url("/api/v1/workloads"), &query).await
    }

    /// What one workload was seen doing (since `since_ms` when given).
    /// `kind` is lower-case (`deployment`, `pod`); an unknown workload is
    /// the service's 404.
    pub async fn workload(
        &self,
        namespace: &str,
        kind: &str,
        name: &str,
        since_ms: Option<i64>,
    ) -> Result<WorkloadObservations, ClientError> {
        // Each part becomes a path segment: anything but a Kubernetes name
        // (`..`, `/`, `?`) would address another resource.
        for part in [namespace, kind, name] {
            if !is_object_name(part) {
                return Err(ClientError::ObjectName(part.to_string()));
            }
        }
        let url = self.url(&format!("/api/v1/workloads/{namespace}/{kind}/{name}"));
        let query: Vec<(&str, String)> = since_ms
            .map(|s| ("since", s.to_string()))
            .into_iter()
            .collect();
        self.get(url, &query).await
    }

    /// The service's address, for messages.
    #[cfg_attr(not(feature = "server"), allow(dead_code))]
    pub fn server(&self) -> &str {
        &self.server
    }
}

/// A Kubernetes object name (DNS subdomain characters), safe as one path
/// segment: never empty, never `.` or `..`.
pub fn is_object_name(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 253
        && !text.starts_with('.')
        && text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// What `GET /api/v1/events` is asked for; `None` leaves a filter out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFilter {
    pub namespace: Option<String>,
    pub pod: Option<String>,
    pub kind: Option<EventKind>,
    /// Exact rule id, e.g. `enforcer/prevention`.
    pub rule: Option<String>,
    /// Unix milliseconds.
    pub since_ms: Option<i64>,
    pub limit: u32,
}

impl Default for EventFilter {
    fn default() -> Self {
        Self {
            namespace: None,
            pod: None,
            kind: None,
            rule: None,
            since_ms: None,
            limit: 100,
        }
    }
}

impl EventFilter {
    /// The query string, in the service's parameter names.
    fn query(&self) -> Vec<(&'static str, String)> {
        let mut query = vec![("limit", self.limit.to_string())];
        query.extend(self.namespace.clone().map(|n| ("namespace", n)));
        query.extend(self.pod.clone().map(|p| ("pod", p)));
        query.extend(self.kind.map(|k| ("kind", k.as_str().to_string())));
        query.extend(self.rule.clone().map(|r| ("rule", r)));
        query.extend(self.since_ms.map(|s| ("since", s.to_string())));
        query
    }
}

/// What the service stores, each under its own path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Policy,
    Exception,
}

impl Kind {
    fn path(self) -> &'static str {
        match self {
            Self::Policy => "/api/v1/policies",
            Self::Exception => "/api/v1/exceptions",
        }
    }
}

/// Left-aligned columns, two spaces apart.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        padded.join("  ").trim_end().to_string()
    };
    let mut out = vec![line(header.to_vec())];
    out.extend(
        rows.iter()
            .map(|r| line(r.iter().map(String::as_str).collect())),
    );
    out.join("\n") + "\n"
}

pub fn policies_table(records: &[PolicyRecord]) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                format!("{:?}", r.document.spec.mode).to_lowercase(),
                r.revision.to_string(),
                with_force(&r.source, r.not_in_force.as_deref()),
            ]
        })
        .collect();
    table(&["NAME", "MODE", "REVISION", "SOURCE"], &rows)
}

/// A source, and why its document is not in force when it is not.
fn with_force(source: &str, not_in_force: Option<&str>) -> String {
    match not_in_force {
        None => source.to_string(),
        Some(why) => format!("{source} (not in force: {why})"),
    }
}

/// Exceptions with what matters when one runs out: state, expiry, owner.
pub fn exceptions_table(records: &[ExceptionRecord]) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let spec = &r.document.spec;
            vec![
                r.name.clone(),
                spec.policy.clone(),
                spec.rules.join(","),
                format!("{:?}", r.state).to_lowercase(),
                spec.expires_at.clone(),
                spec.owner.clone(),
                with_force(&r.source, r.not_in_force.as_deref()),
            ]
        })
        .collect();
    table(
        &[
            "NAME", "POLICY", "RULES", "STATE", "EXPIRES", "OWNER", "SOURCE",
        ],
        &rows,
    )
}

pub fn events_table(events: &[StoredEvent]) -> String {
    let rows: Vec<Vec<String>> = events
        .iter()
        .map(|e| {
            vec![
                format_time(e.event.time_ms),
                e.pod.namespace.clone(),
                e.pod.name.clone(),
                e.event.kind.as_str().to_string(),
                e.event.rule.clone(),
                e.event.action.clone().unwrap_or_default(),
                e.event.message.clone(),
            ]
        })
        .collect();
    table(
        &[
            "TIME",
            "NAMESPACE",
            "POD",
            "KIND",
            "RULE",
            "ACTION",
            "MESSAGE",
        ],
        &rows,
    )
}

/// UTC RFC 3339 (seconds) from unix milliseconds; the engine's, which
/// does not panic on times past year 9999 (humantime does).
pub fn format_time(ms: i64) -> String {
    palisade_engine::learn::rfc3339(ms.max(0))
}

/// Milliseconds since the Unix epoch, the unit the service stores.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `30s`, `15m`, `2h`, `7d` (any humantime duration) into milliseconds.
pub fn parse_duration_ms(text: &str) -> Option<i64> {
    humantime::parse_duration(text)
        .ok()
        .and_then(|d| i64::try_from(d.as_millis()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let t = table(
            &["A", "LONGER"],
            &[
                vec!["xyz".into(), "1".into()],
                vec!["q".into(), "22".into()],
            ],
        );
        assert_eq!(t, "A    LONGER\nxyz  1\nq    22\n");
    }

    #[test]
    fn an_event_filter_sends_only_what_it_names() {
        let filter = EventFilter {
            namespace: Some("shop".into()),
            kind: Some(EventKind::Enforcer),
            rule: Some("enforcer/prevention".into()),
            limit: 1000,
            ..Default::default()
        };
        assert_eq!(
            filter.query(),
            [
                ("limit", "1000".to_string()),
                ("namespace", "shop".into()),
                ("kind", "enforcer".into()),
                ("rule", "enforcer/prevention".into()),
            ]
        );
        assert_eq!(EventFilter::default().query(), [("limit", "100".into())]);
    }

    #[test]
    fn only_kubernetes_names_become_path_segments() {
        for good in ["shop", "web-5d8f7c-x2x9q", "deployment", "db.v2"] {
            assert!(is_object_name(good), "{good}");
        }
        for bad in [
            "",
            "..",
            ".",
            "a/b",
            "Web",
            "a?b",
            "a%2fb",
            &"a".repeat(254),
        ] {
            assert!(!is_object_name(bad), "{bad}");
        }
    }

    #[test]
    fn times_and_durations() {
        assert_eq!(format_time(0), "1970-01-01T00:00:00Z");
        assert_eq!(format_time(1_795_000_000_000), "2026-11-18T11:06:40Z");
        assert_eq!(parse_duration_ms("2h"), Some(7_200_000));
        assert_eq!(parse_duration_ms("30m"), Some(1_800_000));
        assert_eq!(parse_duration_ms("24h"), Some(86_400_000));
        assert_eq!(parse_duration_ms("7d"), Some(604_800_000));
        assert_eq!(
            format_time(i64::MAX),
            format!("{} ms since the epoch", i64::MAX)
        );
        assert_eq!(parse_duration_ms("h"), None);
        assert_eq!(parse_duration_ms("5q"), None);
    }
}
