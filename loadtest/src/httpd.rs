//! The server side of HTTP/1.1 that `webhook-sink` needs: reads one request at a time from a
//! keep-alive connection (the head up to `\r\n\r\n`, then a `Content-Length` body; chunked
//! bodies are refused), picks out the few headers the sink uses, and builds bodiless answers.
//! Heads are bounded to 64 KiB and bodies to 8 MiB.

use memchr::memmem;
use tokio::io::{AsyncRead, AsyncReadExt};

pub const MAX_HEAD: usize = 64 << 10;
pub const MAX_BODY: usize = 8 << 20;

/// What the sink reads from a request head.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Head {
    pub content_length: usize,
    /// `X-InsForge-Message-ID`.
    pub message_id: Option<String>,
    /// The client asked to close after this request (`Connection: close`, or HTTP/1.0
    /// without `keep-alive`).
    pub close: bool,
}

/// One complete request: its head, and where its body lies in the reader's buffer.
#[derive(Debug)]
pub struct Request {
    pub head: Head,
    head_len: usize,
    /// Head and body, in bytes.
    pub len: usize,
}

/// What the connection gave next.
#[derive(Debug)]
pub enum Next {
    Request(Request),
    /// Closed cleanly between requests.
    Eof,
    /// Not a request this sink can take: answer with this status and close.
    Bad(u16, String),
}

/// Reads requests off one connection into one reused buffer.
#[derive(Debug, Default)]
pub struct Reader {
    buf: Vec<u8>,
    /// Bytes at the front that belong to the request returned last.
    used: usize,
}

impl Reader {
    /// The next request. Its body stays readable with [`Reader::body`] until the next call.
    pub async fn next<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> std::io::Result<Next> {
        if self.used > 0 {
            self.buf.drain(..self.used);
            self.used = 0;
        }
        let mut searched = 0;
        let head_len = loop {
            if let Some(i) = memmem::find(&self.buf[searched..], b"\r\n\r\n") {
                break searched + i + 4;
            }
            searched = self.buf.len().saturating_sub(3);
            if self.buf.len() > MAX_HEAD {
                return Ok(Next::Bad(431, "request head over 64 KiB".into()));
            }
            if self.fill(r).await? == 0 {
                return Ok(if self.buf.is_empty() {
                    Next::Eof
                } else {
                    Next::Bad(400, "connection closed inside a request head".into())
                });
            }
        };
        let head = match parse_head(&self.buf[..head_len]) {
            Ok(h) => h,
            Err((code, why)) => return Ok(Next::Bad(code, why)),
        };
        let len = head_len + head.content_length;
        while self.buf.len() < len {
            if self.fill(r).await? == 0 {
                return Ok(Next::Bad(
                    400,
                    "connection closed inside a request body".into(),
                ));
            }
        }
        self.used = len;
        Ok(Next::Request(Request {
            head,
            head_len,
            len,
        }))
    }

    /// The body of `req`, the request [`Reader::next`] returned last.
    pub fn body(&self, req: &Request) -> &[u8] {
        self.buf.get(req.head_len..req.len).unwrap_or_default()
    }

    async fn fill<R: AsyncRead + Unpin>(&mut self, r: &mut R) -> std::io::Result<usize> {
        self.buf.reserve(8192);
        r.read_buf(&mut self.buf).await
    }
}

/// Parses a request head (request line and headers, ending with the empty line). An error is
/// the status to answer with and why.
pub fn parse_head(head: &[u8]) -> Result<Head, (u16, String)> {
    let text = std::str::from_utf8(head).map_err(|_| (400, "request head is not UTF-8".into()))?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (Some(_method), Some(_target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err((400, format!("bad request line {line:?}")));
    };
    let http10 = match version {
        "HTTP/1.1" => false,
        "HTTP/1.0" => true,
        v => return Err((505, format!("unsupported version {v:?}"))),
    };
    let mut h = Head {
        close: http10,
        ..Head::default()
    };
    let mut length: Option<usize> = None;
    for l in lines.take_while(|l| !l.is_empty()) {
        let Some((name, value)) = l.split_once(':') else {
            return Err((400, format!("bad header line {l:?}")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .map_err(|_| (400, format!("bad Content-Length {value:?}")))?;
            if length.is_some_and(|m| m != n) {
                return Err((400, "conflicting Content-Length headers".into()));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Err((501, "Transfer-Encoding bodies are not supported".into()));
        } else if name.eq_ignore_ascii_case("x-insforge-message-id") {
            h.message_id = Some(value.to_string());
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    h.close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") && http10 {
                    h.close = false;
                }
            }
        }
    }
    h.content_length = length.unwrap_or(0);
    if h.content_length > MAX_BODY {
        return Err((
            413,
            format!("body of {} bytes over 8 MiB", h.content_length),
        ));
    }
    Ok(h)
}

/// A bodiless response with `status`; `close` adds `Connection: close`.
pub fn response(status: u16, close: bool) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        410 => "Gone",
        413 => "Content Too Large",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => "Status",
    };
    let conn = if close { "Connection: close\r\n" } else { "" };
    format!("HTTP/1.1 {status} {reason}\r\nContent-Length: 0\r\n{conn}\r\n").into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    const REQ: &str = "POST /hook HTTP/1.1\r\nhost: 127.0.0.1:18999\r\ncontent-type: \
        application/json\r\nx-insforge-message-id: 0190-ab\r\ncontent-length: 7\r\n\r\n{\"a\":1}";

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn parses_a_webhook_head() {
        let end = REQ.find("\r\n\r\n").unwrap() + 4;
        let h = parse_head(&REQ.as_bytes()[..end]).expect("valid");
        assert_eq!(h.content_length, 7);
        assert_eq!(h.message_id.as_deref(), Some("0190-ab"));
        assert!(!h.close);
        let h10 = parse_head(b"GET / HTTP/1.0\r\n\r\n").expect("valid");
        assert!(h10.close);
        let ka = parse_head(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").expect("ok");
        assert!(!ka.close);
        let c = parse_head(b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n").expect("ok");
        assert!(c.close);
    }

    #[test]
    fn refuses_what_it_cannot_take() {
        let code = |h: &str| parse_head(h.as_bytes()).map(|_| 0).unwrap_or_else(|e| e.0);
        assert_eq!(code("garbage\r\n\r\n"), 400);
        assert_eq!(code("GET / HTTP/2\r\n\r\n"), 505);
        assert_eq!(
            code("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            501
        );
        assert_eq!(code("POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"), 400);
        assert_eq!(
            code("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"),
            400
        );
        assert_eq!(
            code("POST / HTTP/1.1\r\nContent-Length: 99999999999\r\n\r\n"),
            413
        );
        assert_eq!(code("POST / HTTP/1.1\r\nno colon\r\n\r\n"), 400);
    }

    #[test]
    fn reads_keep_alive_requests_split_anywhere() {
        // Two requests back to back, delivered in 5-byte pieces.
        let wire = format!("{REQ}{REQ}");
        let mut b = pieces(wire.as_bytes(), 5);
        let mut rd = Reader::default();
        block_on(async {
            for _ in 0..2 {
                let Next::Request(req) = rd.next(&mut b).await.expect("io") else {
                    panic!("want a request");
                };
                assert_eq!(req.len, REQ.len());
                assert_eq!(rd.body(&req), b"{\"a\":1}");
                assert_eq!(req.head.message_id.as_deref(), Some("0190-ab"));
            }
            assert!(matches!(rd.next(&mut b).await.expect("io"), Next::Eof));
        });
    }

    #[test]
    fn truncated_request_is_bad() {
        let mut b = pieces(&REQ.as_bytes()[..REQ.len() - 2], 64);
        let mut rd = Reader::default();
        let n = block_on(rd.next(&mut b)).expect("io");
        assert!(matches!(n, Next::Bad(400, _)), "{n:?}");
    }

    #[test]
    fn answers_are_bodiless() {
        assert_eq!(
            response(503, false),
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n"
        );
        assert!(
            String::from_utf8(response(200, true))
                .unwrap()
                .ends_with("Connection: close\r\n\r\n")
        );
    }

    /// An `AsyncRead` that hands out `data` at most `step` bytes per read.
    fn pieces(data: &[u8], step: usize) -> Pieces {
        Pieces {
            data: data.to_vec(),
            at: 0,
            step,
        }
    }

    struct Pieces {
        data: Vec<u8>,
        at: usize,
        step: usize,
    }

    impl AsyncRead for Pieces {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<std::io::Result<()>> {
            let n = self
                .step
                .min(self.data.len() - self.at)
                .min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.data[at..at + n]);
            self.at += n;
            std::task::Poll::Ready(Ok(()))
        }
    }
}
