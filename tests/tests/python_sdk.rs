//! The official Python SDK (rocketmq-python-client 5.1.2) against a real broker: a PushConsumer
//! whose listener fails twice sees delivery attempt 3; a FIFO PushConsumer that gives up on a
//! message forwards it to the dead-letter queue and the rest of its group flows; the SimpleConsumer's
//! change of invisibility retires the old receipt handle; and broadcast consumption delivers every
//! message to every one of five consumer processes exactly once.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::sync::Arc;

use rocketmq::model::message::MessageBuilder;
use weir_tests::{Sidecar, python, sdk, write_manifest};

fn start(dir: &std::path::Path, manifest: &str) -> Sidecar {
    let path = write_manifest(dir, "m.yaml", manifest);
    Sidecar::start(&dir.join("data"), &["-f", path.to_str().unwrap()]).unwrap()
}

#[test]
fn push_consumer_retries_until_the_listener_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(
        dir.path(),
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: signups}\nspec: {partitions: 4}\n",
    );
    let url = broker.access_url();
    python::run("produce", &url, &["--topic", "signups", "--count", "3"]);
    let seen = python::run("push-fail-twice", &url, &["--topic", "signups", "--group", "mailer", "--count", "3"]);
    let mut attempts: HashMap<String, Vec<u64>> = HashMap::new();
    for line in seen.iter().filter(|l| l.get("attempt").is_some()) {
        attempts
            .entry(line["message"].as_str().unwrap().to_owned())
            .or_default()
            .push(line["attempt"].as_u64().unwrap());
    }
    assert_eq!(attempts.len(), 3);
    for (id, a) in attempts {
        assert_eq!(a, [1, 2, 3], "message {id}: failed twice, redelivered by the broker, succeeded on attempt 3");
    }
}

#[test]
fn fifo_push_consumer_dead_letters_and_the_group_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(
        dir.path(),
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: jobs}\nspec: {messageType: FIFO, partitions: 2}\n---\n\
         apiVersion: weir.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: runners}\n\
         spec: {subscriptions: [{topicRef: {name: jobs}}], ordering: Orderly, startFrom: {position: Earliest}, retry: {maxAttempts: 3}}\n",
    );
    let url = broker.access_url();
    python::run("produce-fifo", &url, &["--topic", "jobs", "--count", "2"]);
    let seen = python::run("push-fifo-poison", &url, &["--topic", "jobs", "--group", "runners"]);
    let bodies: Vec<&str> = seen.iter().filter_map(|l| l.get("body")?.as_str()).collect();
    let first_good = bodies.iter().position(|b| *b == "msg-0").expect("the group moved on");
    assert!(bodies[..first_good].iter().all(|b| *b == "poison"), "order within the group: {bodies:?}");
    assert_eq!(&bodies[first_good..], ["msg-0", "msg-1", "last"]);
    let out = std::process::Command::new(weir_tests::weirctl_binary())
        .args(["--server", &url, "dlq", "list", "-g", "runners"])
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(listed.contains("body=poison"), "{listed}");
}

#[test]
fn simple_consumer_change_invisible_retires_the_old_handle() {
    let dir = tempfile::tempdir().unwrap();
    let broker = start(
        dir.path(),
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: tasks}\nspec: {partitions: 1}\n",
    );
    let url = broker.access_url();
    python::run("produce", &url, &["--topic", "tasks"]);
    let out = python::run("change-invisible", &url, &["--topic", "tasks", "--group", "workers"]);
    let handles = &out[0];
    assert_ne!(handles["old_handle"], handles["new_handle"]);
    assert_eq!(out[1]["old_ack"], "refused", "{:?}", out[1]);
    assert!(out[1]["error"].as_str().unwrap().contains("40013"), "INVALID_RECEIPT_HANDLE: {:?}", out[1]);
    assert_eq!(out[2]["new_ack"], "accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broadcast_reaches_every_consumer_exactly_once() {
    const CONSUMERS: usize = 5;
    const UPDATES: usize = 1000;
    let dir = tempfile::tempdir().unwrap();
    let broker = start(
        dir.path(),
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: prices}\nspec: {partitions: 4}\n---\n\
         apiVersion: weir.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: price-cache}\n\
         spec: {subscriptions: [{topicRef: {name: prices}}], consumptionMode: Broadcasting}\n",
    );
    let url = broker.access_url();
    // Five cache instances. A new broadcast consumer starts at the latest message, so the updates
    // start only once each has made its first receive.
    let mut children: Vec<_> = (0..CONSUMERS)
        .map(|_| {
            let mut child = python::spawn(
                "simple-receive",
                &url,
                &["--topic", "prices", "--group", "price-cache", "--count", &UPDATES.to_string(), "--timeout", "120"],
            );
            let stdout = BufReader::new(child.stdout.take().unwrap());
            (child, stdout)
        })
        .collect();
    for (_, stdout) in children.iter_mut() {
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        assert!(line.contains("ready"), "consumer did not start: {line}");
    }
    let producer = Arc::new(sdk::producer(&url, &["prices"]).await);
    let mut sent = BTreeSet::new();
    for i in 0..UPDATES {
        let body = format!("SKU-{i}=9.{i}");
        let m = MessageBuilder::builder().set_topic("prices").set_body(body.clone().into_bytes()).build().unwrap();
        producer.send(m).await.unwrap();
        sent.insert(body);
    }
    for (i, (mut child, mut stdout)) in children.into_iter().enumerate() {
        let mut rest = String::new();
        std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
        let status = child.wait().unwrap();
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert!(status.success(), "consumer {i} failed: {rest}\n{err}");
        let bodies: Vec<String> = rest
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get("body").and_then(|b| b.as_str()).map(str::to_owned))
            .collect();
        let distinct: BTreeSet<String> = bodies.iter().cloned().collect();
        assert_eq!(bodies.len(), distinct.len(), "consumer {i} got duplicates");
        assert_eq!(distinct, sent, "consumer {i} got every price update");
    }
}
