//! `weir-operator`: reconciles `Topic` and `ConsumerGroup` resources into broker StatefulSets.
