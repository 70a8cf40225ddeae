//! `Bucket`: the publish rate limits of one connection (WebSocket or HTTP keep-alive), two
//! token buckets taken together: messages (`websocket.publish_rate` per second, up to
//! `websocket.publish_burst` at once) and payload bytes (`websocket.publish_bytes_rate` per
//! second, up to `websocket.publish_bytes_burst`). A publish either takes from both or from
//! neither; overflow is a refusal (`RATE_LIMITED`) that says which limit.

use std::time::Instant;

use crate::config::Config;

struct Tokens {
    tokens: f64,
    rate: f64,
    burst: f64,
}

impl Tokens {
    fn new(rate: f64, burst: f64) -> Self {
        Self {
            tokens: burst,
            rate,
            burst,
        }
    }

    fn refill(&mut self, dt: f64) {
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
    }
}

/// Which limit a refused publish was over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Over {
    Messages,
    Bytes,
}

pub struct Bucket {
    messages: Tokens,
    bytes: Tokens,
    last: Instant,
}

impl Bucket {
    pub fn new(rate: u32, burst: u32, bytes_rate: u64, bytes_burst: u64) -> Self {
        Self {
            messages: Tokens::new(f64::from(rate), f64::from(burst)),
            bytes: Tokens::new(bytes_rate as f64, bytes_burst as f64),
            last: Instant::now(),
        }
    }

    /// The limits of `[websocket]`.
    pub fn of(c: &Config) -> Self {
        Self::new(
            c.publish_rate,
            c.publish_burst,
            c.publish_bytes_rate,
            c.publish_bytes_burst,
        )
    }

    /// Takes one message of `len` payload bytes, or nothing.
    pub fn take(&mut self, now: Instant, len: usize) -> Result<(), Over> {
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.messages.refill(dt);
        self.bytes.refill(dt);
        if self.messages.tokens < 1.0 {
            return Err(Over::Messages);
        }
        if self.bytes.tokens < len as f64 {
            return Err(Over::Bytes);
        }
        self.messages.tokens -= 1.0;
        self.bytes.tokens -= len as f64;
        Ok(())
    }
}

/// The refusal's message for `over` (shared by every publish path).
pub fn refusal(c: &Config, over: Over) -> String {
    match over {
        Over::Messages => format!(
            "publish rate limit: {} per second (burst {})",
            c.publish_rate, c.publish_burst
        ),
        Over::Bytes => format!(
            "publish byte rate limit: {} payload bytes per second (burst {})",
            c.publish_bytes_rate, c.publish_bytes_burst
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_rate() {
        let mut b = Bucket::new(10, 3, 1 << 30, 1 << 30);
        let t = Instant::now();
        assert!((0..3).all(|_| b.take(t, 1).is_ok()));
        assert_eq!(b.take(t, 1), Err(Over::Messages));
        assert!(b.take(t + std::time::Duration::from_millis(100), 1).is_ok());
    }

    #[test]
    fn bytes_are_limited_too_and_a_refusal_takes_nothing() {
        let mut b = Bucket::new(1000, 1000, 1000, 3000);
        let t = Instant::now();
        assert!(b.take(t, 2000).is_ok());
        assert_eq!(b.take(t, 2000), Err(Over::Bytes));
        assert!(b.take(t, 1000).is_ok(), "the refused publish took nothing");
        assert_eq!(b.take(t, 1), Err(Over::Bytes));
        assert!(b.take(t + std::time::Duration::from_secs(1), 1000).is_ok());
    }
}
