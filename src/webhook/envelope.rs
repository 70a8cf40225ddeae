//! What a receiver gets: the seed's JSON envelope (built once per message, the same bytes for
//! every URL and every attempt), the `X-InsForge-*` headers, and the signature
//! `sha256=<hex HMAC-SHA256(secret, "{timestamp}.{body}")>` over the attempt's timestamp.

use std::sync::Arc;

use bytes::Bytes;
use hmac::{Hmac, KeyInit, Mac};
use serde::Serialize;
use serde_json::value::RawValue;
use sha2::Sha256;
use uuid::Uuid;

use super::Job;
use crate::{engine::NewMessage, timestamp::Timestamp};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Envelope<'a> {
    message_id: &'a str,
    channel_id: &'a str,
    channel_name: &'a str,
    event: &'a str,
    payload: &'a RawValue,
    sender_id: Option<&'a str>,
    sender_type: &'a str,
    timestamp: &'a str,
}

/// The envelope of an accepted message.
pub fn body(m: &NewMessage, id: Uuid, created_at: Timestamp) -> Bytes {
    let id = id.to_string();
    let channel_id = m.channel_id.to_string();
    let ts = created_at.to_rfc3339();
    let json = serde_json::to_vec(&Envelope {
        message_id: &id,
        channel_id: &channel_id,
        channel_name: m.channel_name.as_str(),
        event: &m.event,
        payload: &m.payload,
        sender_id: m.sender_id.as_deref(),
        sender_type: m.sender_type,
        timestamp: &ts,
    })
    .expect("serializing to a Vec cannot fail");
    Bytes::from(json)
}

/// One delivery per webhook URL of an accepted message (empty when it has none).
pub fn jobs(m: &NewMessage, key: u64, id: Uuid, created_at: Timestamp) -> Vec<Job> {
    let Some(urls) = &m.webhook_urls else {
        return Vec::new();
    };
    let body = body(m, id, created_at);
    let message_id: Arc<str> = Arc::from(id.to_string());
    urls.iter()
        .map(|url| Job {
            channel: m.channel_name.clone(),
            key,
            url: url.clone(),
            message_id: message_id.clone(),
            event: m.event.clone(),
            created_ms: created_at.millis(),
            body: body.clone(),
            entry: None,
        })
        .collect()
}

/// `sha256=<hex>` of HMAC-SHA256(secret, "{timestamp}.{body}").
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in digest {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::ChannelName;

    #[test]
    fn signature_matches_a_known_vector() {
        // The signed string is exactly "{ts}.{body}"; computed here independently.
        let s = sign(b"Jefe", 1700000000, b"{\"a\":1}");
        assert!(s.starts_with("sha256=") && s.len() == 7 + 64, "{s}");
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000.{\"a\":1}");
        let want: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(s, format!("sha256={want}"));
        assert_ne!(
            s,
            sign(b"Jefe", 1700000001, b"{\"a\":1}"),
            "timestamp is signed"
        );
    }

    #[test]
    fn envelope_has_the_seed_fields() {
        let m = NewMessage {
            channel_id: Uuid::nil(),
            channel_name: ChannelName::parse("order:1").unwrap(),
            event: Arc::from("order.updated"),
            payload: Arc::from(RawValue::from_string(r#"{"x":1}"#.into()).unwrap()),
            sender_id: Some(Arc::from("u1")),
            sender_type: "user",
            webhook_urls: Some(Arc::from(vec![
                Arc::from("http://a/"),
                Arc::from("http://b/"),
            ])),
            source: None,
            idempotency_key: None,
        };
        let id = Uuid::now_v7();
        let jobs = jobs(&m, 7, id, Timestamp(0));
        assert_eq!(jobs.len(), 2);
        let v: serde_json::Value = serde_json::from_slice(&jobs[0].body).unwrap();
        assert_eq!(v["messageId"], id.to_string());
        assert_eq!(v["channelName"], "order:1");
        assert_eq!(v["event"], "order.updated");
        assert_eq!(v["payload"]["x"], 1);
        assert_eq!(v["senderId"], "u1");
        assert_eq!(v["senderType"], "user");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v.as_object().unwrap().len(), 8);
        assert!(
            jobs[0].body.as_ptr() == jobs[1].body.as_ptr(),
            "one body per message"
        );
    }
}
