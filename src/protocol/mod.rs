//! The seed's WebSocket protocol as types: `ClientMsg` is parsed once per text frame,
//! `ServerMsg` is what the server replies with; `ErrorCode` is the stable `code` of error frames
//! (CONTRACT.md). Delivered messages are encoded separately, once per publish (`MessageFrame`).

mod client;
mod error;
pub mod row_filter;
mod server;

pub use client::{ClientMsg, DbFilter, Inbound, parse_client};
pub use error::{ErrorCode, ProtocolError};
pub use server::{MessageFrame, ServerMsg};
