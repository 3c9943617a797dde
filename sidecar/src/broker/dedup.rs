//! De-duplication of retried sends: a client that resends a message it did store (its first
//! answer was lost or came late) gets the original answer instead of a second copy.
//!
//! Sends are remembered by (topic, message id) for [`DEDUP_WINDOW`], the latest
//! [`DEDUP_CAPACITY`] at most. Every message of every send is looked up and remembered, so the
//! table is laid out for the CPU cache: the remembered sends sit in a ring, oldest first, and a
//! set-associative index (like a CPU cache's) finds a send's place in the ring by its key.
//!
//! ```text
//!   index: 65,536 buckets of one cache line              ring: VecDeque<Send>, oldest first
//!   bucket = key % buckets                                (sequence numbers first .. first+len)
//!   +------------+------------+-----+------------+       +--------+--------+-----+--------+
//!   | seq | tag  | seq | tag  | ... | seq | tag  |  ...  |  1000  |  1001  | ... |  1099  |
//!   +------------+------------+-----+------------+       +--------+--------+-----+--------+
//!    8 ways of (u32 sequence number, u32 key bits)          ring[seq - first]
//! ```
//!
//! A lookup reads one bucket (a single cache line) and touches the ring only where a way's tag
//! matches and its sequence number is still in the ring, that is for a real retry or one in four
//! billion sends. Remembering writes a way of the same bucket (one still holding a forgotten send,
//! else the oldest) and appends to the ring; forgetting pops the ring's front and nothing else:
//! a way whose sequence number left the ring is free. With five ways per remembered send, a full
//! table has about two buckets that more than eight of its sends fell into (1 in 30,000); each
//! forgets its oldest send early.

use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::time::{Duration, Instant};

use foldhash::fast::SeedableRandomState;
use parking_lot::{Mutex, MutexGuard};

use super::SendReceipt;

/// Sends remembered at most.
pub(super) const DEDUP_CAPACITY: usize = 100_000;

/// How long a send is remembered at most.
const DEDUP_WINDOW: Duration = Duration::from_secs(300);

/// Ways per bucket of the index: eight ways of 8 bytes fill a 64-byte cache line.
const WAYS: usize = 8;

/// Buckets of the index: at least four ways per remembered send, rounded up to a power of two
/// (65,536 buckets, five ways per send).
const BUCKETS: usize = (DEDUP_CAPACITY * 4 / WAYS).next_power_of_two();

/// Recent sends, shared by every request of the broker.
///
/// Keys are computed without the lock ([`SendDedup::key_of`]); a request then takes the lock once
/// for all its lookups ([`SendDedup::lock`]) and once for remembering what it stored.
#[derive(Debug)]
pub(super) struct SendDedup {
    key: SeedableRandomState,
    check: SeedableRandomState,
    table: Mutex<Remembered>,
}

/// A send's place in [`SendDedup`]: a seeded hash of topic and message id, and a second,
/// independently seeded one that confirms a match (a false match needs two different sends to
/// agree on both).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct SendKey {
    key: u64,
    check: u64,
}

/// The remembered sends; see the module documentation for the layout.
#[derive(Debug)]
pub(super) struct Remembered {
    ring: VecDeque<Send>,
    /// Sequence number of `ring[0]`; the n-th send ever remembered has sequence number n
    /// (modulo 2^32, far more than the capacity).
    first: u32,
    index: Box<[Bucket]>,
}

/// One cache line of the index.
#[derive(Debug, Clone, Copy, Default)]
#[repr(align(64))]
struct Bucket([Way; WAYS]);

/// A send's sequence number and the high half of its key, which decides whether to look at it.
#[derive(Debug, Clone, Copy, Default)]
struct Way {
    seq: u32,
    tag: u32,
}

/// What a remembered send answered. Holds no strings (except a half message's transaction id),
/// so remembering a send allocates nothing.
#[derive(Debug)]
struct Send {
    key: SendKey,
    partition: u32,
    offset: u64,
    at: Instant,
    transaction_id: Option<Box<str>>,
}

impl Default for SendDedup {
    /// Randomly seeded, so no client can pick ids that all land in one bucket.
    fn default() -> Self {
        Self::with_hashers(SeedableRandomState::random(), SeedableRandomState::random())
    }
}

impl SendDedup {
    fn with_hashers(key: SeedableRandomState, check: SeedableRandomState) -> Self {
        Self { key, check, table: Mutex::new(Remembered::default()) }
    }

    /// The key of a send of message `id` to `topic`, computed once per message for both the
    /// lookup and the remembering.
    pub(super) fn key_of(&self, topic: &str, id: &str) -> SendKey {
        SendKey { key: self.key.hash_one((topic, id)), check: self.check.hash_one((topic, id)) }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, Remembered> {
        self.table.lock()
    }
}

impl SendKey {
    fn bucket(&self) -> usize {
        self.key as usize % BUCKETS
    }

    fn tag(&self) -> u32 {
        (self.key >> 32) as u32
    }
}

impl Default for Remembered {
    /// Allocated in full up front: growing would copy under the lock every send takes.
    fn default() -> Self {
        Self {
            ring: VecDeque::with_capacity(DEDUP_CAPACITY + 1),
            first: 0,
            index: vec![Bucket::default(); BUCKETS].into_boxed_slice(),
        }
    }
}

impl Remembered {
    /// Brings the index buckets of `keys` into the CPU cache before they are looked up or written.
    /// The index is megabytes, so each bucket is likely a cache miss; touched in one tight loop,
    /// the misses of a request's messages are waited for together instead of one at a time
    /// between the other work of each lookup.
    pub(super) fn warm(&self, keys: impl Iterator<Item = SendKey>) {
        let touched = keys.fold(0u32, |acc, key| acc ^ self.index[key.bucket()].0[0].tag);
        std::hint::black_box(touched);
    }

    /// What an earlier send under `key` (its topic and message id) answered, if it is remembered
    /// and younger than the window at `now`.
    pub(super) fn find(&self, key: SendKey, now: Instant) -> Option<SendReceipt> {
        let send = self.index[key.bucket()]
            .0
            .iter()
            .filter(|way| way.tag == key.tag())
            .filter_map(|way| self.send(way.seq))
            .find(|send| send.key == key)?;
        (now.saturating_duration_since(send.at) < DEDUP_WINDOW).then(|| SendReceipt {
            partition: send.partition,
            offset: send.offset,
            transaction_id: send.transaction_id.as_deref().unwrap_or_default().to_owned(),
        })
    }

    /// Remembers what a send of `key` answered, forgetting the oldest sends past the capacity or
    /// the window.
    pub(super) fn remember(&mut self, key: SendKey, receipt: &SendReceipt, now: Instant) {
        let seq = self.first.wrapping_add(self.ring.len() as u32);
        // A way whose send left the ring is free; else the bucket's oldest send makes room. (A send
        // stored twice, both copies in flight before either was remembered, takes two ways; a
        // lookup finds either answer, both true.)
        let age = |way: &Way| match self.position(way.seq) {
            Some(position) => self.ring.len() - position,
            None => usize::MAX,
        };
        let way = self.index[key.bucket()].0.iter().enumerate().max_by_key(|(_, way)| age(way)).map(|(i, _)| i);
        self.index[key.bucket()].0[way.expect("a bucket has ways")] = Way { seq, tag: key.tag() };
        let transaction_id = (!receipt.transaction_id.is_empty()).then(|| receipt.transaction_id.as_str().into());
        self.ring.push_back(Send {
            key,
            partition: receipt.partition,
            offset: receipt.offset,
            at: now,
            transaction_id,
        });
        while self.ring.len() > DEDUP_CAPACITY || self.ring.front().is_some_and(|s| now - s.at > DEDUP_WINDOW) {
            self.ring.pop_front();
            self.first = self.first.wrapping_add(1);
        }
    }

    /// Sends remembered now.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.ring.len()
    }

    /// Where send `seq` is in the ring, if it still is.
    fn position(&self, seq: u32) -> Option<usize> {
        let position = seq.wrapping_sub(self.first) as usize;
        (position < self.ring.len()).then_some(position)
    }

    fn send(&self, seq: u32) -> Option<&Send> {
        self.position(seq).map(|p| &self.ring[p])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Seeded the same in every run: which sends share a bucket is then the same every time.
    fn dedup() -> SendDedup {
        let seeded = |n| SeedableRandomState::with_seed(n, foldhash::SharedSeed::global_fixed());
        SendDedup::with_hashers(seeded(1), seeded(2))
    }

    /// Lookup and remembering by topic and id, as a send does them.
    fn get(dedup: &SendDedup, topic: &str, id: &str, now: Instant) -> Option<SendReceipt> {
        let (remembered, key) = (dedup.lock(), dedup.key_of(topic, id));
        remembered.warm(std::iter::once(key));
        remembered.find(key, now)
    }

    fn insert(dedup: &SendDedup, topic: &str, id: &str, receipt: &SendReceipt, now: Instant) {
        dedup.lock().remember(dedup.key_of(topic, id), receipt, now);
    }

    fn receipt(partition: u32, offset: u64, transaction_id: &str) -> SendReceipt {
        SendReceipt { partition, offset, transaction_id: transaction_id.into() }
    }

    /// Send `m{i}`, stored at offset `i` of partition 0.
    fn numbered(i: usize) -> SendReceipt {
        receipt(0, i as u64, "")
    }

    fn insert_numbered(dedup: &SendDedup, sends: std::ops::Range<usize>, now: Instant) {
        for i in sends {
            insert(dedup, "t", &format!("m{i}"), &numbered(i), now);
        }
    }

    fn is_remembered(dedup: &SendDedup, i: usize, now: Instant) -> bool {
        get(dedup, "t", &format!("m{i}"), now) == Some(numbered(i))
    }

    #[test]
    fn a_retried_send_gets_the_first_answer() {
        let dedup = dedup();
        let now = Instant::now();
        insert(&dedup, "orders", "id-1", &receipt(3, 42, ""), now);
        insert(&dedup, "orders", "id-2", &receipt(1, 7, "0-00000000000000a1"), now);
        assert_eq!(get(&dedup, "orders", "id-1", now), Some(receipt(3, 42, "")));
        assert_eq!(get(&dedup, "orders", "id-2", now), Some(receipt(1, 7, "0-00000000000000a1")));
        // The same id on another topic, or another id, is a different send.
        assert_eq!(get(&dedup, "payments", "id-1", now), None);
        assert_eq!(get(&dedup, "orders", "id-3", now), None);
    }

    /// The latest sends up to the capacity are remembered, all but the few whose bucket
    /// overflowed; older ones are forgotten.
    #[test]
    fn the_oldest_sends_are_forgotten_past_the_capacity() {
        let dedup = dedup();
        let now = Instant::now();
        let sent = 3 * DEDUP_CAPACITY;
        insert_numbered(&dedup, 0..sent, now);
        assert_eq!(dedup.lock().len(), DEDUP_CAPACITY);
        let remembered = |range: std::ops::Range<usize>| range.filter(|i| is_remembered(&dedup, *i, now)).count();
        assert_eq!(remembered(0..sent - DEDUP_CAPACITY), 0, "forgotten past the capacity");
        let latest = remembered(sent - DEDUP_CAPACITY..sent);
        assert!(latest >= DEDUP_CAPACITY - 10, "only {latest} of the latest {DEDUP_CAPACITY} sends remembered");
    }

    #[test]
    fn sends_are_forgotten_after_the_window() {
        let dedup = dedup();
        let start = Instant::now();
        insert(&dedup, "t", "old", &receipt(0, 1, ""), start);
        let later = start + DEDUP_WINDOW + Duration::from_secs(1);
        // Past the window an entry no longer answers, even before it is evicted ...
        assert_eq!(get(&dedup, "t", "old", later), None);
        // ... and the next send evicts it.
        insert(&dedup, "t", "new", &receipt(0, 2, ""), later);
        assert_eq!(dedup.lock().len(), 1);
        assert_eq!(get(&dedup, "t", "new", later), Some(receipt(0, 2, "")));
    }

    /// Two copies of one send stored (both in flight before either was remembered): either answer
    /// is given while both are remembered, and forgetting the earlier copy leaves the later one.
    #[test]
    fn a_send_stored_twice_is_remembered_until_its_later_copy_is_forgotten() {
        let dedup = dedup();
        let now = Instant::now();
        insert(&dedup, "t", "twice", &receipt(0, 1, ""), now);
        insert(&dedup, "t", "twice", &receipt(0, 2, ""), now);
        let answer = get(&dedup, "t", "twice", now).expect("remembered");
        assert!([1, 2].contains(&answer.offset), "{answer:?}");
        insert_numbered(&dedup, 0..DEDUP_CAPACITY - 1, now);
        // The first copy is forgotten now; the second is the oldest remembered send.
        assert_eq!(get(&dedup, "t", "twice", now), Some(receipt(0, 2, "")));
        insert(&dedup, "t", "one-more", &receipt(0, 0, ""), now);
        assert_eq!(get(&dedup, "t", "twice", now), None);
        assert_eq!(dedup.lock().len(), DEDUP_CAPACITY);
    }

    /// A full bucket gives its oldest way to a new send, so the newest sends of a bucket are found.
    #[test]
    fn a_full_bucket_forgets_its_oldest_send() {
        let dedup = dedup();
        let now = Instant::now();
        let bucket = dedup.key_of("t", "m0").bucket();
        let same_bucket: Vec<String> = (0..)
            .map(|i| format!("m{i}"))
            .filter(|id| dedup.key_of("t", id).bucket() == bucket)
            .take(WAYS + 2)
            .collect();
        for (i, id) in same_bucket.iter().enumerate() {
            insert(&dedup, "t", id, &receipt(0, i as u64, ""), now);
        }
        let found: Vec<bool> = same_bucket.iter().map(|id| get(&dedup, "t", id, now).is_some()).collect();
        assert_eq!(found[..2], [false, false], "the two oldest gave way");
        assert!(found[2..].iter().all(|f| *f), "{found:?}");
    }

    /// Sequence numbers wrap at 2^32; lookups and forgetting go on across the wrap.
    #[test]
    fn sequence_numbers_wrap() {
        let dedup = dedup();
        dedup.lock().first = u32::MAX - 5;
        let now = Instant::now();
        insert_numbered(&dedup, 0..20, now);
        assert!((0..20).all(|i| is_remembered(&dedup, i, now)));
    }
}
