//! The control thread (`ringcast-control`, `ringcast-backplane` with Redis): the one owner of
//! the channel registry and of the engine. Runs a current-thread tokio runtime so the engine
//! may await I/O.
//!
//! Memory engine: publishes are sequenced and delivered by the core that owns their channel
//! (`core::sequencer`); this thread only stores them (`ControlMsg::Stored`), hands their
//! webhook deliveries to the pool and keeps the counts. Redis engine: it re-resolves each
//! publish against the authoritative registry, appends it through the engine (many in flight),
//! acknowledges the publisher, and hands every message that comes back from Redis, encoded
//! once, to each core with subscribers of its channel, filling gaps from history.
//! Registry changes produce a new immutable `ChannelTable` pushed to every core; the REST
//! caller is answered after all cores applied it, so a disable takes effect at once.
//! Never runs on a core; cores never wait on it for a publish (see `msg` for the queues).

mod interest;
pub mod msg;
pub mod policies;
mod presence;
mod recover;
mod registry;

use std::{collections::HashMap, sync::Arc, time::Duration};

use bytes::Bytes;
use tokio::sync::mpsc;

pub use msg::{
    ConnId, ControlMsg, CoreId, CoreMsg, Delivery, PubAnswer, PublishReq, RestOk, RestReq,
    SourceBatch, SourceMsg, SourceResult, SourceSlots, Stored,
};
use registry::Registry;

use crate::{
    channel::ChannelName,
    core::NodeShared,
    engine::{Appended, Engine, EngineError, EngineEvent, NewMessage},
    protocol::ErrorCode,
    timestamp::Timestamp,
    webhook::WebhookTx,
};

/// How long a registry change waits for the cores to apply the new table.
const SNAPSHOT_ACK_TIMEOUT: Duration = Duration::from_secs(5);
/// History and stats reads answered at once (each a task of its own); more get 503.
const READS: usize = 64;

pub struct Control<E: Engine> {
    engine: E,
    registry: Registry,
    cores: Vec<mpsc::Sender<CoreMsg>>,
    /// Which cores have subscribers of a channel (bit i = core i).
    interest: HashMap<ChannelName, u64>,
    /// Multi-node engines: the last offset delivered to the cores, per channel with interest.
    /// A message past `last + 1` reveals a gap (filled from history first); one at or below
    /// `last` is a duplicate (dropped).
    last: HashMap<ChannelName, u64>,
    /// Multi-node engines: the epoch of each channel with interest (read when set up).
    epochs: HashMap<ChannelName, Arc<str>>,
    shared: Arc<NodeShared>,
    /// The webhook pool's hand-off queue (memory engine). The redis engine stores deliveries
    /// with the message instead, and the pool reads them from Redis: then this is `None`.
    webhooks: Option<WebhookTx>,
    /// Redis engine: publishes handed to the engine and not yet answered, at most
    /// `server.engine_queue`. Past that a publish is refused as busy: the control loop takes
    /// publishes off its queue at once, so without this bound a slow Redis would let them
    /// pile up in memory without limit.
    appends: Arc<tokio::sync::Semaphore>,
    /// History and stats reads in progress (`registry::spawn_read`), at most `READS`.
    reads: Arc<tokio::sync::Semaphore>,
    /// Recovering subscribers' reads, shared between those asking for the same range.
    recovery: recover::RecoveryReads,
    /// The policies in force, pushed to the cores with every table.
    policies: Arc<crate::policy::PolicySet>,
    /// The engine's saved document of `policies`, if they came from (or went to) the engine.
    policies_doc: Option<String>,
    /// A housekeeping pass (`Engine::maintain`) is running.
    maintaining: std::rc::Rc<std::cell::Cell<bool>>,
    /// Channels whose engine subscription is being set up (`interest`).
    subscribing: interest::SubscribingMap,
    /// Counts subscription set-ups (tells a stale one from the current one).
    generation: u64,
    /// Redis engine: which cores hold each member of this node's channels (`presence`).
    presence: std::rc::Rc<std::cell::RefCell<crate::presence::Book>>,
    /// Redis engine: where the members live.
    presence_store: presence::Store,
    settled_tx: interest::SettledTx,
    settled_rx: Option<mpsc::Receiver<interest::Settled>>,
}

impl<E: Engine> Control<E> {
    pub async fn new(
        mut engine: E,
        cores: Vec<mpsc::Sender<CoreMsg>>,
        shared: Arc<NodeShared>,
        webhooks: Option<WebhookTx>,
    ) -> Result<Self, crate::engine::EngineError> {
        let records = engine.load_channels().await?;
        let (policies, policies_doc) =
            policies::initial(&mut engine, &shared.config.policies.0).await;
        let (settled_tx, settled_rx) = mpsc::channel(interest::SETTLED_QUEUE);
        Ok(Self {
            engine,
            registry: Registry::new(records),
            cores,
            interest: HashMap::new(),
            last: HashMap::new(),
            epochs: HashMap::new(),
            recovery: recover::RecoveryReads::new(),
            policies,
            policies_doc,
            appends: Arc::new(tokio::sync::Semaphore::new(shared.config.engine_queue)),
            reads: Arc::new(tokio::sync::Semaphore::new(READS)),
            maintaining: Default::default(),
            subscribing: HashMap::new(),
            generation: 0,
            presence: Default::default(),
            presence_store: None,
            settled_tx,
            settled_rx: Some(settled_rx),
            shared,
            webhooks,
        })
    }

    /// The table the cores start with.
    pub fn table(&self) -> Arc<crate::channel::ChannelTable> {
        self.registry.table()
    }

    /// The policies the cores start with.
    pub fn policies(&self) -> Arc<crate::policy::PolicySet> {
        self.policies.clone()
    }

    /// Serves until every core has hung up. Must run inside a `LocalSet` (pipelined
    /// publishes are local tasks).
    pub async fn run(mut self, mut rx: mpsc::Receiver<ControlMsg>) {
        let mut events = self.engine.take_events();
        let mut settled = self.settled_rx.take().expect("run is called once");
        let period = self.engine.maintenance_period();
        let cfg = &self.shared.config;
        self.presence_store = self
            .engine
            .presence_store(&self.shared.node_id, cfg.presence_ttl);
        if let Some(s) = &self.presence_store
            && let Err(e) = s.load().await
        {
            tracing::warn!(error = %e, "presence scripts not loaded; loaded on first use");
        }
        let mut heartbeat = tokio::time::interval(cfg.presence_heartbeat);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(period.unwrap_or(Duration::from_secs(3600)));
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = housekeeping.tick(), if period.is_some() => self.maintain(),
                _ = heartbeat.tick(), if self.presence_store.is_some() => presence::beat(&self),
                m = rx.recv() => match m {
                    Some(m) => self.handle(m).await,
                    None => break,
                },
                Some(st) = settled.recv() => interest::settled(&mut self, st).await,
                Some(ev) = next_event(&mut events) => {
                    if let Some(rx) = &events {
                        self.shared.metrics.control.backplane_events_pending.set(rx.len() as u64);
                    }
                    self.on_event(ev).await
                }
            }
        }
        tracing::debug!("control thread: all cores gone");
    }

    /// Starts a housekeeping pass as a task of its own, unless the last one still runs.
    fn maintain(&mut self) {
        if self.maintaining.get() {
            return;
        }
        if let Some(pass) = self.engine.maintain() {
            /// Clears the flag however the pass ends (a panicking task is dropped).
            struct Running(std::rc::Rc<std::cell::Cell<bool>>);
            impl Drop for Running {
                fn drop(&mut self) {
                    self.0.set(false);
                }
            }
            self.maintaining.set(true);
            let running = Running(self.maintaining.clone());
            tokio::task::spawn_local(async move {
                let _running = running;
                pass.await;
            });
        }
    }

    async fn on_event(&mut self, ev: EngineEvent) {
        match ev {
            EngineEvent::RegistryChanged => registry::reload(self).await,
            EngineEvent::Reconnected => {
                self.shared.metrics.control.backplane_reconnects_total.inc();
                self.resync().await;
            }
            EngineEvent::Resync { lost } => {
                let m = &self.shared.metrics.control;
                m.backplane_resyncs_total.inc();
                m.backplane_dropped_total.add(lost);
                self.resync().await;
            }
            EngineEvent::Presence { channel, announced } => {
                presence::announced(self, channel, announced)
            }
            EngineEvent::Message {
                channel,
                offset,
                frame_json,
            } => {
                if !self.interest.contains_key(&channel) {
                    return;
                }
                if !interest::hold(self, &channel, offset, &frame_json) {
                    self.accept(channel, offset, frame_json).await;
                }
            }
        }
    }

    /// Delivers a message that came from the engine, in order: one at or below the channel's
    /// last delivered offset is a duplicate, one past the next reveals a gap (filled first).
    async fn accept(&mut self, channel: ChannelName, offset: u64, frame_json: Bytes) {
        match self.last.get(&channel).copied() {
            Some(last) if offset <= last => return, // already delivered
            Some(last) if offset > last + 1 => {
                self.fill_gap(&channel, last, Some(offset - 1)).await;
            }
            _ => {}
        }
        if let Some(ts) = frame_timestamp(&frame_json) {
            let lag = (Timestamp::now().millis() - ts.millis()).max(0) as u64;
            self.shared.metrics.control.backplane_lag_ms.set(lag);
        }
        self.deliver_remote(channel, offset, &frame_json).await;
    }

    /// After pub/sub messages were missed: a registry change announced meanwhile was missed
    /// too, so reload it, then read every served channel's stream past what was delivered.
    async fn resync(&mut self) {
        // Channels still being set up have no position yet: they read back once set up.
        for s in self.subscribing.values_mut() {
            s.read_back = true;
        }
        registry::reload(self).await;
        let channels: Vec<(ChannelName, u64)> =
            self.last.iter().map(|(c, o)| (c.clone(), *o)).collect();
        for (ch, after) in channels {
            self.fill_gap(&ch, after, None).await;
        }
    }

    /// Delivers a channel's messages in `(after, upto]` from history, in order.
    async fn fill_gap(&mut self, ch: &ChannelName, after: u64, upto: Option<u64>) {
        match self.engine.read_range(ch, after, upto).await {
            Ok(records) => {
                if !records.is_empty() {
                    tracing::info!(channel = %ch, after, count = records.len(), "filled a gap from history");
                    self.shared
                        .metrics
                        .control
                        .backplane_gap_fill_messages_total
                        .add(records.len() as u64);
                }
                for r in records {
                    if self.last.get(ch).is_some_and(|l| r.offset <= *l) {
                        continue;
                    }
                    let json = msg::frame_json_of(&r);
                    self.deliver_remote(ch.clone(), r.offset, &json).await;
                }
            }
            Err(e) => tracing::warn!(channel = %ch, after, error = %e, "gap fill failed"),
        }
    }

    /// Hands one encoded message to the cores with subscribers and records its offset.
    async fn deliver_remote(&mut self, channel: ChannelName, offset: u64, frame_json: &[u8]) {
        let Some(&bits) = self.interest.get(&channel) else {
            return;
        };
        // Inserted if missing: a channel whose head could not be read is tracked from here.
        self.last.insert(channel.clone(), offset);
        let sio = self.shared.metrics.has_socketio();
        let d = Arc::new(Delivery::encoded(channel, offset, frame_json, sio));
        self.fan_out(bits, d).await;
    }

    async fn fan_out(&self, bits: u64, d: Arc<Delivery>) {
        for (i, core) in self.cores.iter().enumerate() {
            if bits & (1 << i) != 0 {
                let _ = core.send(CoreMsg::Deliver(d.clone())).await;
            }
        }
    }

    async fn handle(&mut self, m: ControlMsg) {
        match m {
            ControlMsg::Publish(p) => self.publish(*p).await,
            ControlMsg::Stored(s) => self.store(*s).await,
            ControlMsg::Interest(i) => interest::change(self, i),
            ControlMsg::Presence(op) => presence::apply(self, *op),
            ControlMsg::Audience(updates) => self.engine.add_audience(&updates).await,
            ControlMsg::Rest { req, reply } => match req {
                RestReq::Messages(_) | RestReq::Stats(_) => registry::spawn_read(self, req, reply),
                req => {
                    let r = registry::handle_rest(self, req).await;
                    let _ = reply.send(r);
                }
            },
            ControlMsg::Health(reply) => {
                // Beside the loop too (a Redis that does not answer takes its 1 s timeout).
                // Bounded by the HTTP connections waiting for `/health`.
                let check = self.engine.reachable();
                tokio::task::spawn_local(async move {
                    let _ = reply.send(check.await);
                });
            }
            ControlMsg::WebhookDelivered(channel, key) => {
                self.engine.add_webhook_delivered(&channel, key).await;
            }
            ControlMsg::Source(b) => self.publish_source(b),
            ControlMsg::Recover(r) => {
                self.recovery
                    .ask(&mut self.engine, r, &self.shared.metrics.control)
            }
        }
    }

    /// Redis engine: appends changes from the database change stream (many in flight, in
    /// order per channel) and answers with one result per change once all are settled. A
    /// batch that does not fit the appends in flight is refused whole (`Busy`): the source
    /// waits and hands it again, so nothing is reordered.
    fn publish_source(&mut self, b: SourceBatch) {
        let SourceBatch { msgs, reply, .. } = b;
        let Ok(slots) = self
            .appends
            .clone()
            .try_acquire_many_owned(msgs.len().clamp(1, self.shared.config.engine_queue) as u32)
        else {
            let _ = reply.send(vec![SourceResult::Busy; msgs.len()]);
            return;
        };
        let appends: Vec<_> = msgs
            .iter()
            .map(|m| {
                self.registry.resolve(&m.channel).map(|rec| {
                    let req = msg::PublishReq::from_source(0, m.clone());
                    self.engine.append(req.message(&rec))
                })
            })
            .collect();
        let shared = self.shared.clone();
        tokio::task::spawn_local(async move {
            let _slots = slots;
            let m = &shared.metrics.control;
            let mut results = Vec::with_capacity(appends.len());
            for a in appends {
                results.push(match a {
                    None => SourceResult::NoChannel,
                    Some(f) => match f.await {
                        Ok(_) => {
                            m.published_total.inc();
                            SourceResult::Published
                        }
                        Err(e) => {
                            m.publish_failures_total.inc();
                            SourceResult::Failed(e.to_string())
                        }
                    },
                });
            }
            let _ = reply.send(results);
        });
    }

    /// Redis engine: appends a publish (many in flight); the message comes back through the
    /// engine's event stream, so only the answer is sent from here.
    async fn publish(&mut self, p: PublishReq) {
        let Some(rec) = self.registry.resolve(&p.channel) else {
            let r = Err(Refusal::new(
                ErrorCode::ChannelNotFound,
                "Channel not found or not accessible",
            ));
            let core = self.cores.get(p.core).cloned();
            return reply(p, r, core).await;
        };
        let Ok(slot) = self.appends.clone().try_acquire_owned() else {
            self.shared
                .metrics
                .control
                .publishes_refused_backlog_total
                .inc();
            let r = Err(Refusal::new(
                ErrorCode::RateLimited,
                "broker busy: publish not accepted, retry",
            ));
            let core = self.cores.get(p.core).cloned();
            return reply(p, r, core).await;
        };
        let append = self.engine.append(p.message(&rec));
        let tx = self.cores.get(p.core).cloned();
        let shared = self.shared.clone();
        tokio::task::spawn_local(async move {
            let _slot = slot;
            let r = outcome(&p, append.await, &shared);
            reply(p, r, tx).await;
        });
    }

    /// Memory engine: keeps a message its owning core sequenced and delivered.
    async fn store(&mut self, s: Stored) {
        let Stored {
            msg,
            at,
            ws_audience,
        } = s;
        if msg.webhook_urls.is_some() {
            self.hand_off_webhooks(&msg, &at);
        }
        let m = &self.shared.metrics.control;
        match self.engine.store(msg, at, ws_audience).await {
            Ok(()) => m.published_total.inc(),
            Err(e) => {
                m.publish_failures_total.inc();
                tracing::warn!(error = %e, "a sequenced message could not be stored");
            }
        }
        m.history_retained.set(self.engine.retained());
    }

    /// Gives the message's webhook deliveries to the pool (never waits: see `WebhookTx`).
    fn hand_off_webhooks(&self, m: &NewMessage, a: &Appended) {
        let Some(tx) = &self.webhooks else { return };
        for job in crate::webhook::envelope::jobs(m, a.offset, a.id, a.created_at) {
            tx.submit(job);
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
                policies: self.policies.clone(),
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

/// Why a publish was not acknowledged, as its publisher is told.
struct Refusal {
    code: ErrorCode,
    message: std::borrow::Cow<'static, str>,
    /// `OUTCOME_UNKNOWN`: the message whose fate is unknown.
    message_id: Option<uuid::Uuid>,
}

impl Refusal {
    fn new(code: ErrorCode, message: &'static str) -> Self {
        Self {
            code,
            message: message.into(),
            message_id: None,
        }
    }
}

/// What became of an engine-sequenced publish: stored (its ack), or an error that says what
/// is known: refused (not published), or unknown (the store did not answer; it may be).
fn outcome(
    p: &PublishReq,
    r: Result<Appended, EngineError>,
    shared: &NodeShared,
) -> Result<Appended, Refusal> {
    let m = &shared.metrics.control;
    match r {
        Ok(a) => {
            m.published_total.inc();
            Ok(a)
        }
        Err(EngineError::RepeatUnreadable(e)) => {
            tracing::warn!(channel = %p.channel, error = %e, "a repeated idempotency key's first ack is unreadable");
            Err(Refusal::new(
                ErrorCode::Internal,
                "repeated idempotencyKey: the message was published before, but its first ack could not be read",
            ))
        }
        Err(EngineError::OutcomeUnknown { id, detail }) => {
            m.publish_outcomes_unknown_total.inc();
            tracing::warn!(channel = %p.channel, message_id = %id, error = %detail, "publish outcome unknown");
            Err(Refusal {
                code: ErrorCode::OutcomeUnknown,
                message: format!(
                    "Redis did not answer in time: message {id} may or may not have been published; \
                     publish it again with the same idempotencyKey, or look for it in history"
                )
                .into(),
                message_id: Some(id),
            })
        }
        Err(e) => {
            m.publish_failures_total.inc();
            tracing::warn!(channel = %p.channel, error = %e, "append failed; publish refused");
            Err(Refusal::new(
                ErrorCode::Internal,
                "message could not be stored; not published",
            ))
        }
    }
}

/// Answers an engine-sequenced publish: an HTTP publisher through its channel, a WebSocket
/// one with a frame through its core (`core`).
async fn reply(
    mut p: PublishReq,
    r: Result<Appended, Refusal>,
    core: Option<mpsc::Sender<CoreMsg>>,
) {
    let answered = p.answer_http(|| match &r {
        Ok(a) => PubAnswer::Published(*a),
        Err(e) => PubAnswer::Refused {
            code: e.code,
            message: e.message.to_string(),
        },
    });
    if answered {
        return;
    }
    let frame = match r {
        Ok(a) => match p.ack(&a) {
            Some(f) => f,
            None => return,
        },
        Err(e) => {
            let mut id = uuid::Uuid::encode_buffer();
            let id = e.message_id.map(|u| &*u.hyphenated().encode_lower(&mut id));
            p.error_about(e.code, &e.message, id)
        }
    };
    if let Some(c) = core {
        let _ = c
            .send(CoreMsg::Reply {
                conn: p.conn,
                frame,
            })
            .await;
    }
}

async fn next_event(events: &mut Option<mpsc::Receiver<EngineEvent>>) -> Option<EngineEvent> {
    match events {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// The `timestamp` of an encoded `message` frame.
fn frame_timestamp(frame: &[u8]) -> Option<Timestamp> {
    const KEY: &[u8] = b"\"timestamp\":\"";
    let i = frame.windows(KEY.len()).rposition(|w| w == KEY)? + KEY.len();
    let len = frame[i..].iter().position(|&b| b == b'"')?;
    Timestamp::parse(std::str::from_utf8(&frame[i..i + len]).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_timestamps() {
        let t = br#"{"type":"message","timestamp":"2026-01-01T00:00:00.123Z","offset":1}"#;
        assert_eq!(
            frame_timestamp(t).map(|t| t.to_rfc3339()).as_deref(),
            Some("2026-01-01T00:00:00.123Z")
        );
    }
}
