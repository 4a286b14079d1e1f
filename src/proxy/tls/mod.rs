//! TLS with rustls (ring provider, no OpenSSL): client configs for backends (verification against a CA
//! file or the Mozilla roots, optional client certificate) and server configs for listeners (optional
//! client-certificate verification), each with the expiry time of the certificates it was built from.

mod handshake;
mod reason;
mod reload;

pub use handshake::{ListenTls, UpstreamTls};
pub(crate) use reload::Reloading;

use crate::config::{TlsListen, TlsUpstream};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, ServerConfig, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a TLS config could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    #[error("{}: {message}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// rustls refused the settings (e.g. a key that does not match its certificate).
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    /// A client-certificate verifier could not be built.
    #[error("TLS client verification: {0}")]
    Verifier(String),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let err = |message: String| TlsError::File {
        path: path.to_path_buf(),
        message,
    };
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| err(e.to_string()))?
        .collect::<Result<_, _>>()
        .map_err(|e| err(e.to_string()))?;
    if certs.is_empty() {
        return Err(err("no PEM certificate in the file".into()));
    }
    Ok(certs)
}

fn key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The CAs of a PEM file, and the earliest not-after among them.
fn roots(path: &Path) -> Result<(RootCertStore, Option<i64>), TlsError> {
    let mut roots = RootCertStore::empty();
    let certs = certs(path)?;
    let expiry = earliest_not_after(&certs);
    for cert in certs {
        roots.add(cert).map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
    }
    Ok((roots, expiry))
}

/// A config built from files, with the expiry (unix seconds) of the certificates it holds.
pub struct Loaded<T> {
    /// The config.
    pub config: Arc<T>,
    /// Earliest not-after of the chain sinew presents (listener certificate, client certificate).
    pub cert_expiry: Option<i64>,
    /// Earliest not-after of the CA file it trusts.
    pub ca_expiry: Option<i64>,
}

/// The client config for a service's backends.
pub fn client_config(cfg: &TlsUpstream) -> Result<Loaded<ClientConfig>, TlsError> {
    let builder =
        ClientConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let mut ca_expiry = None;
    let builder = if cfg.verify {
        let roots = match &cfg.ca_file {
            Some(path) => {
                let (roots, expiry) = roots(path)?;
                ca_expiry = expiry;
                roots
            }
            None => RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            },
        };
        builder.with_root_certificates(roots)
    } else {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerification(provider())))
    };
    let mut cert_expiry = None;
    let mut config = match (&cfg.client_cert, &cfg.client_key) {
        (Some(cert), Some(k)) => {
            let certified = certified_key(cert, k)?;
            cert_expiry = earliest_not_after(&certified.cert);
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
        }
        _ => builder.with_no_client_auth(),
    };
    config.alpn_protocols = cfg.alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
    Ok(Loaded {
        config: Arc::new(config),
        cert_expiry,
        ca_expiry,
    })
}

/// A certificate chain and its key, checked to belong together.
pub fn certified_key(cert: &Path, key_file: &Path) -> Result<CertifiedKey, TlsError> {
    let signing = provider().key_provider.load_private_key(key(key_file)?)?;
    let certified = CertifiedKey::new(certs(cert)?, signing);
    certified.keys_match().map_err(|e| TlsError::File {
        path: key_file.to_path_buf(),
        message: format!("does not match {}: {e}", cert.display()),
    })?;
    Ok(certified)
}

/// The server config of a listener.
pub fn server_config(cfg: &TlsListen) -> Result<Loaded<ServerConfig>, TlsError> {
    let builder =
        ServerConfig::builder_with_provider(provider()).with_safe_default_protocol_versions()?;
    let mut ca_expiry = None;
    let builder = match &cfg.client_ca {
        Some(ca) => {
            let (roots, expiry) = roots(ca)?;
            ca_expiry = expiry;
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
                .build()
                .map_err(|e| TlsError::Verifier(e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let certified = certified_key(&cfg.cert, &cfg.key)?;
    let cert_expiry = earliest_not_after(&certified.cert);
    Ok(Loaded {
        config: Arc::new(builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))),
        cert_expiry,
        ca_expiry,
    })
}

/// The earliest not-after time (unix seconds) in a chain; certificates x509-parser cannot read are
/// skipped (rustls accepted them, so they are not ours to reject).
fn earliest_not_after(chain: &[CertificateDer<'_>]) -> Option<i64> {
    chain
        .iter()
        .filter_map(|c| x509_parser::parse_x509_certificate(c.as_ref()).ok())
        .map(|(_, cert)| cert.validity().not_after.timestamp())
        .min()
}

/// `verify: false`: accepts any certificate (signatures are still checked).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
