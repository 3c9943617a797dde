//! A fake kubelet: runs the pods of StatefulSets as local processes, from exactly the pod template
//! the operator rendered. It stands in for a node, which cannot exist here (no container runtime,
//! no cluster). What it does, and what a real node would do instead:
//!
//! * **Containers.** `command` and `args` run as they are, with `$(VAR)` references expanded like
//!   the kubelet does; `command[0]` is looked up among the workspace's built binaries (a real node
//!   would pull the image). `env` values and `fieldRef`s (`metadata.name`, `metadata.namespace`,
//!   `status.podIP`) are set.
//! * **Network.** Each pod gets its own loopback address (127.S.N.M, S claimed per kubelet with a
//!   lock file so parallel test processes never share one) standing in for its network
//!   namespace: `0.0.0.0` in an argument becomes the pod's address. Pod DNS names
//!   (`<pod>.<service>.<namespace>.svc.<domain>`) and the namespace's client Service name are
//!   written to `/etc/hosts` (marked, and removed again on drop), standing in for cluster DNS and
//!   kube-proxy (the Service name maps to the first ready pod).
//! * **Volumes.** A volume claim template becomes a directory per pod (`<claim>-<pod>`, kept
//!   across restarts like a PVC) and a PersistentVolumeClaim object; any argument under a mount
//!   path is rewritten to point into it.
//! * **Secrets.** A `secret` volume becomes a directory holding the Secret's keys as files, read
//!   from the API server when the pod starts (a missing Secret keeps the pod from starting, as it
//!   stays in ContainerCreating on a node).
//! * **Service account.** `KUBECONFIG` points at the test's API server instead of a mounted token.
//! * **Probes.** The readiness probe (gRPC, or HTTP GET with scheme HTTP or HTTPS, the latter
//!   without checking the certificate, as the kubelet does) is run against the pod's address; Pod
//!   objects and the StatefulSet's status (`replicas`, `readyReplicas`, ...) are written from it.
//! * **Scaling.** Pods beyond `spec.replicas` get SIGTERM (then SIGKILL after the grace period).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::{Container, PersistentVolumeClaim, Pod, Secret};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use parking_lot::Mutex;
use serde_json::json;

/// Field manager of everything the fake kubelet writes.
const MANAGER: &str = "fake-kubelet";

/// What the fake kubelet needs to know about its "node".
#[derive(Debug, Clone)]
pub struct KubeletConfig {
    /// Namespace whose StatefulSets it runs.
    pub namespace: String,
    /// Kubeconfig of the API server (given to pods as their service account).
    pub kubeconfig: PathBuf,
    /// Where volumes and pod logs go.
    pub work_dir: PathBuf,
    /// Cluster DNS domain.
    pub cluster_domain: String,
    /// Name of the namespace's client Service (mapped to the first ready pod).
    pub client_service: String,
}

/// One running pod.
struct RunningPod {
    child: Child,
    ip: String,
    set: String,
    ready: bool,
    readiness: Option<Probe>,
}

#[derive(Debug, Clone)]
enum Probe {
    Grpc(u16),
    Http { port: u16, path: String, https: bool },
}

/// The fake kubelet; stops its pods and cleans `/etc/hosts` when dropped.
pub struct FakeKubelet {
    pods: Arc<Mutex<BTreeMap<String, RunningPod>>>,
    hosts: Arc<Mutex<HostsFile>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKubelet {
    /// Starts running the StatefulSets of `config.namespace` found through `client`.
    pub fn start(client: kube::Client, config: KubeletConfig) -> Self {
        let pods = Arc::new(Mutex::new(BTreeMap::new()));
        let hosts = Arc::new(Mutex::new(HostsFile::new(&config.namespace)));
        let subnet = Subnet::claim();
        let node = Node { client, config, pods: pods.clone(), hosts: hosts.clone(), subnet, next_ip: 1 };
        let task = tokio::spawn(node.run());
        Self { pods, hosts, task }
    }

    /// The loopback address of a running pod.
    pub fn pod_ip(&self, pod: &str) -> Option<String> {
        self.pods.lock().get(pod).map(|p| p.ip.clone())
    }

    /// Names of the running pods.
    pub fn running(&self) -> Vec<String> {
        self.pods.lock().keys().cloned().collect()
    }

    /// Kills a pod's process with SIGKILL (it is restarted on the next pass, like a crashed container).
    pub fn kill(&self, pod: &str) {
        if let Some(mut p) = self.pods.lock().remove(pod) {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}

impl Drop for FakeKubelet {
    fn drop(&mut self) {
        self.task.abort();
        for (_, mut p) in std::mem::take(&mut *self.pods.lock()) {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        self.hosts.lock().clear();
    }
}

/// The node's loop.
struct Node {
    client: kube::Client,
    config: KubeletConfig,
    pods: Arc<Mutex<BTreeMap<String, RunningPod>>>,
    hosts: Arc<Mutex<HostsFile>>,
    subnet: Subnet,
    next_ip: u32,
}

impl Node {
    async fn run(mut self) {
        loop {
            if let Err(e) = self.pass().await {
                eprintln!("fake kubelet: {e:#}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One pass: start missing pods, stop surplus ones, probe, write statuses.
    async fn pass(&mut self) -> anyhow::Result<()> {
        let ns = self.config.namespace.clone();
        let sets: Api<StatefulSet> = Api::namespaced(self.client.clone(), &ns);
        let mut wanted: HashMap<String, (StatefulSet, u32)> = HashMap::new();
        for set in sets.list(&ListParams::default()).await?.items {
            let name = set.metadata.name.clone().unwrap_or_default();
            let replicas = set.spec.replicas.unwrap_or(1).max(0) as u32;
            for ordinal in 0..replicas {
                wanted.insert(format!("{name}-{ordinal}"), (set.clone(), ordinal));
            }
        }
        self.stop_surplus(&wanted).await;
        for (pod, (set, _)) in &wanted {
            let exited = self.pods.lock().get_mut(pod).map(|p| p.child.try_wait().ok().flatten().is_some());
            if exited != Some(false) {
                if exited == Some(true) {
                    eprintln!("fake kubelet: {pod} exited; restarting it");
                    self.pods.lock().remove(pod);
                }
                self.start_pod(pod, set).await?;
            }
        }
        self.probe_all().await;
        self.write_statuses(&sets).await
    }

    async fn stop_surplus(&mut self, wanted: &HashMap<String, (StatefulSet, u32)>) {
        let surplus: Vec<(String, RunningPod)> = {
            let mut pods = self.pods.lock();
            let names: Vec<String> = pods.keys().filter(|p| !wanted.contains_key(*p)).cloned().collect();
            names.into_iter().filter_map(|n| pods.remove(&n).map(|p| (n, p))).collect()
        };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), &self.config.namespace);
        for (name, mut pod) in surplus {
            let _ = tokio::task::spawn_blocking(move || terminate(&mut pod.child, Duration::from_secs(30))).await;
            self.hosts.lock().remove(&name);
            let _ = api.delete(&name, &Default::default()).await;
        }
    }

    async fn start_pod(&mut self, pod: &str, set: &StatefulSet) -> anyhow::Result<()> {
        let ns = self.config.namespace.clone();
        let set_name = set.metadata.name.clone().unwrap_or_default();
        let spec = &set.spec;
        let template = spec.template.spec.as_ref().ok_or_else(|| anyhow::anyhow!("{set_name}: no pod spec"))?;
        let container = template.containers.first().ok_or_else(|| anyhow::anyhow!("{set_name}: no container"))?;
        let ip = self.ip_for(pod);
        // Volumes: one directory per claim template and pod, kept like a PVC.
        let mut mounts: Vec<(String, PathBuf)> = Vec::new();
        let claims: Api<PersistentVolumeClaim> = Api::namespaced(self.client.clone(), &ns);
        for claim in spec.volume_claim_templates.iter().flatten() {
            let claim_name = claim.metadata.name.clone().unwrap_or_default();
            let pvc = format!("{claim_name}-{pod}");
            let dir = self.config.work_dir.join(&pvc);
            std::fs::create_dir_all(&dir)?;
            let object = json!({
                "apiVersion": "v1", "kind": "PersistentVolumeClaim",
                "metadata": {"name": pvc, "namespace": ns, "labels": claim.metadata.labels.clone().unwrap_or_default()},
                "spec": claim.spec,
            });
            claims.patch(&pvc, &PatchParams::apply(MANAGER).force(), &Patch::Apply(object)).await?;
            for m in container.volume_mounts.iter().flatten().filter(|m| m.name == claim_name) {
                mounts.push((m.mount_path.clone(), dir.clone()));
            }
        }
        // Secret volumes: the Secret's keys as files.
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &ns);
        for volume in template.volumes.iter().flatten() {
            let Some(source) = &volume.secret else { continue };
            let name = source.secret_name.clone().unwrap_or_default();
            let secret = secrets
                .get_opt(&name)
                .await?
                .ok_or_else(|| anyhow::anyhow!("{pod}: Secret {name} of volume {} does not exist", volume.name))?;
            let dir = self.config.work_dir.join(format!("{}-{pod}", volume.name));
            std::fs::create_dir_all(&dir)?;
            for (key, value) in secret.data.iter().flatten() {
                std::fs::write(dir.join(key), &value.0)?;
            }
            for m in container.volume_mounts.iter().flatten().filter(|m| m.name == volume.name) {
                mounts.push((m.mount_path.clone(), dir.clone()));
            }
        }
        let env = environment(container, pod, &ns, &ip);
        let expand = |s: &str| rewrite(&expand_vars(s, &env), &ip, &mounts);
        let command: Vec<String> =
            container.command.iter().flatten().chain(container.args.iter().flatten()).map(|s| expand(s)).collect();
        let (program, args) = command.split_first().ok_or_else(|| anyhow::anyhow!("{set_name}: empty command"))?;
        let log = std::fs::File::create(self.config.work_dir.join(format!("{pod}.log")))?;
        let mut command = Command::new(crate::binary(program));
        crate::die_with_parent(&mut command);
        let child = command
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .env("KUBECONFIG", &self.config.kubeconfig)
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| anyhow::anyhow!("starting {pod} ({program}): {e}"))?;
        let readiness = container.readiness_probe.as_ref().and_then(|p| {
            if let Some(g) = &p.grpc {
                return Some(Probe::Grpc(g.port as u16));
            }
            let http = p.http_get.as_ref()?;
            let port = port_number(container, &http.port)?;
            let path = http.path.clone().unwrap_or_else(|| "/".into());
            Some(Probe::Http { port, path, https: http.scheme.as_deref() == Some("HTTPS") })
        });
        self.hosts.lock().add(
            pod,
            &ip,
            &format!("{pod}.{}.{ns}.svc.{}", spec.service_name.clone().unwrap_or_default(), self.config.cluster_domain),
        );
        let mut labels = spec.template.metadata.as_ref().and_then(|m| m.labels.clone()).unwrap_or_default();
        labels.insert("statefulset.kubernetes.io/pod-name".into(), pod.to_owned());
        let owner = json!({
            "apiVersion": "apps/v1", "kind": "StatefulSet", "name": set_name,
            "uid": set.metadata.uid, "controller": true,
        });
        let object = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": pod, "namespace": ns, "labels": labels, "ownerReferences": [owner]},
            "spec": template,
        });
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &ns);
        pods.patch(pod, &PatchParams::apply(MANAGER).force(), &Patch::Apply(object)).await?;
        self.pods.lock().insert(pod.to_owned(), RunningPod { child, ip, set: set_name, ready: false, readiness });
        Ok(())
    }

    /// A stable loopback address per pod name.
    fn ip_for(&mut self, pod: &str) -> String {
        if let Some(ip) = self.hosts.lock().ip_of(pod) {
            return ip;
        }
        self.next_ip += 1;
        format!("127.{}.{}.{}", self.subnet.octet, self.next_ip / 250, 1 + self.next_ip % 250)
    }

    async fn probe_all(&mut self) {
        let targets: Vec<(String, String, Option<Probe>)> =
            self.pods.lock().iter().map(|(n, p)| (n.clone(), p.ip.clone(), p.readiness.clone())).collect();
        for (name, ip, probe) in targets {
            let ready = match probe {
                None => true,
                Some(Probe::Grpc(port)) => grpc_ready(&ip, port).await,
                Some(Probe::Http { port, path, https }) => http_ready(&ip, port, &path, https).await,
            };
            if let Some(p) = self.pods.lock().get_mut(&name) {
                p.ready = ready;
            }
        }
        // The client Service points at the first ready pod (kube-proxy stand-in).
        let first_ready = self.pods.lock().values().find(|p| p.ready).map(|p| p.ip.clone());
        if let Some(ip) = first_ready {
            let ns = &self.config.namespace;
            let service = format!("{}.{ns}.svc.{}", self.config.client_service, self.config.cluster_domain);
            self.hosts.lock().add(&format!("service/{}", self.config.client_service), &ip, &service);
        }
    }

    async fn write_statuses(&self, sets: &Api<StatefulSet>) -> anyhow::Result<()> {
        let ns = &self.config.namespace;
        let pods_api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let snapshot: Vec<(String, String, String, bool)> =
            self.pods.lock().iter().map(|(n, p)| (n.clone(), p.set.clone(), p.ip.clone(), p.ready)).collect();
        let mut per_set: HashMap<String, (i32, i32)> = HashMap::new();
        for (name, set, ip, ready) in &snapshot {
            let e = per_set.entry(set.clone()).or_default();
            e.0 += 1;
            e.1 += i32::from(*ready);
            let flag = if *ready { "True" } else { "False" };
            let status = json!({
                "apiVersion": "v1", "kind": "Pod",
                "status": {
                    "phase": "Running", "podIP": ip, "hostIP": "127.0.0.1",
                    "conditions": [{"type": "Ready", "status": flag}, {"type": "ContainersReady", "status": flag}],
                },
            });
            pods_api.patch_status(name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(status)).await?;
        }
        for set in sets.list(&ListParams::default()).await?.items {
            let name = set.metadata.name.clone().unwrap_or_default();
            let (replicas, ready) = per_set.get(&name).copied().unwrap_or_default();
            let status = json!({
                "apiVersion": "apps/v1", "kind": "StatefulSet",
                "status": {
                    "observedGeneration": set.metadata.generation,
                    "replicas": replicas, "readyReplicas": ready, "availableReplicas": ready,
                    "currentReplicas": replicas, "updatedReplicas": replicas,
                    "currentRevision": format!("{name}-1"), "updateRevision": format!("{name}-1"),
                },
            });
            sets.patch_status(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(status)).await?;
        }
        Ok(())
    }
}

/// The container's environment as the kubelet would set it.
fn environment(container: &Container, pod: &str, namespace: &str, ip: &str) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for var in container.env.iter().flatten() {
        let value = match (&var.value, var.value_from.as_ref().and_then(|v| v.field_ref.as_ref())) {
            (Some(v), _) => expand_vars(v, &env),
            (None, Some(field)) => match field.field_path.as_str() {
                "metadata.name" => pod.to_owned(),
                "metadata.namespace" => namespace.to_owned(),
                "status.podIP" => ip.to_owned(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        env.push((var.name.clone(), value));
    }
    env
}

/// Expands `$(NAME)` references to defined variables (others stay as written, like the kubelet).
fn expand_vars(s: &str, env: &[(String, String)]) -> String {
    let mut out = s.to_owned();
    for (k, v) in env {
        out = out.replace(&format!("$({k})"), v);
    }
    out
}

/// The pod's own address for the wildcard, volume directories for mount paths.
fn rewrite(arg: &str, ip: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut arg = arg.replace("0.0.0.0", ip);
    for (mount, dir) in mounts {
        if let Some(rest) = arg.strip_prefix(mount.as_str()) {
            arg = format!("{}{rest}", dir.display());
        }
    }
    arg
}

fn port_number(container: &Container, port: &k8s_openapi::apimachinery::pkg::util::intstr::IntOrString) -> Option<u16> {
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    match port {
        IntOrString::Int(p) => Some(*p as u16),
        IntOrString::String(name) => container
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref() == Some(name.as_str()))
            .map(|p| p.container_port as u16),
    }
}

async fn grpc_ready(ip: &str, port: u16) -> bool {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let Ok(endpoint) = tonic::transport::Endpoint::from_shared(format!("http://{ip}:{port}")) else { return false };
    let Ok(Ok(channel)) = tokio::time::timeout(Duration::from_secs(1), endpoint.connect()).await else { return false };
    let mut client = HealthClient::new(channel);
    let check = client.check(HealthCheckRequest { service: String::new() });
    matches!(tokio::time::timeout(Duration::from_secs(1), check).await,
        Ok(Ok(r)) if r.get_ref().status == ServingStatus::Serving as i32)
}

async fn http_ready(ip: &str, port: u16, path: &str, https: bool) -> bool {
    let attempt = async {
        let tcp = tokio::net::TcpStream::connect((ip, port)).await.ok()?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {ip}\r\n\r\n");
        if !https {
            return answers_2xx(tcp, &request).await;
        }
        let name = rustls::pki_types::ServerName::try_from(ip.to_owned()).ok()?;
        let tls = tokio_rustls::TlsConnector::from(probe_tls()).connect(name, tcp).await.ok()?;
        answers_2xx(tls, &request).await
    };
    tokio::time::timeout(Duration::from_secs(1), attempt).await.ok().flatten().unwrap_or(false)
}

async fn answers_2xx<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S, request: &str) -> Option<bool> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    s.write_all(request.as_bytes()).await.ok()?;
    let mut buf = vec![0; 64];
    let n = s.read(&mut buf).await.ok()?;
    let head = String::from_utf8_lossy(&buf[..n]).into_owned();
    Some(head.split_whitespace().nth(1).is_some_and(|c| c.starts_with('2')))
}

/// The kubelet's HTTPS probes encrypt but do not check the certificate.
fn probe_tls() -> Arc<rustls::ClientConfig> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Arc::new(config)
}

/// Accepts any server certificate; signatures are still checked, so the handshake is real.
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &rustls::pki_types::CertificateDer<'_>,
        _intermediates: &[rustls::pki_types::CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// SIGTERM, then SIGKILL after `grace`.
fn terminate(child: &mut Child, grace: Duration) {
    if let Ok(pid) = i32::try_from(child.id())
        && let Some(pid) = rustix::process::Pid::from_raw(pid)
    {
        let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// The second octet of this kubelet's pod addresses, held as an exclusive lock on a file for as
/// long as the kubelet lives: tests run as parallel processes (and a process may run several
/// kubelets), and two pods on one address would answer for each other. The kernel drops the lock
/// when a test process dies, so a crashed run never leaks its claim.
struct Subnet {
    octet: u8,
    _lock: std::fs::File,
}

impl Subnet {
    fn claim() -> Self {
        let dir = std::env::temp_dir();
        let start = std::process::id() % 254;
        for i in 0..254 {
            let octet = u8::try_from(1 + (start + i) % 254).expect("1..=254");
            let path = dir.join(format!("weir-fake-kubelet-127.{octet}.lock"));
            let lock = std::fs::File::create(&path).unwrap_or_else(|e| panic!("create {}: {e}", path.display()));
            if lock.try_lock().is_ok() {
                return Self { octet, _lock: lock };
            }
        }
        panic!("all 254 loopback subnets 127.1-254.x.x are taken by running fake kubelets");
    }
}

/// This kubelet's lines in `/etc/hosts` (cluster DNS stand-in), each marked with the run.
struct HostsFile {
    marker: String,
    entries: BTreeMap<String, (String, String)>,
}

const HOSTS: &str = "/etc/hosts";

impl HostsFile {
    fn new(namespace: &str) -> Self {
        Self { marker: format!("# weir fake kubelet {namespace} {}", std::process::id()), entries: BTreeMap::new() }
    }

    fn ip_of(&self, key: &str) -> Option<String> {
        self.entries.get(key).map(|(ip, _)| ip.clone())
    }

    fn add(&mut self, key: &str, ip: &str, name: &str) {
        let entry = (ip.to_owned(), name.to_owned());
        if self.entries.get(key) != Some(&entry) {
            self.entries.insert(key.to_owned(), entry);
            self.write();
        }
    }

    fn remove(&mut self, key: &str) {
        if self.entries.remove(key).is_some() {
            self.write();
        }
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.write();
    }

    /// Rewrites the file: other lines untouched, ours replaced. Test processes running in parallel
    /// each edit their own lines; a lock file serialises the read-modify-write. The new text is
    /// renamed into place, because resolvers in other processes read the file at any moment and a
    /// truncate-then-write would let them see it empty (a failed lookup of an unrelated pod).
    fn write(&self) {
        let lock =
            std::fs::File::create(std::env::temp_dir().join("weir-fake-kubelet-hosts.lock")).expect("hosts lock file");
        lock.lock().expect("lock the hosts file");
        let current = std::fs::read_to_string(HOSTS).unwrap_or_default();
        let mut lines: Vec<String> =
            current.lines().filter(|l| !l.ends_with(&self.marker)).map(str::to_owned).collect();
        for (ip, name) in self.entries.values() {
            lines.push(format!("{ip} {name} {}", self.marker));
        }
        let text = lines.join("\n") + "\n";
        let staged = Path::new(HOSTS).with_file_name(format!(".hosts.weir-{}", std::process::id()));
        if std::fs::write(&staged, &text).and_then(|()| std::fs::rename(&staged, HOSTS)).is_ok() {
            return;
        }
        // A bind-mounted /etc/hosts (containers) cannot be renamed over: edit it in place.
        let _ = std::fs::remove_file(&staged);
        if let Err(e) = std::fs::write(Path::new(HOSTS), text) {
            panic!("the fake kubelet maps pod DNS names in {HOSTS} and cannot write it: {e} (run the tests as root)");
        }
    }
}
