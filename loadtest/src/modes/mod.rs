//! What every mode does before and after its load: checks (loopback targets, the per-process
//! open-file budget), the channel pattern (with its webhook URLs), the run id, the hard
//! deadline, and the report fields common to all modes (connections, broker and harness
//! CPU/RSS). `webhook_sink` is the one mode without a broker connection.

pub mod conns;
pub mod db;
pub mod fanout;
mod http_conn;
pub mod http_publish;
pub mod presence;
mod publisher;
pub mod recover;
mod resubscriber;
mod sio_subscriber;
mod subscriber;
pub mod webhook_sink;

use std::{
    cell::RefCell,
    rc::Rc,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use crate::{
    cli::Common,
    conn::Net,
    payload::now_nanos,
    procstat::{Machine, Proc, Sample},
    report::{Pct, Report},
    rest,
    shared::Shared,
    stats::ThreadStats,
    target::{Target, check_webhook_url},
    token::Minter,
};

/// Connections one process may open: the machine allows 20,000 open files per process
/// (hard limit), and the harness needs a few for itself.
pub const MAX_CONNS_PER_PROCESS: usize = 19_000;

/// A mode's inputs once checked.
pub struct Setup {
    pub net: Arc<Net>,
    pub shared: Arc<Shared>,
    pub server: Option<Proc>,
    pub me: Proc,
    pub threads: usize,
    pub concurrency: usize,
    pub urls: Vec<String>,
}

/// The broker's limit of webhook URLs per channel.
const MAX_WEBHOOK_URLS: usize = 16;

/// Checks the options, creates the `PREFIX:*` channel pattern (with `webhook_urls`, if any)
/// when `channels > 0`, and makes the shared state for `channels` channels of a fresh run id.
pub fn prepare(
    c: &Common,
    conns: usize,
    channels: usize,
    webhook_urls: &[String],
) -> anyhow::Result<Setup> {
    if c.threads == 0 || c.concurrency == 0 {
        bail!("--threads and --concurrency must be at least 1");
    }
    check_prefix(&c.channel_prefix)?;
    if webhook_urls.len() > MAX_WEBHOOK_URLS {
        bail!("at most {MAX_WEBHOOK_URLS} --webhook-url (the broker's limit per channel)");
    }
    for u in webhook_urls {
        check_webhook_url(u, c.allow_remote)?;
    }
    if conns > MAX_CONNS_PER_PROCESS {
        bail!(
            "{conns} connections requested, but one process may hold only 20,000 open files on \
             this machine (hard limit, not raisable); open at most {MAX_CONNS_PER_PROCESS} per \
             process and run several ringcast-loadtest processes side by side for more"
        );
    }
    ensure_nofile(conns as u64 + 256)?;
    let targets = c
        .urls
        .iter()
        .map(|u| Target::parse(u, c.allow_remote))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let minter = Minter::new(&c.jwt_secret)?;
    if channels > 0 {
        let admin = minter.mint("ringcast-loadtest", "project_admin")?;
        let pattern = format!("{}:*", c.channel_prefix);
        let mut done = Vec::new();
        for t in &targets {
            if !done.contains(&t.addr) {
                let status = rest::ensure_channel(t, &admin, &pattern, webhook_urls)?;
                if status == 409 && !webhook_urls.is_empty() {
                    check_existing(t, &admin, &pattern, webhook_urls)?;
                }
                done.push(t.addr);
            }
        }
    }
    let server = c
        .server_pid
        .map(|p| Proc::new(&p.to_string()))
        .transpose()?;
    let shared = Shared::new(channels);
    let net = Arc::new(Net {
        targets,
        sources: c.sources,
        minter,
        prefix: c.channel_prefix.clone(),
        run_id: format!("{:x}{:x}", now_nanos() / 1000, std::process::id()),
        shared: shared.clone(),
    });
    Ok(Setup {
        net,
        shared,
        server,
        me: Proc::new("self")?,
        threads: c.threads,
        concurrency: c.concurrency,
        urls: c.urls.clone(),
    })
}

/// A channel prefix is one or more `:`-separated segments of `[A-Za-z0-9_.-]` (no wildcards).
fn check_prefix(p: &str) -> anyhow::Result<()> {
    let ok = p.split(':').all(|seg| {
        !seg.is_empty()
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    });
    if !ok || p.len() > 64 {
        bail!(
            "--channel-prefix `{p}`: expected `:`-separated segments of [A-Za-z0-9_.-], at most \
             64 bytes"
        );
    }
    Ok(())
}

/// The pattern already existed (409): it is only usable if its record carries exactly the
/// requested webhook URLs (e.g. created by another node of the same cluster, or by an earlier
/// run with the same URLs). Otherwise deliveries would go elsewhere, or nowhere.
fn check_existing(t: &Target, admin: &str, pattern: &str, want: &[String]) -> anyhow::Result<()> {
    let have = rest::channel_webhooks(t, admin, pattern)?;
    let norm = |v: &[String]| {
        let mut v = v.to_vec();
        v.sort();
        v.dedup();
        v
    };
    if let Some(have) = &have
        && norm(have) == norm(want)
    {
        return Ok(());
    }
    let found = match have {
        Some(h) if h.is_empty() => "no webhookUrls".to_string(),
        Some(h) => format!("webhookUrls {h:?}"),
        None => "a record this harness could not read back".to_string(),
    };
    bail!(
        "--webhook-url given, but the channel pattern `{pattern}` already exists on {} with \
         {found}, not {want:?}; an existing pattern keeps its own webhookUrls. Restart the \
         broker (the memory engine forgets its channels), or use a fresh channel prefix \
         (--channel-prefix NAME, one not used before on this broker) so the harness creates \
         a new pattern",
        t.addr
    )
}

/// Raises the soft open-file limit so that `need` descriptors fit, or says why it cannot.
fn ensure_nofile(need: u64) -> anyhow::Result<()> {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) } != 0 {
        return Err(std::io::Error::last_os_error()).context("getrlimit(RLIMIT_NOFILE)");
    }
    if r.rlim_cur >= need {
        return Ok(());
    }
    if r.rlim_max < need {
        bail!(
            "{need} open files needed but the hard limit is {}; use fewer connections per \
             process and run several processes",
            r.rlim_max
        );
    }
    r.rlim_cur = r.rlim_max;
    // SAFETY: setrlimit only reads the struct we pass.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &r) } != 0 {
        return Err(std::io::Error::last_os_error()).context("setrlimit(RLIMIT_NOFILE)");
    }
    Ok(())
}

/// Ends the process if the run is still going at `limit` from now (a bound on every run).
pub fn watchdog(limit: Duration) {
    let _ = std::thread::Builder::new()
        .name("loadtest-watchdog".into())
        .spawn(move || {
            std::thread::sleep(limit);
            eprintln!("ringcast-loadtest: hard deadline of {limit:?} reached; giving up");
            std::process::exit(3);
        });
}

/// Tracks the broker's RSS peak while a phase runs.
pub struct Sampler<'a> {
    server: Option<&'a Proc>,
    pub peak: u64,
    last: Instant,
}

impl<'a> Sampler<'a> {
    pub fn new(server: Option<&'a Proc>) -> Self {
        Self {
            server,
            peak: 0,
            last: Instant::now(),
        }
    }

    pub fn tick(&mut self) {
        if self.last.elapsed() < Duration::from_millis(250) {
            return;
        }
        self.last = Instant::now();
        if let Some(s) = self.server.and_then(|p| p.sample().ok()) {
            self.peak = self.peak.max(s.rss_bytes);
        }
    }
}

/// Per-thread stats as the worker thread hands them back.
pub fn take_stats(stats: Rc<RefCell<ThreadStats>>) -> ThreadStats {
    Rc::try_unwrap(stats)
        .map(RefCell::into_inner)
        .unwrap_or_else(|rc| std::mem::take(&mut *rc.borrow_mut()))
}

/// Merges the threads' stats into one.
pub fn merge(all: Vec<ThreadStats>) -> ThreadStats {
    let mut total = ThreadStats::default();
    for s in all {
        total.merge(s);
    }
    total
}

/// The broker, this process and the whole machine at one moment.
#[derive(Debug, Clone, Copy)]
pub struct Snap {
    pub server: Option<Sample>,
    pub me: Option<Sample>,
    pub machine: Option<Machine>,
}

impl Snap {
    pub fn take(s: &Setup) -> Self {
        Self {
            server: s.server.as_ref().and_then(|p| p.sample().ok()),
            me: s.me.sample().ok(),
            machine: Machine::sample(),
        }
    }
}

/// Fills the fields every mode reports. `a`/`b` bracket the measured window.
pub fn fill_common(r: &mut Report, s: &Setup, st: &ThreadStats, a: &Snap, b: &Snap) {
    let sh = &s.shared;
    r.urls = s.urls.clone();
    r.threads = s.threads;
    r.connected = Shared::get(&sh.connected);
    r.connect_failures = Shared::get(&sh.connect_failed);
    r.disconnects = Shared::get(&sh.disconnects);
    r.server_errors = Shared::get(&sh.server_errors);
    let secs = sh.connect_elapsed().as_secs_f64();
    if secs > 0.0 {
        r.connects_per_sec = Some(r.connected as f64 / secs);
    }
    r.connect_ms = Pct::of(&st.connect);
    if let (Some(p), Some(x), Some(y)) = (&s.server, a.server, b.server) {
        r.server_cpu_pct = Some(p.cpu_pct(&x, &y));
        r.server_cpu_sys_pct = Some(p.sys_pct(&x, &y));
        r.server_rss_bytes = Some(y.rss_bytes);
    }
    if let (Some(x), Some(y)) = (a.me, b.me) {
        r.client_cpu_pct = s.me.cpu_pct(&x, &y);
        r.client_rss_bytes = y.rss_bytes;
    }
    if let (Some(x), Some(y)) = (a.machine, b.machine) {
        let m = Machine::busy_pct(&x, &y);
        r.machine_cpu_pct = Some(m);
        r.other_cpu_pct = Some((m - r.client_cpu_pct - r.server_cpu_pct.unwrap_or(0.0)).max(0.0));
        r.machine_cores = y.cores;
    }
    r.first_error = sh.first_error();
}
