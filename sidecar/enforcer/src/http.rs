//! HTTPS clients for the policy service (rustls; the service's CA from
//! `PALISADE_CA_PEM` or `PALISADE_CA_FILE`, else the platform roots).

use std::sync::Arc;
use std::time::Duration;

use ureq::tls::{Certificate, RootCerts, TlsConfig};

use crate::config::Settings;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("cannot read CA file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("invalid CA certificate in {path}: {source}")]
    Ca { path: String, source: ureq::Error },
}

/// (long-poll client, report client): the first waits longer than a poll.
pub fn clients(settings: &Settings) -> Result<(ureq::Agent, ureq::Agent), HttpError> {
    let mut tls = TlsConfig::builder();
    // The injector hands the CA over inline (`PALISADE_CA_PEM`): no file to mount.
    if let Some(pem) = &settings.ca_pem {
        let cert = Certificate::from_pem(pem.as_bytes()).map_err(|source| HttpError::Ca {
            path: "PALISADE_CA_PEM".into(),
            source,
        })?;
        tls = tls.root_certs(RootCerts::Specific(Arc::new(vec![cert])));
    } else if let Some(path) = &settings.ca_file {
        let shown = path.display().to_string();
        let pem = std::fs::read(path).map_err(|source| HttpError::Read {
            path: shown.clone(),
            source,
        })?;
        let cert = Certificate::from_pem(&pem).map_err(|source| HttpError::Ca {
            path: shown,
            source,
        })?;
        tls = tls.root_certs(RootCerts::Specific(Arc::new(vec![cert])));
    }
    let tls = tls.build();
    let client = |timeout: Duration| -> ureq::Agent {
        ureq::Agent::config_builder()
            .tls_config(tls.clone())
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .build()
            .into()
    };
    Ok((
        client(Duration::from_secs(40)),
        client(Duration::from_secs(10)),
    ))
}
