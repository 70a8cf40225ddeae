//! HTTP/1.1 for the broker's publish routes (`http-publish`, `recover`): the bytes of a
//! keep-alive `POST /api/realtime/messages[/batch]` with a Bearer JWT, whole responses cut from
//! the front of a read buffer that may hold several (pipelined) ones, and the acks or error
//! codes in their bodies. No I/O here, so all of it is unit-tested.

use std::{borrow::Cow, ops::Range};

use anyhow::{Context, bail};
use serde::Deserialize;

/// One message per request: 201 with the ack.
pub const SINGLE: &str = "/api/realtime/messages";
/// Up to 1,000 messages per request: 200 with one result per item, in order.
pub const BATCH: &str = "/api/realtime/messages/batch";
/// The broker's limit of items per batch.
pub const MAX_BATCH: usize = 1000;

/// Largest response head accepted.
const MAX_HEAD: usize = 16 << 10;
/// Largest response body accepted (a batch of 1,000 acks is ~160 KB).
pub const MAX_BODY: usize = 8 << 20;

/// A `POST path` on `host` with `body` (JSON), kept alive.
pub fn post(path: &str, host: &str, token: &str, body: &str) -> Vec<u8> {
    let mut r = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    r.extend_from_slice(body.as_bytes());
    r
}

/// Appends one message, `{"channel":C,"event":"e","payload":P}` (`payload` is JSON).
pub fn item(out: &mut String, channel: &str, payload: &str) {
    out.push_str(r#"{"channel":""#);
    out.push_str(channel);
    out.push_str(r#"","event":"e","payload":"#);
    out.push_str(payload);
    out.push('}');
}

/// A whole response at the front of a buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    /// Where the body is in the buffer.
    pub body: Range<usize>,
    /// Bytes of the buffer this response takes (head and body).
    pub len: usize,
    /// The server said `connection: close`: nothing more will be answered.
    pub close: bool,
}

/// The first response in `buf`: `None` while it is incomplete. Needs `content-length` (the
/// broker always sends it); chunked bodies are refused.
pub fn parse(buf: &[u8]) -> anyhow::Result<Option<Response>> {
    let Some(end) = memchr::memmem::find(buf, b"\r\n\r\n") else {
        if buf.len() > MAX_HEAD {
            bail!("response head over {MAX_HEAD} bytes");
        }
        return Ok(None);
    };
    let head = std::str::from_utf8(&buf[..end]).context("response head is not UTF-8")?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|r| r.get(..3))
        .and_then(|c| c.parse::<u16>().ok())
        .with_context(|| format!("bad status line {status_line:?}"))?;
    let (mut len, mut close) = (None, false);
    for l in lines {
        let Some((k, v)) = l.split_once(':') else {
            bail!("bad header line {l:?}");
        };
        let (k, v) = (k.trim(), v.trim());
        if k.eq_ignore_ascii_case("content-length") {
            len = Some(v.parse::<usize>().context("bad content-length")?);
        } else if k.eq_ignore_ascii_case("transfer-encoding") {
            bail!("transfer-encoding {v} not supported (the broker sends content-length)");
        } else if k.eq_ignore_ascii_case("connection") {
            close = v.eq_ignore_ascii_case("close");
        }
    }
    let len = match len {
        Some(n) if n > MAX_BODY => bail!("response body of {n} bytes (limit {MAX_BODY})"),
        Some(n) => n,
        None if status == 204 || status == 304 || status < 200 => 0,
        None => bail!("response {status} without content-length"),
    };
    let start = end + 4;
    if buf.len() < start + len {
        return Ok(None);
    }
    Ok(Some(Response {
        status,
        body: start..start + len,
        len: start + len,
        close,
    }))
}

/// The outcome of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<'a> {
    Ack {
        channel: Cow<'a, str>,
        offset: u64,
    },
    /// The error `code` (`RATE_LIMITED`, `CHANNEL_NOT_FOUND`, ..), `HTTP <status>` when the
    /// body has none, or `UNPARSED`.
    Error(Cow<'a, str>),
}

#[derive(Deserialize)]
struct Raw<'a> {
    #[serde(borrow)]
    channel: Option<Cow<'a, str>>,
    offset: Option<u64>,
    #[serde(borrow)]
    error: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Results<'a> {
    #[serde(borrow)]
    results: Vec<Raw<'a>>,
}

impl<'a> Raw<'a> {
    fn answer(self, status: u16) -> Answer<'a> {
        match (self.offset, self.channel, self.error) {
            (Some(offset), Some(channel), None) => Answer::Ack { channel, offset },
            (_, _, Some(code)) => Answer::Error(code),
            _ => Answer::Error(format!("HTTP {status}").into()),
        }
    }
}

/// The answer of `POST /api/realtime/messages` (201 and the ack, or an error).
pub fn single(status: u16, body: &[u8]) -> Answer<'_> {
    match serde_json::from_slice::<Raw>(body) {
        Ok(r) if status == 201 || r.error.is_some() => r.answer(status),
        _ => Answer::Error(format!("HTTP {status}").into()),
    }
}

/// The answers of `POST /api/realtime/messages/batch`, one per item in order; `Err` with
/// the request's error when the whole batch was refused (not 200).
pub fn batch(status: u16, body: &[u8]) -> Result<Vec<Answer<'_>>, Answer<'_>> {
    if status != 200 {
        return Err(single(status, body));
    }
    match serde_json::from_slice::<Results>(body) {
        Ok(r) => Ok(r.results.into_iter().map(|r| r.answer(status)).collect()),
        Err(_) => Err(Answer::Error("UNPARSED".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACK: &str = r#"{"messageId":"0b9c","channel":"lt:r:0","event":"e","offset":7,"timestamp":"2026-01-01T00:00:00.000Z"}"#;

    fn resp(status: &str, body: &str, conn: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: {conn}\r\n\
             content-type: application/json\r\n\r\n{body}",
            body.len()
        )
    }

    #[test]
    fn cuts_pipelined_responses_in_order() {
        let err = r#"{"error":"RATE_LIMITED","message":"publish rate limit"}"#;
        let buf = format!(
            "{}{}{}",
            resp("201 Created", ACK, "keep-alive"),
            resp("429 Too Many Requests", err, "keep-alive"),
            &resp("201 Created", ACK, "close")[..20]
        );
        let b = buf.as_bytes();
        let r1 = parse(b).unwrap().expect("first is whole");
        assert_eq!((r1.status, r1.close), (201, false));
        assert_eq!(&b[r1.body.clone()], ACK.as_bytes());
        assert_eq!(
            single(r1.status, &b[r1.body.clone()]),
            Answer::Ack {
                channel: "lt:r:0".into(),
                offset: 7
            }
        );
        let rest = &b[r1.len..];
        let r2 = parse(rest).unwrap().expect("second is whole");
        assert_eq!(r2.status, 429);
        assert_eq!(
            single(r2.status, &rest[r2.body.clone()]),
            Answer::Error("RATE_LIMITED".into())
        );
        assert_eq!(parse(&rest[r2.len..]).unwrap(), None, "third is partial");
        let whole = resp("201 Created", ACK, "close");
        let r3 = parse(whole.as_bytes()).unwrap().expect("whole");
        assert!(r3.close);
        assert_eq!(
            parse(&whole.as_bytes()[..whole.len() - 1]).unwrap(),
            None,
            "body one byte short"
        );
    }

    #[test]
    fn refuses_what_it_cannot_frame() {
        assert!(parse(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n").is_err());
        assert!(
            parse(b"HTTP/1.1 200 OK\r\n\r\n").is_err(),
            "no content-length"
        );
        assert!(parse(b"SMTP 200\r\n\r\n").is_err());
        assert!(parse(&vec![b'x'; MAX_HEAD + 1]).is_err());
        let r = parse(b"HTTP/1.1 204 No Content\r\n\r\n")
            .unwrap()
            .expect("empty");
        assert_eq!((r.status, r.body.len()), (204, 0));
    }

    #[test]
    fn reads_batch_results_in_item_order() {
        let body = format!(
            r#"{{"results":[{ACK},{{"error":"CHANNEL_NOT_FOUND","message":"no"}},{ACK}]}}"#
        );
        let got = batch(200, body.as_bytes()).expect("200");
        assert_eq!(got.len(), 3);
        assert_eq!(got[1], Answer::Error("CHANNEL_NOT_FOUND".into()));
        assert!(matches!(got[2], Answer::Ack { offset: 7, .. }));
        let refused = r#"{"error":"BAD_REQUEST","message":"messages must hold 1..=1000 items"}"#;
        assert_eq!(
            batch(400, refused.as_bytes()),
            Err(Answer::Error("BAD_REQUEST".into()))
        );
        assert_eq!(batch(502, b"<html>"), Err(Answer::Error("HTTP 502".into())));
        assert_eq!(
            single(200, ACK.as_bytes()),
            Answer::Error("HTTP 200".into())
        );
    }

    #[test]
    fn builds_requests() {
        let mut body = String::new();
        item(&mut body, "lt:r:1", r#"{"ts":1}"#);
        let v: serde_json::Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["payload"]["ts"], 1);
        let req = post(SINGLE, "127.0.0.1:1", "T", &body);
        let text = String::from_utf8(req).expect("utf8");
        assert!(text.starts_with("POST /api/realtime/messages HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        assert!(text.contains(&format!("Content-Length: {}\r\n\r\n{body}", body.len())));
        assert!(text.contains("Authorization: Bearer T\r\n"));
    }
}
