//! Turn-sized groups: the appends a serving thread hands in during one turn of its runtime go to
//! the log as one group.
//!
//! A serving thread takes the requests that arrived on its connections in turns. Without
//! staging, each send or acknowledgement found the writer free and wrote a group of its own:
//! under pubsub load 27,000 `pwrite`s a second, each with its own publication. Staged, the first
//! append of a turn yields once; the thread's other ready requests stage theirs behind it, and
//! when it runs again it queues them all for the group commit (`writer`) in one go.
//!
//! ```text
//!  one turn of a serving thread:
//!    send A ──stage──► [A]         A is first: it yields
//!    send B ──stage──► [A B]
//!    ack  C ──stage──► [A B C]     (1 MiB staged: queued and written at once)
//!    ... the thread's other ready tasks run ...
//!    A runs again ──► digest [A B C] ──► queue them ──► group commit ──► one group, one publication
//! ```
//!
//! The turn's sent messages are digested together on the way (see `record_body`): a turn of
//! one-message sends still hashes its bodies side by side.
//!
//! Staging is per thread and only on current-thread runtimes (the serving threads'), where a
//! task never moves: a group never waits for, or answers, another thread's requests, and a
//! staged append is always written by its own thread. Elsewhere an append is queued and written
//! at once. A turn's group is capped at [`TURN_GROUP_BYTES`], which bounds how long the turn's
//! first append waits for the others to be written.

use std::cell::RefCell;

use super::Store;
use super::writer::{Append, GROUP_BUFFER_BYTES};

/// Staged bytes at which a turn's appends are written without waiting for the turn to end: the
/// capacity the writer's encoding buffer starts with, so a turn's group never grows it.
///
/// It was 64 KiB while a group's size decided how long its `pwrite`s were (larger writes drew
/// larger page-cache folios, which cost this VM dearly: see `segment::WRITE_SLICE`). Since writes
/// are cut at aligned 64 KiB file offsets whatever the group, fewer, larger groups only save
/// publications and wake-ups: four producers published 2-14% more (9 of 9 interleaved pairs),
/// pubsub consumed 1-7% more (7 of 7), Sync publishing and the Sync 50k end-to-end p99 were no
/// worse (BENCHMARKS.md, "Changes measured").
pub(super) const TURN_GROUP_BYTES: usize = GROUP_BUFFER_BYTES;

/// An append staged for a store during this turn.
struct StagedAppend {
    store: usize,
    append: Append,
    /// Bytes staged for `store` so far, this append's included: whether the turn's group is full
    /// is read off the store's newest entry instead of summed again for every append.
    store_bytes: usize,
}

thread_local! {
    /// Appends handed in on this thread during the current turn of its runtime.
    static STAGED: RefCell<Vec<StagedAppend>> = const { RefCell::new(Vec::new()) };
}

/// Whether the running task belongs to a current-thread runtime (the serving threads'), whose
/// tasks never move to another thread.
pub(super) fn on_current_thread_runtime() -> bool {
    tokio::runtime::Handle::try_current()
        .is_ok_and(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::CurrentThread)
}

/// The first append staged on this thread for a store. Dropped (after its yield, or with its
/// cancelled task), it queues and writes every append staged here for that store.
pub(super) struct Staged<'a>(&'a Store);

impl<'a> Staged<'a> {
    /// Stages `append`; returns the guard if it is the first staged for `store` on this thread.
    pub(super) fn stage(store: &'a Store, append: Append) -> Option<Self> {
        let id = store.identity();
        let (first, full) = STAGED.with_borrow_mut(|staged| {
            let earlier = staged.iter().rev().find(|s| s.store == id).map(|s| s.store_bytes);
            let store_bytes = earlier.unwrap_or(0) + append.bytes();
            staged.push(StagedAppend { store: id, append, store_bytes });
            (earlier.is_none(), store_bytes >= TURN_GROUP_BYTES)
        });
        if full && !first {
            write_staged(store);
        }
        first.then(|| Self(store))
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        write_staged(self.0);
    }
}

/// Queues the appends staged on this thread for `store`, in order, and writes them. The
/// thread's staging list keeps its capacity from turn to turn, so a turn allocates nothing here.
fn write_staged(store: &Store) {
    let id = store.identity();
    STAGED.with_borrow_mut(|staged| {
        store.committer.queue_all(staged.extract_if(.., |s| s.store == id).map(|s| s.append));
    });
    store.commit_waiting();
}
