//! Access control compatible with RocketMQ 5's ACL: who the caller is (authentication) and what it
//! may do (authorization).
//!
//! Authentication follows the signature every official SDK sends when given credentials:
//!
//! ```text
//! x-mq-date-time: <any string the client chose; signed, never parsed>
//! authorization:  MQv2-HMAC-SHA1 Credential=<user>[/...], SignedHeaders=x-mq-date-time, Signature=<hex>
//! Signature = hex(HMAC-SHA1(key = password, data = x-mq-date-time))   (upper- or lowercase hex)
//! ```
//!
//! The signature covers only the date string, so a captured header pair can be replayed: the
//! broker therefore insists on TLS when access control is on (see `weir-sidecar --acl-file`).
//!
//! Authorization: each user has policies of `resources` (`Topic:orders`, `Group:billing`,
//! `Topic:orders-*` prefix, `*` anything), `actions` (`Pub`, `Sub`, `All`) and a decision;
//! a matching Deny wins over any Allow, and nothing is allowed unless a policy allows it. Super
//! users may do everything, including the admin API.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha1::Sha1;
use tonic::metadata::MetadataMap;

/// Shortest password accepted (RocketMQ's guidance for ACL 2.0).
pub const MIN_PASSWORD_LEN: usize = 16;

/// What a request wants to do with a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Action {
    /// Send to a topic (also ends transactions).
    Pub,
    /// Consume: a topic and the group consuming it.
    Sub,
    /// Both.
    All,
}

/// Allow or deny.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
pub enum Decision {
    /// Grants the actions.
    #[default]
    Allow,
    /// Refuses them, whatever else allows them.
    Deny,
}

/// A resource a request touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource<'a> {
    /// A topic by name.
    Topic(&'a str),
    /// A consumer group by name.
    Group(&'a str),
}

/// One policy of a user.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// `Topic:<name>`, `Group:<name>`, a trailing `*` for a prefix, or `*` for every resource.
    pub resources: Vec<String>,
    /// Actions granted or refused.
    pub actions: Vec<Action>,
    /// Allow (default) or Deny.
    #[serde(default)]
    pub decision: Decision,
}

/// A user of the ACL file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct User {
    /// The access key clients send as `Credential`.
    pub username: String,
    /// The secret clients sign with.
    pub password: String,
    /// May do everything, admin API included.
    #[serde(default)]
    pub super_user: bool,
    /// A disabled user is refused like an unknown one.
    #[serde(default = "enabled")]
    pub enabled: bool,
    /// What the user may (not) do.
    #[serde(default)]
    pub policies: Vec<Policy>,
}

fn enabled() -> bool {
    true
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AclFile {
    users: Vec<User>,
}

/// Why an ACL file is unusable.
#[derive(Debug, thiserror::Error)]
pub enum AclError {
    /// Not readable.
    #[error("reading the ACL file {path}")]
    Read {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid YAML of the expected shape.
    #[error("the ACL file is not valid: {0}")]
    Parse(#[from] serde_yaml::Error),
    /// A user entry is wrong.
    #[error("ACL user {user:?}: {reason}")]
    User {
        /// The user.
        user: String,
        /// What is wrong.
        reason: String,
    },
}

/// Why a request was refused (mapped to UNAUTHORIZED or FORBIDDEN).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// Who the caller is could not be established.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
}

/// The users and their policies.
#[derive(Debug)]
pub struct Acl {
    users: HashMap<String, Arc<User>>,
}

impl Acl {
    /// Reads an ACL file (YAML: `users: [{username, password, superUser, enabled, policies}]`).
    pub fn load(path: &Path) -> Result<Self, AclError> {
        let text = std::fs::read_to_string(path).map_err(|source| AclError::Read { path: path.to_owned(), source })?;
        Self::from_yaml(&text)
    }

    /// Parses and checks an ACL document.
    pub fn from_yaml(text: &str) -> Result<Self, AclError> {
        let file: AclFile = serde_yaml::from_str(text)?;
        let mut users = HashMap::new();
        for user in file.users {
            let invalid = |reason: String| AclError::User { user: user.username.clone(), reason };
            if user.username.is_empty() || user.username.contains(['/', ',', ' ', '=']) {
                return Err(invalid("username must be non-empty without '/', ',', '=' or spaces".into()));
            }
            if user.password.len() < MIN_PASSWORD_LEN {
                return Err(invalid(format!("password must be at least {MIN_PASSWORD_LEN} characters")));
            }
            for pattern in user.policies.iter().flat_map(|p| &p.resources) {
                check_pattern(pattern).map_err(invalid)?;
            }
            if users.insert(user.username.clone(), Arc::new(user.clone())).is_some() {
                return Err(invalid("listed twice".into()));
            }
        }
        Ok(Self { users })
    }

    /// Who signed the request; refuses anonymous, malformed, unknown, disabled and wrongly signed
    /// requests.
    pub fn authenticate(&self, md: &MetadataMap) -> Result<Arc<User>, Denied> {
        let header = |name: &str| md.get(name).map(|v| v.to_str().map_err(|_| format!("{name} is not ASCII")));
        let Some(authorization) = header("authorization") else {
            return Err(Denied::Unauthenticated(
                "access control is on: sign requests with an access key and secret (SDK credentials)".into(),
            ));
        };
        let authorization = authorization.map_err(Denied::Unauthenticated)?;
        let date = header("x-mq-date-time")
            .ok_or_else(|| Denied::Unauthenticated("authorization without x-mq-date-time".into()))?
            .map_err(Denied::Unauthenticated)?;
        let signed = parse_authorization(authorization).map_err(Denied::Unauthenticated)?;
        let user = self
            .users
            .get(signed.user)
            .filter(|u| u.enabled)
            .ok_or_else(|| Denied::Unauthenticated(format!("unknown or disabled user {:?}", signed.user)))?;
        let mut mac = Hmac::<Sha1>::new_from_slice(user.password.as_bytes()).expect("HMAC takes any key length");
        mac.update(date.as_bytes());
        // verify_slice compares in constant time.
        mac.verify_slice(&signed.signature)
            .map_err(|_| Denied::Unauthenticated(format!("wrong signature for user {:?}", user.username)))?;
        Ok(user.clone())
    }
}

impl User {
    /// Whether the user may do `action` on every resource of `resources`.
    pub fn check(&self, resources: &[Resource<'_>], action: Action) -> Result<(), Denied> {
        if self.super_user {
            return Ok(());
        }
        for resource in resources {
            let matching = || {
                self.policies.iter().filter(move |p| {
                    p.resources.iter().any(|pattern| matches(pattern, resource))
                        && p.actions.iter().any(|a| *a == Action::All || *a == action)
                })
            };
            let denied = matching().any(|p| p.decision == Decision::Deny);
            let allowed = matching().any(|p| p.decision == Decision::Allow);
            if denied || !allowed {
                let (kind, name) = match resource {
                    Resource::Topic(n) => ("Topic", n),
                    Resource::Group(n) => ("Group", n),
                };
                return Err(Denied::Forbidden(format!(
                    "user {:?} may not {action:?} on {kind}:{name}{}",
                    self.username,
                    if denied { " (denied by a policy)" } else { "" }
                )));
            }
        }
        Ok(())
    }

    /// Only super users may use the admin API.
    pub fn check_admin(&self) -> Result<(), Denied> {
        if self.super_user {
            Ok(())
        } else {
            Err(Denied::Forbidden(format!("user {:?} is not a super user; the admin API needs one", self.username)))
        }
    }
}

fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern == "*" {
        return Ok(());
    }
    match pattern.split_once(':') {
        Some(("Topic" | "Group", name)) if !name.is_empty() && !name[..name.len() - 1].contains('*') => Ok(()),
        _ => Err(format!(
            "resource {pattern:?} is not `*`, `Topic:<name>` or `Group:<name>` (a trailing * for a prefix)"
        )),
    }
}

fn matches(pattern: &str, resource: &Resource<'_>) -> bool {
    if pattern == "*" {
        return true;
    }
    let (kind, name) = match resource {
        Resource::Topic(n) => ("Topic", *n),
        Resource::Group(n) => ("Group", *n),
    };
    let Some(wanted) = pattern.strip_prefix(kind).and_then(|p| p.strip_prefix(':')) else { return false };
    match wanted.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => name == wanted,
    }
}

struct Signed<'a> {
    user: &'a str,
    signature: Vec<u8>,
}

/// `MQv2-HMAC-SHA1 Credential=AK[/...], SignedHeaders=x-mq-date-time, Signature=<hex>`.
fn parse_authorization(value: &str) -> Result<Signed<'_>, String> {
    let (scheme, rest) = value.trim().split_once(' ').ok_or("authorization has no scheme")?;
    if scheme != "MQv2-HMAC-SHA1" {
        return Err(format!("authorization scheme {scheme:?} is not MQv2-HMAC-SHA1"));
    }
    let mut user = None;
    let mut signature = None;
    for pair in rest.split(',') {
        match pair.trim().split_once('=') {
            Some(("Credential", v)) => user = Some(v.split('/').next().unwrap_or(v).trim()),
            Some(("Signature", v)) => {
                signature = Some(const_hex::decode(v.trim()).map_err(|_| "Signature is not hex".to_owned())?)
            }
            _ => {}
        }
    }
    match (user, signature) {
        (Some(user), Some(signature)) if !user.is_empty() => Ok(Signed { user, signature }),
        _ => Err("authorization lacks Credential or Signature".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
users:
  - username: admin
    password: admin-password-0123
    superUser: true
  - username: orders-service
    password: orders-password-0123
    policies:
      - {resources: ["Topic:orders", "Topic:order-*"], actions: [Pub]}
      - {resources: ["Topic:order-audit"], actions: [All], decision: Deny}
      - {resources: ["Group:billing", "Topic:orders"], actions: [Sub]}
  - username: retired
    password: retired-password-01
    enabled: false
"#;

    fn signed(user: &str, password: &str, date: &str, upper: bool) -> MetadataMap {
        let mut mac = Hmac::<Sha1>::new_from_slice(password.as_bytes()).unwrap();
        mac.update(date.as_bytes());
        let mut sig = const_hex::encode(mac.finalize().into_bytes());
        if upper {
            sig = sig.to_uppercase();
        }
        let mut md = MetadataMap::new();
        md.insert("x-mq-date-time", date.parse().unwrap());
        let value = format!("MQv2-HMAC-SHA1 Credential={user}, SignedHeaders=x-mq-date-time, Signature={sig}");
        md.insert("authorization", value.parse().unwrap());
        md
    }

    #[test]
    fn every_sdk_style_of_signature_is_accepted() {
        let acl = Acl::from_yaml(YAML).unwrap();
        for (user, date, upper) in [
            ("orders-service", "20261124T235959Z", true), // Java: uppercase hex
            ("orders-service//Rocketmq", "20261124T235959Z", false), // Go: AK//Rocketmq
            ("orders-service", "2026-11-24T23:59:59.123+01:00", false), // Rust: RFC 3339
        ] {
            let md = signed(user, "orders-password-0123", date, upper);
            assert_eq!(acl.authenticate(&md).unwrap().username, "orders-service");
        }
    }

    #[test]
    fn bad_credentials_are_unauthenticated() {
        let acl = Acl::from_yaml(YAML).unwrap();
        let cases = [
            signed("orders-service", "not-the-password-00", "d", false),
            signed("nobody", "orders-password-0123", "d", false),
            signed("retired", "retired-password-01", "d", false),
            MetadataMap::new(),
        ];
        for md in cases {
            assert!(matches!(acl.authenticate(&md), Err(Denied::Unauthenticated(_))));
        }
        let mut no_date = signed("orders-service", "orders-password-0123", "d", false);
        no_date.remove("x-mq-date-time");
        assert!(acl.authenticate(&no_date).is_err());
        let mut garbled = MetadataMap::new();
        garbled.insert("x-mq-date-time", "d".parse().unwrap());
        garbled.insert("authorization", "MQv2-HMAC-SHA1 Credential=orders-service, Signature=zz".parse().unwrap());
        assert!(acl.authenticate(&garbled).is_err());
    }

    #[test]
    fn deny_wins_prefixes_match_and_nothing_else_is_allowed() {
        let acl = Acl::from_yaml(YAML).unwrap();
        let user = acl.users["orders-service"].clone();
        assert!(user.check(&[Resource::Topic("orders")], Action::Pub).is_ok());
        assert!(user.check(&[Resource::Topic("order-eu")], Action::Pub).is_ok());
        assert!(user.check(&[Resource::Topic("order-audit")], Action::Pub).is_err(), "deny wins");
        assert!(user.check(&[Resource::Topic("payments")], Action::Pub).is_err(), "default deny");
        assert!(user.check(&[Resource::Group("billing"), Resource::Topic("orders")], Action::Sub).is_ok());
        assert!(user.check(&[Resource::Group("billing"), Resource::Topic("order-eu")], Action::Sub).is_err());
        assert!(user.check_admin().is_err());
        assert!(acl.users["admin"].check(&[Resource::Topic("anything")], Action::Pub).is_ok());
    }

    #[test]
    fn weak_or_malformed_entries_are_refused() {
        let weak = "users: [{username: u, password: short}]";
        assert!(Acl::from_yaml(weak).unwrap_err().to_string().contains("at least 16"));
        let pattern = "users: [{username: u, password: long-enough-password, policies: [{resources: [Queue:x], actions: [Pub]}]}]";
        assert!(Acl::from_yaml(pattern).unwrap_err().to_string().contains("Queue:x"));
        let unknown = "users: [{username: u, password: long-enough-password, role: admin}]";
        assert!(Acl::from_yaml(unknown).is_err());
    }
}
