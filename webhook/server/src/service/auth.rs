//! Bearer tokens for the policy service: admins (push, list, query) and
//! enforcers (fetch policy, report). Generated on first start when none are
//! configured, so a local run is authenticated from the first request.

use std::path::{Path, PathBuf};

use rand::RngCore;
use subtle::ConstantTimeEq;

use palisade_engine::settings::ServiceSettings;

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read or write token file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("token file {0} is empty")]
    Empty(PathBuf),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Admin,
    Reporter,
}

/// Who changed a policy or exception, as revision history records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Author(String);

impl Author {
    /// An admin token, named by a digest prefix: history tells tokens
    /// apart (and a rotated one from its successor) without keeping them.
    pub fn admin_token(token: &str) -> Self {
        use sha2::{Digest, Sha256};
        let digest = hex::encode(Sha256::digest(token.trim().as_bytes()));
        Self(format!("admin-token:{}", &digest[..8]))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

pub struct Tokens {
    admin: Vec<String>,
    report: Vec<String>,
}

impl Tokens {
    pub fn new(admin: Vec<String>, report: Vec<String>) -> Self {
        Self { admin, report }
    }

    /// Configured tokens, or ones kept in `data_dir` (created on first use).
    pub fn load(settings: &ServiceSettings) -> Result<Self, TokenError> {
        let or_file = |configured: &[String], file: &str| -> Result<Vec<String>, TokenError> {
            if configured.is_empty() {
                Ok(vec![token_file(&settings.data_dir.join(file))?])
            } else {
                Ok(configured.to_vec())
            }
        };
        Ok(Self {
            admin: or_file(&settings.admin_tokens, "admin.token")?,
            report: or_file(&settings.report_tokens, "report.token")?,
        })
    }

    /// The author behind the `Authorization` header, when it is an admin's.
    pub fn admin(&self, header: Option<&str>) -> Option<Author> {
        if !self.allows(header, Role::Admin) {
            return None;
        }
        let token = header.and_then(|h| h.strip_prefix("Bearer "))?;
        Some(Author::admin_token(token))
    }

    /// Whether the `Authorization` header grants `role`. Admin tokens also
    /// grant the reporter role (for tooling and tests).
    pub fn allows(&self, header: Option<&str>, role: Role) -> bool {
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
            return false;
        };
        let matches = |list: &[String]| {
            // Check every token, without early exit, in constant time each.
            list.iter().fold(false, |found, t| {
                found | bool::from(t.as_bytes().ct_eq(token.trim().as_bytes()))
            })
        };
        match role {
            Role::Admin => matches(&self.admin),
            Role::Reporter => matches(&self.report) || matches(&self.admin),
        }
    }
}

/// Reads the token in `path`, creating it (owner-only) when missing.
pub fn token_file(path: &Path) -> Result<String, TokenError> {
    let io = |source| TokenError::Io {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let token = text.trim().to_string();
            if token.is_empty() {
                return Err(TokenError::Empty(path.to_path_buf()));
            }
            Ok(token)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::os::unix::fs::OpenOptionsExt;
            let mut bytes = [0u8; 24];
            rand::rng().fill_bytes(&mut bytes);
            let token = hex::encode(bytes);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(io)?;
            }
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(io)?;
            std::io::Write::write_all(&mut file, format!("{token}\n").as_bytes()).map_err(io)?;
            Ok(token)
        }
        Err(e) => Err(io(e)),
    }
}

/// The workload behind a projected service-account token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub namespace: String,
    pub service_account: String,
    /// Set for pod-bound tokens (the kind the injector mounts).
    pub pod: Option<String>,
}

/// Verifies enforcer tokens with the Kubernetes TokenReview API. Results
/// are cached briefly (bounded) so a busy pod does not cost one API call
/// per report.
pub struct TokenReviewer {
    client: kube::Client,
    audience: String,
    cache: std::sync::Mutex<ReviewCache>,
}

/// Token digest -> (valid until, workload or refusal).
type ReviewCache = std::collections::HashMap<[u8; 32], (std::time::Instant, Option<Workload>)>;

const REVIEW_CACHE_MAX: usize = 10_000;
const REVIEW_TTL_OK: std::time::Duration = std::time::Duration::from_secs(60);
const REVIEW_TTL_DENIED: std::time::Duration = std::time::Duration::from_secs(5);

impl TokenReviewer {
    pub fn new(client: kube::Client, audience: &str) -> Self {
        Self {
            client,
            audience: audience.to_string(),
            cache: Default::default(),
        }
    }

    /// The workload `header`'s bearer token belongs to, or `None` when the
    /// API server does not authenticate it for our audience.
    pub async fn review(&self, header: Option<&str>) -> Result<Option<Workload>, kube::Error> {
        use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
        use sha2::{Digest, Sha256};
        let Some(token) = header
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
        else {
            return Ok(None);
        };
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some((until, found)) = self
            .cache
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            if *until > std::time::Instant::now() {
                return Ok(found.clone());
            }
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let api: kube::Api<TokenReview> = kube::Api::all(self.client.clone());
        let status = api
            .create(&Default::default(), &review)
            .await?
            .status
            .unwrap_or_default();
        let workload = if status.authenticated == Some(true)
            && status
                .audiences
                .unwrap_or_default()
                .contains(&self.audience)
        {
            let user = status.user.unwrap_or_default();
            workload_of(&user.username.unwrap_or_default(), user.extra.as_ref())
        } else {
            None
        };
        let ttl = if workload.is_some() {
            REVIEW_TTL_OK
        } else {
            REVIEW_TTL_DENIED
        };
        let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if cache.len() >= REVIEW_CACHE_MAX {
            cache.clear();
        }
        cache.insert(key, (std::time::Instant::now() + ttl, workload.clone()));
        Ok(workload)
    }
}

/// `system:serviceaccount:NS:NAME`, with the pod name from a bound token's extra.
fn workload_of(
    username: &str,
    extra: Option<&std::collections::BTreeMap<String, Vec<String>>>,
) -> Option<Workload> {
    let rest = username.strip_prefix("system:serviceaccount:")?;
    let (namespace, service_account) = rest.split_once(':')?;
    let pod = extra
        .and_then(|e| e.get("authentication.kubernetes.io/pod-name"))
        .and_then(|v| v.first())
        .cloned();
    Some(Workload {
        namespace: namespace.to_string(),
        service_account: service_account.to_string(),
        pod,
    })
}

impl Workload {
    /// Whether this workload may speak for `pod` in `namespace`.
    pub fn may_report_for(&self, namespace: &str, pod: &str) -> bool {
        self.namespace == namespace && self.pod.as_deref().is_none_or(|p| p == pod)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_usernames_and_pod_binding() {
        let extra: std::collections::BTreeMap<String, Vec<String>> = [(
            "authentication.kubernetes.io/pod-name".to_string(),
            vec!["web-0".to_string()],
        )]
        .into();
        let w = workload_of("system:serviceaccount:shop:default", Some(&extra)).unwrap();
        assert_eq!(
            (
                w.namespace.as_str(),
                w.service_account.as_str(),
                w.pod.as_deref()
            ),
            ("shop", "default", Some("web-0"))
        );
        assert!(w.may_report_for("shop", "web-0"));
        assert!(!w.may_report_for("shop", "web-1"));
        assert!(!w.may_report_for("other", "web-0"));
        assert!(workload_of("alice", None).is_none());
    }

    #[test]
    fn admin_tokens_are_named_by_a_digest_prefix_never_by_the_token() {
        let author = Author::admin_token("s3cret-admin-token");
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(
            b"s3cret-admin-token",
        ));
        assert_eq!(author.as_str(), format!("admin-token:{}", &digest[..8]));
        assert!(!author.as_str().contains("s3cret"));
        assert_ne!(author, Author::admin_token("another-token"));
    }

    #[test]
    fn generated_tokens_persist_and_grant_their_role() {
        let dir = tempfile::tempdir().unwrap();
        let settings = ServiceSettings {
            data_dir: dir.path().to_path_buf(),
            ..ServiceSettings::default()
        };
        let tokens = Tokens::load(&settings).unwrap();
        let admin = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
        let report = std::fs::read_to_string(dir.path().join("report.token")).unwrap();
        let bearer = |t: &str| format!("Bearer {}", t.trim());
        assert!(tokens.allows(Some(&bearer(&admin)), Role::Admin));
        assert!(tokens.allows(Some(&bearer(&admin)), Role::Reporter));
        assert!(tokens.allows(Some(&bearer(&report)), Role::Reporter));
        assert!(!tokens.allows(Some(&bearer(&report)), Role::Admin));
        assert!(!tokens.allows(Some("Bearer nope"), Role::Reporter));
        assert!(!tokens.allows(None, Role::Reporter));
        assert_eq!(
            tokens.admin(Some(&bearer(&admin))),
            Some(Author::admin_token(&admin))
        );
        assert_eq!(tokens.admin(Some(&bearer(&report))), None);
        // Second start: same tokens.
        let again = Tokens::load(&settings).unwrap();
        assert!(again.allows(Some(&bearer(&admin)), Role::Admin));
    }
}
