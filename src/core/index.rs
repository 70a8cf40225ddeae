//! `SubIndex`: this core's subscribers per channel name. Only this core touches it.
//!
//! A channel entry is `confirmed` once the control thread has acknowledged that it routes the
//! channel's messages to this core; members are only added to confirmed entries, so a client
//! that got `subscribed` receives every message published after it. `pending` counts
//! subscribes waiting for that confirmation; an entry is removed (and interest withdrawn)
//! only when it has no members and nothing pending.
//!
//! Each confirmed entry knows its channel's position on this core: the last offset routed
//! here (`pos`, starting from the channel's offset when the routing was confirmed) and the
//! channel's `epoch`. That is what `subscribed` reports and what a shutdown's `reconnect`
//! frame tells each subscriber. A member still catching up (`recovery`) has its live
//! messages held (`Held`) until its missed ones were queued.

use std::{
    cell::{Cell, RefCell},
    collections::{HashMap, VecDeque},
    rc::Rc,
    sync::Arc,
};

use super::{conn::Conn, out_frame::OutFrame};
use crate::{channel::ChannelName, control::ConnId, protocol::DbFilter};

pub struct Member {
    pub conn: Rc<Conn>,
    /// Boxed: most subscriptions have none, and members are per subscriber.
    pub filter: Option<Box<DbFilter>>,
    /// Set while the member catches up: its live messages wait here.
    pub held: Option<Rc<Held>>,
    /// The subscription takes part in presence (Socket.IO always; raw with `presence:
    /// true`): its member key, and it receives presence events.
    pub presence: Option<crate::presence::Key>,
    /// The subscriber speaks Socket.IO (kept here, beside what every delivery reads, rather
    /// than read from the connection).
    pub sio: bool,
}

/// Live messages of a member that is still being sent what it missed, in offset order.
///
/// Bound: the connection's outbound queue bounds (`websocket.outbound_queue_frames` frames,
/// `websocket.outbound_queue_bytes` bytes). Overflow: what is held is dropped, and so is
/// every live message until the catch-up has read up to them; the catch-up then reads them
/// from history, where every message routed to a core already is (`recovery`).
#[derive(Default)]
pub struct Held {
    pub frames: RefCell<VecDeque<(u64, OutFrame)>>,
    bytes: Cell<usize>,
    /// The last offset the member was sent (recovered or held and then sent).
    pub sent: Cell<u64>,
    /// Live messages were dropped: the catch-up must read history up to the present.
    pub overflowed: Cell<bool>,
}

impl Held {
    pub fn new(sent: u64) -> Self {
        Self {
            sent: Cell::new(sent),
            ..Self::default()
        }
    }

    /// Holds a live frame; past the bounds, drops everything held (see the type's doc).
    pub fn hold(&self, offset: u64, f: OutFrame, max_frames: usize, max_bytes: usize) {
        if self.overflowed.get() {
            return;
        }
        let mut q = self.frames.borrow_mut();
        if q.len() >= max_frames || self.bytes.get() + f.len() > max_bytes {
            q.clear();
            self.bytes.set(0);
            self.overflowed.set(true);
            return;
        }
        self.bytes.set(self.bytes.get() + f.len());
        q.push_back((offset, f));
    }

    /// After an overflow, once the catch-up knows how far to read: hold again.
    pub fn restart(&self) {
        self.frames.borrow_mut().clear();
        self.bytes.set(0);
        self.overflowed.set(false);
    }

    pub fn pop(&self) -> Option<(u64, OutFrame)> {
        let f = self.frames.borrow_mut().pop_front()?;
        self.bytes.set(self.bytes.get() - f.1.len());
        Some(f)
    }
}

#[derive(Default)]
pub struct ChannelSubs {
    pub members: HashMap<ConnId, Member>,
    pub confirmed: bool,
    pub pending: u32,
    /// The last offset routed to this core (valid once confirmed).
    pub pos: Cell<u64>,
    /// The channel's epoch (valid once confirmed).
    pub epoch: Arc<str>,
}

impl ChannelSubs {
    /// Where `conn` stands in this channel: the last offset it was sent.
    pub fn sent_to(&self, conn: ConnId) -> u64 {
        match self.members.get(&conn).and_then(|m| m.held.as_ref()) {
            Some(h) => h.sent.get(),
            None => self.pos.get(),
        }
    }
}

#[derive(Default)]
pub struct SubIndex {
    channels: HashMap<ChannelName, ChannelSubs>,
}

impl SubIndex {
    pub fn get(&self, ch: &ChannelName) -> Option<&ChannelSubs> {
        self.channels.get(ch)
    }

    pub fn get_mut(&mut self, ch: &ChannelName) -> Option<&mut ChannelSubs> {
        self.channels.get_mut(ch)
    }

    pub fn entry(&mut self, ch: &ChannelName) -> &mut ChannelSubs {
        self.channels.entry(ch.clone()).or_default()
    }

    pub fn is_confirmed(&self, ch: &ChannelName) -> bool {
        self.channels.get(ch).is_some_and(|e| e.confirmed)
    }

    /// Removes a member; returns it, and true if the channel entry is now gone (withdraw
    /// interest).
    pub fn remove(&mut self, ch: &ChannelName, conn: ConnId) -> (Option<Member>, bool) {
        let Some(e) = self.channels.get_mut(ch) else {
            return (None, false);
        };
        let m = e.members.remove(&conn);
        (m, self.drop_if_unused(ch))
    }

    /// Removes every member of a channel; returns them.
    pub fn take_all(&mut self, ch: &ChannelName) -> Vec<Member> {
        let Some(e) = self.channels.get_mut(ch) else {
            return Vec::new();
        };
        let out = e.members.drain().map(|(_, m)| m).collect();
        self.drop_if_unused(ch);
        out
    }

    /// Drops an entry with no members and no pending subscribes; true if dropped.
    pub fn drop_if_unused(&mut self, ch: &ChannelName) -> bool {
        match self.channels.get(ch) {
            Some(e) if e.members.is_empty() && e.pending == 0 => {
                self.channels.remove(ch);
                true
            }
            _ => false,
        }
    }

    pub fn channel_names(&self) -> Vec<ChannelName> {
        self.channels.keys().cloned().collect()
    }
}
