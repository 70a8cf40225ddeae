//! The command line: four modes (`fanout`, `idle`, `connect`, `publish`) sharing the target,
//! auth, measurement and connection-spreading options.

use std::time::Duration;

use clap::{Args, Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "ringcast-loadtest",
    version,
    about = "Load generator for the ringcast WebSocket broker (loopback targets only by default)"
)]
pub struct Cli {
    #[command(subcommand)]
    pub mode: Mode,
}

#[derive(Debug, Subcommand)]
pub enum Mode {
    /// Subscribers on a few channels, publishers at a fixed rate: delivery, loss, latency.
    Fanout(FanoutArgs),
    /// Open many authenticated connections, hold them, report the broker's RSS per connection.
    Idle(IdleArgs),
    /// Connection setup rate (TCP + WebSocket handshake + auth) at a given concurrency.
    Connect(ConnectArgs),
    /// Acknowledged publishes per second, no subscribers.
    Publish(PublishArgs),
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Debug, Args, Clone)]
pub struct Common {
    /// Broker WebSocket URL, ws://HOST:PORT/realtime. Repeat to spread connections over nodes
    /// (nodes must share one cluster, i.e. the redis engine, for fanout counts to add up).
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// HS256 secret the broker verifies JWTs with.
    #[arg(long, env = "RINGCAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// The broker's pid: report its CPU % and RSS from /proc.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Worker threads (each a current-thread tokio runtime).
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Spread client sockets over 127.0.0.1 ..= 127.0.0.N (0: let the kernel pick).
    #[arg(long, default_value_t = 4)]
    pub sources: usize,
    /// Connections being set up at once.
    #[arg(long, default_value_t = 200)]
    pub concurrency: usize,
    /// Time allowed for the whole connect phase.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub connect_timeout: Duration,
    /// Allow non-loopback targets.
    #[arg(long)]
    pub allow_remote: bool,
}

#[derive(Debug, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 1000)]
    pub subs: usize,
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    #[arg(long, default_value_t = 1)]
    pub publishers: usize,
    /// Messages per second per publisher; 0 = as fast as acks allow (see --window).
    #[arg(long, default_value_t = 100.0)]
    pub rate: f64,
    /// Payload size in bytes (the JSON object carrying ts, seq and padding).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub duration: Duration,
    /// Unanswered publishes per publisher when --rate 0.
    #[arg(long, default_value_t = 64)]
    pub window: u64,
    /// After publishing stops: time allowed for acks and deliveries to arrive.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub drain: Duration,
}

#[derive(Debug, Args)]
pub struct IdleArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 10_000)]
    pub conns: usize,
    /// How long to hold the connections open before measuring RSS.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub hold: Duration,
    /// Subscribe each connection to one of this many channels (0: auth only).
    #[arg(long, default_value_t = 0)]
    pub channels: usize,
}

#[derive(Debug, Args)]
pub struct ConnectArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 10_000)]
    pub conns: usize,
    /// Subscribe each connection to one of this many channels (0: auth only).
    #[arg(long, default_value_t = 0)]
    pub channels: usize,
}

#[derive(Debug, Args)]
pub struct PublishArgs {
    #[command(flatten)]
    pub common: Common,
    #[arg(long, default_value_t = 8)]
    pub publishers: usize,
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Messages per second per publisher; 0 = as fast as acks allow (see --window).
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub duration: Duration,
    #[arg(long, default_value_t = 64)]
    pub window: u64,
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub drain: Duration,
}
