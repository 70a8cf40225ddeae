//! One subscriber of `recover`, in its two lives: [`join`] subscribes to the run's channel
//! and keeps where it stands (the `subscribed` frame's `offset` and `epoch`); [`come_back`]
//! later subscribes again with `since` = that position and checks what follows: `recovered:
//! true`, the same epoch, then exactly the offsets `offset+1 ..= offset+M` in order. It marks
//! itself done (`subs_done`) at the M-th message, or at the first failure, and keeps reading
//! until the run stops, so that anything sent after the M-th message is counted too.

use std::{cell::RefCell, rc::Rc, sync::Arc, time::Instant};

use anyhow::Context;
use tokio::sync::Semaphore;

use crate::{
    conn::{Net, subscribe_msg},
    rawws::{Frame, RawWs},
    scan::{self, Kind},
    shared::{Phase, Shared},
    stats::ThreadStats,
};

/// Where a subscriber stood in its channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub offset: u64,
    pub epoch: String,
}

/// What the `subscribed` frame said.
#[derive(Debug, PartialEq, Eq)]
pub struct Subscribed {
    pub at: Position,
    pub recovered: Option<bool>,
    pub first_offset: Option<u64>,
}

pub fn parse_subscribed(b: &[u8]) -> anyhow::Result<Subscribed> {
    let v: serde_json::Value = serde_json::from_slice(b).context("subscribed frame")?;
    let offset = v["offset"].as_u64().context("subscribed without offset")?;
    let epoch = v["epoch"].as_str().context("subscribed without epoch")?;
    Ok(Subscribed {
        at: Position {
            offset,
            epoch: epoch.to_string(),
        },
        recovered: v["recovered"].as_bool(),
        first_offset: v["firstOffset"].as_u64(),
    })
}

/// The first life: subscribed, and where it stands. `None` if it could not (counted).
pub async fn join(
    net: &Net,
    idx: usize,
    sem: &Semaphore,
    stats: &Rc<RefCell<ThreadStats>>,
) -> Option<(RawWs, Position)> {
    let (ws, reply) = net
        .subscribe_raw(
            idx,
            &sub_name(idx),
            subscribe_msg(&net.channel(0)),
            sem,
            stats,
        )
        .await?;
    match parse_subscribed(&reply) {
        Ok(s) => Some((ws, s.at)),
        Err(e) => {
            net.shared.error(format!("subscriber {idx}: {e:#}"));
            None
        }
    }
}

fn sub_name(idx: usize) -> String {
    format!("lt-rec-{idx}")
}

/// What one returning subscriber saw.
#[derive(Debug, Default, Clone)]
pub struct Back {
    /// When its connection attempt began (concurrency permit held), and when the M-th
    /// message arrived.
    pub started: Option<Instant>,
    pub done_at: Option<Instant>,
    pub recovered: Option<bool>,
    pub epoch_changed: bool,
    pub received: u64,
    /// Offsets skipped, offsets at or below one already had, messages after the M-th.
    pub gaps: u64,
    pub duplicates: u64,
    pub extra: u64,
    pub error: Option<String>,
}

/// Checks the offsets of one returning subscriber against `from ..= to`.
#[derive(Debug)]
pub struct Check {
    next: u64,
    to: u64,
}

impl Check {
    pub fn new(from: u64, to: u64) -> Self {
        Self { next: from, to }
    }

    /// Counts `offset` into `b`; true when this message completed the range.
    pub fn observe(&mut self, offset: u64, b: &mut Back) -> bool {
        b.received += 1;
        if self.next > self.to {
            b.extra += 1;
            return false;
        }
        if offset < self.next {
            b.duplicates += 1;
            return false;
        }
        b.gaps += offset - self.next;
        self.next = offset + 1;
        self.next > self.to
    }
}

/// The second life: subscribe with `since` = `pos`, expect `messages` messages.
#[allow(clippy::too_many_arguments)]
pub async fn come_back(
    net: Arc<Net>,
    idx: usize,
    pos: Position,
    messages: u64,
    sem: Rc<Semaphore>,
    stats: Rc<RefCell<ThreadStats>>,
) -> Back {
    let shared = net.shared.clone();
    let mut rx = shared.phase.subscribe();
    let mut b = Back::default();
    let mut done = false;
    let since = serde_json::json!({
        "type": "subscribe",
        "channel": net.channel(0),
        "since": {"offset": pos.offset, "epoch": pos.epoch},
    })
    .to_string();
    let joined = {
        let Ok(_permit) = sem.acquire().await else {
            return b;
        };
        b.started = Some(Instant::now());
        // The permit above is the concurrency bound; this one only satisfies the signature.
        let one = Semaphore::new(1);
        net.subscribe_raw(idx, &sub_name(idx), since, &one, &stats)
            .await
    };
    let Some((mut ws, reply)) = joined else {
        b.error = Some("could not subscribe".into());
        mark_done(&shared, &mut done);
        return b;
    };
    match parse_subscribed(&reply) {
        Ok(s) => {
            b.recovered = s.recovered;
            b.epoch_changed = s.at.epoch != pos.epoch;
            if s.recovered != Some(true) {
                mark_done(&shared, &mut done);
            }
        }
        Err(e) => {
            b.error = Some(format!("{e:#}"));
            mark_done(&shared, &mut done);
        }
    }
    let mut check = Check::new(pos.offset + 1, pos.offset + messages);
    loop {
        tokio::select! {
            biased;
            f = ws.next() => match f {
                Ok(Some(Frame::Text(r))) => {
                    let mut r = Some(r);
                    while let Some(range) = r {
                        let f = ws.bytes(range);
                        match scan::kind(f) {
                            Kind::Message => match scan::offset(f) {
                                Some(o) => {
                                    Shared::inc(&shared.delivered);
                                    if check.observe(o, &mut b) {
                                        b.done_at = Some(Instant::now());
                                        mark_done(&shared, &mut done);
                                    }
                                }
                                None => b.error = Some("a message without offset".into()),
                            },
                            Kind::Error => {
                                Shared::inc(&shared.server_errors);
                                b.error.get_or_insert_with(|| String::from_utf8_lossy(f).into());
                            }
                            _ => {}
                        }
                        r = ws.buffered_text();
                    }
                }
                Ok(Some(Frame::Ping(p))) => {
                    if let Err(e) = ws.send_pong(&p).await {
                        b.error.get_or_insert(format!("{e:#}"));
                        break;
                    }
                }
                Ok(Some(Frame::Other)) => {}
                Ok(Some(Frame::Close(code))) => {
                    b.error.get_or_insert(format!("closed by server (code {code:?})"));
                    break;
                }
                Ok(None) => {
                    b.error.get_or_insert("connection closed".into());
                    break;
                }
                Err(e) => {
                    b.error.get_or_insert(format!("{e:#}"));
                    break;
                }
            },
            r = rx.changed() => {
                if r.is_err() || matches!(*rx.borrow_and_update(), Phase::Stop) {
                    break;
                }
            }
        }
    }
    if b.error.is_some() {
        Shared::inc(&shared.disconnects);
        let e = b.error.clone().unwrap_or_default();
        shared.error(format!("subscriber {idx}: {e}"));
    }
    mark_done(&shared, &mut done);
    b
}

/// Counts this subscriber as done (complete, or failed) once.
fn mark_done(shared: &Shared, done: &mut bool) {
    if !*done {
        *done = true;
        Shared::inc(&shared.subs_done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_subscribed_frame() {
        let f = br#"{"type":"subscribed","channel":"lt:r:0","subscriptionId":"s1","offset":0,"epoch":"9f2c","recovered":false,"firstOffset":12}"#;
        let s = parse_subscribed(f).expect("parses");
        assert_eq!(
            s,
            Subscribed {
                at: Position {
                    offset: 0,
                    epoch: "9f2c".into()
                },
                recovered: Some(false),
                first_offset: Some(12),
            }
        );
        let plain =
            br#"{"type":"subscribed","channel":"c","subscriptionId":"s","offset":7,"epoch":"e"}"#;
        assert_eq!(parse_subscribed(plain).expect("parses").recovered, None);
        assert!(parse_subscribed(br#"{"type":"subscribed"}"#).is_err());
    }

    #[test]
    fn checks_the_recovered_range() {
        let mut b = Back::default();
        let mut c = Check::new(11, 15);
        let done: Vec<bool> = [11, 12, 12, 14, 15, 16]
            .iter()
            .map(|&o| c.observe(o, &mut b))
            .collect();
        assert_eq!(done, [false, false, false, false, true, false]);
        assert_eq!((b.received, b.duplicates, b.gaps, b.extra), (6, 1, 1, 1));
        let mut b = Back::default();
        let mut c = Check::new(1, 3);
        assert!(!c.observe(1, &mut b) && !c.observe(2, &mut b) && c.observe(3, &mut b));
        assert_eq!((b.duplicates, b.gaps, b.extra), (0, 0, 0));
    }
}
