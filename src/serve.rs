//! One accepted TCP connection: HTTP/1.1 keep-alive requests until it upgrades to a WebSocket
//! (the raw protocol on `/realtime`, Socket.IO on `/socket.io/`) or closes. Head and body sizes are bounded; a client that sends nothing (or
//! too slowly) is cut off by the sweeper through `Conn::http_deadline`.

use std::{rc::Rc, time::Instant};

use bytes::{Buf, BytesMut};
use monoio::{
    io::{AsyncWriteRentExt, Splitable},
    net::TcpStream,
};

use crate::{
    core::{
        Core,
        conn::Conn,
        socket::{Reader, Writer, read_more},
    },
    http::{self, ApiError, Head, Response, request},
    protocol::Proto,
    sio, ws,
};

pub async fn serve(core: Rc<Core>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let conn = core.register();
    let (mut rd, mut wr) = stream.into_split();
    let max = core.cfg().max_connections;
    if max > 0 && core.node_connections() > max as u64 {
        let e = ApiError::unavailable("connection limit reached");
        let _ = wr.write_all(Response::error(&e).encode(false)).await;
    } else if let Some((buf, proto)) = http_loop(&core, &conn, &mut rd, &mut wr).await {
        match proto {
            Proto::Raw => ws::run(core.clone(), conn.clone(), rd, wr, buf).await,
            Proto::SocketIo => sio::run(core.clone(), conn.clone(), rd, wr, buf).await,
        }
        return;
    }
    core.unregister(&conn);
    let _ = monoio::io::AsyncWriteRent::shutdown(&mut wr).await;
    // The answer is written and FIN sent: drain what the client still sends (a pipelined
    // request past a limit, say) so the kernel does not reset the connection and discard it.
    if conn.linger.get() && !core.shutting_down.get() {
        crate::core::socket::linger(&mut rd, || core.shutting_down.get()).await;
    }
}

/// Serves requests; returns the leftover buffer and the front end if the connection upgraded
/// to a WebSocket.
async fn http_loop(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    rd: &mut Reader,
    wr: &mut Writer,
) -> Option<(BytesMut, Proto)> {
    let cfg = core.cfg();
    let mut buf = BytesMut::with_capacity(cfg.read_buffer_bytes.max(1024));
    let mut bucket = crate::core::bucket::Bucket::of(cfg);
    conn.http_deadline
        .set(Some(Instant::now() + cfg.header_timeout));
    loop {
        let head = match read_head(core, conn, rd, &mut buf).await {
            Ok(Some(h)) => h,
            Ok(None) => return None,
            Err(e) => {
                conn.linger.set(true);
                let _ = wr.write_all(Response::error(&e).encode(false)).await;
                return None;
            }
        };
        let proto = if is_ws_path(&head.path) {
            Some(Proto::Raw)
        } else if cfg.socketio && sio::handshake::is_path(&head.path) {
            Some(Proto::SocketIo)
        } else {
            None
        };
        if let Some(proto) = proto {
            let checked = match proto {
                Proto::Raw => Ok(()),
                Proto::SocketIo => sio::handshake::check(&head),
            };
            return match checked.and_then(|()| ws::handshake::response(&head)) {
                Ok(resp) => {
                    let (res, _) = wr.write_all(resp).await;
                    conn.http_deadline.set(None);
                    res.ok().map(|_| (buf, proto))
                }
                Err(e) => {
                    conn.linger.set(true);
                    let mut r = Response::error(&e);
                    if e.status == 405 {
                        r.allow = Some("GET");
                    }
                    let _ = wr.write_all(wire(&r, &head, false)).await;
                    None
                }
            };
        }
        let body = match read_body(core, conn, rd, &mut buf, &head).await {
            Ok(b) => b,
            Err(e) => {
                conn.linger.set(true);
                let _ = wr.write_all(wire(&Response::error(&e), &head, false)).await;
                return None;
            }
        };
        let keep = head.keep_alive && !core.shutting_down.get() && !conn.is_closing();
        conn.http_deadline.set(None);
        // Boxed: the REST handler's state lives on the heap only while a request is served,
        // instead of inflating every connection task (idle WebSockets included).
        let resp = Box::pin(http::route(core, &head, body, &mut bucket)).await;
        core.metrics().http_requests_total.inc();
        let out = wire(&resp, &head, keep);
        let (res, _) = wr.write_all(out).await;
        if res.is_err() || !keep {
            return None;
        }
        // Waiting for the next request: the keep-alive timeout applies.
        conn.http_deadline
            .set(Some(Instant::now() + cfg.keepalive_timeout));
    }
}

/// The bytes of `resp` as the answer to `head`: a HEAD request gets the headers a GET would
/// (`content-length` included) and no body (RFC 9110 9.3.2), or a kept-alive client would
/// read the body as the start of the next response.
fn wire(resp: &Response, head: &Head, keep_alive: bool) -> Vec<u8> {
    let mut out = resp.encode(keep_alive);
    if head.method == "HEAD" {
        out.truncate(out.len() - resp.body.len());
    }
    out
}

fn is_ws_path(p: &str) -> bool {
    p == "/realtime" || p == "/realtime/"
}

async fn read_head(
    core: &Core,
    conn: &Conn,
    rd: &mut Reader,
    buf: &mut BytesMut,
) -> Result<Option<Head>, ApiError> {
    let cfg = core.cfg();
    loop {
        if !buf.is_empty()
            && let Some((head, n)) = request::parse_head(buf, cfg.max_header_bytes)?
        {
            buf.advance(n);
            return Ok(Some(head));
        }
        let was_empty = buf.is_empty();
        match read_more(rd, buf, conn, 4096).await {
            Ok(0) => return Ok(None),
            Ok(n) => {
                core.metrics().bytes_in_total.add(n as u64);
                if was_empty {
                    // First byte of a request: from now on the head must arrive in time.
                    conn.http_deadline
                        .set(Some(Instant::now() + cfg.header_timeout));
                }
            }
            Err(_) if !buf.is_empty() => {
                return Err(ApiError::timeout("request head not received in time"));
            }
            Err(_) => return Ok(None),
        }
    }
}

async fn read_body(
    core: &Core,
    conn: &Conn,
    rd: &mut Reader,
    buf: &mut BytesMut,
    head: &Head,
) -> Result<bytes::Bytes, ApiError> {
    let n = request::body_len(head, core.cfg().max_body_bytes)?;
    while buf.len() < n {
        let want = (n - buf.len()).min(64 << 10);
        match read_more(rd, buf, conn, want).await {
            Ok(0) => return Err(ApiError::bad_request("connection closed mid-body")),
            Ok(k) => core.metrics().bytes_in_total.add(k as u64),
            Err(_) => return Err(ApiError::timeout("request body not received in time")),
        }
    }
    Ok(request::take_body(buf, n))
}
