//! `weirctl` against a real broker: produce from flags and from stdin, consume as a group with a tag
//! filter, inspect topics and stats, and a clear error when no broker is running.

use std::io::Write;
use std::process::{Command, Output, Stdio};

use weir_tests::{Sidecar, weirctl_binary};

fn weirctl(server: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(weirctl_binary())
        .args(["--server", server])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn weirctl");
    let mut input = child.stdin.take().unwrap();
    if let Some(text) = stdin {
        input.write_all(text.as_bytes()).unwrap();
    }
    drop(input);
    child.wait_with_output().unwrap()
}

fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "weirctl failed: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn produce_consume_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Sidecar::start(&dir.path().join("data"), &[]).unwrap();
    let server = broker.access_url();

    let sent = ok(&weirctl(
        &server,
        &[
            "produce",
            "-t",
            "orders",
            "--tag",
            "Paid",
            "-k",
            "order-1",
            "-p",
            "region=eu",
            "-b",
            "order 1 paid",
            "-n",
            "3",
        ],
        None,
    ));
    assert_eq!(sent.lines().filter(|l| l.starts_with("sent ")).count(), 3);
    ok(&weirctl(&server, &["produce", "-t", "orders", "--tag", "Draft"], Some("draft one\ndraft two\n")));
    ok(&weirctl(&server, &["produce", "-t", "orders", "--tag", "Refunded"], Some("refund\n")));

    let out = ok(&weirctl(
        &server,
        &[
            "consume",
            "-t",
            "orders",
            "-g",
            "billing",
            "-f",
            "Paid || Refunded",
            "-n",
            "4",
            "-o",
            "json",
            "--wait",
            "10s",
        ],
        None,
    ));
    let messages: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(messages.len(), 4, "{out}");
    let mut bodies: Vec<&str> = messages.iter().map(|m| m["body"].as_str().unwrap()).collect();
    bodies.sort();
    assert_eq!(bodies, ["order 1 paid", "order 1 paid", "order 1 paid", "refund"]);
    let paid = messages.iter().find(|m| m["tag"] == "Paid").unwrap();
    assert_eq!(paid["keys"], serde_json::json!(["order-1"]));
    assert_eq!(paid["properties"]["region"], "eu");
    assert_eq!(paid["deliveryAttempt"], 1);

    // Acknowledged: the group gets nothing more (the Draft messages never match its filter).
    let again = ok(&weirctl(
        &server,
        &["consume", "-t", "orders", "-g", "billing", "-f", "Paid || Refunded", "--wait", "1s"],
        None,
    ));
    assert!(again.trim().is_empty(), "{again}");
    // Another group sees the drafts.
    let drafts = ok(&weirctl(&server, &["consume", "-t", "orders", "-g", "audit", "-f", "Draft", "-n", "2"], None));
    assert_eq!(drafts.lines().filter(|l| l.contains("tag=Draft")).count(), 2, "{drafts}");

    let topics = ok(&weirctl(&server, &["topics", "-o", "json"], None));
    let topics: serde_json::Value = serde_json::from_str(&topics).unwrap();
    let orders = topics.as_array().unwrap().iter().find(|t| t["name"] == "orders").unwrap();
    let stored: u64 = orders["partitions"].as_array().unwrap().iter().map(|p| p["endOffset"].as_u64().unwrap()).sum();
    assert_eq!(stored, 6);

    let stats = ok(&weirctl(&server, &["stats", "-t", "orders", "-o", "json"], None));
    let stats: serde_json::Value = serde_json::from_str(&stats).unwrap();
    let billing = stats["groups"].as_array().unwrap().iter().find(|g| g["group"] == "billing").unwrap();
    assert_eq!(billing["lag"], 0);
    assert_eq!(billing["inflight"], 0);
    assert!(stats["storage"]["logBytes"].as_u64().unwrap() > 0);
    let table = ok(&weirctl(&server, &["stats"], None));
    assert!(table.contains("billing") && table.contains("LAG"), "{table}");
}

#[test]
fn no_broker_gives_a_clear_error() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let out = weirctl(&format!("127.0.0.1:{port}"), &["topics"], None);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach a Weir broker") && err.contains("weir-sidecar standalone"), "{err}");
}

#[test]
fn demo_walks_the_five_scenarios() {
    let dir = tempfile::tempdir().unwrap();
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds/examples/demo.yaml");
    let broker = Sidecar::start(&dir.path().join("data"), &["-f", demo.to_str().unwrap()]).unwrap();
    let out = ok(&weirctl(&broker.access_url(), &["demo"], None));
    for line in [
        "1. Asynchronous decoupling",
        "2. Transactional",
        "3. Ordered",
        "4. Peak shaving",
        "5. Broadcast",
        "All five scenarios behaved",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
    // Without the demo manifests it says what to do.
    let bare = tempfile::tempdir().unwrap();
    let plain = Sidecar::start(&bare.path().join("data"), &["--no-auto-create"]).unwrap();
    let out = weirctl(&plain.access_url(), &["demo"], None);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("crds/examples/demo.yaml"));
}

/// Sum of the BACKLOG column of `weirctl backlog`.
fn backlog(server: &str, topic: &str) -> u64 {
    let out = ok(&weirctl(server, &["backlog", "--topic", topic], None));
    out.lines().skip(1).filter_map(|l| l.split_whitespace().nth(2)?.parse::<u64>().ok()).sum()
}

/// A group replays a topic after `reset-offset --to earliest`, skips it with `--to latest`, and
/// `backlog` shows what each partition still has to deliver; bad targets are refused clearly.
#[test]
fn reset_offset_replays_and_skips() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Sidecar::start(&dir.path().join("data"), &["--default-partitions", "2"]).unwrap();
    let server = broker.access_url();
    ok(&weirctl(&server, &["produce", "-t", "ledger", "-b", "entry", "-n", "10"], None));
    let consume = |n: &str| {
        let out = ok(&weirctl(&server, &["consume", "-t", "ledger", "-g", "audit", "-n", n, "--wait", "3s"], None));
        out.lines().filter(|l| l.contains("body=entry")).count()
    };
    assert_eq!(consume("10"), 10);
    assert_eq!(backlog(&server, "ledger"), 0, "everything was acknowledged");

    let out =
        ok(&weirctl(&server, &["reset-offset", "--group", "audit", "--topic", "ledger", "--to", "earliest"], None));
    assert!(out.contains("reset on 2 partition(s)"), "{out}");
    assert_eq!(backlog(&server, "ledger"), 10, "the whole topic is to be read again");
    assert_eq!(consume("10"), 10, "the group replays every message");

    ok(&weirctl(&server, &["reset-offset", "--group", "audit", "--topic", "ledger", "--to", "earliest"], None));
    ok(&weirctl(&server, &["reset-offset", "--group", "audit", "--topic", "ledger", "--to", "latest"], None));
    assert_eq!(backlog(&server, "ledger"), 0);
    ok(&weirctl(&server, &["produce", "-t", "ledger", "-b", "entry", "-n", "1"], None));
    assert_eq!(consume("1"), 1, "after a reset to latest only new messages arrive");

    let bad = weirctl(&server, &["reset-offset", "--group", "audit", "--topic", "ledger", "--to", "yesterday"], None);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("expected earliest, latest, offset:N"));
    let missing = weirctl(&server, &["backlog", "--topic", "nope"], None);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("nope"));
}
