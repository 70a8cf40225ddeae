//! Presence on the control thread (redis engine). `book` counts which of this node's cores
//! hold each member; the members themselves live in Redis (`engine::redis::presence`), shared
//! by every node. A member this node gains or loses is written there (a script per change, as
//! a task of its own: nothing waits on Redis in the loop); the join or leave that results is
//! announced on the channel's pub/sub channel and comes back to every node, this one
//! included, as `EngineEvent::Presence`, which goes to the cores with subscribers.
//!
//! Every `presence.heartbeat` the node refreshes its members of each channel it holds any
//! in, and reaps holders that expired (their node died).
//!
//! Queues: events go to core inboxes with `try_send`; a full one drops the event and counts it
//! in `ringcast_presence_dropped_total`. Redis errors are logged: a failed join answers the
//! subscriber with itself only, and the next heartbeat writes the member again.

use std::sync::Arc;

use super::{Control, CoreMsg};
use crate::{
    channel::ChannelName,
    engine::{
        Engine,
        redis::presence::{Announced, PresenceStore, origin},
    },
    presence::{Event, Op},
};

pub fn apply<E: Engine>(c: &mut Control<E>, op: Op) {
    let Some(store) = c.presence_store.clone() else {
        return;
    };
    match op {
        Op::Join {
            channel,
            key,
            member,
            counted,
            origin: (core, conn),
            reply,
        } => {
            let (new, _) =
                c.presence
                    .borrow_mut()
                    .join(&channel, key.clone(), member.clone(), counted);
            let origin = origin(&c.shared.node_id, core, conn.0);
            tokio::task::spawn_local(async move {
                let r = store
                    .join(&channel, &key, &member, new.is_some(), &origin)
                    .await;
                let members = r.unwrap_or_else(|e| {
                    tracing::warn!(channel = %channel, error = %e, "presence join not stored");
                    vec![member]
                });
                if let Some(reply) = reply {
                    let _ = reply.send(members);
                }
            });
        }
        Op::Leave { channel, key } => {
            let gone = c.presence.borrow_mut().leave(&channel, &key).is_some();
            if gone {
                tokio::task::spawn_local(async move {
                    if let Err(e) = store.leave(&channel, &key).await {
                        tracing::warn!(channel = %channel, error = %e, "presence leave not stored; the member expires");
                    }
                });
            }
        }
        Op::Members { channel, reply } => {
            // (The members live in Redis, every node's.)
            tokio::task::spawn_local(async move {
                match store.members(&channel).await {
                    Ok(m) => {
                        let _ = reply.send(m);
                    }
                    Err(e) => {
                        tracing::warn!(channel = %channel, error = %e, "presence read failed")
                    }
                }
            });
        }
    }
}

/// Refreshes this node's members in Redis and reaps expired ones (one script per channel).
/// A member whose holder expired while this node was cut off is joined again, if this node
/// still holds it when the answer comes: the check and the join's command happen in one step
/// of the control thread, so a leave that follows is sent after it.
pub fn beat<E: Engine>(c: &Control<E>) {
    let Some(store) = c.presence_store.clone() else {
        return;
    };
    let channels = c.presence.borrow().entries();
    if channels.is_empty() {
        return;
    }
    let book = c.presence.clone();
    tokio::task::spawn_local(async move {
        for (ch, members) in channels {
            let keys: Vec<_> = members.into_iter().map(|(k, _)| k).collect();
            let missing = match store.beat(&ch, &keys).await {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(channel = %ch, error = %e, "presence heartbeat failed");
                    continue;
                }
            };
            for key in missing {
                let held = book.borrow().member(&ch, &key);
                if let Some(m) = held
                    && let Err(e) = store.join(&ch, &key.as_str().into(), &m, true, "-").await
                {
                    tracing::warn!(channel = %ch, error = %e, "presence rejoin failed");
                }
            }
        }
    });
}

/// A join or leave announced through Redis: to the cores with subscribers of the channel.
pub fn announced<E: Engine>(c: &Control<E>, channel: ChannelName, a: Announced) {
    let bits = c.interest.get(&channel).copied().unwrap_or(0);
    if bits == 0 {
        return;
    }
    let except = a
        .origin
        .filter(|(node, _, _)| *node == c.shared.node_id)
        .map(|(_, core, conn)| (core, crate::control::ConnId(conn)));
    let ev = Arc::new(Event::new(channel, a.join, &a.member, except));
    for (i, core) in c.cores.iter().enumerate() {
        if bits & (1 << i) != 0 && core.try_send(CoreMsg::PresenceEvent(ev.clone())).is_err() {
            c.shared.metrics.cores[i].presence_dropped_total.inc();
        }
    }
}

/// Kept for the type: a store exists only with an engine that shares presence.
pub type Store = Option<PresenceStore>;
