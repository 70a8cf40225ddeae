//! The command line: the load modes (`fanout`, `idle`, `connect`, `publish`, `http-publish`,
//! `recover`, `presence`) sharing the target, auth, measurement and connection-spreading options; `db`,
//! the database change stream; and `webhook-sink`, the local HTTP receiver that counts the
//! broker's webhook deliveries.

use std::{fmt, net::SocketAddr, time::Duration};

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Receive the broker's webhooks: count requests and messages, publish-to-webhook latency.
    WebhookSink(SinkArgs),
    /// The database change stream: commit-to-subscriber latency at a fixed transaction rate,
    /// or (`--catch-up N`) how fast a backlog of N changes is stored.
    Db(DbArgs),
    /// Acknowledged publishes per second over HTTP (`POST /api/realtime/messages[/batch]`) on
    /// keep-alive connections, with the acked offsets checked.
    HttpPublish(HttpPublishArgs),
    /// Subscribers leave, messages are published (optionally a node restarts), and they come
    /// back with `since`: time until every subscriber has recovered every message.
    Recover(RecoverArgs),
    /// Presence churn over Socket.IO: clients subscribe and unsubscribe in a loop (each a
    /// user of its own), watchers count the presence:join / presence:leave events they get.
    Presence(PresenceArgs),
}

#[derive(Debug, Args)]
pub struct PresenceArgs {
    #[command(flatten)]
    pub common: Common,
    /// Socket.IO clients that subscribe and unsubscribe in a loop, each a user of its own
    /// (JWT sub `lt-churn-<i>`); churner i uses channel i % --channels.
    #[arg(long, default_value_t = 200)]
    pub churners: usize,
    /// Socket.IO clients subscribed to every channel of the run (JWT sub `lt-watch-<w>`),
    /// counting the churners' presence events.
    #[arg(long, default_value_t = 5)]
    pub watchers: usize,
    #[arg(long, default_value_t = 10)]
    pub channels: usize,
    /// Subscribe + unsubscribe cycles per second, all churners together (evenly phased);
    /// 0 = as fast as the acks allow, one subscribe in flight per churner.
    #[arg(long, default_value_t = 0.0)]
    pub rate: f64,
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub duration: Duration,
    /// After --duration: time allowed for the subscribes in flight to be answered, and then
    /// again for the watchers' last events.
    #[arg(long, default_value = "1s", value_parser = duration)]
    pub drain: Duration,
}

#[derive(Debug, Args)]
pub struct HttpPublishArgs {
    #[command(flatten)]
    pub common: Common,
    /// Keep-alive HTTP connections (dealt round-robin over the --url nodes).
    #[arg(long, default_value_t = 8)]
    pub conns: usize,
    /// Messages per request: 1 uses `POST /api/realtime/messages`, N > 1 the batch route
    /// with N items (at most 1000).
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// Messages are spread round-robin over this many channels of the run.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Payload size in bytes (the JSON object carrying ts, seq and padding).
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub duration: Duration,
    /// Requests in flight per connection (more than 1: pipelined on the keep-alive connection).
    #[arg(long, default_value_t = 1)]
    pub pipeline: usize,
    /// After --duration: time allowed for the outstanding answers.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub drain: Duration,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    /// `--url`: the subscribers' node (exactly one).
    #[command(flatten)]
    pub common: Common,
    /// The node the messages are published on (HTTP batch route); default the --url node.
    #[arg(long)]
    pub publish_url: Option<String>,
    /// Subscribers of the run's channel.
    #[arg(long, default_value_t = 1000)]
    pub subs: usize,
    /// Messages published while they are away (batches of up to 1000).
    #[arg(long, default_value_t = 1000)]
    pub messages: usize,
    /// Payload size in bytes.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// Shell command (`sh -c`) run after the messages are published and before the
    /// subscribers come back, e.g. a node restart; then `GET /health` on the --url node must
    /// answer 200.
    #[arg(long)]
    pub between: Option<String>,
    /// Time allowed for --between and the health check together.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub restart_timeout: Duration,
    /// Time allowed from the first reconnect until every subscriber has every message.
    #[arg(long, default_value = "60s", value_parser = duration)]
    pub recover_timeout: Duration,
}

#[derive(Debug, Args)]
pub struct DbArgs {
    /// Broker WebSocket URL, ws://HOST:PORT/realtime.
    #[arg(long)]
    pub url: String,
    #[arg(long, env = "RINGCAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// PostgreSQL the broker reads (`psql` writes the rows): postgres://USER:PW@HOST:PORT/DB.
    #[arg(long)]
    pub database_url: String,
    /// The table written (it must exist, be in the broker's `postgres.tables`, and have
    /// `id bigserial PRIMARY KEY, v text`).
    #[arg(long, default_value = "ringcast_bench")]
    pub table: String,
    /// Single-row transactions per second.
    #[arg(long, default_value_t = 2000)]
    pub rate: u64,
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub duration: Duration,
    /// Subscribers of `db:<table>`.
    #[arg(long, default_value_t = 100)]
    pub subs: usize,
    /// Bytes of text in each row.
    #[arg(long, default_value_t = 100)]
    pub size: usize,
    /// How long to wait for the last messages after the writer stops.
    #[arg(long, default_value = "3s", value_parser = duration)]
    pub tail: Duration,
    /// Insert N rows as fast as PostgreSQL takes them (transactions of 1,000) and time the
    /// broker storing them, first to last (no subscribers).
    #[arg(long)]
    pub catch_up: Option<u64>,
    /// The broker's pid: report its CPU % and RSS.
    #[arg(long)]
    pub server_pid: Option<u32>,
    #[arg(long)]
    pub json: bool,
    #[arg(long)]
    pub allow_remote: bool,
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
    /// Allow non-loopback targets (and, with --webhook-url, non-loopback webhook receivers).
    #[arg(long)]
    pub allow_remote: bool,
    /// Channels are `PREFIX:RUN:N`, created as the pattern `PREFIX:*`. A pattern that already
    /// exists keeps its webhookUrls, so use a fresh prefix to change them without a restart.
    #[arg(long, default_value = "lt")]
    pub channel_prefix: String,
}

#[derive(Debug, Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Also draw the run as an SVG: delivery latency (p50, p99, max) and deliveries per
    /// second, second by second.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<std::path::PathBuf>,
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
    /// Create the channel pattern with this webhook URL (repeat for several; http(s), loopback
    /// unless --allow-remote). Fails if the pattern already exists without exactly these URLs.
    #[arg(long = "webhook-url")]
    pub webhook_urls: Vec<String>,
    /// The subscribers' protocol: `raw` (the broker's own, on --url), `socketio` (Engine.IO v4
    /// / Socket.IO v5 on /socket.io/ at the same host and port, as the InsForge SDK speaks
    /// it) or `mixed` (half each, reported per protocol). Publishers always speak raw.
    #[arg(long, value_enum, default_value_t = Protocol::Raw)]
    pub protocol: Protocol,
}

/// The subscribers' protocol in `fanout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    Raw,
    Socketio,
    Mixed,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Raw => "raw",
            Protocol::Socketio => "socketio",
            Protocol::Mixed => "mixed",
        }
    }
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
    /// As for `fanout`: the channel pattern gets these webhookUrls.
    #[arg(long = "webhook-url")]
    pub webhook_urls: Vec<String>,
}

/// What the sink answers every request with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// This status code (200 delivered, 5xx/408/429 retried, other 4xx permanent failure).
    Status(u16),
    /// Never answer; hold the connection until the client gives up.
    Hang,
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Status(c) => write!(f, "{c}"),
            Reply::Hang => f.write_str("hang"),
        }
    }
}

fn reply(s: &str) -> Result<Reply, String> {
    if s.eq_ignore_ascii_case("hang") {
        return Ok(Reply::Hang);
    }
    match s.parse::<u16>() {
        Ok(c) if (200..=599).contains(&c) => Ok(Reply::Status(c)),
        _ => Err(format!(
            "`{s}`: expected an HTTP status 200..=599 (e.g. 200, 503, 404) or `hang`"
        )),
    }
}

#[derive(Debug, Args)]
pub struct SinkArgs {
    /// Address to listen on, e.g. 127.0.0.1:18999 (loopback unless --allow-remote).
    #[arg(long)]
    pub listen: SocketAddr,
    /// Status to answer every request with (200, 503, 404, ...), or `hang` to never answer.
    #[arg(long, default_value = "200", value_parser = reply)]
    pub reply: Reply,
    /// Wait this long before answering each request (per connection, like a slow receiver).
    #[arg(long, default_value = "0ms", value_parser = duration)]
    pub delay: Duration,
    /// Stop and report after this long.
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub duration: Duration,
    /// Stop and report as soon as this many distinct messages (X-InsForge-Message-ID) arrived.
    #[arg(long)]
    pub expect: Option<u64>,
    /// One JSON object on stdout instead of the table.
    #[arg(long)]
    pub json: bool,
    /// Allow listening on a non-loopback address.
    #[arg(long)]
    pub allow_remote: bool,
}
