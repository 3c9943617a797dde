//! Reconciles: observe -> plan -> apply for one object, wrapped in the finalizer helper.
//!
//! [`reconcile_topic`] and [`reconcile_group`] take everything they use from a [`Context`] (a
//! `kube::Client`, a `dyn BrokerAdmin`, a `dyn Clock`, the operator settings, an event recorder
//! and the metrics). There is no global state, so a test can build a context around a fake API
//! server and a fake broker and drive one reconcile at a time, or run the whole Controller.

pub mod apply;
pub mod group;
pub mod observe;
pub mod topic;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::Client;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};

pub use group::reconcile_group;
pub use topic::reconcile_topic;

use crate::broker_admin::BrokerAdmin;
use crate::clock::Clock;
use crate::config::OperatorConfig;
use crate::metrics::Metrics;
use crate::plan::Requeue;

/// Longest pause between retries of a failing object.
pub const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// First pause after a failure.
pub const FIRST_BACKOFF: Duration = Duration::from_secs(5);
/// How long one broker admin call may take before the pod counts as unreachable.
pub const BROKER_CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// What every reconcile needs.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// The brokers' admin API.
    pub admin: Arc<dyn BrokerAdmin>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Operator settings (cluster domain, broker image, broker ServiceAccount).
    pub config: OperatorConfig,
    /// Publishes Events.
    pub recorder: Recorder,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Consecutive failures per object, for the retry backoff.
    pub backoffs: Backoffs,
}

impl Context {
    /// A context whose events are reported by `weir-operator` (instance `identity`, e.g. the pod).
    pub fn new(
        client: Client,
        admin: Arc<dyn BrokerAdmin>,
        clock: Arc<dyn Clock>,
        config: OperatorConfig,
        metrics: Arc<Metrics>,
        identity: Option<String>,
    ) -> Self {
        let reporter = Reporter { controller: crate::FIELD_MANAGER.to_owned(), instance: identity };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            admin,
            clock,
            config,
            metrics,
            backoffs: Backoffs::default(),
        }
    }
}

/// Consecutive failures per object (the kube-rs controller leaves retry pacing to the caller).
#[derive(Debug, Default)]
pub struct Backoffs(Mutex<HashMap<String, u32>>);

impl Backoffs {
    /// Records a failure of `key` and returns how long to wait before the next try
    /// (5 s, 10 s, 20 s ... up to 5 min).
    pub fn next(&self, key: &str) -> Duration {
        let mut failures = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry(key.to_owned()).or_default();
        *n = n.saturating_add(1);
        FIRST_BACKOFF.saturating_mul(1u32 << (*n - 1).min(10)).min(MAX_BACKOFF)
    }

    /// Forgets the failures of `key` after a success.
    pub fn reset(&self, key: &str) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
    }
}

/// The controller action for a plan's requeue hint.
pub fn action(requeue: Requeue) -> Action {
    match requeue {
        Requeue::After(d) => Action::requeue(d),
        Requeue::AwaitChange => Action::await_change(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_resets() {
        let backoffs = Backoffs::default();
        let waits: Vec<u64> = (0..8).map(|_| backoffs.next("t").as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(backoffs.next("other").as_secs(), 5);
        backoffs.reset("t");
        assert_eq!(backoffs.next("t").as_secs(), 5);
    }
}
