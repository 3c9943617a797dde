//! Receipt handles: the opaque strings consumers send back to acknowledge or change the invisibility
//! of a message they received.
//!
//! ```text
//!  1-<broker>-<partition>-<offset>-<generation>-<check>      every field lower-case hex
//!  │   │          │           │          │          └ crc32c of everything before it
//!  │   │          │           │          └ the lease it belongs to (a newer lease invalidates it)
//!  │   │          │           └ queue offset of the message
//!  │   │          └ partition of the topic named in the request
//!  │   └ ordinal of the broker pod that issued it (for forwarding)
//!  └ format version
//! ```

/// What a receipt handle identifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    /// Broker that issued it.
    pub broker: u32,
    /// Partition.
    pub partition: u32,
    /// Queue offset.
    pub offset: u64,
    /// Lease generation.
    pub generation: u64,
}

impl Receipt {
    /// The handle string.
    pub fn encode(&self) -> String {
        use std::fmt::Write as _;
        let mut handle = String::with_capacity(64);
        let _ = write!(handle, "1-{:x}-{:x}-{:x}-{:x}", self.broker, self.partition, self.offset, self.generation);
        let check = crc32c::crc32c(handle.as_bytes());
        let _ = write!(handle, "-{check:08x}");
        handle
    }

    /// Parses a handle; `None` when it is not one this broker could have issued.
    pub fn parse(handle: &str) -> Option<Self> {
        if handle.len() > 128 {
            return None;
        }
        let (body, check) = handle.rsplit_once('-')?;
        if check.len() != 8 || u32::from_str_radix(check, 16).ok()? != crc32c::crc32c(body.as_bytes()) {
            return None;
        }
        let mut fields = body.split('-');
        if fields.next()? != "1" {
            return None;
        }
        let mut next = || fields.next().and_then(|f| u64::from_str_radix(f, 16).ok());
        let receipt = Self {
            broker: u32::try_from(next()?).ok()?,
            partition: u32::try_from(next()?).ok()?,
            offset: next()?,
            generation: next()?,
        };
        fields.next().is_none().then_some(receipt)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn round_trip(broker in any::<u32>(), partition in any::<u32>(), offset in any::<u64>(), generation in any::<u64>()) {
            let r = Receipt { broker, partition, offset, generation };
            prop_assert_eq!(Receipt::parse(&r.encode()), Some(r));
        }

        #[test]
        fn garbage_never_parses_or_panics(s in "\\PC{0,80}") {
            let _ = Receipt::parse(&s);
        }
    }

    #[test]
    fn tampered_handles_are_refused() {
        let h = Receipt { broker: 0, partition: 3, offset: 77, generation: 12 }.encode();
        assert!(Receipt::parse(&h.replace("-4d-", "-4e-")).is_none());
        assert!(Receipt::parse(&h[..h.len() - 1]).is_none());
        assert!(Receipt::parse("").is_none());
        assert!(Receipt::parse("not-a-handle").is_none());
    }
}
