//! A ready-made [`Party::snapshot`](crate::Party::snapshot) and
//! [`Party::restore`](crate::Party::restore) for room objects that are
//! `serde` types, in the compact `postcard` format:
//!
//! ```
//! #[derive(serde::Serialize, serde::Deserialize)]
//! struct Counter { count: u64 }
//!
//! impl dormouse::Party for Counter {
//!     fn new(_room: &dormouse::Room) -> Self { Counter { count: 0 } }
//!     fn snapshot(&self) -> Option<Vec<u8>> { dormouse::snapshot::encode(self) }
//!     fn restore(_room: &dormouse::Room, bytes: &[u8]) -> Result<Self, String> {
//!         dormouse::snapshot::decode(bytes)
//!     }
//! }
//! ```

/// `value` as postcard bytes; `None` (the room stays in memory) if it cannot
/// be serialised.
pub fn encode<T: serde::Serialize>(value: &T) -> Option<Vec<u8>> {
    match postcard::to_stdvec(value) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            tracing::warn!(%error, "cannot serialise a room object; it stays in memory");
            None
        }
    }
}

/// The value `encode` gave these bytes for.
pub fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    postcard::from_bytes(bytes).map_err(|e| format!("snapshot does not decode: {e}"))
}
