//! The Socket.IO encodings of what the broker sends to every subscriber of a channel: a
//! published message as InsForge delivers it, `42[event, {...payload, meta}]`, and the
//! presence events. Each is built once per message (not per subscriber) and shared like the
//! raw protocol's frame.
//!
//! A message's payload is spread into the delivered object (`{...payload, "meta": {...}}`).
//! A payload that is not a JSON object (possible from raw-protocol and HTTP publishers) is
//! delivered as `{"payload": <value>, "meta": {...}}`. A payload key `meta` is overwritten by
//! the broker's (the JSON carries both; the later one wins, as in InsForge).

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::{frame, presence::Member, protocol::ErrorCode};

/// `meta` of a delivered message.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct MessageMeta<'a> {
    /// The bare channel name; written as `realtime:<name>` (InsForge's room name).
    #[serde(serialize_with = "room")]
    pub channel: &'a str,
    pub message_id: &'a str,
    pub sender_type: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sender_id: Option<&'a str>,
    pub timestamp: &'a str,
}

fn room<S: serde::Serializer>(ch: &&str, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_args!("realtime:{ch}"))
}

/// `42[event, {...payload, "meta": meta}]` as a text frame.
pub fn message(event: &str, payload: &str, meta: &MessageMeta<'_>) -> Bytes {
    let payload = payload.trim();
    let mut b = frame::text_buf(payload.len() + event.len() + 200);
    b.extend_from_slice(b"42[");
    serde_json::to_writer(&mut b, event).expect("serializing to a Vec cannot fail");
    b.push(b',');
    match payload.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
        Some(inner) => {
            b.push(b'{');
            let inner = inner.trim();
            if !inner.is_empty() {
                b.extend_from_slice(inner.as_bytes());
                b.push(b',');
            }
        }
        None => {
            b.extend_from_slice(b"{\"payload\":");
            b.extend_from_slice(if payload.is_empty() {
                b"null"
            } else {
                payload.as_bytes()
            });
            b.push(b',');
        }
    }
    b.extend_from_slice(b"\"meta\":");
    serde_json::to_writer(&mut b, meta).expect("serializing to a Vec cannot fail");
    b.extend_from_slice(b"}]");
    frame::text_frame(b)
}

/// The Socket.IO frame of a raw-protocol `message` frame body (a message that arrived
/// encoded: from another node, or from a core that built no Socket.IO frame); `None` if the
/// body is not a `message` frame.
pub fn message_from_raw(frame_json: &[u8]) -> Option<Bytes> {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Raw<'a> {
        #[serde(borrow)]
        message_id: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        channel: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        event: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        payload: Option<&'a RawValue>,
        #[serde(borrow, default)]
        sender_id: Option<std::borrow::Cow<'a, str>>,
        #[serde(borrow)]
        sender_type: std::borrow::Cow<'a, str>,
        #[serde(borrow)]
        timestamp: std::borrow::Cow<'a, str>,
    }
    let r: Raw<'_> = serde_json::from_slice(frame_json).ok()?;
    Some(message(
        &r.event,
        r.payload.map_or("null", RawValue::get),
        &MessageMeta {
            channel: &r.channel,
            message_id: &r.message_id,
            sender_type: &r.sender_type,
            sender_id: r.sender_id.as_deref(),
            timestamp: &r.timestamp,
        },
    ))
}

/// The InsForge error code for one of ringcast's (`realtime:error` and subscribe acks):
/// a missing channel and a policy refusal are both `REALTIME_UNAUTHORIZED` (InsForge does not
/// tell them apart), `INTERNAL` is `INTERNAL_ERROR`; the rest keep ringcast's code.
pub fn insforge_code(code: ErrorCode) -> &'static str {
    match code {
        ErrorCode::ChannelNotFound | ErrorCode::Forbidden | ErrorCode::Unauthorized => {
            "REALTIME_UNAUTHORIZED"
        }
        ErrorCode::Internal => "INTERNAL_ERROR",
        other => other.as_str(),
    }
}

/// `42["realtime:error", {"channel"?, "code", "message"}]`.
pub fn error(channel: Option<&str>, code: ErrorCode, message: &str) -> Bytes {
    error_code(channel, insforge_code(code), message)
}

/// `realtime:error` with a code of InsForge's own (`REALTIME_NOT_SUBSCRIBED`).
pub fn error_code(channel: Option<&str>, code: &str, message: &str) -> Bytes {
    #[derive(Serialize)]
    struct Body<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        channel: Option<&'a str>,
        code: &'a str,
        message: &'a str,
    }
    super::packet::event(
        "realtime:error",
        &Body {
            channel,
            code,
            message,
        },
    )
}

/// `42["presence:join" | "presence:leave", {"member": .., "meta": {..}}]`; `meta.channel`
/// is the bare channel name (the SDK looks presence up by it).
pub fn presence(
    join: bool,
    channel: &str,
    member: &Member,
    message_id: &str,
    timestamp: &str,
) -> Bytes {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Meta<'a> {
        channel: &'a str,
        sender_type: &'a str,
        message_id: &'a str,
        timestamp: &'a str,
    }
    #[derive(Serialize)]
    struct Body<'a> {
        member: &'a Member,
        meta: Meta<'a>,
    }
    super::packet::event(
        if join {
            "presence:join"
        } else {
            "presence:leave"
        },
        &Body {
            member,
            meta: Meta {
                channel,
                sender_type: "system",
                message_id,
                timestamp,
            },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(frame::payload_of(b)).unwrap()
    }

    /// The JSON after the `42` of an EVENT.
    fn event_json(b: &Bytes) -> serde_json::Value {
        let t = text(b);
        assert!(t.starts_with("42["), "{t}");
        serde_json::from_str(&t[2..]).unwrap()
    }

    fn meta() -> MessageMeta<'static> {
        MessageMeta {
            channel: "order:1",
            message_id: "m1",
            sender_type: "user",
            sender_id: Some("u1"),
            timestamp: "2026-01-01T00:00:00.000Z",
        }
    }

    #[test]
    fn spreads_the_payload_and_adds_meta() {
        let f = message("order.updated", r#" {"orderId":"1","n":3} "#, &meta());
        let v: serde_json::Value = event_json(&f);
        assert_eq!(v[0], "order.updated");
        assert_eq!(v[1]["orderId"], "1");
        assert_eq!(v[1]["n"], 3);
        assert_eq!(v[1]["meta"]["channel"], "realtime:order:1");
        assert_eq!(v[1]["meta"]["senderId"], "u1");
        assert_eq!(v[1]["meta"]["messageId"], "m1");
        let empty = message("e", "{ }", &meta());
        assert!(
            text(&empty).starts_with(r#"42["e",{"meta":{"#),
            "{}",
            text(&empty)
        );
        let mut m = meta();
        m.sender_id = None;
        let v: serde_json::Value = event_json(&message("e", "{}", &m));
        assert!(v[1]["meta"].get("senderId").is_none());
    }

    #[test]
    fn non_objects_are_wrapped_and_meta_wins() {
        for (p, want) in [
            ("[1,2]", serde_json::json!([1, 2])),
            ("7", serde_json::json!(7)),
            ("null", serde_json::json!(null)),
            ("\"s\"", serde_json::json!("s")),
        ] {
            let v: serde_json::Value = event_json(&message("e", p, &meta()));
            assert_eq!(v[1]["payload"], want, "{p}");
        }
        let v: serde_json::Value = event_json(&message("e", r#"{"meta":"mine"}"#, &meta()));
        assert_eq!(v[1]["meta"]["messageId"], "m1");
    }

    #[test]
    fn reencodes_a_raw_message_frame() {
        let raw = br#"{"type":"message","messageId":"m1","channel":"order:1","event":"e","payload":{"a":1},"senderId":"u1","senderType":"user","timestamp":"2026-01-01T00:00:00.000Z","offset":3}"#;
        let f = message_from_raw(raw).unwrap();
        assert_eq!(f, message("e", r#"{"a":1}"#, &meta()));
        assert!(message_from_raw(b"{\"type\":\"other\"}").is_none());
    }

    #[test]
    fn presence_events_carry_the_bare_channel() {
        let (_, m) = Member::of(Some("u1"), "s1");
        let v: serde_json::Value = event_json(&presence(true, "order:1", &m, "x", "t"));
        assert_eq!(v[0], "presence:join");
        assert_eq!(v[1]["member"]["type"], "user");
        assert_eq!(v[1]["member"]["presenceId"], "u1");
        assert_eq!(v[1]["meta"]["channel"], "order:1");
        assert_eq!(v[1]["meta"]["senderType"], "system");
    }
}
