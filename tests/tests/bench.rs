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

/// `weir-bench compare` runs both systems and prints one table with the ratio and the disk limit.
#[test]
fn compare_prints_a_table_of_both_systems() {
    let scratch = tempfile::tempdir().unwrap();
    let out = Command::new(weir_tests::binary("weir-bench"))
        .args(["compare", "--repetitions", "1", "--count", "2000", "--only", "publish", "--only", "drain-disk"])
        .arg("--weir-sidecar")
        .arg(weir_tests::binary("weir-sidecar"))
        .arg("--scratch")
        .arg(scratch.path())
        .output()
        .expect("weir-bench runs");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "weir-bench compare failed: {table}{}", String::from_utf8_lossy(&out.stderr));
    assert!(table.contains("Disk sequential write limit"), "{table}");
    for case in ["| publish |", "| drain-disk |"] {
        let row = table.lines().find(|l| l.starts_with(case)).unwrap_or_else(|| panic!("no {case} row in {table}"));
        assert!(row.contains('×') && !row.contains("n/a"), "both systems measured: {row}");
    }
}
