//! HTTP/1.1 for a server, as pure functions over byte slices: request heads
//! (parsed by `httparse`), request bodies (Content-Length and chunked), the
//! WebSocket upgrade handshake, and response encoding.
//!
//! Every size is bounded by [`HttpLimits`], and every refusal is an
//! [`HttpError`] that knows its status code. The reactor is the only place
//! that does I/O, so this module can be tested and fuzzed on its own.

use bytes::{Bytes, BytesMut};

#[derive(Debug, Clone)]
pub struct HttpLimits {
    pub head_bytes_max: usize,
    pub body_bytes_max: usize,
    pub headers_max: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub name: String,
    pub value: Vec<u8>,
}

/// A parsed request head.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: String,
    /// The raw request target, e.g. `/parties/main/room?_pk=x`.
    pub target: String,
    /// HTTP/1.<minor_version>.
    pub minor_version: u8,
    pub headers: Vec<Header>,
}

impl RequestHead {
    /// The first header named `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers.iter().find(|h| h.name.eq_ignore_ascii_case(name)).map(|h| h.value.as_slice())
    }

    pub fn header_str(&self, name: &str) -> Option<&str> {
        self.header(name).and_then(|v| std::str::from_utf8(v).ok()).map(str::trim)
    }

    /// The target's path, before any `?`.
    pub fn path(&self) -> &str {
        self.target.split_once('?').map_or(&self.target, |(path, _)| path)
    }

    /// The target's query, after `?`, or "".
    pub fn query(&self) -> &str {
        self.target.split_once('?').map_or("", |(_, query)| query)
    }

    /// Whether the connection stays open after the response (RFC 9112 §9.3).
    pub fn keep_alive(&self) -> bool {
        let has = |token: &str| self.tokens("connection").any(|t| t.eq_ignore_ascii_case(token));
        if self.minor_version >= 1 {
            !has("close")
        } else {
            has("keep-alive")
        }
    }

    /// The comma-separated tokens of every header named `name`.
    fn tokens<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.headers
            .iter()
            .filter(move |h| h.name.eq_ignore_ascii_case(name))
            .filter_map(|h| std::str::from_utf8(&h.value).ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
    }
}

/// How the request body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    None,
    Length(usize),
    Chunked,
}

/// A request the server refuses, with the status that says why.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HttpError {
    #[error("request head too large")]
    HeadTooLarge,
    #[error("too many request headers")]
    TooManyHeaders,
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request body too large")]
    BodyTooLarge,
    #[error("invalid content-length")]
    BadContentLength,
    #[error("invalid chunked body: {0}")]
    BadChunk(&'static str),
    #[error("unsupported transfer-encoding")]
    UnsupportedTransferEncoding,
    #[error("bad websocket upgrade: {0}")]
    BadUpgrade(&'static str),
    #[error("unsupported websocket version (only 13 is supported)")]
    UnsupportedWebSocketVersion,
}

impl HttpError {
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge | HttpError::TooManyHeaders => 431,
            HttpError::BodyTooLarge => 413,
            HttpError::UnsupportedTransferEncoding => 501,
            HttpError::UnsupportedWebSocketVersion => 426,
            _ => 400,
        }
    }
}

/// Parses a request head at the front of `buf`. `Ok(None)` means more bytes
/// are needed; a head that has not ended within `head_bytes_max` is refused.
/// Returns the head, its length in bytes, and how its body is delimited.
pub fn parse_head(buf: &[u8], limits: &HttpLimits) -> Result<Option<(RequestHead, usize, BodyFraming)>, HttpError> {
    let window = &buf[..buf.len().min(limits.head_bytes_max)];
    let mut headers = vec![httparse::EMPTY_HEADER; limits.headers_max];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(window) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= limits.head_bytes_max => return Err(HttpError::HeadTooLarge),
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(httparse::Error::TooManyHeaders) => return Err(HttpError::TooManyHeaders),
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    };
    let head = RequestHead {
        method: request.method.expect("a complete request has a method").to_owned(),
        target: request.path.expect("a complete request has a target").to_owned(),
        minor_version: request.version.expect("a complete request has a version"),
        headers: request.headers.iter().map(|h| Header { name: h.name.to_owned(), value: h.value.to_vec() }).collect(),
    };
    let framing = body_framing(&head, limits)?;
    Ok(Some((head, len, framing)))
}

/// RFC 9112 §6.3: Transfer-Encoding wins but may only be `chunked` here;
/// both headers at once is refused, as request smuggling.
fn body_framing(head: &RequestHead, limits: &HttpLimits) -> Result<BodyFraming, HttpError> {
    let mut codings = head.tokens("transfer-encoding").peekable();
    let chunked = if codings.peek().is_some() {
        let codings: Vec<&str> = codings.collect();
        if codings.len() != 1 || !codings[0].eq_ignore_ascii_case("chunked") {
            return Err(HttpError::UnsupportedTransferEncoding);
        }
        true
    } else {
        false
    };
    let mut length: Option<usize> = None;
    for value in head.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("content-length")) {
        let text = std::str::from_utf8(&value.value).map_err(|_| HttpError::BadContentLength)?;
        for part in text.split(',') {
            let part = part.trim();
            if part.is_empty() || !part.bytes().all(|b| b.is_ascii_digit()) {
                return Err(HttpError::BadContentLength);
            }
            let n: u64 = part.parse().map_err(|_| HttpError::BadContentLength)?;
            let n = usize::try_from(n).map_err(|_| HttpError::BodyTooLarge)?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::BadContentLength);
            }
            length = Some(n);
        }
    }
    match (chunked, length) {
        (true, Some(_)) => Err(HttpError::Malformed("both transfer-encoding and content-length".into())),
        (true, None) => Ok(BodyFraming::Chunked),
        (false, Some(n)) if n > limits.body_bytes_max => Err(HttpError::BodyTooLarge),
        (false, Some(0)) | (false, None) => Ok(BodyFraming::None),
        (false, Some(n)) => Ok(BodyFraming::Length(n)),
    }
}

/// Longest chunk-size line or trailer line accepted.
const CHUNK_LINE_MAX: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk-size line.
    Size,
    /// Reading chunk data; this many bytes left.
    Data(usize),
    /// Expecting the CRLF after chunk data.
    DataEnd,
    /// Reading trailer lines after the last chunk.
    Trailer,
    Done,
}

/// Collects a request body, bounded by `body_bytes_max`.
#[derive(Debug)]
pub struct BodyDecoder {
    body: BytesMut,
    max: usize,
    /// Bytes still expected for a Content-Length body.
    remaining: usize,
    chunked: Option<ChunkState>,
    line: Vec<u8>,
}

impl BodyDecoder {
    pub fn new(framing: BodyFraming, body_bytes_max: usize) -> Self {
        let (remaining, chunked) = match framing {
            BodyFraming::None => (0, None),
            BodyFraming::Length(n) => (n, None),
            BodyFraming::Chunked => (0, Some(ChunkState::Size)),
        };
        BodyDecoder {
            body: BytesMut::with_capacity(remaining),
            max: body_bytes_max,
            remaining,
            chunked,
            line: Vec::new(),
        }
    }

    /// Consumes body bytes from the front of `buf`; returns how many.
    pub fn feed(&mut self, buf: &[u8]) -> Result<usize, HttpError> {
        let Some(mut state) = self.chunked else {
            let n = self.remaining.min(buf.len());
            self.body.extend_from_slice(&buf[..n]);
            self.remaining -= n;
            return Ok(n);
        };
        let mut used = 0;
        while used < buf.len() && state != ChunkState::Done {
            match state {
                ChunkState::Size | ChunkState::Trailer | ChunkState::DataEnd => {
                    let Some(line) = self.take_line(buf, &mut used)? else { break };
                    state = match state {
                        ChunkState::Size => {
                            let size_text = line.split(|&b| b == b';').next().unwrap_or(&[]);
                            let size_text = std::str::from_utf8(size_text).map_err(|_| HttpError::BadChunk("size"))?;
                            let size = usize::from_str_radix(size_text.trim(), 16)
                                .map_err(|_| HttpError::BadChunk("size is not hexadecimal"))?;
                            if self.body.len().saturating_add(size) > self.max {
                                return Err(HttpError::BodyTooLarge);
                            }
                            if size == 0 {
                                ChunkState::Trailer
                            } else {
                                ChunkState::Data(size)
                            }
                        }
                        ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
                        ChunkState::DataEnd => return Err(HttpError::BadChunk("missing CRLF after chunk data")),
                        ChunkState::Trailer if line.is_empty() => ChunkState::Done,
                        ChunkState::Trailer => ChunkState::Trailer,
                        ChunkState::Data(_) | ChunkState::Done => unreachable!("only line states read lines"),
                    };
                }
                ChunkState::Data(left) => {
                    let n = left.min(buf.len() - used);
                    self.body.extend_from_slice(&buf[used..used + n]);
                    used += n;
                    state = if n == left { ChunkState::DataEnd } else { ChunkState::Data(left - n) };
                }
                ChunkState::Done => unreachable!("the loop stops at Done"),
            }
        }
        self.chunked = Some(state);
        Ok(used)
    }

    /// Takes one CRLF-terminated line (without the CRLF), buffering a partial
    /// one; None when the line is not complete yet.
    fn take_line(&mut self, buf: &[u8], used: &mut usize) -> Result<Option<Vec<u8>>, HttpError> {
        let rest = &buf[*used..];
        match rest.iter().position(|&b| b == b'\n') {
            Some(i) => {
                self.line.extend_from_slice(&rest[..i]);
                *used += i + 1;
                let mut line = std::mem::take(&mut self.line);
                if line.pop() != Some(b'\r') {
                    return Err(HttpError::BadChunk("line not ended by CRLF"));
                }
                Ok(Some(line))
            }
            None => {
                self.line.extend_from_slice(rest);
                *used = buf.len();
                if self.line.len() > CHUNK_LINE_MAX {
                    return Err(HttpError::BadChunk("line too long"));
                }
                Ok(None)
            }
        }
    }

    pub fn is_done(&self) -> bool {
        match self.chunked {
            None => self.remaining == 0,
            Some(state) => state == ChunkState::Done,
        }
    }

    pub fn take_body(&mut self) -> Bytes {
        std::mem::take(&mut self.body).freeze()
    }
}

/// An HTTP response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Response {
    pub fn new(status: u16) -> Self {
        Response { status, headers: Vec::new(), body: Bytes::new() }
    }

    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Response::new(status).with_header("content-type", "text/plain; charset=utf-8").with_body(body.into())
    }

    pub fn json(status: u16, body: impl Into<String>) -> Self {
        Response::new(status).with_header("content-type", "application/json").with_body(body.into())
    }

    pub fn html(status: u16, body: impl Into<String>) -> Self {
        Response::new(status).with_header("content-type", "text/html; charset=utf-8").with_body(body.into())
    }

    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub fn with_body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// The response on the wire. Content-Length is always computed here;
    /// a header with CR or LF in its name or value is dropped, so a response
    /// cannot be split.
    pub fn encode(&self, keep_alive: bool) -> Vec<u8> {
        self.encode_with(keep_alive, &[])
    }

    /// As `encode`, with `extra` headers (CORS, say) that the response does
    /// not set itself.
    pub fn encode_with(&self, keep_alive: bool, extra: &[(String, String)]) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + self.body.len());
        out.extend_from_slice(format!("HTTP/1.1 {} {}\r\n", self.status, reason_phrase(self.status)).as_bytes());
        let own = |name: &str| self.headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name));
        let extra = extra.iter().filter(|(name, _)| !own(name));
        for (name, value) in self.headers.iter().chain(extra) {
            let safe = !name.is_empty() && ![name, value].iter().any(|s| s.contains(['\r', '\n']));
            if safe && !name.eq_ignore_ascii_case("content-length") && !name.eq_ignore_ascii_case("connection") {
                out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
        }
        out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        if !keep_alive {
            out.extend_from_slice(b"connection: close\r\n");
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// Compares a secret without an early exit, so the time taken does not tell
/// how much of a guess was right.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub fn reason_phrase(status: u16) -> &'static str {
    match status {
        101 => "Switching Protocols",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        303 => "See Other",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "Unknown",
    }
}

/// The response for a refused request; the connection is closed after it.
pub fn error_response(error: &HttpError) -> Vec<u8> {
    let mut response = Response::text(error.status(), error.to_string());
    if *error == HttpError::UnsupportedWebSocketVersion {
        response = response.with_header("sec-websocket-version", "13");
    }
    response.encode(false)
}

/// A WebSocket upgrade request (RFC 6455 §4.2.1).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upgrade {
    pub key: String,
    /// Offered sub-protocols, in the client's order.
    pub protocols: Vec<String>,
    /// The `Sec-WebSocket-Extensions` answer to an acceptable
    /// permessage-deflate offer, if the client made one.
    pub deflate: Option<&'static str>,
}

/// `Ok(None)` when the request does not ask for a WebSocket; otherwise the
/// checked upgrade, or why it is refused.
pub fn parse_upgrade(head: &RequestHead) -> Result<Option<Upgrade>, HttpError> {
    if !head.tokens("upgrade").any(|t| t.eq_ignore_ascii_case("websocket")) {
        return Ok(None);
    }
    if head.method != "GET" {
        return Err(HttpError::BadUpgrade("method must be GET"));
    }
    if head.minor_version < 1 {
        return Err(HttpError::BadUpgrade("HTTP/1.1 or later is required"));
    }
    if !head.tokens("connection").any(|t| t.eq_ignore_ascii_case("upgrade")) {
        return Err(HttpError::BadUpgrade("connection header must include upgrade"));
    }
    if head.header_str("sec-websocket-version") != Some("13") {
        return Err(HttpError::UnsupportedWebSocketVersion);
    }
    let key = head.header_str("sec-websocket-key").ok_or(HttpError::BadUpgrade("missing sec-websocket-key"))?;
    if !is_base64_of_16_bytes(key) {
        return Err(HttpError::BadUpgrade("sec-websocket-key must be 16 bytes in base64"));
    }
    let protocols = head.tokens("sec-websocket-protocol").map(str::to_owned).collect();
    let extensions = head
        .headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("sec-websocket-extensions"))
        .filter_map(|h| std::str::from_utf8(&h.value).ok());
    let deflate = crate::deflate::negotiate(extensions);
    Ok(Some(Upgrade { key: key.to_owned(), protocols, deflate }))
}

fn is_base64_of_16_bytes(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 24 && b.ends_with(b"==") && b[..22].iter().all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// The 101 response accepting an upgrade.
pub fn switching_protocols(key: &str, protocol: Option<&str>, extra: &[(String, String)]) -> Vec<u8> {
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    let mut out = format!(
        "HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-accept: {accept}\r\n"
    );
    if let Some(protocol) = protocol.filter(|p| !p.contains(['\r', '\n'])) {
        out.push_str(&format!("sec-websocket-protocol: {protocol}\r\n"));
    }
    for (name, value) in extra {
        if ![name, value].iter().any(|s| s.contains(['\r', '\n'])) {
            out.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    out.push_str("\r\n");
    out.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: HttpLimits = HttpLimits { head_bytes_max: 1024, body_bytes_max: 100, headers_max: 8 };

    fn head(text: &str) -> Result<Option<(RequestHead, usize, BodyFraming)>, HttpError> {
        parse_head(text.as_bytes(), &LIMITS)
    }

    #[test]
    fn parses_a_head_at_any_split() {
        let text = "GET /parties/main/r?_pk=a HTTP/1.1\r\nHost: x\r\nX-A: b\r\n\r\n";
        for cut in 0..text.len() {
            assert!(head(&text[..cut]).unwrap().is_none(), "incomplete at {cut}");
        }
        let (head, len, framing) = head(text).unwrap().unwrap();
        assert_eq!((len, framing), (text.len(), BodyFraming::None));
        assert_eq!((head.path(), head.query()), ("/parties/main/r", "_pk=a"));
        assert_eq!(head.header_str("x-a"), Some("b"));
        assert!(head.keep_alive());
    }

    #[test]
    fn limits_and_malformed_heads() {
        let big = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(2000));
        assert_eq!(head(&big).unwrap_err().status(), 431);
        let many: String = (0..9).map(|i| format!("H{i}: v\r\n")).collect();
        assert_eq!(head(&format!("GET / HTTP/1.1\r\n{many}\r\n")).unwrap_err().status(), 431);
        assert_eq!(head("GET / HTTP/1.1\r\nno colon\r\n\r\n").unwrap_err().status(), 400);
        assert_eq!(head("POST / HTTP/1.1\r\ncontent-length: 101\r\n\r\n").unwrap_err().status(), 413);
        assert_eq!(
            head("POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n").unwrap_err().status(),
            400
        );
        assert_eq!(head("POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n").unwrap_err().status(), 400);
        let both = "POST / HTTP/1.1\r\ntransfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n";
        assert_eq!(head(both).unwrap_err().status(), 400);
        assert_eq!(head("POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n").unwrap_err().status(), 501);
    }

    #[test]
    fn keep_alive_rules() {
        let ka = |t: &str| head(t).unwrap().unwrap().0.keep_alive();
        assert!(ka("GET / HTTP/1.1\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(!ka("GET / HTTP/1.0\r\n\r\n"));
        assert!(ka("GET / HTTP/1.0\r\nconnection: keep-alive\r\n\r\n"));
    }

    fn decode_body(framing: BodyFraming, bytes: &[u8], step: usize) -> Result<(Bytes, usize), HttpError> {
        let mut decoder = BodyDecoder::new(framing, 100);
        let mut used = 0;
        while !decoder.is_done() && used < bytes.len() {
            let end = (used + step).min(bytes.len());
            used += decoder.feed(&bytes[used..end])?;
        }
        assert!(decoder.is_done());
        Ok((decoder.take_body(), used))
    }

    #[test]
    fn chunked_bodies_at_any_step() {
        let body = b"5;ext=1\r\nhello\r\n1\r\n!\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        for step in 1..body.len() {
            let (got, used) = decode_body(BodyFraming::Chunked, body, step).unwrap();
            assert_eq!(&got[..], b"hello!");
            assert_eq!(&body[used..], b"NEXT");
        }
        let (got, used) = decode_body(BodyFraming::Length(3), b"abcdef", 2).unwrap();
        assert_eq!((&got[..], used), (&b"abc"[..], 3));
        assert_eq!(decode_body(BodyFraming::Chunked, b"zz\r\n", 4).unwrap_err().status(), 400);
        assert_eq!(decode_body(BodyFraming::Chunked, b"65\r\n", 4).unwrap_err().status(), 413);
    }

    #[test]
    fn responses_encode_and_refuse_splitting() {
        let response = Response::text(200, "hi").with_header("x-evil", "a\r\nset-cookie: b").with_header("x-ok", "1");
        let text = String::from_utf8(response.encode(false)).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"));
        assert!(text.contains("content-length: 2\r\n") && text.contains("connection: close\r\n"));
        assert!(text.contains("x-ok: 1\r\n") && !text.contains("set-cookie"));
        assert!(text.ends_with("\r\n\r\nhi"));
    }

    #[test]
    fn upgrades() {
        let up = |extra: &str| {
            let text =
                format!("GET /p HTTP/1.1\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\n{extra}\r\n");
            parse_upgrade(&head(&text).unwrap().unwrap().0)
        };
        let key = "sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
        let ok = up(&format!(
            "{key}sec-websocket-version: 13\r\nsec-websocket-protocol: a, b\r\nsec-websocket-protocol: c\r\n"
        ))
        .unwrap()
        .unwrap();
        assert_eq!(ok.protocols, ["a", "b", "c"]);
        assert_eq!(up("sec-websocket-version: 13\r\n").unwrap_err().status(), 400);
        assert_eq!(up(&format!("{key}sec-websocket-version: 8\r\n")).unwrap_err().status(), 426);
        assert_eq!(up("sec-websocket-key: short\r\nsec-websocket-version: 13\r\n").unwrap_err().status(), 400);
        let plain = head("GET / HTTP/1.1\r\n\r\n").unwrap().unwrap().0;
        assert_eq!(parse_upgrade(&plain), Ok(None));
        let text = String::from_utf8(switching_protocols("dGhlIHNhbXBsZSBub25jZQ==", Some("b"), &[])).unwrap();
        assert!(text.contains("sec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"), "{text}");
        assert!(text.contains("sec-websocket-protocol: b\r\n"));
    }

    proptest! {
        #[test]
        fn parse_head_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_head(&bytes, &LIMITS);
        }
    }
}
