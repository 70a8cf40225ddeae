//! A tiny scanner over server frames: finds the frame `type`, `"offset":`, `"ref":` and the send
//! timestamp (`"ts":`) in a delivered payload without parsing the JSON. It relies only on the
//! broker's documented frame shapes (`type` first, `offset` last on `message`) and on the payload
//! this harness itself sends (`{"ts":..,"seq":..,"pad":".."}`).
//!
//! Servers without offsets (the reference peers in `shared/peers`) get a fallback order key:
//! the payload's `seq` (1, 2, 3.. per publisher) on `message` frames, and the publisher's count
//! of `published` acks as its highest acknowledged "offset" (see [`order_key`], [`acked_key`]).
//! That is a valid loss/order check only with one publisher per channel.

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

    /// The payload's `seq` (this harness writes `{"ts":N,"seq":M,..}`): right after `ts` at
    /// the remembered position, else searched for after `"payload":`.
    pub fn seq(&self, frame: &[u8]) -> Option<u64> {
        const KEY: &[u8] = b"\"payload\":{\"ts\":";
        const SEQ: &[u8] = b",\"seq\":";
        if frame.get(self.hint..self.hint + KEY.len()) == Some(KEY) {
            let at = self.hint + KEY.len();
            let digits = frame[at..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if frame[at + digits..].starts_with(SEQ) {
                return number(&frame[at + digits + SEQ.len()..]);
            }
        }
        let p = memmem::find(frame, b"\"payload\":")?;
        let i = memmem::find(&frame[p..], b"\"seq\":")?;
        number(&frame[p + i + 6..])
    }
}

/// The order key of a delivered `message` frame and whether it is the fallback: its `offset`,
/// or, when the frame has no `"offset":` (a server without offsets), the payload's `seq`.
/// The harness numbers each publisher's messages 1, 2, 3.., so with one publisher per channel
/// `seq` plays the offset's part. `None` when neither is found.
pub fn order_key(frame: &[u8], ts: &TsFinder) -> Option<(u64, bool)> {
    match offset(frame) {
        Some(o) => Some((o, false)),
        None => ts.seq(frame).map(|s| (s, true)),
    }
}

/// The highest acknowledged order key after a publisher's `acked`-th `published` ack `frame`
/// (counting it): the ack's `offset`, or, without one, `acked` itself (the acks of one
/// publisher come in order, one per accepted publish). The flag tells the fallback.
pub fn acked_key(frame: &[u8], acked: u64) -> (u64, bool) {
    match offset(frame) {
        Some(o) => (o, false),
        None => (acked, true),
    }
}

/// The `code` of an error frame, e.g. `RATE_LIMITED`.
pub fn error_code(frame: &[u8]) -> Option<&str> {
    let i = memmem::find(frame, b"\"code\":\"")?;
    let rest = &frame[i + 8..];
    let end = rest.iter().position(|&b| b == b'"')?;
    std::str::from_utf8(&rest[..end]).ok()
}

/// The decimal number at the start of `s` (after spaces); `None` if there is none, it has more
/// than 20 digits, or it does not fit a u64. Eight digits at a time where it can: the send
/// timestamp has 19 digits on every delivered frame, and a digit-by-digit loop with overflow
/// checks was two thirds of `TsFinder::find`.
fn number(s: &[u8]) -> Option<u64> {
    let s = match s.iter().position(|&b| b != b' ') {
        Some(i) => &s[i..],
        None => return None,
    };
    let (mut v, mut at) = (0u64, 0);
    // Two chunks at most: 16 digits cannot overflow, whatever follows is checked.
    while at < 16 {
        let Some(chunk) = s.get(at..at + 8) else {
            break;
        };
        let chunk = u64::from_le_bytes(chunk.try_into().ok()?);
        if !eight_are_digits(chunk) {
            break;
        }
        v = v * 100_000_000 + eight_digits(chunk);
        at += 8;
    }
    while let Some(&b) = s.get(at).filter(|b| b.is_ascii_digit()) {
        v = v.checked_mul(10)?.checked_add(u64::from(b - b'0'))?;
        at += 1;
        if at > 20 {
            return None;
        }
    }
    (at > 0).then_some(v)
}

/// Whether all eight bytes are ASCII digits: each has the high nibble 3 and stays below 0x3A
/// (adding 6 keeps the high nibble 3). A byte with the high nibble F may carry into the next
/// one when 6 is added, but it has already failed the first test.
fn eight_are_digits(chunk: u64) -> bool {
    const HIGH: u64 = 0xF0F0_F0F0_F0F0_F0F0;
    (chunk & HIGH) | (((chunk.wrapping_add(0x0606_0606_0606_0606)) & HIGH) >> 4)
        == 0x3333_3333_3333_3333
}

/// The value of eight ASCII digits read as a little-endian u64 (first digit in the low byte):
/// pairs, then quads, then the two halves, each step one multiply.
fn eight_digits(chunk: u64) -> u64 {
    let v = chunk - 0x3030_3030_3030_3030;
    let v = (v * 10 + (v >> 8)) & 0x00FF_00FF_00FF_00FF;
    let v = (v * 100 + (v >> 16)) & 0x0000_FFFF_0000_FFFF;
    (v * 10_000 + (v >> 32)) & 0xFFFF_FFFF
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_of_every_length_parse_like_std() {
        let mut cases: Vec<String> = vec![
            "0".into(),
            "7".into(),
            "12345678".into(),
            "123456789".into(),
            "1764480000000000000".into(),
            "9999999999999999999".into(),
            "18446744073709551615".into(),
            "18446744073709551616".into(),
            "99999999999999999999".into(),
            "000000000000000000042".into(),
        ];
        let mut x: u64 = 1;
        for _ in 0..200 {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            cases.push((x >> (x % 60)).to_string());
        }
        for c in &cases {
            let framed = format!("{c},\"seq\":1}}");
            let want = if c.len() > 20 {
                None
            } else {
                c.parse::<u64>().ok()
            };
            assert_eq!(number(framed.as_bytes()), want, "{c}");
            assert_eq!(
                number(format!("  {c}").as_bytes()),
                want,
                "{c} after spaces"
            );
        }
        for junk in [b'/', b':', b'\xff', b'\x00', b' ', b'}'] {
            for at in usize::from(junk == b' ')..10 {
                let mut b = b"12345678901234567890".to_vec();
                b[at] = junk;
                let want = std::str::from_utf8(&b[..at]).unwrap().parse::<u64>().ok();
                assert_eq!(number(&b), want, "junk {junk} at {at}");
            }
        }
        assert_eq!(number(b"x1"), None);
        assert_eq!(number(b""), None);
    }

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

    /// A reference peer's frames: no `offset`, so the payload's `seq` orders messages and the
    /// ack count stands for the highest acknowledged offset.
    const PEER_MSG: &[u8] = br#"{"type":"message","messageId":"5f0e-1","channel":"lt:1:0","event":"e","payload":{"ts":1700000000123456789,"seq":3,"pad":"xx"},"senderId":"peer","timestamp":"2026-01-01T00:00:00.000Z"}"#;

    #[test]
    fn order_key_falls_back_to_payload_seq() {
        let mut f = TsFinder::default();
        assert_eq!(order_key(MSG, &f), Some((42, false)), "offset wins");
        assert_eq!(order_key(PEER_MSG, &f), Some((3, true)), "searched");
        assert_eq!(f.find(PEER_MSG), Some(1_700_000_000_123_456_789));
        assert_eq!(order_key(PEER_MSG, &f), Some((3, true)), "at the hint");
        let reordered = br#"{"type":"message","payload":{"seq":9,"ts":5}}"#;
        assert_eq!(order_key(reordered, &f), Some((9, true)));
        assert_eq!(order_key(br#"{"type":"message","payload":{}}"#, &f), None);

        // A publisher's frames through the peer: seq 1, 2, 3.. judged like offsets 1, 2, 3..
        let mut pb = crate::payload::Publish::new("lt:1:0", 100);
        let mut tr = crate::stats::Tracker::default();
        let mut acked = 0;
        let mut highest = 0;
        for seq in 1..=5 {
            let sent: serde_json::Value =
                serde_json::from_str(&pb.frame(seq, 1_700_000_000_000_000_000 + seq)).unwrap();
            let delivered = format!(
                r#"{{"type":"message","messageId":"m","channel":"lt:1:0","event":"e","payload":{},"senderId":"peer","timestamp":"t"}}"#,
                sent["payload"]
            );
            let (k, fallback) = order_key(delivered.as_bytes(), &f).expect("seq found");
            assert!(fallback);
            tr.observe(k);
            let ack =
                br#"{"type":"published","messageId":"m","channel":"lt:1:0","event":"e","ref":1}"#;
            acked += 1;
            let (h, fallback) = acked_key(ack, acked);
            assert!(fallback);
            highest = highest.max(h);
        }
        assert_eq!(highest, 5);
        assert!(tr.complete(highest));
        let r = tr.result(0);
        assert_eq!((r.lost(highest), r.duplicated, r.reordered), (0, 0, 0));
        // A message that never arrived is still seen as lost.
        assert_eq!(r.lost(highest + 1), 1);
    }

    #[test]
    fn acked_key_prefers_offset() {
        let ack = br#"{"type":"published","messageId":"m","channel":"c","event":"e","offset":3,"ref":17}"#;
        assert_eq!(acked_key(ack, 10), (3, false));
        assert_eq!(
            acked_key(br#"{"type":"published","ref":17}"#, 10),
            (10, true)
        );
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
