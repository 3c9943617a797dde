//! The commit log's upkeep thread: keeps the active segment zero-filled ahead of the data under
//! Sync load (`zero_fill.rs`) and lets the page cache go of synced log that no reader needs or
//! that lies far behind (`cache_window.rs`). Neither is ever urgent, and both follow the log's
//! ends, so one thread looks at them every [`POLL`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::storage::StoreInner;
use crate::storage::cache_window::CacheWindow;
use crate::storage::zero_fill::ZeroFill;

/// How often the thread looks at the log. At 200 MB/s, appends cover 2 MB in that time, well
/// within the half of the zero-fill distance after which the filler tops up.
const POLL: Duration = Duration::from_millis(10);

/// The log's readers are asked where they have finished every this many looks (100 ms): the
/// answer walks every consumer group's progress, too much to do at every look on a broker with
/// thousands of partitions, and an answer up to 100 ms old only lets go of a little less.
const READERS_EVERY: u32 = 10;

/// The running upkeep thread; dropping it stops it.
pub(crate) struct LogUpkeep {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LogUpkeep {
    /// Starts keeping `store`'s active segment zero-filled `zero_fill_ahead` bytes past its data
    /// and its synced log cached `cache_window` bytes behind the durable end (0 turns either
    /// off); `None` when both are off. The thread holds the store weakly: it ends when the store
    /// is gone.
    pub(crate) fn start(
        store: Weak<StoreInner>,
        zero_fill_ahead: u64,
        cache_window: u64,
    ) -> std::io::Result<Option<Self>> {
        let fill = (zero_fill_ahead > 0).then(|| ZeroFill::new(zero_fill_ahead));
        let cache = (cache_window > 0).then(|| CacheWindow::new(cache_window));
        if fill.is_none() && cache.is_none() {
            return Ok(None);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("weir-log-upkeep".into())
            .spawn(move || run(&store, fill, cache, &stopped))?;
        Ok(Some(Self { stop, thread: Some(thread) }))
    }
}

impl Drop for LogUpkeep {
    /// Stops the thread and waits until it has let go of the log (at most one round of zeros
    /// and its fdatasync), so a store opened on the same directory next finds it quiet.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

fn run(store: &Weak<StoreInner>, mut fill: Option<ZeroFill>, mut cache: Option<CacheWindow>, stop: &AtomicBool) {
    let (mut finished, mut look) = (None, 0u32);
    // Not niced below the request threads: every append takes the segment's fill lock, so a
    // filler preempted while holding it would stall every append.
    while !stop.load(Ordering::Acquire) {
        let Some(inner) = store.upgrade() else { return };
        let (segment, capacity, durable) = (inner.log.active(), inner.log.segment_bytes(), inner.log.durable());
        let sync_groups = inner.log.sync_groups();
        if let Some(cache) = &mut cache {
            if look.is_multiple_of(READERS_EVERY) {
                finished = inner.readers.get().and_then(Weak::upgrade).map(|readers| readers.finished_before());
            }
            look = look.wrapping_add(1);
            if let Some(range) = cache.due(durable, finished) {
                inner.log.release(range.start, range.end);
                inner.metrics.cache_released_bytes.inc_by(range.end - range.start);
            }
        }
        drop(inner);
        if let Some(fill) = &mut fill {
            fill.tend(&segment, capacity, sync_groups, Instant::now());
        }
        std::thread::park_timeout(POLL);
    }
}
