//! `presence`: presence join/leave churn over Socket.IO on one broker. `--watchers` clients
//! subscribe to every one of `--channels` fresh channels and count the `presence:join` /
//! `presence:leave` events they get; `--churners` clients, each a user of its own (JWT sub
//! `lt-churn-<i>`, so every subscribe is a real join), loop on channel `i % channels`:
//! `42<n>["realtime:subscribe",..]`, wait for the ack (timed), `42["realtime:unsubscribe",..]`,
//! at `--rate` cycles per second all together (0: as fast as the acks allow).
//!
//! After `--duration` each churner finishes the subscribe in flight (bounded by `--drain`)
//! and unsubscribes, so that it ends unsubscribed; then the watchers get up to `--drain` more
//! for the last events. Judged per watcher and churner: every acknowledged subscribe owes
//! each watcher one join and every unsubscribe one leave (`missing`, `extra`), and a
//! churner's events must alternate join, leave, join.. at each watcher (`out_of_order`).

use std::{
    cell::RefCell,
    rc::Rc,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::bail;
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::{Snap, prepare, take_stats, watchdog};
use crate::{
    cli::PresenceArgs,
    conn::Net,
    procstat::Machine,
    progress::Progress,
    rawws::{Frame, RawWs},
    report::{Outcome, Pct},
    runner,
    shared::{DoneGuard, Phase, Shared, wait_until},
    sio::{self, Event, Packet},
    stats::{ThreadStats, micros_hist},
};

/// A churner's JWT sub (its presence id) is this plus its index.
const CHURN_SUB: &str = "lt-churn-";

/// After the watchers hold every expected event: how long to keep reading for extra ones.
const EXTRA_GRACE: Duration = Duration::from_millis(100);

#[derive(Debug, Default, Serialize)]
pub struct PresenceReport {
    pub mode: &'static str,
    pub ok: bool,
    pub urls: Vec<String>,
    pub threads: usize,
    pub churners: usize,
    pub watchers: usize,
    pub channels: usize,
    /// Cycles per second asked for, all churners together (0 = as fast as acks allow).
    pub rate: f64,
    pub duration_s: f64,
    pub connected: u64,
    pub connect_failures: u64,
    pub connect_ms: Pct,
    /// Connections that ended before the run did.
    pub disconnects: u64,
    /// `realtime:subscribe` sent, answered ok (= cycles: each is followed by an
    /// unsubscribe), refused (`ok:false`), and not answered within --drain after the run.
    pub subscribes: u64,
    pub cycles: u64,
    pub refused: u64,
    pub unanswered: u64,
    /// Acks that came after the churner had given up on them.
    pub late_acks: u64,
    /// Cycles over the run (its start to the last churner's last ack).
    pub cycles_per_sec: f64,
    /// `realtime:subscribe` sent to its ack read.
    pub subscribe_ack_ms: Pct,
    /// The churners' presence events the watchers received, and per second of the run.
    pub watcher_events: u64,
    pub watcher_events_per_sec: f64,
    /// What the watchers were owed: every cycle's join and leave, once per watcher of its
    /// channel (every watcher is on every channel).
    pub expected_joins: u64,
    pub expected_leaves: u64,
    pub seen_joins: u64,
    pub seen_leaves: u64,
    /// Per watcher and churner, owed and not received / received and not owed.
    pub missing_joins: u64,
    pub missing_leaves: u64,
    pub extra_joins: u64,
    pub extra_leaves: u64,
    /// (watcher, churner) pairs with any of those.
    pub mismatched_pairs: u64,
    /// A churner's join after its join, or leave after its leave (or before any join), at a
    /// watcher.
    pub out_of_order: u64,
    /// A churner's event with another channel than the churner's in `meta.channel`.
    pub misrouted: u64,
    /// Presence events the harness could not read (another shape).
    pub unparsed: u64,
    /// Presence events of the watchers themselves (while they subscribed; not counted).
    pub other_presence: u64,
    /// (watcher, churner) pairs whose last event at the watcher is a join: churners that
    /// watcher still believes present, though every churner ends unsubscribed.
    pub still_joined: u64,
    /// Presence events the churners got from each other while subscribed (the rest of the
    /// broker's presence fan-out), and Engine.IO pings answered by anyone.
    pub churner_events: u64,
    pub pings: u64,
    /// Time from the end of the run until the watchers held what they were owed (or gave up).
    pub drain_s: f64,
    pub server_cpu_pct: Option<f64>,
    pub server_cpu_sys_pct: Option<f64>,
    /// Broker CPU time per cycle (subscribe + unsubscribe and the presence events they make).
    pub server_cpu_us_per_cycle: Option<f64>,
    pub server_rss_bytes: Option<u64>,
    pub client_cpu_pct: f64,
    pub client_rss_bytes: u64,
    pub machine_cpu_pct: Option<f64>,
    pub other_cpu_pct: Option<f64>,
    pub machine_cores: usize,
    pub first_error: Option<String>,
    pub warnings: Vec<String>,
}

impl Outcome for PresenceReport {
    fn ok(&self) -> bool {
        self.ok
    }

    fn print_table(&self) {
        let rate = if self.rate == 0.0 {
            "max".to_string()
        } else {
            format!("{}", self.rate)
        };
        println!(
            "ringcast-loadtest {}: {:.1} s, {} churners @ {rate} cycles/s, {} watchers on each \
             of {} channel(s)",
            self.mode, self.duration_s, self.churners, self.watchers, self.channels
        );
        let row = |k: &str, v: String| println!("  {k:<17}{v}");
        row(
            "target",
            format!("{} ({} thread(s))", self.urls.join(" "), self.threads),
        );
        row(
            "connections",
            format!(
                "{} ok, {} failed, disconnects {}",
                self.connected, self.connect_failures, self.disconnects
            ),
        );
        row("connect ms", self.connect_ms.line());
        row(
            "cycles",
            format!(
                "{} ({:.0}/s); subscribes {} sent, {} refused, {} unanswered, {} late acks",
                self.cycles,
                self.cycles_per_sec,
                self.subscribes,
                self.refused,
                self.unanswered,
                self.late_acks
            ),
        );
        row("subscribe ack ms", self.subscribe_ack_ms.line());
        row(
            "watcher events",
            format!(
                "{} ({:.0}/s); joins {} of {} owed, leaves {} of {}",
                self.watcher_events,
                self.watcher_events_per_sec,
                self.seen_joins,
                self.expected_joins,
                self.seen_leaves,
                self.expected_leaves
            ),
        );
        row(
            "missing/extra",
            format!(
                "joins {} / {}, leaves {} / {} ({} watcher-churner pairs); still joined {}, out \
                 of order {}, misrouted {}, unparsed {}",
                self.missing_joins,
                self.extra_joins,
                self.missing_leaves,
                self.extra_leaves,
                self.mismatched_pairs,
                self.still_joined,
                self.out_of_order,
                self.misrouted,
                self.unparsed
            ),
        );
        row(
            "other",
            format!(
                "{} churner-to-churner events, {} watcher joins, {} pings; drain {:.3} s",
                self.churner_events, self.other_presence, self.pings, self.drain_s
            ),
        );
        if let Some(c) = self.server_cpu_pct {
            let per = self
                .server_cpu_us_per_cycle
                .map(|u| format!(" ({u:.2} µs CPU per cycle)"))
                .unwrap_or_default();
            let sys = self.server_cpu_sys_pct.unwrap_or(0.0);
            let rss = self
                .server_rss_bytes
                .map(|b| format!(", RSS {:.1} MiB", b as f64 / (1 << 20) as f64))
                .unwrap_or_default();
            row(
                "broker CPU",
                format!("{c:.1} % ({sys:.1} % kernel){per}{rss}"),
            );
        }
        row(
            "harness",
            format!(
                "CPU {:.1} %, RSS {:.1} MiB",
                self.client_cpu_pct,
                self.client_rss_bytes as f64 / (1 << 20) as f64
            ),
        );
        if let Some(m) = self.machine_cpu_pct {
            row(
                "machine CPU",
                format!(
                    "{m:.1} % of {} % ({} cores); not broker/harness: {:.1} %",
                    self.machine_cores * 100,
                    self.machine_cores,
                    self.other_cpu_pct.unwrap_or(0.0)
                ),
            );
        }
        if let Some(e) = &self.first_error {
            row("first error", e.clone());
        }
        for w in &self.warnings {
            row("warning", w.clone());
        }
        row("result", if self.ok { "OK" } else { "FAIL" }.into());
    }

    fn print_json(&self) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string(self)?);
        Ok(())
    }
}

/// What every connection task of the run needs (shared by the threads).
struct Cfg {
    churners: usize,
    watchers: usize,
    /// The run's channel names, `PREFIX:RUN:k`.
    names: Vec<String>,
    /// `PREFIX:RUN:`: a presence event's `meta.channel` minus this is the channel index.
    chan_prefix: String,
    /// Per churner: time between its subscribes (`churners / rate`); `None`: back to back.
    interval: Option<Duration>,
    /// Cycles per second, all churners together (0: back to back); churner `i` starts
    /// `i / rate` into the run (evenly phased).
    rate: f64,
    duration: Duration,
    drain: Duration,
    /// Per churner: ok acks (the joins owed to each watcher) and unsubscribes sent after
    /// them (the leaves owed).
    joins_owed: Vec<AtomicU64>,
    leaves_owed: Vec<AtomicU64>,
    /// Watchers subscribed to every channel, and those holding every event owed (drain).
    watchers_ready: AtomicU64,
    watchers_complete: AtomicU64,
}

impl Cfg {
    fn new(churners: usize, watchers: usize, names: Vec<String>, chan_prefix: String) -> Self {
        let zeros = || (0..churners).map(|_| AtomicU64::new(0)).collect();
        Self {
            churners,
            watchers,
            chan_prefix,
            interval: None,
            rate: 0.0,
            duration: Duration::ZERO,
            drain: Duration::ZERO,
            joins_owed: zeros(),
            leaves_owed: zeros(),
            names,
            watchers_ready: AtomicU64::new(0),
            watchers_complete: AtomicU64::new(0),
        }
    }

    /// What each watcher is owed so far: joins per churner, then leaves per churner.
    fn owed(&self) -> Vec<u64> {
        let get = |v: &[AtomicU64]| v.iter().map(|a| a.load(Relaxed)).collect::<Vec<_>>();
        let mut v = get(&self.joins_owed);
        v.extend(get(&self.leaves_owed));
        v
    }

    /// The channel index in a presence event's `meta.channel`, if it is one of the run's.
    fn channel_of(&self, name: &str) -> Option<usize> {
        name.strip_prefix(self.chan_prefix.as_str())?
            .parse()
            .ok()
            .filter(|&k| k < self.names.len())
    }

    /// The churner index of a presence id, if it is one of this run's churners.
    fn churner_of(&self, presence_id: &str) -> Option<usize> {
        churner_index(presence_id).filter(|&i| i < self.churners)
    }
}

/// `lt-churn-<i>` → `i`.
fn churner_index(presence_id: &str) -> Option<usize> {
    let digits = presence_id.strip_prefix(CHURN_SUB)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// One watcher's counts.
#[derive(Debug, Clone, Default)]
struct Watch {
    /// Per churner: its joins and leaves received.
    joins: Vec<u64>,
    leaves: Vec<u64>,
    /// Churners' events counted (joins and leaves).
    counted: u64,
    /// Per churner: its last event here (0 none, 1 join, 2 leave).
    last: Vec<u8>,
    out_of_order: u64,
    misrouted: u64,
    unparsed: u64,
    other: u64,
}

impl Watch {
    /// Holds at least what it is `owed` (joins per churner, then leaves per churner;
    /// `owed_total` their sum, checked first).
    fn holds(&self, owed: &[u64], owed_total: u64) -> bool {
        let n = self.joins.len();
        self.counted >= owed_total
            && owed.len() == 2 * n
            && self.joins.iter().zip(&owed[..n]).all(|(a, b)| a >= b)
            && self.leaves.iter().zip(&owed[n..]).all(|(a, b)| a >= b)
    }

    /// Churners whose last event here is a join (still members, as far as it knows).
    fn joined(&self) -> u64 {
        self.last.iter().filter(|&&s| s == 1).count() as u64
    }

    fn new(churners: usize) -> Self {
        Self {
            joins: vec![0; churners],
            leaves: vec![0; churners],
            last: vec![0; churners],
            ..Self::default()
        }
    }

    /// One presence event's array (`["presence:join", {..}]`). True if it is a churner's
    /// event on its own channel (counted).
    fn observe(&mut self, json: &[u8], cfg: &Cfg) -> bool {
        let Some(p) = sio::presence(json) else {
            self.unparsed += 1;
            return false;
        };
        let Some(i) = cfg.churner_of(p.presence_id) else {
            self.other += 1;
            return false;
        };
        let k = i % cfg.names.len();
        if cfg.channel_of(p.channel) != Some(k) {
            self.misrouted += 1;
            return false;
        }
        let (count, state, in_order) = if p.join {
            (&mut self.joins[i], 1, self.last[i] != 1)
        } else {
            (&mut self.leaves[i], 2, self.last[i] == 1)
        };
        *count += 1;
        self.counted += 1;
        self.out_of_order += u64::from(!in_order);
        self.last[i] = state;
        true
    }
}

/// One thread's results.
struct Out {
    ack: Histogram<u64>,
    subscribes: u64,
    refused: u64,
    unanswered: u64,
    late_acks: u64,
    churner_events: u64,
    pings: u64,
    /// When each churner got its last ack.
    last_ack: Option<Instant>,
    watches: Vec<Watch>,
}

impl Out {
    fn new() -> Self {
        Self {
            ack: micros_hist(),
            subscribes: 0,
            refused: 0,
            unanswered: 0,
            late_acks: 0,
            churner_events: 0,
            pings: 0,
            last_ack: None,
            watches: Vec::new(),
        }
    }

    fn merge(&mut self, o: Out) {
        let _ = self.ack.add(&o.ack);
        self.subscribes += o.subscribes;
        self.refused += o.refused;
        self.unanswered += o.unanswered;
        self.late_acks += o.late_acks;
        self.churner_events += o.churner_events;
        self.pings += o.pings;
        self.last_ack = self.last_ack.max(o.last_ack);
        self.watches.extend(o.watches);
    }
}

/// The watchers' counts against what they were owed.
#[derive(Debug, Default, PartialEq, Eq)]
struct Verdict {
    seen_joins: u64,
    seen_leaves: u64,
    missing_joins: u64,
    missing_leaves: u64,
    extra_joins: u64,
    extra_leaves: u64,
    mismatched_pairs: u64,
}

/// Every watcher is owed `joins_owed[i]` joins and `leaves_owed[i]` leaves of churner `i`.
fn judge(watches: &[Watch], joins_owed: &[u64], leaves_owed: &[u64]) -> Verdict {
    let mut v = Verdict::default();
    for w in watches {
        for (i, (&jo, &lo)) in joins_owed.iter().zip(leaves_owed).enumerate() {
            let (j, l) = (w.joins[i], w.leaves[i]);
            v.mismatched_pairs += u64::from(j != jo || l != lo);
            v.seen_joins += j;
            v.seen_leaves += l;
            v.missing_joins += jo.saturating_sub(j);
            v.extra_joins += j.saturating_sub(jo);
            v.missing_leaves += lo.saturating_sub(l);
            v.extra_leaves += l.saturating_sub(lo);
        }
    }
    v
}

pub fn run(a: PresenceArgs) -> anyhow::Result<PresenceReport> {
    if a.churners == 0 || a.channels == 0 {
        bail!("--churners and --channels must be at least 1");
    }
    if !a.rate.is_finite() || a.rate < 0.0 {
        bail!("--rate must be 0 (as fast as acks allow) or a positive number of cycles/s");
    }
    if a.duration.is_zero() || a.duration > Duration::from_secs(3600) {
        bail!("--duration must be between 1ms and 1h");
    }
    if a.drain > Duration::from_secs(60) {
        bail!("--drain must be at most 60s");
    }
    let c = &a.common;
    let conns = a.churners + a.watchers;
    let setup = prepare(c, conns, a.channels, &[])?;
    watchdog(c.connect_timeout + a.duration + a.drain * 2 + Duration::from_secs(30));
    let shared = setup.shared.clone();
    let net = setup.net.clone();
    let cfg = Arc::new(Cfg {
        interval: (a.rate > 0.0).then(|| Duration::from_secs_f64(a.churners as f64 / a.rate)),
        rate: a.rate,
        duration: a.duration,
        drain: a.drain,
        ..Cfg::new(
            a.churners,
            a.watchers,
            (0..a.channels).map(|k| net.channel(k)).collect(),
            format!("{}:{}:", net.prefix, net.run_id),
        )
    });
    let progress = Progress::start("presence", shared.clone());
    let (threads, concurrency) = (setup.threads, setup.concurrency);
    let cfg2 = cfg.clone();
    let workers = runner::spawn(threads, move |tid| {
        thread_main(net.clone(), tid, threads, concurrency, cfg2.clone())
    })?;

    // Watchers and churners connect (watchers also subscribe); then the run.
    wait_until(
        Instant::now() + c.connect_timeout,
        || Shared::get(&shared.connected) + Shared::get(&shared.connect_failed) >= conns as u64,
        || {},
    );
    let snap0 = Snap::take(&setup);
    let start = Instant::now();
    let until = start + a.duration;
    shared.set_phase(Phase::Run { until });
    let churners = a.churners as u64;
    wait_until(
        until + a.drain + Duration::from_millis(200),
        || Shared::get(&shared.pubs_done) >= churners,
        || {},
    );
    let end = Instant::now();
    let snap1 = Snap::take(&setup);
    let seen_in_run = Shared::get(&shared.delivered);

    // Drain: until every watcher holds every event owed to it, of each churner (then a
    // little longer, for extra ones), at most --drain.
    let ready = cfg.watchers_ready.load(Relaxed);
    let owed = cfg.owed();
    shared.set_phase(Phase::Drain {
        targets: Arc::new(owed.clone()),
        seqs: Arc::new(Vec::new()),
    });
    let drain_end = end + a.drain;
    let held = wait_until(
        drain_end,
        || cfg.watchers_complete.load(Relaxed) >= ready,
        || {},
    );
    let drain_s = end.elapsed().as_secs_f64();
    if held {
        std::thread::sleep(EXTRA_GRACE.min(drain_end.saturating_duration_since(Instant::now())));
    }
    shared.set_phase(Phase::Stop);
    let results = workers.join()?;
    progress.stop();

    let mut connect = ThreadStats::default();
    let mut out = Out::new();
    for (t, o) in results {
        connect.merge(t);
        out.merge(o);
    }
    let (joins_owed, leaves_owed) = owed.split_at(a.churners);
    let v = judge(&out.watches, joins_owed, leaves_owed);
    let cycles: u64 = joins_owed.iter().sum();
    let run_end = out.last_ack.map_or(end, |t| t.max(until)).min(end);
    let run_s = run_end.duration_since(start).as_secs_f64().max(1e-9);
    let watched = out.watches.len() as u64;
    let mut r = PresenceReport {
        mode: "presence",
        urls: c.urls.clone(),
        threads,
        churners: a.churners,
        watchers: a.watchers,
        channels: a.channels,
        rate: a.rate,
        duration_s: a.duration.as_secs_f64(),
        connected: Shared::get(&shared.connected),
        connect_failures: Shared::get(&shared.connect_failed),
        connect_ms: Pct::of(&connect.connect),
        disconnects: Shared::get(&shared.disconnects),
        subscribes: out.subscribes,
        cycles,
        refused: out.refused,
        unanswered: out.unanswered,
        late_acks: out.late_acks,
        cycles_per_sec: cycles as f64 / run_s,
        subscribe_ack_ms: Pct::of(&out.ack),
        watcher_events: v.seen_joins + v.seen_leaves,
        watcher_events_per_sec: seen_in_run as f64 / end.duration_since(start).as_secs_f64(),
        expected_joins: cycles * watched,
        expected_leaves: leaves_owed.iter().sum::<u64>() * watched,
        seen_joins: v.seen_joins,
        seen_leaves: v.seen_leaves,
        missing_joins: v.missing_joins,
        missing_leaves: v.missing_leaves,
        extra_joins: v.extra_joins,
        extra_leaves: v.extra_leaves,
        mismatched_pairs: v.mismatched_pairs,
        out_of_order: out.watches.iter().map(|w| w.out_of_order).sum(),
        misrouted: out.watches.iter().map(|w| w.misrouted).sum(),
        unparsed: out.watches.iter().map(|w| w.unparsed).sum(),
        other_presence: out.watches.iter().map(|w| w.other).sum(),
        still_joined: out.watches.iter().map(Watch::joined).sum(),
        churner_events: out.churner_events,
        pings: out.pings,
        drain_s,
        first_error: shared.first_error(),
        ..PresenceReport::default()
    };
    if let (Some(p), Some(x), Some(y)) = (&setup.server, snap0.server, snap1.server) {
        r.server_cpu_pct = Some(p.cpu_pct(&x, &y));
        r.server_cpu_sys_pct = Some(p.sys_pct(&x, &y));
        r.server_rss_bytes = Some(y.rss_bytes);
        if cycles > 0 {
            r.server_cpu_us_per_cycle = Some(p.cpu_secs(&x, &y) * 1e6 / cycles as f64);
        }
    }
    if let (Some(x), Some(y)) = (snap0.me, snap1.me) {
        r.client_cpu_pct = setup.me.cpu_pct(&x, &y);
        r.client_rss_bytes = y.rss_bytes;
    }
    if let (Some(x), Some(y)) = (snap0.machine, snap1.machine) {
        let m = Machine::busy_pct(&x, &y);
        r.machine_cpu_pct = Some(m);
        r.other_cpu_pct = Some((m - r.client_cpu_pct - r.server_cpu_pct.unwrap_or(0.0)).max(0.0));
        r.machine_cores = y.cores;
    }
    if a.rate > 0.0 && r.cycles_per_sec < a.rate * 0.95 {
        r.warnings.push(format!(
            "{:.0} cycles/s of the {} asked for: a churner's cycle took longer than its \
             interval ({} churners / rate); use more --churners",
            r.cycles_per_sec, a.rate, a.churners
        ));
    }
    if watched < a.watchers as u64 {
        r.warnings.push(format!(
            "only {watched} of {} watchers were subscribed: the check covers those",
            a.watchers
        ));
    }
    if !held && owed.iter().any(|&n| n > 0) {
        r.warnings.push(format!(
            "the watchers did not get every event owed within --drain {:?}",
            a.drain
        ));
    }
    if Shared::get(&shared.server_errors) > 0 {
        r.warnings.push(format!(
            "{} realtime:error events from the broker",
            Shared::get(&shared.server_errors)
        ));
    }
    r.ok = r.connect_failures == 0
        && r.disconnects == 0
        && r.cycles > 0
        && r.refused == 0
        && r.unanswered == 0
        && r.late_acks == 0
        && r.missing_joins == 0
        && r.missing_leaves == 0
        && r.extra_joins == 0
        && r.extra_leaves == 0
        && r.out_of_order == 0
        && r.misrouted == 0
        && r.unparsed == 0
        && Shared::get(&shared.server_errors) == 0;
    Ok(r)
}

async fn thread_main(
    net: Arc<Net>,
    tid: usize,
    threads: usize,
    concurrency: usize,
    cfg: Arc<Cfg>,
) -> (ThreadStats, Out) {
    let stats = Rc::new(RefCell::new(ThreadStats::default()));
    let out = Rc::new(RefCell::new(Out::new()));
    let sem = Rc::new(Semaphore::new((concurrency / threads).max(1)));
    let mut tasks = Vec::new();
    // Connection idx: watchers 0..W, then churners W..W+N.
    for idx in (tid..cfg.watchers + cfg.churners).step_by(threads) {
        let (net, cfg, sem, stats, out) = (
            net.clone(),
            cfg.clone(),
            sem.clone(),
            stats.clone(),
            out.clone(),
        );
        tasks.push(tokio::task::spawn_local(async move {
            if idx < cfg.watchers {
                watcher(net, idx, cfg, sem, stats, out).await;
            } else {
                churner(net, idx - cfg.watchers, cfg, sem, stats, out).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let o = Rc::try_unwrap(out)
        .map(RefCell::into_inner)
        .unwrap_or_else(|rc| std::mem::replace(&mut *rc.borrow_mut(), Out::new()));
    (take_stats(stats), o)
}

/// A connection's end before the run's: counted and reported.
fn dropped(shared: &Shared, why: String) {
    Shared::inc(&shared.disconnects);
    shared.error(why);
}

/// What a frame asks of the connection, read before anything is sent (the frame's bytes are
/// borrowed from the socket's buffer).
enum Act {
    None,
    Pong,
    Ack { id: u64, ok: Result<(), String> },
    End(String),
}

/// The frames of one read: each classified by `on`, and acted on by `act` (which may send).
/// Returns an error text when the connection is over.
async fn read_frames<S>(
    ws: &mut RawWs,
    f: anyhow::Result<Option<Frame>>,
    state: &mut S,
    mut on: impl FnMut(&mut S, &[u8]) -> Act,
    mut act: impl AsyncFnMut(&mut S, &mut RawWs, Act) -> anyhow::Result<()>,
) -> Result<(), String> {
    match f {
        Ok(Some(Frame::Text(r))) => {
            let mut r = Some(r);
            while let Some(range) = r {
                match on(state, ws.bytes(range)) {
                    Act::None => {}
                    Act::End(why) => return Err(why),
                    a => act(state, ws, a).await.map_err(|e| format!("{e:#}"))?,
                }
                r = ws.buffered_text();
            }
            Ok(())
        }
        Ok(Some(Frame::Ping(p))) => ws.send_pong(&p).await.map_err(|e| format!("{e:#}")),
        Ok(Some(Frame::Other)) => Ok(()),
        Ok(Some(Frame::Close(code))) => Err(format!("closed by server (code {code:?})")),
        Ok(None) => Err("connection closed".into()),
        Err(e) => Err(format!("{e:#}")),
    }
}

/// The packets every connection of this mode handles alike (`p`, parsed from `b`); `None`
/// for presence events and acks, which the caller reads.
fn common(p: &Packet<'_>, b: &[u8], shared: &Shared, pings: &mut u64) -> Option<Act> {
    match p {
        Packet::Ping => {
            *pings += 1;
            Some(Act::Pong)
        }
        Packet::Event(Event::Presence(_)) | Packet::Ack { .. } => None,
        Packet::Event(Event::Error(_)) => {
            Shared::inc(&shared.server_errors);
            shared.error(String::from_utf8_lossy(b).into_owned());
            Some(Act::None)
        }
        Packet::Disconnect => Some(Act::End("server sent Socket.IO DISCONNECT (41)".into())),
        Packet::Close => Some(Act::End("server sent Engine.IO close (1)".into())),
        _ => Some(Act::None),
    }
}

/// A watcher: subscribed to every channel, counts the churners' presence events until Stop.
async fn watcher(
    net: Arc<Net>,
    w: usize,
    cfg: Arc<Cfg>,
    sem: Rc<Semaphore>,
    stats: Rc<RefCell<ThreadStats>>,
    out: Rc<RefCell<Out>>,
) {
    let shared = &net.shared;
    let _done = DoneGuard(&shared.subs_done);
    let mut rx = shared.phase.subscribe();
    let Some((mut ws, _open)) = net
        .connect_sio_many(w, &format!("lt-watch-{w}"), &cfg.names, &sem, &stats)
        .await
    else {
        return;
    };
    cfg.watchers_ready.fetch_add(1, Relaxed);
    struct St {
        watch: Watch,
        pings: u64,
    }
    let mut st = St {
        watch: Watch::new(cfg.churners),
        pings: 0,
    };
    // Drain: what it is owed, and whether it has said it holds it.
    let mut owed: Option<(Arc<Vec<u64>>, u64)> = None;
    let mut complete = false;
    loop {
        match &*rx.borrow_and_update() {
            Phase::Stop => break,
            Phase::Drain { targets, .. } if owed.is_none() => {
                owed = Some((targets.clone(), targets.iter().sum()));
            }
            _ => {}
        }
        if !complete && owed.as_ref().is_some_and(|(o, n)| st.watch.holds(o, *n)) {
            complete = true;
            cfg.watchers_complete.fetch_add(1, Relaxed);
        }
        tokio::select! {
            biased;
            f = ws.next() => {
                let r = read_frames(
                    &mut ws,
                    f,
                    &mut st,
                    |st, b| {
                        let p = sio::parse(b);
                        match common(&p, b, shared, &mut st.pings) {
                            Some(a) => a,
                            None => {
                                if let Packet::Event(Event::Presence(json)) = p
                                    && st.watch.observe(json, &cfg)
                                {
                                    Shared::inc(&shared.delivered);
                                }
                                Act::None
                            }
                        }
                    },
                    async |_, ws, a| match a {
                        Act::Pong => ws.send_text(sio::PONG).await,
                        _ => Ok(()),
                    },
                )
                .await;
                if let Err(why) = r {
                    dropped(shared, format!("watcher {w}: {why}"));
                    break;
                }
            }
            r = rx.changed() => if r.is_err() { break },
        }
    }
    let mut o = out.borrow_mut();
    o.pings += st.pings;
    o.watches.push(st.watch);
}

/// Where a churner is in its loop.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Step {
    /// Connected, the run has not started.
    Waiting,
    /// Unsubscribed; the next subscribe goes at this time.
    Idle { at: Instant },
    /// Subscribe `id` sent at `sent`, no ack yet.
    Pending { id: u64, sent: Instant },
    /// The run is over for it: unsubscribed (or given up); it reads on until Stop.
    Done,
}

/// A churner's state between frames.
struct Churn<'a> {
    i: usize,
    ch: usize,
    cfg: &'a Cfg,
    shared: &'a Shared,
    step: Step,
    next_id: u64,
    /// The run's end (known from Run on).
    until: Option<Instant>,
    /// The last subscribe's scheduled time (fixed rate).
    sched: Option<Instant>,
    unsubscribe: String,
    out: Rc<RefCell<Out>>,
    pings: u64,
}

impl Churn<'_> {
    /// One text frame.
    fn on(&mut self, b: &[u8]) -> Act {
        let p = sio::parse(b);
        if let Some(a) = common(&p, b, self.shared, &mut self.pings) {
            return a;
        }
        match p {
            Packet::Event(Event::Presence(_)) => {
                self.out.borrow_mut().churner_events += 1;
                Act::None
            }
            Packet::Ack { id, data } => Act::Ack {
                id,
                ok: sio::subscribe_ack(data).map_err(|e| format!("{e:#}")),
            },
            _ => Act::None,
        }
    }

    async fn act(&mut self, ws: &mut RawWs, a: Act) -> anyhow::Result<()> {
        match a {
            Act::Pong => ws.send_text(sio::PONG).await,
            Act::Ack { id, ok } => self.on_ack(ws, id, ok).await,
            Act::None | Act::End(_) => Ok(()),
        }
    }

    async fn on_ack(
        &mut self,
        ws: &mut RawWs,
        id: u64,
        ok: Result<(), String>,
    ) -> anyhow::Result<()> {
        let Step::Pending { id: want, sent } = self.step else {
            self.out.borrow_mut().late_acks += 1;
            self.shared
                .error(format!("churner {}: ack {id} after it gave up", self.i));
            return Ok(());
        };
        if id != want {
            self.out.borrow_mut().late_acks += 1;
            self.shared.error(format!(
                "churner {}: ack {id} while waiting for {want}",
                self.i
            ));
            return Ok(());
        }
        let now = Instant::now();
        {
            let mut o = self.out.borrow_mut();
            let us = now.duration_since(sent).as_micros() as u64;
            o.ack.saturating_record(us.max(1));
            o.last_ack = o.last_ack.max(Some(now));
        }
        match ok {
            Ok(()) => {
                self.cfg.joins_owed[self.i].fetch_add(1, Relaxed);
                Shared::inc(&self.shared.acked);
                ws.send_text(&self.unsubscribe).await?;
                self.cfg.leaves_owed[self.i].fetch_add(1, Relaxed);
            }
            Err(e) => {
                self.out.borrow_mut().refused += 1;
                Shared::inc(&self.shared.publish_errors);
                self.shared.error(format!("churner {}: {e}", self.i));
            }
        }
        self.step = self.next_step(now);
        if let Step::Idle { at } = self.step
            && at <= now
        {
            self.send_subscribe(ws, now).await?;
        }
        Ok(())
    }

    /// After a cycle (or at the start): when the next subscribe goes, or Done past the run.
    fn next_step(&mut self, now: Instant) -> Step {
        let Some(until) = self.until else {
            return Step::Waiting;
        };
        let at = match (self.cfg.interval, self.sched) {
            (None, _) => now,
            (Some(_), None) => {
                let start = until - self.cfg.duration;
                start + Duration::from_secs_f64(self.i as f64 / self.cfg.rate)
            }
            // Behind schedule: go now, not in a burst to catch up.
            (Some(iv), Some(s)) => (s + iv).max(now),
        };
        if at >= until {
            Shared::inc(&self.shared.pubs_done);
            return Step::Done;
        }
        self.sched = Some(at);
        Step::Idle { at }
    }

    async fn send_subscribe(&mut self, ws: &mut RawWs, now: Instant) -> anyhow::Result<()> {
        let id = self.next_id;
        self.next_id += 1;
        ws.send_text(&sio::subscribe_msg(id, &self.cfg.names[self.ch]))
            .await?;
        self.out.borrow_mut().subscribes += 1;
        Shared::inc(&self.shared.sent);
        self.step = Step::Pending { id, sent: now };
        Ok(())
    }

    /// The timer of the current step: the next subscribe, or giving up on an ack after the
    /// run plus --drain.
    fn deadline(&self) -> Option<Instant> {
        match self.step {
            Step::Idle { at } => Some(at),
            Step::Pending { .. } => self.until.map(|u| u + self.cfg.drain),
            Step::Waiting | Step::Done => None,
        }
    }

    async fn on_timer(&mut self, ws: &mut RawWs) -> anyhow::Result<()> {
        let now = Instant::now();
        match self.step {
            Step::Idle { .. } => self.send_subscribe(ws, now).await,
            Step::Pending { id, .. } => {
                self.out.borrow_mut().unanswered += 1;
                self.shared.error(format!(
                    "churner {}: subscribe {id} not answered within --drain {:?} after the run",
                    self.i, self.cfg.drain
                ));
                Shared::inc(&self.shared.pubs_done);
                self.step = Step::Done;
                Ok(())
            }
            Step::Waiting | Step::Done => Ok(()),
        }
    }
}

/// A churner: subscribe, ack, unsubscribe, again, on its channel until the run's end; then
/// it holds its (unsubscribed) connection until Stop, so that no disconnect makes a leave.
async fn churner(
    net: Arc<Net>,
    i: usize,
    cfg: Arc<Cfg>,
    sem: Rc<Semaphore>,
    stats: Rc<RefCell<ThreadStats>>,
    out: Rc<RefCell<Out>>,
) {
    let shared = &net.shared;
    let _done = DoneGuard(&shared.subs_done);
    let mut rx = shared.phase.subscribe();
    let ch = i % cfg.names.len();
    let Some((mut ws, _open)) = net
        .connect_sio_many(
            cfg.watchers + i,
            &format!("{CHURN_SUB}{i}"),
            &[],
            &sem,
            &stats,
        )
        .await
    else {
        Shared::inc(&shared.pubs_done);
        return;
    };
    let mut c = Churn {
        i,
        ch,
        cfg: &cfg,
        shared,
        step: Step::Waiting,
        next_id: 0,
        until: None,
        sched: None,
        unsubscribe: sio::unsubscribe_msg(&cfg.names[ch]),
        out: out.clone(),
        pings: 0,
    };
    let end = loop {
        let phase = rx.borrow_and_update().clone();
        match phase {
            Phase::Stop => break None,
            Phase::Run { until } if c.step == Step::Waiting => {
                c.until = Some(until);
                c.step = c.next_step(Instant::now());
            }
            _ => {}
        }
        let deadline = c.deadline();
        let r = tokio::select! {
            biased;
            f = ws.next() => {
                read_frames(&mut ws, f, &mut c, |c, b| c.on(b), async |c, ws, a| c.act(ws, a).await).await
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now).into()), if deadline.is_some() => {
                c.on_timer(&mut ws).await.map_err(|e| format!("{e:#}"))
            }
            r = rx.changed() => match r {
                Ok(()) => Ok(()),
                Err(_) => break None,
            },
        };
        if let Err(why) = r {
            break Some(why);
        }
    };
    if let Some(why) = end {
        dropped(shared, format!("churner {i}: {why}"));
        if !matches!(c.step, Step::Done) {
            Shared::inc(&shared.pubs_done);
        }
    }
    out.borrow_mut().pings += c.pings;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(churners: usize, channels: usize) -> Cfg {
        Cfg::new(
            churners,
            2,
            (0..channels).map(|k| format!("lt:run1:{k}")).collect(),
            "lt:run1:".into(),
        )
    }

    fn event(kind: &str, id: &str, channel: &str) -> Vec<u8> {
        format!(
            r#"["presence:{kind}",{{"member":{{"type":"user","presenceId":"{id}","joinedAt":"2026-11-29T08:19:01.383Z"}},"meta":{{"channel":"{channel}","senderType":"system","messageId":"m","timestamp":"t"}}}}]"#
        )
        .into_bytes()
    }

    #[test]
    fn churner_ids_and_channels() {
        assert_eq!(churner_index("lt-churn-0"), Some(0));
        assert_eq!(churner_index("lt-churn-123"), Some(123));
        for bad in ["lt-churn-", "lt-churn-+1", "lt-churn-1x", "lt-watch-1", "x"] {
            assert_eq!(churner_index(bad), None, "{bad}");
        }
        let c = cfg(4, 3);
        assert_eq!(c.churner_of("lt-churn-3"), Some(3));
        assert_eq!(c.churner_of("lt-churn-4"), None, "not one of this run's");
        assert_eq!(c.channel_of("lt:run1:2"), Some(2));
        assert_eq!(c.channel_of("lt:run1:3"), None);
        assert_eq!(c.channel_of("lt:run2:0"), None);
        assert_eq!(c.channel_of("lt:run1:"), None);
    }

    #[test]
    fn watcher_counts_and_order() {
        let c = cfg(4, 2);
        let mut w = Watch::new(4);
        // Churner 1 is on channel 1, churner 2 on channel 0.
        assert!(w.observe(&event("join", "lt-churn-1", "lt:run1:1"), &c));
        assert!(w.observe(&event("leave", "lt-churn-1", "lt:run1:1"), &c));
        assert!(w.observe(&event("join", "lt-churn-2", "lt:run1:0"), &c));
        assert!(w.observe(&event("join", "lt-churn-1", "lt:run1:1"), &c));
        assert_eq!(
            (w.joins.clone(), w.leaves.clone()),
            (vec![0, 2, 1, 0], vec![0, 1, 0, 0])
        );
        assert_eq!(w.out_of_order, 0);
        // A second join without a leave, a leave before any join.
        assert!(w.observe(&event("join", "lt-churn-1", "lt:run1:1"), &c));
        assert!(w.observe(&event("leave", "lt-churn-3", "lt:run1:1"), &c));
        assert_eq!(w.out_of_order, 2);
        // Not counted: another channel than the churner's, a watcher, garbage.
        assert!(!w.observe(&event("join", "lt-churn-1", "lt:run1:0"), &c));
        assert!(!w.observe(&event("join", "lt-watch-0", "lt:run1:0"), &c));
        assert!(!w.observe(br#"["presence:join",{}]"#, &c));
        assert_eq!((w.misrouted, w.other, w.unparsed), (1, 1, 1));
        // Churners 1 and 2 are joined as far as it knows; 3's last event is a leave.
        assert_eq!(w.joined(), 2);
        // Owed: joins per churner, then leaves per churner.
        assert_eq!(w.counted, 6);
        let owed = [0, 3, 1, 0, 0, 1, 0, 1];
        assert!(w.holds(&owed, 6));
        assert!(!w.holds(&owed, 7), "fewer counted than owed in all");
        assert!(
            !w.holds(&[0, 3, 1, 0, 0, 2, 0, 0], 6),
            "one leave of churner 1 short (the extra one of 3 does not make up for it)"
        );
        assert!(!w.holds(&[0, 3, 1], 4), "not this run's shape");
    }

    #[test]
    fn judges_each_watcher_and_churner() {
        let mut a = Watch::new(2);
        a.joins = vec![3, 2];
        a.leaves = vec![3, 2];
        let mut b = Watch::new(2);
        b.joins = vec![2, 3];
        b.leaves = vec![3, 1];
        // Owed to each watcher: churner 0 three of each, churner 1 two of each.
        let v = judge(&[a, b], &[3, 2], &[3, 2]);
        assert_eq!(
            v,
            Verdict {
                seen_joins: 10,
                seen_leaves: 9,
                missing_joins: 1,
                missing_leaves: 1,
                extra_joins: 1,
                extra_leaves: 0,
                mismatched_pairs: 2,
            },
            "b: one join of churner 0 short and one of churner 1 over do not cancel out"
        );
        assert_eq!(judge(&[], &[3], &[3]), Verdict::default());
    }

    #[test]
    fn fixed_rate_schedule() {
        let mut c = cfg(4, 1);
        c.rate = 8.0;
        c.interval = Some(Duration::from_millis(500));
        c.duration = Duration::from_secs(2);
        let shared = Shared::new(1);
        let t0 = Instant::now();
        let mut ch = Churn {
            i: 2,
            ch: 0,
            cfg: &c,
            shared: &shared,
            step: Step::Waiting,
            next_id: 0,
            until: None,
            sched: None,
            unsubscribe: String::new(),
            out: Rc::new(RefCell::new(Out::new())),
            pings: 0,
        };
        assert_eq!(ch.next_step(t0), Step::Waiting, "before the run");
        ch.until = Some(t0 + c.duration);
        // Churner 2 of 4 at 8/s: first at 2/8 s, then every 4/8 s.
        let first = t0 + Duration::from_millis(250);
        assert_eq!(ch.next_step(t0), Step::Idle { at: first });
        assert_eq!(
            ch.next_step(first + Duration::from_millis(10)),
            Step::Idle {
                at: first + Duration::from_millis(500)
            }
        );
        // Late (the cycle took longer than the interval): now, no catching up.
        let late = first + Duration::from_millis(1200);
        assert_eq!(ch.next_step(late), Step::Idle { at: late });
        // Past the run: done, counted once.
        assert_eq!(ch.next_step(t0 + c.duration), Step::Done);
        assert_eq!(Shared::get(&shared.pubs_done), 1);
    }
}
