//! The HTTP/1.1 request head parser, the upgrade check and the body
//! decoder on arbitrary bytes: no panic, and whatever is accepted is
//! consistent (the head ends inside the input, a body never exceeds its
//! bound).
#![no_main]

use dormouse::http::{parse_head, parse_upgrade, BodyDecoder, HttpLimits};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = HttpLimits { head_bytes_max: 16 * 1024, body_bytes_max: 4096, headers_max: 64 };
    let Ok(Some((head, used, framing))) = parse_head(data, &limits) else { return };
    assert!(used <= data.len() && used <= limits.head_bytes_max);
    let _ = head.path();
    let _ = head.query();
    let _ = head.keep_alive();
    let _ = parse_upgrade(&head);
    let mut body = BodyDecoder::new(framing, limits.body_bytes_max);
    let mut rest = &data[used..];
    while !rest.is_empty() && !body.is_done() {
        match body.feed(rest) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                assert!(n <= rest.len());
                rest = &rest[n..];
            }
        }
    }
    if body.is_done() {
        assert!(body.take_body().len() <= limits.body_bytes_max);
    }
});
