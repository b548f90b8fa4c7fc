//! Micro-benchmarks of the per-message codec paths: parsing an upgrade
//! request head, decoding a masked client frame, and framing a broadcast.
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
            decoder.decode(black_box(&mut buf), &ws_limits, &mut |_| n += 1).1.unwrap();
            n
        })
    });
    group.bench_function("encode_100B_text", |b| b.iter(|| text_frame(black_box(&payload))));
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
