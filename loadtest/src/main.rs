//! `ringcast-loadtest`: parses the command line, runs one mode, prints its report (table or
//! JSON) and turns the verdict into the exit code: 0 ok, 1 the run found a problem (loss,
//! duplicates, reordering, failed connections; for `webhook-sink`: nothing or too little
//! received), 2 the run could not start, 3 hard deadline.

mod buckets;
mod cli;
mod conn;
mod http1;
mod httpd;
mod modes;
mod payload;
mod plot;
mod procstat;
mod progress;
mod rawws;
mod report;
mod rest;
mod runner;
mod scan;
mod shared;
mod sio;
mod stats;
mod target;
mod token;

use std::process::ExitCode;

use clap::Parser;
use cli::{Cli, Mode};
use report::Outcome;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.mode {
        Mode::Fanout(a) => {
            let json = a.common.json;
            let plot = a.plot.clone().map(|p| {
                let title = format!(
                    "fanout: {} subscribers, {} channel(s), {} publisher(s) at {} msg/s, {} B",
                    a.subs, a.channels, a.publishers, a.rate, a.size
                );
                (p, title)
            });
            let r = modes::fanout::run_fanout(a);
            if let (Some((path, title)), Ok(report)) = (&plot, &r) {
                match plot::write(path, title, &report.latency_by_second) {
                    Ok(()) => eprintln!("plot written to {}", path.display()),
                    Err(e) => eprintln!("ringcast-loadtest: {e:#}"),
                }
            }
            finish(json, r)
        }
        Mode::Publish(a) => finish(a.common.json, modes::fanout::run_publish(a)),
        Mode::Idle(a) => finish(a.common.json, modes::conns::run_idle(a)),
        Mode::Connect(a) => finish(a.common.json, modes::conns::run_connect(a)),
        Mode::WebhookSink(a) => finish(a.json, modes::webhook_sink::run(a)),
        Mode::Db(a) => finish(a.json, modes::db::run(a)),
        Mode::HttpPublish(a) => finish(a.common.json, modes::http_publish::run(a)),
        Mode::Recover(a) => finish(a.common.json, modes::recover::run(a)),
        Mode::Presence(a) => finish(a.common.json, modes::presence::run(a)),
    }
}

/// Prints the report (or the error) and picks the exit code.
fn finish<R: Outcome>(json: bool, result: anyhow::Result<R>) -> ExitCode {
    match result {
        Ok(r) => {
            if json {
                if let Err(e) = r.print_json() {
                    eprintln!("ringcast-loadtest: {e:#}");
                    return ExitCode::from(2);
                }
            } else {
                r.print_table();
            }
            if r.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("ringcast-loadtest: {e:#}");
            ExitCode::from(2)
        }
    }
}
