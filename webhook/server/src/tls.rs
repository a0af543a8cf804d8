//! Serving certificates: loaded from PEM files and re-read when they change
//! (rotation without restart), or generated self-signed for local runs.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::crypto::ring::sign::any_supported_type;
use tokio_rustls::rustls::server::{ClientHello, ResolvesServerCert};
use tokio_rustls::rustls::sign::CertifiedKey;
use tokio_rustls::rustls::{self, ServerConfig};

use palisade_engine::settings::TlsSettings;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },
    #[error("{path} holds no certificate")]
    NoCertificate { path: PathBuf },
    #[error("unsupported private key in {path}: {source}")]
    Key {
        path: PathBuf,
        source: rustls::Error,
    },
    /// The leaf does not parse, or the key is not the leaf's: serving it
    /// would fail every handshake.
    #[error("{cert} and {key} are not a usable pair: {source}")]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        source: rustls::Error,
    },
    #[error("cannot generate a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// The certificate presented on every handshake; swapped in place on reload.
#[derive(Debug)]
pub struct CertStore {
    current: RwLock<Arc<CertifiedKey>>,
    files: Option<(PathBuf, PathBuf)>,
    last_seen: RwLock<Option<(SystemTime, SystemTime)>>,
}

/// A freshly generated CA and a serving certificate it signed.
pub struct SelfSigned {
    pub ca_pem: String,
    pub cert_pem: String,
    pub key_pem: String,
}

impl CertStore {
    /// From `settings`: the configured files, or a generated certificate
    /// (its CA written to `self_signed_dir` when set).
    pub fn from_settings(settings: &TlsSettings) -> Result<Arc<Self>, TlsError> {
        match (&settings.cert_file, &settings.key_file) {
            (Some(cert), Some(key)) => Self::from_files(cert, key),
            _ => {
                let generated = generate_self_signed(&settings.self_signed_names)?;
                if let Some(dir) = &settings.self_signed_dir {
                    generated.write_to(dir)?;
                }
                let key = certified_key(
                    parse_certs(generated.cert_pem.as_bytes(), Path::new("<generated>"))?,
                    generated.key_pem.as_bytes(),
                    Path::new("<generated>"),
                )?;
                Ok(Arc::new(Self {
                    current: RwLock::new(Arc::new(key)),
                    files: None,
                    last_seen: RwLock::new(None),
                }))
            }
        }
    }

    pub fn from_files(cert: &Path, key: &Path) -> Result<Arc<Self>, TlsError> {
        let loaded = load_files(cert, key)?;
        Ok(Arc::new(Self {
            current: RwLock::new(Arc::new(loaded)),
            files: Some((cert.to_path_buf(), key.to_path_buf())),
            last_seen: RwLock::new(modified_times(cert, key)),
        }))
    }

    /// Re-reads the files if their modification times changed. Returns true
    /// when a new certificate is in use. A new pair is used only when its
    /// leaf parses and the key is the leaf's; otherwise the old pair stays,
    /// and the files are tried again when they change next. So a rotation
    /// that writes the certificate and the key one after the other never
    /// serves a mismatched pair: the first write fails (old pair kept), the
    /// second completes the new pair.
    pub fn reload_if_changed(&self) -> Result<bool, TlsError> {
        let Some((cert, key)) = &self.files else {
            return Ok(false);
        };
        let seen = modified_times(cert, key);
        if seen.is_none() || seen == *read_lock(&self.last_seen) {
            return Ok(false);
        }
        // Failed or not, this version of the files has been judged.
        *write_lock(&self.last_seen) = seen;
        let loaded = load_files(cert, key)?;
        *write_lock(&self.current) = Arc::new(loaded);
        Ok(true)
    }

    /// Server configuration: TLS 1.2 and 1.3 (rustls offers nothing older),
    /// HTTP/2 and HTTP/1.1 by ALPN.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
            .with_no_client_auth()
            .with_cert_resolver(self.clone());
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

impl ResolvesServerCert for CertStore {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(read_lock(&self.current).clone())
    }
}

/// Polls the certificate files until `shutdown` resolves.
pub async fn watch(store: Arc<CertStore>, every: Duration, metrics: Arc<crate::metrics::Metrics>) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match store.reload_if_changed() {
            Ok(true) => {
                metrics.tls_reloads.inc();
                tracing::info!("serving certificate reloaded");
            }
            Ok(false) => {}
            Err(e) => {
                metrics.tls_reload_failures.inc();
                tracing::warn!(error = %e, "certificate reload failed; keeping the previous one");
            }
        }
    }
}

fn read_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write_lock<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn modified_times(cert: &Path, key: &Path) -> Option<(SystemTime, SystemTime)> {
    let m = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    Some((m(cert)?, m(key)?))
}

fn load_files(cert: &Path, key: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(cert).map_err(|e| TlsError::Read {
        path: cert.to_path_buf(),
        source: rustls_pki_types::pem::Error::Io(e),
    })?;
    let key_pem = std::fs::read(key).map_err(|e| TlsError::Read {
        path: key.to_path_buf(),
        source: rustls_pki_types::pem::Error::Io(e),
    })?;
    let pair = certified_key(parse_certs(&cert_pem, cert)?, &key_pem, key)?;
    // Parses the leaf and compares its public key with the private key's.
    pair.keys_match().map_err(|source| TlsError::Pair {
        cert: cert.to_path_buf(),
        key: key.to_path_buf(),
        source,
    })?;
    Ok(pair)
}

fn parse_certs(pem: &[u8], path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(certs)
}

fn certified_key(
    certs: Vec<CertificateDer<'static>>,
    key_pem: &[u8],
    key_path: &Path,
) -> Result<CertifiedKey, TlsError> {
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|source| TlsError::Read {
        path: key_path.to_path_buf(),
        source,
    })?;
    let signing_key = any_supported_type(&key).map_err(|source| TlsError::Key {
        path: key_path.to_path_buf(),
        source,
    })?;
    Ok(CertifiedKey::new(certs, signing_key))
}

/// A CA plus a serving certificate for `names` (DNS names or IP addresses).
pub fn generate_self_signed(names: &[String]) -> Result<SelfSigned, TlsError> {
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    };

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "palisade self-signed CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_key = KeyPair::generate()?;
    let ca_cert = ca_params.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca_params, ca_key);

    let mut leaf_params = CertificateParams::new(names.to_vec())?;
    leaf_params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("palisade", |n| n.as_str()),
    );
    leaf_params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let leaf_key = KeyPair::generate()?;
    let leaf = leaf_params.signed_by(&leaf_key, &issuer)?;
    Ok(SelfSigned {
        ca_pem: ca_cert.pem(),
        cert_pem: leaf.pem(),
        key_pem: leaf_key.serialize_pem(),
    })
}

impl SelfSigned {
    /// Writes `ca.crt`, `tls.crt` and `tls.key` (the key readable by the
    /// owner only).
    pub fn write_to(&self, dir: &Path) -> Result<(), TlsError> {
        let write = |name: &str, body: &str, mode: u32| {
            use std::os::unix::fs::OpenOptionsExt;
            let path = dir.join(name);
            std::fs::create_dir_all(dir)
                .and_then(|_| {
                    let mut f = std::fs::OpenOptions::new()
                        .write(true)
                        .create(true)
                        .truncate(true)
                        .mode(mode)
                        .open(&path)?;
                    std::io::Write::write_all(&mut f, body.as_bytes())
                })
                .map_err(|source| TlsError::Write { path, source })
        };
        write("ca.crt", &self.ca_pem, 0o644)?;
        write("tls.crt", &self.cert_pem, 0o644)?;
        write("tls.key", &self.key_pem, 0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificate_loads_and_rotates() {
        let dir = tempfile::tempdir().unwrap();
        let first = generate_self_signed(&["localhost".into()]).unwrap();
        first.write_to(dir.path()).unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let store = CertStore::from_files(&cert, &key).unwrap();
        let before = read_lock(&store.current).cert[0].clone();
        assert!(!store.reload_if_changed().unwrap(), "unchanged files");

        // Rotate: new files with a later mtime.
        std::thread::sleep(Duration::from_millis(20));
        generate_self_signed(&["localhost".into()])
            .unwrap()
            .write_to(dir.path())
            .unwrap();
        let later = SystemTime::now() + Duration::from_secs(2);
        for p in [&cert, &key] {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(later)
                .unwrap();
        }
        assert!(store.reload_if_changed().unwrap());
        assert_ne!(read_lock(&store.current).cert[0], before);
    }

    #[test]
    fn broken_rotation_keeps_the_old_certificate() {
        let dir = tempfile::tempdir().unwrap();
        generate_self_signed(&["localhost".into()])
            .unwrap()
            .write_to(dir.path())
            .unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let store = CertStore::from_files(&cert, &key).unwrap();
        let before = read_lock(&store.current).cert[0].clone();
        std::fs::write(&cert, "not a certificate").unwrap();
        std::fs::File::options()
            .write(true)
            .open(&cert)
            .unwrap()
            .set_modified(SystemTime::now() + Duration::from_secs(5))
            .unwrap();
        assert!(store.reload_if_changed().is_err());
        assert_eq!(read_lock(&store.current).cert[0], before);
    }

    fn touch_later(path: &Path, secs: u64) {
        std::fs::File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(SystemTime::now() + Duration::from_secs(secs))
            .unwrap();
    }

    #[test]
    fn a_key_that_is_not_the_certificates_keeps_the_old_pair() {
        let dir = tempfile::tempdir().unwrap();
        generate_self_signed(&["localhost".into()])
            .unwrap()
            .write_to(dir.path())
            .unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        let store = CertStore::from_files(&cert, &key).unwrap();
        let before = read_lock(&store.current).cert[0].clone();

        // Rotation step one: the new certificate lands, the key is still old.
        let next = generate_self_signed(&["localhost".into()]).unwrap();
        std::fs::write(&cert, &next.cert_pem).unwrap();
        touch_later(&cert, 5);
        let err = store.reload_if_changed().unwrap_err();
        assert!(matches!(err, TlsError::Pair { .. }), "{err}");
        assert_eq!(read_lock(&store.current).cert[0], before, "old pair kept");
        assert!(
            !store.reload_if_changed().unwrap(),
            "the same broken files are not retried every tick"
        );

        // Step two: the new key lands; the new pair is complete and used.
        std::fs::write(&key, &next.key_pem).unwrap();
        touch_later(&key, 6);
        assert!(store.reload_if_changed().unwrap());
        assert_ne!(read_lock(&store.current).cert[0], before);
    }

    #[test]
    fn a_leaf_that_does_not_parse_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let pair = generate_self_signed(&["localhost".into()]).unwrap();
        pair.write_to(dir.path()).unwrap();
        let (cert, key) = (dir.path().join("tls.crt"), dir.path().join("tls.key"));
        // Valid PEM framing around bytes that are no certificate.
        std::fs::write(
            &cert,
            "-----BEGIN CERTIFICATE-----\nAAECAwQFBgcICQ==\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let err = CertStore::from_files(&cert, &key).unwrap_err();
        assert!(matches!(err, TlsError::Pair { .. }), "{err}");
    }

    #[test]
    fn missing_files_are_named() {
        let err = CertStore::from_files(Path::new("/nope/tls.crt"), Path::new("/nope/tls.key"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nope/tls.crt"), "{err}");
    }
}
