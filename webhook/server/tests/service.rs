//! The policy service API on the real server: push, distribute, report, query.

mod common;

use std::time::{Duration, Instant};

use common::*;
use palisade_common::observe::{WorkloadObservations, WorkloadRecord, WorkloadRef};
use palisade_common::policy::Mode;
use palisade_common::wire::{
    EnforcerProtection, EnforcerRecord, Event, EventKind, IngestResult, PodRef, ReportBatch,
    RuntimeBundle, StoredEvent,
};
use serde_json::{json, Value};

const TAG_POLICY: &str = "apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: {name: pinned-busybox}
spec:
  mode: enforce
  admission: {disallowedTags: ['1.36']}
  runtime: {deniedProcesses: [nc]}
";

async fn push(server: &TestServer, token: &str, body: &str) -> reqwest::Response {
    server
        .client
        .put(format!("{}/api/v1/policies", server.base))
        .bearer_auth(token)
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn get_json(server: &TestServer, token: &str, path: &str) -> (u16, Value) {
    let resp = server
        .client
        .get(format!("{}{path}", server.base))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A pod that passes the repository's enforce policies (opted out of the
/// enforcer, limits set) until a pushed policy says otherwise.
fn busybox_review() -> Value {
    let mut review = fixture("pod-create.json");
    let pod = &mut review["request"]["object"];
    pod["metadata"]["annotations"] = json!({"palisade.dev/inject": "false"});
    pod["spec"]["containers"][0]["image"] = json!("registry.k8s.io/busybox:1.36");
    pod["spec"]["containers"][0]["resources"] = json!({"limits": {"cpu": "1", "memory": "64Mi"}});
    review
}

#[tokio::test]
async fn pushed_policies_are_versioned_validated_and_enforced_at_admission() {
    let server = start(&repo_policies()).await;
    let admin = server.admin_token();

    // Not authenticated, or only as an enforcer: refused.
    assert_eq!(push(&server, "wrong", TAG_POLICY).await.status(), 401);
    assert_eq!(
        push(&server, &server.report_token(), TAG_POLICY)
            .await
            .status(),
        401
    );

    // Admission allows busybox:1.36 until the policy is pushed.
    let before = server.review("/validate", &busybox_review()).await;
    assert!(before.allowed, "{}", before.result.message);

    let resp = push(&server, &admin, TAG_POLICY).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap()["revision"], 1);
    let after = server.review("/validate", &busybox_review()).await;
    assert!(!after.allowed);
    assert!(
        after
            .result
            .message
            .contains("[pinned-busybox] images/disallowedTags"),
        "{}",
        after.result.message
    );

    // A new revision; the history keeps both.
    let audit = TAG_POLICY.replace("mode: enforce", "mode: audit");
    let resp = push(&server, &admin, &audit).await;
    assert_eq!(resp.json::<Value>().await.unwrap()["revision"], 2);
    assert!(server.review("/validate", &busybox_review()).await.allowed);
    let (status, history) = get_json(
        &server,
        &admin,
        "/api/v1/policies/pinned-busybox?history=true",
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(history.as_array().unwrap().len(), 2);
    // Each revision names the admin token that pushed it, not the token.
    let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(admin.as_bytes()));
    for revision in history.as_array().unwrap() {
        assert_eq!(
            revision["author"],
            format!("admin-token:{}", &digest[..8]),
            "{revision}"
        );
    }

    // Listing shows directory and pushed policies with their source.
    let (_, list) = get_json(&server, &admin, "/api/v1/policies").await;
    let sources: Vec<(String, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["name"].as_str().unwrap().to_string(),
                p["source"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(
        sources
            .iter()
            .any(|(n, s)| n == "pinned-busybox" && s == "api"),
        "{sources:?}"
    );
    assert!(
        sources
            .iter()
            .any(|(n, s)| n == "image-tags" && s.starts_with("directory")),
        "{sources:?}"
    );

    // Delete: back to allowed.
    let resp = server
        .client
        .delete(format!("{}/api/v1/policies/pinned-busybox", server.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let resp = server
        .client
        .delete(format!("{}/api/v1/policies/image-tags", server.base))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        409,
        "directory policies are not deleted through the API"
    );
    assert!(server.review("/validate", &busybox_review()).await.allowed);
    server.running.shutdown().await;
}

#[tokio::test]
async fn bad_policies_are_refused_precisely_and_change_nothing() {
    let server = start(&repo_policies()).await;
    let admin = server.admin_token();
    let cases = [
        (
            TAG_POLICY.replace("disallowedTags", "disalowedTags"),
            400,
            "disalowedTags",
        ),
        (
            TAG_POLICY.replace("name: pinned-busybox", "name: Pinned"),
            400,
            "metadata.name",
        ),
        ("not: [yaml".to_string(), 400, "not a valid policy document"),
        (
            TAG_POLICY.replace("pinned-busybox", "image-tags"),
            409,
            "defined twice",
        ),
    ];
    for (body, status, text) in cases {
        let resp = push(&server, &admin, &body).await;
        assert_eq!(resp.status().as_u16(), status, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert!(err["error"].as_str().unwrap().contains(text), "{err}");
    }
    let (_, list) = get_json(&server, &admin, "/api/v1/policies").await;
    assert_eq!(
        list.as_array().unwrap().len(),
        8,
        "only the directory policies"
    );
    server.running.shutdown().await;
}

#[tokio::test]
async fn enforcers_long_poll_and_see_pushes_within_two_seconds() {
    let server = start(&repo_policies()).await;
    let reporter = server.report_token();
    let url = format!(
        "{}/api/v1/bundle?namespace=team-a&labels=app=web",
        server.base
    );
    let first: RuntimeBundle = server
        .client
        .get(&url)
        .bearer_auth(&reporter)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(first.policies.iter().any(|p| p.name == "runtime-defaults"));

    // Unchanged: held, then 304.
    let started = Instant::now();
    let resp = server
        .client
        .get(format!("{url}&etag={}&wait=1", first.etag))
        .bearer_auth(&reporter)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 304);
    assert!(started.elapsed() >= Duration::from_millis(900));

    // A push wakes the waiting enforcer.
    let poll = {
        let client = server.client.clone();
        let url = format!("{url}&etag={}&wait=30", first.etag);
        let reporter = reporter.clone();
        tokio::spawn(async move {
            let started = Instant::now();
            let resp = client.get(url).bearer_auth(reporter).send().await.unwrap();
            (
                resp.status().as_u16(),
                resp.json::<RuntimeBundle>().await.ok(),
                started,
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pushed_at = Instant::now();
    assert_eq!(
        push(&server, &server.admin_token(), TAG_POLICY)
            .await
            .status(),
        200
    );
    let (status, bundle, _) = poll.await.unwrap();
    let latency = pushed_at.elapsed();
    assert_eq!(status, 200);
    let bundle = bundle.unwrap();
    assert_ne!(bundle.etag, first.etag);
    let pushed = bundle
        .policies
        .iter()
        .find(|p| p.name == "pinned-busybox")
        .expect("pushed policy in bundle");
    assert_eq!(pushed.rules.denied_processes, ["nc"]);
    assert!(
        latency < Duration::from_secs(2),
        "propagation took {latency:?}"
    );

    // Bad queries are named.
    let resp = server
        .client
        .get(format!("{}/api/v1/bundle", server.base))
        .bearer_auth(&reporter)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    server.running.shutdown().await;
}

/// `POST /api/v1/sync`: the heartbeat rides the long-poll.
#[tokio::test]
async fn sync_records_the_heartbeat_and_long_polls_the_bundle_on_one_request() {
    let server = start(&repo_policies()).await;
    let reporter = server.report_token();
    let sync = |etag: &str, wait: &str, body: Value| {
        let request = server
            .client
            .post(format!(
                "{}/api/v1/sync?namespace=shop&labels=app=web&etag={etag}&wait={wait}",
                server.base
            ))
            .bearer_auth(&reporter)
            .json(&body);
        async move { request.send().await.unwrap() }
    };
    let mut beat = status("web-0", "boot1", "running");
    beat["enforcer"]["policyEtag"] = json!("");
    let first = sync("", "5", beat.clone()).await;
    assert_eq!(first.status(), 200);
    let first: RuntimeBundle = first.json().await.unwrap();
    assert!(first.policies.iter().any(|p| p.name == "runtime-defaults"));

    // Written in the background, soon after.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, list) = get_json(&server, &server.admin_token(), "/api/v1/enforcers").await;
        let list: Vec<EnforcerRecord> = serde_json::from_value(list).unwrap();
        if list
            .iter()
            .any(|e| e.pod.name == "web-0" && e.boot_id == "boot1")
        {
            break;
        }
        assert!(Instant::now() < deadline, "the heartbeat was not stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Unchanged: held for the (fractional) wait, then 304.
    let started = Instant::now();
    assert_eq!(sync(&first.etag, "0.5", beat.clone()).await.status(), 304);
    assert!(started.elapsed() >= Duration::from_millis(450));

    // A push wakes it with the new bundle.
    let waiting = tokio::spawn(sync(&first.etag, "30", beat.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        push(&server, &server.admin_token(), TAG_POLICY)
            .await
            .status(),
        200
    );
    let woken = waiting.await.unwrap();
    assert_eq!(woken.status(), 200);
    let pushed: RuntimeBundle = woken.json().await.unwrap();
    assert!(pushed.policies.iter().any(|p| p.name == "pinned-busybox"));

    // The heartbeat must be of a pod in the namespace asked for.
    let mut elsewhere = beat.clone();
    elsewhere["pod"]["namespace"] = json!("bank");
    let refused = sync("", "0", elsewhere).await;
    assert_eq!(refused.status(), 400);
    let message = refused.json::<Value>().await.unwrap()["error"].to_string();
    assert!(message.contains("bank"), "{message}");
    assert_eq!(sync("", "0", json!({"pod": {}})).await.status(), 400);
    server.running.shutdown().await;
}

fn event(id: &str, time_ms: i64, kind: EventKind) -> Event {
    Event {
        id: id.into(),
        time_ms,
        kind,
        rule: "behavior/denied-process".into(),
        policy: Some("runtime-defaults".into()),
        mode: Default::default(),
        message: "sh started".into(),
        process: None,
        action: None,
        exception: None,
        coverage: None,
    }
}

#[tokio::test]
async fn reports_are_stored_once_and_queryable() {
    let server = start(&repo_policies()).await;
    let batch = ReportBatch {
        pod: PodRef {
            namespace: "team-a".into(),
            name: "web-0".into(),
            uid: "uid-1".into(),
        },
        events: vec![
            event("a", 1_000, EventKind::Behavior),
            event("b", 2_000, EventKind::Drift),
            event("c", 3_000, EventKind::Behavior),
        ],
    };
    let post = |token: String, body: Vec<u8>| {
        server
            .client
            .post(format!("{}/api/v1/reports", server.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    let body = serde_json::to_vec(&batch).unwrap();
    let first: IngestResult = post(server.report_token(), body.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        first,
        IngestResult {
            received: 3,
            stored: 3
        }
    );
    let retry: IngestResult = post(server.report_token(), body.clone())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        retry,
        IngestResult {
            received: 3,
            stored: 0
        }
    );
    assert_eq!(post("nope".into(), body).await.unwrap().status(), 401);
    let bad = post(server.report_token(), b"{\"pod\":{}}".to_vec())
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let admin = server.admin_token();
    let (status, events) = get_json(
        &server,
        &admin,
        "/api/v1/events?namespace=team-a&pod=web-0&kind=behavior",
    )
    .await;
    assert_eq!(status, 200);
    let events: Vec<StoredEvent> = serde_json::from_value(events).unwrap();
    assert_eq!(
        events
            .iter()
            .map(|e| e.event.id.as_str())
            .collect::<Vec<_>>(),
        ["c", "a"]
    );
    let (status, _) = get_json(&server, &admin, "/api/v1/events?kind=weird").await;
    assert_eq!(status, 400);
    let (status, _) = get_json(&server, &server.report_token(), "/api/v1/events").await;
    assert_eq!(status, 401, "enforcers cannot read events");
    let metrics = server
        .client
        .get(format!("{}/metrics", server.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("palisade_report_events_stored_total 3"),
        "{metrics}"
    );
    server.running.shutdown().await;
}

#[tokio::test]
async fn replicas_sharing_a_database_converge() {
    let shared = tempfile::tempdir().unwrap();
    let url = match std::env::var("PALISADE_TEST_POSTGRES_URL") {
        Ok(server) => {
            let name = format!("palisade_replicas_{}", std::process::id());
            palisade_server::db::Store::create_postgres_database(&server, &name)
                .await
                .unwrap()
        }
        Err(_) => format!("sqlite://{}", shared.path().join("shared.db").display()),
    };
    let token = "replica-admin-token-0123456789".to_string();
    let configure = |s: &mut palisade_engine::settings::Settings| {
        s.service.database_url = Some(url.clone());
        s.service.admin_tokens = vec![token.clone()];
    };
    let a = start_with(&repo_policies(), configure).await;
    let b = start_with(&repo_policies(), configure).await;
    assert!(b.review("/validate", &busybox_review()).await.allowed);

    assert_eq!(push(&a, &token, TAG_POLICY).await.status(), 200);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if !b.review("/validate", &busybox_review()).await.allowed {
            break;
        }
        assert!(Instant::now() < deadline, "replica b never saw the push");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.running.shutdown().await;
    b.running.shutdown().await;
}

/// Many enforcers flushing reports into SQLite at the moment a policy is
/// pushed: every push and every report must succeed (no "database is
/// locked").
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn policy_pushes_succeed_while_many_enforcers_flush_reports() {
    let server = std::sync::Arc::new(start(&repo_policies()).await);
    let admin = server.admin_token();
    let mut reporters = Vec::new();
    for enforcer in 0..12 {
        let server = server.clone();
        reporters.push(tokio::spawn(async move {
            let mut failures = Vec::new();
            for round in 0..15 {
                let batch = ReportBatch {
                    pod: PodRef {
                        namespace: "load".into(),
                        name: format!("pod-{enforcer}"),
                        uid: format!("uid-{enforcer}"),
                    },
                    events: (0..100)
                        .map(|i| event(&format!("{round}-{i}"), 1_000 + i, EventKind::Drift))
                        .collect(),
                };
                let resp = server
                    .client
                    .post(format!("{}/api/v1/reports", server.base))
                    .bearer_auth(server.report_token())
                    .json(&batch)
                    .send()
                    .await
                    .unwrap();
                if resp.status() != 200 {
                    failures.push(resp.text().await.unwrap_or_default());
                }
            }
            failures
        }));
    }
    let mut push_failures = Vec::new();
    for revision in 0..20 {
        let policy = TAG_POLICY.replace("[nc]", &format!("[nc, tool{revision}]"));
        let resp = push(&server, &admin, &policy).await;
        if resp.status() != 200 {
            push_failures.push(resp.text().await.unwrap_or_default());
        }
    }
    let mut report_failures = Vec::new();
    for r in reporters {
        report_failures.extend(r.await.unwrap());
    }
    assert!(push_failures.is_empty(), "pushes failed: {push_failures:?}");
    assert!(
        report_failures.is_empty(),
        "reports failed: {report_failures:?}"
    );
}

async fn heartbeat(server: &TestServer, body: Value) -> u16 {
    server
        .client
        .post(format!("{}/api/v1/heartbeat", server.base))
        .bearer_auth(server.report_token())
        .json(&body)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

async fn enforcer_rules(server: &TestServer, pod: &str) -> Vec<String> {
    let (_, events) = get_json(
        server,
        &server.admin_token(),
        &format!("/api/v1/events?namespace=shop&pod={pod}&kind=enforcer"),
    )
    .await;
    serde_json::from_value::<Vec<StoredEvent>>(events)
        .unwrap()
        .into_iter()
        .map(|e| e.event.rule)
        .collect()
}

fn status(pod: &str, boot: &str, state: &str) -> Value {
    json!({
        "pod": {"namespace": "shop", "name": pod, "uid": format!("uid-{pod}")},
        "enforcer": {"bootId": boot, "startedMs": 1, "heartbeatMs": 200, "state": state,
                  "reason": if state == "stopping" { "SIGTERM" } else { "" },
                  "dropped": 0, "unobserved": 0}
    })
}

#[tokio::test]
async fn an_enforcer_that_falls_silent_is_reported_missing_once_and_its_return_noted() {
    let server = start(&repo_policies()).await;
    assert_eq!(
        heartbeat(&server, status("cart-0", "boot1", "running")).await,
        200
    );
    assert_eq!(
        server
            .client
            .post(format!("{}/api/v1/heartbeat", server.base))
            .bearer_auth("nope")
            .json(&status("cart-0", "boot1", "running"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    // Three heartbeats (600 ms) of silence, then the service's next sweep.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !enforcer_rules(&server, "cart-0")
        .await
        .contains(&"enforcer/missing".to_string())
    {
        assert!(Instant::now() < deadline, "silence never noticed");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let rules = enforcer_rules(&server, "cart-0").await;
    assert_eq!(
        rules.iter().filter(|r| *r == "enforcer/missing").count(),
        1,
        "{rules:?}"
    );
    let (_, enforcers) = get_json(&server, &server.admin_token(), "/api/v1/enforcers").await;
    assert_eq!(enforcers[0]["state"], "missing", "{enforcers}");

    // It comes back under a new boot id: a restart after silence.
    assert_eq!(
        heartbeat(&server, status("cart-0", "boot2", "running")).await,
        200
    );
    let returned = enforcer_events(&server, "cart-0", "enforcer/returned").await;
    assert_eq!(returned.len(), 1, "{returned:?}");
    assert!(
        returned[0]
            .message
            .contains("(boot boot1) did not stop cleanly")
            && returned[0].message.contains("was reported missing"),
        "{}",
        returned[0].message
    );
    server.running.shutdown().await;
}

/// The service's database URLs to run a test on: the default SQLite, and
/// a fresh PostgreSQL database when `PALISADE_TEST_POSTGRES_URL` names a
/// server (`tests/with-postgres.sh`).
async fn each_database(test: &str) -> Vec<Option<String>> {
    let mut urls = vec![None];
    if let Ok(server) = std::env::var("PALISADE_TEST_POSTGRES_URL") {
        let name = format!("palisade_{test}_{}", std::process::id());
        let url = palisade_server::db::Store::create_postgres_database(&server, &name)
            .await
            .expect("PostgreSQL reachable");
        urls.push(Some(url));
    }
    urls
}

async fn start_on(database: &Option<String>) -> TestServer {
    start_with(&repo_policies(), |s| {
        s.service.database_url = database.clone();
    })
    .await
}

/// The `rule` events of pod `pod` in namespace shop, newest first.
async fn enforcer_events(server: &TestServer, pod: &str, rule: &str) -> Vec<Event> {
    let (_, events) = get_json(
        server,
        &server.admin_token(),
        &format!("/api/v1/events?namespace=shop&pod={pod}&rule={rule}"),
    )
    .await;
    serde_json::from_value::<Vec<StoredEvent>>(events)
        .unwrap()
        .into_iter()
        .map(|e| e.event)
        .collect()
}

/// A running enforcer's heartbeat promising the next within 10 s: the
/// service's sweep leaves it alone for 30 s.
fn running(pod: &str, boot: &str) -> Value {
    let mut beat = status(pod, boot, "running");
    beat["enforcer"]["heartbeatMs"] = json!(10_000);
    beat
}

#[tokio::test]
async fn a_killed_enforcer_restarted_before_its_silence_counts_is_recorded_as_returned_with_its_gap(
) {
    for database in each_database("returned").await {
        let server = start_on(&database).await;
        assert_eq!(heartbeat(&server, running("cart-0", "boot1")).await, 200);
        // SIGKILL: no stopping heartbeat. The kubelet restarts the native
        // sidecar long before three heartbeats are missed.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(heartbeat(&server, running("cart-0", "boot2")).await, 200);
        assert_eq!(heartbeat(&server, running("cart-0", "boot2")).await, 200);

        let returned = enforcer_events(&server, "cart-0", "enforcer/returned").await;
        assert_eq!(
            returned.len(),
            1,
            "once, on the new boot's first heartbeat: {returned:?}"
        );
        let message = &returned[0].message;
        assert!(
            message.contains("(boot boot1) did not stop cleanly: it fell silent without a word"),
            "{message}"
        );
        let gap_ms: i64 = message
            .split_once(" ms from the previous enforcer's last heartbeat")
            .and_then(|(before, _)| before.rsplit_once('(').map(|(_, n)| n))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no gap in {message:?}"));
        assert!((300..5_000).contains(&gap_ms), "gap {gap_ms} ms: {message}");
        assert!(
            enforcer_events(&server, "cart-0", "enforcer/missing")
                .await
                .is_empty(),
            "the silence was too short to count as missing"
        );
        let (_, enforcers) = get_json(&server, &server.admin_token(), "/api/v1/enforcers").await;
        assert_eq!(enforcers[0]["bootId"], "boot2", "{enforcers}");
        assert_eq!(enforcers[0]["state"], "reporting", "{enforcers}");

        // A pod recreated under the same name is another pod, not a return.
        let mut other = running("cart-0", "boot3");
        other["pod"]["uid"] = json!("uid-of-the-next-cart-0");
        assert_eq!(heartbeat(&server, other).await, 200);
        assert_eq!(
            enforcer_events(&server, "cart-0", "enforcer/returned")
                .await
                .len(),
            1
        );
        server.running.shutdown().await;
    }
}

#[tokio::test]
async fn an_enforcer_restarted_after_a_clean_stop_is_recorded_as_returned_saying_so() {
    for database in each_database("clean_stop").await {
        let server = start_on(&database).await;
        assert_eq!(heartbeat(&server, running("web-1", "b1")).await, 200);
        assert_eq!(
            heartbeat(&server, status("web-1", "b1", "stopping")).await,
            200
        );
        assert_eq!(heartbeat(&server, running("web-1", "b2")).await, 200);
        let returned = enforcer_events(&server, "web-1", "enforcer/returned").await;
        assert_eq!(returned.len(), 1, "{returned:?}");
        assert!(
            returned[0]
                .message
                .ends_with("(boot b1) had stopped cleanly"),
            "{}",
            returned[0].message
        );
        server.running.shutdown().await;
    }
}

#[tokio::test]
async fn the_enforcers_list_says_which_protections_each_enforcer_reports_off_and_why() {
    for database in each_database("protections").await {
        let server = start_on(&database).await;
        let mut blind = running("web-3", "b1");
        blind["enforcer"]["protectionsOff"] = json!([
            {"protection": "drift", "reason": "app runs as uid 1001, the enforcer as 65532"},
            {"protection": "socketOwners", "reason": "the app's fds are unreadable"}
        ]);
        assert_eq!(heartbeat(&server, blind.clone()).await, 200);
        assert_eq!(heartbeat(&server, running("web-4", "b1")).await, 200);
        let enforcer = |enforcers: &Value, pod: &str| -> Value {
            enforcers
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["pod"]["name"] == pod)
                .cloned()
                .unwrap_or_else(|| panic!("{pod} not in {enforcers}"))
        };
        let (status, enforcers) =
            get_json(&server, &server.admin_token(), "/api/v1/enforcers").await;
        assert_eq!(status, 200);
        assert_eq!(
            enforcer(&enforcers, "web-3")["protectionsOff"],
            blind["enforcer"]["protectionsOff"]
        );
        assert!(
            enforcer(&enforcers, "web-4")
                .get("protectionsOff")
                .is_none(),
            "nothing off, nothing said: {enforcers}"
        );
        let records: Vec<EnforcerRecord> = serde_json::from_value(enforcers).unwrap();
        assert_eq!(
            records[0].protections_off[0].protection,
            EnforcerProtection::Drift
        );

        // Each heartbeat says it anew: sight regained, the list is gone.
        assert_eq!(heartbeat(&server, running("web-3", "b1")).await, 200);
        let (_, enforcers) = get_json(&server, &server.admin_token(), "/api/v1/enforcers").await;
        assert!(
            enforcer(&enforcers, "web-3")
                .get("protectionsOff")
                .is_none(),
            "{enforcers}"
        );
        server.running.shutdown().await;
    }
}

#[tokio::test]
async fn an_enforcer_that_says_it_stops_is_not_reported_missing() {
    let server = start(&repo_policies()).await;
    assert_eq!(
        heartbeat(&server, status("web-1", "b1", "running")).await,
        200
    );
    assert_eq!(
        heartbeat(&server, status("web-1", "b1", "stopping")).await,
        200
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let rules = enforcer_rules(&server, "web-1").await;
    assert!(rules.contains(&"enforcer/stopped".to_string()), "{rules:?}");
    assert!(
        !rules.contains(&"enforcer/missing".to_string()),
        "{rules:?}"
    );
    server.running.shutdown().await;
}

#[tokio::test]
async fn the_enforcers_list_shows_which_policy_bundle_each_enforcer_runs() {
    let server = start(&repo_policies()).await;
    let mut beat = status("web-2", "b1", "running");
    beat["enforcer"]["policyEtag"] = json!("etag-one");
    assert_eq!(heartbeat(&server, beat.clone()).await, 200);
    beat["enforcer"]["policyEtag"] = json!("etag-two");
    assert_eq!(heartbeat(&server, beat).await, 200);
    let (_, enforcers) = get_json(&server, &server.admin_token(), "/api/v1/enforcers").await;
    let web = enforcers
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["pod"]["name"] == "web-2")
        .expect("web-2 listed");
    assert_eq!(web["policyEtag"], "etag-two", "{enforcers}");
    server.running.shutdown().await;
}

#[tokio::test]
async fn enforcer_states_and_their_losses_are_metrics() {
    let server = start(&repo_policies()).await;
    let mut beat = status("cart-0", "b1", "running");
    beat["enforcer"]["dropped"] = json!(3);
    beat["enforcer"]["unobserved"] = json!(5);
    assert_eq!(heartbeat(&server, beat).await, 200);
    let mut beat = status("cart-1", "b2", "running");
    beat["enforcer"]["unobserved"] = json!(2);
    assert_eq!(heartbeat(&server, beat).await, 200);
    assert_eq!(
        heartbeat(&server, status("web-1", "b3", "stopping")).await,
        200
    );
    let expected = [
        r#"palisade_enforcers{state="reporting"} 2"#,
        r#"palisade_enforcers{state="stopped"} 1"#,
        "palisade_enforcer_events_dropped 3",
        "palisade_enforcer_processes_unobserved 7",
    ];
    // The gauges follow the database on the service's next sweep.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let text = server
            .client
            .get(format!("{}/metrics", server.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if expected.iter().all(|line| text.contains(line)) {
            break;
        }
        assert!(Instant::now() < deadline, "{expected:?} not all in\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    server.running.shutdown().await;
}

/// What an enforcer in pod `pod` of namespace team-a sends: `items` as
/// `(item, count, first_ms, last_ms)`, all in container `abc`.
fn observations(pod: &str, items: &[(Value, u64, i64, i64)], overflow: u64) -> Value {
    json!({
        "pod": {"namespace": "team-a", "name": pod, "uid": format!("uid-{pod}")},
        "observations": items.iter().map(|(item, count, first, last)| json!({
            "container": "abc", "item": item, "count": count, "firstMs": first, "lastMs": last,
        })).collect::<Vec<_>>(),
        "overflow": overflow,
    })
}

fn server_exe() -> Value {
    json!({"kind": "executable", "path": "/app/server", "sha256": "a".repeat(64), "fromImage": true})
}

async fn post_observations(server: &TestServer, token: &str, body: &Value) -> (u16, Value) {
    let resp = server
        .client
        .post(format!("{}/api/v1/observations", server.base))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

const TEAM_A_ENFORCE: &str = "apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: {name: team-a-enforce}
spec:
  mode: enforce
  selector: {namespaces: [team-a]}
  runtime: {deniedProcesses: [nc]}
";

#[tokio::test]
async fn observations_are_summed_per_workload_and_read_back_with_the_mode_policies_give_it() {
    for database in each_database("observations").await {
        let server = start_on(&database).await;
        let (enforcer, admin) = (server.report_token(), server.admin_token());
        let listen = json!({"kind": "listen", "protocol": "tcp", "port": 8080});
        let egress =
            json!({"kind": "egress", "address": "10.0.0.1", "port": 443, "protocol": "tcp"});
        let first = observations(
            "web-0",
            &[(server_exe(), 3, 1_000, 2_000), (listen, 1, 1_500, 1_500)],
            0,
        );
        assert_eq!(
            post_observations(&server, &enforcer, &first).await,
            (200, json!({"received": 2, "stored": 2}))
        );
        let second = observations(
            "web-0",
            &[(server_exe(), 2, 500, 5_000), (egress, 4, 4_000, 4_000)],
            3,
        );
        assert_eq!(
            post_observations(&server, &enforcer, &second).await,
            (200, json!({"received": 2, "stored": 2}))
        );

        // No cluster here: the pod is its own workload. The repository's
        // runtime-defaults (audit, every namespace) selects it.
        let (status, list) = get_json(&server, &admin, "/api/v1/workloads?namespace=team-a").await;
        assert_eq!(status, 200, "{list}");
        let list: Vec<WorkloadRecord> = serde_json::from_value(list).unwrap();
        let web = WorkloadRef {
            namespace: "team-a".into(),
            kind: "Pod".into(),
            name: "web-0".into(),
        };
        assert_eq!(list.len(), 1, "{list:?}");
        assert_eq!(list[0].workload, web);
        assert_eq!((list[0].items, list[0].overflow), (3, 3));
        assert_eq!(list[0].mode, Some(Mode::Audit));
        assert!(
            list[0].first_ms <= list[0].last_new_ms && list[0].last_new_ms <= list[0].last_seen_ms
        );
        assert_eq!(push(&server, &admin, TEAM_A_ENFORCE).await.status(), 200);
        let (_, list) = get_json(&server, &admin, "/api/v1/workloads").await;
        assert_eq!(
            list[0]["mode"], "enforce",
            "the strictest selecting it: {list}"
        );
        let (_, other) = get_json(&server, &admin, "/api/v1/workloads?namespace=team-b").await;
        assert_eq!(other, json!([]));

        // One workload, the kind in any case: counts summed, first and
        // last seen widened; the container is its ID (no pod status here).
        let (status, found) = get_json(&server, &admin, "/api/v1/workloads/team-a/pod/web-0").await;
        assert_eq!(status, 200, "{found}");
        let found: WorkloadObservations = serde_json::from_value(found).unwrap();
        assert_eq!(found.workload.workload, web);
        assert_eq!(found.workload.mode, Some(Mode::Enforce));
        assert_eq!(found.observed.len(), 3);
        let exe = found
            .observed
            .iter()
            .find(|o| o.item.kind().as_str() == "executable")
            .unwrap();
        assert_eq!((exe.count, exe.first_ms, exe.last_ms), (5, 500, 5_000));
        assert_eq!((exe.container.as_str(), exe.image.as_str()), ("abc", ""));
        let (_, recent) = get_json(
            &server,
            &admin,
            "/api/v1/workloads/team-a/Pod/web-0?since=3000",
        )
        .await;
        assert_eq!(recent["observed"].as_array().unwrap().len(), 2, "{recent}");
        let (status, missing) =
            get_json(&server, &admin, "/api/v1/workloads/team-a/deployment/web").await;
        assert_eq!(status, 404);
        assert!(
            missing["error"]
                .as_str()
                .unwrap()
                .contains("team-a/deployment/web"),
            "{missing}"
        );

        for path in ["/api/v1/workloads", "/api/v1/workloads/team-a/Pod/web-0"] {
            let (status, _) = get_json(&server, &enforcer, path).await;
            assert_eq!(status, 401, "enforcers cannot read {path}");
        }

        let metrics = server
            .client
            .get(format!("{}/metrics", server.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        for line in [
            "palisade_observations_received_total 4",
            "palisade_observation_items_overflowed_total 3",
        ] {
            assert!(metrics.contains(line), "{line} in\n{metrics}");
        }
        server.running.shutdown().await;
    }
}

#[tokio::test]
async fn malformed_unauthenticated_or_oversized_observation_batches_store_nothing() {
    let server = start_with(&repo_policies(), |s| s.service.max_batch_events = 2).await;
    let enforcer = server.report_token();
    let relative = json!({"kind": "executable", "path": "bin/sh", "fromImage": false});
    let (status, err) = post_observations(
        &server,
        &enforcer,
        &observations("web-0", &[(server_exe(), 1, 1, 1), (relative, 1, 1, 1)], 0),
    )
    .await;
    assert_eq!(status, 400);
    let message = err["error"].as_str().unwrap();
    assert!(
        message.starts_with("observations[1]: executable path"),
        "{message}"
    );
    let bad_hash =
        json!({"kind": "executable", "path": "/bin/sh", "sha256": "XYZ", "fromImage": true});
    let (status, err) = post_observations(
        &server,
        &enforcer,
        &observations("web-0", &[(bad_hash, 1, 1, 1)], 0),
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        err["error"].as_str().unwrap().contains("observations[0]"),
        "{err}"
    );
    let three = vec![(server_exe(), 1, 1, 1); 3];
    let (status, err) =
        post_observations(&server, &enforcer, &observations("web-0", &three, 0)).await;
    assert_eq!(status, 400);
    assert!(
        err["error"].as_str().unwrap().contains("limit is 2"),
        "{err}"
    );
    let (status, err) = post_observations(&server, &enforcer, &json!({"pod": {}})).await;
    assert_eq!(status, 400, "{err}");
    let valid = observations("web-0", &[(server_exe(), 1, 1, 1)], 0);
    assert_eq!(post_observations(&server, "nope", &valid).await.0, 401);

    let (_, list) = get_json(&server, &server.admin_token(), "/api/v1/workloads").await;
    assert_eq!(list, json!([]), "nothing refused was stored");
    server.running.shutdown().await;
}
