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
        self.text().as_str().to_owned()
    }

    /// The handle's text, built on the stack: a delivery writes it into its answer without
    /// allocating. Built digit by digit rather than with `write!`: every delivered message gets
    /// one, and built with `write!` it took about a tenth of a receive's broker CPU (12% of
    /// `receive_message`'s samples under pubsub).
    pub fn text(&self) -> HandleText {
        let mut handle = HandleText { bytes: [0; MAX_HANDLE_LEN], len: 0 };
        handle.push(b'1');
        for field in [self.broker.into(), self.partition.into(), self.offset, self.generation] {
            handle.push(b'-');
            let digits = (u64::BITS - field.leading_zeros()).div_ceil(4).max(1);
            handle.push_hex_digits(field, digits);
        }
        let check = crc32c::crc32c(handle.as_str().as_bytes());
        handle.push(b'-');
        handle.push_hex_digits(check.into(), 8);
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

/// The longest handle: "1-", four fields of up to 16 digits with their dashes, "-" and 8 check
/// digits.
const MAX_HANDLE_LEN: usize = 2 + 4 * 17 + 9;

/// A handle's text (ASCII), held on the stack.
pub struct HandleText {
    bytes: [u8; MAX_HANDLE_LEN],
    len: usize,
}

impl HandleText {
    fn push(&mut self, byte: u8) {
        self.bytes[self.len] = byte;
        self.len += 1;
    }

    /// Appends the lowest `digits` hex digits of `value`, most significant first, in lower case.
    fn push_hex_digits(&mut self, value: u64, digits: u32) {
        for shift in (0..digits).rev() {
            self.push(b"0123456789abcdef"[(value >> (shift * 4)) as usize & 0xf]);
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits, letters and dashes are pushed.
        std::str::from_utf8(&self.bytes[..self.len]).expect("a receipt handle is ASCII")
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

        /// The handle is exactly the layout above (clients store it; old handles must keep
        /// parsing): lower-case hex without leading zeros, the check zero-padded to 8 digits.
        #[test]
        fn encodes_the_documented_layout(broker in any::<u32>(), partition in any::<u32>(), offset in any::<u64>(), generation in any::<u64>()) {
            let body = format!("1-{broker:x}-{partition:x}-{offset:x}-{generation:x}");
            let expected = format!("{body}-{:08x}", crc32c::crc32c(body.as_bytes()));
            prop_assert_eq!(Receipt { broker, partition, offset, generation }.encode(), expected);
        }

        #[test]
        fn garbage_never_parses_or_panics(s in "\\PC{0,80}") {
            let _ = Receipt::parse(&s);
        }
    }

    #[test]
    fn a_zero_field_is_one_digit() {
        let h = Receipt { broker: 0, partition: 3, offset: 77, generation: 0 }.encode();
        assert!(h.starts_with("1-0-3-4d-0-"), "{h}");
        assert_eq!(h.len(), "1-0-3-4d-0-".len() + 8);
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
