//! Golden wire checks for the RocketMQ 5 protocol types.
//!
//! The expected bytes were worked out by hand from the protocol's published field numbers and enum
//! values (tag byte = field number << 3 | wire type), not produced by running the generated code. If one
//! of these fails, the `.proto` files disagree with what the official SDKs put on the wire.

use bytes::Bytes;
use prost::Message as _;
use prost_types::{Duration, Timestamp};
use weir_proto::rocketmq::v2::{
    AckMessageEntry, Address, AddressScheme, Broker, ChangeInvisibleDurationResponse, ClientType, Code,
    CustomizedBackoff, Digest, DigestType, Encoding, EndTransactionRequest, Endpoints, ExponentialBackoff, FilterType,
    Language, LiteSubscriptionAction, Message, MessageQueue, MessageType, Permission, Publishing, QueryOffsetPolicy,
    ReceiveMessageRequest, ReceiveMessageResponse, RecoverOrphanedTransactionCommand, Resource, RetryPolicy,
    SendMessageRequest, SendResultEntry, Settings, Status, Subscription, SystemProperties, TelemetryCommand,
    TransactionResolution, TransactionSource, offset_option, receive_message_response, retry_policy, settings,
    telemetry_command,
};

fn topic(name: &str) -> Option<Resource> {
    Some(Resource { name: name.to_owned(), ..Default::default() })
}

fn status(code: Code) -> Option<Status> {
    Some(Status { code: code as i32, message: String::new() })
}

#[test]
fn send_message_request_with_one_message() {
    let request = SendMessageRequest {
        messages: vec![Message { topic: topic("t"), body: Bytes::from_static(b"hi"), ..Default::default() }],
    };
    // Resource.name (2) = "t"          -> 12 01 74
    // Message.topic (1)                -> 0a 03 <resource>
    // Message.body (4) = "hi"          -> 22 02 68 69
    // SendMessageRequest.messages (1)  -> 0a 09 <message>
    let expected = [0x0a, 0x09, 0x0a, 0x03, 0x12, 0x01, 0x74, 0x22, 0x02, 0x68, 0x69];
    assert_eq!(request.encode_to_vec(), expected);

    // Decoding from `Bytes` yields a body that points into the input buffer: no copy.
    let input = Bytes::copy_from_slice(&expected);
    let decoded = SendMessageRequest::decode(input.clone()).unwrap();
    let body: &Bytes = &decoded.messages[0].body;
    assert_eq!(body.as_ref(), b"hi");
    let input_range = input.as_ptr_range();
    assert!(input_range.contains(&body.as_ptr()));
}

#[test]
fn message_user_properties_and_system_properties() {
    let message = Message {
        user_properties: [("k".to_owned(), "v".to_owned())].into(),
        system_properties: Some(SystemProperties { message_id: "m".to_owned(), ..Default::default() }),
        ..Default::default()
    };
    // user_properties (2): map entry {key (1) = "k", value (2) = "v"} -> 12 06 0a 01 6b 12 01 76
    // system_properties (3): message_id (3) = "m"                        -> 1a 03 1a 01 6d
    let expected = [0x12, 0x06, 0x0a, 0x01, 0x6b, 0x12, 0x01, 0x76, 0x1a, 0x03, 0x1a, 0x01, 0x6d];
    assert_eq!(message.encode_to_vec(), expected);
}

#[test]
fn system_properties_delivery_fields() {
    let properties = SystemProperties {
        body_digest: Some(Digest { r#type: DigestType::Md5 as i32, checksum: "A".to_owned() }),
        receipt_handle: Some("r".to_owned()),
        delivery_attempt: Some(1),
        ..Default::default()
    };
    // body_digest (4): {type (1) = MD5 = 2, checksum (2) = "A"} -> 22 05 08 02 12 01 41
    // receipt_handle (12), wire type 2: tag 12<<3|2 = 0x62       -> 62 01 72
    // delivery_attempt (16), varint: tag 128 = varint 80 01      -> 80 01 01
    let expected = [0x22, 0x05, 0x08, 0x02, 0x12, 0x01, 0x41, 0x62, 0x01, 0x72, 0x80, 0x01, 0x01];
    assert_eq!(properties.encode_to_vec(), expected);
}

#[test]
fn system_properties_optional_fields_keep_presence() {
    // Proto3 `optional` fields are sent even when they hold the default value.
    let properties = SystemProperties {
        tag: Some(String::new()),
        queue_offset: Some(0),
        message_group: Some("g".to_owned()),
        lite_topic: Some("l".to_owned()),
        priority: Some(0),
        ..Default::default()
    };
    // tag (1) = ""            -> 0a 00
    // queue_offset (14) = 0   -> tag 14<<3 = 0x70           -> 70 00
    // message_group (17)      -> tag 17<<3|2 = 138 = 8a 01  -> 8a 01 01 67
    // lite_topic (21)         -> tag 21<<3|2 = 170 = aa 01  -> aa 01 01 6c
    // priority (22) = 0       -> tag 22<<3 = 176 = b0 01    -> b0 01 00
    let expected = [0x0a, 0x00, 0x70, 0x00, 0x8a, 0x01, 0x01, 0x67, 0xaa, 0x01, 0x01, 0x6c, 0xb0, 0x01, 0x00];
    assert_eq!(properties.encode_to_vec(), expected);
}

#[test]
fn system_properties_timestamps_and_durations() {
    let properties = SystemProperties {
        born_timestamp: Some(Timestamp { seconds: 1, nanos: 0 }),
        store_timestamp: Some(Timestamp { seconds: 2, nanos: 0 }),
        delivery_timestamp: Some(Timestamp { seconds: 3, nanos: 0 }),
        invisible_duration: Some(Duration { seconds: 4, nanos: 0 }),
        orphaned_transaction_recovery_duration: Some(Duration { seconds: 5, nanos: 0 }),
        body_encoding: Encoding::Identity as i32,
        message_type: MessageType::Transaction as i32,
        queue_id: 7,
        ..Default::default()
    };
    // body_encoding (5) = IDENTITY 1  -> 28 01
    // message_type (6) = TRANSACTION 4 -> 30 04
    // born_timestamp (7)              -> 3a 02 08 01
    // store_timestamp (9)             -> 4a 02 08 02
    // delivery_timestamp (11)         -> 5a 02 08 03
    // queue_id (13) = 7               -> 68 07
    // invisible_duration (15)         -> 7a 02 08 04
    // orphaned_transaction_recovery_duration (19): tag 19<<3|2 = 154 = 9a 01 -> 9a 01 02 08 05
    let expected = [
        0x28, 0x01, 0x30, 0x04, 0x3a, 0x02, 0x08, 0x01, 0x4a, 0x02, 0x08, 0x02, 0x5a, 0x02, 0x08, 0x03, 0x68, 0x07,
        0x7a, 0x02, 0x08, 0x04, 0x9a, 0x01, 0x02, 0x08, 0x05,
    ];
    assert_eq!(properties.encode_to_vec(), expected);
}

#[test]
fn status_codes_encode_as_varints() {
    // 40401 = 0b10_0111011_1010001 -> varint d1 bb 02
    let status = Status { code: Code::MessageNotFound as i32, message: "m".to_owned() };
    assert_eq!(status.encode_to_vec(), [0x08, 0xd1, 0xbb, 0x02, 0x12, 0x01, 0x6d]);
}

#[test]
fn code_values() {
    let expected = [
        (Code::Unspecified, 0),
        (Code::Ok, 20000),
        (Code::MultipleResults, 30000),
        (Code::BadRequest, 40000),
        (Code::IllegalAccessPoint, 40001),
        (Code::IllegalTopic, 40002),
        (Code::IllegalConsumerGroup, 40003),
        (Code::IllegalMessageTag, 40004),
        (Code::IllegalMessageKey, 40005),
        (Code::IllegalMessageGroup, 40006),
        (Code::IllegalMessagePropertyKey, 40007),
        (Code::InvalidTransactionId, 40008),
        (Code::IllegalMessageId, 40009),
        (Code::IllegalFilterExpression, 40010),
        (Code::IllegalInvisibleTime, 40011),
        (Code::IllegalDeliveryTime, 40012),
        (Code::InvalidReceiptHandle, 40013),
        (Code::MessagePropertyConflictWithType, 40014),
        (Code::UnrecognizedClientType, 40015),
        (Code::MessageCorrupted, 40016),
        (Code::ClientIdRequired, 40017),
        (Code::IllegalPollingTime, 40018),
        (Code::IllegalOffset, 40019),
        (Code::IllegalLiteTopic, 40020),
        (Code::InvalidClientProperties, 40021),
        (Code::Unauthorized, 40100),
        (Code::PaymentRequired, 40200),
        (Code::Forbidden, 40300),
        (Code::NotFound, 40400),
        (Code::MessageNotFound, 40401),
        (Code::TopicNotFound, 40402),
        (Code::ConsumerGroupNotFound, 40403),
        (Code::OffsetNotFound, 40404),
        (Code::RequestTimeout, 40800),
        (Code::PayloadTooLarge, 41300),
        (Code::MessageBodyTooLarge, 41301),
        (Code::MessageBodyEmpty, 41302),
        (Code::PreconditionFailed, 42800),
        (Code::TooManyRequests, 42900),
        (Code::LiteTopicQuotaExceeded, 42901),
        (Code::LiteSubscriptionQuotaExceeded, 42902),
        (Code::RequestHeaderFieldsTooLarge, 43100),
        (Code::MessagePropertiesTooLarge, 43101),
        (Code::InternalError, 50000),
        (Code::InternalServerError, 50001),
        (Code::HaNotAvailable, 50002),
        (Code::NotImplemented, 50100),
        (Code::ProxyTimeout, 50400),
        (Code::MasterPersistenceTimeout, 50401),
        (Code::SlavePersistenceTimeout, 50402),
        (Code::Unsupported, 50500),
        (Code::VersionUnsupported, 50501),
        (Code::VerifyFifoMessageUnsupported, 50502),
        (Code::FailedToConsumeMessage, 60000),
    ];
    for (code, value) in expected {
        assert_eq!(code as i32, value, "{code:?}");
    }
    assert_eq!(Code::from_str_name("ILLEGAL_POLLING_TIME"), Some(Code::IllegalPollingTime));
}

#[test]
fn other_enum_values() {
    assert_eq!(Permission::None as i32, 1);
    assert_eq!(Permission::Read as i32, 2);
    assert_eq!(Permission::Write as i32, 3);
    assert_eq!(Permission::ReadWrite as i32, 4);

    assert_eq!(MessageType::Normal as i32, 1);
    assert_eq!(MessageType::Fifo as i32, 2);
    assert_eq!(MessageType::Delay as i32, 3);
    assert_eq!(MessageType::Transaction as i32, 4);
    assert_eq!(MessageType::Lite as i32, 5);
    assert_eq!(MessageType::Priority as i32, 6);

    assert_eq!(AddressScheme::IPv4 as i32, 1);
    assert_eq!(AddressScheme::IPv6 as i32, 2);
    assert_eq!(AddressScheme::DomainName as i32, 3);

    assert_eq!(DigestType::Crc32 as i32, 1);
    assert_eq!(DigestType::Md5 as i32, 2);
    assert_eq!(DigestType::Sha1 as i32, 3);

    assert_eq!(Encoding::Identity as i32, 1);
    assert_eq!(Encoding::Gzip as i32, 2);

    assert_eq!(ClientType::Producer as i32, 1);
    assert_eq!(ClientType::PushConsumer as i32, 2);
    assert_eq!(ClientType::SimpleConsumer as i32, 3);
    assert_eq!(ClientType::PullConsumer as i32, 4);
    assert_eq!(ClientType::LitePushConsumer as i32, 5);
    assert_eq!(ClientType::LiteSimpleConsumer as i32, 6);

    assert_eq!(Language::Java as i32, 1);
    assert_eq!(Language::Rust as i32, 5);
    assert_eq!(Language::Python as i32, 6);
    assert_eq!(Language::NodeJs as i32, 8);
    assert_eq!(Language::Kotlin as i32, 12);

    assert_eq!(FilterType::Tag as i32, 1);
    assert_eq!(FilterType::Sql as i32, 2);

    assert_eq!(TransactionResolution::Commit as i32, 1);
    assert_eq!(TransactionResolution::Rollback as i32, 2);
    assert_eq!(TransactionSource::SourceClient as i32, 1);
    assert_eq!(TransactionSource::SourceServerCheck as i32, 2);

    assert_eq!(QueryOffsetPolicy::Beginning as i32, 0);
    assert_eq!(QueryOffsetPolicy::End as i32, 1);
    assert_eq!(QueryOffsetPolicy::Timestamp as i32, 2);

    assert_eq!(LiteSubscriptionAction::PartialAdd as i32, 0);
    assert_eq!(LiteSubscriptionAction::CompleteRemove as i32, 3);
    assert_eq!(offset_option::Policy::Last as i32, 0);
    assert_eq!(offset_option::Policy::Max as i32, 2);
}

#[test]
fn message_queue_route_entry() {
    let queue = MessageQueue {
        topic: topic("t"),
        id: 0,
        permission: Permission::ReadWrite as i32,
        broker: Some(Broker {
            name: "b".to_owned(),
            id: 0,
            endpoints: Some(Endpoints {
                scheme: AddressScheme::IPv4 as i32,
                addresses: vec![Address { host: "h".to_owned(), port: 8081 }],
            }),
        }),
        accept_message_types: vec![
            MessageType::Normal as i32,
            MessageType::Fifo as i32,
            MessageType::Delay as i32,
            MessageType::Transaction as i32,
        ],
    };
    // topic (1)                          -> 0a 03 12 01 74
    // id (2) = 0                         -> omitted
    // permission (3) = READ_WRITE 4      -> 18 04
    // broker (4) {name (1) = "b", endpoints (3) {scheme (1) = 1,
    //   addresses (2) {host (1) = "h", port (2) = 8081 = varint 91 3f}}}
    // accept_message_types (5), packed   -> 2a 04 01 02 03 04
    let expected = [
        0x0a, 0x03, 0x12, 0x01, 0x74, 0x18, 0x04, 0x22, 0x0f, 0x0a, 0x01, 0x62, 0x1a, 0x0a, 0x08, 0x01, 0x12, 0x06,
        0x0a, 0x01, 0x68, 0x10, 0x91, 0x3f, 0x2a, 0x04, 0x01, 0x02, 0x03, 0x04,
    ];
    assert_eq!(queue.encode_to_vec(), expected);
}

#[test]
fn telemetry_settings_reply() {
    let command = TelemetryCommand {
        status: status(Code::Ok),
        command: Some(telemetry_command::Command::Settings(Settings {
            client_type: Some(ClientType::Producer as i32),
            ..Default::default()
        })),
    };
    // status (1) {code (1) = 20000 = varint a0 9c 01} -> 0a 04 08 a0 9c 01
    // settings (2) {client_type (1) = PRODUCER 1}     -> 12 02 08 01
    let expected = [0x0a, 0x04, 0x08, 0xa0, 0x9c, 0x01, 0x12, 0x02, 0x08, 0x01];
    assert_eq!(command.encode_to_vec(), expected);
}

#[test]
fn telemetry_recover_orphaned_transaction() {
    let command = TelemetryCommand {
        status: None,
        command: Some(telemetry_command::Command::RecoverOrphanedTransactionCommand(
            RecoverOrphanedTransactionCommand { message: None, transaction_id: "x".to_owned() },
        )),
    };
    // recover_orphaned_transaction_command (5) {transaction_id (2) = "x"} -> 2a 03 12 01 78
    let expected = [0x2a, 0x03, 0x12, 0x01, 0x78];
    assert_eq!(command.encode_to_vec(), expected);

    // The other client-side and server-side commands, decoded from hand-made frames.
    let cases: [(&[u8], &str); 7] = [
        (&[0x1a, 0x03, 0x0a, 0x01, 0x6e], "thread_stack_trace"),
        (&[0x22, 0x03, 0x0a, 0x01, 0x6e], "verify_message_result"),
        (&[0x32, 0x03, 0x0a, 0x01, 0x6e], "print_thread_stack_trace_command"),
        (&[0x3a, 0x03, 0x0a, 0x01, 0x6e], "verify_message_command"),
        (&[0x42, 0x03, 0x0a, 0x01, 0x6e], "reconnect_endpoints_command"),
        (&[0x4a, 0x03, 0x0a, 0x01, 0x6e], "notify_unsubscribe_lite_command"),
        (&[0x12, 0x00], "settings"),
    ];
    use telemetry_command::Command as C;
    for (frame, want) in cases {
        let decoded = TelemetryCommand::decode(frame).unwrap();
        let got = match decoded.command.unwrap() {
            C::Settings(_) => "settings",
            C::ThreadStackTrace(t) => {
                assert_eq!(t.nonce, "n");
                "thread_stack_trace"
            }
            C::VerifyMessageResult(r) => {
                assert_eq!(r.nonce, "n");
                "verify_message_result"
            }
            C::RecoverOrphanedTransactionCommand(_) => "recover_orphaned_transaction_command",
            C::PrintThreadStackTraceCommand(c) => {
                assert_eq!(c.nonce, "n");
                "print_thread_stack_trace_command"
            }
            C::VerifyMessageCommand(c) => {
                assert_eq!(c.nonce, "n");
                "verify_message_command"
            }
            C::ReconnectEndpointsCommand(c) => {
                assert_eq!(c.nonce, "n");
                "reconnect_endpoints_command"
            }
            C::NotifyUnsubscribeLiteCommand(c) => {
                assert_eq!(c.lite_topic, "n");
                "notify_unsubscribe_lite_command"
            }
        };
        assert_eq!(got, want);
    }
}

#[test]
fn settings_publishing_subscription_and_backoff() {
    let producer = Settings {
        backoff_policy: Some(RetryPolicy {
            max_attempts: 3,
            strategy: Some(retry_policy::Strategy::ExponentialBackoff(ExponentialBackoff {
                initial: None,
                max: None,
                multiplier: 2.0,
            })),
        }),
        pub_sub: Some(settings::PubSub::Publishing(Publishing {
            topics: vec![],
            max_body_size: 4_000_000,
            validate_message_type: true,
        })),
        ..Default::default()
    };
    // backoff_policy (3) {max_attempts (1) = 3, exponential_backoff (2) {multiplier (3), fixed32 2.0}}
    //   -> 1a 09 08 03 12 05 1d 00 00 00 40
    // publishing (5) {max_body_size (2) = 4000000 = varint 80 92 f4 01, validate_message_type (3)}
    //   -> 2a 07 10 80 92 f4 01 18 01
    let expected = [
        0x1a, 0x09, 0x08, 0x03, 0x12, 0x05, 0x1d, 0x00, 0x00, 0x00, 0x40, 0x2a, 0x07, 0x10, 0x80, 0x92, 0xf4, 0x01,
        0x18, 0x01,
    ];
    assert_eq!(producer.encode_to_vec(), expected);

    let consumer = Settings {
        backoff_policy: Some(RetryPolicy {
            max_attempts: 0,
            strategy: Some(retry_policy::Strategy::CustomizedBackoff(CustomizedBackoff {
                next: vec![Duration { seconds: 1, nanos: 0 }],
            })),
        }),
        pub_sub: Some(settings::PubSub::Subscription(Subscription {
            fifo: Some(false),
            receive_batch_size: Some(32),
            long_polling_timeout: Some(Duration { seconds: 20, nanos: 0 }),
            ..Default::default()
        })),
        user_agent: Some(weir_proto::rocketmq::v2::Ua { language: Language::NodeJs as i32, ..Default::default() }),
        ..Default::default()
    };
    // backoff_policy (3) {customized_backoff (3) {next (1) {seconds (1) = 1}}}
    //   -> 1a 06 1a 04 0a 02 08 01
    // subscription (6) {fifo (3) = false (kept: optional), receive_batch_size (4) = 32,
    //   long_polling_timeout (5) {seconds = 20}} -> 32 08 18 00 20 20 2a 02 08 14
    // user_agent (7) {language (1) = NODE_JS 8} -> 3a 02 08 08
    let expected = [
        0x1a, 0x06, 0x1a, 0x04, 0x0a, 0x02, 0x08, 0x01, 0x32, 0x08, 0x18, 0x00, 0x20, 0x20, 0x2a, 0x02, 0x08, 0x14,
        0x3a, 0x02, 0x08, 0x08,
    ];
    assert_eq!(consumer.encode_to_vec(), expected);
}

#[test]
fn receive_message_stream_frames() {
    let not_found = ReceiveMessageResponse {
        content: Some(receive_message_response::Content::Status(Status {
            code: Code::MessageNotFound as i32,
            message: String::new(),
        })),
    };
    assert_eq!(not_found.encode_to_vec(), [0x0a, 0x04, 0x08, 0xd1, 0xbb, 0x02]);

    let message = ReceiveMessageResponse {
        content: Some(receive_message_response::Content::Message(Message { topic: topic("t"), ..Default::default() })),
    };
    assert_eq!(message.encode_to_vec(), [0x12, 0x05, 0x0a, 0x03, 0x12, 0x01, 0x74]);

    let end = ReceiveMessageResponse {
        content: Some(receive_message_response::Content::DeliveryTimestamp(Timestamp { seconds: 1, nanos: 0 })),
    };
    assert_eq!(end.encode_to_vec(), [0x1a, 0x02, 0x08, 0x01]);
}

#[test]
fn receive_message_request_fields() {
    let request = ReceiveMessageRequest {
        batch_size: 32,
        invisible_duration: Some(Duration { seconds: 15, nanos: 0 }),
        auto_renew: true,
        long_polling_timeout: Some(Duration { seconds: 20, nanos: 0 }),
        attempt_id: Some("a".to_owned()),
        filter_expression: Some(weir_proto::rocketmq::v2::FilterExpression {
            r#type: FilterType::Tag as i32,
            expression: "*".to_owned(),
        }),
        ..Default::default()
    };
    // filter_expression (3) {type (1) = TAG 1, expression (2) = "*"} -> 1a 05 08 01 12 01 2a
    // batch_size (4) = 32                -> 20 20
    // invisible_duration (5) {15 s}      -> 2a 02 08 0f
    // auto_renew (6)                     -> 30 01
    // long_polling_timeout (7) {20 s}    -> 3a 02 08 14
    // attempt_id (8) = "a"               -> 42 01 61
    let expected = [
        0x1a, 0x05, 0x08, 0x01, 0x12, 0x01, 0x2a, 0x20, 0x20, 0x2a, 0x02, 0x08, 0x0f, 0x30, 0x01, 0x3a, 0x02, 0x08,
        0x14, 0x42, 0x01, 0x61,
    ];
    assert_eq!(request.encode_to_vec(), expected);
}

#[test]
fn small_request_and_response_fields() {
    let entry = SendResultEntry {
        status: None,
        message_id: "m".to_owned(),
        transaction_id: "x".to_owned(),
        offset: 5,
        recall_handle: "r".to_owned(),
    };
    // message_id (2), transaction_id (3), offset (4), recall_handle (5)
    assert_eq!(entry.encode_to_vec(), [0x12, 0x01, 0x6d, 0x1a, 0x01, 0x78, 0x20, 0x05, 0x2a, 0x01, 0x72]);

    let ack =
        AckMessageEntry { message_id: "m".to_owned(), receipt_handle: "r".to_owned(), lite_topic: Some(String::new()) };
    // message_id (1), receipt_handle (2), lite_topic (3) kept though empty (optional)
    assert_eq!(ack.encode_to_vec(), [0x0a, 0x01, 0x6d, 0x12, 0x01, 0x72, 0x1a, 0x00]);

    let change = ChangeInvisibleDurationResponse { status: None, receipt_handle: "r".to_owned() };
    assert_eq!(change.encode_to_vec(), [0x12, 0x01, 0x72]);

    let end = EndTransactionRequest {
        resolution: TransactionResolution::Rollback as i32,
        source: TransactionSource::SourceServerCheck as i32,
        trace_context: "c".to_owned(),
        ..Default::default()
    };
    // resolution (4) = 2, source (5) = 2, trace_context (6) = "c"
    assert_eq!(end.encode_to_vec(), [0x20, 0x02, 0x28, 0x02, 0x32, 0x01, 0x63]);
}

#[test]
fn service_descriptor_matches_the_protocol() {
    let fds = prost_types::FileDescriptorSet::decode(weir_proto::FILE_DESCRIPTOR_SET).unwrap();
    let service = fds
        .file
        .iter()
        .filter(|f| f.package() == "apache.rocketmq.v2")
        .flat_map(|f| &f.service)
        .find(|s| s.name() == "MessagingService")
        .expect("MessagingService in the descriptor set");
    fn short(name: &str) -> &str {
        name.strip_prefix(".apache.rocketmq.v2.").expect("a type of the package")
    }
    let mut methods: Vec<(&str, &str, &str, bool, bool)> = service
        .method
        .iter()
        .map(|m| (m.name(), short(m.input_type()), short(m.output_type()), m.client_streaming(), m.server_streaming()))
        .collect();
    let mut expected = vec![
        ("QueryRoute", "QueryRouteRequest", "QueryRouteResponse", false, false),
        ("Heartbeat", "HeartbeatRequest", "HeartbeatResponse", false, false),
        ("SendMessage", "SendMessageRequest", "SendMessageResponse", false, false),
        ("QueryAssignment", "QueryAssignmentRequest", "QueryAssignmentResponse", false, false),
        ("ReceiveMessage", "ReceiveMessageRequest", "ReceiveMessageResponse", false, true),
        ("AckMessage", "AckMessageRequest", "AckMessageResponse", false, false),
        (
            "ForwardMessageToDeadLetterQueue",
            "ForwardMessageToDeadLetterQueueRequest",
            "ForwardMessageToDeadLetterQueueResponse",
            false,
            false,
        ),
        ("PullMessage", "PullMessageRequest", "PullMessageResponse", false, true),
        ("UpdateOffset", "UpdateOffsetRequest", "UpdateOffsetResponse", false, false),
        ("GetOffset", "GetOffsetRequest", "GetOffsetResponse", false, false),
        ("QueryOffset", "QueryOffsetRequest", "QueryOffsetResponse", false, false),
        ("EndTransaction", "EndTransactionRequest", "EndTransactionResponse", false, false),
        ("Telemetry", "TelemetryCommand", "TelemetryCommand", true, true),
        ("NotifyClientTermination", "NotifyClientTerminationRequest", "NotifyClientTerminationResponse", false, false),
        ("ChangeInvisibleDuration", "ChangeInvisibleDurationRequest", "ChangeInvisibleDurationResponse", false, false),
        ("RecallMessage", "RecallMessageRequest", "RecallMessageResponse", false, false),
        ("SyncLiteSubscription", "SyncLiteSubscriptionRequest", "SyncLiteSubscriptionResponse", false, false),
    ];
    methods.sort();
    expected.sort();
    assert_eq!(methods, expected);

    // The gRPC path prefix the SDKs call.
    assert_eq!(weir_proto::rocketmq::v2::messaging_service_server::SERVICE_NAME, "apache.rocketmq.v2.MessagingService");
}
