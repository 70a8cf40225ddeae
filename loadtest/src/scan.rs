//! A tiny scanner over server frames: finds the frame `type`, `"offset":`, `"ref":` and the send
//! timestamp (`"ts":`) in a delivered payload without parsing the JSON. It relies only on the
//! broker's documented frame shapes (`type` first, `offset` last on `message`) and on the payload
//! this harness itself sends (`{"ts":..,"seq":..,"pad":".."}`).

use std::sync::LazyLock;

use memchr::memmem;

/// What kind of server frame this is, judged from its leading `{"type":"..."`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Message,
    Published,
    Error,
    AuthSuccess,
    Subscribed,
    Other,
}

pub fn kind(frame: &[u8]) -> Kind {
    let Some(rest) = frame.strip_prefix(b"{\"type\":\"") else {
        return match memmem::find(frame, b"\"type\":\"") {
            Some(i) => kind_of(&frame[i + 8..]),
            None => Kind::Other,
        };
    };
    kind_of(rest)
}

fn kind_of(rest: &[u8]) -> Kind {
    let name = match rest.iter().position(|&b| b == b'"') {
        Some(end) => &rest[..end],
        None => return Kind::Other,
    };
    match name {
        b"message" => Kind::Message,
        b"published" => Kind::Published,
        b"error" => Kind::Error,
        b"auth_success" => Kind::AuthSuccess,
        b"subscribed" => Kind::Subscribed,
        _ => Kind::Other,
    }
}

/// The `offset` of a `message` or `published` frame. Fast path: the frame ends with
/// `"offset":N}`; otherwise the last `"offset":` anywhere.
pub fn offset(frame: &[u8]) -> Option<u64> {
    if let Some(body) = frame.strip_suffix(b"}") {
        let digits = body.iter().rev().take_while(|b| b.is_ascii_digit()).count();
        let start = body.len() - digits;
        if digits > 0 && body[..start].ends_with(b"\"offset\":") {
            return number(&body[start..]);
        }
    }
    let i = memmem::rfind(frame, b"\"offset\":")?;
    number(&frame[i + 9..])
}

/// The numeric `ref` echoed on a reply.
pub fn reference(frame: &[u8]) -> Option<u64> {
    let i = memmem::rfind(frame, b"\"ref\":")?;
    number(&frame[i + 6..])
}

static PAYLOAD_TS: LazyLock<memmem::Finder<'static>> =
    LazyLock::new(|| memmem::Finder::new(b"\"payload\":{\"ts\":"));

/// The send timestamp (unix nanos) of a payload this harness published (it puts `ts` first;
/// a payload re-serialized with other key order is searched for `"ts":` after `"payload":`).
pub fn send_ts(frame: &[u8]) -> Option<u64> {
    if let Some(i) = PAYLOAD_TS.find(frame) {
        return number(&frame[i + 16..]);
    }
    let p = memmem::find(frame, b"\"payload\":")?;
    let i = memmem::find(&frame[p..], b"\"ts\":")?;
    number(&frame[p + i + 5..])
}

/// `send_ts` with a remembered position: a subscriber's frames put the payload at the same
/// byte offset every time (fixed-length ids, one channel), so usually no search is needed.
#[derive(Debug, Default)]
pub struct TsFinder {
    hint: usize,
}

impl TsFinder {
    pub fn find(&mut self, frame: &[u8]) -> Option<u64> {
        const KEY: &[u8] = b"\"payload\":{\"ts\":";
        if frame.get(self.hint..self.hint + KEY.len()) == Some(KEY) {
            return number(&frame[self.hint + KEY.len()..]);
        }
        if let Some(i) = PAYLOAD_TS.find(frame) {
            self.hint = i;
            return number(&frame[i + KEY.len()..]);
        }
        send_ts(frame)
    }
}

/// The `code` of an error frame, e.g. `RATE_LIMITED`.
pub fn error_code(frame: &[u8]) -> Option<&str> {
    let i = memmem::find(frame, b"\"code\":\"")?;
    let rest = &frame[i + 8..];
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

fn number(s: &[u8]) -> Option<u64> {
    let s = match s.iter().position(|&b| b != b' ') {
        Some(i) => &s[i..],
        None => return None,
    };
    let digits = s.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 20 {
        return None;
    }
    let mut v: u64 = 0;
    for &b in &s[..digits] {
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = br#"{"type":"message","messageId":"0190-ab","channel":"lt:1:0","event":"e","payload":{"ts":1700000000123456789,"seq":7,"pad":"xx"},"senderId":"u","senderType":"user","timestamp":"2026-01-01T00:00:00Z","offset":42}"#;

    #[test]
    fn scans_message() {
        assert_eq!(kind(MSG), Kind::Message);
        assert_eq!(offset(MSG), Some(42));
        assert_eq!(send_ts(MSG), Some(1_700_000_000_123_456_789));
    }

    #[test]
    fn ts_finder_uses_and_refreshes_its_hint() {
        let mut f = TsFinder::default();
        assert_eq!(f.find(MSG), Some(1_700_000_000_123_456_789));
        assert_eq!(f.find(MSG), Some(1_700_000_000_123_456_789));
        let shifted = [b"{\"type\":\"message\",\"x\":1,", &MSG[18..]].concat();
        assert_eq!(f.find(&shifted), Some(1_700_000_000_123_456_789));
    }

    #[test]
    fn scans_ack_and_error() {
        let ack = br#"{"type":"published","messageId":"m","channel":"c","event":"e","offset":3,"ref":17}"#;
        assert_eq!(kind(ack), Kind::Published);
        assert_eq!(offset(ack), Some(3));
        assert_eq!(reference(ack), Some(17));
        let err = br#"{"type":"error","message":"publish rate limit","code":"RATE_LIMITED","channel":"c","ref":9}"#;
        assert_eq!(kind(err), Kind::Error);
        assert_eq!(error_code(err), Some("RATE_LIMITED"));
        assert_eq!(reference(err), Some(9));
    }

    #[test]
    fn tolerates_garbage() {
        assert_eq!(kind(b""), Kind::Other);
        assert_eq!(kind(b"{\"type\":\"mess"), Kind::Other);
        assert_eq!(offset(b"\"offset\":"), None);
        assert_eq!(offset(b"\"offset\":99999999999999999999999"), None);
        assert_eq!(send_ts(b"{\"payload\":{}}"), None);
        assert_eq!(send_ts(b"{\"payload\":{\"seq\":1,\"ts\":5}}"), Some(5));
        assert_eq!(offset(b"{\"offset\":7,\"ref\":2}"), Some(7));
        assert_eq!(kind(b"{ \"type\":\"subscribed\"}"), Kind::Subscribed);
    }
}
