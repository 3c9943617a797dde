//! Durations and byte sizes as they are written in the custom resources.
//!
//! * **Durations** use Go's `time.ParseDuration` syntax (the syntax of `metav1.Duration` and of every
//!   Kubernetes duration field): one or more `<number><unit>` pairs with the units `ns`, `us`, `ms`,
//!   `s`, `m`, `h`, for example `72h`, `30s`, `500ms`, `1h30m`, `1.5h`; `0` alone means zero. There is
//!   no `d` unit (write `168h` for a week). Negative durations are rejected.
//! * **Sizes** are Kubernetes quantities in bytes: a decimal number with an optional binary suffix
//!   (`Ki Mi Gi Ti Pi Ei`, powers of 1024) or decimal suffix (`k M G T P E`, powers of 1000), for
//!   example `50Gi`, `500Mi`, `1G`, `1.5Gi`, or a plain integer. Fractions of a byte round up, as
//!   Kubernetes does.
//!
//! The CRD schema carries [`DURATION_PATTERN`] and [`SIZE_PATTERN`], which accept exactly what
//! [`parse_duration`] and [`parse_size`] accept, so the API server (at admission) and the standalone
//! broker (when it loads YAML) agree on what is valid.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use schemars::{Schema, SchemaGenerator, json_schema};
use thiserror::Error;

/// Regular expression (ECMA-262, as the API server uses) for a duration field.
pub const DURATION_PATTERN: &str = r"^(0|([0-9]+(\.[0-9]+)?(ns|us|ms|s|m|h))+)$";

/// Regular expression for the string form of a byte-size quantity.
pub const SIZE_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?([KMGTPE]i|[kMGTPE])?$";

/// A duration or size in a manifest that could not be understood.
///
/// Every message names the field and the offending value, then says what is expected, e.g.
/// `retention.time "3 days": expected a duration like 72h, 30m, 10s or 500ms (...)`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuantityError {
    /// Not Go duration syntax.
    #[error(
        "{field} {value:?}: expected a duration like 72h, 30m, 10s or 500ms \
         (a number followed by one of the units ns, us, ms, s, m, h; combine them as in 1h30m; \
         there is no d unit, write 168h for 7 days)"
    )]
    InvalidDuration {
        /// Field path, e.g. `retention.time`.
        field: String,
        /// The text found in the manifest.
        value: String,
    },
    /// Not a byte quantity.
    #[error(
        "{field} {value:?}: expected a size like 50Gi, 500Mi or 10G (a number with an optional \
         binary suffix Ki, Mi, Gi, Ti, Pi, Ei or decimal suffix k, M, G, T, P, E)"
    )]
    InvalidSize {
        /// Field path, e.g. `brokers.storage.size`.
        field: String,
        /// The text found in the manifest.
        value: String,
    },
    /// Syntactically fine but does not fit (durations up to about 584 years, sizes below 16 EiB).
    #[error("{field} {value:?}: value is too large; use a smaller number")]
    TooLarge {
        /// Field path.
        field: String,
        /// The text found in the manifest.
        value: String,
    },
}

/// Parses a Go-style duration (`72h`, `30s`, `500ms`, `1h30m`, `1.5h`, `0`).
///
/// `field` is only used in the error message (for example `"retention.time"`).
pub fn parse_duration(field: &str, value: &str) -> Result<Duration, QuantityError> {
    let invalid = || QuantityError::InvalidDuration { field: field.to_owned(), value: value.to_owned() };
    let too_large = || QuantityError::TooLarge { field: field.to_owned(), value: value.to_owned() };
    if value == "0" {
        return Ok(Duration::ZERO);
    }
    if value.is_empty() {
        return Err(invalid());
    }
    let mut total_nanos: u128 = 0;
    let mut rest = value;
    while !rest.is_empty() {
        let (int_part, frac_part, after) = split_number(rest).ok_or_else(invalid)?;
        let unit_len = after.find(|c: char| c.is_ascii_digit()).unwrap_or(after.len());
        let (unit, tail) = after.split_at(unit_len);
        let unit_nanos: u128 = match unit {
            "ns" => 1,
            "us" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3_600 * 1_000_000_000,
            _ => return Err(invalid()),
        };
        total_nanos = total_nanos
            .checked_add(scale(int_part, frac_part, unit_nanos).ok_or_else(too_large)?)
            .ok_or_else(too_large)?;
        rest = tail;
    }
    let nanos = u64::try_from(total_nanos).map_err(|_| too_large())?;
    Ok(Duration::from_nanos(nanos))
}

/// Parses a byte size given as a string (`50Gi`, `500Mi`, `1G`, `1.5Gi`, `1048576`).
pub fn parse_size(field: &str, value: &str) -> Result<u64, QuantityError> {
    let invalid = || QuantityError::InvalidSize { field: field.to_owned(), value: value.to_owned() };
    let too_large = || QuantityError::TooLarge { field: field.to_owned(), value: value.to_owned() };
    let (int_part, frac_part, suffix) = split_number(value).ok_or_else(invalid)?;
    let multiplier: u128 = match suffix {
        "" => 1,
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        "k" => 1_000,
        "M" => 1_000_000,
        "G" => 1_000_000_000,
        "T" => 1_000_000_000_000,
        "P" => 1_000_000_000_000_000,
        "E" => 1_000_000_000_000_000_000,
        _ => return Err(invalid()),
    };
    // Work in thousandths of a byte first, so a fraction rounds up rather than down.
    let milli = scale(int_part, frac_part, multiplier * 1000).ok_or_else(too_large)?;
    let bytes = milli.div_ceil(1000);
    u64::try_from(bytes).map_err(|_| too_large())
}

/// Parses a byte size held in a [`Quantity`] (the type of size fields in the CRDs).
pub fn parse_size_quantity(field: &str, value: &Quantity) -> Result<u64, QuantityError> {
    parse_size(field, &value.0)
}

/// Splits `digits[.digits]` off the front of `s`. Returns (integer digits, fraction digits, rest).
fn split_number(s: &str) -> Option<(&str, &str, &str)> {
    let int_len = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if int_len == 0 {
        return None;
    }
    let (int_part, rest) = s.split_at(int_len);
    if let Some(after_dot) = rest.strip_prefix('.') {
        let frac_len = after_dot.find(|c: char| !c.is_ascii_digit()).unwrap_or(after_dot.len());
        if frac_len == 0 {
            return None;
        }
        let (frac, rest) = after_dot.split_at(frac_len);
        Some((int_part, frac, rest))
    } else {
        Some((int_part, "", rest))
    }
}

/// `int.frac * unit`, rounding a remaining fraction up. `None` on overflow.
fn scale(int_part: &str, frac_part: &str, unit: u128) -> Option<u128> {
    let mut whole: u128 = 0;
    for digit in int_part.bytes() {
        whole = whole.checked_mul(10)?.checked_add(u128::from(digit - b'0'))?;
    }
    let mut value = whole.checked_mul(unit)?;
    // Fraction digits beyond what fits in u128 arithmetic cannot change the result meaningfully;
    // cap them so very long fractions do not overflow the denominator.
    let frac = &frac_part[..frac_part.len().min(30)];
    if !frac.is_empty() {
        let mut numerator: u128 = 0;
        let mut denominator: u128 = 1;
        for digit in frac.bytes() {
            numerator = numerator * 10 + u128::from(digit - b'0');
            denominator *= 10;
        }
        value = value.checked_add(numerator.checked_mul(unit)?.div_ceil(denominator))?;
    }
    Some(value)
}

/// Schema of a duration string field: a string with [`DURATION_PATTERN`].
pub fn duration_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": DURATION_PATTERN,
    })
}

/// Schema of an optional duration string field.
pub fn optional_duration_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "nullable": true,
        "pattern": DURATION_PATTERN,
    })
}

/// Schema of a list of duration strings.
pub fn duration_list_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "items": { "type": "string", "pattern": DURATION_PATTERN },
    })
}

/// Schema of a byte-size [`Quantity`] field: an integer, or a string matching [`SIZE_PATTERN`].
pub fn size_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "pattern": SIZE_PATTERN,
    })
}

/// Schema of an optional byte-size [`Quantity`] field.
pub fn optional_size_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "nullable": true,
        "pattern": SIZE_PATTERN,
    })
}

/// Schema of an optional size reported in a status: any quantity the cluster reports (no pattern).
pub fn status_size_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "x-kubernetes-int-or-string": true,
        "nullable": true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Duration {
        parse_duration("f", s).unwrap()
    }

    #[test]
    fn durations_in_go_syntax() {
        assert_eq!(d("72h"), Duration::from_secs(72 * 3600));
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("500ms"), Duration::from_millis(500));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("1.5h"), Duration::from_secs(5400));
        assert_eq!(d("2m0.5s"), Duration::from_millis(120_500));
        assert_eq!(d("10us"), Duration::from_micros(10));
        assert_eq!(d("7ns"), Duration::from_nanos(7));
        assert_eq!(d("0"), Duration::ZERO);
        assert_eq!(d("0s"), Duration::ZERO);
    }

    #[test]
    fn bad_durations_say_what_is_wrong() {
        for bad in ["", "3 days", "3d", "72", "h", "1.h", ".5h", "-1s", "1h 30m", "1H", "5sec"] {
            let err = parse_duration("retention.time", bad).unwrap_err();
            assert!(matches!(err, QuantityError::InvalidDuration { .. }), "{bad}: {err}");
        }
        let msg = parse_duration("retention.time", "3 days").unwrap_err().to_string();
        assert!(msg.starts_with("retention.time \"3 days\": expected a duration like 72h"), "{msg}");
        assert!(matches!(parse_duration("f", "99999999999999999999h"), Err(QuantityError::TooLarge { .. })));
    }

    fn b(s: &str) -> u64 {
        parse_size("f", s).unwrap()
    }

    #[test]
    fn sizes_as_kubernetes_quantities() {
        assert_eq!(b("50Gi"), 50 << 30);
        assert_eq!(b("500Mi"), 500 << 20);
        assert_eq!(b("1Ki"), 1024);
        assert_eq!(b("1k"), 1000);
        assert_eq!(b("10G"), 10_000_000_000);
        assert_eq!(b("1.5Gi"), 3 << 29);
        assert_eq!(b("1048576"), 1_048_576);
        assert_eq!(b("0.5"), 1, "fractions of a byte round up");
        assert_eq!(b("15Ei"), 15 << 60);
        assert_eq!(parse_size_quantity("f", &Quantity("2Ti".into())).unwrap(), 2 << 40);
    }

    #[test]
    fn bad_sizes_say_what_is_wrong() {
        for bad in ["", "fifty", "50GB", "50 Gi", "-1Gi", "1e3", "Gi", "1.Gi", "100m"] {
            assert!(matches!(parse_size("f", bad), Err(QuantityError::InvalidSize { .. })), "{bad}");
        }
        let msg = parse_size("brokers.storage.size", "50GB").unwrap_err().to_string();
        assert!(msg.starts_with("brokers.storage.size \"50GB\": expected a size like 50Gi"), "{msg}");
        assert!(matches!(parse_size("f", "16Ei"), Err(QuantityError::TooLarge { .. })));
    }

    #[test]
    fn patterns_agree_with_parsers() {
        // A tiny matcher for the two patterns would be a second parser; instead check the patterns
        // with the same regex engine the schema tests use (jsonschema), on the same inputs.
        let cases_d = ["72h", "1h30m", "0", "1.5h", "3 days", "3d", "", "-1s", ".5h", "1.h"];
        let cases_s = ["50Gi", "1.5Gi", "1k", "10", "50GB", "1e3", "-1", "1.Gi", "100m"];
        let dur =
            jsonschema::validator_for(&serde_json::json!({"type": "string", "pattern": DURATION_PATTERN})).unwrap();
        let size = jsonschema::validator_for(&serde_json::json!({"type": "string", "pattern": SIZE_PATTERN})).unwrap();
        for c in cases_d {
            assert_eq!(dur.is_valid(&serde_json::json!(c)), parse_duration("f", c).is_ok(), "duration {c:?}");
        }
        for c in cases_s {
            assert_eq!(size.is_valid(&serde_json::json!(c)), parse_size("f", c).is_ok(), "size {c:?}");
        }
    }
}
