//! The Engine.IO v4 and Socket.IO v5 packet codec, websocket transport only: one Engine.IO
//! packet per WebSocket text message, its first character the packet type; a Socket.IO
//! packet rides inside an Engine.IO `message` (`4`) as
//! `<type>[<attachments>-][/<nsp>,][<ack id>][<JSON>]`.
//!
//! Decoding borrows from the message text and refuses anything malformed with a `SioError`
//! that says what was wrong (never a panic). Encoding writes whole text frames (`frame`), so
//! a delivery's Socket.IO frame is built once and shared like the raw protocol's.

use bytes::Bytes;
use serde::Serialize;
use serde_json::value::RawValue;

use crate::frame;

/// The longest ack id accepted (digits). socket.io-client counts from 0 per socket.
const MAX_ACK_DIGITS: usize = 15;
/// The longest namespace accepted.
const MAX_NSP: usize = 256;

/// What a client message is, or why it cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SioError {
    #[error("empty Engine.IO packet")]
    Empty,
    #[error("unknown Engine.IO packet type `{0}`")]
    EngineType(char),
    #[error("unknown Socket.IO packet type `{0}`")]
    SocketType(char),
    #[error("empty Socket.IO packet")]
    EmptySocket,
    #[error("Socket.IO namespace is not terminated by `,` or is too long")]
    Namespace,
    #[error("Socket.IO attachment count is malformed")]
    Attachments,
    #[error("Socket.IO ack id is too long")]
    AckId,
    #[error("Socket.IO packet data is not valid JSON: {0}")]
    Json(String),
    #[error("Socket.IO event data must be a non-empty array starting with the event name")]
    EventShape,
    #[error("binary Socket.IO packets are not supported; send JSON payloads")]
    Binary,
}

/// One Engine.IO packet from the client.
#[derive(Debug, PartialEq, Eq)]
pub enum Engine<'a> {
    Open,
    Close,
    Ping(&'a str),
    Pong(&'a str),
    Message(&'a str),
    Upgrade,
    Noop,
}

/// Decodes one Engine.IO packet (a whole WebSocket text message).
pub fn decode_engine(text: &str) -> Result<Engine<'_>, SioError> {
    let mut chars = text.chars();
    let t = chars.next().ok_or(SioError::Empty)?;
    let rest = chars.as_str();
    Ok(match t {
        '0' => Engine::Open,
        '1' => Engine::Close,
        '2' => Engine::Ping(rest),
        '3' => Engine::Pong(rest),
        '4' => Engine::Message(rest),
        '5' => Engine::Upgrade,
        '6' => Engine::Noop,
        other => return Err(SioError::EngineType(other)),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Connect,
    Disconnect,
    Event,
    Ack,
    ConnectError,
    BinaryEvent,
    BinaryAck,
}

/// One Socket.IO packet from the client.
#[derive(Debug, PartialEq, Eq)]
pub struct Packet<'a> {
    pub kind: Kind,
    /// `/` for the main namespace.
    pub nsp: &'a str,
    pub ack: Option<u64>,
    /// The JSON data, unparsed (`None`: none given).
    pub data: Option<&'a str>,
}

/// Decodes the Socket.IO packet inside an Engine.IO `message`.
pub fn decode_socket(text: &str) -> Result<Packet<'_>, SioError> {
    let mut chars = text.chars();
    let kind = match chars.next().ok_or(SioError::EmptySocket)? {
        '0' => Kind::Connect,
        '1' => Kind::Disconnect,
        '2' => Kind::Event,
        '3' => Kind::Ack,
        '4' => Kind::ConnectError,
        '5' => Kind::BinaryEvent,
        '6' => Kind::BinaryAck,
        other => return Err(SioError::SocketType(other)),
    };
    let mut rest = chars.as_str();
    if matches!(kind, Kind::BinaryEvent | Kind::BinaryAck) {
        // `<n>-` attachments follow the type; we refuse binary, but say so only once the
        // packet is known to be well formed up to here.
        let dash = rest.find('-').ok_or(SioError::Attachments)?;
        if dash == 0 || !rest[..dash].bytes().all(|b| b.is_ascii_digit()) {
            return Err(SioError::Attachments);
        }
        return Err(SioError::Binary);
    }
    let mut nsp = "/";
    if rest.starts_with('/') {
        let end = rest.find(',').unwrap_or(rest.len());
        if end > MAX_NSP {
            return Err(SioError::Namespace);
        }
        nsp = &rest[..end];
        rest = rest.get(end + 1..).unwrap_or("");
    }
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let ack = if digits > 0 {
        if digits > MAX_ACK_DIGITS {
            return Err(SioError::AckId);
        }
        let id = rest[..digits].parse::<u64>().map_err(|_| SioError::AckId)?;
        rest = &rest[digits..];
        Some(id)
    } else {
        None
    };
    let data = (!rest.is_empty()).then_some(rest);
    Ok(Packet {
        kind,
        nsp,
        ack,
        data,
    })
}

/// An EVENT's data: the event name and its arguments (raw JSON).
#[derive(Debug)]
pub struct Event<'a> {
    pub name: std::borrow::Cow<'a, str>,
    pub args: Vec<&'a RawValue>,
}

/// Reads an EVENT's data: a JSON array whose first element is the event name.
pub fn decode_event(data: &str) -> Result<Event<'_>, SioError> {
    let items: Vec<&RawValue> =
        serde_json::from_str(data).map_err(|e| SioError::Json(e.to_string()))?;
    let (first, args) = items.split_first().ok_or(SioError::EventShape)?;
    let name: std::borrow::Cow<'_, str> =
        serde_json::from_str(first.get()).map_err(|_| SioError::EventShape)?;
    Ok(Event {
        name,
        args: args.to_vec(),
    })
}

/// Engine.IO `open`, sent right after the upgrade. Every field is required by the client.
pub fn open(sid: &str, ping_interval_ms: u64, ping_timeout_ms: u64, max_payload: usize) -> Bytes {
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Open<'a> {
        sid: &'a str,
        upgrades: [&'a str; 0],
        ping_interval: u64,
        ping_timeout: u64,
        max_payload: usize,
    }
    with_prefix(
        "0",
        &Open {
            sid,
            upgrades: [],
            ping_interval: ping_interval_ms,
            ping_timeout: ping_timeout_ms,
            max_payload,
        },
    )
}

/// Engine.IO `ping` (in v4 the server pings).
pub fn ping() -> Bytes {
    frame::text_frame({
        let mut b = frame::text_buf(1);
        b.push(b'2');
        b
    })
}

/// Engine.IO `pong`, answering a client ping (with its probe data, if any).
pub fn pong(data: &str) -> Bytes {
    let mut b = frame::text_buf(1 + data.len());
    b.push(b'3');
    b.extend_from_slice(data.as_bytes());
    frame::text_frame(b)
}

/// Socket.IO CONNECT accepted: `40{"sid":..}` (or `40/<nsp>,{..}`).
pub fn connected(nsp: &str, sid: &str) -> Bytes {
    #[derive(Serialize)]
    struct Sid<'a> {
        sid: &'a str,
    }
    with_prefix(&socket_prefix('0', nsp), &Sid { sid })
}

/// Socket.IO CONNECT_ERROR: `44{"message":..}` (or `44/<nsp>,{..}`).
pub fn connect_error(nsp: &str, message: &str) -> Bytes {
    #[derive(Serialize)]
    struct Msg<'a> {
        message: &'a str,
    }
    with_prefix(&socket_prefix('4', nsp), &Msg { message })
}

/// Socket.IO EVENT on the main namespace: `42[name, data]`.
pub fn event<T: Serialize + ?Sized>(name: &str, data: &T) -> Bytes {
    with_prefix("42", &(name, data))
}

/// Socket.IO ACK on the main namespace: `43<id>[data]`.
pub fn ack<T: Serialize + ?Sized>(id: u64, data: &T) -> Bytes {
    with_prefix(&format!("43{id}"), &[data])
}

/// `4` + the Socket.IO type + the namespace part (`/<nsp>,` unless it is `/`).
fn socket_prefix(t: char, nsp: &str) -> String {
    if nsp == "/" {
        format!("4{t}")
    } else {
        format!("4{t}{nsp},")
    }
}

/// A text frame of `prefix` followed by `value` as JSON.
fn with_prefix<T: Serialize + ?Sized>(prefix: &str, value: &T) -> Bytes {
    let mut b = frame::text_buf(prefix.len() + 64);
    b.extend_from_slice(prefix.as_bytes());
    serde_json::to_writer(&mut b, value).expect("serializing to a Vec cannot fail");
    frame::text_frame(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(frame::payload_of(b)).unwrap()
    }

    #[test]
    fn engine_packets() {
        assert_eq!(decode_engine("2"), Ok(Engine::Ping("")));
        assert_eq!(decode_engine("3probe"), Ok(Engine::Pong("probe")));
        assert_eq!(decode_engine("40{}"), Ok(Engine::Message("0{}")));
        assert_eq!(decode_engine("1"), Ok(Engine::Close));
        assert_eq!(decode_engine("6"), Ok(Engine::Noop));
        assert_eq!(decode_engine(""), Err(SioError::Empty));
        assert_eq!(decode_engine("7"), Err(SioError::EngineType('7')));
        assert_eq!(
            decode_engine("{\"type\":1}"),
            Err(SioError::EngineType('{'))
        );
        assert_eq!(decode_engine("é"), Err(SioError::EngineType('é')));
    }

    #[test]
    fn socket_packets() {
        let p = decode_socket(r#"0{"token":"t"}"#).unwrap();
        assert_eq!(
            (p.kind, p.nsp, p.ack, p.data),
            (Kind::Connect, "/", None, Some(r#"{"token":"t"}"#))
        );
        let p = decode_socket("0/v1/realtime,{}").unwrap();
        assert_eq!((p.nsp, p.data), ("/v1/realtime", Some("{}")));
        let p = decode_socket("0/admin").unwrap();
        assert_eq!((p.nsp, p.data), ("/admin", None));
        let p = decode_socket(r#"21234["realtime:subscribe",{"channel":"a"}]"#).unwrap();
        assert_eq!((p.kind, p.ack), (Kind::Event, Some(1234)));
        let p = decode_socket(r#"2/x,7["e"]"#).unwrap();
        assert_eq!((p.nsp, p.ack, p.data), ("/x", Some(7), Some(r#"["e"]"#)));
        let p = decode_socket("1").unwrap();
        assert_eq!((p.kind, p.data), (Kind::Disconnect, None));
        assert_eq!(decode_socket(""), Err(SioError::EmptySocket));
        assert_eq!(decode_socket("9"), Err(SioError::SocketType('9')));
        assert_eq!(
            decode_socket(&format!("2{}[\"e\"]", "9".repeat(16))),
            Err(SioError::AckId)
        );
        assert_eq!(
            decode_socket(&format!("0/{}", "a".repeat(300))),
            Err(SioError::Namespace)
        );
        assert_eq!(decode_socket(r#"51-["e",{}]"#), Err(SioError::Binary));
        assert_eq!(decode_socket(r#"5-["e"]"#), Err(SioError::Attachments));
        assert_eq!(decode_socket(r#"5x-["e"]"#), Err(SioError::Attachments));
        assert_eq!(decode_socket(r#"5["e"]"#), Err(SioError::Attachments));
    }

    #[test]
    fn events() {
        let e =
            decode_event(r#"["realtime:publish",{"channel":"a","payload":{"x":[1]}}]"#).unwrap();
        assert_eq!(e.name, "realtime:publish");
        assert_eq!(e.args.len(), 1);
        assert_eq!(decode_event(r#"["e\u00e9"]"#).unwrap().name, "eé");
        for bad in ["[]", "[1]", "{}", "\"e\"", "[\"e\"", "", "[null]"] {
            assert!(decode_event(bad).is_err(), "{bad}");
        }
        assert!(matches!(decode_event("[\"e\",}"), Err(SioError::Json(_))));
    }

    /// Mutations of valid packets (a small xorshift, fixed seed): every decoder answers
    /// `Ok` or `Err`, never panics.
    #[test]
    fn mutated_packets_never_panic() {
        let seeds = [
            r#"40{"token":"abc"}"#,
            r#"40/v1/realtime,{"token":"x"}"#,
            r#"4212["realtime:subscribe",{"channel":"room:1"}]"#,
            r#"42["realtime:publish",{"channel":"a","event":"e","payload":{"k":[1,{"z":null}]}}]"#,
            r#"451-["e",{"_placeholder":true,"num":0}]"#,
            "2probe",
            "41",
        ];
        let alphabet: Vec<char> = "0123456789[]{}\",:/-éabc \u{0}\u{7f}✓".chars().collect();
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for i in 0..20_000 {
            let mut chars: Vec<char> = seeds[i % seeds.len()].chars().collect();
            for _ in 0..1 + next() % 4 {
                let pos = (next() as usize) % (chars.len() + 1);
                let c = alphabet[(next() as usize) % alphabet.len()];
                match next() % 3 {
                    0 if pos < chars.len() => chars[pos] = c,
                    1 if pos < chars.len() => {
                        chars.remove(pos);
                    }
                    _ => chars.insert(pos, c),
                }
            }
            let text: String = chars.into_iter().collect();
            if let Ok(Engine::Message(m)) = decode_engine(&text)
                && let Ok(p) = decode_socket(m)
                && let Some(d) = p.data
            {
                let _ = decode_event(d);
            }
        }
    }

    #[test]
    fn encodings() {
        assert_eq!(
            text(&open("abc", 25000, 20000, 1000000)),
            r#"0{"sid":"abc","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#
        );
        assert_eq!(text(&ping()), "2");
        assert_eq!(text(&pong("probe")), "3probe");
        assert_eq!(text(&connected("/", "s1")), r#"40{"sid":"s1"}"#);
        assert_eq!(
            text(&connect_error("/v1", "Invalid namespace")),
            r#"44/v1,{"message":"Invalid namespace"}"#
        );
        assert_eq!(
            text(&event("realtime:error", &serde_json::json!({"code": "X"}))),
            r#"42["realtime:error",{"code":"X"}]"#
        );
        assert_eq!(
            text(&ack(12, &serde_json::json!({"ok": true}))),
            r#"4312[{"ok":true}]"#
        );
    }
}
