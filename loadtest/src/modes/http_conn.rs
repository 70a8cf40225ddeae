//! One keep-alive HTTP publisher connection of `http-publish`: once the run starts, a writer
//! sends `POST /api/realtime/messages` (or `/batch` with `batch` items) keeping up to
//! `pipeline` requests unanswered, and a reader cuts the answers from the stream in order
//! (HTTP/1.1 answers pipelined requests in order), times each request, and checks every ack:
//! right channel, offset above this connection's previous ack on that channel. Acked offsets
//! are kept per channel for the run's cross-connection duplicate check.

use std::{
    cell::{Cell, RefCell},
    collections::{BTreeMap, VecDeque},
    rc::Rc,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::tcp::{OwnedReadHalf, OwnedWriteHalf},
    sync::{Notify, Semaphore},
};

use crate::{
    conn::Net,
    http1::{self, Answer},
    payload::{Publish, now_nanos},
    shared::{DoneGuard, Phase, Shared},
    stats::{ThreadStats, micros_hist},
};

/// Pause after a `RATE_LIMITED` answer before the next request.
const LIMIT_BACKOFF: Duration = Duration::from_millis(5);

#[derive(Clone)]
pub struct Cfg {
    pub batch: usize,
    pub size: usize,
    pub pipeline: usize,
    pub drain: Duration,
    /// The run's channel names; item `n` of a connection goes to `names[n % len]`.
    pub names: Vec<String>,
}

/// What one worker thread's connections counted.
pub struct HttpStats {
    /// Request round trips (written to answered), µs.
    pub latency: Histogram<u64>,
    pub requests: u64,
    pub acked: u64,
    /// Messages refused, by error code.
    pub errors: BTreeMap<String, u64>,
    /// Messages whose request never got an answer (closed, or past the drain).
    pub unanswered: u64,
    /// Acks whose offset was not above the connection's previous ack on that channel.
    pub not_increasing: u64,
    /// Acks naming another channel than the item's.
    pub wrong_channel: u64,
    /// Per channel, every acked offset.
    pub offsets: Vec<Vec<u64>>,
}

impl HttpStats {
    pub fn new(channels: usize) -> Self {
        Self {
            latency: micros_hist(),
            requests: 0,
            acked: 0,
            errors: BTreeMap::new(),
            unanswered: 0,
            not_increasing: 0,
            wrong_channel: 0,
            offsets: vec![Vec::new(); channels],
        }
    }

    pub fn merge(&mut self, o: HttpStats) {
        let _ = self.latency.add(&o.latency);
        self.requests += o.requests;
        self.acked += o.acked;
        for (k, v) in o.errors {
            *self.errors.entry(k).or_default() += v;
        }
        self.unanswered += o.unanswered;
        self.not_increasing += o.not_increasing;
        self.wrong_channel += o.wrong_channel;
        for (mine, theirs) in self.offsets.iter_mut().zip(o.offsets) {
            mine.extend(theirs);
        }
    }
}

/// A request written and not yet answered.
struct Sent {
    at: Instant,
    /// The connection's item number of its first message.
    first: u64,
    items: usize,
}

struct State {
    pending: RefCell<VecDeque<Sent>>,
    /// Requests that may be written now (`pipeline` minus unanswered); closed when the
    /// connection ends.
    window: Semaphore,
    writing: Cell<bool>,
    backoff_until: Cell<Option<Instant>>,
    /// Wakes the reader when the writer is done.
    notify: Notify,
}

pub async fn run(
    net: Arc<Net>,
    idx: usize,
    cfg: Rc<Cfg>,
    sem: Rc<Semaphore>,
    stats: Rc<RefCell<ThreadStats>>,
    out: Rc<RefCell<HttpStats>>,
) {
    let shared = net.shared.clone();
    let _done = DoneGuard(&shared.pubs_done);
    let mut rx = shared.phase.subscribe();
    let Some(tcp) = net.connect_tcp(idx, &sem, &stats).await else {
        return;
    };
    let until = loop {
        match &*rx.borrow_and_update() {
            Phase::Run { until } => break *until,
            Phase::Connect => {}
            _ => return,
        }
        if rx.changed().await.is_err() {
            return;
        }
    };
    let token = match net.minter.mint(&format!("lt-http-{idx}"), "authenticated") {
        Ok(t) => t,
        Err(e) => {
            shared.error(format!("connection {idx}: {e:#}"));
            return;
        }
    };
    let (rd, wr) = tcp.into_split();
    let st = State {
        pending: RefCell::new(VecDeque::new()),
        window: Semaphore::new(cfg.pipeline),
        writing: Cell::new(true),
        backoff_until: Cell::new(None),
        notify: Notify::new(),
    };
    let host = &net.targets[idx % net.targets.len()].host;
    tokio::join!(
        write(wr, idx, &st, &cfg, &shared, host, &token, until),
        read(rd, idx, &st, &cfg, &shared, &out, until + cfg.drain),
    );
    let owed: usize = st.pending.borrow().iter().map(|s| s.items).sum();
    if owed > 0 {
        out.borrow_mut().unanswered += owed as u64;
        shared.error(format!("connection {idx}: {owed} messages never answered"));
    }
}

#[allow(clippy::too_many_arguments)]
async fn write(
    mut wr: OwnedWriteHalf,
    idx: usize,
    st: &State,
    cfg: &Cfg,
    shared: &Shared,
    host: &str,
    token: &str,
    until: Instant,
) {
    let path = if cfg.batch == 1 {
        http1::SINGLE
    } else {
        http1::BATCH
    };
    let mut payloads = Publish::new("", cfg.size);
    // Item numbers start at the connection's index, so connections spread over the channels.
    let mut item = idx as u64;
    let mut seq = 0u64;
    let mut body = String::new();
    while Instant::now() < until {
        if let Some(b) = st.backoff_until.take() {
            tokio::time::sleep_until(b.min(until).into()).await;
        }
        match tokio::time::timeout_at(until.into(), st.window.acquire()).await {
            Ok(Ok(p)) => p.forget(),
            _ => break,
        }
        body.clear();
        if cfg.batch > 1 {
            body.push_str(r#"{"messages":["#);
        }
        for i in 0..cfg.batch {
            if i > 0 {
                body.push(',');
            }
            seq += 1;
            let name = &cfg.names[((item + i as u64) % cfg.names.len() as u64) as usize];
            http1::item(&mut body, name, &payloads.payload(seq, now_nanos()));
        }
        if cfg.batch > 1 {
            body.push_str("]}");
        }
        let req = http1::post(path, host, token, &body);
        st.pending.borrow_mut().push_back(Sent {
            at: Instant::now(),
            first: item,
            items: cfg.batch,
        });
        item += cfg.batch as u64;
        shared.sent.fetch_add(cfg.batch as u64, Relaxed);
        if let Err(e) = wr.write_all(&req).await {
            shared.error(format!("connection {idx}: writing: {e}"));
            break;
        }
    }
    st.writing.set(false);
    st.notify.notify_one();
}

async fn read(
    mut rd: OwnedReadHalf,
    idx: usize,
    st: &State,
    cfg: &Cfg,
    shared: &Shared,
    out: &RefCell<HttpStats>,
    deadline: Instant,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut last = vec![0u64; cfg.names.len()];
    loop {
        let mut used = 0;
        loop {
            let r = match http1::parse(&buf[used..]) {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(e) => return fail(st, shared, format!("connection {idx}: {e:#}")),
            };
            let Some(sent) = st.pending.borrow_mut().pop_front() else {
                return fail(
                    st,
                    shared,
                    format!("connection {idx}: an answer with no request"),
                );
            };
            let body = &buf[used + r.body.start..used + r.body.end];
            answered(&sent, r.status, body, cfg, &mut last, st, shared, out);
            st.window.add_permits(1);
            used += r.len;
            if r.close {
                return fail(
                    st,
                    shared,
                    format!("connection {idx}: closed by the server"),
                );
            }
        }
        buf.drain(..used);
        if !st.writing.get() && st.pending.borrow().is_empty() {
            return;
        }
        buf.reserve(16 << 10);
        tokio::select! {
            r = rd.read_buf(&mut buf) => match r {
                Ok(0) => return fail(st, shared, format!("connection {idx}: closed by the server")),
                Ok(_) => {}
                Err(e) => return fail(st, shared, format!("connection {idx}: {e}")),
            },
            _ = st.notify.notified() => {}
            _ = tokio::time::sleep_until(deadline.into()) => return,
        }
    }
}

/// The connection ended early: count it, and stop the writer.
fn fail(st: &State, shared: &Shared, why: String) {
    Shared::inc(&shared.disconnects);
    shared.error(why);
    st.window.close();
}

#[allow(clippy::too_many_arguments)]
fn answered(
    sent: &Sent,
    status: u16,
    body: &[u8],
    cfg: &Cfg,
    last: &mut [u64],
    st: &State,
    shared: &Shared,
    out: &RefCell<HttpStats>,
) {
    let mut o = out.borrow_mut();
    o.requests += 1;
    let us = sent.at.elapsed().as_micros() as u64;
    o.latency.saturating_record(us.max(1));
    let answers = if cfg.batch == 1 {
        vec![http1::single(status, body)]
    } else {
        match http1::batch(status, body) {
            Ok(v) if v.len() == sent.items => v,
            Ok(_) => vec![Answer::Error("WRONG_RESULT_COUNT".into()); sent.items],
            Err(e) => vec![e; sent.items],
        }
    };
    let k = cfg.names.len() as u64;
    for (i, a) in answers.into_iter().enumerate() {
        let ch = ((sent.first + i as u64) % k) as usize;
        match a {
            Answer::Ack { channel, offset } => {
                o.acked += 1;
                Shared::inc(&shared.acked);
                if channel != cfg.names[ch] {
                    o.wrong_channel += 1;
                }
                if offset <= last[ch] {
                    o.not_increasing += 1;
                }
                last[ch] = offset;
                o.offsets[ch].push(offset);
            }
            Answer::Error(code) => {
                if code == "RATE_LIMITED" {
                    Shared::inc(&shared.rate_limited);
                    st.backoff_until.set(Some(Instant::now() + LIMIT_BACKOFF));
                } else {
                    Shared::inc(&shared.publish_errors);
                    let shown = &body[..body.len().min(300)];
                    shared.error(format!("HTTP {status}: {}", String::from_utf8_lossy(shown)));
                }
                *o.errors.entry(code.into_owned()).or_default() += 1;
            }
        }
    }
}
