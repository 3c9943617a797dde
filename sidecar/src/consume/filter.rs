//! Message filters of a subscription: RocketMQ tag expressions (`*`, `TagA || TagB`) and SQL92
//! expressions over properties ([`crate::consume::sql`]).
//!
//! Filtering happens on the broker. The index keeps a hash of each message's tag, so most
//! non-matching messages of a tag filter are skipped without reading them; a hash match is
//! confirmed against the real tag once the message is read. SQL filters need the properties, so
//! they are evaluated on the message itself.

use std::collections::{HashMap, HashSet};

use crate::consume::sql;
use crate::storage::index::tag_hash;
use crate::storage::stored_view::StoredView;

/// Longest filter expression accepted.
pub const MAX_EXPRESSION_LEN: usize = 4096;

/// A parsed filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    /// Every message (`*` or an empty expression).
    All,
    /// Messages whose tag is one of these.
    Tags {
        /// The accepted tags.
        tags: HashSet<String>,
        /// Their index hashes.
        hashes: HashSet<u32>,
    },
    /// Messages a SQL92 expression selects.
    Sql(sql::Expr),
}

/// Which language the expression is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterKind {
    /// Tag expression.
    Tag,
    /// SQL92 over properties.
    Sql,
}

/// Why an expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FilterError {
    /// Syntax problem.
    #[error("invalid tag expression {expression:?}: {reason}")]
    Invalid {
        /// The expression.
        expression: String,
        /// What is wrong.
        reason: String,
    },
    /// SQL92 filters are not available.
    /// The SQL92 expression does not parse.
    #[error("invalid SQL92 filter {expression:?}: {reason}")]
    InvalidSql {
        /// The expression.
        expression: String,
        /// What is wrong.
        reason: String,
    },
}

impl Filter {
    /// Parses an expression of the given kind.
    pub fn parse(kind: FilterKind, expression: &str) -> Result<Self, FilterError> {
        match kind {
            FilterKind::Tag => Self::parse_tags(expression),
            FilterKind::Sql => sql::parse(expression)
                .map(Self::Sql)
                .map_err(|reason| FilterError::InvalidSql { expression: expression.into(), reason }),
        }
    }

    fn parse_tags(expression: &str) -> Result<Self, FilterError> {
        let invalid = |reason: &str| FilterError::Invalid { expression: expression.into(), reason: reason.into() };
        if expression.len() > MAX_EXPRESSION_LEN {
            return Err(invalid("longer than 4096 bytes"));
        }
        let trimmed = expression.trim();
        if trimmed.is_empty() || trimmed == "*" {
            return Ok(Self::All);
        }
        let mut tags = HashSet::new();
        for part in trimmed.split("||") {
            let tag = part.trim();
            if tag.is_empty() {
                return Err(invalid("empty tag between `||` separators"));
            }
            if tag == "*" {
                return Err(invalid("`*` cannot be combined with other tags"));
            }
            if tag.chars().any(|c| c.is_whitespace() || c == '|') {
                return Err(invalid("tags cannot contain spaces or `|`; separate tags with `||`"));
            }
            tags.insert(tag.to_owned());
        }
        let hashes = tags.iter().map(|t| tag_hash(t)).collect();
        Ok(Self::Tags { tags, hashes })
    }

    /// Whether a message with this index tag hash can match (no false negatives).
    pub fn may_match(&self, hash: u32) -> bool {
        match self {
            Self::All | Self::Sql(_) => true,
            Self::Tags { hashes, .. } => hashes.contains(&hash),
        }
    }

    /// Whether a stored message matches, reading only what this filter needs of it: nothing,
    /// the tag, or (SQL) the whole message decoded.
    pub fn matches_stored(&self, message: &StoredView) -> bool {
        match self {
            Self::All => true,
            Self::Tags { tags, .. } => std::str::from_utf8(message.tag()).is_ok_and(|tag| tags.contains(tag)),
            Self::Sql(_) => message.decode().is_ok_and(|m| self.matches(&m.tag, &m.user_properties)),
        }
    }

    /// Whether a message with this tag and these properties matches.
    pub fn matches(&self, tag: &str, properties: &HashMap<String, String>) -> bool {
        match self {
            Self::All => true,
            Self::Tags { tags, .. } => tags.contains(tag),
            Self::Sql(e) => e.matches(tag, properties),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_and_empty_match_everything() {
        for e in ["", "*", "  *  "] {
            let f = Filter::parse(FilterKind::Tag, e).unwrap();
            assert_eq!(f, Filter::All);
            assert!(f.matches("", &HashMap::new()) && f.matches("X", &HashMap::new()) && f.may_match(0));
        }
    }

    #[test]
    fn tag_alternatives() {
        let f = Filter::parse(FilterKind::Tag, "TagA || TagB").unwrap();
        let none = HashMap::new();
        assert!(f.matches("TagA", &none) && f.matches("TagB", &none));
        assert!(!f.matches("TagC", &none) && !f.matches("", &none));
        assert!(f.may_match(tag_hash("TagA")) && !f.may_match(0));
    }

    #[test]
    fn malformed_expressions_are_refused() {
        for e in ["A ||", "|| B", "A || || B", "A | B", "A || *", "Tag A"] {
            assert!(matches!(Filter::parse(FilterKind::Tag, e), Err(FilterError::Invalid { .. })), "{e}");
        }
        assert!(matches!(Filter::parse(FilterKind::Sql, "a >"), Err(FilterError::InvalidSql { .. })));
        let sql = Filter::parse(FilterKind::Sql, "a > 1").unwrap();
        assert!(sql.may_match(0), "SQL filters cannot use the tag hash");
        assert!(sql.matches("", &HashMap::from([("a".to_string(), "2".to_string())])));
    }

    /// A stored message is matched on what each filter reads of it: its tag for a tag filter,
    /// its properties for a SQL one.
    #[test]
    fn stored_messages_match_on_their_tag_and_properties() {
        use prost::Message as _;
        let stored = |tag: &str, a: &str| {
            let m = crate::storage::record::StoredMessage {
                tag: tag.into(),
                user_properties: HashMap::from([("a".to_string(), a.to_string())]),
                ..Default::default()
            };
            StoredView::parse(m.encode_to_vec().into()).unwrap()
        };
        let tags = Filter::parse(FilterKind::Tag, "TagA || TagB").unwrap();
        assert!(tags.matches_stored(&stored("TagB", "1")) && !tags.matches_stored(&stored("TagC", "1")));
        assert!(!tags.matches_stored(&stored("", "1")));
        let sql = Filter::parse(FilterKind::Sql, "a > 1").unwrap();
        assert!(sql.matches_stored(&stored("", "2")) && !sql.matches_stored(&stored("TagA", "1")));
        assert!(Filter::All.matches_stored(&stored("", "")));
    }

    proptest::proptest! {
        /// Any expression is answered, parsed or refused, without panicking; a parsed one can be
        /// evaluated.
        #[test]
        fn tag_expressions_never_panic(e in "\\PC{0,64}") {
            if let Ok(f) = Filter::parse(FilterKind::Tag, &e) {
                let _ = f.matches("TagA", &HashMap::new());
            }
        }
    }
}
