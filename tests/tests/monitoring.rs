//! The monitoring assets against live processes: the Grafana dashboards
//! (`charts/weir/dashboards/*.json`), the alert rules (`charts/weir/files/alerts.yaml` with their
//! promtool unit tests in `tests/prometheus/alerts_test.yaml`) and the metrics catalogue
//! (`docs/metrics.md`).
//!
//! What is real: a real `weir-sidecar` broker process driven by the RocketMQ gRPC protocol (normal,
//! FIFO, delayed and transactional messages, consumption with acks, a message left unacknowledged
//! until it is redelivered and dead-lettered, and a stored record corrupted on disk so the broker
//! skips it), the real `weir-operator` binary, the real `promtool`, and a real `prometheus` server
//! scraping both every second and evaluating the alert rules. What is not: the operator's
//! Kubernetes API is the in-memory fake API server (`weir_tests::fake_kube::FakeKube`), because no
//! kube-apiserver can run here; the operator reaches it through a kubeconfig like in a cluster. No
//! kubelet runs, so the operator's Topic never becomes Ready, and deleting a ConsumerGroup whose
//! broker pods cannot be reached makes its cleanup fail: that is where the operator's readiness and
//! reconcile-error series come from.
//!
//! `prometheus` and `promtool` are found on `PATH` (`./scripts/test.sh` installs Debian's
//! `prometheus` package).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::Value;
use weir_crds::{ConsumerGroup, FINALIZER, Topic};
use weir_proto::rocketmq::v2 as pb;
use weir_tests::fake_kube::FakeKube;
use weir_tests::raw::{self, code, resource};
use weir_tests::{Sidecar, metric_sum, scrape, wait_for, write_manifest};

/// The repository root.
fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A program on `PATH`.
fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("`{name}` is not on PATH: ./scripts/test.sh installs it (Debian package `prometheus`)")
    })
}

/// A loopback port nobody listens on right now.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// A plain HTTP/1.0 GET; returns the status code and the body.
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let status = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    Ok((status, body))
}

/// A child process killed when dropped (also when a test fails).
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Topics and groups of the standalone broker: one of each message type, and a group that
/// dead-letters after two deliveries.
const BROKER_MANIFEST: &str = "\
apiVersion: weir.dev/v1alpha1
kind: Topic
metadata: {name: orders}
spec: {partitions: 4}
---
apiVersion: weir.dev/v1alpha1
kind: Topic
metadata: {name: steps}
spec: {messageType: FIFO, partitions: 2}
---
apiVersion: weir.dev/v1alpha1
kind: Topic
metadata: {name: reminders}
spec: {messageType: Delay, partitions: 1}
---
apiVersion: weir.dev/v1alpha1
kind: Topic
metadata: {name: payments}
spec: {messageType: Transaction, partitions: 1, transaction: {checkInterval: 1s, maxChecks: 60}}
---
apiVersion: weir.dev/v1alpha1
kind: Topic
metadata: {name: fragile}
spec: {partitions: 1}
---
apiVersion: weir.dev/v1alpha1
kind: ConsumerGroup
metadata: {name: billing}
spec: {subscriptions: [{topicRef: {name: orders}}], startFrom: {position: Earliest}, retry: {maxAttempts: 2}}
---
apiVersion: weir.dev/v1alpha1
kind: ConsumerGroup
metadata: {name: auditors}
spec: {subscriptions: [{topicRef: {name: fragile}}], startFrom: {position: Earliest}}
";

/// A broker, the operator and the fake API server it works against.
struct Stack {
    /// Dropped (killed) first, before the API server it watches.
    _operator: Process,
    broker: Sidecar,
    /// The operator's `/metrics` address.
    operator: SocketAddr,
    kube: FakeKube,
    namespace: String,
    dir: tempfile::TempDir,
}

impl Stack {
    /// Starts the broker and the operator, and gives the operator a Topic and two ConsumerGroups.
    async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let manifest = write_manifest(dir.path(), "broker.yaml", BROKER_MANIFEST);
        let broker = Sidecar::start(&dir.path().join("data"), &["-f", manifest.to_str().unwrap()]).unwrap();

        let namespace = format!("monitoring-{}", std::process::id());
        let kube = FakeKube::start().await;
        kube.create_namespace(&namespace);
        let kubeconfig = dir.path().join("kubeconfig");
        kube.write_kubeconfig(&kubeconfig).unwrap();
        let operator: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let mut command = Command::new(weir_tests::binary("weir-operator"));
        weir_tests::die_with_parent(&mut command);
        let child = command
            .args(["--leader-election=false", "--log-format", "text", "--namespace", &namespace])
            .arg("--listen")
            .arg(operator.to_string())
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", std::env::var("WEIR_TEST_LOG").unwrap_or_else(|_| "error".into()))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start weir-operator");
        let process = Process(child);
        wait_for(Duration::from_secs(30), "the operator's /metrics", async || scrape(operator).ok()).await;

        let client = kube.client();
        let topic = Topic::new("orders", serde_yaml::from_str("{partitions: 2, brokers: {replicas: 1}}").unwrap());
        Api::<Topic>::namespaced(client.clone(), &namespace).create(&PostParams::default(), &topic).await.unwrap();
        for name in ["billing", "doomed"] {
            let spec = "{subscriptions: [{topicRef: {name: orders}}]}";
            let group = ConsumerGroup::new(name, serde_yaml::from_str(spec).unwrap());
            Api::<ConsumerGroup>::namespaced(client.clone(), &namespace)
                .create(&PostParams::default(), &group)
                .await
                .unwrap();
        }
        Self { broker, operator, kube, namespace, _operator: process, dir }
    }

    /// Traffic that makes every metric family of the broker and the operator exist.
    async fn drive_load(&self) {
        let started = Instant::now();
        tokio::join!(self.broker_load(), self.operator_load());
        println!("load driven in {:?}", started.elapsed());
    }

    async fn broker_load(&self) {
        let broker = &self.broker;
        let mut client = raw::connect(broker.grpc, Some("monitoring-load@1")).await;
        // Normal messages of several sizes, and one the consumer will never acknowledge.
        let orders =
            (0..20).map(|i| raw::message("orders", &format!("order-{i}"), Some("new"), vec![b'o'; 100 + i * 700]));
        send(&mut client, orders.collect()).await;
        send(&mut client, vec![raw::message("orders", "poison", Some("new"), b"poison".to_vec())]).await;
        // FIFO messages in two message groups.
        for i in 0..4 {
            let mut m = raw::message("steps", &format!("step-{i}"), None, format!("step {i}").into_bytes());
            let sys = m.system_properties.as_mut().unwrap();
            sys.message_type = pb::MessageType::Fifo as i32;
            sys.message_group = Some(format!("job-{}", i % 2));
            send(&mut client, vec![m]).await;
        }
        // Delayed messages due in 1.5 s (one due within 50 ms would skip the timer).
        let due_ms = now_ms() + 1500;
        let due = prost_types::Timestamp { seconds: due_ms / 1000, nanos: (due_ms % 1000) as i32 * 1_000_000 };
        for i in 0..2 {
            let mut m = raw::message("reminders", &format!("remind-{i}"), None, b"remind".to_vec());
            let sys = m.system_properties.as_mut().unwrap();
            sys.message_type = pb::MessageType::Delay as i32;
            sys.delivery_timestamp = Some(due);
            send(&mut client, vec![m]).await;
        }
        // One transaction committed, one rolled back.
        for (id, resolution) in
            [("pay-1", pb::TransactionResolution::Commit), ("pay-2", pb::TransactionResolution::Rollback)]
        {
            let mut half = raw::message("payments", id, None, id.as_bytes().to_vec());
            half.system_properties.as_mut().unwrap().message_type = pb::MessageType::Transaction as i32;
            let sent = send(&mut client, vec![half]).await;
            let end = pb::EndTransactionRequest {
                topic: resource("payments"),
                message_id: id.into(),
                transaction_id: sent.entries[0].transaction_id.clone(),
                resolution: resolution as i32,
                source: pb::TransactionSource::SourceClient as i32,
                trace_context: String::new(),
            };
            let r = client.end_transaction(end).await.unwrap().into_inner();
            assert_eq!(code(&r.status), pb::Code::Ok, "{:?}", r.status);
        }
        // A stored record damaged on disk: the broker skips it when it reads it.
        let marker = format!("weir-monitoring-corrupt-me-{}", std::process::id());
        send(&mut client, vec![raw::message("fragile", "fragile-1", None, marker.clone().into_bytes())]).await;
        corrupt(&broker.data_dir, marker.as_bytes());

        // `billing` acknowledges everything but the poison message, which comes back once
        // (maxAttempts 2) and then goes to the dead-letter queue.
        wait_for(Duration::from_secs(30), "billing to consume and dead-letter the poison message", async || {
            let (_, messages) = raw::receive(&mut client, raw::receive_request("billing", "orders", "*", 1000)).await;
            let entries: Vec<_> = messages
                .iter()
                .filter_map(|m| m.system_properties.as_ref())
                .filter(|sys| sys.message_id != "poison")
                .map(|sys| pb::AckMessageEntry {
                    message_id: sys.message_id.clone(),
                    receipt_handle: sys.receipt_handle.clone().unwrap(),
                    lite_topic: None,
                })
                .collect();
            if !entries.is_empty() {
                let ack = pb::AckMessageRequest { group: resource("billing"), topic: resource("orders"), entries };
                let r = client.ack_message(ack).await.unwrap().into_inner();
                assert_eq!(code(&r.status), pb::Code::Ok, "{:?}", r.status);
            }
            let s = broker.scrape().unwrap();
            (metric_sum(&s, "rocketmq_send_to_dlq_messages_total", &[("consumer_group", "billing")]) >= 1.0)
                .then_some(())
        })
        .await;
        wait_for(Duration::from_secs(20), "the corrupt record to be skipped", async || {
            raw::receive(&mut client, raw::receive_request("auditors", "fragile", "*", 10_000)).await;
            let s = broker.scrape().unwrap();
            (metric_sum(&s, "weir_storage_corrupt_records_total", &[("topic", "fragile")]) >= 1.0).then_some(())
        })
        .await;
        wait_for(Duration::from_secs(20), "the delayed messages to be due", async || {
            let s = broker.scrape().unwrap();
            (metric_sum(&s, "rocketmq_timer_dequeue_total", &[]) >= 2.0).then_some(())
        })
        .await;
        let s = broker.scrape().unwrap();
        for (family, wanted) in [
            ("rocketmq_commit_messages_total", 1.0),
            ("rocketmq_rollback_messages_total", 1.0),
            ("weir_redeliveries_total", 1.0),
            ("rocketmq_messages_in_total", 30.0),
        ] {
            assert!(metric_sum(&s, family, &[]) >= wanted, "{family} below {wanted}:\n{s}");
        }
    }

    /// Deletes a ConsumerGroup whose broker pods cannot be reached: its cleanup fails
    /// (cleanup_blocked) and is retried.
    async fn operator_load(&self) {
        let ns = self.namespace.as_str();
        wait_for(Duration::from_secs(30), "the operator to take on the Topic and the groups", async || {
            let topic = self.kube.get_typed::<Topic>(Some(ns), "orders")?;
            let assigned = topic.status?.assignment.iter().any(|a| !a.partitions.is_empty());
            let group = self.kube.get_typed::<ConsumerGroup>(Some(ns), "doomed")?;
            let finalized = group.metadata.finalizers.unwrap_or_default().iter().any(|f| f == FINALIZER);
            (assigned && finalized).then_some(())
        })
        .await;
        Api::<ConsumerGroup>::namespaced(self.kube.client(), ns)
            .delete("doomed", &DeleteParams::default())
            .await
            .unwrap();
        wait_for(Duration::from_secs(30), "reconcile errors and readiness in the operator's metrics", async || {
            let s = scrape(self.operator).ok()?;
            let failed = metric_sum(&s, "weir_operator_reconcile_errors_total", &[("reason", "cleanup_blocked")]);
            let ready = s.contains("weir_operator_resource_ready{");
            (failed >= 1.0 && ready).then_some(())
        })
        .await;
    }
}

/// Sends `messages` and expects every one to be stored.
async fn send(client: &mut raw::Client, messages: Vec<pb::Message>) -> pb::SendMessageResponse {
    let r = client.send_message(pb::SendMessageRequest { messages }).await.unwrap().into_inner();
    assert_eq!(code(&r.status), pb::Code::Ok, "{:?}", r.status);
    r
}

/// Flips one byte of `marker` where it is stored in the broker's commit log.
fn corrupt(data_dir: &Path, marker: &[u8]) {
    use std::os::unix::fs::FileExt;
    let mut found = Vec::new();
    let mut dirs = vec![data_dir.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "log") {
                let bytes = std::fs::read(&path).unwrap();
                let hits = bytes.windows(marker.len()).enumerate().filter(|(_, w)| *w == marker);
                found.extend(hits.map(|(at, _)| (path.clone(), at)));
            }
        }
    }
    assert_eq!(found.len(), 1, "the marker is stored once in the commit log: {found:?}");
    let (path, at) = &found[0];
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(b"W", (*at + 1) as u64).unwrap();
}

/// Runs `promtool` with `args` (and `stdin`); returns success and stdout + stderr.
fn promtool(args: &[&str], stdin: Option<&str>) -> (bool, String) {
    let mut child = Command::new(tool("promtool"))
        .args(args)
        .current_dir(repo())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or_default().as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promtool_accepts_the_live_metrics() {
    let stack = Stack::start().await;
    stack.drive_load().await;
    for (component, text) in [("broker", stack.broker.scrape().unwrap()), ("operator", scrape(stack.operator).unwrap())]
    {
        let (ok, output) = promtool(&["check", "metrics"], Some(&text));
        assert!(
            ok && output.trim().is_empty(),
            "promtool check metrics rejects the {component}'s /metrics:\n{output}\n--- scrape ---\n{text}"
        );
        println!("{component}: {} lines, promtool check metrics: clean", text.lines().count());
    }
}

/// Alert names of the rule file, with a check of what every rule carries.
fn alert_rules() -> Vec<String> {
    let text = std::fs::read_to_string(repo().join("charts/weir/files/alerts.yaml")).unwrap();
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let mut names = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("only alerting rules").to_owned();
            let expr = rule["expr"].as_str().expect("expr");
            assert!(!expr.contains("{{"), "{name}: template syntax in expr (the chart embeds the file verbatim)");
            assert!(rule["labels"]["severity"].as_str().is_some(), "{name} has no severity label");
            for annotation in ["summary", "description"] {
                assert!(rule["annotations"][annotation].as_str().is_some(), "{name} has no {annotation}");
            }
            names.push(name);
        }
    }
    names
}

#[test]
fn alert_rules_pass_their_unit_tests() {
    let (ok, output) = promtool(&["check", "rules", "charts/weir/files/alerts.yaml"], None);
    assert!(ok, "promtool check rules:\n{output}");
    let (ok, output) = promtool(&["test", "rules", "tests/prometheus/alerts_test.yaml"], None);
    assert!(ok, "promtool test rules:\n{output}");

    let alerts = alert_rules();
    let text = std::fs::read_to_string(repo().join("tests/prometheus/alerts_test.yaml")).unwrap();
    let tests: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
    let files: Vec<&str> = tests["rule_files"].as_sequence().unwrap().iter().filter_map(|f| f.as_str()).collect();
    assert_eq!(files, ["../../charts/weir/files/alerts.yaml"]);
    let (mut firing, mut quiet) = (BTreeSet::new(), BTreeSet::new());
    for test in tests["tests"].as_sequence().unwrap() {
        for case in test["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = case["alertname"].as_str().unwrap().to_owned();
            assert!(alerts.contains(&name), "the unit tests check {name}, which alerts.yaml does not define");
            match case["exp_alerts"].as_sequence() {
                Some(expected) if expected.is_empty() => quiet.insert(name),
                Some(_) => firing.insert(name),
                None => panic!("a case of {name} has no exp_alerts (write exp_alerts: [] for 'does not fire')"),
            };
        }
    }
    for name in &alerts {
        assert!(firing.contains(name), "no unit test where {name} fires");
        assert!(quiet.contains(name), "no unit test where {name} must not fire (exp_alerts: [])");
    }
    println!("{} alerts, each tested firing and not firing: {alerts:?}", alerts.len());
}

/// A running Prometheus server.
struct Prometheus {
    addr: SocketAddr,
    _process: Process,
}

impl Prometheus {
    /// Scrapes the broker as job `weir-broker` and the operator as job `weir-operator` every second,
    /// with the target labels the Prometheus Operator would add, and evaluates the alert rules.
    async fn start(dir: &Path, broker: SocketAddr, operator: SocketAddr) -> Self {
        let rules = repo().join("charts/weir/files/alerts.yaml");
        let config = format!(
            "global: {{scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}}\n\
             rule_files: ['{}']\n\
             scrape_configs:\n\
             - job_name: weir-broker\n  static_configs:\n  \
             - targets: ['{broker}']\n    labels: {{namespace: monitoring, pod: orders-broker-0}}\n\
             - job_name: weir-operator\n  static_configs:\n  \
             - targets: ['{operator}']\n    labels: {{namespace: weir-system, pod: weir-operator-0}}\n",
            rules.display()
        );
        let config_path = write_manifest(dir, "prometheus.yml", &config);
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let log = std::fs::File::create(dir.join("prometheus.log")).unwrap();
        let mut command = Command::new(tool("prometheus"));
        weir_tests::die_with_parent(&mut command);
        let child = command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("tsdb").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start prometheus");
        let process = Process(child);
        let log = dir.join("prometheus.log");
        wait_for(Duration::from_secs(30), "prometheus to be ready", async || {
            let ready = http_get(addr, "/-/ready").is_ok_and(|(status, _)| status == 200);
            if !ready && let Ok(text) = std::fs::read_to_string(&log) {
                assert!(!text.contains("level=error"), "prometheus failed:\n{text}");
            }
            ready.then_some(())
        })
        .await;
        Self { addr, _process: process }
    }

    /// GET of an API path; the `data` of a successful answer, or why not.
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Result<Value, String> {
        let query = form_urlencoded::Serializer::new(String::new()).extend_pairs(params).finish();
        let (status, body) = http_get(self.addr, &format!("{path}?{query}")).map_err(|e| e.to_string())?;
        let answer: Value = serde_json::from_str(&body).map_err(|e| format!("HTTP {status}: {e}: {body}"))?;
        if answer["status"] != "success" {
            return Err(format!("HTTP {status}: {answer}"));
        }
        Ok(answer["data"].clone())
    }

    /// The series an instant query returns.
    fn query(&self, expr: &str) -> Result<Vec<Value>, String> {
        let data = self.api("/api/v1/query", &[("query", expr)])?;
        Ok(data["result"].as_array().cloned().unwrap_or_default())
    }
}

/// A dashboard file.
struct Dashboard {
    file: String,
    json: Value,
}

fn dashboards() -> Vec<Dashboard> {
    let dir = repo().join("charts/weir/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    let boards: Vec<Dashboard> = files
        .iter()
        .map(|p| Dashboard {
            file: p.file_name().unwrap().to_string_lossy().into_owned(),
            json: serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap_or_else(|e| panic!("{p:?}: {e}")),
        })
        .collect();
    let names: Vec<&str> = boards.iter().map(|b| b.file.as_str()).collect();
    assert_eq!(names, ["weir-consumer-group.json", "weir-operator.json", "weir-overview.json", "weir-topic.json"]);
    boards
}

/// Every panel that is not a row, rows' nested panels included.
fn panels(list: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in list.as_array().into_iter().flatten() {
        if p["type"] == "row" {
            out.extend(panels(&p["panels"]));
        } else {
            out.push(p);
        }
    }
    out
}

/// Grafana's built-in variables, for a 1 s scrape interval.
const BUILTINS: [(&str, &str); 6] = [
    ("__rate_interval", "20s"),
    ("__interval_ms", "2000"),
    ("__interval", "2s"),
    ("__range_s", "300"),
    ("__range_ms", "300000"),
    ("__range", "5m"),
];

/// Replaces `$name`, `${name}`, `${name:format}` and `[[name]]` of every variable in `values`.
fn interpolate(text: &str, values: &BTreeMap<String, String>) -> String {
    let mut all: Vec<(&str, &str)> = values.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    all.extend(BUILTINS);
    // Longest first, so `$__range` does not eat `$__range_s`.
    all.sort_by_key(|(name, _)| std::cmp::Reverse(name.len()));
    let mut out = text.to_owned();
    for (name, value) in all {
        out = out.replace(&format!("${{{name}}}"), value).replace(&format!("[[{name}]]"), value);
        while let Some(start) = out.find(&format!("${{{name}:")) {
            let end = start + out[start..].find('}').expect("closing brace");
            out.replace_range(start..=end, value);
        }
        let token = format!("${name}");
        let mut from = 0;
        while let Some(at) = out[from..].find(&token).map(|i| i + from) {
            let next = out[at + token.len()..].chars().next();
            if next.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                from = at + token.len();
            } else {
                out.replace_range(at..at + token.len(), value);
                from = at + value.len();
            }
        }
    }
    out
}

/// What Grafana substitutes for a multi-value variable with every value selected.
fn all_values(values: &[String]) -> String {
    let escaped: Vec<String> = values
        .iter()
        .map(|v| v.chars().flat_map(|c| if r"\^$.|?*+()[]{}".contains(c) { vec!['\\', c] } else { vec![c] }).collect())
        .collect();
    format!("({})", escaped.join("|"))
}

/// Values of the dashboard's variables: single-value variables take the value the load created
/// (which their query must offer), multi-value ones all their values, as Grafana's "All" does.
fn variables(board: &Dashboard, prometheus: &Prometheus) -> BTreeMap<String, String> {
    let preferred = BTreeMap::from([("topic", "orders"), ("consumer_group", "billing")]);
    let mut values = BTreeMap::new();
    let list = board.json["templating"]["list"].as_array().expect("templating.list");
    assert!(
        list.iter().any(|v| v["type"] == "datasource" && v["name"] == "datasource" && v["query"] == "prometheus"),
        "{}: no Prometheus datasource variable named datasource",
        board.file
    );
    for var in list {
        let name = var["name"].as_str().unwrap().to_owned();
        match var["type"].as_str().unwrap() {
            "datasource" => {
                values.insert(name, "prometheus".to_owned());
            }
            "query" => {
                let query = var["query"]["query"].as_str().or(var["query"].as_str()).expect("variable query");
                let query = interpolate(query, &values);
                let inner = query
                    .strip_prefix("label_values(")
                    .and_then(|q| q.strip_suffix(')'))
                    .unwrap_or_else(|| panic!("{}: ${name}: only label_values() queries are supported", board.file));
                let (selector, label) = inner.rsplit_once(',').map_or(("", inner), |(s, l)| (s.trim(), l.trim()));
                let params: Vec<(&str, &str)> = if selector.is_empty() { vec![] } else { vec![("match[]", selector)] };
                let data = prometheus
                    .api(&format!("/api/v1/label/{label}/values"), &params)
                    .unwrap_or_else(|e| panic!("{}: ${name}: {query}: {e}", board.file));
                let offered: Vec<String> =
                    data.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect();
                assert!(!offered.is_empty(), "{}: ${name} offers no values: {query}", board.file);
                let value = if var["multi"] == true || var["includeAll"] == true {
                    all_values(&offered)
                } else {
                    let want = preferred.get(name.as_str()).copied().unwrap_or(&offered[0]);
                    assert!(
                        offered.iter().any(|o| o == want),
                        "{}: ${name} does not offer {want}: {offered:?}",
                        board.file
                    );
                    want.to_owned()
                };
                values.insert(name, value);
            }
            other => panic!("{}: variable type {other} is not supported by this test", board.file),
        }
    }
    values
}

/// The dashboard's queries, interpolated: (panel title, expression).
fn queries(board: &Dashboard, values: &BTreeMap<String, String>) -> Vec<(String, String)> {
    let json = &board.json;
    assert!(json["uid"].as_str().is_some_and(|u| !u.is_empty()), "{}: no uid", board.file);
    assert!(json.get("__inputs").is_none(), "{}: __inputs (export for sharing) is not wanted", board.file);
    assert!(json["schemaVersion"].as_i64().is_some_and(|v| v >= 36), "{}: schemaVersion", board.file);
    let mut out = Vec::new();
    for panel in panels(&json["panels"]) {
        let title = panel["title"].as_str().unwrap_or_default().to_owned();
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{}: {title}: datasource", board.file);
        let targets = panel["targets"].as_array().filter(|t| !t.is_empty());
        for target in targets.unwrap_or_else(|| panic!("{}: {title}: no targets", board.file)) {
            let expr = target["expr"].as_str().filter(|e| !e.trim().is_empty());
            let expr = expr.unwrap_or_else(|| panic!("{}: {title}: a target without expr", board.file));
            assert!(!expr.contains("vector(0)"), "{}: {title}: data faked with vector(0)", board.file);
            assert_eq!(target["datasource"]["uid"], "${datasource}", "{}: {title}: target datasource", board.file);
            let interpolated = interpolate(expr, values);
            assert!(!interpolated.contains('$'), "{}: {title}: unknown variable in {expr}", board.file);
            out.push((title.clone(), interpolated));
        }
    }
    out
}

/// Every query of every dashboard returns data from a real Prometheus scraping a loaded broker and
/// the operator; and the alert rules evaluate without errors on that data, the dead-letter and
/// corrupt-record alerts firing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_query_returns_data() {
    let stack = Stack::start().await;
    let prometheus = Prometheus::start(stack.dir.path(), stack.broker.metrics, stack.operator).await;
    wait_for(Duration::from_secs(20), "both targets up", async || {
        let up = prometheus.query("up == 1").ok()?;
        (up.len() == 2).then_some(())
    })
    .await;
    stack.drive_load().await;

    let boards = dashboards();
    let mut checks = Vec::new();
    for board in &boards {
        let values = variables(board, &prometheus);
        for (title, expr) in queries(board, &values) {
            checks.push((board.file.clone(), title, expr));
        }
    }
    // Until each query has data (rate() needs two samples of a series after the load made it).
    let mut report = Vec::new();
    let mut failures = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        report.clear();
        failures.clear();
        for (file, title, expr) in &checks {
            match prometheus.query(expr) {
                Ok(series) if !series.is_empty() => report.push(format!("{file:28} {title:42} {:3}", series.len())),
                Ok(_) => failures.push(format!("{file}: {title}: no data: {expr}")),
                Err(e) => failures.push(format!("{file}: {title}: {expr}: {e}")),
            }
        }
        if failures.is_empty() || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("{:28} {:42} series\n{}", "dashboard", "panel", report.join("\n"));
    assert!(failures.is_empty(), "dashboard queries without data:\n{}", failures.join("\n"));
    assert!(checks.len() >= 60, "only {} queries: a dashboard lost its panels", checks.len());

    // The rules load in a real server and evaluate cleanly against the live metrics.
    let rules = prometheus.api("/api/v1/rules", &[]).unwrap();
    let mut evaluated = 0;
    for group in rules["groups"].as_array().unwrap() {
        for rule in group["rules"].as_array().unwrap() {
            assert_eq!(rule["health"], "ok", "rule {} fails on live data: {}", rule["name"], rule["lastError"]);
            evaluated += 1;
        }
    }
    assert_eq!(evaluated, alert_rules().len(), "prometheus did not load every rule");
    let firing = wait_for(Duration::from_secs(20), "the dead-letter and corrupt-record alerts", async || {
        let alerts = prometheus.api("/api/v1/alerts", &[]).ok()?;
        let firing: BTreeSet<String> = alerts["alerts"]
            .as_array()?
            .iter()
            .filter(|a| a["state"] == "firing")
            .map(|a| format!("{}{{topic={}}}", a["labels"]["alertname"].as_str().unwrap(), a["labels"]["topic"]))
            .collect();
        let wanted = [r#"WeirDeadLetterQueueGrowing{topic="orders"}"#, r#"WeirStorageCorruptRecords{topic="fragile"}"#];
        wanted.iter().all(|w| firing.contains(*w)).then_some(firing)
    })
    .await;
    println!("firing on the live data: {firing:?}");
}

/// One metric family of a catalogue or a scrape.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Family {
    kind: String,
    labels: BTreeSet<String>,
}

/// The families of a text exposition, with their label names (`le` of histograms left out).
fn families(text: &str) -> BTreeMap<String, Family> {
    let mut out: BTreeMap<String, Family> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            out.insert(name.to_owned(), Family { kind: kind.to_owned(), labels: BTreeSet::new() });
        }
    }
    for line in text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let name = line.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find(|base| out.get(*base).is_some_and(|f| f.kind == "histogram"))
            .unwrap_or(name);
        let labels = sample_labels(line);
        let entry = out.get_mut(family).unwrap_or_else(|| panic!("sample of an undeclared family: {line}"));
        entry.labels.extend(labels.into_iter().filter(|l| l != "le"));
    }
    out
}

/// Label names of one sample line (values may hold any character, escaped).
fn sample_labels(line: &str) -> Vec<String> {
    let Some(start) = line.find('{') else { return Vec::new() };
    let mut names = Vec::new();
    let mut rest = &line[start + 1..];
    while !rest.starts_with('}') {
        let (name, after) = rest.split_once("=\"").expect("label=\"value\"");
        names.push(name.trim_start_matches(',').to_owned());
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next().expect("closing quote") {
                (_, '\\') => {
                    chars.next();
                }
                (i, '"') => break i,
                _ => {}
            }
        };
        rest = after[end + 1..].trim_start_matches(',');
    }
    names
}

/// The tables of docs/metrics.md, per section (`Broker`, `Operator`).
fn catalogue() -> BTreeMap<String, BTreeMap<String, Family>> {
    let text = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    let mut out: BTreeMap<String, BTreeMap<String, Family>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines() {
        if let Some(title) = line.strip_prefix("## ") {
            section = title.split_whitespace().next().unwrap().to_owned();
        } else if line.starts_with("| `") {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells[1].trim_matches('`').to_owned();
            let labels = cells[3]
                .split(',')
                .map(|l| l.trim().trim_matches('`').to_owned())
                .filter(|l| !l.is_empty() && l != "—")
                .collect();
            let family = Family { kind: cells[2].to_owned(), labels };
            assert!(out.entry(section.clone()).or_default().insert(name.clone(), family).is_none(), "{name} twice");
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_is_catalogued() {
    let stack = Stack::start().await;
    stack.drive_load().await;
    let catalogue = catalogue();
    let live = [("Broker", stack.broker.scrape().unwrap()), ("Operator", scrape(stack.operator).unwrap())];
    let mut problems = Vec::new();
    for (section, text) in &live {
        let documented = catalogue.get(*section).unwrap_or_else(|| panic!("docs/metrics.md has no {section} section"));
        let scraped = families(text);
        for (name, family) in &scraped {
            match documented.get(name) {
                None => problems.push(format!("{section}: {name} ({}) is not in docs/metrics.md", family.kind)),
                Some(doc) if doc != family => {
                    problems.push(format!("{section}: {name}: docs/metrics.md says {doc:?}, the scrape has {family:?}"))
                }
                Some(_) => {}
            }
        }
        for name in documented.keys().filter(|n| !scraped.contains_key(*n)) {
            problems.push(format!("{section}: {name} is in docs/metrics.md but not in the scrape"));
        }
        println!("{section}: {} families scraped, {} catalogued", scraped.len(), documented.len());
    }
    assert!(problems.is_empty(), "the catalogue and the metrics disagree:\n{}", problems.join("\n"));
}
