//! The idempotency keys of the channels a core owns (memory engine): a publish that repeats
//! a channel's `idempotencyKey` within `publish.idempotency_window` is answered with the first
//! publish's ack and not sequenced again. The owner core sequences every publish of its
//! channels, so it sees repeats in order, concurrent ones included.
//!
//! Bound: `publish.idempotency_max_keys` per node, split evenly over the cores. Overflow: the
//! oldest key is forgotten before its window ends (counted in
//! `ringcast_idempotency_evicted_total`); a repeat of a forgotten key is published again.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use crate::{channel::ChannelName, engine::Appended};

type Key = (ChannelName, Arc<str>);

pub struct Idempotency {
    window: Duration,
    max: usize,
    /// The first ack of each key, and when it was recorded.
    acks: HashMap<Key, (Appended, Instant)>,
    /// Keys in the order they were recorded (expiry and eviction take the front).
    order: VecDeque<(Instant, Key)>,
}

impl Idempotency {
    pub fn new(window: Duration, max: usize) -> Self {
        Self {
            window,
            max: max.max(1),
            acks: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// The first ack of `key` on `ch`, if it was recorded within the window.
    pub fn get(&self, ch: &ChannelName, key: &Arc<str>, now: Instant) -> Option<Appended> {
        let (a, at) = self.acks.get(&(ch.clone(), key.clone()))?;
        (now.duration_since(*at) < self.window).then_some(*a)
    }

    /// Records the ack of a first publish; returns how many keys were evicted early.
    pub fn record(&mut self, ch: &ChannelName, key: Arc<str>, a: Appended, now: Instant) -> u64 {
        let k = (ch.clone(), key);
        self.acks.insert(k.clone(), (a, now));
        self.order.push_back((now, k));
        let mut evicted = 0;
        while let Some((at, _)) = self.order.front() {
            let expired = now.duration_since(*at) >= self.window;
            if !expired && self.order.len() <= self.max {
                break;
            }
            let (at, k) = self.order.pop_front().expect("front exists");
            // A key recorded again later (after its window) keeps its newer entry.
            if self.acks.get(&k).is_some_and(|(_, t)| *t == at) {
                self.acks.remove(&k);
                if !expired {
                    evicted += 1;
                }
            }
        }
        evicted
    }

    pub fn len(&self) -> usize {
        self.acks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.acks.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use uuid::Uuid;

    use super::*;
    use crate::timestamp::Timestamp;

    fn ack(offset: u64) -> Appended {
        Appended {
            id: Uuid::now_v7(),
            offset,
            created_at: Timestamp::now(),
        }
    }

    #[test]
    fn repeats_within_the_window_get_the_first_ack() {
        let mut i = Idempotency::new(Duration::from_secs(60), 10);
        let (a, b) = (
            ChannelName::parse("a").unwrap(),
            ChannelName::parse("b").unwrap(),
        );
        let k: Arc<str> = Arc::from("k1");
        let t0 = Instant::now();
        assert!(i.get(&a, &k, t0).is_none());
        let first = ack(7);
        i.record(&a, k.clone(), first, t0);
        assert_eq!(i.get(&a, &k, t0).map(|x| x.offset), Some(7));
        assert!(i.get(&b, &k, t0).is_none(), "keys are per channel");
        let later = t0 + Duration::from_secs(61);
        assert!(i.get(&a, &k, later).is_none(), "window passed");
        i.record(&a, k.clone(), ack(9), later);
        assert_eq!(i.get(&a, &k, later).map(|x| x.offset), Some(9));
        assert_eq!(i.len(), 1, "the expired entry is gone, the new one kept");
    }

    #[test]
    fn the_oldest_key_goes_first_past_the_bound() {
        let mut i = Idempotency::new(Duration::from_secs(60), 2);
        let a = ChannelName::parse("a").unwrap();
        let t = Instant::now();
        let mut evicted = 0;
        for n in 0..3 {
            evicted += i.record(&a, Arc::from(format!("k{n}")), ack(n), t);
        }
        assert_eq!(evicted, 1);
        assert!(i.get(&a, &Arc::from("k0"), t).is_none());
        assert!(i.get(&a, &Arc::from("k2"), t).is_some());
    }
}
