//! Spec pieces shared by Topic and ConsumerGroup: RocketMQ naming rules and the deletion policy.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The API group of both kinds.
pub const GROUP: &str = "weir.dev";
/// The served and stored version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` of both kinds.
pub const API_VERSION: &str = "weir.dev/v1alpha1";
/// The finalizer the operator puts on both kinds; cleanup honours `spec.deletionPolicy`.
pub const FINALIZER: &str = "weir.dev/cleanup";
/// Annotation that lets cleanup finish without broker cooperation (value `"true"`).
pub const FORCE_DELETE_ANNOTATION: &str = "weir.dev/force-delete";

/// Allowed characters and length of a RocketMQ topic name (RocketMQ `TopicValidator`).
pub const TOPIC_NAME_PATTERN: &str = "^[%a-zA-Z0-9_-]{1,127}$";
/// Longest topic name.
pub const TOPIC_NAME_MAX_LEN: usize = 127;
/// Allowed characters and length of a RocketMQ consumer group name. 120, not 127, because the
/// broker derives `%RETRY%{group}` and `%DLQ%{group}` topic names from it.
pub const GROUP_NAME_PATTERN: &str = "^[%a-zA-Z0-9_-]{1,120}$";
/// Longest consumer group name.
pub const GROUP_NAME_MAX_LEN: usize = 120;
/// Name prefixes RocketMQ reserves for retry topics, dead-letter topics and system topics.
pub const RESERVED_NAME_PREFIXES: [&str; 3] = ["%RETRY%", "%DLQ%", "rmq_sys_"];

/// CEL expression (on a name field) rejecting [`RESERVED_NAME_PREFIXES`].
pub(crate) const CEL_NOT_RESERVED: &str =
    "!self.startsWith('%RETRY%') && !self.startsWith('%DLQ%') && !self.startsWith('rmq_sys_')";

/// Checks a RocketMQ topic or group name; `None` if it is fine, else what is wrong.
///
/// `what` names the field in the message (e.g. `spec.topicName`), `max_len` is
/// [`TOPIC_NAME_MAX_LEN`] or [`GROUP_NAME_MAX_LEN`].
pub fn check_rocketmq_name(what: &str, name: &str, max_len: usize) -> Option<String> {
    if name.is_empty() {
        return Some(format!("{what}: must not be empty"));
    }
    if name.len() > max_len {
        return Some(format!("{what} {name:?}: is {} characters long; at most {max_len} are allowed", name.len()));
    }
    if let Some(bad) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '%' | '_' | '-'))) {
        return Some(format!(
            "{what} {name:?}: character {bad:?} is not allowed; use letters, digits, '-', '_' or '%'"
        ));
    }
    if let Some(prefix) = RESERVED_NAME_PREFIXES.iter().find(|prefix| name.starts_with(**prefix)) {
        return Some(format!(
            "{what} {name:?}: the prefix {prefix:?} is reserved for RocketMQ retry, dead-letter and system topics"
        ));
    }
    None
}

/// Checks that `name` is a valid `metadata.name` (a DNS-1123 subdomain: lower-case letters,
/// digits, '-' and '.', starting and ending alphanumeric, at most 253 characters), as the API
/// server would. `None` if fine.
pub fn check_object_name(name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    (!ok).then(|| {
        format!(
            "metadata.name {name:?}: must be a Kubernetes object name (lower-case letters, digits, '-' \
             and '.', starting and ending with a letter or digit, at most 253 characters)"
        )
    })
}

/// What the operator does with broker-side data when the object is deleted.
#[derive(Serialize, Deserialize, JsonSchema, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeletionPolicy {
    /// Keep the data: the finalizer is removed without touching broker data or volumes.
    Retain,
    /// Delete the data on the brokers (and, for a Topic, its volumes) before the object goes away.
    Delete,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(check_rocketmq_name("n", "orders_v2-%x", 127), None);
        assert!(check_rocketmq_name("n", "", 127).unwrap().contains("empty"));
        assert!(check_rocketmq_name("n", "a.b", 127).unwrap().contains("'.' is not allowed"));
        assert!(check_rocketmq_name("n", &"a".repeat(121), 120).unwrap().contains("at most 120"));
        assert!(check_rocketmq_name("n", "%DLQ%x", 127).unwrap().contains("reserved"));
        assert_eq!(check_object_name("orders-v1.eu"), None);
        for bad in ["", "Orders", "a_b", "-a", "a-", &"a".repeat(254)] {
            assert!(check_object_name(bad).is_some(), "{bad}");
        }
    }
}
