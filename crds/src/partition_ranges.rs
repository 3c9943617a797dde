//! The compact partition list used in `status.assignment[].partitions`: comma-separated ids and
//! inclusive ranges, ascending, e.g. `0-2,5,7-9`. An empty string means no partitions.

use std::collections::BTreeSet;

use thiserror::Error;

/// A partition list that is not of the form `0-2,5,7-9`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("partition list {value:?}: {reason}; expected ascending ids and ranges like 0-2,5,7-9")]
pub struct PartitionRangesError {
    /// The text that failed to parse.
    pub value: String,
    /// What was wrong with it.
    pub reason: String,
}

/// Parses `0-2,5` into the sorted ids `[0, 1, 2, 5]`.
///
/// Whitespace around items is tolerated; ranges must not be reversed; duplicates are rejected
/// (a partition belongs to one range only).
pub fn parse_partition_ranges(value: &str) -> Result<Vec<u32>, PartitionRangesError> {
    let fail = |reason: String| PartitionRangesError { value: value.to_owned(), reason };
    let mut ids = BTreeSet::new();
    if value.trim().is_empty() {
        return Ok(Vec::new());
    }
    for item in value.split(',') {
        let item = item.trim();
        let (lo, hi) = match item.split_once('-') {
            Some((lo, hi)) => (lo.trim(), hi.trim()),
            None => (item, item),
        };
        let parse = |s: &str| s.parse::<u32>().map_err(|_| fail(format!("{item:?} is not a partition id or range")));
        let (lo, hi) = (parse(lo)?, parse(hi)?);
        if lo > hi {
            return Err(fail(format!("range {item:?} is reversed")));
        }
        for id in lo..=hi {
            if !ids.insert(id) {
                return Err(fail(format!("partition {id} is listed twice")));
            }
        }
    }
    Ok(ids.into_iter().collect())
}

/// Formats partition ids (in any order, duplicates ignored) as `0-2,5`.
pub fn format_partition_ranges(ids: impl IntoIterator<Item = u32>) -> String {
    let ids: BTreeSet<u32> = ids.into_iter().collect();
    let mut out = String::new();
    let mut iter = ids.into_iter().peekable();
    while let Some(start) = iter.next() {
        let mut end = start;
        while iter.peek() == Some(&(end + 1)) {
            end += 1;
            iter.next();
        }
        if !out.is_empty() {
            out.push(',');
        }
        if start == end {
            out.push_str(&start.to_string());
        } else {
            out.push_str(&format!("{start}-{end}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(parse_partition_ranges("0-2,5").unwrap(), vec![0, 1, 2, 5]);
        assert_eq!(parse_partition_ranges("").unwrap(), Vec::<u32>::new());
        assert_eq!(parse_partition_ranges(" 3 , 1-2 ").unwrap(), vec![1, 2, 3]);
        assert_eq!(format_partition_ranges([5, 0, 2, 1, 7, 8, 9]), "0-2,5,7-9");
        assert_eq!(format_partition_ranges([]), "");
        assert_eq!(format_partition_ranges([4]), "4");
        let ids: Vec<u32> = (0..1024).filter(|i| i % 3 != 0).collect();
        assert_eq!(parse_partition_ranges(&format_partition_ranges(ids.clone())).unwrap(), ids);
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["a", "1-", "3-1", "1,1", "0-2,2", "1;2", "-1"] {
            let err = parse_partition_ranges(bad).unwrap_err();
            assert!(err.to_string().contains("expected ascending ids"), "{err}");
        }
    }
}
