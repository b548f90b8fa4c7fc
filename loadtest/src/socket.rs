//! The socket half of a load-test connection, shared by the scenarios that
//! drive many non-blocking sockets (`fanout`, `soak`): connecting, the
//! WebSocket upgrade request, and buffered writes and reads. Each returns
//! what happened; what it means (an error to count, a reconnect, the end of
//! a close) stays with the scenario.

use mio::net::TcpStream;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};

/// A non-blocking TCP connect to `addr`, from `source` if given.
pub(crate) fn connect(addr: SocketAddr, source: Option<IpAddr>) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    if let Some(ip) = source {
        socket.bind(&SocketAddr::new(ip, 0).into())?;
    }
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Where a non-blocking connect stands once its socket is reported ready.
pub(crate) enum Connected {
    Yes,
    NotYet,
    /// Failed; the error as a tally key.
    Failed(String),
}

pub(crate) fn connected(stream: &TcpStream) -> Connected {
    match stream.peer_addr() {
        Ok(_) => Connected::Yes,
        Err(e) if e.kind() == ErrorKind::NotConnected => Connected::NotYet,
        Err(_) => Connected::Failed(
            stream
                .take_error()
                .ok()
                .flatten()
                .map_or("connect failed".to_owned(), |e| format!("connect: {}", e.kind())),
        ),
    }
}

/// The WebSocket upgrade request for `target` (path and query) on `host`,
/// offering permessage-deflate as browsers do when `deflate`.
pub(crate) fn upgrade_request(target: &str, host: SocketAddr, deflate: bool) -> String {
    let offer = if deflate { "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" } else { "" };
    format!(
        "GET {target} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{offer}\r\n"
    )
}

/// Writes as much of `wbuf` as the socket takes now; the error as a tally key.
pub(crate) fn flush(stream: &mut TcpStream, wbuf: &mut Vec<u8>) -> Result<(), String> {
    while !wbuf.is_empty() {
        match stream.write(wbuf) {
            Ok(n) => {
                wbuf.drain(..n);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("write: {}", e.kind())),
        }
    }
    Ok(())
}

/// What one read brought.
pub(crate) enum Received {
    /// Bytes were appended to the read buffer.
    Data,
    /// The server closed the connection.
    Eof,
    /// Nothing more for now.
    WouldBlock,
    /// Failed; the error as a tally key.
    Failed(String),
}

/// Reads once into `chunk` and appends what came to `rbuf`.
pub(crate) fn read_some(stream: &mut TcpStream, rbuf: &mut Vec<u8>, chunk: &mut [u8]) -> Received {
    loop {
        match stream.read(chunk) {
            Ok(0) => return Received::Eof,
            Ok(n) => {
                rbuf.extend_from_slice(&chunk[..n]);
                return Received::Data;
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Received::WouldBlock,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Received::Failed(format!("read: {}", e.kind())),
        }
    }
}
