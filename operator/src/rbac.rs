//! The Kubernetes permissions of the operator and of the brokers, in one place, as data.
//!
//! The Helm chart's ClusterRoles are generated from (or checked against) these tables:
//! `weir-operator rbac` prints them as YAML. [`OPERATOR_CALLS`] lists every API call the operator
//! makes and where; a unit test checks that each is allowed by [`OPERATOR_RULES`] and that no rule
//! is unused, so the two cannot drift apart silently.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role};

use crate::config::DEFAULT_BROKER_CLUSTER_ROLE;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

/// One RBAC rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rule {
    /// API group (`""` is the core group).
    pub api_group: &'static str,
    /// Resources (with `/subresource` where needed).
    pub resources: &'static [&'static str],
    /// Verbs.
    pub verbs: &'static [&'static str],
    /// Object names the rule is limited to (empty: every object).
    pub resource_names: &'static [&'static str],
}

/// One API call the operator makes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Call {
    /// Where in the code.
    pub site: &'static str,
    /// API group.
    pub api_group: &'static str,
    /// Resource.
    pub resource: &'static str,
    /// Verbs.
    pub verbs: &'static [&'static str],
}

const WATCH: &[&str] = &["get", "list", "watch"];

/// Cluster-wide (or per watched namespace) rules of the operator.
pub const OPERATOR_RULES: &[Rule] = &[
    Rule {
        api_group: "weir.dev",
        resources: &["topics"],
        verbs: &["get", "list", "watch", "patch"],
        resource_names: &[],
    },
    Rule {
        api_group: "weir.dev",
        resources: &["consumergroups"],
        verbs: &["list", "watch", "patch"],
        resource_names: &[],
    },
    Rule {
        api_group: "weir.dev",
        resources: &["topics/status", "consumergroups/status"],
        verbs: &["patch"],
        resource_names: &[],
    },
    Rule {
        api_group: "apps",
        resources: &["statefulsets"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
        resource_names: &[],
    },
    Rule {
        api_group: "",
        resources: &["services"],
        verbs: &["get", "list", "watch", "create", "patch"],
        resource_names: &[],
    },
    Rule {
        api_group: "policy",
        resources: &["poddisruptionbudgets"],
        verbs: &["get", "list", "watch", "create", "patch"],
        resource_names: &[],
    },
    Rule { api_group: "", resources: &["pods"], verbs: &["list"], resource_names: &[] },
    Rule {
        api_group: "",
        resources: &["persistentvolumeclaims"],
        verbs: &["list", "patch", "delete"],
        resource_names: &[],
    },
    Rule { api_group: "", resources: &["namespaces"], verbs: &["get"], resource_names: &[] },
    Rule { api_group: "events.k8s.io", resources: &["events"], verbs: &["create", "patch"], resource_names: &[] },
    Rule { api_group: "", resources: &["serviceaccounts"], verbs: &["get", "create", "patch"], resource_names: &[] },
    Rule {
        api_group: "rbac.authorization.k8s.io",
        resources: &["rolebindings"],
        verbs: &["get", "create", "patch"],
        resource_names: &[],
    },
    // Lets the operator bind the broker ClusterRole (and only it) without holding its rights.
    Rule {
        api_group: "rbac.authorization.k8s.io",
        resources: &["clusterroles"],
        verbs: &["bind"],
        resource_names: &[DEFAULT_BROKER_CLUSTER_ROLE],
    },
];

/// Rules of the operator in the namespace of its leader-election Lease only.
pub const OPERATOR_LEASE_RULES: &[Rule] = &[Rule {
    api_group: "coordination.k8s.io",
    resources: &["leases"],
    verbs: &["get", "create", "update"],
    resource_names: &[],
}];

/// Read-only rules of the broker pods' ServiceAccount: they learn their partitions, retention and
/// groups by watching Topics and ConsumerGroups of their namespace.
pub const BROKER_RULES: &[Rule] =
    &[Rule { api_group: "weir.dev", resources: &["topics", "consumergroups"], verbs: WATCH, resource_names: &[] }];

/// Every API call of the operator: which code makes it and what it needs. Server-side apply is
/// `patch`, plus `create` when the object does not exist yet.
pub const OPERATOR_CALLS: &[Call] = &[
    Call {
        site: "controller: watch Topics (and, for groups, their subscribed Topics)",
        api_group: "weir.dev",
        resource: "topics",
        verbs: &["list", "watch"],
    },
    Call {
        site: "controller: watch ConsumerGroups",
        api_group: "weir.dev",
        resource: "consumergroups",
        verbs: &["list", "watch"],
    },
    Call {
        site: "finalizer helper: add/remove weir.dev/cleanup (JSON patch)",
        api_group: "weir.dev",
        resource: "topics",
        verbs: &["patch"],
    },
    Call {
        site: "finalizer helper: add/remove weir.dev/cleanup (JSON patch)",
        api_group: "weir.dev",
        resource: "consumergroups",
        verbs: &["patch"],
    },
    Call { site: "observe_topic: peers for name clashes", api_group: "weir.dev", resource: "topics", verbs: &["list"] },
    Call { site: "observe_group: subscribed Topics", api_group: "weir.dev", resource: "topics", verbs: &["get"] },
    Call {
        site: "observe_group: peers for name clashes",
        api_group: "weir.dev",
        resource: "consumergroups",
        verbs: &["list"],
    },
    Call {
        site: "apply_status: SSA of Topic status",
        api_group: "weir.dev",
        resource: "topics/status",
        verbs: &["patch"],
    },
    Call {
        site: "apply_status: SSA of ConsumerGroup status",
        api_group: "weir.dev",
        resource: "consumergroups/status",
        verbs: &["patch"],
    },
    Call {
        site: "controller: owns StatefulSets",
        api_group: "apps",
        resource: "statefulsets",
        verbs: &["list", "watch"],
    },
    Call {
        site: "live_children / observe_group: the broker StatefulSet",
        api_group: "apps",
        resource: "statefulsets",
        verbs: &["get"],
    },
    Call {
        site: "apply_child: SSA of the StatefulSet",
        api_group: "apps",
        resource: "statefulsets",
        verbs: &["create", "patch"],
    },
    Call {
        site: "cleanup_topic (deletionPolicy Delete)",
        api_group: "apps",
        resource: "statefulsets",
        verbs: &["delete"],
    },
    Call { site: "controller: owns Services", api_group: "", resource: "services", verbs: &["list", "watch"] },
    Call { site: "live_children: headless and client Services", api_group: "", resource: "services", verbs: &["get"] },
    Call { site: "apply_child: SSA of the Services", api_group: "", resource: "services", verbs: &["create", "patch"] },
    Call {
        site: "controller: owns PodDisruptionBudgets",
        api_group: "policy",
        resource: "poddisruptionbudgets",
        verbs: &["list", "watch"],
    },
    Call { site: "live_children: the PDB", api_group: "policy", resource: "poddisruptionbudgets", verbs: &["get"] },
    Call {
        site: "apply_child: SSA of the PDB",
        api_group: "policy",
        resource: "poddisruptionbudgets",
        verbs: &["create", "patch"],
    },
    Call { site: "observe_topic: pod readiness", api_group: "", resource: "pods", verbs: &["list"] },
    Call {
        site: "observe_topic: volume sizes; cleanup_topic: PVCs to delete",
        api_group: "",
        resource: "persistentvolumeclaims",
        verbs: &["list"],
    },
    Call { site: "execute: volume expansion", api_group: "", resource: "persistentvolumeclaims", verbs: &["patch"] },
    Call {
        site: "cleanup_topic (deletionPolicy Delete)",
        api_group: "",
        resource: "persistentvolumeclaims",
        verbs: &["delete"],
    },
    Call {
        site: "namespace_terminating: cleanup without brokers",
        api_group: "",
        resource: "namespaces",
        verbs: &["get"],
    },
    Call {
        site: "publish: Events via kube's Recorder",
        api_group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
    },
    Call {
        site: "live_children: the broker ServiceAccount",
        api_group: "",
        resource: "serviceaccounts",
        verbs: &["get"],
    },
    Call {
        site: "apply_child: SSA of the broker ServiceAccount",
        api_group: "",
        resource: "serviceaccounts",
        verbs: &["create", "patch"],
    },
    Call {
        site: "live_children: the broker RoleBinding",
        api_group: "rbac.authorization.k8s.io",
        resource: "rolebindings",
        verbs: &["get"],
    },
    Call {
        site: "apply_child: SSA of the broker RoleBinding",
        api_group: "rbac.authorization.k8s.io",
        resource: "rolebindings",
        verbs: &["create", "patch"],
    },
    Call {
        site: "apply_child: the RoleBinding refers to the broker ClusterRole",
        api_group: "rbac.authorization.k8s.io",
        resource: "clusterroles",
        verbs: &["bind"],
    },
];

/// Calls of the leader elector (namespaced to the Lease's namespace).
pub const LEASE_CALLS: &[Call] = &[Call {
    site: "LeaderElector",
    api_group: "coordination.k8s.io",
    resource: "leases",
    verbs: &["get", "create", "update"],
}];

/// Whether `rules` allow every verb of `call`.
pub fn allows(rules: &[Rule], call: &Call) -> bool {
    call.verbs.iter().all(|verb| {
        rules
            .iter()
            .any(|r| r.api_group == call.api_group && r.resources.contains(&call.resource) && r.verbs.contains(verb))
    })
}

fn policy_rules(rules: &[Rule]) -> Vec<PolicyRule> {
    rules
        .iter()
        .map(|r| PolicyRule {
            api_groups: Some(vec![r.api_group.to_owned()]),
            resources: Some(r.resources.iter().map(|s| (*s).to_owned()).collect()),
            verbs: r.verbs.iter().map(|s| (*s).to_owned()).collect(),
            resource_names: (!r.resource_names.is_empty())
                .then(|| r.resource_names.iter().map(|s| (*s).to_owned()).collect()),
            ..PolicyRule::default()
        })
        .collect()
}

/// A ClusterRole named `name` with `rules`.
pub fn cluster_role(name: &str, rules: &[Rule]) -> ClusterRole {
    ClusterRole {
        metadata: ObjectMeta { name: Some(name.to_owned()), ..ObjectMeta::default() },
        rules: Some(policy_rules(rules)),
        ..ClusterRole::default()
    }
}

/// A Role named `name` in `namespace` with `rules`.
pub fn role(name: &str, namespace: &str, rules: &[Rule]) -> Role {
    Role {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            ..ObjectMeta::default()
        },
        rules: Some(policy_rules(rules)),
    }
}

/// The roles as multi-document YAML (`weir-operator rbac`).
pub fn render_yaml(lease_namespace: &str) -> Result<String, serde_yaml::Error> {
    let docs = [
        serde_yaml::to_string(&cluster_role("weir-operator", OPERATOR_RULES))?,
        serde_yaml::to_string(&role("weir-operator-leader-election", lease_namespace, OPERATOR_LEASE_RULES))?,
        serde_yaml::to_string(&cluster_role("weir-broker", BROKER_RULES))?,
    ];
    Ok(docs.join("---\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_call_is_allowed_and_every_rule_is_used() {
        for call in OPERATOR_CALLS {
            assert!(allows(OPERATOR_RULES, call), "no rule allows {call:?}");
        }
        for call in LEASE_CALLS {
            assert!(allows(OPERATOR_LEASE_RULES, call), "no rule allows {call:?}");
        }
        for (rules, calls) in [(OPERATOR_RULES, OPERATOR_CALLS), (OPERATOR_LEASE_RULES, LEASE_CALLS)] {
            for rule in rules {
                for resource in rule.resources {
                    for verb in rule.verbs {
                        let used = calls.iter().any(|c| {
                            c.api_group == rule.api_group && c.resource == *resource && c.verbs.contains(verb)
                        });
                        assert!(used, "rule {}/{resource} {verb} is granted but never used", rule.api_group);
                    }
                }
            }
        }
    }

    #[test]
    fn brokers_only_read() {
        assert!(BROKER_RULES.iter().all(|r| r.verbs.iter().all(|v| ["get", "list", "watch"].contains(v))));
    }

    #[test]
    fn renders_yaml() {
        let yaml = render_yaml("weir-system").unwrap();
        assert_eq!(yaml.matches("kind: ").count(), 3);
        assert!(yaml.contains("persistentvolumeclaims"));
    }
}
