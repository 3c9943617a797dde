//! Signing requests the way RocketMQ 5 clients do (`MQv2-HMAC-SHA1`), for Weir's own clients:
//! weirctl and the operator's admin calls to brokers that enforce access control. The signature
//! is the hex HMAC-SHA1 of the `x-mq-date-time` header under the secret key.

use std::time::SystemTime;

use hmac::Mac;
use tonic::metadata::{MetadataMap, MetadataValue};

/// An access key and its secret.
#[derive(Clone)]
pub struct Credentials {
    access_key: String,
    secret_key: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials").field("access_key", &self.access_key).finish_non_exhaustive()
    }
}

/// A credential that cannot go into a gRPC header.
#[derive(Debug, thiserror::Error)]
#[error("the access key must be printable ASCII")]
pub struct InvalidAccessKey;

impl Credentials {
    /// `access_key` with `secret_key`.
    pub fn new(access_key: impl Into<String>, secret_key: impl Into<String>) -> Self {
        Self { access_key: access_key.into(), secret_key: secret_key.into() }
    }

    /// The `authorization` header value for a request dated `date`.
    pub fn authorization(&self, date: &str) -> String {
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(self.secret_key.as_bytes()).expect("any key length");
        mac.update(date.as_bytes());
        let signature = const_hex::encode(mac.finalize().into_bytes());
        format!("MQv2-HMAC-SHA1 Credential={}, SignedHeaders=x-mq-date-time, Signature={signature}", self.access_key)
    }

    /// Dates and signs a request's headers (`x-mq-date-time`, `authorization`).
    pub fn sign(&self, metadata: &mut MetadataMap) -> Result<(), InvalidAccessKey> {
        let date = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
        let authorization = MetadataValue::try_from(self.authorization(&date)).map_err(|_| InvalidAccessKey)?;
        metadata.insert("x-mq-date-time", MetadataValue::try_from(date).map_err(|_| InvalidAccessKey)?);
        metadata.insert("authorization", authorization);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_the_date() {
        // HMAC-SHA1("key", "The quick brown fox jumps over the lazy dog"), a published test vector.
        let c = Credentials::new("ops", "key");
        assert_eq!(
            c.authorization("The quick brown fox jumps over the lazy dog"),
            "MQv2-HMAC-SHA1 Credential=ops, SignedHeaders=x-mq-date-time, \
             Signature=de7c9b85b8b78aa6bc8a7a36f70a90701c9db4d9"
        );
        let mut md = MetadataMap::new();
        c.sign(&mut md).unwrap();
        let date = md.get("x-mq-date-time").unwrap().to_str().unwrap().to_owned();
        assert_eq!(md.get("authorization").unwrap().to_str().unwrap(), c.authorization(&date));
        assert!(!format!("{c:?}").contains("key\""), "the secret stays out of Debug output");
        assert!(Credentials::new("ops\n", "k").sign(&mut md).is_err());
    }
}
