//! Presence on a core: how many of this core's sockets each member has in each channel, the
//! `join` / `leave` it tells the channel's presence authority when that goes from 0 to 1 or
//! from 1 to 0, and the presence events it queues to its subscribers.
//!
//! The authority is the channel's owner core (memory engine: its `presence::Book`) or the
//! control thread (redis engine: the counts live in Redis). A subscribe with presence waits
//! for the authority's answer (the members, itself included) like it waits for interest;
//! nothing waits on Redis on a core.
//!
//! Events go to each subscriber of the channel on this core that takes part in presence,
//! except the socket that joined: Socket.IO sockets get the Socket.IO frame, raw ones the
//! `presence` frame; both were encoded once for all cores.
//!
//! Queues: `Op`s and events travel in the bounded core inboxes and the control queue with
//! `try_send`. When one is full the op or event is dropped and counted
//! (`ringcast_presence_dropped_total`); a dropped `Join` answers the subscriber with an
//! empty snapshot after the authority's answer does not come (the subscribe still
//! succeeds).

use std::sync::Arc;

use tokio::sync::oneshot;

use super::{Core, conn::Conn, out_frame::OutFrame};
use crate::{
    channel::ChannelName,
    control::{ControlMsg, CoreMsg},
    engine::Sequencing,
    presence::{Event, Key, Member, Op},
};

/// How long a subscribe waits for the members before answering without them.
const SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl Core {
    /// A subscription with presence was added for `conn`: counts the socket, tells the
    /// authority, and returns the channel's members (this one included).
    pub(super) async fn presence_join(
        &self,
        conn: &Conn,
        ch: &ChannelName,
        key: Key,
        member: Member,
    ) -> Vec<Member> {
        let counted = {
            let mut local = self.presence_local.borrow_mut();
            let n = local.entry((ch.clone(), key.clone())).or_insert(0);
            *n += 1;
            *n == 1
        };
        let (tx, rx) = oneshot::channel();
        let op = Op::Join {
            channel: ch.clone(),
            key,
            member: member.clone(),
            counted,
            origin: (self.id, conn.id),
            reply: Some(tx),
        };
        if !self.route_presence(op) {
            return vec![member];
        }
        match monoio::time::timeout(SNAPSHOT_WAIT, rx).await {
            Ok(Ok(members)) => members,
            _ => vec![member],
        }
    }

    /// The channel's members, for a socket that is already subscribed (nothing is counted).
    pub(super) async fn presence_snapshot(&self, conn: &Conn, ch: &ChannelName) -> Vec<Member> {
        let uid = conn
            .identity
            .borrow()
            .as_ref()
            .and_then(|w| w.user_id.clone());
        let (key, member) = Member::of(uid.as_deref(), &conn.socket_id());
        let (tx, rx) = oneshot::channel();
        let op = Op::Join {
            channel: ch.clone(),
            key,
            member: member.clone(),
            counted: false,
            origin: (self.id, conn.id),
            reply: Some(tx),
        };
        if !self.route_presence(op) {
            return vec![member];
        }
        match monoio::time::timeout(SNAPSHOT_WAIT, rx).await {
            Ok(Ok(members)) => members,
            _ => vec![member],
        }
    }

    /// A subscription with presence ended: the member leaves once its last local socket did.
    pub(super) fn presence_left(&self, ch: &ChannelName, key: Key) {
        let k = (ch.clone(), key);
        let last = {
            let mut local = self.presence_local.borrow_mut();
            match local.get_mut(&k) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    local.remove(&k);
                    true
                }
                None => false,
            }
        };
        if last {
            let (channel, key) = k;
            self.route_presence(Op::Leave { channel, key });
        }
    }

    /// Sends an op to the channel's authority; false if it could not be queued.
    fn route_presence(&self, op: Op) -> bool {
        let ch = op.channel().clone();
        let sent = match self.sequencing() {
            Sequencing::Engine => self
                .control
                .try_send(ControlMsg::Presence(Box::new(op)))
                .is_ok(),
            Sequencing::Cores => match self.interest_owner(&ch) {
                None => {
                    self.apply_presence(op);
                    true
                }
                Some(owner) => self.peers[owner]
                    .try_send(CoreMsg::Presence(Box::new(op)))
                    .is_ok(),
            },
        };
        if !sent {
            self.metrics().presence_dropped_total.inc();
        }
        sent
    }

    /// The authority's side (memory engine: this core owns the channel).
    pub(super) fn apply_presence(&self, op: Op) {
        let mut book = self.presence_book.borrow_mut();
        match op {
            Op::Join {
                channel,
                key,
                member,
                counted,
                origin,
                reply,
            } => {
                let (new, all) = book.join(&channel, key, member, counted);
                drop(book);
                if let Some(r) = reply {
                    let _ = r.send(all);
                }
                if let Some(m) = new {
                    self.broadcast_presence(Event::new(channel, true, &m, Some(origin)));
                }
            }
            Op::Leave { channel, key } => {
                let gone = book.leave(&channel, &key);
                drop(book);
                if let Some(m) = gone {
                    self.broadcast_presence(Event::new(channel, false, &m, None));
                }
            }
            Op::Members { channel, reply } => {
                let _ = reply.send(book.members(&channel));
            }
        }
    }

    /// Sends an event to every core with subscribers of its channel (this one included).
    fn broadcast_presence(&self, ev: Event) {
        let ev = Arc::new(ev);
        let bits = self.sequencer_cores(&ev.channel) | (1 << self.id);
        for (i, peer) in self.peers.iter().enumerate() {
            if bits & (1 << i) == 0 {
                continue;
            }
            if i == self.id {
                self.deliver_presence(&ev);
            } else if peer.try_send(CoreMsg::PresenceEvent(ev.clone())).is_err() {
                self.metrics().presence_dropped_total.inc();
            }
        }
    }

    /// Queues a presence event to this core's subscribers of its channel that take part in
    /// presence, except the socket that joined.
    pub fn deliver_presence(&self, ev: &Event) {
        let idx = self.index.borrow();
        let Some(e) = idx.get(&ev.channel) else {
            return;
        };
        let mut sio: Option<OutFrame> = None;
        let mut raw: Option<OutFrame> = None;
        for (id, m) in &e.members {
            if m.presence.is_none() || ev.except == Some((self.id, *id)) {
                continue;
            }
            let f = if m.conn.is_sio() {
                sio.get_or_insert_with(|| OutFrame::new(ev.sio.clone()))
            } else {
                raw.get_or_insert_with(|| OutFrame::new(ev.raw.clone()))
            };
            self.push(&m.conn, f.clone());
        }
    }

    /// The channel's members as the authority knows them (`None`: it did not answer).
    pub async fn presence_members(&self, ch: &ChannelName) -> Option<Vec<Member>> {
        let (tx, rx) = oneshot::channel();
        if !self.route_presence(Op::Members {
            channel: ch.clone(),
            reply: tx,
        }) {
            return None;
        }
        monoio::time::timeout(SNAPSHOT_WAIT, rx).await.ok()?.ok()
    }
}
