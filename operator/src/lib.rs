//! `weir-operator`: reconciles `Topic` and `ConsumerGroup` resources into broker StatefulSets.
//!
//! Every reconcile runs the same three steps, so that everything that decides is a plain function:
//!
//! ```text
//!   observe (async, reads)  ──►  plan (pure)  ──►  apply (async, writes)
//!   reconcile/observe.rs        plan/topic.rs      reconcile/apply.rs
//!   Topic, peers, StatefulSet   plan/group.rs      SSA children, broker ops,
//!   Pods, PVCs, broker admin    assignment.rs      SSA /status, Events
//!                               build/*
//! ```
//!
//! * [`assignment`]: the sticky partition -> pod planner.
//! * [`build`]: the StatefulSet, Services and PodDisruptionBudget of a Topic.
//! * [`plan`]: desired children, broker operations, next status and requeue hint of one object.
//! * [`status`]: kstatus condition sets shared by both kinds.
//! * [`reconcile`]: observe and apply around the plans, the finalizer and cleanup.
//! * [`controller`]: the kube-rs Controllers and their shared [`controller::Context`].
//! * [`broker_admin`]: the broker admin API behind a trait, with a gRPC client and a fake.
//! * [`leader`], [`metrics`], [`web`], [`telemetry`]: the process around the controllers.
//! * [`rbac`]: the Kubernetes permissions of the operator and of the brokers, as data.
//! * [`clock`], [`config`], [`error`]: time as an input, the command-line settings, the error type.

pub mod assignment;
pub mod broker_admin;
pub mod build;
pub mod clock;
pub mod config;
pub mod controller;
pub mod error;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod rbac;
pub mod reconcile;
pub mod status;
pub mod telemetry;
pub mod web;

pub use error::{Error, Result};

/// Field manager of every server-side apply, and the value of `app.kubernetes.io/managed-by`.
pub const FIELD_MANAGER: &str = "weir-operator";
/// The operator's own version: the default broker image tag.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
