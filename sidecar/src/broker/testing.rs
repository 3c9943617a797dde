//! A broker for the broker's own unit tests.

use crate::catalog::{CatalogOptions, TopicConfig};
use crate::storage::{StoreConfig, StoreMetrics};

use super::*;

/// A broker on a fresh store in `dir`, with topics `t` (two partitions) and `u` (one).
pub(super) fn broker(dir: &std::path::Path) -> (Broker, Arc<Consumers>) {
    let state = Arc::new(BrokerState {
        consumers: Arc::default(),
        timer: Arc::new(Timer::open(&dir.join("timer")).unwrap()),
        transactions: Arc::default(),
    });
    let store_config = StoreConfig::new(dir.join("store"));
    let (store, _) = Store::open(store_config, state.clone(), StoreMetrics::default(), Box::new(|_| {})).unwrap();
    let catalog = Catalog::open(store.clone(), dir, CatalogOptions::default()).unwrap();
    for (name, partitions) in [("t", 2), ("u", 1)] {
        catalog.put_topic(TopicConfig::new(name, partitions, vec![MessageType::Normal], Durability::Async)).unwrap();
    }
    let consumers = state.consumers.clone();
    let clients = Clients::new(Duration::from_secs(60));
    (Broker::new(BrokerConfig::default(), store, catalog, state, clients, Metrics::new()), consumers)
}
