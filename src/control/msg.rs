//! Messages between the cores and the control thread (and between cores), the queues that
//! carry them, and the one encoding of a published message that every subscriber shares.
//!
//! Bounds and overflow policy:
//! - control inbox (`server.engine_queue`, default 65,536). Memory engine: the owning core
//!   reserves a slot for the sequenced message before accepting a publish; redis engine: cores
//!   `try_send` publishes. Either way, when it is full the publisher gets `RATE_LIMITED`
//!   ("broker busy") and nothing was accepted. Interest changes that must be confirmed use
//!   `send().await` inside that one connection's task. Audience updates that do not fit are
//!   dropped and counted (they only feed a statistic); so are webhook delivered-count updates
//!   from the webhook pool.
//! - core inbox (`server.core_queue`, default 16,384). Memory engine: a publish forwarded to its
//!   owning core carries a slot reserved in the publishing core's inbox for its answer, and the
//!   owner reserves a slot in each interested core's inbox before accepting the publish; any of
//!   them full: `RATE_LIMITED` "broker busy", nothing accepted. Redis engine: the control thread
//!   `send().await`s, so a slow core applies backpressure to the sequencer, which fills the
//!   control inbox and refuses new publishes. Nothing accepted is dropped between threads.

use std::sync::Arc;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::sync::{mpsc::OwnedPermit, oneshot};
use tungstenite::protocol::frame::coding::{Data, OpCode};
use uuid::Uuid;

use crate::{
    channel::{ChannelName, ChannelRecord, ChannelTable, CreateChannel, UpdateChannel},
    engine::{Appended, ChannelPos, HistoryQuery, MessageRecord, NewMessage, SourcePos},
    frame,
    http::ApiError,
    protocol::{ErrorCode, MessageFrame, ServerMsg},
    timestamp::Timestamp,
};

/// Index of a core thread (0..workers).
pub type CoreId = usize;

/// A connection, unique within its core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConnId(pub u64);

/// Core -> control.
pub enum ControlMsg {
    /// Redis engine: a publish for the engine to sequence.
    Publish(Box<PublishReq>),
    /// Memory engine: a publish its owning core sequenced, acknowledged and delivered; for
    /// history, webhooks and counts. Sent before the publisher's ack can reach the wire.
    Stored(Box<Stored>),
    /// Redis engine: a core gained or lost its subscribers of a channel.
    Interest(Interest),
    /// (channel, offset, subscribers it was queued to) from one core.
    Audience(Vec<(ChannelName, u64, u32)>),
    Rest {
        req: RestReq,
        reply: oneshot::Sender<Result<RestOk, ApiError>>,
    },
    /// Periodic liveness/engine check for `/health`.
    Health(oneshot::Sender<bool>),
    /// From the webhook pool (memory engine): one URL of the message at this offset answered 2xx.
    WebhookDelivered(ChannelName, u64),
    /// Redis engine: changes from the database change stream to append, in order.
    Source(SourceBatch),
    /// A recovering subscriber's missed messages (`Engine::range`).
    Recover(RecoverReq),
    /// Redis engine: a presence join or leave from a core (boxed, as in `CoreMsg`).
    Presence(Box<crate::presence::Op>),
}

/// Reads `(after, upto]` of a channel's history for a subscriber that recovers.
pub struct RecoverReq {
    pub channel: ChannelName,
    pub after: u64,
    pub upto: u64,
    pub reply: oneshot::Sender<Result<Arc<Recovered>, String>>,
}

/// The answer to a `RecoverReq`: the channel's first retained offset and the messages, each
/// encoded once for this read.
pub struct Recovered {
    pub first: Option<u64>,
    pub msgs: Vec<Arc<Delivery>>,
}

/// The answer to an HTTP publish (a WebSocket publisher gets a frame instead).
#[derive(Debug)]
pub enum PubAnswer {
    Published(Appended),
    Refused { code: ErrorCode, message: String },
}

pub struct PublishReq {
    pub core: CoreId,
    pub conn: ConnId,
    pub r#ref: Option<Box<RawValue>>,
    pub channel: ChannelName,
    pub event: Arc<str>,
    /// Copied out of the read buffer once; every later holder shares it.
    pub payload: Arc<RawValue>,
    pub sender_id: Option<Arc<str>>,
    pub sender_type: &'static str,
    /// Set for a change from the database change stream (`cdc`): its message id derives from it.
    pub source: Option<SourcePos>,
    /// A repeat of this key on the channel within the idempotency window gets the first ack.
    pub idempotency_key: Option<Arc<str>>,
    /// Set for an HTTP publish: the answer goes here instead of to a connection.
    pub http: Option<oneshot::Sender<PubAnswer>>,
    /// The publisher's protocol: how its answer is encoded.
    pub proto: crate::protocol::Proto,
}

impl PublishReq {
    /// The message to sequence, published on `rec`'s channel.
    pub fn message(&self, rec: &ChannelRecord) -> NewMessage {
        NewMessage {
            channel_id: rec.id,
            channel_name: self.channel.clone(),
            event: self.event.clone(),
            payload: self.payload.clone(),
            sender_id: self.sender_id.clone(),
            sender_type: self.sender_type,
            webhook_urls: webhook_urls(rec),
            source: self.source,
            idempotency_key: self.idempotency_key.clone(),
        }
    }

    /// A change from the database change stream, as a publish with no connection to answer.
    pub fn from_source(core: CoreId, m: SourceMsg) -> Self {
        Self {
            core,
            conn: ConnId(0),
            r#ref: None,
            channel: m.channel,
            event: m.event,
            payload: m.payload,
            sender_id: None,
            sender_type: "system",
            source: Some(m.pos),
            idempotency_key: None,
            http: None,
            proto: crate::protocol::Proto::Raw,
        }
    }

    /// The `published` ack for this request (`None`: a Socket.IO publish is not answered
    /// when it succeeds, as in InsForge).
    pub fn ack(&self, a: &Appended) -> Option<Bytes> {
        if self.proto == crate::protocol::Proto::SocketIo {
            return None;
        }
        let mut id = uuid::Uuid::encode_buffer();
        Some(frame::encode_json(&ServerMsg::Published {
            message_id: a.id.hyphenated().encode_lower(&mut id),
            channel: self.channel.as_str(),
            event: &self.event,
            offset: a.offset,
            r#ref: self.r#ref.as_deref(),
        }))
    }

    /// Answers an HTTP publisher (`true`), or leaves the answer to the caller's frame
    /// (`false`: a WebSocket publisher).
    pub fn answer_http(&mut self, a: impl FnOnce() -> PubAnswer) -> bool {
        match self.http.take() {
            Some(tx) => {
                let _ = tx.send(a());
                true
            }
            None => false,
        }
    }

    /// An error frame answering this request.
    pub fn error(&self, code: crate::protocol::ErrorCode, message: &str) -> Bytes {
        self.error_about(code, message, None)
    }

    /// An error frame about one message (`OUTCOME_UNKNOWN` names the message).
    pub fn error_about(
        &self,
        code: crate::protocol::ErrorCode,
        message: &str,
        message_id: Option<&str>,
    ) -> Bytes {
        if self.proto == crate::protocol::Proto::SocketIo {
            return crate::sio::encode::error(Some(self.channel.as_str()), code, message);
        }
        frame::encode_json(&ServerMsg::Error {
            message,
            code: code.as_str(),
            channel: Some(self.channel.as_str()),
            message_id,
            r#ref: self.r#ref.as_deref(),
        })
    }
}

/// The channel's webhook URLs, if it has any.
fn webhook_urls(rec: &ChannelRecord) -> Option<Arc<[Arc<str>]>> {
    rec.webhook_urls
        .as_ref()
        .filter(|u| !u.is_empty())
        .map(|u| u.iter().map(|s| Arc::from(s.as_str())).collect())
}

/// One change from the database change stream (`cdc`), published as `senderType: "system"`.
#[derive(Debug, Clone)]
pub struct SourceMsg {
    pub channel: ChannelName,
    pub event: Arc<str>,
    pub payload: Arc<RawValue>,
    pub pos: SourcePos,
}

/// Changes handed to the publish path in stream order: to the owner core of their channels
/// (memory engine, `CoreMsg::Source`) or to the control thread (redis, `ControlMsg::Source`).
/// `reply` gets one result per change, in order.
pub struct SourceBatch {
    pub msgs: Vec<SourceMsg>,
    /// Memory engine: the queue slots each change will use, reserved by the change stream
    /// (which may wait for them; a core may not), so the owner core never refuses one and
    /// batches can be in flight together without reordering. Empty for the redis engine.
    pub slots: Vec<SourceSlots>,
    pub reply: oneshot::Sender<Vec<SourceResult>>,
}

/// The slots one change of a `SourceBatch` uses: the control thread's queue (history) and
/// every other core's inbox (index = core id; `None` for the owner), of which the owner uses
/// those of cores with subscribers and drops the rest.
pub struct SourceSlots {
    pub store: OwnedPermit<ControlMsg>,
    pub peers: Vec<Option<OwnedPermit<CoreMsg>>>,
}

/// What became of one change handed to the publish path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceResult {
    /// Stored in history (with its position, redis engine) and delivered.
    Published,
    /// No enabled channel matches its `db:` name: skipped (nothing stored).
    NoChannel,
    /// A queue on the way was full: not accepted, nothing stored; hand it again (redis
    /// engine; the memory engine's changes bring their slots).
    Busy,
    /// The store failed, so whether it kept the change is unknown: the change stream resumes
    /// from its checkpoint and asks the store what it has.
    Failed(String),
}

/// `core` gained (`on`) or lost its subscribers of `channel`. `done` is answered once whoever
/// routes the channel's messages (the control thread, or the channel's owner core) will route
/// them to that core, with the channel's position then: every message after it follows.
pub struct Interest {
    pub core: CoreId,
    pub channel: ChannelName,
    pub on: bool,
    pub done: Option<oneshot::Sender<ChannelPos>>,
}

/// A publish sequenced by its owning core (memory engine), for the control thread to store.
pub struct Stored {
    pub msg: NewMessage,
    pub at: Appended,
    /// Subscribers on the owning core it was queued to (the other cores report theirs).
    pub ws_audience: u32,
}

pub enum RestReq {
    ListChannels,
    GetChannel(Uuid),
    CreateChannel(CreateChannel),
    UpdateChannel(Uuid, UpdateChannel),
    DeleteChannel(Uuid),
    Messages(HistoryQuery),
    Stats(Option<Timestamp>),
    /// `project_admin`: add or delete a policy, or turn row level security on or off.
    Policies(super::policies::PolicyReq),
}

/// A successful REST answer: status and JSON body (empty for 204).
pub struct RestOk {
    pub status: u16,
    pub body: Vec<u8>,
}

/// Control -> core, and core -> core (memory engine).
pub enum CoreMsg {
    Deliver(Arc<Delivery>),
    /// A publish for the core that owns its channel; `reply` is the slot reserved in the
    /// publishing core's inbox for the answer (ack or error).
    Publish {
        req: Box<PublishReq>,
        /// `None` for an HTTP publish (answered through `PublishReq::http`).
        reply: Option<OwnedPermit<CoreMsg>>,
    },
    /// Memory engine: a core gained or lost its subscribers of a channel this core owns.
    Interest(Interest),
    /// Memory engine: changes from the database change stream, all of channels this core owns.
    Source(SourceBatch),
    /// A frame for one connection (a `published` ack or an error).
    Reply {
        conn: ConnId,
        frame: Bytes,
    },
    /// Memory engine: a presence join or leave for the core that owns the channel (boxed:
    /// deliveries share this enum's size in every inbox).
    Presence(Box<crate::presence::Op>),
    /// A member joined or left a channel this core has subscribers of.
    PresenceEvent(Arc<crate::presence::Event>),
    /// A new channel table and the policies in force with it; `done` is answered once the
    /// core has applied them.
    Snapshot {
        table: Arc<ChannelTable>,
        policies: Arc<crate::policy::PolicySet>,
        done: oneshot::Sender<()>,
    },
}

/// One published message, encoded once; every subscriber on every core gets `frame`.
pub struct Delivery {
    pub offset: u64,
    pub channel: ChannelName,
    pub event: Arc<str>,
    /// `payload.schema` of `db:` channel messages, for subscription filters.
    pub schema: Option<Box<str>>,
    pub frame: Bytes,
    /// The Socket.IO frame (`sio::encode::message`), built with `frame` when the node has
    /// Socket.IO connections; otherwise a core that finds one builds it.
    pub sio: Option<Bytes>,
}

impl Delivery {
    /// Encodes a sequenced message once, for every subscriber on every core; `sio`: in the
    /// Socket.IO encoding too.
    pub fn new(m: &NewMessage, a: &Appended, sio: bool) -> Self {
        let mut id = uuid::Uuid::encode_buffer();
        let ts = a.created_at.rfc3339();
        let message_id = a.id.hyphenated().encode_lower(&mut id);
        let sio = sio.then(|| {
            crate::sio::encode::message(
                &m.event,
                m.payload.get(),
                &crate::sio::encode::MessageMeta {
                    channel: m.channel_name.as_str(),
                    message_id,
                    sender_type: m.sender_type,
                    sender_id: m.sender_id.as_deref(),
                    timestamp: ts.as_str(),
                },
            )
        });
        let frame = frame::encode_json(&MessageFrame {
            kind: "message",
            message_id,
            channel: m.channel_name.as_str(),
            event: &m.event,
            payload: &m.payload,
            sender_id: m.sender_id.as_deref(),
            sender_type: m.sender_type,
            timestamp: ts.as_str(),
            offset: a.offset,
        });
        let schema = if m.channel_name.is_db() {
            schema_of(m.payload.get())
        } else {
            None
        };
        Self {
            offset: a.offset,
            channel: m.channel_name.clone(),
            event: m.event.clone(),
            schema,
            frame,
            sio,
        }
    }

    /// A message that arrived already encoded (`frame_json`, from another node or history);
    /// `sio`: in the Socket.IO encoding too.
    pub fn encoded(channel: ChannelName, offset: u64, frame_json: &[u8], sio: bool) -> Self {
        // Filters only apply to `db:` channels: only those need the event and schema.
        let (event, schema) = if channel.is_db() {
            event_and_schema(frame_json)
        } else {
            (Arc::from(""), None)
        };
        Self {
            offset,
            channel,
            event,
            schema,
            frame: frame::encode(OpCode::Data(Data::Text), frame_json),
            sio: if sio {
                crate::sio::encode::message_from_raw(frame_json)
            } else {
                None
            },
        }
    }
}

/// The `message` frame body of a stored record (as its publisher encoded it).
pub fn frame_json_of(r: &MessageRecord) -> Vec<u8> {
    let mut id = uuid::Uuid::encode_buffer();
    let ts = r.created_at.rfc3339();
    serde_json::to_vec(&MessageFrame {
        kind: "message",
        message_id: r.id.hyphenated().encode_lower(&mut id),
        channel: r.channel_name.as_str(),
        event: &r.event_name,
        payload: &r.payload,
        sender_id: r.sender_id.as_deref(),
        sender_type: r.sender_type,
        timestamp: ts.as_str(),
        offset: r.offset,
    })
    .expect("serializing to a Vec cannot fail")
}

/// `payload.schema` of a database change message, if it has one.
fn schema_of(payload: &str) -> Option<Box<str>> {
    #[derive(Deserialize)]
    struct SchemaOnly<'a> {
        #[serde(borrow)]
        schema: Option<std::borrow::Cow<'a, str>>,
    }
    serde_json::from_str::<SchemaOnly<'_>>(payload)
        .ok()
        .and_then(|s| s.schema)
        .map(|s| s.into())
}

/// `event` and `payload.schema` of an encoded `message` frame (for `db:` filters).
fn event_and_schema(frame: &[u8]) -> (Arc<str>, Option<Box<str>>) {
    #[derive(Deserialize)]
    struct Payload<'a> {
        #[serde(borrow)]
        schema: Option<std::borrow::Cow<'a, str>>,
    }
    #[derive(Deserialize)]
    struct Frame<'a> {
        #[serde(borrow)]
        event: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        payload: Option<Payload<'a>>,
    }
    match serde_json::from_slice::<Frame<'_>>(frame) {
        Ok(f) => (
            Arc::from(f.event.as_ref()),
            f.payload.and_then(|p| p.schema).map(|s| s.into()),
        ),
        Err(_) => (Arc::from(""), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_messages_stay_small() {
        // Every slot of a core inbox and of the control queue is this big: deliveries, the
        // bulk of the traffic, must not pay for rare large variants.
        assert!(
            std::mem::size_of::<CoreMsg>() <= 56,
            "{}",
            std::mem::size_of::<CoreMsg>()
        );
        assert!(
            std::mem::size_of::<ControlMsg>() <= 128,
            "{}",
            std::mem::size_of::<ControlMsg>()
        );
    }

    #[test]
    fn reads_db_fields_of_an_encoded_frame() {
        let f = br#"{"type":"message","event":"INSERT","payload":{"schema":"public","x":1},"offset":42}"#;
        let (e, s) = event_and_schema(f);
        assert_eq!(&*e, "INSERT");
        assert_eq!(s.as_deref(), Some("public"));
        assert_eq!(
            schema_of(r#"{"schema":"auth","table":"users"}"#).as_deref(),
            Some("auth")
        );
        assert_eq!(schema_of(r#"{"table":"users"}"#), None);
    }
}
