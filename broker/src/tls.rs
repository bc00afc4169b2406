//! TLS listeners: rustls server configurations from PEM files, the device
//! identity of a client certificate, and why a handshake failed.
//!
//! Only TLS 1.2 and 1.3 are offered. With a client CA bundle, every client
//! must present a certificate that chains to it and is valid now; rustls
//! (webpki) checks the chain and the validity period, and the subject CN of
//! the accepted certificate becomes the client's identity.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{self, version, CertificateError, RootCertStore, ServerConfig};

use crate::stats::AuthFailure;

/// The PEM files of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Server certificate chain, leaf first.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// CA bundle client certificates must chain to; without it, clients
    /// are not asked for a certificate.
    pub client_ca_file: Option<PathBuf>,
}

/// Which of the [`TlsFiles`] a problem is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsFile {
    Cert,
    Key,
    ClientCa,
}

/// A TLS configuration that cannot be used; the message names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct TlsError {
    pub file: TlsFile,
    pub message: String,
}

fn fail(file: TlsFile, path: &Path, what: impl std::fmt::Display) -> TlsError {
    TlsError {
        file,
        message: format!("{}: {what}", path.display()),
    }
}

fn read_certs(file: TlsFile, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let text =
        std::fs::read(path).map_err(|err| fail(file, path, format!("cannot read: {err}")))?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| fail(file, path, format!("not a PEM certificate file: {err}")))?;
    if certs.is_empty() {
        return Err(fail(file, path, "no CERTIFICATE block in the file"));
    }
    Ok(certs)
}

/// The crypto provider of every listener (aws-lc-rs, as the rest of the
/// binary uses), chosen explicitly so that no process-wide default is needed.
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Builds the server configuration, reading and checking every file.
pub fn server_config(files: &TlsFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let certs = read_certs(TlsFile::Cert, &files.cert_file)?;
    let key_text = std::fs::read(&files.key_file)
        .map_err(|err| fail(TlsFile::Key, &files.key_file, format!("cannot read: {err}")))?;
    let key = PrivateKeyDer::from_pem_slice(&key_text).map_err(|err| {
        fail(
            TlsFile::Key,
            &files.key_file,
            format!("no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file: {err}"),
        )
    })?;
    let provider = provider();
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&version::TLS13, &version::TLS12])
        .map_err(|err| fail(TlsFile::Cert, &files.cert_file, err))?;
    let builder = match &files.client_ca_file {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for cert in read_certs(TlsFile::ClientCa, path)? {
                roots
                    .add(cert)
                    .map_err(|err| fail(TlsFile::ClientCa, path, format!("bad CA: {err}")))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|err| fail(TlsFile::ClientCa, path, err))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(certs, key).map_err(|err| {
        fail(
            TlsFile::Key,
            &files.key_file,
            format!(
                "does not fit the certificate {}: {err}",
                files.cert_file.display()
            ),
        )
    })?;
    Ok(Arc::new(config))
}

/// The subject CN of a DER certificate.
pub(crate) fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// Classifies a failed server handshake for the metrics.
pub(crate) fn handshake_failure(err: &std::io::Error) -> AuthFailure {
    let Some(tls) = err
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    else {
        return AuthFailure::TlsHandshake;
    };
    match tls {
        rustls::Error::NoCertificatesPresented => AuthFailure::NoClientCertificate,
        rustls::Error::InvalidCertificate(cert) => match cert {
            CertificateError::UnknownIssuer => AuthFailure::UnknownCa,
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                AuthFailure::ExpiredCertificate
            }
            _ => AuthFailure::BadCertificate,
        },
        _ => AuthFailure::TlsHandshake,
    }
}
