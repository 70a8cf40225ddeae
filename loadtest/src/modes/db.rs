//! `db`: the database change stream under load. A `psql` child writes single-row
//! transactions into a table at a fixed rate while subscribers of `db:<table>` measure
//! commit-to-subscriber latency (the payload's `commit_timestamp` to the read, both wall
//! clocks of this machine); or, with `--catch-up N`, nothing is written and the run times how
//! fast the broker stores a backlog of N changes already waiting in the slot.
//!
//! Reports the broker's CPU (`--server-pid`) and PostgreSQL's own: the walsender that decodes
//! for the broker, and every `postgres` process together.

use std::{
    collections::HashMap,
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::net::TcpStream;

use crate::{
    cli::DbArgs,
    procstat::Proc,
    rawws::{Frame, RawWs},
    report::Outcome,
    rest,
    target::Target,
    token::Minter,
};

#[derive(Debug, Default, Serialize)]
pub struct DbReport {
    pub mode: &'static str,
    pub table: String,
    /// Live: transactions asked for per second, and written.
    pub rate: u64,
    pub written: u64,
    pub subscribers: usize,
    /// Messages received over all subscribers, and the expected count (written x subs).
    pub received: u64,
    pub expected: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The same, split at the message's `timestamp` (when the broker sequenced it; ms
    /// precision): PostgreSQL and the change stream, then the fan-out.
    pub commit_to_sequenced_p99_ms: f64,
    pub sequenced_to_subscriber_p99_ms: f64,
    /// Catch-up: changes stored and per second (first to last stored).
    pub changes: u64,
    pub changes_per_sec: f64,
    pub secs: f64,
    pub server_cpu_pct: Option<f64>,
    pub server_rss_mb: Option<f64>,
    pub harness_cpu_pct: f64,
    pub walsender_cpu_pct: Option<f64>,
    pub postgres_cpu_pct: f64,
    pub errors: Vec<String>,
    #[serde(skip)]
    ok: bool,
}

impl Outcome for DbReport {
    fn ok(&self) -> bool {
        self.ok
    }

    fn print_table(&self) {
        println!("mode               {}", self.mode);
        println!("table              {}", self.table);
        if self.mode == "live" {
            println!(
                "rate (tx/s)        {} asked, {} written",
                self.rate, self.written
            );
            println!("subscribers        {}", self.subscribers);
            println!("received           {} of {}", self.received, self.expected);
            println!(
                "commit->subscriber p50 {:.2} ms  p99 {:.2} ms  p99.9 {:.2} ms  max {:.2} ms",
                self.p50_ms, self.p99_ms, self.p999_ms, self.max_ms
            );
            println!(
                "split (ms clock)   commit->sequenced p99 {:.1} ms, sequenced->subscriber p99 {:.1} ms",
                self.commit_to_sequenced_p99_ms, self.sequenced_to_subscriber_p99_ms
            );
        } else {
            println!(
                "catch-up           {} changes in {:.2} s: {:.0} changes/s",
                self.changes, self.secs, self.changes_per_sec
            );
        }
        if let Some(c) = self.server_cpu_pct {
            println!("broker CPU         {c:.1} % of a core");
        }
        if let Some(r) = self.server_rss_mb {
            println!("broker RSS         {r:.1} MB");
        }
        println!("harness CPU        {:.1} % of a core", self.harness_cpu_pct);
        if let Some(c) = self.walsender_cpu_pct {
            println!("walsender CPU      {c:.1} % of a core");
        }
        println!(
            "postgres CPU (all) {:.1} % of a core",
            self.postgres_cpu_pct
        );
        for e in &self.errors {
            println!("error              {e}");
        }
    }

    fn print_json(&self) -> anyhow::Result<()> {
        println!("{}", serde_json::to_string(self)?);
        Ok(())
    }
}

pub fn run(a: DbArgs) -> anyhow::Result<DbReport> {
    let target = Target::parse(&a.url, a.allow_remote)?;
    check_table_name(&a.table)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let server = a
        .server_pid
        .map(|p| Proc::new(&p.to_string()))
        .transpose()?;
    let minter = Minter::new(&a.jwt_secret)?;
    let admin = minter.mint("ringcast-loadtest", "project_admin")?;
    rest::ensure_channel(&target, &admin, "db:*", &[])?;
    let walsender = walsender(&a.database_url).ok().flatten();
    let pg_before = postgres_ticks();
    let started = Instant::now();
    let ws_before = walsender.as_ref().map(|w| w.sample()).transpose()?;
    let srv_before = server.as_ref().map(|s| s.sample()).transpose()?;
    let me = Proc::new("self")?;
    let me_before = me.sample()?;
    let mut r = match a.catch_up {
        Some(n) => catch_up(&target, &admin, &a, n)?,
        None => tokio::task::LocalSet::new().block_on(&rt, live(&target, &minter, &a))?,
    };
    let secs = started.elapsed().as_secs_f64().max(1e-9);
    if let (Some(s), Some(b)) = (&server, srv_before) {
        let e = s.sample()?;
        r.server_cpu_pct = Some(s.cpu_pct(&b, &e));
        r.server_rss_mb = Some(e.rss_bytes as f64 / (1 << 20) as f64);
    }
    if let (Some(w), Some(b)) = (&walsender, ws_before)
        && let Ok(e) = w.sample()
    {
        r.walsender_cpu_pct = Some(w.cpu_pct(&b, &e));
    }
    r.harness_cpu_pct = me.cpu_pct(&me_before, &me.sample()?);
    r.postgres_cpu_pct = ticks_pct(&pg_before, &postgres_ticks(), secs);
    Ok(r)
}

fn check_table_name(t: &str) -> anyhow::Result<()> {
    if t.is_empty()
        || !t
            .bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
    {
        bail!("--table must be lowercase letters, digits and _");
    }
    Ok(())
}

/// Subscribers, then a writer at `--rate` for `--duration`; waits for the tail to arrive.
async fn live(t: &Target, minter: &Minter, a: &DbArgs) -> anyhow::Result<DbReport> {
    let channel = format!("db:{}", a.table);
    type Hists = (u64, Histogram<u64>, Histogram<u64>, Histogram<u64>);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Hists>();
    let stop = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..a.subs {
        let mut ws = RawWs::handshake(
            TcpStream::connect(t.addr)
                .await
                .context("connecting a subscriber")?,
            &t.host,
            &t.path,
        )
        .await?;
        let tok = minter.mint(&format!("db-sub-{i}"), "authenticated")?;
        ws.send_text(&format!(r#"{{"type":"auth","token":"{tok}"}}"#))
            .await?;
        ws.send_text(&format!(
            r#"{{"type":"subscribe","channel":"{channel}","filter":{{"event":"INSERT"}}}}"#
        ))
        .await?;
        let (tx, mut stop) = (tx.clone(), stop.1.clone());
        tasks.push(tokio::task::spawn_local(async move {
            let hist = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
            let (mut h, mut to_seq, mut from_seq) = (hist(), hist(), hist());
            let mut n = 0u64;
            loop {
                tokio::select! {
                    f = ws.next() => match f {
                        Ok(Some(Frame::Text(r))) => {
                            let now = ws.read_at();
                            let b = ws.bytes(r);
                            if let Some(ts) = commit_ts(b) {
                                n += 1;
                                h.saturating_record((now.saturating_sub(ts) / 1000).max(1));
                                if let Some(seq) = sequenced_ts(b) {
                                    to_seq.saturating_record((seq.saturating_sub(ts) / 1000).max(1));
                                    from_seq.saturating_record((now.saturating_sub(seq) / 1000).max(1));
                                }
                            }
                        }
                        Ok(Some(Frame::Ping(p))) => { let _ = ws.send_pong(&p).await; }
                        Ok(Some(_)) => {}
                        _ => break,
                    },
                    _ = stop.changed() => break,
                }
            }
            let _ = tx.send((n, h, to_seq, from_seq));
        }));
    }
    drop(tx);
    // Let every subscribe settle before the first change.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let written = write(&a.database_url, &a.table, a.rate, a.duration, a.size).await?;
    tokio::time::sleep(a.tail).await;
    let _ = stop.0.send(true);
    let new = || Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("bounds");
    let (mut hist, mut to_seq, mut from_seq) = (new(), new(), new());
    let mut received = 0;
    while let Some((n, h, a, b)) = rx.recv().await {
        received += n;
        hist.add(h).ok();
        to_seq.add(a).ok();
        from_seq.add(b).ok();
    }
    let expected = written * a.subs as u64;
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let mut errors = Vec::new();
    if received != expected {
        errors.push(format!("received {received} of {expected} messages"));
    }
    Ok(DbReport {
        mode: "live",
        table: a.table.clone(),
        rate: a.rate,
        written,
        subscribers: a.subs,
        received,
        expected,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
        p999_ms: ms(0.999),
        max_ms: hist.max() as f64 / 1000.0,
        commit_to_sequenced_p99_ms: to_seq.value_at_quantile(0.99) as f64 / 1000.0,
        sequenced_to_subscriber_p99_ms: from_seq.value_at_quantile(0.99) as f64 / 1000.0,
        secs: a.duration.as_secs_f64(),
        ok: errors.is_empty(),
        errors,
        ..Default::default()
    })
}

/// Writes `rate` single-row transactions per second for `dur` through one `psql` session.
async fn write(
    url: &str,
    table: &str,
    rate: u64,
    dur: Duration,
    size: usize,
) -> anyhow::Result<u64> {
    let mut child = Command::new("psql")
        .args([url, "-X", "-q", "-v", "ON_ERROR_STOP=1"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .context("running psql (apt-get install postgresql-client)")?;
    let mut stdin = child.stdin.take().context("psql stdin")?;
    let pad = "x".repeat(size);
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    let mut written = 0u64;
    let mut buf = String::new();
    while start.elapsed() < dur {
        tick.tick().await;
        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
        buf.clear();
        while written < due {
            written += 1;
            buf.push_str(&format!("INSERT INTO {table} (v) VALUES ('{pad}');\n"));
        }
        if !buf.is_empty() {
            stdin.write_all(buf.as_bytes()).context("writing to psql")?;
        }
    }
    drop(stdin);
    let st = child.wait()?;
    if !st.success() {
        bail!("psql failed ({st})");
    }
    Ok(written)
}

/// Inserts `n` rows as fast as PostgreSQL takes them (transactions of 1,000 rows, one
/// `psql` call) while the broker reads them, and times the broker storing them
/// (`ringcast_published_total` advanced by `n`): from the first stored to the last, the
/// stream works off a backlog whenever PostgreSQL writes faster than it is read.
fn catch_up(t: &Target, admin: &str, a: &DbArgs, n: u64) -> anyhow::Result<DbReport> {
    let metric = |name: &str| -> anyhow::Result<u64> {
        let (s, body) = rest::get(t, "/metrics", admin)?;
        if s != 200 {
            bail!("/metrics answered {s}");
        }
        Ok(body
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    };
    let base = metric("ringcast_published_total")?;
    let pad = "x".repeat(a.size);
    let sql = format!(
        "DO $$ BEGIN FOR i IN 1..{} LOOP INSERT INTO {} (v) SELECT '{pad}' FROM \
         generate_series(1, 1000); COMMIT; END LOOP; END $$",
        n.div_ceil(1000),
        a.table
    );
    let url = a.database_url.clone();
    let insert_start = Instant::now();
    let writer = std::thread::spawn(move || -> anyhow::Result<f64> {
        let o = Command::new("psql")
            .args([
                url.as_str(),
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-c",
                &sql,
            ])
            .output()
            .context("running psql")?;
        if !o.status.success() {
            bail!("psql: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(insert_start.elapsed().as_secs_f64())
    });
    let n = n.div_ceil(1000) * 1000;
    let deadline = Instant::now() + a.duration.max(Duration::from_secs(60));
    let mut first: Option<Instant> = None;
    let mut errors = Vec::new();
    let mut done = 0;
    loop {
        let stored = metric("ringcast_published_total")?.saturating_sub(base);
        if stored > 0 && first.is_none() {
            first = Some(Instant::now());
        }
        if stored >= n {
            done = stored;
            break;
        }
        if Instant::now() > deadline {
            errors.push(format!("only {stored} of {n} changes stored in time"));
            break;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    match writer.join() {
        Ok(Ok(secs)) => eprintln!("PostgreSQL took {secs:.2} s to commit the {n} rows"),
        Ok(Err(e)) => errors.push(format!("{e:#}")),
        Err(_) => errors.push("the writer thread panicked".into()),
    }
    let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
    Ok(DbReport {
        mode: "catch-up",
        table: a.table.clone(),
        expected: n,
        changes: done,
        changes_per_sec: if secs > 0.0 { done as f64 / secs } else { 0.0 },
        secs,
        ok: errors.is_empty(),
        errors,
        ..Default::default()
    })
}

/// `"commit_timestamp":"2026-01-01T00:00:00.123456Z"` of a frame, as unix nanos.
fn commit_ts(b: &[u8]) -> Option<u64> {
    rfc3339_at(b, b"\"commit_timestamp\":\"", 6)
}

/// The message's `"timestamp":"2026-01-01T00:00:00.123Z"` (the broker's), as unix nanos.
fn sequenced_ts(b: &[u8]) -> Option<u64> {
    let key = b"\"timestamp\":\"";
    let i = memchr::memmem::rfind(b, key)?;
    rfc3339_at(&b[i..], key, 3)
}

/// The UTC RFC 3339 time with `digits` fractional digits after `key`, as unix nanos.
fn rfc3339_at(b: &[u8], key: &[u8], digits: usize) -> Option<u64> {
    let i = memchr::memmem::find(b, key)? + key.len();
    let s = std::str::from_utf8(b.get(i..i + 21 + digits)?).ok()?;
    // YYYY-MM-DDTHH:MM:SS.fff[fff]Z
    let num = |r: std::ops::Range<usize>| s.get(r)?.parse::<i64>().ok();
    let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (h, mi, se, frac) = (
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
        num(20..20 + digits)?,
    );
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + h * 3600 + mi * 60 + se;
    let nanos = frac * 10i64.pow(9 - digits as u32);
    Some((secs * 1_000_000_000 + nanos) as u64)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The walsender serving the broker (`application_name` `ringcast-*`), to sample its CPU.
fn walsender(url: &str) -> anyhow::Result<Option<Proc>> {
    let o = Command::new("psql")
        .args([url, "-X", "-A", "-t", "-c"])
        .arg("SELECT pid FROM pg_stat_replication WHERE application_name LIKE 'ringcast-%' LIMIT 1")
        .output()?;
    let pid = String::from_utf8_lossy(&o.stdout).trim().to_string();
    if pid.is_empty() {
        return Ok(None);
    }
    Ok(Proc::new(&pid).ok())
}

/// CPU ticks of every process named `postgres`, by pid.
fn postgres_ticks() -> HashMap<u32, u64> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for e in dir.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        if &stat[open + 1..close] != "postgres" {
            continue;
        }
        let f: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        let t = f.get(11).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        out.insert(pid, t);
    }
    out
}

/// CPU % of a core used by the processes in `after` over `secs` (a process that started
/// during the run counts from zero).
fn ticks_pct(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>, secs: f64) -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    let hz = if hz > 0 { hz as f64 } else { 100.0 };
    let used: u64 = after
        .iter()
        .map(|(p, t)| t.saturating_sub(before.get(p).copied().unwrap_or(0)))
        .sum();
    used as f64 / hz / secs * 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_commit_timestamps() {
        let f =
            br#"{"payload":{"schema":"public","commit_timestamp":"2026-11-29T08:20:34.200063Z"}}"#;
        // 2026-11-29T08:20:34Z is 1795940434 s after the epoch.
        assert_eq!(commit_ts(f), Some(1_795_940_434_200_063_000));
        assert_eq!(commit_ts(b"{}"), None);
        let m = br#"{"payload":{"commit_timestamp":"2026-11-29T08:20:34.200063Z"},"timestamp":"2026-11-29T08:20:34.201Z"}"#;
        assert_eq!(sequenced_ts(m), Some(1_795_940_434_201_000_000));
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }
}
