//! The command line (clap). Every `serve` flag also reads `RINGCAST_<FLAG>`; flags win over env,
//! and both win over the config file (`Cli::apply` merges them into a `FileConfig`).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use super::FileConfig;

#[derive(Debug, Parser)]
#[command(
    name = "ringcast",
    version,
    about = "Thread-per-core WebSocket pub/sub broker"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker (the default when no subcommand is given).
    Serve(Box<ServeArgs>),
    /// Validate a config file, print every error at once, exit 0 (valid) or 1.
    CheckConfig {
        #[arg(long, env = "RINGCAST_CONFIG")]
        config: PathBuf,
    },
    /// Mint an HS256 JWT for tests and development.
    Token(TokenArgs),
}

#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    #[arg(long, env = "RINGCAST_CONFIG")]
    pub config: Option<PathBuf>,
    #[arg(long, env = "RINGCAST_LISTEN")]
    pub listen: Option<String>,
    #[arg(long, env = "RINGCAST_WORKERS")]
    pub workers: Option<usize>,
    #[arg(long, env = "RINGCAST_ENGINE")]
    pub engine: Option<String>,
    #[arg(long, env = "RINGCAST_REDIS_URL")]
    pub redis_url: Option<String>,
    #[arg(long, env = "RINGCAST_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    #[arg(long, env = "RINGCAST_ADMIN_KEY", hide_env_values = true)]
    pub admin_key: Option<String>,
    /// A static key that authenticates as `anon` (InsForge's anon key).
    #[arg(long, env = "RINGCAST_ANON_KEY", hide_env_values = true)]
    pub anon_key: Option<String>,
    #[arg(long, env = "RINGCAST_NODE_ID")]
    pub node_id: Option<String>,
    #[arg(long, env = "RINGCAST_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// PostgreSQL to read database changes from (`[postgres] url`), e.g.
    /// postgres://ringcast:secret@127.0.0.1:5432/app.
    #[arg(long, env = "RINGCAST_POSTGRES_URL", hide_env_values = true)]
    pub postgres_url: Option<String>,
    /// monoio driver: auto (io_uring, falling back to legacy), io_uring, legacy.
    #[arg(long, env = "RINGCAST_DRIVER")]
    pub driver: Option<String>,
    /// Log filter, e.g. `info` or `ringcast=debug`.
    #[arg(long, env = "RINGCAST_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Log format: text or json.
    #[arg(long, env = "RINGCAST_LOG_FORMAT")]
    pub log_format: Option<String>,
}

#[derive(Debug, Args)]
pub struct TokenArgs {
    #[arg(long, env = "RINGCAST_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
    #[arg(long)]
    pub sub: String,
    #[arg(long, default_value = "authenticated")]
    pub role: String,
    /// Lifetime, e.g. 1h, 15m; `0s` mints a token without `exp`.
    #[arg(long, default_value = "1h")]
    pub ttl: String,
    #[arg(long)]
    pub email: Option<String>,
}

impl ServeArgs {
    /// Merges flags (and their env fallbacks) over a file config.
    pub fn apply(&self, f: &mut FileConfig) {
        let set = |slot: &mut String, v: &Option<String>| {
            if let Some(v) = v {
                *slot = v.clone();
            }
        };
        set(&mut f.server.listen, &self.listen);
        set(&mut f.server.engine, &self.engine);
        set(&mut f.redis.url, &self.redis_url);
        set(&mut f.auth.jwt_secret, &self.jwt_secret);
        set(&mut f.auth.admin_key, &self.admin_key);
        set(&mut f.auth.anon_key, &self.anon_key);
        set(&mut f.server.node_id, &self.node_id);
        set(&mut f.webhooks.secret, &self.webhook_secret);
        set(&mut f.postgres.url, &self.postgres_url);
        set(&mut f.server.driver, &self.driver);
        set(&mut f.log.level, &self.log_level);
        set(&mut f.log.format, &self.log_format);
        if let Some(w) = self.workers {
            f.server.workers = w;
        }
    }
}
