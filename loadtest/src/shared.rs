//! State shared by the coordinating main thread and the worker threads: the run phase
//! (a `watch` channel every connection task follows) and relaxed atomic counters that the
//! progress line reads and the report totals.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use tokio::sync::watch;

/// Where the run is. Every connection task watches this.
#[derive(Debug, Clone)]
pub enum Phase {
    /// Connections are being opened; nothing is published yet.
    Connect,
    /// Publishers send until `until`.
    Run { until: Instant },
    /// Publishers are done: subscribers finish once they hold `targets[channel]` (raw), or
    /// every publisher `j` of their channel's `seqs[j]` (Socket.IO: no offsets).
    Drain {
        targets: Arc<Vec<u64>>,
        seqs: Arc<Vec<SeqTarget>>,
    },
    /// Everyone stops now.
    Stop,
}

/// What one publisher's subscribers are owed, by its own numbering (payload `seq`, also the
/// publish `ref`): every seq up to the highest acknowledged one, except those refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SeqTarget {
    /// The highest seq acknowledged with `published`.
    pub max: u64,
    /// Seqs answered with an error (`RATE_LIMITED`, ..): never stored, never delivered.
    /// Sorted, no repeats.
    pub refused: Vec<u64>,
}

impl SeqTarget {
    /// How many messages this publisher's subscribers should each receive.
    pub fn owed(&self) -> u64 {
        let refused = self.refused.iter().filter(|&&k| k <= self.max).count() as u64;
        self.max - refused
    }
}

pub struct Shared {
    pub phase: watch::Sender<Phase>,
    pub connected: AtomicU64,
    pub connect_failed: AtomicU64,
    pub disconnects: AtomicU64,
    pub delivered: AtomicU64,
    pub sent: AtomicU64,
    pub acked: AtomicU64,
    pub rate_limited: AtomicU64,
    pub publish_errors: AtomicU64,
    pub server_errors: AtomicU64,
    /// Connection tasks (subscribers, holders) that have ended, for any reason.
    pub subs_done: AtomicU64,
    pub pubs_done: AtomicU64,
    /// Per channel: the highest offset acknowledged to any publisher.
    pub max_offset: Vec<AtomicU64>,
    /// Per channel: acknowledged publishes.
    pub acked_per_channel: Vec<AtomicU64>,
    /// Per publisher index: its [`SeqTarget`], set once when it is done.
    seq_targets: Mutex<Vec<SeqTarget>>,
    /// When the last connection of the connect phase finished (µs after `t0`).
    pub last_connect_us: AtomicU64,
    /// Delivery latencies so far, in [`buckets`](crate::buckets) (each thread adds its own
    /// every 250 ms): the progress line's p99.
    pub latency: Vec<AtomicU64>,
    /// Offsets subscribers skipped and have not (yet) received, summed over subscribers (a
    /// wrapping count: late arrivals subtract).
    pub missing: AtomicU64,
    pub t0: Instant,
    first_error: Mutex<Option<String>>,
}

impl Shared {
    pub fn new(channels: usize) -> Arc<Self> {
        let (phase, _) = watch::channel(Phase::Connect);
        Arc::new(Self {
            phase,
            connected: AtomicU64::new(0),
            connect_failed: AtomicU64::new(0),
            disconnects: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            acked: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            publish_errors: AtomicU64::new(0),
            server_errors: AtomicU64::new(0),
            subs_done: AtomicU64::new(0),
            pubs_done: AtomicU64::new(0),
            max_offset: (0..channels).map(|_| AtomicU64::new(0)).collect(),
            acked_per_channel: (0..channels).map(|_| AtomicU64::new(0)).collect(),
            seq_targets: Mutex::new(Vec::new()),
            last_connect_us: AtomicU64::new(0),
            latency: (0..crate::buckets::BUCKETS)
                .map(|_| AtomicU64::new(0))
                .collect(),
            missing: AtomicU64::new(0),
            t0: Instant::now(),
            first_error: Mutex::new(None),
        })
    }

    pub fn set_phase(&self, p: Phase) {
        self.phase.send_replace(p);
    }

    /// Keeps the first error seen (the report shows it).
    pub fn error(&self, e: impl Into<String>) {
        if let Ok(mut g) = self.first_error.lock()
            && g.is_none()
        {
            *g = Some(e.into());
        }
    }

    /// Publisher `j` is done: what its subscribers are owed.
    pub fn set_seq_target(&self, j: usize, t: SeqTarget) {
        if let Ok(mut v) = self.seq_targets.lock() {
            if v.len() <= j {
                v.resize(j + 1, SeqTarget::default());
            }
            v[j] = t;
        }
    }

    /// Every publisher's [`SeqTarget`] (nothing owed for those that never reported).
    pub fn seq_targets(&self, publishers: usize) -> Vec<SeqTarget> {
        let mut v = self
            .seq_targets
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default();
        v.resize(publishers.max(v.len()), SeqTarget::default());
        v
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|g| g.clone())
    }

    pub fn get(c: &AtomicU64) -> u64 {
        c.load(Relaxed)
    }

    pub fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub fn connect_done(&self) {
        let us = self.t0.elapsed().as_micros() as u64;
        self.last_connect_us.fetch_max(us, Relaxed);
    }

    pub fn connect_elapsed(&self) -> Duration {
        Duration::from_micros(self.last_connect_us.load(Relaxed))
    }
}

/// Counts a task as done when dropped, however it ends.
pub struct DoneGuard<'a>(pub &'a AtomicU64);

impl Drop for DoneGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_add(1, Relaxed);
    }
}

/// Polls `cond` every 10 ms until it holds or `deadline` passes; `tick` runs each round.
/// Returns whether `cond` held.
pub fn wait_until(
    deadline: Instant,
    mut cond: impl FnMut() -> bool,
    mut tick: impl FnMut(),
) -> bool {
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tick();
        std::thread::sleep(Duration::from_millis(10));
    }
}
