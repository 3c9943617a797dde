//! Reaching a broker, over TLS when it serves TLS: the one place that turns an address and an
//! optional trust setting into a tonic [`Endpoint`], for weirctl, for brokers forwarding to their
//! peers and for the operator's admin calls.

use std::path::{Path, PathBuf};

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint, Identity};

/// What a client trusts and, for brokers that demand one, the certificate it presents (PEM).
#[derive(Clone)]
pub struct ClientTls {
    ca_pem: Vec<u8>,
    identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").field("client_certificate", &self.identity.is_some()).finish_non_exhaustive()
    }
}

/// A TLS file or address that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    /// The file cannot be read.
    #[error("reading the {what} {path}")]
    Read {
        /// CA bundle, certificate or key.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file holds no PEM block of the expected kind.
    #[error("{path} holds no PEM {what}")]
    NoPem {
        /// What was expected.
        what: &'static str,
        /// The file.
        path: PathBuf,
    },
    /// An address that is not `host:port`.
    #[error("{address:?} is not a host:port address: {source}")]
    Address {
        /// The address.
        address: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
    /// The CA bundle or client certificate does not parse as X.509 / a key.
    #[error("TLS settings for {address}: {source}")]
    Config {
        /// The address.
        address: String,
        /// Why.
        #[source]
        source: tonic::transport::Error,
    },
}

/// Reads the `what` file at `path`, naming both in the error.
pub fn read(what: &'static str, path: &Path) -> Result<Vec<u8>, ClientTlsError> {
    std::fs::read(path).map_err(|source| ClientTlsError::Read { what, path: path.to_owned(), source })
}

fn read_pem(what: &'static str, path: &Path, marker: &str) -> Result<Vec<u8>, ClientTlsError> {
    let pem = read(what, path)?;
    let text = String::from_utf8_lossy(&pem);
    if !text.contains("-----BEGIN ") || !text.contains(marker) {
        return Err(ClientTlsError::NoPem { what, path: path.to_owned() });
    }
    Ok(pem)
}

impl ClientTls {
    /// Trusting the CA bundle `ca_pem`, presenting `identity` (certificate chain, key) when given.
    pub fn new(ca_pem: Vec<u8>, identity: Option<(Vec<u8>, Vec<u8>)>) -> Self {
        Self { ca_pem, identity }
    }

    /// Reads the CA bundle and, when given, the client certificate and its key.
    pub fn from_files(ca: &Path, identity: Option<(&Path, &Path)>) -> Result<Self, ClientTlsError> {
        let ca_pem = read_pem("CA bundle", ca, "CERTIFICATE")?;
        let identity = match identity {
            Some((cert, key)) => Some((
                read_pem("client certificate", cert, "CERTIFICATE")?,
                read_pem("client key", key, "PRIVATE KEY")?,
            )),
            None => None,
        };
        Ok(Self { ca_pem, identity })
    }

    /// Whether a client certificate is presented.
    pub fn has_identity(&self) -> bool {
        self.identity.is_some()
    }

    /// tonic's configuration for a broker reached at `host`, which its certificate must name.
    pub fn config(&self, host: &str) -> ClientTlsConfig {
        let config = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&self.ca_pem)).domain_name(host);
        match &self.identity {
            Some((cert, key)) => config.identity(Identity::from_pem(cert, key)),
            None => config,
        }
    }
}

/// The endpoint of a broker at `address` (`host:port`): `https` with `tls`, else `http`.
pub fn endpoint(address: &str, tls: Option<&ClientTls>) -> Result<Endpoint, ClientTlsError> {
    let invalid = |source| ClientTlsError::Address { address: address.to_owned(), source };
    let scheme = if tls.is_some() { "https" } else { "http" };
    let endpoint = Endpoint::from_shared(format!("{scheme}://{address}")).map_err(invalid)?;
    match tls {
        Some(tls) => {
            let host = endpoint.uri().host().unwrap_or_default().trim_matches(['[', ']']).to_owned();
            endpoint
                .tls_config(tls.config(&host))
                .map_err(|source| ClientTlsError::Config { address: address.to_owned(), source })
        }
        None => Ok(endpoint),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_tls_endpoints() {
        assert_eq!(endpoint("10.0.0.1:8081", None).unwrap().uri().to_string(), "http://10.0.0.1:8081/");
        let pod = "orders-broker-0.orders-broker.shop.svc.cluster.local:8081";
        let empty_bundle =
            ClientTls::new(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_vec(), None);
        assert_eq!(endpoint(pod, Some(&empty_bundle)).unwrap().uri().scheme_str(), Some("https"));
        let garbled = ClientTls::new(b"-----BEGIN CERTIFICATE-----\nAAAA".to_vec(), None);
        let err = endpoint(pod, Some(&garbled)).unwrap_err();
        assert!(err.to_string().starts_with("TLS settings for orders-broker-0"), "{err}");
        assert!(matches!(endpoint("not an address", None), Err(ClientTlsError::Address { .. })));
    }

    #[test]
    fn files_without_pem_are_refused_by_name() {
        let dir = std::env::temp_dir().join(format!("weir-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.crt");
        std::fs::write(&ca, "not a certificate").unwrap();
        let err = ClientTls::from_files(&ca, None).unwrap_err();
        assert!(err.to_string().contains("ca.crt holds no PEM CA bundle"), "{err}");
        let missing = ClientTls::from_files(&dir.join("absent.crt"), None).unwrap_err();
        assert!(missing.to_string().starts_with("reading the CA bundle"), "{missing}");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
