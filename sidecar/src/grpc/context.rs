//! What every request carries in its gRPC headers: who the client is and how long it will wait.

use std::time::{Duration, Instant};

use http::HeaderName;
use tonic::metadata::MetadataMap;

use crate::error::BrokerError;

/// The headers read from every request, named once: a name given as a string is parsed and
/// checked again on every lookup.
static LANGUAGE: HeaderName = HeaderName::from_static("x-mq-language");
static CLIENT_ID: HeaderName = HeaderName::from_static("x-mq-client-id");
static TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");
static FORWARDED: HeaderName = HeaderName::from_static(crate::grpc::forward::FORWARDED_HEADER);
static AUTHORIZATION: HeaderName = HeaderName::from_static("authorization");
static DATE_TIME: HeaderName = HeaderName::from_static("x-mq-date-time");

/// Longest client id accepted.
const MAX_CLIENT_ID: usize = 256;

/// The caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `x-mq-client-id`.
    pub client_id: String,
    /// `x-mq-language` (informational; the JS SDK sends `HTTP`).
    pub language: String,
    /// When the client's deadline (`grpc-timeout`) runs out, if it set one.
    pub deadline: Option<Instant>,
    /// Another broker passed this request on (it must not be forwarded again).
    pub forwarded: bool,
    /// The `authorization` and `x-mq-date-time` headers, passed on when the request is forwarded.
    pub signature: Option<(String, String)>,
    /// Who signed the request, when access control is on.
    pub user: Option<std::sync::Arc<crate::acl::User>>,
}

impl Caller {
    /// Reads the headers. A missing client id is an error (it keys sessions and leases); the
    /// language is kept even then so the error can be phrased for the client.
    pub fn from_metadata(md: &MetadataMap) -> (String, Result<Self, BrokerError>) {
        let headers = md.as_ref();
        let text = |k: &HeaderName| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("").trim();
        let get = |k: &HeaderName| text(k).to_owned();
        let language = get(&LANGUAGE);
        let client_id = get(&CLIENT_ID);
        let deadline = parse_grpc_timeout(text(&TIMEOUT));
        let caller = if client_id.is_empty() {
            Err(BrokerError::ClientIdRequired)
        } else if client_id.len() > MAX_CLIENT_ID {
            Err(BrokerError::BadRequest(format!("x-mq-client-id is longer than {MAX_CLIENT_ID} bytes")))
        } else {
            Ok(Self {
                client_id,
                language: language.clone(),
                deadline: deadline.map(|d| Instant::now() + d),
                forwarded: headers.contains_key(&FORWARDED),
                signature: Some((get(&AUTHORIZATION), get(&DATE_TIME))).filter(|(a, _)| !a.is_empty()),
                user: None,
            })
        };
        (language, caller)
    }
}

/// Parses a `grpc-timeout` header value (`<digits><unit>`, unit one of H M S m u n).
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts() {
        assert_eq!(parse_grpc_timeout("40000m"), Some(Duration::from_secs(40)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout("12q"), None);
    }
}
