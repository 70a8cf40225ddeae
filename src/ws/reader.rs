//! The read loop both WebSocket front ends share (the raw protocol's `session`, Socket.IO's
//! `sio::session`): reads into the connection's buffer (growing it while busy, giving it back
//! when idle), decodes RFC 6455 frames, and hands each complete message to the front end. A
//! framing violation closes the connection with its code (and flags it to drain the rest of
//! the peer's input, `socket::linger`).

use std::{rc::Rc, time::Instant};

use bytes::BytesMut;

use crate::{
    core::{
        Core,
        conn::Conn,
        socket::{Reader, read_more},
    },
    frame::{FrameDecoder, Incoming},
};

/// The largest single read once a connection is busy.
const MAX_READ: usize = 64 << 10;

/// What a front end does with what the loop reads.
pub trait Frames {
    /// One complete client message.
    fn on_frame(
        &mut self,
        core: &Rc<Core>,
        conn: &Rc<Conn>,
        inc: Incoming,
    ) -> impl std::future::Future<Output = ()>;

    /// Bytes arrived from the peer at `now` (liveness for the sweeper).
    fn seen(&self, conn: &Conn, now: Instant);
}

/// Reads and dispatches until the peer goes away or the connection is closing.
pub async fn read_frames(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    rd: &mut Reader,
    mut buf: BytesMut,
    h: &mut impl Frames,
) {
    let cfg = core.cfg();
    let base = cfg.read_buffer_bytes;
    let mut want = base;
    if buf.is_empty() && buf.capacity() > base {
        // The HTTP head needed a bigger buffer; an idle socket holds only `base` bytes.
        buf = BytesMut::with_capacity(base);
    }
    let mut dec = FrameDecoder::new(cfg.max_frame_bytes);
    loop {
        loop {
            match dec.decode(&mut buf) {
                // Boxed: handling a message (auth, subscribe, publish) needs far more state
                // than waiting for one; boxing keeps every idle connection's task small. Keep
                // the raw session's future under 1 KiB (see its subscribe).
                Ok(Some(inc)) => Box::pin(h.on_frame(core, conn, inc)).await,
                Ok(None) => break,
                Err(e) => {
                    core.metrics().protocol_closes_total.inc();
                    conn.linger.set(true);
                    tracing::debug!(conn = conn.id.0, error = %e, "protocol violation");
                    conn.close(e.close_code(), &e.to_string(), false);
                    return;
                }
            }
            if conn.is_closing() {
                return;
            }
        }
        if conn.is_closing() {
            return;
        }
        if buf.is_empty() && buf.capacity() > base * 2 {
            // Idle again after a burst: give the large buffer back.
            buf = BytesMut::with_capacity(base);
            want = base;
        }
        match read_more(rd, &mut buf, conn, want.min(MAX_READ)).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                core.metrics().bytes_in_total.add(n as u64);
                h.seen(conn, Instant::now());
                if n >= want {
                    want = (want * 2).min(MAX_READ);
                }
            }
        }
    }
}
