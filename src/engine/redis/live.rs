//! The payload of a channel's sharded pub/sub channel (`keys::live`): one SPUBLISH per
//! publish batch, not one per message.
//!
//! The publishing node cannot know the batch's offsets (the publish script assigns them), so
//! it sends the frames cut just after `"offset":` (see `offset_prefix`), each as
//! `<length>:<bytes>`, and the script prepends the first offset and a space:
//! `<first> <len>:<frame prefix><len>:<frame prefix>...`. Every receiving node completes
//! frame `i` with `first + i` and `}`. This keeps the script's per-message work to the stream
//! append: a `redis.call` and string building per message in Lua cost more than the append.

use std::fmt::Write as _;

use bytes::Bytes;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LiveError {
    #[error("no first offset (a node of another ringcast version?)")]
    NoFirstOffset,
    #[error("frame {0}: bad length")]
    BadLength(usize),
    #[error("frame {0}: shorter than its length")]
    Truncated(usize),
}

/// Appends one frame prefix, length-prefixed, to the node's part of the payload.
pub fn push_frame(out: &mut Vec<u8>, prefix: &[u8]) {
    let _ = write!(DigitsInto(out), "{}:", prefix.len());
    out.extend_from_slice(prefix);
}

/// The complete frames of a payload, with their offsets, in order.
pub fn decode(payload: &[u8]) -> Result<Vec<(u64, Bytes)>, LiveError> {
    let sp = payload
        .iter()
        .position(|&b| b == b' ')
        .ok_or(LiveError::NoFirstOffset)?;
    let first = parse_u64(&payload[..sp]).ok_or(LiveError::NoFirstOffset)?;
    let parts = split(&payload[sp + 1..])?;
    let mut out = Vec::with_capacity(parts.len());
    for (i, part) in parts.into_iter().enumerate() {
        let offset = first + i as u64;
        let mut frame = Vec::with_capacity(part.len() + 21);
        frame.extend_from_slice(part);
        let _ = write!(DigitsInto(&mut frame), "{offset}}}");
        out.push((offset, Bytes::from(frame)));
    }
    Ok(out)
}

/// The byte strings of `<len>:<bytes><len>:<bytes>...` (as `push_frame` writes them), in
/// order. Also the body of a stream entry (`entry`).
pub fn split(mut rest: &[u8]) -> Result<Vec<&[u8]>, LiveError> {
    let mut out = Vec::new();
    while !rest.is_empty() {
        let i = out.len();
        let colon = rest
            .iter()
            .take(20)
            .position(|&b| b == b':')
            .ok_or(LiveError::BadLength(i))?;
        let len = parse_u64(&rest[..colon]).ok_or(LiveError::BadLength(i))? as usize;
        let body = &rest[colon + 1..];
        if body.len() < len {
            return Err(LiveError::Truncated(i));
        }
        out.push(&body[..len]);
        rest = &body[len..];
    }
    Ok(out)
}

fn parse_u64(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > 19 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(s).ok()?.parse().ok()
}

/// `fmt::Write` into a byte vector (ASCII digits and `}` only).
struct DigitsInto<'a>(&'a mut Vec<u8>);

impl std::fmt::Write for DigitsInto<'_> {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the publish script sends: the first offset, a space, the node's part.
    fn payload(first: u64, prefixes: &[&str]) -> Vec<u8> {
        let mut out = format!("{first} ").into_bytes();
        for p in prefixes {
            push_frame(&mut out, p.as_bytes());
        }
        out
    }

    #[test]
    fn frames_get_consecutive_offsets() {
        let p = payload(41, &[r#"{"a":"x:1","offset":"#, r#"{"b":2,"offset":"#]);
        let got = decode(&p).unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, 41);
        assert_eq!(&got[0].1[..], br#"{"a":"x:1","offset":41}"#);
        assert_eq!(got[1].0, 42);
        assert_eq!(&got[1].1[..], br#"{"b":2,"offset":42}"#);
    }

    #[test]
    fn frames_may_contain_any_bytes_the_length_covers() {
        let odd = "{\"t\":\"12: 3 :\u{e9}\",\"offset\":";
        let got = decode(&payload(7, &[odd])).unwrap();
        assert_eq!(got[0].1, Bytes::from(format!("{odd}7}}")));
    }

    #[test]
    fn malformed_payloads_are_refused() {
        // A single JSON frame, as a node before batched SPUBLISH sent it.
        assert_eq!(
            decode(br#"{"type":"message","offset":3}"#),
            Err(LiveError::NoFirstOffset)
        );
        assert_eq!(decode(b"x 3:abc"), Err(LiveError::NoFirstOffset));
        assert_eq!(decode(b"5 3abc"), Err(LiveError::BadLength(0)));
        assert_eq!(decode(b"5 3:abc9:ab"), Err(LiveError::Truncated(1)));
        assert_eq!(decode(b"5 "), Ok(vec![]));
    }
}
