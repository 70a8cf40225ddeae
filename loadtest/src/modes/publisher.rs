//! One publisher connection: once the run starts, sends `publish` frames on its channel at
//! `rate` per second (0 = keep up to `window` unanswered publishes in flight, backing off on
//! `RATE_LIMITED`), reads the replies
//! (`published` acks with their offsets, `RATE_LIMITED` and other errors), then waits for the
//! outstanding replies (bounded by the drain time) and reports its channel's highest offset,
//! and its own highest acknowledged `seq` with the seqs refused (for Socket.IO subscribers,
//! whose deliveries carry no offset).

use std::{
    cell::{Cell, RefCell},
    rc::Rc,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt, stream::SplitStream};
use tokio::sync::{Notify, Semaphore};
use tokio_tungstenite::tungstenite::Message;

use crate::{
    conn::{Net, Ws},
    payload::{Publish, now_nanos},
    scan::{self, Kind},
    shared::{DoneGuard, Phase, SeqTarget, Shared},
    stats::ThreadStats,
};

/// Send times of unanswered publishes, indexed by `ref % RING`.
const RING: usize = 1 << 16;
/// Never more than this many publishes unanswered (keeps the ring valid and memory bounded).
const MAX_OUTSTANDING: u64 = (RING / 2) as u64;
/// Most frames written before yielding to other tasks.
const BATCH: u64 = 256;
/// Pause after a `RATE_LIMITED` reply when sending as fast as acks allow.
const LIMIT_BACKOFF: Duration = Duration::from_millis(5);

pub struct PubCfg {
    /// Messages per second for this publisher; 0 = as fast as replies allow.
    pub rate: f64,
    /// Publishers in the run: with a `rate`, publisher `j` starts `j / (publishers * rate)`
    /// seconds in, so that together they send evenly spaced messages instead of a burst of
    /// `publishers` messages at once every `1 / rate` seconds.
    pub publishers: usize,
    pub size: usize,
    pub window: u64,
    pub drain: Duration,
    /// Write `"pub":j` into each payload (there are Socket.IO subscribers).
    pub tag: bool,
}

struct State {
    acked: Cell<u64>,
    errors: Cell<u64>,
    rate_limited: Cell<u64>,
    max_offset: Cell<u64>,
    /// The highest `ref` (= payload seq) acknowledged, and the refs answered with an error.
    max_seq: Cell<u64>,
    refused: RefCell<Vec<u64>>,
    sent_at: RefCell<Vec<u64>>,
    closed: Cell<bool>,
    backoff_until: Cell<Option<Instant>>,
    /// With `rate` 0: the current window, halved on `RATE_LIMITED`, grown by one per ack.
    window: Cell<u64>,
    max_window: u64,
    notify: Notify,
}

impl State {
    fn answered(&self) -> u64 {
        self.acked.get() + self.errors.get() + self.rate_limited.get()
    }
}

pub async fn run(
    net: Arc<Net>,
    idx: usize,
    j: usize,
    ch: usize,
    cfg: Rc<PubCfg>,
    sem: Rc<Semaphore>,
    stats: Rc<RefCell<ThreadStats>>,
) {
    let shared = net.shared.clone();
    let _done = DoneGuard(&shared.pubs_done);
    let mut rx = shared.phase.subscribe();
    let Some(ws) = net
        .connect(idx, &format!("lt-pub-{j}"), None, &sem, &stats)
        .await
    else {
        return;
    };
    let until = loop {
        match &*rx.borrow_and_update() {
            Phase::Run { until } => break *until,
            Phase::Connect => {}
            _ => return,
        }
        if rx.changed().await.is_err() {
            return;
        }
    };
    let (mut sink, stream) = ws.split();
    let st = Rc::new(State {
        acked: Cell::new(0),
        errors: Cell::new(0),
        rate_limited: Cell::new(0),
        max_offset: Cell::new(0),
        max_seq: Cell::new(0),
        refused: RefCell::new(Vec::new()),
        sent_at: RefCell::new(vec![0; RING]),
        closed: Cell::new(false),
        backoff_until: Cell::new(None),
        window: Cell::new(cfg.window),
        max_window: cfg.window,
        notify: Notify::new(),
    });
    let reader = tokio::task::spawn_local(read_replies(
        stream,
        st.clone(),
        shared.clone(),
        j,
        cfg.rate == 0.0,
        stats.clone(),
    ));
    let mut frames = Publish::new(&net.channel(ch), cfg.size);
    if cfg.tag {
        frames = frames.tagged(j);
    }
    let start = Instant::now() + phase(cfg.rate, j, cfg.publishers);
    if cfg.rate > 0.0 {
        tokio::time::sleep_until(start.min(until).into()).await;
    }
    // This publisher's own numbering, 1, 2, 3.. (`ref` and payload `seq`): the order key
    // subscribers fall back to when the server's frames carry no `offset`.
    let mut seq: u64 = 0;
    while !st.closed.get() {
        let now = Instant::now();
        if now >= until {
            break;
        }
        if let Some(b) = st.backoff_until.take()
            && now < b
        {
            tokio::time::sleep_until(b.min(until).into()).await;
            continue;
        }
        let allowed = if cfg.rate > 0.0 {
            (now.duration_since(start).as_secs_f64() * cfg.rate) as u64 + 1
        } else {
            st.answered() + st.window.get()
        };
        let limit = allowed.min(st.answered() + MAX_OUTSTANDING);
        let first = seq;
        while seq < limit && seq - first < BATCH {
            seq += 1;
            let ts = now_nanos();
            st.sent_at.borrow_mut()[seq as usize % RING] = ts;
            if sink
                .feed(Message::text(frames.frame(seq, ts)))
                .await
                .is_err()
            {
                st.closed.set(true);
                break;
            }
        }
        shared.sent.fetch_add(seq - first, Relaxed);
        if seq > first && sink.flush().await.is_err() {
            st.closed.set(true);
        }
        if seq < limit {
            tokio::task::yield_now().await; // batch full: let the readers run, then go on
        } else if cfg.rate > 0.0 && seq < allowed {
            wait_reply(&st, until).await; // too many unanswered
        } else if cfg.rate > 0.0 {
            let next = start + Duration::from_secs_f64(seq as f64 / cfg.rate);
            tokio::time::sleep_until(next.min(until).into()).await;
        } else {
            wait_reply(&st, until).await;
        }
    }
    // Drain: wait for the replies still owed, within the drain time.
    let deadline = until + cfg.drain;
    while st.answered() < seq && !st.closed.get() {
        if Instant::now() >= deadline {
            break;
        }
        wait_reply(&st, deadline).await;
    }
    reader.abort();
    let owed = seq.saturating_sub(st.answered());
    if owed > 0 {
        shared.error(format!("publisher {j}: {owed} publishes never answered"));
    }
    shared.max_offset[ch].fetch_max(st.max_offset.get(), Relaxed);
    shared.acked_per_channel[ch].fetch_add(st.acked.get(), Relaxed);
    let mut refused = st.refused.take();
    refused.sort_unstable();
    refused.dedup();
    shared.set_seq_target(
        j,
        SeqTarget {
            max: st.max_seq.get(),
            refused,
        },
    );
}

/// Publisher `j`'s offset into the common period `1 / rate`: evenly spread over `publishers`.
fn phase(rate: f64, j: usize, publishers: usize) -> Duration {
    if rate > 0.0 && publishers > 1 {
        Duration::from_secs_f64((j % publishers) as f64 / (publishers as f64 * rate))
    } else {
        Duration::ZERO
    }
}

async fn wait_reply(st: &State, deadline: Instant) {
    let _ = tokio::time::timeout_at(deadline.into(), st.notify.notified()).await;
}

async fn read_replies(
    mut stream: SplitStream<Ws>,
    st: Rc<State>,
    shared: Arc<Shared>,
    j: usize,
    backoff: bool,
    stats: Rc<RefCell<ThreadStats>>,
) {
    while let Some(m) = stream.next().await {
        match m {
            Ok(Message::Text(t)) => {
                let b = t.as_bytes();
                match scan::kind(b) {
                    Kind::Published => {
                        st.acked.set(st.acked.get() + 1);
                        Shared::inc(&shared.acked);
                        st.window.set((st.window.get() + 1).min(st.max_window));
                        // Without offsets (reference peers): the ack count.
                        let (o, fallback) = scan::acked_key(b, st.acked.get());
                        st.max_offset.set(st.max_offset.get().max(o));
                        if fallback {
                            stats.borrow_mut().by_seq += 1;
                        }
                        // `ref` is the payload's seq; without one, the acks of one publisher
                        // come in order, one per accepted publish.
                        let r = scan::reference(b);
                        st.max_seq
                            .set(st.max_seq.get().max(r.unwrap_or(st.acked.get())));
                        if let Some(r) = r {
                            let sent = st.sent_at.borrow()[r as usize % RING];
                            let us = now_nanos().saturating_sub(sent) / 1000;
                            stats.borrow_mut().ack.saturating_record(us.max(1));
                        }
                    }
                    Kind::Error if scan::error_code(b) == Some("RATE_LIMITED") => {
                        st.rate_limited.set(st.rate_limited.get() + 1);
                        st.refused.borrow_mut().extend(scan::reference(b));
                        Shared::inc(&shared.rate_limited);
                        if backoff {
                            st.backoff_until.set(Some(Instant::now() + LIMIT_BACKOFF));
                            st.window.set((st.window.get() / 2).max(1));
                        }
                    }
                    Kind::Error => {
                        st.errors.set(st.errors.get() + 1);
                        st.refused.borrow_mut().extend(scan::reference(b));
                        Shared::inc(&shared.publish_errors);
                        shared.error(format!("publisher {j}: {}", t.as_str()));
                    }
                    _ => {}
                }
                st.notify.notify_one();
            }
            Ok(Message::Close(f)) => {
                shared.error(format!("publisher {j} closed by server: {f:?}"));
                break;
            }
            Ok(_) => {}
            Err(e) => {
                shared.error(format!("publisher {j}: {e}"));
                break;
            }
        }
    }
    // Reached only when the server ended the connection (the task is aborted otherwise).
    Shared::inc(&shared.disconnects);
    shared.error(format!("publisher {j}: connection ended by the server"));
    st.closed.set(true);
    st.notify.notify_one();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_are_evenly_phased_over_one_period() {
        // 4 publishers at 50/s: the period is 20 ms, so they start 5 ms apart.
        let starts: Vec<Duration> = (0..4).map(|j| phase(50.0, j, 4)).collect();
        assert_eq!(
            starts,
            [0, 5, 10, 15].map(Duration::from_millis).to_vec(),
            "{starts:?}"
        );
        assert_eq!(phase(100.0, 0, 1), Duration::ZERO);
        // As fast as acks allow: no phase.
        assert_eq!(phase(0.0, 3, 4), Duration::ZERO);
    }
}
