//! `recover`: recovery on subscribe after an absence. (a) `--subs` subscribers join one fresh
//! channel on the `--url` node and keep their position; (b) they all leave; (c) `--messages`
//! messages are published on the `--publish-url` node through the HTTP batch route; (d)
//! `--between` runs (e.g. a node restart) and the `--url` node must answer `GET /health`; (e)
//! they all come back with `since` at `--concurrency`. Reports the time from the first
//! reconnect attempt to the last subscriber holding every message, and each subscriber's own
//! time (its attempt to its last message); every subscriber must get `recovered: true` and
//! exactly the missed offsets, in order, once.

use std::{
    io::{Read, Write},
    net::TcpStream,
    process::{Command, Stdio},
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::sync::Semaphore;

use super::{
    prepare,
    resubscriber::{self, Back, Position},
    take_stats, watchdog,
};
use crate::{
    cli::RecoverArgs,
    conn::Net,
    http1::{self, Answer, MAX_BATCH},
    payload::{Publish, now_nanos},
    progress::Progress,
    report::{Outcome, Pct},
    rest, runner,
    shared::{Phase, Shared, wait_until},
    stats::{ThreadStats, micros_hist},
    target::Target,
};

#[derive(Debug, Default, Serialize)]
pub struct RecoverReport {
    pub mode: &'static str,
    pub ok: bool,
    pub url: String,
    pub publish_url: String,
    pub subs: usize,
    pub messages: usize,
    pub size: usize,
    pub between: Option<String>,
    /// Subscribers that joined, and the offset they stood at.
    pub joined: usize,
    pub joined_offset: u64,
    /// Messages acked by the HTTP batch route, and how long publishing them took.
    pub published: u64,
    pub publish_s: f64,
    /// --between and the health check together.
    pub restart_s: Option<f64>,
    pub reconnected: u64,
    pub connect_failures: u64,
    /// First reconnect attempt to the last subscriber holding every message.
    pub recover_s: f64,
    /// Messages recovered by all complete subscribers over `recover_s`.
    pub messages_per_sec: f64,
    /// Each complete subscriber, its connection attempt to its last message.
    pub per_sub_ms: Pct,
    pub complete: usize,
    pub recovered_true: usize,
    pub recovered_false: usize,
    pub epoch_changed: usize,
    pub gaps: u64,
    pub duplicates: u64,
    pub extra: u64,
    pub sub_errors: usize,
    pub first_error: Option<String>,
    pub warnings: Vec<String>,
}

impl Outcome for RecoverReport {
    fn ok(&self) -> bool {
        self.ok
    }

    fn print_table(&self) {
        println!(
            "ringcast-loadtest {}: {} subscribers, {} messages of {} B missed{}",
            self.mode,
            self.subs,
            self.messages,
            self.size,
            self.between
                .as_ref()
                .map(|b| format!(", between: {b}"))
                .unwrap_or_default()
        );
        let row = |k: &str, v: String| println!("  {k:<17}{v}");
        row(
            "nodes",
            format!("subscribers {}, publish {}", self.url, self.publish_url),
        );
        row(
            "joined",
            format!("{} at offset {}", self.joined, self.joined_offset),
        );
        row(
            "published",
            format!("{} acked in {:.2} s", self.published, self.publish_s),
        );
        if let Some(s) = self.restart_s {
            row("between", format!("{s:.2} s until /health answered 200"));
        }
        row(
            "reconnected",
            format!("{} ok, {} failed", self.reconnected, self.connect_failures),
        );
        row(
            "recovered all",
            format!(
                "{} of {} subscribers in {:.3} s ({:.0} messages/s)",
                self.complete, self.subs, self.recover_s, self.messages_per_sec
            ),
        );
        row("per-sub ms", self.per_sub_ms.line());
        row(
            "checks",
            format!(
                "recovered true {}, false {}, epoch changed {}, gaps {}, duplicates {}, \
                 extra {}, errors {}",
                self.recovered_true,
                self.recovered_false,
                self.epoch_changed,
                self.gaps,
                self.duplicates,
                self.extra,
                self.sub_errors
            ),
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

/// Longest the publishing phase may take.
const PUBLISH_BOUND: Duration = Duration::from_secs(60);

pub fn run(a: RecoverArgs) -> anyhow::Result<RecoverReport> {
    let c = &a.common;
    if c.urls.len() != 1 {
        bail!("recover takes exactly one --url (the subscribers' node); see --publish-url");
    }
    if a.subs == 0 || a.messages == 0 || a.messages > 1_000_000 {
        bail!("--subs must be at least 1 and --messages 1..=1000000");
    }
    let setup = prepare(c, a.subs, 1, &[])?;
    let publish_url = a.publish_url.clone().unwrap_or_else(|| c.urls[0].clone());
    let pub_target = Target::parse(&publish_url, c.allow_remote)?;
    let net = setup.net.clone();
    let admin = net.minter.mint("ringcast-loadtest", "project_admin")?;
    if pub_target.addr != net.targets[0].addr {
        rest::ensure_channel(&pub_target, &admin, &format!("{}:*", net.prefix), &[])?;
    }
    watchdog(
        c.connect_timeout * 2
            + PUBLISH_BOUND
            + a.restart_timeout
            + a.recover_timeout
            + Duration::from_secs(30),
    );
    let mut r = RecoverReport {
        mode: "recover",
        url: c.urls[0].clone(),
        publish_url,
        subs: a.subs,
        messages: a.messages,
        size: a.size,
        between: a.between.clone(),
        ..RecoverReport::default()
    };
    if c.server_pid.is_some() {
        r.warnings
            .push("--server-pid is not used by recover (a restart changes it)".into());
    }

    // (a) join, (b) leave.
    let (threads, concurrency, subs) = (setup.threads, setup.concurrency, a.subs);
    let n2 = net.clone();
    let joined = runner::spawn(threads, move |tid| {
        join_all(n2.clone(), tid, threads, subs, concurrency)
    })?
    .join()?;
    let mut positions: Vec<Option<Position>> = vec![None; a.subs];
    for (i, p) in joined.into_iter().flatten() {
        positions[i] = Some(p);
    }
    r.joined = positions.iter().flatten().count();
    if r.joined < a.subs {
        bail!(
            "only {} of {} subscribers could join: {}",
            r.joined,
            a.subs,
            setup.shared.first_error().unwrap_or_default()
        );
    }
    r.joined_offset = positions
        .iter()
        .flatten()
        .map(|p| p.offset)
        .max()
        .unwrap_or(0);

    // (c) publish while they are away.
    let start = Instant::now();
    let token = net.minter.mint("lt-rec-pub", "authenticated")?;
    let acked = publish(&pub_target, &token, &net.channel(0), a.messages, a.size)?;
    r.publish_s = start.elapsed().as_secs_f64();
    r.published = acked.len() as u64;
    let want: Vec<u64> = (r.joined_offset + 1..=r.joined_offset + a.messages as u64).collect();
    if acked != want {
        r.warnings.push(format!(
            "the acked offsets are not {}..={} (first {:?}, last {:?})",
            r.joined_offset + 1,
            r.joined_offset + a.messages as u64,
            acked.first(),
            acked.last()
        ));
    }

    // (d) the restart, or whatever happens in between.
    if let Some(cmd) = &a.between {
        r.restart_s = Some(between(cmd, &net.targets[0], &admin, a.restart_timeout)?);
    }

    // (e) everyone comes back.
    let shared = setup.shared.clone();
    let connected0 = Shared::get(&shared.connected);
    let failed0 = Shared::get(&shared.connect_failed);
    let progress = Progress::start("recover", shared.clone());
    let positions = Arc::new(positions);
    let messages = a.messages as u64;
    let n2 = net.clone();
    let workers = runner::spawn(threads, move |tid| {
        come_back_all(
            n2.clone(),
            tid,
            threads,
            positions.clone(),
            messages,
            concurrency,
        )
    })?;
    let deadline = Instant::now() + a.recover_timeout;
    wait_until(
        deadline,
        || Shared::get(&shared.subs_done) >= subs as u64,
        || {},
    );
    shared.set_phase(Phase::Stop);
    let backs: Vec<Back> = workers.join()?.into_iter().flatten().collect();
    progress.stop();
    r.reconnected = Shared::get(&shared.connected) - connected0;
    r.connect_failures = Shared::get(&shared.connect_failed) - failed0;
    judge(&mut r, &backs, messages);
    r.first_error = shared.first_error();
    r.ok = r.published == messages
        && r.complete == a.subs
        && r.recovered_true == a.subs
        && r.epoch_changed == 0
        && r.gaps == 0
        && r.duplicates == 0
        && r.extra == 0
        && r.sub_errors == 0
        && r.connect_failures == 0;
    Ok(r)
}

/// Fills the timing and the checks from every subscriber's second life.
fn judge(r: &mut RecoverReport, backs: &[Back], messages: u64) {
    let mut hist = micros_hist();
    let first = backs.iter().filter_map(|b| b.started).min();
    let mut last = None;
    for b in backs {
        if let (Some(s), Some(d)) = (b.started, b.done_at) {
            r.complete += 1;
            let us = d.duration_since(s).as_micros() as u64;
            hist.saturating_record(us.max(1));
            last = last.max(Some(d));
        }
        r.recovered_true += usize::from(b.recovered == Some(true));
        r.recovered_false += usize::from(b.recovered == Some(false));
        r.epoch_changed += usize::from(b.epoch_changed);
        r.gaps += b.gaps;
        r.duplicates += b.duplicates;
        r.extra += b.extra;
        r.sub_errors += usize::from(b.error.is_some());
    }
    if let (Some(f), Some(l)) = (first, last) {
        r.recover_s = l.duration_since(f).as_secs_f64();
        if r.recover_s > 0.0 {
            r.messages_per_sec = (r.complete as u64 * messages) as f64 / r.recover_s;
        }
    }
    r.per_sub_ms = Pct::of(&hist);
}

/// Phase (a) and (b) on one thread: its subscribers join, then all of them leave at once.
async fn join_all(
    net: Arc<Net>,
    tid: usize,
    threads: usize,
    subs: usize,
    concurrency: usize,
) -> Vec<(usize, Position)> {
    let stats = Rc::new(std::cell::RefCell::new(ThreadStats::default()));
    let sem = Rc::new(Semaphore::new((concurrency / threads).max(1)));
    let mut tasks = Vec::new();
    for i in (tid..subs).step_by(threads) {
        let (net, sem, stats) = (net.clone(), sem.clone(), stats.clone());
        tasks.push(tokio::task::spawn_local(async move {
            resubscriber::join(&net, i, &sem, &stats)
                .await
                .map(|(ws, p)| (i, ws, p))
        }));
    }
    let mut held = Vec::new();
    for t in tasks {
        if let Ok(Some(x)) = t.await {
            held.push(x);
        }
    }
    let _ = take_stats(stats);
    // Dropping the sockets closes them: every subscriber of this thread leaves together.
    held.into_iter().map(|(i, _ws, p)| (i, p)).collect()
}

/// Phase (e) on one thread.
async fn come_back_all(
    net: Arc<Net>,
    tid: usize,
    threads: usize,
    positions: Arc<Vec<Option<Position>>>,
    messages: u64,
    concurrency: usize,
) -> Vec<Back> {
    let stats = Rc::new(std::cell::RefCell::new(ThreadStats::default()));
    let sem = Rc::new(Semaphore::new((concurrency / threads).max(1)));
    let mut tasks = Vec::new();
    for i in (tid..positions.len()).step_by(threads) {
        let Some(p) = positions[i].clone() else {
            continue;
        };
        tasks.push(tokio::task::spawn_local(resubscriber::come_back(
            net.clone(),
            i,
            p,
            messages,
            sem.clone(),
            stats.clone(),
        )));
    }
    let mut out = Vec::new();
    for t in tasks {
        if let Ok(b) = t.await {
            out.push(b);
        }
    }
    out
}

/// Publishes `n` messages on `channel` through the batch route (up to 1,000 per request, one
/// keep-alive connection); returns the acked offsets in order. Any refused item fails.
fn publish(
    t: &Target,
    token: &str,
    channel: &str,
    n: usize,
    size: usize,
) -> anyhow::Result<Vec<u64>> {
    let deadline = Instant::now() + PUBLISH_BOUND;
    let mut s = TcpStream::connect_timeout(&t.addr, Duration::from_secs(5))
        .with_context(|| format!("connecting to {} to publish", t.addr))?;
    s.set_read_timeout(Some(Duration::from_secs(15)))?;
    s.set_write_timeout(Some(Duration::from_secs(15)))?;
    s.set_nodelay(true)?;
    let mut payloads = Publish::new("", size);
    let mut acked = Vec::with_capacity(n);
    let mut buf = Vec::with_capacity(256 << 10);
    let mut chunk = vec![0u8; 64 << 10];
    let mut seq = 0u64;
    while (seq as usize) < n {
        if Instant::now() > deadline {
            bail!("publishing took over {PUBLISH_BOUND:?}");
        }
        let items = (n - seq as usize).min(MAX_BATCH);
        let mut body = String::from(r#"{"messages":["#);
        for i in 0..items {
            if i > 0 {
                body.push(',');
            }
            seq += 1;
            http1::item(&mut body, channel, &payloads.payload(seq, now_nanos()));
        }
        body.push_str("]}");
        s.write_all(&http1::post(http1::BATCH, &t.host, token, &body))?;
        buf.clear();
        let resp = loop {
            if let Some(r) = http1::parse(&buf)? {
                break r;
            }
            let got = s.read(&mut chunk).context("reading a publish answer")?;
            if got == 0 {
                bail!(
                    "{} closed the connection before answering a publish",
                    t.addr
                );
            }
            buf.extend_from_slice(&chunk[..got]);
        };
        let answers = http1::batch(resp.status, &buf[resp.body.clone()])
            .map_err(|e| anyhow::anyhow!("publish batch refused: {e:?}"))?;
        if answers.len() != items {
            bail!("{} results for {items} messages", answers.len());
        }
        for a in answers {
            match a {
                Answer::Ack { offset, .. } => acked.push(offset),
                Answer::Error(code) => bail!(
                    "a publish was refused with {code} (for RATE_LIMITED, start the broker with \
                     higher [websocket] publish_rate, publish_burst and publish_bytes_rate, see loadtest/README.md)"
                ),
            }
        }
    }
    Ok(acked)
}

/// Runs `cmd` with `sh -c` (its output goes to stderr), then waits until `GET /health` on
/// `t` answers 200; both within `timeout`. Returns the seconds it all took.
fn between(cmd: &str, t: &Target, admin: &str, timeout: Duration) -> anyhow::Result<f64> {
    let start = Instant::now();
    let deadline = start + timeout;
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr()))
        .spawn()
        .context("running --between with sh -c")?;
    loop {
        if let Some(st) = child.try_wait()? {
            if !st.success() {
                bail!("--between failed ({st})");
            }
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("--between still running after --restart-timeout {timeout:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    loop {
        if let Ok((200, _)) = rest::get(t, "/health", admin) {
            return Ok(start.elapsed().as_secs_f64());
        }
        if Instant::now() > deadline {
            bail!(
                "{} did not answer GET /health with 200 within --restart-timeout {timeout:?}",
                t.addr
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
