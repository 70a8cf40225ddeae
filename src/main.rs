//! The `ringcast` binary: `serve` (default), `check-config`, `token`.
//! The only place that exits the process.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use ringcast::config::{
    self, Config, FileConfig,
    cli::{Cli, Command, ServeArgs, TokenArgs},
};
use signal_hook::{
    consts::{SIGINT, SIGTERM},
    iterator::Signals,
};

/// jemalloc, not glibc's malloc: the publish path allocates and frees small objects across
/// threads at a high rate, where glibc spent ~30 % of a core thread (its per-thread cache is
/// 7 chunks per size; past that, locked arenas and `malloc_consolidate`). Same idle memory per
/// connection, ~1.9x the acknowledged publishes/s (BENCHMARKS.md, "Acknowledged publishes (memory engine)").
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        None => serve(ServeArgs::default()),
        Some(Command::Serve(a)) => serve(*a),
        Some(Command::CheckConfig { config }) => return check_config(&config),
        Some(Command::Token(t)) => token(t),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ringcast: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn load(args: &ServeArgs) -> anyhow::Result<Config> {
    let mut file = match &args.config {
        Some(p) => config::load_file(p).map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))?,
        None => FileConfig::default(),
    };
    args.apply(&mut file);
    config::validate(&file).map_err(|e| anyhow::anyhow!("invalid config:\n{e}"))
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let cfg = load(&args)?;
    ringcast::init_logging(&cfg.log_level, cfg.log_format);
    if cfg.uses_dev_secret() {
        tracing::warn!(
            "JWT secret is the public development default: anyone can mint tokens. \
             Set --jwt-secret / RINGCAST_JWT_SECRET / auth.jwt_secret before exposing this node."
        );
    }
    let grace = cfg.shutdown_grace;
    let mut signals = Signals::new([SIGTERM, SIGINT]).context("installing signal handlers")?;
    let handle = ringcast::start(cfg).context("starting ringcast")?;
    tracing::info!(
        addr = %handle.addr(),
        workers = handle.drivers().len(),
        drivers = ?handle.drivers(),
        "ringcast listening"
    );
    if let Some(sig) = signals.forever().next() {
        tracing::info!(signal = sig, "shutting down");
    }
    // A second signal, or the grace period running out, ends the process regardless.
    std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + grace + Duration::from_secs(2);
        loop {
            if signals.pending().next().is_some() || std::time::Instant::now() > deadline {
                eprintln!("ringcast: forced exit");
                std::process::exit(1);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    handle.shutdown();
    tracing::info!("stopped");
    Ok(())
}

fn check_config(path: &std::path::Path) -> ExitCode {
    let result = config::check_file(path);
    match result {
        Ok(_) => {
            println!("{}: ok", path.display());
            ExitCode::SUCCESS
        }
        Err(e) => {
            for line in &e.0 {
                eprintln!("error: {line}");
            }
            eprintln!("{}: {} error(s)", path.display(), e.0.len());
            ExitCode::FAILURE
        }
    }
}

fn token(t: TokenArgs) -> anyhow::Result<()> {
    if ringcast::auth::Role::parse(&t.role).is_none() {
        anyhow::bail!("--role must be one of anon, authenticated, project_admin");
    }
    let ttl = humantime::parse_duration(&t.ttl).context("--ttl")?;
    println!(
        "{}",
        ringcast::auth::mint(&t.secret, &t.sub, &t.role, ttl, t.email.as_deref())
    );
    Ok(())
}
