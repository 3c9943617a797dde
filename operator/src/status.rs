//! kstatus conditions of both kinds, derived from one [`Summary`] per reconcile.
//!
//! A plan decides one summary: is the object Ready, why (a CamelCase reason from
//! [`weir_crds::status::reason`]), and whether the operator is still working on it
//! (Reconciling) or cannot progress without a human (Stalled). [`apply_summary`] turns it into the
//! three conditions, keeping `lastTransitionTime` unless a condition's status flips, and
//! [`transition_event`] tells whether the change is worth an Event.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use weir_crds::status::{self as kstatus, reason};

/// What a reconcile concluded about an object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Summary {
    /// Ready status.
    pub ready: bool,
    /// CamelCase reason shared by the three conditions.
    pub reason: &'static str,
    /// Human-readable detail.
    pub message: String,
    /// The operator is still working towards the spec.
    pub reconciling: bool,
    /// The operator cannot progress until the object (or another object) changes.
    pub stalled: bool,
}

impl Summary {
    /// Ready, nothing left to do.
    pub fn ready(reason: &'static str, message: impl Into<String>) -> Self {
        Self { ready: true, reason, message: message.into(), reconciling: false, stalled: false }
    }

    /// Not ready yet; the operator is making progress.
    pub fn progressing(reason: &'static str, message: impl Into<String>) -> Self {
        Self { ready: false, reason, message: message.into(), reconciling: true, stalled: false }
    }

    /// Not ready and stuck until something changes.
    pub fn stalled(reason: &'static str, message: impl Into<String>) -> Self {
        Self { ready: false, reason, message: message.into(), reconciling: false, stalled: true }
    }
}

/// Sets Ready, Reconciling and Stalled from `summary`. Returns whether any condition changed.
pub fn apply_summary(conditions: &mut Vec<Condition>, summary: &Summary, generation: Option<i64>, now: &Time) -> bool {
    let mut changed = false;
    for (type_, status) in [
        (kstatus::READY, summary.ready),
        (kstatus::RECONCILING, summary.reconciling),
        (kstatus::STALLED, summary.stalled),
    ] {
        let c = kstatus::condition(type_, status, summary.reason, summary.message.clone(), generation, now.clone());
        changed |= kstatus::set_condition(conditions, c);
    }
    changed
}

/// Reasons that deserve a Warning event (a human should look).
pub fn is_warning(reason: &str) -> bool {
    [
        reason::RESOURCE_CONFLICT,
        reason::INVALID_SPEC,
        reason::BROKER_UNAVAILABLE,
        reason::CLEANUP_BLOCKED,
        reason::TOPIC_NOT_FOUND,
        reason::RESET_BLOCKED,
    ]
    .contains(&reason)
}

/// An Event the apply step publishes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedEvent {
    /// Warning (else Normal).
    pub warning: bool,
    /// CamelCase reason.
    pub reason: String,
    /// What the operator did or saw, e.g. `Reconcile`, `Reassign`, `OffsetReset`.
    pub action: String,
    /// Human-readable note.
    pub note: String,
}

/// An Event when the Ready condition changes status or reason (not on message-only changes, so
/// progress messages do not flood the event stream).
pub fn transition_event(previous: &[Condition], summary: &Summary) -> Option<PlannedEvent> {
    let before = kstatus::find_condition(previous, kstatus::READY);
    let same = before.is_some_and(|c| c.reason == summary.reason && (c.status == kstatus::TRUE) == summary.ready);
    (!same).then(|| PlannedEvent {
        warning: is_warning(summary.reason),
        reason: summary.reason.to_owned(),
        action: "Reconcile".to_owned(),
        note: summary.message.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::jiff::Timestamp;

    fn at(s: i64) -> Time {
        Time(Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_a_status_flips() {
        let mut conditions = Vec::new();
        let provisioning = Summary::progressing(reason::PROVISIONING, "0/3 pods ready");
        assert!(apply_summary(&mut conditions, &provisioning, Some(1), &at(10)));
        assert_eq!(conditions.len(), 3);
        let still = Summary::progressing(reason::PROVISIONING, "2/3 pods ready");
        assert!(apply_summary(&mut conditions, &still, Some(1), &at(20)));
        assert!(conditions.iter().all(|c| c.last_transition_time == at(10)));
        assert!(!apply_summary(&mut conditions, &still, Some(1), &at(30)));
        let serving = Summary::ready(reason::SERVING, "8/8 partitions serving");
        assert!(apply_summary(&mut conditions, &serving, Some(1), &at(40)));
        let ready = kstatus::find_condition(&conditions, kstatus::READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.last_transition_time.clone()), ("True", at(40)));
        let stalled = kstatus::find_condition(&conditions, kstatus::STALLED).unwrap();
        assert_eq!(stalled.last_transition_time, at(10), "Stalled stayed False");
    }

    #[test]
    fn events_only_on_status_or_reason_changes() {
        let mut conditions = Vec::new();
        let s = Summary::progressing(reason::PROVISIONING, "0/3");
        assert!(transition_event(&conditions, &s).is_some());
        apply_summary(&mut conditions, &s, None, &at(1));
        assert!(transition_event(&conditions, &Summary::progressing(reason::PROVISIONING, "1/3")).is_none());
        let e = transition_event(&conditions, &Summary::stalled(reason::INVALID_SPEC, "bad")).unwrap();
        assert!(e.warning);
    }
}
