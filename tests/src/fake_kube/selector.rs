//! `labelSelector` and `fieldSelector` query parameters, as LIST, WATCH and DELETE-collection
//! filter by them. Field selectors accept any dotted path (the real server allows only a few per
//! kind, `metadata.name` and `metadata.namespace` everywhere).

use serde_json::Value;

use super::error::ApiError;

#[derive(Debug)]
enum LabelReq {
    Equals(String, String),
    NotEquals(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Debug)]
struct FieldReq {
    path: String,
    value: String,
    equal: bool,
}

/// Parsed label and field requirements; all must hold.
#[derive(Debug, Default)]
pub(crate) struct Selector {
    labels: Vec<LabelReq>,
    fields: Vec<FieldReq>,
}

/// Splits on commas outside parentheses (`a in (x,y),b` has two terms).
fn terms(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0i32, 0);
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out.into_iter().map(str::trim).filter(|t| !t.is_empty()).collect()
}

fn key(k: &str, term: &str) -> Result<String, ApiError> {
    let k = k.trim();
    if k.is_empty() || k.contains(char::is_whitespace) || k.contains(['=', '!', '(', ')']) {
        return Err(ApiError::bad_request(format!(
            "unable to parse requirement: invalid label selector term {term:?}"
        )));
    }
    Ok(k.to_owned())
}

fn label_req(term: &str) -> Result<LabelReq, ApiError> {
    if let Some(k) = term.strip_prefix('!') {
        return Ok(LabelReq::NotExists(key(k, term)?));
    }
    if let Some((head, rest)) = term.split_once('(') {
        let values = rest
            .strip_suffix(')')
            .ok_or_else(|| ApiError::bad_request(format!("unable to parse requirement: missing ')' in {term:?}")))?;
        let values = values.split(',').map(|v| v.trim().to_owned()).collect();
        let mut words = head.split_whitespace();
        return match (words.next(), words.next(), words.next()) {
            (Some(k), Some("in"), None) => Ok(LabelReq::In(key(k, term)?, values)),
            (Some(k), Some("notin"), None) => Ok(LabelReq::NotIn(key(k, term)?, values)),
            _ => Err(ApiError::bad_request(format!("unable to parse requirement: {term:?}"))),
        };
    }
    if let Some((k, v)) = term.split_once("!=") {
        return Ok(LabelReq::NotEquals(key(k, term)?, v.trim().to_owned()));
    }
    if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        return Ok(LabelReq::Equals(key(k, term)?, v.trim().to_owned()));
    }
    Ok(LabelReq::Exists(key(term, term)?))
}

fn field_req(term: &str) -> Result<FieldReq, ApiError> {
    let (path, value, equal) = if let Some((p, v)) = term.split_once("!=") {
        (p, v, false)
    } else if let Some((p, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
        (p, v, true)
    } else {
        return Err(ApiError::bad_request(format!("invalid field selector: {term:?}: no operator")));
    };
    Ok(FieldReq { path: key(path, term)?, value: value.trim().to_owned(), equal })
}

impl Selector {
    /// Parses the two query parameters; either may be absent.
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Self, ApiError> {
        Ok(Self {
            labels: terms(labels.unwrap_or("")).into_iter().map(label_req).collect::<Result<_, _>>()?,
            fields: terms(fields.unwrap_or("")).into_iter().map(field_req).collect::<Result<_, _>>()?,
        })
    }

    /// Whether `obj` satisfies every requirement.
    pub fn matches(&self, obj: &Value) -> bool {
        let label = |k: &str| obj.pointer("/metadata/labels").and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|req| match req {
            LabelReq::Equals(k, v) => label(k) == Some(v.as_str()),
            LabelReq::NotEquals(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self.fields.iter().all(|req| {
                let pointer = format!("/{}", req.path.replace('.', "/"));
                let actual = match obj.pointer(&pointer) {
                    None | Some(Value::Null) => String::new(),
                    Some(Value::String(s)) => s.clone(),
                    Some(other) => other.to_string(),
                };
                (actual == req.value) == req.equal
            })
    }
}
