//! The dashboard (`/dashboard`) in a real browser: `tests/dashboard/check.mjs` drives Debian's
//! headless Chromium through playwright-core against a live node and does what an operator
//! does: signs in, creates and edits a channel, watches a published message arrive in the live
//! tail, pauses and filters it, finds the message in history, sees the stats and the node's
//! figures move, reads the policies, disables the channel, and checks every page on a
//! phone-sized screen. Screenshots go to `target/dashboard-shots/` (the ones in `docs/`
//! are copies).
//!
//! Needs Node.js 20+ and npm (playwright-core is installed with `npm ci` when missing) and
//! Chromium at /usr/bin/chromium (`scripts/test` installs Debian's `chromium`).

mod common;

use std::{
    path::Path,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use common::{ADMIN_KEY, TestServer};
use serde_json::Value;

#[test]
fn an_operator_uses_the_dashboard_in_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} not found: run scripts/test (it installs Debian's chromium), or set CHROMIUM"
    );
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dashboard");
    common::npm::ensure(&dir, &["playwright-core"]);
    let s = TestServer::start("io_uring");
    let shots = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/dashboard-shots");
    let start = Instant::now();
    let out = Command::new("node")
        .arg("check.mjs")
        .arg(format!("http://{}", s.addr))
        .arg(ADMIN_KEY)
        .arg(&shots)
        .env("CHROMIUM", &chromium)
        .current_dir(&dir)
        .stdin(Stdio::null())
        .output()
        .expect("node");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut passed = 0;
    let mut failures = Vec::new();
    for line in stdout.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        match v["ok"].as_bool() {
            Some(true) => passed += 1,
            Some(false) => failures.push(format!("{}: {}", v["check"], v["detail"])),
            None => {}
        }
    }
    eprintln!(
        "dashboard: {passed} checks passed in {:.1?}",
        start.elapsed()
    );
    assert!(
        failures.is_empty() && out.status.success(),
        "dashboard checks failed:\n{}\nstdout:\n{stdout}\nstderr:\n{}",
        failures.join("\n"),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(passed, 13, "every check ran:\n{stdout}");
    assert!(start.elapsed() < Duration::from_secs(120));
    s.shutdown();
}
