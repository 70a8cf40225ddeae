//! `SubIndex`: this core's subscribers per channel name. Only this core touches it.
//!
//! A channel entry is `confirmed` once the control thread has acknowledged that it routes the
//! channel's messages to this core; members are only added to confirmed entries, so a client
//! that got `subscribed` receives every message published after it. `pending` counts
//! subscribes waiting for that confirmation; an entry is removed (and interest withdrawn)
//! only when it has no members and nothing pending.

use std::{collections::HashMap, rc::Rc};

use super::conn::Conn;
use crate::{channel::ChannelName, control::ConnId, protocol::DbFilter};

pub struct Member {
    pub conn: Rc<Conn>,
    /// Boxed: most subscriptions have none, and members are per subscriber.
    pub filter: Option<Box<DbFilter>>,
}

#[derive(Default)]
pub struct ChannelSubs {
    pub members: HashMap<ConnId, Member>,
    pub confirmed: bool,
    pub pending: u32,
}

#[derive(Default)]
pub struct SubIndex {
    channels: HashMap<ChannelName, ChannelSubs>,
}

impl SubIndex {
    pub fn get(&self, ch: &ChannelName) -> Option<&ChannelSubs> {
        self.channels.get(ch)
    }

    pub fn entry(&mut self, ch: &ChannelName) -> &mut ChannelSubs {
        self.channels.entry(ch.clone()).or_default()
    }

    pub fn is_confirmed(&self, ch: &ChannelName) -> bool {
        self.channels.get(ch).is_some_and(|e| e.confirmed)
    }

    /// Removes a member; returns true if the channel entry is now gone (withdraw interest).
    pub fn remove(&mut self, ch: &ChannelName, conn: ConnId) -> bool {
        let Some(e) = self.channels.get_mut(ch) else {
            return false;
        };
        e.members.remove(&conn);
        self.drop_if_unused(ch)
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
