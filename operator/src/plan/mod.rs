//! Pure plans: from an object and what was observed around it, decide the desired children,
//! the broker operations, the next status and when to look again. No I/O here; the reconcile
//! modules feed these functions and carry out their answers.

pub mod group;
pub mod topic;

use std::time::Duration;

pub use group::{GroupPlan, ObservedGroup, plan_group};
pub use topic::{ObservedTopic, TopicPlan, plan_topic};

/// How soon to reconcile again while work is in flight (pods starting, partitions draining).
pub const PROGRESS_REQUEUE: Duration = Duration::from_secs(10);
/// How soon to reconcile again when a broker did not answer.
pub const BROKER_RETRY_REQUEUE: Duration = Duration::from_secs(15);
/// Fallback resync period when a spec's interval cannot be read.
pub const DEFAULT_RESYNC: Duration = Duration::from_secs(300);

/// When the controller should reconcile the object again without a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Requeue {
    /// After this long.
    After(Duration),
    /// Only when the object (or an owned object) changes: a permanent problem a human must fix.
    AwaitChange,
}

/// Who wins a name clash: the oldest object (by creation time, then name). Returns the names of
/// `candidates` (name, creation time in seconds) in the order they hold the name.
pub(crate) fn oldest_first<'a>(candidates: impl IntoIterator<Item = (&'a str, Option<i64>)>) -> Vec<&'a str> {
    let mut all: Vec<(Option<i64>, &str)> = candidates.into_iter().map(|(n, t)| (t, n)).collect();
    // An object without a creation time has not been stored yet: it is the youngest.
    all.sort_by(|a, b| a.0.unwrap_or(i64::MAX).cmp(&b.0.unwrap_or(i64::MAX)).then(a.1.cmp(b.1)));
    all.into_iter().map(|(_, n)| n).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_holds_the_name_then_the_smallest_name() {
        assert_eq!(oldest_first([("b", Some(5)), ("a", Some(9)), ("c", None), ("d", Some(5))]), ["b", "d", "a", "c"]);
    }
}
