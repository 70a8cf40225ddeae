//! `wsAudienceCount` in Redis: how many subscribers each message reached, summed over the
//! cores and nodes that delivered it.
//!
//! The control thread hands each core's counts over and goes straight back to delivering: it
//! never waits for Redis here (it used to, one round trip per core wake-up, and every remote
//! message behind it waited too). One background task writes what has piled up, one script
//! call per channel (`scripts::COUNT`, one round trip for all of them), while the next counts
//! pile up behind it: the busier the node, the bigger and fewer the writes.
//!
//! Bound: at most `PENDING` counts wait. Past that, and when Redis refuses a write, counts
//! are dropped and counted (`ringcast_audience_writes_dropped_total`): they are statistics,
//! and the delivery path never waits for them.

use std::{cell::RefCell, collections::HashMap, mem, rc::Rc, sync::Arc};

use fred::{prelude::*, types::scripts::Script};
use tokio::sync::Notify;

use super::{keys, scripts};
use crate::{channel::ChannelName, metrics::EngineMetrics};

/// Most counts waiting to be written.
const PENDING: usize = 1 << 18;
/// Most (offset, count) pairs per script call.
const PER_CALL: usize = 1024;

#[derive(Default)]
struct Pending {
    by_channel: HashMap<ChannelName, Vec<(u64, u32)>>,
    len: usize,
}

pub struct AudienceWriter {
    /// `scripts::COUNT` by its SHA (these calls share the connection with publishes; the text
    /// is sent only if Redis lost it).
    script: Script,
    pending: RefCell<Pending>,
    wake: Notify,
    metrics: Arc<EngineMetrics>,
}

impl AudienceWriter {
    /// Starts the writing task. Must be called inside a `LocalSet`.
    pub fn start(client: Client, metrics: Arc<EngineMetrics>) -> Rc<Self> {
        let w = Rc::new(Self {
            script: Script::from_lua(scripts::COUNT),
            pending: RefCell::new(Pending::default()),
            wake: Notify::new(),
            metrics,
        });
        tokio::task::spawn_local(w.clone().run(client));
        w
    }

    /// Queues (channel, offset, subscribers reached) counts; returns at once.
    pub fn add(&self, updates: &[(ChannelName, u64, u32)]) {
        let mut dropped = 0;
        {
            let mut p = self.pending.borrow_mut();
            for (ch, off, n) in updates {
                if p.len >= PENDING {
                    dropped += 1;
                    continue;
                }
                p.len += 1;
                match p.by_channel.get_mut(ch) {
                    Some(v) => v.push((*off, *n)),
                    None => {
                        p.by_channel.insert(ch.clone(), vec![(*off, *n)]);
                    }
                }
            }
        }
        if dropped > 0 {
            self.metrics.audience_writes_dropped_total.add(dropped);
            tracing::debug!(
                dropped,
                "audience counts dropped: too many waiting for Redis"
            );
        }
        self.wake.notify_one();
    }

    async fn run(self: Rc<Self>, client: Client) {
        loop {
            self.wake.notified().await;
            loop {
                let batch = mem::take(&mut *self.pending.borrow_mut());
                if batch.len == 0 {
                    break;
                }
                self.write(&client, batch.by_channel).await;
            }
        }
    }

    /// One script call per channel (and per `PER_CALL` counts), all sent at once (fred
    /// pipelines them on its connection): one round trip.
    async fn write(&self, client: &Client, batch: HashMap<ChannelName, Vec<(u64, u32)>>) {
        let mut calls = tokio::task::JoinSet::new();
        for (ch, counts) in &batch {
            let (hash, head) = (keys::audience(ch.as_str()), keys::head(ch.as_str()));
            for chunk in counts.chunks(PER_CALL) {
                let mut args: Vec<Value> = Vec::with_capacity(2 * chunk.len());
                for (off, n) in chunk {
                    args.push(Value::from(*off as i64));
                    args.push(Value::from(i64::from(*n)));
                }
                let (client, script) = (client.clone(), self.script.clone());
                let (keys, n) = (vec![hash.clone(), head.clone()], chunk.len());
                calls.spawn_local(async move {
                    let r: Result<Value, _> = script.evalsha_with_reload(&client, keys, args).await;
                    r.err().map(|e| (n as u64, e))
                });
            }
        }
        let (mut failed, mut error) = (0, None);
        while let Some(r) = calls.join_next().await {
            if let Ok(Some((n, e))) = r {
                failed += n;
                error = Some(e);
            }
        }
        if failed > 0 {
            self.metrics.audience_writes_dropped_total.add(failed);
            tracing::debug!(error = ?error, counts = failed, "audience counts not written");
        }
    }
}
