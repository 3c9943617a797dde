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
//! A thread therefore keeps the active segment zero-filled (and those zeros synced) a few MiB
//! ahead of the data. It also takes over the first touch of fresh page-cache pages, which
//! appends would otherwise pay. The price is that every byte reaches the disk twice: on volumes
//! whose write bandwidth is the limit, turn it off (`zero_fill_ahead` 0).
//!
//! Appends and the filler never overlap (see [`Segment::append`] and [`Segment::fill_zeros`]);
//! sealing a segment cuts off its zeros, and recovery recognises the zeros a crash left after
//! the last segment's data (`recovery.rs`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::storage::StoreInner;

/// Zeros written per system call. The filler holds the segment's fill lock that long, and the
/// file system holds the file's inode lock, which every append's `pwrite` needs too: a writer
/// waiting for it spins while the filler runs. With 1 MiB per call, copied into fresh page-cache
/// pages at up to 1.6 ns a byte in this VM, the spinning was 4–9% of the broker's CPU under Async
/// publishing; with 64 KiB, 0.2–0.4% (BENCHMARKS.md).
const CHUNK: usize = 64 << 10;

/// How often the filler looks at how far ahead it is. At 200 MB/s, appends cover 2 MB in that
/// time, well within the half of the distance after which it tops up.
const POLL: Duration = Duration::from_millis(10);

/// The running filler; dropping it stops it.
pub(crate) struct ZeroFiller {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ZeroFiller {
    /// Starts keeping `store`'s active segment zero-filled `ahead` bytes past its data. The thread
    /// holds the store weakly: it ends when the store is gone.
    pub(crate) fn start(store: Weak<StoreInner>, ahead: u64) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread =
            std::thread::Builder::new().name("weir-zero-fill".into()).spawn(move || run(&store, ahead, &stopped))?;
        Ok(Self { stop, thread: Some(thread) })
    }
}

impl Drop for ZeroFiller {
    /// Stops the filler and waits until it has let go of the log (at most one round of zeros
    /// and its fdatasync), so a store opened on the same directory next finds it quiet.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(thread) = self.thread.take() {
            thread.thread().unpark();
            let _ = thread.join();
        }
    }
}

fn run(store: &Weak<StoreInner>, ahead: u64, stop: &AtomicBool) {
    // Not niced below the request threads: right after a roll, appends run past the zeros and
    // wait for the fill lock, so a filler preempted while holding it would stall every append.
    let zeros = vec![0u8; CHUNK];
    // A segment the filler failed on is left alone (appends work without the zeros).
    let mut failed_base = None;
    while !stop.load(Ordering::Acquire) {
        let Some(inner) = store.upgrade() else { return };
        let (segment, capacity) = (inner.log.active(), inner.log.segment_bytes());
        drop(inner);
        if failed_base != Some(segment.base()) {
            let target = (segment.len() + ahead).min(capacity);
            // Top up once less than half the distance is left (or to the end of the segment):
            // fewer, larger rounds, each with one fdatasync.
            let due = segment.zeroed() < target.saturating_sub(ahead / 2)
                || (target == capacity && segment.zeroed() < capacity);
            if due && let Err(e) = fill(&segment, target, &zeros) {
                tracing::warn!(segment = %segment.path().display(), error = %e,
                    "zero-filling the commit log ahead of the writer failed; appends to this segment go on without it");
                failed_base = Some(segment.base());
            }
        }
        std::thread::park_timeout(POLL);
    }
}

/// Zero-fills `segment` up to file offset `target` and makes the zeros durable.
fn fill(segment: &crate::storage::segment::Segment, target: u64, zeros: &[u8]) -> std::io::Result<()> {
    let mut written = 0;
    while segment.zeroed() < target {
        match segment.fill_zeros(target, zeros)? {
            0 => break,
            n => written += n,
        }
    }
    if written > 0 {
        segment.sync()?;
    }
    Ok(())
}
