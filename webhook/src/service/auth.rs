//! Bearer tokens for the policy service: admins (push, list, query) and
//! enforcers (fetch policy, report). Generated on first start when none are
//! configured, so a local run is authenticated from the first request.

use std::path::{Path, PathBuf};

use rand::RngCore;
use subtle::ConstantTimeEq;

use crate::config::ServiceSettings;

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

#[cfg(test)]
mod tests {
    use super::*;

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
        // Second start: same tokens.
        let again = Tokens::load(&settings).unwrap();
        assert!(again.allows(Some(&bearer(&admin)), Role::Admin));
    }
}
