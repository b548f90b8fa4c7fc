//! The encoded identity of a room, used as the key of every per-room record.

use std::fmt;

/// The identity of a room, `(party, room id)`, encoded without ambiguity:
/// the party's length as a big-endian `u16`, the party's bytes, then the room
/// id's bytes. No two pairs share an encoding (`("ab", "c")` and
/// `("a", "bc")` differ in the length), so the bytes can key the snapshot,
/// alarm and room databases directly, and a room's records sort by party
/// first.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RoomKey(Vec<u8>);

impl RoomKey {
    /// Encodes `(party, room)`.
    ///
    /// # Panics
    ///
    /// If the party name is longer than 65535 bytes: party names come from the
    /// server's configuration, never from a peer.
    pub fn new(party: &str, room: &str) -> RoomKey {
        let party_len =
            u16::try_from(party.len()).expect("party names are at most 65535 bytes (they come from config)");
        let mut bytes = Vec::with_capacity(2 + party.len() + room.len());
        bytes.extend_from_slice(&party_len.to_be_bytes());
        bytes.extend_from_slice(party.as_bytes());
        bytes.extend_from_slice(room.as_bytes());
        RoomKey(bytes)
    }

    /// Decodes bytes made by [`RoomKey::as_bytes`], or `None` if they are not
    /// such an encoding. Used on keys read back from LMDB.
    pub fn from_bytes(bytes: &[u8]) -> Option<RoomKey> {
        let (len, rest) = bytes.split_first_chunk::<2>()?;
        let party_len = usize::from(u16::from_be_bytes(*len));
        if rest.len() < party_len {
            return None;
        }
        let (party, room) = rest.split_at(party_len);
        std::str::from_utf8(party).ok()?;
        std::str::from_utf8(room).ok()?;
        Some(RoomKey(bytes.to_vec()))
    }

    /// The party (kind of room) this room belongs to.
    pub fn party(&self) -> &str {
        let (party, _) = self.split();
        std::str::from_utf8(party).expect("a RoomKey holds UTF-8 by construction")
    }

    /// The room's id within its party.
    pub fn room(&self) -> &str {
        let (_, room) = self.split();
        std::str::from_utf8(room).expect("a RoomKey holds UTF-8 by construction")
    }

    /// The encoding, as stored in LMDB.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    fn split(&self) -> (&[u8], &[u8]) {
        let party_len = usize::from(u16::from_be_bytes([self.0[0], self.0[1]]));
        self.0[2..].split_at(party_len)
    }
}

impl fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RoomKey({:?}, {:?})", self.party(), self.room())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_is_unambiguous() {
        let a = RoomKey::new("ab", "c");
        let b = RoomKey::new("a", "bc");
        assert_ne!(a, b);
        assert_eq!((a.party(), a.room()), ("ab", "c"));
        assert_eq!((b.party(), b.room()), ("a", "bc"));
        assert_eq!(RoomKey::from_bytes(a.as_bytes()), Some(a.clone()));
        let empty = RoomKey::new("", "");
        assert_eq!((empty.party(), empty.room()), ("", ""));
        assert_eq!(RoomKey::from_bytes(empty.as_bytes()), Some(empty));
    }

    #[test]
    fn refuses_bad_encodings() {
        assert_eq!(RoomKey::from_bytes(b""), None);
        assert_eq!(RoomKey::from_bytes(b"\x00"), None);
        assert_eq!(RoomKey::from_bytes(b"\x00\x05abc"), None);
        assert_eq!(RoomKey::from_bytes(b"\x00\x01\xffa"), None);
        assert_eq!(RoomKey::from_bytes(b"\x00\x01a\xff"), None);
    }
}
