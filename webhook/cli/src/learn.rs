//! `palisade policy draft`, `palisade policy replay` and `palisade status
//! --workloads`: what enforcers recorded, fetched from the policy service
//! and handed to the engine's `learn` module, which decides everything.
//! Only the HTTP client is needed, so these work without the `server`
//! feature.

use std::fmt;
use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{bail, Context};
use palisade_common::observe::{WorkloadObservations, WorkloadRecord};
use palisade_common::policy::{Document, Mode, PolicyDocument};
use palisade_engine::learn::{self, DraftOptions};
use palisade_engine::policy::split_yaml_documents;
use reqwest::StatusCode;

use crate::client::{self, is_object_name, table, Client, ClientError};

/// `<kind>/<name>` as `palisade policy draft` takes it, with kubectl's
/// short kinds (`deploy/web`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadName {
    /// Lower-case singular kind, as the service's path spells it.
    pub kind: String,
    pub name: String,
}

impl FromStr for WorkloadName {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let Some((kind, name)) = text.split_once('/') else {
            return Err("expected <kind>/<name>, e.g. deployment/web or pod/web-0".into());
        };
        let kind = kind.to_ascii_lowercase();
        let kind = match kind.as_str() {
            "deploy" | "deployments" => "deployment",
            "sts" | "statefulsets" => "statefulset",
            "ds" | "daemonsets" => "daemonset",
            "cj" | "cronjobs" => "cronjob",
            "jobs" => "job",
            "rs" | "replicasets" => "replicaset",
            "po" | "pods" => "pod",
            other => other,
        };
        if kind.is_empty() || !kind.bytes().all(|b| b.is_ascii_lowercase()) {
            return Err(format!("{kind:?} is not a kind (e.g. deployment, pod)"));
        }
        if !is_object_name(name) {
            return Err(format!(
                "{name:?} is not a Kubernetes name (lowercase letters, digits, '-' and '.')"
            ));
        }
        Ok(Self {
            kind: kind.to_string(),
            name: name.to_string(),
        })
    }
}

impl fmt::Display for WorkloadName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.kind, self.name)
    }
}

/// `--mode`.
pub fn parse_mode(text: &str) -> Result<Mode, String> {
    match text {
        "learn" => Ok(Mode::Learn),
        "audit" => Ok(Mode::Audit),
        "enforce" => Ok(Mode::Enforce),
        _ => Err("expected learn, audit or enforce".into()),
    }
}

/// `--since`: `30m`, `24h`, `7d` (any humantime duration).
pub fn parse_since(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text)
        .map_err(|_| "expected a duration such as 30m, 24h or 7d".to_string())
}

/// Unix milliseconds `ago` before `now_ms`.
fn since_ms(now_ms: i64, ago: Duration) -> i64 {
    now_ms.saturating_sub(i64::try_from(ago.as_millis()).unwrap_or(i64::MAX))
}

/// `palisade policy draft`: prints the draft of `workload`'s policy.
pub async fn draft(
    client: &Client,
    namespace: &str,
    workload: &WorkloadName,
    options: &DraftOptions,
    since: Option<Duration>,
) -> anyhow::Result<()> {
    let since = since.map(|ago| since_ms(client::now_ms(), ago));
    let observed = match client
        .workload(namespace, &workload.kind, &workload.name, since)
        .await
    {
        Err(ClientError::Api { status, .. }) if status == StatusCode::NOT_FOUND => bail!(
            "no observations of {namespace}/{workload}: no enforcer of its pods has reported \
             to {} yet, or the name is not the workload's (palisade status --workloads lists them)",
            client.server()
        ),
        other => other.with_context(|| format!("reading {namespace}/{workload}"))?,
    };
    print!("{}", learn::draft(&observed, options));
    Ok(())
}

/// The RuntimePolicies of a policy file, validated; exceptions are named
/// on stderr as not applied (a replay judges the policy alone).
fn policies_of(file: &str, text: &str) -> anyhow::Result<Vec<PolicyDocument>> {
    let mut policies = Vec::new();
    for doc in split_yaml_documents(text) {
        match Document::from_yaml(doc).with_context(|| format!("reading {file}"))? {
            Document::Policy(policy) => policies.push(policy),
            Document::Exception(exception) => eprintln!(
                "note: PolicyException {} in {file} is not applied: a replay judges the policy alone",
                exception.metadata.name
            ),
        }
    }
    if policies.is_empty() {
        bail!("{file} holds no RuntimePolicy");
    }
    Ok(policies)
}

/// `palisade policy replay`: judges every policy of `text` against what
/// was recorded since `since` ago. Exits 1 when anything would have been
/// reported or killed, like `diff` on a difference.
pub async fn replay(
    client: &Client,
    file: &str,
    text: &str,
    since: Duration,
    namespace: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let policies = policies_of(file, text)?;
    let now = client::now_ms();
    let from = since_ms(now, since);
    let observed = recorded_since(client, &policies, from, namespace)
        .await
        .with_context(|| format!("reading observations from {}", client.server()))?;
    println!(
        "Recorded behaviour since {} ({} ago){}.",
        client::format_time(from),
        humantime::format_duration(since),
        namespace
            .map(|n| format!(" in namespace {n}"))
            .unwrap_or_default()
    );
    let mut act = false;
    for policy in &policies {
        let replay = learn::replay(policy, &observed);
        print!("\n{replay}");
        act |= replay.would_act();
    }
    Ok(if act {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// How far the service's clock (a workload's `lastSeenMs`) may trail the
/// enforcers' (an item's `lastMs`) and this machine's (`--since`) before a
/// workload seen in the window is taken for one seen before it.
const CLOCK_MARGIN_MS: i64 = 5 * 60 * 1000;

/// What workloads recorded since `from`. The workloads a policy selects
/// come with every item they showed in the window, read per workload, so
/// the answer is bounded by the service's per-workload item bound and
/// never cut short by a page; the others come with no items, for the
/// replay to count as not selected. A selected workload with no item in
/// the window is left out.
async fn recorded_since(
    client: &Client,
    policies: &[PolicyDocument],
    from: i64,
    namespace: Option<&str>,
) -> Result<Vec<WorkloadObservations>, ClientError> {
    let mut recorded = Vec::new();
    for record in client.workloads(namespace).await? {
        if record.last_seen_ms.saturating_add(CLOCK_MARGIN_MS) < from {
            continue;
        }
        if !policies
            .iter()
            .any(|policy| learn::selects(policy, &record))
        {
            recorded.push(WorkloadObservations {
                workload: record,
                observed: Vec::new(),
            });
            continue;
        }
        let workload = &record.workload;
        let kind = workload.kind.to_ascii_lowercase();
        match client
            .workload(&workload.namespace, &kind, &workload.name, Some(from))
            .await
        {
            Ok(found) if found.observed.is_empty() => {}
            Ok(found) => recorded.push(found),
            // Gone between the list and the read: nothing left to judge.
            Err(ClientError::Api { status, .. }) if status == StatusCode::NOT_FOUND => {}
            // Not addressable by the per-workload route (enforcers can post
            // any pod name): the rest of the replay still stands.
            Err(ClientError::ObjectName(name)) => {
                eprintln!(
                    "warning: workload {workload} not judged: {name:?} is not a Kubernetes name"
                )
            }
            Err(e) => return Err(e),
        }
    }
    Ok(recorded)
}

/// `palisade status --workloads`.
pub async fn workloads(client: &Client, namespace: Option<&str>, json: bool) -> anyhow::Result<()> {
    let mut records = client
        .workloads(namespace)
        .await
        .with_context(|| format!("reading workloads from {}", client.server()))?;
    records.sort_by(|a, b| a.workload.cmp(&b.workload));
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
    } else {
        print!("{}", workloads_table(&records, client::now_ms()));
    }
    Ok(())
}

/// One row per workload: its mode (`-` when no runtime policy selects
/// it), how long it has been observed, how long since it last showed
/// something new (learn until that is long), and its items with what did
/// not fit (`2000+37`).
pub fn workloads_table(records: &[WorkloadRecord], now_ms: i64) -> String {
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let items = if r.overflow > 0 {
                format!("{}+{}", r.items, r.overflow)
            } else {
                r.items.to_string()
            };
            vec![
                r.workload.namespace.clone(),
                format!(
                    "{}/{}",
                    r.workload.kind.to_ascii_lowercase(),
                    r.workload.name
                ),
                r.mode.map_or("-", Mode::as_str).to_string(),
                short_duration(r.last_seen_ms.saturating_sub(r.first_ms)),
                format!(
                    "{} ago",
                    short_duration(now_ms.saturating_sub(r.last_new_ms))
                ),
                items,
            ]
        })
        .collect();
    table(
        &[
            "NAMESPACE",
            "WORKLOAD",
            "MODE",
            "OBSERVED-FOR",
            "LAST-NEW",
            "ITEMS",
        ],
        &rows,
    )
}

/// A span for a table cell, at most two units: `45s`, `3m`, `2h5m`, `3d4h`,
/// `12d`. Negative spans (clock skew) show as `0s`.
pub fn short_duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (m, h, d) = (s / 60, s / 3600, s / 86_400);
    let pair = |big: i64, unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{unit}")
        } else {
            format!("{big}{unit}{small}{small_unit}")
        }
    };
    match () {
        _ if s < 60 => format!("{s}s"),
        _ if m < 60 => format!("{m}m"),
        _ if h < 24 => pair(h, "h", m % 60, "m"),
        _ if d < 7 => pair(d, "d", h % 24, "h"),
        _ => format!("{d}d"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use palisade_common::observe::WorkloadRef;

    #[test]
    fn workloads_are_named_as_kubectl_names_them() {
        let parsed: WorkloadName = "deploy/web".parse().unwrap();
        assert_eq!(parsed.to_string(), "deployment/web");
        assert_eq!("Pod/web-0".parse::<WorkloadName>().unwrap().kind, "pod");
        assert_eq!(
            "sts/db".parse::<WorkloadName>().unwrap().kind,
            "statefulset"
        );
        for bad in [
            "web",
            "deployment/",
            "deployment/../x",
            "deploy/Web",
            "de-ploy/web",
            "/web",
        ] {
            assert!(bad.parse::<WorkloadName>().is_err(), "{bad}");
        }
    }

    #[test]
    fn modes_and_durations_are_checked_before_anything_is_sent() {
        assert_eq!(parse_mode("enforce"), Ok(Mode::Enforce));
        assert!(parse_mode("Enforce").is_err());
        assert_eq!(parse_since("30m"), Ok(Duration::from_secs(1800)));
        assert_eq!(parse_since("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert!(parse_since("soon").is_err());
        assert_eq!(since_ms(10_000, Duration::from_secs(3)), 7_000);
        assert_eq!(since_ms(0, Duration::MAX), -i64::MAX);
    }

    #[test]
    fn spans_read_as_two_units_at_most() {
        assert_eq!(short_duration(-5), "0s");
        assert_eq!(short_duration(45_000), "45s");
        assert_eq!(short_duration(3 * 60_000 + 20_000), "3m");
        assert_eq!(short_duration(2 * 3_600_000), "2h");
        assert_eq!(short_duration(2 * 3_600_000 + 5 * 60_000), "2h5m");
        assert_eq!(short_duration(3 * 86_400_000 + 4 * 3_600_000), "3d4h");
        assert_eq!(short_duration(12 * 86_400_000), "12d");
    }

    fn record(namespace: &str, kind: &str, name: &str, mode: Option<Mode>) -> WorkloadRecord {
        WorkloadRecord {
            workload: WorkloadRef {
                namespace: namespace.into(),
                kind: kind.into(),
                name: name.into(),
            },
            pod_labels: Default::default(),
            mode,
            first_ms: 0,
            last_new_ms: 0,
            last_seen_ms: 0,
            items: 0,
            overflow: 0,
        }
    }

    #[test]
    fn the_workloads_table_shows_mode_observation_span_age_and_overflow() {
        const NOW: i64 = 1_796_630_462_000;
        let mut web = record("shop", "Deployment", "web", Some(Mode::Learn));
        web.first_ms = NOW - 3 * 86_400_000 - 4 * 3_600_000;
        web.last_seen_ms = NOW;
        web.last_new_ms = NOW - 3 * 60_000;
        web.items = 2000;
        web.overflow = 37;
        let mut cart = record("shop", "Pod", "cart-0", None);
        cart.first_ms = NOW - 300_000;
        cart.last_seen_ms = NOW - 60_000;
        cart.last_new_ms = NOW - 200_000;
        cart.items = 12;
        assert_eq!(
            workloads_table(&[web, cart], NOW),
            "NAMESPACE  WORKLOAD        MODE   OBSERVED-FOR  LAST-NEW  ITEMS\n\
             shop       deployment/web  learn  3d4h          3m ago    2000+37\n\
             shop       pod/cart-0      -      4m            3m ago    12\n"
        );
    }
}
