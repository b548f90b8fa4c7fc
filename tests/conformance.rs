//! WebSocket conformance, by the case families of the Autobahn testsuite:
//! framing and payload lengths, reserved bits, opcodes, control frames,
//! fragmentation, UTF-8, close codes and reasons, limits (1-7, 9), and
//! permessage-deflate (12, 13: RFC 7692 negotiation and compressed
//! messages). Every case checks the exact close code the RFCs ask for. The
//! cases run against the `echo` party, on both I/O backends. The compressed
//! side of the client is flate2's raw deflate, called here directly.

mod common;

backend_tests!(
    payload_lengths_of_every_header_form_round_trip,
    reserved_bits_are_a_protocol_error,
    reserved_opcodes_are_a_protocol_error,
    control_frames_are_small_unfragmented_and_answered,
    fragmented_messages_are_reassembled_and_bad_sequences_refused,
    utf8_is_validated_across_fragments_and_fails_fast,
    valid_close_codes_are_echoed_and_invalid_ones_refused,
    close_payloads_and_reasons_are_checked,
    message_size_is_limited_from_the_header,
    a_broken_close_is_answered_and_tcp_closed_at_once,
    an_oversized_message_written_whole_still_reads_the_1009,
    deflate_offers_are_negotiated_without_context_takeover_or_declined,
    compressed_messages_of_every_size_round_trip,
    compressed_fragments_and_reserved_bits_follow_rfc_7692,
    compressed_bombs_corrupt_data_and_bad_utf8_are_refused,
    a_party_with_compression_off_declines_every_offer,
    large_messages_in_one_frame_and_in_fragments_within_the_limit,
    auto_fragmented_messages_of_every_fragment_size_are_reassembled,
);

use common::*;
use std::io::Write;

const TEXT: u8 = 1;
const BINARY: u8 = 2;
const CONTINUATION: u8 = 0;
const CLOSE: u8 = 8;
const PING: u8 = 9;
const PONG: u8 = 10;

/// A frame to send: fin, opcode, payload.
type Fragment<'a> = (bool, u8, &'a [u8]);

fn echo(server: &dormouse::ServerHandle) -> Client {
    Client::connect(server.local_addr(), "/parties/echo/conformance")
}

/// Sends a masked frame with the reserved bits `rsv` (0-7) set.
fn send_with_rsv(client: &mut Client, rsv: u8, opcode: u8, payload: &[u8]) {
    let mut frame = encode_frame(true, opcode, payload, true);
    frame[0] |= rsv << 4;
    client.writer.write_all(&frame).unwrap();
}

/// The server answers with a close frame with `code`, and the connection
/// ends after our reply.
fn expect_close_code(client: &mut Client, code: u16, case: &str) {
    assert_eq!(client.expect_close().0, code, "{case}");
}

/// Our close, sent after the server's, ends the connection.
fn expect_close_code_after_ours(client: &mut Client) {
    client.send_frame(true, CLOSE, &1000u16.to_be_bytes(), true);
    assert!(client.read_to_end().is_empty(), "nothing follows the close handshake");
}

fn payload_lengths_of_every_header_form_round_trip() {
    let server = start("");
    let mut client = echo(&server);
    // 7-bit, the 16-bit boundaries, the 64-bit form.
    for len in [0, 1, 125, 126, 127, 128, 65_535, 65_536, 100_000] {
        let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        client.send_frame(true, BINARY, &payload, true);
        let frame = client.recv();
        assert_eq!((frame.opcode, frame.payload.len()), (BINARY, len), "binary of {len} bytes");
        assert_eq!(frame.payload, payload);
        let text = "a".repeat(len);
        client.send_text(&text);
        assert_eq!(client.recv_text(), text, "text of {len} bytes");
    }
    // A 64-bit length for a short payload is legal, if wasteful.
    let mut frame = vec![0x82, 0x80 | 127];
    frame.extend_from_slice(&3u64.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0, 1, 2, 3]);
    client.writer.write_all(&frame).unwrap();
    assert_eq!(client.recv().payload, vec![1, 2, 3]);
}

fn reserved_bits_are_a_protocol_error() {
    let server = start("");
    for rsv in 1..=7u8 {
        for opcode in [TEXT, BINARY, PING] {
            let mut client = echo(&server);
            send_with_rsv(&mut client, rsv, opcode, b"hi");
            expect_close_code(&mut client, 1002, &format!("rsv {rsv:03b} on opcode {opcode}"));
        }
    }
}

fn reserved_opcodes_are_a_protocol_error() {
    let server = start("");
    for opcode in [3, 4, 5, 6, 7, 11, 12, 13, 14, 15] {
        let mut client = echo(&server);
        client.send_frame(true, opcode, b"reserved", true);
        expect_close_code(&mut client, 1002, &format!("opcode {opcode}"));
    }
}

fn control_frames_are_small_unfragmented_and_answered() {
    let server = start("");
    let mut client = echo(&server);
    // A ping of the largest allowed payload, and an empty one.
    for payload in [vec![7u8; 125], Vec::new()] {
        client.send_frame(true, PING, &payload, true);
        let pong = client.recv();
        assert_eq!((pong.opcode, pong.payload), (PONG, payload));
    }
    // Unsolicited pongs are ignored.
    client.send_frame(true, PONG, b"unasked", true);
    client.send_text("after the pong");
    assert_eq!(client.recv_text(), "after the pong");
    // Ten pings in a row: ten pongs, in order.
    for i in 0..10u8 {
        client.send_frame(true, PING, &[i], true);
    }
    for i in 0..10u8 {
        assert_eq!(client.recv().payload, vec![i]);
    }
    let cases: [(&str, bool, u8, usize); 4] = [
        ("ping of 126 bytes", true, PING, 126),
        ("pong of 126 bytes", true, PONG, 126),
        ("fragmented ping", false, PING, 3),
        ("close of 126 bytes", true, CLOSE, 126),
    ];
    for (case, fin, opcode, len) in cases {
        let mut client = echo(&server);
        let mut payload = vec![b'x'; len];
        if opcode == CLOSE {
            payload[..2].copy_from_slice(&1000u16.to_be_bytes());
        }
        client.send_frame(fin, opcode, &payload, true);
        expect_close_code(&mut client, 1002, case);
    }
}

fn fragmented_messages_are_reassembled_and_bad_sequences_refused() {
    let server = start("");
    let mut client = echo(&server);
    // Three fragments, with empty ones and control frames between them.
    client.send_frame(false, TEXT, b"frag", true);
    client.send_frame(false, CONTINUATION, b"", true);
    client.send_frame(true, PING, b"between", true);
    client.send_frame(false, CONTINUATION, b"men", true);
    client.send_frame(true, PONG, b"ignored", true);
    client.send_frame(true, CONTINUATION, b"ted", true);
    assert_eq!(client.recv().payload, b"between");
    assert_eq!(client.recv_text(), "fragmented");
    // A binary message in fragments of one byte.
    let payload: Vec<u8> = (0..50).collect();
    client.send_frame(false, BINARY, &payload[..1], true);
    for byte in &payload[1..49] {
        client.send_frame(false, CONTINUATION, std::slice::from_ref(byte), true);
    }
    client.send_frame(true, CONTINUATION, &payload[49..], true);
    assert_eq!(client.recv().payload, payload);

    let cases: [(&str, &[Fragment]); 4] = [
        ("continuation with nothing to continue", &[(true, CONTINUATION, b"x")]),
        ("unfinished continuation with nothing to continue", &[(false, CONTINUATION, b"x")]),
        ("a new text message inside a fragmented one", &[(false, TEXT, b"a"), (true, TEXT, b"b")]),
        ("a new binary message inside a fragmented one", &[(false, BINARY, b"a"), (false, BINARY, b"b")]),
    ];
    for (case, frames) in cases {
        let mut client = echo(&server);
        for &(fin, opcode, payload) in frames {
            client.send_frame(fin, opcode, payload, true);
        }
        expect_close_code(&mut client, 1002, case);
    }
    // A close in the middle of a fragmented message ends the connection cleanly.
    let mut client = echo(&server);
    client.send_frame(false, TEXT, b"never finished", true);
    client.send_frame(true, CLOSE, &1000u16.to_be_bytes(), true);
    assert_eq!(client.recv().close_code().0, 1000);
    assert!(client.read_to_end().is_empty());
}

fn utf8_is_validated_across_fragments_and_fails_fast() {
    let server = start("");
    let mut client = echo(&server);
    let valid = "κόσμε \u{0}\u{7f}\u{80}\u{7ff}\u{800}\u{ffff}\u{10000}\u{10ffff} 𝄞 ✓";
    client.send_text(valid);
    assert_eq!(client.recv_text(), valid);
    // Split at every byte position, code points included.
    let bytes = valid.as_bytes();
    for split in 1..bytes.len() {
        client.send_frame(false, TEXT, &bytes[..split], true);
        client.send_frame(true, CONTINUATION, &bytes[split..], true);
        assert_eq!(client.recv_text(), valid, "split at byte {split}");
    }
    let invalid: [(&str, &[u8]); 9] = [
        ("0xff", &[0x68, 0xff]),
        ("lone continuation byte", &[0x80]),
        ("overlong '/'", &[0xc0, 0xaf]),
        ("overlong NUL in three bytes", &[0xe0, 0x80, 0x80]),
        ("UTF-16 surrogate", &[0xed, 0xa0, 0x80]),
        ("past U+10FFFF", &[0xf4, 0x90, 0x80, 0x80]),
        ("5-byte form", &[0xf8, 0x88, 0x80, 0x80, 0x80]),
        ("truncated at the end of the message", &[0x61, 0xe2, 0x82]),
        ("start byte then ASCII", &[0xe2, 0x61, 0x62]),
    ];
    for (case, payload) in invalid {
        let mut client = echo(&server);
        client.send_frame(true, TEXT, payload, true);
        expect_close_code(&mut client, 1007, case);
        // The same bytes as the first fragment of a message that never ends:
        // found at once, without waiting for the rest (except when the
        // sequence could still be completed by the next fragment).
        if case != "truncated at the end of the message" {
            let mut client = echo(&server);
            client.send_frame(false, TEXT, payload, true);
            expect_close_code(&mut client, 1007, &format!("{case}, first fragment"));
        }
    }
    // Invalid in a later fragment.
    let mut client = echo(&server);
    client.send_frame(false, TEXT, b"fine so far ", true);
    client.send_frame(false, CONTINUATION, &[0xce, 0xba, 0xff], true);
    expect_close_code(&mut client, 1007, "invalid in the second fragment");
}

fn valid_close_codes_are_echoed_and_invalid_ones_refused() {
    let server = start("");
    for code in [1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999] {
        let mut client = echo(&server);
        client.send_frame(true, CLOSE, &code.to_be_bytes(), true);
        assert_eq!(client.recv().close_code().0, code, "close code {code} is echoed");
        assert!(client.read_to_end().is_empty());
    }
    for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535] {
        let mut client = echo(&server);
        client.send_frame(true, CLOSE, &code.to_be_bytes(), true);
        expect_close_code(&mut client, 1002, &format!("close code {code}"));
    }
}

fn close_payloads_and_reasons_are_checked() {
    let server = start("");
    // No payload: a normal closure.
    let mut client = echo(&server);
    client.send_frame(true, CLOSE, b"", true);
    let reply = client.recv();
    assert_eq!((reply.opcode, reply.payload.as_slice()), (CLOSE, &[][..]), "an empty close is echoed empty");
    assert!(client.read_to_end().is_empty());
    // The longest reason that fits.
    let mut client = echo(&server);
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice("r".repeat(123).as_bytes());
    client.send_frame(true, CLOSE, &payload, true);
    assert_eq!(client.recv().close_code().0, 1000);
    // One byte cannot hold a code.
    let mut client = echo(&server);
    client.send_frame(true, CLOSE, &[0x03], true);
    expect_close_code(&mut client, 1002, "close payload of one byte");
    // The reason must be UTF-8.
    let mut client = echo(&server);
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(&[0x68, 0xff]);
    client.send_frame(true, CLOSE, &payload, true);
    expect_close_code(&mut client, 1007, "close reason with invalid UTF-8");
    // Nothing is answered after a close: a frame sent after ours is ignored.
    let mut client = echo(&server);
    client.send_frame(true, CLOSE, &1000u16.to_be_bytes(), true);
    client.send_text("too late");
    assert_eq!(client.recv().close_code().0, 1000);
    assert!(client.read_to_end().is_empty());
}

/// Sends the header of a masked binary frame of `len` bytes (64-bit length
/// form, zero mask), and no payload.
fn announce_binary(client: &mut Client, len: u64) {
    let mut header = vec![0x82, 0x80 | 127];
    header.extend_from_slice(&len.to_be_bytes());
    header.extend_from_slice(&[0, 0, 0, 0]);
    client.writer.write_all(&header).unwrap();
}

fn message_size_is_limited_from_the_header() {
    let server = start("[limits]\nmax_message_bytes = 1000\nclose_timeout_ms = 300\n");
    // A header that announces too much is refused before any payload comes;
    // the payload is read and discarded, so the peer's close after it is seen.
    for len in [1001u64, 65_536] {
        let mut client = echo(&server);
        announce_binary(&mut client, len);
        assert_eq!(client.recv().close_code().0, 1009, "announced {len} bytes");
        client.writer.write_all(&vec![0u8; len as usize]).unwrap();
        expect_close_code_after_ours(&mut client);
    }
    // A payload that never comes: the socket is cut at the close timeout.
    for len in [1u64 << 40, u64::MAX >> 1] {
        let mut client = echo(&server);
        announce_binary(&mut client, len);
        assert_eq!(client.recv().close_code().0, 1009, "announced {len} bytes");
        assert!(client.read_to_end().is_empty());
    }
    // The most significant bit of a 64-bit length must be zero.
    let mut client = echo(&server);
    announce_binary(&mut client, 1 << 63);
    expect_close_code(&mut client, 1002, "a 64-bit length with the top bit set");
}

fn a_broken_close_is_answered_and_tcp_closed_at_once() {
    // The peer has closed, so the server closes TCP right after its answer
    // (RFC 6455 §7.1.1): a close timeout longer than the test's read guard
    // would show a server that waits for a second close instead.
    let server = start("[limits]\nclose_timeout_ms = 60000\n");
    let mut cases: Vec<(String, Vec<u8>, bool, u16)> = vec![
        ("one-byte payload".into(), vec![0x03], true, 1002),
        ("126-byte payload".into(), [&1000u16.to_be_bytes()[..], &[b'r'; 124]].concat(), true, 1002),
        ("fragmented".into(), 1000u16.to_be_bytes().to_vec(), false, 1002),
        ("invalid UTF-8 reason".into(), vec![0x03, 0xe8, 0x68, 0xff], true, 1007),
    ];
    for code in [0u16, 999, 1004, 1005, 1006, 1016, 1100, 2000, 2999] {
        cases.push((format!("code {code}"), code.to_be_bytes().to_vec(), true, 1002));
    }
    for (case, payload, fin, code) in cases {
        let mut client = echo(&server);
        client.send_frame(fin, CLOSE, &payload, true);
        assert_eq!(client.recv().close_code().0, code, "{case}");
        assert!(client.read_to_end().is_empty(), "{case}: TCP closed without waiting for us");
    }
}

fn an_oversized_message_written_whole_still_reads_the_1009() {
    // As a client library does: the whole 2 MiB message in one write before
    // reading anything. The server answers 1009 from the header and reads
    // the rest away, so the write completes and the close frame is there.
    let server = start("");
    let mut client = echo(&server);
    client.writer.write_all(&encode_frame(true, BINARY, &vec![7u8; 2 << 20], true)).unwrap();
    assert_eq!(client.recv().close_code(), (1009, "message too big".to_owned()));
    expect_close_code_after_ours(&mut client);
}

const OFFER: &str = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n";

/// A raw deflate of `payload` with a sync flush, its tail removed (RFC 7692 §7.2.1).
fn deflate(payload: &[u8]) -> Vec<u8> {
    let mut compressor = flate2::Compress::new(flate2::Compression::new(6), false);
    let mut out = Vec::with_capacity(payload.len() + 64);
    while compressor.total_in() < payload.len() as u64 || !out.ends_with(&[0, 0, 0xff, 0xff]) {
        out.reserve(out.capacity().max(64));
        let at = compressor.total_in() as usize;
        compressor.compress_vec(&payload[at..], &mut out, flate2::FlushCompress::Sync).unwrap();
    }
    out.truncate(out.len() - 4);
    out
}

/// The inverse, with the tail put back.
fn inflate(compressed: &[u8]) -> Vec<u8> {
    let mut input = compressed.to_vec();
    input.extend_from_slice(&[0, 0, 0xff, 0xff]);
    let mut decompressor = flate2::Decompress::new(false);
    let mut out = Vec::with_capacity(input.len() * 8 + 64);
    while (decompressor.total_in() as usize) < input.len() {
        out.reserve(out.capacity().max(64));
        let at = decompressor.total_in() as usize;
        decompressor.decompress_vec(&input[at..], &mut out, flate2::FlushDecompress::Sync).unwrap();
    }
    out
}

/// A masked, final frame with RSV1 set.
fn send_compressed(client: &mut Client, opcode: u8, compressed: &[u8]) {
    send_with_rsv(client, 0b100, opcode, compressed);
}

fn send_fragment(client: &mut Client, fin: bool, rsv1: bool, opcode: u8, payload: &[u8]) {
    let mut frame = encode_frame(fin, opcode, payload, true);
    if rsv1 {
        frame[0] |= 0x40;
    }
    client.writer.write_all(&frame).unwrap();
}

/// The next message's payload, inflated when the frame says so.
fn recv_message(client: &mut Client) -> (u8, bool, Vec<u8>) {
    let frame = client.recv();
    assert!(frame.fin, "the server does not fragment");
    let payload = if frame.rsv1 { inflate(&frame.payload) } else { frame.payload };
    (frame.opcode, frame.rsv1, payload)
}

fn deflate_client(server: &dormouse::ServerHandle, path: &str) -> Client {
    let client = Client::try_connect(server.local_addr(), path, OFFER);
    assert_eq!(client.response.status, 101, "{}", client.response.text());
    client
}

fn deflate_offers_are_negotiated_without_context_takeover_or_declined() {
    let server = start("");
    let accepted = "permessage-deflate; server_no_context_takeover; client_no_context_takeover";
    // Offers as browsers and libraries make them (Autobahn 13.1-13.7): accepted,
    // always without context takeover in either direction.
    for (offer, answer) in [
        ("permessage-deflate", accepted.to_owned()),
        ("permessage-deflate; client_max_window_bits", accepted.to_owned()),
        ("permessage-deflate; client_no_context_takeover", accepted.to_owned()),
        ("permessage-deflate; server_no_context_takeover; client_max_window_bits=8", accepted.to_owned()),
        ("permessage-deflate; server_max_window_bits=15", format!("{accepted}; server_max_window_bits=15")),
        ("permessage-deflate; server_max_window_bits=9, permessage-deflate", accepted.to_owned()),
    ] {
        let extra = format!("Sec-WebSocket-Extensions: {offer}\r\n");
        let mut client = Client::try_connect(server.local_addr(), "/parties/echo/nego", &extra);
        assert_eq!(client.response.status, 101, "{offer}");
        assert_eq!(client.response.header("sec-websocket-extensions"), Some(answer.as_str()), "{offer}");
        let text = "negotiated ".repeat(50);
        send_compressed(&mut client, TEXT, &deflate(text.as_bytes()));
        assert_eq!(recv_message(&mut client), (TEXT, true, text.into_bytes()), "{offer}");
    }
    // Declined cleanly (a smaller server window, bad parameters, other
    // extensions): no extension in the 101, so RSV1 is a protocol error.
    for offer in [
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; client_max_window_bits=20",
        "permessage-deflate; unknown_parameter",
        "x-webkit-deflate-frame",
    ] {
        let extra = format!("Sec-WebSocket-Extensions: {offer}\r\n");
        let mut client = Client::try_connect(server.local_addr(), "/parties/echo/nego", &extra);
        assert_eq!(client.response.status, 101, "{offer}");
        assert_eq!(client.response.header("sec-websocket-extensions"), None, "{offer}");
        client.send_text("plain still works");
        assert_eq!(client.recv_text(), "plain still works");
        send_compressed(&mut client, TEXT, &deflate(b"not negotiated"));
        expect_close_code(&mut client, 1002, offer);
    }
}

fn compressed_messages_of_every_size_round_trip() {
    let server = start("");
    let mut client = deflate_client(&server, "/parties/echo/sizes");
    // Autobahn 12.x: text and binary, from empty to past 64 KiB, compressible
    // and not; the echo comes back compressed when it is text of 256 B or
    // more (the default `compression_min_bytes`), plain otherwise.
    for len in [0usize, 1, 16, 255, 256, 1000, 4096, 65_535, 65_536, 262_144] {
        let text: String = (0..len).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
        send_compressed(&mut client, TEXT, &deflate(text.as_bytes()));
        assert_eq!(recv_message(&mut client), (TEXT, len >= 256, text.into_bytes()), "text of {len} bytes");
        let noise: Vec<u8> = (0..len as u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        send_compressed(&mut client, BINARY, &deflate(&noise));
        assert_eq!(recv_message(&mut client), (BINARY, false, noise), "binary of {len} bytes");
    }
    // Plain messages on a deflate connection are fine too.
    client.send_text("uncompressed");
    assert_eq!(recv_message(&mut client), (TEXT, false, b"uncompressed".to_vec()));
    // Many messages in a row, each compressed on its own (no context takeover).
    let text = "the same words again and again ".repeat(20);
    for _ in 0..50 {
        send_compressed(&mut client, TEXT, &deflate(text.as_bytes()));
    }
    for _ in 0..50 {
        let frame = client.recv();
        assert!(frame.rsv1);
        assert_eq!(inflate(&frame.payload), text.as_bytes(), "every message inflates alone");
    }
}

fn compressed_fragments_and_reserved_bits_follow_rfc_7692() {
    let server = start("");
    let mut client = deflate_client(&server, "/parties/echo/frag");
    // RSV1 on the first fragment only; a ping between fragments.
    let text = "fragmented and compressed ".repeat(40);
    let compressed = deflate(text.as_bytes());
    let (a, b) = compressed.split_at(compressed.len() / 3);
    let (b, c) = b.split_at(b.len() / 2);
    send_fragment(&mut client, false, true, TEXT, a);
    send_fragment(&mut client, false, false, CONTINUATION, b);
    client.send_frame(true, PING, b"between", true);
    send_fragment(&mut client, true, false, CONTINUATION, c);
    assert_eq!(client.recv().payload, b"between");
    assert_eq!(recv_message(&mut client), (TEXT, true, text.into_bytes()));
    // RSV1 on a continuation or on a control frame, or RSV2/RSV3: 1002.
    let cases: [(&str, u8, u8); 4] = [
        ("RSV1 on a ping", 0b100, PING),
        ("RSV2", 0b010, TEXT),
        ("RSV3", 0b001, BINARY),
        ("RSV1 on a close", 0b100, CLOSE),
    ];
    for (case, rsv, opcode) in cases {
        let mut client = deflate_client(&server, "/parties/echo/frag");
        let payload: &[u8] = if opcode == CLOSE { &[0x03, 0xe8] } else { b"x" };
        send_with_rsv(&mut client, rsv, opcode, payload);
        expect_close_code(&mut client, 1002, case);
    }
    let mut client = deflate_client(&server, "/parties/echo/frag");
    send_fragment(&mut client, false, true, TEXT, a);
    send_fragment(&mut client, true, true, CONTINUATION, b);
    expect_close_code(&mut client, 1002, "RSV1 on a continuation");
}

fn compressed_bombs_corrupt_data_and_bad_utf8_are_refused() {
    let server = start("[limits]\nmax_message_bytes = 65536\n");
    // 10 MiB of zeros compress to about 10 KiB: within the frame limit,
    // far past the message limit once inflated.
    let bomb = deflate(&vec![0u8; 10 << 20]);
    assert!(bomb.len() < 65_536);
    let mut client = deflate_client(&server, "/parties/echo/bomb");
    send_compressed(&mut client, BINARY, &bomb);
    assert_eq!(client.expect_close(), (1009, "message too big".to_owned()));
    // At the limit exactly, it is a message.
    let mut client = deflate_client(&server, "/parties/echo/bomb");
    send_compressed(&mut client, BINARY, &deflate(&vec![1u8; 65_536]));
    assert_eq!(recv_message(&mut client).2.len(), 65_536);
    // Not deflate data.
    let mut client = deflate_client(&server, "/parties/echo/bomb");
    send_compressed(&mut client, TEXT, &[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(client.expect_close(), (1007, "invalid compressed message".to_owned()));
    // Inflates to invalid UTF-8 in a text message.
    let mut client = deflate_client(&server, "/parties/echo/bomb");
    send_compressed(&mut client, TEXT, &deflate(&[b'a', 0xff, b'b']));
    assert_eq!(client.expect_close().0, 1007);
}

fn a_party_with_compression_off_declines_every_offer() {
    let server = start("[parties.echo]\ncompression = \"off\"\n");
    let mut client = Client::try_connect(server.local_addr(), "/parties/echo/off", OFFER);
    assert_eq!(client.response.status, 101);
    assert_eq!(client.response.header("sec-websocket-extensions"), None);
    let text = "long enough to compress ".repeat(50);
    client.send_text(&text);
    let frame = client.recv();
    assert!(!frame.rsv1);
    assert_eq!(frame.text(), text);
}

fn large_messages_in_one_frame_and_in_fragments_within_the_limit() {
    // Autobahn 9.1-9.6, scaled to a limit of 4 MiB: text and binary of 1,
    // 2 and 4 MiB, in one frame and in fragments of 64 KiB; 9.7-9.8: many
    // small messages in a row.
    let server = start("[limits]\nmax_message_bytes = 4194304\nmax_write_backlog_bytes = 16777216\n");
    let mut client = echo(&server);
    for len in [1 << 20, 2 << 20, 4 << 20] {
        let mut text = "abcdefghijklmnopqrstuvwxyz".repeat(len / 26 + 1);
        text.truncate(len);
        client.send_text(&text);
        assert!(client.recv_text() == text, "text of {len} bytes in one frame");
        let binary: Vec<u8> = (0..=250u8).cycle().take(len).collect();
        let chunks: Vec<&[u8]> = binary.chunks(64 << 10).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let opcode = if i == 0 { BINARY } else { CONTINUATION };
            client.send_frame(i + 1 == chunks.len(), opcode, chunk, true);
        }
        let frame = client.recv();
        assert!(frame.opcode == BINARY && frame.payload == binary, "binary of {len} bytes in 64 KiB fragments");
    }
    for _ in 0..1000 {
        client.send_frame(true, BINARY, &[5; 64], true);
    }
    for _ in 0..1000 {
        assert_eq!(client.recv().payload, [5; 64]);
    }
    // One byte past the limit, in fragments: refused when the total passes it.
    client.send_frame(false, BINARY, &vec![0; 4 << 20], true);
    client.send_frame(true, CONTINUATION, &[0], true);
    expect_close_code(&mut client, 1009, "4 MiB and one byte in two fragments");
}

fn auto_fragmented_messages_of_every_fragment_size_are_reassembled() {
    // Autobahn 10.1: a 64 KiB message sent in fragments of a fixed size,
    // from one byte up to the whole message.
    let server = start("");
    let mut client = echo(&server);
    let text: String = (0..65_536).map(|i| ['a', 'é', '€', '𝄞'][i % 4]).collect::<String>();
    let bytes = text.as_bytes();
    for size in [1usize, 2, 3, 7, 64, 1300, 4096, 65_535, bytes.len()] {
        if size == 1 && bytes.len() > 20_000 {
            // One byte a frame: on a shorter message, to keep the test quick.
            let short = &bytes[..4096];
            for (i, chunk) in short.chunks(1).enumerate() {
                client.send_frame(i + 1 == short.len(), if i == 0 { TEXT } else { CONTINUATION }, chunk, true);
            }
            assert!(client.recv_text().as_bytes() == short, "fragments of one byte");
            continue;
        }
        let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            client.send_frame(i + 1 == chunks.len(), if i == 0 { TEXT } else { CONTINUATION }, chunk, true);
        }
        assert!(client.recv_text() == text, "fragments of {size} bytes");
    }
}
