//! Starting the system under test on a scratch directory and reading what it used from `/proc`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

use crate::workload::{Durability, Settings};

/// Which system a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum System {
    /// `weir-sidecar standalone`.
    Weir,
    /// `nats-server` with JetStream, file storage.
    Jetstream,
}

/// Where the servers' programs are and where they keep their data (shared by `run` and `compare`).
#[derive(Clone, Debug, clap::Args)]
pub struct Environment {
    /// The weir-sidecar binary (default: next to weir-bench).
    #[arg(long)]
    pub weir_sidecar: Option<PathBuf>,
    /// Where the servers keep their data (default: the system's temporary directory). Put it on
    /// the disk under test; a tmpfs measures memory, not the disk.
    #[arg(long)]
    pub scratch: Option<PathBuf>,
    /// Scheduler threads of the server under test: weir-sidecar's `--worker-threads`,
    /// nats-server's `GOMAXPROCS`. Unset: each system's default, one per CPU. On a machine the
    /// load generator shares, fewer can be faster for both (BENCHMARKS.md).
    #[arg(long, value_parser = clap::value_parser!(u16).range(1..))]
    pub server_threads: Option<u16>,
}

impl Environment {
    /// The same choices as command-line arguments, for a child `weir-bench run`.
    pub fn as_args(&self) -> Vec<std::ffi::OsString> {
        let mut args = Vec::new();
        if let Some(path) = &self.weir_sidecar {
            args.extend(["--weir-sidecar".into(), path.clone().into_os_string()]);
        }
        if let Some(path) = &self.scratch {
            args.extend(["--scratch".into(), path.clone().into_os_string()]);
        }
        if let Some(threads) = self.server_threads {
            args.extend(["--server-threads".into(), threads.to_string().into()]);
        }
        args
    }
}

/// The version a `nats-server` binary reports (`nats-server: v2.15.1` → `2.15.1`).
pub fn nats_server_version(nats_server: &Path) -> Result<String> {
    let out = Command::new(nats_server).arg("--version").output().with_context(|| {
        format!("running {} --version (install nats-server, or pass --nats-server PATH)", nats_server.display())
    })?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.trim().rsplit(' ').next().unwrap_or_default().trim_start_matches('v');
    if !out.status.success() || version.is_empty() {
        bail!("{} --version printed {text:?}", nats_server.display());
    }
    Ok(version.to_owned())
}

/// A running server, stopped (SIGKILL) and its directory removed when dropped.
pub struct Server {
    child: Child,
    /// `host:port` clients connect to.
    pub address: String,
    /// Scratch directory holding the data, config and log; removed when dropped.
    dir: tempfile::TempDir,
}

/// CPU time and peak memory of a process.
#[derive(Clone, Copy, Debug, Default)]
pub struct Usage {
    /// User plus system CPU seconds.
    pub cpu_seconds: f64,
    /// Peak resident set (VmHWM).
    pub peak_rss_bytes: u64,
}

/// `N` distinct free ports. Their listeners are all held until every port is known: a port let go
/// can be handed out again by the next bind, and a server given the same port twice exits at start.
fn free_ports<const N: usize>() -> Result<[u16; N]> {
    let listeners = (0..N).map(|_| std::net::TcpListener::bind("127.0.0.1:0")).collect::<std::io::Result<Vec<_>>>()?;
    let mut ports = [0; N];
    for (port, listener) in ports.iter_mut().zip(&listeners) {
        *port = listener.local_addr()?.port();
    }
    Ok(ports)
}

fn weir_sidecar(env: &Environment) -> Result<PathBuf> {
    if let Some(path) = &env.weir_sidecar {
        return Ok(path.clone());
    }
    let exe = std::env::current_exe()?;
    Ok(exe.parent().context("weir-bench has no directory")?.join("weir-sidecar"))
}

/// The command line (and environment) that starts `system` in `dir`, listening on `address`.
fn server_command(
    system: System,
    settings: &Settings,
    env: &Environment,
    nats_server: &Path,
    dir: &Path,
    address: &str,
    metrics_port: u16,
) -> Result<Command> {
    Ok(match system {
        System::Weir => {
            let mut c = Command::new(weir_sidecar(env)?);
            let manifest = dir.join("bench.yaml");
            std::fs::write(&manifest, weir_manifest(settings))?;
            c.arg("standalone")
                .arg("--data-dir")
                .arg(dir.join("data"))
                .args(["--listen", address, "--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
                .arg("--file")
                .arg(&manifest);
            if let Some(threads) = env.server_threads {
                c.args(["--worker-threads", &threads.to_string()]);
            }
            c
        }
        System::Jetstream => {
            let config = dir.join("nats.conf");
            let sync = match settings.durability {
                Durability::Async => "",
                // nats-server 2.10+; 2.9 refuses the field, which stops the run with its message.
                Durability::Sync => "\n  sync_interval: always",
            };
            let store = dir.join("js");
            std::fs::write(
                &config,
                format!("listen: {address}\njetstream {{\n  store_dir: {:?}{sync}\n}}\n", store.display()),
            )?;
            let mut c = Command::new(nats_server);
            c.arg("-c").arg(&config);
            if let Some(threads) = env.server_threads {
                c.env("GOMAXPROCS", threads.to_string());
            }
            c
        }
    })
}

impl Server {
    /// Starts `system` for `settings` (partitions and durability are server settings for Weir);
    /// JetStream is the `nats_server` binary.
    pub async fn start(system: System, settings: &Settings, env: &Environment, nats_server: &Path) -> Result<Self> {
        let scratch = env.scratch.clone().unwrap_or_else(std::env::temp_dir);
        std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
        let dir = tempfile::Builder::new().prefix("weir-bench-").tempdir_in(&scratch)?;
        let [port, metrics_port] = free_ports()?;
        let address = format!("127.0.0.1:{port}");
        let mut command = server_command(system, settings, env, nats_server, dir.path(), &address, metrics_port)?;
        let log = std::fs::File::create(dir.path().join("server.log"))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {system:?} ({:?})", command.get_program()))?;
        let mut server = Self { child, address, dir };
        server.wait_ready(system).await?;
        Ok(server)
    }

    async fn wait_ready(&mut self, system: System) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
                bail!("{system:?} exited at start ({status}):\n{log}");
            }
            let ready = match system {
                System::Weir => crate::weir::connect(&self.address).await.is_ok(),
                System::Jetstream => tokio::net::TcpStream::connect(&self.address).await.is_ok(),
            };
            if ready {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{system:?} did not listen on {} within 30 s", self.address);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// Writes back and drops from the page cache every file of the server's data, so what is read
    /// next comes from the disk. Needs no privileges (unlike `drop_caches`): dirty pages are
    /// synced first, then `POSIX_FADV_DONTNEED` drops the clean ones.
    pub fn evict_page_cache(&self) -> Result<()> {
        evict_tree(self.dir.path())
    }

    /// CPU used so far and peak memory.
    pub fn usage(&self) -> Result<Usage> {
        usage_of(&Path::new("/proc").join(self.child.id().to_string()))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The topic and group of a Weir run as `weir-sidecar standalone --file` takes them.
fn weir_manifest(settings: &Settings) -> String {
    let durability = match settings.durability {
        Durability::Async => "Async",
        Durability::Sync => "Sync",
    };
    let mode = if settings.fan_out { "Broadcasting" } else { "Clustering" };
    format!(
        "apiVersion: weir.dev/v1alpha1\nkind: Topic\nmetadata: {{name: {topic}}}\n\
         spec: {{partitions: {partitions}, durability: {durability}}}\n---\n\
         apiVersion: weir.dev/v1alpha1\nkind: ConsumerGroup\nmetadata: {{name: {group}}}\n\
         spec:\n  subscriptions: [{{topicRef: {{name: {topic}}}}}]\n  consumptionMode: {mode}\n\
         \x20 startFrom: {{position: Earliest}}\n",
        topic = crate::weir::TOPIC,
        group = crate::weir::GROUP,
        partitions = settings.partitions,
    )
}

fn evict_tree(dir: &Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            evict_tree(&entry.path())?;
        } else if kind.is_file() {
            let file = std::fs::File::open(entry.path())?;
            file.sync_data().with_context(|| format!("syncing {}", entry.path().display()))?;
            rustix::fs::fadvise(&file, 0, None, rustix::fs::Advice::DontNeed)
                .with_context(|| format!("evicting {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// CPU used so far by this process (the load generator).
pub fn own_usage() -> Result<Usage> {
    usage_of(Path::new("/proc/self"))
}

/// Reads `stat` (utime, stime in clock ticks of 1/100 s) and `status` (VmHWM) of a process.
fn usage_of(proc_dir: &Path) -> Result<Usage> {
    let stat = std::fs::read_to_string(proc_dir.join("stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3, "state".
    let fields: Vec<&str> = stat.rsplit_once(')').context("malformed stat")?.1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>()? + fields[12].parse::<u64>()?;
    let status = std::fs::read_to_string(proc_dir.join("status"))?;
    let peak_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    Ok(Usage { cpu_seconds: ticks as f64 / 100.0, peak_rss_bytes: peak_kib * 1024 })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--server-threads` confines each server the same way: Weir's request threads, Go's
    /// processors; unset, both keep their defaults.
    #[test]
    fn server_threads_reach_both_servers() {
        #[derive(clap::Parser)]
        struct Args {
            #[command(flatten)]
            settings: Settings,
            #[command(flatten)]
            env: Environment,
        }
        let dir = tempfile::tempdir().unwrap();
        let command = |system, extra: &[&str]| {
            let args =
                <Args as clap::Parser>::parse_from(["run", "--weir-sidecar", "weir-sidecar"].iter().chain(extra));
            let c = server_command(
                system,
                &args.settings,
                &args.env,
                Path::new("nats-server"),
                dir.path(),
                "127.0.0.1:1",
                2,
            )
            .unwrap();
            let argv: Vec<String> = c.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
            let gomaxprocs = c.get_envs().find(|(k, _)| *k == "GOMAXPROCS").and_then(|(_, v)| v).map(|v| v.to_owned());
            (argv.join(" "), gomaxprocs)
        };
        let (weir, _) = command(System::Weir, &["--server-threads", "1"]);
        assert!(weir.ends_with("--worker-threads 1"), "{weir}");
        assert_eq!(command(System::Jetstream, &["--server-threads", "1"]).1, Some("1".into()));
        assert!(!command(System::Weir, &[]).0.contains("--worker-threads"));
        assert_eq!(command(System::Jetstream, &[]).1, None);
    }

    #[test]
    fn reads_this_process() {
        let usage = usage_of(Path::new("/proc/self")).unwrap();
        assert!(usage.peak_rss_bytes > 0);
        assert!(usage.cpu_seconds >= 0.0);
    }

    /// Bytes of `path` in the page cache, from util-linux `fincore` (mincore(2) needs unsafe code).
    fn resident_bytes(path: &Path) -> u64 {
        let out =
            Command::new("fincore").args(["--bytes", "--noheadings", "--raw", "--output", "RES"]).arg(path).output();
        let out = out.expect("fincore (util-linux) is installed by the README's test command");
        assert!(out.status.success(), "fincore: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).trim().parse().expect("a byte count")
    }

    /// The drain-from-disk scenario relies on this: after `evict_tree` the data is read from the
    /// disk, not the page cache. Runs on the build directory's file system, not a tmpfs (whose
    /// pages cannot be dropped).
    #[test]
    fn eviction_drops_the_files_from_the_page_cache() {
        let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
        let dir = tempfile::Builder::new().prefix("evict-test-").tempdir_in(target).unwrap();
        let file = dir.path().join("nested").join("data");
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, vec![7u8; 8 << 20]).unwrap();
        assert!(resident_bytes(&file) > 4 << 20, "a fresh write stays in the page cache");
        evict_tree(dir.path()).unwrap();
        assert!(resident_bytes(&file) < 1 << 20, "evicted: {} bytes still cached", resident_bytes(&file));
    }
}
