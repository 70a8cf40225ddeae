//! The `ringcast` binary as a real subprocess: `check-config` on the shipped files and on a file
//! full of mistakes, `token`, `serve` refusing a port in use, flags over env, and a clean exit
//! on SIGTERM/SIGINT that closes WebSockets with 1001.

mod common;

use std::{
    io::Read,
    net::{SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    time::{Duration, Instant},
};

use common::*;
use ringcast::auth::{Role, Verifier};

/// The binary, with no `RINGCAST_*` variables inherited from the test's environment.
fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ringcast"));
    for (k, _) in std::env::vars() {
        if k.starts_with("RINGCAST_") {
            c.env_remove(k);
        }
    }
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

/// Waits for the child to exit within `limit` (killing it and failing otherwise).
fn wait(child: &mut Child, limit: Duration, what: &str) -> ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn outputs(child: &mut Child) -> (String, String) {
    let mut out = String::new();
    let mut err = String::new();
    if let Some(o) = child.stdout.as_mut() {
        o.read_to_string(&mut out).unwrap();
    }
    if let Some(e) = child.stderr.as_mut() {
        e.read_to_string(&mut err).unwrap();
    }
    (out, err)
}

/// Runs to completion (at most 10 s): (exit code, stdout, stderr).
fn run(args: &[&str]) -> (i32, String, String) {
    let mut child = bin().args(args).spawn().expect("spawn ringcast");
    let st = wait(&mut child, Duration::from_secs(10), &format!("{args:?}"));
    let (out, err) = outputs(&mut child);
    (st.code().expect("exited, not killed"), out, err)
}

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_until_serving(child: &mut Child, addr: SocketAddr) {
    eventually(
        "the server answers /health",
        Duration::from_secs(10),
        || {
            if let Some(st) = child.try_wait().unwrap() {
                let (out, err) = outputs(child);
                panic!("serve exited early ({st}):\n{out}\n{err}");
            }
            TcpStream::connect(addr).is_ok() && http(addr, "GET", "/health", None, None).0 == 200
        },
    );
}

fn signal(child: &Child, sig: &str) {
    let st = Command::new("kill")
        .args([&format!("-{sig}"), &child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(st.success(), "kill -{sig} failed");
}

#[test]
fn shipped_config_files_are_valid() {
    for rel in ["config/ringcast.toml", "config/production.example.toml"] {
        let path = repo_file(rel);
        assert!(path.exists(), "{rel} is missing");
        let p = path.to_str().unwrap();
        let (code, out, err) = run(&["check-config", "--config", p]);
        assert_eq!(code, 0, "{rel}:\n{out}\n{err}");
        assert!(out.contains("ok"), "{out}");
    }
}

#[test]
fn check_config_reports_every_error_at_once() {
    let dir = std::env::temp_dir().join(format!("ringcast-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        r#"
[server]
listen = "nope"
bogus_key = 1
workers = "two"

[websocket]
ping_interval = "soon"

[nosuch]
x = 1
"#,
    )
    .unwrap();
    let (code, out, err) = run(&["check-config", "--config", path.to_str().unwrap()]);
    let broken = dir.join("broken.toml");
    std::fs::write(&broken, "[server\nlisten = ").unwrap();
    let (broken_code, _, broken_err) = run(&["check-config", "--config", broken.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(broken_code, 1, "{broken_err}");
    assert!(broken_err.contains("1 error(s)"), "{broken_err}");
    assert_eq!(code, 1, "{out}\n{err}");
    for needle in [
        "bogus_key",
        "nosuch",
        "workers",
        "server.listen",
        "`nope`",
        "websocket.ping_interval",
        "`soon`",
    ] {
        assert!(err.contains(needle), "{needle:?} not reported:\n{err}");
    }
    assert!(err.contains("5 error(s)"), "{err}");

    // A file that does not exist.
    let (code, _, err) = run(&["check-config", "--config", "/nonexistent/ringcast.toml"]);
    assert_eq!(code, 1);
    assert!(err.contains("/nonexistent/ringcast.toml"), "{err}");
}

#[test]
fn token_mints_a_verifiable_jwt() {
    let (code, out, err) = run(&[
        "token",
        "--secret",
        "s",
        "--sub",
        "u1",
        "--role",
        "project_admin",
    ]);
    assert_eq!(code, 0, "{err}");
    let tok = out.trim();
    assert_eq!(tok.split('.').count(), 3, "{tok}");
    let id = Verifier::new("s", None).verify(tok).expect("valid token");
    assert_eq!(id.user_id.as_deref(), Some("u1"));
    assert_eq!(id.role, Role::ProjectAdmin);
    let exp = id.expires_at.expect("a 1h default ttl");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(
        (now + 3500..=now + 3700).contains(&exp),
        "exp {exp}, now {now}"
    );
    // Another secret does not verify it.
    assert!(Verifier::new("other", None).verify(tok).is_err());
    // Default role; no exp with --ttl 0s.
    let (code, out, _) = run(&["token", "--secret", "s", "--sub", "u2", "--ttl", "0s"]);
    assert_eq!(code, 0);
    let id = Verifier::new("s", None).verify(out.trim()).unwrap();
    assert_eq!(id.role, Role::Authenticated);
    assert_eq!(id.expires_at, None);
    // A bad role is refused.
    let (code, out, err) = run(&["token", "--secret", "s", "--sub", "u1", "--role", "root"]);
    assert_eq!(code, 1);
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("--role"), "{err}");
}

#[test]
fn serve_refuses_a_port_in_use() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (code, out, err) = run(&["serve", "--listen", &addr.to_string(), "--workers", "2"]);
    assert_ne!(code, 0, "{out}\n{err}");
    assert!(err.contains("in use"), "{err}");
    // The port is still ours.
    drop(taken);
}

#[test]
fn serve_rejects_an_invalid_flag_value() {
    let (code, _, err) = run(&["serve", "--listen", "not-an-address"]);
    assert_eq!(code, 1);
    assert!(err.contains("server.listen"), "{err}");
}

fn serve_then_signal(sig: &str, extra: &[&str]) {
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut cmd = bin();
    cmd.args([
        "serve",
        "--workers",
        "2",
        "--jwt-secret",
        "s3",
        "--admin-key",
        "k3",
    ])
    .args(extra);
    // Flags win over env: the env listen address is not even valid.
    cmd.env("RINGCAST_LISTEN", "not-an-address")
        .args(["--listen", &addr.to_string()]);
    let mut child = cmd.spawn().expect("spawn serve");
    wait_until_serving(&mut child, addr);
    // The configured secret and admin key are in effect.
    assert_eq!(
        http(addr, "GET", "/api/realtime/channels", Some("k3"), None).0,
        200
    );
    let mut ws = Ws::connect(addr);
    let ok = ws.auth(&ringcast::auth::mint(
        "s3",
        "u1",
        "authenticated",
        Duration::from_secs(60),
        None,
    ));
    assert_eq!(ok["userId"], "u1");
    let mut unauthed = Ws::connect(addr);
    let started = Instant::now();
    signal(&child, sig);
    let (code, reason) = ws.expect_close();
    assert_eq!(code, 1001, "{reason}");
    assert_eq!(unauthed.expect_close().0, 1001);
    let st = wait(&mut child, Duration::from_secs(5), "serve after signal");
    let (out, err) = outputs(&mut child);
    assert!(st.success(), "exit {st}:\n{out}\n{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(TcpStream::connect(addr).is_err(), "still listening");
}

#[test]
fn serve_exits_cleanly_on_sigterm() {
    serve_then_signal("TERM", &[]);
}

#[test]
fn serve_exits_cleanly_on_sigint_legacy_driver() {
    serve_then_signal("INT", &["--driver", "legacy"]);
}

#[test]
fn serve_starts_with_dev_defaults_and_warns() {
    // No config file and no flags (only the address, through env, so the test owns the port).
    let port = free_port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let mut child = bin()
        .arg("serve")
        .env("RINGCAST_LISTEN", addr.to_string())
        .env("RINGCAST_WORKERS", "1")
        .spawn()
        .unwrap();
    wait_until_serving(&mut child, addr);
    // The dev secret works (and is the reason for the warning).
    let mut ws = Ws::connect(addr);
    ws.auth(&ringcast::auth::mint(
        ringcast::config::DEV_JWT_SECRET,
        "dev",
        "authenticated",
        Duration::from_secs(60),
        None,
    ));
    // No admin key configured: REST needs an admin JWT.
    assert_eq!(
        http(addr, "GET", "/api/realtime/channels", None, None).0,
        401
    );
    signal(&child, "TERM");
    assert_eq!(ws.expect_close().0, 1001);
    let st = wait(&mut child, Duration::from_secs(5), "serve after SIGTERM");
    let (out, err) = outputs(&mut child);
    assert!(st.success(), "exit {st}:\n{out}\n{err}");
    let logs = format!("{out}{err}");
    assert!(
        logs.contains("development default"),
        "no dev-secret warning in:\n{logs}"
    );
}
