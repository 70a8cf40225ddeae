//! Presence on the control thread (redis engine): the authority for the channels' members.
//! Joins and leaves from this node's cores are counted here and events go to the cores with
//! subscribers of the channel (bounded core inboxes, `try_send`; a full one drops the event
//! and counts it in `ringcast_presence_dropped_total`).
//!
//! The members are those of this node: presence is not yet shared between nodes through
//! Redis.

use std::sync::Arc;

use super::{Control, CoreMsg};
use crate::{
    engine::Engine,
    presence::{Event, Op},
};

pub fn apply<E: Engine>(c: &mut Control<E>, op: Op) {
    match op {
        Op::Join {
            channel,
            key,
            member,
            counted,
            origin,
            reply,
        } => {
            let (new, all) = c.presence.join(&channel, key, member, counted);
            if let Some(r) = reply {
                let _ = r.send(all);
            }
            if let Some(m) = new {
                broadcast(c, Event::new(channel, true, &m, Some(origin)));
            }
        }
        Op::Leave { channel, key } => {
            if let Some(m) = c.presence.leave(&channel, &key) {
                broadcast(c, Event::new(channel, false, &m, None));
            }
        }
        Op::Members { channel, reply } => {
            let _ = reply.send(c.presence.members(&channel));
        }
    }
}

fn broadcast<E: Engine>(c: &Control<E>, ev: Event) {
    let bits = c.interest.get(&ev.channel).copied().unwrap_or(0);
    let ev = Arc::new(ev);
    for (i, core) in c.cores.iter().enumerate() {
        if bits & (1 << i) != 0 && core.try_send(CoreMsg::PresenceEvent(ev.clone())).is_err() {
            c.shared.metrics.cores[i].presence_dropped_total.inc();
        }
    }
}
