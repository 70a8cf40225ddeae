//! One subscriber connection: subscribes to its channel, then for every delivered `message`
//! records end-to-end latency (payload `ts` to now) and the offset sequence, until it holds
//! its channel's target offset (drain) or the run stops.

use std::{cell::RefCell, rc::Rc, sync::Arc};

use tokio::sync::Semaphore;

use crate::{
    conn::Net,
    rawws::Frame,
    scan::{self, Kind, TsFinder},
    shared::{DoneGuard, Phase, Shared},
    stats::{ThreadStats, Tracker},
};

pub async fn run(
    net: Arc<Net>,
    idx: usize,
    ch: usize,
    sem: Rc<Semaphore>,
    stats: Rc<RefCell<ThreadStats>>,
) {
    let shared = &net.shared;
    let _done = DoneGuard(&shared.subs_done);
    let mut rx = shared.phase.subscribe();
    let name = net.channel(ch);
    let Some(mut ws) = net
        .connect_raw(idx, &format!("lt-sub-{idx}"), &name, &sem, &stats)
        .await
    else {
        return;
    };
    stats.borrow_mut().raw_connected += 1;
    let mut tr = Tracker::default();
    let mut ts = TsFinder::default();
    let mut target: Option<u64> = None;
    'run: loop {
        // One `changed()` future per phase change, not one per message.
        {
            let changed = rx.changed();
            tokio::pin!(changed);
            loop {
                if target.is_some_and(|t| tr.complete(t)) {
                    break 'run;
                }
                tokio::select! {
                    biased;
                    f = ws.next() => match f {
                        Ok(Some(Frame::Text(r))) => {
                            // This frame, then every whole text frame the same read brought,
                            // without a trip through select! per frame.
                            let at = ws.read_at();
                            let mut r = Some(r);
                            while let Some(range) = r {
                                on_text(ws.bytes(range), at, idx, &mut tr, &mut ts, shared, &stats);
                                if target.is_some_and(|t| tr.complete(t)) {
                                    break;
                                }
                                r = ws.buffered_text();
                            }
                        }
                        Ok(Some(Frame::Ping(p))) => {
                            if let Err(e) = ws.send_pong(&p).await {
                                ended(shared, &stats, format!("subscriber {idx}: {e:#}"));
                                break 'run;
                            }
                        }
                        Ok(Some(Frame::Other)) => {}
                        Ok(Some(Frame::Close(code))) => {
                            ended(shared, &stats, format!("subscriber {idx} closed by server (code {code:?})"));
                            break 'run;
                        }
                        Ok(None) => {
                            ended(shared, &stats, format!("subscriber {idx}: connection closed"));
                            break 'run;
                        }
                        Err(e) => {
                            ended(shared, &stats, format!("subscriber {idx}: {e:#}"));
                            break 'run;
                        }
                    },
                    r = &mut changed => {
                        if r.is_err() {
                            break 'run;
                        }
                        break;
                    }
                }
            }
        }
        match &*rx.borrow_and_update() {
            Phase::Drain { targets, .. } => target = targets.get(ch).copied(),
            Phase::Stop => break,
            _ => {}
        }
    }
    stats.borrow_mut().subs.push(tr.result(ch));
}

fn ended(shared: &Shared, stats: &RefCell<ThreadStats>, why: String) {
    Shared::inc(&shared.disconnects);
    stats.borrow_mut().raw_disconnects += 1;
    shared.error(why);
}

/// One text frame from the broker (`now`: when its bytes were read, unix nanos).
fn on_text(
    b: &[u8],
    now: u64,
    idx: usize,
    tr: &mut Tracker,
    ts: &mut TsFinder,
    shared: &Shared,
    stats: &RefCell<ThreadStats>,
) {
    match scan::kind(b) {
        Kind::Message => on_message(b, now, tr, ts, shared, stats),
        Kind::Error => {
            Shared::inc(&shared.server_errors);
            let e = String::from_utf8_lossy(b);
            shared.error(format!("subscriber {idx}: {e}"));
        }
        _ => {}
    }
}

fn on_message(
    b: &[u8],
    now: u64,
    tr: &mut Tracker,
    ts: &mut TsFinder,
    shared: &Shared,
    stats: &RefCell<ThreadStats>,
) {
    Shared::inc(&shared.delivered);
    let mut st = stats.borrow_mut();
    st.raw_delivered += 1;
    match ts.find(b) {
        Some(ts) => {
            let us = (now.saturating_sub(ts) / 1000).max(1);
            st.latency.saturating_record(us);
            st.per_second.record(now, us);
            st.progress(now, us, shared);
        }
        None => st.unparsed += 1,
    }
    match scan::order_key(b, ts) {
        Some((key, fallback)) => {
            let d = tr.observe(key);
            if d != 0 {
                shared
                    .missing
                    .fetch_add(d as u64, std::sync::atomic::Ordering::Relaxed);
            }
            st.by_seq += u64::from(fallback);
        }
        None => st.unparsed += 1,
    }
}
