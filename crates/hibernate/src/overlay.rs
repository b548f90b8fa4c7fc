//! Read-your-writes for one room: the storage writes it has submitted that
//! the writer has not yet reported committed.
//!
//! A room submits a batch and may read the same keys before the writer
//! thread commits it; reads therefore consult the room's overlay first and
//! LMDB second. Each write is recorded with the sequence number of the batch
//! that carries it; when the writer reports a batch committed, the entries of
//! that batch and every earlier one are forgotten, because LMDB now holds
//! them (or something newer that the overlay still holds).

use std::collections::BTreeMap;
use std::ops::Bound;

/// Pending (submitted, not yet committed) storage writes of one room.
///
/// Pure data: the server records each batch's storage operations with the
/// batch's sequence number when it submits it, passes the overlay to
/// [`crate::Store::get`] and [`crate::Store::list`], and calls
/// [`Overlay::committed`] when the batch's completion callback runs. Sequence
/// numbers must not decrease from one recorded write to the next.
#[derive(Clone, Debug, Default)]
pub struct Overlay {
    /// The latest pending write of each key: a value, or `None` for a delete.
    entries: BTreeMap<Vec<u8>, Pending>,
    /// Sequence number of the latest pending `delete_all`, which hides every
    /// committed key (entries recorded after it are kept in `entries`).
    cleared_at: Option<u64>,
    /// Highest sequence number recorded, to check they do not decrease.
    last_seq: u64,
    /// Every recorded write, oldest first, so `committed` visits only the
    /// writes it forgets (a scan of `entries` per commit would make a
    /// stream of writes quadratic).
    order: std::collections::VecDeque<(u64, Vec<u8>)>,
}

#[derive(Clone, Debug)]
struct Pending {
    seq: u64,
    value: Option<Vec<u8>>,
}

/// What the overlay knows of one key.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Lookup<'a> {
    /// A pending put of this value.
    Value(&'a [u8]),
    /// A pending delete, or a pending `delete_all` with no later put.
    Deleted,
    /// Nothing pending: LMDB has the answer.
    Committed,
}

impl Overlay {
    /// An empty overlay.
    pub fn new() -> Overlay {
        Overlay::default()
    }

    /// Records a put carried by batch `seq`.
    pub fn put(&mut self, seq: u64, key: &[u8], value: &[u8]) {
        self.advance(seq);
        self.order.push_back((seq, key.to_vec()));
        self.entries.insert(key.to_vec(), Pending { seq, value: Some(value.to_vec()) });
    }

    /// Records a delete carried by batch `seq`.
    pub fn delete(&mut self, seq: u64, key: &[u8]) {
        self.advance(seq);
        self.order.push_back((seq, key.to_vec()));
        self.entries.insert(key.to_vec(), Pending { seq, value: None });
    }

    /// Records a `delete_all` carried by batch `seq`: every key reads as
    /// absent until a later put.
    pub fn delete_all(&mut self, seq: u64) {
        self.advance(seq);
        self.entries.clear();
        self.order.clear();
        self.cleared_at = Some(seq);
    }

    /// Forgets the writes of batches `seq` and earlier, once the writer has
    /// reported batch `seq` done. Call it whether the batch committed or
    /// failed: a failed batch's writes are lost, and the overlay must not
    /// keep showing them.
    pub fn committed(&mut self, seq: u64) {
        while self.order.front().is_some_and(|(s, _)| *s <= seq) {
            let (_, key) = self.order.pop_front().expect("checked");
            // A later write of the same key is still pending: keep it.
            if self.entries.get(&key).is_some_and(|pending| pending.seq <= seq) {
                self.entries.remove(&key);
            }
        }
        if self.cleared_at.is_some_and(|cleared| cleared <= seq) {
            self.cleared_at = None;
        }
        // Nothing pending: give the memory back. An emptied `BTreeMap`
        // keeps its root node (~600 B with these keys and values) and the
        // queue its buffer; a hibernated room that once wrote would hold
        // them for as long as it sleeps.
        if self.entries.is_empty() {
            self.entries = BTreeMap::new();
        }
        if self.order.is_empty() {
            self.order = std::collections::VecDeque::new();
        }
    }

    /// Whether nothing is pending, so reads go straight to LMDB.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.cleared_at.is_none()
    }

    /// What the overlay says about `key`.
    pub(crate) fn lookup(&self, key: &[u8]) -> Lookup<'_> {
        match self.entries.get(key) {
            Some(Pending { value: Some(value), .. }) => Lookup::Value(value),
            Some(Pending { value: None, .. }) => Lookup::Deleted,
            None if self.cleared_at.is_some() => Lookup::Deleted,
            None => Lookup::Committed,
        }
    }

    /// Whether a pending `delete_all` hides every committed key.
    pub(crate) fn hides_committed(&self) -> bool {
        self.cleared_at.is_some()
    }

    /// The pending writes of keys in `[lower, upper)`, ascending.
    pub(crate) fn range<'a>(
        &'a self,
        lower: Option<&'a [u8]>,
        upper: Option<&'a [u8]>,
    ) -> impl DoubleEndedIterator<Item = (&'a [u8], Option<&'a [u8]>)> + 'a {
        let lower = lower.map_or(Bound::Unbounded, Bound::Included);
        let upper = upper.map_or(Bound::Unbounded, Bound::Excluded);
        // BTreeMap::range panics on an empty or inverted range; callers
        // never pass one (the store returns early), but be safe.
        let valid = match (lower, upper) {
            (Bound::Included(lo), Bound::Excluded(hi)) => lo < hi,
            _ => true,
        };
        valid
            .then(|| self.entries.range::<[u8], _>((lower, upper)))
            .into_iter()
            .flatten()
            .map(|(key, pending)| (key.as_slice(), pending.value.as_deref()))
    }

    fn advance(&mut self, seq: u64) {
        debug_assert!(seq >= self.last_seq, "overlay sequence numbers must not decrease ({seq} < {})", self.last_seq);
        self.last_seq = self.last_seq.max(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_writes_win_and_commits_forget() {
        let mut overlay = Overlay::new();
        assert!(overlay.is_empty());
        overlay.put(1, b"a", b"1");
        overlay.put(2, b"b", b"2");
        overlay.delete(3, b"a");
        assert_eq!(overlay.lookup(b"a"), Lookup::Deleted);
        assert_eq!(overlay.lookup(b"b"), Lookup::Value(b"2"));
        assert_eq!(overlay.lookup(b"c"), Lookup::Committed);
        overlay.committed(2);
        assert_eq!(overlay.lookup(b"a"), Lookup::Deleted, "the delete of batch 3 is still pending");
        assert_eq!(overlay.lookup(b"b"), Lookup::Committed);
        overlay.committed(3);
        assert!(overlay.is_empty());
    }

    #[test]
    fn delete_all_hides_committed_keys_until_it_commits() {
        let mut overlay = Overlay::new();
        overlay.put(1, b"a", b"1");
        overlay.delete_all(2);
        overlay.put(3, b"b", b"3");
        assert_eq!(overlay.lookup(b"a"), Lookup::Deleted);
        assert_eq!(overlay.lookup(b"z"), Lookup::Deleted);
        assert_eq!(overlay.lookup(b"b"), Lookup::Value(b"3"));
        assert!(overlay.hides_committed());
        overlay.committed(2);
        assert!(!overlay.hides_committed());
        assert_eq!(overlay.lookup(b"z"), Lookup::Committed);
        assert_eq!(overlay.lookup(b"b"), Lookup::Value(b"3"));
        assert_eq!(overlay.range(Some(b"a"), None).collect::<Vec<_>>(), vec![(&b"b"[..], Some(&b"3"[..]))]);
        assert_eq!(overlay.range(Some(b"b"), Some(b"a")).count(), 0, "an inverted range is empty");
    }
}
