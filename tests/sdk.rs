//! The official InsForge SDK (`@insforge/sdk` 1.5.2 from npm, Socket.IO at `/socket.io/`)
//! against real ringcast nodes, through its public API only: `tests/sdk/check.mjs` connects,
//! subscribes, watches presence, publishes, is refused, connects with the anon key and the
//! admin key, talks to a raw ringcast-protocol client, and reconnects and resubscribes by
//! itself across a node restart. It prints one JSON line per check and `RESTART` when the node
//! it is connected to should restart; this side does the restart and answers by creating
//! `RESTART_DONE_FILE`.
//!
//! Needs Node.js 20+ and npm: the npm packages are installed (`npm ci`, from
//! `tests/sdk/package-lock.json`) when `tests/sdk/node_modules` is missing.

mod common;

use std::{
    io::{BufRead, BufReader, Read},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use common::{redis::RedisServer, *};
use ringcast::config::FileConfig;
use serde_json::{Value, json};

/// InsForge keeps user ids in `uuid` columns: the subs are UUIDs.
const USER_A: &str = "0b6f5c1e-2a4d-4e8f-9c3b-1a2b3c4d5e01";
const USER_B: &str = "0b6f5c1e-2a4d-4e8f-9c3b-1a2b3c4d5e02";
const ANON_KEY: &str = "anon_test";
/// `createAdminClient({apiKey})` sends the key as `auth.token`; InsForge's keys start `ik_`.
const SDK_ADMIN_KEY: &str = "ik_test_admin";
const PATTERN: &str = "room:*";
const REFUSED: &str = "nomatch:1";
/// Past the script's own overall timeout (90 s).
const RUN_LIMIT: Duration = Duration::from_secs(150);

fn sdk_config(f: &mut FileConfig) {
    f.auth.admin_key = SDK_ADMIN_KEY.into();
    f.auth.anon_key = ANON_KEY.into();
    // The anon key authenticates as role `anon`, which subscribes only with this.
    f.auth.anon_subscribe = true;
}

fn sdk_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk")
}

fn npm_deps() {
    common::npm::ensure(&sdk_dir(), &["@insforge/sdk", "ws"]);
}

fn rest(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    http(addr, method, path, Some(SDK_ADMIN_KEY), body)
}

fn create_pattern(node: &TestServer) {
    let (s, v) = rest(
        node.addr,
        "POST",
        "/api/realtime/channels",
        Some(json!({ "pattern": PATTERN })),
    );
    assert_eq!(s, 201, "{v}");
}

/// Waits until `node`'s registry holds the pattern (redis: propagated, or loaded at start).
fn wait_pattern(node: &TestServer) {
    eventually(
        "channel pattern on the node",
        Duration::from_secs(5),
        || {
            let (_, list) = rest(node.addr, "GET", "/api/realtime/channels", None);
            list.as_array()
                .is_some_and(|l| l.iter().any(|c| c["pattern"] == PATTERN))
        },
    );
}

/// Kills the script if the test fails first.
struct Script(Child);

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Run {
    status: ExitStatus,
    stdout: Vec<String>,
    stderr: String,
}

/// Runs `check.mjs` with `env`; calls `restart` when it asks for one, then creates the file
/// it waits for.
fn run_script(name: &str, env: &[(&str, String)], mut restart: impl FnMut()) -> Run {
    npm_deps();
    let done = std::env::temp_dir().join(format!(
        "ringcast-sdk-{}-{name}.restarted",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&done);
    let mut child = Script(
        Command::new("node")
            .arg("check.mjs")
            .current_dir(sdk_dir())
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("RESTART_DONE_FILE", &done)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run node"),
    );
    let stdout = child.0.stdout.take().unwrap();
    let mut stderr = child.0.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let errors = thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + RUN_LIMIT;
    let mut lines = Vec::new();
    loop {
        match rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            Ok(line) => {
                println!("{line}");
                if line.trim() == "RESTART" {
                    restart();
                    std::fs::write(&done, b"").unwrap();
                }
                lines.push(line);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = child.0.kill();
                println!("<killed: still running after {RUN_LIMIT:?}>");
                break;
            }
        }
    }
    let status = child.0.wait().unwrap();
    let _ = std::fs::remove_file(&done);
    Run {
        status,
        stdout: lines,
        stderr: errors.join().unwrap_or_default(),
    }
}

/// Every check passed, the reconnect check included.
fn assert_passed(run: &Run) {
    let checks: Vec<Value> = run
        .stdout
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("check").is_some())
        .collect();
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c["ok"] != true)
        .map(|c| c.to_string())
        .collect();
    let restarted = checks.iter().any(|c| c["check"] == "reconnect_resubscribe");
    assert!(
        run.status.success() && failed.is_empty() && restarted && checks.len() > 1,
        "@insforge/sdk check failed ({}; restart check ran: {restarted}; the script's whole \
         stdout is above):\nfailed checks:\n{}\n--- stderr ---\n{}",
        run.status,
        failed.join("\n"),
        run.stderr
    );
}

fn script_env(
    sdk: &TestServer,
    b: &TestServer,
    raw: &TestServer,
    channel: &str,
) -> Vec<(&'static str, String)> {
    vec![
        ("BASE_URL", format!("http://{}", sdk.addr)),
        ("BASE_URL_B", format!("http://{}", b.addr)),
        ("RAW_URL", format!("ws://{}/realtime", raw.addr)),
        ("JWT_A", token(USER_A, "authenticated")),
        ("JWT_B", token(USER_B, "authenticated")),
        ("ANON_KEY", ANON_KEY.into()),
        ("ADMIN_KEY", SDK_ADMIN_KEY.into()),
        ("CHANNEL", channel.into()),
        ("REFUSED", REFUSED.into()),
    ]
}

both_drivers!(sdk_memory_engine, |driver| {
    let node = || TestServer::builder(driver).with(sdk_config);
    let mut server = Some(node().start());
    let s = server.as_ref().unwrap();
    create_pattern(s);
    let env = script_env(s, s, s, &format!("room:sdk-{driver}"));
    let run = run_script(&format!("memory-{driver}"), &env, || {
        let old = server.take().unwrap();
        let addr = old.addr;
        old.shutdown();
        let new = node().start_on(addr);
        // The memory engine forgot the channels: back before the SDK's first retry (>= 0.5 s).
        create_pattern(&new);
        server = Some(new);
    });
    assert_passed(&run);
});

/// SDK clients A, the anon and the admin client on node 1; SDK client B and the raw client on
/// node 2: presence and messages cross nodes through Redis. Node 1 restarts.
#[test]
fn sdk_two_redis_nodes() {
    let redis = RedisServer::start();
    let url = redis.url();
    let node1 = || TestServer::builder("io_uring").redis(&url).with(sdk_config);
    let mut first = Some(node1().start());
    let second = TestServer::builder("legacy")
        .redis(&url)
        .with(sdk_config)
        .start();
    create_pattern(first.as_ref().unwrap());
    wait_pattern(&second);
    let env = script_env(first.as_ref().unwrap(), &second, &second, "room:sdk-redis");
    let run = run_script("redis", &env, || {
        let old = first.take().unwrap();
        let addr = old.addr;
        old.shutdown();
        let new = node1().start_on(addr);
        wait_pattern(&new);
        first = Some(new);
    });
    assert_passed(&run);
}
