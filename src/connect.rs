//! `dormouse connect URL`: a small interactive WebSocket client, so trying a
//! room needs nothing but the binary. Each line read from standard input is
//! sent as a text message; each message received is printed on a line of
//! its own (binary ones as a byte count). End of input sends a close (1000)
//! and waits for the server's; a close from the server ends the program
//! with its code and reason on standard error.
//!
//! Part of the `dormouse` binary, not of the library: it uses blocking
//! sockets and two threads, which is fine for one connection and a person
//! typing, and never for the server's data plane.

use anyhow::{bail, Context};
use std::io::{BufRead, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Mutex};
use tungstenite::protocol::frame::coding::{CloseCode, Control, Data, OpCode};
use tungstenite::protocol::frame::{CloseFrame, Frame, FrameHeader};

/// Connects to `url` (`ws://host[:port]/path?query`) and relays between the
/// terminal and the socket until either side closes.
pub fn run(url: &str) -> anyhow::Result<()> {
    let (authority, target) = split_url(url)?;
    let stream = TcpStream::connect(authority).with_context(|| format!("cannot connect to {authority}"))?;
    stream.set_nodelay(true)?;
    let mut reader = stream.try_clone()?;
    let rest = handshake(&mut reader, authority, target)?;
    let writer = Arc::new(Mutex::new(stream));
    eprintln!("connected to {url}; type a line to send it, end input (Ctrl-D) to close");

    let typed = writer.clone();
    std::thread::Builder::new().name("stdin".into()).spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if send(&typed, Frame::message(line.into_bytes(), OpCode::Data(Data::Text), true)).is_err() {
                return;
            }
        }
        let close = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        let _ = send(&typed, Frame::close(Some(close)));
    })?;

    let mut buf = rest;
    // A message being reassembled, and whether its first frame said text.
    let mut message: Vec<u8> = Vec::new();
    let mut text = false;
    let mut chunk = [0u8; 16 << 10];
    loop {
        while let Some((header, payload)) = next_frame(&mut buf)? {
            match header.opcode {
                OpCode::Data(data) => {
                    if data != Data::Continue {
                        text = data == Data::Text;
                    }
                    message.extend_from_slice(&payload);
                    if header.is_final {
                        print_message(&message, text)?;
                        message.clear();
                    }
                }
                OpCode::Control(Control::Ping) => send(&writer, Frame::pong(payload))?,
                OpCode::Control(Control::Close) => {
                    let (code, reason) = match payload.len() {
                        0 | 1 => (1005, String::new()),
                        _ => (
                            u16::from_be_bytes([payload[0], payload[1]]),
                            String::from_utf8_lossy(&payload[2..]).into(),
                        ),
                    };
                    eprintln!("closed by the server: {code} {reason}");
                    // Answering a close we started, or the server's own: either way the server closes TCP next.
                    let _ = send(&writer, Frame::close(None));
                    return Ok(());
                }
                OpCode::Control(_) => {}
            }
        }
        let n = reader.read(&mut chunk)?;
        if n == 0 {
            bail!("the server closed the connection without a close frame");
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn print_message(message: &[u8], text: bool) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match std::str::from_utf8(message) {
        Ok(text_message) if text => writeln!(out, "{text_message}")?,
        _ => writeln!(out, "<binary message of {} bytes>", message.len())?,
    }
    out.flush()?;
    Ok(())
}

/// Masks (clients must) and writes one frame.
fn send(writer: &Mutex<TcpStream>, mut frame: Frame) -> std::io::Result<()> {
    frame.header_mut().mask = Some(rand::random());
    let mut bytes = Vec::with_capacity(frame.len());
    frame.format(&mut bytes).map_err(std::io::Error::other)?;
    writer.lock().unwrap_or_else(|e| e.into_inner()).write_all(&bytes)
}

/// The next complete frame at the front of `buf`, removed from it.
fn next_frame(buf: &mut Vec<u8>) -> anyhow::Result<Option<(FrameHeader, Vec<u8>)>> {
    let mut cursor = std::io::Cursor::new(&buf[..]);
    let Some((header, len)) = FrameHeader::parse(&mut cursor).context("the server sent a bad frame")? else {
        return Ok(None);
    };
    let start = cursor.position() as usize;
    let Some(end) = usize::try_from(len).ok().and_then(|len| start.checked_add(len)) else {
        bail!("the server announced a frame of {len} bytes");
    };
    if buf.len() < end {
        return Ok(None);
    }
    let payload = buf[start..end].to_vec();
    buf.drain(..end);
    Ok(Some((header, payload)))
}

/// `ws://host:port/path?query` → (`host:port`, `/path?query`).
fn split_url(url: &str) -> anyhow::Result<(&str, &str)> {
    let Some(rest) = url.strip_prefix("ws://") else {
        bail!("the URL must start with ws:// (wss:// is not supported here)");
    };
    let (authority, target) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        bail!("the URL has no host");
    }
    Ok((authority, target))
}

/// Sends the upgrade request and checks the 101; returns the bytes that
/// came after the response head.
fn handshake(stream: &mut TcpStream, authority: &str, target: &str) -> anyhow::Result<Vec<u8>> {
    let key = tungstenite::handshake::client::generate_key();
    let request = format!(
        "GET {target} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    stream.write_all(request.as_bytes())?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            bail!("the server closed the connection during the handshake");
        }
        buf.extend_from_slice(&chunk[..n]);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(head_len) = response.parse(&buf).context("bad response from the server")? else {
            anyhow::ensure!(buf.len() < 64 << 10, "the server's response head is too long");
            continue;
        };
        let status = response.code.unwrap_or(0);
        if status != 101 {
            let body = String::from_utf8_lossy(&buf[head_len..]);
            bail!("the server refused the upgrade: {status} {}", body.trim());
        }
        let accept = response.headers.iter().find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"));
        let expected = tungstenite::handshake::derive_accept_key(key.as_bytes());
        anyhow::ensure!(accept.is_some_and(|h| h.value == expected.as_bytes()), "the server's accept key is wrong");
        return Ok(buf.split_off(head_len));
    }
}
