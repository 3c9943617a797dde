//! Status pieces shared by both kinds: kstatus conditions and their vocabulary.
//!
//! Conditions are standard `metav1.Condition`s (type, status, reason, message, lastTransitionTime,
//! observedGeneration), so `kubectl wait --for=condition=Ready`, kstatus (Flux, Argo CD, `kpt`) and
//! the printer columns all understand them. Types follow kstatus: [`READY`] is the summary,
//! [`RECONCILING`] is `True` while the operator works towards the spec, [`STALLED`] is `True` when
//! it cannot make progress without a change from a human. Reasons are CamelCase (see [`reason`]).

pub use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition type: the object is fully reconciled and usable.
pub const READY: &str = "Ready";
/// Condition type: the operator is working towards the spec (kstatus "abnormal-true").
pub const RECONCILING: &str = "Reconciling";
/// Condition type: the operator cannot make progress (kstatus "abnormal-true").
pub const STALLED: &str = "Stalled";

/// Condition status `"True"`.
pub const TRUE: &str = "True";
/// Condition status `"False"`.
pub const FALSE: &str = "False";
/// Condition status `"Unknown"`.
pub const UNKNOWN: &str = "Unknown";

/// CamelCase condition reasons used by the operator. Topic and ConsumerGroup share the list.
pub mod reason {
    /// Topic Ready=True: every partition is served.
    pub const SERVING: &str = "Serving";
    /// Broker pods or partitions are being created.
    pub const PROVISIONING: &str = "Provisioning";
    /// Partitions are moving between pods.
    pub const REASSIGNING: &str = "Reassigning";
    /// Partitions are being drained before removal or a scale-down.
    pub const DRAINING: &str = "Draining";
    /// Another object of the same kind in the namespace resolves to the same RocketMQ name.
    pub const RESOURCE_CONFLICT: &str = "ResourceConflict";
    /// The spec is invalid in a way admission could not catch (e.g. Orderly group on a non-FIFO topic).
    pub const INVALID_SPEC: &str = "InvalidSpec";
    /// A broker pod does not answer the admin API.
    pub const BROKER_UNAVAILABLE: &str = "BrokerUnavailable";
    /// Deletion waits for a broker that refuses to delete data.
    pub const CLEANUP_BLOCKED: &str = "CleanupBlocked";
    /// `spec.suspend` is true; nothing is reconciled.
    pub const SUSPENDED: &str = "Suspended";
    /// ConsumerGroup Ready=True: delivering.
    pub const ACTIVE: &str = "Active";
    /// ConsumerGroup: `consumeEnabled` is false; delivery is paused.
    pub const PAUSED: &str = "Paused";
    /// ConsumerGroup: a subscribed Topic does not exist (yet).
    pub const TOPIC_NOT_FOUND: &str = "TopicNotFound";
    /// ConsumerGroup: an `offsetReset` is being applied.
    pub const RESET_IN_PROGRESS: &str = "ResetInProgress";
    /// ConsumerGroup: an `offsetReset` waits for consumers to go away (or for `force`).
    pub const RESET_BLOCKED: &str = "ResetBlocked";
}

/// Finds the condition of the given type.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of the given type exists and has status `"True"`.
pub fn is_condition_true(conditions: &[Condition], type_: &str) -> bool {
    find_condition(conditions, type_).is_some_and(|c| c.status == TRUE)
}

/// Inserts or replaces the condition with `new.type_`.
///
/// If a condition of that type exists with the same status, its `lastTransitionTime` is kept (the
/// status did not transition), as `meta.SetStatusCondition` does in Go. Returns whether anything
/// changed, so callers can skip a status write.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) -> bool {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(existing) => {
            if existing.status == new.status {
                new.last_transition_time = existing.last_transition_time.clone();
            }
            if *existing == new {
                false
            } else {
                *existing = new;
                true
            }
        }
        None => {
            conditions.push(new);
            true
        }
    }
}

/// Builds a condition. `observed_generation` is the `metadata.generation` the operator acted on.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { TRUE } else { FALSE }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn set_condition_keeps_transition_time_when_status_is_unchanged() {
        let mut conditions = Vec::new();
        assert!(set_condition(&mut conditions, condition(READY, false, reason::PROVISIONING, "0/8", Some(1), at(10))));
        assert!(set_condition(&mut conditions, condition(READY, false, reason::PROVISIONING, "4/8", Some(1), at(20))));
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].message, "4/8");
        assert!(!set_condition(&mut conditions, condition(READY, false, reason::PROVISIONING, "4/8", Some(1), at(30))));
        assert!(set_condition(&mut conditions, condition(READY, true, reason::SERVING, "8/8", Some(1), at(40))));
        assert_eq!(conditions[0].last_transition_time, at(40));
        assert!(is_condition_true(&conditions, READY));
        assert!(!is_condition_true(&conditions, STALLED));
        assert_eq!(conditions.len(), 1);
    }
}
