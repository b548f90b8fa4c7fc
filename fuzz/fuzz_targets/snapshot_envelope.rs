//! The snapshot envelope decoder on arbitrary bytes (a damaged snapshot):
//! no panic, and whatever decodes encodes back to something that decodes
//! to the same state.
#![no_main]

use dormouse_hibernate::envelope::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((codec, raw)) = decode(data) {
        let again = encode(codec, &raw);
        assert_eq!(decode(&again).expect("a fresh envelope decodes"), (codec, raw));
    }
});
