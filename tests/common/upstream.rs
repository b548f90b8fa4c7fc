//! A small HTTP/1.1 server on loopback for the tests of rooms' outbound
//! requests (`tests/fetch.rs`, `tests/js.rs`), plain or over TLS with the
//! test CA's certificate (`tests/tls`).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
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
    listen(None)
}

/// The same upstream over TLS, with a certificate for 127.0.0.1 and
/// localhost signed by the test CA (`tests/tls/ca.pem`).
pub fn upstream_tls() -> Upstream {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/tls");
    let certs = CertificateDer::pem_file_iter(dir.join("server.pem")).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    listen(Some(std::sync::Arc::new(config)))
}

fn listen(tls: Option<std::sync::Arc<rustls::ServerConfig>>) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (release, held) = mpsc::channel::<()>();
    let held = std::sync::Arc::new(std::sync::Mutex::new(held));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let (held, tls) = (held.clone(), tls.clone());
            std::thread::spawn(move || match tls {
                None => serve(stream, addr, &held),
                Some(config) => {
                    let Ok(connection) = rustls::ServerConnection::new(config) else { return };
                    serve(rustls::StreamOwned::new(connection, stream), addr, &held);
                }
            });
        }
    });
    Upstream { addr, release }
}

fn serve(stream: impl Read + Write, addr: SocketAddr, held: &std::sync::Mutex<mpsc::Receiver<()>>) {
    let mut reader = BufReader::new(stream);
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
            if reader.read_line(&mut header).unwrap_or(0) == 0 {
                return;
            }
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
        if reader.read_exact(&mut body).is_err() {
            return;
        }
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
        let writer = reader.get_mut();
        if writer.write_all(response.as_bytes()).and_then(|()| writer.flush()).is_err() {
            return;
        }
    }
}
