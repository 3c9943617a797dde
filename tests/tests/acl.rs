//! RocketMQ access control (`weir-sidecar --acl-file`): the official Python SDK with credentials
//! sends and consumes exactly what its user's policies allow; a raw client checks each refusal's
//! status code: no or wrong credentials are UNAUTHORIZED, a resource the user may not touch is
//! FORBIDDEN (Deny winning over Allow), a batch is authorised message by message, and the admin
//! API is for super users only.

use hmac::{Hmac, Mac};
use tonic::metadata::MetadataValue;
use weir_proto::rocketmq::v2 as pb;
use weir_proto::weir::admin::v1 as admin;
use weir_tests::raw::{self, code};
use weir_tests::{Sidecar, python, write_manifest};

const ACL: &str = r#"
users:
  - username: ops
    password: ops-password-0123456
    superUser: true
  - username: orders-service
    password: orders-password-0123
    policies:
      - {resources: ["Topic:orders", "Topic:orders-*"], actions: [Pub]}
      - {resources: ["Topic:orders-audit"], actions: [All], decision: Deny}
      - {resources: ["Group:billing", "Topic:orders"], actions: [Sub]}
"#;

/// Signs like the Java SDK does (local time with a literal Z, uppercase hex).
fn sign<T>(request: &mut tonic::Request<T>, user: &str, password: &str) {
    let date = "20261124T120000Z";
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(password.as_bytes()).unwrap();
    mac.update(date.as_bytes());
    let signature = const_hex::encode_upper(mac.finalize().into_bytes());
    let md = request.metadata_mut();
    md.insert("x-mq-client-id", MetadataValue::from_static("acl-test"));
    md.insert("x-mq-date-time", MetadataValue::from_static(date));
    let auth = format!("MQv2-HMAC-SHA1 Credential={user}, SignedHeaders=x-mq-date-time, Signature={signature}");
    md.insert("authorization", auth.parse().unwrap());
}

async fn send_as(client: &mut raw::Client, who: Option<(&str, &str)>, topics: &[&str]) -> pb::Code {
    let messages =
        topics.iter().enumerate().map(|(i, t)| raw::message(t, &format!("acl-{t}-{i}"), None, b"x".to_vec())).collect();
    let mut request = tonic::Request::new(pb::SendMessageRequest { messages });
    if let Some((user, password)) = who {
        sign(&mut request, user, password);
    }
    code(&client.send_message(request).await.unwrap().into_inner().status)
}

/// The status of a (signed) receive.
async fn receive_code(client: &mut raw::Client, request: tonic::Request<pb::ReceiveMessageRequest>) -> pb::Code {
    use pb::receive_message_response::Content;
    let mut stream = client.receive_message(request).await.unwrap().into_inner();
    while let Some(item) = stream.message().await.unwrap() {
        if let Some(Content::Status(s)) = item.content {
            return pb::Code::try_from(s.code).unwrap();
        }
    }
    panic!("no status in the receive stream")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sdk_with_credentials_gets_exactly_what_its_policies_allow() {
    let dir = tempfile::tempdir().unwrap();
    let acl = write_manifest(dir.path(), "acl.yaml", ACL);
    let broker = Sidecar::start(&dir.path().join("data"), &["--acl-file", acl.to_str().unwrap()]).unwrap();
    let url = broker.access_url();
    let creds = ["--access-key", "orders-service", "--secret-key", "orders-password-0123"];

    let sent = python::run("produce", &url, &[&["--topic", "orders", "--count", "3"][..], &creds].concat());
    assert_eq!(sent.len(), 3);
    let got = python::run(
        "simple-receive",
        &url,
        &[&["--topic", "orders", "--group", "billing", "--count", "3"][..], &creds].concat(),
    );
    assert_eq!(got.iter().filter(|v| v["body"].is_string()).count(), 3, "{got:?}");

    // The SDK fails where the policies say no: a wrong secret, a topic it may not publish to.
    let wrong = ["--access-key", "orders-service", "--secret-key", "not-the-right-secret"];
    for args in [
        [&["--topic", "orders", "--timeout", "10"][..], &wrong].concat(),
        [&["--topic", "payments", "--timeout", "10"][..], &creds].concat(),
    ] {
        let out = python::spawn("produce", &url, &args).wait_with_output().unwrap();
        assert!(!out.status.success(), "produce {args:?} was let through");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_refusal_has_the_right_code_and_batches_are_checked_message_by_message() {
    let dir = tempfile::tempdir().unwrap();
    let acl = write_manifest(dir.path(), "acl.yaml", ACL);
    let broker = Sidecar::start(&dir.path().join("data"), &["--acl-file", acl.to_str().unwrap()]).unwrap();
    let mut client = raw::connect(broker.grpc, Some("acl-test")).await;
    let orders = Some(("orders-service", "orders-password-0123"));

    assert_eq!(send_as(&mut client, None, &["orders"]).await, pb::Code::Unauthorized, "anonymous");
    assert_eq!(
        send_as(&mut client, Some(("orders-service", "wrong-password-000")), &["orders"]).await,
        pb::Code::Unauthorized
    );
    assert_eq!(
        send_as(&mut client, Some(("nobody", "orders-password-0123")), &["orders"]).await,
        pb::Code::Unauthorized
    );
    assert_eq!(send_as(&mut client, orders, &["orders"]).await, pb::Code::Ok);
    assert_eq!(send_as(&mut client, orders, &["orders-eu"]).await, pb::Code::Ok, "prefix policy");
    assert_eq!(send_as(&mut client, orders, &["orders-audit"]).await, pb::Code::Forbidden, "Deny wins over the prefix");
    assert_eq!(send_as(&mut client, orders, &["payments"]).await, pb::Code::Forbidden, "nothing allows it");
    // One forbidden message refuses the whole batch, and nothing of it is stored.
    assert_eq!(send_as(&mut client, orders, &["orders", "payments"]).await, pb::Code::Forbidden);

    // Consuming needs Sub on both the group and the topic.
    for (group, topic, want) in [
        ("billing", "orders", pb::Code::Ok),
        ("billing", "orders-eu", pb::Code::Forbidden),
        ("audit", "orders", pb::Code::Forbidden),
    ] {
        let mut request = tonic::Request::new(raw::receive_request(group, topic, "*", 10_000));
        sign(&mut request, "orders-service", "orders-password-0123");
        assert_eq!(receive_code(&mut client, request).await, want, "{group} on {topic}");
    }

    // A producer may only declare topics it may publish to: declared topics receive transaction
    // check-backs, which carry other producers' message bodies.
    for (topic, want) in [("orders", pb::Code::Ok), ("payments", pb::Code::Forbidden)] {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let settings = pb::Settings {
            client_type: Some(pb::ClientType::Producer as i32),
            pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing {
                topics: vec![pb::Resource { resource_namespace: String::new(), name: topic.into() }],
                ..Default::default()
            })),
            ..Default::default()
        };
        tx.send(pb::TelemetryCommand {
            status: None,
            command: Some(pb::telemetry_command::Command::Settings(settings)),
        })
        .await
        .unwrap();
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(rx));
        sign(&mut request, "orders-service", "orders-password-0123");
        let mut answers = client.telemetry(request).await.unwrap().into_inner();
        let answer = answers.message().await.unwrap().expect("an answer to the settings");
        assert_eq!(code(&answer.status), want, "declaring {topic}");
    }

    // The admin API: super users only.
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", broker.grpc)).unwrap().connect().await.unwrap();
    let mut admin = weir_proto::weir::admin::v1::admin_client::AdminClient::new(channel);
    let mut plain = tonic::Request::new(admin::ListTopicsRequest {});
    sign(&mut plain, "orders-service", "orders-password-0123");
    assert_eq!(admin.list_topics(plain).await.unwrap_err().code(), tonic::Code::PermissionDenied);
    assert_eq!(admin.list_topics(admin::ListTopicsRequest {}).await.unwrap_err().code(), tonic::Code::Unauthenticated);
    let mut ops = tonic::Request::new(admin::ListTopicsRequest {});
    sign(&mut ops, "ops", "ops-password-0123456");
    let topics = admin.list_topics(ops).await.unwrap().into_inner().topics;
    let payments =
        topics.iter().find(|t| t.name == "payments").map_or(0, |t| t.partitions.iter().map(|p| p.end_offset).sum());
    assert_eq!(payments, 0, "the refused batch stored nothing");
}
