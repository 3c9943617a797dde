//! Reconcile of one ConsumerGroup: finalizer, then observe -> [`plan_group`] -> offset reset
//! calls -> status; and its cleanup (`DeleteGroup` on the brokers for deletionPolicy Delete).

use std::sync::Arc;

use futures::future::join_all;
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, ResourceExt};
use tracing::{info, instrument, warn};
use weir_crds::status::{READY, is_condition_true, reason};
use weir_crds::{ConsumerGroup, DeletionPolicy, FINALIZER, FORCE_DELETE_ANNOTATION};

use super::apply::apply_status;
use super::observe::{broker_call, namespace_terminating, observe_group};
use super::topic::publish;
use super::{Context, action};
use crate::plan::group::{GroupPlan, cleanup_pods, record_offset_reset};
use crate::plan::plan_group;
use crate::status::{PlannedEvent, Summary, apply_summary};
use crate::{Error, Result};

/// Reconciles one ConsumerGroup (the controller's entry point; tests call it directly).
#[instrument(skip_all, fields(group = %group.name_any(), namespace = group.namespace().unwrap_or_default()))]
pub async fn reconcile_group(group: Arc<ConsumerGroup>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = group.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<ConsumerGroup> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, group, |event| async {
        match event {
            FinalizerEvent::Apply(group) => apply_group(&group, &ctx, &api).await,
            FinalizerEvent::Cleanup(group) => cleanup_group(&group, &ctx, &api).await,
        }
    })
    .await
    .map_err(Error::from)
}

async fn apply_group(group: &ConsumerGroup, ctx: &Context, api: &Api<ConsumerGroup>) -> Result<Action> {
    let observed = observe_group(ctx, group, true).await?;
    let now = ctx.clock.now();
    let GroupPlan { resets, mut status, mut events, requeue } = plan_group(group, &observed, &now);

    if let Some(reset) = group.spec.offset_reset.as_ref().filter(|_| !resets.is_empty()) {
        let calls = resets.iter().map(|op| async move {
            broker_call(ctx.admin.reset_offset(&op.pod, &op.group, &op.topic, op.target), &op.pod).await
        });
        let failures: Vec<String> =
            join_all(calls).await.into_iter().filter_map(|r| r.err().map(|e| e.to_string())).collect();
        record_offset_reset(&mut status, reset, &failures, &ctx.clock.now());
        events.push(PlannedEvent {
            warning: !failures.is_empty(),
            reason: if failures.is_empty() { "OffsetResetSucceeded" } else { "OffsetResetFailed" }.to_owned(),
            action: "OffsetReset".to_owned(),
            note: if failures.is_empty() {
                format!("offsets reset on {} broker pods (request {})", resets.len(), reset.request_id)
            } else {
                format!("offset reset {} failed on: {}", reset.request_id, failures.join("; "))
            },
        });
    }
    if group.status.as_ref() != Some(&status) {
        apply_status(api, &group.name_any(), &status).await?;
    }
    let ready = is_condition_true(&status.conditions, READY);
    ctx.metrics.set_ready("ConsumerGroup", &group.namespace().unwrap_or_default(), &group.name_any(), ready);
    publish(ctx, group, &events).await;
    Ok(action(requeue))
}

/// Cleanup honours `deletionPolicy`. Delete calls `DeleteGroup` on every pod of every subscribed
/// Topic whose StatefulSet exists. It finishes without the brokers when the namespace is being
/// deleted (no calls) or the force-delete annotation is "true" (calls, failures ignored); otherwise
/// a failing broker keeps the finalizer, with Stalled/CleanupBlocked in the status.
async fn cleanup_group(group: &ConsumerGroup, ctx: &Context, api: &Api<ConsumerGroup>) -> Result<Action> {
    ctx.metrics.forget("ConsumerGroup", &group.namespace().unwrap_or_default(), &group.name_any());
    if group.spec.deletion_policy == DeletionPolicy::Retain {
        info!("deletionPolicy Retain: broker state of the group is kept");
        return Ok(Action::await_change());
    }
    let namespace = group.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    if namespace_terminating(&ctx.client, &namespace).await? {
        info!("namespace is terminating: not asking brokers to forget the group");
        return Ok(Action::await_change());
    }
    let force = group.annotations().get(FORCE_DELETE_ANNOTATION).is_some_and(|v| v == "true");
    let observed = observe_group(ctx, group, false).await?;
    let pods = cleanup_pods(group, &observed);
    let name = group.effective_name().unwrap_or_default().to_owned();
    let calls = pods.iter().map(|pod| broker_call(ctx.admin.delete_group(pod, &name), pod));
    let failures: Vec<String> =
        join_all(calls).await.into_iter().filter_map(|r| r.err().map(|e| e.to_string())).collect();
    if failures.is_empty() || force {
        if !failures.is_empty() {
            warn!(?failures, "force-delete: ignoring brokers that did not forget the group");
        }
        return Ok(Action::await_change());
    }
    let message = format!(
        "deleting the group on the brokers failed ({}); it is retried, or set the annotation {FORCE_DELETE_ANNOTATION}: \"true\" to skip the brokers",
        failures.join("; ")
    );
    let summary = Summary::stalled(reason::CLEANUP_BLOCKED, message.clone());
    let mut status = group.status.clone().unwrap_or_default();
    if apply_summary(&mut status.conditions, &summary, group.metadata.generation, &ctx.clock.now()) {
        apply_status(api, &group.name_any(), &status).await?;
        let event = PlannedEvent {
            warning: true,
            reason: reason::CLEANUP_BLOCKED.to_owned(),
            action: "Cleanup".to_owned(),
            note: message.clone(),
        };
        publish(ctx, group, &[event]).await;
    }
    Err(Error::CleanupBlocked(message))
}
