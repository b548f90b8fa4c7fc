//! permessage-deflate (RFC 7692), negotiated without context takeover in
//! either direction, so that no connection holds a compression window:
//!
//! - the server compresses each message on its own, so a broadcast is
//!   compressed once and the same compressed frame goes to every member
//!   that negotiated the extension (the framed-once rule holds, with one
//!   frame per encoding);
//! - clients are told `client_no_context_takeover`, so each message they
//!   send inflates on its own, with one inflater per core reset between
//!   messages, and its inflated size is bounded like any message's.
//!
//! Pure functions over bytes (and per-thread compressor state); the
//! reactor decides who gets which frame.

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};
use std::cell::RefCell;

/// The empty stored block a sync flush ends with; RFC 7692 §7.2.1 has the
/// sender strip it and the receiver append it again.
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The `Sec-WebSocket-Extensions` value of a 101 that accepts an offer.
const ACCEPT: &str = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
/// The same, for an offer that asked for `server_max_window_bits=15`, which
/// the response must then name (§7.1.2.1).
const ACCEPT_WINDOW_15: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15";

/// Picks the first permessage-deflate offer among the client's
/// `Sec-WebSocket-Extensions` header values that this server can accept,
/// and returns the response header value for it. An offer is declined
/// (RFC 7692 §5, §7.1) when it has an unknown or repeated parameter or a
/// bad value, or asks for a server window under 15 bits (every message is
/// compressed once for all members, with one window size). Declining every
/// offer is no error: the connection just goes uncompressed.
pub fn negotiate<'a>(header_values: impl Iterator<Item = &'a str>) -> Option<&'static str> {
    header_values.flat_map(|value| value.split(',')).find_map(accept_offer)
}

/// The response to one offer (`permessage-deflate; param; param=value`),
/// or `None` to decline it.
fn accept_offer(offer: &str) -> Option<&'static str> {
    let mut parts = offer.split(';').map(str::trim);
    if !parts.next()?.eq_ignore_ascii_case("permessage-deflate") {
        return None;
    }
    let mut seen: Vec<&str> = Vec::with_capacity(4);
    let mut server_window = false;
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((name, value)) => (name.trim(), Some(value.trim().trim_matches('"'))),
            None => (param, None),
        };
        if seen.iter().any(|s| s.eq_ignore_ascii_case(name)) {
            return None;
        }
        seen.push(name);
        let bits = |value: Option<&str>| value.and_then(|v| v.parse::<u8>().ok()).filter(|b| (8..=15).contains(b));
        match (name.to_ascii_lowercase().as_str(), value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => {}
            ("client_max_window_bits", None) => {}
            // The client's window is its own: one inflater of 15 bits reads any.
            ("client_max_window_bits", v) => {
                bits(v)?;
            }
            ("server_max_window_bits", v) => {
                if bits(v)? < 15 {
                    return None;
                }
                server_window = true;
            }
            _ => return None,
        }
    }
    Some(if server_window { ACCEPT_WINDOW_15 } else { ACCEPT })
}

thread_local! {
    /// The backend and level were measured (`cargo bench --bench codec --
    /// deflate`, 2 KB of JSON, this machine): zlib-rs at the default level
    /// compresses it to 512 B in 20 µs and inflates it in 4.3 µs; at the fast
    /// level 747 B in 8.6 µs; miniz_oxide takes 28 µs (497 B) and 6.3 µs. A
    /// broadcast is compressed once for all its members, so the bytes on the
    /// wire count more than the compression time: zlib-rs, default level.
    ///
    /// One raw-deflate compressor per thread (a core's, for its rooms),
    /// reset after each message: no context takeover, and no allocation of
    /// zlib's state per message.
    static COMPRESSOR: RefCell<Compress> = RefCell::new(Compress::new(Compression::default(), false));
}

/// The payload of a compressed message: `payload` deflated on its own, with
/// the sync-flush tail removed (RFC 7692 §7.2.1).
pub fn compress(payload: &[u8]) -> Vec<u8> {
    COMPRESSOR.with_borrow_mut(|compressor| {
        compressor.reset();
        // Deflate's worst case is a few bytes per 16 KiB stored block over
        // the input; the sync flush adds the tail and maybe a block header.
        let mut out = Vec::with_capacity(payload.len() + payload.len() / 1024 + 32);
        loop {
            let consumed = compressor.total_in() as usize;
            let status = compressor
                .compress_vec(&payload[consumed..], &mut out, FlushCompress::Sync)
                .expect("deflating into a buffer with room does not fail");
            let done = compressor.total_in() as usize == payload.len() && out.ends_with(&TAIL);
            if done || status == Status::StreamEnd {
                break;
            }
            out.reserve(out.capacity().max(64));
        }
        assert!(out.ends_with(&TAIL), "a sync flush ends with the empty stored block");
        out.truncate(out.len() - TAIL.len());
        out
    })
}

/// Why a compressed message could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum InflateError {
    /// It inflates past the message size limit (a zip bomb, say).
    #[error("message too big")]
    TooBig,
    /// It is not valid deflate data.
    #[error("invalid compressed data")]
    Corrupt,
}

/// Inflates client messages, one at a time (the client was told
/// `client_no_context_takeover`). One per core; holds zlib's window (about
/// 40 KiB) once, whatever the number of connections.
pub struct Inflater {
    decompress: Decompress,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Inflater")
    }
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater::new()
    }
}

impl Inflater {
    pub fn new() -> Inflater {
        Inflater { decompress: Decompress::new(false) }
    }

    /// The message whose compressed payload is `compressed`, if it inflates
    /// to at most `max_bytes`. Stops as soon as it would be longer, so a
    /// bomb costs at most `max_bytes` of memory and the time to make them.
    pub fn inflate(&mut self, compressed: &[u8], max_bytes: usize) -> Result<Vec<u8>, InflateError> {
        self.decompress.reset(false);
        let mut out: Vec<u8> = Vec::with_capacity(compressed.len().saturating_mul(4).max(64).min(max_bytes + 1));
        for input in [compressed, &TAIL[..]] {
            let start = self.decompress.total_in();
            loop {
                if out.len() == out.capacity() {
                    // One byte past the limit tells a message at the limit
                    // from one over it.
                    out.reserve(out.capacity().min(max_bytes + 1 - out.len()).max(1));
                }
                let consumed = (self.decompress.total_in() - start) as usize;
                let before = (consumed, out.len());
                let status = self
                    .decompress
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| InflateError::Corrupt)?;
                if out.len() > max_bytes {
                    return Err(InflateError::TooBig);
                }
                let consumed = (self.decompress.total_in() - start) as usize;
                match status {
                    // A final block may end the message early (RFC 7692
                    // §7.2.3.3 lets a sender set BFINAL); what follows is
                    // not part of it.
                    Status::StreamEnd => return Ok(out),
                    // All input taken, and room left: nothing is pending.
                    _ if consumed == input.len() && out.len() < out.capacity() => break,
                    _ if (consumed, out.len()) == before => return Err(InflateError::Corrupt),
                    _ => {}
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn offers_are_accepted_or_declined_by_the_rfc_rules() {
        let one = |value: &str| negotiate(std::iter::once(value));
        // What browsers send.
        assert_eq!(one("permessage-deflate; client_max_window_bits"), Some(ACCEPT));
        assert_eq!(one("permessage-deflate"), Some(ACCEPT));
        assert_eq!(one("permessage-deflate; server_no_context_takeover; client_no_context_takeover"), Some(ACCEPT));
        assert_eq!(one("permessage-deflate; client_max_window_bits=10"), Some(ACCEPT));
        assert_eq!(one("permessage-deflate; server_max_window_bits=15"), Some(ACCEPT_WINDOW_15));
        assert_eq!(one("permessage-deflate; server_max_window_bits=\"15\""), Some(ACCEPT_WINDOW_15));
        // Declined: a smaller server window, bad values, unknown or repeated parameters, other extensions.
        for declined in [
            "permessage-deflate; server_max_window_bits=9",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; client_max_window_bits=7",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; mystery",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
            "x-webkit-deflate-frame",
            "",
        ] {
            assert_eq!(one(declined), None, "{declined}");
        }
        // The first acceptable offer wins, across headers and lists.
        let offers = ["permessage-deflate; server_max_window_bits=8, permessage-deflate; server_max_window_bits=15"];
        assert_eq!(negotiate(offers.into_iter()), Some(ACCEPT_WINDOW_15));
        assert_eq!(negotiate(["foo", "permessage-deflate"].into_iter()), Some(ACCEPT));
    }

    #[test]
    fn a_compressed_message_inflates_back_and_json_shrinks() {
        let json = r#"{"type":"cursor","user":"ann","x":120,"y":48,"doc":"lobby"}"#.repeat(40);
        let compressed = compress(json.as_bytes());
        assert!(compressed.len() * 10 < json.len(), "{} of {} bytes", compressed.len(), json.len());
        let mut inflater = Inflater::new();
        assert_eq!(inflater.inflate(&compressed, json.len()).unwrap(), json.as_bytes());
        // The inflater is reset between messages.
        assert_eq!(inflater.inflate(&compress(b"second"), 100).unwrap(), b"second");
        assert_eq!(inflater.inflate(&compress(b""), 100).unwrap(), b"");
    }

    #[test]
    fn the_size_limit_holds_on_the_inflated_size() {
        let bomb = compress(&vec![0u8; 10 << 20]);
        assert!(bomb.len() < 20 << 10, "10 MiB of zeros compress to {} bytes", bomb.len());
        let mut inflater = Inflater::new();
        assert_eq!(inflater.inflate(&bomb, 1 << 20), Err(InflateError::TooBig));
        let at_limit = compress(&[7u8; 1000]);
        assert_eq!(inflater.inflate(&at_limit, 1000).unwrap().len(), 1000);
        assert_eq!(inflater.inflate(&at_limit, 999), Err(InflateError::TooBig));
        assert_eq!(inflater.inflate(&[0xff, 0xff, 0xff], 1000), Err(InflateError::Corrupt));
    }

    proptest! {
        #[test]
        fn any_payload_round_trips(payload in proptest::collection::vec(any::<u8>(), 0..5000)) {
            let mut inflater = Inflater::new();
            prop_assert_eq!(inflater.inflate(&compress(&payload), payload.len()).unwrap(), payload);
        }

        #[test]
        fn arbitrary_input_never_panics_or_passes_the_limit(input in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(out) = Inflater::new().inflate(&input, 1000) {
                prop_assert!(out.len() <= 1000);
            }
        }
    }
}
