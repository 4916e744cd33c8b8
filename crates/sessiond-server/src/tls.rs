//! HTTPS on the listener: rustls (ring), TLS 1.2 and 1.3, HTTP/1.1 by ALPN.
//!
//! A session token crosses this connection on every request; between a gateway and sessiond
//! on one host or a private network plain HTTP may do, anywhere else it must not.

use std::sync::Arc;

use anyhow::Context as _;
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// The acceptor the configuration asks for: `None` for plain HTTP.
pub fn acceptor(config: &TlsConfig) -> anyhow::Result<Option<TlsAcceptor>> {
    let (Some(cert_file), Some(key_file)) = (&config.cert_file, &config.key_file) else {
        return Ok(None);
    };
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| format!("reading tls.cert_file {}", cert_file.display()))?;
    if certs.is_empty() {
        anyhow::bail!("tls.cert_file {} holds no certificate", cert_file.display());
    }
    let key = PrivateKeyDer::from_pem_file(key_file)
        .with_context(|| format!("reading tls.key_file {}", key_file.display()))?;
    let mut server = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS protocol versions")?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .context("tls.cert_file and tls.key_file do not make a usable certificate")?;
    server.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(TlsAcceptor::from(Arc::new(server))))
}
