//! Compact per-core membership structures for dormouse: which local connection
//! slots belong to a room, and which of them carry a tag.
//!
//! The reactor keeps one [`TagIndex`] per (room, core): a broadcast to the
//! whole room visits exactly the room's local sockets, and a broadcast to a
//! tag visits exactly the sockets that carry it, touching no other record.
//! Tag names are interned per core by a [`TagInterner`], so records hold 4-byte
//! ids and each distinct name is stored once.
//!
//! The crate does no I/O and reads no clock; it is tested on its own against a
//! plain model.
#![forbid(unsafe_code)]

use smallvec::SmallVec;
use std::collections::HashMap;
use std::sync::Arc;

/// Most tags on one connection, counting its id (as PartyKit).
pub const MAX_TAGS: usize = 10;
/// Longest tag, in bytes (as PartyKit).
pub const MAX_TAG_BYTES: usize = 256;

/// An interned tag name, valid in the interner that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TagId(u32);

/// Maps tag names to small ids, counting references so that a name no
/// connection carries any more is forgotten (and its id reused).
#[derive(Debug, Default)]
pub struct TagInterner {
    ids: HashMap<Arc<str>, TagId>,
    entries: Vec<Interned>,
    free: Vec<u32>,
}

#[derive(Debug)]
struct Interned {
    name: Option<Arc<str>>,
    refs: u32,
}

impl TagInterner {
    pub fn new() -> Self {
        Self::default()
    }

    /// The id of `name`, adding one reference (and the name, if new).
    pub fn intern(&mut self, name: &str) -> TagId {
        if let Some(&id) = self.ids.get(name) {
            self.entries[id.0 as usize].refs += 1;
            return id;
        }
        let name: Arc<str> = name.into();
        let interned = Interned { name: Some(name.clone()), refs: 1 };
        let id = match self.free.pop() {
            Some(index) => {
                self.entries[index as usize] = interned;
                TagId(index)
            }
            None => {
                let index = u32::try_from(self.entries.len()).expect("fewer than 2^32 distinct tags");
                self.entries.push(interned);
                TagId(index)
            }
        };
        self.ids.insert(name, id);
        id
    }

    /// The id of `name` if some connection carries it.
    pub fn lookup(&self, name: &str) -> Option<TagId> {
        self.ids.get(name).copied()
    }

    /// Drops one reference to `id`; the last one forgets the name.
    pub fn release(&mut self, id: TagId) {
        let entry = &mut self.entries[id.0 as usize];
        assert!(entry.refs > 0, "a released tag was interned");
        entry.refs -= 1;
        if entry.refs == 0 {
            let name = entry.name.take().expect("a referenced tag has its name");
            self.ids.remove(&name);
            self.free.push(id.0);
        }
    }

    /// The name of a live id.
    pub fn name(&self, id: TagId) -> &str {
        self.entries[id.0 as usize].name.as_deref().expect("the id is referenced")
    }

    /// How many distinct names are referenced.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// A member's handle in its [`TagIndex`], returned by [`TagIndex::join`] and
/// kept by the caller (in the reactor, in the socket's record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MemberKey(pub u32);

/// One entry of a member list: the connection slot, and the member's key so
/// that a swap-remove can fix the moved member's stored position.
#[derive(Debug, Clone, Copy)]
struct Entry {
    slot: u32,
    key: u32,
}

#[derive(Debug, Clone, Copy)]
struct TagPos {
    tag: TagId,
    pos: u32,
}

/// What the index keeps per member: its slot, its position in the room's list
/// and, per tag, its position in that tag's list. Two tags fit inline; more
/// spill to the heap.
#[derive(Debug)]
pub struct TagRecord {
    slot: u32,
    pos: u32,
    tags: SmallVec<[TagPos; 2]>,
}

/// The size of [`TagRecord`], pinned here and reported in the docs.
pub const TAG_RECORD_BYTES: usize = size_of::<TagRecord>();
const _: () = assert!(TAG_RECORD_BYTES <= 32, "a member record stays compact");

/// The members of one room on one core, and for each tag its members.
///
/// Join, leave and each tag change are O(1) per tag (swap-remove with stored
/// positions); [`slots`](Self::slots) iterates exactly the members asked for.
#[derive(Debug, Default)]
pub struct TagIndex {
    records: slab::Slab<TagRecord>,
    all: Vec<Entry>,
    by_tag: HashMap<TagId, Vec<Entry>>,
}

impl TagIndex {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds connection `slot` with `tags` (duplicates count once) and returns
    /// its key.
    pub fn join<S: AsRef<str>>(&mut self, slot: u32, tags: &[S], interner: &mut TagInterner) -> MemberKey {
        let key = self.records.vacant_key() as u32;
        let pos = push(&mut self.all, Entry { slot, key });
        self.records.insert(TagRecord { slot, pos, tags: SmallVec::new() });
        for tag in tags {
            self.add_tag(key, tag.as_ref(), interner);
        }
        MemberKey(key)
    }

    /// Removes a member and every tag it carries.
    pub fn leave(&mut self, key: MemberKey, interner: &mut TagInterner) {
        let record = self.records.remove(key.0 as usize);
        for tp in &record.tags {
            self.remove_from_tag(tp.tag, tp.pos, key.0);
            interner.release(tp.tag);
        }
        if let Some(moved) = swap_remove(&mut self.all, record.pos, key.0) {
            self.records[moved.key as usize].pos = record.pos;
        }
    }

    /// Replaces a member's tags with `tags`.
    pub fn set_tags<S: AsRef<str>>(&mut self, key: MemberKey, tags: &[S], interner: &mut TagInterner) {
        let old: SmallVec<[TagPos; 2]> = self.records[key.0 as usize].tags.clone();
        for tp in old {
            if !tags.iter().any(|t| interner.lookup(t.as_ref()) == Some(tp.tag)) {
                self.remove_tag(key, tp.tag, interner);
            }
        }
        for tag in tags {
            self.add_tag(key.0, tag.as_ref(), interner);
        }
    }

    fn add_tag(&mut self, key: u32, name: &str, interner: &mut TagInterner) {
        let tag = interner.intern(name);
        let record = &self.records[key as usize];
        if record.tags.iter().any(|tp| tp.tag == tag) {
            interner.release(tag);
            return;
        }
        let pos = push(self.by_tag.entry(tag).or_default(), Entry { slot: record.slot, key });
        self.records[key as usize].tags.push(TagPos { tag, pos });
    }

    fn remove_tag(&mut self, key: MemberKey, tag: TagId, interner: &mut TagInterner) {
        let record = &mut self.records[key.0 as usize];
        let i = record.tags.iter().position(|tp| tp.tag == tag).expect("the member carries the tag");
        let tp = record.tags.swap_remove(i);
        self.remove_from_tag(tag, tp.pos, key.0);
        interner.release(tag);
    }

    fn remove_from_tag(&mut self, tag: TagId, pos: u32, key: u32) {
        let list = self.by_tag.get_mut(&tag).expect("a carried tag has a list");
        if let Some(moved) = swap_remove(list, pos, key) {
            let record = &mut self.records[moved.key as usize];
            let tp = record.tags.iter_mut().find(|tp| tp.tag == tag).expect("a listed member carries the tag");
            tp.pos = pos;
        }
        if list.is_empty() {
            self.by_tag.remove(&tag);
        }
    }

    /// The slots of every member (`None`) or of the members carrying `tag`,
    /// in unspecified order.
    pub fn slots(&self, tag: Option<TagId>) -> Slots<'_> {
        let list: &[Entry] = match tag {
            None => &self.all,
            Some(tag) => self.by_tag.get(&tag).map_or(&[], Vec::as_slice),
        };
        Slots(list.iter())
    }

    /// The slot a member was joined with.
    pub fn slot(&self, key: MemberKey) -> u32 {
        self.records[key.0 as usize].slot
    }

    /// The tags a member carries, in unspecified order.
    pub fn tags(&self, key: MemberKey) -> impl ExactSizeIterator<Item = TagId> + '_ {
        self.records[key.0 as usize].tags.iter().map(|tp| tp.tag)
    }

    pub fn has_tag(&self, key: MemberKey, tag: TagId) -> bool {
        self.records[key.0 as usize].tags.iter().any(|tp| tp.tag == tag)
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

/// Iterates member slots; see [`TagIndex::slots`].
#[derive(Debug, Clone)]
pub struct Slots<'a>(std::slice::Iter<'a, Entry>);

impl Iterator for Slots<'_> {
    type Item = u32;

    #[inline]
    fn next(&mut self) -> Option<u32> {
        self.0.next().map(|e| e.slot)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.0.size_hint()
    }
}

impl ExactSizeIterator for Slots<'_> {}

fn push(list: &mut Vec<Entry>, entry: Entry) -> u32 {
    let pos = u32::try_from(list.len()).expect("a member list holds fewer than 2^32 entries");
    list.push(entry);
    pos
}

/// Removes the entry at `pos` (which must be `key`'s) and returns the entry
/// moved into its place, if any.
fn swap_remove(list: &mut Vec<Entry>, pos: u32, key: u32) -> Option<Entry> {
    let index = pos as usize;
    assert_eq!(list.get(index).map(|e| e.key), Some(key), "member position must point at its entry");
    list.swap_remove(index);
    list.get(index).copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const NAMES: [&str; 5] = ["a", "b", "c", "dd", "e"];

    #[derive(Debug, Clone)]
    enum Op {
        Join(u32, Vec<usize>),
        Leave(usize),
        SetTags(usize, Vec<usize>),
    }

    fn tags() -> impl Strategy<Value = Vec<usize>> {
        proptest::collection::vec(0..NAMES.len(), 0..4)
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            3 => (0u32..64, tags()).prop_map(|(slot, tags)| Op::Join(slot, tags)),
            2 => any::<usize>().prop_map(Op::Leave),
            1 => (any::<usize>(), tags()).prop_map(|(i, tags)| Op::SetTags(i, tags)),
        ]
    }

    fn names(tags: &[usize]) -> Vec<&'static str> {
        tags.iter().map(|&t| NAMES[t]).collect()
    }

    /// The model: members as (slot, key, tag names), scanned linearly.
    struct Model(Vec<(u32, MemberKey, Vec<&'static str>)>);

    impl Model {
        fn tagged(&self, tag: Option<&str>) -> Vec<u32> {
            let mut slots: Vec<u32> = self
                .0
                .iter()
                .filter(|(_, _, tags)| tag.is_none_or(|t| tags.contains(&t)))
                .map(|&(slot, _, _)| slot)
                .collect();
            slots.sort_unstable();
            slots
        }
    }

    proptest! {
        /// Any sequence of joins, leaves and tag changes leaves the index
        /// listing, for the room and for every tag, exactly the model's
        /// members, and the interner holding exactly the names still carried.
        #[test]
        fn matches_a_vec_model(ops in proptest::collection::vec(op(), 0..200)) {
            let mut index = TagIndex::new();
            let mut interner = TagInterner::new();
            let mut model = Model(Vec::new());
            for op in ops {
                match op {
                    Op::Join(slot, tags) => {
                        if model.0.iter().any(|m| m.0 == slot) { continue; }
                        let tags = names(&tags);
                        let key = index.join(slot, &tags, &mut interner);
                        model.0.push((slot, key, tags));
                    }
                    Op::Leave(i) => {
                        if model.0.is_empty() { continue; }
                        let (_, key, _) = model.0.remove(i % model.0.len());
                        index.leave(key, &mut interner);
                    }
                    Op::SetTags(i, tags) => {
                        if model.0.is_empty() { continue; }
                        let i = i % model.0.len();
                        let tags = names(&tags);
                        index.set_tags(model.0[i].1, &tags, &mut interner);
                        model.0[i].2 = tags;
                    }
                }
                let mut all: Vec<u32> = index.slots(None).collect();
                all.sort_unstable();
                prop_assert_eq!(all, model.tagged(None));
                prop_assert_eq!(index.len(), model.0.len());
                for name in NAMES {
                    let want = model.tagged(Some(name));
                    let mut got: Vec<u32> = match interner.lookup(name) {
                        Some(tag) => index.slots(Some(tag)).collect(),
                        None => Vec::new(),
                    };
                    got.sort_unstable();
                    prop_assert_eq!(got, want);
                }
                for (slot, key, tags) in &model.0 {
                    prop_assert_eq!(index.slot(*key), *slot);
                    let mut got: Vec<&str> = index.tags(*key).map(|t| interner.name(t)).collect();
                    got.sort_unstable();
                    let mut want = tags.clone();
                    want.sort_unstable();
                    want.dedup();
                    prop_assert_eq!(got, want);
                }
                let carried: std::collections::BTreeSet<&str> =
                    model.0.iter().flat_map(|m| m.2.iter().copied()).collect();
                prop_assert_eq!(interner.len(), carried.len());
            }
        }
    }

    #[test]
    fn interned_ids_are_reused_once_released() {
        let mut interner = TagInterner::new();
        let a = interner.intern("a");
        assert_eq!(interner.intern("a"), a);
        interner.release(a);
        assert_eq!(interner.lookup("a"), Some(a));
        interner.release(a);
        assert_eq!(interner.lookup("a"), None);
        let b = interner.intern("b");
        assert_eq!(b, a, "the freed id is reused");
        assert_eq!(interner.name(b), "b");
    }

    #[test]
    fn an_unknown_tag_has_no_members() {
        let mut interner = TagInterner::new();
        let mut index = TagIndex::new();
        index.join(1, &["x"], &mut interner);
        let other = interner.intern("y");
        assert_eq!(index.slots(Some(other)).len(), 0);
        assert_eq!(index.slots(None).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    #[should_panic(expected = "member position must point at its entry")]
    fn a_stale_position_is_a_bug() {
        let mut list = vec![Entry { slot: 7, key: 0 }];
        swap_remove(&mut list, 0, 1);
    }
}
