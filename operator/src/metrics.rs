//! The operator's Prometheus metrics, in a registry of their own (no global state):
//!
//! * `weir_operator_reconciles_total{kind, result}`: reconciles by kind (`Topic`,
//!   `ConsumerGroup`) and result (`success`, `error`).
//! * `weir_operator_reconcile_duration_seconds{kind}`: how long reconciles take.
//! * `weir_operator_reconcile_errors_total{kind, reason}`: failures by [`crate::Error::metric_label`].
//! * `weir_operator_leader`: 1 while this replica holds the leader lease (or runs without
//!   leader election).
//! * `weir_operator_resource_ready{kind, namespace, name}`: 1 while a Topic's or ConsumerGroup's
//!   Ready condition is True, 0 otherwise; removed when the object is deleted. One series per
//!   object, so its cardinality is the number of objects.

use std::time::Instant;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::Error;

/// The metrics and their registry.
pub struct Metrics {
    registry: Registry,
    reconciles: IntCounterVec,
    duration: HistogramVec,
    errors: IntCounterVec,
    ready: IntGaugeVec,
    /// 1 while leading.
    pub leader: IntGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers the metrics.
    pub fn new() -> Self {
        let registry = Registry::new();
        let reconciles = IntCounterVec::new(
            Opts::new("weir_operator_reconciles_total", "Reconciles by kind and result"),
            &["kind", "result"],
        )
        .expect("valid metric definition");
        let duration = HistogramVec::new(
            HistogramOpts::new("weir_operator_reconcile_duration_seconds", "Duration of reconciles")
                .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
            &["kind"],
        )
        .expect("valid metric definition");
        let errors = IntCounterVec::new(
            Opts::new("weir_operator_reconcile_errors_total", "Failed reconciles by kind and reason"),
            &["kind", "reason"],
        )
        .expect("valid metric definition");
        let leader = IntGauge::new("weir_operator_leader", "1 while this replica runs the controllers")
            .expect("valid metric definition");
        let ready = IntGaugeVec::new(
            Opts::new("weir_operator_resource_ready", "1 while the object's Ready condition is True"),
            &["kind", "namespace", "name"],
        )
        .expect("valid metric definition");
        for collector in [
            Box::new(reconciles.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(duration.clone()),
            Box::new(errors.clone()),
            Box::new(ready.clone()),
            Box::new(leader.clone()),
        ] {
            registry.register(collector).expect("metric names are unique");
        }
        Self { registry, reconciles, duration, errors, ready, leader }
    }

    /// Records whether `kind` `namespace/name` is Ready.
    pub fn set_ready(&self, kind: &str, namespace: &str, name: &str, ready: bool) {
        self.ready.with_label_values(&[kind, namespace, name]).set(i64::from(ready));
    }

    /// Drops the readiness series of a deleted object.
    pub fn forget(&self, kind: &str, namespace: &str, name: &str) {
        // Absent already is fine: the object may never have been reconciled by this replica.
        let _ = self.ready.remove_label_values(&[kind, namespace, name]);
    }

    /// Starts timing a reconcile of `kind`; call [`ReconcileTimer::finish`] with its result.
    pub fn start(&self, kind: &'static str) -> ReconcileTimer<'_> {
        ReconcileTimer { metrics: self, kind, started: Instant::now() }
    }

    /// Counts an error of `kind` (also used by the controllers' error policy).
    pub fn count_error(&self, kind: &str, error: &Error) {
        self.errors.with_label_values(&[kind, error.metric_label()]).inc();
    }

    /// Reconciles of `kind` with `result` so far.
    pub fn reconciles(&self, kind: &str, result: &str) -> u64 {
        self.reconciles.with_label_values(&[kind, result]).get()
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        TextEncoder::new().encode_to_string(&self.registry.gather()).unwrap_or_default()
    }
}

/// Times one reconcile.
pub struct ReconcileTimer<'a> {
    metrics: &'a Metrics,
    kind: &'static str,
    started: Instant,
}

impl ReconcileTimer<'_> {
    /// Records the reconcile's duration and result.
    pub fn finish<T>(self, result: &Result<T, Error>) {
        let m = self.metrics;
        m.duration.with_label_values(&[self.kind]).observe(self.started.elapsed().as_secs_f64());
        let outcome = if result.is_ok() { "success" } else { "error" };
        m.reconciles.with_label_values(&[self.kind, outcome]).inc();
        if let Err(e) = result {
            m.count_error(self.kind, e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconciles_are_counted_and_rendered() {
        let m = Metrics::new();
        m.start("Topic").finish::<()>(&Ok(()));
        m.start("Topic").finish::<()>(&Err(Error::CleanupBlocked("x".into())));
        assert_eq!(m.reconciles("Topic", "success"), 1);
        let text = m.render();
        assert!(
            text.contains(r#"weir_operator_reconcile_errors_total{kind="Topic",reason="cleanup_blocked"} 1"#),
            "{text}"
        );
        assert!(text.contains("weir_operator_reconcile_duration_seconds_bucket"));
    }

    #[test]
    fn readiness_is_one_series_per_object_until_deleted() {
        let m = Metrics::new();
        m.set_ready("Topic", "shop", "orders", false);
        m.set_ready("Topic", "shop", "orders", true);
        let text = m.render();
        assert!(
            text.contains(r#"weir_operator_resource_ready{kind="Topic",name="orders",namespace="shop"} 1"#),
            "{text}"
        );
        m.forget("Topic", "shop", "orders");
        assert!(!m.render().contains("orders"));
    }
}
