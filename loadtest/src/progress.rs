//! The progress line on stderr while a run goes on: once a second, counters and rates read
//! from the shared atomics, the delivery latency p99 so far, and the offsets subscribers
//! skipped and have not received (loss so far, or still in flight). Rewrites one line on a terminal, one line per second otherwise
//! ([`emit`], also used by `webhook-sink`).

use std::{
    io::{IsTerminal, Write},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering::Relaxed},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::shared::Shared;

pub struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Progress {
    pub fn start(mode: &'static str, shared: Arc<Shared>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let handle = std::thread::Builder::new()
            .name("loadtest-progress".into())
            .spawn(move || run(mode, &shared, &s2))
            .ok();
        Self { stop, handle }
    }

    pub fn stop(mut self) {
        self.stop.store(true, Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn run(mode: &str, s: &Shared, stop: &AtomicBool) {
    let tty = std::io::stderr().is_terminal();
    let mut last_delivered = 0;
    let mut last_acked = 0;
    let mut ticks = 0u32;
    while !stop.load(Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        ticks += 1;
        if !ticks.is_multiple_of(10) {
            continue;
        }
        let d = Shared::get(&s.delivered);
        let a = Shared::get(&s.acked);
        let p99 = crate::buckets::quantile(s.latency.iter().map(Shared::get), 0.99).map_or_else(
            || "-".to_string(),
            |us| format!("{:.2}ms", us as f64 / 1000.0),
        );
        let missing = Shared::get(&s.missing) as i64;
        let line = format!(
            "[{mode} {:>5.1}s] conns {} (failed {}, dropped {}) sent {} acked {} (+{}/s) \
             rate-limited {} errors {} delivered {} (+{}/s) p99 so far {p99} missing {missing}",
            s.t0.elapsed().as_secs_f64(),
            Shared::get(&s.connected),
            Shared::get(&s.connect_failed),
            Shared::get(&s.disconnects),
            Shared::get(&s.sent),
            a,
            a - last_acked,
            Shared::get(&s.rate_limited),
            Shared::get(&s.publish_errors) + Shared::get(&s.server_errors),
            d,
            d - last_delivered,
        );
        last_delivered = d;
        last_acked = a;
        emit(tty, &line);
    }
    if tty {
        let _ = writeln!(std::io::stderr());
    }
}

/// Writes one progress line: rewriting the current line on a terminal, else a new line.
pub fn emit(tty: bool, line: &str) {
    let mut err = std::io::stderr().lock();
    let _ = if tty {
        write!(err, "\r\x1b[2K{line}")
    } else {
        writeln!(err, "{line}")
    };
}
