//! The kube-rs Controllers: one for Topics (owning StatefulSets, Services and PDBs) and one for
//! ConsumerGroups (also woken when a subscribed Topic changes), per watched namespace or for the
//! whole cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures::future::{BoxFuture, Shared, join_all};
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::StatefulSet;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{debug, warn};
use weir_crds::{ConsumerGroup, Topic};

use crate::Error;
use crate::build::labels;
use crate::reconcile::{Context, reconcile_group, reconcile_topic};

/// Which namespaces to watch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace.
    All,
    /// Only these.
    Namespaces(Vec<String>),
}

impl Scope {
    fn apis<K>(&self, client: &Client) -> Vec<Api<K>>
    where
        K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
    {
        match self {
            Scope::All => vec![Api::all(client.clone())],
            Scope::Namespaces(list) => list.iter().map(|ns| Api::namespaced(client.clone(), ns)).collect(),
        }
    }
}

/// Readiness of the process, shared with `/readyz`.
#[derive(Debug, Default)]
pub struct Health {
    caches_synced: AtomicBool,
    leading: AtomicBool,
}

impl Health {
    /// Ready: this replica runs the controllers (it leads, or leader election is off) and their
    /// caches have synced.
    pub fn ready(&self) -> bool {
        self.leading.load(Ordering::Relaxed) && self.caches_synced.load(Ordering::Relaxed)
    }

    /// Records whether this replica runs the controllers.
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::Relaxed);
    }

    /// Records that every controller's cache has synced.
    pub fn set_synced(&self, synced: bool) {
        self.caches_synced.store(synced, Ordering::Relaxed);
    }
}

/// A future that completes when the process should stop; cheap to clone.
pub type Shutdown = Shared<BoxFuture<'static, ()>>;

fn owned_config() -> watcher::Config {
    watcher::Config::default().labels(&labels::managed_selector_string()).any_semantic()
}

fn key<K: Resource>(obj: &K) -> String {
    format!("{}/{}/{}", std::any::type_name::<K>(), obj.namespace().unwrap_or_default(), obj.name_any())
}

/// Requeues a failed object after a growing pause and counts the failure.
fn error_policy<K: Resource>(kind: &'static str) -> impl Fn(Arc<K>, &Error, Arc<Context>) -> Action {
    move |obj, error, ctx| {
        let wait = ctx.backoffs.next(&key(obj.as_ref()));
        warn!(kind, name = %obj.name_any(), error = %error, retry_in = ?wait, "reconcile failed");
        Action::requeue(wait)
    }
}

async fn topic_reconciler(topic: Arc<Topic>, ctx: Arc<Context>) -> Result<Action, Error> {
    let timer = ctx.metrics.start("Topic");
    let k = key(topic.as_ref());
    let result = reconcile_topic(topic, ctx.clone()).await;
    timer.finish(&result);
    if result.is_ok() {
        ctx.backoffs.reset(&k);
    }
    result
}

async fn group_reconciler(group: Arc<ConsumerGroup>, ctx: Arc<Context>) -> Result<Action, Error> {
    let timer = ctx.metrics.start("ConsumerGroup");
    let k = key(group.as_ref());
    let result = reconcile_group(group, ctx.clone()).await;
    timer.finish(&result);
    if result.is_ok() {
        ctx.backoffs.reset(&k);
    }
    result
}

/// Runs every controller of `scope` until `shutdown` completes. `health` turns ready once all
/// caches have synced.
pub async fn run(ctx: Arc<Context>, scope: Scope, health: Arc<Health>, shutdown: Shutdown) {
    let client = ctx.client.clone();
    let mut tasks: Vec<BoxFuture<'static, ()>> = Vec::new();
    let mut stores_ready: Vec<BoxFuture<'static, ()>> = Vec::new();

    for topics in scope.apis::<Topic>(&client) {
        let namespace = topics.namespace().map(str::to_owned);
        let owned = |c: &Client| -> (Api<StatefulSet>, Api<Service>, Api<PodDisruptionBudget>) {
            match &namespace {
                Some(ns) => {
                    (Api::namespaced(c.clone(), ns), Api::namespaced(c.clone(), ns), Api::namespaced(c.clone(), ns))
                }
                None => (Api::all(c.clone()), Api::all(c.clone()), Api::all(c.clone())),
            }
        };
        let (sets, services, pdbs) = owned(&client);
        let controller = Controller::new(topics, watcher::Config::default().any_semantic())
            .owns(sets, owned_config())
            .owns(services, owned_config())
            .owns(pdbs, owned_config())
            .graceful_shutdown_on(shutdown.clone());
        let store = controller.store();
        stores_ready.push(async move { store.wait_until_ready().await.unwrap_or_default() }.boxed());
        let ctx = ctx.clone();
        tasks.push(
            controller
                .run(topic_reconciler, error_policy::<Topic>("Topic"), ctx)
                .for_each(|result| async move {
                    match result {
                        Ok((object, _)) => debug!(topic = %object.name, "reconciled"),
                        Err(e) => debug!(error = %e, "topic controller event"),
                    }
                })
                .boxed(),
        );
    }

    for groups in scope.apis::<ConsumerGroup>(&client) {
        let topics: Api<Topic> = match groups.namespace() {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        let controller = Controller::new(groups, watcher::Config::default().any_semantic());
        let store = controller.store();
        let groups_of_topic = store.clone();
        // A Topic change (created, deleted, newly Ready, reassigned) matters to the groups that
        // subscribe to it.
        let controller = controller
            .watches(topics, watcher::Config::default().any_semantic(), move |topic: Topic| {
                let namespace = topic.namespace();
                let name = topic.name_any();
                groups_of_topic
                    .state()
                    .into_iter()
                    .filter(|g| g.namespace() == namespace)
                    .filter(|g| g.spec.subscriptions.iter().any(|s| s.topic_ref.name == name))
                    .map(|g| ObjectRef::from_obj(g.as_ref()))
                    .collect::<Vec<_>>()
            })
            .graceful_shutdown_on(shutdown.clone());
        stores_ready.push(async move { store.wait_until_ready().await.unwrap_or_default() }.boxed());
        let ctx = ctx.clone();
        tasks.push(
            controller
                .run(group_reconciler, error_policy::<ConsumerGroup>("ConsumerGroup"), ctx)
                .for_each(|result| async move {
                    match result {
                        Ok((object, _)) => debug!(group = %object.name, "reconciled"),
                        Err(e) => debug!(error = %e, "consumer group controller event"),
                    }
                })
                .boxed(),
        );
    }

    let synced = {
        let health = health.clone();
        async move {
            join_all(stores_ready).await;
            health.set_synced(true);
        }
    };
    tokio::select! {
        _ = join_all(tasks) => {}
        _ = async { synced.await; std::future::pending::<()>().await } => {}
    }
    health.set_synced(false);
}
