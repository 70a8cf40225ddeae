//! Presence: who is subscribed to a channel, as members rather than sockets. A member is a
//! user (keyed by the token's `sub`, `type: "user"`) or, for a connection with no user id
//! (an anon key, the admin key), the connection itself (`type: "anonymous"`, keyed by its
//! socket id). However many sockets a member has, it joins once (its first socket) and
//! leaves once (its last).
//!
//! - `Book` is the authority's count of a channel's members: the channel's owner core
//!   (memory engine) keeps one for the channels it owns. (Redis engine: the counts live in
//!   Redis, `engine::redis::presence`.)
//! - `Op` is what a core tells the authority: a member's first local socket joined (`Join`),
//!   or its last one left (`Leave`). A `Join` that only asks for the snapshot (the member
//!   already has a socket on that core) is `counted: false`.
//! - `Event` is one join or leave, encoded once per protocol (`presence:join` /
//!   `presence:leave` for Socket.IO, `{"type":"presence"}` for the raw protocol) and sent to
//!   every core with subscribers, which queue it to each subscriber that wants presence.

use std::{collections::HashMap, sync::Arc};

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use crate::{
    channel::ChannelName,
    control::{ConnId, CoreId},
    protocol::ServerMsg,
    timestamp::Timestamp,
};

/// A presence member as clients see it (the InsForge SDK's shape).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    /// `user` or `anonymous`.
    #[serde(rename = "type")]
    pub kind: Arc<str>,
    #[serde(rename = "presenceId")]
    pub presence_id: Arc<str>,
    #[serde(rename = "joinedAt")]
    pub joined_at: Arc<str>,
}

impl Member {
    /// The member for a connection: its user, or (no user id) the socket itself.
    pub fn of(user_id: Option<&str>, socket_id: &str) -> (Key, Self) {
        let joined_at: Arc<str> = Timestamp::now().rfc3339().as_str().into();
        match user_id {
            Some(u) => (
                Arc::from(format!("u:{u}")),
                Self {
                    kind: "user".into(),
                    presence_id: u.into(),
                    joined_at,
                },
            ),
            None => (
                Arc::from(format!("s:{socket_id}")),
                Self {
                    kind: "anonymous".into(),
                    presence_id: socket_id.into(),
                    joined_at,
                },
            ),
        }
    }
}

/// Identifies a member within a channel (`u:<user id>` or `s:<socket id>`).
pub type Key = Arc<str>;

/// What a core tells the channel's presence authority.
pub enum Op {
    /// A socket joined. `counted`: it is the member's first socket on that core (the member
    /// gains a holder); otherwise only the snapshot is wanted. `reply`: the members after
    /// the join. `origin`: the joining socket, which gets no `join` event of its own.
    Join {
        channel: ChannelName,
        key: Key,
        member: Member,
        counted: bool,
        origin: (CoreId, ConnId),
        reply: Option<oneshot::Sender<Vec<Member>>>,
    },
    /// A member's last socket on that core left.
    Leave { channel: ChannelName, key: Key },
    /// The channel's members, for `GET .../presence`.
    Members {
        channel: ChannelName,
        reply: oneshot::Sender<Vec<Member>>,
    },
}

impl Op {
    pub fn channel(&self) -> &ChannelName {
        match self {
            Op::Join { channel, .. } | Op::Leave { channel, .. } | Op::Members { channel, .. } => {
                channel
            }
        }
    }
}

/// One member joining or leaving, encoded once per protocol.
pub struct Event {
    pub channel: ChannelName,
    /// The joining socket (on this node), which is not told about itself.
    pub except: Option<(CoreId, ConnId)>,
    /// `42["presence:join"|"presence:leave", {member, meta}]`.
    pub sio: Bytes,
    /// `{"type":"presence","channel":..,"event":"join"|"leave","member":..}`.
    pub raw: Bytes,
}

impl Event {
    pub fn new(
        channel: ChannelName,
        join: bool,
        member: &Member,
        except: Option<(CoreId, ConnId)>,
    ) -> Self {
        let mut id = uuid::Uuid::encode_buffer();
        let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut id);
        let ts = Timestamp::now().rfc3339();
        let sio = crate::sio::encode::presence(join, channel.as_str(), member, id, ts.as_str());
        let raw = crate::frame::encode_json(&ServerMsg::Presence {
            channel: channel.as_str(),
            event: if join { "join" } else { "leave" },
            member,
        });
        Self {
            channel,
            except,
            sio,
            raw,
        }
    }
}

/// The members of the channels one authority keeps, with how many holders (cores) each
/// member has. Lives on one core.
#[derive(Default)]
pub struct Book {
    channels: HashMap<ChannelName, HashMap<Key, (Member, u32)>>,
}

impl Book {
    /// Applies a join; returns whether the member is new (a `join` event is due) and the
    /// members after it.
    pub fn join(
        &mut self,
        ch: &ChannelName,
        key: Key,
        member: Member,
        counted: bool,
    ) -> (Option<Member>, Vec<Member>) {
        let members = self.channels.entry(ch.clone()).or_default();
        let mut new = None;
        if counted {
            let e = members.entry(key).or_insert_with(|| {
                new = Some(member.clone());
                (member, 0)
            });
            e.1 += 1;
        }
        let all = members.values().map(|(m, _)| m.clone()).collect();
        if members.is_empty() {
            self.channels.remove(ch);
        }
        (new, all)
    }

    /// Applies a leave; returns the member if it is gone (a `leave` event is due).
    pub fn leave(&mut self, ch: &ChannelName, key: &Key) -> Option<Member> {
        let members = self.channels.get_mut(ch)?;
        let e = members.get_mut(key)?;
        e.1 -= 1;
        let gone = (e.1 == 0).then(|| members.remove(key).map(|(m, _)| m))?;
        if members.is_empty() {
            self.channels.remove(ch);
        }
        gone
    }

    /// Every channel's members with their keys (the redis engine's heartbeat).
    pub fn entries(&self) -> Vec<(ChannelName, Vec<(Key, Member)>)> {
        self.channels
            .iter()
            .map(|(ch, m)| {
                let members = m.iter().map(|(k, (m, _))| (k.clone(), m.clone())).collect();
                (ch.clone(), members)
            })
            .collect()
    }

    /// The member held under `key` in `ch`, if any.
    pub fn member(&self, ch: &ChannelName, key: &str) -> Option<Member> {
        self.channels.get(ch)?.get(key).map(|(m, _)| m.clone())
    }

    pub fn members(&self, ch: &ChannelName) -> Vec<Member> {
        self.channels
            .get(ch)
            .map(|m| m.values().map(|(m, _)| m.clone()).collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_join_and_one_leave_per_member() {
        let ch = ChannelName::parse("room:1").unwrap();
        let mut b = Book::default();
        let (k, m) = Member::of(Some("u1"), "s1");
        let (new, all) = b.join(&ch, k.clone(), m.clone(), true);
        assert_eq!(new.as_ref().map(|m| &*m.presence_id), Some("u1"));
        assert_eq!(all.len(), 1);
        // A second holder (another core) of the same user: no event.
        let (new, _) = b.join(&ch, k.clone(), m.clone(), true);
        assert!(new.is_none());
        // Snapshot only.
        let (new, all) = b.join(&ch, k.clone(), m.clone(), false);
        assert!(new.is_none());
        assert_eq!(all.len(), 1);
        let (ka, a) = Member::of(None, "sock-9");
        assert_eq!(&*a.kind, "anonymous");
        assert!(b.join(&ch, ka.clone(), a, true).0.is_some());
        assert_eq!(b.members(&ch).len(), 2);
        assert!(b.leave(&ch, &k).is_none(), "one holder left");
        assert_eq!(b.leave(&ch, &k).map(|m| m.presence_id), Some("u1".into()));
        assert!(b.leave(&ch, &k).is_none(), "already gone");
        assert!(b.leave(&ch, &ka).is_some());
        assert!(b.members(&ch).is_empty());
        assert!(b.channels.is_empty());
    }
}
