//! Zero-filling the active segment ahead of the writer.
//!
//! A segment's blocks are preallocated, but the file system marks them "unwritten" until data
//! lands in them, and the file grows with every append. So an fdatasync after an append into
//! fresh space also commits file system metadata (the extents turned written, the new file
//! length): a journal commit on every sync. Into blocks that were already written, within the
//! file's length, an fdatasync only has to write the data. On the build machine (ext4, virtio
//! disk) a 64 KiB write + fdatasync took 0.42–0.63 ms into a growing file and 0.25–0.28 ms into
//! a zero-filled one. Under Sync load the broker's fdatasyncs got shorter and the end-to-end
//! latency at a fixed rate lower; throughput stayed the same, since filling costs CPU too
//! (BENCHMARKS.md).
//!
//! The log's upkeep thread (`upkeep.rs`) therefore keeps the active segment zero-filled (and
//! those zeros synced) a few MiB ahead of the data while Sync appends are being made. It also
//! takes over the first touch of fresh page-cache pages, which appends would otherwise pay. The
//! price is that every byte reaches the disk twice, so the filler rests while only Async appends
//! come: their data is fdatasynced once per flush interval, off every request's path, and zeros
//! would only double the disk writes and hold the appends up behind the filler (Async publishing
//! went about a tenth faster without them; BENCHMARKS.md). On volumes whose write bandwidth is
//! the limit even under Sync load, turn it off (`zero_fill_ahead` 0).
//!
//! Appends and the filler never overlap (see [`Segment::append`] and [`Segment::fill_zeros`]);
//! sealing a segment cuts off its zeros, and recovery recognises the zeros a crash left after
//! the last segment's data (`recovery.rs`).

use std::time::{Duration, Instant};

#[cfg(doc)]
use crate::storage::commitlog::CommitLog;
use crate::storage::segment::Segment;

/// Zeros written per system call. The filler holds the segment's fill lock that long, and every
/// append waits for it (`Segment::append`). With 1 MiB per call, copied into fresh page-cache
/// pages at up to 1.6 ns a byte in this VM, an append could wait 1.7 ms; with 64 KiB, 0.1 ms at
/// most (BENCHMARKS.md).
const CHUNK: usize = 64 << 10;

/// What the filler remembers between the upkeep thread's looks (`upkeep.rs`).
pub(crate) struct ZeroFill {
    /// Bytes kept zero-filled past the data.
    ahead: u64,
    zeros: Vec<u8>,
    /// A segment the filler failed on is left alone (appends work without the zeros).
    failed_base: Option<u64>,
    /// The log's count of Sync groups at the last look ([`CommitLog::sync_groups`]).
    sync_groups_before: u64,
    sync_load: SyncLoad,
}

impl ZeroFill {
    /// Keeps the active segment zero-filled `ahead` bytes (more than 0) past its data.
    pub(crate) fn new(ahead: u64) -> Self {
        Self {
            ahead,
            zeros: vec![0u8; CHUNK],
            failed_base: None,
            sync_groups_before: 0,
            sync_load: SyncLoad::default(),
        }
    }

    /// One look, at `now`, at the active `segment` (of `capacity` bytes) of a log that has
    /// written `sync_groups` Sync groups so far: under a Sync load (see [`SyncLoad`]), tops the
    /// zeros up once less than half the distance is left (or to the segment's end).
    pub(crate) fn tend(&mut self, segment: &Segment, capacity: u64, sync_groups: u64, now: Instant) {
        // Sync groups since the last look (one poll ago at most): their fdatasyncs are running.
        let new_sync_groups = sync_groups != self.sync_groups_before;
        self.sync_groups_before = sync_groups;
        if !self.sync_load.look(new_sync_groups, now) || self.failed_base == Some(segment.base()) {
            return;
        }
        let target = (segment.len() + self.ahead).min(capacity);
        let due = segment.zeroed() < target.saturating_sub(self.ahead / 2)
            || (target == capacity && segment.zeroed() < capacity);
        let round = if new_sync_groups { SYNCED_ROUND } else { u64::MAX };
        if due && let Err(e) = fill(segment, target, &self.zeros, round) {
            tracing::warn!(segment = %segment.path().display(), error = %e,
                "zero-filling the commit log ahead of the writer failed; appends to this segment go on without it");
            self.failed_base = Some(segment.base());
        }
    }
}

/// Whether Sync appends are being made, judged from the looks that found new Sync groups. A run
/// of such looks, each less than [`SyncLoad::GAP`] after the one before, is a Sync load once it
/// has lasted [`SyncLoad::MIN_SPAN`], and stays one until a gap ends it. A lone burst, such as a
/// consumer group durably starting on every partition at once, is not: it would have the filler
/// double the disk writes of an Async load for nothing.
#[derive(Default)]
struct SyncLoad {
    /// The first and the last look of the current run.
    run: Option<(Instant, Instant)>,
}

impl SyncLoad {
    /// A Sync topic sending at least one message every two seconds keeps the load going.
    const GAP: Duration = Duration::from_secs(2);
    /// A group starting on 64 partitions writes 64 Sync records one after another, an fdatasync
    /// each (0.25–0.8 ms on the build machine): well under this.
    const MIN_SPAN: Duration = Duration::from_millis(200);

    /// One look at `now`, which found new Sync groups or not; returns whether a load is on.
    fn look(&mut self, new_groups: bool, now: Instant) -> bool {
        if new_groups {
            self.run = match self.run {
                Some((first, last)) if now.duration_since(last) < Self::GAP => Some((first, now)),
                _ => Some((now, now)),
            };
        }
        self.run.is_some_and(|(first, last)| {
            last.duration_since(first) >= Self::MIN_SPAN && now.duration_since(last) < Self::GAP
        })
    }
}

/// Zeros fdatasynced at a time while data fdatasyncs are running (see [`fill`]).
const SYNCED_ROUND: u64 = 256 << 10;

/// Zero-fills `segment` up to file offset `target`, fdatasyncing the zeros every `round` bytes and
/// at the end; returns how many fdatasyncs that took.
///
/// An fdatasync of appended data covers the whole file: one that comes while zeros are unsynced
/// writes them too, or waits for the filler's own fdatasync that is writing them. Under Sync load
/// a top-up of 4 MiB synced at its end held sends up for milliseconds, so while data is being
/// synced the zeros go in rounds of [`SYNCED_ROUND`] (send-ack p99 at the most Sync sends per
/// second about 6.5 ms before, 3.5 ms after; BENCHMARKS.md). In a look without new Sync groups
/// one fdatasync ends the top-up: small fdatasyncs would cost the filler CPU and buy nothing.
fn fill(segment: &Segment, target: u64, zeros: &[u8], round: u64) -> std::io::Result<u32> {
    let (mut unsynced, mut syncs) = (0, 0);
    loop {
        // 0 once `target` is reached (or appends or sealing went past it).
        let written = segment.fill_zeros(target, zeros)?;
        unsynced += written;
        if unsynced > 0 && (written == 0 || unsynced >= round) {
            segment.sync()?;
            (unsynced, syncs) = (0, syncs + 1);
        }
        if written == 0 {
            return Ok(syncs);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The round decides how many zeros a data fdatasync can meet; the last one is always synced,
    /// since appends go into them as if they were on disk.
    #[test]
    fn zeros_are_synced_in_rounds_only_when_asked_and_always_at_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let segment = Segment::create(dir.path(), 0, 64 << 20).unwrap();
        let zeros = vec![0; CHUNK];
        assert_eq!(fill(&segment, 4 << 20, &zeros, u64::MAX).unwrap(), 1, "one fdatasync for the top-up");
        assert_eq!(fill(&segment, 8 << 20, &zeros, SYNCED_ROUND).unwrap(), 16, "4 MiB in rounds of 256 KiB");
        assert_eq!(fill(&segment, (8 << 20) + 100, &zeros, SYNCED_ROUND).unwrap(), 1, "a short top-up is synced too");
        assert_eq!(fill(&segment, 8 << 20, &zeros, SYNCED_ROUND).unwrap(), 0, "nothing to fill, nothing to sync");
        assert_eq!(segment.zeroed(), (8 << 20) + 100);
    }

    /// The filler works under a Sync load, from the look that finds it lasting, until Sync
    /// groups stop coming; an Async-only log, and one with a lone burst of Sync groups, reaches
    /// the disk once.
    #[test]
    fn zeros_are_written_only_under_sync_load() {
        let dir = tempfile::tempdir().unwrap();
        let capacity = 64 << 20;
        let segment = Segment::create(dir.path(), 0, capacity).unwrap();
        let (ahead, step) = (1 << 20, 600 << 10);
        let mut filler = ZeroFill::new(ahead);
        let start = Instant::now();
        let at = |ms: u64| start + Duration::from_millis(ms);
        let mut data_end = 0;
        let mut append = |len: u64| {
            segment.append(data_end, &vec![1; len as usize]).unwrap();
            data_end += len;
            data_end
        };

        let end = append(100);
        filler.tend(&segment, capacity, 0, at(0));
        assert_eq!(segment.zeroed(), end, "Async appends only: no zeros");
        filler.tend(&segment, capacity, 64, at(10));
        filler.tend(&segment, capacity, 64, at(1000));
        assert_eq!(segment.zeroed(), end, "a lone burst of Sync groups: no zeros");

        for (ms, groups) in [(3000, 65), (3100, 66)] {
            filler.tend(&segment, capacity, groups, at(ms));
        }
        assert_eq!(segment.zeroed(), end, "Sync groups for 100 ms: not yet a load");
        filler.tend(&segment, capacity, 67, at(3200));
        assert_eq!(segment.zeroed(), end + ahead, "Sync groups for 200 ms: zeros ahead");

        let end = append(step);
        filler.tend(&segment, capacity, 67, at(5199));
        assert_eq!(segment.zeroed(), end + ahead, "topped up until the gap after the last Sync group");

        let zeroed = segment.zeroed();
        append(step);
        filler.tend(&segment, capacity, 67, at(5200));
        assert_eq!(segment.zeroed(), zeroed, "the Sync load is over: the filler rests");

        let end = append(step);
        for (ms, groups) in [(9000, 68), (9100, 69), (9200, 70)] {
            filler.tend(&segment, capacity, groups, at(ms));
        }
        assert_eq!(segment.zeroed(), end + ahead, "a new Sync load: zeros again");
    }
}
