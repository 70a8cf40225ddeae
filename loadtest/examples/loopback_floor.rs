//! The loopback floor: what one core pays to push the fan-out workload's TCP segments with no
//! broker at all. `send` accepts `--conns` connections and, `--rate` times a second, writes one
//! `--size`-byte frame to every one of them with a plain `send(2)` each (what an epoll server
//! such as uWebSockets does; there is no WebSocket framing, JSON or queue). `recv` opens the
//! connections, reads every frame on one tokio thread (like `ringcast-loadtest`), and reports
//! the latency from the send timestamp at the start of each frame. The sender prints its own
//! CPU (`getrusage`, the same user + system time `--server-pid` reads from /proc) and how long
//! a round of sends takes, which bounds the p99 of any server on this machine from below.
//!
//! ```sh
//! cargo build --release -p ringcast-loadtest --example loopback_floor
//! F=target/release/examples/loopback_floor
//! taskset -c 0 $F send --port 7300 --conns 1000 --rate 100 --size 260 --secs 10 &
//! taskset -c 1 $F recv --port 7300 --conns 1000 --size 260 --secs 10
//! ```

use std::{
    io::Write,
    net::{TcpListener, TcpStream},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use clap::{Parser, ValueEnum};
use tokio::io::AsyncReadExt;

/// The loopback floor: a bare sender and its receiver (see the module header).
#[derive(Parser)]
struct Args {
    /// `send` (accept, then write) or `recv` (connect, then read).
    #[arg(value_enum)]
    role: Role,
    #[arg(long, default_value_t = 7300)]
    port: u16,
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    conns: u64,
    /// Rounds of sends per second.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    rate: u64,
    /// Bytes per frame (the first 8 carry the send time).
    #[arg(long, default_value_t = 260, value_parser = clap::value_parser!(u64).range(8..))]
    size: u64,
    #[arg(long, default_value_t = 10)]
    secs: u64,
}

#[derive(Clone, Copy, ValueEnum)]
enum Role {
    Send,
    Recv,
}

fn main() {
    let a = Args::parse();
    match a.role {
        Role::Send => send(&a),
        Role::Recv => recv(&a),
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    // SAFETY: getrusage fills the zeroed struct it is given; RUSAGE_SELF is always valid.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn send(a: &Args) {
    let listener = TcpListener::bind(("127.0.0.1", a.port)).expect("bind");
    let mut socks: Vec<TcpStream> = (0..a.conns)
        .map(|_| {
            let (s, _) = listener.accept().expect("accept");
            s.set_nodelay(true).expect("nodelay");
            s
        })
        .collect();
    let mut frame = vec![b'x'; a.size as usize];
    let period = Duration::from_nanos(1_000_000_000 / a.rate);
    let rounds = a.rate * a.secs;
    let (cpu0, t0) = (cpu_time(), Instant::now());
    let mut busy = Duration::ZERO;
    let mut worst = Duration::ZERO;
    for r in 0..rounds {
        let due = t0 + period * r as u32;
        if let Some(d) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(d);
        }
        let start = Instant::now();
        frame[..8].copy_from_slice(&now_ns().to_le_bytes());
        for s in &mut socks {
            s.write_all(&frame).expect("send");
        }
        let took = start.elapsed();
        busy += took;
        worst = worst.max(took);
    }
    let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());
    println!(
        "sender: {:.0} segments/s, cpu {:.1} % of a core, {:.2} us per segment, round of {} sends: mean {:.2} ms, max {:.2} ms",
        (rounds * a.conns) as f64 / wall.as_secs_f64(),
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        1e6 * cpu.as_secs_f64() / (rounds * a.conns) as f64,
        a.conns,
        busy.as_secs_f64() * 1e3 / rounds as f64,
        worst.as_secs_f64() * 1e3,
    );
}

fn recv(a: &Args) {
    // The sender closing its sockets ends every reader; this bounds the run if it never does.
    let limit = Duration::from_secs(a.secs + 30);
    std::thread::spawn(move || {
        std::thread::sleep(limit);
        eprintln!("receiver: no end of stream after {limit:?}, giving up");
        std::process::exit(1);
    });
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let local = tokio::task::LocalSet::new();
    let hist = local.block_on(&rt, async {
        let mut tasks = Vec::new();
        for _ in 0..a.conns {
            let s = tokio::net::TcpStream::connect(("127.0.0.1", a.port))
                .await
                .expect("connect");
            s.set_nodelay(true).expect("nodelay");
            let size = a.size as usize;
            tasks.push(tokio::task::spawn_local(async move {
                let mut s = s;
                let mut h = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)
                    .expect("histogram");
                let mut buf = vec![0u8; 4096];
                let mut have = 0usize;
                loop {
                    let n = match s.read(&mut buf[have..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    have += n;
                    let now = now_ns();
                    let mut at = 0;
                    while have - at >= size {
                        let sent = u64::from_le_bytes(buf[at..at + 8].try_into().unwrap());
                        h.saturating_record(now.saturating_sub(sent) / 1000);
                        at += size;
                    }
                    buf.copy_within(at..have, 0);
                    have -= at;
                }
                h
            }));
        }
        let mut all =
            hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
        for t in tasks {
            all.add(t.await.expect("task")).expect("merge");
        }
        all
    });
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "receiver: {} frames, latency ms p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2}",
        hist.len(),
        ms(0.5),
        ms(0.9),
        ms(0.99),
        ms(0.999),
        hist.max() as f64 / 1000.0
    );
}
