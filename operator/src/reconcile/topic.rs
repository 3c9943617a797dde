//! Reconcile of one Topic: finalizer, then observe -> [`plan_topic`] -> apply; and its cleanup.
//!
//! Apply order: the brokers' ServiceAccount and RoleBinding, headless Service, client Service, PDB, then the StatefulSet (its pods should find
//! their Services), PVC resizes, and last the status, so a status never announces an assignment
//! whose StatefulSet could not be written.

use std::sync::Arc;

use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PropagationPolicy};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::{Api, Resource, ResourceExt};
use tracing::{info, instrument, warn};
use weir_crds::status::{READY, is_condition_true};
use weir_crds::{DeletionPolicy, FINALIZER, Topic, naming};

use super::apply::{apply_child, apply_status};
use super::observe::{LiveChildren, live_children, observe_topic};
use super::{Context, action};
use crate::build::labels;
use crate::plan::plan_topic;
use crate::plan::topic::{TopicChildren, TopicPlan};
use crate::status::PlannedEvent;
use crate::{Error, Result};

/// Reconciles one Topic (the controller's entry point; tests call it directly).
#[instrument(skip_all, fields(topic = %topic.name_any(), namespace = topic.namespace().unwrap_or_default()))]
pub async fn reconcile_topic(topic: Arc<Topic>, ctx: Arc<Context>) -> Result<Action> {
    let namespace = topic.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &namespace);
    finalizer(&api, FINALIZER, topic, |event| async {
        match event {
            FinalizerEvent::Apply(topic) => apply_topic(&topic, &ctx).await,
            FinalizerEvent::Cleanup(topic) => cleanup_topic(&topic, &ctx).await,
        }
    })
    .await
    .map_err(Error::from)
}

/// Observe, plan, apply.
async fn apply_topic(topic: &Topic, ctx: &Context) -> Result<Action> {
    let name = topic.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let namespace = topic.metadata.namespace.clone().ok_or(Error::MissingMetadata("namespace"))?;
    let live = live_children(&ctx.client, &namespace, &name).await?;
    let observed = observe_topic(ctx, topic, &live).await?;
    let now = ctx.clock.now();
    let plan = plan_topic(topic, &observed, &ctx.config, &now).map_err(|e| match e {
        crate::build::BuildError::MissingMetadata(what) => Error::MissingMetadata(what),
    })?;
    execute(topic, ctx, &plan, &live).await?;
    Ok(action(plan.requeue))
}

async fn execute(topic: &Topic, ctx: &Context, plan: &TopicPlan, live: &LiveChildren) -> Result<()> {
    if let Some(children) = &plan.children {
        apply_children(ctx, children, live).await?;
    }
    let namespace = topic.namespace().unwrap_or_default();
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    for resize in &plan.pvc_resizes {
        let patch = serde_json::json!({"spec": {"resources": {"requests": {"storage": resize.size}}}});
        pvcs.patch(&resize.name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(Error::kube(format!("resize PVC {namespace}/{}", resize.name)))?;
        info!(pvc = %resize.name, size = %resize.size.0, "requested volume expansion");
    }
    if plan.status_changed {
        let api: Api<Topic> = Api::namespaced(ctx.client.clone(), &namespace);
        apply_status(&api, &topic.name_any(), &plan.status).await?;
    }
    let ready = is_condition_true(&plan.status.conditions, READY);
    ctx.metrics.set_ready("Topic", &namespace, &topic.name_any(), ready);
    publish(ctx, topic, &plan.events).await;
    Ok(())
}

async fn apply_children(ctx: &Context, children: &TopicChildren, live: &LiveChildren) -> Result<()> {
    let client = &ctx.client;
    apply_child(client, &children.service_account, live.service_account.as_ref()).await?;
    apply_child(client, &children.role_binding, live.role_binding.as_ref()).await?;
    apply_child(client, &children.headless_service, live.headless_service.as_ref()).await?;
    apply_child(client, &children.client_service, live.client_service.as_ref()).await?;
    apply_child(client, &children.pdb, live.pdb.as_ref()).await?;
    apply_child(client, &children.stateful_set, live.stateful_set.as_ref()).await?;
    Ok(())
}

/// Publishes events; a failure is logged, not fatal (events are best effort).
pub(super) async fn publish<K: Resource<DynamicType = ()>>(ctx: &Context, object: &K, events: &[PlannedEvent]) {
    use kube::runtime::events::{Event, EventType};
    let reference = object.object_ref(&());
    for e in events {
        let event = Event {
            type_: if e.warning { EventType::Warning } else { EventType::Normal },
            reason: e.reason.clone(),
            note: Some(e.note.clone()),
            action: e.action.clone(),
            secondary: None,
        };
        if let Err(err) = ctx.recorder.publish(&event, &reference).await {
            warn!(reason = %e.reason, error = %err, "could not publish event");
        }
    }
}

/// Cleanup honours `deletionPolicy`: Retain leaves the volumes (the StatefulSet goes with the
/// Topic through its owner reference); Delete also deletes the StatefulSet and every PVC
/// labelled with the Topic. The Topic's data lives only on its own volumes, so no broker has to
/// cooperate and cleanup cannot be blocked by one.
async fn cleanup_topic(topic: &Topic, ctx: &Context) -> Result<Action> {
    let name = topic.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let namespace = topic.metadata.namespace.clone().ok_or(Error::MissingMetadata("namespace"))?;
    ctx.metrics.forget("Topic", &namespace, &name);
    if topic.spec.deletion_policy == DeletionPolicy::Retain {
        info!("deletionPolicy Retain: volumes are kept");
        return Ok(Action::await_change());
    }
    // A younger name twin never had children of its own; its labels select nothing either.
    let sets: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &namespace);
    let set = naming::broker_set(&name);
    let background =
        DeleteParams { propagation_policy: Some(PropagationPolicy::Background), ..DeleteParams::default() };
    if sets.get_opt(&set).await.map_err(Error::kube(format!("get StatefulSet {namespace}/{set}")))?.is_some() {
        sets.delete(&set, &background).await.map_err(Error::kube(format!("delete StatefulSet {namespace}/{set}")))?;
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), &namespace);
    let selector = ListParams::default().labels(&labels::topic_selector_string(&name));
    let claims = pvcs.list(&selector).await.map_err(Error::kube(format!("list PVCs of Topic {namespace}/{name}")))?;
    for claim in claims.items.iter().filter(|c| c.metadata.deletion_timestamp.is_none()) {
        let claim_name = claim.name_any();
        match pvcs.delete(&claim_name, &DeleteParams::default()).await {
            Ok(_) => info!(pvc = %claim_name, "deleted volume (deletionPolicy Delete)"),
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(Error::kube(format!("delete PVC {namespace}/{claim_name}"))(e)),
        }
    }
    let note = format!("deleted StatefulSet {set} and {} volumes (deletionPolicy Delete)", claims.items.len());
    let event = PlannedEvent { warning: false, reason: "Deleted".to_owned(), action: "Cleanup".to_owned(), note };
    publish(ctx, topic, &[event]).await;
    Ok(Action::await_change())
}
