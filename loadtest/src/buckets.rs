//! Latency in log-scale buckets: exact below 8 µs, then 8 buckets per power of two (each at
//! most 12.5 % wide) up to 2^32 µs. Small enough to keep one per second of a run (per-second
//! percentiles for `--plot`) and to share through atomics (the progress line's p99 so far),
//! where an HDR histogram each would cost a hundred times the memory.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

pub const BUCKETS: usize = 240;

/// The bucket of `us` microseconds.
pub fn index(us: u64) -> usize {
    if us < 8 {
        return us as usize;
    }
    let p = 63 - us.leading_zeros() as usize; // 3..=63
    if p > 31 {
        return BUCKETS - 1;
    }
    let sub = ((us >> (p - 3)) & 7) as usize;
    8 * (p - 2) + sub
}

/// The smallest value of bucket `i`.
pub fn floor(i: usize) -> u64 {
    if i < 8 {
        return i as u64;
    }
    let (p, sub) = (i / 8 + 2, (i % 8) as u64);
    (8 + sub) << (p - 3)
}

/// A value representing bucket `i`: the middle of its range.
fn middle(i: usize) -> u64 {
    if i + 1 >= BUCKETS {
        return floor(i);
    }
    (floor(i) + floor(i + 1)) / 2
}

/// Counts per bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogHist(Box<[u32; BUCKETS]>);

impl Default for LogHist {
    fn default() -> Self {
        Self(Box::new([0; BUCKETS]))
    }
}

impl LogHist {
    pub fn record(&mut self, us: u64) {
        let c = &mut self.0[index(us)];
        *c = c.saturating_add(1);
    }

    pub fn merge(&mut self, o: &LogHist) {
        for (a, b) in self.0.iter_mut().zip(o.0.iter()) {
            *a = a.saturating_add(*b);
        }
    }

    /// The value at quantile `q` (0..=1), in µs; `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        quantile(self.0.iter().map(|&c| u64::from(c)), q)
    }

    /// Adds every count to `shared` and clears them.
    pub fn drain_into(&mut self, shared: &[AtomicU64]) {
        for (c, s) in self.0.iter_mut().zip(shared) {
            if *c > 0 {
                s.fetch_add(u64::from(*c), Relaxed);
                *c = 0;
            }
        }
    }
}

/// The quantile of counts given in bucket order.
pub fn quantile(counts: impl Iterator<Item = u64> + Clone, q: f64) -> Option<u64> {
    let total: u64 = counts.clone().sum();
    if total == 0 {
        return None;
    }
    let want = ((q * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, c) in counts.enumerate() {
        seen += c;
        if seen >= want {
            return Some(middle(i));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_every_value_in_order_and_are_narrow() {
        let mut last = 0;
        for us in [
            1u64,
            7,
            8,
            9,
            15,
            16,
            100,
            999,
            1000,
            65_535,
            1 << 31,
            u64::MAX,
        ] {
            let i = index(us);
            assert!(i >= last, "{us}");
            last = i;
            assert!(floor(i) <= us, "{us}: floor {}", floor(i));
            if i + 1 < BUCKETS {
                assert!(us < floor(i + 1), "{us}");
                let width = floor(i + 1) - floor(i);
                assert!(us < 8 || width * 8 <= floor(i) + 8, "{us}: width {width}");
            }
        }
    }

    #[test]
    fn quantiles_are_within_a_bucket() {
        let mut h = LogHist::default();
        for us in 1..=10_000u64 {
            h.record(us);
        }
        let p50 = h.quantile(0.5).unwrap() as f64;
        let p99 = h.quantile(0.99).unwrap() as f64;
        assert!((p50 / 5000.0 - 1.0).abs() < 0.07, "{p50}");
        assert!((p99 / 9900.0 - 1.0).abs() < 0.07, "{p99}");
        assert_eq!(LogHist::default().quantile(0.5), None);
    }
}
