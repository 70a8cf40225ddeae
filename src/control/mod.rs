//! The control thread (`ringcast-control`): the one owner of the channel registry and the
//! sequencer of publishes. Runs a current-thread tokio runtime so the engine may await I/O.
//!
//! For each publish it re-resolves the channel against the authoritative registry, appends it
//! through the engine (which assigns the per-channel offset), encodes the `message` frame once,
//! acknowledges the publisher, and hands the same bytes to every core that has subscribers of
//! that channel. Registry changes produce a new immutable `ChannelTable` pushed to every core;
//! the REST caller is answered after all cores applied it, so a disable takes effect at once.
//! Never runs on a core; cores never wait on it for a publish (see `msg` for the queues).

pub mod msg;
mod registry;

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use serde::Deserialize;
use tokio::sync::mpsc;

pub use msg::{ConnId, ControlMsg, CoreId, CoreMsg, Delivery, PublishReq, RestOk, RestReq};
use registry::Registry;

use crate::{
    channel::ChannelName,
    core::NodeShared,
    engine::{Engine, NewMessage},
    protocol::{ErrorCode, MessageFrame, ServerMsg},
    ws::frame,
};

/// How long a registry change waits for the cores to apply the new table.
const SNAPSHOT_ACK_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Control<E: Engine> {
    engine: E,
    registry: Registry,
    cores: Vec<mpsc::Sender<CoreMsg>>,
    /// Which cores have subscribers of a channel (bit i = core i).
    interest: HashMap<ChannelName, u64>,
    shared: Arc<NodeShared>,
}

impl<E: Engine> Control<E> {
    pub async fn new(
        mut engine: E,
        cores: Vec<mpsc::Sender<CoreMsg>>,
        shared: Arc<NodeShared>,
    ) -> Result<Self, crate::engine::EngineError> {
        let records = engine.load_channels().await?;
        Ok(Self {
            engine,
            registry: Registry::new(records),
            cores,
            interest: HashMap::new(),
            shared,
        })
    }

    /// The table the cores start with.
    pub fn table(&self) -> Arc<crate::channel::ChannelTable> {
        self.registry.table()
    }

    /// Serves until every core has hung up.
    pub async fn run(mut self, mut rx: mpsc::Receiver<ControlMsg>) {
        while let Some(m) = rx.recv().await {
            self.handle(m).await;
        }
        tracing::debug!("control thread: all cores gone");
    }

    async fn handle(&mut self, m: ControlMsg) {
        match m {
            ControlMsg::Publish(p) => self.publish(*p).await,
            ControlMsg::Interest {
                core,
                channel,
                on,
                done,
            } => {
                let bits = self.interest.entry(channel.clone()).or_insert(0);
                let before = *bits;
                if on {
                    *bits |= 1 << core;
                } else {
                    *bits &= !(1 << core);
                }
                let after = *bits;
                if after == 0 {
                    self.interest.remove(&channel);
                }
                if (before == 0) != (after == 0)
                    && let Err(e) = self.engine.node_interest(&channel, after != 0).await
                {
                    tracing::warn!(%channel, error = %e, "engine refused a channel interest change");
                }
                if let Some(d) = done {
                    let _ = d.send(());
                }
            }
            ControlMsg::Audience(updates) => self.engine.add_audience(&updates).await,
            ControlMsg::Rest { req, reply } => {
                let r = registry::handle_rest(self, req).await;
                let _ = reply.send(r);
            }
            ControlMsg::Health(reply) => {
                let _ = reply.send(self.engine.reachable().await);
            }
        }
    }

    async fn publish(&mut self, p: PublishReq) {
        let reply = |code: ErrorCode, message: &str| {
            frame::encode_json(&ServerMsg::Error {
                message,
                code: code.as_str(),
                channel: Some(p.channel.as_str()),
                r#ref: p.r#ref.as_deref(),
            })
        };
        let Some(rec) = self.registry.resolve(&p.channel) else {
            let f = reply(
                ErrorCode::ChannelNotFound,
                "Channel not found or not accessible",
            );
            self.send_reply(p.core, p.conn, f).await;
            return;
        };
        let payload: Arc<serde_json::value::RawValue> = Arc::from(p.payload);
        let schema = if p.channel.is_db() {
            schema_of(payload.get())
        } else {
            None
        };
        let appended = self
            .engine
            .append(NewMessage {
                channel_id: rec.id,
                channel_name: p.channel.clone(),
                event: p.event.clone(),
                payload: payload.clone(),
                sender_id: p.sender_id.clone(),
                sender_type: p.sender_type,
                wh_audience: 0,
            })
            .await;
        let a = match appended {
            Ok(a) => a,
            Err(e) => {
                self.shared.metrics.control.publish_failures_total.inc();
                tracing::warn!(channel = %p.channel, error = %e, "append failed; publish refused");
                let f = reply(
                    ErrorCode::Internal,
                    "message could not be stored; not published",
                );
                self.send_reply(p.core, p.conn, f).await;
                return;
            }
        };
        let m = &self.shared.metrics.control;
        m.published_total.inc();
        m.history_retained.set(self.engine.retained());
        let id = a.id.to_string();
        let ack = frame::encode_json(&ServerMsg::Published {
            message_id: &id,
            channel: p.channel.as_str(),
            event: &p.event,
            offset: a.offset,
            r#ref: p.r#ref.as_deref(),
        });
        self.send_reply(p.core, p.conn, ack).await;
        let Some(&bits) = self.interest.get(&p.channel) else {
            return;
        };
        let ts = a.created_at.to_rfc3339();
        let frame = frame::encode_json(&MessageFrame {
            kind: "message",
            message_id: &id,
            channel: p.channel.as_str(),
            event: &p.event,
            payload: &payload,
            sender_id: p.sender_id.as_deref(),
            sender_type: p.sender_type,
            timestamp: &ts,
            offset: a.offset,
        });
        let d = Arc::new(Delivery {
            key: a.key,
            channel: p.channel,
            event: p.event,
            schema,
            frame,
        });
        for (i, core) in self.cores.iter().enumerate() {
            if bits & (1 << i) != 0 {
                let _ = core.send(CoreMsg::Deliver(d.clone())).await;
            }
        }
    }

    async fn send_reply(&self, core: CoreId, conn: ConnId, frame: Bytes) {
        if let Some(c) = self.cores.get(core) {
            let _ = c.send(CoreMsg::Reply { conn, frame }).await;
        }
    }

    /// Pushes the current table to every core and waits until each applied it.
    async fn push_table(&self) {
        let table = self.registry.table();
        let mut acks = Vec::with_capacity(self.cores.len());
        for c in &self.cores {
            let (tx, rx) = tokio::sync::oneshot::channel();
            if c.send(CoreMsg::Snapshot {
                table: table.clone(),
                done: tx,
            })
            .await
            .is_ok()
            {
                acks.push(rx);
            }
        }
        for a in acks {
            let _ = tokio::time::timeout(SNAPSHOT_ACK_TIMEOUT, a).await;
        }
    }
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
