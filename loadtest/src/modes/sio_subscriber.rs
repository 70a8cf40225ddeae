//! One Socket.IO subscriber connection (`fanout --protocol socketio|mixed`): the Engine.IO /
//! Socket.IO handshake and `realtime:subscribe` ([`crate::sio`]), then for every delivery
//! (`42["e",{ts,seq,pub,pad,meta}]`) the end-to-end latency (payload `ts` to the read) and,
//! since Socket.IO deliveries carry no offset, the `seq` order of each publisher of its
//! channel apart (one [`Tracker`] per publisher, found by the payload's `pub`). Pings (`2`)
//! are answered (`3`), presence events counted and skipped. It ends when it holds what every
//! publisher of its channel was acknowledged (drain) or the run stops.
//!
//! The loop has the raw subscriber's shape (`subscriber.rs`): one clock read per socket read,
//! and every whole frame that read brought handled before the next `select!`.

use std::{
    cell::RefCell,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;

use crate::{
    conn::Net,
    rawws::Frame,
    shared::{DoneGuard, Phase, SeqTarget, Shared},
    sio::{self, Delivery, Event, Packet},
    stats::{ThreadStats, Tracker},
};

/// Which publishers are on channel `ch`: `j` with `j % channels == ch`, i.e. `ch + k *
/// channels` for `k` in `0..count`.
fn publishers_on(ch: usize, channels: usize, publishers: usize) -> usize {
    publishers.saturating_sub(ch).div_ceil(channels)
}

/// A subscriber's state between frames.
struct Sub {
    idx: usize,
    ch: usize,
    channels: usize,
    /// One per publisher of the channel: tracker `k` follows publisher `ch + k * channels`.
    trackers: Vec<Tracker>,
    /// Pongs owed for the pings of the frames just handled.
    pongs: usize,
    last_ping: Instant,
    /// `pingInterval + pingTimeout`: longer without a ping and socket.io-client gives up.
    ping_limit: Duration,
    ping_timed_out: bool,
}

/// What the connection loop does after a frame.
enum Flow {
    Go,
    End(String),
}

pub async fn run(
    net: Arc<Net>,
    idx: usize,
    ch: usize,
    channels: usize,
    publishers: usize,
    sem: Rc<Semaphore>,
    stats: Rc<RefCell<ThreadStats>>,
) {
    let shared = &net.shared;
    let _done = DoneGuard(&shared.subs_done);
    let mut rx = shared.phase.subscribe();
    let name = net.channel(ch);
    let Some((mut ws, open)) = net
        .connect_sio(idx, &format!("lt-sub-{idx}"), &name, &sem, &stats)
        .await
    else {
        return;
    };
    stats.borrow_mut().sio.connected += 1;
    let mut sub = Sub {
        idx,
        ch,
        channels,
        trackers: (0..publishers_on(ch, channels, publishers))
            .map(|_| Tracker::default())
            .collect(),
        pongs: 0,
        last_ping: Instant::now(),
        ping_limit: Duration::from_millis(open.ping_interval + open.ping_timeout),
        ping_timed_out: false,
    };
    let mut targets: Option<Arc<Vec<SeqTarget>>> = None;
    'run: loop {
        {
            let changed = rx.changed();
            tokio::pin!(changed);
            loop {
                if targets.as_ref().is_some_and(|t| sub.complete(t)) {
                    break 'run;
                }
                tokio::select! {
                    biased;
                    f = ws.next() => match f {
                        Ok(Some(Frame::Text(r))) => {
                            let at = ws.read_at();
                            let mut r = Some(r);
                            let mut flow = Flow::Go;
                            while let Some(range) = r {
                                flow = sub.on_text(ws.bytes(range), at, shared, &stats);
                                if matches!(flow, Flow::End(_))
                                    || targets.as_ref().is_some_and(|t| sub.complete(t))
                                {
                                    break;
                                }
                                r = ws.buffered_text();
                            }
                            while sub.pongs > 0 {
                                sub.pongs -= 1;
                                if let Err(e) = ws.send_text(sio::PONG).await {
                                    flow = Flow::End(format!("{e:#}"));
                                    break;
                                }
                            }
                            if let Flow::End(why) = flow {
                                ended(shared, &stats, format!("socketio subscriber {idx}: {why}"));
                                break 'run;
                            }
                        }
                        Ok(Some(Frame::Ping(p))) => {
                            if let Err(e) = ws.send_pong(&p).await {
                                ended(shared, &stats, format!("socketio subscriber {idx}: {e:#}"));
                                break 'run;
                            }
                        }
                        Ok(Some(Frame::Other)) => {}
                        Ok(Some(Frame::Close(code))) => {
                            ended(shared, &stats, format!("socketio subscriber {idx} closed by server (code {code:?})"));
                            break 'run;
                        }
                        Ok(None) => {
                            ended(shared, &stats, format!("socketio subscriber {idx}: connection closed"));
                            break 'run;
                        }
                        Err(e) => {
                            ended(shared, &stats, format!("socketio subscriber {idx}: {e:#}"));
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
            Phase::Drain { seqs, .. } => targets = Some(seqs.clone()),
            Phase::Stop => break,
            _ => {}
        }
    }
    sub.check_ping(shared);
    let mut st = stats.borrow_mut();
    st.sio.ping_timeouts += u64::from(sub.ping_timed_out);
    for (k, tr) in sub.trackers.iter().enumerate() {
        let mut r = tr.result(ch);
        r.publisher = Some(ch + k * channels);
        st.subs.push(r);
    }
}

fn ended(shared: &Shared, stats: &RefCell<ThreadStats>, why: String) {
    Shared::inc(&shared.disconnects);
    stats.borrow_mut().sio.disconnects += 1;
    shared.error(why);
}

impl Sub {
    /// Holds everything each publisher of the channel was acknowledged (but refusals).
    fn complete(&self, seqs: &[SeqTarget]) -> bool {
        self.trackers.iter().enumerate().all(|(k, tr)| {
            match seqs.get(self.ch + k * self.channels) {
                Some(t) => tr.complete_except(t.max, &t.refused),
                None => true,
            }
        })
    }

    /// One text frame (`now`: when its bytes were read, unix nanos).
    fn on_text(
        &mut self,
        b: &[u8],
        now: u64,
        shared: &Shared,
        stats: &RefCell<ThreadStats>,
    ) -> Flow {
        match sio::parse(b) {
            Packet::Event(Event::Delivery(d)) => self.on_delivery(d, now, shared, stats),
            Packet::Event(Event::Presence(_)) => stats.borrow_mut().sio.presence += 1,
            Packet::Ping => {
                stats.borrow_mut().sio.pings += 1;
                self.check_ping(shared);
                self.last_ping = Instant::now();
                self.pongs += 1;
            }
            Packet::Event(Event::Malformed) => {
                stats.borrow_mut().sio.unparsed += 1;
                let f = String::from_utf8_lossy(&b[..b.len().min(200)]);
                shared.error(format!(
                    "socketio subscriber {}: event is not [name, {{..}}]: {f}",
                    self.idx
                ));
            }
            Packet::Event(Event::Error(_)) => {
                Shared::inc(&shared.server_errors);
                let e = String::from_utf8_lossy(b);
                shared.error(format!("socketio subscriber {}: {e}", self.idx));
            }
            Packet::Disconnect => return Flow::End("server sent Socket.IO DISCONNECT (41)".into()),
            Packet::Close => return Flow::End("server sent Engine.IO close (1)".into()),
            _ => {}
        }
        Flow::Go
    }

    fn on_delivery(
        &mut self,
        d: Delivery,
        now: u64,
        shared: &Shared,
        stats: &RefCell<ThreadStats>,
    ) {
        Shared::inc(&shared.delivered);
        let mut st = stats.borrow_mut();
        st.sio.delivered += 1;
        let (Some(ts), Some(seq), Some(j)) = (d.ts, d.seq, d.publisher) else {
            st.sio.unparsed += 1;
            shared.error(format!(
                "socketio subscriber {}: a delivery without numeric ts, seq and pub at the top \
                 level of its object (payload not spread?)",
                self.idx
            ));
            return;
        };
        let us = (now.saturating_sub(ts) / 1000).max(1);
        st.sio.latency.saturating_record(us);
        st.per_second.record(now, us);
        st.progress(now, us, shared);
        let j = usize::try_from(j).unwrap_or(usize::MAX);
        let tracker = (j % self.channels == self.ch)
            .then(|| self.trackers.get_mut(j / self.channels))
            .flatten();
        match tracker {
            Some(tr) => {
                let d = tr.observe(seq);
                if d != 0 {
                    shared
                        .missing
                        .fetch_add(d as u64, std::sync::atomic::Ordering::Relaxed);
                }
            }
            None => {
                st.sio.misrouted += 1;
                shared.error(format!(
                    "socketio subscriber {} of channel {}: a delivery from publisher {j} \
                     (not one of this channel's)",
                    self.idx, self.ch
                ));
            }
        }
    }

    /// Counts a ping gap longer than the client's limit (once per subscriber).
    fn check_ping(&mut self, shared: &Shared) {
        let gap = self.last_ping.elapsed();
        if gap > self.ping_limit && !self.ping_timed_out {
            self.ping_timed_out = true;
            shared.error(format!(
                "socketio subscriber {}: no Engine.IO ping for {:.1} s (pingInterval + \
                 pingTimeout = {:.1} s; socket.io-client would have dropped the connection)",
                self.idx,
                gap.as_secs_f64(),
                self.ping_limit.as_secs_f64()
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publishers_of_a_channel() {
        // 5 publishers on 2 channels: channel 0 has 0, 2, 4; channel 1 has 1, 3.
        assert_eq!(publishers_on(0, 2, 5), 3);
        assert_eq!(publishers_on(1, 2, 5), 2);
        // More channels than publishers: some channels have none.
        assert_eq!(publishers_on(3, 4, 2), 0);
        assert_eq!(publishers_on(0, 1, 1), 1);
    }
}
