//! Starts the real server on 127.0.0.1 with a self-signed CA and gives a
//! client that trusts it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use kube::core::admission::{AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;
use palisade_engine::settings::Settings;
use palisade_server::app::{self, Running};
use serde_json::Value;

pub struct TestServer {
    pub running: Running,
    pub client: reqwest::Client,
    pub base: String,
    pub tls_dir: tempfile::TempDir,
}

pub fn fixture(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/admission")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is JSON")
}

pub fn repo_policies() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies")
}

pub fn test_settings(policies: &Path, tls_dir: &Path) -> Settings {
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().unwrap(),
        ..Settings::default()
    };
    settings.policies.dir = policies.to_path_buf();
    settings.policies.reload_interval_secs = 1;
    settings.tls.self_signed_dir = Some(tls_dir.to_path_buf());
    settings.tls.reload_interval_secs = 1;
    settings.service.data_dir = tls_dir.join("data");
    settings.service.sync_interval_ms = 100;
    // Tests stop servers often; the drain is tested on its own.
    settings.shutdown_drain_secs = 0;
    settings
}

pub async fn start(policies: &Path) -> TestServer {
    start_with(policies, |_| {}).await
}

pub async fn start_with(policies: &Path, tweak: impl FnOnce(&mut Settings)) -> TestServer {
    let tls_dir = tempfile::tempdir().unwrap();
    let mut settings = test_settings(policies, tls_dir.path());
    tweak(&mut settings);
    let running = app::start(settings).await.expect("server starts");
    // With configured certificate files there is no generated CA; callers
    // then build their own client.
    let client = match std::fs::read(tls_dir.path().join("ca.crt")) {
        Ok(ca) => client_trusting(&ca),
        Err(_) => reqwest::Client::new(),
    };
    let base = format!("https://localhost:{}", running.addr.port());
    TestServer {
        running,
        client,
        base,
        tls_dir,
    }
}

pub fn client_trusting(ca_pem: &[u8]) -> reqwest::Client {
    client_builder_trusting(ca_pem).build().unwrap()
}

/// A client of the test server's CA, to be set further (HTTP version).
pub fn client_builder_trusting(ca_pem: &[u8]) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem).unwrap())
        .resolve("localhost", "127.0.0.1:0".parse().unwrap())
}

impl TestServer {
    /// The generated admin token.
    pub fn admin_token(&self) -> String {
        let path = self.tls_dir.path().join("data/admin.token");
        std::fs::read_to_string(path)
            .expect("admin token generated")
            .trim()
            .to_string()
    }

    /// The generated enforcer (report) token.
    pub fn report_token(&self) -> String {
        let path = self.tls_dir.path().join("data/report.token");
        std::fs::read_to_string(path)
            .expect("report token generated")
            .trim()
            .to_string()
    }

    pub async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// Posts an AdmissionReview and returns its response.
    pub async fn review(&self, path: &str, review: &Value) -> AdmissionResponse {
        let resp = self.post(path, serde_json::to_vec(review).unwrap()).await;
        assert_eq!(resp.status(), 200, "{path}");
        let mut raw: Value = resp.json().await.expect("JSON");
        // The API's patch is base64 ([]byte); kube's type reads a byte array.
        if let Some(patch) = raw["response"].get("patch") {
            use base64::Engine;
            let text = patch.as_str().expect("patch is a base64 string");
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(text)
                .expect("valid base64");
            assert_eq!(raw["response"]["patchType"], "JSONPatch");
            raw["response"]["patch"] = serde_json::json!(bytes);
        }
        let body: AdmissionReview<DynamicObject> =
            serde_json::from_value(raw).expect("AdmissionReview");
        assert_eq!(body.types.api_version, "admission.k8s.io/v1");
        body.response.expect("response present")
    }
}

/// Applies the response's JSON patch to the review's object.
pub fn patched_object(review: &Value, response: &AdmissionResponse) -> Value {
    let mut object = review["request"]["object"].clone();
    if let Some(bytes) = &response.patch {
        let patch: json_patch::Patch = serde_json::from_slice(bytes).expect("patch is JSON Patch");
        json_patch::patch(&mut object, &patch).expect("patch applies");
    }
    object
}

/// `review` with its object replaced (and a new uid).
pub fn with_object(review: &Value, object: Value) -> Value {
    let mut r = review.clone();
    r["request"]["object"] = object;
    r["request"]["uid"] = Value::String("00000000-0000-0000-0000-00000000beef".into());
    r
}
