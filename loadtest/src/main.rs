//! `dormouse-loadtest`: drives dormouse, or any WebSocket relay server, from
//! the same machine and reports what it measured.
//!
//! This first scenario, `idle`, opens N WebSocket connections to one room,
//! holds them open and idle, and reads the server's resident memory from
//! /proc before and after, giving the server's user-space bytes per idle
//! connection. The fan-out, tag, rooms and churn scenarios come with the
//! load-tester change.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(name = "dormouse-loadtest", version, about = "Load tests for dormouse and other WebSocket relay servers")]
struct Cli {
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand)]
enum Scenario {
    /// Open N idle WebSocket connections to one room and report the server's
    /// resident memory per connection.
    Idle {
        /// Server URL, e.g. ws://127.0.0.1:1999/parties/main/lobby
        #[arg(long)]
        url: String,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// PID of the server, to read its RSS from /proc.
        #[arg(long)]
        server_pid: Option<u32>,
        /// How long to hold the connections before closing them.
        #[arg(long, default_value_t = 1.0)]
        hold_secs: f64,
    },
}

fn main() -> Result<()> {
    match Cli::parse().scenario {
        Scenario::Idle { url, connections, server_pid, hold_secs } => idle(&url, connections, server_pid, hold_secs),
    }
}

/// Host:port and path of a `ws://` URL.
fn parse_url(url: &str) -> Result<(SocketAddr, String)> {
    let rest = url.strip_prefix("ws://").context("the URL must start with ws://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let addr: SocketAddr = authority.parse().with_context(|| format!("{authority:?} is not an ip:port address"))?;
    if !addr.ip().is_loopback() {
        bail!("load tests target only loopback addresses, not {}", addr.ip());
    }
    Ok((addr, path.to_owned()))
}

fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).context("read server /proc status")?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).context("no VmRSS line")?;
    let kib: u64 = line.split_whitespace().nth(1).context("VmRSS value")?.parse()?;
    Ok(kib * 1024)
}

fn handshake(addr: SocketAddr, path: &str, id: usize) -> Result<TcpStream> {
    let mut stream = TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    let sep = if path.contains('?') { '&' } else { '?' };
    write!(
        stream,
        "GET {path}{sep}_pk=idle-{id} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )?;
    let mut head = Vec::with_capacity(256);
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte)? == 0 {
            bail!("server closed during the handshake");
        }
        head.push(byte[0]);
        if head.len() > 16 * 1024 {
            bail!("handshake response head too large");
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        bail!("upgrade refused: {}", String::from_utf8_lossy(&head).lines().next().unwrap_or(""));
    }
    Ok(stream)
}

fn idle(url: &str, connections: usize, server_pid: Option<u32>, hold_secs: f64) -> Result<()> {
    let (addr, path) = parse_url(url)?;
    if connections == 0 {
        bail!("--connections must be at least 1");
    }
    let before = server_pid.map(rss_bytes).transpose()?;
    let started = Instant::now();
    let mut sockets = Vec::with_capacity(connections);
    for id in 0..connections {
        sockets.push(handshake(addr, &path, id).with_context(|| format!("connection {id}"))?);
    }
    let connect_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs_f64(hold_secs));
    let after = server_pid.map(rss_bytes).transpose()?;
    println!("connections        {connections}");
    println!("connect time       {connect_secs:.2} s ({:.0} handshakes/s)", connections as f64 / connect_secs);
    if let (Some(before), Some(after)) = (before, after) {
        let delta = after.saturating_sub(before);
        println!("server RSS before  {:.1} MiB", before as f64 / 1048576.0);
        println!("server RSS after   {:.1} MiB", after as f64 / 1048576.0);
        println!("bytes/connection   {:.0}", delta as f64 / connections as f64);
    }
    for mut socket in sockets {
        // A masked close frame with code 1000, then the socket is dropped.
        let _ = socket.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]);
    }
    Ok(())
}
