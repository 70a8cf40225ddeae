#![allow(dead_code)]
//! A real HTTP/1.1 webhook receiver for integration tests: plain or TLS (a fresh self-signed
//! certificate from rcgen) on a loopback port, std sockets and threads (one accept thread, one
//! thread per connection), keep-alive, `Content-Length` and chunked request bodies. It owns the
//! record of every complete request (in arrival order, recorded before answering) and the
//! scripted replies: `script[i]` answers request `i + 1` across all connections, `default`
//! answers the rest. `stop` (and drop) shuts every connection down and frees the port.

use std::{
    collections::{HashMap, VecDeque},
    io::{ErrorKind, Read, Write},
    net::{Shutdown, SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    sync::{
        Arc, Condvar, Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// This status, empty body (`Content-Length: 0`).
    Status(u16),
    /// This status plus extra headers (e.g. 429 with `Retry-After`), empty body.
    StatusWithHeaders(u16, Vec<(String, String)>),
    /// Read the request, never answer; the socket stays open until the client closes it or the
    /// receiver stops.
    Hang,
    /// Read the request, close the connection without answering.
    Close,
    /// The reply of the first path prefix the request's path starts with, else the last one.
    ByPath(Vec<(String, Reply)>, Box<Reply>),
}

/// One complete request as the receiver saw it.
#[derive(Clone, Debug)]
pub struct Received {
    pub method: String,
    /// The request target, e.g. `/hook?x=1`.
    pub path: String,
    /// Names lowercased, in the order sent.
    pub headers: Vec<(String, String)>,
    /// De-chunked when sent with `Transfer-Encoding: chunked`.
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Received {
    /// The first header named `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics with the body text when it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "webhook body is not JSON ({e}): {}",
                String::from_utf8_lossy(&self.body)
            )
        })
    }
}

struct State {
    requests: Vec<Received>,
    script: VecDeque<Reply>,
}

struct Shared {
    state: Mutex<State>,
    arrived: Condvar,
    default: Reply,
    stopping: AtomicBool,
    /// A clone of every open connection's socket, to shut it down on `stop`.
    conns: Mutex<HashMap<u64, TcpStream>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    tls: Option<Arc<rustls::ServerConfig>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking test thread must not turn every later call into a poison panic.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: Option<JoinHandle<()>>,
    https: bool,
    /// The PEM file of an https receiver, removed on drop.
    pem: Option<PathBuf>,
}

impl Receiver {
    /// Plain HTTP on 127.0.0.1:0. `script` answers the first requests in order (request 1 gets
    /// `script[0]`, ...), every later request gets `default`.
    pub fn start(script: Vec<Reply>, default: Reply) -> Receiver {
        Self::start_on(([127, 0, 0, 1], 0).into(), script, default)
    }

    /// Same, on a given address (to bring a receiver back on the port of a stopped one).
    /// Retries binding for up to 5 s.
    pub fn start_on(addr: SocketAddr, script: Vec<Reply>, default: Reply) -> Receiver {
        Self::launch(addr, script, default, None)
    }

    /// HTTPS with a fresh self-signed certificate for `localhost` and 127.0.0.1. Returns the
    /// receiver and the path of a PEM file holding the certificate (for the client to trust);
    /// the file is removed when the receiver is dropped.
    pub fn https(script: Vec<Reply>, default: Reply) -> (Receiver, PathBuf) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
                .expect("self-signed certificate");
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(signing_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .expect("server certificate");

        static SEQ: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let pem = std::env::temp_dir().join(format!(
            "ringcast-receiver-{}-{}-{nanos}.pem",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::write(&pem, cert.pem()).expect("write certificate PEM");

        let mut r = Self::launch(
            ([127, 0, 0, 1], 0).into(),
            script,
            default,
            Some(Arc::new(config)),
        );
        r.pem = Some(pem.clone());
        (r, pem)
    }

    fn launch(
        addr: SocketAddr,
        script: Vec<Reply>,
        default: Reply,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> Receiver {
        let listener = bind(addr);
        let addr = listener.local_addr().expect("local addr");
        let https = tls.is_some();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                requests: Vec::new(),
                script: script.into(),
            }),
            arrived: Condvar::new(),
            default,
            stopping: AtomicBool::new(false),
            conns: Mutex::new(HashMap::new()),
            threads: Mutex::new(Vec::new()),
            tls,
        });
        let s = shared.clone();
        let accept = std::thread::Builder::new()
            .name(format!("receiver-accept-{}", addr.port()))
            .spawn(move || accept_loop(listener, s))
            .expect("spawn accept thread");
        Receiver {
            addr,
            shared,
            accept: Some(accept),
            https,
            pem: None,
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT{path}`, or `https://localhost:PORT{path}` for an https receiver.
    pub fn url(&self, path: &str) -> String {
        if self.https {
            format!("https://localhost:{}{path}", self.addr.port())
        } else {
            format!("http://{}{path}", self.addr)
        }
    }

    /// Every complete request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        lock(&self.shared.state).requests.clone()
    }

    /// Waits until at least `n` requests arrived (panics after `timeout`, saying how many did).
    /// Returns all requests so far.
    pub fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Received> {
        let end = Instant::now() + timeout;
        let mut st = lock(&self.shared.state);
        while st.requests.len() < n {
            let now = Instant::now();
            if now >= end {
                let seen: Vec<String> = st
                    .requests
                    .iter()
                    .map(|r| format!("{} {}", r.method, r.path))
                    .collect();
                panic!(
                    "webhook receiver {}: {} of {n} requests within {timeout:?}: {seen:?}",
                    self.addr,
                    st.requests.len()
                );
            }
            st = self
                .shared
                .arrived
                .wait_timeout(st, end - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        st.requests.clone()
    }

    /// Stops accepting, closes every open connection (including hanging ones), joins the
    /// threads; the port is free afterwards. Idempotent; also called on drop.
    pub fn stop(&mut self) {
        let Some(accept) = self.accept.take() else {
            return;
        };
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept; it sees the flag and returns, dropping the listener.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        let _ = accept.join();
        for s in lock(&self.shared.conns).values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let threads = std::mem::take(&mut *lock(&self.shared.threads));
        for t in threads {
            let _ = t.join();
        }
        lock(&self.shared.conns).clear();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
        if let Some(pem) = self.pem.take() {
            let _ = std::fs::remove_file(pem);
        }
    }
}

/// Binds `addr`, retrying for up to 5 s (the port of a just-stopped receiver may still be held).
fn bind(addr: SocketAddr) -> TcpListener {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr) {
            Ok(l) => return l,
            Err(e) if Instant::now() >= end => panic!("webhook receiver cannot bind {addr}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    let mut next_id = 0u64;
    loop {
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(_) if shared.stopping.load(Ordering::SeqCst) => return,
            Err(_) => {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(clone) = stream.try_clone() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let id = next_id;
        next_id += 1;
        lock(&shared.conns).insert(id, clone);
        let s = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("receiver-conn-{id}"))
            .spawn(move || {
                connection(stream, &s);
                lock(&s.conns).remove(&id);
            });
        let mut threads = lock(&shared.threads);
        threads.retain(|t| !t.is_finished());
        match spawned {
            Ok(t) => threads.push(t),
            Err(_) => {
                if let Some(s) = lock(&shared.conns).remove(&id) {
                    let _ = s.shutdown(Shutdown::Both);
                }
            }
        }
    }
}

/// Serves one connection (plain or TLS); always shuts the socket down at the end (the clone in
/// `conns` would otherwise keep it open).
fn connection(stream: TcpStream, shared: &Shared) {
    let Ok(raw) = stream.try_clone() else {
        let _ = stream.shutdown(Shutdown::Both);
        return;
    };
    match &shared.tls {
        Some(cfg) => {
            if let Ok(conn) = rustls::ServerConnection::new(cfg.clone()) {
                serve(rustls::StreamOwned::new(conn, stream), shared);
            }
        }
        None => serve(stream, shared),
    }
    let _ = raw.shutdown(Shutdown::Both);
}

/// Reads requests until EOF (keep-alive), recording each before answering it.
fn serve<S: Read + Write>(mut io: S, shared: &Shared) {
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    loop {
        let Some(head) = read_head(&mut io, &mut buf) else {
            return;
        };
        if head.expect_continue && io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").is_err() {
            return;
        }
        let body = if head.chunked {
            read_chunked(&mut io, &mut buf)
        } else {
            read_exact_body(&mut io, &mut buf, head.content_length)
        };
        let Some(body) = body else {
            return;
        };
        let close_after = head
            .headers
            .iter()
            .any(|(n, v)| n == "connection" && v.eq_ignore_ascii_case("close"));
        let req_path = head.path.clone();
        let received = Received {
            method: head.method,
            path: head.path,
            headers: head.headers,
            body,
            at: Instant::now(),
        };
        let reply = {
            let mut st = lock(&shared.state);
            st.requests.push(received);
            let reply = st
                .script
                .pop_front()
                .unwrap_or_else(|| shared.default.clone());
            shared.arrived.notify_all();
            reply
        };
        let reply = match reply {
            Reply::ByPath(routes, other) => routes
                .into_iter()
                .find(|(p, _)| req_path.starts_with(p.as_str()))
                .map_or(*other, |(_, r)| r),
            r => r,
        };
        let (code, extra) = match reply {
            Reply::Status(c) => (c, Vec::new()),
            Reply::StatusWithHeaders(c, h) => (c, h),
            Reply::Close => return,
            Reply::ByPath(..) => unreachable!("resolved above"),
            Reply::Hang => {
                // Never answer: swallow whatever comes until the peer or `stop` ends the socket.
                let mut sink = [0u8; 4096];
                while matches!(io.read(&mut sink), Ok(n) if n > 0) {}
                return;
            }
        };
        let mut resp = format!("HTTP/1.1 {code} {}\r\nContent-Length: 0\r\n", reason(code));
        for (n, v) in &extra {
            resp.push_str(&format!("{n}: {v}\r\n"));
        }
        if close_after {
            resp.push_str("Connection: close\r\n");
        }
        resp.push_str("\r\n");
        if io.write_all(resp.as_bytes()).is_err() || io.flush().is_err() || close_after {
            return;
        }
    }
}

struct Head {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    content_length: usize,
    chunked: bool,
    expect_continue: bool,
}

/// Reads one request head; consumes it from `buf`. `None` on EOF, error or a malformed head.
fn read_head(io: &mut impl Read, buf: &mut Vec<u8>) -> Option<Head> {
    loop {
        if !buf.is_empty() {
            let mut headers = [httparse::EMPTY_HEADER; 128];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(buf) {
                Ok(httparse::Status::Complete(n)) => {
                    let headers: Vec<(String, String)> = req
                        .headers
                        .iter()
                        .map(|h| {
                            (
                                h.name.to_ascii_lowercase(),
                                String::from_utf8_lossy(h.value).into_owned(),
                            )
                        })
                        .collect();
                    let get = |name: &str| {
                        headers
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, v)| v.trim().to_ascii_lowercase())
                    };
                    let head = Head {
                        method: req.method.unwrap_or_default().to_string(),
                        path: req.path.unwrap_or_default().to_string(),
                        content_length: get("content-length")
                            .and_then(|v| v.parse().ok())
                            .unwrap_or(0),
                        chunked: get("transfer-encoding").is_some_and(|v| v.contains("chunked")),
                        expect_continue: get("expect").is_some_and(|v| v == "100-continue"),
                        headers,
                    };
                    buf.drain(..n);
                    return Some(head);
                }
                Ok(httparse::Status::Partial) => {}
                Err(_) => return None,
            }
        }
        if !fill(io, buf) {
            return None;
        }
    }
}

/// Reads more bytes into `buf`; false on EOF or error.
fn fill(io: &mut impl Read, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    loop {
        match io.read(&mut chunk) {
            Ok(0) => return false,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                return true;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

fn read_exact_body(io: &mut impl Read, buf: &mut Vec<u8>, len: usize) -> Option<Vec<u8>> {
    while buf.len() < len {
        if !fill(io, buf) {
            return None;
        }
    }
    Some(buf.drain(..len).collect())
}

/// Decodes a chunked body (extensions and trailers ignored); consumes it from `buf`.
fn read_chunked(io: &mut impl Read, buf: &mut Vec<u8>) -> Option<Vec<u8>> {
    let mut body = Vec::new();
    loop {
        let (size_len, size) = loop {
            match httparse::parse_chunk_size(buf) {
                Ok(httparse::Status::Complete(x)) => break x,
                Ok(httparse::Status::Partial) => {
                    if !fill(io, buf) {
                        return None;
                    }
                }
                Err(_) => return None,
            }
        };
        buf.drain(..size_len);
        if size == 0 {
            // Trailers: header lines until an empty line.
            loop {
                let Some(end) = buf.windows(2).position(|w| w == b"\r\n") else {
                    if !fill(io, buf) {
                        return None;
                    }
                    continue;
                };
                buf.drain(..end + 2);
                if end == 0 {
                    return Some(body);
                }
            }
        }
        let size = usize::try_from(size).ok()?;
        while buf.len() < size + 2 {
            if !fill(io, buf) {
                return None;
            }
        }
        body.extend_from_slice(&buf[..size]);
        if &buf[size..size + 2] != b"\r\n" {
            return None;
        }
        buf.drain(..size + 2);
    }
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}
