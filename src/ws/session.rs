//! The reading side of one WebSocket: decodes frames from the read buffer, parses each text
//! message once into a `ClientMsg`, and answers it. Bad messages get an error frame and the
//! connection stays open; protocol violations close it with their RFC 6455 code.
//!
//! Publishes go to `Core::publish` (never awaited): sequenced on this core, forwarded to the
//! channel's owner core, or handed to the control thread; the `published` ack follows.

use std::{rc::Rc, sync::Arc, time::Instant};

use bytes::BytesMut;
use tungstenite::protocol::frame::coding::{CloseCode, Control, OpCode};

use crate::frame::{self, Incoming};
use crate::{
    auth::Identity,
    control::PublishReq,
    core::{
        Core, SubscribeError,
        bucket::Bucket,
        conn::{Conn, Phase},
        sequencer::Refused,
        socket::Reader,
    },
    protocol::{ClientMsg, ErrorCode, ProtocolError, ServerMsg, parse_client},
};

struct Session {
    identity: Option<Identity>,
    bucket: Bucket,
}

pub async fn run(core: &Rc<Core>, conn: &Rc<Conn>, rd: &mut Reader, buf: BytesMut) {
    let mut s = Session {
        identity: None,
        bucket: Bucket::of(core.cfg()),
    };
    super::reader::read_frames(core, conn, rd, buf, &mut s).await;
}

impl super::reader::Frames for Session {
    fn on_frame(
        &mut self,
        core: &Rc<Core>,
        conn: &Rc<Conn>,
        inc: Incoming,
    ) -> impl std::future::Future<Output = ()> {
        Session::on_frame(self, core, conn, inc)
    }

    fn seen(&self, conn: &Conn, now: Instant) {
        conn.touch(now);
    }
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
                let e = ProtocolError::new(
                    ErrorCode::InvalidMessage,
                    "binary frames are not supported; send JSON text frames",
                );
                send_error(core, conn, &e);
            }
            Incoming::Ping(p) => {
                core.push(conn, frame::encode(OpCode::Control(Control::Pong), &p));
            }
            Incoming::Pong => {}
            Incoming::Close(_) => conn.close(CloseCode::Normal, "", false),
        }
    }

    async fn on_text(&mut self, core: &Rc<Core>, conn: &Rc<Conn>, text: &str) {
        let inbound = match parse_client(text) {
            Ok(i) => i,
            Err(e) => return send_error(core, conn, &e),
        };
        let r = inbound.r#ref;
        let err = |code: ErrorCode, msg: &str, ch: Option<&str>| {
            let mut e = ProtocolError::new(code, msg).with_ref(r);
            e.channel = ch.map(str::to_string);
            send_error(core, conn, &e);
        };
        let msg = match inbound.msg {
            ClientMsg::Auth { token } => {
                match core.verifier.verify(&token) {
                    Ok(id) => {
                        // A new token extends the session of the same user; it cannot turn
                        // the socket (and its subscriptions) into another user's.
                        if let Some(old) = &self.identity
                            && old.user_id != id.user_id
                        {
                            return err(
                                ErrorCode::Forbidden,
                                "token is for another user; open a new connection to switch users",
                                None,
                            );
                        }
                        if conn.phase.get() == Phase::Unauthed {
                            conn.phase.set(Phase::Ready);
                        }
                        conn.expires_at.set(id.expires_at);
                        conn.expiry_warned.set(false);
                        *conn.identity.borrow_mut() = Some(Rc::new(id.clone()));
                        let f = frame::encode_json(&ServerMsg::AuthSuccess {
                            user_id: id.user_id.as_deref(),
                            role: id.role.as_str(),
                            r#ref: r,
                        });
                        core.push(conn, f);
                        self.identity = Some(id);
                    }
                    Err(_) => err(ErrorCode::InvalidToken, "Invalid token", None),
                }
                return;
            }
            other => other,
        };
        let Some(who) = self.identity.clone() else {
            return err(
                ErrorCode::Unauthorized,
                "authenticate first: send {\"type\":\"auth\",\"token\":\"...\"}",
                None,
            );
        };
        match msg {
            ClientMsg::Auth { .. } => unreachable!("handled above"),
            ClientMsg::Subscribe {
                channel,
                filter,
                since,
                presence,
            } => {
                let rec = core.resolve(&channel);
                let Some(rec) = rec else {
                    return err(
                        ErrorCode::ChannelNotFound,
                        "Channel not found or not accessible",
                        Some(channel.as_str()),
                    );
                };
                if !core.may_subscribe(&who, &channel, &rec) {
                    return err(
                        ErrorCode::Forbidden,
                        "not allowed by policy",
                        Some(channel.as_str()),
                    );
                }
                // Boxed: the only wait in handling a message. Inline, its state would make
                // every frame's (boxed, below `run`) future over 1 KiB, past glibc's per-thread
                // cache, and each publish would pay a `malloc_consolidate` (~20 % of a core).
                match Box::pin(core.subscribe(conn, &channel, filter, since, presence)).await {
                    Ok(sub) => {
                        let (recovered, first_offset, catch_up) = match sub.recovery {
                            Some(r) => (Some(r.recovered), r.first_offset, r.catch_up),
                            None => (None, None, None),
                        };
                        let f = frame::encode_json(&ServerMsg::Subscribed {
                            channel: channel.as_str(),
                            subscription_id: &sub.id,
                            offset: sub.pos.offset,
                            epoch: &sub.pos.epoch,
                            recovered,
                            first_offset,
                            presence: sub
                                .members
                                .as_deref()
                                .map(|members| crate::protocol::PresenceSnapshot { members }),
                            r#ref: r,
                        });
                        core.push(conn, f);
                        if let Some(c) = catch_up {
                            monoio::spawn(core.clone().catch_up(conn.clone(), c));
                        }
                    }
                    Err(SubscribeError::TooMany) => err(
                        ErrorCode::TooManySubscriptions,
                        &format!(
                            "at most {} subscriptions per connection",
                            core.cfg().max_subscriptions
                        ),
                        Some(channel.as_str()),
                    ),
                    Err(SubscribeError::NotFound) => err(
                        ErrorCode::ChannelNotFound,
                        "Channel not found or not accessible",
                        Some(channel.as_str()),
                    ),
                    Err(SubscribeError::Unavailable) => err(
                        ErrorCode::Internal,
                        "subscription could not be registered (the engine did not take it, or the server is shutting down); retry",
                        Some(channel.as_str()),
                    ),
                }
            }
            ClientMsg::Unsubscribe { channel } => {
                core.unsubscribe(conn, &channel);
                let f = frame::encode_json(&ServerMsg::Unsubscribed {
                    channel: channel.as_str(),
                    reason: None,
                    r#ref: r,
                });
                core.push(conn, f);
            }
            ClientMsg::Publish {
                channel,
                event,
                payload,
                idempotency_key,
            } => {
                let ch = Some(channel.as_str());
                let max = core.cfg().max_payload_bytes;
                if payload.get().len() > max {
                    return err(
                        ErrorCode::PayloadTooLarge,
                        &format!("payload exceeds {max} bytes"),
                        ch,
                    );
                }
                let rec = core.resolve(&channel);
                if rec.is_none() {
                    return err(
                        ErrorCode::ChannelNotFound,
                        "Channel not found or not accessible",
                        ch,
                    );
                }
                if !core.may_publish(&who, &channel, &event, payload) {
                    return err(ErrorCode::Forbidden, "not allowed by policy", ch);
                }
                // Only publishes that would be accepted spend quota.
                if let Err(over) = self.bucket.take(Instant::now(), payload.get().len()) {
                    return err(
                        ErrorCode::RateLimited,
                        &crate::core::bucket::refusal(core.cfg(), over),
                        ch,
                    );
                }
                let req = PublishReq {
                    core: core.id,
                    conn: conn.id,
                    r#ref: r.map(|r| r.to_owned()),
                    channel: channel.clone(),
                    event: Arc::from(event.as_ref()),
                    payload: Arc::from(payload.to_owned()),
                    sender_id: who.user_id.clone(),
                    sender_type: who.sender_type(),
                    source: None,
                    idempotency_key: idempotency_key.map(|k| Arc::from(k.as_ref())),
                    http: None,
                    proto: crate::protocol::Proto::Raw,
                };
                match core.publish(req) {
                    Ok(()) => {}
                    Err(Refused::Busy) => {
                        core.metrics().publishes_refused_busy_total.inc();
                        err(
                            ErrorCode::RateLimited,
                            "broker busy: publish not accepted, retry",
                            ch,
                        )
                    }
                    Err(Refused::Closing) => err(ErrorCode::Internal, "server shutting down", ch),
                }
            }
        }
    }
}

fn send_error(core: &Core, conn: &Conn, e: &ProtocolError) {
    core.metrics().errors_sent_total.inc();
    let f = frame::encode_json(&ServerMsg::Error {
        message: &e.message,
        code: e.code.as_str(),
        channel: e.channel.as_deref(),
        message_id: None,
        r#ref: e.r#ref.as_deref(),
    });
    core.push(conn, f);
}
