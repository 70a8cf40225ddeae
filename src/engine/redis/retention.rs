//! Retention by age (`history.max_age`) in Redis: a periodic pass, run by one node at a time
//! as a task of its own (the control thread does not wait for it). Each channel's head moves
//! up to its first young message (`scripts::TRIM_CHANNEL`: entries and counts before it go),
//! and the all-channels index is trimmed by time id (`scripts::TRIM_INDEX`).
//! A stream entry is a publish batch: it goes when its last message is old; until then reads
//! skip its messages before the head.

use std::time::Duration;

use fred::{prelude::*, types::scripts::Script};

use super::{
    keys,
    reads::{Order, walk},
    scripts,
};
use crate::{channel::ChannelName, timestamp::Timestamp};

/// Retention by age. One node per period does it (a short lease).
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
    let r: Result<Value, _> = Script::from_lua(scripts::TRIM_INDEX)
        .evalsha_with_reload(
            client,
            vec![keys::MESSAGES, keys::INDEX_SIZES, keys::INDEX_TOTAL],
            vec![cutoff.millis().max(0).to_string()],
        )
        .await;
    if let Err(e) = r {
        tracing::debug!(error = %e, "age trim of the index failed");
    }
    let names: Vec<String> = client.smembers(keys::NAMES).await.unwrap_or_default();
    let trim = Script::from_lua(scripts::TRIM_CHANNEL);
    for name in names {
        if ChannelName::parse(&name).is_err() {
            continue;
        }
        // The first message young enough to keep; everything before it goes.
        let (mut seen, mut after, mut keep) = (false, 0, None);
        let read = walk(
            client,
            &keys::log(&name),
            Order::OldestFirst,
            "-".into(),
            "+".into(),
            |m| {
                seen = true;
                if m.created_at >= cutoff {
                    keep = Some(m.offset);
                    return false;
                }
                after = m.offset;
                true
            },
        )
        .await;
        // A failed read must not look like "nothing young": that would trim everything.
        if let Err(e) = read {
            tracing::debug!(channel = %name, error = %e, "age trim skipped: read failed");
            continue;
        }
        if !seen {
            continue;
        }
        // Nothing young was seen: trim what was read, not what arrived since.
        let head = keep.unwrap_or(after + 1);
        let r: Result<Value, _> = trim
            .evalsha_with_reload(
                client,
                vec![
                    keys::log(&name),
                    keys::head(&name),
                    keys::audience(&name),
                    keys::wh_delivered(&name),
                ],
                vec![head],
            )
            .await;
        if let Err(e) = r {
            tracing::debug!(channel = %name, error = %e, "age trim failed");
        }
    }
}
