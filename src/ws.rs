//! The server side of the WebSocket protocol (RFC 6455) as pure functions over
//! byte slices: a frame decoder that enforces the protocol's rules and
//! reassembles fragmented messages, and encoders for unmasked server frames.
//!
//! The reactor is the only place that does I/O; this module only turns bytes
//! into events and errors (each with the close code the RFC requires), so it
//! can be tested and fuzzed on its own. Frame headers are parsed and written
//! with tungstenite's `FrameHeader`; its per-connection `WebSocket` is not used
//! because it keeps a large read buffer per connection.

use crate::deflate::{InflateError, Inflater};
use bytes::{BufMut, Bytes, BytesMut};
use std::io::Cursor;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::{FrameHeader, Utf8Bytes};

/// The limits the decoder enforces.
#[derive(Debug, Clone)]
pub struct WsLimits {
    /// The largest message, reassembled; also bounds a single frame.
    pub max_message_bytes: usize,
}

/// A complete event from the peer.
#[derive(Debug, PartialEq, Eq)]
pub enum WsEvent {
    /// A complete text message; the type proves it is UTF-8, so nobody
    /// downstream validates it again.
    Text(Utf8Bytes),
    Binary(Bytes),
    Ping(Bytes),
    Pong(Bytes),
    /// The peer's close frame; `code` is None when the payload was empty.
    Close {
        code: Option<u16>,
        reason: String,
    },
}

/// A protocol violation by the peer. The message is a short reason fit for a
/// close frame.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WsError {
    #[error("frame not masked")]
    Unmasked,
    #[error("reserved bits set without an extension")]
    ReservedBits,
    #[error("reserved opcode")]
    ReservedOpcode,
    #[error("control frame too long or fragmented")]
    BadControlFrame,
    #[error("continuation frame without a message")]
    UnexpectedContinuation,
    #[error("new message inside a fragmented message")]
    ExpectedContinuation,
    #[error("invalid frame length")]
    BadLength,
    #[error("message too big")]
    MessageTooBig,
    #[error("invalid UTF-8 in text message")]
    InvalidUtf8,
    #[error("invalid close frame")]
    BadClose,
    #[error("invalid close code")]
    InvalidCloseCode,
    #[error("invalid UTF-8 in close reason")]
    InvalidCloseReason,
    #[error("invalid compressed message")]
    BadCompression,
}

impl WsError {
    /// Whether the error is in the peer's close frame: the peer has closed,
    /// so the server answers and closes TCP at once (RFC 6455 §7.1.1).
    pub fn is_in_close(&self) -> bool {
        matches!(self, WsError::BadClose | WsError::InvalidCloseCode | WsError::InvalidCloseReason)
    }

    /// The close code RFC 6455 §7.4.1 asks for.
    pub fn close_code(&self) -> u16 {
        match self {
            WsError::MessageTooBig => 1009,
            WsError::InvalidUtf8 | WsError::InvalidCloseReason | WsError::BadCompression => 1007,
            _ => 1002,
        }
    }
}

/// A message being reassembled from fragments.
#[derive(Debug)]
struct Partial {
    text: bool,
    /// Its first frame had RSV1 (permessage-deflate): `data` is compressed
    /// and is inflated (and its UTF-8 checked) once complete.
    compressed: bool,
    data: BytesMut,
    /// Bytes of `data` already known to be valid UTF-8.
    utf8_checked: usize,
}

/// Decodes client frames. Holds no heap memory unless a fragmented message is
/// in progress or the peer has broken the protocol.
#[derive(Debug, Default)]
pub struct Decoder {
    state: Option<Box<State>>,
}

#[derive(Debug)]
enum State {
    /// A fragmented message being reassembled.
    Message(Partial),
    /// The peer broke the protocol and has been answered with a close. The
    /// stream is read on only to find the peer's close frame, so that it
    /// reads ours instead of being reset while it is still writing: the
    /// rest of the failed frame (`skip` bytes) and every frame but a close
    /// are discarded as they arrive, never buffered.
    Failed { skip: u64 },
}

const _: () = assert!(size_of::<Decoder>() <= 8, "an idle decoder is one pointer");

impl Decoder {
    pub fn new() -> Self {
        Decoder { state: None }
    }

    /// True while a fragmented message is being reassembled.
    pub fn in_message(&self) -> bool {
        matches!(self.state.as_deref(), Some(State::Message(_)))
    }

    fn partial(&self) -> Option<&Partial> {
        match self.state.as_deref() {
            Some(State::Message(partial)) => Some(partial),
            _ => None,
        }
    }

    /// Decodes every complete frame at the front of `buf` (unmasking in
    /// place), calls `on_event` for each completed event and returns how many
    /// bytes were consumed; the rest is an incomplete frame the caller keeps
    /// and presents again with more data.
    ///
    /// Stops at the first protocol error, with the bytes consumed up to it:
    /// the failed frame's header and as much of its payload as `buf` holds.
    /// From then on the decoder only discards (see `State::Failed`) and
    /// reports the peer's close frame, so the caller passes it the rest of
    /// the stream until that close arrives or its close timeout ends.
    ///
    /// `inflater` is there when the connection negotiated permessage-deflate:
    /// messages whose first frame sets RSV1 are then inflated, within
    /// `limits.max_message_bytes` inflated (else RSV1 is a protocol error).
    pub fn decode(
        &mut self,
        buf: &mut [u8],
        limits: &WsLimits,
        mut inflater: Option<&mut Inflater>,
        on_event: &mut impl FnMut(WsEvent),
    ) -> (usize, Result<(), WsError>) {
        let mut used = 0;
        loop {
            if let Some(State::Failed { skip }) = self.state.as_deref_mut() {
                let n = (*skip).min((buf.len() - used) as u64);
                *skip -= n;
                used += n as usize;
                if *skip > 0 {
                    return (used, Ok(()));
                }
            }
            let mut cursor = Cursor::new(&buf[used..]);
            let (header, len) = match FrameHeader::parse(&mut cursor) {
                Ok(Some(parsed)) => parsed,
                Ok(None) => return (used, Ok(())),
                // tungstenite reports an invalid opcode or length as an
                // error; nothing after it can be framed, so nothing is read on.
                Err(_) => return (buf.len(), Err(WsError::BadLength)),
            };
            let header_len = cursor.position() as usize;
            if let Some(State::Failed { .. }) = self.state.as_deref() {
                match self.discard(&header, len, &mut buf[used..], header_len, on_event) {
                    Some(n) => used += n,
                    None => return (used, Ok(())),
                }
                continue;
            }
            if let Err(error) = self.check_header(&header, len, limits, inflater.is_some()) {
                // Decided from the header: the payload is skipped unread.
                let present = (buf.len() - used - header_len) as u64;
                self.state = Some(Box::new(State::Failed { skip: len - len.min(present) }));
                return (used + header_len + len.min(present) as usize, Err(error));
            }
            let len = len as usize;
            if buf.len() - used - header_len < len {
                return (used, Ok(()));
            }
            let start = used + header_len;
            let payload = &mut buf[start..start + len];
            if let Some(mask) = header.mask {
                apply_mask(payload, mask);
            }
            used = start + len;
            if let Err(error) = self.on_frame(&header, payload, limits, inflater.as_deref_mut(), on_event) {
                self.state = Some(Box::new(State::Failed { skip: 0 }));
                return (used, Err(error));
            }
        }
    }

    /// After a protocol error: reports a close frame (its code, if it has a
    /// valid one) and pings, and discards every other frame, starting with
    /// the part of its payload in `buf`. Returns the bytes used, or `None`
    /// when a control frame is not complete yet.
    fn discard(
        &mut self,
        header: &FrameHeader,
        len: u64,
        buf: &mut [u8],
        header_len: usize,
        on_event: &mut impl FnMut(WsEvent),
    ) -> Option<usize> {
        let control = matches!(header.opcode, OpCode::Control(Control::Close | Control::Ping)) && len <= 125;
        if !control {
            let present = (buf.len() - header_len) as u64;
            self.state = Some(Box::new(State::Failed { skip: len - len.min(present) }));
            return Some(header_len + len.min(present) as usize);
        }
        let len = len as usize;
        if buf.len() - header_len < len {
            return None;
        }
        let payload = &mut buf[header_len..header_len + len];
        if let Some(mask) = header.mask {
            apply_mask(payload, mask);
        }
        on_event(match header.opcode {
            OpCode::Control(Control::Ping) => WsEvent::Ping(Bytes::copy_from_slice(payload)),
            _ => parse_close(payload).unwrap_or(WsEvent::Close { code: None, reason: String::new() }),
        });
        Some(header_len + len)
    }

    /// Every rule that the header alone decides, checked before any payload
    /// is buffered.
    fn check_header(&self, header: &FrameHeader, len: u64, limits: &WsLimits, deflate: bool) -> Result<(), WsError> {
        // RFC 6455 §5.2: the most significant bit of a 64-bit length is 0.
        if len >> 63 != 0 {
            return Err(WsError::BadLength);
        }
        if header.mask.is_none() {
            return Err(WsError::Unmasked);
        }
        // RSV1 marks a compressed message, on its first frame only (RFC 7692 §6).
        let starts_message = matches!(header.opcode, OpCode::Data(Data::Text | Data::Binary));
        if (header.rsv1 && !(deflate && starts_message)) || header.rsv2 || header.rsv3 {
            return Err(WsError::ReservedBits);
        }
        match header.opcode {
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => Err(WsError::ReservedOpcode),
            // A close that breaks the rules is still the peer's close.
            OpCode::Control(Control::Close) if len > 125 || !header.is_final => Err(WsError::BadClose),
            OpCode::Control(_) if len > 125 || !header.is_final => Err(WsError::BadControlFrame),
            OpCode::Control(_) => Ok(()),
            OpCode::Data(Data::Continue) if self.partial().is_none() => Err(WsError::UnexpectedContinuation),
            OpCode::Data(Data::Text | Data::Binary) if self.partial().is_some() => Err(WsError::ExpectedContinuation),
            OpCode::Data(_) => {
                let so_far = self.partial().map_or(0, |p| p.data.len() as u64);
                if so_far + len > limits.max_message_bytes as u64 {
                    Err(WsError::MessageTooBig)
                } else {
                    Ok(())
                }
            }
        }
    }

    fn on_frame(
        &mut self,
        header: &FrameHeader,
        payload: &[u8],
        limits: &WsLimits,
        inflater: Option<&mut Inflater>,
        on_event: &mut impl FnMut(WsEvent),
    ) -> Result<(), WsError> {
        match header.opcode {
            OpCode::Control(Control::Ping) => on_event(WsEvent::Ping(Bytes::copy_from_slice(payload))),
            OpCode::Control(Control::Pong) => on_event(WsEvent::Pong(Bytes::copy_from_slice(payload))),
            OpCode::Control(Control::Close) => on_event(parse_close(payload)?),
            OpCode::Data(Data::Text | Data::Binary) if header.is_final => {
                let text = header.opcode == OpCode::Data(Data::Text);
                let data = match inflater.filter(|_| header.rsv1) {
                    Some(inflater) => inflate(inflater, payload, limits)?,
                    None => Bytes::copy_from_slice(payload),
                };
                on_event(message_event(text, data)?);
            }
            OpCode::Data(Data::Text | Data::Binary) => {
                let mut partial = Partial {
                    text: header.opcode == OpCode::Data(Data::Text),
                    compressed: header.rsv1,
                    data: BytesMut::with_capacity(payload.len().min(limits.max_message_bytes)),
                    utf8_checked: 0,
                };
                partial.append(payload, false)?;
                self.state = Some(Box::new(State::Message(partial)));
            }
            OpCode::Data(Data::Continue) => {
                let Some(State::Message(partial)) = self.state.as_deref_mut() else {
                    unreachable!("check_header admits a continuation only inside a message")
                };
                partial.append(payload, header.is_final)?;
                if header.is_final {
                    let Some(State::Message(partial)) = self.state.take().map(|state| *state) else {
                        unreachable!("a message is in progress")
                    };
                    let data = match inflater.filter(|_| partial.compressed) {
                        Some(inflater) => inflate(inflater, &partial.data, limits)?,
                        None => partial.data.freeze(),
                    };
                    // A fragmented text message was validated piece by piece
                    // already (unless compressed); this second pass is the
                    // price of the proof type without unsafe, paid only by
                    // fragmented messages.
                    on_event(message_event(partial.text, data)?);
                }
            }
            OpCode::Data(Data::Reserved(_)) | OpCode::Control(Control::Reserved(_)) => {
                unreachable!("check_header refuses reserved opcodes")
            }
        }
        Ok(())
    }
}

/// A complete message as an event; text must be UTF-8.
fn message_event(text: bool, data: Bytes) -> Result<WsEvent, WsError> {
    Ok(if text {
        WsEvent::Text(Utf8Bytes::try_from(data).map_err(|_| WsError::InvalidUtf8)?)
    } else {
        WsEvent::Binary(data)
    })
}

/// A compressed message's payload, inflated within the message size limit.
fn inflate(inflater: &mut Inflater, compressed: &[u8], limits: &WsLimits) -> Result<Bytes, WsError> {
    match inflater.inflate(compressed, limits.max_message_bytes) {
        Ok(data) => Ok(Bytes::from(data)),
        Err(InflateError::TooBig) => Err(WsError::MessageTooBig),
        Err(InflateError::Corrupt) => Err(WsError::BadCompression),
    }
}

impl Partial {
    /// Appends a fragment, validating UTF-8 as far as it can be decided now:
    /// an invalid sequence fails at the fragment where it appears, an
    /// incomplete one at the end only fails on the final fragment.
    fn append(&mut self, payload: &[u8], is_final: bool) -> Result<(), WsError> {
        self.data.put_slice(payload);
        if !self.text || self.compressed {
            return Ok(());
        }
        let unchecked = &self.data[self.utf8_checked..];
        match std::str::from_utf8(unchecked) {
            Ok(_) => {
                self.utf8_checked = self.data.len();
            }
            Err(e) if e.error_len().is_none() && !is_final => {
                self.utf8_checked += e.valid_up_to();
            }
            Err(_) => return Err(WsError::InvalidUtf8),
        }
        Ok(())
    }
}

fn parse_close(payload: &[u8]) -> Result<WsEvent, WsError> {
    match payload.len() {
        0 => Ok(WsEvent::Close { code: None, reason: String::new() }),
        1 => Err(WsError::BadClose),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !is_valid_close_code(code) {
                return Err(WsError::InvalidCloseCode);
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| WsError::InvalidCloseReason)?;
            Ok(WsEvent::Close { code: Some(code), reason: reason.to_owned() })
        }
    }
}

/// Close codes that may appear on the wire (RFC 6455 §7.4 and the IANA
/// registry): 1005, 1006 and 1015 are for reporting only.
pub fn is_valid_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XORs `buf` with the masking key (RFC 6455 §5.3), eight bytes at a time.
pub fn apply_mask(buf: &mut [u8], key: [u8; 4]) {
    let wide = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = buf.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let word = u64::from_ne_bytes((&*chunk).try_into().expect("chunks_exact yields 8 bytes")) ^ wide;
        chunk.copy_from_slice(&word.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

fn frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let header = FrameHeader { is_final: true, opcode, ..FrameHeader::default() };
    let len = payload.len() as u64;
    let mut out = Vec::with_capacity(header.len(len) + payload.len());
    header.format(len, &mut out).expect("writing to a Vec cannot fail");
    out.extend_from_slice(payload);
    Bytes::from(out)
}

pub fn text_frame(payload: &[u8]) -> Bytes {
    frame(OpCode::Data(Data::Text), payload)
}

/// A text or binary message compressed with permessage-deflate: its
/// payload deflated on its own, RSV1 set (RFC 7692 §6.1).
pub fn deflated_frame(text: bool, payload: &[u8]) -> Bytes {
    let opcode = OpCode::Data(if text { Data::Text } else { Data::Binary });
    let compressed = crate::deflate::compress(payload);
    let header = FrameHeader { is_final: true, rsv1: true, opcode, ..FrameHeader::default() };
    let len = compressed.len() as u64;
    let mut out = Vec::with_capacity(header.len(len) + compressed.len());
    header.format(len, &mut out).expect("writing to a Vec cannot fail");
    out.extend_from_slice(&compressed);
    Bytes::from(out)
}

pub fn binary_frame(payload: &[u8]) -> Bytes {
    frame(OpCode::Data(Data::Binary), payload)
}

/// The payload of one unmasked, uncompressed server text or binary frame
/// (one this server made), and whether it is text: what a room's socket to
/// another room receives (`reactor/links.rs`). `None` for anything else.
pub fn server_frame_payload(frame: &[u8]) -> Option<(bool, &[u8])> {
    let mut cursor = Cursor::new(frame);
    let (header, len) = FrameHeader::parse(&mut cursor).ok()??;
    let start = usize::try_from(cursor.position()).ok()?;
    let text = match header.opcode {
        OpCode::Data(Data::Text) => true,
        OpCode::Data(Data::Binary) => false,
        _ => return None,
    };
    if header.mask.is_some()
        || header.rsv1
        || !header.is_final
        || start.checked_add(usize::try_from(len).ok()?)? != frame.len()
    {
        return None;
    }
    Some((text, &frame[start..]))
}

pub fn ping_frame(payload: &[u8]) -> Bytes {
    frame(OpCode::Control(Control::Ping), payload)
}

pub fn pong_frame(payload: &[u8]) -> Bytes {
    frame(OpCode::Control(Control::Pong), payload)
}

/// A close frame; the reason is cut on a character boundary to fit the 125
/// bytes a control frame may carry.
pub fn close_frame(code: Option<u16>, reason: &str) -> Bytes {
    let Some(code) = code else { return frame(OpCode::Control(Control::Close), &[]) };
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    let mut payload = Vec::with_capacity(2 + end);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..end]);
    frame(OpCode::Control(Control::Close), &payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const LIMITS: WsLimits = WsLimits { max_message_bytes: 1 << 20 };

    fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![(u8::from(fin) << 7) | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let key = [1, 2, 3, 4];
        out.extend_from_slice(&key);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        out
    }

    fn decode_all(bytes: &[u8]) -> (Vec<WsEvent>, Result<usize, WsError>) {
        let mut buf = bytes.to_vec();
        let mut events = Vec::new();
        let (used, result) = Decoder::new().decode(&mut buf, &LIMITS, None, &mut |e| events.push(e));
        (events, result.map(|()| used))
    }

    fn error_of(bytes: &[u8]) -> u16 {
        decode_all(bytes).1.unwrap_err().close_code()
    }

    #[test]
    fn single_frames_of_every_length_encoding() {
        for len in [0, 125, 126, 65535, 65536] {
            let payload = vec![b'x'; len];
            let (events, used) = decode_all(&client_frame(true, 2, &payload));
            assert_eq!(events, vec![WsEvent::Binary(Bytes::from(payload.clone()))]);
            assert_eq!(used.unwrap(), client_frame(true, 2, &payload).len());
        }
        assert_eq!(decode_all(&client_frame(true, 1, b"hi")).0, vec![WsEvent::Text("hi".into())]);
    }

    #[test]
    fn fragments_with_an_interleaved_ping() {
        let mut bytes = client_frame(false, 1, "caf".as_bytes());
        bytes.extend(client_frame(true, 9, b"p"));
        let split = "é!".as_bytes();
        bytes.extend(client_frame(false, 0, &split[..1]));
        bytes.extend(client_frame(true, 0, &split[1..]));
        let (events, _) = decode_all(&bytes);
        assert_eq!(events, vec![WsEvent::Ping(Bytes::from_static(b"p")), WsEvent::Text("café!".into())]);
    }

    #[test]
    fn invalid_utf8_fails_at_its_fragment() {
        let mut decoder = Decoder::new();
        let mut bytes = client_frame(false, 1, &[b'a', 0xff]);
        let (_, result) = decoder.decode(&mut bytes, &LIMITS, None, &mut |_| {});
        assert_eq!(result, Err(WsError::InvalidUtf8));
        // An incomplete sequence on the final fragment is invalid too.
        let mut bytes = client_frame(true, 1, &[0xc3]);
        assert_eq!(Decoder::new().decode(&mut bytes, &LIMITS, None, &mut |_| {}).1, Err(WsError::InvalidUtf8));
    }

    #[test]
    fn protocol_errors_have_their_close_codes() {
        let mut unmasked = client_frame(true, 1, b"x");
        unmasked[1] &= 0x7f;
        unmasked.drain(2..6);
        assert_eq!(error_of(&unmasked), 1002);
        let mut rsv = client_frame(true, 1, b"x");
        rsv[0] |= 0x40;
        assert_eq!(error_of(&rsv), 1002);
        assert_eq!(error_of(&client_frame(true, 3, b"x")), 1002);
        assert_eq!(error_of(&client_frame(true, 11, b"x")), 1002);
        assert_eq!(error_of(&client_frame(true, 9, &[0; 126])), 1002);
        assert_eq!(error_of(&client_frame(false, 9, b"x")), 1002);
        assert_eq!(error_of(&client_frame(true, 0, b"x")), 1002);
        let mut two = client_frame(false, 1, b"a");
        two.extend(client_frame(true, 1, b"b"));
        assert_eq!(error_of(&two), 1002);
        assert_eq!(error_of(&client_frame(true, 8, &[3])), 1002);
        assert_eq!(error_of(&client_frame(true, 8, &1005u16.to_be_bytes())), 1002);
        assert_eq!(error_of(&client_frame(true, 8, &[3, 232, 0xff])), 1007);
        assert_eq!(error_of(&client_frame(true, 1, &[0xff])), 1007);
    }

    #[test]
    fn too_big_is_decided_from_the_header_alone() {
        let limits = WsLimits { max_message_bytes: 10 };
        let frame = client_frame(true, 2, &[0; 11]);
        let mut header_only = frame[..6].to_vec();
        let (_, result) = Decoder::new().decode(&mut header_only, &limits, None, &mut |_| {});
        assert_eq!(result, Err(WsError::MessageTooBig));
        let mut at_limit = client_frame(true, 2, &[0; 10]);
        assert!(Decoder::new().decode(&mut at_limit, &limits, None, &mut |_| {}).1.is_ok());
    }

    #[test]
    fn server_frames_give_back_their_payload() {
        assert_eq!(server_frame_payload(&text_frame(b"hi")), Some((true, &b"hi"[..])));
        let long = vec![7u8; 70_000];
        assert_eq!(server_frame_payload(&binary_frame(&long)), Some((false, &long[..])));
        assert_eq!(server_frame_payload(&ping_frame(b"x")), None);
        assert_eq!(server_frame_payload(&deflated_frame(true, b"hello")), None);
        assert_eq!(server_frame_payload(&text_frame(b"hi")[..3]), None);
    }

    #[test]
    fn close_frames() {
        let (events, _) = decode_all(&client_frame(true, 8, &[0x03, 0xe8, b'o', b'k']));
        assert_eq!(events, vec![WsEvent::Close { code: Some(1000), reason: "ok".into() }]);
        assert_eq!(
            decode_all(&client_frame(true, 8, &[])).0,
            vec![WsEvent::Close { code: None, reason: String::new() }]
        );
        let long = "é".repeat(100);
        let frame = close_frame(Some(1000), &long);
        assert!(frame.len() <= 127);
        assert!(std::str::from_utf8(&frame[4..]).is_ok());
    }

    #[test]
    fn encoded_frames_parse_back() {
        for len in [0usize, 5, 200, 70_000] {
            let payload = vec![9u8; len];
            let frame = binary_frame(&payload);
            let (header, parsed_len) = FrameHeader::parse(&mut Cursor::new(&frame[..])).unwrap().unwrap();
            assert_eq!(parsed_len as usize, len);
            assert!(header.is_final && header.mask.is_none());
            assert_eq!(frame.len(), header.len(len as u64) + len);
        }
    }

    proptest! {
        #[test]
        fn mask_matches_bytewise_reference(data in proptest::collection::vec(any::<u8>(), 0..100), key in any::<[u8; 4]>()) {
            let mut fast = data.clone();
            apply_mask(&mut fast, key);
            let reference: Vec<u8> = data.iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
            prop_assert_eq!(fast, reference);
        }

        /// Feeding the stream in arbitrary pieces, keeping what was not
        /// consumed as the reactor does, gives the same events as one piece.
        #[test]
        fn split_feeding_matches_one_shot(
            messages in proptest::collection::vec(("[a-zé]{0,40}", 1usize..4), 1..6),
            cuts in proptest::collection::vec(1usize..50, 1..30),
        ) {
            let mut stream = Vec::new();
            for (text, pieces) in &messages {
                let bytes = text.as_bytes();
                let step = bytes.len().div_ceil(*pieces).max(1);
                let chunks: Vec<&[u8]> = if bytes.is_empty() { vec![&[][..]] } else { bytes.chunks(step).collect() };
                for (i, chunk) in chunks.iter().enumerate() {
                    let opcode = if i == 0 { 1 } else { 0 };
                    stream.extend(client_frame(i + 1 == chunks.len(), opcode, chunk));
                }
            }
            let (expected, _) = decode_all(&stream);
            let mut decoder = Decoder::new();
            let mut kept: Vec<u8> = Vec::new();
            let mut got = Vec::new();
            let mut at = 0;
            for cut in cuts.iter().cycle() {
                if at >= stream.len() { break; }
                let end = (at + cut).min(stream.len());
                kept.extend_from_slice(&stream[at..end]);
                at = end;
                let (used, result) = decoder.decode(&mut kept, &LIMITS, None, &mut |e| got.push(e));
                result.unwrap();
                kept.drain(..used);
            }
            prop_assert_eq!(got, expected);
        }
    }
}
