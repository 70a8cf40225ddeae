//! # ringcast
//!
//! A thread-per-core WebSocket pub/sub broker speaking the InsForge Realtime API.
//!
//! # Layout
//!
//! ```text
//! main.rs        CLI -> Config -> logging -> runtime::start; the only place that exits
//! config/        raw serde file types (file), clap CLI with env fallbacks (cli), validated Config
//! runtime/       listeners (SO_REUSEPORT per core), core threads, control thread, shutdown
//! serve.rs       one accepted connection: HTTP keep-alive, then the WebSocket front end it
//!                upgrades to (`/realtime`: ws, `/socket.io/`: sio)
//! core/          a core: connections (conn, socket), subscription index (index), inbox +
//!                sweeper (inbox), the publishes of the channels it owns (sequencer), the writes
//!                in flight (send_gate), presence of its subscribers (presence)
//! frame.rs       RFC 6455 framing, shared by both front ends and the encoders
//! ws/            the raw protocol front end: upgrade handshake, session; the read loop and
//!                writer task both front ends use
//! sio/           the Socket.IO front end (InsForge SDK): Engine.IO / Socket.IO codec,
//!                session, the Socket.IO encoding of deliveries and presence events
//! http/          request parsing, routing and REST handlers, ApiError -> status mapping
//! dashboard/     the operator dashboard's files (HTML, CSS, JS), embedded; served by http
//! protocol/      ClientMsg / ServerMsg / MessageFrame, stable error codes
//! channel/       ChannelName / ChannelPattern newtypes, ChannelRecord, ChannelTable snapshot
//! auth/          JWT verification (HS256; RS256/ES256/EdDSA with a PEM key or a JWKS kept
//!                fresh by the `ringcast-jwks` thread) and minting, roles, admin key
//! presence/      channel members: the authority's counts (Book), join/leave events
//! policy/        RLS policies: CREATE POLICY parsed (sqlparser), compiled, evaluated on cores
//! control/       the control thread: registry and engine owner (redis: publish sequencer);
//!                core<->control and core<->core messages, the one `message` encoding
//! engine/        the Engine trait (registry store, history, stats, node fan-out hook); memory
//!                and redis engines
//! webhook/       the webhook delivery pool (own tokio runtime, hyper client, retries, store)
//! metrics.rs     per-core counters, summed on scrape, Prometheus text
//! timestamp.rs   RFC 3339 timestamps
//! ```
//!
//! Data path of a publish (memory engine): a core parses and authorizes it; the channel's owner
//! core (itself, or another one it forwards to) assigns the offset, encodes the `message`
//! frame once, acks the publisher, queues the frame to its own subscribers' bounded outboxes
//! and sends the same `Bytes` to every other core with subscribers, which queue it to theirs
//! (one `Rc` per core, shared by its outboxes); writer tasks, a slice at a time while the core
//! is behind (send gate), batch it onto the sockets; the control thread stores it afterwards. Redis
//! engine: the core `try_send`s it to the control (backplane) thread, Redis assigns the offset,
//! and the message fans out from what comes back from Redis.

#![forbid(unsafe_code)]

pub mod auth;
pub mod cdc;
pub mod channel;
pub mod config;
pub mod control;
pub mod core;
pub mod dashboard;
pub mod engine;
pub mod frame;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod presence;
pub mod protocol;
pub mod runtime;
pub mod serve;
pub mod sio;
pub mod timestamp;
pub mod webhook;
pub mod ws;

pub use runtime::{ServerHandle, StartError, start};

/// Whether `level` is a log filter `init_logging` takes: comma-separated `level` or
/// `target=level` directives (`target` of letters, digits, `_`, `-`, `:`), nothing else. The
/// `config` fuzz target found that tracing-subscriber's full syntax is not safe to hand
/// unchecked input: its parser panics inside multi-byte characters, and a span field filter
/// (`[{field=...}]`) compiles a regular expression, which took over 10 s for one input.
pub fn log_level_ok(level: &str) -> bool {
    const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];
    let level_ok = |l: &str| LEVELS.iter().any(|k| k.eq_ignore_ascii_case(l));
    let target_ok = |t: &str| {
        !t.is_empty()
            && t.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b':'))
    };
    !level.trim().is_empty()
        && level
            .split(',')
            .map(str::trim)
            .all(|d| match d.split_once('=') {
                Some((t, l)) => target_ok(t) && level_ok(l),
                None => level_ok(d) || target_ok(d),
            })
        && tracing_subscriber::EnvFilter::try_new(level).is_ok()
}

/// Sets up `tracing` from the configured level and format. Call once per process.
pub fn init_logging(level: &str, format: config::LogFormat) {
    let mut filter = if log_level_ok(level) {
        tracing_subscriber::EnvFilter::new(level)
    } else {
        tracing_subscriber::EnvFilter::new("info")
    };
    // The replication client logs every session that ends as an error (a standby node's
    // "slot is active" once a second); `cdc` reports those itself, at the right level.
    if !level.contains("pgwire_replication")
        && let Ok(d) = "pgwire_replication=off".parse()
    {
        filter = filter.add_directive(d);
    }
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_thread_names(true);
    let _ = match format {
        config::LogFormat::Json => b.json().try_init(),
        config::LogFormat::Text => b.try_init(),
    };
}
