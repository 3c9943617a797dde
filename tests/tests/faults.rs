//! Fault suite. Each test drives load against a real broker process while something goes wrong,
//! and checks what the issue promises:
//!
//! * SIGKILL again and again under load; a history checker (`weir_tests::history`) proves that no
//!   acknowledged message was lost, nothing arrived twice after a confirmed ack, and no message
//!   group was reordered. Load: a FIFO topic (4 partitions, `Sync`) with 16 message groups sent in
//!   sequence by 2 producers, read by an Orderly and a Concurrently group. 20 cycles
//!   (`WEIR_FAULT_CYCLES`, e.g. 100 for a soak); `WEIR_FAULT_SEED` replays a schedule.
//! * Transactions across crashes: delivered == committed exactly, none left open.
//! * A full disk (size-limited tmpfs; needs root, as CI has): sends refused with a clear error,
//!   reads and acks go on, sends resume when space returns, nothing acknowledged is damaged.
//! * A failing fdatasync (strace fault injection): the broker stops without acknowledging.
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use weir_proto::rocketmq::v2 as pb;
use weir_tests::history::{History, SendOutcome};
use weir_tests::raw::{self, code, resource};
use weir_tests::{Sidecar, wait_for, write_manifest};

const TOPIC: &str = "ledger";
const KEYS_PER_PRODUCER: usize = 8;
const PRODUCERS: usize = 2;
const GROUPS: [(&str, bool); 2] = [("audit", true), ("archive", false)];
/// Upper bound on one RPC, so a request to a dying broker cannot hang a task.
const RPC_TIMEOUT: Duration = Duration::from_secs(5);

/// A free loopback address below the kernel's ephemeral port range, so that no outgoing connection
/// (of this test or another) can take the port while the killed broker is down.
fn free_addr() -> String {
    let mut rng = rand::rng();
    loop {
        let port: u16 = rng.random_range(20_000..32_000);
        if let Ok(listener) = std::net::TcpListener::bind(("127.0.0.1", port)) {
            return listener.local_addr().unwrap().to_string();
        }
    }
}

/// A broker that is killed and restarted on the same addresses and data, so clients reconnect.
struct Crashing {
    broker: Sidecar,
    data: std::path::PathBuf,
    grpc: String,
    metrics: String,
    manifest: String,
    _dir: tempfile::TempDir,
}

impl Crashing {
    /// Starts a broker with the manifests in `yaml`.
    fn start(yaml: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let manifest = write_manifest(dir.path(), "manifests.yaml", yaml).to_str().unwrap().to_owned();
        let (grpc, metrics, data) = (free_addr(), free_addr(), dir.path().join("data"));
        let broker = Sidecar::start_on(&data, &grpc, &metrics, &["-f", &manifest]).expect("broker starts");
        Self { broker, data, grpc, metrics, manifest, _dir: dir }
    }

    /// SIGKILL, then start again; returns how long the new process took to be ready.
    fn crash_and_restart(&mut self) -> Duration {
        self.broker.kill9();
        let restarted = Instant::now();
        self.broker =
            Sidecar::start_on(&self.data, &self.grpc, &self.metrics, &["-f", &self.manifest]).expect("broker restarts");
        restarted.elapsed()
    }
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn fifo_message(id: &str, key: &str, seq: u64) -> pb::Message {
    let mut m = raw::message(TOPIC, id, Some("entry"), format!("{key}#{seq}").into_bytes());
    let props = m.system_properties.as_mut().unwrap();
    props.message_type = pb::MessageType::Fifo as i32;
    props.message_group = Some(key.to_owned());
    m
}

/// Sends its keys' messages in sequence until `stop`; a message whose send failed is not resent
/// (it is indeterminate), the key just moves on.
async fn produce(addr: std::net::SocketAddr, producer: usize, history: Arc<History>, stop: Arc<AtomicBool>) {
    let mut client = raw::connect(addr, Some(&format!("fault-producer-{producer}"))).await;
    let keys: Vec<String> = (0..KEYS_PER_PRODUCER).map(|k| format!("p{producer}-k{k}")).collect();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        for key in &keys {
            let id = format!("{key}-{seq}");
            let request = pb::SendMessageRequest { messages: vec![fifo_message(&id, key, seq)] };
            let outcome = match tokio::time::timeout(RPC_TIMEOUT, client.send_message(request)).await {
                Ok(Ok(r)) if code(&r.get_ref().status) == pb::Code::Ok => SendOutcome::Ok,
                _ => SendOutcome::Indeterminate,
            };
            history.sent(&id, key, seq, outcome);
            if outcome == SendOutcome::Indeterminate {
                // The broker is down or restarting: do not spin.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        seq += 1;
    }
}

/// Receives and acknowledges until `stop`, recording every delivery and every confirmed ack.
async fn consume(
    addr: std::net::SocketAddr,
    group: &'static str,
    id: usize,
    history: Arc<History>,
    stop: Arc<AtomicBool>,
) {
    let mut client = raw::connect(addr, Some(&format!("fault-{group}-{id}"))).await;
    while !stop.load(Ordering::Relaxed) {
        let mut request = raw::receive_request(group, TOPIC, "*", 5_000);
        request.batch_size = 16;
        let received = tokio::time::timeout(RPC_TIMEOUT, raw::try_receive(&mut client, request)).await;
        let Ok(Ok((_, messages))) = received else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        for m in messages {
            let props = m.system_properties.as_ref().unwrap();
            let index = history.delivered(group, &props.message_id);
            let entry = pb::AckMessageEntry {
                message_id: props.message_id.clone(),
                receipt_handle: props.receipt_handle.clone().unwrap(),
                lite_topic: None,
            };
            let ack = pb::AckMessageRequest { group: resource(group), topic: resource(TOPIC), entries: vec![entry] };
            if let Ok(Ok(r)) = tokio::time::timeout(RPC_TIMEOUT, client.ack_message(ack)).await {
                let r = r.into_inner();
                if code(&r.status) == pb::Code::Ok && r.entries.iter().all(|e| code(&e.status) == pb::Code::Ok) {
                    history.acked(index);
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_load_loses_no_acknowledged_message_and_keeps_fifo_order() {
    let cycles: usize = env_or("WEIR_FAULT_CYCLES", 20);
    let seed: u64 = env_or("WEIR_FAULT_SEED", rand::rng().random());
    println!("kill -9 cycles: {cycles}, seed {seed} (WEIR_FAULT_SEED replays the schedule)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);

    let mut broker = Crashing::start(
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: ledger}\n\
         spec: {messageType: FIFO, partitions: 4, durability: Sync}\n---\n\
         apiVersion: weir.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: audit}\n\
         spec: {subscriptions: [{topicRef: {name: ledger}}], ordering: Orderly, startFrom: {position: Earliest}}\n---\n\
         apiVersion: weir.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {name: archive}\n\
         spec: {subscriptions: [{topicRef: {name: ledger}}], startFrom: {position: Earliest}}\n",
    );
    let addr = broker.broker.grpc;

    let history = Arc::new(History::default());
    let stop_producing = Arc::new(AtomicBool::new(false));
    let stop_consuming = Arc::new(AtomicBool::new(false));
    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        producers.push(tokio::spawn(produce(addr, p, history.clone(), stop_producing.clone())));
    }
    let mut consumers = Vec::new();
    for (group, _) in GROUPS {
        for c in 0..2 {
            consumers.push(tokio::spawn(consume(addr, group, c, history.clone(), stop_consuming.clone())));
        }
    }

    let mut ready_ms = Vec::new();
    for cycle in 0..cycles {
        // Let the load run for a random while, then pull the plug.
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1500))).await;
        ready_ms.push(broker.crash_and_restart().as_millis() as u64);
        let (ok, indeterminate) = history.send_counts();
        println!(
            "cycle {:>3}: ready after {:>4} ms; sends so far: {ok} ok, {indeterminate} indeterminate",
            cycle + 1,
            ready_ms[cycle]
        );
    }

    // Faults over: stop producing, then let both groups catch up with every acknowledged send.
    stop_producing.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }
    for (group, _) in GROUPS {
        wait_for(Duration::from_secs(90), &format!("group {group} to receive every acknowledged send"), async || {
            history.has_everything(group).then_some(())
        })
        .await;
    }
    stop_consuming.store(true, Ordering::Relaxed);
    for c in consumers {
        c.await.unwrap();
    }

    let (ok, indeterminate) = history.send_counts();
    ready_ms.sort_unstable();
    println!(
        "{cycles} kill -9 cycles; {ok} acknowledged sends, {indeterminate} indeterminate; restart to ready: p50 {} ms, max {} ms",
        ready_ms[ready_ms.len() / 2],
        ready_ms[ready_ms.len() - 1]
    );
    assert!(ok >= cycles * 10, "the load made too little progress to prove anything ({ok} acknowledged sends)");
    for (group, fifo) in GROUPS {
        let report = history.check(group, fifo);
        println!(
            "group {group}: {} deliveries, lost {}, unexpected {}, recovered {}, duplicates {} explained / {} unexplained, fifo violations {}",
            report.deliveries,
            report.lost.len(),
            report.unexpected.len(),
            report.recovered,
            report.explained_duplicates,
            report.unexplained_duplicates.len(),
            report.fifo_violations.len()
        );
        let traces: Vec<String> =
            report.unexplained_duplicates.iter().take(5).flat_map(|id| history.trace(id)).collect();
        assert!(report.is_clean(), "group {group}: {report:#?}\n{}", traces.join("\n"));
    }
}

/// A size-limited tmpfs, unmounted on drop. Mounting needs root (CI runs as root); the test says
/// so instead of skipping.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "weir-test-tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs failed (this test needs root, as CI has): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    fn path(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// Sends one batch of 64 one-KiB messages; returns the status and the ids.
async fn send_batch(client: &mut raw::Client, batch: usize) -> (pb::Code, String, Vec<String>) {
    let ids: Vec<String> = (0..64).map(|i| format!("full-{batch}-{i}")).collect();
    let messages = ids.iter().map(|id| raw::message("bulk", id, None, vec![b'x'; 1024])).collect();
    let r = client.send_message(pb::SendMessageRequest { messages }).await.expect("rpc").into_inner();
    let status = r.status.clone().unwrap_or_default();
    (code(&r.status), status.message, ids)
}

/// Receives (and acks) as `group` until `want` ids were seen; returns them.
async fn receive_all(client: &mut raw::Client, group: &str, want: &std::collections::HashSet<String>) {
    let mut seen = std::collections::HashSet::new();
    wait_for(
        Duration::from_secs(60),
        &format!("{group} to read all {} acknowledged messages", want.len()),
        async || {
            let mut request = raw::receive_request(group, "bulk", "*", 30_000);
            request.batch_size = 512;
            let (_, messages) = raw::receive(client, request).await;
            let mut entries = Vec::new();
            for m in messages {
                let props = m.system_properties.unwrap();
                entries.push(pb::AckMessageEntry {
                    message_id: props.message_id.clone(),
                    receipt_handle: props.receipt_handle.unwrap(),
                    lite_topic: None,
                });
                seen.insert(props.message_id);
            }
            if !entries.is_empty() {
                let ack = pb::AckMessageRequest { group: resource(group), topic: resource("bulk"), entries };
                assert_eq!(code(&client.ack_message(ack).await.unwrap().into_inner().status), pb::Code::Ok);
            }
            want.is_subset(&seen).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_sends_keeps_serving_and_resumes_when_space_returns() {
    let volume = Tmpfs::mount("96m");
    // Something else on the volume that the operator can delete later.
    let filler = volume.path().join("filler");
    std::fs::write(&filler, vec![0u8; 24 << 20]).unwrap();
    let data = volume.path().join("data");
    let args = ["--segment-size", "16Mi", "--min-free-space", "8Mi", "--flush-interval", "50ms"];
    let mut broker = Sidecar::start(&data, &args).unwrap();
    let mut client = raw::connect(broker.grpc, Some("filler-client")).await;

    // Fill the volume: every batch is either stored (OK) or refused as disk full, nothing else.
    let mut acknowledged = std::collections::HashSet::new();
    let mut refusal = None;
    for batch in 0..2_000 {
        let (status, message, ids) = send_batch(&mut client, batch).await;
        match status {
            pb::Code::Ok => acknowledged.extend(ids),
            other => {
                refusal = Some((other, message));
                break;
            }
        }
    }
    let (status, message) = refusal.expect("the 96 MiB volume filled up within 2,000 batches of 64 KiB");
    println!("refused after {} acknowledged messages: {status:?} {message}", acknowledged.len());
    assert_eq!(status, pb::Code::InternalServerError);
    assert!(message.contains("disk full"), "the error says what is wrong: {message}");
    assert!(acknowledged.len() > 10_000, "only {} messages fit before the refusal", acknowledged.len());

    // Still up and serving: a consumer reads and acknowledges everything acknowledged so far (acks
    // use the reserved space), and sends keep being refused cleanly.
    assert!(broker.is_running());
    receive_all(&mut client, "readers", &acknowledged).await;
    assert_eq!(send_batch(&mut client, 9_999).await.0, pb::Code::InternalServerError);

    // Space comes back: sends resume without a restart.
    std::fs::remove_file(&filler).unwrap();
    let resumed = wait_for(Duration::from_secs(10), "sends to be accepted again", async || {
        let (status, _, ids) = send_batch(&mut client, 10_000).await;
        (status == pb::Code::Ok).then_some(ids)
    })
    .await;
    acknowledged.extend(resumed);

    // Nothing acknowledged was damaged: after a crash, a new group reads every message back.
    broker.kill9();
    let broker = Sidecar::start(&data, &args).unwrap();
    let mut client = raw::connect(broker.grpc, Some("checker")).await;
    receive_all(&mut client, "auditors", &acknowledged).await;
}

/// `strace` fault injection: the `nth` fdatasync of the broker fails with EIO.
fn failing_fdatasync(nth: u32) -> Vec<String> {
    ["strace", "-f", "-qq", "-o", "/dev/null", "-e", "trace=fdatasync"]
        .into_iter()
        .map(str::to_owned)
        .chain([format!("--inject=fdatasync:error=EIO:when={nth}")])
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_fdatasync_stops_the_broker_without_acknowledging_what_it_held() {
    assert!(
        std::process::Command::new("strace").arg("-V").output().is_ok_and(|o| o.status.success()),
        "strace is missing: ./scripts/test.sh installs it (Debian package strace)"
    );
    for nth in [3, 20, 60] {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let wrapper = failing_fdatasync(nth);
        let wrapper: Vec<&str> = wrapper.iter().map(String::as_str).collect();
        let mut broker = Sidecar::start_under(&wrapper, &data, &[]).unwrap();
        let mut client = raw::connect(broker.grpc, Some("fsync-victim")).await;
        let mut acknowledged = std::collections::HashSet::new();
        let mut failed = None;
        for i in 0..1_000 {
            let id = format!("sync-{nth}-{i}");
            let request = pb::SendMessageRequest { messages: vec![raw::message("bulk", &id, None, vec![b'y'; 512])] };
            match tokio::time::timeout(RPC_TIMEOUT, client.send_message(request)).await {
                Ok(Ok(r)) if code(&r.get_ref().status) == pb::Code::Ok => {
                    acknowledged.insert(id);
                }
                Ok(Ok(r)) => {
                    let status = r.into_inner().status.unwrap_or_default();
                    assert_eq!(status.code, pb::Code::InternalServerError as i32, "{status:?}");
                    assert!(status.message.contains("fdatasync"), "the refusal says why: {status:?}");
                    failed = Some(status.message);
                    break;
                }
                other => {
                    failed = Some(format!("{other:?}"));
                    break;
                }
            }
        }
        let failed = failed.expect("a send failed once fdatasync did");
        let status = wait_for(Duration::from_secs(30), "the broker to stop after the failed fdatasync", async || {
            broker.exit_status()
        })
        .await;
        println!(
            "fdatasync #{nth} failed: {} sends acknowledged before; the failing send got {failed}; exit {status}",
            acknowledged.len()
        );
        assert_eq!(status.code(), Some(70), "the broker exits with EX_SOFTWARE after an fsync failure");

        // Restarted without the fault: everything acknowledged is there.
        let broker = Sidecar::start(&data, &[]).unwrap();
        let mut client = raw::connect(broker.grpc, Some("fsync-checker")).await;
        receive_all(&mut client, "auditors", &acknowledged).await;
    }
}

fn end_transaction(
    topic: &str,
    message_id: String,
    transaction_id: String,
    commit: bool,
    source: pb::TransactionSource,
) -> pb::EndTransactionRequest {
    let resolution = if commit { pb::TransactionResolution::Commit } else { pb::TransactionResolution::Rollback };
    pb::EndTransactionRequest {
        topic: resource(topic),
        message_id,
        transaction_id,
        resolution: resolution as i32,
        source: source as i32,
        trace_context: String::new(),
    }
}

/// What the application's own database says about each transaction (written before EndTransaction
/// is sent, as a real application commits its local transaction first).
type Decisions = Arc<parking_lot::Mutex<std::collections::HashMap<String, bool>>>;

/// Keeps a Telemetry stream open as a transaction producer of `topic` (reopening it after every
/// broker crash) and answers check-backs from `decisions`.
async fn answer_check_backs(
    addr: std::net::SocketAddr,
    topic: &'static str,
    decisions: Decisions,
    stop: Arc<AtomicBool>,
) {
    use pb::telemetry_command::Command;
    let mut client = raw::connect(addr, Some("txn-app")).await;
    while !stop.load(Ordering::Relaxed) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let settings = pb::TelemetryCommand {
            status: None,
            command: Some(Command::Settings(pb::Settings {
                client_type: Some(pb::ClientType::Producer as i32),
                pub_sub: Some(pb::settings::PubSub::Publishing(pb::Publishing {
                    topics: vec![pb::Resource { resource_namespace: String::new(), name: topic.into() }],
                    ..Default::default()
                })),
                ..Default::default()
            })),
        };
        let _ = tx.send(settings).await;
        let Ok(Ok(response)) =
            tokio::time::timeout(RPC_TIMEOUT, client.telemetry(tokio_stream::wrappers::ReceiverStream::new(rx))).await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut commands = response.into_inner();
        loop {
            let next = tokio::time::timeout(Duration::from_millis(500), commands.message()).await;
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let command = match next {
                Err(_) => continue,                 // idle
                Ok(Ok(Some(c))) => c,               // a command
                Ok(Ok(None)) | Ok(Err(_)) => break, // the broker went away: reconnect
            };
            let Some(Command::RecoverOrphanedTransactionCommand(check)) = command.command else { continue };
            let Some(message) = check.message else { continue };
            let body = String::from_utf8_lossy(&message.body).into_owned();
            // A half message the application never heard back about was never committed locally.
            let commit = decisions.lock().get(&body).copied().unwrap_or(false);
            let message_id = message.system_properties.map(|p| p.message_id).unwrap_or_default();
            let end = end_transaction(
                topic,
                message_id,
                check.transaction_id,
                commit,
                pb::TransactionSource::SourceServerCheck,
            );
            let _ = tokio::time::timeout(RPC_TIMEOUT, client.end_transaction(end)).await;
        }
    }
}

/// Runs transactions until `stop`: half message, a local decision (70% commit), then usually
/// EndTransaction — but sometimes the application "crashes" before it, leaving the broker to ask.
async fn run_transactions(
    addr: std::net::SocketAddr,
    topic: &'static str,
    decisions: Decisions,
    acked: Arc<parking_lot::Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    seed: u64,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut client = raw::connect(addr, Some("txn-app")).await;
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let body = format!("txn-{n}");
        n += 1;
        let mut half = raw::message(topic, &body, None, body.clone().into_bytes());
        half.system_properties.as_mut().unwrap().message_type = pb::MessageType::Transaction as i32;
        let sent =
            tokio::time::timeout(RPC_TIMEOUT, client.send_message(pb::SendMessageRequest { messages: vec![half] }))
                .await;
        let entry = match sent {
            Ok(Ok(r)) if code(&r.get_ref().status) == pb::Code::Ok => r.into_inner().entries.remove(0),
            _ => {
                // Indeterminate: the application aborts; if the half was stored, the check-back
                // finds no commit in its database and rolls it back.
                decisions.lock().insert(body, false);
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        acked.lock().push(body.clone());
        let commit = rng.random_bool(0.7);
        decisions.lock().insert(body.clone(), commit);
        if rng.random_bool(0.2) {
            continue; // the application died before telling the broker
        }
        let end =
            end_transaction(topic, entry.message_id, entry.transaction_id, commit, pb::TransactionSource::SourceClient);
        let _ = tokio::time::timeout(RPC_TIMEOUT, client.end_transaction(end)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_across_crashes_deliver_exactly_the_committed_ones() {
    const TOPIC: &str = "payments";
    let crashes: usize = env_or("WEIR_FAULT_TXN_CRASHES", 8);
    let seed: u64 = env_or("WEIR_FAULT_SEED", rand::rng().random());
    println!("transaction crashes: {crashes}, seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut broker = Crashing::start(
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {name: payments}\n\
         spec: {messageType: Transaction, partitions: 2, transaction: {checkInterval: 1s, maxChecks: 100}}\n",
    );
    let addr = broker.broker.grpc;

    let decisions: Decisions = Arc::default();
    let acked = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let stop_app = Arc::new(AtomicBool::new(false));
    let stop_checker = Arc::new(AtomicBool::new(false));
    let app = tokio::spawn(run_transactions(addr, TOPIC, decisions.clone(), acked.clone(), stop_app.clone(), seed));
    let checker = tokio::spawn(answer_check_backs(addr, TOPIC, decisions.clone(), stop_checker.clone()));
    for _ in 0..crashes {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..1200))).await;
        broker.crash_and_restart();
    }
    stop_app.store(true, Ordering::Relaxed);
    app.await.unwrap();

    // Every open transaction gets resolved by check-backs answered from the application's database.
    wait_for(Duration::from_secs(60), "every transaction to be resolved", async || {
        let open = weir_tests::metric_sum(&broker.broker.scrape().ok()?, "rocketmq_half_messages", &[]);
        (open == 0.0).then_some(())
    })
    .await;
    stop_checker.store(true, Ordering::Relaxed);
    checker.await.unwrap();

    let acked = acked.lock().clone();
    let decisions = decisions.lock().clone();
    let committed: std::collections::HashSet<String> = acked.iter().filter(|b| decisions[*b]).cloned().collect();
    let rolled_back = acked.len() - committed.len();
    let mut client = raw::connect(addr, Some("txn-auditor")).await;
    let mut delivered = std::collections::HashSet::new();
    let mut empty = 0;
    wait_for(Duration::from_secs(60), "the committed transactions to be delivered, then nothing more", async || {
        let mut request = raw::receive_request("auditors", TOPIC, "*", 60_000);
        request.batch_size = 256;
        let (_, messages) = raw::receive(&mut client, request).await;
        empty = if messages.is_empty() { empty + 1 } else { 0 };
        delivered.extend(messages.into_iter().map(|m| String::from_utf8(m.body.to_vec()).unwrap()));
        (committed.is_subset(&delivered) && empty >= 2).then_some(())
    })
    .await;
    let wrongly_delivered: Vec<_> = delivered.difference(&committed).collect();
    println!(
        "{crashes} crashes: {} transactions with an acknowledged half message ({} committed, {rolled_back} rolled back); \
         delivered {}, rolled-back delivered {}, committed lost {}, unresolved 0",
        acked.len(),
        committed.len(),
        delivered.len(),
        wrongly_delivered.len(),
        committed.difference(&delivered).count()
    );
    assert!(wrongly_delivered.is_empty(), "rolled back or never committed, yet delivered: {wrongly_delivered:?}");
    assert!(acked.len() >= crashes * 5, "too few transactions to prove anything: {}", acked.len());
}
