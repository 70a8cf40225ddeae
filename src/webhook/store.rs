//! Where pending deliveries live and how a finished one is counted.
//!
//! - Memory engine: jobs arrive over the bounded hand-off queue from the control thread and
//!   exist only in this process; a delivered one is reported back to the control thread
//!   (`ControlMsg::WebhookDelivered`), which updates the message's `whDeliveredCount`.
//! - Redis engine: the publishing node writes each delivery to the stream `rc:{wh}:pending`
//!   (before the publisher is acknowledged). Every node reads it through the consumer group
//!   `ringcast` under its node id, so a delivery belongs to one node at a time; entries a node
//!   holds are refreshed while it retries them, and entries idle past `claim_after` (a node
//!   that died) are claimed by another. A node restarted with the same id first takes back its
//!   own. Finishing is one script: XACK, and only if that acknowledged the entry, XDEL; the
//!   node that acknowledged it adds the success to `rc:{name}:whd`. Two nodes racing on a
//!   claimed entry may both POST it (at-least-once), but it is counted once.

use std::{
    collections::{HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use fred::{prelude::*, types::scripts::Script};
use tokio::sync::mpsc;

use super::{Job, Outcome};
use crate::{channel::ChannelName, control::ControlMsg, engine::redis};

/// The stream of pending deliveries (redis engine).
pub const PENDING_STREAM: &str = "rc:{wh}:pending";
const GROUP: &str = "ringcast";
/// Longest a blocked read waits for new entries before the loop looks around.
const READ_BLOCK_MS: u64 = 500;

const FINISH: &str = r#"
if redis.call('XACK', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('XDEL', KEYS[1], ARGV[2])
  return 1
end
return 0
"#;

/// Which store the pool runs on.
pub enum Backend {
    Memory { control: mpsc::Sender<ControlMsg> },
    Redis { url: String, node_id: String },
}

/// The stream fields of one persisted delivery (written by the redis engine's publish).
pub fn persist_fields(job: &Job) -> Vec<(&'static str, Value)> {
    vec![
        ("c", Value::from(job.channel.as_str())),
        ("k", Value::from(job.key.to_string())),
        ("u", Value::from(&*job.url)),
        ("m", Value::from(&*job.message_id)),
        ("e", Value::from(&*job.event)),
        ("t", Value::from(job.created_ms.to_string())),
        ("b", Value::Bytes(job.body.clone())),
    ]
}

fn job_of(entry: String, fields: Vec<Value>) -> Option<Job> {
    let mut f: HashMap<String, Value> = HashMap::new();
    let mut it = fields.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        f.insert(k.as_string()?, v);
    }
    let s = |k: &str| f.get(k).and_then(|v| v.as_string());
    Some(Job {
        channel: ChannelName::parse(&s("c")?).ok()?,
        key: s("k")?.parse().ok()?,
        url: Arc::from(s("u")?),
        message_id: Arc::from(s("m")?),
        event: Arc::from(s("e")?),
        created_ms: s("t")?.parse().ok()?,
        body: Bytes::copy_from_slice(f.get("b")?.as_bytes()?),
        entry: Some(entry),
    })
}

/// `[id, [field, value, ...] | nil]` entries of a stream reply.
fn entries_of(v: Value) -> Vec<(String, Option<Vec<Value>>)> {
    v.into_array()
        .into_iter()
        .filter_map(|e| {
            let mut p = match e {
                Value::Array(p) if p.len() == 2 => p,
                _ => return None,
            };
            let fields = match p.pop()? {
                Value::Null => None,
                f => Some(f.into_array()),
            };
            Some((p.pop()?.as_string()?, fields))
        })
        .collect()
}

/// The entries of an XREADGROUP reply for our one stream: `[[stream, entries]]` (RESP2) or
/// `{stream: entries}` (RESP3); nil when nothing came.
fn entries_from_read(v: Value) -> Vec<(String, Option<Vec<Value>>)> {
    let mut a = v.into_array();
    match (a.pop(), a.pop()) {
        (Some(Value::Array(mut kv)), None) if kv.len() == 2 => kv.pop().map(entries_of),
        (Some(entries), Some(_key)) => Some(entries_of(entries)),
        _ => None,
    }
    .unwrap_or_default()
}

pub enum Store {
    Memory { control: mpsc::Sender<ControlMsg> },
    Redis(RedisStore),
}

impl Store {
    pub async fn connect(backend: Backend) -> Result<Self, String> {
        match backend {
            Backend::Memory { control } => Ok(Self::Memory { control }),
            Backend::Redis { url, node_id } => {
                RedisStore::connect(&url, node_id).await.map(Self::Redis)
            }
        }
    }

    /// Records how a delivery ended. Returns false when a Redis entry could not be finished
    /// (it stays pending and is delivered again later).
    pub async fn finish(&self, job: &Job, outcome: Outcome) -> bool {
        match self {
            Self::Memory { control } => {
                if outcome == Outcome::Delivered {
                    // Only a statistic rides on this: if the control queue is full it is lost
                    // (logged), never waited for.
                    if control
                        .try_send(ControlMsg::WebhookDelivered(job.channel.clone(), job.key))
                        .is_err()
                    {
                        tracing::debug!("control queue full: a whDeliveredCount update was lost");
                    }
                }
                true
            }
            Self::Redis(r) => r.finish(job, outcome).await,
        }
    }
}

pub struct RedisStore {
    client: Client,
    /// Blocking reads get their own connection (a blocked connection serves nothing else).
    reader: Client,
    finish: Script,
    consumer: String,
    /// Entries this node holds (being delivered or waiting to retry).
    held: Mutex<HashSet<String>>,
}

fn err(e: fred::error::Error) -> String {
    e.to_string()
}

impl RedisStore {
    async fn connect(url: &str, consumer: String) -> Result<Self, String> {
        let builder = redis::client_builder(url, Duration::from_secs(5), |_| {}).map_err(err)?;
        let client = builder.build().map_err(err)?;
        let reader = builder.build().map_err(err)?;
        let init = async {
            client.init().await?;
            reader.init().await?;
            Ok::<_, fred::error::Error>(())
        };
        tokio::time::timeout(Duration::from_secs(10), init)
            .await
            .map_err(|_| format!("no answer from {url} within 10 s"))?
            .map_err(err)?;
        // From the start of the stream: entries written before any group existed count too.
        let created: Result<Value, _> =
            client.xgroup_create(PENDING_STREAM, GROUP, "0", true).await;
        if let Err(e) = created
            && !e.to_string().contains("BUSYGROUP")
        {
            return Err(err(e));
        }
        Ok(Self {
            client,
            reader,
            finish: Script::from_lua(FINISH),
            consumer,
            held: Mutex::new(HashSet::new()),
        })
    }

    fn parse(&self, entries: Vec<(String, Option<Vec<Value>>)>) -> (Vec<Job>, Vec<String>) {
        let mut jobs = Vec::new();
        let mut bad = Vec::new();
        let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
        for (id, fields) in entries {
            if held.contains(&id) {
                continue;
            }
            match fields.and_then(|f| job_of(id.clone(), f)) {
                Some(j) => {
                    held.insert(id);
                    jobs.push(j);
                }
                None => bad.push(id),
            }
        }
        (jobs, bad)
    }

    /// Acknowledges entries that cannot be parsed (counted failed by the caller).
    async fn drop_bad(&self, bad: &[String]) {
        for id in bad {
            tracing::error!(entry = %id, "unreadable webhook entry in {PENDING_STREAM}; dropped");
            let _: Result<Value, _> = self
                .finish
                .evalsha_with_reload(&self.client, vec![PENDING_STREAM], vec![GROUP, id.as_str()])
                .await;
        }
    }

    /// Entries this consumer already holds in Redis (a previous life with the same node id),
    /// a page after entry id `after` (`"0"`: from the start). Returns the page's jobs, how many
    /// entries were unreadable, and the last entry id of the page (`None`: no more).
    pub async fn own_pending(
        &self,
        after: &str,
        count: u64,
    ) -> Result<(Vec<Job>, usize, Option<String>), String> {
        let v: Value = self
            .client
            .xreadgroup(
                GROUP,
                self.consumer.as_str(),
                Some(count),
                None,
                false,
                PENDING_STREAM,
                after,
            )
            .await
            .map_err(err)?;
        let entries = entries_from_read(v);
        let last = entries.last().map(|(id, _)| id.clone());
        let (jobs, bad) = self.parse(entries);
        self.drop_bad(&bad).await;
        Ok((jobs, bad.len(), last))
    }

    /// New entries (blocks up to `READ_BLOCK_MS`).
    pub async fn read_new(&self, count: u64) -> Result<(Vec<Job>, usize), String> {
        let v: Value = self
            .reader
            .xreadgroup(
                GROUP,
                self.consumer.as_str(),
                Some(count),
                Some(READ_BLOCK_MS),
                false,
                PENDING_STREAM,
                ">",
            )
            .await
            .map_err(err)?;
        self.jobs_from_read(v).await
    }

    async fn jobs_from_read(&self, v: Value) -> Result<(Vec<Job>, usize), String> {
        let (jobs, bad) = self.parse(entries_from_read(v));
        self.drop_bad(&bad).await;
        Ok((jobs, bad.len()))
    }

    /// Takes over entries idle longer than `min_idle` (their node died or lost Redis).
    pub async fn claim_idle(
        &self,
        min_idle: Duration,
        count: u64,
    ) -> Result<(Vec<Job>, usize), String> {
        let mut jobs = Vec::new();
        let mut bad_total = 0;
        let mut cursor = "0-0".to_string();
        for _ in 0..16 {
            let v: Value = self
                .client
                .xautoclaim(
                    PENDING_STREAM,
                    GROUP,
                    self.consumer.as_str(),
                    min_idle.as_millis() as u64,
                    cursor.as_str(),
                    Some(count),
                    false,
                )
                .await
                .map_err(err)?;
            let mut parts = v.into_array().into_iter();
            let next = parts.next().and_then(|c| c.as_string()).unwrap_or_default();
            let entries = parts.next().map(entries_of).unwrap_or_default();
            let (j, bad) = self.parse(entries);
            self.drop_bad(&bad).await;
            bad_total += bad.len();
            jobs.extend(j);
            if next.is_empty() || next == "0-0" || jobs.len() as u64 >= count {
                break;
            }
            cursor = next;
        }
        Ok((jobs, bad_total))
    }

    /// Resets the idle time of every held entry so no other node claims them.
    pub async fn refresh_held(&self) {
        let ids: Vec<String> = {
            let held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            held.iter().cloned().collect()
        };
        for chunk in ids.chunks(256) {
            let r: Result<Value, _> = self
                .client
                .xclaim(
                    PENDING_STREAM,
                    GROUP,
                    self.consumer.as_str(),
                    0,
                    chunk.to_vec(),
                    None,
                    None,
                    None,
                    false,
                    true,
                )
                .await;
            if let Err(e) = r {
                tracing::debug!(error = %e, "refreshing held webhook entries failed");
                return;
            }
        }
    }

    /// Forgets an entry without finishing it (shutdown: it stays pending in Redis).
    pub fn release(&self, job: &Job) {
        if let Some(id) = &job.entry {
            self.held
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
        }
    }

    async fn finish(&self, job: &Job, outcome: Outcome) -> bool {
        let Some(id) = &job.entry else { return true };
        let mut done = false;
        for attempt in 0..5u32 {
            let r: Result<i64, _> = self
                .finish
                .evalsha_with_reload(&self.client, vec![PENDING_STREAM], vec![GROUP, id.as_str()])
                .await;
            match r {
                Ok(acked) => {
                    if acked == 1 && outcome == Outcome::Delivered {
                        let counted = redis::count_webhook_delivered(
                            &self.client,
                            job.channel.as_str(),
                            job.key,
                        )
                        .await;
                        if let Err(e) = counted {
                            tracing::warn!(error = %e, "whDeliveredCount update failed");
                        }
                    }
                    done = true;
                    break;
                }
                Err(e) => {
                    tracing::debug!(error = %e, attempt, "finishing a webhook entry failed");
                    tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                }
            }
        }
        self.release(job);
        if !done {
            tracing::warn!(entry = %id, "could not finish a webhook entry in Redis; it will be delivered again");
        }
        done
    }
}
