//! Publishes sequenced on the core that owns their channel (`Sequencing::Cores`: the memory
//! engine, one node).
//!
//! Every channel name has one owner core (`owner_of`, a stable hash of the name). The owner
//! assigns the channel's offsets, encodes the `message` frame once, queues it to its own
//! subscribers in the same loop turn it read the publish, and hands the same `Arc<Delivery>`
//! to each other core that has subscribers of the channel. A publisher and subscribers on the
//! owner core cross no thread at all; a publish read on another core crosses once to the owner
//! (`CoreMsg::Publish`) and its answer once back. Interest (which other cores have subscribers)
//! is kept by the owner, told by `CoreMsg::Interest`. Nothing here is shared between cores.
//!
//! Queues (bounded; see `control::msg`): before it accepts a publish the owner reserves a slot
//! in every queue the message will enter: the control thread's (which stores it in history,
//! hands its webhooks to the pool and counts it) and each interested core's inbox; a forwarded
//! publish brings a slot reserved in its publishing core's inbox for the answer. If any queue
//! is full the publish is refused with `RATE_LIMITED` "broker busy", no offset is used and
//! nothing was accepted.
//!
//! Idempotency: a publish that repeats a key recorded by `idempotency` is answered with the
//! first publish's ack before anything is reserved or sequenced.
//!
//! History reads after an ack: the sequenced message enters the control thread's queue before
//! the ack is sent (a local ack is only queued to the connection's outbox, written later by its
//! writer task), and REST queries enter that same queue, so a query made after a client saw
//! `published` finds the message.

use std::{cell::RefCell, collections::HashMap, sync::Arc, time::Instant};

use tokio::sync::mpsc::{OwnedPermit, Permit, error::TrySendError};
use uuid::Uuid;

use super::{Core, idempotency::Idempotency};
use crate::{
    channel::ChannelName,
    control::{
        ConnId, ControlMsg, CoreId, CoreMsg, Delivery, PubAnswer, PublishReq, SourceBatch,
        SourceResult, SourceSlots, Stored,
    },
    engine::{Appended, ChannelPos, Sequencing},
    protocol::ErrorCode,
    timestamp::Timestamp,
};

/// The core that sequences `ch` when there are `workers` cores.
pub fn owner_of(ch: &ChannelName, workers: usize) -> CoreId {
    if workers <= 1 {
        return 0;
    }
    // FNV-1a: stable across threads and runs, cheap for short names.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in ch.as_str().bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (h % workers as u64) as usize
}

/// A publish this core could not take: the caller answers the publisher.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// A queue on the way was full; nothing was accepted.
    Busy,
    /// The node is shutting down.
    Closing,
}

/// A reserved queue slot: reserved here (borrowed from the sender), or brought by the
/// publisher (owned).
enum Slot<'a, T> {
    Borrowed(Permit<'a, T>),
    Owned(OwnedPermit<T>),
}

impl<T> Slot<'_, T> {
    fn send(self, m: T) {
        match self {
            Self::Borrowed(p) => p.send(m),
            Self::Owned(p) => {
                p.send(m);
            }
        }
    }
}

/// What `sequence` did with a publish (its publisher is answered either way).
enum Sequenced {
    Published,
    /// A repeated idempotency key: answered with the first ack, nothing sequenced.
    Duplicate,
    NoChannel,
    Refused,
}

/// Per channel this core owns: the last offset it assigned, and which other cores have
/// subscribers (bit i = core i).
#[derive(Default)]
struct Chan {
    last: u64,
    cores: u64,
}

/// The channels this core owns. Entries are kept once created: offsets never restart.
pub struct Sequencer {
    chans: RefCell<HashMap<ChannelName, Chan>>,
    idempotency: RefCell<Idempotency>,
}

impl Sequencer {
    pub fn new(idempotency: Idempotency) -> Self {
        Self {
            chans: RefCell::default(),
            idempotency: RefCell::new(idempotency),
        }
    }

    /// The last offset assigned in `ch` (0: none yet).
    pub fn last(&self, ch: &ChannelName) -> u64 {
        self.chans.borrow().get(ch).map_or(0, |c| c.last)
    }

    fn set_interest(&self, ch: &ChannelName, core: CoreId, on: bool) {
        let mut chans = self.chans.borrow_mut();
        let c = chans.entry(ch.clone()).or_default();
        if on {
            c.cores |= 1 << core;
        } else {
            c.cores &= !(1 << core);
        }
    }

    fn cores(&self, ch: &ChannelName) -> u64 {
        self.chans.borrow().get(ch).map_or(0, |c| c.cores)
    }

    fn advance(&self, ch: &ChannelName) -> u64 {
        let mut chans = self.chans.borrow_mut();
        let c = match chans.get_mut(ch) {
            Some(c) => c,
            None => chans.entry(ch.clone()).or_default(),
        };
        c.last += 1;
        c.last
    }
}

/// Where the answer to a publish goes.
enum ReplyTo {
    /// A connection on this core.
    Local(ConnId),
    /// A connection on another core, through the slot reserved in that core's inbox.
    Remote(ConnId, OwnedPermit<CoreMsg>),
    /// An HTTP publisher (any core), through `PublishReq::http`.
    Http,
    /// The database change stream, which collects `sequence`'s result instead.
    Source,
}

impl Core {
    pub(super) fn sequencing(&self) -> Sequencing {
        self.shared.sequencing
    }

    /// Takes a publish from a connection of this core: sequences it here, forwards it to the
    /// channel's owner core, or (redis engine) hands it to the control thread. The answer
    /// (`published` or an error frame) reaches the connection later.
    pub fn publish(&self, req: PublishReq) -> Result<(), Refused> {
        if self.sequencing() == Sequencing::Engine {
            return match self.control.try_send(ControlMsg::Publish(Box::new(req))) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => Err(Refused::Busy),
                Err(TrySendError::Closed(_)) => Err(Refused::Closing),
            };
        }
        let owner = owner_of(&req.channel, self.peers.len());
        if owner == self.id {
            let to = match req.http {
                Some(_) => ReplyTo::Http,
                None => ReplyTo::Local(req.conn),
            };
            let _ = self.sequence(req, to, None);
            return Ok(());
        }
        let reply =
            match req.http {
                Some(_) => None,
                None => Some(self.peers[self.id].clone().try_reserve_owned().map_err(
                    |e| match e {
                        TrySendError::Full(_) => Refused::Busy,
                        TrySendError::Closed(_) => Refused::Closing,
                    },
                )?),
            };
        let msg = CoreMsg::Publish {
            req: Box::new(req),
            reply,
        };
        match self.peers[owner].try_send(msg) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(Refused::Busy),
            Err(TrySendError::Closed(_)) => Err(Refused::Closing),
        }
    }

    /// A publish another core forwarded to this one, the channel's owner.
    pub(super) fn sequence_forwarded(&self, req: PublishReq, reply: Option<OwnedPermit<CoreMsg>>) {
        let to = match reply {
            Some(slot) => ReplyTo::Remote(req.conn, slot),
            None => ReplyTo::Http,
        };
        let _ = self.sequence(req, to, None);
    }

    /// Changes from the database change stream for channels this core owns, in stream order:
    /// each is sequenced like a client publish, in the slots the stream reserved for it (so
    /// none is refused). Without slots (not sent that way) a change may be refused as busy;
    /// then the rest of the batch is refused too, so none overtakes another.
    pub(super) fn sequence_source(&self, b: SourceBatch) {
        let SourceBatch { msgs, slots, reply } = b;
        let mut slots = slots.into_iter();
        let mut results = Vec::with_capacity(msgs.len());
        for m in msgs {
            if results.last().is_some_and(|r| *r == SourceResult::Busy) {
                results.push(SourceResult::Busy);
                continue;
            }
            let req = PublishReq::from_source(self.id, m);
            results.push(match self.sequence(req, ReplyTo::Source, slots.next()) {
                Sequenced::Published | Sequenced::Duplicate => SourceResult::Published,
                Sequenced::NoChannel => SourceResult::NoChannel,
                Sequenced::Refused => SourceResult::Busy,
            });
        }
        let _ = reply.send(results);
    }

    /// Another core gained or lost subscribers of a channel this core owns; returns the
    /// channel's position (every later message goes to that core too).
    pub(super) fn apply_interest(&self, ch: &ChannelName, core: CoreId, on: bool) -> ChannelPos {
        self.sequencer.set_interest(ch, core, on);
        self.owned_position(ch)
    }

    /// The position of a channel this core owns.
    pub(super) fn owned_position(&self, ch: &ChannelName) -> ChannelPos {
        ChannelPos {
            offset: self.sequencer.last(ch),
            epoch: self.shared.epoch.clone(),
        }
    }

    /// The cores (bits) with subscribers of `ch`, a channel this core owns.
    pub(super) fn sequencer_cores(&self, ch: &ChannelName) -> u64 {
        self.sequencer.cores(ch)
    }

    /// Whether this core must tell `ch`'s owner about its subscribers, and which core that is.
    pub(super) fn interest_owner(&self, ch: &ChannelName) -> Option<CoreId> {
        let owner = owner_of(ch, self.peers.len());
        (owner != self.id).then_some(owner)
    }

    /// Sequences one publish of a channel this core owns, in this loop turn: offset, one
    /// encoding, the answer, local subscribers, then the other interested cores. `slots`:
    /// queue slots reserved by the publisher (the change stream); otherwise reserved here.
    fn sequence(
        &self,
        mut req: PublishReq,
        reply: ReplyTo,
        slots: Option<SourceSlots>,
    ) -> Sequenced {
        let Some(rec) = self.resolve(&req.channel) else {
            self.refuse(
                reply,
                &mut req,
                ErrorCode::ChannelNotFound,
                "Channel not found or not accessible",
            );
            return Sequenced::NoChannel;
        };
        let now = Instant::now();
        if let Some(key) = &req.idempotency_key
            && let Some(first) = self
                .sequencer
                .idempotency
                .borrow()
                .get(&req.channel, key, now)
        {
            self.metrics().publish_duplicates_total.inc();
            self.acknowledge(reply, &mut req, &first);
            return Sequenced::Duplicate;
        }
        let reserved = match slots {
            Some(s) => Ok(self.use_slots(&req.channel, s)),
            None => self.reserve(&req.channel),
        };
        let (store, peers) = match reserved {
            Ok(p) => p,
            Err(r) => {
                match r {
                    Refused::Busy => {
                        self.metrics().publishes_refused_busy_total.inc();
                        self.refuse(
                            reply,
                            &mut req,
                            ErrorCode::RateLimited,
                            "broker busy: publish not accepted, retry",
                        )
                    }
                    Refused::Closing => {
                        self.refuse(reply, &mut req, ErrorCode::Internal, "server shutting down")
                    }
                }
                return Sequenced::Refused;
            }
        };
        let at = Appended {
            id: req.source.map_or_else(Uuid::now_v7, |p| p.message_id()),
            offset: self.sequencer.advance(&req.channel),
            created_at: Timestamp::now(),
        };
        if let Some(key) = &req.idempotency_key {
            let evicted =
                self.sequencer
                    .idempotency
                    .borrow_mut()
                    .record(&req.channel, key.clone(), at, now);
            self.metrics().idempotency_evicted_total.add(evicted);
        }
        let msg = req.message(&rec);
        let d = Arc::new(Delivery::new(&msg, &at, self.shared.metrics.has_socketio()));
        // A local ack is only queued here (written after this turn); a remote one is sent
        // after the message entered the control thread's queue (see the module header).
        let remote = match reply {
            ReplyTo::Local(conn) => {
                self.acknowledge(ReplyTo::Local(conn), &mut req, &at);
                None
            }
            remote => Some(remote),
        };
        let ws_audience = self.deliver(&d);
        store.send(ControlMsg::Stored(Box::new(Stored {
            msg,
            at,
            ws_audience,
        })));
        if let Some(to) = remote {
            self.acknowledge(to, &mut req, &at);
        }
        for p in peers {
            p.send(CoreMsg::Deliver(d.clone()));
        }
        Sequenced::Published
    }

    /// The slots a publisher brought, for the other cores with subscribers of `ch` (the
    /// others are released).
    fn use_slots(
        &self,
        ch: &ChannelName,
        s: SourceSlots,
    ) -> (Slot<'_, ControlMsg>, Vec<Slot<'_, CoreMsg>>) {
        let bits = self.sequencer.cores(ch) & !(1 << self.id);
        let peers = s
            .peers
            .into_iter()
            .enumerate()
            .filter(|(i, _)| bits & (1 << i) != 0)
            .filter_map(|(_, p)| p.map(Slot::Owned))
            .collect();
        (Slot::Owned(s.store), peers)
    }

    /// Reserves a slot in the control thread's queue and in each other interested core's
    /// inbox (a core that is gone is skipped: it has no connections left).
    #[allow(clippy::type_complexity)]
    fn reserve(
        &self,
        ch: &ChannelName,
    ) -> Result<(Slot<'_, ControlMsg>, Vec<Slot<'_, CoreMsg>>), Refused> {
        let store = Slot::Borrowed(self.control.try_reserve().map_err(|e| match e {
            TrySendError::Full(()) => Refused::Busy,
            TrySendError::Closed(()) => Refused::Closing,
        })?);
        let mut bits = self.sequencer.cores(ch) & !(1 << self.id);
        let mut peers = Vec::new();
        while bits != 0 {
            let i = bits.trailing_zeros() as usize;
            bits &= bits - 1;
            match self.peers[i].try_reserve() {
                Ok(p) => peers.push(Slot::Borrowed(p)),
                Err(TrySendError::Full(())) => return Err(Refused::Busy),
                Err(TrySendError::Closed(())) => {}
            }
        }
        Ok((store, peers))
    }

    /// Answers a publisher with its ack.
    fn acknowledge(&self, to: ReplyTo, req: &mut PublishReq, at: &Appended) {
        match to {
            ReplyTo::Http => {
                req.answer_http(|| PubAnswer::Published(*at));
            }
            ReplyTo::Source => {}
            to => {
                if let Some(f) = req.ack(at) {
                    self.answer(to, f, false)
                }
            }
        }
    }

    /// Answers a publisher with a refusal.
    fn refuse(&self, to: ReplyTo, req: &mut PublishReq, code: ErrorCode, message: &str) {
        match to {
            ReplyTo::Http => {
                req.answer_http(|| PubAnswer::Refused {
                    code,
                    message: message.to_string(),
                });
            }
            ReplyTo::Source => {}
            to => self.answer(to, req.error(code, message), true),
        }
    }

    fn answer(&self, to: ReplyTo, frame: bytes::Bytes, is_error: bool) {
        match to {
            ReplyTo::Local(conn) => {
                let c = self.conns.borrow().get(&conn).cloned();
                if let Some(c) = c {
                    if is_error {
                        self.metrics().errors_sent_total.inc();
                    }
                    self.push(&c, frame);
                }
            }
            ReplyTo::Remote(conn, slot) => {
                slot.send(CoreMsg::Reply { conn, frame });
            }
            ReplyTo::Http | ReplyTo::Source => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owners_are_stable_and_spread() {
        let names: Vec<ChannelName> = (0..1000)
            .map(|i| ChannelName::parse(&format!("room:{i}")).unwrap())
            .collect();
        assert!(names.iter().all(|n| owner_of(n, 1) == 0));
        let mut per = [0usize; 4];
        for n in &names {
            let o = owner_of(n, 4);
            assert_eq!(o, owner_of(n, 4));
            per[o] += 1;
        }
        assert!(per.iter().all(|&c| c > 150), "{per:?}");
    }

    #[test]
    fn offsets_advance_per_channel_and_interest_is_per_core() {
        let s = Sequencer::new(Idempotency::new(std::time::Duration::from_secs(1), 1));
        let a = ChannelName::parse("a").unwrap();
        let b = ChannelName::parse("b").unwrap();
        assert_eq!(s.advance(&a), 1);
        assert_eq!(s.advance(&a), 2);
        assert_eq!(s.advance(&b), 1);
        s.set_interest(&a, 1, true);
        s.set_interest(&a, 3, true);
        assert_eq!(s.cores(&a), 0b1010);
        s.set_interest(&a, 1, false);
        assert_eq!(s.cores(&a), 0b1000);
        assert_eq!(s.advance(&a), 3, "interest changes keep the offset");
        assert_eq!(s.cores(&b), 0);
    }
}
