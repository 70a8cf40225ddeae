//! Builds `publish` frames: `{"type":"publish","channel":C,"event":"e","ref":SEQ,"payload":P}`
//! where P = `{"ts":<unix nanos>,"seq":SEQ,"pad":"xx.."}` padded so that P is `size` bytes
//! (or as small as it can be when `size` is below the minimum); the payload alone for HTTP
//! publishes. Also the wall clock in nanos.
//!
//! A tagged publisher ([`Publish::tagged`], `fanout` with Socket.IO subscribers) also writes
//! its index, `{"ts":..,"seq":..,"pub":J,"pad":".."}`: Socket.IO deliveries carry no offset,
//! so those subscribers check each publisher's `seq` order apart, and need to know whose it is.

use std::{
    fmt::Write,
    time::{SystemTime, UNIX_EPOCH},
};

/// Unix time in nanoseconds (wall clock: the broker and the harness share the machine).
pub fn now_nanos() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Reusable builder for one publisher's frames.
pub struct Publish {
    prefix: String,
    size: usize,
    pad: String,
    /// The publisher index written as `"pub"` after `seq`, if tagged.
    publisher: Option<usize>,
}

impl Publish {
    pub fn new(channel: &str, size: usize) -> Self {
        Self {
            prefix: format!(r#"{{"type":"publish","channel":"{channel}","event":"e","ref":"#),
            size,
            pad: String::new(),
            publisher: None,
        }
    }

    /// Also write `"pub":j` into every payload (after `seq`, so `ts` and `seq` keep their places).
    pub fn tagged(mut self, j: usize) -> Self {
        self.publisher = Some(j);
        self
    }

    /// The frame text for sequence `seq` sent at `ts` nanos.
    pub fn frame(&mut self, seq: u64, ts: u64) -> String {
        let p = self.payload(seq, ts);
        let mut f = String::with_capacity(self.prefix.len() + 32 + p.len());
        f.push_str(&self.prefix);
        let _ = write!(f, "{seq},\"payload\":{p}}}");
        f
    }

    /// The payload alone (also what an HTTP publish carries): `size` bytes of JSON.
    pub fn payload(&mut self, seq: u64, ts: u64) -> String {
        let mut p = String::with_capacity(self.size.max(64));
        let _ = write!(p, r#"{{"ts":{ts},"seq":{seq},"#);
        if let Some(j) = self.publisher {
            let _ = write!(p, r#""pub":{j},"#);
        }
        p.push_str(r#""pad":""#);
        let fixed = p.len() + 2; // closing `"}`
        let want = self.size.saturating_sub(fixed);
        if self.pad.len() < want {
            self.pad = "x".repeat(want);
        }
        p.push_str(&self.pad[..want]);
        p.push_str("\"}");
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scan::{self, TsFinder};

    #[test]
    fn payload_is_padded_and_scannable() {
        let mut b = Publish::new("lt:x:0", 100);
        let f = b.frame(5, 1_700_000_000_000_000_000);
        let v: serde_json::Value = serde_json::from_str(&f).expect("valid json");
        assert_eq!(v["payload"].to_string().len(), 100);
        assert_eq!(v["ref"], 5);
        assert_eq!(v["payload"]["seq"], 5);
        // The broker forwards the payload verbatim; the scanner finds ts in it.
        let delivered = format!(
            r#"{{"type":"message","payload":{},"offset":1}}"#,
            v["payload"]
        );
        assert_eq!(
            scan::send_ts(delivered.as_bytes()),
            Some(1_700_000_000_000_000_000)
        );
    }

    #[test]
    fn tagged_payload_keeps_size_and_order() {
        let mut b = Publish::new("lt:x:0", 100).tagged(3);
        let p = b.payload(9, 1_700_000_000_000_000_000);
        assert_eq!(p.len(), 100);
        assert!(
            p.starts_with(r#"{"ts":1700000000000000000,"seq":9,"pub":3,"pad":"x"#),
            "{p}"
        );
        let f = b.frame(9, 5);
        let v: serde_json::Value = serde_json::from_str(&f).expect("valid json");
        assert_eq!(v["payload"]["pub"], 3);
        let t = TsFinder::default();
        assert_eq!(
            t.seq(f.as_bytes()),
            Some(9),
            "the raw seq fallback still finds it"
        );
    }

    #[test]
    fn tiny_size_gives_minimal_payload() {
        let mut b = Publish::new("c", 1);
        let f = b.frame(1, 2);
        assert!(
            f.ends_with(r#""payload":{"ts":2,"seq":1,"pad":""}}"#),
            "{f}"
        );
    }
}
