//! Reading one HTTP/1.1 request head and body from a connection's buffer (httparse).
//!
//! The head is limited to `http.max_header_bytes` (431 past it) and the body to
//! `http.max_body_bytes` (413). Chunked bodies are refused (411): every client of this API
//! sends `Content-Length`.

use bytes::{Bytes, BytesMut};

use super::ApiError;

const MAX_HEADERS: usize = 64;

/// A parsed request head with the headers this server looks at.
#[derive(Debug, Default)]
pub struct Head {
    pub method: String,
    pub path: String,
    pub query: String,
    pub content_length: Option<usize>,
    pub chunked: bool,
    pub keep_alive: bool,
    pub authorization: Option<String>,
    pub upgrade_websocket: bool,
    pub connection_upgrade: bool,
    pub ws_key: Option<String>,
    pub ws_version: Option<String>,
    /// An HTTP/1.0 request (no upgrade possible: RFC 6455 §4.1 requires HTTP/1.1).
    pub http10: bool,
}

/// `Ok(None)`: need more bytes. `Ok(Some((head, n)))`: `n` bytes of `buf` were the head.
pub fn parse_head(buf: &[u8], max: usize) -> Result<Option<(Head, usize)>, ApiError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let n = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            if buf.len() > max {
                return Err(ApiError::headers_too_large(format!(
                    "request head exceeds {max} bytes"
                )));
            }
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(ApiError::headers_too_large(format!(
                "more than {MAX_HEADERS} headers"
            )));
        }
        Err(e) => return Err(ApiError::bad_request(format!("malformed request: {e}"))),
    };
    if n > max {
        return Err(ApiError::headers_too_large(format!(
            "request head exceeds {max} bytes"
        )));
    }
    let target = req.path.unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut h = Head {
        method: req.method.unwrap_or("").to_string(),
        path: path.to_string(),
        query: query.to_string(),
        keep_alive: req.version == Some(1),
        http10: req.version == Some(0),
        ..Head::default()
    };
    for hd in req.headers.iter() {
        let v = std::str::from_utf8(hd.value).unwrap_or("").trim();
        let name = hd.name;
        if name.eq_ignore_ascii_case("content-length") {
            // Digits only (RFC 9110 §8.6): `+20` or `0x14` would be read differently by a
            // proxy in front, which is how requests are smuggled.
            if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
                return Err(ApiError::bad_request("invalid Content-Length"));
            }
            let len = v
                .parse::<usize>()
                .map_err(|_| ApiError::bad_request("invalid Content-Length"))?;
            if h.content_length.is_some_and(|old| old != len) {
                return Err(ApiError::bad_request("conflicting Content-Length headers"));
            }
            h.content_length = Some(len);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            h.chunked = true;
        } else if name.eq_ignore_ascii_case("connection") {
            for t in v.split(',').map(str::trim) {
                if t.eq_ignore_ascii_case("close") {
                    h.keep_alive = false;
                } else if t.eq_ignore_ascii_case("keep-alive") {
                    h.keep_alive = true;
                } else if t.eq_ignore_ascii_case("upgrade") {
                    h.connection_upgrade = true;
                }
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            h.authorization = Some(v.to_string());
        } else if name.eq_ignore_ascii_case("upgrade") {
            h.upgrade_websocket = v.eq_ignore_ascii_case("websocket");
        } else if name.eq_ignore_ascii_case("sec-websocket-key") {
            h.ws_key = Some(v.to_string());
        } else if name.eq_ignore_ascii_case("sec-websocket-version") {
            h.ws_version = Some(v.to_string());
        }
    }
    Ok(Some((h, n)))
}

/// How many body bytes the request announces, after the limits are checked.
pub fn body_len(h: &Head, max: usize) -> Result<usize, ApiError> {
    if h.chunked {
        return Err(ApiError::length_required(
            "chunked bodies are not supported; send Content-Length",
        ));
    }
    let n = h.content_length.unwrap_or(0);
    if n > max {
        return Err(ApiError::too_large(format!("body exceeds {max} bytes")));
    }
    Ok(n)
}

/// Splits a complete body off the front of `buf`.
pub fn take_body(buf: &mut BytesMut, n: usize) -> Bytes {
    buf.split_to(n).freeze()
}

/// Percent-decodes a query component (`+` is a space).
pub fn decode_component(s: &str) -> Result<String, ApiError> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                let hex = std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz");
                let v = u8::from_str_radix(hex, 16)
                    .map_err(|_| ApiError::bad_request("bad percent-encoding in query"))?;
                out.push(v);
                i += 3;
            }
            b'%' => return Err(ApiError::bad_request("bad percent-encoding in query")),
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| ApiError::bad_request("query is not UTF-8"))
}

/// Query pairs, decoded. A repeated key keeps its last value.
pub fn query_pairs(q: &str) -> Result<Vec<(String, String)>, ApiError> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((decode_component(k)?, decode_component(v)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_heads() {
        let raw = b"GET /realtime?x=1 HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Key: k\r\n\r\nrest";
        let (h, n) = parse_head(raw, 1024).unwrap().unwrap();
        assert_eq!(n, raw.len() - 4);
        assert_eq!(h.path, "/realtime");
        assert_eq!(h.query, "x=1");
        assert!(h.upgrade_websocket && h.connection_upgrade && h.keep_alive);
        assert!(
            parse_head(b"GET / HTTP/1.1\r\nHost", 1024)
                .unwrap()
                .is_none()
        );
        assert_eq!(
            parse_head(b"GARBAGE\x01\r\n\r\n", 1024).unwrap_err().status,
            400
        );
        assert_eq!(parse_head(&[b'a'; 100], 10).unwrap_err().status, 431);
    }

    #[test]
    fn decodes_query() {
        let q = query_pairs("a=1&channelName=order%3A1&e=x+y").unwrap();
        assert_eq!(q[1], ("channelName".into(), "order:1".into()));
        assert_eq!(q[2].1, "x y");
        assert!(query_pairs("a=%zz").is_err());
        assert!(query_pairs("a=%4").is_err());
    }
}
