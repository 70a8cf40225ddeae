//! The Socket.IO client side `fanout --protocol socketio` and `presence` need, over [`RawWs`]: Engine.IO v4
//! packets carrying Socket.IO v5 packets on the WebSocket transport, as the InsForge SDK
//! (socket.io-client 4.8) speaks them (/work/shared/notes/INSFORGE-SDK.md §2, §3, §5). Each
//! Engine.IO packet is one text frame whose first byte is its type (`0` open, `1` close, `2`
//! ping, `3` pong, `4` message, `6` noop); a Socket.IO packet rides in a `4`:
//! `4<type>[<nsp>,][<ack id>]<json>`. Only the default namespace `/` is used.
//!
//! The handshake ([`handshake`]): read the open packet `0{"sid",..,"pingInterval",..}`, send
//! `40{"token":JWT}`, wait for `40{"sid":..}` (`44{"message":..}` is a refusal), send
//! `42<n>["realtime:subscribe",{"channel":C}]` and wait for `43<n>[{"ok":true,..}]`.
//!
//! `presence` connects first ([`connect`]) and subscribes later, to several channels at once
//! ([`subscribe`]) or one at a time (`realtime:unsubscribe`, [`unsubscribe_msg`], in between);
//! its watchers read whose presence event it is ([`presence`]).
//!
//! Deliveries are `42["<event>",{<payload keys>..,"meta":{..}}]`: the publisher's payload
//! spread at the top level of the object. [`parse`] reads only the payload's `ts`, `seq` and
//! `pub` (numbers, so nothing is allocated); `meta` and `pad` are skipped, not kept.

use anyhow::{Context, bail};
use serde::{Deserialize, de::IgnoredAny};

use crate::rawws::{Frame, RawWs};

/// The upgrade request path: the SDK always uses `/socket.io/` at the origin root (a path in
/// its `baseUrl` becomes a namespace, not a prefix), WebSocket transport only.
pub const PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// The Engine.IO pong, the answer to every ping (`2`).
pub const PONG: &str = "3";

/// One server text frame, classified.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0{..}`: the Engine.IO open packet (its JSON).
    Open(&'a [u8]),
    /// `1`: Engine.IO close.
    Close,
    /// `2`: Engine.IO ping; answer [`PONG`].
    Ping,
    /// `40{..}`: Socket.IO CONNECT accepted (its JSON, with the socket `sid`).
    Connect(&'a [u8]),
    /// `41`: Socket.IO DISCONNECT from the server (a client does not reconnect after it).
    Disconnect,
    /// `42[..]`: an event.
    Event(Event<'a>),
    /// `43<id>[..]`: the reply to our event `id` (its JSON array).
    Ack { id: u64, data: &'a [u8] },
    /// `44{"message":..}`: CONNECT refused (its JSON, see [`connect_error`]).
    ConnectError(&'a [u8]),
    /// Anything else: pong, noop, upgrade, other namespaces, binary packets, garbage.
    Other,
}

/// A Socket.IO event from the server.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A delivered message: what its spread payload says.
    Delivery(Delivery),
    /// `presence:join` / `presence:leave` (the whole `[name, {..}]` array: [`presence`]
    /// reads it when the caller wants to know whose).
    Presence(&'a [u8]),
    /// `realtime:error` (its JSON, the whole `[name, {..}]` array).
    Error(&'a [u8]),
    /// Not the `[name, {..}]` shape, or not JSON.
    Malformed,
}

/// The harness's payload fields of a delivery, at the top level of the event's object next to
/// `meta` (`None` where absent). Everything else in the object is skipped.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
pub struct Delivery {
    /// Send time, unix nanos.
    pub ts: Option<u64>,
    /// The publisher's own numbering, 1, 2, 3..
    pub seq: Option<u64>,
    /// The publisher's index.
    #[serde(rename = "pub")]
    pub publisher: Option<u64>,
}

/// The Engine.IO open packet's fields this client needs (every one is required: socket.io-client
/// computes a NaN timer without `pingInterval` and drops the connection at once).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Open {
    pub sid: String,
    /// Milliseconds between the server's pings.
    pub ping_interval: u64,
    /// Milliseconds the client waits past `ping_interval` for a ping before giving up.
    pub ping_timeout: u64,
}

/// Classifies one server text frame. Cheap for the frequent kinds: a ping is one byte, a
/// presence event a prefix check, a delivery one serde_json pass over the event.
pub fn parse(b: &[u8]) -> Packet<'_> {
    match b {
        [b'2'] => Packet::Ping,
        [b'4', b'2', rest @ ..] => Packet::Event(event(rest)),
        [b'0', json @ ..] => Packet::Open(json),
        [b'1'] => Packet::Close,
        [b'4', b'0', json @ ..] => Packet::Connect(json),
        [b'4', b'1', ..] => Packet::Disconnect,
        [b'4', b'3', rest @ ..] => {
            let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
            match std::str::from_utf8(&rest[..digits])
                .ok()
                .and_then(|d| d.parse().ok())
            {
                Some(id) => Packet::Ack {
                    id,
                    data: &rest[digits..],
                },
                None => Packet::Other,
            }
        }
        [b'4', b'4', json @ ..] => Packet::ConnectError(json),
        _ => Packet::Other,
    }
}

/// The event after `42`: an optional ack id (the server asking for a reply; none is sent),
/// then `[name, data]`.
fn event(rest: &[u8]) -> Event<'_> {
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let json = &rest[digits..];
    if json.starts_with(b"[\"presence:join\"") || json.starts_with(b"[\"presence:leave\"") {
        return Event::Presence(json);
    }
    if json.starts_with(b"[\"realtime:error\"") {
        return Event::Error(json);
    }
    match serde_json::from_slice::<(IgnoredAny, Delivery)>(json) {
        Ok((_, d)) => Event::Delivery(d),
        Err(_) => Event::Malformed,
    }
}

/// The open packet's JSON (after the `0`).
pub fn open(json: &[u8]) -> anyhow::Result<Open> {
    serde_json::from_slice(json).with_context(|| {
        format!(
            "Engine.IO open packet without sid, pingInterval and pingTimeout: 0{}",
            String::from_utf8_lossy(json)
        )
    })
}

/// What a `presence:join` / `presence:leave` event says: who, on which channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Presence<'a> {
    /// `presence:join` (else `presence:leave`).
    pub join: bool,
    /// `member.presenceId`: the JWT `sub` of a user member.
    pub presence_id: &'a str,
    /// `meta.channel`: the bare channel name.
    pub channel: &'a str,
}

/// Reads a presence event's array (from [`Event::Presence`]):
/// `["presence:join"|"presence:leave",{"member":{"presenceId":..,..},"meta":{"channel":..,..}}]`.
/// `None` if it has another shape, or escapes in those two strings (the harness's ids and
/// channel names have none).
pub fn presence(json: &[u8]) -> Option<Presence<'_>> {
    #[derive(Deserialize)]
    struct Body<'a> {
        #[serde(borrow)]
        member: Member<'a>,
        #[serde(borrow)]
        meta: Meta<'a>,
    }
    #[derive(Deserialize)]
    struct Member<'a> {
        #[serde(rename = "presenceId")]
        presence_id: &'a str,
    }
    #[derive(Deserialize)]
    struct Meta<'a> {
        channel: &'a str,
    }
    let (name, body): (&str, Body<'_>) = serde_json::from_slice(json).ok()?;
    let join = match name {
        "presence:join" => true,
        "presence:leave" => false,
        _ => return None,
    };
    Some(Presence {
        join,
        presence_id: body.member.presence_id,
        channel: body.meta.channel,
    })
}

/// The message of a CONNECT_ERROR (`44{"message":..}`, or a bare JSON string).
pub fn connect_error(json: &[u8]) -> String {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Refusal {
        Object { message: String },
        Text(String),
    }
    match serde_json::from_slice::<Refusal>(json) {
        Ok(Refusal::Object { message } | Refusal::Text(message)) => message,
        Err(_) => String::from_utf8_lossy(json).into_owned(),
    }
}

/// The reply to `realtime:subscribe` (`43<n>[{"ok":..,..}]`): `Ok` if accepted, else the
/// refusal's code and message.
pub fn subscribe_ack(data: &[u8]) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct Reply {
        ok: bool,
        #[serde(default)]
        error: Option<ReplyError>,
    }
    #[derive(Deserialize)]
    struct ReplyError {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    let text = || String::from_utf8_lossy(data);
    let (reply,): (Reply,) = serde_json::from_slice(data)
        .with_context(|| format!("subscribe ack is not [{{\"ok\":..}}]: {}", text()))?;
    match reply {
        Reply { ok: true, .. } => Ok(()),
        Reply { error: Some(e), .. } => bail!("subscribe refused: {} {}", e.code, e.message),
        Reply { error: None, .. } => bail!("subscribe refused: {}", text()),
    }
}

/// `40{"token":..}`: CONNECT to `/` with the SDK's auth object.
pub fn connect_msg(token: &str) -> String {
    format!("40{}", serde_json::json!({ "token": token }))
}

/// `42<id>["realtime:subscribe",{"channel":..}]`.
pub fn subscribe_msg(ack_id: u64, channel: &str) -> String {
    format!(
        "42{ack_id}{}",
        serde_json::json!(["realtime:subscribe", { "channel": channel }])
    )
}

/// `42["realtime:unsubscribe",{"channel":..}]` (no ack id: the server does not answer).
pub fn unsubscribe_msg(channel: &str) -> String {
    format!(
        "42{}",
        serde_json::json!(["realtime:unsubscribe", { "channel": channel }])
    )
}

/// After the WebSocket upgrade on [`PATH`]: the open packet, CONNECT with `token`, then
/// `realtime:subscribe` to `channel` (ack id 0, the first of this connection's counter).
/// Pings that come meanwhile are answered; other events (presence of earlier subscribers)
/// are skipped. Frames after the ack stay buffered in `ws`.
pub async fn handshake(ws: &mut RawWs, token: &str, channel: &str) -> anyhow::Result<Open> {
    let open = connect(ws, token).await?;
    subscribe(ws, 0, &[channel]).await?;
    Ok(open)
}

/// The open packet and CONNECT with `token` (no subscription yet); pings meanwhile are
/// answered.
pub async fn connect(ws: &mut RawWs, token: &str) -> anyhow::Result<Open> {
    let first = next_text(ws).await.context("waiting for the open packet")?;
    let open = match parse(&first) {
        Packet::Open(json) => open(json)?,
        _ => bail!(
            "expected the Engine.IO open packet (0{{..}}), got {}",
            String::from_utf8_lossy(&first)
        ),
    };
    ws.send_text(&connect_msg(token)).await?;
    loop {
        let b = next_text(ws).await.context("waiting for CONNECT")?;
        match parse(&b) {
            Packet::Connect(json) => {
                #[derive(Deserialize)]
                struct Accepted {
                    #[serde(rename = "sid")]
                    _sid: IgnoredAny,
                }
                serde_json::from_slice::<Accepted>(json).with_context(|| {
                    format!(
                        "CONNECT accepted without a sid (socket.io-client refuses it): {}",
                        String::from_utf8_lossy(&b)
                    )
                })?;
                break;
            }
            Packet::ConnectError(json) => {
                bail!("connect refused (44): {}", connect_error(json))
            }
            other => before_ready(ws, other, &b).await?,
        }
    }
    Ok(open)
}

/// `realtime:subscribe` to every one of `channels` at once (ack ids `first_id`,
/// `first_id + 1`, ..), then waits for all their acks (in any order); any refusal fails.
/// Pings meanwhile are answered, other events skipped; frames after the last ack stay
/// buffered in `ws`.
pub async fn subscribe<S: AsRef<str>>(
    ws: &mut RawWs,
    first_id: u64,
    channels: &[S],
) -> anyhow::Result<()> {
    for (k, c) in channels.iter().enumerate() {
        ws.send_text(&subscribe_msg(first_id + k as u64, c.as_ref()))
            .await?;
    }
    let ids = first_id..first_id + channels.len() as u64;
    let mut pending = channels.len();
    while pending > 0 {
        let b = next_text(ws)
            .await
            .context("waiting for the subscribe ack")?;
        match parse(&b) {
            Packet::Ack { id, data } if ids.contains(&id) => {
                let c = channels[(id - first_id) as usize].as_ref();
                subscribe_ack(data).with_context(|| format!("subscribing to {c}"))?;
                pending -= 1;
            }
            other => before_ready(ws, other, &b).await?,
        }
    }
    Ok(())
}

/// A packet during the handshake that is not the one awaited: pings are answered, the end of
/// the connection is an error, the rest is skipped.
async fn before_ready(ws: &mut RawWs, p: Packet<'_>, b: &[u8]) -> anyhow::Result<()> {
    match p {
        Packet::Ping => ws.send_text(PONG).await,
        Packet::Close => bail!("Engine.IO close (1) during the handshake"),
        Packet::Disconnect => bail!("Socket.IO DISCONNECT (41) during the handshake"),
        Packet::Event(Event::Error(_)) => bail!("server: {}", String::from_utf8_lossy(b)),
        _ => Ok(()),
    }
}

/// The next text frame (copied: handshake only), answering WebSocket pings.
async fn next_text(ws: &mut RawWs) -> anyhow::Result<Vec<u8>> {
    loop {
        match ws.next().await? {
            Some(Frame::Text(r)) => return Ok(ws.bytes(r).to_vec()),
            Some(Frame::Ping(p)) => ws.send_pong(&p).await?,
            Some(Frame::Close(code)) => bail!("closed by server (code {code:?})"),
            Some(Frame::Other) => {}
            None => bail!("connection closed by server"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(b: &[u8]) -> Delivery {
        match parse(b) {
            Packet::Event(Event::Delivery(d)) => d,
            other => panic!("not a delivery: {other:?}"),
        }
    }

    const META: &str = r#""meta":{"channel":"realtime:lt:1:0","messageId":"0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b","senderType":"user","senderId":"lt-pub-3","timestamp":"2026-11-29T08:19:01.691Z"}"#;

    #[test]
    fn deliveries_with_the_payload_spread() {
        let f =
            format!(r#"42["e",{{"ts":1700000000123456789,"seq":7,"pub":3,"pad":"xxxx",{META}}}]"#);
        assert_eq!(
            delivery(f.as_bytes()),
            Delivery {
                ts: Some(1_700_000_000_123_456_789),
                seq: Some(7),
                publisher: Some(3)
            }
        );
        // Another key order (a server that re-serializes the payload, sorted keys), meta
        // first, escapes in skipped strings, another event name.
        let f =
            format!(r#"42["order.updated",{{{META},"pad":"a\"b\\u00e9","pub":0,"seq":1,"ts":5}}]"#);
        assert_eq!(
            delivery(f.as_bytes()),
            Delivery {
                ts: Some(5),
                seq: Some(1),
                publisher: Some(0)
            }
        );
        // Nested instead of spread (a server bug the SDK notes call out): nothing found.
        let f = format!(r#"42["e",{{"payload":{{"ts":5,"seq":1,"pub":0}},{META}}}]"#);
        assert_eq!(delivery(f.as_bytes()), Delivery::default());
    }

    #[test]
    fn malformed_events_are_not_deliveries() {
        for f in [
            &br#"42["e",{"ts":1.5,"seq":1}]"#[..],
            br#"42["e",{"ts":1,"seq":1}"#,
            br#"42["e","text"]"#,
            b"42",
            br#"42["e"]"#,
            br#"42["e",{"ts":1},{"extra":1}]"#,
            b"42not json",
        ] {
            assert_eq!(
                parse(f),
                Packet::Event(Event::Malformed),
                "{}",
                String::from_utf8_lossy(f)
            );
        }
        assert_eq!(
            parse(br#"427["e",{"ts":1,"seq":2,"pub":0}]"#),
            Packet::Event(Event::Delivery(Delivery {
                ts: Some(1),
                seq: Some(2),
                publisher: Some(0)
            })),
            "an ack id before the array is skipped"
        );
    }

    #[test]
    fn presence_and_errors() {
        let join = br#"42["presence:join",{"member":{"type":"user","presenceId":"lt-sub-2","joinedAt":"2026-11-29T08:19:01.383Z"},"meta":{"channel":"lt:1:0","senderType":"system","messageId":"5b74b6d8","timestamp":"2026-11-29T08:19:01.487Z"}}]"#;
        let Packet::Event(Event::Presence(json)) = parse(join) else {
            panic!("presence expected")
        };
        assert_eq!(
            presence(json),
            Some(Presence {
                join: true,
                presence_id: "lt-sub-2",
                channel: "lt:1:0"
            })
        );
        let leave =
            br#"42["presence:leave",{"member":{"presenceId":"u"},"meta":{"channel":"c","x":[1]}}]"#;
        let Packet::Event(Event::Presence(json)) = parse(leave) else {
            panic!("presence expected")
        };
        assert_eq!(
            presence(json),
            Some(Presence {
                join: false,
                presence_id: "u",
                channel: "c"
            })
        );
        // Whose it is cannot be told: not an error of the parse, `None` for the caller.
        for bad in [
            &br#"["presence:leave",{"member":{},"meta":{}}]"#[..],
            br#"["presence:join",{"member":{"presenceId":7},"meta":{"channel":"c"}}]"#,
            br#"["presence:join",{"member":{"presenceId":"a\"b"},"meta":{"channel":"c"}}]"#,
            br#"["presence:sync",{"member":{"presenceId":"u"},"meta":{"channel":"c"}}]"#,
            br#"["presence:join""#,
        ] {
            assert_eq!(presence(bad), None, "{}", String::from_utf8_lossy(bad));
        }
        let err = br#"42["realtime:error",{"channel":"c","code":"REALTIME_NOT_SUBSCRIBED","message":"m"}]"#;
        assert!(matches!(parse(err), Packet::Event(Event::Error(_))));
    }

    #[test]
    fn engine_io_packets() {
        assert_eq!(parse(b"2"), Packet::Ping);
        assert_eq!(parse(b"3"), Packet::Other, "a pong is not a ping");
        assert_eq!(parse(b"2probe"), Packet::Other);
        assert_eq!(parse(b"1"), Packet::Close);
        assert_eq!(parse(b"6"), Packet::Other);
        assert_eq!(parse(b""), Packet::Other);
        assert_eq!(parse(b"41"), Packet::Disconnect);
        let o = br#"0{"sid":"i8sKj-QT2CLbb4rNAAAA","upgrades":[],"pingInterval":1500,"pingTimeout":20000,"maxPayload":1000000}"#;
        let Packet::Open(json) = parse(o) else {
            panic!("open expected")
        };
        assert_eq!(
            open(json).expect("valid"),
            Open {
                sid: "i8sKj-QT2CLbb4rNAAAA".into(),
                ping_interval: 1500,
                ping_timeout: 20000
            }
        );
        assert!(open(br#"{"sid":"x","pingTimeout":20000}"#).is_err());
        assert_eq!(
            parse(br#"40{"sid":"OABS3d7tcgo6wSjlAAAA"}"#),
            Packet::Connect(br#"{"sid":"OABS3d7tcgo6wSjlAAAA"}"#)
        );
    }

    #[test]
    fn acks() {
        let ok = br#"430[{"ok":true,"channel":"lt:1:0","presence":{"members":[{"type":"user","presenceId":"lt-sub-0","joinedAt":"2026-11-29T08:19:01.383Z"}]}}]"#;
        let Packet::Ack { id, data } = parse(ok) else {
            panic!("ack expected")
        };
        assert_eq!(id, 0);
        assert!(subscribe_ack(data).is_ok());
        let refused = br#"4312[{"ok":false,"channel":"nomatch:1","error":{"code":"REALTIME_UNAUTHORIZED","message":"Not authorized to subscribe to this channel"}}]"#;
        let Packet::Ack { id, data } = parse(refused) else {
            panic!("ack expected")
        };
        assert_eq!(id, 12);
        let e = subscribe_ack(data).expect_err("refused").to_string();
        assert!(e.contains("REALTIME_UNAUTHORIZED"), "{e}");
        assert!(subscribe_ack(br#"{"ok":true}"#).is_err(), "not an array");
        assert_eq!(parse(b"43[]"), Packet::Other, "an ack without an id");
    }

    #[test]
    fn connect_errors() {
        let Packet::ConnectError(json) = parse(br#"44{"message":"Invalid token"}"#) else {
            panic!("connect error expected")
        };
        assert_eq!(connect_error(json), "Invalid token");
        assert_eq!(
            connect_error(br#"{"message":"No authentication provided","data":{"x":1}}"#),
            "No authentication provided"
        );
        assert_eq!(connect_error(br#""plain""#), "plain");
        assert_eq!(connect_error(b"garbage"), "garbage");
    }

    /// A scripted server on port 0: sends `script` (`>` lines) and checks what the client
    /// sends (`<` lines) in order, then keeps the connection until the client drops it.
    async fn server(
        script: &'static [&'static str],
    ) -> (std::net::SocketAddr, tokio::task::JoinHandle<()>) {
        use futures_util::{SinkExt, StreamExt};
        use tokio_tungstenite::tungstenite::Message;
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let h = tokio::spawn(async move {
            let (tcp, _) = l.accept().await.expect("accept");
            let mut ws = tokio_tungstenite::accept_async(tcp).await.expect("upgrade");
            for line in script {
                let (dir, text) = line.split_at(1);
                if dir == ">" {
                    ws.send(Message::text(text)).await.expect("send");
                } else {
                    match ws.next().await {
                        Some(Ok(Message::Text(t))) => assert_eq!(t.as_str(), text),
                        other => panic!("expected {text}, got {other:?}"),
                    }
                }
            }
            while let Some(Ok(_)) = ws.next().await {}
        });
        (addr, h)
    }

    async fn client(addr: std::net::SocketAddr) -> RawWs {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        RawWs::handshake(tcp, &addr.to_string(), PATH)
            .await
            .expect("upgrade")
    }

    #[tokio::test]
    async fn handshake_answers_pings_and_skips_presence() {
        let (addr, h) = server(&[
            r#">0{"sid":"e1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
            r#"<40{"token":"jwt"}"#,
            ">2",
            "<3",
            r#">40{"sid":"s1"}"#,
            r#"<420["realtime:subscribe",{"channel":"lt:1:0"}]"#,
            r#">42["presence:join",{"member":{},"meta":{"channel":"lt:1:0"}}]"#,
            r#">430[{"ok":true,"channel":"lt:1:0","presence":{"members":[]}}]"#,
            r#">42["e",{"ts":5,"seq":1,"pub":0,"pad":"","meta":{}}]"#,
        ])
        .await;
        let mut ws = client(addr).await;
        let open = handshake(&mut ws, "jwt", "lt:1:0")
            .await
            .expect("handshake");
        assert_eq!((open.ping_interval, open.ping_timeout), (25000, 20000));
        // The first delivery is left to the subscriber loop.
        let Some(Frame::Text(r)) = ws.next().await.expect("frame") else {
            panic!("text expected")
        };
        assert_eq!(
            parse(ws.bytes(r)),
            Packet::Event(Event::Delivery(Delivery {
                ts: Some(5),
                seq: Some(1),
                publisher: Some(0)
            }))
        );
        drop(ws);
        h.await.expect("server script");
    }

    #[tokio::test]
    async fn handshake_reports_refusals() {
        const OPEN: &str = r#">0{"sid":"e1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#;
        let (addr, h) = server(&[
            OPEN,
            r#"<40{"token":"bad"}"#,
            r#">44{"message":"Invalid token"}"#,
        ])
        .await;
        let mut ws = client(addr).await;
        let e = format!(
            "{:#}",
            handshake(&mut ws, "bad", "c").await.expect_err("refused")
        );
        assert!(e.contains("connect refused (44): Invalid token"), "{e}");
        drop(ws);
        h.await.expect("server script");

        let (addr, h) = server(&[
            OPEN,
            r#"<40{"token":"t"}"#,
            r#">40{"sid":"s"}"#,
            r#"<420["realtime:subscribe",{"channel":"nomatch"}]"#,
            r#">430[{"ok":false,"channel":"nomatch","error":{"code":"REALTIME_UNAUTHORIZED","message":"Not authorized"}}]"#,
        ])
        .await;
        let mut ws = client(addr).await;
        let e = format!(
            "{:#}",
            handshake(&mut ws, "t", "nomatch")
                .await
                .expect_err("refused")
        );
        assert!(e.contains("REALTIME_UNAUTHORIZED Not authorized"), "{e}");
        drop(ws);
        h.await.expect("server script");

        // No pingInterval: socket.io-client could not keep the connection.
        let (addr, h) = server(&[r#">0{"sid":"e1","pingTimeout":20000}"#]).await;
        let mut ws = client(addr).await;
        assert!(handshake(&mut ws, "t", "c").await.is_err());
        drop(ws);
        h.await.expect("server script");
    }

    #[tokio::test]
    async fn subscribes_to_several_channels_at_once() {
        let (addr, h) = server(&[
            r#">0{"sid":"e1","upgrades":[],"pingInterval":25000,"pingTimeout":20000,"maxPayload":1000000}"#,
            r#"<40{"token":"jwt"}"#,
            r#">40{"sid":"s1"}"#,
            r#"<425["realtime:subscribe",{"channel":"a"}]"#,
            r#"<426["realtime:subscribe",{"channel":"b"}]"#,
            r#">42["presence:join",{"member":{"presenceId":"x"},"meta":{"channel":"b"}}]"#,
            r#">436[{"ok":true,"channel":"b","presence":{"members":[]}}]"#,
            ">2",
            "<3",
            r#">435[{"ok":true,"channel":"a","presence":{"members":[]}}]"#,
            r#"<427["realtime:subscribe",{"channel":"c"}]"#,
            r#">437[{"ok":false,"channel":"c","error":{"code":"REALTIME_UNAUTHORIZED","message":"no"}}]"#,
        ])
        .await;
        let mut ws = client(addr).await;
        connect(&mut ws, "jwt").await.expect("connect");
        subscribe(&mut ws, 5, &["a", "b"])
            .await
            .expect("acks in any order");
        let e = format!(
            "{:#}",
            subscribe(&mut ws, 7, &["c".to_string()])
                .await
                .expect_err("refused")
        );
        assert!(
            e.contains("subscribing to c") && e.contains("REALTIME_UNAUTHORIZED"),
            "{e}"
        );
        drop(ws);
        h.await.expect("server script");
    }

    #[test]
    fn client_packets() {
        assert_eq!(connect_msg("eyJ.a.b"), r#"40{"token":"eyJ.a.b"}"#);
        assert_eq!(
            subscribe_msg(0, "lt:1:0"),
            r#"420["realtime:subscribe",{"channel":"lt:1:0"}]"#
        );
        assert_eq!(
            subscribe_msg(31, "a\"b"),
            r#"4231["realtime:subscribe",{"channel":"a\"b"}]"#
        );
        assert_eq!(
            unsubscribe_msg("lt:1:0"),
            r#"42["realtime:unsubscribe",{"channel":"lt:1:0"}]"#
        );
    }
}
