//! Where a room runs, and the one way a message leaves for it.
//!
//! Every core computes the same owner for a room from the hash its key
//! carries, so a room's events reach one core wherever its sockets are. A
//! socket's path, the fan-out and the room side never pick a core for a
//! room themselves: they ask [`State::send_to_owner`] (or
//! [`State::owns`]). Placement across nodes (the cluster) replaces this
//! file's answer, not its callers.

use super::State;
use crate::core_msg::CoreMsg;
use crate::room_key::RoomKey;
use std::sync::Arc;

/// Where rooms run: one of this process's cores, by the room's hash.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Placement {
    cores: usize,
}

impl Placement {
    pub fn new(cores: usize) -> Placement {
        assert!(cores > 0, "a server has at least one core");
        Placement { cores }
    }

    /// The core that owns `room`, the same on every core of the process.
    #[inline]
    pub fn owner(&self, room: &RoomKey) -> usize {
        (room.hash_value() % self.cores as u64) as usize
    }
}

impl State {
    /// Sends the message made for `room` to the core that owns it.
    pub(super) fn send_to_owner(&mut self, room: Arc<RoomKey>, msg: impl FnOnce(Arc<RoomKey>) -> CoreMsg) {
        let owner = self.shared.placement.owner(&room);
        self.send_to(owner, msg(room));
    }

    /// Whether this core owns `room`.
    pub(super) fn owns(&self, room: &RoomKey) -> bool {
        self.shared.placement.owner(room) == usize::from(self.index)
    }
}
