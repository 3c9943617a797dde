//! The Helm chart `charts/weir`, checked with the real Helm library (helm-python-sdk bundles the
//! Helm v4 SDK) and the Kubernetes OpenAPI schemas (kubernetes-validate), for every values case in
//! `charts/weir/ci/`. The checks live in `tests/chart/check_chart.py`; these tests hand it what only
//! the Rust code knows: the broker StatefulSet exactly as the operator builds it, and the RBAC the
//! operator's API calls need (`operator/src/rbac.rs`, also printed by `weir-operator rbac`).

use std::path::{Path, PathBuf};
use std::process::Command;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use weir_crds::Topic;
use weir_operator::build::{BrokerSetShape, TopicRef, build_stateful_set};
use weir_operator::config::{BrokerTls, OperatorConfig};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Runs one command of the checker; fails the test with its report.
fn check_chart(args: &[&str]) {
    let out = Command::new(weir_tests::python::interpreter())
        .arg(workspace().join("tests/chart/check_chart.py"))
        .args(args)
        .current_dir(workspace())
        .output()
        .expect("python runs");
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("{report}");
    assert!(out.status.success(), "check_chart.py {args:?} found problems:\n{report}");
}

/// The StatefulSet the operator builds for a Topic that sets nothing special, as YAML in `dir`:
/// plaintext brokers, or locked down with `--broker-tls-ca --broker-client-auth
/// --broker-acl-secret` (two Secret volumes more).
fn operator_built_broker_set(dir: &Path, tls: bool) -> String {
    let mut topic = Topic::new("orders", serde_yaml::from_str("{partitions: 8, brokers: {replicas: 3}}").unwrap());
    topic.metadata = ObjectMeta {
        name: Some("orders".into()),
        namespace: Some("shop".into()),
        uid: Some("uid-orders".into()),
        ..ObjectMeta::default()
    };
    let config =
        OperatorConfig { broker_tls: tls.then_some(BrokerTls { client_auth: true }), ..OperatorConfig::default() };
    let set =
        build_stateful_set(&topic, &TopicRef::of(&topic).unwrap(), &config, &BrokerSetShape::from_spec(&topic, 3));
    let path = dir.join(if tls { "broker-statefulset-tls.yaml" } else { "broker-statefulset.yaml" });
    std::fs::write(&path, serde_yaml::to_string(&set).unwrap()).unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn every_values_case_lints_strictly_and_validates_against_kubernetes_schemas() {
    check_chart(&["lint"]);
}

#[test]
fn operator_and_broker_pods_meet_pod_security_restricted_with_resources() {
    let dir = tempfile::tempdir().unwrap();
    let (plain, tls) = (operator_built_broker_set(dir.path(), false), operator_built_broker_set(dir.path(), true));
    check_chart(&["security", &plain, &tls]);
}

#[test]
fn monitors_policies_and_services_select_the_pods_they_are_for() {
    let dir = tempfile::tempdir().unwrap();
    check_chart(&["selectors", &operator_built_broker_set(dir.path(), true)]);
}

#[test]
fn chart_rbac_is_exactly_what_the_operator_calls_need() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("operator-rbac.yaml");
    std::fs::write(&path, weir_operator::rbac::render_yaml("weir-system").unwrap()).unwrap();
    check_chart(&["rbac", path.to_str().unwrap()]);
}

#[test]
fn chart_carries_the_crds_dashboards_and_alerts_verbatim() {
    check_chart(&["files"]);
}
