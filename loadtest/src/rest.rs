//! The one REST call the harness needs: create the channel pattern (`POST
//! /api/realtime/channels`, admin JWT). 201 (created) and 409 (exists) are both fine.
//! A minimal blocking HTTP/1.1 client with timeouts; runs before any load starts.

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use anyhow::{Context, bail};

use crate::target::Target;

/// Creates `pattern` on the node behind `t`. Returns the HTTP status (201 or 409).
pub fn ensure_channel(t: &Target, admin_jwt: &str, pattern: &str) -> anyhow::Result<u16> {
    let body =
        serde_json::json!({ "pattern": pattern, "description": "ringcast-loadtest" }).to_string();
    let req = format!(
        "POST /api/realtime/channels HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {admin_jwt}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        t.host,
        body.len()
    );
    let timeout = Duration::from_secs(5);
    let mut s = TcpStream::connect_timeout(&t.addr, timeout)
        .with_context(|| format!("connecting to {} for REST", t.addr))?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(req.as_bytes())?;
    let (status, text) = read_response(&mut s)?;
    match status {
        201 | 409 => Ok(status),
        _ => bail!(
            "POST /api/realtime/channels on {} answered {status}: {text}",
            t.addr
        ),
    }
}

/// Reads one response (bounded to 64 KiB): status code and body text.
fn read_response(s: &mut TcpStream) -> anyhow::Result<(u16, String)> {
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
        .min(64 << 10);
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
