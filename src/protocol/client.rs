//! Client -> server messages. Parsing is strict and happens once per text frame: unknown
//! fields, wrong types, missing fields and fields that do not belong to the message `type` are
//! all `INVALID_MESSAGE`; an unknown `type` is `UNKNOWN_TYPE`. `payload` is kept as raw JSON
//! so it is copied, never re-serialized, on its way to subscribers.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{ErrorCode, ProtocolError};
use crate::channel::ChannelName;

/// Everything any client message may carry; `ClientMsg::from_wire` checks which belong.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
    #[serde(rename = "ref", borrow)]
    r#ref: Option<&'a RawValue>,
    #[serde(borrow)]
    token: Option<Cow<'a, str>>,
    #[serde(borrow)]
    channel: Option<Cow<'a, str>>,
    #[serde(borrow)]
    event: Option<Cow<'a, str>>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
    #[serde(default, deserialize_with = "super::object::opt")]
    filter: Option<DbFilter>,
    #[serde(default, deserialize_with = "super::object::opt")]
    since: Option<Since>,
    presence: Option<bool>,
    #[serde(rename = "idempotencyKey", borrow)]
    idempotency_key: Option<Cow<'a, str>>,
}

/// Where a reconnecting subscriber stands in a channel: the last offset it received and the
/// channel's `epoch` then (both from `subscribed`, `message` or `reconnect` frames).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Since {
    pub offset: u64,
    pub epoch: String,
}

/// Longest `idempotencyKey`, in bytes.
pub const MAX_IDEMPOTENCY_KEY: usize = 128;

/// Checks an `idempotencyKey` (WebSocket and HTTP publishes).
pub fn check_idempotency_key(k: &str) -> Result<(), String> {
    if k.is_empty() || k.len() > MAX_IDEMPOTENCY_KEY {
        return Err(format!(
            "`idempotencyKey` must be 1..={MAX_IDEMPOTENCY_KEY} bytes"
        ));
    }
    Ok(())
}

/// Lenient second pass used only to echo `ref` when the strict parse failed.
#[derive(Deserialize)]
struct RefOnly<'a> {
    #[serde(rename = "ref", borrow)]
    r#ref: Option<&'a RawValue>,
}

/// The seed's `filter` on `db:` subscriptions, plus a row filter (`where`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DbFilter {
    /// `INSERT`, `UPDATE`, `DELETE` or `*` (default `*`).
    #[serde(default)]
    pub event: Option<String>,
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(default)]
    pub table: Option<String>,
    /// Matched against the change's `new` row (`old` for DELETE).
    #[serde(default, rename = "where", deserialize_with = "super::object::opt")]
    pub row: Option<super::row_filter::RowFilter>,
}

impl DbFilter {
    pub fn validate(&self) -> Result<(), String> {
        match self.event.as_deref() {
            None | Some("*" | "INSERT" | "UPDATE" | "DELETE") => {}
            Some(other) => {
                return Err(format!(
                    "filter.event `{other}` is not one of INSERT, UPDATE, DELETE, *"
                ));
            }
        }
        self.row.as_ref().map_or(Ok(()), |r| r.validate())
    }

    /// Whether a message with this event (and payload schema) passes the event and schema
    /// filters. A `GAP` notice passes every event filter: each subscriber must hear of it.
    pub fn accepts(&self, event: &str, schema: Option<&str>) -> bool {
        let ev_ok = match self.event.as_deref() {
            None | Some("*") => true,
            Some(_) if event == "GAP" => true,
            Some(e) => e.eq_ignore_ascii_case(event),
        };
        let schema_ok = match (self.schema.as_deref(), schema) {
            (None, _) => true,
            (Some(want), Some(got)) => want == got,
            (Some(_), None) => false,
        };
        ev_ok && schema_ok
    }
}

#[derive(Debug)]
pub enum ClientMsg<'a> {
    Auth {
        token: Cow<'a, str>,
    },
    Subscribe {
        channel: ChannelName,
        filter: Option<DbFilter>,
        /// Recover what was missed since this position first.
        since: Option<Since>,
        /// The channel's members in `subscribed`, then `presence` frames.
        presence: bool,
    },
    Unsubscribe {
        channel: ChannelName,
    },
    Publish {
        channel: ChannelName,
        event: Cow<'a, str>,
        /// Raw JSON of the payload (`null` when absent).
        payload: &'a RawValue,
        idempotency_key: Option<Cow<'a, str>>,
    },
}

/// A parsed client message with its `ref`.
#[derive(Debug)]
pub struct Inbound<'a> {
    pub msg: ClientMsg<'a>,
    pub r#ref: Option<&'a RawValue>,
}

pub const MAX_EVENT_LEN: usize = 255;

/// Event names no publish may use, on any protocol: Socket.IO clients drop the connection on
/// the first six (`parse error`), and the InsForge SDK reads the rest as its own events
/// (`error`, `realtime:error`, presence), so a message with one of them could not reach
/// SDK subscribers as what it is.
pub const RESERVED_EVENTS: [&str; 10] = [
    "connect",
    "connect_error",
    "disconnect",
    "disconnecting",
    "newListener",
    "removeListener",
    "error",
    "realtime:error",
    "presence:join",
    "presence:leave",
];

/// Why `event` cannot be published, if it cannot.
pub fn check_event_name(event: &str) -> Result<(), String> {
    if event.is_empty() || event.len() > MAX_EVENT_LEN {
        return Err(format!("`event` must be 1..={MAX_EVENT_LEN} bytes"));
    }
    if RESERVED_EVENTS.contains(&event) {
        return Err(format!(
            "`event` `{event}` is reserved (Socket.IO and the InsForge SDK use it)"
        ));
    }
    Ok(())
}

/// Parses one text frame. On error, the returned `ProtocolError` carries the `ref` if any.
pub fn parse_client(text: &str) -> Result<Inbound<'_>, ProtocolError> {
    if !super::object::is_object(text.as_bytes()) {
        return Err(ProtocolError::new(
            ErrorCode::InvalidMessage,
            format!(
                "a message must be a JSON object, got `{}`",
                super::object::preview(text.trim_start())
            ),
        ));
    }
    let wire: Wire<'_> = serde_json::from_str(text).map_err(|e| {
        let r = serde_json::from_str::<RefOnly<'_>>(text)
            .ok()
            .and_then(|x| x.r#ref)
            .filter(|r| valid_ref(r));
        let msg = if e.is_syntax() || e.is_eof() {
            format!("malformed JSON: {e}")
        } else {
            format!("invalid message: {e}")
        };
        ProtocolError::new(ErrorCode::InvalidMessage, msg).with_ref(r)
    })?;
    let r = wire.r#ref;
    if let Some(raw) = r
        && !valid_ref(raw)
    {
        return Err(ProtocolError::new(
            ErrorCode::InvalidMessage,
            "`ref` must be a string or a number",
        ));
    }
    ClientMsg::from_wire(wire)
        .map(|msg| Inbound { msg, r#ref: r })
        .map_err(|e| e.with_ref(r))
}

fn valid_ref(r: &RawValue) -> bool {
    let s = r.get();
    s.starts_with('"') || s.starts_with(|c: char| c == '-' || c.is_ascii_digit())
}

fn invalid(msg: impl Into<String>) -> ProtocolError {
    ProtocolError::new(ErrorCode::InvalidMessage, msg)
}

fn null() -> &'static RawValue {
    // A constant raw `null`, for publishes without a payload.
    static NULL: std::sync::OnceLock<Box<RawValue>> = std::sync::OnceLock::new();
    NULL.get_or_init(|| RawValue::from_string("null".into()).expect("valid JSON"))
}

impl<'a> ClientMsg<'a> {
    fn from_wire(w: Wire<'a>) -> Result<Self, ProtocolError> {
        let kind = w.kind.ok_or_else(|| invalid("missing field `type`"))?;
        let channel = |c: Option<Cow<'a, str>>| -> Result<ChannelName, ProtocolError> {
            let c = c.ok_or_else(|| invalid("missing field `channel`"))?;
            ChannelName::parse(&c).map_err(|e| invalid(format!("invalid channel `{c}`: {e}")))
        };
        let reject = |present: bool, field: &str| -> Result<(), ProtocolError> {
            if present {
                Err(invalid(format!(
                    "field `{field}` does not belong to a `{kind}` message"
                )))
            } else {
                Ok(())
            }
        };
        match kind.as_ref() {
            "auth" => {
                reject(w.since.is_some(), "since")?;
                reject(w.presence.is_some(), "presence")?;
                reject(w.idempotency_key.is_some(), "idempotencyKey")?;
                reject(w.channel.is_some(), "channel")?;
                reject(w.event.is_some(), "event")?;
                reject(w.payload.is_some(), "payload")?;
                reject(w.filter.is_some(), "filter")?;
                let token = w.token.ok_or_else(|| invalid("missing field `token`"))?;
                Ok(Self::Auth { token })
            }
            "subscribe" => {
                reject(w.token.is_some(), "token")?;
                reject(w.event.is_some(), "event")?;
                reject(w.payload.is_some(), "payload")?;
                reject(w.idempotency_key.is_some(), "idempotencyKey")?;
                if let Some(f) = &w.filter {
                    f.validate().map_err(invalid)?;
                }
                Ok(Self::Subscribe {
                    channel: channel(w.channel)?,
                    filter: w.filter,
                    since: w.since,
                    presence: w.presence.unwrap_or(false),
                })
            }
            "unsubscribe" => {
                reject(w.token.is_some(), "token")?;
                reject(w.event.is_some(), "event")?;
                reject(w.payload.is_some(), "payload")?;
                reject(w.filter.is_some(), "filter")?;
                reject(w.since.is_some(), "since")?;
                reject(w.presence.is_some(), "presence")?;
                reject(w.idempotency_key.is_some(), "idempotencyKey")?;
                Ok(Self::Unsubscribe {
                    channel: channel(w.channel)?,
                })
            }
            "publish" => {
                reject(w.token.is_some(), "token")?;
                reject(w.filter.is_some(), "filter")?;
                reject(w.since.is_some(), "since")?;
                reject(w.presence.is_some(), "presence")?;
                if let Some(k) = &w.idempotency_key {
                    check_idempotency_key(k).map_err(invalid)?;
                }
                let channel = channel(w.channel)?;
                let event = w.event.ok_or_else(|| invalid("missing field `event`"))?;
                check_event_name(&event).map_err(invalid)?;
                Ok(Self::Publish {
                    channel,
                    event,
                    payload: match w.payload {
                        Some(p) => p,
                        None => null(),
                    },
                    idempotency_key: w.idempotency_key,
                })
            }
            other => Err(ProtocolError::new(
                ErrorCode::UnknownType,
                format!("unknown message type `{other}`"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(text: &str) -> ErrorCode {
        parse_client(text).unwrap_err().code
    }

    #[test]
    fn parses_every_frame() {
        let m = parse_client(r#"{"type":"auth","token":"abc","ref":1}"#).unwrap();
        assert!(matches!(m.msg, ClientMsg::Auth { ref token } if token == "abc"));
        assert_eq!(m.r#ref.unwrap().get(), "1");
        let m = parse_client(r#"{"type":"subscribe","channel":"db:posts","filter":{"event":"INSERT","schema":"public"}}"#).unwrap();
        assert!(matches!(
            m.msg,
            ClientMsg::Subscribe {
                filter: Some(_),
                ..
            }
        ));
        let m = parse_client(
            r#"{"type":"subscribe","channel":"order:1","since":{"offset":7,"epoch":"ab12"}}"#,
        )
        .unwrap();
        assert!(matches!(
            m.msg,
            ClientMsg::Subscribe { since: Some(Since { offset: 7, ref epoch }), .. } if epoch == "ab12"
        ));
        let m = parse_client(
            r#"{"type":"publish","channel":"order:1","event":"e","idempotencyKey":"k-1"}"#,
        )
        .unwrap();
        assert!(matches!(
            m.msg,
            ClientMsg::Publish { idempotency_key: Some(ref k), .. } if k == "k-1"
        ));
        let m = parse_client(r#"{"type":"unsubscribe","channel":"order:1"}"#).unwrap();
        assert!(matches!(m.msg, ClientMsg::Unsubscribe { .. }));
        let m = parse_client(
            r#"{"type":"publish","channel":"order:1","event":"e","payload":{"a":[1,2]},"ref":"x"}"#,
        )
        .unwrap();
        match m.msg {
            ClientMsg::Publish { payload, .. } => assert_eq!(payload.get(), r#"{"a":[1,2]}"#),
            _ => panic!(),
        }
    }

    #[test]
    fn bad_messages_get_stable_codes() {
        assert_eq!(code("{"), ErrorCode::InvalidMessage);
        assert_eq!(code("[]"), ErrorCode::InvalidMessage);
        assert_eq!(code(r#"{"type":"nope"}"#), ErrorCode::UnknownType);
        assert_eq!(code(r#"{"type":"auth"}"#), ErrorCode::InvalidMessage);
        assert_eq!(
            code(r#"{"type":"auth","token":5}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"auth","token":"t","x":1}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"subscribe","channel":"a","token":"t"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"subscribe","channel":"a b"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"publish","channel":"a"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"subscribe","channel":"db:x","filter":{"event":"X"}}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(code(r#"{"channel":"a"}"#), ErrorCode::InvalidMessage);
        assert_eq!(
            code(r#"{"type":"subscribe","channel":"a","since":{"offset":-1,"epoch":"e"}}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"subscribe","channel":"a","since":{"offset":1}}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(
                r#"{"type":"publish","channel":"a","event":"e","since":{"offset":1,"epoch":"e"}}"#
            ),
            ErrorCode::InvalidMessage
        );
        let long = "k".repeat(129);
        assert_eq!(
            code(&format!(
                r#"{{"type":"publish","channel":"a","event":"e","idempotencyKey":"{long}"}}"#
            )),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"publish","channel":"a","event":"e","idempotencyKey":""}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"subscribe","channel":"a","idempotencyKey":"k"}"#),
            ErrorCode::InvalidMessage
        );
        assert_eq!(
            code(r#"{"type":"auth","token":"t","ref":{}}"#),
            ErrorCode::InvalidMessage
        );
    }

    #[test]
    fn ref_is_kept_on_errors() {
        let e = parse_client(r#"{"type":"auth","ref":"r1","bogus":true}"#).unwrap_err();
        assert_eq!(e.r#ref.unwrap().get(), r#""r1""#);
        let e = parse_client(r#"{"type":"zzz","ref":7}"#).unwrap_err();
        assert_eq!(e.r#ref.unwrap().get(), "7");
    }

    #[test]
    fn filters() {
        let f = DbFilter {
            event: Some("INSERT".into()),
            schema: Some("public".into()),
            table: None,
            row: None,
        };
        assert!(f.accepts("INSERT", Some("public")));
        assert!(!f.accepts("UPDATE", Some("public")));
        assert!(!f.accepts("INSERT", Some("other")));
        let any = DbFilter {
            event: Some("*".into()),
            schema: None,
            table: None,
            row: None,
        };
        assert!(any.accepts("DELETE", None));
    }
}
