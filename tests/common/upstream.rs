//! A small HTTP/1.1 server on loopback for the tests of rooms' outbound
//! requests (`tests/fetch.rs`, `tests/js.rs`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;

/// An HTTP/1.1 upstream on 127.0.0.1: `/hello` (with `x-upstream: yes`),
/// `/echo` (the method, the room's header and the body), `/json`, `/big` (5,000
/// bytes), `/redirect` (to 127.0.0.2), and `/hold`, answered only when the
/// test sends on the returned channel (or never).
pub struct Upstream {
    pub addr: SocketAddr,
    pub release: mpsc::Sender<()>,
}

pub fn upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (release, held) = mpsc::channel::<()>();
    let held = std::sync::Arc::new(std::sync::Mutex::new(held));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let held = held.clone();
            std::thread::spawn(move || serve(stream, addr, &held));
        }
    });
    Upstream { addr, release }
}

fn serve(stream: TcpStream, addr: SocketAddr, held: &std::sync::Mutex<mpsc::Receiver<()>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split(' ');
        let (method, path) = (parts.next().unwrap().to_owned(), parts.next().unwrap_or("/").to_owned());
        let (mut length, mut room) = (0, String::new());
        loop {
            let mut header = String::new();
            reader.read_line(&mut header).unwrap();
            let header = header.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap();
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap(),
                "x-room" => room = value.trim().to_owned(),
                _ => {}
            }
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).unwrap();
        let (status, extra, answer) = match path.as_str() {
            "/hello" => ("200 OK", "x-upstream: yes\r\n".to_owned(), "hello".to_owned()),
            "/echo" => ("201 Created", String::new(), format!("{method} {room} {}", String::from_utf8_lossy(&body))),
            "/json" => ("200 OK", "content-type: application/json\r\n".to_owned(), r#"{"n":1}"#.to_owned()),
            "/big" => ("200 OK", String::new(), "b".repeat(5000)),
            "/redirect" => {
                ("302 Found", format!("location: http://127.0.0.2:{}/hello\r\n", addr.port()), String::new())
            }
            "/hold" => {
                // Until released; an error is the test ending first.
                let _ = held.lock().unwrap().recv();
                ("200 OK", String::new(), "held".to_owned())
            }
            _ => ("404 Not Found", String::new(), "no".to_owned()),
        };
        let response = format!("HTTP/1.1 {status}\r\ncontent-length: {}\r\n{extra}\r\n{answer}", answer.len());
        if writer.write_all(response.as_bytes()).is_err() {
            return;
        }
    }
}
