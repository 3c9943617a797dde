//! Startup recovery: verify the commit log past the checkpoint and replay it into derived state.
//!
//! Every frame from the checkpoint's `replay_from` to the end of the log is checked (magic, length,
//! CRC32C, position). When a frame is bad, recovery looks for the next valid frame at the following
//! aligned positions:
//!
//! - nothing valid follows in the last segment: the tail was torn by a crash mid-write. The segment is
//!   cut at the bad frame (nothing complete before it is lost) and appends continue from there;
//! - a valid frame follows, or the damage sits in a sealed segment: that is corruption in the middle
//!   of the log. The damaged range is reported and skipped, and the valid records after it are kept
//!   and indexed, never silently truncated away.
//!
//! Only zeros up to the end of the last segment are not damage: the zero-filler had written them
//! ahead of the data (`zero_fill.rs`). The data ends there, and appends go on into the zeros.

use std::time::{Duration, Instant};

use crate::storage::StorageError;
use crate::storage::commitlog::CommitLog;
use crate::storage::frame::{self, ALIGN, FrameError, FrameHeader, HEADER_LEN};
use crate::storage::segment::Segment;

/// How much of a segment recovery reads per system call.
const CHUNK: usize = 8 << 20;

/// What recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Where the replay started.
    pub replay_from: u64,
    /// End of the valid log after recovery.
    pub log_end: u64,
    /// Frames replayed.
    pub records_replayed: u64,
    /// A torn tail that was cut off, if any.
    pub torn_tail: Option<TornTail>,
    /// Damaged ranges in the middle of the log that were skipped.
    pub corrupt_ranges: Vec<CorruptRange>,
    /// Wall time the scan took.
    pub duration: Duration,
}

/// An incomplete last write that recovery removed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// Where the segment was cut.
    pub position: u64,
    /// Bytes removed.
    pub bytes_dropped: u64,
}

/// A damaged stretch of the log, skipped by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptRange {
    /// First damaged byte.
    pub start: u64,
    /// First byte after the damage (a valid frame or the segment end).
    pub end: u64,
    /// What was wrong with the first frame.
    pub reason: String,
}

/// Reads a segment in large chunks while the scan walks it frame by frame.
struct ChunkReader<'a> {
    segment: &'a Segment,
    buf: Vec<u8>,
    buf_start: u64,
}

impl<'a> ChunkReader<'a> {
    fn new(segment: &'a Segment) -> Self {
        Self { segment, buf: Vec::new(), buf_start: segment.base() }
    }

    /// Up to `want` bytes starting at `position` (fewer only at the end of the segment).
    fn bytes_at(&mut self, position: u64, want: usize) -> Result<&[u8], StorageError> {
        let end = self.segment.end();
        let want = want.min((end - position) as usize);
        let have = position >= self.buf_start && position + want as u64 <= self.buf_start + self.buf.len() as u64;
        if !have {
            let n = (want.max(CHUNK) as u64).min(end - position) as usize;
            self.buf.resize(n, 0);
            self.segment
                .read_at(position, &mut self.buf)
                .map_err(|e| StorageError::io("read segment for recovery", self.segment.path(), e))?;
            self.buf_start = position;
        }
        let at = (position - self.buf_start) as usize;
        Ok(&self.buf[at..at + want])
    }
}

/// Scans the log from `from`, calling `visit` with every valid frame in order, repairing a torn
/// tail and reporting corrupt ranges. `visit` gets the header and the body.
pub fn scan(
    log: &CommitLog,
    from: u64,
    mut visit: impl FnMut(&FrameHeader, &[u8]) -> Result<(), StorageError>,
) -> Result<RecoveryReport, StorageError> {
    let started = Instant::now();
    let max_frame = log.max_frame();
    let mut report = RecoveryReport { replay_from: from, ..Default::default() };
    let segments = log.segments();
    let last = segments.len() - 1;
    for (i, segment) in segments.iter().enumerate() {
        if segment.end() <= from && i != last {
            continue;
        }
        let mut pos = from.max(segment.base());
        let mut reader = ChunkReader::new(segment);
        while pos < segment.end() {
            match frame_at(&mut reader, pos, max_frame)? {
                Ok((header, bytes)) => {
                    visit(&header, &bytes[HEADER_LEN..header.length as usize])?;
                    report.records_replayed += 1;
                    pos += header.padded_len();
                }
                Err(err) => {
                    // Only zeros up to the end of the last segment: the zero-filler's, not damage.
                    let zero_tail = i == last && matches!(err, FrameError::Zero | FrameError::Truncated);
                    if zero_tail && zeros_to_end(&mut reader, pos)? {
                        segment.end_data_at(pos);
                        continue;
                    }
                    match next_valid(&mut reader, pos + ALIGN, max_frame)? {
                        Some(next) => {
                            report.corrupt_ranges.push(CorruptRange { start: pos, end: next, reason: describe(&err) });
                            pos = next;
                        }
                        None if i == last => {
                            report.torn_tail = Some(TornTail { position: pos, bytes_dropped: segment.end() - pos });
                            segment.truncate(pos)?;
                        }
                        None => {
                            report.corrupt_ranges.push(CorruptRange {
                                start: pos,
                                end: segment.end(),
                                reason: describe(&err),
                            });
                            pos = segment.end();
                        }
                    }
                }
            }
        }
        if pos > segment.end() {
            // The cut fell inside the padding after the last complete frame: restore the padding so
            // the next frame starts aligned.
            segment.truncate(pos)?;
        }
    }
    report.log_end = log.end();
    log.mark_durable(report.log_end);
    report.duration = started.elapsed();
    Ok(report)
}

/// Whether the segment holds nothing but zeros from `from` to its end.
fn zeros_to_end(reader: &mut ChunkReader<'_>, from: u64) -> Result<bool, StorageError> {
    let end = reader.segment.end();
    let mut pos = from;
    while pos < end {
        let bytes = reader.bytes_at(pos, CHUNK)?;
        if bytes.iter().any(|&b| b != 0) {
            return Ok(false);
        }
        pos += bytes.len() as u64;
    }
    Ok(true)
}

/// The first position at or after `from` holding a valid frame, if any in this segment.
fn next_valid(reader: &mut ChunkReader<'_>, from: u64, max_frame: u32) -> Result<Option<u64>, StorageError> {
    let end = reader.segment.end();
    let mut pos = from;
    while pos + HEADER_LEN as u64 <= end {
        if frame_at(reader, pos, max_frame)?.is_ok() {
            return Ok(Some(pos));
        }
        pos += ALIGN;
    }
    Ok(None)
}

/// Decodes the frame at `pos`, reading only as many bytes as its length field asks for.
fn frame_at<'r>(
    reader: &'r mut ChunkReader<'_>,
    pos: u64,
    max_frame: u32,
) -> Result<Result<(FrameHeader, &'r [u8]), FrameError>, StorageError> {
    let length = frame::peek_length(reader.bytes_at(pos, HEADER_LEN)?);
    let want = length.map_or(HEADER_LEN, |l| (l.min(max_frame) as usize).max(HEADER_LEN));
    let bytes = reader.bytes_at(pos, want)?;
    Ok(frame::decode_header(bytes, pos, max_frame).map(|h| (h, bytes)))
}

fn describe(err: &FrameError) -> String {
    match err {
        FrameError::Truncated => "frame runs past the end of the segment".into(),
        FrameError::Zero => "zero-filled bytes where a frame should start".into(),
        FrameError::BadMagic => "bad magic number".into(),
        FrameError::BadLength(n) => format!("impossible frame length {n}"),
        FrameError::BadChecksum => "CRC32C mismatch".into(),
        FrameError::Misplaced { expected, found } => {
            format!("frame written for position {found} found at {expected}")
        }
        FrameError::BadKind(k) => format!("unknown record kind {k}"),
    }
}
