//! Micro-benchmarks of the per-message codec paths: parsing an upgrade
//! request head, decoding a masked client frame, framing a broadcast, and
//! permessage-deflate of a 2 KB JSON message (compressed once per broadcast,
//! inflated once per received message).
//!
//! `cargo bench --bench codec`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dormouse::http::{parse_head, HttpLimits};
use dormouse::ws::{text_frame, Decoder, WsLimits};
use std::hint::black_box;

fn client_frame(payload: &[u8]) -> Vec<u8> {
    let key = [0x11, 0x22, 0x33, 0x44];
    let mut out = vec![0x81, 0x80 | payload.len() as u8];
    out.extend_from_slice(&key);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
    out
}

fn codec(c: &mut Criterion) {
    let head = b"GET /parties/main/lobby?_pk=0b6f3e8a-4f0e-4b8e-9d8a-1f2e3d4c5b6a HTTP/1.1\r\n\
        Host: 127.0.0.1:1999\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
        User-Agent: bench\r\nOrigin: http://localhost\r\n\r\n";
    let limits = HttpLimits { head_bytes_max: 16 << 10, body_bytes_max: 1 << 20, headers_max: 64 };
    c.bench_function("http/parse_upgrade_head", |b| b.iter(|| parse_head(black_box(head), &limits).unwrap()));

    let payload = [b'x'; 100];
    let frame = client_frame(&payload);
    let ws_limits = WsLimits { max_message_bytes: 1 << 20 };
    let mut group = c.benchmark_group("ws");
    group.throughput(Throughput::Elements(1));
    group.bench_function("decode_masked_100B_text", |b| {
        let mut decoder = Decoder::new();
        let mut buf = frame.clone();
        b.iter(|| {
            buf.copy_from_slice(&frame);
            let mut n = 0;
            decoder.decode(black_box(&mut buf), &ws_limits, None, &mut |_| n += 1).1.unwrap();
            n
        })
    });
    group.bench_function("encode_100B_text", |b| b.iter(|| text_frame(black_box(&payload))));
    group.finish();
}

/// About 2 KB of JSON as a PartyKit app sends it: a list of cursor updates.
pub fn json_2kb() -> String {
    let items: Vec<String> = (0..29)
        .map(|i| {
            format!(
                r##"{{"id":"user-{i:04}","x":{},"y":{},"color":"#{:06x}","typing":false}}"##,
                i * 37 % 1280,
                i * 91 % 720,
                i * 0x10_3a5b
            )
        })
        .collect();
    format!(r#"{{"type":"presence","room":"lobby","users":[{}]}}"#, items.join(","))
}

fn deflate(c: &mut Criterion) {
    let json = json_2kb();
    let compressed = dormouse::deflate::compress(json.as_bytes());
    eprintln!("deflate: {} B of JSON -> {} B", json.len(), compressed.len());
    let mut group = c.benchmark_group("deflate");
    group.throughput(Throughput::Bytes(json.len() as u64));
    group.bench_function("compress_2KB_json", |b| b.iter(|| dormouse::deflate::compress(black_box(json.as_bytes()))));
    let mut inflater = dormouse::deflate::Inflater::new();
    group.bench_function("inflate_2KB_json", |b| b.iter(|| inflater.inflate(black_box(&compressed), 1 << 20).unwrap()));
    group.finish();
}

criterion_group!(benches, codec, deflate);
criterion_main!(benches);
