//! Loading Topic and ConsumerGroup manifests without an API server (the standalone broker).
//!
//! [`load_manifests`] reads the same YAML files users `kubectl apply`: one or more documents
//! separated by `---`, each a `weir.dev/v1alpha1` Topic or ConsumerGroup. Empty documents are
//! skipped. Everything an API server would reject is rejected here too, with the file and the
//! document number (counting from 1) in the message:
//!
//! * other kinds or API versions;
//! * fields of the wrong type, unknown enum values and unknown fields (kubectl's default
//!   `--validate=strict` rejects those as well);
//! * anything [`Topic::validate`] or [`ConsumerGroup::validate`] reports (the CRD schema and CEL
//!   rules, in Rust);
//! * two objects of the same kind with the same RocketMQ name, or with the same namespace and
//!   metadata.name.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::Deserialize;
use thiserror::Error;

use crate::common::API_VERSION;
use crate::{ConsumerGroup, Topic};

/// The objects found in one file (or directory) of manifests, in file order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Manifests {
    /// The Topics.
    pub topics: Vec<Topic>,
    /// The ConsumerGroups.
    pub consumer_groups: Vec<ConsumerGroup>,
}

impl Manifests {
    /// Whether no object was found.
    pub fn is_empty(&self) -> bool {
        self.topics.is_empty() && self.consumer_groups.is_empty()
    }

    /// The Topic with this metadata.name (what `topicRef.name` refers to).
    pub fn topic(&self, metadata_name: &str) -> Option<&Topic> {
        self.topics.iter().find(|t| t.metadata.name.as_deref() == Some(metadata_name))
    }

    /// The Topic with this RocketMQ topic name.
    pub fn topic_by_rocketmq_name(&self, name: &str) -> Option<&Topic> {
        self.topics.iter().find(|t| t.effective_name() == Some(name))
    }

    /// The ConsumerGroup with this RocketMQ group name.
    pub fn consumer_group_by_rocketmq_name(&self, name: &str) -> Option<&ConsumerGroup> {
        self.consumer_groups.iter().find(|g| g.effective_name() == Some(name))
    }

    /// Cross-object checks the operator reports as conditions in Kubernetes (they are not
    /// admission errors there): an Orderly group subscribed to a Topic of these manifests that
    /// is not FIFO. Subscriptions to Topics not in the manifests are not reported (the standalone
    /// broker may auto-create them).
    pub fn check_references(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for group in &self.consumer_groups {
            if group.spec.ordering != crate::Ordering::Orderly {
                continue;
            }
            for sub in &group.spec.subscriptions {
                if let Some(topic) = self.topic(&sub.topic_ref.name)
                    && topic.spec.message_type != crate::MessageType::Fifo
                {
                    problems.push(format!(
                        "ConsumerGroup {}: ordering Orderly needs FIFO topics, but Topic {} is {}",
                        group.metadata.name.as_deref().unwrap_or("?"),
                        sub.topic_ref.name,
                        topic.spec.message_type
                    ));
                }
            }
        }
        problems
    }
}

impl FromStr for Manifests {
    type Err = LoadError;

    /// Parses manifests from a string; errors name the source `<string>`.
    fn from_str(yaml: &str) -> Result<Self, Self::Err> {
        load_manifests_from_str("<string>", yaml)
    }
}

/// Where a document is: file (or label) and document number counting from 1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The file path, or the label given to [`load_manifests_from_str`].
    pub file: String,
    /// Document number within the file, counting from 1.
    pub document: usize,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: document {}", self.file, self.document)
    }
}

/// Why manifests could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file or directory could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        /// The path that failed.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The text is not YAML.
    #[error("{at}: not valid YAML: {message}")]
    Yaml {
        /// Where.
        at: Location,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A document that is not a weir.dev/v1alpha1 Topic or ConsumerGroup.
    #[error("{at}: is {found}; only apiVersion weir.dev/v1alpha1 with kind Topic or ConsumerGroup is accepted")]
    UnsupportedObject {
        /// Where.
        at: Location,
        /// What was found, e.g. `apps/v1 Deployment` or `an object without kind`.
        found: String,
    },
    /// A field has the wrong type or an unknown enum value.
    #[error("{at} ({kind} {name}): {message}")]
    Decode {
        /// Where.
        at: Location,
        /// Topic or ConsumerGroup.
        kind: &'static str,
        /// metadata.name, or `?`.
        name: String,
        /// The decoder's message, with the field path and line.
        message: String,
    },
    /// The object decoded but breaks the rules.
    #[error("{at} ({kind} {name}) is invalid:\n  - {}", problems.join("\n  - "))]
    Invalid {
        /// Where.
        at: Location,
        /// Topic or ConsumerGroup.
        kind: &'static str,
        /// metadata.name, or `?`.
        name: String,
        /// One line per problem.
        problems: Vec<String>,
    },
    /// Two objects of the same kind claim the same name.
    #[error("{at} ({kind} {name}): {what} {name:?} is already used by {first}")]
    Duplicate {
        /// Where the second object is.
        at: Location,
        /// Topic or ConsumerGroup.
        kind: &'static str,
        /// The clashing name.
        name: String,
        /// Which name clashes: `RocketMQ name` or `metadata.name`.
        what: &'static str,
        /// Where the first object is.
        first: Location,
    },
}

/// Loads every Topic and ConsumerGroup from a YAML file, or from every `*.yaml`/`*.yml` file of
/// a directory (not recursive, in name order).
pub fn load_manifests(path: &Path) -> Result<Manifests, LoadError> {
    let io_err = |source| LoadError::Io { path: path.to_owned(), source };
    let mut files = Vec::new();
    if path.is_dir() {
        for entry in std::fs::read_dir(path).map_err(io_err)? {
            let entry_path = entry.map_err(io_err)?.path();
            let is_yaml = entry_path.extension().is_some_and(|e| e == "yaml" || e == "yml");
            if is_yaml && entry_path.is_file() {
                files.push(entry_path);
            }
        }
        files.sort();
    } else {
        files.push(path.to_owned());
    }
    let mut loader = Loader::default();
    for file in files {
        let text = std::fs::read_to_string(&file).map_err(|source| LoadError::Io { path: file.clone(), source })?;
        loader.add(&file.display().to_string(), &text)?;
    }
    Ok(loader.manifests)
}

/// Loads manifests from YAML text; `file` labels the text in error messages.
pub fn load_manifests_from_str(file: &str, yaml: &str) -> Result<Manifests, LoadError> {
    let mut loader = Loader::default();
    loader.add(file, yaml)?;
    Ok(loader.manifests)
}

#[derive(Default)]
struct Loader {
    manifests: Manifests,
    /// (kind, which name, name) -> first location.
    names: BTreeMap<(&'static str, &'static str, String), Location>,
}

impl Loader {
    fn add(&mut self, file: &str, yaml: &str) -> Result<(), LoadError> {
        let at = |document: usize| Location { file: file.to_owned(), document };
        // First pass: untyped, to find the kind of each document. Second pass: typed, straight
        // from the parser so that decode errors carry the field path and line.
        let mut values = Vec::new();
        for document in serde_yaml::Deserializer::from_str(yaml) {
            let value = serde_yaml::Value::deserialize(document);
            let failed = value.is_err();
            values.push(value);
            if failed {
                // After a syntax error the iterator would repeat the error forever.
                break;
            }
        }
        for (index, (value, document)) in values.into_iter().zip(serde_yaml::Deserializer::from_str(yaml)).enumerate() {
            let at = at(index + 1);
            let value = value.map_err(|e| LoadError::Yaml { at: at.clone(), message: e.to_string() })?;
            if value.is_null() {
                continue;
            }
            match object_kind(&value) {
                Ok("Topic") => {
                    let topic: Topic = decode("Topic", &at, &value, document)?;
                    self.check_names("Topic", &at, &topic.metadata, topic.effective_name())?;
                    let problems = topic.validate();
                    check_problems("Topic", &at, &topic.metadata, &value, &topic, problems)?;
                    self.manifests.topics.push(topic);
                }
                Ok("ConsumerGroup") => {
                    let group: ConsumerGroup = decode("ConsumerGroup", &at, &value, document)?;
                    self.check_names("ConsumerGroup", &at, &group.metadata, group.effective_name())?;
                    let problems = group.validate();
                    check_problems("ConsumerGroup", &at, &group.metadata, &value, &group, problems)?;
                    self.manifests.consumer_groups.push(group);
                }
                Ok(_) => unreachable!("object_kind only returns known kinds"),
                Err(found) => return Err(LoadError::UnsupportedObject { at, found }),
            }
        }
        Ok(())
    }

    fn check_names(
        &mut self,
        kind: &'static str,
        at: &Location,
        meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
        rocketmq_name: Option<&str>,
    ) -> Result<(), LoadError> {
        let object_name = meta.name.as_ref().map(|name| {
            let ns = meta.namespace.as_deref().unwrap_or("");
            (format!("{ns}/{name}"), name.clone())
        });
        let keys = [
            rocketmq_name.map(|n| ("RocketMQ name", n.to_owned(), n.to_owned())),
            object_name.map(|(key, name)| ("metadata.name", key, name)),
        ];
        for (what, key, shown) in keys.into_iter().flatten() {
            if let Some(first) = self.names.get(&(kind, what, key.clone())) {
                return Err(LoadError::Duplicate { at: at.clone(), kind, name: shown, what, first: first.clone() });
            }
            self.names.insert((kind, what, key), at.clone());
        }
        Ok(())
    }
}

/// The kind of a supported object, or a description of what was found instead.
fn object_kind(value: &serde_yaml::Value) -> Result<&'static str, String> {
    let Some(map) = value.as_mapping() else {
        return Err("not an object (a YAML mapping with apiVersion and kind)".to_owned());
    };
    let field = |key: &str| map.get(key).and_then(serde_yaml::Value::as_str);
    match (field("apiVersion"), field("kind")) {
        (Some(API_VERSION), Some("Topic")) => Ok("Topic"),
        (Some(API_VERSION), Some("ConsumerGroup")) => Ok("ConsumerGroup"),
        (Some(api), Some(kind @ ("Topic" | "ConsumerGroup"))) if api.starts_with("weir.dev/") => {
            Err(format!("{api} {kind}, a version this build does not understand (it reads {API_VERSION})"))
        }
        (Some(api), Some(kind)) => Err(format!("{api} {kind}")),
        (None, Some(kind)) => Err(format!("a {kind} without apiVersion")),
        (Some(api), None) => Err(format!("an {api} object without kind")),
        (None, None) => Err("an object without apiVersion and kind".to_owned()),
    }
}

fn object_name(value: &serde_yaml::Value) -> String {
    value.get("metadata").and_then(|m| m.get("name")).and_then(serde_yaml::Value::as_str).unwrap_or("?").to_owned()
}

fn decode<'de, T: Deserialize<'de>>(
    kind: &'static str,
    at: &Location,
    value: &serde_yaml::Value,
    document: serde_yaml::Deserializer<'de>,
) -> Result<T, LoadError> {
    T::deserialize(document).map_err(|e| LoadError::Decode {
        at: at.clone(),
        kind,
        name: object_name(value),
        message: e.to_string(),
    })
}

/// Adds unknown fields to `problems` and fails if there are any.
fn check_problems<T: serde::Serialize>(
    kind: &'static str,
    at: &Location,
    meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta,
    input: &serde_yaml::Value,
    decoded: &T,
    mut problems: Vec<String>,
) -> Result<(), LoadError> {
    let input = serde_json::to_value(input).unwrap_or_default();
    let decoded = serde_json::to_value(decoded).unwrap_or_default();
    let mut unknown = Vec::new();
    unknown_fields(&input, &decoded, "", &mut unknown);
    problems.splice(
        0..0,
        unknown.into_iter().map(|path| {
            format!("{path}: unknown field (check its spelling and indentation; `kubectl explain` lists the fields)")
        }),
    );
    if problems.is_empty() {
        Ok(())
    } else {
        Err(LoadError::Invalid {
            at: at.clone(),
            kind,
            name: meta.name.clone().unwrap_or_else(|| "?".to_owned()),
            problems,
        })
    }
}

fn is_empty(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Null => true,
        serde_json::Value::Object(map) => map.is_empty(),
        serde_json::Value::Array(items) => items.is_empty(),
        _ => false,
    }
}

/// Paths present (and not empty) in `input` but absent from the typed object re-serialized.
fn unknown_fields(input: &serde_json::Value, decoded: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    use serde_json::Value;
    match (input, decoded) {
        (Value::Object(input), Value::Object(decoded)) => {
            for (key, value) in input {
                let child = if path.is_empty() { key.clone() } else { format!("{path}.{key}") };
                match decoded.get(key) {
                    Some(d) => unknown_fields(value, d, &child, out),
                    // Empty values of fields the typed object omits when empty (config: {}).
                    None if is_empty(value) => {}
                    None => out.push(child),
                }
            }
        }
        (Value::Array(input), Value::Array(decoded)) => {
            for (i, (value, d)) in input.iter().zip(decoded).enumerate() {
                unknown_fields(value, d, &format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}
