//! The send gate: how many socket writes a core may have started and not yet seen complete
//! (`server.send_slice`, 0 = no limit).
//!
//! Why: under io_uring a writer's send is only queued (an SQE) when its task runs; the runtime
//! submits everything queued in one `io_uring_enter` once no task is ready. A publish fanned
//! out to 1,000 sockets thus became one enter of 1,000 sends, and the publisher's socket was
//! read only after all of them (measured: a publish waited one whole round more than with
//! epoll, which reads between task batches). With the gate, writers start at most
//! `send_slice` sends; the rest wait, so the runtime submits a slice, reaps its completions
//! (and the publisher's), and the writers still waiting take any frame queued meanwhile into
//! their send. With epoll a send completes within its task's poll, so the gate never fills.
//!
//! The gate only limits while the core is behind: after a write that carried two frames or
//! more (frames queued faster than the core's rounds of sends), for the next `HOT_ROUNDS` ×
//! `send_slice` writes. Below that every write goes at once: slicing a round that finishes
//! before the next publish arrives gains nothing and cost 3-8 points of a core at 100k
//! deliveries/s (more `io_uring_enter` calls, the receivers woken once per slice).
//! `server.send_gate = "always"` limits at all times.
//!
//! A permit is handed directly to the longest waiter when released (FIFO, no thundering herd),
//! and a waiter that is dropped (connection killed) passes a permit it was given on. A write
//! that does not complete (a peer that stopped reading) would hold its permit until the
//! slow-consumer limit closes the connection; so while anyone waits, `tick` (every
//! `TICK` from the core's gate task) forgives permits held for a whole tick: they stop
//! counting, and their slots go to the waiters.

use std::{
    cell::{Cell, RefCell},
    collections::VecDeque,
    future::Future,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll, Waker},
    time::Duration,
};

use crate::config::SendGateMode;

/// How often a gate with waiters looks for permits held too long.
pub const TICK: Duration = Duration::from_millis(1);

/// After a write that carried several frames the gate limits for this many slices of writes.
/// Long enough not to flap at saturation: with 8, p99 at 1.5M deliveries/s was 11.4-12.9 ms
/// against 8.1-9.8 ms limiting always; with 64 it matched (BENCHMARKS.md, "A gate that limits only while the core is behind").
pub const HOT_ROUNDS: usize = 64;

pub struct SendGate {
    /// 0 = no limit (every acquire is immediate and nothing is counted).
    cap: usize,
    /// Limit whether behind or not (`server.send_gate = "always"`).
    always: bool,
    /// Writes left before the gate stops limiting (0: not behind, every write goes at once).
    hot_left: Cell<usize>,
    inner: RefCell<Inner>,
    /// Woken when the first waiter queues (the gate task then ticks until nobody waits).
    ticker: RefCell<Option<Waker>>,
}

#[derive(Default)]
struct Inner {
    free: usize,
    queue: VecDeque<Rc<Slot>>,
    /// Waiters in `queue` that are not cancelled.
    waiting: usize,
    /// Current tick number; a permit remembers the tick it was taken in.
    tick: u64,
    /// Permits taken before this tick no longer count (forgiven).
    forgiven_below: u64,
    /// Outstanding counted permits per tick taken, oldest first.
    held: VecDeque<(u64, usize)>,
}

struct Slot {
    state: Cell<SlotState>,
    waker: RefCell<Option<Waker>>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Waiting,
    Granted,
    Cancelled,
}

impl SendGate {
    pub fn new(cap: usize, mode: SendGateMode) -> Self {
        Self {
            cap,
            always: mode == SendGateMode::Always,
            hot_left: Cell::new(0),
            inner: RefCell::new(Inner {
                free: cap,
                ..Inner::default()
            }),
            ticker: RefCell::new(None),
        }
    }

    /// Waits for a permit to start one write. Cancel-safe.
    pub fn acquire(&self) -> Acquire<'_> {
        Acquire {
            gate: self,
            slot: None,
        }
    }

    /// A writer took `frames` frames for one write. Several mean frames are queued faster than
    /// the core's rounds of sends go out: limit for the next `HOT_ROUNDS` slices of writes.
    pub fn note_write(&self, frames: usize) {
        if frames > 1 {
            self.hot_left.set(HOT_ROUNDS * self.cap);
        } else {
            self.hot_left.set(self.hot_left.get().saturating_sub(1));
        }
    }

    /// Whether the gate limits writes now.
    pub fn is_limiting(&self) -> bool {
        self.cap > 0 && (self.always || self.hot_left.get() > 0)
    }

    /// Writers waiting for a permit now.
    pub fn waiting(&self) -> usize {
        self.inner.borrow().waiting
    }

    fn take(&self, inner: &mut Inner) -> Permit<'_> {
        let tick = inner.tick;
        match inner.held.back_mut() {
            Some((t, n)) if *t == tick => *n += 1,
            _ => inner.held.push_back((tick, 1)),
        }
        Permit {
            gate: self,
            tick: Some(tick),
        }
    }

    /// A counted permit came back: hand it to the first live waiter, or free it.
    fn release(&self) {
        let mut inner = self.inner.borrow_mut();
        while let Some(slot) = inner.queue.pop_front() {
            if slot.state.get() == SlotState::Cancelled {
                continue;
            }
            inner.waiting -= 1;
            slot.state.set(SlotState::Granted);
            if let Some(w) = slot.waker.borrow_mut().take() {
                w.wake();
            }
            return;
        }
        inner.free += 1;
    }

    /// One tick of the gate task: forgives the permits held since before the previous tick
    /// and lets that many waiters in. Returns how many were forgiven and whether anyone still
    /// waits.
    pub fn tick(&self) -> (usize, bool) {
        let forgiven = {
            let mut inner = self.inner.borrow_mut();
            inner.tick += 1;
            let below = inner.tick - 1;
            let mut n = 0;
            while let Some(&(t, c)) = inner.held.front() {
                if t >= below {
                    break;
                }
                n += c;
                inner.held.pop_front();
            }
            inner.forgiven_below = below;
            n
        };
        for _ in 0..forgiven {
            self.release();
        }
        (forgiven, self.waiting() > 0)
    }

    /// Resolves when somebody waits for a permit (for the gate task).
    pub fn wait_for_waiters(&self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| {
            if self.waiting() > 0 {
                Poll::Ready(())
            } else {
                *self.ticker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}

/// The right to have one write in flight. Dropping it gives the slot back (unless forgiven).
pub struct Permit<'a> {
    gate: &'a SendGate,
    /// None: taken while the gate did not limit; counts nothing.
    tick: Option<u64>,
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        let Some(tick) = self.tick else { return };
        {
            let mut inner = self.gate.inner.borrow_mut();
            if tick < inner.forgiven_below {
                return;
            }
            if let Some(e) = inner.held.iter_mut().find(|(t, _)| *t == tick) {
                e.1 -= 1;
            }
            while inner.held.front().is_some_and(|&(_, c)| c == 0) {
                inner.held.pop_front();
            }
        }
        self.gate.release();
    }
}

pub struct Acquire<'a> {
    gate: &'a SendGate,
    slot: Option<Rc<Slot>>,
}

impl<'a> Future for Acquire<'a> {
    type Output = Permit<'a>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Permit<'a>> {
        let gate = self.gate;
        if self.slot.is_none() && !gate.is_limiting() && gate.waiting() == 0 {
            // Not behind (or no limit): the write goes at once and counts nothing.
            return Poll::Ready(Permit { gate, tick: None });
        }
        if let Some(slot) = &self.slot {
            if slot.state.get() == SlotState::Granted {
                self.slot = None;
                // The releaser's slot passes to us: count it as taken now.
                let mut inner = gate.inner.borrow_mut();
                return Poll::Ready(gate.take(&mut inner));
            }
            *slot.waker.borrow_mut() = Some(cx.waker().clone());
            return Poll::Pending;
        }
        let mut inner = gate.inner.borrow_mut();
        if inner.free > 0 && inner.waiting == 0 {
            inner.free -= 1;
            return Poll::Ready(gate.take(&mut inner));
        }
        let slot = Rc::new(Slot {
            state: Cell::new(SlotState::Waiting),
            waker: RefCell::new(Some(cx.waker().clone())),
        });
        inner.queue.push_back(slot.clone());
        inner.waiting += 1;
        let first = inner.waiting == 1;
        drop(inner);
        self.slot = Some(slot);
        if first && let Some(w) = gate.ticker.borrow_mut().take() {
            w.wake();
        }
        Poll::Pending
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        let Some(slot) = self.slot.take() else { return };
        match slot.state.get() {
            SlotState::Waiting => {
                slot.state.set(SlotState::Cancelled);
                self.gate.inner.borrow_mut().waiting -= 1;
            }
            // Given a slot we will not use: pass it on.
            SlotState::Granted => self.gate.release(),
            SlotState::Cancelled => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use super::*;

    fn poll<'a>(a: &mut Acquire<'a>) -> Option<Permit<'a>> {
        let mut cx = Context::from_waker(Waker::noop());
        match Pin::new(a).poll(&mut cx) {
            Poll::Ready(p) => Some(p),
            Poll::Pending => None,
        }
    }

    /// A gate that limits, as after a write that carried several frames.
    fn behind(cap: usize) -> SendGate {
        let g = SendGate::new(cap, SendGateMode::Adaptive);
        g.note_write(2);
        g
    }

    #[test]
    fn limits_only_while_behind() {
        let g = SendGate::new(2, SendGateMode::Adaptive);
        let mut held = Vec::new();
        for _ in 0..10 {
            held.push(poll(&mut g.acquire()).expect("not behind: no limit"));
        }
        drop(held);
        g.note_write(3);
        assert!(g.is_limiting());
        let (mut a, mut b, mut c) = (g.acquire(), g.acquire(), g.acquire());
        let pa = poll(&mut a).expect("free");
        let pb = poll(&mut b).expect("free");
        assert!(poll(&mut c).is_none(), "behind: at most 2 in flight");
        // Single-frame writes: after HOT_ROUNDS slices the gate stops limiting.
        for _ in 0..HOT_ROUNDS * 2 - 1 {
            g.note_write(1);
        }
        assert!(g.is_limiting());
        g.note_write(1);
        assert!(!g.is_limiting());
        // The waiter still goes first (FIFO); newcomers queue behind it until it is served.
        let mut d = g.acquire();
        assert!(poll(&mut d).is_none());
        drop(pa);
        let _pc = poll(&mut c).expect("handed over");
        assert!(poll(&mut d).is_none());
        drop(pb);
        let _pd = poll(&mut d).expect("handed over");
        // Nobody waits and the gate is not behind: at once, though two are counted.
        let mut e = g.acquire();
        assert!(poll(&mut e).is_some());
    }

    #[test]
    fn an_always_gate_limits_from_the_start() {
        let g = SendGate::new(1, SendGateMode::Always);
        let _p = poll(&mut g.acquire()).expect("free");
        assert!(poll(&mut g.acquire()).is_none());
    }

    #[test]
    fn bounds_hands_over_in_order_and_skips_cancelled() {
        let g = behind(2);
        let (mut a, mut b) = (g.acquire(), g.acquire());
        let pa = poll(&mut a).expect("free");
        let pb = poll(&mut b).expect("free");
        let (mut c, mut d, mut e) = (g.acquire(), g.acquire(), g.acquire());
        assert!(poll(&mut c).is_none() && poll(&mut d).is_none() && poll(&mut e).is_none());
        assert_eq!(g.waiting(), 3);
        drop(c); // cancelled while waiting: skipped
        assert_eq!(g.waiting(), 2);
        drop(pa);
        let pd = poll(&mut d).expect("handed to the oldest live waiter");
        assert!(poll(&mut e).is_none());
        drop(e); // not granted yet: nothing to pass on
        drop(pb);
        drop(pd);
        // Both slots are free again: two immediate acquires, the third waits.
        let (mut x, mut y, mut z) = (g.acquire(), g.acquire(), g.acquire());
        let _px = poll(&mut x).expect("free");
        let _py = poll(&mut y).expect("free");
        assert!(poll(&mut z).is_none());
    }

    #[test]
    fn a_granted_waiter_that_is_dropped_passes_the_slot_on() {
        let g = behind(1);
        let mut a = g.acquire();
        let pa = poll(&mut a).expect("free");
        let (mut b, mut c) = (g.acquire(), g.acquire());
        assert!(poll(&mut b).is_none() && poll(&mut c).is_none());
        drop(pa); // granted to b
        drop(b); // b never used it: c gets it
        assert!(poll(&mut c).is_some());
    }

    #[test]
    fn permits_held_over_a_whole_tick_are_forgiven_while_others_wait() {
        let g = behind(2);
        let (mut a, mut b) = (g.acquire(), g.acquire());
        let stuck = poll(&mut a).expect("free");
        let stuck2 = poll(&mut b).expect("free");
        let mut c = g.acquire();
        assert!(poll(&mut c).is_none());
        // Taken in the current tick: the first tick does not forgive them yet.
        assert_eq!(g.tick(), (0, true));
        assert!(poll(&mut c).is_none());
        // Held over a whole tick: forgiven, the waiter gets in, nobody waits any more.
        assert_eq!(g.tick(), (2, false));
        let pc = poll(&mut c).expect("forgiven slot");
        // A forgiven permit coming back does not add a slot.
        drop(stuck);
        drop(stuck2);
        let (mut d, mut e) = (g.acquire(), g.acquire());
        let _pd = poll(&mut d).expect("the second forgiven slot");
        assert!(
            poll(&mut e).is_none(),
            "still two counted: the granted and this one"
        );
        drop(pc);
        assert!(poll(&mut e).is_some());
    }

    #[test]
    fn unlimited_gate_never_waits() {
        let g = behind(0);
        let mut ps = Vec::new();
        for _ in 0..1000 {
            let mut a = g.acquire();
            ps.push(poll(&mut a).expect("unlimited"));
        }
        assert_eq!(g.waiting(), 0);
    }
}
