//! Counting: per-subscriber offset tracking (loss, duplicates, reordering), per-thread
//! histograms (latency, connect, ack; all in microseconds) and their merge. Socket.IO
//! subscribers track each publisher's `seq` instead of the channel's offsets (the same
//! [`Tracker`], one per publisher), and count apart ([`SioStats`]) so that a mixed run reports
//! each protocol.

use std::collections::BTreeSet;

use hdrhistogram::Histogram;

use crate::{buckets::LogHist, shared::Shared};

/// Offsets one subscriber has seen on its channel. Offsets of a run's channels start at 1
/// (each run uses fresh channel names) and go up by one per message.
#[derive(Debug)]
pub struct Tracker {
    /// The next offset expected in order.
    next: u64,
    /// Offsets skipped over and not (yet) seen.
    missing: BTreeSet<u64>,
    /// Gaps too large to remember one by one (counted as lost).
    lost_untracked: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

/// The most skipped offsets one subscriber remembers individually.
const MAX_MISSING: usize = 1 << 20;

impl Default for Tracker {
    fn default() -> Self {
        Self {
            next: 1,
            missing: BTreeSet::new(),
            lost_untracked: 0,
            duplicated: 0,
            reordered: 0,
        }
    }
}

impl Tracker {
    /// Returns how the number of offsets still missing changed (a gap adds, a late arrival
    /// subtracts one).
    pub fn observe(&mut self, offset: u64) -> i64 {
        if offset == self.next {
            self.next += 1;
            0
        } else if offset > self.next {
            for k in self.next..offset {
                if self.missing.len() < MAX_MISSING {
                    self.missing.insert(k);
                } else {
                    self.lost_untracked += 1;
                }
            }
            let gap = offset - self.next;
            self.next = offset + 1;
            i64::try_from(gap).unwrap_or(i64::MAX)
        } else if self.missing.remove(&offset) {
            self.reordered += 1;
            -1
        } else {
            self.duplicated += 1;
            0
        }
    }

    /// Everything up to `target` has arrived.
    pub fn complete(&self, target: u64) -> bool {
        self.next > target && self.missing.is_empty()
    }

    /// Everything up to `target` but the `refused` keys (sorted) has arrived.
    pub fn complete_except(&self, target: u64, refused: &[u64]) -> bool {
        self.next > target
            && self.lost_untracked == 0
            && self.missing.len() <= refused.len()
            && self
                .missing
                .iter()
                .all(|k| refused.binary_search(k).is_ok())
    }

    /// What this subscriber was owed up to `target` and did not get.
    pub fn result(&self, channel: usize) -> SubResult {
        SubResult {
            channel,
            publisher: None,
            next: self.next,
            missing: self.missing.iter().copied().collect(),
            lost_untracked: self.lost_untracked,
            duplicated: self.duplicated,
            reordered: self.reordered,
        }
    }
}

/// A subscriber's final state, judged against its channel's target once known.
#[derive(Debug, Clone)]
pub struct SubResult {
    pub channel: usize,
    /// Socket.IO subscribers: the publisher whose `seq` this tracked (one result per
    /// publisher of the channel). `None`: the channel's offsets (raw).
    pub publisher: Option<usize>,
    next: u64,
    missing: Vec<u64>,
    lost_untracked: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

impl SubResult {
    pub fn lost(&self, target: u64) -> u64 {
        self.lost_except(target, &[])
    }

    /// Like [`lost`](Self::lost), not counting the `refused` keys (sorted): they were never
    /// stored, so never owed.
    pub fn lost_except(&self, target: u64, refused: &[u64]) -> u64 {
        let owed = |k: u64| k <= target && refused.binary_search(&k).is_err();
        let gaps = self.missing.iter().filter(|&&k| owed(k)).count() as u64;
        let tail = target.saturating_sub(self.next - 1).saturating_sub(
            refused
                .iter()
                .filter(|&&k| k >= self.next && k <= target)
                .count() as u64,
        );
        gaps + self.lost_untracked + tail
    }

    /// Messages past the target (stored but never acknowledged to a publisher).
    pub fn beyond(&self, target: u64) -> u64 {
        (self.next - 1).saturating_sub(target)
    }
}

/// A histogram of microseconds, 1 µs .. 1 h, 3 significant digits.
pub fn micros_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("static histogram bounds are valid")
}

/// A delivery slower than this counts as late in the per-second series.
pub const LATE_US: u64 = 10_000;

/// One wall-clock second of deliveries (by arrival time).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Second {
    pub count: u64,
    /// Slower than `LATE_US`.
    pub late: u64,
    pub max_us: u64,
    /// The second's latencies (its percentiles, for `--plot`).
    pub hist: LogHist,
}

/// Deliveries per wall-clock second: tells a few stalled seconds from a steady spread, which
/// the whole run's percentiles cannot. Keyed by unix second, so threads merge exactly.
#[derive(Debug, Default)]
pub struct PerSecond {
    first: u64,
    secs: Vec<Second>,
}

impl PerSecond {
    pub fn record(&mut self, now_ns: u64, latency_us: u64) {
        let late = u64::from(latency_us > LATE_US);
        let s = self.add(now_ns / 1_000_000_000, 1, late, latency_us);
        s.hist.record(latency_us);
    }

    fn add(&mut self, sec: u64, count: u64, late: u64, max_us: u64) -> &mut Second {
        if self.secs.is_empty() {
            self.first = sec;
        }
        if sec < self.first {
            let shift = (self.first - sec) as usize;
            self.secs
                .splice(0..0, std::iter::repeat_n(Second::default(), shift));
            self.first = sec;
        }
        let i = (sec - self.first) as usize;
        if i >= self.secs.len() {
            self.secs.resize(i + 1, Second::default());
        }
        let s = &mut self.secs[i];
        s.count += count;
        s.late += late;
        s.max_us = s.max_us.max(max_us);
        s
    }

    pub fn merge(&mut self, o: &PerSecond) {
        for (i, s) in o.secs.iter().enumerate() {
            if s.count > 0 {
                self.add(o.first + i as u64, s.count, s.late, s.max_us)
                    .hist
                    .merge(&s.hist);
            }
        }
    }

    /// Seconds from the first delivery, with what arrived in each.
    pub fn series(&self) -> impl Iterator<Item = (u64, &Second)> + '_ {
        self.secs.iter().enumerate().map(|(i, s)| (i as u64, s))
    }
}

/// What one thread's Socket.IO subscribers counted (their latency, deliveries and end state;
/// the raw subscribers' are [`ThreadStats`]'s own `latency`, `unparsed` and `raw_*`).
pub struct SioStats {
    pub latency: Histogram<u64>,
    pub connected: u64,
    pub disconnects: u64,
    pub delivered: u64,
    /// Deliveries without a numeric `ts`, `seq` and `pub` at the top level of the event's
    /// object (payload not spread? not JSON?).
    pub unparsed: u64,
    /// Deliveries from a publisher of another channel (by the payload's `pub`).
    pub misrouted: u64,
    /// `presence:join` / `presence:leave` events (ignored otherwise).
    pub presence: u64,
    /// Engine.IO pings (`2`) answered with `3`.
    pub pings: u64,
    /// Subscribers that went longer than `pingInterval + pingTimeout` without a ping (a real
    /// Socket.IO client would have dropped the connection).
    pub ping_timeouts: u64,
}

impl Default for SioStats {
    fn default() -> Self {
        Self {
            latency: micros_hist(),
            connected: 0,
            disconnects: 0,
            delivered: 0,
            unparsed: 0,
            misrouted: 0,
            presence: 0,
            pings: 0,
            ping_timeouts: 0,
        }
    }
}

impl SioStats {
    fn merge(&mut self, o: &SioStats) {
        let _ = self.latency.add(&o.latency);
        self.connected += o.connected;
        self.disconnects += o.disconnects;
        self.delivered += o.delivered;
        self.unparsed += o.unparsed;
        self.misrouted += o.misrouted;
        self.presence += o.presence;
        self.pings += o.pings;
        self.ping_timeouts += o.ping_timeouts;
    }
}

/// What one worker thread counted.
pub struct ThreadStats {
    pub latency: Histogram<u64>,
    pub per_second: PerSecond,
    /// Latencies not yet handed to [`Shared::latency`], and when they last were (unix ns).
    progress: LogHist,
    progress_at: u64,
    pub connect: Histogram<u64>,
    pub ack: Histogram<u64>,
    pub subs: Vec<SubResult>,
    /// Delivered frames whose offset or timestamp could not be found.
    pub unparsed: u64,
    /// Frames (deliveries and acks) without an `offset`, judged by the payload's `seq` and
    /// the ack count instead (a server without offsets, e.g. the reference peers).
    pub by_seq: u64,
    /// Raw `fanout` subscribers: connected, ended early, deliveries.
    pub raw_connected: u64,
    pub raw_disconnects: u64,
    pub raw_delivered: u64,
    pub sio: SioStats,
}

impl Default for ThreadStats {
    fn default() -> Self {
        Self {
            latency: micros_hist(),
            per_second: PerSecond::default(),
            progress: LogHist::default(),
            progress_at: 0,
            connect: micros_hist(),
            ack: micros_hist(),
            subs: Vec::new(),
            unparsed: 0,
            by_seq: 0,
            raw_connected: 0,
            raw_disconnects: 0,
            raw_delivered: 0,
            sio: SioStats::default(),
        }
    }
}

impl ThreadStats {
    /// One delivery's latency for the progress line: kept here, added to `shared` every
    /// 250 ms (one batch of relaxed adds instead of one atomic per delivery).
    pub fn progress(&mut self, now_ns: u64, us: u64, shared: &Shared) {
        self.progress.record(us);
        if now_ns.saturating_sub(self.progress_at) >= 250_000_000 {
            self.progress.drain_into(&shared.latency);
            self.progress_at = now_ns;
        }
    }

    pub fn merge(&mut self, o: ThreadStats) {
        // Same bounds everywhere: adding cannot fail.
        let _ = self.latency.add(&o.latency);
        self.per_second.merge(&o.per_second);
        let _ = self.connect.add(&o.connect);
        let _ = self.ack.add(&o.ack);
        self.subs.extend(o.subs);
        self.unparsed += o.unparsed;
        self.by_seq += o.by_seq;
        self.raw_connected += o.raw_connected;
        self.raw_disconnects += o.raw_disconnects;
        self.raw_delivered += o.raw_delivered;
        self.sio.merge(&o.sio);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order() {
        let mut t = Tracker::default();
        (1..=5).for_each(|o| {
            t.observe(o);
        });
        let r = t.result(0);
        assert!(t.complete(5));
        assert_eq!(
            (r.lost(5), r.duplicated, r.reordered, r.beyond(5)),
            (0, 0, 0, 0)
        );
        assert_eq!(r.lost(7), 2, "two never arrived");
    }

    #[test]
    fn per_second_series_merges_by_wall_clock_second() {
        let s = 1_000_000_000u64;
        let mut a = PerSecond::default();
        a.record(101 * s, 500);
        a.record(101 * s + 5, 12_000);
        a.record(103 * s, 800);
        let mut b = PerSecond::default();
        b.record(100 * s, 20_000);
        b.record(103 * s, 900);
        a.merge(&b);
        let got: Vec<_> = a
            .series()
            .map(|(i, s)| (i, s.count, s.late, s.max_us))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, 1, 1, 20_000),
                (1, 2, 1, 12_000),
                (2, 0, 0, 0),
                (3, 2, 0, 900),
            ]
        );
        // Each second's percentiles come from that second's deliveries only (both threads').
        let (_, third) = a.series().nth(3).unwrap();
        let p99 = third.hist.quantile(0.99).unwrap();
        assert!((850..=950).contains(&p99), "{p99}");
    }

    #[test]
    fn gaps_dups_reorders() {
        let mut t = Tracker::default();
        for o in [1, 3, 2, 3, 5, 6] {
            t.observe(o);
        }
        assert!(!t.complete(6), "4 is missing");
        let r = t.result(0);
        assert_eq!(r.reordered, 1);
        assert_eq!(r.duplicated, 1);
        assert_eq!(r.lost(6), 1);
        assert_eq!(r.beyond(5), 1);
    }

    #[test]
    fn refused_keys_are_not_owed() {
        // 3 and 6 were refused (RATE_LIMITED): never stored, never delivered.
        let refused = [3, 6];
        let mut t = Tracker::default();
        for k in [1, 2, 4, 5, 7] {
            t.observe(k);
        }
        assert!(!t.complete(7));
        assert!(t.complete_except(7, &refused));
        assert!(!t.complete_except(8, &refused), "8 is owed");
        let r = t.result(0);
        assert_eq!(r.lost_except(7, &refused), 0);
        assert_eq!(r.lost(7), 2);
        // Refused keys in the tail are not owed either; 9 is.
        assert_eq!(r.lost_except(9, &[3, 6, 8]), 1);
        let mut t = Tracker::default();
        t.observe(1);
        t.observe(4);
        assert!(!t.complete_except(4, &[2]), "3 is missing and owed");
        assert_eq!(t.result(0).lost_except(4, &[2]), 1);
    }
}
