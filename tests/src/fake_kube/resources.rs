//! Which resource types the fake serves: URL plural <-> kind, API group and scope. A built-in table
//! covers the kinds Weir uses; any other type is learned from the first object written to it (the
//! kind from the body, the plural from the URL, the scope from the URL shape).

/// One served resource type. The fake keeps one version per group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ResourceType {
    pub group: String,
    pub version: String,
    pub plural: String,
    pub kind: String,
    pub namespaced: bool,
}

/// (group, version, plural, kind, namespaced)
const BUILTIN: &[(&str, &str, &str, &str, bool)] = &[
    ("", "v1", "namespaces", "Namespace", false),
    ("", "v1", "nodes", "Node", false),
    ("", "v1", "persistentvolumes", "PersistentVolume", false),
    ("", "v1", "pods", "Pod", true),
    ("", "v1", "services", "Service", true),
    ("", "v1", "endpoints", "Endpoints", true),
    ("", "v1", "configmaps", "ConfigMap", true),
    ("", "v1", "secrets", "Secret", true),
    ("", "v1", "events", "Event", true),
    ("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", true),
    ("", "v1", "serviceaccounts", "ServiceAccount", true),
    ("apps", "v1", "statefulsets", "StatefulSet", true),
    ("apps", "v1", "deployments", "Deployment", true),
    ("apps", "v1", "controllerrevisions", "ControllerRevision", true),
    ("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", true),
    ("coordination.k8s.io", "v1", "leases", "Lease", true),
    ("events.k8s.io", "v1", "events", "Event", true),
    ("rbac.authorization.k8s.io", "v1", "roles", "Role", true),
    ("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", true),
    ("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", false),
    ("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", false),
    ("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", false),
    ("weir.dev", "v1alpha1", "topics", "Topic", true),
    ("weir.dev", "v1alpha1", "consumergroups", "ConsumerGroup", true),
];

impl ResourceType {
    /// `v1` for the core group, else `group/version`.
    pub fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    /// How error messages name the type: `configmaps`, `topics.weir.dev`.
    pub fn resource(&self) -> String {
        if self.group.is_empty() { self.plural.clone() } else { format!("{}.{}", self.plural, self.group) }
    }
}

/// `apps/v1` -> (`apps`, `v1`); `v1` -> (``, `v1`).
pub(crate) fn split_api_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// English plural the way CRD authors usually spell it; only used for types never seen on a URL.
fn guess_plural(kind: &str) -> String {
    let lower = kind.to_lowercase();
    if let Some(stem) = lower.strip_suffix('y') {
        format!("{stem}ies")
    } else if ["s", "x", "ch", "sh"].iter().any(|s| lower.ends_with(s)) {
        format!("{lower}es")
    } else {
        format!("{lower}s")
    }
}

/// The known resource types.
#[derive(Debug)]
pub(crate) struct Registry(Vec<ResourceType>);

impl Default for Registry {
    fn default() -> Self {
        Self(
            BUILTIN
                .iter()
                .map(|&(group, version, plural, kind, namespaced)| ResourceType {
                    group: group.into(),
                    version: version.into(),
                    plural: plural.into(),
                    kind: kind.into(),
                    namespaced,
                })
                .collect(),
        )
    }
}

impl Registry {
    /// The type a URL names.
    pub fn by_plural(&self, group: &str, plural: &str) -> Option<&ResourceType> {
        self.0.iter().find(|t| t.group == group && t.plural == plural)
    }

    /// The type a test names by plural or kind (kind case-insensitively).
    pub fn resolve(&self, group: &str, kind_or_plural: &str) -> Option<&ResourceType> {
        self.by_plural(group, kind_or_plural)
            .or_else(|| self.0.iter().find(|t| t.group == group && t.kind.eq_ignore_ascii_case(kind_or_plural)))
    }

    /// Registers a type seen for the first time; `None` if its kind is known under another plural
    /// (a misspelt URL, which the real server answers with 404).
    pub fn learn(&mut self, ty: ResourceType) -> Option<ResourceType> {
        if let Some(known) = self.0.iter().find(|t| t.group == ty.group && (t.plural == ty.plural || t.kind == ty.kind))
        {
            return (known.plural == ty.plural).then(|| known.clone());
        }
        self.0.push(ty.clone());
        Some(ty)
    }

    /// Registers the type of an object written by a test without a URL (plural guessed from kind).
    pub fn learn_kind(&mut self, api_version: &str, kind: &str, namespaced: bool) -> ResourceType {
        let (group, version) = split_api_version(api_version);
        if let Some(known) = self.resolve(group, kind) {
            return known.clone();
        }
        let ty = ResourceType {
            group: group.into(),
            version: version.into(),
            plural: guess_plural(kind),
            kind: kind.into(),
            namespaced,
        };
        self.0.push(ty.clone());
        ty
    }

    /// Every known type, for discovery.
    pub fn all(&self) -> &[ResourceType] {
        &self.0
    }
}
