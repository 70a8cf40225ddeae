//! `webhook-sink`: a small HTTP/1.1 receiver for the broker's webhooks (one current-thread
//! tokio runtime, keep-alive connections, requests read by `httpd`). Every request is answered
//! with `--reply` after `--delay`, or never (`hang`: the socket is held until the client gives
//! up). Counts requests, bytes and distinct `X-InsForge-Message-ID`s, and for each message at
//! its first arrival the latency from the send timestamp this harness put in the payload
//! (`"payload":{"ts":<unix nanos>`, found in the envelope by `scan::send_ts`) to now. Stops
//! after `--duration`, or as soon as `--expect` distinct messages arrived.

use std::{
    cell::RefCell,
    collections::HashSet,
    io::IsTerminal,
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    sync::Notify,
    time::MissedTickBehavior,
};

use super::watchdog;
use crate::{
    cli::{Reply, SinkArgs},
    httpd::{self, Next, Reader, Request},
    payload::now_nanos,
    procstat::Proc,
    progress,
    report::{Pct, SinkReport},
    scan,
    stats::micros_hist,
};

const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Sink CPU % above which the rates are likely the sink's own limit.
const BUSY_PCT: f64 = 90.0;

struct Sink {
    reply: Reply,
    delay: Duration,
    expect: Option<u64>,
    answer: Vec<u8>,
    answer_close: Vec<u8>,
    counts: RefCell<Counts>,
    /// Woken once `expect` distinct messages arrived.
    done: Notify,
}

struct Counts {
    connections: u64,
    requests: u64,
    bytes: u64,
    /// Message ids seen: UUIDs (the broker's) as their 128 bits, anything else as text.
    uuids: HashSet<u128>,
    others: HashSet<Box<str>>,
    no_message_id: u64,
    no_ts: u64,
    bad: u64,
    first: Option<Instant>,
    last: Option<Instant>,
    /// Microseconds from the payload's send timestamp to the first arrival.
    latency: Histogram<u64>,
    first_error: Option<String>,
}

impl Counts {
    fn new() -> Self {
        Self {
            connections: 0,
            requests: 0,
            bytes: 0,
            uuids: HashSet::new(),
            others: HashSet::new(),
            no_message_id: 0,
            no_ts: 0,
            bad: 0,
            first: None,
            last: None,
            latency: micros_hist(),
            first_error: None,
        }
    }

    fn distinct(&self) -> u64 {
        (self.uuids.len() + self.others.len()) as u64
    }

    /// Remembers `id`; true the first time it is seen.
    fn insert(&mut self, id: &str) -> bool {
        match uuid_bits(id) {
            Some(u) => self.uuids.insert(u),
            None => self.others.insert(id.into()),
        }
    }

    fn error(&mut self, e: String) {
        self.first_error.get_or_insert(e);
    }
}

/// The 128 bits of a UUID in its `8-4-4-4-12` hex form (any case), or `None`.
fn uuid_bits(s: &str) -> Option<u128> {
    const DASHES: [usize; 4] = [8, 13, 18, 23];
    let b = s.as_bytes();
    if b.len() != 36 || DASHES.iter().any(|&i| b[i] != b'-') {
        return None;
    }
    let mut v: u128 = 0;
    for (i, &c) in b.iter().enumerate() {
        if !DASHES.contains(&i) {
            v = (v << 4) | u128::from(char::from(c).to_digit(16)?);
        }
    }
    Some(v)
}

impl Sink {
    /// Counts one complete request.
    fn record(&self, req: &Request, body: &[u8]) {
        let now = Instant::now();
        let wall = now_nanos();
        let mut c = self.counts.borrow_mut();
        c.requests += 1;
        c.bytes += req.len as u64;
        c.first.get_or_insert(now);
        c.last = Some(now);
        let Some(id) = &req.head.message_id else {
            c.no_message_id += 1;
            return;
        };
        if !c.insert(id) {
            return;
        }
        match scan::send_ts(body) {
            Some(ts) => {
                let us = wall.saturating_sub(ts) / 1000;
                c.latency.saturating_record(us.max(1));
            }
            None => c.no_ts += 1,
        }
        if self.expect.is_some_and(|n| c.distinct() >= n) {
            self.done.notify_one();
        }
    }
}

pub fn run(a: SinkArgs) -> anyhow::Result<SinkReport> {
    if !a.listen.ip().is_loopback() && !a.allow_remote {
        bail!(
            "--listen {}: not a loopback address; pass --allow-remote to listen on it",
            a.listen
        );
    }
    if a.duration.is_zero() || a.duration > MAX_DURATION {
        bail!("--duration must be between 1ms and 24h");
    }
    if a.delay > MAX_DELAY {
        bail!("--delay must be at most 1h");
    }
    if a.expect == Some(0) {
        bail!("--expect must be at least 1");
    }
    watchdog(a.duration + Duration::from_secs(30));
    receive(a)
}

/// Runs the sink on this thread until it stops, and reports.
fn receive(a: SinkArgs) -> anyhow::Result<SinkReport> {
    let me = Proc::new("self")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    // Connection tasks still open when this returns are dropped with `local`: sockets close.
    local.block_on(&rt, serve(a, me))
}

async fn serve(a: SinkArgs, me: Proc) -> anyhow::Result<SinkReport> {
    let listener = TcpListener::bind(a.listen)
        .await
        .with_context(|| format!("listening on {}", a.listen))?;
    let addr = listener.local_addr()?;
    let code = match a.reply {
        Reply::Status(c) => c,
        Reply::Hang => 0,
    };
    let sink = Rc::new(Sink {
        reply: a.reply,
        delay: a.delay,
        expect: a.expect,
        answer: httpd::response(code, false),
        answer_close: httpd::response(code, true),
        counts: RefCell::new(Counts::new()),
        done: Notify::new(),
    });
    eprintln!(
        "ringcast-loadtest webhook-sink: listening on {addr}, reply {} after {}, for {}{}",
        a.reply,
        humantime::format_duration(a.delay),
        humantime::format_duration(a.duration),
        a.expect
            .map(|n| format!(" or until {n} distinct messages"))
            .unwrap_or_default()
    );
    let t0 = Instant::now();
    let cpu0 = me.sample().ok();
    let tty = std::io::stderr().is_terminal();
    tokio::task::spawn_local(accept(listener, sink.clone()));
    tokio::task::spawn_local(show_progress(sink.clone(), t0, tty));
    let stopped_by = tokio::select! {
        _ = tokio::time::sleep(a.duration) => "duration",
        _ = sink.done.notified() => "expect",
    };
    let elapsed = t0.elapsed();
    let cpu1 = me.sample().ok();
    if tty {
        eprintln!();
    }

    let c = sink.counts.borrow();
    let active = match (c.first, c.last) {
        (Some(f), Some(l)) => l.duration_since(f).as_secs_f64(),
        _ => 0.0,
    };
    let per_sec = |n: u64| if active > 0.0 { n as f64 / active } else { 0.0 };
    let distinct = c.distinct();
    let mut r = SinkReport {
        mode: "webhook-sink",
        listen: addr.to_string(),
        reply: a.reply.to_string(),
        delay_ms: a.delay.as_secs_f64() * 1000.0,
        duration_s: a.duration.as_secs_f64(),
        elapsed_s: elapsed.as_secs_f64(),
        stopped_by,
        expect: a.expect,
        connections: c.connections,
        requests: c.requests,
        bytes: c.bytes,
        distinct_messages: distinct,
        repeats: c.requests - c.no_message_id - distinct,
        no_message_id: c.no_message_id,
        no_ts: c.no_ts,
        bad_requests: c.bad,
        active_s: active,
        requests_per_sec: per_sec(c.requests),
        messages_per_sec: per_sec(distinct),
        latency_ms: Pct::of(&c.latency),
        first_error: c.first_error.clone(),
        ..SinkReport::default()
    };
    if let (Some(x), Some(y)) = (cpu0, cpu1) {
        // Idle outside the active window: its CPU time is spent within it.
        let wall = active.max(1e-3).min(elapsed.as_secs_f64());
        r.client_cpu_pct = me.cpu_secs(&x, &y) / wall * 100.0;
        r.client_rss_bytes = y.rss_bytes;
    }
    if r.requests == 0 {
        r.warnings.push(format!(
            "no request arrived: publish with --webhook-url http://{addr}/... on a channel \
             pattern created with it (fresh broker or fresh --channel-prefix)"
        ));
    }
    if let Some(n) = a.expect
        && distinct < n
    {
        r.warnings.push(format!(
            "--expect {n}: only {distinct} distinct messages arrived within --duration"
        ));
    }
    if r.bad_requests > 0 {
        r.warnings.push(format!(
            "{} requests were malformed and refused",
            r.bad_requests
        ));
    }
    if r.client_cpu_pct > BUSY_PCT {
        r.warnings.push(format!(
            "the sink used {:.0} % CPU: the rates may be its own limit, not the broker's",
            r.client_cpu_pct
        ));
    }
    r.ok = match a.expect {
        Some(n) => distinct >= n,
        None => r.requests > 0,
    };
    Ok(r)
}

async fn accept(listener: TcpListener, sink: Rc<Sink>) {
    loop {
        match listener.accept().await {
            Ok((s, _)) => {
                sink.counts.borrow_mut().connections += 1;
                tokio::task::spawn_local(connection(s, sink.clone()));
            }
            Err(e) => {
                // Out of descriptors and the like: note it, let connections end, go on.
                sink.counts.borrow_mut().error(format!("accept: {e}"));
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// One keep-alive connection: read a request, count it, answer (or not), repeat.
async fn connection(mut s: TcpStream, sink: Rc<Sink>) {
    let _ = s.set_nodelay(true);
    let mut rd = Reader::default();
    loop {
        let req = match rd.next(&mut s).await {
            Ok(Next::Request(r)) => r,
            Ok(Next::Eof) | Err(_) => return,
            Ok(Next::Bad(code, why)) => {
                {
                    let mut c = sink.counts.borrow_mut();
                    c.bad += 1;
                    c.error(format!("bad request ({code}): {why}"));
                }
                let _ = s.write_all(&httpd::response(code, true)).await;
                return;
            }
        };
        sink.record(&req, rd.body(&req));
        if sink.reply == Reply::Hang {
            // Never answer; keep reading so that the client's close ends this task.
            continue;
        }
        if !sink.delay.is_zero() {
            tokio::time::sleep(sink.delay).await;
        }
        let close = req.head.close;
        let answer = if close {
            &sink.answer_close
        } else {
            &sink.answer
        };
        if s.write_all(answer).await.is_err() || close {
            return;
        }
    }
}

/// The progress line, once a second.
async fn show_progress(sink: Rc<Sink>, t0: Instant, tty: bool) {
    let second = Duration::from_secs(1);
    let mut tick = tokio::time::interval_at((t0 + second).into(), second);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut last_req, mut last_msg) = (0, 0);
    loop {
        tick.tick().await;
        let c = sink.counts.borrow();
        let (req, msg) = (c.requests, c.distinct());
        progress::emit(
            tty,
            &format!(
                "[webhook-sink {:>5.1}s] conns {} requests {req} (+{}/s) messages {msg} (+{}/s) \
                 repeats {} bad {}",
                t0.elapsed().as_secs_f64(),
                c.connections,
                req - last_req,
                msg - last_msg,
                req - c.no_message_id - msg,
                c.bad
            ),
        );
        (last_req, last_msg) = (req, msg);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_ids_are_packed() {
        let a = uuid_bits("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b").expect("uuid");
        assert_eq!(a, 0x0190a1b2_c3d4_7e5f_8a9b_0c1d2e3f4a5b);
        assert_eq!(uuid_bits("0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B"), Some(a));
        assert_eq!(uuid_bits("0190a1b2c3d47e5f8a9b0c1d2e3f4a5b"), None);
        assert_eq!(uuid_bits("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5g"), None);
        let mut c = Counts::new();
        assert!(c.insert("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"));
        assert!(!c.insert("0190A1B2-C3D4-7E5F-8A9B-0C1D2E3F4A5B"));
        assert!(c.insert("not-a-uuid"));
        assert!(!c.insert("not-a-uuid"));
        assert_eq!(c.distinct(), 2);
    }

    /// The sink end to end on a loopback port: two deliveries of one message and one of
    /// another over one keep-alive connection, answered 503; latency from the payload's ts.
    #[test]
    fn counts_requests_messages_and_latency() {
        use std::io::{Read, Write};

        let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("free port");
        let addr = probe.local_addr().expect("addr");
        drop(probe);
        let sink = std::thread::spawn(move || {
            receive(SinkArgs {
                listen: addr,
                reply: Reply::Status(503),
                delay: Duration::ZERO,
                duration: Duration::from_secs(10),
                expect: Some(2),
                json: false,
                allow_remote: false,
            })
        });
        let mut s = (0..200)
            .find_map(|_| {
                std::thread::sleep(Duration::from_millis(10));
                std::net::TcpStream::connect(addr).ok()
            })
            .expect("sink listens");
        let sent = now_nanos() - 5_000_000; // 5 ms ago
        let mut ask = |id: &str| {
            let body = format!(
                r#"{{"messageId":"{id}","channelId":"c","channelName":"lt:1:0","event":"e","payload":{{"ts":{sent},"seq":1,"pad":""}},"senderId":"u","senderType":"user","timestamp":"t"}}"#
            );
            let req = format!(
                "POST /hook HTTP/1.1\r\nHost: x\r\nX-InsForge-Message-ID: {id}\r\n\
                 Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            s.write_all(req.as_bytes()).expect("write");
            let mut buf = [0u8; 256];
            let n = s.read(&mut buf).unwrap_or(0);
            String::from_utf8_lossy(&buf[..n]).to_string()
        };
        let a = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b";
        assert!(ask(a).starts_with("HTTP/1.1 503 "));
        assert!(ask(a).starts_with("HTTP/1.1 503 "), "keep-alive");
        ask("0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5c");
        let r = sink.join().expect("thread").expect("report");
        assert!(r.ok);
        assert_eq!(r.stopped_by, "expect");
        assert_eq!((r.requests, r.distinct_messages, r.repeats), (3, 2, 1));
        assert_eq!(r.connections, 1);
        assert_eq!(r.latency_ms.samples, 2);
        assert!(r.latency_ms.p50 >= 5.0, "{:?}", r.latency_ms);
    }
}
