//! Publish batching: the publishes of one channel that arrive while that channel's previous
//! batches are at Redis go together in the next one. One script call orders, stores (one
//! stream entry: `entry`) and fans out the whole batch (`scripts::PUBLISH`, one SPUBLISH
//! carrying every frame: `live`), one more appends it to the all-channels index
//! (`scripts::INDEX`, one entry too), one more stores its webhook deliveries
//! (`scripts::XADD_MANY`). Under load that is three commands per batch
//! instead of three per message; when idle a batch is one message and nothing waits (no timer,
//! no delay: a batch is flushed as soon as the control loop has queued what it had).
//!
//! Idempotency: a batch in which some publish carries an `idempotencyKey` goes through
//! `scripts::PUBLISH_IDEMPOTENT`, which leaves repeats out and returns their first acks;
//! the index, webhook and ack steps then cover only what was published.
//!
//! Order: each channel has at most `IN_FLIGHT` batches at Redis, issued in queue order on one
//! connection (so run in that order), and acknowledged in queue order, so offsets follow the
//! order publishes reached the control thread.

use std::{
    cell::RefCell,
    collections::HashMap,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use bytes::Bytes;
use fred::{prelude::*, types::scripts::Script};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};
use uuid::Uuid;

use super::{COMMAND_TIMEOUT, entry, keys, live, offset_prefix, scripts, write_json};
use crate::{
    channel::ChannelName,
    engine::{AppendFuture, Appended, EngineError, MessageRecord, NewMessage},
    metrics::{EngineMetrics, WebhookMetrics},
    protocol::MessageFrame,
    timestamp::Timestamp,
    webhook,
};

/// Most messages per script call (the script's argument list grows with it).
const MAX_BATCH: usize = 256;
/// Batches of one channel at Redis at once: the next ones are built and sent while the earlier
/// ones run. Redis runs one connection's commands in the order sent, so offsets still follow
/// queue order; answers are chained (`run`'s `prev`) so they do too. With one hot channel
/// this caps its rate at `IN_FLIGHT * MAX_BATCH` per round trip: 4 measured 212-223k acked
/// publishes/s on one node against 178-194k for 2 and 8 (BENCHMARKS.md, "Redis engine").
const IN_FLIGHT: usize = 4;
/// A channel's name is added to `rc:names` again after this long (a Redis that lost it, e.g.
/// restarted without persistence, gets it back).
const NAME_REFRESH: Duration = Duration::from_secs(60);

struct Pending {
    msg: NewMessage,
    id: Uuid,
    created_at: Timestamp,
    /// Answered by then: a publish still queued is refused unsent (certainly not
    /// published), and a batch's script call times out at its earliest deadline.
    deadline: Instant,
    done: oneshot::Sender<Result<Appended, EngineError>>,
}

pub struct Batcher {
    client: Client,
    index: Script,
    xadd_many: Script,
    per_channel: usize,
    max_total: usize,
    idempotency_window: Duration,
    webhook_metrics: Arc<WebhookMetrics>,
    engine_metrics: Arc<EngineMetrics>,
    /// Per channel: messages waiting for the batch in flight to finish. A channel is in the
    /// map exactly while a flush task runs for it.
    queues: RefCell<HashMap<ChannelName, Vec<Pending>>>,
    names_seen: RefCell<HashMap<ChannelName, Instant>>,
}

impl Batcher {
    pub fn new(
        client: Client,
        per_channel: usize,
        max_total: usize,
        idempotency_window: Duration,
        webhook_metrics: Arc<WebhookMetrics>,
        engine_metrics: Arc<EngineMetrics>,
    ) -> Self {
        Self {
            client,
            index: Script::from_lua(scripts::INDEX),
            xadd_many: Script::from_lua(scripts::XADD_MANY),
            per_channel,
            max_total,
            idempotency_window,
            webhook_metrics,
            engine_metrics,
            queues: RefCell::new(HashMap::new()),
            names_seen: RefCell::new(HashMap::new()),
        }
    }

    /// Queues a publish; the future resolves once its batch is stored (or failed). Must be
    /// called inside a `LocalSet`.
    pub fn append(self: &Rc<Self>, msg: NewMessage) -> AppendFuture {
        let (done, rx) = oneshot::channel();
        let name = msg.channel_name.clone();
        let p = Pending {
            id: msg.source.map_or_else(Uuid::now_v7, |s| s.message_id()),
            msg,
            created_at: Timestamp::now(),
            deadline: Instant::now() + super::COMMAND_TIMEOUT,
            done,
        };
        let start = {
            let mut queues = self.queues.borrow_mut();
            match queues.get_mut(&name) {
                Some(q) => {
                    q.push(p);
                    false
                }
                None => {
                    queues.insert(name.clone(), vec![p]);
                    true
                }
            }
        };
        if start {
            tokio::task::spawn_local(self.clone().flush(name));
        }
        Box::pin(async move {
            rx.await
                .unwrap_or_else(|_| Err(EngineError::Other("publish abandoned".into())))
        })
    }

    async fn flush(self: Rc<Self>, name: ChannelName) {
        // Let the control loop queue whatever else it already has for this channel.
        tokio::task::yield_now().await;
        let slots = Arc::new(Semaphore::new(IN_FLIGHT));
        // Resolves when the previous batch has answered its publishers.
        let mut prev: Option<oneshot::Receiver<()>> = None;
        loop {
            let permit = slots
                .clone()
                .acquire_owned()
                .await
                .expect("the semaphore is never closed");
            let Some(batch) = self.take(&name) else {
                drop(permit);
                if slots.available_permits() < IN_FLIGHT {
                    // Nothing queued: wait for the batches in flight, then look again.
                    let _ = slots.acquire_many(IN_FLIGHT as u32).await;
                    continue;
                }
                self.queues.borrow_mut().remove(&name);
                return;
            };
            // Spawned tasks first run in spawn order, and `run` issues its script call before
            // its first await: so batches reach Redis in queue order.
            let (done, next) = oneshot::channel();
            tokio::task::spawn_local(self.clone().run(
                name.clone(),
                batch,
                prev.replace(next),
                done,
                permit,
            ));
        }
    }

    /// Up to `MAX_BATCH` queued messages of `name`, or `None` if there are none. Queued
    /// messages past their deadline are refused first: they were never sent, so they are
    /// certainly not published, and their publishers hear so within the promised time.
    fn take(&self, name: &ChannelName) -> Option<Vec<Pending>> {
        let mut queues = self.queues.borrow_mut();
        let q = queues.get_mut(name)?;
        let now = Instant::now();
        if q.first().is_some_and(|p| p.deadline <= now) {
            let late = q.iter().take_while(|p| p.deadline <= now).count();
            for p in q.drain(..late) {
                let _ = p.done.send(Err(EngineError::Unavailable(
                    "Redis did not take the publish in time (the channel's earlier batches are still waiting for it)".into(),
                )));
            }
        }
        if q.is_empty() {
            return None;
        }
        let n = q.len().min(MAX_BATCH);
        Some(q.drain(..n).collect())
    }

    /// Stores, fans out and indexes one batch, then (after the previous batch, `prev`)
    /// answers its publishers, then signals `done`. Holds its in-flight slot throughout.
    async fn run(
        self: Rc<Self>,
        name: ChannelName,
        batch: Vec<Pending>,
        prev: Option<oneshot::Receiver<()>>,
        done: oneshot::Sender<()>,
        _slot: OwnedSemaphorePermit,
    ) {
        let name = &name;
        let ch = name.as_str();
        // Each record is serialized once, complete (`"offset":0`: the entry id carries the
        // offsets), into the one entry body (`entry`), which the index write below reuses;
        // each frame goes straight into the one pub/sub payload (`live`). No per-message
        // `format!` or regrowth.
        let mut body = Vec::with_capacity(batch.len() * 512);
        let mut frames = Vec::with_capacity(batch.len() * 512);
        let mut scratch = Vec::with_capacity(512);
        // Where each message's record and frame prefix sit in `body` and `frames` (after
        // their length prefixes): the idempotent script takes them one by one.
        let mut spans = Vec::with_capacity(batch.len());
        for p in &batch {
            let m = &p.msg;
            let record = MessageRecord {
                id: p.id,
                event_name: m.event.clone(),
                channel_id: m.channel_id,
                channel_name: m.channel_name.clone(),
                payload: m.payload.clone(),
                sender_type: m.sender_type,
                sender_id: m.sender_id.clone(),
                ws_audience_count: 0,
                wh_audience_count: m.wh_audience(),
                wh_delivered_count: 0,
                created_at: p.created_at,
                offset: 0,
            };
            let mut ids = Uuid::encode_buffer();
            let ts = p.created_at.rfc3339();
            let frame = MessageFrame {
                kind: "message",
                message_id: p.id.hyphenated().encode_lower(&mut ids),
                channel: ch,
                event: &m.event,
                payload: &m.payload,
                sender_id: m.sender_id.as_deref(),
                sender_type: m.sender_type,
                timestamp: ts.as_str(),
                offset: 0,
            };
            scratch.clear();
            write_json(&mut scratch, &record);
            entry::push_record(&mut body, &scratch);
            let rec = body.len() - scratch.len()..body.len();
            scratch.clear();
            write_json(&mut scratch, &frame);
            let prefix = offset_prefix(&scratch);
            live::push_frame(&mut frames, prefix);
            spans.push((rec, frames.len() - prefix.len()..frames.len()));
        }
        let n = batch.len();
        let body = Bytes::from(body);
        let frames = Bytes::from(frames);
        // The change stream's position of the batch's last change, recorded by the same
        // script that stores it (`cdc` reads it back to skip changes already stored).
        let source = batch.iter().filter_map(|p| p.msg.source).max();
        let source = Value::from(source.map(|s| s.to_key()).unwrap_or_default());
        let mut script_keys = vec![
            keys::seq(ch),
            keys::log(ch),
            keys::audience(ch),
            keys::wh_delivered(ch),
            keys::head(ch),
            keys::source_pos(ch),
        ];
        // EVAL, not EVALSHA: a NOSCRIPT answer would need a retry, and a retried batch could
        // run after the channel's next one (already sent) and take later offsets. Redis caches
        // the compiled script either way; the text costs ~1 KB per batch.
        // The call times out at the batch's earliest deadline: every publisher is answered
        // within `COMMAND_TIMEOUT` of reaching this node.
        let first_deadline = batch
            .iter()
            .map(|p| p.deadline)
            .min()
            .expect("a batch is never empty");
        let client = &self.client;
        // fred's own timeout is per attempt (a command re-sent after a reconnect starts
        // again), so the deadline is kept here.
        let deadline = tokio::time::Instant::from_std(first_deadline);
        let late = |_| format!("no answer from Redis within {COMMAND_TIMEOUT:?} of the publish");
        let published: Result<Published, String> = if batch
            .iter()
            .all(|p| p.msg.idempotency_key.is_none())
        {
            let args: Vec<Value> = vec![
                Value::from(self.per_channel as i64),
                Value::from(keys::live(ch)),
                Value::from(n as i64),
                Value::Bytes(body.clone()),
                Value::Bytes(frames),
                source,
            ];
            let call = client.eval::<u64, _, _, _>(scripts::PUBLISH, script_keys, args);
            match tokio::time::timeout_at(deadline, call).await.map_err(late) {
                Ok(r) => r
                    .map(|first| Published::all(first, n))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            }
        } else {
            let mut args: Vec<Value> = vec![
                Value::from(self.per_channel as i64),
                Value::from(keys::live(ch)),
                Value::from(n as i64),
                source,
                Value::from(self.idempotency_window.as_millis().max(1) as i64),
            ];
            for (p, (rec, frame)) in batch.iter().zip(&spans) {
                let key_index = match &p.msg.idempotency_key {
                    Some(k) => {
                        script_keys.push(keys::idempotency(ch, k));
                        script_keys.len() as i64
                    }
                    None => 0,
                };
                let mut ids = Uuid::encode_buffer();
                args.extend([
                    Value::Bytes(body.slice(rec.clone())),
                    Value::Bytes(frames.slice(frame.clone())),
                    Value::from(key_index),
                    Value::from(p.id.hyphenated().encode_lower(&mut ids).to_string()),
                    Value::from(p.created_at.rfc3339().as_str().to_string()),
                ]);
            }
            let call =
                client.eval::<Vec<Value>, _, _, _>(scripts::PUBLISH_IDEMPOTENT, script_keys, args);
            match tokio::time::timeout_at(deadline, call).await.map_err(late) {
                Ok(r) => r
                    .map(|v| Published::decode(&v, n))
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            }
        };
        let published = match published {
            Ok(f) => f,
            Err(e) => {
                // The script may have run: the request can be in Redis's socket buffer (or
                // executed) when the answer is lost or late. Not a refusal.
                let detail = e;
                if let Some(prev) = prev {
                    let _ = prev.await;
                }
                for p in batch {
                    let _ = p.done.send(Err(EngineError::OutcomeUnknown {
                        id: p.id,
                        detail: detail.clone(),
                    }));
                }
                let _ = done.send(());
                return;
            }
        };

        let dups = published.repeats.iter().filter(|r| r.is_some()).count();
        if dups > 0 {
            self.engine_metrics
                .redis_publish_duplicates_total
                .add(dups as u64);
        }
        if dups == n {
            if let Some(prev) = prev {
                let _ = prev.await;
            }
            for (p, r) in batch.into_iter().zip(published.repeats) {
                let _ = p.done.send(repeat_answer(r));
            }
            let _ = done.send(());
            return;
        }
        let first = published.first;
        // The records stored: all of the batch's, or (with repeats left out) the rest.
        let (body, fresh_n) = if dups == 0 {
            (body, n)
        } else {
            let mut b = Vec::with_capacity(body.len());
            for ((rec, _), r) in spans.iter().zip(&published.repeats) {
                if r.is_none() {
                    entry::push_record(&mut b, &body[rec.clone()]);
                }
            }
            (Bytes::from(b), n - dups)
        };
        // The offset of each message published (repeats: their first ack).
        let mut acks = Vec::with_capacity(n);
        let mut next = first;
        for (p, r) in batch.iter().zip(published.repeats) {
            acks.push(match r {
                Some(a) => (repeat_answer(Some(a)), false),
                None => {
                    next += 1;
                    (
                        Ok(Appended {
                            id: p.id,
                            offset: next - 1,
                            created_at: p.created_at,
                        }),
                        true,
                    )
                }
            });
        }

        // The listing index, the names set and the webhook deliveries: not part of the atomic
        // publish (the channel's own stream is), issued together (one round trip), and all
        // written before any publisher of the batch is acknowledged.
        let mut jobs = Vec::new();
        for (p, (a, fresh)) in batch.iter().zip(&acks) {
            if let (true, Ok(a)) = (*fresh, a) {
                jobs.extend(webhook::envelope::jobs(
                    &p.msg,
                    a.offset,
                    p.id,
                    p.created_at,
                ));
            }
        }
        let fresh_name = {
            let mut seen = self.names_seen.borrow_mut();
            let now = Instant::now();
            match seen.get(name) {
                Some(t) if now.duration_since(*t) < NAME_REFRESH => false,
                _ => {
                    seen.insert(name.clone(), now);
                    true
                }
            }
        };
        let index_write = self.index.evalsha_with_reload::<Value, _, _>(
            &self.client,
            vec![keys::MESSAGES, keys::INDEX_SIZES, keys::INDEX_TOTAL],
            vec![
                Value::from(self.max_total as i64),
                Value::from(fresh_n as i64),
                Value::from(first as i64),
                Value::Bytes(body),
            ],
        );
        let name_write = async {
            if fresh_name {
                let _: Value = self.client.sadd(keys::NAMES, ch).await?;
            }
            Ok::<_, fred::error::Error>(())
        };
        let jobs_write = async {
            for chunk in jobs.chunks(MAX_BATCH) {
                let mut a: Vec<Value> = Vec::with_capacity(1 + 14 * chunk.len());
                a.push(Value::Null); // fields per entry, set below
                let mut per_entry = 0;
                for job in chunk {
                    let fields = webhook::persist_fields(job);
                    per_entry = fields.len();
                    for (k, v) in fields {
                        a.push(Value::from(k));
                        a.push(v);
                    }
                }
                a[0] = Value::from(per_entry as i64);
                if let Err(e) = self
                    .xadd_many
                    .evalsha_with_reload::<Value, _, _>(
                        &self.client,
                        vec![webhook::PENDING_STREAM],
                        a,
                    )
                    .await
                {
                    self.webhook_metrics
                        .dropped
                        .fetch_add(chunk.len() as u64, std::sync::atomic::Ordering::Relaxed);
                    tracing::error!(error = %e, deliveries = chunk.len(), channel = %name,
                        "webhook deliveries could not be stored in Redis; dropped");
                }
            }
        };
        let (index_r, name_r, ()) = tokio::join!(index_write, name_write, jobs_write);
        if let Err(e) = index_r {
            tracing::debug!(error = %e, "history index write failed");
        }
        if let Err(e) = name_r {
            tracing::debug!(error = %e, "channel name write failed");
            self.names_seen.borrow_mut().remove(name);
        }
        if let Some(prev) = prev {
            let _ = prev.await;
        }
        for (p, (a, _)) in batch.into_iter().zip(acks) {
            let _ = p.done.send(a);
        }
        let _ = done.send(());
    }
}

/// What a publish script did with a batch: the first offset it assigned, and per message the
/// first ack of a repeated idempotency key (`None`: published now; `Some(Err)`: a repeat whose
/// stored ack is unreadable).
struct Published {
    first: u64,
    repeats: Vec<Option<Result<Appended, String>>>,
}

impl Published {
    fn all(first: u64, n: usize) -> Self {
        Self {
            first,
            repeats: vec![None; n],
        }
    }

    /// `scripts::PUBLISH_IDEMPOTENT`'s answer. A repeat whose stored value cannot be read is
    /// reported to its publisher as such (published before, ack unknown), never as refused.
    fn decode(v: &[Value], n: usize) -> Self {
        let first = v.first().and_then(|f| f.as_u64()).unwrap_or(0);
        let repeats = (0..n)
            .map(|i| {
                let s = v.get(i + 1).and_then(|x| x.as_bytes_str())?;
                if s.is_empty() {
                    return None;
                }
                Some(parse_first_ack(&s).ok_or_else(|| format!("unreadable first ack `{s}`")))
            })
            .collect();
        Self { first, repeats }
    }
}

/// The answer to a publish that repeated an idempotency key.
fn repeat_answer(r: Option<Result<Appended, String>>) -> Result<Appended, EngineError> {
    match r {
        Some(Ok(a)) => Ok(a),
        Some(Err(e)) => Err(EngineError::RepeatUnreadable(e)),
        None => Err(EngineError::Other("publish script answered no ack".into())),
    }
}

/// `<offset> <message id> <timestamp>`, as `PUBLISH_IDEMPOTENT` stores a key's first ack.
fn parse_first_ack(s: &str) -> Option<Appended> {
    let mut it = s.split(' ');
    Some(Appended {
        offset: it.next()?.parse().ok()?,
        id: Uuid::parse_str(it.next()?).ok()?,
        created_at: Timestamp::parse(it.next()?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_first_ack() {
        let a = parse_first_ack("42 0190a000-0000-7000-8000-000000000000 2026-01-01T00:00:00.123Z")
            .unwrap();
        assert_eq!(a.offset, 42);
        assert_eq!(a.created_at.rfc3339().as_str(), "2026-01-01T00:00:00.123Z");
        assert!(parse_first_ack("x y z").is_none());
        let p = Published::decode(
            &[
                Value::from(7),
                Value::from(""),
                Value::from("3 0190a000-0000-7000-8000-000000000000 2026-01-01T00:00:00.000Z"),
            ],
            2,
        );
        assert_eq!(p.first, 7);
        assert!(p.repeats[0].is_none());
        assert_eq!(p.repeats[1].clone().map(|a| a.unwrap().offset), Some(3));
        let bad = Published::decode(&[Value::from(0), Value::from("garbage")], 1);
        assert!(matches!(bad.repeats[0], Some(Err(_))));
    }
}
