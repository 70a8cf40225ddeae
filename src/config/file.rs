//! Raw configuration as it appears in `config/ringcast.toml`: serde types with defaults.
//!
//! Owns the on-disk shape only. Durations are strings here ("25s", "1h") and are parsed
//! during validation (`config::validate`), so every error can be reported at once.
//! Unknown keys are errors: `config::parse_toml` lists every one of them (known keys are the
//! ones the defaults serialize), and `deny_unknown_fields` backs that up.

use serde::{Deserialize, Serialize};

/// The whole file. Every section is optional; a missing key takes its default.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    pub server: ServerSection,
    pub auth: AuthSection,
    pub websocket: WebSocketSection,
    pub http: HttpSection,
    pub history: HistorySection,
    pub publish: PublishSection,
    pub policies: PoliciesSection,
    pub socketio: SocketIoSection,
    pub presence: PresenceSection,
    pub redis: RedisSection,
    pub webhooks: WebhookSection,
    pub postgres: PostgresSection,
    pub log: LogSection,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    pub listen: String,
    pub workers: usize,
    pub engine: String,
    pub node_id: String,
    pub driver: String,
    pub io_uring_entries: u32,
    pub shutdown_grace: String,
    pub max_connections: usize,
    pub engine_queue: usize,
    pub core_queue: usize,
    pub send_slice: usize,
    pub send_gate: String,
}

impl Default for ServerSection {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8080".into(),
            workers: 0,
            engine: "memory".into(),
            node_id: String::new(),
            driver: "auto".into(),
            io_uring_entries: 1024,
            shutdown_grace: "10s".into(),
            max_connections: 0,
            engine_queue: 65_536,
            core_queue: 16_384,
            send_slice: 128,
            send_gate: "adaptive".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSection {
    pub jwt_secret: String,
    pub admin_key: String,
    pub anon_key: String,
    pub auth_timeout: String,
    pub anon_subscribe: bool,
    pub anon_publish: bool,
    pub expire_sessions: bool,
    pub expire_warning: String,
    pub jwt_public_key_file: String,
    pub jwks_url: String,
    pub jwks_refresh: String,
    pub jwt_issuer: String,
    pub jwt_audience: String,
}

/// The development secret `serve` falls back to, with a loud warning.
pub const DEV_JWT_SECRET: &str = "ringcast-dev-secret-change-me";

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            jwt_secret: DEV_JWT_SECRET.into(),
            admin_key: String::new(),
            anon_key: String::new(),
            auth_timeout: "10s".into(),
            anon_subscribe: false,
            anon_publish: false,
            expire_sessions: true,
            expire_warning: "60s".into(),
            jwt_public_key_file: String::new(),
            jwks_url: String::new(),
            jwks_refresh: "5m".into(),
            jwt_issuer: String::new(),
            jwt_audience: String::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebSocketSection {
    pub max_frame_bytes: usize,
    pub max_payload_bytes: usize,
    pub max_subscriptions: usize,
    pub publish_rate: u32,
    pub publish_burst: u32,
    pub publish_bytes_rate: u64,
    pub publish_bytes_burst: u64,
    pub ping_interval: String,
    pub idle_timeout: String,
    pub outbound_queue_frames: usize,
    pub outbound_queue_bytes: usize,
    pub read_buffer_bytes: usize,
}

impl Default for WebSocketSection {
    fn default() -> Self {
        Self {
            max_frame_bytes: 1 << 20,
            max_payload_bytes: 256 << 10,
            max_subscriptions: 256,
            publish_rate: 1000,
            publish_burst: 2000,
            publish_bytes_rate: 4 << 20,
            publish_bytes_burst: 16 << 20,
            ping_interval: "25s".into(),
            idle_timeout: "60s".into(),
            outbound_queue_frames: 4096,
            outbound_queue_bytes: 4 << 20,
            read_buffer_bytes: 512,
        }
    }
}

/// `[socketio]`: the Socket.IO front end at `/socket.io/` (the InsForge SDK's protocol).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SocketIoSection {
    pub enabled: bool,
    pub ping_interval: String,
    pub ping_timeout: String,
}

impl Default for SocketIoSection {
    fn default() -> Self {
        Self {
            enabled: true,
            ping_interval: "25s".into(),
            ping_timeout: "20s".into(),
        }
    }
}

/// `[presence]`: who is subscribed to a channel, shared by every node (redis engine).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceSection {
    pub heartbeat: String,
    pub ttl: String,
}

impl Default for PresenceSection {
    fn default() -> Self {
        Self {
            heartbeat: "5s".into(),
            ttl: "15s".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpSection {
    pub max_header_bytes: usize,
    pub max_body_bytes: usize,
    pub header_timeout: String,
    pub keepalive_timeout: String,
}

impl Default for HttpSection {
    fn default() -> Self {
        Self {
            max_header_bytes: 16 << 10,
            max_body_bytes: 1 << 20,
            header_timeout: "10s".into(),
            keepalive_timeout: "60s".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HistorySection {
    pub max_messages_per_channel: usize,
    pub max_age: String,
    pub max_total_messages: usize,
    pub max_bytes: usize,
    pub recover_max: usize,
}

impl Default for HistorySection {
    fn default() -> Self {
        Self {
            max_messages_per_channel: 10_000,
            max_age: "24h".into(),
            max_total_messages: 1_000_000,
            max_bytes: 256 << 20,
            recover_max: 10_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoliciesSection {
    pub file: String,
    pub rls_channels: bool,
    pub rls_messages: bool,
}

impl Default for PoliciesSection {
    fn default() -> Self {
        Self {
            file: String::new(),
            rls_channels: true,
            rls_messages: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PublishSection {
    pub idempotency_window: String,
    pub idempotency_max_keys: usize,
}

impl Default for PublishSection {
    fn default() -> Self {
        Self {
            idempotency_window: "5m".into(),
            idempotency_max_keys: 1_000_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisSection {
    pub url: String,
    pub pubsub_buffer: usize,
}

impl Default for RedisSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            pubsub_buffer: 65_536,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhookSection {
    pub secret: String,
    pub timeout: String,
    pub max_age: String,
    pub deny_private_networks: bool,
    pub workers: usize,
    pub queue: usize,
    pub max_in_flight: usize,
    pub max_per_endpoint: usize,
    pub retry_initial: String,
    pub retry_max: String,
    pub claim_after: String,
    pub ca_file: String,
}

impl Default for WebhookSection {
    fn default() -> Self {
        Self {
            secret: String::new(),
            timeout: "10s".into(),
            max_age: "5m".into(),
            deny_private_networks: false,
            workers: 1,
            queue: 65_536,
            max_in_flight: 1024,
            max_per_endpoint: 16,
            retry_initial: "1s".into(),
            retry_max: "60s".into(),
            claim_after: "30s".into(),
            ca_file: String::new(),
        }
    }
}

/// The database change stream (`cdc`); off while `url` is empty.
#[derive(Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresSection {
    pub url: String,
    pub publication: String,
    pub slot: String,
    pub tables: Vec<String>,
}

impl std::fmt::Debug for PostgresSection {
    // The URL holds the password: never print it.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSection")
            .field("url", &if self.url.is_empty() { "" } else { "<set>" })
            .field("publication", &self.publication)
            .field("slot", &self.slot)
            .field("tables", &self.tables)
            .finish()
    }
}

impl Default for PostgresSection {
    fn default() -> Self {
        Self {
            url: String::new(),
            publication: "ringcast".into(),
            slot: "ringcast".into(),
            tables: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    pub level: String,
    pub format: String,
}

impl Default for LogSection {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: "text".into(),
        }
    }
}
