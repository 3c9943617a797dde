//! Letting the page cache go of commit log that no reader needs any more.
//!
//! Everything appended lands in the page cache, and without this the cache keeps all of it until
//! the kernel needs the memory. Two things are wrong with that for a broker:
//!
//! - Filling page frames the kernel has not handed out for a while costs several times what
//!   refilling frames freed moments before does. On the build machine (a VM that gives free
//!   memory back to its host within a second) 2 GiB written in 64 KiB `pwrite`s took 4.7 s of
//!   system time into fresh frames and 0.67 s when each synced 32 MiB was dropped again, so the
//!   same frames came back; Async publishing of 3 million messages went from about 183,000 to
//!   250,000 msgs/s with the default window (BENCHMARKS.md).
//! - On Kubernetes the page cache is charged to the pod's memory. A cache bounded by the broker is
//!   a footprint the operator can size for, instead of reclaim at the pod's limit.
//!
//! So the log upkeep thread (`upkeep.rs`) lets go of synced log, a step at a time, up to the
//! later of two points: a window behind the durable end, and where the log's readers have
//! finished (the broker's consumer groups, [`LogReaders`](super::LogReaders)):
//!
//! ```text
//!   log start                                  upto                          durable       end
//!      [ let go of (read from disk if asked)    | kept cached                  | not synced |
//!                                               ^ the later of the window's edge (durable -
//!                                                 window) and the first message a reader still
//!                                                 needs (finished); moves on in whole steps
//! ```
//!
//! Consumers that keep up let the cache go moments after it was written; a consumer that falls
//! behind keeps what it still needs cached, up to the window.
//!
//! The price: a consumer further behind than the window, or one that starts later or is moved
//! back, reads from the disk. It reads what was let go of past the page cache (`O_DIRECT`, in
//! `CommitLog::read_run`, behind every read of the log): the disk fills its buffer directly, no
//! cache pages are allocated and copied out of, and draining a backlog does not push out what
//! the consumers that keep up read (BENCHMARKS.md "Deep backlog"). Only synced bytes are let go
//! of: for those the kernel just forgets clean pages, nothing is written or lost, and a direct
//! read has no dirty page to wait for.

use std::ops::Range;

/// Log bytes let go of at a time: one `fadvise` per segment per step, not one per look. A small
/// window moves on in steps of a quarter of itself.
pub(crate) const RELEASE_STEP: u64 = 16 << 20;

/// How far the page cache has been let go of, behind a window of `window` bytes.
#[derive(Debug)]
pub(crate) struct CacheWindow {
    window: u64,
    /// Log position below which the cache was let go of; `None` before the first look.
    released: Option<u64>,
}

impl CacheWindow {
    /// Keeps `window` bytes behind the durable end cached (more than 0).
    pub(crate) fn new(window: u64) -> Self {
        Self { window, released: None }
    }

    /// The log positions to let go of now that the log is synced up to `durable` and its
    /// readers no longer need what lies before `finished` (`None`: unknown, only the window
    /// counts): what lies behind either and was not let go of before, once that is a whole step.
    /// The first look only marks where it starts, so what a previous run of the broker left in
    /// the cache stays for consumers catching up after a restart (the kernel reclaims it as usual).
    pub(crate) fn due(&mut self, durable: u64, finished: Option<u64>) -> Option<Range<u64>> {
        let behind_window = durable.saturating_sub(self.window);
        let upto = finished.map_or(behind_window, |finished| behind_window.max(finished.min(durable)));
        let from = *self.released.get_or_insert(upto);
        let step = (self.window / 4).clamp(1, RELEASE_STEP);
        (upto >= from + step).then(|| {
            self.released = Some(upto);
            from..upto
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WINDOW: u64 = 64 << 20;

    /// Nothing inside the window is let go of, every range starts where the last one ended, and
    /// nothing is asked for in steps smaller than [`RELEASE_STEP`].
    #[test]
    fn ranges_follow_each_other_behind_the_window_in_whole_steps() {
        let mut cache = CacheWindow::new(WINDOW);
        assert_eq!(cache.due(0, None), None, "the first look only marks where it starts");
        assert_eq!(cache.due(WINDOW, None), None, "all of it is inside the window");
        assert_eq!(cache.due(WINDOW + RELEASE_STEP - 1, None), None, "less than a step behind the window");
        assert_eq!(cache.due(WINDOW + RELEASE_STEP, None), Some(0..RELEASE_STEP));
        assert_eq!(cache.due(WINDOW + RELEASE_STEP + 1, None), None, "what was let go of is not asked for again");
        let durable = WINDOW + 5 * RELEASE_STEP + 7;
        assert_eq!(cache.due(durable, None), Some(RELEASE_STEP..durable - WINDOW), "a jump is let go of in one range");
        assert_eq!(cache.due(durable, None), None);
    }

    /// A window smaller than four steps moves on in quarters of itself.
    #[test]
    fn a_small_window_moves_on_in_quarters() {
        let mut cache = CacheWindow::new(256 << 10);
        assert_eq!(cache.due(0, None), None);
        assert_eq!(cache.due((256 << 10) + (64 << 10) - 1, None), None);
        assert_eq!(cache.due((256 << 10) + (64 << 10), None), Some(0..64 << 10));
    }

    /// After a restart the log already holds data: what the last run left cached is kept, and
    /// letting go starts from the window behind the durable end found at the first look.
    #[test]
    fn a_restarted_broker_keeps_what_was_cached_before() {
        let mut cache = CacheWindow::new(WINDOW);
        let recovered = 10 << 30;
        assert_eq!(cache.due(recovered, None), None);
        let later = recovered + 2 * RELEASE_STEP;
        assert_eq!(cache.due(later, None), Some(recovered - WINDOW..later - WINDOW));
    }

    /// Log every reader has finished with is let go of ahead of the window, but never past the
    /// durable end; where readers are further behind than the window, the window still counts.
    #[test]
    fn what_readers_finished_with_goes_before_the_window() {
        let mut cache = CacheWindow::new(WINDOW);
        assert_eq!(cache.due(0, Some(0)), None);
        let durable = 3 * RELEASE_STEP;
        assert_eq!(cache.due(durable, Some(RELEASE_STEP - 1)), None, "less than a step finished");
        assert_eq!(cache.due(durable, Some(2 * RELEASE_STEP)), Some(0..2 * RELEASE_STEP));
        assert_eq!(
            cache.due(durable + RELEASE_STEP, Some(u64::MAX)),
            Some(2 * RELEASE_STEP..durable + RELEASE_STEP),
            "nothing unsynced"
        );
        let far = WINDOW + 10 * RELEASE_STEP;
        assert_eq!(
            cache.due(far, Some(RELEASE_STEP)),
            Some(durable + RELEASE_STEP..far - WINDOW),
            "a slow reader keeps only the window"
        );
    }
}
