//! Long polls of one group that wake on the same news need not all look for messages.
//!
//! A publication on a topic (a message, an acknowledgement) wakes every long poll waiting on it.
//! A group often has several waiting at once (an SDK push consumer keeps a receive per queue, the
//! benchmark four), and all but the first to look used to find nothing: 80% of claim passes at
//! 50,000 msgs/s with four receives in flight, each locking every partition's progress.
//!
//! A claim pass that ends with room left in its batch has taken everything the group could be
//! given when it started: it read every partition to its end. It records the news it had seen
//! before it started ([`DrainMark::drained`]); a long poll of the same group woken by news no newer
//! than that goes back to waiting without looking. Receives that wake at once may still look side
//! by side (before the first records its mark); a wake-up by the long poll's own timer (a lease
//! running out) always looks.

use std::sync::{Arc, Weak};

use parking_lot::Mutex;

use crate::storage::NewsSeen;

/// The newest news a claim pass of one group on one topic has drained.
#[derive(Debug, Default)]
pub(crate) struct DrainMark(Mutex<Option<NewsSeen>>);

impl DrainMark {
    /// A claim pass that started after `seen` took everything there was.
    pub(crate) fn drained(&self, seen: NewsSeen) {
        let mut mark = self.0.lock();
        *mark = Some(mark.map_or(seen, |m| m.max(seen)));
    }

    /// Whether a pass already drained everything up to `seen`.
    pub(crate) fn covers(&self, seen: NewsSeen) -> bool {
        self.0.lock().is_some_and(|m| m.covers(seen))
    }
}

/// The marks of the (group, topic) pairs that have receives waiting. A mark lives while a receive
/// holds it; a group without any starts afresh (and looks).
#[derive(Debug, Default)]
pub(crate) struct DrainMarks(Mutex<Marks>);

#[derive(Debug, Default)]
struct Marks {
    by_group_topic: hashbrown::HashMap<(Arc<str>, Arc<str>), Weak<DrainMark>, foldhash::fast::RandomState>,
    /// Size at which the map is next cleared of marks nobody holds.
    prune_at: usize,
}

impl DrainMarks {
    /// The mark shared by the receives of `group` (a broadcast client's own name) on `topic`.
    pub(crate) fn of(&self, group: &str, topic: &str) -> Arc<DrainMark> {
        let mut marks = self.0.lock();
        if let Some(mark) = marks.by_group_topic.get(&GroupTopic(group, topic)).and_then(Weak::upgrade) {
            return mark;
        }
        if marks.by_group_topic.len() >= marks.prune_at {
            marks.by_group_topic.retain(|_, mark| mark.strong_count() > 0);
            marks.prune_at = (2 * marks.by_group_topic.len()).max(64);
        }
        let mark = Arc::new(DrainMark::default());
        marks.by_group_topic.insert((Arc::from(group), Arc::from(topic)), Arc::downgrade(&mark));
        mark
    }
}

/// A (group, topic) key of borrowed parts, so a receive finds its mark without building a key.
/// Hashes as the tuple it stands for: `Arc<str>` and `&str` hash as the same `str`.
#[derive(Hash)]
struct GroupTopic<'a>(&'a str, &'a str);

impl hashbrown::Equivalent<(Arc<str>, Arc<str>)> for GroupTopic<'_> {
    fn equivalent(&self, key: &(Arc<str>, Arc<str>)) -> bool {
        *self.0 == *key.0 && *self.1 == *key.1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receives_of_a_group_share_a_mark_while_they_hold_it() {
        let marks = DrainMarks::default();
        let a = marks.of("g", "t");
        assert!(Arc::ptr_eq(&a, &marks.of("g", "t")));
        assert!(!Arc::ptr_eq(&a, &marks.of("g", "other")));
        assert!(!Arc::ptr_eq(&a, &marks.of("other", "t")));
        drop(a);
        for i in 0..1000 {
            marks.of(&format!("client-{i}"), "t");
        }
        assert!(marks.0.lock().by_group_topic.len() < 200, "marks nobody holds are pruned");
    }
}
