//! The real server on 127.0.0.1, driven with apiserver-shaped AdmissionReviews.

mod common;

use std::time::Duration;

use common::*;
use palisade_common::{ENFORCER_CONTAINER, STATUS_ANNOTATION};
use serde_json::{json, Value};

#[tokio::test]
async fn mutate_injects_and_second_pass_is_a_no_op() {
    let server = start(&repo_policies()).await;
    let review = fixture("pod-create.json");
    let response = server.review("/mutate", &review).await;
    assert!(response.allowed);
    assert_eq!(response.uid, "5e4bd1b4-3a43-4b1c-9a57-2a3c5c0f0a11");
    let pod = patched_object(&review, &response);

    let containers = pod["spec"]["containers"].as_array().unwrap();
    assert_eq!(containers.len(), 1);
    // A native sidecar by default: the first init container.
    let sidecar = &pod["spec"]["initContainers"][0];
    assert_eq!(sidecar["name"], ENFORCER_CONTAINER);
    assert_eq!(sidecar["restartPolicy"], "Always");
    // Runs as the app's UID so it can read the app's /proc entries.
    assert_eq!(sidecar["securityContext"]["runAsUser"], 1000);
    assert_eq!(pod["spec"]["shareProcessNamespace"], true);
    assert_eq!(containers[0]["resources"]["limits"]["memory"], "512Mi");
    assert!(pod["metadata"]["annotations"][STATUS_ANNOTATION].is_string());
    // Everything the apiserver defaulted is untouched.
    assert_eq!(
        pod["spec"]["tolerations"],
        review["request"]["object"]["spec"]["tolerations"]
    );
    assert_eq!(
        pod["metadata"]["managedFields"],
        review["request"]["object"]["metadata"]["managedFields"]
    );

    // Reinvocation with the mutated pod: nothing more to do.
    let again = server
        .review("/mutate", &with_object(&review, pod.clone()))
        .await;
    assert!(again.allowed);
    assert!(again.patch.is_none(), "second pass must not patch");

    // The injected pod passes the repository's policies, restricted audit included.
    let validated = server.review("/validate", &with_object(&review, pod)).await;
    assert!(validated.allowed, "{}", validated.result.message);
    assert_eq!(
        validated.warnings.as_ref().map(Vec::len).unwrap_or(0),
        1,
        "only the audited service-account-token rule warns: {:?}",
        validated.warnings
    );
    server.running.shutdown().await;
}

#[tokio::test]
async fn dry_run_requests_are_mutated_too() {
    let server = start(&repo_policies()).await;
    let mut review = fixture("pod-create.json");
    review["request"]["dryRun"] = json!(true);
    let response = server.review("/mutate", &review).await;
    assert!(response.patch.is_some());
    server.running.shutdown().await;
}

#[tokio::test]
async fn opt_out_annotation_skips_the_enforcer_and_validation_allows_it() {
    let server = start(&repo_policies()).await;
    let mut review = fixture("pod-create.json");
    review["request"]["object"]["metadata"]["annotations"] =
        json!({"palisade.dev/inject": "false"});
    let response = server.review("/mutate", &review).await;
    assert!(response.allowed);
    assert_eq!(
        response
            .audit_annotations
            .get("injection-skipped")
            .map(String::as_str),
        Some("opted-out")
    );
    // No enforcer, but resource defaults still apply (the fixture's
    // container set none), so the pod passes the resource-limits policy.
    let pod = patched_object(&review, &response);
    assert_eq!(pod["spec"]["containers"].as_array().unwrap().len(), 1);
    assert!(pod["spec"].get("initContainers").is_none());
    assert_eq!(
        pod["spec"]["containers"][0]["resources"]["limits"]["cpu"],
        "1"
    );
    let status: Value = serde_json::from_str(
        pod["metadata"]["annotations"][STATUS_ANNOTATION]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(status["skipped"], "opted-out");
    let validated = server.review("/validate", &with_object(&review, pod)).await;
    assert!(validated.allowed, "{}", validated.result.message);
    server.running.shutdown().await;
}

#[tokio::test]
async fn privileged_pod_is_denied_naming_rules_and_paths() {
    let server = start(&repo_policies()).await;
    let review = fixture("pod-privileged.json");
    let response = server.review("/validate", &review).await;
    assert!(!response.allowed);
    assert_eq!(response.result.code, 403);
    let msg = &response.result.message;
    for expected in [
        "[pod-security-baseline] podSecurity/privileged: spec.containers[0].securityContext.privileged",
        "[image-tags] images/disallowedTags: spec.containers[0].image",
        "[require-enforcer] enforcer/required: spec.containers",
    ] {
        assert!(msg.contains(expected), "missing {expected:?} in {msg}");
    }
    server.running.shutdown().await;
}

#[tokio::test]
async fn workload_templates_are_validated_with_template_paths() {
    let server = start(&repo_policies()).await;
    let response = server
        .review("/validate", &fixture("deployment-latest.json"))
        .await;
    assert!(!response.allowed);
    assert!(
        response
            .result
            .message
            .contains("spec.template.spec.containers[0].image"),
        "{}",
        response.result.message
    );
    // A template is judged as its pods will be after injection: no missing
    // enforcer, no missing limits (defaults apply), the sidecar compliant.
    assert!(!response.result.message.contains("enforcer/required"));
    assert!(
        !response.result.message.contains("resources/required"),
        "{}",
        response.result.message
    );
    let mut fixed = fixture("deployment-latest.json");
    fixed["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("ghcr.io/acme/api:1.4.2");
    let response = server.review("/validate", &fixed).await;
    assert!(response.allowed, "{}", response.result.message);

    let response = server
        .review("/validate", &fixture("cronjob-hostpath.json"))
        .await;
    assert!(!response.allowed);
    assert!(
        response.result.message.contains(
            "podSecurity/hostPathVolumes: spec.jobTemplate.spec.template.spec.volumes[0].hostPath"
        ),
        "{}",
        response.result.message
    );
    server.running.shutdown().await;
}

#[tokio::test]
async fn unknown_kinds_and_excluded_namespaces_are_allowed() {
    let server = start(&repo_policies()).await;
    let response = server
        .review("/validate", &fixture("configmap-create.json"))
        .await;
    assert!(response.allowed);
    let mut review = fixture("pod-privileged.json");
    review["request"]["namespace"] = json!("kube-system");
    assert!(server.review("/validate", &review).await.allowed);
    assert!(server.review("/mutate", &review).await.patch.is_none());
    server.running.shutdown().await;
}

#[tokio::test]
async fn updates_that_keep_the_pod_spec_are_not_rejudged() {
    let server = start(&repo_policies()).await;
    let mut review = fixture("pod-privileged.json");
    review["request"]["operation"] = json!("UPDATE");
    review["request"]["oldObject"] = review["request"]["object"].clone();
    review["request"]["object"]["metadata"]["labels"]["touched"] = json!("yes");
    assert!(server.review("/validate", &review).await.allowed);
    review["request"]["object"]["spec"]["containers"][0]["image"] = json!("busybox:latest");
    review["request"]["oldObject"]["spec"]["containers"][0]["image"] = json!("busybox:1.36");
    assert!(!server.review("/validate", &review).await.allowed);
    server.running.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_clear_errors() {
    let server = start(&repo_policies()).await;
    let cases: Vec<(Vec<u8>, u16, &str)> = vec![
        (b"{not json".to_vec(), 400, "malformed AdmissionReview"),
        (
            br#"{"apiVersion":"admission.k8s.io/v1beta1","kind":"AdmissionReview","request":null}"#
                .to_vec(),
            400,
            "unsupported AdmissionReview admission.k8s.io/v1beta1",
        ),
        (
            br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}"#.to_vec(),
            400,
            "no request",
        ),
        (
            vec![b' '; 8 * 1024 * 1024],
            413,
            "exceeds admission.max_body_bytes",
        ),
    ];
    for (body, status, text) in cases {
        let resp = server.post("/mutate", body).await;
        assert_eq!(resp.status().as_u16(), status);
        let err: Value = resp.json().await.unwrap();
        assert!(err["error"].as_str().unwrap().contains(text), "{err}");
    }
    // A review whose object is not a pod spec: an AdmissionResponse error,
    // carrying the request uid.
    let mut review = fixture("pod-create.json");
    review["request"]["object"]["spec"] = json!({"containers": "nope"});
    let response = server.review("/validate", &review).await;
    assert!(!response.allowed);
    assert_eq!(response.result.code, 400);
    assert!(
        response.result.message.contains("cannot read spec"),
        "{}",
        response.result.message
    );
    assert_eq!(
        server
            .client
            .get(format!("{}/nope", server.base))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );
    server.running.shutdown().await;
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let server = start(&repo_policies()).await;
    server.review("/mutate", &fixture("pod-create.json")).await;
    let get = |p: &str| server.client.get(format!("{}{p}", server.base)).send();
    assert_eq!(get("/healthz").await.unwrap().status(), 200);
    assert_eq!(get("/readyz").await.unwrap().status(), 200);
    let metrics = get("/metrics").await.unwrap().text().await.unwrap();
    assert!(
        metrics.contains(
            r#"palisade_admission_requests_total{endpoint="mutate",outcome="patched"} 1"#
        ),
        "{metrics}"
    );
    assert!(
        metrics.contains("palisade_admission_duration_seconds_bucket"),
        "{metrics}"
    );
    assert!(metrics.contains("palisade_policies_loaded 8"), "{metrics}");
    server.running.shutdown().await;
}

#[tokio::test]
async fn http2_is_negotiated() {
    let server = start(&repo_policies()).await;
    let ca = std::fs::read(server.tls_dir.path().join("ca.crt")).unwrap();
    let h2 = client_builder_trusting(&ca)
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let resp = h2
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    server.running.shutdown().await;
}

#[tokio::test]
async fn an_http1_request_head_over_8_kib_is_refused_but_a_larger_body_is_read_whole() {
    let server = start(&repo_policies()).await;
    let ca = std::fs::read(server.tls_dir.path().join("ca.crt")).unwrap();
    let h1 = client_builder_trusting(&ca).http1_only().build().unwrap();
    let resp = h1
        .get(format!("{}/healthz", server.base))
        .header("x-padding", "x".repeat(9 * 1024))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 431, "request header fields too large");
    // The bound is the head's: a review of over 100 KiB is read in pieces.
    let mut review = fixture("pod-create.json");
    review["request"]["object"]["metadata"]["annotations"]["padding"] =
        json!("x".repeat(100 * 1024));
    let resp = h1
        .post(format!("{}/validate", server.base))
        .header("content-type", "application/json")
        .body(serde_json::to_vec(&review).unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["response"]["uid"], review["request"]["uid"]);
    server.running.shutdown().await;
}

#[tokio::test]
async fn policy_changes_apply_without_restart_and_bad_ones_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let policy = |mode: &str| {
        format!(
        "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {{name: tags}}\nspec:\n  mode: {mode}\n  admission: {{disallowedTags: [latest]}}\n")
    };
    std::fs::write(dir.path().join("tags.yaml"), policy("audit")).unwrap();
    let server = start(dir.path()).await;
    let review = fixture("pod-privileged.json");
    let response = server.review("/validate", &review).await;
    assert!(response.allowed);
    let warnings = response.warnings.unwrap_or_default();
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("images/disallowedTags: spec.containers[0].image")),
        "{warnings:?}"
    );

    std::fs::write(dir.path().join("tags.yaml"), policy("enforce")).unwrap();
    wait_until(|| async { !server.review("/validate", &review).await.allowed }).await;

    // A broken file is refused; the enforce policy stays active.
    std::fs::write(dir.path().join("broken.yaml"), "apiVersion: palisade.dev/v1alpha1\nkind: RuntimePolicy\nmetadata: {name: x}\nspec: {mode: sometimes}\n").unwrap();
    let metrics_url = format!("{}/metrics", server.base);
    wait_until(|| async {
        let m = server
            .client
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        m.contains("palisade_policy_reload_failures_total 1")
    })
    .await;
    assert!(!server.review("/validate", &review).await.allowed);
    server.running.shutdown().await;
}

#[tokio::test]
async fn rotated_certificate_files_are_served_without_restart() {
    let policies = repo_policies();
    let certs = tempfile::tempdir().unwrap();
    let first = palisade_server::tls::generate_self_signed(&["localhost".into()]).unwrap();
    first.write_to(certs.path()).unwrap();
    let (cert, key) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    let server = start_with(&policies, |s| {
        s.tls.cert_file = Some(cert.clone());
        s.tls.key_file = Some(key.clone());
    })
    .await;
    let old_client = client_trusting(first.ca_pem.as_bytes());
    let url = format!("{}/healthz", server.base);
    assert_eq!(old_client.get(&url).send().await.unwrap().status(), 200);

    let second = palisade_server::tls::generate_self_signed(&["localhost".into()]).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // distinct mtime
    second.write_to(certs.path()).unwrap();
    let new_client = client_trusting(second.ca_pem.as_bytes());
    wait_until(|| async { new_client.get(&url).send().await.is_ok() }).await;
    assert!(
        client_trusting(first.ca_pem.as_bytes())
            .get(&url)
            .send()
            .await
            .is_err(),
        "old CA no longer verifies the served certificate"
    );
    server.running.shutdown().await;
}

#[tokio::test]
async fn shutdown_finishes_and_stops_listening() {
    let server = start(&repo_policies()).await;
    let addr = server.running.addr;
    server.running.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_container_posing_as_the_enforcer_is_refused_by_mutate_and_validate() {
    let server = start(&repo_policies()).await;
    let mut review = fixture("pod-create.json");
    review["request"]["object"]["spec"]["containers"][0]["name"] = json!(ENFORCER_CONTAINER);
    let response = server.review("/mutate", &review).await;
    assert!(!response.allowed);
    assert_eq!(response.result.code, 403);
    let message = &response.result.message;
    assert!(
        message.starts_with("denied by Palisade: spec.containers[0]: container name \"palisade-enforcer\" is reserved"),
        "{message}"
    );
    assert!(
        message.contains("registry.k8s.io/nginx-slim:0.27"),
        "{message}"
    );
    // Admitted past an unreachable injector, require-enforcer refuses it.
    let validated = server.review("/validate", &review).await;
    assert!(!validated.allowed);
    assert!(
        validated
            .result
            .message
            .contains("[require-enforcer] enforcer/required: spec.containers[0]: container name"),
        "{}",
        validated.result.message
    );
    server.running.shutdown().await;
}

#[tokio::test]
async fn windows_and_host_pid_pods_are_skipped_with_a_reason_and_counted() {
    let server = start(&repo_policies()).await;
    let mut review = fixture("pod-create.json");
    review["request"]["object"]["spec"]["os"] = json!({"name": "windows"});
    // Windows pods cannot carry Linux securityContext fields.
    review["request"]["object"]["spec"]["containers"][0]["securityContext"] =
        json!({"runAsNonRoot": true});
    let response = server.review("/mutate", &review).await;
    assert_eq!(
        response
            .audit_annotations
            .get("injection-skipped")
            .map(String::as_str),
        Some("windows")
    );
    let pod = patched_object(&review, &response);
    assert!(pod["spec"].get("shareProcessNamespace").is_none());
    assert!(pod["spec"].get("initContainers").is_none());
    // require-enforcer does not ask Windows pods for a Linux enforcer.
    let validated = server.review("/validate", &with_object(&review, pod)).await;
    assert!(
        !validated.result.message.contains("enforcer/required"),
        "{}",
        validated.result.message
    );

    let mut review = fixture("pod-create.json");
    review["request"]["object"]["spec"]["hostPID"] = json!(true);
    let response = server.review("/mutate", &review).await;
    assert_eq!(
        response
            .audit_annotations
            .get("injection-skipped")
            .map(String::as_str),
        Some("host-pid")
    );
    let pod = patched_object(&review, &response);
    assert!(pod["spec"].get("shareProcessNamespace").is_none());

    let mut review = fixture("pod-create.json");
    review["request"]["object"]["spec"]["shareProcessNamespace"] = json!(false);
    let response = server.review("/mutate", &review).await;
    assert_eq!(
        response
            .audit_annotations
            .get("injection-degraded")
            .map(String::as_str),
        Some("process-namespace-not-shared")
    );

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
        r#"palisade_injections_total{result="skipped",reason="windows"} 1"#,
        r#"palisade_injections_total{result="skipped",reason="host-pid"} 1"#,
        r#"palisade_injections_total{result="degraded",reason="process-namespace-not-shared"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} in {metrics}");
    }
    server.running.shutdown().await;
}

#[tokio::test]
async fn a_request_only_container_gets_a_limit_the_resource_policy_accepts() {
    let server = start(&repo_policies()).await;
    let mut review = fixture("pod-create.json");
    review["request"]["object"]["spec"]["containers"][0]["resources"] =
        json!({"requests": {"memory": "1Gi"}});
    let response = server.review("/mutate", &review).await;
    let pod = patched_object(&review, &response);
    let resources = &pod["spec"]["containers"][0]["resources"];
    assert_eq!(resources["requests"]["memory"], "1Gi");
    assert_eq!(
        resources["limits"]["memory"], "1Gi",
        "raised to the request"
    );
    let validated = server.review("/validate", &with_object(&review, pod)).await;
    assert!(validated.allowed, "{}", validated.result.message);
    server.running.shutdown().await;
}

#[tokio::test]
async fn workload_updates_that_change_only_template_metadata_are_rejudged() {
    let server = start(&repo_policies()).await;
    let mut review = fixture("deployment-latest.json");
    review["request"]["object"]["spec"]["template"]["spec"]["containers"][0]["image"] =
        json!("registry.k8s.io/nginx-slim:0.27");
    assert!(server.review("/validate", &review).await.allowed);
    review["request"]["operation"] = json!("UPDATE");
    review["request"]["oldObject"] = review["request"]["object"].clone();
    review["request"]["object"]["spec"]["template"]["metadata"]["annotations"] =
        json!({"container.apparmor.security.beta.kubernetes.io/api": "unconfined"});
    let response = server.review("/validate", &review).await;
    assert!(
        !response.allowed,
        "template annotation change was not judged"
    );
    assert!(
        response
            .result
            .message
            .contains("podSecurity/appArmorProfile"),
        "{}",
        response.result.message
    );
    // The empty value is the runtime default, which Pod Security allows.
    review["request"]["object"]["spec"]["template"]["metadata"]["annotations"] =
        json!({"container.apparmor.security.beta.kubernetes.io/api": ""});
    let response = server.review("/validate", &review).await;
    assert!(response.allowed, "{}", response.result.message);
    server.running.shutdown().await;
}

#[tokio::test]
async fn readiness_answers_503_while_draining_then_the_listener_closes() {
    let server = start_with(&repo_policies(), |s| s.shutdown_drain_secs = 2).await;
    let addr = server.running.addr;
    let url = |p: &str| format!("{}{p}", server.base);
    assert_eq!(
        server
            .client
            .get(url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let stopping = tokio::spawn(server.running.shutdown());
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Still serving, but no longer ready.
    let ready = server.client.get(url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let review = serde_json::to_vec(&fixture("pod-create.json")).unwrap();
    let mutated = server
        .client
        .post(url("/mutate"))
        .header("content-type", "application/json")
        .body(review)
        .send()
        .await
        .unwrap();
    assert_eq!(
        mutated.status(),
        200,
        "admission still answered during the drain"
    );
    stopping.await.unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_disconnected() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::rustls;

    let server = start_with(&repo_policies(), |s| s.header_read_timeout_secs = 1).await;
    let ca = std::fs::read(server.tls_dir.path().join("ca.crt")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    use rustls_pki_types::pem::PemObject;
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&ca) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(server.running.addr)
        .await
        .unwrap();
    let name = rustls_pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .expect("the server closes the connection before 5 s");
    // Closed (EOF or reset), after about the configured second; hyper may
    // answer 408 first.
    match read {
        Ok(0) | Err(_) => {}
        Ok(n) => assert!(
            String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 408"),
            "{}",
            String::from_utf8_lossy(&buf[..n])
        ),
    }
    assert!(
        started.elapsed() >= Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
    server.running.shutdown().await;
}

#[tokio::test]
async fn a_certificate_rotated_one_file_at_a_time_never_breaks_handshakes() {
    let certs = tempfile::tempdir().unwrap();
    let first = palisade_server::tls::generate_self_signed(&["localhost".into()]).unwrap();
    first.write_to(certs.path()).unwrap();
    let (cert, key) = (certs.path().join("tls.crt"), certs.path().join("tls.key"));
    let server = start_with(&repo_policies(), |s| {
        s.tls.cert_file = Some(cert.clone());
        s.tls.key_file = Some(key.clone());
    })
    .await;
    let url = format!("{}/healthz", server.base);
    let metrics_url = format!("{}/metrics", server.base);
    let old_client = client_trusting(first.ca_pem.as_bytes());

    // The new certificate lands first; its key is not there yet.
    let second = palisade_server::tls::generate_self_signed(&["localhost".into()]).unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await; // distinct mtime
    std::fs::write(&cert, &second.cert_pem).unwrap();
    wait_until(|| async {
        let m = old_client
            .get(&metrics_url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        m.contains("palisade_tls_reload_failures_total 1")
    })
    .await;
    // The old pair is still served: handshakes keep working.
    assert_eq!(old_client.get(&url).send().await.unwrap().status(), 200);

    // The key follows: the new pair is complete and taken.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&key, &second.key_pem).unwrap();
    let new_client = client_trusting(second.ca_pem.as_bytes());
    wait_until(|| async { new_client.get(&url).send().await.is_ok() }).await;
    server.running.shutdown().await;
}

async fn wait_until<F, Fut>(mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("condition not met within 10 s");
}
