//! TLS test helpers: a CA and leaf certificates made at run time with rcgen, TLS backends (plain lines
//! and HTTPS) and a TLS client that reports the certificate it was shown.

use super::process::temp_file;
use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A certificate authority and its PEM file.
pub struct Ca {
    pub cert: rcgen::Certificate,
    pub key: KeyPair,
    pub file: PathBuf,
}

/// A new self-signed CA named `<name> CA`, written to `<name>-ca.pem`.
pub fn ca(name: &str) -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("{name} CA"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let cert = params.self_signed(&key).unwrap();
    let file = temp_file(&format!("{name}-ca.pem"), &cert.pem());
    Ca { cert, key, file }
}

/// A leaf certificate for `names`, signed by `ca`: (cert file, key file).
pub fn leaf(ca: &Ca, name: &str, names: &[&str]) -> (PathBuf, PathBuf) {
    leaf_with(ca, name, names, |_| {})
}

/// Like [`leaf`], with `adjust` applied to the parameters first (serial, validity).
pub fn leaf_with(
    ca: &Ca,
    name: &str,
    names: &[&str],
    adjust: impl FnOnce(&mut CertificateParams),
) -> (PathBuf, PathBuf) {
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    adjust(&mut params);
    let cert = params.signed_by(&key, &ca.cert, &ca.key).unwrap();
    (
        temp_file(&format!("{name}.pem"), &cert.pem()),
        temp_file(&format!("{name}.key"), &key.serialize_pem()),
    )
}

/// Replaces `live` (cert, key) with `new` the way deployment tools do: write aside, then rename.
pub fn install(new: &(PathBuf, PathBuf), live: &(PathBuf, PathBuf)) {
    for (from, to) in [(&new.1, &live.1), (&new.0, &live.0)] {
        let aside = to.with_extension("tmp");
        std::fs::copy(from, &aside).unwrap();
        std::fs::rename(&aside, to).unwrap();
    }
}

/// The serial number of the first certificate of a DER or PEM file, as hex.
pub fn serial_of_file(file: &PathBuf) -> String {
    let der = CertificateDer::pem_file_iter(file)
        .unwrap()
        .next()
        .unwrap()
        .unwrap();
    serial(&der)
}

/// The serial number of a certificate, as hex.
pub fn serial(der: &[u8]) -> String {
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    cert.raw_serial_as_string()
}

/// The ring crypto provider.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A root store holding `ca`.
pub fn roots(ca: &Ca) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(&ca.file).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

fn chain(file: &PathBuf) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_file_iter(file)
        .unwrap()
        .map(|c| c.unwrap())
        .collect()
}

/// The server config of a test backend, requiring a client certificate signed by `client_ca` if given.
pub fn server_config(cert: &(PathBuf, PathBuf), client_ca: Option<&Ca>) -> rustls::ServerConfig {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        Some(ca) => builder.with_client_cert_verifier(
            rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots(ca)),
                provider(),
            )
            .build()
            .unwrap(),
        ),
        None => builder.with_no_client_auth(),
    };
    builder
        .with_single_cert(
            chain(&cert.0),
            PrivateKeyDer::from_pem_file(&cert.1).unwrap(),
        )
        .unwrap()
}

/// A TLS backend that greets with `name` (followed by the serial of the client certificate, when one
/// was presented), then echoes until EOF; optionally requires a client certificate signed by
/// `client_ca`.
pub async fn tls_backend(
    name: &'static str,
    cert: &(PathBuf, PathBuf),
    client_ca: Option<&Ca>,
) -> SocketAddr {
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(cert, client_ca)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(s).await else {
                    return;
                };
                let greeting = match tls.get_ref().1.peer_certificates() {
                    Some([client, ..]) => format!("{name} {}\n", serial(client)),
                    _ => format!("{name}\n"),
                };
                let _ = tls.write_all(greeting.as_bytes()).await;
                let _ = tls.flush().await;
                let mut buf = [0u8; 1024];
                while let Ok(n @ 1..) = tls.read(&mut buf).await {
                    if tls.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// An HTTPS backend (HTTP/1.1 and h2 over TLS, ALPN) answering `name` and the protocol it saw.
pub async fn https_backend(name: &'static str, cert: &(PathBuf, PathBuf)) -> SocketAddr {
    use http_body_util::Full;
    let mut config = server_config(cert, None);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else {
                    return;
                };
                let svc = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| async move {
                        let body = format!("{name} over {:?}", req.version());
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            bytes::Bytes::from(body),
                        )))
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                .await;
            });
        }
    });
    addr
}

/// A TLS connection to a listener, verified against `ca`, optionally with a client certificate.
pub async fn tls_connect(
    addr: SocketAddr,
    ca: &Ca,
    cert: Option<&(PathBuf, PathBuf)>,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca));
    let config = match cert {
        Some((c, k)) => builder
            .with_client_auth_cert(chain(c), PrivateKeyDer::from_pem_file(k).unwrap())
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    let stream = TcpStream::connect(addr).await?;
    tls_handshake(stream, config).await
}

/// A TLS handshake as `127.0.0.1` over a connection already open (after bytes sent in the clear).
pub async fn tls_over(
    stream: TcpStream,
    ca: &Ca,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots(ca))
        .with_no_client_auth();
    tls_handshake(stream, config).await
}

async fn tls_handshake(
    stream: TcpStream,
    config: rustls::ClientConfig,
) -> std::io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    connector
        .connect(ServerName::try_from("127.0.0.1").unwrap(), stream)
        .await
}

/// Reads one line (without the newline) from a TLS stream; empty at EOF.
pub async fn tls_line(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
) -> std::io::Result<String> {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while tokio::time::timeout(Duration::from_secs(3), tls.read(&mut byte))
        .await
        .map_err(std::io::Error::other)??
        == 1
    {
        if byte[0] == b'\n' {
            break;
        }
        line.push(byte[0]);
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// Connects over TLS and returns the greeting line (empty when the connection was closed instead).
pub async fn tls_client(
    addr: SocketAddr,
    ca: &Ca,
    cert: Option<&(PathBuf, PathBuf)>,
) -> std::io::Result<String> {
    let mut tls = tls_connect(addr, ca, cert).await?;
    tls_line(&mut tls).await
}

/// Connects over TLS: the greeting line and the serial of the certificate the listener presented.
pub async fn tls_client_serial(addr: SocketAddr, ca: &Ca) -> std::io::Result<(String, String)> {
    let mut tls = tls_connect(addr, ca, None).await?;
    let presented = match tls.get_ref().1.peer_certificates() {
        Some([leaf, ..]) => serial(leaf),
        _ => String::new(),
    };
    Ok((tls_line(&mut tls).await?, presented))
}
