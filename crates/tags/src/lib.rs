//! Compact per-core membership structures for dormouse: which local connection
//! slots belong to a room.
//!
//! The reactor keeps one [`MemberList`] per room it has members of, so that a
//! broadcast visits exactly the room's local sockets and nobody else. The crate
//! does no I/O and reads no clock; it is tested on its own against a plain
//! model. The tag index of a later change (room × tag → slots) is built from the
//! same swap-remove list.
#![forbid(unsafe_code)]

/// A set of connection slots with O(1) insert, O(1) removal by position and
/// iteration over exactly its members.
///
/// Each insert returns the member's position; the caller stores it in the
/// connection's record. Removal swaps the last member into the hole and reports
/// which slot moved, so the caller can update that record's position. Order of
/// iteration is unspecified.
#[derive(Debug, Default, Clone)]
pub struct MemberList {
    slots: Vec<u32>,
}

/// The outcome of [`MemberList::remove`]: the slot that now sits at the freed
/// position, if any, and must have its stored position updated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    pub slot: u32,
    pub pos: u32,
}

impl MemberList {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `slot` and returns its position.
    pub fn insert(&mut self, slot: u32) -> u32 {
        let pos = u32::try_from(self.slots.len()).expect("a member list holds fewer than 2^32 slots");
        self.slots.push(slot);
        pos
    }

    /// Removes the member at `pos`, which must hold `slot` (a mismatch is a
    /// broken caller invariant). Returns the member moved into `pos`, if any.
    pub fn remove(&mut self, pos: u32, slot: u32) -> Option<Moved> {
        let index = pos as usize;
        assert_eq!(self.slots.get(index), Some(&slot), "member position must point at its slot");
        self.slots.swap_remove(index);
        self.slots.get(index).map(|&moved| Moved { slot: moved, pos })
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The member slots, in unspecified order.
    pub fn as_slice(&self) -> &[u32] {
        &self.slots
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    #[derive(Debug, Clone)]
    enum Op {
        Join(u32),
        Leave(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![(0u32..64).prop_map(Op::Join), any::<usize>().prop_map(Op::Leave)]
    }

    proptest! {
        /// Any sequence of joins and leaves leaves the list holding exactly
        /// the model's members, with every stored position pointing at its slot.
        #[test]
        fn matches_a_vec_model(ops in proptest::collection::vec(op(), 0..200)) {
            let mut list = MemberList::new();
            let mut model: Vec<u32> = Vec::new();
            let mut positions: HashMap<u32, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Join(slot) => {
                        if positions.contains_key(&slot) { continue; }
                        let pos = list.insert(slot);
                        positions.insert(slot, pos);
                        model.push(slot);
                    }
                    Op::Leave(i) => {
                        if model.is_empty() { continue; }
                        let slot = model.remove(i % model.len());
                        let pos = positions.remove(&slot).unwrap();
                        if let Some(moved) = list.remove(pos, slot) {
                            positions.insert(moved.slot, moved.pos);
                        }
                    }
                }
                let mut got = list.as_slice().to_vec();
                got.sort_unstable();
                let mut want = model.clone();
                want.sort_unstable();
                prop_assert_eq!(got, want);
                for (&slot, &pos) in &positions {
                    prop_assert_eq!(list.as_slice()[pos as usize], slot);
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "member position must point at its slot")]
    fn removing_with_a_stale_position_is_a_bug() {
        let mut list = MemberList::new();
        list.insert(7);
        list.remove(0, 8);
    }
}
