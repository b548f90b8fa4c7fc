//! A room's name as the server passes it around: its party and id, with a
//! hash computed once, and the tables keyed by it.

use std::sync::Arc;

/// A room's identity: its party and id. Shared between cores by `Arc`.
///
/// It carries its hash, computed once when the key is made (per connection
/// or request, not per message) with a key chosen per process, so the
/// core's room tables (`RoomMap`) look a room up without hashing its names
/// again, and clients cannot choose names that collide or pile onto one core.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct RoomKey {
    pub party: Box<str>,
    pub id: Box<str>,
    hash: u64,
}

impl std::hash::Hash for RoomKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl RoomKey {
    pub fn new(party: impl Into<Box<str>>, id: impl Into<Box<str>>) -> RoomKey {
        static KEYS: std::sync::LazyLock<std::hash::RandomState> = std::sync::LazyLock::new(Default::default);
        let (party, id) = (party.into(), id.into());
        let hash = std::hash::BuildHasher::hash_one(&*KEYS, (&*party, &*id));
        RoomKey { party, id, hash }
    }

    /// The hash the key carries (what placement spreads rooms by).
    pub fn hash_value(&self) -> u64 {
        self.hash
    }
}

/// Hashes a [`RoomKey`] by the hash it carries.
#[derive(Default)]
pub(crate) struct RoomKeyHasher(u64);

impl std::hash::Hasher for RoomKeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `RoomKey`; anything else still hashes.
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(b)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// A table of rooms, hashed by their keys' own hashes.
pub(crate) type RoomMap<V> = std::collections::HashMap<Arc<RoomKey>, V, std::hash::BuildHasherDefault<RoomKeyHasher>>;

/// Where rooms run on a node: one of its cores, by the room's hash (the
/// same answer on every core, and for the cluster's gateway).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    cores: usize,
}

impl Placement {
    pub fn new(cores: usize) -> Placement {
        assert!(cores > 0, "a server has at least one core");
        Placement { cores }
    }

    /// The core that owns `room`.
    #[inline]
    pub fn owner(&self, room: &RoomKey) -> usize {
        (room.hash_value() % self.cores as u64) as usize
    }
}
