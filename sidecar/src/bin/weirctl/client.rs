//! The connection to a broker, shared by every weirctl command: RocketMQ headers, clear connection
//! errors, status checks and the small request builders.

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use tonic::metadata::MetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use weir_proto::client_tls::ClientTls;
use weir_proto::rocketmq::v2 as pb;
use weir_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use weir_proto::rocketmq::v2::receive_message_response::Content;
use weir_proto::signature::Credentials;
use weir_proto::weir::admin::v1::admin_client::AdminClient;

/// How every connection of this run reaches the broker: set once from the command line
/// (`--tls-ca`, `--access-key`, `--secret-key`) before any command runs.
#[derive(Debug, Default)]
pub struct ConnectOptions {
    /// PEM CA the broker's certificate must chain to; set, connections use TLS.
    pub tls_ca: Option<PathBuf>,
    /// Access key and secret to sign every request with (RocketMQ ACL).
    pub credentials: Option<Credentials>,
}

static OPTIONS: OnceLock<ConnectOptions> = OnceLock::new();

/// Sets the connection options for the rest of the run.
pub fn configure(options: ConnectOptions) {
    let _ = OPTIONS.set(options);
}

fn options() -> &'static ConnectOptions {
    OPTIONS.get_or_init(ConnectOptions::default)
}

/// Adds the RocketMQ client headers, and the request signature when credentials are set.
#[derive(Debug, Clone)]
pub struct Headers {
    client_id: MetadataValue<tonic::metadata::Ascii>,
}

impl Interceptor for Headers {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        let md = req.metadata_mut();
        md.insert("x-mq-client-id", self.client_id.clone());
        md.insert("x-mq-language", MetadataValue::from_static("WEIRCTL"));
        if let Some(credentials) = &options().credentials {
            credentials.sign(md).map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
        }
        Ok(req)
    }
}

pub type Messaging = MessagingServiceClient<InterceptedService<Channel, Headers>>;
pub type Admin = AdminClient<InterceptedService<Channel, Headers>>;

pub async fn connect(server: &str) -> Result<Channel> {
    let tls = match &options().tls_ca {
        Some(ca) => Some(ClientTls::from_files(ca, None)?),
        None => None,
    };
    let endpoint = weir_proto::client_tls::endpoint(server, tls.as_ref())?;
    endpoint.connect_timeout(Duration::from_secs(3)).connect().await.map_err(|e| {
        anyhow::anyhow!(
            "cannot reach a Weir broker at {server} ({}).\nIs it running? Start one with `weir-sidecar standalone`, \
             or point --server / WEIR_SERVER at it.",
            root_cause(&e)
        )
    })
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

pub fn client_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
    format!("weirctl@{host}@{}", std::process::id())
}

pub async fn messaging(server: &str) -> Result<Messaging> {
    messaging_as(server, &client_id()).await
}

/// A client that introduces itself as `client_id` (the demo plays several applications).
pub async fn messaging_as(server: &str, client_id: &str) -> Result<Messaging> {
    let channel = connect(server).await?;
    Ok(MessagingServiceClient::with_interceptor(channel, headers(client_id)?))
}

/// The admin API (topics, stats, dead letters, offsets).
pub async fn admin(server: &str) -> Result<Admin> {
    let channel = connect(server).await?;
    Ok(AdminClient::with_interceptor(channel, headers(&client_id())?))
}

fn headers(client_id: &str) -> Result<Headers> {
    Ok(Headers { client_id: MetadataValue::try_from(client_id).context("client id is not ASCII")? })
}

/// A message ready to send.
pub fn message(topic: &str, id: String, body: &[u8]) -> pb::Message {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    pb::Message {
        topic: resource(topic),
        user_properties: Default::default(),
        system_properties: Some(pb::SystemProperties {
            message_id: id,
            message_type: pb::MessageType::Normal as i32,
            body_encoding: pb::Encoding::Identity as i32,
            born_timestamp: Some(prost_types::Timestamp {
                seconds: now.as_secs() as i64,
                nanos: now.subsec_nanos() as i32,
            }),
            born_host: std::env::var("HOSTNAME").unwrap_or_default(),
            ..Default::default()
        }),
        body: body.to_vec().into(),
    }
}

/// Sends messages; returns their result entries (each checked).
pub async fn send(client: &mut Messaging, messages: Vec<pb::Message>) -> Result<Vec<pb::SendResultEntry>> {
    let response = client.send_message(pb::SendMessageRequest { messages }).await.context("SendMessage")?.into_inner();
    for entry in &response.entries {
        check(&entry.status, "send")?;
    }
    check(&response.status, "send")?;
    Ok(response.entries)
}

/// One receive: up to `batch` messages of `topic` for `group`, long-polling up to `wait`.
pub async fn receive(
    client: &mut Messaging,
    group: &str,
    topic: &str,
    filter: &str,
    batch: i32,
    wait: Duration,
) -> Result<Vec<pb::Message>> {
    let request = pb::ReceiveMessageRequest {
        group: resource(group),
        message_queue: Some(pb::MessageQueue { topic: resource(topic), ..Default::default() }),
        filter_expression: Some(pb::FilterExpression { r#type: pb::FilterType::Tag as i32, expression: filter.into() }),
        batch_size: batch,
        invisible_duration: Some(prost_types::Duration { seconds: 30, nanos: 0 }),
        auto_renew: false,
        long_polling_timeout: Some(prost_types::Duration {
            seconds: wait.as_secs() as i64,
            nanos: wait.subsec_nanos() as i32,
        }),
        attempt_id: None,
    };
    let mut stream = client.receive_message(request).await.context("ReceiveMessage")?.into_inner();
    let mut messages = Vec::new();
    while let Some(item) = stream.message().await.context("ReceiveMessage stream")? {
        match item.content {
            Some(Content::Status(s)) if s.code != pb::Code::MessageNotFound as i32 => check(&Some(s), "receive")?,
            Some(Content::Message(m)) => messages.push(m),
            _ => {}
        }
    }
    Ok(messages)
}

/// Acknowledges received messages.
pub async fn ack(client: &mut Messaging, group: &str, topic: &str, messages: &[pb::Message]) -> Result<()> {
    if messages.is_empty() {
        return Ok(());
    }
    let entries = messages
        .iter()
        .map(|m| {
            let sys = m.system_properties.clone().unwrap_or_default();
            pb::AckMessageEntry {
                message_id: sys.message_id,
                receipt_handle: sys.receipt_handle.unwrap_or_default(),
                lite_topic: None,
            }
        })
        .collect();
    let response = client
        .ack_message(pb::AckMessageRequest { group: resource(group), topic: resource(topic), entries })
        .await
        .context("AckMessage")?
        .into_inner();
    check(&response.status, "ack")
}

pub fn check(status: &Option<pb::Status>, what: &str) -> Result<()> {
    let s = status.as_ref().with_context(|| format!("{what}: the broker sent no status"))?;
    if s.code == pb::Code::Ok as i32 {
        return Ok(());
    }
    let name = pb::Code::try_from(s.code).map(|c| c.as_str_name()).unwrap_or("UNKNOWN");
    bail!("{what} failed: {name} ({}): {}", s.code, s.message)
}

pub fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource { resource_namespace: String::new(), name: name.to_owned() })
}

/// Message ids unique per process: pid, start time, counter, as upper-case hex like RocketMQ's.
pub struct Ids {
    prefix: String,
    next: u64,
}

impl Ids {
    pub fn new() -> Self {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
        Self { prefix: format!("{:08X}{nanos:016X}", std::process::id()), next: 0 }
    }

    pub fn next(&mut self) -> String {
        self.next += 1;
        format!("{}{:08X}", self.prefix, self.next)
    }
}
