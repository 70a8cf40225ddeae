//! Retry policy. 2xx: delivered. 408, 429, 5xx, timeouts and connection errors: retried with
//! exponential backoff (`initial * 2^(n-1)`, capped at `max`) and full jitter in its upper
//! half, or after `Retry-After` when the receiver sent one; every other answer (1xx, 3xx, other
//! 4xx) is a permanent failure (redirects are not followed). No attempt starts after the
//! delivery's max age.

use std::time::{Duration, SystemTime};

use http::{HeaderMap, StatusCode, header::RETRY_AFTER};

/// What one attempt's answer means.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Retry; `after` is the receiver's `Retry-After`, if any.
    Retry {
        after: Option<Duration>,
    },
    Permanent,
}

pub fn classify(status: StatusCode, headers: &HeaderMap) -> Verdict {
    match status.as_u16() {
        200..=299 => Verdict::Delivered,
        408 | 429 | 500..=599 => Verdict::Retry {
            after: retry_after(headers),
        },
        _ => Verdict::Permanent,
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110 §10.2.3).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate(v)?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the form servers send.
fn httpdate(s: &str) -> Option<SystemTime> {
    let fmt = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let t = time::PrimitiveDateTime::parse(s, fmt).ok()?.assume_utc();
    let secs = u64::try_from(t.unix_timestamp()).ok()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

/// Delay before attempt `failures + 1`, given `failures` >= 1 failed attempts so far.
pub fn backoff(initial: Duration, max: Duration, failures: u32, jitter: f64) -> Duration {
    let exp = initial.saturating_mul(1u32 << failures.saturating_sub(1).min(20));
    let d = exp.min(max);
    // Upper-half jitter: spreads retries of many deliveries without making any much sooner.
    d.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// A cheap uniform number in [0, 1) (jitter needs spread, not secrecy).
pub fn jitter() -> f64 {
    let bits = uuid::Uuid::new_v4().as_u128() as u64;
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_answers() {
        let h = HeaderMap::new();
        let c = |s: u16| classify(StatusCode::from_u16(s).unwrap(), &h);
        assert_eq!(c(200), Verdict::Delivered);
        assert_eq!(c(204), Verdict::Delivered);
        assert_eq!(c(503), Verdict::Retry { after: None });
        assert_eq!(c(408), Verdict::Retry { after: None });
        assert_eq!(c(404), Verdict::Permanent);
        assert_eq!(c(301), Verdict::Permanent);
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "7".parse().unwrap());
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h),
            Verdict::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        h.insert(
            RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(
            classify(StatusCode::TOO_MANY_REQUESTS, &h),
            Verdict::Retry {
                after: Some(Duration::ZERO)
            }
        );
    }

    #[test]
    fn backoff_grows_and_caps() {
        let (i, m) = (Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(backoff(i, m, 1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(i, m, 3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(i, m, 3, 0.0), Duration::from_secs(2));
        assert_eq!(backoff(i, m, 30, 1.0), m);
        let j = jitter();
        assert!((0.0..1.0).contains(&j));
    }
}
