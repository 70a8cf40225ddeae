//! A core: one `ringcast-core-{i}` monoio thread and everything it owns: its connections,
//! its subscription index, its copy of the channel table, its counters. `Rc`/`Cell`/`RefCell`
//! only; nothing here is shared with another core, and nothing here awaits remote I/O.
//!
//! - `socket` holds a connection's socket halves and the cancellable read;
//! - `sequencer` orders and fans out the publishes of the channels this core owns (memory
//!   engine), or hands publishes to the control thread (redis engine);
//! - `inbox` applies what the control thread and the other cores send (deliveries, replies,
//!   forwarded publishes, interest, new tables);
//! - `out_frame` is a frame as queued to this core's connections (`Rc`-shared);
//! - `gather` joins the frames of a multi-frame write once for all the core's writers;
//! - `send_gate` bounds the socket writes in flight, so a large fan-out goes out in slices;
//! - `recovery` sends a subscriber what it missed (`since`) before its live messages;
//! - `idempotency` remembers the idempotency keys of the channels this core owns;
//! - `bucket` is the per-connection publish rate limit (WebSocket and HTTP);
//! - `presence` counts this core's sockets per channel member and delivers presence events
//!   (and, memory engine, keeps the members of the channels this core owns);
//! - `access` applies the policies in force to subscribes, publishes and deliveries;
//! - the sweeper (in `inbox`) enforces auth, idle, HTTP and token-expiry timeouts and sends
//!   pings.

pub mod access;
pub mod bucket;
pub mod conn;
pub mod gather;
mod idempotency;
pub mod inbox;
pub mod index;
pub mod out_frame;
mod presence;
pub mod recovery;
pub mod send_gate;
pub mod sequencer;
pub mod socket;

use std::{
    cell::{Cell, RefCell},
    collections::HashMap,
    rc::Rc,
    sync::Arc,
    time::Duration,
};

use tokio::sync::{mpsc, oneshot};

use crate::{
    auth::Verifier,
    channel::{ChannelName, ChannelRecord, ChannelTable, ResolveCache},
    config::Config,
    control::{ConnId, ControlMsg, CoreId, CoreMsg, RestOk, RestReq, msg::Interest},
    engine::{ChannelPos, Sequencing},
    http::ApiError,
    metrics::{CoreMetrics, Metrics},
    protocol::{DbFilter, Since},
};
use conn::Conn;
use index::{Member, SubIndex};
use recovery::Subscribed;
use send_gate::SendGate;
use sequencer::Sequencer;

/// Where a core sends its interest changes.
enum Router<'a> {
    Control(&'a mpsc::Sender<ControlMsg>),
    Core(&'a mpsc::Sender<CoreMsg>),
}

/// What every core of a node reads and nobody mutates (except atomics in `metrics`).
pub struct NodeShared {
    pub config: Config,
    pub metrics: Metrics,
    pub engine_name: &'static str,
    /// Where publishes are ordered (follows the engine).
    pub sequencing: Sequencing,
    pub node_id: String,
    /// Memory engine: the epoch of every channel's history on this node (history starts
    /// empty at every start, so a new process means a new epoch).
    pub epoch: Arc<str>,
    /// The JWKS key set (`auth.jwks_url`), kept fresh by the `ringcast-jwks` thread.
    pub jwks: Option<Arc<crate::auth::JwksStore>>,
}

pub struct Core {
    pub id: CoreId,
    pub shared: Arc<NodeShared>,
    pub table: RefCell<Arc<ChannelTable>>,
    resolved: RefCell<ResolveCache>,
    pub index: RefCell<SubIndex>,
    pub conns: RefCell<HashMap<ConnId, Rc<Conn>>>,
    pub control: mpsc::Sender<ControlMsg>,
    /// Every core's inbox, this one's included (index = core id).
    peers: Vec<mpsc::Sender<CoreMsg>>,
    sequencer: Sequencer,
    /// Bounds the socket writes in flight on this core (`server.send_slice`).
    pub send_gate: SendGate,
    /// The blocks of multi-frame writes, built once and shared by the writers that need them.
    pub gather: gather::Gather,
    pub verifier: Verifier,
    /// The policies in force (replaced as a whole when they change).
    pub access: RefCell<access::Access>,
    /// This core's sockets per (channel, presence member).
    presence_local: RefCell<HashMap<(ChannelName, crate::presence::Key), u32>>,
    /// Memory engine: the members of the channels this core owns.
    presence_book: RefCell<crate::presence::Book>,
    next_conn: Cell<u64>,
    next_sub: Cell<u64>,
    pub shutting_down: Cell<bool>,
}

#[derive(Debug, PartialEq, Eq)]
pub enum SubscribeError {
    TooMany,
    /// The channel was disabled or deleted while the subscribe waited for confirmation.
    NotFound,
    /// The control thread or the channel's owner core is gone (shutting down).
    Unavailable,
}

impl Core {
    pub fn new(
        id: CoreId,
        shared: Arc<NodeShared>,
        table: Arc<ChannelTable>,
        policies: Arc<crate::policy::PolicySet>,
        control: mpsc::Sender<ControlMsg>,
        peers: Vec<mpsc::Sender<CoreMsg>>,
    ) -> Self {
        let c = &shared.config;
        let send_gate = SendGate::new(c.send_slice, c.send_gate);
        let sequencer = Sequencer::new(idempotency::Idempotency::new(
            c.idempotency_window,
            c.idempotency_max_keys / c.workers.max(1),
        ));
        Self {
            id,
            verifier: Verifier::new(&c.jwt_secret, c.admin_key.as_deref())
                .with_anon_key(c.anon_key.as_deref())
                .with_public_keys(crate::auth::PublicKeys {
                    file: c.jwt_public_key.clone(),
                    jwks: shared.jwks.clone(),
                    issuer: c.jwt_issuer.clone(),
                    audience: c.jwt_audience.clone(),
                }),
            access: RefCell::new(access::Access::new(policies)),
            shared,
            table: RefCell::new(table),
            resolved: RefCell::new(ResolveCache::default()),
            index: RefCell::new(SubIndex::default()),
            conns: RefCell::new(HashMap::new()),
            control,
            peers,
            sequencer,
            send_gate,
            gather: gather::Gather::default(),
            presence_local: RefCell::new(HashMap::new()),
            presence_book: RefCell::new(crate::presence::Book::default()),
            next_conn: Cell::new(1),
            next_sub: Cell::new(1),
            shutting_down: Cell::new(false),
        }
    }

    /// The enabled record `ch` resolves to in this core's current table (memoized).
    pub fn resolve(&self, ch: &ChannelName) -> Option<Arc<ChannelRecord>> {
        let table = self.table.borrow();
        self.resolved.borrow_mut().resolve(&table, ch)
    }

    pub fn cfg(&self) -> &Config {
        &self.shared.config
    }

    pub fn metrics(&self) -> &CoreMetrics {
        &self.shared.metrics.cores[self.id]
    }

    pub fn register(&self) -> Rc<Conn> {
        let id = ConnId(self.next_conn.get());
        self.next_conn.set(id.0 + 1);
        let c = self.cfg();
        let conn = Rc::new(Conn::new(
            id,
            c.outbound_queue_frames,
            c.outbound_queue_bytes,
        ));
        self.conns.borrow_mut().insert(id, conn.clone());
        self.metrics().connections.inc();
        self.metrics().connections_total.inc();
        conn
    }

    /// Forgets a connection and all its subscriptions.
    pub fn unregister(&self, conn: &Conn) {
        if self.conns.borrow_mut().remove(&conn.id).is_none() {
            return;
        }
        self.metrics().connections.sub(1);
        let subs: Vec<ChannelName> = conn.subs.borrow_mut().drain();
        self.metrics().subscriptions.sub(subs.len() as u64);
        for ch in subs {
            let (m, emptied) = self.index.borrow_mut().remove(&ch, conn.id);
            if let Some(key) = m.and_then(|m| m.presence) {
                self.presence_left(&ch, key);
            }
            if emptied {
                self.withdraw_interest(ch);
            }
        }
    }

    /// Open connections on the whole node (all cores), for `server.max_connections`.
    pub fn node_connections(&self) -> u64 {
        self.shared
            .metrics
            .cores
            .iter()
            .map(|c| c.connections.get())
            .sum()
    }

    /// Adds a subscription; idempotent (the same id is returned for a repeated subscribe).
    /// With `since`, the missed messages are read first (`recovery`): the caller sends
    /// `subscribed`, then starts the returned catch-up.
    pub async fn subscribe(
        &self,
        conn: &Rc<Conn>,
        ch: &ChannelName,
        filter: Option<DbFilter>,
        since: Option<Since>,
        presence: bool,
    ) -> Result<Subscribed, SubscribeError> {
        let existing = conn.subs.borrow().get(ch);
        if let Some(n) = existing {
            let mut s = self.already_subscribed(conn, ch, n, since);
            if presence {
                s.members = Some(self.presence_snapshot(conn, ch).await);
            }
            return Ok(s);
        }
        if conn.subs.borrow().len() >= self.cfg().max_subscriptions {
            return Err(SubscribeError::TooMany);
        }
        if !self.index.borrow().is_confirmed(ch) {
            self.index.borrow_mut().entry(ch).pending += 1;
            let pos = self.gain_interest(ch).await;
            let mut idx = self.index.borrow_mut();
            let e = idx.entry(ch);
            e.pending -= 1;
            let Some(pos) = pos else {
                idx.drop_if_unused(ch);
                return Err(SubscribeError::Unavailable);
            };
            e.confirmed = true;
            // A delivery applied while this task waited may already be past it.
            e.pos.set(e.pos.get().max(pos.offset));
            e.epoch = pos.epoch;
        }
        let gone = conn.is_closing();
        let unresolvable = self.resolve(ch).is_none();
        if gone || unresolvable {
            // The connection went away, or a new table disabled the channel, while we waited:
            // leave no member behind.
            if self.index.borrow_mut().drop_if_unused(ch) {
                self.withdraw_interest(ch.clone());
            }
            return Err(if gone {
                SubscribeError::Unavailable
            } else {
                SubscribeError::NotFound
            });
        }
        let n = self.next_sub.get();
        self.next_sub.set(n + 1);
        let (pos, plan) = {
            let idx = self.index.borrow();
            let e = idx.get(ch).expect("confirmed above");
            let pos = ChannelPos {
                offset: e.pos.get(),
                epoch: e.epoch.clone(),
            };
            let plan = recovery::plan(since.as_ref(), &pos, self.cfg().recover_max);
            (pos, plan)
        };
        let held = plan.held(pos.offset);
        let presence_member = presence.then(|| {
            let who = conn.identity.borrow();
            let uid = who.as_ref().and_then(|w| w.user_id.clone());
            crate::presence::Member::of(uid.as_deref(), &conn.socket_id())
        });
        self.index.borrow_mut().entry(ch).members.insert(
            conn.id,
            Member {
                conn: conn.clone(),
                filter: filter.clone().map(Box::new),
                held: held.clone(),
                presence: presence_member.as_ref().map(|(k, _)| k.clone()),
                sio: conn.is_sio(),
            },
        );
        conn.subs.borrow_mut().insert(ch.clone(), n);
        self.metrics().subscriptions.inc();
        let id = self.subscription_id(n);
        let members = match presence_member {
            Some((key, member)) => Some(self.presence_join(conn, ch, key, member).await),
            None => None,
        };
        match held {
            None => Ok(Subscribed {
                id,
                recovery: plan.answer_without_read(),
                pos,
                members,
            }),
            Some(held) => {
                let r = self.start_recovery(ch, plan, &pos, held, filter).await;
                match r {
                    Ok(recovery) => Ok(Subscribed {
                        id,
                        recovery: Some(recovery),
                        pos,
                        members,
                    }),
                    Err(()) => {
                        self.unsubscribe(conn, ch);
                        Err(SubscribeError::Unavailable)
                    }
                }
            }
        }
    }

    /// `subscriptionId`: unique per subscription across nodes (node id, core, sequence).
    fn subscription_id(&self, n: u64) -> Rc<str> {
        Rc::from(format!("{}-{}-{n}", self.shared.node_id, self.id))
    }

    /// Removes a subscription; true if there was one.
    pub fn unsubscribe(&self, conn: &Conn, ch: &ChannelName) -> bool {
        if conn.subs.borrow_mut().remove(ch).is_none() {
            return false;
        }
        self.metrics().subscriptions.sub(1);
        let (m, emptied) = self.index.borrow_mut().remove(ch, conn.id);
        if let Some(key) = m.and_then(|m| m.presence) {
            self.presence_left(ch, key);
        }
        if emptied {
            self.withdraw_interest(ch.clone());
        }
        true
    }

    /// Who routes `ch`'s messages to this core: the control thread (redis engine), the
    /// channel's owner core, or nobody to tell (`None`: this core owns it, its index is the
    /// interest).
    fn interest_router(&self, ch: &ChannelName) -> Option<Router<'_>> {
        match self.sequencing() {
            Sequencing::Engine => Some(Router::Control(&self.control)),
            Sequencing::Cores => self
                .interest_owner(ch)
                .map(|owner| Router::Core(&self.peers[owner])),
        }
    }

    fn interest(
        &self,
        ch: ChannelName,
        on: bool,
        done: Option<oneshot::Sender<ChannelPos>>,
    ) -> Interest {
        Interest {
            core: self.id,
            channel: ch,
            on,
            done,
        }
    }

    /// Tells whoever routes `ch`'s messages that this core has subscribers; once it will
    /// route them here, the channel's position then (`None`: it will not).
    async fn gain_interest(&self, ch: &ChannelName) -> Option<ChannelPos> {
        let (tx, rx) = oneshot::channel();
        let i = self.interest(ch.clone(), true, Some(tx));
        let sent = match self.interest_router(ch) {
            None => return Some(self.owned_position(ch)),
            Some(Router::Control(c)) => c.send(ControlMsg::Interest(i)).await.is_ok(),
            Some(Router::Core(c)) => c.send(CoreMsg::Interest(i)).await.is_ok(),
        };
        if !sent {
            return None;
        }
        rx.await.ok()
    }

    /// Tells whoever routes `ch`'s messages that this core no longer needs them. Best effort:
    /// if the queue is full the core simply keeps receiving (and ignoring) them.
    fn withdraw_interest(&self, ch: ChannelName) {
        let router = self.interest_router(&ch);
        let i = self.interest(ch, false, None);
        match router {
            None => {}
            Some(Router::Control(c)) => drop(c.try_send(ControlMsg::Interest(i))),
            Some(Router::Core(c)) => drop(c.try_send(CoreMsg::Interest(i))),
        }
    }

    pub async fn rest(&self, req: RestReq, timeout: Duration) -> Result<RestOk, ApiError> {
        let (tx, rx) = oneshot::channel();
        let unavailable = || ApiError::unavailable("control thread unavailable");
        let call = async {
            self.control
                .send(ControlMsg::Rest { req, reply: tx })
                .await
                .map_err(|_| unavailable())?;
            rx.await.map_err(|_| unavailable())?
        };
        monoio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| Err(ApiError::unavailable("control thread timed out")))
    }

    pub async fn engine_reachable(&self) -> bool {
        let (tx, rx) = oneshot::channel();
        if self.control.try_send(ControlMsg::Health(tx)).is_err() {
            return false;
        }
        matches!(
            monoio::time::timeout(Duration::from_secs(2), rx).await,
            Ok(Ok(true))
        )
    }
}
