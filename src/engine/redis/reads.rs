//! History and stats reads of the redis engine. `Reads` owns a client handle, so each read
//! runs as a task of its own beside the control loop: a stats scan over a large index takes
//! many round trips, and remote deliveries must not wait behind it. `walk` reads a stream
//! entry by entry (each a publish batch, `entry`) for these reads, the gap fill and retention.

use std::collections::HashMap;

use bytes::Bytes;
use fred::prelude::*;

use super::{SCAN_PAGE, entry, keys, unavailable};
use crate::{
    channel::ChannelName,
    engine::{EngineError, HistoryQuery, MessageRecord, Stats, StatsBuilder},
    timestamp::Timestamp,
};

#[derive(Clone)]
pub struct Reads {
    client: Client,
}

impl Reads {
    pub fn new(client: Client) -> Self {
        Self { client }
    }

    pub async fn history(&self, q: &HistoryQuery) -> Result<Vec<MessageRecord>, EngineError> {
        let mut skip = q.offset;
        let mut rows = Vec::with_capacity(q.limit.min(1000));
        let channel = match q.channel_name.as_deref() {
            Some(n) if ChannelName::parse(n).is_err() => return Ok(Vec::new()),
            other => other,
        };
        self.scan(channel, q.since, q.until, |m| {
            let keep = q.channel_id.is_none_or(|id| m.channel_id == id)
                && q.channel_name
                    .as_deref()
                    .is_none_or(|n| m.channel_name.as_str() == n)
                && q.event_name.as_deref().is_none_or(|e| &*m.event_name == e)
                && q.since.is_none_or(|t| m.created_at >= t)
                && q.until.is_none_or(|t| m.created_at <= t);
            if keep {
                if skip > 0 {
                    skip -= 1;
                } else {
                    rows.push(m);
                }
            }
            rows.len() < q.limit
        })
        .await?;
        if rows.is_empty() {
            return Ok(rows);
        }
        self.fill_counts(&mut rows, true).await;
        Ok(rows)
    }

    pub async fn stats(&self, since: Option<Timestamp>) -> Result<Stats, EngineError> {
        let mut b = StatsBuilder::default();
        let mut with_webhooks = Vec::new();
        self.scan(None, since, None, |m| {
            if since.is_none_or(|t| m.created_at >= t) {
                if m.wh_audience_count > 0 {
                    with_webhooks.push(m);
                } else {
                    b.add(&m);
                }
            }
            true
        })
        .await?;
        self.fill_counts(&mut with_webhooks, false).await;
        for m in &with_webhooks {
            b.add(m);
        }
        Ok(b.finish())
    }

    /// Fills `wh_delivered_count` of records from each channel's `whd` hash, and with
    /// `audience` also `ws_audience_count` from its `aud` hash (one pipeline per page).
    async fn fill_counts(&self, recs: &mut [MessageRecord], audience: bool) {
        for chunk in recs.chunks_mut(SCAN_PAGE as usize) {
            let pipe = self.client.pipeline();
            for m in chunk.iter() {
                let (name, off) = (m.channel_name.as_str(), m.offset.to_string());
                if audience {
                    let _: Result<(), _> = pipe.hget(keys::audience(name), off.as_str()).await;
                }
                let _: Result<(), _> = pipe.hget(keys::wh_delivered(name), off).await;
            }
            let counts: Vec<FredResult<Option<u64>>> = pipe.try_all().await;
            let per = if audience { 2 } else { 1 };
            for (m, c) in chunk.iter_mut().zip(counts.chunks(per)) {
                let get = |i: usize| c.get(i).and_then(|r| r.as_ref().ok().copied().flatten());
                if audience {
                    m.ws_audience_count = get(0).unwrap_or(0);
                }
                m.wh_delivered_count = get(per - 1).unwrap_or(0) as u32;
            }
        }
    }

    /// Calls `f` on records newest first until it returns false. With `channel`, reads that
    /// channel's own stream (exact offset order, from its head on); otherwise the
    /// all-channels index, whose ids are arrival times, bounded by `since`/`until`.
    async fn scan<F>(
        &self,
        channel: Option<&str>,
        since: Option<Timestamp>,
        until: Option<Timestamp>,
        mut f: F,
    ) -> Result<(), EngineError>
    where
        F: FnMut(MessageRecord) -> bool,
    {
        match channel {
            Some(name) => {
                // An entry straddling the head keeps messages the count trimmed: they are
                // the oldest, so the walk (newest first) ends there.
                let head: Option<u64> = self
                    .client
                    .get(keys::head(name))
                    .await
                    .map_err(unavailable)?;
                let head = head.unwrap_or(0);
                walk(
                    &self.client,
                    &keys::log(name),
                    Order::NewestFirst,
                    "-".into(),
                    "+".into(),
                    |m| m.offset >= head && f(m),
                )
                .await
            }
            None => {
                let lo = since.map_or_else(|| "-".to_string(), |t| t.millis().max(0).to_string());
                let hi = until.map_or_else(
                    || "+".to_string(),
                    |t| format!("{}-18446744073709551615", t.millis().max(0)),
                );
                walk(&self.client, keys::MESSAGES, Order::NewestFirst, lo, hi, f).await
            }
        }
    }
}

/// Which way `walk` reads a stream.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Order {
    OldestFirst,
    NewestFirst,
}

/// Entries asked for in a walk's first page. Later pages ask for `SCAN_PAGE` messages'
/// worth of entries at the largest entry size seen so far (an entry is a whole publish batch,
/// 1 to 256 messages), so a page holds about `SCAN_PAGE` messages unless larger batches
/// follow smaller ones.
const FIRST_PAGE: u64 = 2;

/// Calls `f` on the records of the entries of stream `key` with ids from `lo` to `hi`
/// (Redis id bounds: `-`, `+`, `(id` allowed), in `order`, until it returns false.
pub async fn walk<F>(
    client: &Client,
    key: &str,
    order: Order,
    mut lo: String,
    mut hi: String,
    mut f: F,
) -> Result<(), EngineError>
where
    F: FnMut(MessageRecord) -> bool,
{
    let (mut count, mut largest) = (FIRST_PAGE, 1);
    loop {
        let page: Vec<(String, HashMap<String, Bytes>)> = match order {
            Order::OldestFirst => {
                client
                    .xrange_values(key, lo.as_str(), hi.as_str(), Some(count))
                    .await
            }
            Order::NewestFirst => {
                client
                    .xrevrange_values(key, hi.as_str(), lo.as_str(), Some(count))
                    .await
            }
        }
        .map_err(unavailable)?;
        for (id, fields) in &page {
            let mut recs = entry::records(id, fields);
            largest = largest.max(recs.len() as u64);
            if order == Order::NewestFirst {
                recs.reverse();
            }
            for m in recs {
                if !f(m) {
                    return Ok(());
                }
            }
        }
        let Some((last, _)) = page.last() else {
            return Ok(());
        };
        if (page.len() as u64) < count {
            return Ok(());
        }
        let next = format!("({last}");
        match order {
            Order::OldestFirst => lo = next,
            Order::NewestFirst => hi = next,
        }
        count = (SCAN_PAGE / largest).max(1);
    }
}
