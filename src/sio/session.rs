//! The reading side of one Socket.IO connection: sends the Engine.IO `open`, then decodes
//! each WebSocket text message as an Engine.IO packet and the Socket.IO packet inside it, and
//! answers as InsForge's server does:
//!
//! - CONNECT `40{auth}` on `/`: the token (`auth.token`, or `auth.apiKey`) is a JWT, the anon
//!   key or the admin key; `40{"sid"}` or `44{"message"}` (never a bare close). Another
//!   namespace gets `44/<nsp>,{"message":"Invalid namespace"}` and the connection stays up.
//! - `realtime:subscribe` → ack `{ok, channel, presence: {members}}` or `{ok: false,
//!   channel, error: {code, message}}`; `realtime:unsubscribe` (no answer);
//!   `realtime:publish` → nothing on success, `realtime:error` on failure (checked in
//!   InsForge's order: subscribed on this socket, then the channel and its policy).
//! - Pongs (`3`) answer the server's pings (the sweeper sends them, `core::inbox`).
//!
//! Malformed input gets a clear answer and the connection stays: `44{"message"}` before
//! CONNECT, `realtime:error` with code `INVALID_MESSAGE` after. Only an unknown Engine.IO
//! packet type ends it (close 1003 with the reason): the peer does not speak Engine.IO.

use std::{rc::Rc, sync::Arc, time::Instant};

use bytes::BytesMut;
use serde::Deserialize;
use serde_json::value::RawValue;
use tungstenite::protocol::frame::coding::{CloseCode, Control, OpCode};

use super::{
    encode,
    packet::{self, Engine, Kind, SioError},
};
use crate::{
    auth::Identity,
    channel::ChannelName,
    control::PublishReq,
    core::{
        Core, SubscribeError,
        bucket::Bucket,
        conn::{Conn, Phase},
        sequencer::Refused,
        socket::Reader,
    },
    frame::{self, Incoming},
    protocol::{ErrorCode, PresenceSnapshot, Proto, check_event_name, object::is_object},
};

struct Session {
    identity: Option<Identity>,
    bucket: Bucket,
}

pub async fn run(core: &Rc<Core>, conn: &Rc<Conn>, rd: &mut Reader, buf: BytesMut) {
    let cfg = core.cfg();
    core.push(
        conn,
        packet::open(
            &conn.socket_id(),
            cfg.sio_ping_interval.as_millis() as u64,
            cfg.sio_ping_timeout.as_millis() as u64,
            cfg.max_frame_bytes,
        ),
    );
    let mut s = Session {
        identity: None,
        bucket: Bucket::of(cfg),
    };
    crate::ws::reader::read_frames(core, conn, rd, buf, &mut s).await;
}

impl crate::ws::reader::Frames for Session {
    fn on_frame(
        &mut self,
        core: &Rc<Core>,
        conn: &Rc<Conn>,
        inc: Incoming,
    ) -> impl std::future::Future<Output = ()> {
        Session::on_frame(self, core, conn, inc)
    }

    /// Liveness only: the Engine.IO ping is answered by a pong, nothing else.
    fn seen(&self, conn: &Conn, now: Instant) {
        conn.last_seen.set(now);
    }
}

/// `realtime:subscribe` / `realtime:unsubscribe` data.
#[derive(Deserialize)]
struct ChannelArg<'a> {
    #[serde(borrow)]
    channel: std::borrow::Cow<'a, str>,
}

/// `realtime:publish` data.
#[derive(Deserialize)]
struct PublishArg<'a> {
    #[serde(borrow)]
    channel: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    event: std::borrow::Cow<'a, str>,
    #[serde(borrow)]
    payload: Option<&'a RawValue>,
}

/// CONNECT data: where the token may be.
#[derive(Deserialize, Default)]
struct AuthArg<'a> {
    #[serde(borrow, default)]
    token: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default, rename = "apiKey")]
    api_key: Option<std::borrow::Cow<'a, str>>,
}

impl Session {
    async fn on_frame(&mut self, core: &Rc<Core>, conn: &Rc<Conn>, inc: Incoming) {
        match inc {
            Incoming::Text(b) => {
                core.metrics().messages_in_total.inc();
                let text = std::str::from_utf8(&b).expect("decoder checked UTF-8");
                self.on_text(core, conn, text).await;
            }
            Incoming::Binary => {
                core.metrics().messages_in_total.inc();
                self.refuse(core, conn, &SioError::Binary.to_string());
            }
            Incoming::Ping(p) => {
                core.push(conn, frame::encode(OpCode::Control(Control::Pong), &p));
            }
            Incoming::Pong => {}
            Incoming::Close(_) => conn.close(CloseCode::Normal, "", false),
        }
    }

    /// Answers a malformed packet: `44` before CONNECT, `realtime:error` after.
    fn refuse(&self, core: &Core, conn: &Conn, message: &str) {
        core.metrics().errors_sent_total.inc();
        let f = if self.identity.is_none() {
            packet::connect_error("/", message)
        } else {
            encode::error(None, ErrorCode::InvalidMessage, message)
        };
        core.push(conn, f);
    }

    async fn on_text(&mut self, core: &Rc<Core>, conn: &Rc<Conn>, text: &str) {
        let msg = match packet::decode_engine(text) {
            Ok(Engine::Message(m)) => m,
            Ok(Engine::Pong(_)) => {
                conn.ping_outstanding.set(false);
                return;
            }
            // A v3-style client ping: answer it.
            Ok(Engine::Ping(p)) => {
                core.push(conn, packet::pong(p));
                return;
            }
            Ok(Engine::Close) => return conn.close(CloseCode::Normal, "", false),
            Ok(Engine::Open | Engine::Upgrade | Engine::Noop) => return,
            Err(e) => {
                core.metrics().protocol_closes_total.inc();
                return conn.close(CloseCode::Unsupported, &e.to_string(), false);
            }
        };
        let p = match packet::decode_socket(msg) {
            Ok(p) => p,
            Err(e) => return self.refuse(core, conn, &e.to_string()),
        };
        match p.kind {
            Kind::Connect => self.on_connect(core, conn, p.nsp, p.data),
            Kind::Disconnect if p.nsp == "/" => conn.close(CloseCode::Normal, "", false),
            Kind::Event if p.nsp == "/" => {
                let Some(who) = self.identity.clone() else {
                    // Events before CONNECT are ignored, as socket.io's server does.
                    return;
                };
                let ev = match p
                    .data
                    .ok_or(SioError::EventShape)
                    .and_then(packet::decode_event)
                {
                    Ok(ev) => ev,
                    Err(e) => return self.refuse(core, conn, &e.to_string()),
                };
                self.on_event(core, conn, &who, &ev.name, ev.args.first().copied(), p.ack)
                    .await;
            }
            // Acks from the client, other namespaces' packets: nothing to do.
            _ => {}
        }
    }

    fn on_connect(&mut self, core: &Core, conn: &Conn, nsp: &str, data: Option<&str>) {
        if nsp != "/" {
            core.push(conn, packet::connect_error(nsp, "Invalid namespace"));
            return;
        }
        let auth: AuthArg<'_> = data
            .filter(|d| is_object(d.as_bytes()))
            .and_then(|d| serde_json::from_str(d).ok())
            .unwrap_or_default();
        let Some(token) = auth.token.or(auth.api_key).filter(|t| !t.is_empty()) else {
            core.metrics().errors_sent_total.inc();
            {
                core.push(
                    conn,
                    packet::connect_error("/", "No authentication provided"),
                );
                return;
            }
        };
        let id = match core.verifier.verify(&token) {
            Ok(id) => id,
            Err(_) => {
                core.metrics().errors_sent_total.inc();
                {
                    core.push(conn, packet::connect_error("/", "Invalid token"));
                    return;
                }
            }
        };
        if let Some(old) = &self.identity
            && old.user_id != id.user_id
        {
            {
                core.push(
                    conn,
                    packet::connect_error("/", "token is for another user; open a new connection"),
                );
                return;
            }
        }
        conn.phase.set(Phase::Ready);
        conn.expires_at.set(id.expires_at);
        *conn.identity.borrow_mut() = Some(Rc::new(id.clone()));
        self.identity = Some(id);
        core.push(conn, packet::connected("/", &conn.socket_id()));
    }

    async fn on_event(
        &mut self,
        core: &Rc<Core>,
        conn: &Rc<Conn>,
        who: &Identity,
        name: &str,
        arg: Option<&RawValue>,
        ack: Option<u64>,
    ) {
        match name {
            "realtime:subscribe" => {
                let ch = object_arg::<ChannelArg<'_>>(arg);
                let Some(ch) = ch else {
                    return self.refuse(core, conn, "realtime:subscribe needs {\"channel\": string}");
                };
                let answer = subscribe(core, conn, who, &ch.channel).await;
                if let Some(id) = ack {
                    core.push(conn, packet::ack(id, &answer));
                }
            }
            "realtime:unsubscribe" => {
                let ch = object_arg::<ChannelArg<'_>>(arg);
                match ch.map(|c| ChannelName::parse(&c.channel)) {
                    Some(Ok(ch)) => {
                        core.unsubscribe(conn, &ch);
                    }
                    Some(Err(_)) => {}
                    None => self.refuse(
                        core,
                        conn,
                        "realtime:unsubscribe needs {\"channel\": string}",
                    ),
                }
            }
            "realtime:publish" => {
                let p = object_arg::<PublishArg<'_>>(arg);
                let Some(p) = p else {
                    return self.refuse(
                        core,
                        conn,
                        "realtime:publish needs {\"channel\": string, \"event\": string, \"payload\": object}",
                    );
                };
                if let Err((ch, code, message)) = self.publish(core, conn, who, &p) {
                    core.metrics().errors_sent_total.inc();
                    core.push(conn, encode::error_code(Some(ch), code, &message));
                }
            }
            other => self.refuse(
                core,
                conn,
                &format!(
                    "unknown event `{other}`: expected realtime:subscribe, realtime:unsubscribe or realtime:publish"
                ),
            ),
        }
    }

    /// Checks and hands a publish to the core; `Err`: the `realtime:error` to answer.
    fn publish<'a>(
        &mut self,
        core: &Core,
        conn: &Conn,
        who: &Identity,
        p: &'a PublishArg<'a>,
    ) -> Result<(), (&'a str, &'static str, String)> {
        let ch_text: &str = &p.channel;
        let fail = |code: ErrorCode, m: String| (ch_text, encode::insforge_code(code), m);
        let channel = ChannelName::parse(ch_text)
            .map_err(|e| fail(ErrorCode::InvalidMessage, format!("invalid channel: {e}")))?;
        if conn.subs.borrow().get(&channel).is_none() {
            return Err((
                ch_text,
                "REALTIME_NOT_SUBSCRIBED",
                "Must subscribe to channel before publishing messages".into(),
            ));
        }
        check_event_name(&p.event).map_err(|m| fail(ErrorCode::InvalidMessage, m))?;
        let payload = p.payload.filter(|v| v.get().trim_start().starts_with('{'));
        let Some(payload) = payload else {
            return Err(fail(
                ErrorCode::InvalidMessage,
                "`payload` must be a JSON object".into(),
            ));
        };
        let max = core.cfg().max_payload_bytes;
        if payload.get().len() > max {
            return Err(fail(
                ErrorCode::PayloadTooLarge,
                format!("payload exceeds {max} bytes"),
            ));
        }
        if core.resolve(&channel).is_none() {
            return Err(fail(
                ErrorCode::ChannelNotFound,
                "Channel not found or not accessible".into(),
            ));
        }
        if !core.may_publish(who, &channel, &p.event, payload) {
            return Err(fail(ErrorCode::Forbidden, "not allowed by policy".into()));
        }
        if let Err(over) = self.bucket.take(Instant::now(), payload.get().len()) {
            return Err(fail(
                ErrorCode::RateLimited,
                crate::core::bucket::refusal(core.cfg(), over),
            ));
        }
        let req = PublishReq {
            core: core.id,
            conn: conn.id,
            r#ref: None,
            channel,
            event: Arc::from(p.event.as_ref()),
            payload: Arc::from(payload.to_owned()),
            sender_id: who.user_id.clone(),
            sender_type: who.sender_type(),
            source: None,
            idempotency_key: None,
            http: None,
            proto: Proto::SocketIo,
        };
        match core.publish(req) {
            Ok(()) => Ok(()),
            Err(Refused::Busy) => {
                core.metrics().publishes_refused_busy_total.inc();
                Err(fail(
                    ErrorCode::RateLimited,
                    "broker busy: publish not accepted, retry".into(),
                ))
            }
            Err(Refused::Closing) => Err(fail(
                ErrorCode::Internal,
                "server shutting down: publish not accepted".into(),
            )),
        }
    }
}

/// An event's argument as `T`, if it is a JSON object that reads as one.
fn object_arg<'a, T: Deserialize<'a>>(arg: Option<&'a RawValue>) -> Option<T> {
    let a = arg?.get();
    if !is_object(a.as_bytes()) {
        return None;
    }
    serde_json::from_str(a).ok()
}

/// The subscribe ack InsForge sends.
#[derive(serde::Serialize)]
struct SubscribeAck<'a> {
    ok: bool,
    channel: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    presence: Option<PresenceSnapshot<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<AckError>,
}

#[derive(serde::Serialize)]
struct AckError {
    code: &'static str,
    message: String,
}

/// Subscribes with presence; the ack's fields (owned, since the members are).
struct SubscribeAnswer {
    channel: String,
    result: Result<Vec<crate::presence::Member>, AckError>,
}

impl serde::Serialize for SubscribeAnswer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.result {
            Ok(members) => SubscribeAck {
                ok: true,
                channel: &self.channel,
                presence: Some(PresenceSnapshot { members }),
                error: None,
            }
            .serialize(s),
            Err(e) => SubscribeAck {
                ok: false,
                channel: &self.channel,
                presence: None,
                error: Some(AckError {
                    code: e.code,
                    message: e.message.clone(),
                }),
            }
            .serialize(s),
        }
    }
}

async fn subscribe(
    core: &Rc<Core>,
    conn: &Rc<Conn>,
    who: &Identity,
    name: &str,
) -> SubscribeAnswer {
    let fail = |code: ErrorCode, message: String| AckError {
        code: encode::insforge_code(code),
        message,
    };
    let result = async {
        let ch = ChannelName::parse(name)
            .map_err(|e| fail(ErrorCode::InvalidMessage, format!("invalid channel: {e}")))?;
        let rec = core.resolve(&ch).ok_or_else(|| {
            fail(
                ErrorCode::ChannelNotFound,
                "Not authorized to subscribe to this channel".into(),
            )
        })?;
        if !core.may_subscribe(who, &ch, &rec) {
            return Err(fail(ErrorCode::Forbidden, "not allowed by policy".into()));
        }
        match Box::pin(core.subscribe(conn, &ch, None, None, true)).await {
            Ok(sub) => Ok(sub.members.unwrap_or_default()),
            Err(SubscribeError::TooMany) => Err(fail(
                ErrorCode::TooManySubscriptions,
                format!(
                    "at most {} subscriptions per connection",
                    core.cfg().max_subscriptions
                ),
            )),
            Err(SubscribeError::NotFound) => Err(fail(
                ErrorCode::ChannelNotFound,
                "Not authorized to subscribe to this channel".into(),
            )),
            Err(SubscribeError::Unavailable) => Err(fail(
                ErrorCode::Internal,
                "subscription could not be registered (the engine did not take it, or the server is shutting down); retry".into(),
            )),
        }
    }
    .await;
    SubscribeAnswer {
        channel: name.to_string(),
        result,
    }
}
