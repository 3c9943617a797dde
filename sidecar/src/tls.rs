//! TLS for the broker's two listeners, gRPC (RocketMQ clients, peers, the operator) and `/metrics`,
//! from PEM files: a certificate chain, its private key and, for mutual TLS, the CA that client
//! certificates must chain to. In Kubernetes the files come from a Secret mounted into the pod
//! (cert-manager writes `tls.crt`, `tls.key` and `ca.crt`).
//!
//! Both listeners use rustls with the ring provider; tonic builds its own configuration from the
//! same PEM bytes, the metrics listener gets a [`rustls::ServerConfig`]. Mutual TLS applies to
//! gRPC only: `/metrics`, `/healthz` and `/readyz` carry no message data, and neither the
//! kubelet's probes nor a typical Prometheus scrape present a client certificate.
//!
//! Requests forwarded to other brokers ([`ClientTls`]) use TLS too, trusting `--peer-ca` and, when
//! the brokers demand client certificates, presenting this broker's own.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
pub use weir_proto::client_tls::ClientTls;
use weir_proto::client_tls::{self, ClientTlsError};

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
    /// The file cannot be read or holds no PEM block of the expected kind.
    #[error(transparent)]
    File(#[from] ClientTlsError),
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
    Ok(client_tls::read(what, path)?)
}

fn no_pem(what: &'static str, path: &Path) -> TlsError {
    ClientTlsError::NoPem { what, path: path.to_owned() }.into()
}

fn certificates(what: &'static str, path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_slice_iter(pem).filter_map(Result::ok).collect();
    if certs.is_empty() {
        return Err(no_pem(what, path));
    }
    Ok(certs)
}

impl TlsFiles {
    /// Reads and checks the files: the key must match the certificate, the CA must parse.
    pub fn load(&self) -> Result<LoadedTls, TlsError> {
        let cert_pem = read("certificate", &self.cert)?;
        let key_pem = read("key", &self.key)?;
        let chain = certificates("certificate", &self.cert, &cert_pem)?;
        let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| no_pem("private key", &self.key))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client_ca_pem = match &self.client_ca {
            Some(path) => {
                let pem = read("client CA", path)?;
                // Checked here so a bad bundle stops the broker at start, not at the first client.
                let mut roots = rustls::RootCertStore::empty();
                for ca in certificates("client CA", path, &pem)? {
                    roots.add(ca)?;
                }
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| TlsError::ClientCa(e.to_string()))?;
                Some(pem)
            }
            None => None,
        };
        let mut metrics = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(chain, key)?;
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

    /// The metrics server's configuration (HTTP/1.1, no client certificates).
    pub fn metrics(&self) -> Arc<rustls::ServerConfig> {
        self.metrics.clone()
    }

    /// TLS towards other brokers, trusting the CA bundle at `peer_ca`; with mutual TLS this
    /// broker's certificate is its client identity (peers demand one as every client).
    pub fn peers(&self, peer_ca: &Path) -> Result<ClientTls, TlsError> {
        let ca = read("peer CA", peer_ca)?;
        certificates("peer CA", peer_ca, &ca)?;
        let identity = self.mutual().then(|| (self.cert_pem.clone(), self.key_pem.clone()));
        Ok(ClientTls::new(ca, identity))
    }
}
