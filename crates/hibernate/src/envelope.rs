//! The snapshot envelope: how a hibernated room's serialised state is framed
//! on disk, so that a damaged or foreign snapshot is always detected before
//! the server tries to deserialise it, and so that the format can evolve.
//!
//! Layout (16-byte header, then the body):
//!
//! | bytes  | field                                                   |
//! |--------|---------------------------------------------------------|
//! | 0..4   | magic `DMSN`                                            |
//! | 4      | format version, [`VERSION`]                             |
//! | 5      | codec id: how the server serialised the state (opaque)  |
//! | 6..8   | reserved, zero                                          |
//! | 8..12  | CRC-32 (IEEE) of every byte of the envelope but these 4 |
//! | 12..16 | uncompressed length, `u32` little-endian                |
//! | 16..   | the state, as one LZ4 block (not the LZ4 frame format)  |
//!
//! The checksum covers the header as well as the body, so a flipped codec id
//! is caught too. Decoding never allocates more than the declared length,
//! which is itself bounded by [`MAX_RAW_BYTES`], and never panics.

/// First four bytes of every envelope.
pub const MAGIC: [u8; 4] = *b"DMSN";
/// The envelope format this build writes and reads.
pub const VERSION: u8 = 1;
/// Size of the fixed header before the compressed body.
pub const HEADER_BYTES: usize = 16;
/// Largest state an envelope may hold (256 MiB): bounds what decoding a
/// damaged length field could make the server allocate.
pub const MAX_RAW_BYTES: usize = 256 << 20;

const CHECKSUM: std::ops::Range<usize> = 8..12;

/// Why bytes are not a valid envelope.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Fewer bytes than the header.
    #[error("snapshot envelope is {len} bytes, shorter than its {HEADER_BYTES}-byte header")]
    TooShort {
        /// Length of the bytes given.
        len: usize,
    },
    /// The bytes do not start with [`MAGIC`].
    #[error("snapshot envelope has a bad magic number")]
    BadMagic,
    /// A format version this build does not read.
    #[error("snapshot envelope format version {0} is not supported (this build reads {VERSION})")]
    UnknownVersion(u8),
    /// The checksum does not match: the bytes were damaged or truncated.
    #[error("snapshot envelope checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    ChecksumMismatch {
        /// Checksum stored in the header.
        stored: u32,
        /// Checksum of the bytes as found.
        computed: u32,
    },
    /// The reserved header bytes are not zero (a checksummed but unknown
    /// extension of the format).
    #[error("snapshot envelope has non-zero reserved bytes")]
    ReservedNotZero,
    /// The declared length is over [`MAX_RAW_BYTES`], or the body does not
    /// decompress to exactly the declared length.
    #[error("snapshot envelope length is wrong: declared {declared} bytes, found {found} (max {MAX_RAW_BYTES})")]
    BadLength {
        /// Uncompressed length declared in the header.
        declared: usize,
        /// Length actually decompressed, or the declared one when it is over the maximum.
        found: usize,
    },
    /// The state to encode is larger than [`MAX_RAW_BYTES`].
    #[error("room state is {len} bytes, more than the snapshot limit of {MAX_RAW_BYTES} bytes")]
    TooLarge {
        /// Length of the state.
        len: usize,
    },
    /// The body is not a valid LZ4 block.
    #[error("snapshot envelope body does not decompress: {0}")]
    Decompress(String),
}

/// Wraps a serialised room state: compresses it and adds the header.
///
/// # Panics
///
/// If `raw` is larger than [`MAX_RAW_BYTES`]; use [`try_encode`] when the
/// state's size is not bounded by the caller.
pub fn encode(codec: u8, raw: &[u8]) -> Vec<u8> {
    match try_encode(codec, raw) {
        Ok(envelope) => envelope,
        Err(error) => panic!("envelope::encode: {error}"),
    }
}

/// Wraps a serialised room state, or refuses one larger than [`MAX_RAW_BYTES`].
pub fn try_encode(codec: u8, raw: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
    if raw.len() > MAX_RAW_BYTES {
        return Err(EnvelopeError::TooLarge { len: raw.len() });
    }
    let raw_len = u32::try_from(raw.len()).expect("MAX_RAW_BYTES fits in u32");
    let mut out = vec![0u8; HEADER_BYTES + lz4_flex::block::get_maximum_output_size(raw.len())];
    out[0..4].copy_from_slice(&MAGIC);
    out[4] = VERSION;
    out[5] = codec;
    out[12..16].copy_from_slice(&raw_len.to_le_bytes());
    let body_len = lz4_flex::block::compress_into(raw, &mut out[HEADER_BYTES..])
        .expect("the output buffer has LZ4's maximum output size");
    out.truncate(HEADER_BYTES + body_len);
    let checksum = checksum(&out);
    out[CHECKSUM].copy_from_slice(&checksum.to_le_bytes());
    debug_assert_eq!(decode(&out).as_ref().map(|(c, r)| (*c, r.as_slice())), Ok((codec, raw)));
    Ok(out)
}

/// Checks and unwraps an envelope, returning the codec id and the state.
pub fn decode(bytes: &[u8]) -> Result<(u8, Vec<u8>), EnvelopeError> {
    if bytes.len() < HEADER_BYTES {
        return Err(EnvelopeError::TooShort { len: bytes.len() });
    }
    if bytes[0..4] != MAGIC {
        return Err(EnvelopeError::BadMagic);
    }
    if bytes[4] != VERSION {
        return Err(EnvelopeError::UnknownVersion(bytes[4]));
    }
    let stored = u32::from_le_bytes(bytes[CHECKSUM].try_into().expect("the checksum field is 4 bytes"));
    let computed = checksum(bytes);
    if stored != computed {
        return Err(EnvelopeError::ChecksumMismatch { stored, computed });
    }
    if bytes[6..8] != [0, 0] {
        return Err(EnvelopeError::ReservedNotZero);
    }
    let codec = bytes[5];
    let declared = u32::from_le_bytes(bytes[12..16].try_into().expect("the length field is 4 bytes")) as usize;
    if declared > MAX_RAW_BYTES {
        return Err(EnvelopeError::BadLength { declared, found: declared });
    }
    let mut raw = vec![0u8; declared];
    let found = lz4_flex::block::decompress_into(&bytes[HEADER_BYTES..], &mut raw)
        .map_err(|error| EnvelopeError::Decompress(error.to_string()))?;
    if found != declared {
        return Err(EnvelopeError::BadLength { declared, found });
    }
    Ok((codec, raw))
}

/// CRC-32 of every byte except the checksum field.
fn checksum(envelope: &[u8]) -> u32 {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&envelope[..CHECKSUM.start]);
    hasher.update(&envelope[CHECKSUM.end..]);
    hasher.finalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Somewhat compressible, JSON-like text, as a room's state would be.
    fn state(len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len + 64);
        let mut i = 0u64;
        while out.len() < len {
            out.extend_from_slice(
                format!("{{\"id\":{i},\"name\":\"user-{}\",\"x\":{}}},", i * 7919 % 1000, i % 13).as_bytes(),
            );
            i += 1;
        }
        out.truncate(len);
        out
    }

    #[test]
    fn round_trips_several_sizes() {
        for len in [0, 1, 15, 16, 17, 1000, 64 * 1024, 1 << 20] {
            let raw = state(len);
            let envelope = encode(7, &raw);
            assert_eq!(decode(&envelope), Ok((7, raw)), "len {len}");
        }
        let incompressible: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        assert_eq!(decode(&encode(0, &incompressible)), Ok((0, incompressible)));
    }

    #[test]
    fn every_bit_flip_and_truncation_is_detected() {
        for len in [0, 40, 300] {
            let envelope = encode(3, &state(len));
            for bit in 0..envelope.len() * 8 {
                let mut damaged = envelope.clone();
                damaged[bit / 8] ^= 1 << (bit % 8);
                assert!(decode(&damaged).is_err(), "len {len}: flip of bit {bit} went unnoticed");
            }
            for cut in 0..envelope.len() {
                assert!(decode(&envelope[..cut]).is_err(), "len {len}: truncation to {cut} went unnoticed");
            }
            let mut longer = envelope.clone();
            longer.push(0);
            assert!(decode(&longer).is_err(), "len {len}: an appended byte went unnoticed");
        }
    }

    #[test]
    fn errors_name_the_fault() {
        let envelope = encode(1, b"hello hello hello");
        assert_eq!(decode(&envelope[..3]), Err(EnvelopeError::TooShort { len: 3 }));
        let mut bad = envelope.clone();
        bad[0] = b'X';
        assert_eq!(decode(&bad), Err(EnvelopeError::BadMagic));
        let mut bad = envelope.clone();
        bad[4] = 9;
        assert_eq!(decode(&bad), Err(EnvelopeError::UnknownVersion(9)));
        let mut bad = envelope.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        assert!(matches!(decode(&bad), Err(EnvelopeError::ChecksumMismatch { .. })));
    }

    /// A well-checksummed envelope whose length field lies (as a buggy or
    /// hostile writer could make one) must not allocate past the maximum, nor
    /// decode to the wrong length.
    #[test]
    fn lying_lengths_are_refused_without_allocating_them() {
        let reseal = |mut envelope: Vec<u8>, declared: u32| {
            envelope[12..16].copy_from_slice(&declared.to_le_bytes());
            let checksum = checksum(&envelope);
            envelope[CHECKSUM].copy_from_slice(&checksum.to_le_bytes());
            envelope
        };
        let envelope = encode(1, &state(1000));
        assert!(matches!(decode(&reseal(envelope.clone(), u32::MAX)), Err(EnvelopeError::BadLength { .. })));
        assert!(decode(&reseal(envelope.clone(), 999)).is_err());
        assert!(matches!(
            decode(&reseal(envelope, 1001)),
            Err(EnvelopeError::BadLength { declared: 1001, found: 1000 })
        ));
    }

    #[test]
    fn too_large_states_are_refused() {
        let raw = vec![0u8; MAX_RAW_BYTES + 1];
        assert_eq!(try_encode(0, &raw), Err(EnvelopeError::TooLarge { len: MAX_RAW_BYTES + 1 }));
    }
}
