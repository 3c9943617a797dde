//! A raw gRPC client of the RocketMQ protocol, for requests no official SDK would send (malformed,
//! out of range, missing headers).

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::transport::Channel;
use weir_proto::rocketmq::v2 as pb;
use weir_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use weir_proto::signature::Credentials;

/// Adds the RocketMQ headers to every request, and the signature when credentials are set.
#[derive(Debug, Clone)]
pub struct Headers {
    client_id: Option<String>,
    credentials: Option<Credentials>,
}

impl Interceptor for Headers {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(id) = &self.client_id {
            req.metadata_mut().insert("x-mq-client-id", MetadataValue::try_from(id.as_str()).expect("ascii id"));
        }
        req.metadata_mut().insert("x-mq-language", MetadataValue::from_static("RUST"));
        if let Some(credentials) = &self.credentials {
            credentials.sign(req.metadata_mut()).expect("ASCII access key");
        }
        Ok(req)
    }
}

/// The client type.
pub type Client = MessagingServiceClient<tonic::service::interceptor::InterceptedService<Channel, Headers>>;

/// Connects to `addr`; `client_id` None leaves the header out.
pub async fn connect(addr: std::net::SocketAddr, client_id: Option<&str>) -> Client {
    let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
    with_headers(channel, client_id)
}

/// A client over `channel` (e.g. a TLS one); `client_id` None leaves the header out.
pub fn with_headers(channel: Channel, client_id: Option<&str>) -> Client {
    signed(channel, client_id, None)
}

/// A client over `channel` signing every request with `credentials` (RocketMQ ACL).
pub fn signed(channel: Channel, client_id: Option<&str>, credentials: Option<Credentials>) -> Client {
    let headers = Headers { client_id: client_id.map(str::to_owned), credentials };
    MessagingServiceClient::with_interceptor(channel, headers)
        .max_decoding_message_size(64 << 20)
        .max_encoding_message_size(64 << 20)
}

/// A resource by name.
pub fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource { resource_namespace: String::new(), name: name.into() })
}

/// A normal message with the given id, tag and body.
pub fn message(topic: &str, id: &str, tag: Option<&str>, body: Vec<u8>) -> pb::Message {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    pb::Message {
        topic: resource(topic),
        user_properties: HashMap::new(),
        system_properties: Some(pb::SystemProperties {
            tag: tag.map(str::to_owned),
            message_id: id.into(),
            message_type: pb::MessageType::Normal as i32,
            body_encoding: pb::Encoding::Identity as i32,
            born_timestamp: Some(prost_types::Timestamp { seconds: now.as_secs() as i64, nanos: 0 }),
            born_host: "test".into(),
            ..Default::default()
        }),
        body: body.into(),
    }
}

/// The acknowledgement entry for a received message.
pub fn ack_entry(m: &pb::Message) -> pb::AckMessageEntry {
    let sys = m.system_properties.as_ref().expect("received messages carry system properties");
    pb::AckMessageEntry {
        message_id: sys.message_id.clone(),
        receipt_handle: sys.receipt_handle.clone().expect("received messages carry a receipt handle"),
        lite_topic: None,
    }
}

/// The code of a status.
pub fn code(s: &Option<pb::Status>) -> pb::Code {
    pb::Code::try_from(s.as_ref().expect("status is always set").code).expect("known code")
}

/// Receives once; returns the status code of the stream and its messages.
pub async fn receive(client: &mut Client, req: pb::ReceiveMessageRequest) -> (pb::Code, Vec<pb::Message>) {
    try_receive(client, req).await.expect("receive without transport errors")
}

/// Receives once, returning transport errors (a broker that went away) instead of panicking.
/// Messages that arrived before an error are lost to the caller, as they are to a real client: the
/// broker redelivers them after their invisible time.
pub async fn try_receive(
    client: &mut Client,
    req: pb::ReceiveMessageRequest,
) -> Result<(pb::Code, Vec<pb::Message>), tonic::Status> {
    use pb::receive_message_response::Content;
    let mut stream = client.receive_message(req).await?.into_inner();
    let mut code = None;
    let mut messages = Vec::new();
    while let Some(item) = stream.message().await? {
        match item.content.expect("content is always set") {
            Content::Status(s) => code = Some(pb::Code::try_from(s.code).expect("known code")),
            Content::Message(m) => messages.push(m),
            Content::DeliveryTimestamp(_) => {}
            Content::Encoded(_) => unreachable!("decoding gives messages, never encoded ones"),
        }
    }
    Ok((code.expect("a status in the stream"), messages))
}

/// A receive request for `group` on `topic`.
pub fn receive_request(group: &str, topic: &str, filter: &str, invisible_ms: u64) -> pb::ReceiveMessageRequest {
    pb::ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(pb::MessageQueue { topic: resource(topic), ..Default::default() }),
        filter_expression: Some(pb::FilterExpression { r#type: pb::FilterType::Tag as i32, expression: filter.into() }),
        batch_size: 32,
        invisible_duration: Some(prost_types::Duration {
            seconds: (invisible_ms / 1000) as i64,
            nanos: ((invisible_ms % 1000) * 1_000_000) as i32,
        }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
        attempt_id: None,
    }
}
