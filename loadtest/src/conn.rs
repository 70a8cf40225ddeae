//! Opening one broker connection: TCP from a chosen 127.0.0.x source, TCP_NODELAY, the
//! WebSocket handshake with small buffers, `auth`, and optionally `subscribe`. Also the
//! connect context each worker thread uses (targets, tokens, concurrency, counters).
//! Subscribers use [`RawWs`] (raw protocol, or Socket.IO through [`sio`]); publishers and held connections use tokio-tungstenite; HTTP
//! publishers a plain TCP connection.

use std::{cell::RefCell, net::SocketAddr, rc::Rc, sync::Arc, time::Duration};

use anyhow::{Context, anyhow, bail};
use futures_util::{SinkExt, StreamExt};
use tokio::{
    net::{TcpSocket, TcpStream},
    sync::Semaphore,
};
use tokio_tungstenite::{
    WebSocketStream, client_async_with_config,
    tungstenite::{Message, protocol::WebSocketConfig},
};

use crate::{
    rawws::{Frame, RawWs},
    scan::{self, Kind},
    shared::Shared,
    sio,
    stats::ThreadStats,
    target::{Target, source_for},
    token::Minter,
};

pub type Ws = WebSocketStream<TcpStream>;

/// Longest wait for one connection's TCP + handshake + auth (+ subscribe).
pub const PER_CONN_TIMEOUT: Duration = Duration::from_secs(10);

/// Small buffers: tungstenite's 128 KiB default read buffer is zero-filled per read.
pub fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(16 << 10)
        .max_message_size(Some(2 << 20))
        .max_frame_size(Some(2 << 20))
}

/// A TCP connection to `t` from `src`, with TCP_NODELAY.
async fn tcp(t: &Target, src: Option<SocketAddr>) -> anyhow::Result<TcpStream> {
    let sock = if t.addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(s) = src {
        sock.bind(s).with_context(|| {
            format!("binding source {s} (out of ports on it? use more --sources)")
        })?;
    }
    let tcp = sock
        .connect(t.addr)
        .await
        .with_context(|| format!("connecting to {}", t.addr))?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

async fn open(t: &Target, src: Option<SocketAddr>) -> anyhow::Result<Ws> {
    let tcp = tcp(t, src).await?;
    let (ws, _) = client_async_with_config(t.url.as_str(), tcp, Some(ws_config()))
        .await
        .with_context(|| format!("WebSocket handshake with {}", t.url))?;
    Ok(ws)
}

/// Sends `text` and waits for a reply of kind `want`; an error frame fails with its text.
async fn request(ws: &mut Ws, text: String, want: Kind) -> anyhow::Result<()> {
    ws.send(Message::text(text)).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => match scan::kind(t.as_bytes()) {
                k if k == want => return Ok(()),
                Kind::Error => bail!("server: {}", t.as_str()),
                _ => {}
            },
            Some(Ok(Message::Close(f))) => bail!("closed by server: {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("connection closed by server"),
        }
    }
}

/// What every worker thread needs to open connections.
pub struct Net {
    pub targets: Vec<Target>,
    pub sources: usize,
    pub minter: Minter,
    /// `--channel-prefix`: channels are `PREFIX:RUN:N` under the pattern `PREFIX:*`.
    pub prefix: String,
    pub run_id: String,
    pub shared: Arc<Shared>,
}

impl Net {
    /// The name of channel `c` of this run (fresh per run, so offsets start at 1).
    pub fn channel(&self, c: usize) -> String {
        format!("{}:{}:{c}", self.prefix, self.run_id)
    }

    /// Opens connection number `idx` as user `sub` (tokio-tungstenite), subscribed to
    /// `channel` if given. Counts success or failure; `None` on failure.
    pub async fn connect(
        &self,
        idx: usize,
        sub: &str,
        channel: Option<&str>,
        sem: &Semaphore,
        stats: &Rc<RefCell<ThreadStats>>,
    ) -> Option<Ws> {
        let t = &self.targets[idx % self.targets.len()];
        self.guarded(idx, sem, stats, async {
            let token = self.minter.mint(sub, "authenticated")?;
            let mut ws = open(t, source_for(t, idx, self.sources)).await?;
            request(&mut ws, auth_msg(&token), Kind::AuthSuccess)
                .await
                .context("auth")?;
            if let Some(c) = channel {
                request(&mut ws, subscribe_msg(c), Kind::Subscribed)
                    .await
                    .context("subscribe")?;
            }
            Ok(ws)
        })
        .await
    }

    /// The same over [`RawWs`] (the subscriber hot path), always subscribed to `channel`.
    pub async fn connect_raw(
        &self,
        idx: usize,
        sub: &str,
        channel: &str,
        sem: &Semaphore,
        stats: &Rc<RefCell<ThreadStats>>,
    ) -> Option<RawWs> {
        self.subscribe_raw(idx, sub, subscribe_msg(channel), sem, stats)
            .await
            .map(|(ws, _)| ws)
    }

    /// [`connect_raw`](Self::connect_raw) with any `subscribe` text (e.g. with `since`);
    /// also returns the `subscribed` frame. Frames after it stay buffered in the [`RawWs`].
    pub async fn subscribe_raw(
        &self,
        idx: usize,
        sub: &str,
        subscribe: String,
        sem: &Semaphore,
        stats: &Rc<RefCell<ThreadStats>>,
    ) -> Option<(RawWs, Vec<u8>)> {
        let t = &self.targets[idx % self.targets.len()];
        self.guarded(idx, sem, stats, async {
            let token = self.minter.mint(sub, "authenticated")?;
            let tcp = tcp(t, source_for(t, idx, self.sources)).await?;
            let mut ws = RawWs::handshake(tcp, &t.host, &t.path)
                .await
                .with_context(|| format!("WebSocket handshake with {}", t.url))?;
            raw_request(&mut ws, auth_msg(&token), Kind::AuthSuccess)
                .await
                .context("auth")?;
            let reply = raw_request(&mut ws, subscribe, Kind::Subscribed)
                .await
                .context("subscribe")?;
            Ok((ws, reply))
        })
        .await
    }

    /// A Socket.IO subscriber ([`RawWs`]): the upgrade on [`sio::PATH`] at the node's host and
    /// port (whatever --url's path), then [`sio::handshake`] with the same JWT as raw
    /// subscribers, subscribed to `channel`. Counted like the others.
    pub async fn connect_sio(
        &self,
        idx: usize,
        sub: &str,
        channel: &str,
        sem: &Semaphore,
        stats: &Rc<RefCell<ThreadStats>>,
    ) -> Option<(RawWs, sio::Open)> {
        let t = &self.targets[idx % self.targets.len()];
        self.guarded(idx, sem, stats, async {
            let token = self.minter.mint(sub, "authenticated")?;
            let tcp = tcp(t, source_for(t, idx, self.sources)).await?;
            let mut ws = RawWs::handshake(tcp, &t.host, sio::PATH)
                .await
                .with_context(|| {
                    format!(
                        "Socket.IO WebSocket handshake with ws://{}{} (is the broker's \
                         Socket.IO front end on?)",
                        t.host,
                        sio::PATH
                    )
                })?;
            let open = sio::handshake(&mut ws, &token, channel)
                .await
                .context("Socket.IO handshake")?;
            Ok((ws, open))
        })
        .await
    }

    /// [`connect_sio`](Self::connect_sio) subscribed to every one of `channels` at once (ack
    /// ids 0, 1, ..; none: CONNECT only, the next ack id is 0). Counted like the others.
    pub async fn connect_sio_many(
        &self,
        idx: usize,
        sub: &str,
        channels: &[String],
        sem: &Semaphore,
        stats: &Rc<RefCell<ThreadStats>>,
    ) -> Option<(RawWs, sio::Open)> {
        let t = &self.targets[idx % self.targets.len()];
        self.guarded(idx, sem, stats, async {
            let token = self.minter.mint(sub, "authenticated")?;
            let tcp = tcp(t, source_for(t, idx, self.sources)).await?;
            let mut ws = RawWs::handshake(tcp, &t.host, sio::PATH)
                .await
                .with_context(|| {
                    format!(
                        "Socket.IO WebSocket handshake with ws://{}{}",
                        t.host,
                        sio::PATH
                    )
                })?;
            let open = sio::connect(&mut ws, &token)
                .await
                .context("Socket.IO handshake")?;
            sio::subscribe(&mut ws, 0, channels).await?;
            Ok((ws, open))
        })
        .await
    }

    /// A plain TCP connection (keep-alive HTTP) to target `idx % targets`, counted like the
    /// WebSocket ones.
    pub async fn connect_tcp(
        &self,
        idx: usize,
        sem: &Semaphore,
        stats: &Rc<RefCell<ThreadStats>>,
    ) -> Option<TcpStream> {
        let t = &self.targets[idx % self.targets.len()];
        self.guarded(idx, sem, stats, tcp(t, source_for(t, idx, self.sources)))
            .await
    }

    /// Runs one connection setup under the concurrency limit and the per-connection timeout,
    /// and counts it (connect time histogram, connected / failed, first error).
    async fn guarded<T>(
        &self,
        idx: usize,
        sem: &Semaphore,
        stats: &Rc<RefCell<ThreadStats>>,
        setup: impl Future<Output = anyhow::Result<T>>,
    ) -> Option<T> {
        let _permit = sem.acquire().await.ok()?;
        let start = std::time::Instant::now();
        let r = tokio::time::timeout(PER_CONN_TIMEOUT, setup)
            .await
            .unwrap_or_else(|_| Err(anyhow!("connect timed out after {PER_CONN_TIMEOUT:?}")));
        self.shared.connect_done();
        match r {
            Ok(ws) => {
                let us = start.elapsed().as_micros() as u64;
                stats.borrow_mut().connect.saturating_record(us.max(1));
                Shared::inc(&self.shared.connected);
                Some(ws)
            }
            Err(e) => {
                Shared::inc(&self.shared.connect_failed);
                self.shared.error(format!("connection {idx}: {e:#}"));
                None
            }
        }
    }
}

fn auth_msg(token: &str) -> String {
    serde_json::json!({"type": "auth", "token": token}).to_string()
}

pub fn subscribe_msg(channel: &str) -> String {
    serde_json::json!({"type": "subscribe", "channel": channel}).to_string()
}

/// [`request`] over a [`RawWs`]; returns the reply.
async fn raw_request(ws: &mut RawWs, text: String, want: Kind) -> anyhow::Result<Vec<u8>> {
    ws.send_text(&text).await?;
    loop {
        match ws.next().await? {
            Some(Frame::Text(r)) => {
                let b = ws.bytes(r);
                match scan::kind(b) {
                    k if k == want => return Ok(b.to_vec()),
                    Kind::Error => bail!("server: {}", String::from_utf8_lossy(b)),
                    _ => {}
                }
            }
            Some(Frame::Ping(p)) => ws.send_pong(&p).await?,
            Some(Frame::Close(code)) => bail!("closed by server (code {code:?})"),
            Some(Frame::Other) => {}
            None => bail!("connection closed by server"),
        }
    }
}
