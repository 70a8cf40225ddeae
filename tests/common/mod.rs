//! Test harness: real ringcast servers on port 0 (one per test, in-process), real WebSocket
//! clients (tungstenite over std sockets), raw HTTP over real sockets, and `eventually`.
#![allow(dead_code)]

pub mod jwks;
pub mod npm;
pub mod postgres;
pub mod process;
pub mod receiver;
pub mod redis;
pub mod sio;

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use ringcast::config::{Config, FileConfig};
use serde_json::{Value, json};
use tungstenite::{Message, WebSocket, protocol::CloseFrame};

pub const SECRET: &str = "test-secret";
pub const ADMIN_KEY: &str = "test-admin-key";

/// Runs a test body once per monoio driver: `both_drivers!(name, |driver| { ... });`
#[macro_export]
macro_rules! both_drivers {
    ($name:ident, |$d:ident| $body:block) => {
        mod $name {
            #[allow(unused_imports)]
            use super::*;
            fn body($d: &'static str) $body
            #[test]
            fn io_uring() {
                body("io_uring")
            }
            #[test]
            fn legacy() {
                body("legacy")
            }
        }
    };
}

pub struct TestServer {
    pub handle: Option<ringcast::ServerHandle>,
    pub addr: SocketAddr,
}

pub struct Builder {
    file: FileConfig,
}

impl TestServer {
    pub fn builder(driver: &str) -> Builder {
        let mut file = FileConfig::default();
        file.server.listen = "127.0.0.1:0".into();
        file.server.workers = 2;
        file.server.driver = driver.into();
        file.server.shutdown_grace = "2s".into();
        file.auth.jwt_secret = SECRET.into();
        file.auth.admin_key = ADMIN_KEY.into();
        Builder { file }
    }

    pub fn start(driver: &str) -> Self {
        Self::builder(driver).start()
    }

    pub fn ws(&self) -> Ws {
        Ws::connect(self.addr)
    }

    /// A connected, authenticated client.
    pub fn client(&self, sub: &str) -> Ws {
        let mut ws = self.ws();
        ws.auth(&token(sub, "authenticated"));
        ws
    }

    pub fn admin(&self) -> Ws {
        let mut ws = self.ws();
        ws.auth(ADMIN_KEY);
        ws
    }

    pub fn http(&self, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
        http(self.addr, method, path, Some(ADMIN_KEY), body)
    }

    /// Creates a channel, returns its record.
    pub fn channel(&self, pattern: &str) -> Value {
        let (s, v) = self.http(
            "POST",
            "/api/realtime/channels",
            Some(json!({"pattern": pattern})),
        );
        assert_eq!(s, 201, "{v}");
        v
    }

    pub fn shutdown(mut self) {
        if let Some(h) = self.handle.take() {
            h.shutdown();
        }
    }

    /// A counter or gauge from `/metrics` (`name` with its labels, if any).
    pub fn metric(&self, name: &str) -> u64 {
        let (_, m) = self.http("GET", "/metrics", None);
        m.as_str()
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{name} missing"))
    }
}

impl Builder {
    pub fn with(mut self, f: impl FnOnce(&mut FileConfig)) -> Self {
        f(&mut self.file);
        self
    }

    /// Runs the node on the redis engine at `url`.
    pub fn redis(mut self, url: &str) -> Self {
        self.file.server.engine = "redis".into();
        self.file.redis.url = url.into();
        self
    }

    pub fn workers(mut self, n: usize) -> Self {
        self.file.server.workers = n;
        self
    }

    pub fn start(self) -> TestServer {
        let cfg: Config = ringcast::config::validate(&self.file).expect("valid test config");
        let driver = cfg.driver;
        let handle = ringcast::start(cfg).expect("server starts");
        if driver == ringcast::config::DriverKind::Legacy {
            assert!(handle.drivers().iter().all(|d| *d == "legacy"));
        }
        let addr = handle.addr();
        TestServer {
            handle: Some(handle),
            addr,
        }
    }

    /// Starts on `addr` instead of a free port: a node restarted where its clients reconnect
    /// (after the old one's `shutdown`). Retries for a few seconds while the port is still held.
    pub fn start_on(mut self, addr: SocketAddr) -> TestServer {
        self.file.server.listen = addr.to_string();
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let cfg: Config = ringcast::config::validate(&self.file).expect("valid test config");
            match ringcast::start(cfg) {
                Ok(handle) => {
                    return TestServer {
                        addr: handle.addr(),
                        handle: Some(handle),
                    };
                }
                Err(e) if Instant::now() >= end => panic!("server did not start on {addr}: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
}

pub fn token(sub: &str, role: &str) -> String {
    ringcast::auth::mint(SECRET, sub, role, Duration::from_secs(3600), None)
}

pub fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("not true within {timeout:?}: {what}");
}

pub struct Ws {
    pub ws: WebSocket<TcpStream>,
}

impl Ws {
    pub fn connect(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        stream.set_nodelay(true).unwrap();
        let url = format!("ws://{addr}/realtime");
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("handshake");
        Self { ws }
    }

    pub fn set_timeout(&mut self, d: Duration) {
        self.ws.get_mut().set_read_timeout(Some(d)).unwrap();
    }

    pub fn send(&mut self, v: Value) {
        self.ws.send(Message::text(v.to_string())).expect("send");
    }

    pub fn send_text(&mut self, t: &str) {
        self.ws.send(Message::text(t.to_string())).expect("send");
    }

    /// Next JSON message (control frames are skipped). Panics on close or timeout.
    pub fn recv(&mut self) -> Value {
        loop {
            let m = match self.ws.read() {
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                    continue;
                }
                r => r.expect("read"),
            };
            match m {
                Message::Text(t) => return serde_json::from_str(&t).expect("server sent JSON"),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
                Message::Binary(_) => panic!("server sent binary"),
                Message::Close(c) => panic!("unexpected close: {c:?}"),
            }
        }
    }

    /// Next message of `kind`, panicking on anything else.
    pub fn expect(&mut self, kind: &str) -> Value {
        let v = self.recv();
        assert_eq!(v["type"], kind, "expected {kind}, got {v}");
        v
    }

    /// Reads until the server closes; returns its close frame (code, reason).
    pub fn expect_close(&mut self) -> (u16, String) {
        read_close(&mut self.ws)
    }

    /// Asserts nothing (but control frames) arrives within `d`.
    pub fn expect_silence(&mut self, d: Duration) {
        silence(&mut self.ws, d, |_, t| panic!("unexpected message: {t}"));
    }

    pub fn auth(&mut self, token: &str) -> Value {
        self.send(json!({"type": "auth", "token": token}));
        self.expect("auth_success")
    }

    pub fn subscribe(&mut self, ch: &str) -> Value {
        self.send(json!({"type": "subscribe", "channel": ch}));
        self.expect("subscribed")
    }

    pub fn publish(&mut self, ch: &str, event: &str, payload: Value) -> Value {
        self.send(json!({"type": "publish", "channel": ch, "event": event, "payload": payload}));
        self.expect("published")
    }
}

/// One HTTP/1.1 request over a fresh connection (`Connection: close`).
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    bearer: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = bearer
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (status, text) = raw_http(addr, req.as_bytes());
    let v = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, v)
}

/// Sends raw bytes, returns (status, body) of the response.
pub fn raw_http(addr: SocketAddr, req: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(req);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|x| x.1).unwrap_or("");
    (status, body.to_string())
}

/// Publishes `from..=to` on `ch` through `addr` from a connection of its own, one every
/// `gap`, checking that each ack carries the expected offset.
pub fn steady_publisher(
    addr: SocketAddr,
    ch: &str,
    from: u64,
    to: u64,
    gap: Duration,
) -> std::thread::JoinHandle<()> {
    let ch = ch.to_string();
    std::thread::spawn(move || {
        let mut p = Ws::connect(addr);
        p.auth(&token("publisher", "authenticated"));
        for k in from..=to {
            let ack = p.publish(&ch, "tick", json!({ "k": k }));
            assert_eq!(ack["offset"], k, "{ack}");
            if !gap.is_zero() {
                std::thread::sleep(gap);
            }
        }
    })
}

/// Reads frames until a `message` with `offset`; returns the offsets of the messages read.
pub fn read_until(ws: &mut Ws, offset: u64) -> Vec<u64> {
    let mut seen = Vec::new();
    loop {
        let m = ws.recv();
        if m["type"] != "message" {
            continue;
        }
        let o = m["offset"].as_u64().unwrap();
        seen.push(o);
        if o >= offset {
            return seen;
        }
    }
}

/// Subscribes with `since` (recovery); returns the `subscribed` frame.
pub fn subscribe_since(ws: &mut Ws, ch: &str, offset: u64, epoch: &str) -> Value {
    ws.send(
        json!({"type": "subscribe", "channel": ch, "since": {"offset": offset, "epoch": epoch}}),
    );
    ws.expect("subscribed")
}

/// Reads until the server closes; its close frame (code, reason). For `Ws` and `sio::Sio`.
pub fn read_close(ws: &mut WebSocket<TcpStream>) -> (u16, String) {
    loop {
        match ws.read() {
            Ok(Message::Close(Some(CloseFrame { code, reason }))) => {
                return (u16::from(code), reason.to_string());
            }
            Ok(Message::Close(None)) => return (1005, String::new()),
            Ok(_) => continue,
            Err(e) => panic!("connection ended without a close frame: {e}"),
        }
    }
}

/// Reads for `d`, handing every text message to `on_text` (which panics on what must not
/// come); control frames are skipped, and a read interrupted by a signal (EINTR: the test
/// process gets SIGCHLD from the servers it runs) is retried. The read timeout is back at
/// 5 s afterwards. For `Ws` and `sio::Sio`.
pub fn silence(
    ws: &mut WebSocket<TcpStream>,
    d: Duration,
    mut on_text: impl FnMut(&mut WebSocket<TcpStream>, &str),
) {
    let end = Instant::now() + d;
    loop {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        ws.get_mut().set_read_timeout(Some(left)).unwrap();
        match ws.read() {
            Ok(Message::Text(t)) => on_text(ws, t.as_str()),
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                break;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    ws.get_mut()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
}
