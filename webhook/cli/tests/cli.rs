//! The `palisade` binary's commands against a real server and real files.

// The server suite's helpers: the CLI is tested against a running service.
#[path = "../../server/tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

use common::*;
use palisade_common::observe::{Observation, ObservationBatch, Observed, Protocol};
use palisade_common::policy::{Mode, PolicyDocument};
use palisade_common::wire::{Event, EventKind, PodRef, ReportBatch};

fn palisade(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_palisade"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("PALISADE_CONFIG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("palisade runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const DEPLOYMENT: &str = "apiVersion: apps/v1
kind: Deployment
metadata: {name: api}
spec:
  selector: {matchLabels: {app: api}}
  template:
    metadata: {labels: {app: api}}
    spec:
      containers: [{name: api, image: 'nginx:latest'}]
";

#[test]
fn inject_reads_stdin_and_prints_injected_manifests() {
    let out = palisade(&["inject", "-f", "-"], Some(DEPLOYMENT));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("name: palisade-enforcer"), "{stdout}");
    assert!(stdout.contains("shareProcessNamespace: true"), "{stdout}");
}

#[test]
fn denials_name_the_container_at_the_place_the_manifest_wrote_it() {
    // The template is judged with the enforcer added as a native sidecar,
    // ahead of the user's init container: the path is still the user's.
    let with_init = DEPLOYMENT.replace(
        "      containers:",
        "      initContainers: [{name: setup, image: 'busybox:latest'}]\n      containers:",
    );
    let out = palisade(
        &["check", "-f", "-", "--policies", "../../policies"],
        Some(&with_init),
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "images/disallowedTags: spec.template.spec.initContainers[0].image: \
             container \"setup\": image tag \"latest\" is not allowed"
        ),
        "{stdout}"
    );
    assert!(
        stdout.contains("spec.template.spec.initContainers[0].securityContext.runAsNonRoot: container \"setup\""),
        "{stdout}"
    );
    assert!(!stdout.contains("initContainers[1]"), "{stdout}");
}

#[test]
fn check_exits_non_zero_on_enforce_violations() {
    let out = palisade(
        &["check", "-f", "-", "--policies", "../../policies"],
        Some(DEPLOYMENT),
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(stdout.contains("Deployment/api: deny: [image-tags] images/disallowedTags: spec.template.spec.containers[0].image"), "{stdout}");
    assert!(
        stdout.contains("Deployment/api: warn: [pod-security-restricted]"),
        "{stdout}"
    );
    // What an enforce switch would deny: the audit policies deny too.
    let out = palisade(
        &[
            "check",
            "-f",
            "-",
            "--policies",
            "../../policies",
            "--as-enforce",
        ],
        Some(DEPLOYMENT),
    );
    assert_eq!(out.status.code(), Some(1));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Deployment/api: deny: [pod-security-restricted]"),
        "{stdout}"
    );
    assert!(!stdout.contains(": warn: "), "{stdout}");
    let fixed = DEPLOYMENT.replace("nginx:latest", "registry.k8s.io/nginx-slim:0.27");
    let out = palisade(
        &["check", "-f", "-", "--policies", "../../policies"],
        Some(&fixed),
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    let out = palisade(
        &[
            "check",
            "-f",
            "/nonexistent.yaml",
            "--policies",
            "../../policies",
        ],
        None,
    );
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("reading /nonexistent.yaml"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_push_list_delete_and_events_against_a_server() {
    let server = start(&repo_policies()).await;
    let dir = tempfile::tempdir().unwrap();
    let policy = dir.path().join("p.yaml");
    std::fs::write(
        &policy,
        "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {name: no-shells}\nspec:\n  mode: enforce\n  runtime: {deniedProcesses: [sh]}\n",
    )
    .unwrap();
    let ca = server.tls_dir.path().join("ca.crt");
    let token = server.admin_token();
    let conn = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        args.extend([
            "--server".into(),
            server.base.clone(),
            "--token".into(),
            token.clone(),
            "--ca-file".into(),
            ca.display().to_string(),
        ]);
        args
    };
    let run = |args: Vec<String>| {
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        palisade(&refs, None)
    };

    let out = tokio::task::block_in_place(|| {
        run(conn(&["policy", "push", "-f", policy.to_str().unwrap()]))
    });
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "policy/no-shells pushed (revision 1)\n");

    let out = tokio::task::block_in_place(|| run(conn(&["policy", "list"])));
    let listing = text(&out.stdout);
    assert!(listing.starts_with("NAME"), "{listing}");
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("no-shells") && l.contains("enforce") && l.contains("api")),
        "{listing}"
    );

    // A bad document: the server's precise error, non-zero exit.
    std::fs::write(&policy, "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {name: x}\nspec: {mode: sometimes}\n").unwrap();
    let out = tokio::task::block_in_place(|| {
        run(conn(&["policy", "push", "-f", policy.to_str().unwrap()]))
    });
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("400 Bad Request"),
        "{}",
        text(&out.stderr)
    );

    // Exceptions: pushed, listed with their state, refused when invalid
    // or when they push a policy, deleted.
    let exception = dir.path().join("e.yaml");
    std::fs::write(
        &exception,
        "apiVersion: palisade.dev/v1alpha1\nkind: PolicyException\nmetadata: {name: migration-shell}\n\
         spec:\n  policy: no-shells\n  rules: [behavior/denied-process]\n  selector: {namespaces: [shop]}\n  \
         expiresAt: '2099-01-01T00:00:00Z'\n  reason: data migration\n  owner: shop-team\n\
         ---\napiVersion: palisade.dev/v1alpha1\nkind: PolicyException\nmetadata: {name: old-shell}\n\
         spec:\n  policy: no-shells\n  rules: ['*']\n  selector: {namespaces: [shop]}\n  expiresAt: '2020-01-01T00:00:00Z'\n  reason: gone\n  owner: ops\n",
    )
    .unwrap();
    let out = tokio::task::block_in_place(|| {
        run(conn(&[
            "exception",
            "push",
            "-f",
            exception.to_str().unwrap(),
        ]))
    });
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        "policyexception/migration-shell pushed (revision 1)\npolicyexception/old-shell pushed (revision 1)\n"
    );
    let out = tokio::task::block_in_place(|| run(conn(&["exception", "list"])));
    let listing = text(&out.stdout);
    assert!(listing.starts_with("NAME"), "{listing}");
    assert!(
        listing.lines().any(|l| l.starts_with("migration-shell")
            && l.contains("no-shells")
            && l.contains("active")
            && l.contains("2099-01-01T00:00:00Z")
            && l.contains("shop-team")),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.starts_with("old-shell") && l.contains("expired")),
        "expired exceptions are listed as such: {listing}"
    );
    std::fs::write(&exception, "apiVersion: palisade.dev/v1alpha1\nkind: PolicyException\nmetadata: {name: x}\nspec: {policy: p, rules: ['*'], selector: {namespaces: [shop]}, expiresAt: tomorrow, reason: r, owner: o}\n").unwrap();
    let out = tokio::task::block_in_place(|| {
        run(conn(&[
            "exception",
            "push",
            "-f",
            exception.to_str().unwrap(),
        ]))
    });
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("expiresAt"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(
        &policy,
        "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {name: y}\nspec: {}\n",
    )
    .unwrap();
    let out = tokio::task::block_in_place(|| {
        run(conn(&["exception", "push", "-f", policy.to_str().unwrap()]))
    });
    assert!(!out.status.success(), "a policy is not an exception");
    assert!(
        text(&out.stderr).contains("expected PolicyException"),
        "{}",
        text(&out.stderr)
    );
    for name in ["migration-shell", "old-shell"] {
        let out = tokio::task::block_in_place(|| run(conn(&["exception", "delete", name])));
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    let out = tokio::task::block_in_place(|| run(conn(&["exception", "list"])));
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "only the header is left"
    );

    let out = tokio::task::block_in_place(|| run(conn(&["policy", "delete", "no-shells"])));
    assert!(out.status.success(), "{}", text(&out.stderr));

    // Events reported by an enforcer show up in the table.
    let batch = ReportBatch {
        pod: PodRef {
            namespace: "shop".into(),
            name: "cart-0".into(),
            uid: "u".into(),
        },
        events: vec![
            Event {
                id: "1".into(),
                time_ms: palisade_server::db::now_ms(),
                kind: EventKind::Behavior,
                rule: "behavior/denied-process".into(),
                policy: None,
                mode: Default::default(),
                message: "sh started".into(),
                process: None,
                action: Some("killed".into()),
                exception: None,
                coverage: None,
            },
            Event::enforcer(
                "2".into(),
                palisade_server::db::now_ms(),
                "enforcer/prevention",
                "container app: prevention full (Landlock ABI 7)".into(),
            ),
        ],
    };
    server
        .client
        .post(format!("{}/api/v1/reports", server.base))
        .bearer_auth(server.report_token())
        .json(&batch)
        .send()
        .await
        .unwrap();
    let out = tokio::task::block_in_place(|| run(conn(&["events", "-n", "shop", "--since", "1h"])));
    let table = text(&out.stdout);
    assert!(table.lines().next().unwrap().starts_with("TIME"), "{table}");
    assert!(
        table.contains("cart-0")
            && table.contains("behavior/denied-process")
            && table.contains("killed"),
        "{table}"
    );
    let out = tokio::task::block_in_place(|| {
        run(conn(&[
            "events",
            "-n",
            "shop",
            "--rule",
            "enforcer/prevention",
        ]))
    });
    let table = text(&out.stdout);
    assert_eq!(table.lines().count(), 2, "{table}{}", text(&out.stderr));
    assert!(table.contains("prevention full"), "{table}");

    let out = tokio::task::block_in_place(|| {
        run(vec![
            "policy".into(),
            "list".into(),
            "--server".into(),
            server.base.clone(),
            "--token".into(),
            "wrong-token".into(),
            "--ca-file".into(),
            ca.display().to_string(),
        ])
    });
    assert!(text(&out.stderr).contains("401"), "{}", text(&out.stderr));
    server.running.shutdown().await;
}

/// `palisade inject` against golden files (like Istio's
/// `testdata/inject/*.yaml.injected`): each `tests/golden/X.yaml` must
/// inject to exactly `X.yaml.injected`, with `tests/golden/policies`
/// consulted for prevention. `PALISADE_UPDATE_GOLDEN=1`
/// rewrites them; review the diff like any other change.
#[test]
fn inject_matches_the_golden_files() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden");
    let update = std::env::var_os("PALISADE_UPDATE_GOLDEN").is_some();
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    inputs.sort();
    assert!(inputs.len() >= 5, "golden inputs in {}", dir.display());
    let mut stale = Vec::new();
    for input in inputs {
        let policies = dir.join("policies");
        let args = [
            "inject",
            "-f",
            input.to_str().unwrap(),
            "--policies",
            policies.to_str().unwrap(),
        ];
        let out = palisade(&args, None);
        assert!(
            out.status.success(),
            "{}: {}",
            input.display(),
            text(&out.stderr)
        );
        let golden = input.with_extension("yaml.injected");
        if update {
            std::fs::write(&golden, &out.stdout).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_default();
        if want != text(&out.stdout) {
            stale.push(format!(
                "{}:\n--- want\n{want}\n--- got\n{}",
                golden.display(),
                text(&out.stdout)
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "inject output differs (PALISADE_UPDATE_GOLDEN=1 rewrites):\n{}",
        stale.join("\n")
    );
}

/// A stand-in apiserver over plain HTTP: answers GETs of `routes` (path
/// without query) with their JSON, anything else 404. Enough for
/// `palisade status` on bare pods, which reads a namespace and its pods.
fn fake_apiserver(routes: Vec<(String, serde_json::Value)>) -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut request = Vec::new();
            let mut chunk = [0u8; 4096];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                match conn.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
            }
            let request = String::from_utf8_lossy(&request);
            let target = request.split_whitespace().nth(1).unwrap_or("/");
            let path = target.split('?').next().unwrap_or(target);
            let (status, body) = match routes.iter().find(|(p, _)| p == path) {
                Some((_, body)) => ("200 OK", body.to_string()),
                None => (
                    "404 Not Found",
                    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                       "reason": "NotFound", "code": 404, "message": path})
                    .to_string(),
                ),
            };
            let _ = write!(
                conn,
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}")
}

/// A bare pod in namespace shop as `palisade inject` makes it.
fn injected_pod(name: &str, uid: &str) -> serde_json::Value {
    let manifest = format!(
        "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}}}\nspec:\n  containers: [{{name: app, image: 'registry.example.com/app:1.0'}}]\n"
    );
    let out = palisade(&["inject", "-f", "-", "-n", "shop"], Some(&manifest));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut pod: serde_json::Value = serde_yaml::from_slice(&out.stdout).expect("one Pod");
    pod["metadata"]["namespace"] = "shop".into();
    pod["metadata"]["uid"] = uid.into();
    pod
}

#[tokio::test(flavor = "multi_thread")]
async fn status_with_coverage_shows_per_pod_which_protections_are_off_and_why() {
    let server = start(&repo_policies()).await;
    let heartbeat = |pod: &str, uid: &str, off: serde_json::Value| {
        serde_json::json!({
            "pod": {"namespace": "shop", "name": pod, "uid": uid},
            "enforcer": {"bootId": "b1", "startedMs": 1, "heartbeatMs": 10000, "state": "running",
                      "protectionsOff": off}
        })
    };
    for beat in [
        heartbeat(
            "cart-0",
            "u-cart",
            serde_json::json!([{"protection": "drift",
                                "reason": "app runs as uid 1001, the enforcer as 65532"}]),
        ),
        heartbeat("web-0", "u-web", serde_json::json!([])),
        // Left by the pod that old-0 replaced under the same name.
        heartbeat("old-0", "u-previous", serde_json::json!([])),
        {
            let mut beat = heartbeat("once-0", "u-once", serde_json::json!([]));
            beat["enforcer"]["state"] = "stopping".into();
            beat
        },
    ] {
        let resp = server
            .client
            .post(format!("{}/api/v1/heartbeat", server.base))
            .bearer_auth(server.report_token())
            .json(&beat)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let mut pods = tokio::task::block_in_place(|| {
        [
            ("cart-0", "u-cart"),
            ("web-0", "u-web"),
            ("old-0", "u-old"),
            ("once-0", "u-once"),
        ]
        .map(|(name, uid)| injected_pod(name, uid))
    });
    // A Job's pod that completed: its enforcer stopped with it.
    pods[3]["status"] = serde_json::json!({"phase": "Succeeded"});
    let apiserver = fake_apiserver(vec![
        (
            "/api/v1/namespaces/shop".into(),
            serde_json::json!({"apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": "shop", "labels": {"palisade.dev/inject": "enabled"}}}),
        ),
        (
            "/api/v1/namespaces/shop/pods".into(),
            serde_json::json!({"apiVersion": "v1", "kind": "PodList",
                "metadata": {"resourceVersion": "1"}, "items": pods}),
        ),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\n\
             clusters: [{{name: fake, cluster: {{server: '{apiserver}'}}}}]\n\
             users: [{{name: fake, user: {{token: t}}}}]\n\
             contexts: [{{name: fake, context: {{cluster: fake, user: fake}}}}]\n"
        ),
    )
    .unwrap();
    let ca = server.tls_dir.path().join("ca.crt");
    let token = server.admin_token();
    let status = |extra: &[&str]| {
        let mut args = vec![
            "status",
            "-n",
            "shop",
            "--coverage",
            "--server",
            &server.base,
            "--token",
            &token,
            "--ca-file",
            ca.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_palisade"))
            .args(&args)
            .env("KUBECONFIG", &kubeconfig)
            .env_remove("PALISADE_CONFIG")
            .output()
            .unwrap()
    };

    let out = tokio::task::block_in_place(|| status(&[]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    let row = |pod: &str| {
        table
            .lines()
            .find(|l| l.starts_with(&format!("shop       {pod}")))
            .unwrap_or_else(|| panic!("no row for {pod}:\n{table}"))
            .to_string()
    };
    assert!(
        table.lines().next().unwrap().contains("PROTECTIONS OFF"),
        "{table}"
    );
    assert!(
        row("cart-0").contains("drift (app runs as uid 1001, the enforcer as 65532)"),
        "{table}"
    );
    assert!(row("web-0").contains(" none "), "{table}");
    assert!(
        row("old-0").contains("all: no heartbeat from its enforcer"),
        "another pod's heartbeat is not this one's:\n{table}"
    );
    assert!(
        !row("once-0").contains("all:"),
        "a finished pod has nothing left to protect:\n{table}"
    );
    assert_eq!(
        table.lines().last(),
        Some("4 pods: 4 with an enforcer, 0 to restart, 2 with protections off"),
        "{table}"
    );

    let out = tokio::task::block_in_place(|| status(&["-o", "json"]));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let cart = json
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pod"] == "cart-0")
        .unwrap();
    assert_eq!(cart["heartbeat"]["state"], "reporting", "{json}");
    assert_eq!(
        cart["heartbeat"]["protectionsOff"][0]["protection"], "drift",
        "{json}"
    );
    server.running.shutdown().await;
}

const SERVER_SHA: &str = "2222222222222222222222222222222222222222222222222222222222222222";
const SHELL_SHA: &str = "1111111111111111111111111111111111111111111111111111111111111111";

/// What an enforcer of pod `learn/web-0` sends: `items`, each seen
/// `count` times in its app container during the last minute.
fn observed(items: Vec<(Observed, u64)>) -> ObservationBatch {
    let now = palisade_server::db::now_ms();
    ObservationBatch {
        pod: PodRef {
            namespace: "learn".into(),
            name: "web-0".into(),
            uid: "u-web".into(),
        },
        observations: items
            .into_iter()
            .map(|(item, count)| Observation {
                container: "app".into(),
                item,
                count,
                first_ms: now - 60_000,
                last_ms: now,
            })
            .collect(),
        overflow: 0,
    }
}

fn executable(path: &str, sha256: &str, from_image: bool) -> Observed {
    Observed::Executable {
        path: path.into(),
        sha256: Some(sha256.into()),
        from_image,
    }
}

/// `palisade ARGS` as an admin of `server`.
fn palisade_as_admin(server: &TestServer, args: &[&str]) -> Output {
    let ca = server.tls_dir.path().join("ca.crt");
    let token = server.admin_token();
    let mut all = args.to_vec();
    all.extend([
        "--server",
        &server.base,
        "--token",
        &token,
        "--ca-file",
        ca.to_str().unwrap(),
    ]);
    tokio::task::block_in_place(|| palisade(&all, None))
}

/// Posts `batch` as its pod's enforcer would; the service must take it.
async fn post_observations(server: &TestServer, batch: &ObservationBatch) {
    let resp = server
        .client
        .post(format!("{}/api/v1/observations", server.base))
        .bearer_auth(server.report_token())
        .json(batch)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.text().await.unwrap());
}

#[tokio::test(flavor = "multi_thread")]
async fn policy_draft_and_replay_learn_from_what_an_enforcer_posted() {
    let server = start(&repo_policies()).await;
    let post = |batch: ObservationBatch| {
        let server = &server;
        async move { post_observations(server, &batch).await }
    };
    post(observed(vec![
        (executable("/app/server", SERVER_SHA, true), 3),
        (
            Observed::Process {
                name: "server".into(),
                parent: String::new(),
            },
            3,
        ),
        (
            Observed::Listen {
                protocol: Protocol::Tcp,
                port: 8080,
            },
            1,
        ),
        (
            Observed::Egress {
                address: "10.0.0.7".parse().unwrap(),
                port: 5432,
                protocol: Protocol::Tcp,
            },
            9,
        ),
    ]))
    .await;

    let run = |args: &[&str]| palisade_as_admin(&server, args);

    // The draft: a valid policy with what the enforcer saw, commented.
    let out = run(&["policy", "draft", "pod/web-0", "-n", "learn"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let draft = text(&out.stdout);
    let doc = PolicyDocument::from_yaml(&draft).unwrap_or_else(|e| panic!("{e}\n{draft}"));
    assert_eq!(doc.metadata.name, "learned-pod-web-0");
    assert_eq!(doc.spec.mode, Mode::Audit);
    assert_eq!(doc.spec.selector.namespaces, ["learn"]);
    let runtime = doc.spec.runtime.clone().expect("runtime rules");
    assert_eq!(runtime.allowed_executables.len(), 1, "{draft}");
    assert_eq!(runtime.allowed_executables[0].path, "/app/server");
    assert_eq!(
        runtime.allowed_executables[0].sha256.as_deref(),
        Some(SERVER_SHA)
    );
    assert_eq!(runtime.allowed_processes, ["server"]);
    assert_eq!(runtime.allowed_listen_ports, Some(vec![8080]));
    assert_eq!(
        runtime.egress_allow,
        Some(vec!["10.0.0.7/32:5432".to_string()])
    );
    assert!(runtime.prevent, "{draft}");
    assert_eq!(runtime.program_dirs, ["/app"]);
    assert!(draft.contains("# seen 3 times, first "), "{draft}");
    assert!(draft.contains("from the image, containers: "), "{draft}");

    // Replayed against what it was drafted from: nothing, exit 0.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("draft.yaml");
    std::fs::write(&file, &draft).unwrap();
    let file = file.to_str().unwrap();
    let out = run(&["policy", "replay", file, "--since", "1h"]);
    let replay = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{replay}{}", text(&out.stderr));
    assert!(
        replay.contains("learn/pod/web-0: nothing would be reported or killed"),
        "{replay}"
    );

    // A shell copied to /tmp and run: reported under audit, exit 1 ...
    post(observed(vec![(executable("/tmp/x", SHELL_SHA, false), 41)])).await;
    let out = run(&["policy", "replay", file, "--since", "1h", "-n", "learn"]);
    let replay = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{replay}{}", text(&out.stderr));
    assert!(
        replay.contains("learn/pod/web-0: would report 1 distinct executable (41 execs)"),
        "{replay}"
    );
    assert!(
        replay.contains("behavior/executable-not-allowed  executable /tmp/x"),
        "{replay}"
    );
    // ... killed under enforce.
    std::fs::write(file, draft.replace("mode: \"audit\"", "mode: \"enforce\"")).unwrap();
    let out = run(&["policy", "replay", file, "--since", "1h"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stdout).contains("would kill 1 distinct executable (41 execs)"),
        "{}",
        text(&out.stdout)
    );
    // Another namespace's workloads only: nothing selected, nothing found.
    let out = run(&["policy", "replay", file, "--since", "1h", "-n", "elsewhere"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
    assert!(
        text(&out.stdout).contains("selects 0 of 0 recorded workloads"),
        "{}",
        text(&out.stdout)
    );

    // The workload in the status table.
    let out = run(&["status", "--workloads", "-n", "learn"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with("NAMESPACE  WORKLOAD"), "{table}");
    let row = table
        .lines()
        .find(|l| l.starts_with("learn") && l.contains("pod/web-0"))
        .unwrap_or_else(|| panic!("no row for learn/pod/web-0:\n{table}"));
    assert!(
        row.contains(" audit "),
        "runtime-defaults selects it: {row}"
    );
    assert!(row.ends_with(" 5"), "five distinct items: {row}");

    // Errors exit 2: an unknown workload, an invalid policy file.
    let out = run(&["policy", "draft", "deployment/nothing", "-n", "learn"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("no observations of learn/deployment/nothing"),
        "{}",
        text(&out.stderr)
    );
    std::fs::write(
        file,
        draft.replace("mode: \"audit\"", "mode: \"sometimes\""),
    )
    .unwrap();
    let out = run(&["policy", "replay", file]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("sometimes"),
        "{}",
        text(&out.stderr)
    );
    server.running.shutdown().await;
}

/// A replay judges every item its policy's workloads recorded, however
/// many the whole namespace holds: six pods post 1,800 destinations each
/// (10,800 items, past what one listing of the service answers), the pod
/// posting last among them.
#[tokio::test(flavor = "multi_thread")]
async fn replay_judges_every_item_of_the_workloads_it_selects() {
    const PODS: usize = 6;
    const DESTINATIONS: u16 = 1_800;
    let server = start(&repo_policies()).await;
    let now = palisade_server::db::now_ms();
    for pod in 0..PODS {
        let destinations: Vec<Observation> = (1..=DESTINATIONS)
            .map(|port| Observation {
                container: "app".into(),
                item: Observed::Egress {
                    address: format!("10.1.0.{pod}").parse().unwrap(),
                    port,
                    protocol: Protocol::Tcp,
                },
                count: 1,
                first_ms: now - 60_000,
                last_ms: now - 60_000 + pod as i64,
            })
            .collect();
        for chunk in destinations.chunks(900) {
            let batch = ObservationBatch {
                pod: PodRef {
                    namespace: "fleet".into(),
                    name: format!("w-{pod}"),
                    uid: format!("u-{pod}"),
                },
                observations: chunk.to_vec(),
                overflow: 0,
            };
            post_observations(&server, &batch).await;
        }
    }
    let policy = "apiVersion: palisade.dev/v1alpha1
kind: RuntimePolicy
metadata: {name: no-egress}
spec:
  mode: enforce
  selector: {namespaces: [fleet]}
  runtime: {egressAllow: []}
";
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("no-egress.yaml");
    std::fs::write(&file, policy).unwrap();
    let out = palisade_as_admin(
        &server,
        &["policy", "replay", file.to_str().unwrap(), "--since", "1h"],
    );
    let replay = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    for pod in 0..PODS {
        let line = format!(
            "fleet/pod/w-{pod}: would kill {DESTINATIONS} distinct destinations \
             ({DESTINATIONS} connections)"
        );
        assert!(replay.contains(&line), "{line} in\n{}", &replay[..2000]);
    }
    server.running.shutdown().await;
}
