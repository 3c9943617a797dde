//! The benchmark harness (`weir-bench`) in a tiny run per system and scenario: it starts the
//! server itself, every published message is consumed (a run only ends when the consumers have
//! acknowledged all of them), and the report carries the figures it promises. The figures are
//! not judged here: timing goals belong to the benchmark runs (issue notes, BENCHMARKS.md).

use std::process::Command;

fn bench(system: &str, scenario: &str, extra: &[&str]) -> serde_json::Value {
    let sidecar = weir_tests::binary("weir-sidecar");
    let out = Command::new(weir_tests::binary("weir-bench"))
        .args(["run", "--system", system, "--scenario", scenario, "--count", "2000", "--window", "16"])
        .args(["--batch", "4", "--producers", "2", "--consumers", "2", "--partitions", "4", "--json"])
        .args(["--max-seconds", "120"])
        .args(extra)
        .arg("--weir-sidecar")
        .arg(sidecar)
        .output()
        .expect("weir-bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "weir-bench failed: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_str(stdout.lines().last().unwrap_or_default()).expect("one JSON report")
}

fn check(report: &serde_json::Value, consumed: bool) {
    assert_eq!(report["messages"].as_f64(), Some(2000.0), "{report}");
    assert!(report["publish_msgs_per_s"].as_f64().is_some_and(|r| r > 0.0), "{report}");
    assert!(report["send_ack"]["p99_ms"].as_f64().is_some(), "{report}");
    assert!(report["server_peak_rss_mib"].as_f64().is_some_and(|m| m > 0.0), "{report}");
    assert!(report["server_cpu_cores"].as_f64().is_some(), "{report}");
    if consumed {
        assert!(report["consume_msgs_per_s"].as_f64().is_some_and(|r| r > 0.0), "{report}");
        assert!(report["end_to_end"]["p999_ms"].as_f64().is_some(), "{report}");
    }
}

#[test]
fn weir_bench_publishes_and_consumes_through_weir() {
    check(&bench("weir", "pubsub", &[]), true);
    check(&bench("weir", "drain", &[]), true);
    check(&bench("weir", "drain-cold", &[]), true);
    check(&bench("weir", "publish", &[]), false);
}

/// Needs `nats-server` on the PATH (the README's test command installs Debian's).
#[test]
fn weir_bench_publishes_and_consumes_through_jetstream() {
    check(&bench("jetstream", "pubsub", &[]), true);
    check(&bench("jetstream", "drain", &[]), true);
    check(&bench("jetstream", "drain-cold", &[]), true);
}

/// Under fan-out each consumer must receive every message: a run only ends when every consumer
/// has all 2,000 (a clustering group would share them and the run would time out).
#[test]
fn fan_out_delivers_every_message_to_every_consumer() {
    for system in ["weir", "jetstream"] {
        let report = bench(system, "pubsub", &["--fan-out"]);
        check(&report, true);
        assert_eq!(report["delivered"].as_u64(), Some(4000), "{report}");
    }
}

/// The current nats-server release the README's test command installs into `.venv` (Debian's
/// 2.9.10 cannot acknowledge after fsync).
fn current_nats_server() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/nats-server")
}

/// `weir-bench compare` runs Weir and every JetStream given and prints one table with a ratio per
/// JetStream and the disk limit. The Sync case is measured on the current JetStream and reported
/// as not measured, with the server's reason, on 2.9.10.
#[test]
fn compare_prints_a_table_of_every_system() {
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new(weir_tests::binary("weir-bench"))
        .args(["compare", "--repetitions", "1", "--count", "2000", "--settle-seconds", "0"])
        .args(["--only", "publish", "--only", "drain-disk", "--only", "publish-sync"])
        .args(["--nats-server", "nats-server", "--nats-server"])
        .arg(current_nats_server())
        .arg("--weir-sidecar")
        .arg(weir_tests::binary("weir-sidecar"))
        .arg("--scratch")
        .arg(scratch.path())
        .output()
        .expect("weir-bench runs");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "weir-bench compare failed: {table}{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains("Disk sequential write limit"), "{table}");
    assert!(table.contains("| Weir/JetStream 2.9.10 | Weir/JetStream 2.15.1 |"), "a ratio per JetStream: {table}");
    let row = |case: &str| {
        let prefix = format!("| {case} |");
        let line = table.lines().find(|l| l.starts_with(&prefix)).unwrap_or_else(|| panic!("no {case} row in {table}"));
        line.split(" | ").map(str::to_owned).collect::<Vec<_>>()
    };
    for case in ["publish", "drain-disk"] {
        let cells = row(case);
        assert!(cells[5].contains('×') && cells[6].contains('×'), "every system measured: {cells:?}");
    }
    let sync = row("publish-sync");
    assert_eq!(sync[3], "n/a", "2.9.10 refuses sync_interval: {sync:?}");
    assert!(sync[4] != "n/a" && sync[6].contains('×'), "the current JetStream acknowledges after fsync: {sync:?}");
    assert!(
        table.contains("publish-sync on JetStream 2.9.10: not measured") && table.contains("sync_interval"),
        "{table}"
    );
}
