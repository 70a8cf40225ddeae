//! The storage and inter-node boundary: one `Engine` trait with a `memory` implementation
//! (default, one node) and, next, a Redis implementation (many nodes).
//!
//! An engine is driven by the control thread only (`control::run`), never from a core, so its
//! methods may await remote I/O. It stores the channel registry and history, answers history and
//! stats queries, and is told which channels this node has subscribers for (the hook a
//! multi-node engine uses to subscribe to other nodes' publishes).
//!
//! Who orders publishes (assigns the per-channel `offset`, the one order every subscriber sees)
//! depends on the engine (`Sequencing`): with one node (memory) the core that owns the channel
//! does, and the engine only `store`s what it sequenced; with many nodes (redis) the engine does,
//! in `append`, and every message comes back through its event stream.

pub mod memory;
pub mod redis;

use std::{future::Future, pin::Pin, sync::Arc};

use bytes::Bytes;

use serde::Serialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use crate::{
    channel::{ChannelName, ChannelRecord},
    timestamp::Timestamp,
};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Conflict(String),
    #[error("engine error: {0}")]
    Other(String),
    /// A repeated idempotency key whose first ack could not be read back: the message was
    /// published before, so this is not a refusal.
    #[error("{0}")]
    RepeatUnreadable(String),
    /// The store was asked and did not answer (a timeout, a lost connection): the message
    /// (`id`) may or may not have been published.
    #[error("outcome unknown for message {id}: {detail}")]
    OutcomeUnknown { id: uuid::Uuid, detail: String },
}

/// What a multi-node engine reports to the control thread.
#[derive(Debug)]
pub enum EngineEvent {
    /// A message published on some node (this one included), in its channel's order:
    /// `frame_json` is the complete `message` frame body, encoded once by the publisher,
    /// carrying `offset`.
    Message {
        channel: ChannelName,
        offset: u64,
        frame_json: Bytes,
    },
    /// The channel registry changed (on this node or another).
    RegistryChanged,
    /// The pub/sub link came back (and is subscribed again): messages may have been missed.
    Reconnected,
    /// The pub/sub reader fell more than its buffer behind and dropped `lost` pub/sub
    /// messages (publish batches or registry announcements): reload and read the gaps.
    Resync { lost: u64 },
    /// A presence member joined or left a channel (on any node).
    Presence {
        channel: ChannelName,
        announced: redis::presence::Announced,
    },
}

/// Where publishes are ordered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sequencing {
    /// On the core that owns the channel (`core::sequencer`); one node. The core hands each
    /// sequenced message to the control thread, which `store`s it.
    Cores,
    /// In the engine, shared by every node (`Engine::append`).
    Engine,
}

/// Engine work that owns what it needs, so the control thread runs it as a task of its own
/// instead of waiting for it (history, stats, `/health`, retention passes: with Redis, many
/// round trips each, and remote deliveries must not wait behind them).
pub type LocalFuture<T> = Pin<Box<dyn Future<Output = T>>>;

/// An append that runs concurrently with others (see `Engine::append`).
pub type AppendFuture = Pin<Box<dyn Future<Output = Result<Appended, EngineError>>>>;

/// A publish accepted by a core, before the engine has ordered it. Cheap to clone (`Arc`s).
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub channel_id: Uuid,
    pub channel_name: ChannelName,
    pub event: Arc<str>,
    pub payload: Arc<RawValue>,
    pub sender_id: Option<Arc<str>>,
    pub sender_type: &'static str,
    /// The channel's webhook URLs at publish time (`whAudienceCount` is their number).
    pub webhook_urls: Option<Arc<[Arc<str>]>>,
    /// Set for a change from the database change stream: where it sits in that stream. Its
    /// message id is derived from it, and the redis engine records it with the append.
    pub source: Option<SourcePos>,
    /// The publisher's `idempotencyKey`: the redis engine decides repeats in its publish script.
    pub idempotency_key: Option<Arc<str>>,
}

/// Where a change sits in the database change stream: its transaction's commit LSN, then its
/// place in that transaction (1, 2, ...; 0 is a gap notice). Ordered as the stream is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SourcePos {
    pub lsn: u64,
    pub seq: u32,
}

impl SourcePos {
    /// The message id of the change at this position: the same every time the change is read,
    /// so a change read twice is one message (UUID v5 of `pg:<lsn hex>/<seq>`).
    pub fn message_id(self) -> Uuid {
        let name = format!("pg:{:X}/{}", self.lsn, self.seq);
        Uuid::new_v5(&SOURCE_ID_NAMESPACE, name.as_bytes())
    }

    /// Fixed-width lowercase hex (`lsn` 16 digits, `seq` 8): byte order is stream order, so
    /// Redis compares positions as strings.
    pub fn to_key(self) -> String {
        format!("{:016x}{:08x}", self.lsn, self.seq)
    }

    pub fn from_key(s: &str) -> Option<Self> {
        if s.len() != 24 || !s.is_ascii() {
            return None;
        }
        Some(Self {
            lsn: u64::from_str_radix(&s[..16], 16).ok()?,
            seq: u32::from_str_radix(&s[16..], 16).ok()?,
        })
    }
}

/// The UUID namespace of change message ids (a fixed random v4).
const SOURCE_ID_NAMESPACE: Uuid = Uuid::from_u128(0x5d0f_7a3e_2b8c_4e91_9a6d_13c4_f0e2_b857);

impl NewMessage {
    pub fn wh_audience(&self) -> u32 {
        self.webhook_urls.as_ref().map_or(0, |u| u.len() as u32)
    }
}

/// Where a channel stands: its last offset and its epoch (what identifies its history: a new
/// epoch means the history before it is gone, so offsets from before do not apply).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPos {
    pub offset: u64,
    pub epoch: Arc<str>,
}

/// A new random epoch (8 hex digits).
pub fn new_epoch() -> Arc<str> {
    Arc::from(&Uuid::new_v4().simple().to_string()[..8])
}

/// A slice of a channel's history for a recovering subscriber (`Engine::range`).
#[derive(Debug, Default)]
pub struct Range {
    /// The channel's first retained offset (`None`: nothing retained).
    pub first: Option<u64>,
    /// The retained messages in the asked range, oldest first.
    pub records: Vec<MessageRecord>,
}

/// What sequencing assigned to a message (its key for audience and webhook-count updates is
/// the channel and `offset`).
#[derive(Debug, Clone, Copy)]
pub struct Appended {
    pub id: Uuid,
    pub offset: u64,
    pub created_at: Timestamp,
}

/// `GET /api/realtime/messages` parameters, already validated.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    pub limit: usize,
    pub offset: usize,
    pub channel_id: Option<Uuid>,
    pub channel_name: Option<String>,
    pub event_name: Option<String>,
    pub since: Option<Timestamp>,
    pub until: Option<Timestamp>,
}

/// One history row in the seed's shape (plus `offset`).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageRecord {
    pub id: Uuid,
    pub event_name: Arc<str>,
    pub channel_id: Uuid,
    pub channel_name: ChannelName,
    pub payload: Arc<RawValue>,
    pub sender_type: &'static str,
    pub sender_id: Option<Arc<str>>,
    pub ws_audience_count: u64,
    pub wh_audience_count: u32,
    pub wh_delivered_count: u32,
    pub created_at: Timestamp,
    pub offset: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    pub total_messages: u64,
    pub wh_delivery_rate: f64,
    pub top_events: Vec<EventCount>,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EventCount {
    pub event_name: String,
    pub count: u64,
}

/// Accumulates `Stats` over message records (every engine computes them the same way).
#[derive(Default)]
pub struct StatsBuilder {
    total: u64,
    wh_audience: u64,
    wh_delivered: u64,
    events: std::collections::HashMap<Arc<str>, u64>,
}

impl StatsBuilder {
    pub fn add(&mut self, m: &MessageRecord) {
        self.total += 1;
        self.wh_audience += u64::from(m.wh_audience_count);
        self.wh_delivered += u64::from(m.wh_delivered_count);
        *self.events.entry(m.event_name.clone()).or_default() += 1;
    }

    /// Totals, the delivery rate (1.0 without webhook audience) and the top 10 events.
    pub fn finish(self) -> Stats {
        let mut top: Vec<EventCount> = self
            .events
            .into_iter()
            .map(|(e, count)| EventCount {
                event_name: e.to_string(),
                count,
            })
            .collect();
        top.sort_by(|a, b| b.count.cmp(&a.count).then(a.event_name.cmp(&b.event_name)));
        top.truncate(10);
        Stats {
            total_messages: self.total,
            wh_delivery_rate: if self.wh_audience == 0 {
                1.0
            } else {
                self.wh_delivered as f64 / self.wh_audience as f64
            },
            top_events: top,
        }
    }
}

/// Everything the control thread needs from a storage/fan-out backend.
#[allow(async_fn_in_trait)]
pub trait Engine {
    /// Short name for logs and `/health`.
    fn name(&self) -> &'static str;
    /// Whether the backing store answers (`/health`).
    fn reachable(&mut self) -> LocalFuture<bool>;

    async fn load_channels(&mut self) -> Result<Vec<ChannelRecord>, EngineError>;
    /// Stores a new channel; `Conflict` if its pattern is taken (possibly by another node).
    async fn create_channel(&mut self, rec: &ChannelRecord) -> Result<(), EngineError>;
    async fn update_channel(
        &mut self,
        old: &ChannelRecord,
        new: &ChannelRecord,
    ) -> Result<(), EngineError>;
    async fn delete_channel(&mut self, rec: &ChannelRecord) -> Result<(), EngineError>;

    /// `Sequencing::Cores` engines: keeps a message its owning core already sequenced (and
    /// acknowledged; see `core::sequencer` for why a history read still sees it), queued to
    /// `ws_audience` subscribers on that core so far.
    async fn store(
        &mut self,
        _msg: NewMessage,
        _at: Appended,
        _ws_audience: u32,
    ) -> Result<(), EngineError> {
        Err(EngineError::Other(
            "this engine sequences its own publishes".into(),
        ))
    }

    /// `Sequencing::Engine` engines: stores a message and assigns its id and per-channel
    /// offset, concurrently with other appends (many in flight). The publisher is acknowledged
    /// only after it resolves `Ok`; the message itself, local ones included, is delivered
    /// through `EngineEvent::Message`.
    fn append(&self, _msg: NewMessage) -> AppendFuture {
        Box::pin(async {
            Err(EngineError::Other(
                "this engine does not sequence publishes".into(),
            ))
        })
    }

    /// Adds subscribers messages were delivered to (`wsAudienceCount`): (channel, offset, n).
    async fn add_audience(&mut self, updates: &[(ChannelName, u64, u32)]);

    /// One more webhook URL answered 2xx for the message at `offset` (`whDeliveredCount`).
    async fn add_webhook_delivered(&mut self, _channel: &ChannelName, _offset: u64) {}

    fn history(&mut self, q: &HistoryQuery)
    -> LocalFuture<Result<Vec<MessageRecord>, EngineError>>;
    fn stats(&mut self, since: Option<Timestamp>) -> LocalFuture<Result<Stats, EngineError>>;

    /// Messages this engine keeps in process memory (`ringcast_history_retained`); 0 for an
    /// engine that stores history elsewhere.
    fn retained(&self) -> u64 {
        0
    }

    /// This node gained its first / lost its last subscriber of `channel` (fan-out hook).
    /// Changes of one channel must take effect in call order.
    fn node_interest(
        &mut self,
        channel: &ChannelName,
        on: bool,
    ) -> LocalFuture<Result<(), EngineError>>;

    /// `Sequencing::Engine` engines: the channel's position when the returned future runs
    /// (its highest offset, and its epoch, made if it has none yet).
    fn position(&mut self, _channel: &ChannelName) -> LocalFuture<Result<ChannelPos, EngineError>> {
        Box::pin(std::future::ready(Err(EngineError::Other(
            "this engine does not track positions".into(),
        ))))
    }

    /// The channel's retained messages with offsets in `(after, upto]`, oldest first, and its
    /// first retained offset: what a recovering subscriber missed. The future owns what it
    /// needs; an engine that keeps history in process reads it when called (so a read asked
    /// after a store sees it).
    fn range(
        &mut self,
        _channel: &ChannelName,
        _after: u64,
        _upto: u64,
    ) -> LocalFuture<Result<Range, EngineError>> {
        Box::pin(std::future::ready(Ok(Range::default())))
    }

    /// The channel's messages with offsets in `(after, upto]` (`upto` `None`: to the end), in
    /// order: what a node missed while its pub/sub link was down.
    async fn read_range(
        &mut self,
        _channel: &ChannelName,
        _after: u64,
        _upto: Option<u64>,
    ) -> Result<Vec<MessageRecord>, EngineError> {
        Ok(Vec::new())
    }

    /// How often `maintain` should run (`None`: never).
    fn maintenance_period(&self) -> Option<std::time::Duration> {
        None
    }

    /// Periodic housekeeping (retention by age): the control thread runs it as a task of its
    /// own, one pass at a time.
    fn maintain(&mut self) -> Option<LocalFuture<()>> {
        None
    }

    /// The policy set last saved at run time (`PoliciesDoc` JSON); `None`: never saved, the
    /// configuration's policies apply.
    async fn load_policies(&mut self) -> Result<Option<String>, EngineError> {
        Ok(None)
    }

    /// Saves the whole policy set (`PoliciesDoc` JSON), announced to every node like a
    /// registry change.
    async fn save_policies(&mut self, _doc: &str) -> Result<(), EngineError> {
        Ok(())
    }

    /// The engine's event stream, taken once by the control thread.
    fn take_events(&mut self) -> Option<tokio::sync::mpsc::Receiver<EngineEvent>> {
        None
    }

    /// Presence shared by every node (`None`: the cores keep it, one node).
    fn presence_store(
        &self,
        _node: &str,
        _ttl: std::time::Duration,
    ) -> Option<redis::presence::PresenceStore> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::SourcePos;

    #[test]
    fn source_positions_round_trip_and_order_as_strings() {
        let a = SourcePos {
            lsn: 0x1_974_918,
            seq: 1,
        };
        let b = SourcePos {
            lsn: 0x1_974_918,
            seq: 12,
        };
        let c = SourcePos {
            lsn: 0x2_000_000,
            seq: 0,
        };
        for p in [a, b, c] {
            assert_eq!(SourcePos::from_key(&p.to_key()), Some(p));
        }
        assert!(a.to_key() < b.to_key() && b.to_key() < c.to_key());
        assert!(a < b && b < c);
        assert_eq!(a.message_id(), a.message_id());
        assert_ne!(a.message_id(), b.message_id());
        assert_eq!(SourcePos::from_key("xyz"), None);
    }
}
