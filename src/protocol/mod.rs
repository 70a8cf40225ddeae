//! The seed's WebSocket protocol as types: `ClientMsg` is parsed once per text frame,
//! `ServerMsg` is what the server replies with; `ErrorCode` is the stable `code` of error frames
//! (CONTRACT.md). Delivered messages are encoded separately, once per publish (`MessageFrame`).

mod client;
mod error;
pub mod row_filter;
mod server;

pub use client::{
    ClientMsg, DbFilter, Inbound, MAX_EVENT_LEN, MAX_IDEMPOTENCY_KEY, Since, check_idempotency_key,
    parse_client,
};
pub use error::{ErrorCode, ProtocolError};
pub use server::{ChannelPosition, MessageFrame, ServerMsg};
