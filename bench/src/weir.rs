//! The Weir driver: the RocketMQ 5 gRPC protocol as the official SDKs speak it (SendMessage with
//! a batch of messages, long-polling ReceiveMessage, batched AckMessage).

use std::sync::Arc;

use anyhow::{Context, Result, bail};
use tonic::transport::Channel;
use weir_proto::rocketmq::v2 as pb;
use weir_proto::rocketmq::v2::messaging_service_client::MessagingServiceClient;
use weir_proto::rocketmq::v2::receive_message_response::Content;

use crate::workload::{self, Latency, Remaining, Settings};

/// The topic every run publishes to.
pub const TOPIC: &str = "bench";
/// The consumer group every run consumes with.
pub const GROUP: &str = "bench";

fn resource(name: &str) -> Option<pb::Resource> {
    Some(pb::Resource { resource_namespace: String::new(), name: name.to_owned() })
}

fn request<T>(client_id: &str, body: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(body);
    request.metadata_mut().insert("x-mq-client-id", client_id.parse().expect("ASCII client id"));
    request
}

fn ok(status: Option<&pb::Status>, what: &str) -> Result<()> {
    match status {
        Some(s) if s.code == pb::Code::Ok as i32 => Ok(()),
        Some(s) => bail!("{what}: {:?} {}", pb::Code::try_from(s.code), s.message),
        None => bail!("{what}: no status"),
    }
}

/// Connects to the broker's gRPC address.
pub async fn connect(address: &str) -> Result<Channel> {
    let channel = Channel::from_shared(format!("http://{address}"))?.connect().await;
    channel.with_context(|| format!("connecting to Weir at {address}"))
}

/// One producer: `settings.units_per_producer()` sends of `settings.batch` messages.
pub async fn produce(channel: Channel, producer: usize, settings: &Settings) -> Result<Latency> {
    let client = MessagingServiceClient::new(channel).max_decoding_message_size(64 << 20);
    let client_id = format!("bench-producer-{producer}");
    workload::publish(settings, |k, due| {
        let mut client = client.clone();
        let messages = (0..settings.batch)
            .map(|i| pb::Message {
                topic: resource(TOPIC),
                user_properties: Default::default(),
                system_properties: Some(pb::SystemProperties {
                    message_id: format!("{producer:x}-{k:x}-{i:x}"),
                    message_type: pb::MessageType::Normal as i32,
                    born_timestamp: Some(prost_types::Timestamp::default()),
                    ..Default::default()
                }),
                body: due.payload(settings.size),
            })
            .collect();
        let request = request(&client_id, pb::SendMessageRequest { messages });
        async move {
            let response = client.send_message(request).await?.into_inner();
            // A batch answers per message; the first refused entry says why.
            for entry in &response.entries {
                ok(entry.status.as_ref(), "SendMessage entry")?;
            }
            ok(response.status.as_ref(), "SendMessage")
        }
    })
    .await
}

/// Acknowledgements a receive loop keeps in flight while it already receives the next batch (as the
/// SDKs' push consumers do: acks go out on their own while receiving goes on).
const ACKS_IN_FLIGHT: usize = 4;

/// One consumer of the group: `settings.receives` receive loops on one connection (as a push
/// consumer keeps a receive in flight per queue) until `remaining` reaches zero, acknowledging each
/// batch in the background; returns the end-to-end latencies (stamp to receipt) once every
/// acknowledgement has been answered.
pub async fn consume(
    channel: Channel,
    consumer: usize,
    settings: &Settings,
    remaining: Arc<Remaining>,
) -> Result<Latency> {
    let client = MessagingServiceClient::new(channel).max_decoding_message_size(256 << 20);
    let client_id = format!("bench-consumer-{consumer}");
    let loops = (0..settings.receives.max(1)).map(|_| receive_loop(client.clone(), &client_id, settings, &remaining));
    let mut latency = Latency::of_run(settings);
    for done in futures::future::join_all(loops).await {
        latency.merge(&done?);
    }
    Ok(latency)
}

/// Receives and acknowledges until `remaining` reaches zero.
async fn receive_loop(
    mut client: MessagingServiceClient<Channel>,
    client_id: &str,
    settings: &Settings,
    remaining: &Remaining,
) -> Result<Latency> {
    let mut latency = Latency::of_run(settings);
    let mut acks = tokio::task::JoinSet::new();
    while !remaining.is_done() {
        let receive = pb::ReceiveMessageRequest {
            group: resource(GROUP),
            message_queue: Some(pb::MessageQueue { topic: resource(TOPIC), ..Default::default() }),
            filter_expression: Some(pb::FilterExpression {
                r#type: pb::FilterType::Tag as i32,
                expression: "*".into(),
            }),
            batch_size: settings.receive_batch as i32,
            invisible_duration: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
            auto_renew: false,
            long_polling_timeout: Some(prost_types::Duration { seconds: 1, nanos: 0 }),
            attempt_id: None,
        };
        let receiving = async {
            let mut stream = client.receive_message(request(client_id, receive)).await?.into_inner();
            let mut entries = Vec::new();
            while let Some(item) = stream.message().await? {
                if let Some(Content::Message(m)) = item.content {
                    latency.record_stamped(&m.body);
                    let sys = m.system_properties.unwrap_or_default();
                    entries.push(pb::AckMessageEntry {
                        message_id: sys.message_id,
                        receipt_handle: sys.receipt_handle.unwrap_or_default(),
                        ..Default::default()
                    });
                }
            }
            anyhow::Ok(entries)
        };
        // The other receive loops took the last messages: stop waiting for more.
        let entries = tokio::select! {
            entries = receiving => entries?,
            () = remaining.finished() => break,
        };
        if entries.is_empty() {
            continue;
        }
        let got = entries.len() as u64;
        remaining.received(got);
        while acks.len() >= ACKS_IN_FLIGHT {
            acks.join_next().await.expect("acks in flight")??;
        }
        let ack = pb::AckMessageRequest { group: resource(GROUP), topic: resource(TOPIC), entries };
        let (mut client, request) = (client.clone(), request(client_id, ack));
        acks.spawn(async move {
            let response = client.ack_message(request).await?.into_inner();
            ok(response.status.as_ref(), "AckMessage")
        });
    }
    while let Some(done) = acks.join_next().await {
        done??;
    }
    Ok(latency)
}
