//! Which cores have subscribers of which channel, and the engine subscriptions that follow
//! (redis engine: `SSUBSCRIBE` when the node's first core gains a channel, `SUNSUBSCRIBE` when
//! its last one loses it).
//!
//! The engine work runs as a task of its own: the control loop never waits for Redis here (it
//! used to, two round trips per newly subscribed channel, with every delivery of the node
//! behind them). While a channel's subscription is being set up, the messages that already
//! arrive for it are held (at most `HELD` per channel; past that, or when the node resyncs
//! meanwhile, the channel is read back from its stream once it is set up) and the cores'
//! `done`s wait. Once it is set up, the node's position in the channel is its head at that
//! moment: the `done`s are answered (the core then answers `subscribed`), and the held
//! messages past the head are delivered. A client that got `subscribed` receives everything
//! published afterwards. If Redis refuses the subscription, the `done`s are dropped: the
//! clients get an error instead of a subscription that would never receive anything.

use std::collections::{HashMap, hash_map::Entry};

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use super::{Control, msg::Interest};
use crate::{
    channel::ChannelName,
    engine::{ChannelPos, Engine},
};

/// Most messages held per channel while its subscription is set up.
const HELD: usize = 4096;
/// Bound of the queue from the set-up tasks back to the control loop (each task waits for a
/// slot; there is at most one task per channel change).
pub(super) const SETTLED_QUEUE: usize = 1024;

/// A channel whose engine subscription is being set up.
pub(super) struct Subscribing {
    /// Which set-up this is (a channel dropped and taken again starts another one).
    generation: u64,
    waiters: Vec<oneshot::Sender<ChannelPos>>,
    held: Vec<(u64, Bytes)>,
    /// Messages may have been missed meanwhile (more than `HELD` arrived, or the node
    /// resynced): read the channel back from the stream once set up.
    pub(super) read_back: bool,
}

/// A set-up task finished: the channel's position once the engine subscribed (`None`: it
/// did not, or the position could not be read).
pub(super) struct Settled {
    channel: ChannelName,
    generation: u64,
    pos: Option<ChannelPos>,
}

pub(super) type SettledTx = mpsc::Sender<Settled>;

/// A core gained (`on`) or lost its subscribers of a channel. Never waits.
pub(super) fn change<E: Engine>(c: &mut Control<E>, i: Interest) {
    let Interest {
        core,
        channel,
        on,
        done,
    } = i;
    let bits = c.interest.entry(channel.clone()).or_insert(0);
    let before = *bits;
    if on {
        *bits |= 1 << core;
    } else {
        *bits &= !(1 << core);
    }
    let after = *bits;
    if after == 0 {
        c.interest.remove(&channel);
    }
    if before == 0 && after != 0 {
        c.generation += 1;
        let generation = c.generation;
        // Both futures are made now, in call order; each sends its command when first
        // polled, and the task polls the subscription first: the head is read after it.
        let subscribe = c.engine.node_interest(&channel, true);
        let position = c.engine.position(&channel);
        c.subscribing.insert(
            channel.clone(),
            Subscribing {
                generation,
                waiters: done.into_iter().collect(),
                held: Vec::new(),
                read_back: false,
            },
        );
        let tx = c.settled_tx.clone();
        tokio::task::spawn_local(async move {
            let subscribed = match subscribe.await {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!(%channel, error = %e, "engine refused a channel subscription; its subscribers get an error");
                    false
                }
            };
            let pos = if subscribed {
                match position.await {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::warn!(%channel, error = %e, "reading a channel's position failed; its subscribers get an error");
                        None
                    }
                }
            } else {
                None
            };
            let _ = tx
                .send(Settled {
                    channel,
                    generation,
                    pos,
                })
                .await;
        });
        return;
    }
    if before != 0 && after == 0 {
        c.last.remove(&channel);
        c.epochs.remove(&channel);
        // Their cores withdrew meanwhile: dropping the waiters fails those subscribes.
        c.subscribing.remove(&channel);
        let unsubscribe = c.engine.node_interest(&channel, false);
        let name = channel.clone();
        tokio::task::spawn_local(async move {
            if let Err(e) = unsubscribe.await {
                tracing::warn!(channel = %name, error = %e, "engine refused a channel unsubscription");
            }
        });
    }
    match (done, c.subscribing.get_mut(&channel)) {
        (Some(d), Some(s)) => s.waiters.push(d),
        (Some(d), None) => {
            let _ = d.send(ChannelPos {
                offset: c.last.get(&channel).copied().unwrap_or(0),
                epoch: c.epochs.get(&channel).cloned().unwrap_or_else(|| "".into()),
            });
        }
        (None, _) => {}
    }
}

/// Holds a message of a channel whose subscription is being set up; `false` if the channel
/// is not being set up (deliver the message as usual).
pub(super) fn hold<E: Engine>(
    c: &mut Control<E>,
    channel: &ChannelName,
    offset: u64,
    frame: &Bytes,
) -> bool {
    let Some(s) = c.subscribing.get_mut(channel) else {
        return false;
    };
    if s.held.len() < HELD {
        s.held.push((offset, frame.clone()));
    } else {
        s.read_back = true;
    }
    true
}

/// A set-up finished: answer the waiting cores, then deliver what was held past the head.
pub(super) async fn settled<E: Engine>(c: &mut Control<E>, s: Settled) {
    let sub = match c.subscribing.entry(s.channel.clone()) {
        Entry::Occupied(e) if e.get().generation == s.generation => e.remove(),
        _ => return, // the channel was dropped (and maybe taken again) meanwhile
    };
    let Some(pos) = s.pos else {
        // No core has confirmed this channel yet (they all wait in `waiters`): forget it, and
        // drop the waiters, so each core answers its clients with an error. In case Redis did
        // subscribe after all (a timed-out answer), undo that.
        c.interest.remove(&s.channel);
        drop(sub.waiters);
        let undo = c.engine.node_interest(&s.channel, false);
        tokio::task::spawn_local(async move {
            let _ = undo.await;
        });
        return;
    };
    c.last.insert(s.channel.clone(), pos.offset);
    c.epochs.insert(s.channel.clone(), pos.epoch.clone());
    for w in sub.waiters {
        let _ = w.send(pos.clone());
    }
    for (offset, frame) in sub.held {
        c.accept(s.channel.clone(), offset, frame).await;
    }
    if sub.read_back {
        if let Some(last) = c.last.get(&s.channel).copied() {
            c.fill_gap(&s.channel, last, None).await;
        }
    }
}

/// Channels being set up, for `Control`.
pub(super) type SubscribingMap = HashMap<ChannelName, Subscribing>;
