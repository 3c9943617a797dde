//! Rust types of Weir's custom resources, `Topic` and `ConsumerGroup` (API group `weir.dev`,
//! version `v1alpha1`, both namespaced, category `weir`), shared by the operator and the broker.
//!
//! * [`topic`] and [`consumer_group`]: the resources, their CEL admission rules, and `validate()`
//!   methods that apply the same rules in plain Rust (for the standalone broker, which reads
//!   manifests without an API server).
//! * [`status`]: kstatus conditions shared by both kinds.
//! * [`quantity`]: durations (`72h`) and sizes (`50Gi`) as written in the manifests.
//! * [`partition_ranges`]: the `0-2,5` partition lists of `status.assignment`.
//! * [`manifest`]: loading multi-document YAML files of Topics and ConsumerGroups.
//! * [`naming`]: the names, labels and ports the operator and the brokers agree on.
//! * [`generate`]: the CRD YAML that `crdgen` writes to `crds/` (`kubectl apply -f crds/`).

pub mod common;
pub mod consumer_group;
pub mod generate;
pub mod manifest;
pub mod naming;
pub mod partition_ranges;
pub mod quantity;
pub mod status;
pub mod topic;

pub use common::{API_VERSION, DeletionPolicy, FINALIZER, FORCE_DELETE_ANNOTATION, GROUP, VERSION};
pub use consumer_group::{
    Backoff, BackoffPolicy, ConsumerGroup, ConsumerGroupSpec, ConsumerGroupStatus, ConsumptionMode, DeadLetter, Filter,
    FilterType, LagStatus, OffsetReset, OffsetResetResult, OffsetResetStatus, OffsetResetTarget, Ordering, RetryPolicy,
    RetryStatus, StartFrom, StartPosition, Subscription, SubscriptionStatus, TopicRef,
};
pub use manifest::{LoadError, Location, Manifests, load_manifests, load_manifests_from_str};
pub use partition_ranges::{PartitionRangesError, format_partition_ranges, parse_partition_ranges};
pub use quantity::{QuantityError, parse_duration, parse_size};
pub use topic::{
    BrokersSpec, BrokersStatus, DelaySpec, Disruption, Durability, Endpoints, FifoScope, FifoSpec, ImageSpec,
    MessageType, PartitionAssignment, PartitionCounts, Permission, PodOverrides, PullPolicy, PvcRetention,
    PvcRetentionPolicy, ReassignmentState, ReassignmentStatus, Retention, StorageSpec, StorageStatus, Topic, TopicSpec,
    TopicStatus, TransactionSpec,
};
