//! The Socket.IO front end: what the official InsForge SDK (`@insforge/sdk`, socket.io-client
//! 4) speaks, served at `/socket.io/` beside the raw protocol's `/realtime`, on the same
//! cores, over the same subscription index, history, webhooks, counts and policies.
//!
//! - `handshake` checks the upgrade request (`EIO=4`, `transport=websocket`);
//! - `packet` is the Engine.IO v4 / Socket.IO v5 codec;
//! - `session` reads a connection's packets: CONNECT with the token, the InsForge events
//!   (`realtime:subscribe`, `realtime:unsubscribe`, `realtime:publish`), pongs;
//! - `encode` builds what every subscriber gets (messages, presence events, errors), once.
//!
//! The writer task and RFC 6455 framing are the raw front end's (`ws::writer`, `frame`).

pub mod encode;
pub mod handshake;
pub mod packet;
mod session;

use std::rc::Rc;

use bytes::BytesMut;

use crate::core::{
    Core,
    conn::{Conn, Proto},
    socket::{Reader, Writer},
};

/// Runs an upgraded Socket.IO connection to its end. `buf` holds bytes read past the HTTP
/// head.
pub async fn run(core: Rc<Core>, conn: Rc<Conn>, rd: Reader, wr: Writer, buf: BytesMut) {
    let writer = crate::ws::open(&core, &conn, wr, Proto::SocketIo);
    let mut rd = rd;
    session::run(&core, &conn, &mut rd, buf).await;
    crate::ws::close(&core, &conn, writer, &mut rd).await;
}
