//! RFC 6455 framing on the server side, built on tungstenite's protocol types
//! (`FrameHeader`, `OpCode`, `CloseCode`).
//!
//! Encoding: a server frame is unmasked, so a text frame is built once and its `Bytes` shared
//! by every subscriber. Decoding: `FrameDecoder` works over the connection's read buffer and
//! rejects a frame whose header announces more than the limit *before* any of its payload is
//! buffered (a 16 MiB frame costs us 14 bytes of header, not 16 MiB).

use std::io::Cursor;

use bytes::{Bytes, BytesMut};
use tungstenite::protocol::frame::{
    FrameHeader,
    coding::{CloseCode, Control, Data, OpCode},
};

/// Room reserved in front of a JSON body for the largest server frame header.
const HEADER_ROOM: usize = 10;

/// Serializes `value` as JSON straight into a text frame: one allocation, no copy.
pub fn encode_json<T: serde::Serialize + ?Sized>(value: &T) -> Bytes {
    let mut buf = Vec::with_capacity(128);
    buf.resize(HEADER_ROOM, 0);
    serde_json::to_writer(&mut buf, value).expect("serializing to a Vec cannot fail");
    finish(buf, OpCode::Data(Data::Text))
}

/// An empty text frame body to write into (behind the room for the header); `text_frame`
/// turns it into the frame without copying. For bodies that are not one `Serialize` value
/// (the Socket.IO encodings).
pub fn text_buf(capacity: usize) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_ROOM + capacity);
    buf.resize(HEADER_ROOM, 0);
    buf
}

/// The text frame of a body written into a `text_buf`.
pub fn text_frame(buf: Vec<u8>) -> Bytes {
    debug_assert!(buf.len() >= HEADER_ROOM);
    finish(buf, OpCode::Data(Data::Text))
}

/// A control or data frame with an arbitrary (small) payload.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut buf = Vec::with_capacity(HEADER_ROOM + payload.len());
    buf.resize(HEADER_ROOM, 0);
    buf.extend_from_slice(payload);
    finish(buf, opcode)
}

/// The payload of a server frame built here (unmasked; see `finish` for the header).
pub fn payload_of(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return &[],
    };
    frame.get(header..).unwrap_or(&[])
}

/// A close frame with a code and a reason (truncated to fit the 125-byte control limit).
pub fn encode_close(code: CloseCode, reason: &str) -> Bytes {
    let mut p = Vec::with_capacity(2 + reason.len().min(123));
    p.extend_from_slice(&u16::from(code).to_be_bytes());
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    p.extend_from_slice(&reason.as_bytes()[..end]);
    encode(OpCode::Control(Control::Close), &p)
}

fn finish(mut buf: Vec<u8>, opcode: OpCode) -> Bytes {
    let len = buf.len() - HEADER_ROOM;
    let first = 0x80 | u8::from(opcode);
    let start = if len < 126 {
        buf[8] = first;
        buf[9] = len as u8;
        8
    } else if len <= u16::MAX as usize {
        buf[6] = first;
        buf[7] = 126;
        buf[8..10].copy_from_slice(&(len as u16).to_be_bytes());
        6
    } else {
        buf[0] = first;
        buf[1] = 127;
        buf[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        0
    };
    Bytes::from(buf).slice(start..)
}

/// What one complete client message is.
#[derive(Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A complete text message, UTF-8 checked.
    Text(Bytes),
    Binary,
    Ping(Bytes),
    Pong,
    Close(Option<u16>),
}

/// A protocol violation; each maps to the close code the connection ends with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {0} bytes exceeds the limit")]
    TooBig(u64),
    #[error("protocol error: {0}")]
    Protocol(&'static str),
    #[error("text frame is not valid UTF-8")]
    InvalidUtf8,
}

impl FrameError {
    pub fn close_code(&self) -> CloseCode {
        match self {
            Self::TooBig(_) => CloseCode::Size,
            Self::Protocol(_) => CloseCode::Protocol,
            Self::InvalidUtf8 => CloseCode::Invalid,
        }
    }
}

/// Incremental decoder of masked client frames, with message reassembly.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame: usize,
    /// A fragmented message in progress: (is_text, payload so far).
    partial: Option<(bool, BytesMut)>,
}

impl FrameDecoder {
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame,
            partial: None,
        }
    }

    /// Bytes a caller must have buffered to finish the frame at the front of `buf`, if known
    /// (lets the reader size its next read instead of growing blindly).
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Incoming>, FrameError> {
        loop {
            let mut cur = Cursor::new(&buf[..]);
            let (header, len) = match FrameHeader::parse(&mut cur) {
                Ok(Some(h)) => h,
                Ok(None) => return Ok(None),
                Err(_) => return Err(FrameError::Protocol("bad frame header")),
            };
            let hlen = cur.position() as usize;
            if len > self.max_frame as u64 {
                return Err(FrameError::TooBig(len));
            }
            if header.rsv1 || header.rsv2 || header.rsv3 {
                return Err(FrameError::Protocol("reserved bits set"));
            }
            let Some(mask) = header.mask else {
                return Err(FrameError::Protocol("client frames must be masked"));
            };
            let len = len as usize;
            if buf.len() < hlen + len {
                return Ok(None);
            }
            let _ = buf.split_to(hlen);
            let mut payload = buf.split_to(len);
            for (i, b) in payload.iter_mut().enumerate() {
                *b ^= mask[i & 3];
            }
            match header.opcode {
                OpCode::Control(c) => {
                    if !header.is_final || len > 125 {
                        return Err(FrameError::Protocol("bad control frame"));
                    }
                    return match c {
                        Control::Ping => Ok(Some(Incoming::Ping(payload.freeze()))),
                        Control::Pong => Ok(Some(Incoming::Pong)),
                        Control::Close => Ok(Some(Incoming::Close(close_code(&payload)?))),
                        Control::Reserved(_) => Err(FrameError::Protocol("reserved opcode")),
                    };
                }
                OpCode::Data(Data::Continue) => {
                    let Some((_, acc)) = self.partial.as_mut() else {
                        return Err(FrameError::Protocol("continuation without a start"));
                    };
                    if acc.len() + len > self.max_frame {
                        return Err(FrameError::TooBig((acc.len() + len) as u64));
                    }
                    acc.extend_from_slice(&payload);
                    if header.is_final {
                        let (text, acc) = self.partial.take().expect("checked above");
                        return finish_message(text, acc);
                    }
                }
                OpCode::Data(d @ (Data::Text | Data::Binary)) => {
                    if self.partial.is_some() {
                        return Err(FrameError::Protocol("new message inside a fragmented one"));
                    }
                    let text = d == Data::Text;
                    if header.is_final {
                        return finish_message(text, payload);
                    }
                    self.partial = Some((text, payload));
                }
                OpCode::Data(Data::Reserved(_)) => {
                    return Err(FrameError::Protocol("reserved opcode"));
                }
            }
        }
    }
}

fn finish_message(text: bool, payload: BytesMut) -> Result<Option<Incoming>, FrameError> {
    if !text {
        return Ok(Some(Incoming::Binary));
    }
    if std::str::from_utf8(&payload).is_err() {
        return Err(FrameError::InvalidUtf8);
    }
    Ok(Some(Incoming::Text(payload.freeze())))
}

fn close_code(p: &[u8]) -> Result<Option<u16>, FrameError> {
    match p.len() {
        0 => Ok(None),
        1 => Err(FrameError::Protocol("close payload of one byte")),
        _ => {
            let code = u16::from_be_bytes([p[0], p[1]]);
            if !valid_close_code(code) {
                return Err(FrameError::Protocol("invalid close code"));
            }
            if std::str::from_utf8(&p[2..]).is_err() {
                return Err(FrameError::InvalidUtf8);
            }
            Ok(Some(code))
        }
    }
}

/// A close code a peer may send (RFC 6455 §7.4.1 and the IANA registry): 1000-1003,
/// 1007-1014, and 3000-4999 (registered and private use). 1004-1006 and 1015 are reserved
/// or must never be sent; the rest is unassigned.
fn valid_close_code(c: u16) -> bool {
    matches!(c, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn close_codes_are_checked() {
        for bad in [
            0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
        ] {
            assert_eq!(
                close_code(&bad.to_be_bytes()),
                Err(FrameError::Protocol("invalid close code")),
                "{bad}"
            );
        }
        for good in [1000u16, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert_eq!(close_code(&good.to_be_bytes()), Ok(Some(good)), "{good}");
        }
    }

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut v = vec![(if fin { 0x80 } else { 0 }) | opcode];
        if payload.len() < 126 {
            v.push(0x80 | payload.len() as u8);
        } else {
            v.push(0x80 | 126);
            v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        v.extend_from_slice(&mask);
        v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        v
    }

    #[test]
    fn encodes_all_length_forms() {
        for n in [0usize, 125, 126, 65535, 65536] {
            let f = encode(OpCode::Data(Data::Text), &vec![b'a'; n]);
            let (h, len) = FrameHeader::parse(&mut Cursor::new(&f[..]))
                .unwrap()
                .unwrap();
            assert_eq!(len as usize, n);
            assert!(h.is_final && h.mask.is_none());
            assert_eq!(payload_of(&f), &vec![b'a'; n][..]);
        }
        let j = encode_json(&serde_json::json!({"a":1}));
        assert_eq!(&j[2..], br#"{"a":1}"#);
    }

    #[test]
    fn decodes_fragments_and_control() {
        let mut d = FrameDecoder::new(1024);
        let mut b = BytesMut::new();
        b.extend_from_slice(&masked(1, false, b"he"));
        b.extend_from_slice(&masked(9, true, b"p"));
        b.extend_from_slice(&masked(0, true, b"llo"));
        assert_eq!(
            d.decode(&mut b).unwrap(),
            Some(Incoming::Ping(Bytes::from_static(b"p")))
        );
        assert_eq!(
            d.decode(&mut b).unwrap(),
            Some(Incoming::Text(Bytes::from_static(b"hello")))
        );
        assert_eq!(d.decode(&mut b).unwrap(), None);
    }

    #[test]
    fn refuses_oversize_from_header_alone() {
        let mut d = FrameDecoder::new(1 << 20);
        let mut b = BytesMut::new();
        b.extend_from_slice(&[0x81, 0x80 | 127]);
        b.extend_from_slice(&(16u64 << 20).to_be_bytes());
        b.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(d.decode(&mut b), Err(FrameError::TooBig(16 << 20)));
    }

    #[test]
    fn refuses_bad_utf8_and_unmasked() {
        let mut d = FrameDecoder::new(1024);
        let mut b = BytesMut::from(&masked(1, true, &[0xff, 0xfe])[..]);
        assert_eq!(d.decode(&mut b), Err(FrameError::InvalidUtf8));
        let mut d = FrameDecoder::new(1024);
        let mut b = BytesMut::from(&[0x81u8, 0x01, b'a'][..]);
        assert!(matches!(d.decode(&mut b), Err(FrameError::Protocol(_))));
    }
}
