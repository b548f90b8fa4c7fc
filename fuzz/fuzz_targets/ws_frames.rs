//! The WebSocket frame decoder on arbitrary bytes, fed in chunks the way the
//! reactor feeds it (unconsumed bytes are kept and presented again, also
//! after an error): no panic, every message within the size limit, every
//! close code valid, with and without permessage-deflate (an inflated
//! message within the limit too).
#![no_main]

use dormouse::deflate::Inflater;
use dormouse::ws::{is_valid_close_code, Decoder, WsEvent, WsLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else { return };
    // The top bit: the connection negotiated permessage-deflate.
    let mut inflater = (chunk & 0x80 != 0).then(Inflater::new);
    let chunk = usize::from((chunk & 0x7f).max(1));
    let limits = WsLimits { max_message_bytes: 4096 };
    let mut decoder = Decoder::new();
    let mut buffered: Vec<u8> = Vec::new();
    for piece in data.chunks(chunk) {
        buffered.extend_from_slice(piece);
        let mut check = |event: WsEvent| match event {
            WsEvent::Text(text) => assert!(text.len() <= limits.max_message_bytes),
            WsEvent::Binary(data) => assert!(data.len() <= limits.max_message_bytes),
            WsEvent::Ping(data) | WsEvent::Pong(data) => assert!(data.len() <= 125),
            WsEvent::Close { code, reason } => {
                assert!(code.is_none_or(is_valid_close_code));
                assert!(reason.len() <= 123);
            }
        };
        // After an error the decoder reads on, discarding, as the reactor
        // lets it while it waits for the peer's close.
        let (used, result) = decoder.decode(&mut buffered, &limits, inflater.as_mut(), &mut check);
        assert!(used <= buffered.len());
        buffered.drain(..used);
        if let Err(error) = result {
            assert!([1002, 1007, 1009].contains(&error.close_code()));
        }
    }
});
