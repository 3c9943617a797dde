//! Shared helpers for the cross-crate tests: start a real `weir-sidecar` process on free ports with
//! a temporary data directory, kill it like a crash (`kill -9`) or stop it like Kubernetes
//! (`SIGTERM`), and build official RocketMQ SDK clients pointed at it.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub mod fake_kube;
pub mod history;
pub mod kubelet;
pub mod pki;
pub mod raw;

/// The `weir-sidecar` binary built by cargo next to the test executables.
pub fn sidecar_binary() -> PathBuf {
    binary("weir-sidecar")
}

/// The `weirctl` binary.
pub fn weirctl_binary() -> PathBuf {
    binary("weirctl")
}

/// A binary of this workspace (built by `cargo build --workspace --bins`).
pub fn binary(name: &str) -> PathBuf {
    if let Ok(p) = std::env::var(format!("{}_BIN", name.replace('-', "_").to_uppercase())) {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-binary> -> target/<profile>/<name>
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(Path::parent).expect("target/<profile> directory");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build -p weir-sidecar --bins` (the README's test command does)",
        path.display()
    );
    path
}

/// Makes the child receive SIGKILL when the test process dies, so a test killed by the runner's
/// timeout leaves no broker behind.
#[allow(unsafe_code)]
pub fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the forked child before exec and only makes one async-signal-safe
    // system call (prctl), allocating nothing.
    unsafe {
        command.pre_exec(|| {
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))
                .map_err(std::io::Error::from)
        });
    }
}

/// A running broker process.
#[derive(Debug)]
pub struct Sidecar {
    child: Option<Child>,
    /// gRPC address.
    pub grpc: SocketAddr,
    /// Metrics address.
    pub metrics: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
}

impl Sidecar {
    /// Starts `weir-sidecar standalone` on free loopback ports with `data_dir` and extra arguments,
    /// and waits until it reports ready.
    pub fn start(data_dir: &Path, extra_args: &[&str]) -> Result<Self> {
        Self::start_on(data_dir, "127.0.0.1:0", "127.0.0.1:0", extra_args)
    }

    /// Like [`Sidecar::start`], on the given gRPC and metrics addresses (a restarted broker that
    /// clients find where it was).
    pub fn start_on(data_dir: &Path, grpc: &str, metrics: &str, extra_args: &[&str]) -> Result<Self> {
        let mut command = Command::new(sidecar_binary());
        command.arg("standalone");
        Self::start_command(command, data_dir, grpc, metrics, extra_args)
    }

    /// Like [`Sidecar::start`], run by `wrapper` (e.g. `strace` injecting faults into syscalls).
    pub fn start_under(wrapper: &[&str], data_dir: &Path, extra_args: &[&str]) -> Result<Self> {
        let mut command = Command::new(wrapper[0]);
        command.args(&wrapper[1..]).arg(sidecar_binary()).arg("standalone");
        Self::start_command(command, data_dir, "127.0.0.1:0", "127.0.0.1:0", extra_args)
    }

    /// Starts `weir-sidecar kubernetes` with `args` (topic, pod name, namespace) against the API
    /// server `kubeconfig` names, on free loopback ports, and waits until it serves gRPC (which is
    /// not yet being ready: that waits for its view of the cluster).
    pub fn start_pod(data_dir: &Path, kubeconfig: &Path, args: &[&str]) -> Result<Self> {
        let mut command = Command::new(sidecar_binary());
        command.arg("kubernetes").args(args).env("KUBECONFIG", kubeconfig);
        Self::start_command(command, data_dir, "127.0.0.1:0", "127.0.0.1:0", &[])
    }

    fn start_command(
        mut command: Command,
        data_dir: &Path,
        grpc: &str,
        metrics: &str,
        extra_args: &[&str],
    ) -> Result<Self> {
        die_with_parent(&mut command);
        let mut child = command
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", grpc, "--metrics-listen", metrics])
            .args(extra_args)
            .env("RUST_LOG", std::env::var("WEIR_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("spawning weir-sidecar")?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.starts_with("weir-sidecar ready:") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => line,
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                bail!("weir-sidecar did not become ready within 60 s (exit status {status:?})");
            }
        };
        let field = |name: &str| -> Result<String> {
            line.split_whitespace()
                .find_map(|f| f.strip_prefix(&format!("{name}=")))
                .map(|v| {
                    v.trim_start_matches("http://")
                        .trim_start_matches("https://")
                        .trim_end_matches("/metrics")
                        .to_owned()
                })
                .with_context(|| format!("no {name}= in {line:?}"))
        };
        Ok(Self {
            grpc: field("grpc")?.parse()?,
            metrics: field("metrics")?.parse()?,
            data_dir: data_dir.to_owned(),
            child: Some(child),
        })
    }

    /// `host:port` for SDK access URLs.
    pub fn access_url(&self) -> String {
        self.grpc.to_string()
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// The exit status, once the process has ended by itself.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILL, like a crash or an OOM kill.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait for the exit (what Kubernetes does on pod deletion).
    pub fn terminate(&mut self) -> Result<ExitStatus> {
        let mut c = self.child.take().context("not running")?;
        let status = Command::new("kill").arg("-TERM").arg(c.id().to_string()).status()?;
        if !status.success() {
            bail!("kill -TERM failed");
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(s) = c.try_wait()? {
                return Ok(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                bail!("weir-sidecar did not exit within 30 s of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The text of `/metrics`.
    pub fn scrape(&self) -> Result<String> {
        scrape(self.metrics)
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Asserts the broker process is alive and a well-formed send through `client` still succeeds
/// (the end of every bad-input and hostile-client test).
pub async fn still_serving(broker: &mut Sidecar, client: &mut raw::Client) {
    use weir_proto::rocketmq::v2 as pb;
    assert!(broker.is_running(), "the broker exited");
    let id = format!("alive-{}", rand::random::<u64>());
    let message = raw::message("alive", &id, None, b"ok".to_vec());
    let r =
        client.send_message(pb::SendMessageRequest { messages: vec![message] }).await.expect("grpc ok").into_inner();
    assert_eq!(raw::code(&r.status), pb::Code::Ok, "{:?}", r.status);
}

/// Resident memory of a process, from /proc.
pub fn rss_bytes(pid: u32) -> u64 {
    status_bytes(pid, "VmRSS:")
}

/// The most resident memory a process has had, from /proc.
pub fn peak_rss_bytes(pid: u32) -> u64 {
    status_bytes(pid, "VmHWM:")
}

/// A size in kB from `/proc/<pid>/status`, in bytes.
fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("process status");
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in kB"));
    kb * 1024
}

/// The text of `/metrics` served at `addr`.
pub fn scrape(addr: SocketAddr) -> Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(s, "GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).context("no HTTP body")?;
    Ok(body)
}

/// Sum of a metric's samples whose label set contains every `label="value"` pair given.
pub fn metric_sum(scrape: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Writes a manifest file into `dir` and returns its path.
pub fn write_manifest(dir: &Path, name: &str, yaml: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, yaml).expect("write manifest");
    path
}

/// Polls `check` until it returns `Some`, or fails after `timeout`.
pub async fn wait_for<T>(timeout: Duration, what: &str, mut check: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// SDK client options for a broker.
pub mod sdk {
    use std::time::Duration;

    use rocketmq::conf::{ClientOption, ProducerOption, SimpleConsumerOption};
    use rocketmq::{Producer, SimpleConsumer};

    fn client_option(url: &str, long_poll: Duration) -> ClientOption {
        let mut o = ClientOption::default();
        o.set_access_url(url);
        o.set_enable_tls(false);
        o.set_long_polling_timeout(long_poll);
        o.set_timeout(Duration::from_secs(10));
        o
    }

    /// A started producer for `topics`.
    pub async fn producer(url: &str, topics: &[&str]) -> Producer {
        let mut option = ProducerOption::default();
        option.set_topics(topics.to_vec());
        let mut p = Producer::new(option, client_option(url, Duration::from_secs(5))).expect("producer options");
        p.start().await.expect("producer start");
        p
    }

    /// A started simple consumer of `group` for `topics`; receives long-poll up to `long_poll`.
    pub async fn consumer(url: &str, group: &str, topics: &[&str], long_poll: Duration) -> SimpleConsumer {
        let mut option = SimpleConsumerOption::default();
        option.set_topics(topics.to_vec());
        option.set_consumer_group(group);
        let mut c = SimpleConsumer::new(option, client_option(url, long_poll)).expect("consumer options");
        c.start().await.expect("consumer start");
        c
    }
}

/// The Python SDK scenarios (`tests/python/clients.py`), run with the virtualenv the README's test
/// command creates (`.venv`, or `WEIR_PYTHON`).
pub mod python {
    use std::path::PathBuf;
    use std::process::{Child, Command, Stdio};

    /// The interpreter with `rocketmq-python-client` installed.
    pub fn interpreter() -> PathBuf {
        if let Ok(p) = std::env::var("WEIR_PYTHON") {
            return PathBuf::from(p);
        }
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
        assert!(
            p.exists(),
            "{} is missing: the README's test command (./scripts/test.sh) creates it with rocketmq-python-client",
            p.display()
        );
        p
    }

    /// Starts a scenario; its stdout carries one JSON object per line.
    pub fn spawn(scenario: &str, endpoint: &str, args: &[&str]) -> Child {
        spawn_with_env(scenario, endpoint, args, &[])
    }

    /// [`spawn`] with extra environment variables (e.g. the CA gRPC should trust).
    pub fn spawn_with_env(scenario: &str, endpoint: &str, args: &[&str], env: &[(&str, &str)]) -> Child {
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/clients.py");
        Command::new(interpreter())
            .envs(env.iter().copied())
            .arg(script)
            .arg(scenario)
            .args(["--endpoint", endpoint])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start python")
    }

    /// Runs a scenario to the end; panics with its output if it failed.
    pub fn run(scenario: &str, endpoint: &str, args: &[&str]) -> Vec<serde_json::Value> {
        run_with_env(scenario, endpoint, args, &[])
    }

    /// [`run`] with extra environment variables.
    pub fn run_with_env(scenario: &str, endpoint: &str, args: &[&str], env: &[(&str, &str)]) -> Vec<serde_json::Value> {
        let out = spawn_with_env(scenario, endpoint, args, env).wait_with_output().expect("python runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "python scenario {scenario} failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        stdout.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
    }
}
