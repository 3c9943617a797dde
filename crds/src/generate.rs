//! Rendering of the CustomResourceDefinition YAML committed next to this crate.
//!
//! `cargo run -p weir-crds --bin crdgen` writes [`generated_files`] into `crds/`, so that
//! `kubectl apply -f crds/` installs both CRDs. A test fails when the committed files differ from
//! what the code generates.

use kube::CustomResourceExt;

use crate::{ConsumerGroup, Topic};

/// File name of the Topic CRD, relative to the crate directory.
pub const TOPIC_CRD_FILE: &str = "weir.dev_topics.yaml";
/// File name of the ConsumerGroup CRD, relative to the crate directory.
pub const CONSUMER_GROUP_CRD_FILE: &str = "weir.dev_consumergroups.yaml";
/// The command that regenerates the files.
pub const REGENERATE_COMMAND: &str = "cargo run -p weir-crds --bin crdgen";

/// The CRD of `K` as YAML, with a header saying it is generated.
pub fn crd_yaml<K: CustomResourceExt>() -> String {
    let body = serde_yaml::to_string(&K::crd()).expect("a CRD serializes to YAML");
    format!("# Generated from crds/src by `{REGENERATE_COMMAND}`. Do not edit.\n---\n{body}")
}

/// Every generated file: (file name relative to the crate directory, contents).
pub fn generated_files() -> Vec<(&'static str, String)> {
    vec![(TOPIC_CRD_FILE, crd_yaml::<Topic>()), (CONSUMER_GROUP_CRD_FILE, crd_yaml::<ConsumerGroup>())]
}
