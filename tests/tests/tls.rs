//! TLS and mutual TLS on both broker listeners, with certificates made per test (rcgen): the
//! official Python SDK sends and receives over TLS trusting only the test CA; `/metrics` answers
//! over HTTPS; with a client CA, only clients holding a certificate it signed get in; and a broker
//! without TLS refuses to listen on an open address unless plaintext is chosen explicitly.

use std::path::Path;

use tonic::transport::Channel;
use weir_proto::rocketmq::v2 as pb;
use weir_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use weir_tests::pki::Pki;
use weir_tests::{Sidecar, python};

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A raw gRPC client of the broker at `addr` (certificate for `localhost`) trusting `ca`.
async fn tls_client(
    addr: std::net::SocketAddr,
    ca: &Path,
    identity: Option<(&Path, &Path)>,
) -> Result<MessagingServiceClient<Channel>, tonic::transport::Error> {
    weir_tests::pki::tls_client(&format!("localhost:{}", addr.port()), ca, identity).await
}

/// A request that needs no state: the route of an auto-created topic.
async fn query_route(client: &mut MessagingServiceClient<Channel>) -> Result<pb::Code, tonic::Status> {
    let request = pb::QueryRouteRequest { topic: weir_tests::raw::resource("secure"), endpoints: None };
    let mut request = tonic::Request::new(request);
    request.metadata_mut().insert("x-mq-client-id", "tls-test".parse().unwrap());
    let r = client.query_route(request).await?.into_inner();
    Ok(weir_tests::raw::code(&r.status))
}

/// `GET /metrics` over HTTPS trusting `ca` (the broker's certificate names `localhost`).
async fn https_scrape(addr: std::net::SocketAddr, ca: &Path) -> std::io::Result<String> {
    weir_tests::pki::https_get(addr, ca, "localhost", "/metrics").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_sdk_sends_and_receives_over_tls_and_metrics_answer_over_https() {
    let pki = Pki::new("server");
    let (cert, key) = pki.issue("broker", &["localhost", "127.0.0.1"]);
    let data = tempfile::tempdir().unwrap();
    let broker = Sidecar::start(data.path(), &["--tls-cert", path(&cert), "--tls-key", path(&key)]).unwrap();
    let endpoint = broker.access_url();
    let ca = pki.ca();
    let trust = [("GRPC_DEFAULT_SSL_ROOTS_FILE_PATH", path(&ca))];

    let sent = python::run_with_env("produce", &endpoint, &["--topic", "secure", "--count", "5", "--tls"], &trust);
    assert_eq!(sent.len(), 5, "{sent:?}");
    let received = python::run_with_env(
        "simple-receive",
        &endpoint,
        &["--topic", "secure", "--group", "tls-readers", "--count", "5", "--tls"],
        &trust,
    );
    let bodies: Vec<&str> = received.iter().filter_map(|v| v["body"].as_str()).collect();
    assert_eq!(bodies.len(), 5, "{received:?}");

    let scrape = https_scrape(broker.metrics, &pki.ca()).await.expect("metrics over HTTPS");
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
    assert!(scrape.contains("rocketmq_messages_in_total{"), "{scrape}");
    // Plaintext gets no metrics, and a client that does not trust the CA gets no TLS session.
    assert!(weir_tests::scrape(broker.metrics).map_or(true, |s| !s.contains("rocketmq_")));
    let stranger = Pki::new("stranger");
    assert!(https_scrape(broker.metrics, &stranger.ca()).await.is_err());
    assert!(tls_client(broker.grpc, &stranger.ca(), None).await.is_err(), "an untrusted server certificate is refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca() {
    let servers = Pki::new("server");
    let clients = Pki::new("client");
    let strangers = Pki::new("stranger");
    let (cert, key) = servers.issue("broker", &["localhost", "127.0.0.1"]);
    let (client_cert, client_key) = clients.issue("app", &["orders-service"]);
    let (stranger_cert, stranger_key) = strangers.issue("app", &["intruder"]);
    let data = tempfile::tempdir().unwrap();
    let ca = clients.ca();
    let args = ["--tls-cert", path(&cert), "--tls-key", path(&key), "--tls-client-ca", path(&ca)];
    let broker = Sidecar::start(data.path(), &args).unwrap();

    let mut admitted = tls_client(broker.grpc, &servers.ca(), Some((&client_cert, &client_key))).await.unwrap();
    assert_eq!(query_route(&mut admitted).await.unwrap(), pb::Code::Ok);

    // TLS 1.3 finishes the handshake before the server checks the client; the first call fails.
    for identity in [None, Some((stranger_cert.as_path(), stranger_key.as_path()))] {
        let refused = match tls_client(broker.grpc, &servers.ca(), identity).await {
            Err(_) => true,
            Ok(mut client) => query_route(&mut client).await.is_err(),
        };
        assert!(refused, "a client with {identity:?} got in");
    }
    assert_eq!(query_route(&mut admitted).await.unwrap(), pb::Code::Ok, "refusing others did not disturb it");
    // Metrics and probes need no client certificate (the kubelet and Prometheus present none).
    let scrape = https_scrape(broker.metrics, &servers.ca()).await.expect("metrics over HTTPS without a client cert");
    assert!(scrape.starts_with("HTTP/1.1 200"), "{scrape}");
}

#[test]
fn plaintext_on_an_open_address_must_be_chosen_explicitly() {
    let data = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(weir_tests::sidecar_binary())
        .args(["standalone", "--listen", "0.0.0.0:0", "--metrics-listen", "127.0.0.1:0", "--data-dir"])
        .arg(data.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "served plaintext on 0.0.0.0 without being told");
    assert!(stderr.contains("--plaintext") && stderr.contains("--tls-cert"), "the error says how to fix it: {stderr}");

    let broker = Sidecar::start_on(data.path(), "0.0.0.0:0", "127.0.0.1:0", &["--plaintext"]).unwrap();
    assert!(broker.scrape().unwrap().contains("rocketmq_storage_size"));
}

#[test]
fn weirctl_signs_and_speaks_tls_to_a_locked_down_broker() {
    let pki = Pki::new("server");
    let (cert, key) = pki.issue("broker", &["localhost", "127.0.0.1"]);
    let acl = pki.dir().join("acl.yaml");
    std::fs::write(&acl, "users: [{username: ops, password: ops-password-0123456, superUser: true}]\n").unwrap();
    let data = tempfile::tempdir().unwrap();
    let args = ["--tls-cert", path(&cert), "--tls-key", path(&key), "--acl-file", path(&acl)];
    let broker = Sidecar::start(data.path(), &args).unwrap();
    let weirctl = |extra: &[&str]| {
        std::process::Command::new(weir_tests::weirctl_binary())
            .args(["--server", &broker.access_url(), "--tls-ca", path(&pki.ca())])
            .args(extra)
            .env_remove("WEIR_ACCESS_KEY")
            .env_remove("WEIR_SECRET_KEY")
            .output()
            .unwrap()
    };
    let creds = ["--access-key", "ops", "--secret-key", "ops-password-0123456"];
    let sent = weirctl(&[&creds[..], &["produce", "--topic", "audit", "--body", "hello", "--count", "2"]].concat());
    assert!(sent.status.success(), "{}", String::from_utf8_lossy(&sent.stderr));
    let topics = weirctl(&[&creds[..], &["topics"]].concat());
    assert!(String::from_utf8_lossy(&topics.stdout).contains("audit"), "{topics:?}");
    let anonymous = weirctl(&["produce", "--topic", "audit", "--body", "x"]);
    assert!(!anonymous.status.success());
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("UNAUTHORIZED"), "{anonymous:?}");
}
