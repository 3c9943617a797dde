//! The PodDisruptionBudget of a Topic's pods: node drains take at most `maxUnavailable` brokers
//! at once (each pod owns partitions, so every evicted pod makes some partitions unavailable).

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use weir_crds::{Topic, naming};

use super::{TopicRef, labels};

/// The PDB named like the StatefulSet.
pub fn build_pdb(topic_ref: &TopicRef, topic: &Topic) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: topic_ref.child_meta(naming::broker_set(&topic_ref.name)),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(topic.spec.brokers.disruption.max_unavailable.max(0))),
            selector: Some(LabelSelector {
                match_labels: Some(labels::selector_labels(&topic_ref.name)),
                ..LabelSelector::default()
            }),
            ..PodDisruptionBudgetSpec::default()
        }),
        status: None,
    }
}
