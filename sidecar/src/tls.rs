//! TLS for the broker's two listeners, gRPC (RocketMQ clients, peers, the operator) and `/metrics`,
//! from PEM files: a certificate chain, its private key and, for mutual TLS, the CA that client
//! certificates must chain to. In Kubernetes the files come from a Secret mounted into the pod
//! (cert-manager writes `tls.crt`, `tls.key` and `ca.crt`).
//!
//! Both listeners use rustls with the ring provider; tonic builds its own configuration from the
//! same PEM bytes, the metrics listener gets a [`rustls::ServerConfig`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// Where the PEM files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// Private key of the leaf (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA bundle for client certificates; set, every client must present one (mutual TLS).
    pub client_ca: Option<PathBuf>,
}

/// A TLS file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file cannot be read.
    #[error("reading the TLS {what} {path}")]
    Read {
        /// certificate, key or client CA.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file has no usable PEM block.
    #[error("{path} holds no PEM {what}")]
    NoPem {
        /// What was expected.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// rustls refused the combination (key does not match, unsupported algorithm, ...).
    #[error("TLS configuration: {0}")]
    Rejected(#[from] rustls::Error),
    /// The client CA bundle cannot verify clients.
    #[error("client CA: {0}")]
    ClientCa(String),
}

/// The files' contents, checked.
#[derive(Clone)]
pub struct LoadedTls {
    cert_pem: Vec<u8>,
    key_pem: Vec<u8>,
    client_ca_pem: Option<Vec<u8>>,
    metrics: Arc<rustls::ServerConfig>,
}

impl std::fmt::Debug for LoadedTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedTls").field("mutual", &self.client_ca_pem.is_some()).finish_non_exhaustive()
    }
}

fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read { what, path: path.to_owned(), source })
}

fn certificates(what: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(TlsError::NoPem { what, path: path.to_owned() });
    }
    Ok(certs)
}

impl TlsFiles {
    /// Reads and checks the files: the key must match the certificate, the CA must parse.
    pub fn load(&self) -> Result<LoadedTls, TlsError> {
        let cert_pem = read("certificate", &self.cert)?;
        let key_pem = read("key", &self.key)?;
        let chain = certificates("certificate", &self.cert, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem)
            .map_err(|_| TlsError::NoPem { what: "private key", path: self.key.clone() })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder =
            rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions()?;
        let client_ca_pem = match &self.client_ca {
            Some(path) => Some(read("client CA", path)?),
            None => None,
        };
        let builder = match (&self.client_ca, &client_ca_pem) {
            (Some(path), Some(pem)) => {
                let mut roots = rustls::RootCertStore::empty();
                for ca in certificates("client CA", path, pem)? {
                    roots.add(ca)?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut metrics = builder.with_single_cert(chain, key)?;
        metrics.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(LoadedTls { cert_pem, key_pem, client_ca_pem, metrics: Arc::new(metrics) })
    }
}

impl LoadedTls {
    /// Whether clients must present a certificate.
    pub fn mutual(&self) -> bool {
        self.client_ca_pem.is_some()
    }

    /// The gRPC server's configuration.
    pub fn grpc(&self) -> tonic::transport::ServerTlsConfig {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let config = ServerTlsConfig::new().identity(Identity::from_pem(&self.cert_pem, &self.key_pem));
        match &self.client_ca_pem {
            Some(ca) => config.client_ca_root(Certificate::from_pem(ca)),
            None => config,
        }
    }

    /// The metrics server's configuration (HTTP/1.1).
    pub fn metrics(&self) -> Arc<rustls::ServerConfig> {
        self.metrics.clone()
    }
}
