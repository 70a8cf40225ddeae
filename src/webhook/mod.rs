//! Webhook delivery: every message published to a channel with `webhookUrls` is POSTed to each
//! URL by a pool of its own (`ringcast-webhook-{i}`: tokio + hyper), never by a core and never
//! by the sequencer's await path.
//!
//! - `envelope`: the JSON body (built once per message) and the HMAC signature.
//! - `retry`: which answers are retried and when (exponential backoff, jitter, `Retry-After`).
//! - `client`: the hyper client (keep-alive pools, rustls, extra CAs, private-address guard).
//! - `store`: where pending deliveries live: the process (memory engine) or a Redis stream
//!   with a consumer group (redis engine), and how a finished one is counted exactly once.
//! - `pool`: the runtime, the intake, one task per delivery, per-endpoint caps, shutdown flush.
//!
//! One delivery is one (message, URL) pair; it ends delivered or failed, once.

mod client;
pub mod envelope;
mod pool;
mod retry;
mod store;

use std::sync::Arc;

use bytes::Bytes;

pub use pool::{PoolError, WebhookPool, WebhookTx};
pub use store::{Backend, PENDING_STREAM, persist_fields};

use crate::channel::ChannelName;

/// One delivery: a message's envelope to one URL.
#[derive(Debug, Clone)]
pub struct Job {
    pub channel: ChannelName,
    /// The message's offset in its channel: its key for `whDeliveredCount` in every engine.
    pub key: u64,
    pub url: Arc<str>,
    pub message_id: Arc<str>,
    pub event: Arc<str>,
    /// Publish time (ms since the epoch): retries stop at `created_ms + max_age`.
    pub created_ms: i64,
    /// The envelope JSON, shared by every URL of the message.
    pub body: Bytes,
    /// Redis engine: the pending-stream entry that holds this delivery.
    pub entry: Option<String>,
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Delivered,
    /// A permanent failure (e.g. 404) or a refused target.
    Failed,
    /// Retried until `max_age` without success.
    Expired,
}
