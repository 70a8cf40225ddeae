//! The seed's WebSocket protocol as types: `ClientMsg` is parsed once per text frame,
//! `ServerMsg` is what the server replies with; `ErrorCode` is the stable `code` of error frames
//! (CONTRACT.md). Delivered messages are encoded separately, once per publish (`MessageFrame`).

mod client;
mod error;
pub mod object;
pub mod row_filter;
mod server;

pub use client::{
    ClientMsg, DbFilter, Inbound, MAX_EVENT_LEN, MAX_IDEMPOTENCY_KEY, RESERVED_EVENTS, Since,
    check_event_name, check_idempotency_key, parse_client,
};
pub use error::{ErrorCode, ProtocolError};

/// Which front end a client speaks: what its answers and deliveries are encoded as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// The raw ringcast protocol (`/realtime`).
    Raw,
    /// Engine.IO / Socket.IO (`/socket.io/`, the InsForge SDK).
    SocketIo,
}
pub use server::{ChannelPosition, MessageFrame, PresenceSnapshot, ServerMsg};
