//! Messages between the cores and the control thread, and the queues that carry them.
//!
//! Bounds and overflow policy:
//! - control inbox (`server.engine_queue`, default 65,536): cores `try_send` publishes; when it
//!   is full the publisher gets `RATE_LIMITED` ("broker busy") and nothing was accepted. Interest
//!   changes that must be confirmed use `send().await` inside that one connection's task.
//!   Audience updates that do not fit are dropped and counted (they only feed a statistic);
//!   so are webhook delivered-count updates from the webhook pool.
//! - core inbox (`server.core_queue`, default 16,384): the control thread `send().await`s, so a
//!   slow core applies backpressure to the sequencer, which in turn fills the control inbox and
//!   refuses new publishes. Nothing accepted is dropped between threads.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::value::RawValue;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::{
    channel::{ChannelName, ChannelTable, CreateChannel, UpdateChannel},
    engine::HistoryQuery,
    http::ApiError,
    timestamp::Timestamp,
};

/// Index of a core thread (0..workers).
pub type CoreId = usize;

/// A connection, unique within its core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// Core -> control.
pub enum ControlMsg {
    Publish(Box<PublishReq>),
    /// The core gained (`on`) or lost its subscribers of `channel`. `done` is answered once the
    /// control thread will route that channel's messages to the core.
    Interest {
        core: CoreId,
        channel: ChannelName,
        on: bool,
        done: Option<oneshot::Sender<()>>,
    },
    /// (channel, message key, subscribers it was queued to) from one core.
    Audience(Vec<(ChannelName, u64, u32)>),
    Rest {
        req: RestReq,
        reply: oneshot::Sender<Result<RestOk, ApiError>>,
    },
    /// Periodic liveness/engine check for `/health`.
    Health(oneshot::Sender<bool>),
    /// From the webhook pool (memory engine): one URL of message `key` answered 2xx.
    WebhookDelivered(ChannelName, u64),
}

pub struct PublishReq {
    pub core: CoreId,
    pub conn: ConnId,
    pub r#ref: Option<Box<RawValue>>,
    pub channel: ChannelName,
    pub event: Arc<str>,
    pub payload: Box<RawValue>,
    pub sender_id: Option<Arc<str>>,
    pub sender_type: &'static str,
}

pub enum RestReq {
    ListChannels,
    GetChannel(Uuid),
    CreateChannel(CreateChannel),
    UpdateChannel(Uuid, UpdateChannel),
    DeleteChannel(Uuid),
    Messages(HistoryQuery),
    Stats(Option<Timestamp>),
}

/// A successful REST answer: status and JSON body (empty for 204).
pub struct RestOk {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Control -> core.
pub enum CoreMsg {
    Deliver(Arc<Delivery>),
    /// A frame for one connection (a `published` ack or an error).
    Reply {
        conn: ConnId,
        frame: Bytes,
    },
    /// A new channel table; `done` is answered once the core has applied it.
    Snapshot {
        table: Arc<ChannelTable>,
        done: oneshot::Sender<()>,
    },
}

/// One published message, encoded once; every subscriber on every core gets `frame`.
pub struct Delivery {
    pub key: u64,
    pub channel: ChannelName,
    pub event: Arc<str>,
    /// `payload.schema` of `db:` channel messages, for subscription filters.
    pub schema: Option<Box<str>>,
    pub frame: Bytes,
}
