//! `idle` and `connect`: open many authenticated (optionally subscribed) connections at a
//! given concurrency and keep each one reading (pings are answered) until the run stops.
//! `connect` reports the setup rate; `idle` holds them and reports broker RSS per connection.

use std::{cell::RefCell, rc::Rc, sync::Arc, time::Duration, time::Instant};

use futures_util::StreamExt;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;

use super::{Sampler, Setup, Snap, fill_common, merge, prepare, take_stats, watchdog};
use crate::{
    cli::{Common, ConnectArgs, IdleArgs},
    conn::Net,
    progress::Progress,
    report::Report,
    runner,
    shared::{DoneGuard, Phase, Shared, wait_until},
    stats::ThreadStats,
};

pub fn run_idle(a: IdleArgs) -> anyhow::Result<Report> {
    drive("idle", &a.common, a.conns, a.channels, a.hold)
}

pub fn run_connect(a: ConnectArgs) -> anyhow::Result<Report> {
    drive("connect", &a.common, a.conns, a.channels, Duration::ZERO)
}

fn drive(
    mode: &'static str,
    c: &Common,
    conns: usize,
    channels: usize,
    hold: Duration,
) -> anyhow::Result<Report> {
    if conns == 0 {
        anyhow::bail!("--conns must be at least 1");
    }
    let setup: Setup = prepare(c, conns, channels, &[])?;
    watchdog(c.connect_timeout + hold + Duration::from_secs(60));
    let before = Snap::take(&setup);
    let shared = setup.shared.clone();
    let progress = Progress::start(mode, shared.clone());
    let net = setup.net.clone();
    let concurrency = setup.concurrency;
    let threads = setup.threads;
    let workers = runner::spawn(threads, move |tid| {
        thread_main(net.clone(), tid, threads, conns, channels, concurrency)
    })?;

    let mut sampler = Sampler::new(setup.server.as_ref());
    wait_until(
        Instant::now() + c.connect_timeout,
        || Shared::get(&shared.connected) + Shared::get(&shared.connect_failed) >= conns as u64,
        || sampler.tick(),
    );
    let hold_start = Instant::now();
    let hold0 = Snap::take(&setup);
    wait_until(hold_start + hold, || false, || sampler.tick());
    let hold1 = Snap::take(&setup);
    shared.set_phase(Phase::Stop);
    let st = merge(workers.join()?);
    progress.stop();

    let mut r = Report {
        mode,
        conns,
        channels,
        duration_s: hold.as_secs_f64(),
        ..Report::default()
    };
    // CPU over the hold (idle) or over the connect phase (connect).
    let (a, b) = if hold.is_zero() {
        (&before, &hold0)
    } else {
        (&hold0, &hold1)
    };
    fill_common(&mut r, &setup, &st, a, b);
    if hold.is_zero() {
        r.duration_s = shared.connect_elapsed().as_secs_f64();
    }
    if let (Some(before), Some(after)) = (before.server, hold1.server) {
        r.server_rss_before_bytes = Some(before.rss_bytes);
        r.server_rss_bytes = Some(after.rss_bytes);
        r.server_rss_peak_bytes = Some(sampler.peak.max(after.rss_bytes));
        if r.connected > 0 && !hold.is_zero() {
            r.rss_per_conn_bytes =
                Some(after.rss_bytes.saturating_sub(before.rss_bytes) as f64 / r.connected as f64);
        }
    }
    r.ok = r.connect_failures == 0 && r.disconnects == 0 && r.connected == conns as u64;
    Ok(r)
}

async fn thread_main(
    net: Arc<Net>,
    tid: usize,
    threads: usize,
    conns: usize,
    channels: usize,
    concurrency: usize,
) -> ThreadStats {
    let stats = Rc::new(RefCell::new(ThreadStats::default()));
    let sem = Rc::new(Semaphore::new((concurrency / threads).max(1)));
    let mut tasks = Vec::new();
    for i in (tid..conns).step_by(threads) {
        let ch = (channels > 0).then(|| i % channels);
        tasks.push(tokio::task::spawn_local(hold_one(
            net.clone(),
            i,
            ch,
            sem.clone(),
            stats.clone(),
        )));
    }
    for t in tasks {
        let _ = t.await;
    }
    take_stats(stats)
}

/// One connection: open it, then read (answering pings) until the run stops.
async fn hold_one(
    net: Arc<Net>,
    idx: usize,
    ch: Option<usize>,
    sem: Rc<Semaphore>,
    stats: Rc<RefCell<ThreadStats>>,
) {
    let shared = &net.shared;
    let _done = DoneGuard(&shared.subs_done);
    let mut rx = shared.phase.subscribe();
    let name = ch.map(|c| net.channel(c));
    let Some(mut ws) = net
        .connect(
            idx,
            &format!("lt-idle-{idx}"),
            name.as_deref(),
            &sem,
            &stats,
        )
        .await
    else {
        return;
    };
    loop {
        tokio::select! {
            m = ws.next() => match m {
                Some(Ok(Message::Close(f))) => {
                    Shared::inc(&shared.disconnects);
                    shared.error(format!("connection {idx} closed by server: {f:?}"));
                    return;
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    Shared::inc(&shared.disconnects);
                    shared.error(format!("connection {idx}: {e}"));
                    return;
                }
                None => {
                    Shared::inc(&shared.disconnects);
                    shared.error(format!("connection {idx}: closed"));
                    return;
                }
            },
            r = rx.changed() => {
                if r.is_err() || matches!(*rx.borrow_and_update(), Phase::Stop) {
                    return;
                }
            }
        }
    }
}
