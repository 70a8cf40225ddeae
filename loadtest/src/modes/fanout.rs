//! `fanout` and `publish`: subscribers (none for `publish`) spread over channels, publishers
//! at a rate; connect everyone, run for the duration, drain acks and deliveries, then judge
//! every subscriber's offsets against the highest acknowledged offset of its channel.
//! With `--webhook-url` the channels carry webhook URLs (count them with `webhook-sink`).
//! With `--protocol socketio|mixed` all or half of the subscribers speak Socket.IO
//! (`sio_subscriber.rs`); their deliveries carry no offset, so each is judged per publisher of
//! its channel against that publisher's highest acknowledged `seq`, and the report splits
//! the counts per protocol.

use std::{
    cell::RefCell,
    rc::Rc,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::{Duration, Instant},
};

use anyhow::bail;
use tokio::sync::Semaphore;

use super::{
    Sampler, Snap, fill_common, merge, prepare,
    publisher::{self, PubCfg},
    sio_subscriber, subscriber, take_stats, watchdog,
};
use crate::{
    cli::{Common, FanoutArgs, Protocol, PublishArgs},
    conn::Net,
    progress::Progress,
    report::{Pct, ProtoReport, Report, SecondRow},
    runner,
    shared::{Phase, Shared, wait_until},
    stats::ThreadStats,
};

/// The default per-connection publish limit of the broker (`[websocket] publish_rate`).
const BROKER_DEFAULT_RATE: f64 = 1000.0;
const LIMIT_HINT: &str = "The broker allows 1000 publishes/s per connection by default \
     (burst 2000): use more --publishers, or start it with `ringcast serve --config F` where F \
     sets [websocket] publish_rate, publish_burst, publish_bytes_rate and publish_bytes_burst (see loadtest/README.md)";

#[derive(Debug, Clone, Copy)]
struct Params {
    subs: usize,
    channels: usize,
    publishers: usize,
    rate: f64,
    size: usize,
    window: u64,
    duration: Duration,
    drain: Duration,
    threads: usize,
    concurrency: usize,
    protocol: Protocol,
}

impl Params {
    /// Whether subscriber `i` speaks Socket.IO. Mixed: every other round of `channels`
    /// subscribers, so on each channel they alternate raw, socketio, raw.. in join order, and
    /// neither protocol is always first in the broker's fan-out.
    fn sio(&self, i: usize) -> bool {
        match self.protocol {
            Protocol::Raw => false,
            Protocol::Socketio => true,
            Protocol::Mixed => (i / self.channels) % 2 == 1,
        }
    }

    /// Subscribers speaking raw and Socket.IO.
    fn split(&self) -> (usize, usize) {
        let sio = (0..self.subs).filter(|&i| self.sio(i)).count();
        (self.subs - sio, sio)
    }
}

pub fn run_fanout(a: FanoutArgs) -> anyhow::Result<Report> {
    let p = Params {
        subs: a.subs,
        channels: a.channels,
        publishers: a.publishers,
        rate: a.rate,
        size: a.size,
        window: a.window,
        duration: a.duration,
        drain: a.drain,
        threads: a.common.threads,
        concurrency: a.common.concurrency,
        protocol: a.protocol,
    };
    drive("fanout", &a.common, p, &a.webhook_urls)
}

pub fn run_publish(a: PublishArgs) -> anyhow::Result<Report> {
    let p = Params {
        subs: 0,
        channels: a.channels,
        publishers: a.publishers,
        rate: a.rate,
        size: a.size,
        window: a.window,
        duration: a.duration,
        drain: a.drain,
        threads: a.common.threads,
        concurrency: a.common.concurrency,
        protocol: Protocol::Raw,
    };
    drive("publish", &a.common, p, &a.webhook_urls)
}

fn drive(
    mode: &'static str,
    c: &Common,
    p: Params,
    webhook_urls: &[String],
) -> anyhow::Result<Report> {
    if p.channels == 0 || p.publishers == 0 {
        bail!("--channels and --publishers must be at least 1");
    }
    if !p.rate.is_finite() || p.rate < 0.0 || p.window == 0 {
        bail!("--rate must be >= 0 and --window >= 1");
    }
    if p.duration.is_zero() || p.duration > Duration::from_secs(3600) {
        bail!("--duration must be between 1ms and 1h");
    }
    let setup = prepare(c, p.subs + p.publishers, p.channels, webhook_urls)?;
    let mut warnings = Vec::new();
    let (raw_subs, sio_subs) = p.split();
    if p.protocol == Protocol::Mixed && (raw_subs == 0 || sio_subs == 0) {
        warnings.push(format!(
            "--protocol mixed with {} subscriber(s) on {} channel(s): {raw_subs} raw, \
             {sio_subs} socketio (socketio takes every other round of --channels subscribers; \
             use --subs >= 2 x --channels)",
            p.subs, p.channels
        ));
    }
    if p.rate > BROKER_DEFAULT_RATE {
        warnings.push(format!(
            "--rate {} is above the broker's default limit. {LIMIT_HINT}",
            p.rate
        ));
    }
    watchdog(c.connect_timeout + p.duration + p.drain * 2 + Duration::from_secs(30));
    let shared = setup.shared.clone();
    let progress = Progress::start(mode, shared.clone());
    let net = setup.net.clone();
    let workers = runner::spawn(p.threads, move |tid| thread_main(net.clone(), tid, p))?;

    let all = (p.subs + p.publishers) as u64;
    let connect_deadline = Instant::now() + c.connect_timeout;
    wait_until(
        connect_deadline,
        || Shared::get(&shared.connected) + Shared::get(&shared.connect_failed) >= all,
        || {},
    );
    let mut sampler = Sampler::new(setup.server.as_ref());
    let snap0 = Snap::take(&setup);
    let run_start = Instant::now();
    let until = run_start + p.duration;
    shared.set_phase(Phase::Run { until });
    wait_until(
        until + p.drain,
        || Shared::get(&shared.pubs_done) >= p.publishers as u64,
        || sampler.tick(),
    );
    let pub_end = Instant::now();
    let targets: Vec<u64> = shared.max_offset.iter().map(|o| o.load(Relaxed)).collect();
    let seqs = shared.seq_targets(p.publishers);
    shared.set_phase(Phase::Drain {
        targets: Arc::new(targets.clone()),
        seqs: Arc::new(seqs.clone()),
    });
    wait_until(
        Instant::now() + p.drain,
        || Shared::get(&shared.subs_done) >= p.subs as u64,
        || sampler.tick(),
    );
    let end = Instant::now();
    let snap1 = Snap::take(&setup);
    shared.set_phase(Phase::Stop);
    let st = merge(workers.join()?);
    progress.stop();

    let mut r = Report {
        mode,
        protocol: (mode == "fanout").then(|| p.protocol.as_str()),
        subs: p.subs,
        publishers: p.publishers,
        channels: p.channels,
        rate: p.rate,
        size: p.size,
        duration_s: p.duration.as_secs_f64(),
        webhook_urls: webhook_urls.to_vec(),
        warnings,
        ..Report::default()
    };
    fill_common(&mut r, &setup, &st, &snap0, &snap1);
    r.published = Shared::get(&shared.sent);
    r.acked = Shared::get(&shared.acked);
    r.rate_limited = Shared::get(&shared.rate_limited);
    r.publish_errors = Shared::get(&shared.publish_errors);
    r.publishes_per_sec = r.acked as f64 / pub_end.duration_since(run_start).as_secs_f64();
    r.ack_ms = Pct::of(&st.ack);
    r.delivered = Shared::get(&shared.delivered);
    let secs = end.duration_since(run_start).as_secs_f64();
    let by_seq = st.by_seq > 0;
    let mut raw = ProtoReport {
        protocol: "raw",
        subs: raw_subs,
        connected: st.raw_connected,
        disconnects: st.raw_disconnects,
        delivered: st.raw_delivered,
        unparsed: st.unparsed,
        order_check: if by_seq { "seq" } else { "offset" },
        deliveries_per_sec: st.raw_delivered as f64 / secs,
        latency_ms: Pct::of(&st.latency),
        ..ProtoReport::default()
    };
    let mut sio = ProtoReport {
        protocol: "socketio",
        subs: sio_subs,
        connected: st.sio.connected,
        disconnects: st.sio.disconnects,
        delivered: st.sio.delivered,
        unparsed: st.sio.unparsed,
        order_check: "publisher_seq",
        deliveries_per_sec: st.sio.delivered as f64 / secs,
        latency_ms: Pct::of(&st.sio.latency),
        misrouted: Some(st.sio.misrouted),
        presence_events: Some(st.sio.presence),
        pings: Some(st.sio.pings),
        ping_timeouts: Some(st.sio.ping_timeouts),
        ..ProtoReport::default()
    };
    for s in &st.subs {
        let (part, expected, lost, beyond) = match s.publisher {
            // Socket.IO: one result per publisher of the channel, by its seq.
            Some(j) => {
                let t = seqs.get(j).cloned().unwrap_or_default();
                let lost = s.lost_except(t.max, &t.refused);
                (&mut sio, t.owed(), lost, s.beyond(t.max))
            }
            None => {
                let t = targets.get(s.channel).copied().unwrap_or(0);
                (&mut raw, t, s.lost(t), s.beyond(t))
            }
        };
        part.expected += expected;
        part.lost += lost;
        part.duplicated += s.duplicated;
        part.reordered += s.reordered;
        part.beyond_acked += beyond;
    }
    for part in [&raw, &sio] {
        r.expected += part.expected;
        r.lost += part.lost;
        r.duplicated += part.duplicated;
        r.reordered += part.reordered;
        r.beyond_acked += part.beyond_acked;
        r.unparsed += part.unparsed;
    }
    r.deliveries_per_sec = r.delivered as f64 / secs;
    let mut latency = st.latency.clone();
    let _ = latency.add(&st.sio.latency);
    r.latency_ms = Pct::of(&latency);
    r.latency_by_second = st
        .per_second
        .series()
        .map(|(second, s)| SecondRow {
            second,
            delivered: s.count,
            over_10ms: s.late,
            max_ms: s.max_us as f64 / 1000.0,
            p50_ms: s.hist.quantile(0.5).unwrap_or(0) as f64 / 1000.0,
            p99_ms: s.hist.quantile(0.99).unwrap_or(0) as f64 / 1000.0,
        })
        .collect();
    if let (Some(proc), Some(a), Some(b)) = (&setup.server, snap0.server, snap1.server) {
        let msgs = if p.subs > 0 { r.delivered } else { r.acked };
        if msgs > 0 {
            r.server_cpu_us_per_msg = Some(proc.cpu_secs(&a, &b) * 1e6 / msgs as f64);
        }
        r.server_rss_peak_bytes = Some(sampler.peak.max(b.rss_bytes));
    }
    for (ch, t) in targets.iter().enumerate() {
        let acked = shared.acked_per_channel[ch].load(Relaxed);
        // With the seq fallback `t` is one publisher's ack count: no contiguity to check.
        if acked != *t && !by_seq {
            r.warnings.push(format!(
                "channel {ch}: highest acked offset {t} but {acked} acks (offsets not contiguous?)"
            ));
        }
    }
    r.order_check = Some(if raw_subs == 0 && sio_subs > 0 {
        sio.order_check
    } else {
        raw.order_check
    });
    // Only raw subscribers are judged by the order key; `publish` mode has none to mislead,
    // Socket.IO subscribers follow each publisher apart.
    if by_seq && raw_subs > 0 && p.publishers > p.channels {
        let w = format!(
            "order_check=seq: the server's frames carry no offsets, so loss and order are judged \
             by each publisher's payload seq and ack count; with {} publishers on {} channel(s) \
             several publishers share a channel and the lost/duplicated/reordered counts are \
             not valid (use --publishers <= --channels)",
            p.publishers, p.channels
        );
        eprintln!("ringcast-loadtest: warning: {w}");
        r.warnings.push(w);
    }
    if r.rate_limited > 0 {
        r.warnings.push(format!(
            "{} publishes were refused with RATE_LIMITED. {LIMIT_HINT}",
            r.rate_limited
        ));
    }
    let sio_clean = st.sio.misrouted == 0 && st.sio.ping_timeouts == 0;
    let clean = r.connect_failures == 0 && r.disconnects == 0 && r.publish_errors == 0 && sio_clean;
    r.ok = clean
        && if p.subs > 0 {
            r.lost == 0 && r.duplicated == 0 && r.reordered == 0 && r.expected > 0
        } else {
            r.acked > 0
        };
    r.by_protocol = [raw, sio].into_iter().filter(|x| x.subs > 0).collect();
    Ok(r)
}

async fn thread_main(net: Arc<Net>, tid: usize, p: Params) -> ThreadStats {
    let stats = Rc::new(RefCell::new(ThreadStats::default()));
    let sem = Rc::new(Semaphore::new((p.concurrency / p.threads).max(1)));
    let cfg = Rc::new(PubCfg {
        rate: p.rate,
        publishers: p.publishers,
        size: p.size,
        window: p.window,
        drain: p.drain,
        tag: p.split().1 > 0,
    });
    let mut tasks = Vec::new();
    for i in (tid..p.subs).step_by(p.threads) {
        let ch = i % p.channels;
        tasks.push(if p.sio(i) {
            tokio::task::spawn_local(sio_subscriber::run(
                net.clone(),
                i,
                ch,
                p.channels,
                p.publishers,
                sem.clone(),
                stats.clone(),
            ))
        } else {
            tokio::task::spawn_local(subscriber::run(
                net.clone(),
                i,
                ch,
                sem.clone(),
                stats.clone(),
            ))
        });
    }
    for j in (tid..p.publishers).step_by(p.threads) {
        tasks.push(tokio::task::spawn_local(publisher::run(
            net.clone(),
            p.subs + j,
            j,
            j % p.channels,
            cfg.clone(),
            sem.clone(),
            stats.clone(),
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    take_stats(stats)
}
