//! The registry conversation of a lookup: a manifest's digest (HEAD), the
//! manifest, and the config blob, with the token dance of the Docker
//! registry token spec.
//!
//! Written here rather than taken from oci-client because everything the
//! registry sends is the pod author's choice, and oci-client has no bounds
//! for it: it reads manifests and token answers whole (`Response::bytes`),
//! fetches a token from whatever realm the registry names, and follows
//! redirects anywhere. Here:
//!
//! - every body is read within a size limit ([`MAX_MANIFEST_BYTES`], the
//!   config limit of the caller, [`MAX_TOKEN_BYTES`]), and stops at it;
//! - a token realm or a redirect may not lead into the server's own
//!   network (loopback, private, link-local) unless the operator listed it,
//!   nor from HTTPS to plain HTTP ([`gate::may_follow`]); and no name, the
//!   registry's included, is connected to at such an address unless listed
//!   ([`gate::reachable_addresses`], applied by the client's resolver);
//! - what is read is checked against the digest it was asked by.
//!
//! oci-client still gives the reference grammar and the manifest types.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use oci_client::manifest::{
    OciManifest, IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::Reference;
use reqwest::header::{HeaderMap, ACCEPT, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode, Url};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::auth::Credential;
use super::failure::LookupFailure;
use super::gate::{self, Reach};

/// An image manifest is a few KiB (a layer is about 200 bytes, and a
/// runtime stacks at most 128); an index of the platforms lookups take on
/// is smaller. This is far above both and far below distribution's 4 MiB.
pub const MAX_MANIFEST_BYTES: usize = 256 * 1024;
/// A token answer (a JWT and a few fields) is a few KiB.
pub const MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Redirects followed for one request (blob stores redirect once).
const MAX_REDIRECTS: usize = 5;
/// A token is reused this long; the token spec's shortest lifetime is 60 s.
const TOKEN_REUSE: Duration = Duration::from_secs(30);
/// Tokens kept, over all repositories and credentials.
const MAX_TOKENS: usize = 1024;
/// The manifest types a runtime pulls.
const MANIFEST_TYPES: [&str; 4] = [
    OCI_IMAGE_MEDIA_TYPE,
    OCI_IMAGE_INDEX_MEDIA_TYPE,
    IMAGE_MANIFEST_MEDIA_TYPE,
    IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];
const DIGEST_HEADER: &str = "docker-content-digest";

/// How a request proves who asks (none: anonymous).
#[derive(Clone)]
enum Authorization {
    Basic(Credential),
    Bearer(String),
}

/// Shared by all lookups: one HTTP client (credentials go with each
/// request, never with the client) and the tokens registries gave.
pub struct RegistryClient {
    http: reqwest::Client,
    reach: Arc<Reach>,
    tokens: Mutex<HashMap<TokenKey, (Authorization, Instant)>>,
}

/// A token is good for one repository and one credential.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct TokenKey {
    registry: String,
    repository: String,
    credential: Option<[u8; 16]>,
}

/// One image's registry, as one lookup speaks to it.
pub struct Session<'a> {
    client: &'a RegistryClient,
    reference: &'a Reference,
    credential: Option<&'a Credential>,
    key: TokenKey,
}

impl RegistryClient {
    /// `timeout` bounds connecting and each read; the caller's deadline
    /// bounds the whole lookup.
    pub fn new(reach: Reach, timeout: Duration) -> Result<Self, reqwest::Error> {
        Self::with_lookup(reach, timeout, Arc::new(system_lookup))
    }

    /// With `lookup` resolving names (the system's, or a test's).
    fn with_lookup(
        reach: Reach,
        timeout: Duration,
        lookup: Lookup,
    ) -> Result<Self, reqwest::Error> {
        let reach = Arc::new(reach);
        let redirects = reach.clone();
        let http = reqwest::Client::builder()
            .connect_timeout(timeout)
            .read_timeout(timeout)
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() >= MAX_REDIRECTS {
                    return attempt.error("too many redirects");
                }
                let from_https = attempt.previous().iter().any(|u| u.scheme() == "https");
                if gate::may_follow(attempt.url(), from_https, &redirects) {
                    attempt.follow()
                } else {
                    attempt.error("redirect into a network lookups may not reach")
                }
            }))
            .dns_resolver(Arc::new(GuardedResolver {
                reach: reach.clone(),
                lookup,
            }))
            // Through a proxy the resolver would see only the proxy's name:
            // lookups connect directly, whatever the environment says.
            .no_proxy()
            .user_agent(concat!("palisade/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            reach,
            tokens: Mutex::new(HashMap::new()),
        })
    }

    /// A conversation about `reference`'s repository, as `credential`.
    pub fn session<'a>(
        &'a self,
        reference: &'a Reference,
        credential: Option<&'a Credential>,
    ) -> Session<'a> {
        let key = TokenKey {
            registry: reference.resolve_registry().to_string(),
            repository: reference.repository().to_string(),
            credential: credential.map(Credential::fingerprint),
        };
        Session {
            client: self,
            reference,
            credential,
            key,
        }
    }

    fn lock_tokens(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<TokenKey, (Authorization, Instant)>> {
        self.tokens.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Session<'_> {
    /// The digest the reference names: its own, or what its tag points at
    /// now (the `Docker-Content-Digest` of a HEAD; a registry that does not
    /// send one is asked for the manifest, which is hashed).
    pub async fn digest(&self) -> Result<String, LookupFailure> {
        if let Some(digest) = self.reference.digest() {
            return Ok(digest.to_string());
        }
        let tag = self.reference.tag().unwrap_or("latest");
        let url = self.url("manifests", tag)?;
        let head = self.send(Method::HEAD, &url, true).await?;
        if let Some(digest) = header_digest(head.headers()) {
            return Ok(digest);
        }
        let body = read_bounded(
            self.send(Method::GET, &url, true).await?,
            MAX_MANIFEST_BYTES,
        )
        .await?;
        Ok(sha256_digest(&body))
    }

    /// The manifest (or index) stored under `digest`, checked against it.
    pub async fn manifest(&self, digest: &str) -> Result<OciManifest, LookupFailure> {
        let url = self.url("manifests", sha256(digest)?)?;
        let body = read_bounded(
            self.send(Method::GET, &url, true).await?,
            MAX_MANIFEST_BYTES,
        )
        .await?;
        verify(&body, digest)?;
        parse_manifest(&body)
    }

    /// The blob stored under `digest`, at most `limit` bytes (its declared
    /// `size` is checked by the caller), checked against the digest.
    pub async fn blob(&self, digest: &str, limit: usize) -> Result<Vec<u8>, LookupFailure> {
        let url = self.url("blobs", sha256(digest)?)?;
        let body = read_bounded(self.send(Method::GET, &url, false).await?, limit).await?;
        verify(&body, digest)?;
        Ok(body)
    }

    /// Plain HTTP only for the registries listed as insecure (matched as
    /// written, as the node's runtime matches them).
    fn scheme(&self) -> &'static str {
        if self.client.reach.insecure.contains(&self.key.registry) {
            "http"
        } else {
            "https"
        }
    }

    /// The request URL, checked again as parsed (the caller's gate judged
    /// the registry as the pod wrote it).
    fn url(&self, kind: &str, target: &str) -> Result<Url, LookupFailure> {
        let (scheme, registry) = (self.scheme(), &self.key.registry);
        let repository = &self.key.repository;
        let url = Url::parse(&format!(
            "{scheme}://{registry}/v2/{repository}/{kind}/{target}"
        ))
        .map_err(|_| LookupFailure::Invalid)?;
        if !gate::may_follow(&url, false, &self.client.reach) {
            return Err(LookupFailure::NotAllowed);
        }
        Ok(url)
    }

    /// Sends with the token kept for this repository; on a 401, answers the
    /// registry's challenge once and sends again.
    async fn send(
        &self,
        method: Method,
        url: &Url,
        manifest: bool,
    ) -> Result<Response, LookupFailure> {
        let kept = self.kept_authorization();
        let response = self
            .request(method.clone(), url, kept.as_ref(), manifest)
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED {
            return accepted(response);
        }
        let challenge = response.headers().get(WWW_AUTHENTICATE).cloned();
        let authorization = self.answer(challenge.as_ref()).await?;
        let response = self
            .request(method, url, Some(&authorization), manifest)
            .await?;
        if response.status().is_success() {
            self.keep(authorization);
        }
        accepted(response)
    }

    async fn request(
        &self,
        method: Method,
        url: &Url,
        authorization: Option<&Authorization>,
        manifest: bool,
    ) -> Result<Response, LookupFailure> {
        let mut request = self.client.http.request(method, url.clone());
        if manifest {
            request = request.header(ACCEPT, MANIFEST_TYPES.join(", "));
        }
        request = match authorization {
            Some(Authorization::Basic(c)) => request.basic_auth(&c.username, Some(&c.password)),
            Some(Authorization::Bearer(token)) => request.bearer_auth(token),
            None => request,
        };
        request.send().await.map_err(|e| request_failure(&e))
    }

    /// What a 401's `WWW-Authenticate` asks for: a bearer token from the
    /// realm it names (with the pull secret's credential, if any), or the
    /// credential itself.
    async fn answer(
        &self,
        challenge: Option<&reqwest::header::HeaderValue>,
    ) -> Result<Authorization, LookupFailure> {
        let challenge = challenge
            .and_then(|v| v.to_str().ok())
            .ok_or(LookupFailure::Unauthorized)?;
        match parse_challenge(challenge) {
            Some(Challenge::Bearer {
                realm,
                service,
                scope,
            }) => {
                let scope =
                    scope.unwrap_or_else(|| format!("repository:{}:pull", self.key.repository));
                self.token(&realm, service.as_deref(), &scope).await
            }
            Some(Challenge::Basic) => self
                .credential
                .map(|c| Authorization::Basic(c.clone()))
                .ok_or(LookupFailure::Unauthorized),
            None => Err(LookupFailure::Unauthorized),
        }
    }

    async fn token(
        &self,
        realm: &str,
        service: Option<&str>,
        scope: &str,
    ) -> Result<Authorization, LookupFailure> {
        let mut url = Url::parse(realm).map_err(|_| LookupFailure::Invalid)?;
        // The credential may go to the realm: over plain HTTP only to a
        // host listed as insecure.
        if !gate::may_follow(&url, true, &self.client.reach) {
            return Err(LookupFailure::NotAllowed);
        }
        {
            let mut query = url.query_pairs_mut();
            if let Some(service) = service {
                query.append_pair("service", service);
            }
            query.append_pair("scope", scope);
        }
        let mut request = self.client.http.get(url);
        if let Some(c) = self.credential {
            request = request.basic_auth(&c.username, Some(&c.password));
        }
        let response = request.send().await.map_err(|e| request_failure(&e))?;
        let body = read_bounded(accepted(response)?, MAX_TOKEN_BYTES).await?;
        #[derive(Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            token: Option<String>,
            #[serde(default)]
            access_token: Option<String>,
        }
        let answer: TokenAnswer =
            serde_json::from_slice(&body).map_err(|_| LookupFailure::Invalid)?;
        answer
            .token
            .or(answer.access_token)
            .filter(|t| !t.is_empty())
            .map(Authorization::Bearer)
            .ok_or(LookupFailure::Invalid)
    }

    fn kept_authorization(&self) -> Option<Authorization> {
        let tokens = self.client.lock_tokens();
        let (authorization, since) = tokens.get(&self.key)?;
        (since.elapsed() < TOKEN_REUSE).then(|| authorization.clone())
    }

    fn keep(&self, authorization: Authorization) {
        let mut tokens = self.client.lock_tokens();
        if tokens.len() >= MAX_TOKENS {
            tokens.retain(|_, (_, since)| since.elapsed() < TOKEN_REUSE);
            if tokens.len() >= MAX_TOKENS {
                tokens.clear();
            }
        }
        tokens.insert(self.key.clone(), (authorization, Instant::now()));
    }
}

/// The system resolver, keeping only the addresses lookups may reach.
struct GuardedResolver {
    reach: Arc<Reach>,
    lookup: Lookup,
}

/// Resolves a host name to addresses.
type Lookup =
    Arc<dyn Fn(String) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> + Send + Sync>;

fn system_lookup(host: String) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> {
    Box::pin(async move { Ok(tokio::net::lookup_host((host.as_str(), 0)).await?.collect()) })
}

/// A name that resolved only to addresses lookups may not reach.
#[derive(Debug, thiserror::Error)]
#[error("{0} resolves only to addresses registry lookups may not reach")]
struct Inward(String);

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let reach = self.reach.clone();
        let host = name.as_str().to_string();
        let resolving = (self.lookup)(host.clone());
        Box::pin(async move {
            let resolved = resolving.await?;
            let reachable = gate::reachable_addresses(&host, resolved, &reach);
            if reachable.is_empty() {
                return Err(Box::new(Inward(host)) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(reachable.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// A `WWW-Authenticate` challenge lookups can answer.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    Basic,
}

/// The first challenge lookups answer (Bearer preferred), parsed with the
/// `http-auth` crate.
fn parse_challenge(header: &str) -> Option<Challenge> {
    let challenges = http_auth::parse_challenges(header).ok()?;
    let param = |c: &http_auth::ChallengeRef<'_>, name: &str| {
        c.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.to_unescaped())
    };
    let bearer = challenges
        .iter()
        .find(|c| c.scheme.eq_ignore_ascii_case("bearer"))
        .and_then(|c| {
            Some(Challenge::Bearer {
                realm: param(c, "realm")?,
                service: param(c, "service"),
                scope: param(c, "scope"),
            })
        });
    bearer.or_else(|| {
        challenges
            .iter()
            .any(|c| c.scheme.eq_ignore_ascii_case("basic"))
            .then_some(Challenge::Basic)
    })
}

/// A response the lookup goes on with (2xx), or what its status means.
fn accepted(response: Response) -> Result<Response, LookupFailure> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    Err(LookupFailure::from_status(status.as_u16()))
}

fn request_failure(e: &reqwest::Error) -> LookupFailure {
    tracing::debug!(error = %e, "registry request failed");
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let inward = std::iter::from_fn(|| {
        let current = source?;
        source = current.source();
        Some(current)
    })
    .any(|cause| cause.is::<Inward>());
    if e.is_timeout() {
        LookupFailure::TimedOut
    } else if e.is_redirect() || inward {
        LookupFailure::NotAllowed
    } else {
        LookupFailure::Unreachable
    }
}

/// The body, read as it arrives and abandoned at `limit` bytes: a
/// registry cannot make the server hold more than that, however fast or
/// long it sends.
async fn read_bounded(mut response: Response, limit: usize) -> Result<Vec<u8>, LookupFailure> {
    let declared = response.content_length().unwrap_or(0);
    if declared > limit as u64 {
        return Err(LookupFailure::TooLarge);
    }
    let mut body = Vec::with_capacity(usize::try_from(declared).unwrap_or(0));
    while let Some(chunk) = response.chunk().await.map_err(|e| request_failure(&e))? {
        if body.len() + chunk.len() > limit {
            return Err(LookupFailure::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn sha256_digest(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

/// Content must be what its digest names. Only SHA-256 is checked, so
/// only SHA-256 digests are taken.
fn verify(body: &[u8], digest: &str) -> Result<(), LookupFailure> {
    if sha256_digest(body) == digest {
        Ok(())
    } else {
        Err(LookupFailure::Invalid)
    }
}

/// A SHA-256 `Docker-Content-Digest`.
fn header_digest(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(DIGEST_HEADER)?.to_str().ok()?.trim();
    sha256(value).ok().map(str::to_string)
}

/// `digest` when it is a well-formed SHA-256 digest. Digests in an index
/// or manifest are the registry's words and go into request paths.
fn sha256(digest: &str) -> Result<&str, LookupFailure> {
    let hex = digest
        .strip_prefix("sha256:")
        .ok_or(LookupFailure::Invalid)?;
    let well_formed =
        hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    well_formed.then_some(digest).ok_or(LookupFailure::Invalid)
}

/// A schema 2 image manifest or index (OCI or Docker).
fn parse_manifest(body: &[u8]) -> Result<OciManifest, LookupFailure> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Versioned {
        schema_version: u8,
        #[serde(default)]
        media_type: Option<String>,
    }
    let versioned: Versioned = serde_json::from_slice(body).map_err(|_| LookupFailure::Invalid)?;
    let known_type = versioned
        .media_type
        .as_deref()
        .is_none_or(|t| MANIFEST_TYPES.contains(&t));
    if versioned.schema_version != 2 || !known_type {
        return Err(LookupFailure::Invalid);
    }
    serde_json::from_slice(body).map_err(|_| LookupFailure::Invalid)
}

#[cfg(test)]
mod tests {
    //! Against a registry that is the attacker's: a raw HTTP/1.1 server on
    //! loopback whose answers each test writes, byte for byte.
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// What the registry sends for one request.
    enum Answer {
        Full {
            status: u16,
            headers: Vec<(String, String)>,
            body: Vec<u8>,
        },
        /// 200 with a chunked body that never ends.
        Endless,
    }

    fn ok(body: &[u8], headers: &[(&str, &str)]) -> Answer {
        Answer::Full {
            status: 200,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.to_vec(),
        }
    }

    fn status(code: u16, headers: &[(&str, &str)]) -> Answer {
        Answer::Full {
            status: code,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: Vec::new(),
        }
    }

    /// A request as the registry saw it: method, path and query, headers.
    #[derive(Debug, Clone)]
    struct Seen {
        line: String,
        authorization: Option<String>,
    }

    type Script = dyn Fn(&Seen) -> Answer + Send + Sync;

    /// Serves `script` on `ip`; returns `host:port` and what it was asked.
    async fn registry(ip: &str, script: Arc<Script>) -> (String, Arc<Mutex<Vec<Seen>>>) {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut stream, _)) = listener.accept().await else {
                    return;
                };
                let (script, log) = (script.clone(), log.clone());
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        if stream.read(&mut byte).await.unwrap_or(0) == 0 {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let mut lines = head.lines();
                    let line = lines.next().unwrap_or_default().to_string();
                    let authorization = lines
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.eq_ignore_ascii_case("authorization"))
                        .map(|(_, v)| v.trim().to_string());
                    let request = Seen {
                        line,
                        authorization,
                    };
                    log.lock().unwrap().push(request.clone());
                    let is_head = request.line.starts_with("HEAD ");
                    match script(&request) {
                        Answer::Full {
                            status,
                            headers,
                            body,
                        } => {
                            let mut out = format!("HTTP/1.1 {status} X\r\nconnection: close\r\ncontent-length: {}\r\n", body.len());
                            for (k, v) in headers {
                                out.push_str(&format!("{k}: {v}\r\n"));
                            }
                            out.push_str("\r\n");
                            let _ = stream.write_all(out.as_bytes()).await;
                            if !is_head {
                                let _ = stream.write_all(&body).await;
                            }
                        }
                        Answer::Endless => {
                            let head = "HTTP/1.1 200 OK\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n";
                            let _ = stream.write_all(head.as_bytes()).await;
                            let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "{".repeat(64 * 1024));
                            while stream.write_all(chunk.as_bytes()).await.is_ok() {}
                        }
                    }
                });
            }
        });
        (addr, seen)
    }

    fn client(insecure: &[&str]) -> RegistryClient {
        let reach = Reach {
            allowed: Vec::new(),
            insecure: insecure.iter().map(|s| s.to_string()).collect(),
        };
        RegistryClient::new(reach, Duration::from_secs(5)).unwrap()
    }

    fn manifest_json(config: &[u8]) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_MEDIA_TYPE,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": sha256_digest(config), "size": config.len()},
            "layers": []
        }))
        .unwrap()
    }

    #[tokio::test]
    async fn a_manifest_without_end_is_abandoned_at_the_limit() {
        let (addr, _) = registry("127.0.0.1", Arc::new(|_: &Seen| Answer::Endless)).await;
        let client = client(&[&addr]);
        let reference: Reference = format!("{addr}/app@sha256:{}", "a".repeat(64))
            .parse()
            .unwrap();
        let started = Instant::now();
        let failure = client
            .session(&reference, None)
            .manifest(reference.digest().unwrap())
            .await;
        assert_eq!(failure.unwrap_err(), LookupFailure::TooLarge);
        // Stopped by the limit, not by a timeout.
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // The tag path too: no digest header, so the manifest is read.
        let tagged: Reference = format!("{addr}/app:1").parse().unwrap();
        let failure = client.session(&tagged, None).digest().await;
        assert_eq!(failure.unwrap_err(), LookupFailure::TooLarge);
        // And a config blob, at the caller's limit.
        let failure = client
            .session(&reference, None)
            .blob(&sha256_digest(b"x"), 1024)
            .await;
        assert_eq!(failure.unwrap_err(), LookupFailure::TooLarge);
    }

    /// The manifest under `digest` from a registry that answers every
    /// request with `body`.
    async fn manifest_from(body: Vec<u8>, digest: &str) -> Result<OciManifest, LookupFailure> {
        let (addr, _) = registry("127.0.0.1", Arc::new(move |_: &Seen| ok(&body, &[]))).await;
        let reference: Reference = format!("{addr}/app@{digest}").parse().unwrap();
        client(&[&addr])
            .session(&reference, None)
            .manifest(digest)
            .await
    }

    #[tokio::test]
    async fn a_refusal_is_told_by_its_category_never_by_the_registrys_words() {
        let script = |_: &Seen| Answer::Full {
            status: 500,
            headers: Vec::new(),
            body: b"internal detail: http://10.0.0.1/secret-admin".to_vec(),
        };
        let (addr, _) = registry("127.0.0.1", Arc::new(script)).await;
        let reference: Reference = format!("{addr}/app:1").parse().unwrap();
        let failure = client(&[&addr])
            .session(&reference, None)
            .digest()
            .await
            .unwrap_err();
        assert_eq!(failure, LookupFailure::Unreachable);
        assert!(!failure.to_string().contains("internal"), "{failure}");
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_not_read() {
        let huge = vec![b' '; MAX_MANIFEST_BYTES + 1];
        let digest = format!("sha256:{}", "a".repeat(64));
        let failure = manifest_from(huge, &digest).await;
        assert_eq!(failure.unwrap_err(), LookupFailure::TooLarge);
    }

    #[tokio::test]
    async fn a_bearer_challenge_is_answered_once_and_its_token_kept() {
        let config = br#"{"config":{"Entrypoint":["/app"]}}"#.to_vec();
        let manifest = manifest_json(&config);
        let digest = sha256_digest(&manifest);
        let addr_cell: Arc<Mutex<String>> = Arc::default();
        let realm_addr = addr_cell.clone();
        let tokens = Arc::new(AtomicUsize::new(0));
        let issued = tokens.clone();
        let served_digest = digest.clone();
        let served_config = config.clone();
        let script = move |seen: &Seen| {
            if seen.line.contains("/token?") {
                issued.fetch_add(1, Ordering::SeqCst);
                assert!(
                    seen.line.contains("scope=repository%3Ateam%2Fapp%3Apull"),
                    "{}",
                    seen.line
                );
                assert!(seen.line.contains("service=test"), "{}", seen.line);
                // The pull secret's credential goes to the realm.
                assert_eq!(seen.authorization.as_deref(), Some("Basic dTpw"));
                return ok(br#"{"token":"t0k"}"#, &[]);
            }
            if seen.authorization.as_deref() != Some("Bearer t0k") {
                let realm = format!(
                    "Bearer realm=\"http://{}/token\",service=\"test\"",
                    realm_addr.lock().unwrap()
                );
                return status(401, &[("www-authenticate", &realm)]);
            }
            if seen.line.starts_with("HEAD /v2/team/app/manifests/1 ") {
                return ok(b"", &[("docker-content-digest", &served_digest)]);
            }
            if seen.line.contains("/manifests/sha256:") {
                return ok(&manifest, &[]);
            }
            if seen.line.contains("/blobs/sha256:") {
                return ok(&served_config, &[]);
            }
            status(404, &[])
        };
        let (addr, seen) = registry("127.0.0.1", Arc::new(script)).await;
        *addr_cell.lock().unwrap() = addr.clone();
        let client = client(&[&addr]);
        let credential = Credential {
            username: "u".into(),
            password: "p".into(),
        };
        let reference: Reference = format!("{addr}/team/app:1").parse().unwrap();
        let session = client.session(&reference, Some(&credential));
        assert_eq!(session.digest().await.unwrap(), digest);
        let OciManifest::Image(image) = session.manifest(&digest).await.unwrap() else {
            panic!("an image manifest")
        };
        let blob = session.blob(&image.config.digest, 1024).await.unwrap();
        assert_eq!(blob, config);
        assert_eq!(
            tokens.load(Ordering::SeqCst),
            1,
            "{:?}",
            seen.lock().unwrap()
        );
        // Another credential does not get that token.
        let other = Credential {
            username: "v".into(),
            password: "q".into(),
        };
        client
            .session(&reference, Some(&other))
            .digest()
            .await
            .unwrap_err();
        assert_eq!(tokens.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_realm_or_redirect_into_the_servers_network_is_not_followed() {
        // The inner service: listening on another loopback address, which
        // the operator did not list.
        let (inner, inner_seen) = registry(
            "127.0.0.2",
            Arc::new(|_: &Seen| ok(br#"{"token":"x"}"#, &[])),
        )
        .await;
        let realm = format!("Bearer realm=\"http://{inner}/token\"");
        let location = format!("http://{inner}/blob");
        let script = move |seen: &Seen| {
            if seen.line.contains("/blobs/") {
                return status(307, &[("location", &location)]);
            }
            status(401, &[("www-authenticate", &realm)])
        };
        let (addr, _) = registry("127.0.0.1", Arc::new(script)).await;
        let client = client(&[&addr]);
        let reference: Reference = format!("{addr}/app:1").parse().unwrap();
        let session = client.session(&reference, None);
        assert_eq!(
            session.digest().await.unwrap_err(),
            LookupFailure::NotAllowed
        );
        assert_eq!(
            session.blob(&sha256_digest(b"x"), 1024).await.unwrap_err(),
            LookupFailure::NotAllowed
        );
        assert!(
            inner_seen.lock().unwrap().is_empty(),
            "{:?}",
            inner_seen.lock().unwrap()
        );
    }

    #[tokio::test]
    async fn content_that_is_not_what_its_digest_names_is_refused() {
        let manifest = manifest_json(b"{}");
        let failure = manifest_from(manifest.clone(), &format!("sha256:{}", "b".repeat(64))).await;
        assert_eq!(failure.unwrap_err(), LookupFailure::Invalid);
        // The same bytes under their own digest are taken.
        let taken = manifest_from(manifest.clone(), &sha256_digest(&manifest)).await;
        assert!(matches!(taken, Ok(OciManifest::Image(_))), "{taken:?}");
    }

    #[tokio::test]
    async fn a_name_resolving_into_the_servers_network_is_not_connected_to() {
        let (addr, seen) = registry("127.0.0.1", Arc::new(|_: &Seen| ok(b"{}", &[]))).await;
        let port = addr.rsplit(':').next().unwrap().to_string();
        let name = format!("registry.example:{port}");
        let reach = |insecure: &[&str]| Reach {
            allowed: Vec::new(),
            insecure: insecure.iter().map(|s| s.to_string()).collect(),
        };
        let reference: Reference = format!("{name}/app@sha256:{}", "a".repeat(64))
            .parse()
            .unwrap();
        let blob = sha256_digest(b"{}");
        // A public-looking name that resolves to loopback and to a public
        // address (TEST-NET-1, where nothing answers): only the public one
        // is tried, so the lookup fails without reaching the server.
        let mixed: Lookup = Arc::new(|_host: String| {
            Box::pin(async {
                Ok(vec![
                    "127.0.0.1:0".parse().unwrap(),
                    "192.0.2.1:0".parse().unwrap(),
                ])
            })
        });
        let unlisted =
            RegistryClient::with_lookup(reach(&[]), Duration::from_millis(300), mixed).unwrap();
        let failure = unlisted
            .session(&reference, None)
            .blob(&blob, 1024)
            .await
            .unwrap_err();
        assert!(
            matches!(
                failure,
                LookupFailure::Unreachable | LookupFailure::TimedOut
            ),
            "{failure:?}"
        );
        assert!(seen.lock().unwrap().is_empty());
        // Resolving only inward, it is not allowed at all.
        let inward: Lookup =
            Arc::new(|_host: String| Box::pin(async { Ok(vec!["127.0.0.1:0".parse().unwrap()]) }));
        let unlisted =
            RegistryClient::with_lookup(reach(&[]), Duration::from_secs(5), inward.clone())
                .unwrap();
        let failure = unlisted
            .session(&reference, None)
            .blob(&blob, 1024)
            .await
            .unwrap_err();
        assert_eq!(failure, LookupFailure::NotAllowed);
        assert!(seen.lock().unwrap().is_empty());
        // Listed, the same name is reached at its loopback address.
        let listed =
            RegistryClient::with_lookup(reach(&[&name]), Duration::from_secs(5), inward).unwrap();
        assert_eq!(
            listed
                .session(&reference, None)
                .blob(&blob, 1024)
                .await
                .unwrap(),
            b"{}"
        );
        assert_eq!(seen.lock().unwrap().len(), 1);
    }

    #[test]
    fn challenges_prefer_bearer_and_read_quoted_parameters() {
        assert_eq!(
            parse_challenge(
                r#"Basic realm="r", Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("reg".into()),
                scope: Some("repository:a/b:pull".into()),
            })
        );
        assert_eq!(
            parse_challenge(r#"Basic realm="registry""#),
            Some(Challenge::Basic)
        );
        assert_eq!(parse_challenge("Bearer service=\"no-realm\""), None);
        assert_eq!(parse_challenge("\u{0}garbage"), None);
    }

    #[test]
    fn only_sha256_digest_headers_are_taken() {
        let mut headers = HeaderMap::new();
        let good = format!("sha256:{}", "c".repeat(64));
        headers.insert(DIGEST_HEADER, good.parse().unwrap());
        assert_eq!(header_digest(&headers), Some(good));
        for bad in ["sha512:abc", "sha256:XYZ", "sha256:../../etc"] {
            headers.insert(DIGEST_HEADER, bad.parse().unwrap());
            assert_eq!(header_digest(&headers), None, "{bad}");
            assert_eq!(sha256(bad), Err(LookupFailure::Invalid));
        }
    }
}
