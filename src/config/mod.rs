//! Configuration: defaults < `config/ringcast.toml` < `RINGCAST_*` env < command-line flags.
//!
//! `file` holds the raw serde shape; this module turns it into the validated, typed [`Config`]
//! that the rest of the program reads. Validation collects every problem before failing, so
//! `ringcast check-config` can print them all at once. Nothing here runs on a core.

pub mod cli;
pub mod file;
pub mod postgres;

use std::{net::SocketAddr, path::Path, time::Duration};

pub use file::{DEV_JWT_SECRET, FileConfig};
pub use postgres::{PostgresConfig, Tables};

/// Which storage and fan-out engine a node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    Memory,
    Redis,
}

/// Which monoio driver the cores use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DriverKind {
    /// io_uring, falling back to the legacy (epoll) driver when it cannot be built.
    Auto,
    IoUring,
    Legacy,
}

/// When the send gate limits (`server.send_gate`; see `core::send_gate`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendGateMode {
    /// Only while the core is behind (a write carried several frames lately).
    Adaptive,
    /// Always: every fan-out goes out in slices of `send_slice`.
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated configuration every component reads.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub workers: usize,
    pub engine: EngineKind,
    pub node_id: String,
    pub driver: DriverKind,
    pub io_uring_entries: u32,
    pub shutdown_grace: Duration,
    pub max_connections: usize,
    pub engine_queue: usize,
    pub core_queue: usize,
    /// Socket writes a core may have in flight (0 = no limit); see `core::send_gate`.
    pub send_slice: usize,
    /// When that limit applies.
    pub send_gate: SendGateMode,

    pub jwt_secret: String,
    pub admin_key: Option<String>,
    /// A static key that authenticates as `anon` (InsForge's anon key, `anon_...`).
    pub anon_key: Option<String>,
    pub auth_timeout: Duration,
    pub anon_subscribe: bool,
    pub anon_publish: bool,
    /// Close a WebSocket when its token's `exp` passes (`token_expiring` first).
    pub expire_sessions: bool,
    /// How long before `exp` the `token_expiring` notice is sent.
    pub expire_warning: Duration,
    /// RS256 / ES256 / EdDSA key from `auth.jwt_public_key_file` (read and checked here).
    pub jwt_public_key: Option<crate::auth::PublicKey>,
    /// `auth.jwks_url` (http or https); `None`: no JWKS.
    pub jwks_url: Option<String>,
    /// How often the JWKS is fetched again (besides on an unknown `kid`).
    pub jwks_refresh: Duration,
    /// Required `iss` of public-key tokens.
    pub jwt_issuer: Option<String>,
    /// Required `aud` (one of) of public-key tokens.
    pub jwt_audience: Option<String>,
    /// The access policies in force at start (`[policies]`, or the built-in defaults).
    pub policies: Policies,

    pub max_frame_bytes: usize,
    pub max_payload_bytes: usize,
    pub max_subscriptions: usize,
    pub publish_rate: u32,
    pub publish_burst: u32,
    /// Payload bytes a connection may publish per second...
    pub publish_bytes_rate: u64,
    /// ...and at once.
    pub publish_bytes_burst: u64,
    pub ping_interval: Duration,
    pub idle_timeout: Duration,
    pub outbound_queue_frames: usize,
    pub outbound_queue_bytes: usize,
    pub read_buffer_bytes: usize,

    /// The Socket.IO front end (`/socket.io/`) is served.
    pub socketio: bool,
    /// Engine.IO `pingInterval`: the server pings this often.
    pub sio_ping_interval: Duration,
    /// Engine.IO `pingTimeout`: a ping unanswered this long closes the connection.
    pub sio_ping_timeout: Duration,
    /// Redis engine: each node refreshes its presence members this often...
    pub presence_heartbeat: Duration,
    /// ...and a member not refreshed for this long is gone (its node died).
    pub presence_ttl: Duration,

    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub header_timeout: Duration,
    pub keepalive_timeout: Duration,

    pub history_per_channel: usize,
    /// `None`: keep forever.
    pub history_max_age: Option<Duration>,
    pub history_max_total: usize,
    /// Memory engine: the retained history's size in bytes (oldest evicted first).
    pub history_max_bytes: usize,
    /// Most messages one subscribe may recover (`since`); more: `recovered: false`.
    pub recover_max: usize,

    /// A repeated `idempotencyKey` on a channel within this long gets the first ack.
    pub idempotency_window: Duration,
    /// Idempotency keys remembered per node (memory engine; oldest forgotten first).
    pub idempotency_max_keys: usize,

    pub redis_url: Option<String>,
    /// Pub/sub messages (publish batches) the Redis reader buffers for the control loop; a
    /// node further behind loses them and resyncs from the streams.
    pub redis_pubsub_buffer: usize,

    pub webhooks: WebhookConfig,

    /// The database change stream (`[postgres]`); `None`: off.
    pub postgres: Option<PostgresConfig>,

    pub log_level: String,
    pub log_format: LogFormat,
}

/// The webhook delivery pool (`[webhooks]`; see `webhook`).
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// HMAC-SHA256 key for `X-InsForge-Signature`; `None`: unsigned.
    pub secret: Option<String>,
    /// Per request (connect + answer).
    pub timeout: Duration,
    /// Retries stop this long after the publish; the delivery is then failed.
    pub max_age: Duration,
    pub deny_private: bool,
    /// Threads of the pool's runtime (`ringcast-webhook-{i}`).
    pub workers: usize,
    /// Bound of the hand-off queue (memory engine); full: the delivery is counted failed.
    pub queue: usize,
    /// Deliveries in progress (including those waiting to retry) per node.
    pub max_in_flight: usize,
    /// Concurrent requests per endpoint (scheme + host + port).
    pub max_per_endpoint: usize,
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// Redis engine: a pending delivery unacknowledged this long is taken over by another node.
    pub claim_after: Duration,
    /// Extra PEM certificates trusted for https endpoints (besides the Mozilla roots).
    pub ca_file: Option<std::path::PathBuf>,
}

/// Every problem found in a configuration, in the order found.
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("\n"))]
pub struct ConfigErrors(pub Vec<String>);

impl Config {
    /// The built-in defaults (what `serve` runs with when given nothing).
    pub fn defaults() -> Self {
        validate(&FileConfig::default()).expect("built-in defaults are valid")
    }

    /// Whether the JWT secret is still the public development default.
    pub fn uses_dev_secret(&self) -> bool {
        self.jwt_secret == DEV_JWT_SECRET
    }
}

/// Reads and parses a TOML file (flags are merged after this, then `validate` runs).
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
    match parse_toml(&text) {
        (file, errors) if errors.is_empty() => Ok(file),
        (_, errors) => Err(ConfigErrors(errors)),
    }
}

/// `check-config`: parses and validates a file on its own, reporting every problem at once.
pub fn check_file(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors(vec![format!("{}: {e}", path.display())]))?;
    let (file, mut errors) = parse_toml(&text);
    match validate(&file) {
        Ok(c) if errors.is_empty() => Ok(c),
        Ok(_) => Err(ConfigErrors(errors)),
        Err(ConfigErrors(more)) => {
            errors.extend(more);
            Err(ConfigErrors(errors))
        }
    }
}

/// Parses TOML text leniently: every unknown section or key and every badly typed value is
/// reported, and the rest is kept (so semantic validation can still report its own errors).
pub fn parse_toml(text: &str) -> (FileConfig, Vec<String>) {
    let mut errors = Vec::new();
    let mut out = FileConfig::default();
    let table: toml::Table = match text.parse() {
        Ok(t) => t,
        Err(e) => {
            let e: toml::de::Error = e;
            errors.push(e.to_string().trim().to_string());
            return (out, errors);
        }
    };
    for (key, value) in table {
        match key.as_str() {
            "server" => section(&key, value, &mut out.server, &mut errors),
            "auth" => section(&key, value, &mut out.auth, &mut errors),
            "websocket" => section(&key, value, &mut out.websocket, &mut errors),
            "http" => section(&key, value, &mut out.http, &mut errors),
            "history" => section(&key, value, &mut out.history, &mut errors),
            "publish" => section(&key, value, &mut out.publish, &mut errors),
            "policies" => section(&key, value, &mut out.policies, &mut errors),
            "socketio" => section(&key, value, &mut out.socketio, &mut errors),
            "presence" => section(&key, value, &mut out.presence, &mut errors),
            "redis" => section(&key, value, &mut out.redis, &mut errors),
            "webhooks" => section(&key, value, &mut out.webhooks, &mut errors),
            "postgres" => section(&key, value, &mut out.postgres, &mut errors),
            "log" => section(&key, value, &mut out.log, &mut errors),
            other => errors.push(format!("unknown section [{other}]")),
        }
    }
    (out, errors)
}

/// Deserializes one section key by key: unknown keys (those the default does not serialize)
/// and badly typed values are each reported; valid keys are applied.
fn section<T>(name: &str, value: toml::Value, slot: &mut T, errors: &mut Vec<String>)
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let toml::Value::Table(table) = value else {
        errors.push(format!("[{name}] must be a table"));
        return;
    };
    let known = match toml::Value::try_from(&*slot) {
        Ok(toml::Value::Table(t)) => t,
        _ => toml::Table::new(),
    };
    let mut good = toml::Table::new();
    for (k, v) in table {
        if !known.contains_key(&k) {
            errors.push(format!("[{name}] unknown key `{k}`"));
            continue;
        }
        let mut one = toml::Table::new();
        one.insert(k.clone(), v.clone());
        match T::deserialize(toml::Value::Table(one)) {
            Ok(_) => {
                good.insert(k, v);
            }
            Err(e) => errors.push(format!("[{name}] {k}: {}", e.message().trim())),
        }
    }
    match T::deserialize(toml::Value::Table(good)) {
        Ok(v) => *slot = v,
        Err(e) => errors.push(format!("[{name}]: {}", e.message().trim())),
    }
}

/// Turns a raw file config into a [`Config`], collecting every error.
pub fn validate(f: &FileConfig) -> Result<Config, ConfigErrors> {
    let mut errs = Vec::new();
    let mut dur = |key: &str, v: &str| -> Duration {
        humantime::parse_duration(v.trim()).unwrap_or_else(|e| {
            errs.push(format!("{key}: invalid duration `{v}`: {e}"));
            Duration::ZERO
        })
    };
    let shutdown_grace = dur("server.shutdown_grace", &f.server.shutdown_grace);
    let auth_timeout = dur("auth.auth_timeout", &f.auth.auth_timeout);
    let ping_interval = dur("websocket.ping_interval", &f.websocket.ping_interval);
    let idle_timeout = dur("websocket.idle_timeout", &f.websocket.idle_timeout);
    let header_timeout = dur("http.header_timeout", &f.http.header_timeout);
    let keepalive_timeout = dur("http.keepalive_timeout", &f.http.keepalive_timeout);
    let history_age = dur("history.max_age", &f.history.max_age);
    let webhook_timeout = dur("webhooks.timeout", &f.webhooks.timeout);
    let webhook_max_age = dur("webhooks.max_age", &f.webhooks.max_age);
    let retry_initial = dur("webhooks.retry_initial", &f.webhooks.retry_initial);
    let retry_max = dur("webhooks.retry_max", &f.webhooks.retry_max);
    let claim_after = dur("webhooks.claim_after", &f.webhooks.claim_after);
    let expire_warning = dur("auth.expire_warning", &f.auth.expire_warning);
    let jwks_refresh = dur("auth.jwks_refresh", &f.auth.jwks_refresh);
    let idempotency_window = dur("publish.idempotency_window", &f.publish.idempotency_window);
    let sio_ping_interval = dur("socketio.ping_interval", &f.socketio.ping_interval);
    let sio_ping_timeout = dur("socketio.ping_timeout", &f.socketio.ping_timeout);
    let presence_heartbeat = dur("presence.heartbeat", &f.presence.heartbeat);
    let presence_ttl = dur("presence.ttl", &f.presence.ttl);

    let listen = f.server.listen.parse::<SocketAddr>().unwrap_or_else(|e| {
        errs.push(format!(
            "server.listen: `{}` is not host:port ({e})",
            f.server.listen
        ));
        SocketAddr::from(([127, 0, 0, 1], 0))
    });
    let engine = match f.server.engine.as_str() {
        "memory" => EngineKind::Memory,
        "redis" => EngineKind::Redis,
        other => {
            errs.push(format!(
                "server.engine: `{other}` is not one of memory, redis"
            ));
            EngineKind::Memory
        }
    };
    let driver = match f.server.driver.as_str() {
        "auto" => DriverKind::Auto,
        "io_uring" | "iouring" => DriverKind::IoUring,
        "legacy" | "epoll" => DriverKind::Legacy,
        other => {
            errs.push(format!(
                "server.driver: `{other}` is not one of auto, io_uring, legacy"
            ));
            DriverKind::Auto
        }
    };
    let send_gate = match f.server.send_gate.as_str() {
        "adaptive" => SendGateMode::Adaptive,
        "always" => SendGateMode::Always,
        other => {
            errs.push(format!(
                "server.send_gate: `{other}` is not one of adaptive, always"
            ));
            SendGateMode::Adaptive
        }
    };
    let log_format = match f.log.format.as_str() {
        "text" => LogFormat::Text,
        "json" => LogFormat::Json,
        other => {
            errs.push(format!("log.format: `{other}` is not one of text, json"));
            LogFormat::Text
        }
    };
    if !crate::log_level_ok(&f.log.level) {
        errs.push(format!(
            "log.level: `{}` is not a valid filter (ASCII `level` or `target=level`, comma-separated, e.g. `info,ringcast=debug`)",
            f.log.level.escape_debug()
        ));
    }
    let redis_url = non_empty(&f.redis.url);
    if engine == EngineKind::Redis {
        match &redis_url {
            None => errs.push("redis.url: required when server.engine = \"redis\"".into()),
            Some(u) if !(u.starts_with("redis://") || u.starts_with("redis-cluster://")) => errs
                .push(format!(
                    "redis.url: `{u}` must start with redis:// or redis-cluster://"
                )),
            _ => {}
        }
    }
    if f.auth.jwt_secret.is_empty() {
        errs.push("auth.jwt_secret: must not be empty".into());
    }
    let (jwt_public_key, jwks_url) = public_keys_section(&f.auth, jwks_refresh, &mut errs);
    let positive = [
        (
            "server.io_uring_entries",
            f.server.io_uring_entries as usize,
        ),
        ("server.engine_queue", f.server.engine_queue),
        ("server.core_queue", f.server.core_queue),
        ("redis.pubsub_buffer", f.redis.pubsub_buffer),
        ("websocket.max_frame_bytes", f.websocket.max_frame_bytes),
        ("websocket.max_payload_bytes", f.websocket.max_payload_bytes),
        ("websocket.max_subscriptions", f.websocket.max_subscriptions),
        ("websocket.publish_rate", f.websocket.publish_rate as usize),
        (
            "websocket.publish_burst",
            f.websocket.publish_burst as usize,
        ),
        (
            "websocket.outbound_queue_frames",
            f.websocket.outbound_queue_frames,
        ),
        (
            "websocket.outbound_queue_bytes",
            f.websocket.outbound_queue_bytes,
        ),
        ("websocket.read_buffer_bytes", f.websocket.read_buffer_bytes),
        ("http.max_header_bytes", f.http.max_header_bytes),
        ("http.max_body_bytes", f.http.max_body_bytes),
        (
            "history.max_messages_per_channel",
            f.history.max_messages_per_channel,
        ),
        ("history.max_total_messages", f.history.max_total_messages),
        ("history.recover_max", f.history.recover_max),
        (
            "publish.idempotency_max_keys",
            f.publish.idempotency_max_keys,
        ),
        ("webhooks.workers", f.webhooks.workers),
        ("webhooks.queue", f.webhooks.queue),
        ("webhooks.max_in_flight", f.webhooks.max_in_flight),
        ("webhooks.max_per_endpoint", f.webhooks.max_per_endpoint),
    ];
    for (key, v) in positive {
        if v == 0 {
            errs.push(format!("{key}: must be greater than 0"));
        }
    }
    if f.server.workers > 64 {
        errs.push("server.workers: at most 64".into());
    }
    if f.websocket.max_payload_bytes > f.websocket.max_frame_bytes {
        errs.push("websocket.max_payload_bytes: must not exceed websocket.max_frame_bytes".into());
    }
    if f.websocket.publish_burst < f.websocket.publish_rate {
        errs.push("websocket.publish_burst: must be at least websocket.publish_rate".into());
    }
    if f.websocket.publish_bytes_rate == 0 {
        errs.push("websocket.publish_bytes_rate: must be greater than 0".into());
    }
    if f.websocket.publish_bytes_burst < f.websocket.publish_bytes_rate
        || f.websocket.publish_bytes_burst < f.websocket.max_payload_bytes as u64
    {
        errs.push(
            "websocket.publish_bytes_burst: must be at least websocket.publish_bytes_rate and websocket.max_payload_bytes".into(),
        );
    }
    if !ping_interval.is_zero() && !idle_timeout.is_zero() && idle_timeout <= ping_interval {
        errs.push("websocket.idle_timeout: must be longer than websocket.ping_interval".into());
    }
    for (key, d) in [
        ("auth.auth_timeout", auth_timeout),
        ("websocket.ping_interval", ping_interval),
        ("websocket.idle_timeout", idle_timeout),
        ("http.header_timeout", header_timeout),
        ("webhooks.timeout", webhook_timeout),
        ("webhooks.max_age", webhook_max_age),
        ("webhooks.retry_initial", retry_initial),
        ("webhooks.retry_max", retry_max),
        ("webhooks.claim_after", claim_after),
        ("publish.idempotency_window", idempotency_window),
        ("socketio.ping_interval", sio_ping_interval),
        ("socketio.ping_timeout", sio_ping_timeout),
        ("presence.heartbeat", presence_heartbeat),
        ("presence.ttl", presence_ttl),
    ] {
        if d.is_zero() && !errs.iter().any(|e| e.starts_with(key)) {
            errs.push(format!("{key}: must be greater than 0"));
        }
    }
    if presence_ttl <= presence_heartbeat * 2 && !errs.iter().any(|e| e.starts_with("presence")) {
        errs.push("presence.ttl: must be more than twice presence.heartbeat".into());
    }
    if !f.auth.anon_key.is_empty() && f.auth.anon_key == f.auth.admin_key {
        errs.push("auth.anon_key: must differ from auth.admin_key".into());
    }
    if f.webhooks.workers > 16 {
        errs.push("webhooks.workers: at most 16".into());
    }
    let ca_file = non_empty(&f.webhooks.ca_file).map(std::path::PathBuf::from);
    if let Some(p) = &ca_file
        && !p.is_file()
    {
        errs.push(format!(
            "webhooks.ca_file: `{}` is not a readable file",
            p.display()
        ));
    }
    let pg = postgres_section(&f.postgres, &mut errs);
    let policies = policies_section(f, &mut errs);
    if !errs.is_empty() {
        return Err(ConfigErrors(errs));
    }
    let workers = if f.server.workers == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        f.server.workers
    };
    let node_id = non_empty(&f.server.node_id)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()[..12].to_string());
    Ok(Config {
        listen,
        workers,
        engine,
        node_id,
        driver,
        io_uring_entries: f.server.io_uring_entries,
        shutdown_grace,
        max_connections: f.server.max_connections,
        engine_queue: f.server.engine_queue,
        core_queue: f.server.core_queue,
        send_slice: f.server.send_slice,
        send_gate,
        jwt_secret: f.auth.jwt_secret.clone(),
        admin_key: non_empty(&f.auth.admin_key),
        anon_key: non_empty(&f.auth.anon_key),
        auth_timeout,
        anon_subscribe: f.auth.anon_subscribe,
        anon_publish: f.auth.anon_publish,
        expire_sessions: f.auth.expire_sessions,
        expire_warning,
        jwt_public_key,
        jwks_url,
        jwks_refresh,
        jwt_issuer: non_empty(&f.auth.jwt_issuer),
        jwt_audience: non_empty(&f.auth.jwt_audience),
        policies,
        max_frame_bytes: f.websocket.max_frame_bytes,
        max_payload_bytes: f.websocket.max_payload_bytes,
        max_subscriptions: f.websocket.max_subscriptions,
        publish_rate: f.websocket.publish_rate,
        publish_burst: f.websocket.publish_burst,
        publish_bytes_rate: f.websocket.publish_bytes_rate,
        publish_bytes_burst: f.websocket.publish_bytes_burst,
        ping_interval,
        idle_timeout,
        outbound_queue_frames: f.websocket.outbound_queue_frames,
        outbound_queue_bytes: f.websocket.outbound_queue_bytes,
        read_buffer_bytes: f.websocket.read_buffer_bytes,
        socketio: f.socketio.enabled,
        sio_ping_interval,
        sio_ping_timeout,
        presence_heartbeat,
        presence_ttl,
        max_header_bytes: f.http.max_header_bytes,
        max_body_bytes: f.http.max_body_bytes,
        header_timeout,
        keepalive_timeout,
        history_per_channel: f.history.max_messages_per_channel,
        history_max_age: (!history_age.is_zero()).then_some(history_age),
        history_max_total: f.history.max_total_messages,
        history_max_bytes: f.history.max_bytes,
        recover_max: f.history.recover_max,
        idempotency_window,
        idempotency_max_keys: f.publish.idempotency_max_keys,
        redis_url,
        redis_pubsub_buffer: f.redis.pubsub_buffer,
        webhooks: WebhookConfig {
            secret: non_empty(&f.webhooks.secret),
            timeout: webhook_timeout,
            max_age: webhook_max_age,
            deny_private: f.webhooks.deny_private_networks,
            workers: f.webhooks.workers,
            queue: f.webhooks.queue,
            max_in_flight: f.webhooks.max_in_flight,
            max_per_endpoint: f.webhooks.max_per_endpoint,
            retry_initial,
            retry_max,
            claim_after,
            ca_file,
        },
        postgres: pg,
        log_level: f.log.level.clone(),
        log_format,
    })
}

/// The policies in force at start, shared by every core (`Debug` prints what `GET
/// /api/realtime/permissions` reports).
#[derive(Clone)]
pub struct Policies(pub std::sync::Arc<crate::policy::PolicySet>);

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.0.policies().iter().map(|p| p.name()).collect();
        f.debug_struct("Policies")
            .field("policies", &names)
            .field("rls", &self.0.rls)
            .finish()
    }
}

/// Builds the policy set of `[policies]`: the built-in defaults (the seed's two policies, with
/// the `auth.anon_*` switches) when `file` is empty, else the file's `CREATE POLICY`
/// statements; row level security per table as configured.
fn policies_section(f: &FileConfig, errs: &mut Vec<String>) -> Policies {
    use crate::policy::{PolicySet, Rls, parse_policies};
    let p = &f.policies;
    let rls = Rls {
        channels: p.rls_channels,
        messages: p.rls_messages,
    };
    let Some(path) = non_empty(&p.file) else {
        let mut set = PolicySet::defaults(f.auth.anon_subscribe, f.auth.anon_publish);
        set.rls = rls;
        return Policies(std::sync::Arc::new(set));
    };
    let mut set = PolicySet::new(rls);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            errs.push(format!("policies.file: {path}: {e}"));
            return Policies(std::sync::Arc::new(set));
        }
    };
    match parse_policies(&text) {
        Ok(list) => {
            for policy in list {
                if let Err(e) = set.add(policy) {
                    errs.push(format!("policies.file: {path}: {e}"));
                }
            }
        }
        Err(e) => {
            for one in e.0 {
                errs.push(format!("policies.file: {path}: {one}"));
            }
        }
    }
    Policies(std::sync::Arc::new(set))
}

/// Checks the public-key settings of `[auth]`: the PEM file (read and parsed now), the JWKS
/// URL (http or https, with a host), the refresh period, and that `jwt_issuer` /
/// `jwt_audience` have a public key to apply to.
fn public_keys_section(
    a: &file::AuthSection,
    refresh: Duration,
    errs: &mut Vec<String>,
) -> (Option<crate::auth::PublicKey>, Option<String>) {
    let key = non_empty(&a.jwt_public_key_file).and_then(|path| {
        let pem = std::fs::read(&path)
            .map_err(|e| errs.push(format!("auth.jwt_public_key_file: `{path}`: {e}")))
            .ok()?;
        crate::auth::PublicKey::from_pem(&pem)
            .map_err(|e| errs.push(format!("auth.jwt_public_key_file: `{path}`: {e}")))
            .ok()
    });
    let url = non_empty(&a.jwks_url);
    if let Some(u) = &url {
        let ok = u.parse::<http::Uri>().ok().is_some_and(|uri| {
            matches!(uri.scheme_str(), Some("http" | "https")) && uri.host().is_some()
        });
        if !ok {
            errs.push(format!(
                "auth.jwks_url: `{u}` is not an http:// or https:// URL with a host"
            ));
        }
    }
    if refresh < Duration::from_secs(1) && !errs.iter().any(|e| e.starts_with("auth.jwks_refresh"))
    {
        errs.push("auth.jwks_refresh: must be at least 1s".into());
    }
    let no_key = a.jwt_public_key_file.trim().is_empty() && url.is_none();
    for (k, v) in [
        ("jwt_issuer", &a.jwt_issuer),
        ("jwt_audience", &a.jwt_audience),
    ] {
        if no_key && !v.trim().is_empty() {
            errs.push(format!(
                "auth.{k}: checked on public-key tokens only; set auth.jwt_public_key_file or \
                 auth.jwks_url"
            ));
        }
    }
    (key, url)
}

/// Validates `[postgres]`; `None` when `url` is empty (the change stream is off).
fn postgres_section(p: &file::PostgresSection, errs: &mut Vec<String>) -> Option<PostgresConfig> {
    let url = non_empty(&p.url)?;
    let parsed = postgres::parse_url(&url)
        .map_err(|e| errs.push(format!("postgres.url: {e}")))
        .ok();
    for (key, v) in [("publication", &p.publication), ("slot", &p.slot)] {
        if !postgres::valid_identifier(v) {
            errs.push(format!(
                "postgres.{key}: `{v}` must be 1-63 lowercase letters, digits or `_`, not \
                 starting with a digit"
            ));
        }
    }
    let tables = postgres::parse_tables(&p.tables)
        .map_err(|e| errs.push(format!("postgres.tables: {e}")))
        .ok();
    let (u, tables) = (parsed?, tables?);
    Some(PostgresConfig {
        host: u.host,
        port: u.port,
        user: u.user,
        password: u.password,
        dbname: u.dbname,
        publication: p.publication.clone(),
        slot: p.slot.clone(),
        tables,
    })
}

fn non_empty(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_validate() {
        let c = Config::defaults();
        assert!(c.uses_dev_secret());
        assert_eq!(c.max_frame_bytes, 1 << 20);
        assert_eq!(c.engine, EngineKind::Memory);
    }

    /// Found by the `config` fuzz target: tracing-subscriber's filter parser slices inside a
    /// multi-byte character and panics, so `check-config` and `serve` crashed on such a level;
    /// and a span field filter compiles a regular expression (over 10 s for one input).
    #[test]
    fn a_log_level_outside_the_simple_syntax_is_an_error() {
        for ok in [
            "info",
            "warn,ringcast=debug",
            "ringcast::core=trace, info",
            "OFF",
        ] {
            let mut f = FileConfig::default();
            f.log.level = ok.to_string();
            assert!(validate(&f).is_ok(), "{ok}");
        }
        for level in [
            "inf \u{99}\u{99}=106n",
            "info,ringcast=débug",
            "é",
            "info,[{x=a+}]=debug",
        ] {
            let mut f = FileConfig::default();
            f.log.level = level.to_string();
            let errs = validate(&f).unwrap_err().0.join("\n");
            assert!(errs.contains("log.level"), "{level}: {errs}");
        }
    }

    #[test]
    fn reports_every_error_at_once() {
        let text = r#"
            [server]
            listen = "nope"
            bogus = 1
            workers = "two"
            [websocket]
            ping_interval = "soon"
            [nosuch]
            x = 1
        "#;
        let (f, mut errs) = parse_toml(text);
        errs.extend(validate(&f).unwrap_err().0);
        let all = errs.join("\n");
        assert!(all.contains("bogus"), "{all}");
        assert!(all.contains("nosuch"), "{all}");
        assert!(all.contains("server.listen"), "{all}");
        assert!(all.contains("websocket.ping_interval"), "{all}");
        assert!(all.contains("workers"), "{all}");
        assert_eq!(errs.len(), 5, "{all}");
    }

    #[test]
    fn webhook_settings_are_checked() {
        let mut f = FileConfig::default();
        f.webhooks.workers = 17;
        f.webhooks.queue = 0;
        f.webhooks.max_age = "0s".into();
        f.webhooks.retry_initial = "soon".into();
        f.webhooks.ca_file = "/nonexistent/ca.pem".into();
        let all = validate(&f).unwrap_err().0.join("\n");
        for key in [
            "webhooks.workers: at most 16",
            "webhooks.queue: must be greater than 0",
            "webhooks.max_age: must be greater than 0",
            "webhooks.retry_initial: invalid duration",
            "webhooks.ca_file: `/nonexistent/ca.pem` is not a readable file",
        ] {
            assert!(all.contains(key), "{key} missing from:\n{all}");
        }
        let ok = Config::defaults().webhooks;
        assert_eq!(ok.timeout, Duration::from_secs(10));
        assert_eq!(ok.max_age, Duration::from_secs(300));
        assert!(ok.secret.is_none() && !ok.deny_private);
    }

    #[test]
    fn semantic_errors_are_all_listed() {
        let mut f = FileConfig::default();
        f.server.listen = "nope".into();
        f.websocket.ping_interval = "soon".into();
        f.server.engine = "redis".into();
        let errs = validate(&f).unwrap_err().0;
        assert_eq!(errs.len(), 3, "{errs:?}");
    }

    #[test]
    fn send_gate_is_adaptive_or_always() {
        let mut f = FileConfig::default();
        assert_eq!(validate(&f).unwrap().send_gate, SendGateMode::Adaptive);
        f.server.send_gate = "always".into();
        assert_eq!(validate(&f).unwrap().send_gate, SendGateMode::Always);
        f.server.send_gate = "sometimes".into();
        let errs = validate(&f).unwrap_err().0;
        assert_eq!(
            errs,
            vec!["server.send_gate: `sometimes` is not one of adaptive, always".to_string()]
        );
    }

    #[test]
    fn postgres_section_is_checked_and_hides_its_password() {
        let mut f = FileConfig::default();
        assert!(
            validate(&f).unwrap().postgres.is_none(),
            "off without a url"
        );
        f.postgres.url = "postgres://rc:hunter2@db:6543/app".into();
        f.postgres.tables = vec!["public.posts".into(), "users".into()];
        let c = validate(&f).unwrap();
        let pg = c.postgres.as_ref().unwrap();
        assert_eq!(
            (pg.host.as_str(), pg.port, pg.dbname.as_str()),
            ("db", 6543, "app")
        );
        assert_eq!(
            pg.tables,
            Tables::List(vec![
                ("public".into(), "posts".into()),
                ("public".into(), "users".into()),
            ])
        );
        assert!(
            !format!("{c:?}").contains("hunter2"),
            "the password is never printed"
        );
        assert!(!format!("{f:?}").contains("hunter2"));
        f.postgres.url = "postgres://rc:hunter2@db/app?sslmode=require".into();
        f.postgres.tables = vec![];
        f.postgres.slot = "Bad-Slot".into();
        let errs = validate(&f).unwrap_err().0;
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs.iter()
                .all(|e| e.starts_with("postgres.") && !e.contains("hunter2"))
        );
    }

    #[test]
    fn public_key_settings_are_checked_and_every_error_listed() {
        let c = Config::defaults();
        assert!(c.jwt_public_key.is_none() && c.jwks_url.is_none());
        assert_eq!(c.jwks_refresh, Duration::from_secs(300));
        let dir = std::env::temp_dir().join(format!("ringcast-cfg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let bad = dir.join("bad.pem");
        std::fs::write(
            &bad,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
        )
        .unwrap();
        let mut f = FileConfig::default();
        f.auth.jwt_public_key_file = bad.display().to_string();
        f.auth.jwks_url = "ftp://keys.example/jwks.json".into();
        f.auth.jwks_refresh = "10ms".into();
        let errs = validate(&f).unwrap_err().0;
        assert_eq!(errs.len(), 3, "{errs:?}");
        assert!(
            errs[0].starts_with("auth.jwt_public_key_file: `"),
            "{errs:?}"
        );
        assert!(errs[0].contains("not an RSA, EC P-256 or Ed25519 public key"));
        assert!(errs[1].starts_with("auth.jwks_url: `ftp://"), "{errs:?}");
        assert!(errs[2].starts_with("auth.jwks_refresh"), "{errs:?}");
        let mut f = FileConfig::default();
        f.auth.jwt_public_key_file = dir.join("missing.pem").display().to_string();
        f.auth.jwks_url = "not a url".into();
        let errs = validate(&f).unwrap_err().0;
        assert_eq!(errs.len(), 2, "{errs:?}");
        let mut f = FileConfig::default();
        f.auth.jwt_issuer = "https://issuer".into();
        f.auth.jwt_audience = "app".into();
        let errs = validate(&f).unwrap_err().0;
        assert_eq!(errs.len(), 2, "{errs:?}");
        f.auth.jwks_url = "https://issuer/.well-known/jwks.json".into();
        let c = validate(&f).unwrap();
        assert_eq!(
            c.jwks_url.as_deref(),
            Some("https://issuer/.well-known/jwks.json")
        );
        assert_eq!(c.jwt_issuer.as_deref(), Some("https://issuer"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn redis_pubsub_buffer_defaults_to_64k_and_must_be_positive() {
        let mut f = FileConfig::default();
        assert_eq!(validate(&f).unwrap().redis_pubsub_buffer, 65_536);
        f.redis.pubsub_buffer = 0;
        let errs = validate(&f).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("redis.pubsub_buffer"), "{errs:?}");
    }

    #[test]
    fn continuity_settings_have_defaults_and_are_checked() {
        let c = Config::defaults();
        assert!(c.expire_sessions);
        assert_eq!(c.expire_warning, Duration::from_secs(60));
        assert_eq!(c.recover_max, 10_000);
        assert_eq!(c.idempotency_window, Duration::from_secs(300));
        let (f, errs) = parse_toml(
            "[publish]\nidempotency_window = \"soon\"\nidempotency_max_keys = 0\n[history]\nrecover_max = 0\n[auth]\nexpire_warning = \"0s\"\nexpire_sessions = false",
        );
        assert!(errs.is_empty(), "{errs:?}");
        assert!(!f.auth.expire_sessions);
        let errs = validate(&f).unwrap_err().0;
        for key in [
            "publish.idempotency_window",
            "publish.idempotency_max_keys",
            "history.recover_max",
        ] {
            assert!(errs.iter().any(|e| e.starts_with(key)), "{key}: {errs:?}");
        }
        assert!(
            !errs.iter().any(|e| e.starts_with("auth.expire_warning")),
            "0s: warn at exp"
        );
    }
}
