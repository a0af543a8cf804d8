//! Registry credentials from a pod's `imagePullSecrets`, read the way the
//! kubelet reads them: `kubernetes.io/dockerconfigjson` (`.dockerconfigjson`,
//! `{"auths": {registry: entry}}`) and the older `kubernetes.io/dockercfg`
//! (`.dockercfg`, `{registry: entry}`), where an entry has `username` and
//! `password` or `auth` (base64 of `username:password`). Pure.

use std::collections::BTreeMap;

use base64::Engine;
use serde::Deserialize;

/// A user name and password for one registry.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Credential {
    pub username: String,
    pub password: String,
}

impl Credential {
    /// A short hash of the whole credential (both fields, each with its
    /// length, so that no two credentials share one by where a field
    /// ends): what caches are keyed by instead of the secret itself.
    pub fn fingerprint(&self) -> [u8; 16] {
        use sha2::{Digest, Sha256};
        let mut hasher = Sha256::new();
        for field in [&self.username, &self.password] {
            hasher.update((field.len() as u64).to_be_bytes());
            hasher.update(field.as_bytes());
        }
        let mut short = [0u8; 16];
        short.copy_from_slice(&hasher.finalize()[..16]);
        short
    }
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Default, Deserialize)]
struct DockerConfigJson {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Debug, Default, Deserialize)]
struct Entry {
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    auth: Option<String>,
}

impl Entry {
    fn credential(&self) -> Option<Credential> {
        if let (Some(username), Some(password)) = (&self.username, &self.password) {
            return Some(Credential {
                username: username.clone(),
                password: password.clone(),
            });
        }
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(self.auth.as_deref()?.trim())
            .ok()?;
        let (username, password) = std::str::from_utf8(&decoded).ok()?.split_once(':')?;
        Some(Credential {
            username: username.to_string(),
            password: password.to_string(),
        })
    }
}

/// The credential for `registry` in one secret's data (`key` is the data
/// key: `.dockerconfigjson` or `.dockercfg`), if any entry names it.
pub fn credential_for(key: &str, data: &[u8], registry: &str) -> Option<Credential> {
    let entries = match key {
        ".dockerconfigjson" => serde_json::from_slice::<DockerConfigJson>(data).ok()?.auths,
        ".dockercfg" => serde_json::from_slice::<BTreeMap<String, Entry>>(data).ok()?,
        _ => return None,
    };
    let wanted = registry_host(registry);
    entries
        .iter()
        .filter(|(name, _)| registry_host(name) == wanted)
        .find_map(|(_, entry)| entry.credential())
}

/// A registry as keys name it (`https://index.docker.io/v1/`,
/// `registry.example:5000`), as a host: scheme and path dropped, Docker
/// Hub's several names made one.
fn registry_host(name: &str) -> &str {
    let name = name
        .strip_prefix("https://")
        .or_else(|| name.strip_prefix("http://"))
        .unwrap_or(name);
    let host = name.split('/').next().unwrap_or(name);
    match host {
        "index.docker.io" | "registry-1.docker.io" | "docker.io" => "docker.io",
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alice() -> Option<Credential> {
        Some(Credential {
            username: "alice".into(),
            password: "s3cret:x".into(),
        })
    }

    #[test]
    fn dockerconfigjson_with_username_and_password_or_auth() {
        let plain = br#"{"auths": {"registry.example:5000": {"username": "alice", "password": "s3cret:x"}}}"#;
        assert_eq!(
            credential_for(".dockerconfigjson", plain, "registry.example:5000"),
            alice()
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode("alice:s3cret:x");
        let auth = format!(
            r#"{{"auths": {{"https://registry.example:5000/v2/": {{"auth": "{encoded}"}}}}}}"#
        );
        assert_eq!(
            credential_for(
                ".dockerconfigjson",
                auth.as_bytes(),
                "registry.example:5000"
            ),
            alice(),
            "scheme and path are ignored, the password may hold a colon"
        );
        assert_eq!(
            credential_for(".dockerconfigjson", plain, "other.example"),
            None
        );
    }

    #[test]
    fn dockercfg_and_docker_hub_names() {
        let legacy =
            br#"{"https://index.docker.io/v1/": {"username": "alice", "password": "s3cret:x"}}"#;
        assert_eq!(
            credential_for(".dockercfg", legacy, "index.docker.io"),
            alice()
        );
        assert_eq!(credential_for(".dockercfg", legacy, "docker.io"), alice());
    }

    #[test]
    fn garbage_gives_nothing() {
        for data in [
            &b"not json"[..],
            br#"{"auths": {"r": {"auth": "!!"}}}"#,
            br#"{"auths": 3}"#,
        ] {
            assert_eq!(credential_for(".dockerconfigjson", data, "r"), None);
        }
        assert_eq!(credential_for("token", b"{}", "r"), None);
    }

    #[test]
    fn fingerprints_tell_apart_credentials_that_differ_only_in_where_a_field_ends() {
        let credential = |u: &str, p: &str| Credential {
            username: u.into(),
            password: p.into(),
        };
        assert_ne!(
            credential("a\0", "b").fingerprint(),
            credential("a", "\0b").fingerprint()
        );
        assert_eq!(
            credential("a", "b").fingerprint(),
            credential("a", "b").fingerprint()
        );
    }
}
