//! WebSocket connections: the upgrade handshake, RFC 6455 framing (`frame`), the session that
//! reads and answers client messages (`session`) and the writer task that drains the
//! connection's outbox in batches (`writer`). Runs on a core; never awaits remote I/O.

pub mod frame;
pub mod handshake;
mod session;
mod writer;

use std::rc::Rc;

use bytes::BytesMut;

use crate::core::{
    Core,
    conn::{Conn, Phase},
    inbox::CLOSE_GRACE,
    serve::{Reader, Writer},
};

/// Runs an upgraded connection to its end. `buf` holds bytes read past the HTTP head.
pub async fn run(core: Rc<Core>, conn: Rc<Conn>, rd: Reader, wr: Writer, buf: BytesMut) {
    conn.phase.set(Phase::Unauthed);
    conn.touch(std::time::Instant::now());
    core.metrics().ws_connections.inc();
    let writer = monoio::spawn(writer::run(core.clone(), conn.clone(), wr));
    let mut rd = rd;
    session::run(&core, &conn, &mut rd, buf).await;
    if !conn.is_closing() {
        conn.abort();
    }
    core.unregister(&conn);
    core.metrics().ws_connections.sub(1);
    // The close frame may wait behind a write to a peer that does not read (a slow consumer
    // closed with 1013): it gets `CLOSE_GRACE` to drain, then the socket is forced off.
    monoio::select! {
        _ = writer => {}
        _ = monoio::time::sleep(CLOSE_GRACE) => conn.abort(),
    }
}
