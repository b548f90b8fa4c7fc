//! How a room's storage keys are laid out in the `storage` database, so that
//! they sort exactly as the user keys do even when a user key is longer than
//! LMDB's key limit.
//!
//! Every LMDB key starts with the room's number (8 bytes, big-endian, from
//! the `rooms` database), so one room's keys are contiguous and a prefix
//! range lists them. After it comes the user key `k`, placed according to
//! `L`, the *inline limit* (LMDB's maximum key size less 9, fixed when the
//! store is created and kept in `meta`):
//!
//! - `len(k) < L`: `number ++ k` holds the value;
//! - `len(k) == L`: `number ++ k ++ 0x00` holds the value;
//! - `len(k) > L`: `number ++ k[..L] ++ 0x01` holds a *bucket*: every such
//!   long key sharing that `L`-byte prefix, as `(k[L..], value)` entries
//!   sorted by `k[L..]`.
//!
//! Why the order is exact: for two user keys `a < b`, call `form` the LMDB
//! key above (a bucket's key for a long key). If they differ within their
//! first `min(len, L)` bytes, both forms differ there the same way. If `a`
//! is a proper prefix of `b` with `len(a) < L`, `form(a)` is a proper
//! prefix of `form(b)`. If `len(a) == L`, `b` is long and the forms end in
//! `0x00 < 0x01`. If both are long and share `L` bytes, they are in the same
//! bucket, ordered by the rest. So `a < b` implies `form(a) <= form(b)`, with
//! equality only inside one bucket, and walking LMDB keys in order while
//! expanding each bucket yields the user keys in order (and backwards the
//! same way). Keys of `L` bytes or fewer need no bucket and cost one LMDB
//! entry; only keys longer than about 1.9 KiB share a bucket, which is
//! rewritten whole on each change to it.

use crate::StoreError;

/// Length of the room number at the start of every storage key.
pub(crate) const ROOM_NUMBER_BYTES: usize = 8;
/// Bytes an LMDB key needs beyond the inline part: room number and tag.
pub(crate) const LAYOUT_OVERHEAD_BYTES: usize = ROOM_NUMBER_BYTES + 1;

const TAG_EXACT: u8 = 0x00;
const TAG_BUCKET: u8 = 0x01;

/// The storage key layout of one environment.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Layout {
    /// `L`: user keys shorter than this are stored as they are.
    pub(crate) inline_limit: usize,
}

/// Where a user key lives in LMDB.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    /// The LMDB key.
    pub(crate) lmdb_key: Vec<u8>,
    /// For a long key: the bucket holds it under `user_key[inline_limit..]`.
    pub(crate) in_bucket: bool,
}

/// A storage LMDB key, decoded.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded<'a> {
    /// The entry's value belongs to this user key.
    Key(&'a [u8]),
    /// The entry is a bucket of long keys starting with this prefix.
    Bucket(&'a [u8]),
}

impl Layout {
    /// The first key of room `number`'s range.
    pub(crate) fn room_start(number: u64) -> [u8; ROOM_NUMBER_BYTES] {
        number.to_be_bytes()
    }

    /// The first key past room `number`'s range.
    pub(crate) fn room_end(number: u64) -> [u8; ROOM_NUMBER_BYTES] {
        number.checked_add(1).expect("room numbers stay below u64::MAX").to_be_bytes()
    }

    /// Where `key` of room `number` lives.
    pub(crate) fn slot(&self, number: u64, key: &[u8]) -> Slot {
        let inline = key.len().min(self.inline_limit);
        let mut lmdb_key = Vec::with_capacity(LAYOUT_OVERHEAD_BYTES + inline);
        lmdb_key.extend_from_slice(&number.to_be_bytes());
        lmdb_key.extend_from_slice(&key[..inline]);
        let in_bucket = key.len() > self.inline_limit;
        if key.len() == self.inline_limit {
            lmdb_key.push(TAG_EXACT);
        } else if in_bucket {
            lmdb_key.push(TAG_BUCKET);
        }
        Slot { lmdb_key, in_bucket }
    }

    /// Decodes an LMDB key of the room's range (its number already checked).
    pub(crate) fn decode<'a>(&self, lmdb_key: &'a [u8]) -> Result<Decoded<'a>, StoreError> {
        let rest = lmdb_key
            .get(ROOM_NUMBER_BYTES..)
            .ok_or_else(|| StoreError::Corrupt("storage key shorter than a room number".into()))?;
        if rest.len() < self.inline_limit {
            return Ok(Decoded::Key(rest));
        }
        match rest.split_last() {
            Some((&TAG_EXACT, key)) if key.len() == self.inline_limit => Ok(Decoded::Key(key)),
            Some((&TAG_BUCKET, prefix)) if prefix.len() == self.inline_limit => Ok(Decoded::Bucket(prefix)),
            _ => Err(StoreError::Corrupt(format!("storage key of {} bytes has no valid layout tag", lmdb_key.len()))),
        }
    }
}

/// The entries of a bucket: `(rest of key, value)`, sorted by the rest.
pub(crate) type BucketEntries<'a> = Vec<(&'a [u8], &'a [u8])>;

/// Decodes a bucket: entries of `u32 LE rest length, rest, u32 LE value
/// length, value`, with strictly increasing, non-empty rests.
pub(crate) fn decode_bucket(mut bytes: &[u8]) -> Result<BucketEntries<'_>, StoreError> {
    fn take<'a>(bytes: &mut &'a [u8]) -> Option<&'a [u8]> {
        let (len, rest) = bytes.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        if rest.len() < len {
            return None;
        }
        let (field, rest) = rest.split_at(len);
        *bytes = rest;
        Some(field)
    }
    let corrupt = || StoreError::Corrupt("storage bucket does not decode".into());
    let mut entries: BucketEntries<'_> = Vec::new();
    while !bytes.is_empty() {
        let rest = take(&mut bytes).ok_or_else(corrupt)?;
        let value = take(&mut bytes).ok_or_else(corrupt)?;
        if rest.is_empty() || entries.last().is_some_and(|(previous, _)| *previous >= rest) {
            return Err(corrupt());
        }
        entries.push((rest, value));
    }
    if entries.is_empty() {
        return Err(corrupt());
    }
    Ok(entries)
}

/// Encodes bucket entries, which must be sorted by rest.
pub(crate) fn encode_bucket(entries: &[(&[u8], &[u8])]) -> Vec<u8> {
    debug_assert!(entries.windows(2).all(|pair| pair[0].0 < pair[1].0), "bucket entries are sorted");
    let len = entries.iter().map(|(rest, value)| 8 + rest.len() + value.len()).sum();
    let mut out = Vec::with_capacity(len);
    for (rest, value) in entries {
        for field in [rest, value] {
            let field_len = u32::try_from(field.len()).expect("keys and values are limited to u32 by the config");
            out.extend_from_slice(&field_len.to_le_bytes());
            out.extend_from_slice(field);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The LMDB key of a user key's slot, as a function of the key only.
    fn form(layout: Layout, key: &[u8]) -> Vec<u8> {
        layout.slot(7, key).lmdb_key
    }

    fn key() -> impl Strategy<Value = Vec<u8>> {
        // Few distinct bytes and lengths around the limit, so that prefixes,
        // exact-limit keys and shared buckets all occur.
        proptest::collection::vec(prop_oneof![Just(0u8), Just(1u8), Just(b'a'), Just(0xff)], 0..10)
    }

    proptest! {
        #[test]
        fn forms_are_monotonic_and_round_trip(a in key(), b in key(), limit in 1usize..6) {
            let layout = Layout { inline_limit: limit };
            let (fa, fb) = (form(layout, &a), form(layout, &b));
            if a < b {
                prop_assert!(fa <= fb, "{a:?} < {b:?} but {fa:?} > {fb:?}");
            }
            if fa == fb && a != b {
                prop_assert!(a.len() > limit && b.len() > limit && a[..limit] == b[..limit]);
            }
            match layout.decode(&fa).expect("own forms decode") {
                Decoded::Key(k) => prop_assert_eq!(k, &a[..]),
                Decoded::Bucket(prefix) => prop_assert_eq!(prefix, &a[..limit]),
            }
            prop_assert!(fa.len() <= LAYOUT_OVERHEAD_BYTES + limit);
        }
    }

    #[test]
    fn buckets_round_trip_and_refuse_garbage() {
        let entries: Vec<(&[u8], &[u8])> = vec![(b"a", b""), (b"ab", b"value"), (b"b", b"x")];
        let bytes = encode_bucket(&entries);
        assert_eq!(decode_bucket(&bytes).expect("own encoding decodes"), entries);
        assert!(decode_bucket(&bytes[..bytes.len() - 1]).is_err());
        assert!(decode_bucket(b"").is_err());
        let unsorted: Vec<(&[u8], &[u8])> = vec![(b"b", b""), (b"a", b"")];
        let mut bytes = Vec::new();
        for (rest, value) in unsorted {
            bytes.extend_from_slice(&encode_bucket(&[(rest, value)]));
        }
        assert!(decode_bucket(&bytes).is_err());
    }

    #[test]
    fn bad_tags_are_corrupt() {
        let layout = Layout { inline_limit: 2 };
        assert!(layout.decode(b"1234567").is_err());
        assert!(layout.decode(b"12345678ab\x02").is_err());
        assert_eq!(layout.decode(b"12345678a").expect("inline"), Decoded::Key(b"a"));
        assert_eq!(layout.decode(b"12345678ab\x00").expect("exact"), Decoded::Key(b"ab"));
        assert_eq!(layout.decode(b"12345678ab\x01").expect("bucket"), Decoded::Bucket(b"ab"));
    }
}
