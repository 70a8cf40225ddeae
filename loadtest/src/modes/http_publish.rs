//! `http-publish`: acknowledged publishes per second over the broker's HTTP routes, on
//! `--conns` keep-alive connections with `--pipeline` requests in flight each, `--batch`
//! messages per request, spread over `--channels` fresh channels. Judges the acks: offsets
//! strictly increasing per connection and channel, none acked twice across connections, and
//! (when every message was acked) no offset left out. The report is [`HttpReport`].

use std::{
    cell::RefCell,
    collections::BTreeMap,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::bail;
use serde::Serialize;
use tokio::sync::Semaphore;

use super::{
    Snap,
    http_conn::{self, Cfg, HttpStats},
    prepare, take_stats, watchdog,
};
use crate::{
    cli::HttpPublishArgs,
    conn::Net,
    http1::MAX_BATCH,
    progress::Progress,
    report::{Outcome, Pct},
    runner,
    shared::{Phase, Shared, wait_until},
    stats::ThreadStats,
};

const LIMIT_HINT: &str = "The broker allows 1000 publishes/s per connection by default \
     (burst 2000), HTTP connections included: start it with `ringcast serve --config F` where \
     F sets [websocket] publish_rate, publish_burst, publish_bytes_rate and publish_bytes_burst (see loadtest/README.md)";

#[derive(Debug, Default, Serialize)]
pub struct HttpReport {
    pub mode: &'static str,
    pub ok: bool,
    pub urls: Vec<String>,
    pub threads: usize,
    pub conns: usize,
    pub batch: usize,
    pub pipeline: usize,
    pub channels: usize,
    pub size: usize,
    pub duration_s: f64,
    pub connected: u64,
    pub connect_failures: u64,
    pub disconnects: u64,
    pub requests: u64,
    /// Messages sent, acknowledged, and acked per second (run start to the last answer).
    pub sent: u64,
    pub acked: u64,
    pub acked_per_sec: f64,
    pub requests_per_sec: f64,
    /// Request written to answer read, ms.
    pub request_ms: Pct,
    /// Refused messages by error code (`RATE_LIMITED`, `CHANNEL_NOT_FOUND`, `HTTP 502`, ..).
    pub errors: BTreeMap<String, u64>,
    pub unanswered: u64,
    /// Acks not above the same connection's previous ack on that channel.
    pub not_increasing: u64,
    /// Offsets acked more than once over all connections.
    pub duplicate_offsets: u64,
    /// Offsets between 1 and a channel's highest ack that no ack carried.
    pub offset_holes: u64,
    pub wrong_channel: u64,
    pub server_cpu_pct: Option<f64>,
    pub server_cpu_us_per_msg: Option<f64>,
    pub client_cpu_pct: f64,
    pub machine_cpu_pct: Option<f64>,
    pub first_error: Option<String>,
    pub warnings: Vec<String>,
}

impl Outcome for HttpReport {
    fn ok(&self) -> bool {
        self.ok
    }

    fn print_table(&self) {
        println!(
            "ringcast-loadtest {}: {:.1} s, {} connections x {} in flight, {} message(s) per \
             request, {} channel(s), {} B payload",
            self.mode,
            self.duration_s,
            self.conns,
            self.pipeline,
            self.batch,
            self.channels,
            self.size
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
        row(
            "messages",
            format!(
                "{} sent, {} acked ({:.0}/s), {} unanswered",
                self.sent, self.acked, self.acked_per_sec, self.unanswered
            ),
        );
        row(
            "requests",
            format!("{} ({:.0}/s)", self.requests, self.requests_per_sec),
        );
        row("request ms", self.request_ms.line());
        let errors = if self.errors.is_empty() {
            "none".to_string()
        } else {
            let e: Vec<String> = self
                .errors
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            e.join(", ")
        };
        row("errors", errors);
        row(
            "offsets",
            format!(
                "not increasing {}, duplicated {}, holes {}, wrong channel {}",
                self.not_increasing, self.duplicate_offsets, self.offset_holes, self.wrong_channel
            ),
        );
        if let Some(c) = self.server_cpu_pct {
            let per = self
                .server_cpu_us_per_msg
                .map(|u| format!(" ({u:.2} µs CPU per message)"))
                .unwrap_or_default();
            row("broker CPU", format!("{c:.1} %{per}"));
        }
        let machine = self
            .machine_cpu_pct
            .map(|m| format!(", machine {m:.1} %"))
            .unwrap_or_default();
        row(
            "harness CPU",
            format!("{:.1} %{machine}", self.client_cpu_pct),
        );
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

pub fn run(a: HttpPublishArgs) -> anyhow::Result<HttpReport> {
    if a.conns == 0 || a.channels == 0 {
        bail!("--conns and --channels must be at least 1");
    }
    if a.batch == 0 || a.batch > MAX_BATCH {
        bail!("--batch must be 1..={MAX_BATCH} (the broker's limit per request)");
    }
    if a.pipeline == 0 || a.pipeline > 1024 {
        bail!("--pipeline must be 1..=1024");
    }
    if a.duration.is_zero() || a.duration > Duration::from_secs(3600) {
        bail!("--duration must be between 1ms and 1h");
    }
    let c = &a.common;
    let setup = prepare(c, a.conns, a.channels, &[])?;
    watchdog(c.connect_timeout + a.duration + a.drain * 2 + Duration::from_secs(30));
    let shared = setup.shared.clone();
    let progress = Progress::start("http-publish", shared.clone());
    let net = setup.net.clone();
    let cfg = Arc::new(Cfg {
        batch: a.batch,
        size: a.size,
        pipeline: a.pipeline,
        drain: a.drain,
        names: (0..a.channels).map(|k| net.channel(k)).collect(),
    });
    let (threads, concurrency, conns) = (setup.threads, setup.concurrency, a.conns);
    let workers = runner::spawn(threads, move |tid| {
        let cfg = Cfg::clone(&cfg);
        thread_main(net.clone(), tid, threads, conns, concurrency, cfg)
    })?;

    let all = a.conns as u64;
    wait_until(
        Instant::now() + c.connect_timeout,
        || Shared::get(&shared.connected) + Shared::get(&shared.connect_failed) >= all,
        || {},
    );
    let snap0 = Snap::take(&setup);
    let start = Instant::now();
    let until = start + a.duration;
    shared.set_phase(Phase::Run { until });
    wait_until(
        until + a.drain + Duration::from_secs(1),
        || Shared::get(&shared.pubs_done) >= all,
        || {},
    );
    let end = Instant::now();
    let snap1 = Snap::take(&setup);
    shared.set_phase(Phase::Stop);
    let results = workers.join()?;
    progress.stop();

    let mut connect = ThreadStats::default();
    let mut st = HttpStats::new(a.channels);
    for (t, h) in results {
        connect.merge(t);
        st.merge(h);
    }
    let secs = end.duration_since(start).as_secs_f64().max(1e-9);
    let (duplicate_offsets, offset_holes) = check_offsets(&mut st.offsets);
    let mut r = HttpReport {
        mode: "http-publish",
        urls: c.urls.clone(),
        threads,
        conns: a.conns,
        batch: a.batch,
        pipeline: a.pipeline,
        channels: a.channels,
        size: a.size,
        duration_s: a.duration.as_secs_f64(),
        connected: Shared::get(&shared.connected),
        connect_failures: Shared::get(&shared.connect_failed),
        disconnects: Shared::get(&shared.disconnects),
        requests: st.requests,
        sent: Shared::get(&shared.sent),
        acked: st.acked,
        acked_per_sec: st.acked as f64 / secs,
        requests_per_sec: st.requests as f64 / secs,
        request_ms: Pct::of(&st.latency),
        unanswered: st.unanswered,
        not_increasing: st.not_increasing,
        duplicate_offsets,
        offset_holes,
        wrong_channel: st.wrong_channel,
        first_error: shared.first_error(),
        ..HttpReport::default()
    };
    if let (Some(p), Some(x), Some(y)) = (&setup.server, snap0.server, snap1.server) {
        r.server_cpu_pct = Some(p.cpu_pct(&x, &y));
        if st.acked > 0 {
            r.server_cpu_us_per_msg = Some(p.cpu_secs(&x, &y) * 1e6 / st.acked as f64);
        }
    }
    if let (Some(x), Some(y)) = (snap0.me, snap1.me) {
        r.client_cpu_pct = setup.me.cpu_pct(&x, &y);
    }
    if let (Some(x), Some(y)) = (snap0.machine, snap1.machine) {
        r.machine_cpu_pct = Some(crate::procstat::Machine::busy_pct(&x, &y));
    }
    let refused: u64 = st.errors.values().sum();
    let rate_limited = st.errors.get("RATE_LIMITED").copied().unwrap_or(0);
    if rate_limited > 0 {
        r.warnings.push(format!(
            "{rate_limited} messages refused with RATE_LIMITED. {LIMIT_HINT}"
        ));
    }
    // A hole is an offset stored whose ack never came: only possible when answers are missing.
    let holes_explained = refused - rate_limited > 0 || r.unanswered > 0;
    if offset_holes > 0 && holes_explained {
        r.warnings.push(format!(
            "{offset_holes} offsets were never acked (answers missing or refused with an \
             unknown outcome)"
        ));
    }
    r.errors = st.errors;
    r.ok = r.connect_failures == 0
        && r.disconnects == 0
        && r.acked > 0
        && refused == rate_limited
        && r.unanswered == 0
        && r.not_increasing == 0
        && r.duplicate_offsets == 0
        && r.wrong_channel == 0
        && (offset_holes == 0 || holes_explained);
    Ok(r)
}

/// Sorts each channel's acked offsets; returns (offsets acked more than once, offsets in
/// 1..=highest never acked). A run's channels are fresh, so their offsets start at 1.
fn check_offsets(per_channel: &mut [Vec<u64>]) -> (u64, u64) {
    let (mut dups, mut holes) = (0, 0);
    for v in per_channel {
        v.sort_unstable();
        let before = v.len() as u64;
        v.dedup();
        dups += before - v.len() as u64;
        if let Some(&max) = v.last() {
            holes += max - v.len() as u64;
        }
    }
    (dups, holes)
}

async fn thread_main(
    net: Arc<Net>,
    tid: usize,
    threads: usize,
    conns: usize,
    concurrency: usize,
    cfg: Cfg,
) -> (ThreadStats, HttpStats) {
    let stats = Rc::new(RefCell::new(ThreadStats::default()));
    let out = Rc::new(RefCell::new(HttpStats::new(cfg.names.len())));
    let sem = Rc::new(Semaphore::new((concurrency / threads).max(1)));
    let cfg = Rc::new(cfg);
    let mut tasks = Vec::new();
    for i in (tid..conns).step_by(threads) {
        tasks.push(tokio::task::spawn_local(http_conn::run(
            net.clone(),
            i,
            cfg.clone(),
            sem.clone(),
            stats.clone(),
            out.clone(),
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    let h = Rc::try_unwrap(out)
        .map(RefCell::into_inner)
        .unwrap_or_else(|rc| std::mem::replace(&mut *rc.borrow_mut(), HttpStats::new(0)));
    (take_stats(stats), h)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_duplicates_and_holes() {
        let mut v = vec![vec![3, 1, 2, 2, 5], vec![], vec![1, 2]];
        assert_eq!(check_offsets(&mut v), (1, 1), "2 twice, 4 missing");
        assert_eq!(v[0], [1, 2, 3, 5]);
    }
}
