//! Access decisions on a core: the policies in force (`policy::PolicySet`, shared as an `Arc`)
//! applied to subscribes, publishes and deliveries. This is where `auth::Authorizer` used to
//! decide; its callers ask here.
//!
//! - Subscribe: SELECT on `realtime.channels`, decided once per connection and channel.
//! - Publish: INSERT on `realtime.messages` (`WITH CHECK`), decided per publish; the payload
//!   is parsed only if a policy reads it.
//! - Receive: SELECT on `realtime.messages` (`USING`), decided per subscriber and message on
//!   the subscriber's core, over the frame already encoded for everyone. When every role may
//!   receive unconditionally (the defaults), a delivery checks one flag and nothing more;
//!   otherwise the frame's fields are read once per message and core, and each subscriber's
//!   decision reuses them; a policy that reads the payload parses it once per message and
//!   core, on first read, and every subscriber's decision shares that parse.
//! - The caller's claims (`auth.jwt()`) are decoded only when a policy reads them, once per
//!   connection.

use std::{borrow::Cow, sync::Arc};

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{Core, conn::Conn};
use crate::{
    auth::{Identity, Role},
    channel::{ChannelName, ChannelRecord},
    control::Delivery,
    frame,
    policy::{Action, AuthInfo, ChannelRow, Ctx, LazyJson, MessageRow, PolicySet},
};

/// The caller as policies see it.
pub fn auth_info(who: &Identity) -> AuthInfo<'_> {
    AuthInfo {
        uid: who.user_id.as_deref(),
        role: who.role,
        email: who.email.as_deref(),
        claims: who
            .claims
            .as_deref()
            .map_or_else(LazyJson::absent, |c| LazyJson::lent(c)),
    }
}

/// The policies a core applies, and what it precomputed from them.
pub struct Access {
    pub set: Arc<PolicySet>,
    /// Every role may receive every message: deliveries skip receive decisions.
    receive_open: bool,
}

impl Access {
    pub fn new(set: Arc<PolicySet>) -> Self {
        let receive_open = [Role::Anon, Role::Authenticated, Role::ProjectAdmin]
            .into_iter()
            .all(|r| set.allows_unconditionally(Action::Receive, r));
        Self { set, receive_open }
    }

    pub fn receive_open(&self) -> bool {
        self.receive_open
    }
}

/// Tells a subscriber that the server ended its subscription: `unsubscribed` with the reason
/// (raw), or `realtime:error` with code `REALTIME_UNSUBSCRIBED` (Socket.IO, which has no
/// such event; the SDK shows it as `error`).
pub fn ended(c: &Conn, ch: &ChannelName, reason: &str) -> bytes::Bytes {
    if c.is_sio() {
        return crate::sio::encode::error_code(Some(ch.as_str()), "REALTIME_UNSUBSCRIBED", reason);
    }
    frame::encode_json(&crate::protocol::ServerMsg::Unsubscribed {
        channel: ch.as_str(),
        reason: Some(reason),
        r#ref: None,
    })
}

/// The fields of an encoded `message` frame a receive policy may read.
#[derive(Deserialize)]
struct FrameFields<'a> {
    #[serde(borrow)]
    event: Cow<'a, str>,
    #[serde(borrow)]
    payload: &'a RawValue,
    #[serde(rename = "senderType", borrow)]
    sender_type: Cow<'a, str>,
    #[serde(rename = "senderId", borrow, default)]
    sender_id: Option<Cow<'a, str>>,
}

/// One message's row for receive decisions, read from its frame once per core; its payload
/// is parsed on the first decision that reads it and shared by the rest.
pub struct ReceiveRow<'a> {
    fields: Option<FrameFields<'a>>,
    payload: LazyJson<'a>,
}

impl<'a> ReceiveRow<'a> {
    pub fn of(d: &'a Delivery) -> Self {
        let fields: Option<FrameFields<'a>> =
            serde_json::from_slice(frame::payload_of(&d.frame)).ok();
        let payload = fields
            .as_ref()
            .map_or_else(LazyJson::absent, |f| LazyJson::raw(f.payload.get()));
        Self { fields, payload }
    }

    fn row(&self, channel: &'a str) -> Option<MessageRow<'_>> {
        let f = self.fields.as_ref()?;
        Some(MessageRow {
            channel_name: channel,
            event_name: &f.event,
            payload: LazyJson::lent(&self.payload),
            sender_type: &f.sender_type,
            sender_id: f.sender_id.as_deref(),
        })
    }
}

impl Core {
    /// After the policies changed: every subscription the subscribe policy no longer allows
    /// ends with `unsubscribed` and the reason.
    pub(super) fn recheck_subscriptions(&self) {
        let conns: Vec<_> = self.conns.borrow().values().cloned().collect();
        for c in conns {
            let who = c.identity.borrow().clone();
            let Some(who) = who else { continue };
            let chans: Vec<ChannelName> = c.subs.borrow().channels().cloned().collect();
            for ch in chans {
                // Channels that no longer resolve were dropped with the table.
                let Some(rec) = self.resolve(&ch) else {
                    continue;
                };
                if self.may_subscribe(&who, &ch, &rec) {
                    continue;
                }
                self.unsubscribe(&c, &ch);
                self.push(&c, ended(&c, &ch, "not allowed by policy"));
            }
        }
    }

    /// Whether `who` may subscribe to `ch` (resolved to the enabled record `rec`).
    pub fn may_subscribe(&self, who: &Identity, ch: &ChannelName, rec: &ChannelRecord) -> bool {
        let auth = auth_info(who);
        let row = ChannelRow {
            pattern: rec.pattern.as_str(),
            enabled: rec.enabled,
            description: rec.description.as_deref(),
        };
        self.access.borrow().set.allows(
            Action::Subscribe,
            &Ctx {
                channel_name: ch.as_str(),
                channel: Some(&row),
                message: None,
                auth: &auth,
            },
        )
    }

    /// Whether `who` may publish this message on `ch`.
    pub fn may_publish(
        &self,
        who: &Identity,
        ch: &ChannelName,
        event: &str,
        payload: &RawValue,
    ) -> bool {
        let auth = auth_info(who);
        let msg = MessageRow {
            channel_name: ch.as_str(),
            event_name: event,
            payload: LazyJson::raw(payload.get()),
            sender_type: who.sender_type(),
            sender_id: who.user_id.as_deref(),
        };
        self.access.borrow().set.allows(
            Action::Publish,
            &Ctx {
                channel_name: ch.as_str(),
                channel: None,
                message: Some(&msg),
                auth: &auth,
            },
        )
    }

    /// Whether the subscriber on `conn` may receive `d` (`row`: the message's fields, read
    /// on first need and shared by the core's subscribers of this message).
    pub(super) fn may_receive<'a>(
        &self,
        conn: &Conn,
        d: &'a Delivery,
        row: &mut Option<ReceiveRow<'a>>,
    ) -> bool {
        let access = self.access.borrow();
        if access.receive_open() {
            return true;
        }
        let id = conn.identity.borrow();
        let Some(who) = id.as_deref() else {
            return false;
        };
        if access.set.allows_unconditionally(Action::Receive, who.role) {
            return true;
        }
        let fields = row.get_or_insert_with(|| ReceiveRow::of(d));
        let Some(msg) = fields.row(d.channel.as_str()) else {
            return false;
        };
        let auth = auth_info(who);
        access.set.allows(
            Action::Receive,
            &Ctx {
                channel_name: d.channel.as_str(),
                channel: None,
                message: Some(&msg),
                auth: &auth,
            },
        )
    }
}
