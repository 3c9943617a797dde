//! Certificates made per test (rcgen): a CA and the PEM files it signs, in a temporary
//! directory, and a gRPC client that trusts that CA.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use tonic::transport::Channel;
use weir_proto::client_tls::{self, ClientTls};
use weir_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;

/// A CA and the PEM files it signed, in a temporary directory.
pub struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
}

impl Pki {
    /// A new CA named `name` (its file is [`Pki::ca`]).
    pub fn new(name: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let key = KeyPair::generate().expect("a CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, format!("{name} test CA"));
        let cert = params.self_signed(&key).expect("a self-signed CA");
        std::fs::write(dir.path().join("ca.crt"), cert.pem()).expect("write ca.crt");
        Self { dir, issuer: Issuer::new(params, key) }
    }

    /// The directory holding the files (for other files of the test).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA certificate (PEM).
    pub fn ca(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// A certificate for `names` (DNS names, wildcards or IPs); returns (cert, key) paths.
    pub fn issue(&self, file: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let key = KeyPair::generate().expect("a key");
        let params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).expect("parameters");
        let cert = params.signed_by(&key, &self.issuer).expect("a signed certificate");
        let (cert_path, key_path) =
            (self.dir.path().join(format!("{file}.crt")), self.dir.path().join(format!("{file}.key")));
        std::fs::write(&cert_path, cert.pem()).expect("write the certificate");
        std::fs::write(&key_path, key.serialize_pem()).expect("write the key");
        (cert_path, key_path)
    }
}

/// A channel to the broker at `address` (`host:port`, the host checked against its certificate)
/// over TLS trusting `ca`, presenting `identity` (cert, key) if given.
pub async fn tls_channel(
    address: &str,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<Channel, tonic::transport::Error> {
    let tls = ClientTls::from_files(ca, identity).expect("readable PEM files");
    let endpoint = client_tls::endpoint(address, Some(&tls)).expect("a valid address and PEM files");
    endpoint.connect().await
}

/// A raw gRPC client over [`tls_channel`].
pub async fn tls_client(
    address: &str,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<MessagingServiceClient<Channel>, tonic::transport::Error> {
    Ok(MessagingServiceClient::new(tls_channel(address, ca, identity).await?))
}

/// `GET path` over HTTPS (HTTP/1.1) from `addr`, trusting `ca` and checking the certificate
/// names `server_name`; returns the whole response.
pub async fn https_get(
    addr: std::net::SocketAddr,
    ca: &Path,
    server_name: &str,
    path: &str,
) -> std::io::Result<String> {
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca)?;
    for cert in rustls::pki_types::pem::PemObject::pem_slice_iter(&pem) {
        roots.add(cert.map_err(std::io::Error::other)?).map_err(std::io::Error::other)?;
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(std::io::Error::other)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_owned()).map_err(std::io::Error::other)?;
    let mut stream = connector.connect(name, tcp).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}
