//! The `redis` engine: several ringcast nodes on one Redis behave as one broker.
//!
//! Runs on the backplane thread (`ringcast-backplane`, a current-thread tokio runtime) with
//! fred; cores never see it. Layout in Redis (see `keys`):
//! - per channel `{name}`: `seq` (offset counter), `log` (stream, one entry per publish
//!   batch: `entry`), `head` (first retained offset: retention by count is exact), `aud`
//!   (hash offset -> subscribers it reached, summed over nodes; written by `audience`),
//!   `whd` (hash offset -> webhook URLs that answered 2xx) and the sharded pub/sub channel
//!   `live` (SPUBLISH/SSUBSCRIBE; Redis >= 7). A message's `aud` and `whd` fields are
//!   deleted when the head passes it;
//! - `rc:{wh}:pending`: webhook deliveries not yet finished (see `webhook::store`);
//! - `rc:messages`: every message, in arrival order, one entry per batch, trimmed to
//!   `history.max_total_messages` with the entry sizes (`{rc:messages}:sizes`) and their
//!   total (`{rc:messages}:total`) beside it (the history listing and stats);
//! - the registry under `{reg}`: records by id, ids by pattern (uniqueness across nodes), a
//!   version bumped and announced on `rc:{reg}:events` at every change.
//!
//! Publishes are batched per channel (`batch`): one script call (`scripts::PUBLISH`) assigns
//! the offsets, appends to the stream and fans out a whole batch, so every node delivers a
//! channel's messages in history order. Every node, the publishing one included, delivers from
//! the pub/sub stream. Batches of different channels are in flight together.

mod audience;
mod batch;
mod entry;
pub(crate) mod keys;
mod live;
pub mod presence;
mod reads;
mod retention;
mod scripts;

use std::{collections::HashMap, sync::Arc, time::Duration};

use fred::{
    prelude::*,
    types::{Message, scripts::Script},
};
use tokio::sync::mpsc;

use super::{
    AppendFuture, ChannelPos, Engine, EngineError, EngineEvent, HistoryQuery, LocalFuture,
    MessageRecord, NewMessage, Range, Stats,
};
use crate::{
    channel::{ChannelName, ChannelRecord},
    metrics::{EngineMetrics, WebhookMetrics},
    timestamp::Timestamp,
};

/// Bound of the queue from the pub/sub reader to the control thread. Full: the reader waits
/// (fred's broadcast buffer, `redis.pubsub_buffer` messages, absorbs the wait; fred's default
/// of 32 drops pub/sub messages under bursts, PLATFORM.md).
const EVENT_QUEUE: usize = 65_536;
/// After the reader lost messages: at most one resync per this long (a node far behind loses
/// messages again and again; each resync reads every channel it serves).
const RESYNC_EVERY: Duration = Duration::from_millis(200);
/// Longest wait for one Redis command.
pub(crate) const COMMAND_TIMEOUT: Duration = Duration::from_secs(3);
/// Messages per page when reading a stream (`reads::walk`).
const SCAN_PAGE: u64 = 512;

#[derive(Debug, Clone, Copy)]
pub struct RedisRetention {
    pub per_channel: usize,
    pub max_total: usize,
    /// `None`: keep forever.
    pub max_age: Option<Duration>,
}

pub struct RedisEngine {
    client: Client,
    subscriber: fred::clients::SubscriberClient,
    batcher: std::rc::Rc<batch::Batcher>,
    audience: std::rc::Rc<audience::AudienceWriter>,
    reads: reads::Reads,
    create: Script,
    update: Script,
    delete: Script,
    retention: RedisRetention,
    events: Option<mpsc::Receiver<EngineEvent>>,
}

fn unavailable(e: fred::error::Error) -> EngineError {
    EngineError::Unavailable(e.to_string())
}

impl RedisEngine {
    /// Connects (failing fast with a clear error if Redis does not answer) and starts the
    /// pub/sub reader. Must run inside the backplane's tokio runtime (with a `LocalSet`).
    pub async fn connect(
        url: &str,
        retention: RedisRetention,
        idempotency_window: Duration,
        pubsub_buffer: usize,
        engine_metrics: Arc<EngineMetrics>,
        webhook_metrics: Arc<WebhookMetrics>,
    ) -> Result<Self, EngineError> {
        let builder = client_builder(url, COMMAND_TIMEOUT, |p| {
            p.broadcast_channel_capacity = pubsub_buffer.max(1);
        })
        .map_err(|e| EngineError::Other(e.to_string()))?;
        let client = builder.build().map_err(unavailable)?;
        let subscriber = builder.build_subscriber_client().map_err(unavailable)?;
        let connect = async {
            client.init().await?;
            subscriber.init().await?;
            Ok::<_, fred::error::Error>(())
        };
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(unavailable(e)),
            Err(_) => {
                return Err(EngineError::Unavailable(format!(
                    "no answer from {url} within 10 s"
                )));
            }
        }
        subscriber
            .subscribe(keys::REGISTRY_EVENTS)
            .await
            .map_err(unavailable)?;
        let (tx, rx) = mpsc::channel(EVENT_QUEUE);
        // After the pub/sub link comes back: subscribe everything again, then tell the control
        // thread, which reads the gap only once the subscriptions are in place. (Not fred's
        // `manage_subscriptions`: its `resubscribe_all` sends PSUBSCRIBE with no patterns,
        // which fails before the shard channels are re-subscribed.)
        let mut reconnects = subscriber.reconnect_rx();
        let (sub2, tx2) = (subscriber.clone(), tx.clone());
        tokio::spawn(async move {
            while reconnects.recv().await.is_ok() {
                if let Err(e) = resubscribe(&sub2).await {
                    tracing::warn!(error = %e, "re-subscribing after a reconnection failed");
                }
                tracing::info!("redis pub/sub link restored; filling gaps from the streams");
                if tx2.send(EngineEvent::Reconnected).await.is_err() {
                    return;
                }
            }
        });
        tokio::spawn(read_pubsub(subscriber.message_rx(), tx));
        Ok(Self {
            client: client.clone(),
            subscriber,
            batcher: std::rc::Rc::new(batch::Batcher::new(
                client.clone(),
                retention.per_channel,
                retention.max_total,
                idempotency_window,
                webhook_metrics,
                engine_metrics.clone(),
            )),
            audience: audience::AudienceWriter::start(client.clone(), engine_metrics),
            reads: reads::Reads::new(client.clone()),
            create: Script::from_lua(scripts::CREATE),
            update: Script::from_lua(scripts::UPDATE),
            delete: Script::from_lua(scripts::DELETE),
            retention,
            events: Some(rx),
        })
    }
}

/// One more webhook URL answered 2xx for message `offset` of `channel` (`whDeliveredCount`;
/// not written if the message was trimmed meanwhile).
pub(crate) async fn count_webhook_delivered(
    client: &Client,
    channel: &str,
    offset: u64,
) -> Result<i64, fred::error::Error> {
    client
        .eval(
            scripts::COUNT,
            vec![keys::wh_delivered(channel), keys::head(channel)],
            vec![offset as i64, 1],
        )
        .await
}

/// The channel's messages with offsets in `(after, upto]` (`upto` `None`: to the end), in
/// order.
async fn read_range(
    client: &Client,
    channel: &ChannelName,
    after: u64,
    upto: Option<u64>,
) -> Result<Vec<MessageRecord>, EngineError> {
    let mut out = Vec::new();
    // The entry holding offset `after + 1` is the first whose id (its last offset) is at
    // least that (`entry`).
    reads::walk(
        client,
        &keys::log(channel.as_str()),
        reads::Order::OldestFirst,
        format!("{}-0", after + 1),
        "+".into(),
        |m| {
            if upto.is_some_and(|u| m.offset > u) {
                return false;
            }
            if m.offset > after {
                out.push(m);
            }
            true
        },
    )
    .await?;
    Ok(out)
}

/// A fred builder for `url` with ringcast's connection policy: reconnect forever with
/// exponential backoff (100 ms to 5 s), 5 s connect timeout, and `command_timeout` per command
/// so that while Redis is away a command fails (an error frame, never a false ack) instead of
/// waiting in fred's queue for the reconnection. `perf` adjusts the rest.
pub(crate) fn client_builder(
    url: &str,
    command_timeout: Duration,
    perf: impl FnOnce(&mut fred::types::config::PerformanceConfig),
) -> Result<Builder, fred::error::Error> {
    let mut builder = Builder::from_config(Config::from_url(url)?);
    builder
        // Attempts 100 ms apart, doubling, at most 1 s: a node acks again within about 1 s of
        // Redis coming back (a 5 s cap let a 4 s outage cost up to 2.5 s more), at the price of
        // one connection attempt per second while Redis is away.
        .set_policy(ReconnectPolicy::new_exponential(0, 100, 1_000, 2))
        .with_performance_config(|p| {
            p.default_command_timeout = command_timeout;
            perf(p);
        })
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
        });
    Ok(builder)
}

/// Subscribes the registry channel and every tracked shard channel again (one per call: a
/// multi-channel SSUBSCRIBE fails across cluster slots).
async fn resubscribe(s: &fred::clients::SubscriberClient) -> Result<(), fred::error::Error> {
    s.subscribe(keys::REGISTRY_EVENTS).await?;
    for ch in s.tracked_shard_channels() {
        s.ssubscribe(ch).await?;
    }
    Ok(())
}

/// Forwards pub/sub messages to the control loop, in order. When fred's buffer overflowed
/// (this node fell behind), reports the loss as one `Resync` per `RESYNC_EVERY` at most, and
/// always one after the last loss of a burst, so nothing lost waits for its channel's next
/// message to be noticed.
async fn read_pubsub(
    mut messages: tokio::sync::broadcast::Receiver<Message>,
    tx: mpsc::Sender<EngineEvent>,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut lost: u64 = 0;
    let mut last_resync: Option<tokio::time::Instant> = None;
    loop {
        let due = last_resync.map_or_else(tokio::time::Instant::now, |t| t + RESYNC_EVERY);
        let next = if lost > 0 {
            // `None`: the resync is due and nothing else came.
            tokio::time::timeout_at(due, messages.recv()).await.ok()
        } else {
            Some(messages.recv().await)
        };
        match next {
            Some(Ok(m)) => {
                for ev in events_of(m) {
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                }
            }
            Some(Err(RecvError::Lagged(n))) => lost += n,
            Some(Err(RecvError::Closed)) => return,
            None => {}
        }
        if lost > 0 && tokio::time::Instant::now() >= due {
            tracing::error!(
                lost,
                "redis pub/sub reader fell behind and dropped messages; resyncing from the streams"
            );
            if tx.send(EngineEvent::Resync { lost }).await.is_err() {
                return;
            }
            lost = 0;
            last_resync = Some(tokio::time::Instant::now());
        }
    }
}

/// Turns a pub/sub message into engine events: a registry change, or the messages of one
/// publish batch in offset order (see `live`). An unreadable batch is logged and dropped: the
/// next batch of that channel reveals the gap, which is then filled from its stream.
fn events_of(m: Message) -> Vec<EngineEvent> {
    if &*m.channel == keys::REGISTRY_EVENTS {
        return vec![EngineEvent::RegistryChanged];
    }
    let Some(name) = keys::name_of_live(&m.channel).and_then(|n| ChannelName::parse(n).ok()) else {
        return Vec::new();
    };
    let payload: &[u8] = match &m.value {
        Value::Bytes(b) => b,
        Value::String(s) => s.as_bytes(),
        _ => return Vec::new(),
    };
    if payload.first() == Some(&b'P') {
        return match presence::announced(payload) {
            Some(announced) => vec![EngineEvent::Presence {
                channel: name,
                announced,
            }],
            None => {
                tracing::warn!(channel = %name, "unreadable presence announcement; dropped");
                Vec::new()
            }
        };
    }
    let decoded = live::decode(payload);
    match decoded {
        Ok(frames) => frames
            .into_iter()
            .map(|(offset, frame_json)| EngineEvent::Message {
                channel: name.clone(),
                offset,
                frame_json,
            })
            .collect(),
        Err(e) => {
            tracing::warn!(channel = %name, error = %e, "unreadable pub/sub batch; dropped");
            Vec::new()
        }
    }
}

/// Appends the JSON of `v` to `out`.
fn write_json<T: serde::Serialize>(out: &mut Vec<u8>, v: &T) {
    serde_json::to_writer(out, v).expect("serializing into memory cannot fail");
}

/// JSON whose last field is `offset`, serialized as 0, cut just after `"offset":`.
fn offset_prefix(json: &[u8]) -> &[u8] {
    debug_assert!(json.ends_with(b"\"offset\":0}"));
    &json[..json.len() - 2]
}

fn to_json(rec: &ChannelRecord) -> Result<String, EngineError> {
    serde_json::to_string(rec).map_err(|e| EngineError::Other(e.to_string()))
}

/// Runs a registry script on the `{reg}` keys; the events channel is always the last argument.
async fn registry_script(
    client: &Client,
    script: &Script,
    mut args: Vec<String>,
) -> Result<i64, EngineError> {
    args.push(keys::REGISTRY_EVENTS.into());
    script
        .evalsha_with_reload(
            client,
            vec![keys::CHANNELS, keys::PATTERNS, keys::VERSION],
            args,
        )
        .await
        .map_err(unavailable)
}

fn conflict_or(v: i64, pattern: &str) -> Result<(), EngineError> {
    if v == 0 {
        Err(EngineError::Conflict(format!(
            "a channel with pattern `{pattern}` already exists"
        )))
    } else {
        Ok(())
    }
}

impl Engine for RedisEngine {
    fn name(&self) -> &'static str {
        "redis"
    }

    fn reachable(&mut self) -> LocalFuture<bool> {
        let client = self.client.clone();
        Box::pin(async move {
            matches!(
                tokio::time::timeout(Duration::from_secs(1), client.ping::<String>(None)).await,
                Ok(Ok(_))
            )
        })
    }

    async fn load_channels(&mut self) -> Result<Vec<ChannelRecord>, EngineError> {
        let all: HashMap<String, String> = self
            .client
            .hgetall(keys::CHANNELS)
            .await
            .map_err(unavailable)?;
        let mut out = Vec::with_capacity(all.len());
        for (id, json) in all {
            match serde_json::from_str::<ChannelRecord>(&json) {
                Ok(r) => out.push(r),
                Err(e) => tracing::warn!(%id, error = %e, "skipping unreadable channel record"),
            }
        }
        Ok(out)
    }

    async fn create_channel(&mut self, rec: &ChannelRecord) -> Result<(), EngineError> {
        let args = vec![rec.id.to_string(), rec.pattern.to_string(), to_json(rec)?];
        let v = registry_script(&self.client, &self.create, args).await?;
        conflict_or(v, rec.pattern.as_str())
    }

    async fn update_channel(
        &mut self,
        old: &ChannelRecord,
        new: &ChannelRecord,
    ) -> Result<(), EngineError> {
        let args = vec![
            new.id.to_string(),
            old.pattern.to_string(),
            new.pattern.to_string(),
            to_json(new)?,
        ];
        let v = registry_script(&self.client, &self.update, args).await?;
        conflict_or(v, new.pattern.as_str())
    }

    async fn delete_channel(&mut self, rec: &ChannelRecord) -> Result<(), EngineError> {
        let args = vec![rec.id.to_string(), rec.pattern.to_string()];
        registry_script(&self.client, &self.delete, args).await?;
        Ok(())
    }

    async fn load_policies(&mut self) -> Result<Option<String>, EngineError> {
        self.client.get(keys::POLICIES).await.map_err(unavailable)
    }

    async fn save_policies(&mut self, doc: &str) -> Result<(), EngineError> {
        let _: i64 = self
            .client
            .eval(
                scripts::SAVE_POLICIES,
                vec![keys::POLICIES, keys::VERSION],
                vec![doc, keys::REGISTRY_EVENTS],
            )
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    fn append(&self, m: NewMessage) -> AppendFuture {
        self.batcher.append(m)
    }

    async fn add_audience(&mut self, updates: &[(ChannelName, u64, u32)]) {
        self.audience.add(updates);
    }

    fn history(
        &mut self,
        q: &HistoryQuery,
    ) -> LocalFuture<Result<Vec<MessageRecord>, EngineError>> {
        let (reads, q) = (self.reads.clone(), q.clone());
        Box::pin(async move { reads.history(&q).await })
    }

    fn stats(&mut self, since: Option<Timestamp>) -> LocalFuture<Result<Stats, EngineError>> {
        let reads = self.reads.clone();
        Box::pin(async move { reads.stats(since).await })
    }

    fn node_interest(
        &mut self,
        channel: &ChannelName,
        on: bool,
    ) -> LocalFuture<Result<(), EngineError>> {
        let (subscriber, live) = (self.subscriber.clone(), keys::live(channel.as_str()));
        // Sharded pub/sub, one channel per call (a multi-channel SSUBSCRIBE across slots fails
        // with CROSSSLOT on a cluster). The command is sent when the future is first polled:
        // futures polled in call order send in call order, on the one subscriber connection.
        Box::pin(async move {
            if on {
                subscriber.ssubscribe(live).await.map_err(unavailable)
            } else {
                subscriber.sunsubscribe(live).await.map_err(unavailable)
            }
        })
    }

    fn position(&mut self, channel: &ChannelName) -> LocalFuture<Result<ChannelPos, EngineError>> {
        let client = self.client.clone();
        let keys = vec![keys::seq(channel.as_str()), keys::epoch(channel.as_str())];
        Box::pin(async move {
            let (offset, epoch): (u64, String) = client
                .eval(
                    scripts::POSITION,
                    keys,
                    vec![super::new_epoch().to_string()],
                )
                .await
                .map_err(unavailable)?;
            Ok(ChannelPos {
                offset,
                epoch: epoch.into(),
            })
        })
    }

    async fn read_range(
        &mut self,
        channel: &ChannelName,
        after: u64,
        upto: Option<u64>,
    ) -> Result<Vec<MessageRecord>, EngineError> {
        read_range(&self.client, channel, after, upto).await
    }

    fn range(
        &mut self,
        channel: &ChannelName,
        after: u64,
        upto: u64,
    ) -> LocalFuture<Result<Range, EngineError>> {
        let (client, channel) = (self.client.clone(), channel.clone());
        Box::pin(async move {
            let name = channel.as_str();
            let (head, seq): (Option<u64>, Option<u64>) = client
                .mget(vec![keys::head(name), keys::seq(name)])
                .await
                .map_err(unavailable)?;
            // Messages before the head are trimmed even while their entry stays (`forget`).
            let head = head.unwrap_or(1).max(1);
            let mut records = read_range(&client, &channel, after, Some(upto)).await?;
            records.retain(|m| m.offset >= head);
            Ok(Range {
                first: (seq.unwrap_or(0) >= head).then_some(head),
                records,
            })
        })
    }

    fn maintenance_period(&self) -> Option<Duration> {
        self.retention
            .max_age
            .map(|a| (a / 4).clamp(Duration::from_millis(100), Duration::from_secs(10)))
    }

    fn maintain(&mut self) -> Option<LocalFuture<()>> {
        let (Some(max_age), Some(period)) = (self.retention.max_age, self.maintenance_period())
        else {
            return None;
        };
        let client = self.client.clone();
        Some(Box::pin(async move {
            retention::trim_by_age(&client, max_age, period).await
        }))
    }

    fn presence_store(&self, node: &str, ttl: Duration) -> Option<presence::PresenceStore> {
        Some(presence::PresenceStore::new(
            self.client.clone(),
            node.to_string(),
            ttl,
        ))
    }

    fn take_events(&mut self) -> Option<mpsc::Receiver<EngineEvent>> {
        self.events.take()
    }
}
