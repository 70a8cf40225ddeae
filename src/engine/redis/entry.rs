//! The stream entry format of history in Redis, and reading it back.
//!
//! One entry holds one publish batch (`batch`), not one message: Redis pays per entry and per
//! Lua argument far more than per byte (BENCHMARKS.md, "Where Redis's time goes": a batch of 256 as one
//! entry costs ~1.5 µs of Redis time per message against ~5 µs as 256 entries).
//! - A channel's stream (`keys::log`): entry id `{last offset}-{message count}`, field `r`:
//!   the batch's records, each as `<len>:<JSON>` (`live::push_frame`), with `"offset":0`
//!   (record `i` of `n` has offset `last - n + 1 + i`). Keyed by the *last* offset, so the
//!   entry holding offset `o` is the first with id `>= {o}-0`, and `XTRIM MINID {o}-0` drops
//!   exactly the entries whose messages are all before `o`.
//! - The all-channels index (`keys::MESSAGES`): time ids (`*`), field `r` the same bytes as
//!   the channel's entry, field `o` the batch's first offset.
//! - Entries written before batching (a single record, `{`...): still read, as one message.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::live;
use crate::{channel::ChannelName, engine::MessageRecord, timestamp::Timestamp};

/// Appends one record to an entry body.
pub fn push_record(body: &mut Vec<u8>, record: &[u8]) {
    live::push_frame(body, record);
}

/// The records of a stream entry, oldest first. Unreadable records are skipped (logged).
pub fn records(id: &str, fields: &HashMap<String, Bytes>) -> Vec<MessageRecord> {
    let Some(body) = fields.get("r") else {
        return Vec::new();
    };
    let last: u64 = id
        .split('-')
        .next()
        .and_then(|ms| ms.parse().ok())
        .unwrap_or(0);
    if body.first() == Some(&b'{') {
        // Written before batching: one record, entry id `{offset}-1` (an index entry's
        // record carries its offset).
        return parse_record(body, last).into_iter().collect();
    }
    let parts = match live::split(body) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(entry = id, error = %e, "unreadable history entry; skipped");
            return Vec::new();
        }
    };
    let first = match fields.get("o") {
        Some(o) => std::str::from_utf8(o)
            .ok()
            .and_then(|o| o.parse().ok())
            .unwrap_or(0),
        None => (last + 1).saturating_sub(parts.len() as u64),
    };
    parts
        .into_iter()
        .enumerate()
        .filter_map(|(i, p)| parse_record(p, first + i as u64))
        .collect()
}

/// A record as stored in Redis (the JSON of `MessageRecord`).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RecordIn<'a> {
    id: Uuid,
    event_name: String,
    channel_id: Uuid,
    channel_name: &'a str,
    #[serde(borrow)]
    payload: &'a RawValue,
    sender_type: &'a str,
    sender_id: Option<String>,
    wh_audience_count: u32,
    wh_delivered_count: u32,
    created_at: &'a str,
    offset: u64,
}

/// One record; `offset` stands in for a stored offset of 0 (channel streams store none).
fn parse_record(json: &[u8], offset: u64) -> Option<MessageRecord> {
    let r: RecordIn = match serde_json::from_slice(json) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(error = %e, "unreadable history record; skipped");
            return None;
        }
    };
    Some(MessageRecord {
        id: r.id,
        event_name: Arc::from(r.event_name),
        channel_id: r.channel_id,
        channel_name: ChannelName::parse(r.channel_name).ok()?,
        payload: Arc::from(r.payload.to_owned()),
        sender_type: if r.sender_type == "system" {
            "system"
        } else {
            "user"
        },
        sender_id: r.sender_id.map(Arc::from),
        ws_audience_count: 0,
        wh_audience_count: r.wh_audience_count,
        wh_delivered_count: r.wh_delivered_count,
        created_at: Timestamp::parse(r.created_at)?,
        offset: if r.offset == 0 { offset } else { r.offset },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(offset: u64, event: &str) -> String {
        format!(
            r#"{{"id":"0190a000-0000-7000-8000-000000000000","eventName":"{event}","channelId":"0190a000-0000-7000-8000-000000000001","channelName":"c:1","payload":{{"a":"x\ny"}},"senderType":"user","senderId":null,"wsAudienceCount":0,"whAudienceCount":0,"whDeliveredCount":0,"createdAt":"2026-01-01T00:00:00.000Z","offset":{offset}}}"#
        )
    }

    fn entry(body: Vec<u8>) -> HashMap<String, Bytes> {
        HashMap::from([("r".to_string(), Bytes::from(body))])
    }

    #[test]
    fn a_batch_entry_numbers_its_records_up_to_its_id() {
        let mut body = Vec::new();
        for e in ["a", "b", "c"] {
            push_record(&mut body, record(0, e).as_bytes());
        }
        let got = records("12-3", &entry(body));
        let seen: Vec<_> = got.iter().map(|m| (m.offset, &*m.event_name)).collect();
        assert_eq!(seen, [(10, "a"), (11, "b"), (12, "c")]);
        assert_eq!(got[0].payload.get(), r#"{"a":"x\ny"}"#);
    }

    #[test]
    fn index_entries_are_numbered_from_their_first_offset() {
        let mut body = Vec::new();
        push_record(&mut body, record(0, "a").as_bytes());
        push_record(&mut body, record(0, "b").as_bytes());
        let mut fields = entry(body);
        fields.insert("o".into(), Bytes::from_static(b"41"));
        let got = records("1700000000000-0", &fields);
        assert_eq!(got.iter().map(|m| m.offset).collect::<Vec<_>>(), [41, 42]);
        // Index entries from before batching: one record with its offset.
        let got = records("1700000000000-3", &entry(record(7, "old").into_bytes()));
        assert_eq!(got.iter().map(|m| m.offset).collect::<Vec<_>>(), [7]);
    }

    #[test]
    fn entries_from_before_batching_are_one_message() {
        let got = records("5-1", &entry(record(0, "old").into_bytes()));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].offset, 5);
    }

    #[test]
    fn damaged_entries_and_records_are_skipped() {
        assert!(records("5-1", &entry(b"9:abc".to_vec())).is_empty());
        assert!(records("5-1", &HashMap::new()).is_empty());
        let mut body = Vec::new();
        push_record(&mut body, b"{not json");
        push_record(&mut body, record(0, "ok").as_bytes());
        let got = records("2-2", &entry(body));
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].offset, 2);
    }
}
