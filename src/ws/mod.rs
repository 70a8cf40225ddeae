//! WebSocket connections of the raw ringcast protocol: the upgrade handshake, the session
//! that answers client messages (`session`), and what the Socket.IO front end shares: the
//! read loop (`reader`) and the writer task that drains the connection's outbox in batches
//! (`writer`). Runs on a core; never awaits remote I/O.

pub mod handshake;
pub mod reader;
mod session;
pub mod writer;

use std::rc::Rc;

use bytes::BytesMut;

use crate::core::{
    Core,
    conn::{Conn, Phase, Proto},
    inbox::CLOSE_GRACE,
    socket::{Reader, Writer},
};

/// Runs an upgraded connection to its end. `buf` holds bytes read past the HTTP head.
pub async fn run(core: Rc<Core>, conn: Rc<Conn>, rd: Reader, wr: Writer, buf: BytesMut) {
    let writer = open(&core, &conn, wr, Proto::Raw);
    let mut rd = rd;
    session::run(&core, &conn, &mut rd, buf).await;
    close(&core, &conn, writer, &mut rd).await;
}

/// Marks an upgraded connection open for `proto` and starts its writer task.
pub fn open(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    wr: Writer,
    proto: Proto,
) -> monoio::task::JoinHandle<()> {
    conn.phase.set(Phase::Unauthed);
    conn.proto.set(proto);
    conn.touch(std::time::Instant::now());
    core.metrics().ws_connections.inc();
    if proto == Proto::SocketIo {
        core.metrics().socketio_connections.inc();
    }
    monoio::spawn(writer::run(core.clone(), conn.clone(), wr))
}

/// After the session ended: forgets the connection, lets the writer finish (its last frame
/// written, FIN sent), then drains the peer's input for a bounded time (`socket::linger`),
/// so what was written is not discarded by a reset.
pub async fn close(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    writer: monoio::task::JoinHandle<()>,
    rd: &mut Reader,
) {
    if !conn.is_closing() {
        conn.abort();
    }
    core.unregister(conn);
    core.metrics().ws_connections.sub(1);
    if conn.is_sio() {
        core.metrics().socketio_connections.sub(1);
    }
    // The close frame may wait behind a write to a peer that does not read (a slow consumer
    // closed with 1013): it gets `CLOSE_GRACE` to drain, then the socket is forced off.
    let flushed = monoio::select! {
        _ = writer => true,
        _ = monoio::time::sleep(CLOSE_GRACE) => false,
    };
    // Not while the server stops: its threads end, and a read still in flight would keep the
    // socket (io_uring) past the process's listeners.
    if flushed && conn.linger.get() && !core.shutting_down.get() {
        crate::core::socket::linger(rd, || core.shutting_down.get()).await;
    } else if !flushed {
        conn.abort();
    }
}
