//! Every delivered message carries the MD5 of its body (the RocketMQ clients check it), however it
//! was sent: one message per request, many single-message sends in flight together (sharing group
//! commits), and batches of 2, 3 and 16. Bodies of many lengths, so one hashing pass meets bodies of
//! unequal length.

use std::collections::HashSet;

use md5::{Digest, Md5};
use weir_proto::rocketmq::v2 as pb;
use weir_tests::Sidecar;
use weir_tests::raw::{self, code, message, receive, receive_request};

const TOPIC: &str = "digests";

fn body(i: usize) -> Vec<u8> {
    format!("message {i} ").into_bytes().into_iter().cycle().take(1 + (i * 97) % 3000).collect()
}

async fn send(client: &mut raw::Client, ids: impl IntoIterator<Item = usize>) {
    let messages = ids.into_iter().map(|i| message(TOPIC, &format!("m{i}"), None, body(i))).collect();
    let r = client.send_message(pb::SendMessageRequest { messages }).await.unwrap().into_inner();
    assert_eq!(code(&r.status), pb::Code::Ok, "{r:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_delivered_body_carries_its_md5_however_it_was_sent() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Sidecar::start(&dir.path().join("data"), &[]).unwrap();
    let mut client = raw::connect(broker.grpc, Some("digest-test@1")).await;

    // One at a time, then 200 single sends in flight at once, then batches of 2, 3 and 16.
    for i in 0..3 {
        send(&mut client, [i]).await;
    }
    let concurrent = (3..203).map(|i| {
        let mut client = client.clone();
        tokio::spawn(async move { send(&mut client, [i]).await })
    });
    for sent in futures::future::join_all(concurrent).await {
        sent.unwrap();
    }
    send(&mut client, 203..205).await;
    send(&mut client, 205..208).await;
    send(&mut client, 208..224).await;

    let mut seen = HashSet::new();
    while seen.len() < 224 {
        let (rc, got) = receive(&mut client, receive_request("checker", TOPIC, "*", 60_000)).await;
        assert_eq!(rc, pb::Code::Ok, "all 224 messages are there to receive ({} so far)", seen.len());
        for m in got {
            let sys = m.system_properties.as_ref().unwrap();
            let digest = sys.body_digest.as_ref().expect("every delivered message has a body digest");
            assert_eq!(digest.r#type, pb::DigestType::Md5 as i32);
            let i: usize = sys.message_id[1..].parse().unwrap();
            assert_eq!(m.body.as_ref(), body(i).as_slice(), "{}", sys.message_id);
            assert_eq!(digest.checksum, const_hex::encode_upper(Md5::digest(&m.body)), "{}", sys.message_id);
            seen.insert(i);
        }
    }
}
