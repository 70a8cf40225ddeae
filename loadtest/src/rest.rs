//! The REST calls the harness needs (admin JWT): create the channel pattern (`POST
//! /api/realtime/channels`; 201 created and 409 exists are both fine), optionally with
//! `webhookUrls`, and read back an existing pattern's `webhookUrls` (`GET`, same path).
//! A minimal blocking HTTP/1.1 client with timeouts; runs before any load starts.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use anyhow::{Context, bail};

use crate::target::Target;

/// Largest response body read for a channel creation (an error text at most).
const SMALL_BODY: usize = 64 << 10;
/// Largest channel listing read back.
const LIST_BODY: usize = 8 << 20;

/// Creates `pattern` on the node behind `t`, with `webhook_urls` when not empty. Returns the
/// HTTP status (201 or 409).
pub fn ensure_channel(
    t: &Target,
    admin_jwt: &str,
    pattern: &str,
    webhook_urls: &[String],
) -> anyhow::Result<u16> {
    let mut body = serde_json::json!({ "pattern": pattern, "description": "ringcast-loadtest" });
    if !webhook_urls.is_empty() {
        body["webhookUrls"] = serde_json::json!(webhook_urls);
    }
    let (status, text) = call(t, "POST", admin_jwt, Some(&body.to_string()), SMALL_BODY)?;
    match status {
        201 | 409 => Ok(status),
        _ => bail!(
            "POST /api/realtime/channels on {} answered {status}: {text}",
            t.addr
        ),
    }
}

/// The `webhookUrls` of the channel record whose pattern is `pattern` on the node behind `t`:
/// `None` when no record has it, `Some(empty)` when it has none.
pub fn channel_webhooks(
    t: &Target,
    admin_jwt: &str,
    pattern: &str,
) -> anyhow::Result<Option<Vec<String>>> {
    let (status, text) = call(t, "GET", admin_jwt, None, LIST_BODY)?;
    if status != 200 {
        bail!(
            "GET /api/realtime/channels on {} answered {status}: {text}",
            t.addr
        );
    }
    webhooks_in_listing(&text, pattern)
        .with_context(|| format!("GET /api/realtime/channels on {}", t.addr))
}

/// Finds `pattern`'s record in a channel listing (a JSON array of records).
fn webhooks_in_listing(text: &str, pattern: &str) -> anyhow::Result<Option<Vec<String>>> {
    let list: Vec<serde_json::Value> =
        serde_json::from_str(text).context("channel listing is not a JSON array")?;
    let Some(rec) = list.iter().find(|r| r["pattern"] == pattern) else {
        return Ok(None);
    };
    let urls = rec["webhookUrls"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|u| u.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    Ok(Some(urls))
}

/// One request on `/api/realtime/channels` (own connection, `Connection: close`).
fn call(
    t: &Target,
    method: &str,
    admin_jwt: &str,
    body: Option<&str>,
    max_body: usize,
) -> anyhow::Result<(u16, String)> {
    call_path(
        t,
        method,
        "/api/realtime/channels",
        admin_jwt,
        body,
        max_body,
    )
}

/// `GET path` (with the admin JWT): the status and up to 8 MiB of body (`/metrics`, stats).
pub fn get(t: &Target, path: &str, admin_jwt: &str) -> anyhow::Result<(u16, String)> {
    call_path(t, "GET", path, admin_jwt, None, LIST_BODY)
}

fn call_path(
    t: &Target,
    method: &str,
    path: &str,
    admin_jwt: &str,
    body: Option<&str>,
    max_body: usize,
) -> anyhow::Result<(u16, String)> {
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer \
         {admin_jwt}\r\nConnection: close\r\n",
        t.host
    );
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{b}",
            b.len()
        ));
    } else {
        req.push_str("\r\n");
    }
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&t.addr, timeout)
        .with_context(|| format!("connecting to {} for REST", t.addr))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(req.as_bytes())?;
    read_response(&mut s, max_body)
}

/// Reads one response (head bounded to 64 KiB, body to `max_body`): status code and body text.
fn read_response(s: &mut TcpStream, max_body: usize) -> anyhow::Result<(u16, String)> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if buf.len() > 64 << 10 {
            bail!("REST response head too large");
        }
        let n = s.read(&mut chunk).context("reading REST response")?;
        if n == 0 {
            bail!("REST connection closed before a response");
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .with_context(|| format!("bad REST status line: {head:?}"))?;
    let len = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse::<usize>().ok())
        .unwrap_or(0)
        .min(max_body);
    while buf.len() < head_end + len {
        let n = s.read(&mut chunk).context("reading REST body")?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let end = buf.len().min(head_end + len);
    Ok((
        status,
        String::from_utf8_lossy(&buf[head_end..end]).to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_a_patterns_webhooks() {
        let list = r#"[{"id":"a","pattern":"lt:*","description":null,"webhookUrls":null},
            {"id":"b","pattern":"wh:*","webhookUrls":["http://127.0.0.1:1/h","http://x/"]}]"#;
        assert_eq!(webhooks_in_listing(list, "lt:*").unwrap(), Some(vec![]));
        assert_eq!(
            webhooks_in_listing(list, "wh:*").unwrap(),
            Some(vec!["http://127.0.0.1:1/h".into(), "http://x/".into()])
        );
        assert_eq!(webhooks_in_listing(list, "nope:*").unwrap(), None);
        assert!(webhooks_in_listing("{}", "lt:*").is_err());
    }
}
