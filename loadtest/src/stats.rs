//! Counting: per-subscriber offset tracking (loss, duplicates, reordering), per-thread
//! histograms (latency, connect, ack; all in microseconds) and their merge.

use std::collections::BTreeSet;

use hdrhistogram::Histogram;

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
    pub fn observe(&mut self, offset: u64) {
        if offset == self.next {
            self.next += 1;
        } else if offset > self.next {
            for k in self.next..offset {
                if self.missing.len() < MAX_MISSING {
                    self.missing.insert(k);
                } else {
                    self.lost_untracked += 1;
                }
            }
            self.next = offset + 1;
        } else if self.missing.remove(&offset) {
            self.reordered += 1;
        } else {
            self.duplicated += 1;
        }
    }

    /// Everything up to `target` has arrived.
    pub fn complete(&self, target: u64) -> bool {
        self.next > target && self.missing.is_empty()
    }

    /// What this subscriber was owed up to `target` and did not get.
    pub fn result(&self, channel: usize) -> SubResult {
        SubResult {
            channel,
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
    next: u64,
    missing: Vec<u64>,
    lost_untracked: u64,
    pub duplicated: u64,
    pub reordered: u64,
}

impl SubResult {
    pub fn lost(&self, target: u64) -> u64 {
        let gaps = self.missing.iter().filter(|&&k| k <= target).count() as u64;
        gaps + self.lost_untracked + target.saturating_sub(self.next - 1)
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

/// What one worker thread counted.
pub struct ThreadStats {
    pub latency: Histogram<u64>,
    pub connect: Histogram<u64>,
    pub ack: Histogram<u64>,
    pub subs: Vec<SubResult>,
    /// Delivered frames whose offset or timestamp could not be found.
    pub unparsed: u64,
    /// Frames (deliveries and acks) without an `offset`, judged by the payload's `seq` and
    /// the ack count instead (a server without offsets, e.g. the reference peers).
    pub by_seq: u64,
}

impl Default for ThreadStats {
    fn default() -> Self {
        Self {
            latency: micros_hist(),
            connect: micros_hist(),
            ack: micros_hist(),
            subs: Vec::new(),
            unparsed: 0,
            by_seq: 0,
        }
    }
}

impl ThreadStats {
    pub fn merge(&mut self, o: ThreadStats) {
        // Same bounds everywhere: adding cannot fail.
        let _ = self.latency.add(&o.latency);
        let _ = self.connect.add(&o.connect);
        let _ = self.ack.add(&o.ack);
        self.subs.extend(o.subs);
        self.unparsed += o.unparsed;
        self.by_seq += o.by_seq;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order() {
        let mut t = Tracker::default();
        (1..=5).for_each(|o| t.observe(o));
        let r = t.result(0);
        assert!(t.complete(5));
        assert_eq!(
            (r.lost(5), r.duplicated, r.reordered, r.beyond(5)),
            (0, 0, 0, 0)
        );
        assert_eq!(r.lost(7), 2, "two never arrived");
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
}
