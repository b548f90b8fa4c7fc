//! LMDB snapshots, per-room storage and alarms for dormouse.
//!
//! This crate does no socket I/O and reads no clock. It is intentionally empty
//! until the hibernation change fills it: the core server keeps every room
//! resident in memory until then.
#![forbid(unsafe_code)]
