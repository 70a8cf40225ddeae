//! The core's two background tasks: the inbox loop, which applies what the control thread and
//! the other cores send (deliveries, replies, forwarded publishes, interest, new channel
//! tables), and the sweeper, which enforces auth, idle, HTTP and token-expiry timeouts and
//! sends keep-alive pings. Neither awaits anything but its own queue or timer.

use std::{mem, rc::Rc, sync::Arc, time::Instant};

use tokio::sync::mpsc;
use tungstenite::protocol::frame::coding::{CloseCode, Control, OpCode};

use super::{Core, conn::Phase, out_frame::OutFrame};
use crate::{
    channel::ChannelName,
    control::{ControlMsg, CoreMsg, Delivery, msg::Interest},
    frame,
    protocol::{DbFilter, ServerMsg, row_filter::ChangeRow},
    timestamp::Timestamp,
};

/// Messages applied per wake-up before the audience batch is flushed.
const BATCH: usize = 1024;
/// A close that has not finished writing after this long is forced off.
pub const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn run_inbox(core: Rc<Core>, mut rx: mpsc::Receiver<CoreMsg>) {
    let mut audience: Vec<(ChannelName, u64, u32)> = Vec::new();
    while let Some(m) = rx.recv().await {
        core.apply(m, &mut audience);
        for _ in 0..BATCH {
            match rx.try_recv() {
                Ok(m) => core.apply(m, &mut audience),
                Err(_) => break,
            }
        }
        if !audience.is_empty() {
            let batch = mem::take(&mut audience);
            if core.control.try_send(ControlMsg::Audience(batch)).is_err() {
                core.metrics().audience_updates_dropped_total.inc();
            }
        }
    }
}

impl Core {
    fn apply(&self, m: CoreMsg, audience: &mut Vec<(ChannelName, u64, u32)>) {
        match m {
            CoreMsg::Deliver(d) => {
                let n = self.deliver(&d);
                if n > 0 {
                    audience.push((d.channel.clone(), d.offset, n));
                }
            }
            CoreMsg::Publish { req, reply } => self.sequence_forwarded(*req, reply),
            CoreMsg::Source(b) => self.sequence_source(b),
            CoreMsg::Interest(Interest {
                core,
                channel,
                on,
                done,
            }) => {
                let pos = self.apply_interest(&channel, core, on);
                if let Some(d) = done {
                    let _ = d.send(pos);
                }
            }
            CoreMsg::Presence(op) => self.apply_presence(*op),
            CoreMsg::PresenceEvent(ev) => self.deliver_presence(&ev),
            CoreMsg::Reply { conn, frame } => {
                let c = self.conns.borrow().get(&conn).cloned();
                if let Some(c) = c {
                    self.push(&c, frame);
                }
            }
            CoreMsg::Snapshot {
                table,
                policies,
                done,
            } => {
                *self.table.borrow_mut() = table;
                self.drop_unresolvable();
                let changed = !Arc::ptr_eq(&self.access.borrow().set, &policies);
                if changed {
                    *self.access.borrow_mut() = super::access::Access::new(policies);
                    self.recheck_subscriptions();
                }
                let _ = done.send(());
            }
        }
    }

    /// Queues a frame to one connection; a full queue closes it as a slow consumer.
    pub fn push(&self, c: &super::conn::Conn, f: impl Into<OutFrame>) -> bool {
        if c.is_closing() {
            return false;
        }
        match c.outbox.try_push(f.into()) {
            Ok(()) => {
                self.metrics().messages_out_total.inc();
                true
            }
            Err(_) => {
                let m = self.metrics();
                m.queue_drops_total.inc();
                m.slow_consumer_closes_total.inc();
                c.close(CloseCode::Again, "slow consumer: outbound queue full", true);
                false
            }
        }
    }

    /// Queues one encoded message to every local subscriber of its channel (the same `Bytes`
    /// to each); returns how many it was queued to. Public for the fan-out benchmark.
    pub fn deliver(&self, d: &Delivery) -> u32 {
        let idx = self.index.borrow();
        let Some(e) = idx.get(&d.channel) else {
            return 0;
        };
        if d.offset > e.pos.get() {
            e.pos.set(d.offset);
        }
        let db = d.channel.is_db();
        // One atomic clone per core; each subscriber's is a plain `Rc` increment.
        let frame = OutFrame::new(d.frame.clone());
        // The change's row, parsed once, only if some subscriber has a row filter.
        let mut row: Option<ChangeRow> = None;
        // The message's fields, read once, only if some subscriber's receive policy needs them.
        let open = self.access.borrow().receive_open();
        let mut fields = None;
        // The Socket.IO frame, shared like `frame`, only if some subscriber speaks Socket.IO.
        let mut sio: Option<Option<OutFrame>> = None;
        let mut n = 0u32;
        for m in e.members.values() {
            if db && !wants(m.filter.as_deref(), d, &mut row) {
                continue;
            }
            if !open && !self.may_receive(&m.conn, d, &mut fields) {
                continue;
            }
            if m.sio {
                let f = sio.get_or_insert_with(|| self.sio_frame(d));
                if let Some(f) = f
                    && self.push(&m.conn, f.clone())
                {
                    n += 1;
                }
                continue;
            }
            if let Some(h) = &m.held {
                // Still catching up (`recovery`): queued after what it missed.
                let c = self.cfg();
                h.hold(
                    d.offset,
                    frame.clone(),
                    c.outbound_queue_frames,
                    c.outbound_queue_bytes,
                );
                n += 1;
                continue;
            }
            if self.push(&m.conn, frame.clone()) {
                n += 1;
            }
        }
        self.metrics().deliveries_total.add(u64::from(n));
        n
    }

    /// The Socket.IO frame of a delivery: the one built with it, or (the node had no
    /// Socket.IO connection then) built here once for this core's subscribers.
    fn sio_frame(&self, d: &Delivery) -> Option<OutFrame> {
        if let Some(b) = &d.sio {
            return Some(OutFrame::new(b.clone()));
        }
        self.metrics().socketio_reencoded_total.inc();
        crate::sio::encode::message_from_raw(frame::payload_of(&d.frame)).map(OutFrame::new)
    }

    /// After a new table: subscribers of channels that no longer resolve to an enabled record
    /// get `unsubscribed` and stop receiving.
    fn drop_unresolvable(&self) {
        let table = self.table.borrow().clone();
        let names = self.index.borrow().channel_names();
        for ch in names {
            if table.resolve(ch.as_str()).is_some() {
                continue;
            }
            let members = self.index.borrow_mut().take_all(&ch);
            let reason = "channel disabled or deleted";
            // Encoded once per protocol, on first need.
            let (mut raw, mut sio) = (None::<OutFrame>, None::<OutFrame>);
            let had = !members.is_empty();
            for m in members {
                if m.conn.subs.borrow_mut().remove(&ch).is_some() {
                    self.metrics().subscriptions.sub(1);
                }
                if let Some(key) = m.presence.clone() {
                    self.presence_left(&ch, key);
                }
                let slot = if m.conn.is_sio() { &mut sio } else { &mut raw };
                let f = slot
                    .get_or_insert_with(|| {
                        OutFrame::new(super::access::ended(&m.conn, &ch, reason))
                    })
                    .clone();
                self.push(&m.conn, f);
            }
            if self.index.borrow().get(&ch).is_none() && had {
                self.withdraw_interest(ch);
            }
        }
    }

    /// One pass of timeouts and pings over this core's connections.
    pub fn sweep(&self, now: Instant) {
        let cfg = self.cfg();
        let unix_now = Timestamp::now().0 / 1000;
        let conns: Vec<_> = self.conns.borrow().values().cloned().collect();
        for c in conns {
            match c.phase.get() {
                Phase::Http => {
                    if c.http_deadline.get().is_some_and(|d| now >= d) {
                        c.abort();
                    }
                }
                Phase::Closing => {
                    if c.closing_since
                        .get()
                        .is_some_and(|t| now.duration_since(t) >= CLOSE_GRACE)
                    {
                        c.abort();
                    }
                }
                phase @ (Phase::Unauthed | Phase::Ready) => {
                    if phase == Phase::Ready && cfg.expire_sessions && self.expire(&c, unix_now) {
                        continue;
                    }
                    if c.is_sio() {
                        self.sweep_sio(&c, phase, now, unix_now);
                        continue;
                    }
                    let idle = now.duration_since(c.last_seen.get());
                    if phase == Phase::Unauthed && now.duration_since(c.opened) >= cfg.auth_timeout
                    {
                        c.close(CloseCode::Policy, "authentication timeout", false);
                    } else if idle >= cfg.idle_timeout {
                        c.close(CloseCode::Away, "idle timeout", false);
                    } else if idle >= cfg.ping_interval && !c.ping_outstanding.get() {
                        c.ping_outstanding.set(true);
                        self.push(&c, frame::encode(OpCode::Control(Control::Ping), b""));
                    }
                }
            }
        }
    }
}

impl Core {
    /// Engine.IO heartbeat of one Socket.IO connection: the server pings every
    /// `socketio.ping_interval` whatever else is sent (the client's timer is reset only by
    /// pings) and closes a connection whose pong has not come within `socketio.ping_timeout`.
    /// The auth timeout applies until the Socket.IO CONNECT succeeds. An expired token
    /// (`auth.expire_sessions`) closes the WebSocket, and the SDK reconnects with a fresh
    /// token and resubscribes (a Socket.IO DISCONNECT would stop it from reconnecting).
    fn sweep_sio(&self, c: &super::conn::Conn, phase: Phase, now: Instant, unix_now: i64) {
        let cfg = self.cfg();
        if phase == Phase::Unauthed && now.duration_since(c.opened) >= cfg.auth_timeout {
            c.close(CloseCode::Policy, "authentication timeout", false);
            return;
        }
        if phase == Phase::Ready
            && cfg.expire_sessions
            && c.expires_at.get().is_some_and(|exp| unix_now >= exp as i64)
        {
            self.metrics().sessions_expired_total.inc();
            c.close(CloseCode::Policy, "token expired", false);
            return;
        }
        match c.ping_sent.get() {
            Some(at) if c.ping_outstanding.get() => {
                if now.duration_since(at) >= cfg.sio_ping_timeout {
                    c.close(CloseCode::Away, "ping timeout", false);
                }
            }
            Some(at) if now.duration_since(at) < cfg.sio_ping_interval => {}
            None if now.duration_since(c.opened) < cfg.sio_ping_interval => {}
            _ => {
                c.ping_outstanding.set(true);
                c.ping_sent.set(Some(now));
                self.push(c, crate::sio::packet::ping());
            }
        }
    }

    /// Token expiry of one session (`auth.expire_sessions`): `token_expiring` once within
    /// `auth.expire_warning` of `exp`, then a 1008 close at `exp`. True if it was closed.
    fn expire(&self, c: &super::conn::Conn, unix_now: i64) -> bool {
        let Some(exp) = c.expires_at.get() else {
            return false;
        };
        let exp = exp as i64;
        if unix_now >= exp {
            self.metrics().sessions_expired_total.inc();
            c.close(CloseCode::Policy, "token expired", false);
            return true;
        }
        let warning = self.cfg().expire_warning.as_secs() as i64;
        if !c.expiry_warned.get() && unix_now + warning >= exp {
            c.expiry_warned.set(true);
            let at = Timestamp(exp * 1000).rfc3339();
            self.push(
                c,
                frame::encode_json(&ServerMsg::TokenExpiring {
                    expires_at: at.as_str(),
                }),
            );
        }
        false
    }
}

/// Whether a `db:` message passes a subscriber's filter (`row`: the change's row, parsed at
/// most once per message, only if some subscriber has a row filter).
pub(super) fn wants(filter: Option<&DbFilter>, d: &Delivery, row: &mut Option<ChangeRow>) -> bool {
    let Some(f) = filter else {
        return true;
    };
    if !f.accepts(&d.event, d.schema.as_deref()) {
        return false;
    }
    match &f.row {
        Some(w) if &*d.event != "GAP" => w.matches(
            row.get_or_insert_with(|| ChangeRow::parse(frame::payload_of(&d.frame)))
                .get(),
        ),
        _ => true,
    }
}

/// Runs `sweep` periodically: often enough for the shortest configured timeout.
pub async fn run_sweeper(core: Rc<Core>) {
    let cfg = core.cfg();
    let shortest = [
        cfg.auth_timeout,
        cfg.header_timeout,
        cfg.ping_interval,
        cfg.sio_ping_interval,
        cfg.sio_ping_timeout,
    ]
    .into_iter()
    .min()
    .unwrap_or_default();
    let period = (shortest / 4).clamp(
        std::time::Duration::from_millis(20),
        std::time::Duration::from_secs(1),
    );
    loop {
        monoio::time::sleep(period).await;
        core.sweep(Instant::now());
    }
}
