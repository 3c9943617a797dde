//! The broker StatefulSet of a Topic and its pod template.
//!
//! The pod runs one container, `broker` (`weir-sidecar kubernetes --topic <name> ...`), which
//! learns everything else (partitions, retention, groups) by watching Topic and ConsumerGroup
//! objects, so a spec change other than `brokers` does not restart pods. The pod meets the
//! "restricted" Pod Security Standard; its only writable paths are the data volume and `/tmp`.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec, StatefulSetUpdateStrategy,
};
use k8s_openapi::api::core::v1::{
    Affinity, Capabilities, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, HTTPGetAction,
    ObjectFieldSelector, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodAffinityTerm, PodAntiAffinity,
    PodSecurityContext, PodSpec, PodTemplateSpec, Probe, ResourceRequirements, SeccompProfile, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount, VolumeResourceRequirements, WeightedPodAffinityTerm,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weir_crds::{BrokersSpec, PodOverrides, PullPolicy, PvcRetentionPolicy, Topic, naming};

use super::{TopicRef, labels};
use crate::config::OperatorConfig;

/// Name of the broker container.
pub const CONTAINER: &str = "broker";
/// UID and GID the broker runs as (the distroless `nonroot` user).
pub const BROKER_UID: i64 = 65532;
/// Seconds a broker gets to finish in-flight requests and flush on SIGTERM.
pub const TERMINATION_GRACE_SECONDS: i64 = 60;
/// Startup allowance: recovering a large commit log can take long, so the liveness probe only
/// starts after `STARTUP_PERIOD_SECONDS * STARTUP_FAILURE_THRESHOLD` seconds at most (30 min).
pub const STARTUP_PERIOD_SECONDS: i32 = 5;
/// See [`STARTUP_PERIOD_SECONDS`].
pub const STARTUP_FAILURE_THRESHOLD: i32 = 360;
const TMP_VOLUME: &str = "tmp";

/// What the plan decides about the StatefulSet beyond the Topic's spec.
#[derive(Clone, Debug, PartialEq)]
pub struct BrokerSetShape {
    /// Pods to run: the desired count, or more while departing pods drain.
    pub replicas: i32,
    /// Size of the volume claim template. Templates are immutable once the set exists, so this is
    /// the existing template's size then (volumes grow by resizing the PVCs).
    pub claim_size: Quantity,
    /// StorageClass of the volume claim template (immutable like the size).
    pub storage_class: Option<String>,
}

impl BrokerSetShape {
    /// The shape of a new set: `replicas` pods, volumes as in the spec.
    pub fn from_spec(topic: &Topic, replicas: i32) -> Self {
        let storage = &topic.spec.brokers.storage;
        Self { replicas, claim_size: storage.size.clone(), storage_class: storage.storage_class_name.clone() }
    }
}

/// The image reference: spec overrides, else the operator's defaults.
pub fn broker_image(topic: &Topic, config: &OperatorConfig) -> String {
    let image = topic.spec.brokers.image.clone().unwrap_or_default();
    let repository = image.repository.unwrap_or_else(|| config.broker_image_repository.clone());
    let tag = image.tag.unwrap_or_else(|| config.broker_image_tag.clone());
    format!("{repository}:{tag}")
}

/// The broker's command-line arguments (after `weir-sidecar`).
pub fn broker_args(topic_name: &str, brokers: &BrokersSpec, config: &OperatorConfig) -> Vec<String> {
    let storage = &brokers.storage;
    let listen = format!("0.0.0.0:{}", naming::GRPC_PORT);
    let metrics = format!("0.0.0.0:{}", naming::METRICS_PORT);
    let mut args: Vec<String> = [
        "kubernetes",
        "--topic",
        topic_name,
        "--data-dir",
        naming::DATA_MOUNT_PATH,
        "--listen",
        &listen,
        "--metrics-listen",
        &metrics,
        "--cluster-domain",
        &config.cluster_domain,
    ]
    .into_iter()
    .map(str::to_owned)
    .collect();
    match config.broker_tls {
        Some(tls) => {
            let file = |name: &str| format!("{}/{name}", naming::TLS_MOUNT_PATH);
            args.extend(["--tls-cert".to_owned(), file("tls.crt"), "--tls-key".to_owned(), file("tls.key")]);
            // Peers' certificates come from the same CA; requests forwarded to them use TLS.
            args.extend(["--peer-ca".to_owned(), file("ca.crt")]);
            if tls.client_auth {
                args.extend(["--tls-client-ca".to_owned(), file("ca.crt")]);
            }
        }
        // The broker refuses unencrypted non-loopback listeners unless told: the operator's
        // configuration chose plaintext, so the choice is made here, explicitly; the chart's
        // NetworkPolicy limits who can reach the pods.
        None => args.push("--plaintext".to_owned()),
    }
    if config.broker_acl_secret.is_some() {
        args.extend(["--acl-file".to_owned(), format!("{}/{}", naming::ACL_MOUNT_PATH, naming::ACL_FILE_KEY)]);
    }
    if let Some(ahead) = &storage.zero_fill_ahead {
        args.extend(["--zero-fill-ahead".to_owned(), ahead.0.clone()]);
    }
    let resources = broker_resources(brokers);
    let window = match &storage.log_cache_window {
        Some(window) => Some(window.0.clone()),
        None => cache_window_for(&resources),
    };
    if let Some(window) = window {
        args.extend(["--log-cache-window".to_owned(), window]);
    }
    if let Some(threads) = worker_threads_for(&resources) {
        args.extend(["--worker-threads".to_owned(), threads.to_string()]);
    }
    args
}

/// Request threads for a broker container with `resources`: its CPU limit, else its CPU request,
/// rounded up to whole CPUs. Without a CPU limit the broker would count every CPU of the node and
/// run as many request threads, which then contend for its locks on cores that other pods are
/// using: on the 2-core build machine, beside a busy client, one thread served 15–40% more than
/// two (BENCHMARKS.md). `None` (the broker's own default) when neither is set or readable.
fn worker_threads_for(resources: &ResourceRequirements) -> Option<u32> {
    let cpus = |list: &Option<BTreeMap<String, Quantity>>| list.as_ref()?.get("cpu").and_then(whole_cpus);
    cpus(&resources.limits).or_else(|| cpus(&resources.requests))
}

/// A Kubernetes CPU quantity in whole CPUs, rounded up (`250m` → 1, `1.5` → 2, `4` → 4).
fn whole_cpus(quantity: &Quantity) -> Option<u32> {
    let millis = match quantity.0.strip_suffix('m') {
        Some(millis) => millis.parse::<u64>().ok()?,
        None => {
            let cpus: f64 = quantity.0.parse().ok().filter(|c: &f64| c.is_finite() && *c >= 0.0)?;
            (cpus * 1000.0).ceil() as u64
        }
    };
    u32::try_from(millis.div_ceil(1000).max(1)).ok()
}

/// The log cache window for a broker container with `resources`: half its memory limit. The page
/// cache a broker fills is charged to its pod, so a window near the limit would have appends
/// reclaim cache in the middle of a write, and a larger one would never be reached. `None` (the
/// broker's own default) when there is no memory limit or the operator cannot read it.
fn cache_window_for(resources: &ResourceRequirements) -> Option<String> {
    let limit = resources.limits.as_ref()?.get("memory")?;
    let bytes = weir_crds::quantity::parse_size_quantity("resources.limits.memory", limit).ok()?;
    Some(format!("{}Mi", ((bytes / 2) >> 20).max(1)))
}

/// The broker container's requests and limits: the spec's, else the defaults.
fn broker_resources(brokers: &BrokersSpec) -> ResourceRequirements {
    brokers.resources.clone().unwrap_or_else(default_resources)
}

/// Requests and limits when the spec sets none: enough for a few thousand messages per second
/// with Sync durability; memory is limited because the page cache, not the heap, holds the log.
pub fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([("cpu".to_owned(), q("250m")), ("memory".to_owned(), q("512Mi"))])),
        limits: Some(BTreeMap::from([("memory".to_owned(), q("2Gi"))])),
        ..ResourceRequirements::default()
    }
}

fn env_from_field(name: &str, path: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value_from: Some(EnvVarSource {
            field_ref: Some(ObjectFieldSelector { field_path: path.to_owned(), ..ObjectFieldSelector::default() }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    }
}

/// A probe of the metrics listener (`/healthz`, `/readyz`); HTTPS when the broker serves TLS
/// (the kubelet does not check the certificate, and gRPC probes cannot speak TLS at all).
fn metrics_probe(path: &str, tls: bool, period: i32, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.to_owned()),
            port: IntOrString::String("metrics".to_owned()),
            scheme: Some(if tls { "HTTPS" } else { "HTTP" }.to_owned()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(period),
        failure_threshold: Some(failure_threshold),
        timeout_seconds: Some(3),
        ..Probe::default()
    }
}

fn broker_container(topic: &Topic, topic_name: &str, config: &OperatorConfig) -> Container {
    let port = |name: &str, port: u16| ContainerPort {
        name: Some(name.to_owned()),
        container_port: i32::from(port),
        protocol: Some("TCP".to_owned()),
        ..ContainerPort::default()
    };
    let tls = config.broker_tls.is_some();
    Container {
        name: CONTAINER.to_owned(),
        image: Some(broker_image(topic, config)),
        image_pull_policy: topic.spec.brokers.image.as_ref().and_then(|i| i.pull_policy).map(pull_policy),
        command: Some(vec!["weir-sidecar".to_owned()]),
        args: Some(broker_args(topic_name, &topic.spec.brokers, config)),
        env: Some(vec![
            env_from_field("POD_NAME", "metadata.name"),
            env_from_field("POD_NAMESPACE", "metadata.namespace"),
            EnvVar { name: "WEIR_LOG_FORMAT".to_owned(), value: Some("json".to_owned()), ..EnvVar::default() },
        ]),
        ports: Some(vec![port("grpc", naming::GRPC_PORT), port("metrics", naming::METRICS_PORT)]),
        // Ready once the broker knows its place in the cluster (the same answer as gRPC health).
        readiness_probe: Some(metrics_probe("/readyz", tls, 5, 3)),
        liveness_probe: Some(metrics_probe("/healthz", tls, 10, 6)),
        startup_probe: Some(metrics_probe("/healthz", tls, STARTUP_PERIOD_SECONDS, STARTUP_FAILURE_THRESHOLD)),
        resources: Some(broker_resources(&topic.spec.brokers)),
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            read_only_root_filesystem: Some(true),
            run_as_non_root: Some(true),
            capabilities: Some(Capabilities { drop: Some(vec!["ALL".to_owned()]), ..Capabilities::default() }),
            seccomp_profile: Some(runtime_default_seccomp()),
            ..SecurityContext::default()
        }),
        volume_mounts: Some(volume_mounts(config)),
        ..Container::default()
    }
}

fn volume_mounts(config: &OperatorConfig) -> Vec<VolumeMount> {
    let mut mounts = vec![
        VolumeMount {
            name: naming::DATA_VOLUME.to_owned(),
            mount_path: naming::DATA_MOUNT_PATH.to_owned(),
            ..VolumeMount::default()
        },
        VolumeMount { name: TMP_VOLUME.to_owned(), mount_path: "/tmp".to_owned(), ..VolumeMount::default() },
    ];
    let secrets = [
        (config.broker_tls.is_some(), naming::TLS_VOLUME, naming::TLS_MOUNT_PATH),
        (config.broker_acl_secret.is_some(), naming::ACL_VOLUME, naming::ACL_MOUNT_PATH),
    ];
    for (_, name, path) in secrets.into_iter().filter(|(wanted, _, _)| *wanted) {
        mounts.push(VolumeMount {
            name: name.to_owned(),
            mount_path: path.to_owned(),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    mounts
}

fn volumes(topic_name: &str, config: &OperatorConfig) -> Vec<Volume> {
    let mut volumes = vec![Volume {
        name: TMP_VOLUME.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource {
            size_limit: Some(Quantity("64Mi".to_owned())),
            ..EmptyDirVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let secrets = [
        (naming::TLS_VOLUME, config.broker_tls.map(|_| naming::tls_secret_name(topic_name))),
        (naming::ACL_VOLUME, config.broker_acl_secret.clone()),
    ];
    for (name, secret) in secrets {
        let Some(secret) = secret else { continue };
        // Readable by the broker's group only (fsGroup); the pod starts once the Secret exists.
        volumes.push(Volume {
            name: name.to_owned(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret),
                default_mode: Some(0o440),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
    }
    volumes
}

fn pull_policy(policy: PullPolicy) -> String {
    match policy {
        PullPolicy::Always => "Always",
        PullPolicy::IfNotPresent => "IfNotPresent",
        PullPolicy::Never => "Never",
    }
    .to_owned()
}

fn runtime_default_seccomp() -> SeccompProfile {
    SeccompProfile { type_: "RuntimeDefault".to_owned(), ..SeccompProfile::default() }
}

/// Without an affinity in the spec, prefer one broker of a Topic per node: a node failure then
/// costs each Topic at most one pod's partitions.
fn default_affinity(topic_name: &str) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![WeightedPodAffinityTerm {
                weight: 100,
                pod_affinity_term: PodAffinityTerm {
                    topology_key: "kubernetes.io/hostname".to_owned(),
                    label_selector: Some(LabelSelector {
                        match_labels: Some(labels::selector_labels(topic_name)),
                        ..LabelSelector::default()
                    }),
                    ..PodAffinityTerm::default()
                },
            }]),
            ..PodAntiAffinity::default()
        }),
        ..Affinity::default()
    }
}

fn non_empty<T>(v: Vec<T>) -> Option<Vec<T>> {
    (!v.is_empty()).then_some(v)
}

fn non_empty_map(m: BTreeMap<String, String>) -> Option<BTreeMap<String, String>> {
    (!m.is_empty()).then_some(m)
}

fn pod_template(topic: &Topic, topic_ref: &TopicRef, config: &OperatorConfig) -> PodTemplateSpec {
    let overrides = topic.spec.brokers.pod_template.clone().unwrap_or_default();
    let PodOverrides {
        annotations,
        labels: extra_labels,
        node_selector,
        affinity,
        tolerations,
        topology_spread_constraints,
        priority_class_name,
        image_pull_secrets,
    } = overrides;
    // User labels first, so the operator's (selector) labels win.
    let mut pod_labels = extra_labels;
    pod_labels.extend(labels::topic_labels(&topic_ref.name));
    let mut pod_annotations = annotations;
    pod_annotations.insert("kubectl.kubernetes.io/default-container".to_owned(), CONTAINER.to_owned());

    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(pod_annotations),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![broker_container(topic, &topic_ref.name, config)],
            service_account_name: Some(naming::broker_set(&topic_ref.name)),
            automount_service_account_token: Some(true),
            enable_service_links: Some(false),
            termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
            security_context: Some(PodSecurityContext {
                run_as_non_root: Some(true),
                run_as_user: Some(BROKER_UID),
                run_as_group: Some(BROKER_UID),
                fs_group: Some(BROKER_UID),
                fs_group_change_policy: Some("OnRootMismatch".to_owned()),
                seccomp_profile: Some(runtime_default_seccomp()),
                ..PodSecurityContext::default()
            }),
            affinity: Some(affinity.unwrap_or_else(|| default_affinity(&topic_ref.name))),
            node_selector: non_empty_map(node_selector),
            tolerations: non_empty(tolerations),
            topology_spread_constraints: non_empty(topology_spread_constraints),
            priority_class_name,
            image_pull_secrets: non_empty(image_pull_secrets),
            volumes: Some(volumes(&topic_ref.name, config)),
            ..PodSpec::default()
        }),
    }
}

fn claim_template(topic_ref: &TopicRef, shape: &BrokerSetShape) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(naming::DATA_VOLUME.to_owned()),
            labels: Some(labels::topic_labels(&topic_ref.name)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), shape.claim_size.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            storage_class_name: shape.storage_class.clone(),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    }
}

fn retention(policy: PvcRetentionPolicy) -> String {
    match policy {
        PvcRetentionPolicy::Retain => "Retain",
        PvcRetentionPolicy::Delete => "Delete",
    }
    .to_owned()
}

/// The StatefulSet `<topic>-broker`.
pub fn build_stateful_set(
    topic: &Topic,
    topic_ref: &TopicRef,
    config: &OperatorConfig,
    shape: &BrokerSetShape,
) -> StatefulSet {
    let pvc = &topic.spec.brokers.pvc_retention;
    StatefulSet {
        metadata: topic_ref.child_meta(naming::broker_set(&topic_ref.name)),
        spec: StatefulSetSpec {
            replicas: Some(shape.replicas),
            selector: LabelSelector {
                match_labels: Some(labels::selector_labels(&topic_ref.name)),
                ..LabelSelector::default()
            },
            service_name: Some(naming::broker_set(&topic_ref.name)),
            // Brokers do not depend on each other to start; ordered start-up only slows recovery.
            pod_management_policy: Some("Parallel".to_owned()),
            update_strategy: Some(StatefulSetUpdateStrategy {
                type_: Some("RollingUpdate".to_owned()),
                ..StatefulSetUpdateStrategy::default()
            }),
            revision_history_limit: Some(5),
            persistent_volume_claim_retention_policy: Some(StatefulSetPersistentVolumeClaimRetentionPolicy {
                when_deleted: Some(retention(pvc.when_deleted)),
                when_scaled: Some(retention(pvc.when_scaled)),
            }),
            template: pod_template(topic, topic_ref, config),
            volume_claim_templates: Some(vec![claim_template(topic_ref, shape)]),
            ..StatefulSetSpec::default()
        },
        status: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::fixtures::{topic, topic_yaml};
    use crate::build::{build_client_service, build_headless_service, build_pdb};
    use weir_crds::TopicSpec;

    fn config() -> OperatorConfig {
        OperatorConfig { broker_image_tag: "0.1.0".to_owned(), ..OperatorConfig::default() }
    }

    const CUSTOM: &str = r#"
topicName: Orders_EU
partitions: 12
brokers:
  replicas: 3
  image: {repository: registry.example/weir, tag: "1.2.3", pullPolicy: Always}
  resources:
    requests: {cpu: "1", memory: 2Gi}
    limits: {cpu: "2", memory: 4Gi}
  storage: {size: 50Gi, storageClassName: fast-ssd, expandable: true}
  pvcRetention: {whenDeleted: Delete, whenScaled: Retain}
  disruption: {maxUnavailable: 0}
  podTemplate:
    annotations: {prometheus.io/scrape: "true"}
    labels: {team: payments, app.kubernetes.io/name: not-weir}
    nodeSelector: {disk: ssd}
    priorityClassName: critical-mq
    tolerations: [{key: dedicated, operator: Equal, value: mq, effect: NoSchedule}]
    affinity:
      nodeAffinity:
        requiredDuringSchedulingIgnoredDuringExecution:
          nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a, b]}]}]
    imagePullSecrets: [{name: registry-creds}]
"#;

    #[test]
    fn default_topic_objects() {
        let t = topic("orders", TopicSpec::default());
        let r = TopicRef::of(&t).unwrap();
        let shape = BrokerSetShape::from_spec(&t, 1);
        insta::assert_yaml_snapshot!("default_statefulset", build_stateful_set(&t, &r, &config(), &shape));
        insta::assert_yaml_snapshot!("default_headless_service", build_headless_service(&r));
        insta::assert_yaml_snapshot!("default_pdb", build_pdb(&r, &t));
        insta::assert_yaml_snapshot!("client_service", build_client_service("shop"));
    }

    #[test]
    fn customised_topic_objects() {
        let t = topic_yaml("orders-eu", CUSTOM);
        let r = TopicRef::of(&t).unwrap();
        let shape = BrokerSetShape::from_spec(&t, 4);
        let set = build_stateful_set(&t, &r, &config(), &shape);
        insta::assert_yaml_snapshot!("custom_statefulset", set);
        insta::assert_yaml_snapshot!("custom_pdb", build_pdb(&r, &t));
    }

    #[test]
    fn selector_labels_cannot_be_overridden_and_match_the_services() {
        let t = topic_yaml("orders-eu", CUSTOM);
        let r = TopicRef::of(&t).unwrap();
        let set = build_stateful_set(&t, &r, &config(), &BrokerSetShape::from_spec(&t, 3));
        let spec = set.spec;
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        assert_eq!(pod_labels.get(naming::labels::NAME).map(String::as_str), Some("weir"));
        assert_eq!(pod_labels.get("team").map(String::as_str), Some("payments"));
        for selector in [
            spec.selector.match_labels.unwrap(),
            build_headless_service(&r).spec.unwrap().selector.unwrap(),
            build_client_service("shop").spec.unwrap().selector.unwrap(),
        ] {
            assert!(selector.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "{selector:?}");
        }
    }

    #[test]
    fn args_name_the_topic_object_and_cluster_domain() {
        let cfg = OperatorConfig { cluster_domain: "corp.internal".to_owned(), ..config() };
        let args = broker_args("orders", &topic_yaml("orders", "{}").spec.brokers, &cfg);
        assert_eq!(args[..3], ["kubernetes", "--topic", "orders"]);
        assert_eq!(flag_value(&args, "--cluster-domain"), Some("corp.internal"));
        assert!(!args.iter().any(|a| a == "--zero-fill-ahead"), "unset: the broker's default");
        let t = topic_yaml("t", "brokers: {image: {tag: edge}}");
        assert_eq!(broker_image(&t, &cfg), "ghcr.io/weir-mq/weir-sidecar:edge");
    }

    /// The value `flag` is given in `args`.
    fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
        Some(args[args.iter().position(|a| a == flag)? + 1].as_str())
    }

    /// The value of `flag` on the command line of brokers with the spec `brokers` (YAML).
    fn flag_for_brokers(brokers: &str, flag: &str) -> Option<String> {
        let t = topic_yaml("t", &format!("brokers: {brokers}"));
        flag_value(&broker_args("t", &t.spec.brokers, &config()), flag).map(str::to_owned)
    }

    /// For each (brokers spec, expected value) case, `flag` on the brokers' command line.
    fn assert_flag_for_brokers(flag: &str, cases: &[(&str, Option<&str>)]) {
        for (brokers, want) in cases {
            assert_eq!(flag_for_brokers(brokers, flag).as_deref(), *want, "{flag} for brokers {brokers}");
        }
    }

    /// A Topic's volume settings reach its brokers' command line (0 turns zero-filling off), and
    /// an explicit cache window wins over the one derived from the memory limit.
    #[test]
    fn volume_settings_are_passed_to_the_brokers() {
        let brokers =
            "{storage: {size: 20Gi, zeroFillAhead: 0, logCacheWindow: 512Mi}, resources: {limits: {memory: 8Gi}}}";
        assert_eq!(flag_for_brokers(brokers, "--zero-fill-ahead").as_deref(), Some("0"));
        assert_eq!(flag_for_brokers(brokers, "--log-cache-window").as_deref(), Some("512Mi"));
    }

    /// Without a window in the spec, a broker keeps half its memory limit of log in the page
    /// cache (the default limit of 2Gi gives the broker's own default, 1Gi); without a limit, or
    /// one the operator cannot read, the broker's default applies.
    #[test]
    fn the_cache_window_follows_the_memory_limit() {
        assert_flag_for_brokers(
            "--log-cache-window",
            &[
                ("{}", Some("1024Mi")),
                ("{resources: {limits: {memory: 512Mi}}}", Some("256Mi")),
                ("{resources: {limits: {memory: 16G}}}", Some("7629Mi")),
                // Never 0, which would keep all of the log.
                ("{resources: {limits: {memory: 1Mi}}}", Some("1Mi")),
                ("{resources: {requests: {memory: 1Gi}}}", None),
                ("{resources: {limits: {memory: 500m}}}", None),
            ],
        );
    }

    /// A broker runs as many request threads as its CPU limit, else its CPU request, rounded up
    /// (the default request of 250m gives one), not one per CPU of the node.
    #[test]
    fn request_threads_follow_the_cpu_resources() {
        assert_flag_for_brokers(
            "--worker-threads",
            &[
                ("{}", Some("1")),
                ("{resources: {requests: {cpu: 500m}, limits: {cpu: '3'}}}", Some("3")),
                ("{resources: {requests: {cpu: '1.5'}}}", Some("2")),
                ("{resources: {requests: {cpu: 2000m}}}", Some("2")),
                ("{resources: {requests: {cpu: 0m}}}", Some("1")),
                ("{resources: {limits: {memory: 1Gi}}}", None),
                // Not read: the broker's default.
                ("{resources: {requests: {cpu: 1k}}}", None),
            ],
        );
    }

    #[test]
    fn a_topic_without_uid_cannot_own_children() {
        let mut t = topic("orders", TopicSpec::default());
        t.metadata.uid = None;
        assert_eq!(TopicRef::of(&t), Err(crate::build::BuildError::MissingMetadata("uid")));
    }
}
