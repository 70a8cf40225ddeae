//! Recovery on subscribe: a client that reconnects presents `since: {offset, epoch}` and is
//! sent every retained message after `offset`, in order, then its live messages, with no gap
//! and no duplicate at the seam.
//!
//! The seam is this core's position in the channel (`ChannelSubs::pos`): every message up to
//! it was routed here before the member was added, and every later one will be. So the member
//! is added with its live messages held (`index::Held`), `(offset, pos]` is read from history
//! (through the control thread: `ControlMsg::Recover`), and a catch-up task queues those, then
//! the held ones, then lets the member go live. Everything up to `pos` is in history when the
//! read runs: with the memory engine the owner core queued each message's `Stored` to the
//! control thread before routing it here, and the read enters that same queue later; with
//! Redis a message is in the channel's stream before it is fanned out.
//!
//! The catch-up is paced like any outbox: it queues a frame only while the connection's
//! outbound queue is under half its bounds, reading history a page at a time, so a subscriber
//! far behind costs its core one page and never fills its queue. Held live messages are
//! bounded like the outbound queue; past that they are dropped and the catch-up reads on
//! from history up to the core's position at that point (they are all there), then holds
//! again, until it has caught up.
//!
//! `recovered: false` (with `firstOffset`, the first retained offset) when the epoch differs,
//! when `offset` is older than what is retained, or when more than `history.recover_max`
//! messages were missed; the subscription then starts live from `pos`.

use std::{future::poll_fn, rc::Rc, sync::Arc, time::Duration};

use tokio::sync::oneshot;

use super::{Core, conn::Conn, inbox::wants, index::Held, out_frame::OutFrame};
use crate::{
    channel::ChannelName,
    control::{ControlMsg, Delivery, msg::RecoverReq, msg::Recovered},
    engine::ChannelPos,
    frame,
    protocol::{DbFilter, ServerMsg, Since, row_filter::ChangeRow},
};

/// Messages read from history at once for one recovering subscriber.
const PAGE: u64 = 512;
/// Longest wait for one history read.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// A subscription that was added: its id, the channel's position when it started, and the
/// outcome of a recovery when one was asked for.
pub struct Subscribed {
    pub id: Rc<str>,
    pub pos: ChannelPos,
    pub recovery: Option<Recovery>,
    /// With presence: the channel's members after this subscriber joined.
    pub members: Option<Vec<crate::presence::Member>>,
}

pub struct Recovery {
    pub recovered: bool,
    /// With `recovered: false`: the channel's first retained offset.
    pub first_offset: Option<u64>,
    /// What remains to send; start it (`Core::catch_up`) after `subscribed` was queued.
    pub catch_up: Option<CatchUp>,
}

/// The rest of a recovery: queued by `Core::catch_up`.
pub struct CatchUp {
    channel: ChannelName,
    held: Rc<Held>,
    page: Vec<Arc<Delivery>>,
    upto: u64,
    filter: Option<DbFilter>,
}

/// What a subscribe with (or without) `since` needs.
pub(super) enum Plan {
    /// No `since`.
    Live,
    /// Nothing was missed.
    UpToDate,
    /// Not recoverable (other epoch, too far behind, or ahead of the channel): start live,
    /// after reading the first retained offset.
    Lost,
    /// Read `(after, upto]`.
    Recover { after: u64, upto: u64 },
}

pub(super) fn plan(since: Option<&Since>, pos: &ChannelPos, max: usize) -> Plan {
    let Some(s) = since else {
        return Plan::Live;
    };
    if s.epoch != *pos.epoch || s.offset > pos.offset {
        return Plan::Lost;
    }
    if s.offset == pos.offset {
        return Plan::UpToDate;
    }
    if pos.offset - s.offset > max as u64 {
        return Plan::Lost;
    }
    Plan::Recover {
        after: s.offset,
        upto: pos.offset,
    }
}

impl Plan {
    /// The held buffer of a member that must wait for a read, starting at what it was sent.
    pub(super) fn held(&self, pos: u64) -> Option<Rc<Held>> {
        match self {
            Self::Live | Self::UpToDate => None,
            Self::Lost => Some(Rc::new(Held::new(pos))),
            Self::Recover { after, .. } => Some(Rc::new(Held::new(*after))),
        }
    }

    /// The answer of a plan that reads nothing.
    pub(super) fn answer_without_read(&self) -> Option<Recovery> {
        match self {
            Self::UpToDate => Some(Recovery {
                recovered: true,
                first_offset: None,
                catch_up: None,
            }),
            _ => None,
        }
    }
}

impl Core {
    /// A subscribe repeated on a connection that holds the subscription: nothing is read
    /// (it has been receiving all along).
    pub(super) fn already_subscribed(
        &self,
        conn: &Conn,
        ch: &ChannelName,
        n: u64,
        since: Option<Since>,
    ) -> Subscribed {
        let idx = self.index.borrow();
        let pos = idx.get(ch).map_or_else(
            || ChannelPos {
                offset: 0,
                epoch: Arc::from(""),
            },
            |e| ChannelPos {
                offset: e.sent_to(conn.id),
                epoch: e.epoch.clone(),
            },
        );
        Subscribed {
            id: self.subscription_id(n),
            recovery: since.map(|s| Recovery {
                recovered: s.epoch == *pos.epoch,
                first_offset: None,
                catch_up: None,
            }),
            pos,
            members: None,
        }
    }

    /// Reads the first page of what the member missed and decides whether it recovers.
    /// `Err`: the read failed (the caller removes the member).
    pub(super) async fn start_recovery(
        &self,
        ch: &ChannelName,
        plan: Plan,
        pos: &ChannelPos,
        held: Rc<Held>,
        filter: Option<DbFilter>,
    ) -> Result<Recovery, ()> {
        let (after, upto) = match plan {
            Plan::Recover { after, upto } => (after, upto),
            _ => (pos.offset, pos.offset),
        };
        let r = self.read_missed(ch, after, upto.min(after + PAGE)).await?;
        let contiguous = after < upto
            && r.msgs
                .iter()
                .enumerate()
                .all(|(i, d)| d.offset == after + 1 + i as u64)
            && !r.msgs.is_empty();
        let (recovered, first_offset, page) = if contiguous {
            self.metrics().recoveries_total.inc();
            (true, None, r.msgs.clone())
        } else {
            self.metrics().recoveries_failed_total.inc();
            held.sent.set(pos.offset);
            (false, Some(r.first.unwrap_or(pos.offset + 1)), Vec::new())
        };
        Ok(Recovery {
            recovered,
            first_offset,
            catch_up: Some(CatchUp {
                channel: ch.clone(),
                held,
                page,
                upto: if recovered { upto } else { pos.offset },
                filter,
            }),
        })
    }

    /// Queues what a recovering member missed, then its held live messages, paced by its
    /// outbound queue; then the member goes live. Stops when the member or the connection
    /// goes away.
    pub async fn catch_up(self: Rc<Self>, conn: Rc<Conn>, c: CatchUp) {
        let CatchUp {
            channel,
            held,
            mut page,
            mut upto,
            filter,
        } = c;
        loop {
            // What was missed, from history, up to `upto`.
            loop {
                for d in std::mem::take(&mut page) {
                    let sent = held.sent.get();
                    if d.offset <= sent {
                        continue;
                    }
                    if d.offset != sent + 1 {
                        return self.end_recovery(&conn, &channel, &held);
                    }
                    if self.wanted(&conn, filter.as_ref(), &d)
                        && !self
                            .queue_paced(&conn, &channel, &held, OutFrame::new(d.frame.clone()))
                            .await
                    {
                        return;
                    }
                    self.metrics().recovered_messages_total.inc();
                    held.sent.set(d.offset);
                }
                let sent = held.sent.get();
                if sent >= upto {
                    if !held.overflowed.get() {
                        break;
                    }
                    // Live messages were dropped meanwhile: read on to the present.
                    self.metrics().recovery_overflows_total.inc();
                    let now = self.index.borrow().get(&channel).map_or(0, |e| e.pos.get());
                    held.restart();
                    if now <= sent {
                        break;
                    }
                    upto = now;
                }
                if !self.catching_up(&conn, &channel, &held) {
                    return;
                }
                match self
                    .read_missed(&channel, sent, upto.min(sent + PAGE))
                    .await
                {
                    Ok(r) if !r.msgs.is_empty() => page = r.msgs.clone(),
                    _ => return self.end_recovery(&conn, &channel, &held),
                }
            }
            // Then what was held meanwhile.
            loop {
                if !self.catching_up(&conn, &channel, &held) {
                    return;
                }
                if held.overflowed.get() {
                    // Dropped while this waited for room: back to history.
                    upto = held.sent.get();
                    break;
                }
                let Some((offset, f)) = held.pop() else {
                    // Nothing held, and nothing can arrive before this turn ends: go live.
                    let mut idx = self.index.borrow_mut();
                    if let Some(m) = idx
                        .get_mut(&channel)
                        .and_then(|e| e.members.get_mut(&conn.id))
                    {
                        m.held = None;
                    }
                    return;
                };
                if offset <= held.sent.get() {
                    continue;
                }
                if !self.queue_paced(&conn, &channel, &held, f).await {
                    return;
                }
                held.sent.set(offset);
            }
        }
    }

    /// Whether a message passes the member's filter (`db:` channels) and its receive policy.
    fn wanted(&self, conn: &Conn, filter: Option<&DbFilter>, d: &Delivery) -> bool {
        let mut row: Option<ChangeRow> = None;
        (!d.channel.is_db() || wants(filter, d, &mut row)) && self.may_receive(conn, d, &mut None)
    }

    /// Waits until the connection's outbound queue has room, then queues `f`; false if the
    /// member or the connection went away meanwhile.
    async fn queue_paced(
        &self,
        conn: &Conn,
        ch: &ChannelName,
        held: &Rc<Held>,
        f: OutFrame,
    ) -> bool {
        poll_fn(|cx| conn.outbox.poll_room(cx, f.len())).await;
        if !self.catching_up(conn, ch, held) {
            return false;
        }
        if self.push(conn, f) {
            self.metrics().deliveries_total.inc();
            true
        } else {
            false
        }
    }

    /// The member is still subscribed, still catching up with this `held`, and open.
    fn catching_up(&self, conn: &Conn, ch: &ChannelName, held: &Rc<Held>) -> bool {
        !conn.is_closing()
            && self
                .index
                .borrow()
                .get(ch)
                .and_then(|e| e.members.get(&conn.id))
                .and_then(|m| m.held.as_ref())
                .is_some_and(|h| Rc::ptr_eq(h, held))
    }

    /// History moved past the member while it caught up (or could not be read): the
    /// subscription ends with a reason, so the client subscribes again.
    fn end_recovery(&self, conn: &Conn, ch: &ChannelName, held: &Rc<Held>) {
        if !self.catching_up(conn, ch, held) {
            return;
        }
        tracing::info!(channel = %ch, conn = conn.id.0, "recovery could not complete; subscription ended");
        self.unsubscribe(conn, ch);
        self.push(
            conn,
            frame::encode_json(&ServerMsg::Unsubscribed {
                channel: ch.as_str(),
                reason: Some("recovery incomplete: missed messages left history; subscribe again"),
                r#ref: None,
            }),
        );
    }

    /// `(after, upto]` of `ch`'s history, through the control thread.
    async fn read_missed(
        &self,
        ch: &ChannelName,
        after: u64,
        upto: u64,
    ) -> Result<Arc<Recovered>, ()> {
        let (tx, rx) = oneshot::channel();
        let req = ControlMsg::Recover(RecoverReq {
            channel: ch.clone(),
            after,
            upto,
            reply: tx,
        });
        let call = async {
            self.control.send(req).await.map_err(|_| ())?;
            rx.await.map_err(|_| ())?.map_err(|e| {
                tracing::warn!(channel = %ch, error = %e, "reading missed messages failed");
            })
        };
        monoio::time::timeout(READ_TIMEOUT, call)
            .await
            .unwrap_or(Err(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pos(offset: u64) -> ChannelPos {
        ChannelPos {
            offset,
            epoch: Arc::from("e1"),
        }
    }

    fn since(offset: u64, epoch: &str) -> Since {
        Since {
            offset,
            epoch: epoch.into(),
        }
    }

    #[test]
    fn plans() {
        assert!(matches!(plan(None, &pos(5), 10), Plan::Live));
        assert!(matches!(
            plan(Some(&since(5, "e1")), &pos(5), 10),
            Plan::UpToDate
        ));
        assert!(matches!(
            plan(Some(&since(2, "e1")), &pos(5), 10),
            Plan::Recover { after: 2, upto: 5 }
        ));
        assert!(matches!(
            plan(Some(&since(2, "old")), &pos(5), 10),
            Plan::Lost
        ));
        assert!(matches!(
            plan(Some(&since(9, "e1")), &pos(5), 10),
            Plan::Lost
        ));
        assert!(matches!(
            plan(Some(&since(0, "e1")), &pos(11), 10),
            Plan::Lost
        ));
        assert!(matches!(
            plan(Some(&since(1, "e1")), &pos(11), 10),
            Plan::Recover { .. }
        ));
    }
}
