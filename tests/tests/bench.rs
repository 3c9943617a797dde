//! The benchmark harness (`weir-bench`) in a tiny run per system and scenario: it starts the
//! server itself, every published message is consumed (a run only ends when the consumers have
//! acknowledged all of them), and the report carries the figures it promises. The figures are
//! not judged here: timing goals belong to the benchmark runs (issue notes, BENCHMARKS.md).

use std::process::Command;

fn bench(system: &str, scenario: &str) -> serde_json::Value {
    let sidecar = weir_tests::binary("weir-sidecar");
    let out = Command::new(weir_tests::binary("weir-bench"))
        .args(["run", "--system", system, "--scenario", scenario, "--count", "2000", "--window", "16"])
        .args(["--batch", "4", "--producers", "2", "--consumers", "2", "--partitions", "4", "--json"])
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
    check(&bench("weir", "pubsub"), true);
    check(&bench("weir", "drain"), true);
    check(&bench("weir", "publish"), false);
}

/// Needs `nats-server` on the PATH (the README's test command installs Debian's).
#[test]
fn weir_bench_publishes_and_consumes_through_jetstream() {
    check(&bench("jetstream", "pubsub"), true);
    check(&bench("jetstream", "drain"), true);
}
