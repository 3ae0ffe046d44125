//! TLS configuration (rustls, `ring` provider, TLS 1.2 and 1.3 only): the server's certificate
//! (`--keypath`/`--crtpath` or `--sslkey`/`--sslcert`), optional client-certificate verification
//! (mutual TLS), and client configurations for BitGo and external signers.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use crate::config::TlsSource;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

fn certificates(pem: &[u8], origin: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("invalid certificate PEM in {origin}: {e}"))?;
    if certs.is_empty() {
        return Err(format!("no certificate found in {origin}"));
    }
    Ok(certs)
}

fn private_key(pem: &[u8], origin: &str) -> Result<PrivateKeyDer<'static>, String> {
    PrivateKeyDer::from_pem_slice(pem)
        .map_err(|e| format!("invalid private key PEM in {origin}: {e}"))
}

fn roots_from(pem: &[u8], origin: &str) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in certificates(pem, origin)? {
        roots
            .add(cert)
            .map_err(|e| format!("unusable CA certificate in {origin}: {e}"))?;
    }
    Ok(roots)
}

/// The server's TLS configuration; with `client_ca`, client certificates issued by that CA are
/// verified (connections without one are accepted and refused per request with 401).
pub fn server_config(
    source: &TlsSource,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, String> {
    let (cert_pem, key_pem, origin) = match source {
        TlsSource::Files { key_path, crt_path } => (
            read(crt_path)?,
            zeroize::Zeroizing::new(read(key_path)?),
            crt_path.display().to_string(),
        ),
        TlsSource::Pem { key, cert } => (
            cert.as_bytes().to_vec(),
            zeroize::Zeroizing::new(key.as_bytes().to_vec()),
            "--sslcert/--sslkey".to_string(),
        ),
    };
    let certs = certificates(&cert_pem, &origin)?;
    let key = private_key(&key_pem, &origin)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?;
    let builder = match client_ca {
        Some(path) => {
            let roots = roots_from(&read(path)?, &path.display().to_string())?;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .allow_unauthenticated()
                .build()
                .map_err(|e| format!("client CA {}: {e}", path.display()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("TLS certificate/key do not form a usable pair: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration trusting the public web roots plus `extra_ca`, presenting
/// `client_identity` (certificate, key) when given.
pub fn client_config(
    extra_ca: Option<&Path>,
    client_identity: Option<(&Path, &Path)>,
) -> Result<ClientConfig, String> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    if let Some(path) = extra_ca {
        for cert in certificates(&read(path)?, &path.display().to_string())? {
            roots
                .add(cert)
                .map_err(|e| format!("unusable CA certificate in {}: {e}", path.display()))?;
        }
    }
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots);
    match client_identity {
        Some((cert, key)) => {
            let certs = certificates(&read(cert)?, &cert.display().to_string())?;
            let key = private_key(
                &zeroize::Zeroizing::new(read(key)?),
                &key.display().to_string(),
            )?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| format!("client certificate/key do not form a usable pair: {e}"))
        }
        None => Ok(builder.with_no_client_auth()),
    }
}
