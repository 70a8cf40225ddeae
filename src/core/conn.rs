//! One connection's state as its core sees it: the bounded `Outbox` its writer task drains,
//! the read canceller that lets the core end a connection from outside the reader, liveness
//! timestamps for the sweeper, and its subscriptions. Lives on one core (`Rc`, `Cell`).

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    rc::Rc,
    task::{Context, Poll, Waker},
    time::Instant,
};

use monoio::io::{CancelHandle, Canceller};
use tungstenite::protocol::frame::coding::CloseCode;

use super::out_frame::OutFrame;
use crate::{auth::Identity, channel::ChannelName, control::ConnId, frame};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Reading an HTTP request (or waiting between keep-alive requests).
    Http,
    /// WebSocket open, `auth` not yet accepted.
    Unauthed,
    /// WebSocket open and authenticated.
    Ready,
    /// A close frame is queued or the socket is done; nothing more is read or queued.
    Closing,
}

pub use crate::protocol::Proto;

/// The outbound queue was past its bound: the caller closes the connection (1013).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Full;

/// Bounded queue of encoded frames to one client, drained by its writer task.
///
/// Bound: `websocket.outbound_queue_frames` frames and `websocket.outbound_queue_bytes` bytes.
/// Overflow: the frame is refused and the connection is closed with 1013 (slow consumer);
/// the queue never grows past the bound.
pub struct Outbox {
    q: RefCell<VecDeque<OutFrame>>,
    bytes: Cell<usize>,
    max_frames: usize,
    max_bytes: usize,
    waker: Cell<Option<Waker>>,
    /// A catch-up waiting for room (`poll_room`), woken when the writer takes frames.
    room_waker: Cell<Option<Waker>>,
    /// No more frames; the writer flushes what is queued, then shuts the socket down.
    finished: Cell<bool>,
}

impl Outbox {
    pub fn new(max_frames: usize, max_bytes: usize) -> Self {
        Self {
            q: RefCell::new(VecDeque::new()),
            bytes: Cell::new(0),
            max_frames,
            max_bytes,
            waker: Cell::new(None),
            room_waker: Cell::new(None),
            finished: Cell::new(false),
        }
    }

    /// Ready once a frame of `len` bytes fits within half the bounds (the other half stays
    /// free for live traffic), or the queue is finished (the caller then stops).
    pub fn poll_room(&self, cx: &mut Context<'_>, len: usize) -> Poll<()> {
        let fits = {
            let q = self.q.borrow();
            q.len() < self.max_frames / 2 && self.bytes.get() + len <= self.max_bytes / 2
        };
        if fits || self.finished.get() || self.q.borrow().is_empty() {
            Poll::Ready(())
        } else {
            self.room_waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }

    pub fn try_push(&self, f: OutFrame) -> Result<(), Full> {
        if self.finished.get() {
            return Ok(());
        }
        let mut q = self.q.borrow_mut();
        if q.len() >= self.max_frames || self.bytes.get() + f.len() > self.max_bytes {
            return Err(Full);
        }
        self.bytes.set(self.bytes.get() + f.len());
        q.push_back(f);
        drop(q);
        self.wake();
        Ok(())
    }

    /// Queues a last frame past the bound and finishes the queue. `discard` drops what was
    /// pending first (a slow consumer will not read it anyway).
    pub fn finish_with(&self, last: OutFrame, discard: bool) {
        if self.finished.replace(true) {
            return;
        }
        let mut q = self.q.borrow_mut();
        if discard {
            q.clear();
            self.bytes.set(0);
        }
        self.bytes.set(self.bytes.get() + last.len());
        q.push_back(last);
        drop(q);
        self.wake();
        self.wake_room();
    }

    /// Finishes without a last frame (the peer is gone).
    pub fn abort(&self) {
        self.finished.set(true);
        self.q.borrow_mut().clear();
        self.bytes.set(0);
        self.wake();
        self.wake_room();
    }

    fn wake(&self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }

    /// Wakes a catch-up waiting for room (the queue finished or was aborted).
    fn wake_room(&self) {
        if let Some(w) = self.room_waker.take() {
            w.wake();
        }
    }

    /// Ready when there is something to write or the queue is finished.
    pub fn poll_ready(&self, cx: &mut Context<'_>) -> Poll<()> {
        if !self.q.borrow().is_empty() || self.finished.get() {
            Poll::Ready(())
        } else {
            self.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    }

    /// Moves up to `max_bytes` of frames (at least one) into `out`. Returns whether the queue is
    /// finished and now empty (the writer's cue to shut down).
    pub fn drain_into(&self, out: &mut Vec<OutFrame>, max_bytes: usize) -> bool {
        let mut q = self.q.borrow_mut();
        let mut taken = 0;
        while let Some(f) = q.front() {
            if !out.is_empty() && taken + f.len() > max_bytes {
                break;
            }
            taken += f.len();
            out.push(q.pop_front().expect("front exists"));
        }
        self.bytes.set(self.bytes.get() - taken);
        if taken > 0
            && let Some(w) = self.room_waker.take()
        {
            w.wake();
        }
        if q.is_empty() && q.capacity() > 64 {
            // Give back what a burst grew; an idle subscriber keeps a small queue.
            q.shrink_to(8);
        }
        q.is_empty() && self.finished.get()
    }

    pub fn is_finished(&self) -> bool {
        self.finished.get()
    }

    pub fn len(&self) -> usize {
        self.q.borrow().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The subscriptions of one connection, as (channel, subscription number). A small vector:
/// most connections hold one or a few, and a hash map would cost ~150 bytes per idle socket.
#[derive(Debug, Default)]
pub struct Subs(Vec<(ChannelName, u64)>);

impl Subs {
    pub fn channels(&self) -> impl Iterator<Item = &ChannelName> {
        self.0.iter().map(|(c, _)| c)
    }
    pub fn get(&self, ch: &ChannelName) -> Option<u64> {
        self.0.iter().find(|(c, _)| c == ch).map(|(_, n)| *n)
    }
    pub fn insert(&mut self, ch: ChannelName, n: u64) {
        if self.0.len() == self.0.capacity() {
            self.0.reserve_exact(self.0.len().max(1));
        }
        self.0.push((ch, n));
    }
    pub fn remove(&mut self, ch: &ChannelName) -> Option<u64> {
        let i = self.0.iter().position(|(c, _)| c == ch)?;
        Some(self.0.swap_remove(i).1)
    }
    pub fn len(&self) -> usize {
        self.0.len()
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub fn drain(&mut self) -> Vec<ChannelName> {
        std::mem::take(&mut self.0)
            .into_iter()
            .map(|(c, _)| c)
            .collect()
    }
}

pub struct Conn {
    pub id: ConnId,
    pub outbox: Outbox,
    canceller: RefCell<Canceller>,
    /// Set by `abort`: the writer drops whatever write is in flight and exits.
    killed: Cell<bool>,
    kill_waker: Cell<Option<Waker>>,
    /// When the close started; the sweeper forces a stuck writer off after a while.
    pub closing_since: Cell<Option<Instant>>,
    pub phase: Cell<Phase>,
    pub opened: Instant,
    /// Last time anything arrived from the peer.
    pub last_seen: Cell<Instant>,
    /// Deadline of the current HTTP wait (head or keep-alive); `None` once upgraded.
    pub http_deadline: Cell<Option<Instant>>,
    pub ping_outstanding: Cell<bool>,
    pub subs: RefCell<Subs>,
    /// Who the WebSocket authenticated as (`None` before `auth`): policies that decide per
    /// message (receive) and re-checks after a policy change read it.
    pub identity: RefCell<Option<Rc<Identity>>>,
    /// Unix seconds at which the session's token expires (`auth.expire_sessions`).
    pub expires_at: Cell<Option<u64>>,
    /// `token_expiring` was sent for the current token.
    pub expiry_warned: Cell<bool>,
    pub proto: Cell<Proto>,
    /// The socket's id (Socket.IO `sid`; the presence id of a member with no user id),
    /// made on first use.
    socket_id: RefCell<Option<Rc<str>>>,
    /// Socket.IO: when the unanswered Engine.IO ping was sent.
    pub ping_sent: Cell<Option<Instant>>,
    /// Closed on input it refused (an over-limit frame or head): the peer may still be
    /// sending, so its input is drained before the socket is dropped (`socket::linger`).
    pub linger: Cell<bool>,
}

impl Conn {
    pub fn new(id: ConnId, max_frames: usize, max_bytes: usize) -> Self {
        let now = Instant::now();
        Self {
            id,
            outbox: Outbox::new(max_frames, max_bytes),
            canceller: RefCell::new(Canceller::new()),
            killed: Cell::new(false),
            kill_waker: Cell::new(None),
            closing_since: Cell::new(None),
            phase: Cell::new(Phase::Http),
            opened: now,
            last_seen: Cell::new(now),
            http_deadline: Cell::new(None),
            ping_outstanding: Cell::new(false),
            subs: RefCell::new(Subs::default()),
            identity: RefCell::new(None),
            expires_at: Cell::new(None),
            expiry_warned: Cell::new(false),
            proto: Cell::new(Proto::Raw),
            socket_id: RefCell::new(None),
            ping_sent: Cell::new(None),
            linger: Cell::new(false),
        }
    }

    pub fn is_sio(&self) -> bool {
        self.proto.get() == Proto::SocketIo
    }

    /// A random id for this socket, unique across nodes (20 base64url characters).
    pub fn socket_id(&self) -> Rc<str> {
        self.socket_id
            .borrow_mut()
            .get_or_insert_with(|| {
                use base64::Engine as _;
                let id = uuid::Uuid::new_v4();
                let s =
                    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&id.as_bytes()[..15]);
                Rc::from(s)
            })
            .clone()
    }

    pub fn cancel_handle(&self) -> CancelHandle {
        self.canceller.borrow().handle()
    }

    /// Cancels the in-flight read so the reader task returns promptly.
    pub fn cancel_read(&self) {
        let mut c = self.canceller.borrow_mut();
        let old = std::mem::take(&mut *c);
        *c = old.cancel();
    }

    /// Stops the writer at once, even in the middle of a write to a peer that does not read.
    /// (A plain flag, not a monoio `Canceller`: those cost a hash-set insert and remove on
    /// every write, about 6% of the broker's CPU under fan-out.)
    pub fn kill_writer(&self) {
        self.killed.set(true);
        if let Some(w) = self.kill_waker.take() {
            w.wake();
        }
    }

    /// Ready once `kill_writer` was called.
    pub fn poll_killed(&self, cx: &mut Context<'_>) -> Poll<()> {
        if self.killed.get() {
            return Poll::Ready(());
        }
        match self.kill_waker.take() {
            Some(w) if w.will_wake(cx.waker()) => self.kill_waker.set(Some(w)),
            _ => self.kill_waker.set(Some(cx.waker().clone())),
        }
        Poll::Pending
    }

    pub fn touch(&self, now: Instant) {
        self.last_seen.set(now);
        self.ping_outstanding.set(false);
    }

    pub fn is_closing(&self) -> bool {
        self.phase.get() == Phase::Closing
    }

    /// Starts a WebSocket close: queue the close frame, stop reading. `discard` drops
    /// frames still queued (slow consumers). Idempotent.
    ///
    /// A write already in flight is left to finish, so the close frame follows a whole frame
    /// (cancelling it could cut a frame in half, and the client would never see the close
    /// code). A peer that never reads is forced off after `CLOSE_GRACE` (`ws::run`).
    pub fn close(&self, code: CloseCode, reason: &str, discard: bool) {
        if self.phase.replace(Phase::Closing) == Phase::Closing {
            return;
        }
        self.closing_since.set(Some(Instant::now()));
        self.outbox
            .finish_with(frame::encode_close(code, reason).into(), discard);
        self.cancel_read();
    }

    /// Ends the connection without a close frame (peer gone, HTTP timeout).
    pub fn abort(&self) {
        self.phase.set(Phase::Closing);
        self.closing_since.set(Some(Instant::now()));
        self.outbox.abort();
        self.cancel_read();
        self.kill_writer();
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    #[test]
    fn outbox_bounds_and_finish() {
        let o = Outbox::new(2, 10);
        assert!(
            o.try_push(OutFrame::new(Bytes::from_static(b"1234")))
                .is_ok()
        );
        assert!(
            o.try_push(OutFrame::new(Bytes::from_static(b"1234567")))
                .is_err(),
            "byte bound"
        );
        assert!(o.try_push(OutFrame::new(Bytes::from_static(b"12"))).is_ok());
        assert_eq!(
            o.try_push(OutFrame::new(Bytes::from_static(b"1"))),
            Err(Full),
            "frame bound"
        );
        let mut out = Vec::new();
        assert!(!o.drain_into(&mut out, 1 << 20));
        assert_eq!(out.len(), 2);
        o.finish_with(OutFrame::new(Bytes::from_static(b"bye")), false);
        out.clear();
        assert!(o.drain_into(&mut out, 1 << 20));
        assert_eq!(out, vec![OutFrame::new(Bytes::from_static(b"bye"))]);
    }
}
