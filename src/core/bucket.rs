//! `Bucket`: the publish rate limit of one connection (WebSocket or HTTP keep-alive), a token
//! bucket of `websocket.publish_rate` per second up to `websocket.publish_burst` at once.

use std::time::Instant;

pub struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    pub fn new(rate: u32, burst: u32) -> Self {
        Self {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: Instant::now(),
        }
    }

    /// Takes one token; false when the bucket is empty.
    pub fn take(&mut self, now: Instant) -> bool {
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut b = Bucket::new(10, 3);
        let t = Instant::now();
        assert!((0..3).all(|_| b.take(t)));
        assert!(!b.take(t));
        assert!(b.take(t + std::time::Duration::from_millis(100)));
    }
}
