//! The shared commit log: every partition's messages and every consumer's acknowledgements, in one
//! sequence of segment files, so one fdatasync makes a whole group commit durable whatever the
//! partition count.
//!
//! ```text
//! commitlog/
//!   00000000000000000000.log   sealed   [0, 268_435_200)
//!   00000000000268435200.log   sealed   [268_435_200, 536_870_376)
//!   00000000000536870376.log   active   [536_870_376, end)   <- the writer appends here
//! ```
//!
//! Positions are global byte offsets; a segment starts exactly where the previous one ended, so
//! positions are dense and a follower can later stream the log byte for byte.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::lock::RwLock;
use bytes::Bytes;

use crate::storage::frame::{self, FrameHeader, HEADER_LEN};
use crate::storage::segment::{self, Segment};
use crate::storage::{StorageError, sync_dir};

/// Bytes between two frames that [`CommitLog::read_frames`] reads (and drops) rather than issue a
/// second read: a few acknowledgement records or another consumer's messages in between.
const MAX_READ_GAP: u64 = 4096;

/// The set of segments.
#[derive(Debug)]
pub struct CommitLog {
    dir: PathBuf,
    segment_bytes: u64,
    max_frame: u32,
    /// Sorted by base; the last one is the active segment.
    segments: RwLock<Vec<Arc<Segment>>>,
    /// Everything before this position was fdatasynced.
    durable: AtomicU64,
    /// Groups written that wait for an fdatasync (`Sync` appends), counted so the zero-filler
    /// can tell a Sync load from the Async flush timer (`zero_fill.rs`).
    sync_groups: AtomicU64,
    /// Everything before this position was let go of from the page cache (`release`): frames
    /// there are read past the cache (`Segment::read_direct`), and not read ahead into it.
    uncached_below: AtomicU64,
    /// Bytes read past the page cache (`weir_store_direct_read_bytes_total`).
    direct_read_bytes: prometheus::IntCounter,
}

impl CommitLog {
    /// Opens the segments in `dir` (creating the directory and a first segment at `initial_base`
    /// when there are none); reads past the page cache count their bytes in `direct_read_bytes`.
    pub fn open(
        dir: &Path,
        segment_bytes: u64,
        max_frame: u32,
        initial_base: u64,
        direct_read_bytes: prometheus::IntCounter,
    ) -> Result<Self, StorageError> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::io("create log dir", dir, e))?;
        let mut segments = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(|e| StorageError::io("list log dir", dir, e))? {
            let path = entry.map_err(|e| StorageError::io("list log dir", dir, e))?.path();
            if segment::parse_file_name(&path).is_some() {
                segments.push(Arc::new(Segment::open(&path)?));
            }
        }
        segments.sort_by_key(|s| s.base());
        for pair in segments.windows(2) {
            if pair[0].end() > pair[1].base() {
                return Err(StorageError::Corrupt {
                    position: Some(pair[1].base()),
                    reason: format!(
                        "segments overlap: {} ends at {} but {} starts at {}",
                        pair[0].path().display(),
                        pair[0].end(),
                        pair[1].path().display(),
                        pair[1].base()
                    ),
                });
            }
        }
        if segments.is_empty() {
            segments.push(Arc::new(Segment::create(dir, initial_base, segment_bytes)?));
        }
        Ok(Self {
            dir: dir.to_owned(),
            segment_bytes,
            max_frame,
            segments: RwLock::new(segments),
            // Set by recovery, once it knows where the data ends (the last segment's file may
            // go on with zeros, or with a torn write).
            durable: AtomicU64::new(0),
            sync_groups: AtomicU64::new(0),
            uncached_below: AtomicU64::new(0),
            direct_read_bytes,
        })
    }

    /// Largest frame accepted.
    pub fn max_frame(&self) -> u32 {
        self.max_frame
    }

    /// Capacity of a segment.
    pub fn segment_bytes(&self) -> u64 {
        self.segment_bytes
    }

    /// The segment the writer appends to.
    pub fn active(&self) -> Arc<Segment> {
        self.segments.read().last().expect("a log always has a segment").clone()
    }

    /// All segments, oldest first.
    pub fn segments(&self) -> Vec<Arc<Segment>> {
        self.segments.read().clone()
    }

    /// First retained position.
    pub fn start(&self) -> u64 {
        self.segments.read().first().map(|s| s.base()).unwrap_or(0)
    }

    /// End of written data.
    pub fn end(&self) -> u64 {
        self.active().end()
    }

    /// End of fdatasynced data.
    pub fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }

    /// Records that everything before `position` is on disk.
    pub fn mark_durable(&self, position: u64) {
        self.durable.fetch_max(position, Ordering::AcqRel);
    }

    /// Counts a written group that waits for an fdatasync.
    pub fn count_sync_group(&self) {
        self.sync_groups.fetch_add(1, Ordering::Relaxed);
    }

    /// Groups written so far that waited for an fdatasync.
    pub fn sync_groups(&self) -> u64 {
        self.sync_groups.load(Ordering::Relaxed)
    }

    /// Bytes held by all segments.
    pub fn total_bytes(&self) -> u64 {
        self.segments.read().iter().map(|s| s.len()).sum()
    }

    /// Seals the active segment (cutting its zero-filled space, syncing it) and starts a new one at
    /// its end.
    pub fn roll(&self) -> Result<Arc<Segment>, StorageError> {
        let old = self.active();
        old.seal().map_err(|e| StorageError::Fatal(format!("sealing {} failed: {e}", old.path().display())))?;
        self.mark_durable(old.end());
        let next = Arc::new(Segment::create(&self.dir, old.end(), self.segment_bytes)?);
        self.segments.write().push(next.clone());
        Ok(next)
    }

    /// The segment holding `position`, if still retained.
    pub fn segment_for(&self, position: u64) -> Option<Arc<Segment>> {
        let segments = self.segments.read();
        let i = segments.partition_point(|s| s.base() <= position);
        (i > 0).then(|| segments[i - 1].clone()).filter(|s| position < s.end())
    }

    /// Starts reading log positions `start..end` into the page cache in the background, except
    /// what the cache let go of (read past it when asked, see `read_run`).
    pub fn prefetch(&self, start: u64, end: u64) {
        let start = start.max(self.uncached_below.load(Ordering::Acquire));
        for segment in self.overlapping(start, end) {
            segment.prefetch(start, end);
        }
    }

    /// Lets the kernel drop synced log positions `start..end` from the page cache; from now on
    /// they are read past it.
    pub fn release(&self, start: u64, end: u64) {
        for segment in self.overlapping(start, end) {
            segment.release(start, end);
        }
        self.uncached_below.fetch_max(end, Ordering::AcqRel);
    }

    fn overlapping(&self, start: u64, end: u64) -> Vec<Arc<Segment>> {
        self.segments.read().iter().filter(|s| s.base() < end && s.end() > start).cloned().collect()
    }

    /// Reads and verifies the frame of `length` bytes at `position`; returns its header and body.
    pub fn read_frame(&self, position: u64, length: u32) -> Result<(FrameHeader, Bytes), StorageError> {
        let segment = self.segment_for(position).ok_or(StorageError::Expired { position })?;
        let buf = self
            .read_run(&segment, position, length as usize)
            .map_err(|e| StorageError::io("read log", segment.path(), e))?;
        self.verified(&segment, position, buf)
    }

    /// Reads and verifies the frames at `frames` (position and length of each), answering in the
    /// same order. Frames that lie close together in one segment are read with one system call
    /// into one buffer their bodies share: a consumer's batch is mostly a run of neighbouring
    /// frames (partitions are written round robin, and it takes them all in turn), and reading
    /// it frame by frame cost a `pread` and a buffer per delivered message.
    pub fn read_frames(&self, frames: &[(u64, u32)]) -> Vec<Result<(FrameHeader, Bytes), StorageError>> {
        let mut order: Vec<usize> = (0..frames.len()).collect();
        order.sort_unstable_by_key(|&i| frames[i].0);
        let mut results: Vec<Option<Result<(FrameHeader, Bytes), StorageError>>> = vec![None; frames.len()];
        let mut rest = &order[..];
        while let Some(&first) = rest.first() {
            let start = frames[first].0;
            let Some(segment) = self.segment_for(start) else {
                results[first] = Some(Err(StorageError::Expired { position: start }));
                rest = &rest[1..];
                continue;
            };
            let mut end = start + u64::from(frames[first].1);
            // A frame that runs past the written end fails alone, not the frames read with it.
            let first_fits = end <= segment.end();
            let run = 1 + rest[1..]
                .iter()
                .take_while(|&&i| {
                    let (position, length) = frames[i];
                    let close =
                        first_fits && position <= end + MAX_READ_GAP && position + u64::from(length) <= segment.end();
                    if close {
                        end = end.max(position + u64::from(length));
                    }
                    close
                })
                .count();
            let (members, after) = rest.split_at(run);
            rest = after;
            match self.read_run(&segment, start, (end - start) as usize) {
                Ok(buf) => {
                    for &i in members {
                        let (position, length) = frames[i];
                        let at = (position - start) as usize;
                        let frame = buf.slice(at..at + length as usize);
                        results[i] = Some(self.verified(&segment, position, frame));
                    }
                }
                Err(e) => {
                    let e = StorageError::io("read log", segment.path(), e);
                    for &i in members {
                        results[i] = Some(Err(e.clone()));
                    }
                }
            }
        }
        results.into_iter().map(|r| r.expect("every frame read")).collect()
    }

    /// Reads `len` bytes at `position` of `segment`: past the page cache when the cache let go of
    /// them (a consumer far behind, draining a backlog), through it otherwise. Reading released
    /// log through the cache costs twice: allocating its pages again (which the read-ahead
    /// request did on the serving thread) and copying out of them, 10% and 20% of the broker's
    /// time in a drain from disk (BENCHMARKS.md, "Deep backlog"); it would also push out what
    /// consumers keeping up read. If the direct read fails (or `O_DIRECT` is refused), the cache
    /// serves it after all.
    fn read_run(&self, segment: &Segment, position: u64, len: usize) -> std::io::Result<Bytes> {
        if position + len as u64 <= self.uncached_below.load(Ordering::Acquire) {
            match segment.read_direct(position, len) {
                Ok(Some(buf)) => {
                    self.direct_read_bytes.inc_by(len as u64);
                    return Ok(buf);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::debug!(segment = %segment.path().display(), error = %e, "direct read failed, reading through the page cache")
                }
            }
        }
        segment.read_vec(position, len).map(Bytes::from)
    }

    /// Checks that `frame`, read at `position` of `segment`, is an intact frame written there, and
    /// splits off its body.
    fn verified(&self, segment: &Segment, position: u64, frame: Bytes) -> Result<(FrameHeader, Bytes), StorageError> {
        let header = frame::decode_header(&frame, position, self.max_frame).map_err(|e| StorageError::Corrupt {
            position: Some(position),
            reason: format!("{e:?} in {}", segment.path().display()),
        })?;
        let body = frame.slice(HEADER_LEN..header.length as usize);
        Ok((header, body))
    }

    /// Deletes sealed segments that end at or before `position` and match `expired`; returns the new
    /// start position. The active segment is never deleted.
    pub fn delete_segments(
        &self,
        position: u64,
        mut expired: impl FnMut(&Segment) -> bool,
    ) -> Result<u64, StorageError> {
        let doomed: Vec<Arc<Segment>> = {
            let segments = self.segments.read();
            let sealed = &segments[..segments.len() - 1];
            sealed.iter().take_while(|s| s.end() <= position && expired(s)).cloned().collect()
        };
        if doomed.is_empty() {
            return Ok(self.start());
        }
        self.segments.write().drain(..doomed.len());
        for s in &doomed {
            std::fs::remove_file(s.path()).map_err(|e| StorageError::io("delete segment", s.path(), e))?;
        }
        sync_dir(&self.dir)?;
        Ok(self.start())
    }
}
