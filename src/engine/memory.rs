//! The embedded `memory` engine: one node, everything in process, nothing survives a restart.
//!
//! Publishes are sequenced on the cores (`core::sequencer`); this engine keeps what they
//! sequenced. History is one global sequence (`BTreeMap` by arrival key, oldest first) plus,
//! per channel, the (offset, key) of its retained messages, in offset order. Retention is by
//! count per channel, by age, by a global total and by a global size in bytes
//! (`history.max_bytes`: a message counts its payload, event, channel and sender plus a fixed
//! 256 bytes for the record), all enforced on store (age also on read); the oldest messages
//! go first.
//! Stats are computed over what is retained, as InsForge computes them over its
//! (retention-trimmed) table.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    time::Duration,
};

use uuid::Uuid;

use super::{
    Appended, Engine, EngineError, HistoryQuery, LocalFuture, MessageRecord, NewMessage, Range,
    Stats, StatsBuilder,
};
use crate::{
    channel::{ChannelName, ChannelRecord},
    timestamp::Timestamp,
};

#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub per_channel: usize,
    pub max_age: Option<Duration>,
    pub max_total: usize,
    /// The retained messages' size (`record_size`), at most.
    pub max_bytes: usize,
}

/// What a retained message counts against `Retention::max_bytes`: its variable parts and a
/// fixed allowance for the record and its index entries.
fn record_size(m: &MessageRecord) -> usize {
    256 + m.payload.get().len()
        + m.event_name.len()
        + m.channel_name.as_str().len()
        + m.sender_id.as_deref().map_or(0, str::len)
}

/// A channel's retained messages as (offset, key), oldest first.
#[derive(Default)]
struct ChannelLog {
    keys: VecDeque<(u64, u64)>,
}

impl ChannelLog {
    fn key_of(&self, offset: u64) -> Option<u64> {
        let i = self.keys.binary_search_by_key(&offset, |(o, _)| *o).ok()?;
        Some(self.keys[i].1)
    }
}

pub struct MemoryEngine {
    retention: Retention,
    channels: HashMap<Uuid, ChannelRecord>,
    messages: BTreeMap<u64, MessageRecord>,
    logs: HashMap<ChannelName, ChannelLog>,
    next_key: u64,
    /// `record_size` of every retained message.
    bytes: usize,
}

impl MemoryEngine {
    pub fn new(retention: Retention) -> Self {
        Self {
            retention,
            channels: HashMap::new(),
            messages: BTreeMap::new(),
            logs: HashMap::new(),
            next_key: 1,
            bytes: 0,
        }
    }

    fn evict_oldest(&mut self) {
        let Some((key, rec)) = self.messages.pop_first() else {
            return;
        };
        self.bytes -= record_size(&rec);
        if let Some(log) = self.logs.get_mut(&rec.channel_name) {
            if log.keys.front().map(|(_, k)| *k) == Some(key) {
                log.keys.pop_front();
            } else {
                log.keys.retain(|(_, k)| *k != key);
            }
        }
    }

    /// The retained message of `channel` at `offset`.
    fn get_mut(&mut self, channel: &ChannelName, offset: u64) -> Option<&mut MessageRecord> {
        let key = self.logs.get(channel)?.key_of(offset)?;
        self.messages.get_mut(&key)
    }

    fn prune_by_age(&mut self) {
        let Some(age) = self.retention.max_age else {
            return;
        };
        let cutoff = Timestamp(Timestamp::now().0 - age.as_millis() as i64);
        while self
            .messages
            .first_key_value()
            .is_some_and(|(_, m)| m.created_at < cutoff)
        {
            self.evict_oldest();
        }
    }
}

impl Engine for MemoryEngine {
    fn name(&self) -> &'static str {
        "memory"
    }

    fn reachable(&mut self) -> LocalFuture<bool> {
        Box::pin(std::future::ready(true))
    }

    async fn load_channels(&mut self) -> Result<Vec<ChannelRecord>, EngineError> {
        Ok(self.channels.values().cloned().collect())
    }

    async fn create_channel(&mut self, rec: &ChannelRecord) -> Result<(), EngineError> {
        if self.channels.values().any(|c| c.pattern == rec.pattern) {
            return Err(EngineError::Conflict(format!(
                "a channel with pattern `{}` already exists",
                rec.pattern
            )));
        }
        self.channels.insert(rec.id, rec.clone());
        Ok(())
    }

    async fn update_channel(
        &mut self,
        _old: &ChannelRecord,
        new: &ChannelRecord,
    ) -> Result<(), EngineError> {
        self.channels.insert(new.id, new.clone());
        Ok(())
    }

    async fn delete_channel(&mut self, rec: &ChannelRecord) -> Result<(), EngineError> {
        self.channels.remove(&rec.id);
        Ok(())
    }

    async fn store(
        &mut self,
        m: NewMessage,
        a: Appended,
        ws_audience: u32,
    ) -> Result<(), EngineError> {
        let key = self.next_key;
        self.next_key += 1;
        let wh_audience_count = m.wh_audience();
        let log = self.logs.entry(m.channel_name.clone()).or_default();
        log.keys.push_back((a.offset, key));
        let over = log.keys.len() > self.retention.per_channel;
        if over
            && let Some((_, old)) = log.keys.pop_front()
            && let Some(gone) = self.messages.remove(&old)
        {
            self.bytes -= record_size(&gone);
        }
        let rec = MessageRecord {
            id: a.id,
            event_name: m.event,
            channel_id: m.channel_id,
            channel_name: m.channel_name,
            payload: m.payload,
            sender_type: m.sender_type,
            sender_id: m.sender_id,
            ws_audience_count: u64::from(ws_audience),
            wh_audience_count,
            wh_delivered_count: 0,
            created_at: a.created_at,
            offset: a.offset,
        };
        self.bytes += record_size(&rec);
        self.messages.insert(key, rec);
        while self.messages.len() > self.retention.max_total
            || (self.bytes > self.retention.max_bytes && self.messages.len() > 1)
        {
            self.evict_oldest();
        }
        self.prune_by_age();
        Ok(())
    }

    async fn add_audience(&mut self, updates: &[(ChannelName, u64, u32)]) {
        for (ch, offset, n) in updates {
            if let Some(m) = self.get_mut(ch, *offset) {
                m.ws_audience_count += u64::from(*n);
            }
        }
    }

    async fn add_webhook_delivered(&mut self, ch: &ChannelName, offset: u64) {
        if let Some(m) = self.get_mut(ch, offset) {
            m.wh_delivered_count += 1;
        }
    }

    fn history(
        &mut self,
        q: &HistoryQuery,
    ) -> LocalFuture<Result<Vec<MessageRecord>, EngineError>> {
        Box::pin(std::future::ready(Ok(self.read_history(q))))
    }

    fn stats(&mut self, since: Option<Timestamp>) -> LocalFuture<Result<Stats, EngineError>> {
        Box::pin(std::future::ready(Ok(self.read_stats(since))))
    }

    fn node_interest(&mut self, _: &ChannelName, _: bool) -> LocalFuture<Result<(), EngineError>> {
        Box::pin(std::future::ready(Ok(())))
    }

    fn retained(&self) -> u64 {
        self.messages.len() as u64
    }

    fn range(
        &mut self,
        channel: &ChannelName,
        after: u64,
        upto: u64,
    ) -> LocalFuture<Result<Range, EngineError>> {
        self.prune_by_age();
        let mut out = Range::default();
        if let Some(log) = self.logs.get(channel) {
            out.first = log.keys.front().map(|(o, _)| *o);
            let start = log.keys.partition_point(|(o, _)| *o <= after);
            out.records = log
                .keys
                .range(start..)
                .take_while(|(o, _)| *o <= upto)
                .filter_map(|(_, k)| self.messages.get(k).cloned())
                .collect();
        }
        Box::pin(std::future::ready(Ok(out)))
    }
}

impl MemoryEngine {
    /// In process memory: answered at once, so the control loop can compute it inline.
    fn read_history(&mut self, q: &HistoryQuery) -> Vec<MessageRecord> {
        self.prune_by_age();
        let keys: Box<dyn Iterator<Item = &MessageRecord>> = match q
            .channel_name
            .as_deref()
            .and_then(|n| ChannelName::parse(n).ok())
        {
            Some(name) => match self.logs.get(&name) {
                Some(log) => Box::new(
                    log.keys
                        .iter()
                        .rev()
                        .filter_map(|(_, k)| self.messages.get(k)),
                ),
                None => Box::new(std::iter::empty()),
            },
            None if q.channel_name.is_some() => Box::new(std::iter::empty()),
            None => Box::new(self.messages.values().rev()),
        };
        keys.filter(|m| q.channel_id.is_none_or(|id| m.channel_id == id))
            .filter(|m| q.event_name.as_deref().is_none_or(|e| &*m.event_name == e))
            .filter(|m| q.since.is_none_or(|t| m.created_at >= t))
            .filter(|m| q.until.is_none_or(|t| m.created_at <= t))
            .skip(q.offset)
            .take(q.limit)
            .cloned()
            .collect()
    }

    fn read_stats(&mut self, since: Option<Timestamp>) -> Stats {
        self.prune_by_age();
        let mut b = StatsBuilder::default();
        for m in self
            .messages
            .values()
            .filter(|m| since.is_none_or(|t| m.created_at >= t))
        {
            b.add(m);
        }
        b.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::value::RawValue;
    use std::sync::Arc;

    fn msg(ch: &str, ev: &str) -> NewMessage {
        NewMessage {
            channel_id: Uuid::nil(),
            channel_name: ChannelName::parse(ch).unwrap(),
            event: Arc::from(ev),
            payload: Arc::from(RawValue::from_string("{}".into()).unwrap()),
            sender_id: None,
            sender_type: "user",
            webhook_urls: None,
            source: None,
            idempotency_key: None,
        }
    }

    /// Stores `m` as the next message of its channel (as its owning core would sequence it).
    async fn append(e: &mut MemoryEngine, m: NewMessage) -> Appended {
        let offset = e
            .logs
            .get(&m.channel_name)
            .and_then(|l| l.keys.back())
            .map_or(0, |(o, _)| *o)
            + 1;
        let a = Appended {
            id: Uuid::now_v7(),
            offset,
            created_at: Timestamp::now(),
        };
        e.store(m, a, 0).await.unwrap();
        a
    }

    fn block<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn offsets_retention_and_queries() {
        block(async {
            let mut e = MemoryEngine::new(Retention {
                per_channel: 3,
                max_age: None,
                max_total: 5,
                max_bytes: usize::MAX,
            });
            for i in 0..5 {
                let a = append(&mut e, msg("a:1", if i % 2 == 0 { "even" } else { "odd" })).await;
                assert_eq!(a.offset, i + 1);
            }
            assert_eq!(e.retained(), 3, "per-channel cap");
            for _ in 0..4 {
                append(&mut e, msg("b:1", "b")).await;
            }
            assert_eq!(e.retained(), 5, "global cap");
            let q = HistoryQuery {
                limit: 100,
                channel_name: Some("a:1".into()),
                ..Default::default()
            };
            let h = e.history(&q).await.unwrap();
            assert_eq!(h.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![5, 4]);
            let q = HistoryQuery {
                limit: 2,
                offset: 1,
                ..Default::default()
            };
            assert_eq!(e.history(&q).await.unwrap().len(), 2);
            let s = e.stats(None).await.unwrap();
            assert_eq!(s.total_messages, 5);
            assert_eq!(
                s.top_events[0],
                crate::engine::EventCount {
                    event_name: "b".into(),
                    count: 3
                }
            );
            assert_eq!(s.wh_delivery_rate, 1.0);
        });
    }

    #[test]
    fn the_size_bound_evicts_the_oldest_and_the_count_stays_exact() {
        block(async {
            let mut e = MemoryEngine::new(Retention {
                per_channel: 1000,
                max_age: None,
                max_total: 1000,
                max_bytes: 10_000,
            });
            let big = |ch: &str| {
                let mut m = msg(ch, "e");
                m.payload =
                    Arc::from(RawValue::from_string(format!("\"{}\"", "x".repeat(3000))).unwrap());
                m
            };
            for i in 0..10 {
                append(&mut e, big(if i % 2 == 0 { "a" } else { "b" })).await;
                assert!(e.bytes <= 10_000, "{}", e.bytes);
            }
            // 3 records of ~3.26 KB fit in 10 KB; the oldest went first, across channels.
            assert_eq!(e.retained(), 3);
            let kept: usize = e.messages.values().map(record_size).sum();
            assert_eq!(kept, e.bytes, "the counter matches what is kept");
            // A per-channel trim and age keep the counter exact too.
            let ch = ChannelName::parse("a").unwrap();
            let r = e.range(&ch, 0, 100).await.unwrap();
            assert!(r.records.iter().all(|m| m.offset >= 4), "{:?}", r.first);
        });
    }

    #[test]
    fn ranges_for_recovery() {
        block(async {
            let mut e = MemoryEngine::new(Retention {
                per_channel: 5,
                max_age: None,
                max_total: 100,
                max_bytes: usize::MAX,
            });
            for _ in 0..8 {
                append(&mut e, msg("a", "x")).await;
            }
            let ch = ChannelName::parse("a").unwrap();
            let r = e.range(&ch, 5, 7).await.unwrap();
            assert_eq!(r.first, Some(4), "8 published, 5 kept");
            assert_eq!(
                r.records.iter().map(|m| m.offset).collect::<Vec<_>>(),
                [6, 7]
            );
            let r = e.range(&ch, 1, 8).await.unwrap();
            assert_eq!(r.records.first().map(|m| m.offset), Some(4), "1..3 trimmed");
            let none = ChannelName::parse("b").unwrap();
            let r = e.range(&none, 0, 3).await.unwrap();
            assert_eq!((r.first, r.records.len()), (None, 0));
        });
    }

    #[test]
    fn audience_counts_add_up() {
        block(async {
            let mut e = MemoryEngine::new(Retention {
                per_channel: 10,
                max_age: None,
                max_total: 10,
                max_bytes: usize::MAX,
            });
            let a = append(&mut e, msg("a", "x")).await;
            let ch = ChannelName::parse("a").unwrap();
            let other = ChannelName::parse("b").unwrap();
            e.add_audience(&[
                (ch.clone(), a.offset, 3),
                (ch.clone(), a.offset, 2),
                (ch.clone(), 999, 1),
                (other, a.offset, 1),
            ])
            .await;
            e.add_webhook_delivered(&ch, a.offset).await;
            let h = e
                .history(&HistoryQuery {
                    limit: 1,
                    ..Default::default()
                })
                .await
                .unwrap();
            assert_eq!(h[0].ws_audience_count, 5);
            assert_eq!(h[0].wh_delivered_count, 1);
        });
    }
}
