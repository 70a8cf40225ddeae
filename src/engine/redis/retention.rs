//! Retention by age (`history.max_age`) in Redis: a periodic pass, run by one node at a time
//! as a task of its own (the control thread does not wait for it). Each channel's stream is
//! trimmed up to its first young message, with the trimmed messages' counts, and the
//! all-channels index by time id.

use std::{collections::HashMap, time::Duration};

use fred::prelude::*;

use super::{SCAN_PAGE, entry_record, keys, unavailable};
use crate::{
    channel::ChannelName,
    engine::{EngineError, MessageRecord},
    timestamp::Timestamp,
};

/// Deletes the `aud` and `whd` fields of offsets `from..to` (messages trimmed by age).
async fn forget_counts(client: &Client, name: &str, from: u64, to: u64) {
    let pipe = client.pipeline();
    let mut o = from;
    while o < to {
        let end = (o + 1000).min(to);
        let fields: Vec<String> = (o..end).map(|x| x.to_string()).collect();
        for hash in [keys::audience(name), keys::wh_delivered(name)] {
            let _: Result<(), _> = pipe.hdel(hash, fields.clone()).await;
        }
        o = end;
    }
    if let Err(e) = pipe.all::<Value>().await {
        tracing::debug!(channel = %name, error = %e, "dropping trimmed messages' counts failed");
    }
}

/// Retention by age. One node per period does it (a short lease); the all-channels
/// index is trimmed by time id, each channel's stream up to its first young message.
pub async fn trim_by_age(client: &Client, age: Duration, period: Duration) {
    let lease: Result<Option<String>, _> = client
        .set(
            keys::MAINTENANCE_LEASE,
            "1",
            Some(Expiration::PX((period.as_millis() as i64 * 9 / 10).max(50))),
            Some(SetOptions::NX),
            false,
        )
        .await;
    if !matches!(lease, Ok(Some(_))) {
        return;
    }
    let cutoff = Timestamp(Timestamp::now().millis() - age.as_millis() as i64);
    let _: Result<Value, _> = client
        .xtrim(keys::MESSAGES, ("MINID", "=", cutoff.millis().to_string()))
        .await;
    let names: Vec<String> = client.smembers(keys::NAMES).await.unwrap_or_default();
    for name in names {
        let Ok(ch) = ChannelName::parse(&name) else {
            continue;
        };
        // First message young enough to keep; everything before it goes.
        let mut after = 0;
        let mut oldest = None;
        let keep = loop {
            let page = match read_page(client, &ch, after).await {
                Ok(p) if !p.is_empty() => p,
                Ok(_) => break Ok(None),
                Err(e) => break Err(e),
            };
            oldest = oldest.or(page.first().map(|m| m.offset));
            if let Some(m) = page.iter().find(|m| m.created_at >= cutoff) {
                break Ok(Some(m.offset));
            }
            after = page.last().map_or(after, |m| m.offset);
        };
        // A failed read must not look like "nothing young": that would trim everything.
        let keep = match keep {
            Ok(k) => k,
            Err(e) => {
                tracing::debug!(channel = %name, error = %e, "age trim skipped: read failed");
                continue;
            }
        };
        let key = keys::log(&name);
        let r: Result<Value, _> = match keep {
            Some(off) => client.xtrim(key, ("MINID", "=", format!("{off}-1"))).await,
            // Nothing young was seen: trim what was read, not what arrived since.
            None => {
                client
                    .xtrim(key, ("MINID", "=", format!("{}-1", after + 1)))
                    .await
            }
        };
        if let Err(e) = r {
            tracing::debug!(channel = %name, error = %e, "age trim failed");
            continue;
        }
        // The trimmed messages' counts go too (a count written meanwhile was refused:
        // `scripts::COUNT` skips offsets before the stream's head).
        if let Some(from) = oldest {
            forget_counts(client, &name, from, keep.unwrap_or(after + 1)).await;
        }
    }
}

/// One page of a channel's stream after `after`.
async fn read_page(
    client: &Client,
    channel: &ChannelName,
    after: u64,
) -> Result<Vec<MessageRecord>, EngineError> {
    let page: Vec<(String, HashMap<String, String>)> = client
        .xrange_values(
            keys::log(channel.as_str()),
            format!("{}-1", after + 1),
            "+",
            Some(SCAN_PAGE),
        )
        .await
        .map_err(unavailable)?;
    Ok(page
        .iter()
        .filter_map(|(id, f)| entry_record(id, f))
        .collect())
}
