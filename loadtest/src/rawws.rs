//! A minimal WebSocket client for the subscriber hot path: the HTTP upgrade, masked client text
//! and pong frames, and server frames decoded in place from one reused buffer (no copy per
//! message, no zero-filling, no waker proxies). Server frames are unmasked and unfragmented
//! (the broker sends each message as one frame); anything else is an error.

use std::ops::Range;

use anyhow::{Context, bail};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::tungstenite::handshake::{client::generate_key, derive_accept_key};

/// Largest server frame accepted.
const MAX_FRAME: usize = 2 << 20;
const INITIAL_BUF: usize = 4096;

/// One decoded server frame. `Text` is a range of the reader's buffer (see [`RawWs::bytes`]),
/// valid until the next call to [`RawWs::next`].
#[derive(Debug, PartialEq, Eq)]
pub enum Frame {
    Text(Range<usize>),
    Ping(Vec<u8>),
    Close(Option<u16>),
    Other,
}

pub struct RawWs {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    mask: u32,
    /// Wall clock (unix nanos) when the last read returned: every frame decoded from that read
    /// arrived then, so one clock read serves them all (at saturation a read holds ~10 frames,
    /// and a clock read per frame was 7 % of the harness's time).
    read_ns: u64,
}

impl RawWs {
    /// Upgrades `stream` (`GET path` on `host`); bytes after the 101 response stay buffered.
    pub async fn handshake(mut stream: TcpStream, host: &str, path: &str) -> anyhow::Result<Self> {
        let key = generate_key();
        let req = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await?;
        let mut ws = Self {
            stream,
            buf: vec![0; INITIAL_BUF],
            start: 0,
            end: 0,
            mask: (crate::payload::now_nanos() as u32) | 1,
            read_ns: 0,
        };
        let head_end = loop {
            if let Some(i) = memchr::memmem::find(&ws.buf[..ws.end], b"\r\n\r\n") {
                break i + 4;
            }
            if ws.end == ws.buf.len() {
                bail!("upgrade response head over {INITIAL_BUF} bytes");
            }
            let n = ws.stream.read(&mut ws.buf[ws.end..]).await?;
            if n == 0 {
                bail!("connection closed during the upgrade");
            }
            ws.end += n;
            ws.read_ns = crate::payload::now_nanos();
        };
        let head = std::str::from_utf8(&ws.buf[..head_end]).context("upgrade response")?;
        if !head.starts_with("HTTP/1.1 101") {
            bail!(
                "upgrade refused: {}",
                head.lines().next().unwrap_or_default()
            );
        }
        let accept = derive_accept_key(key.as_bytes());
        let ok = head.lines().any(|l| {
            l.split_once(':').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("sec-websocket-accept") && v.trim() == accept
            })
        });
        if !ok {
            bail!("upgrade response without the right Sec-WebSocket-Accept");
        }
        ws.start = head_end;
        Ok(ws)
    }

    /// The bytes of a `Frame::Text` range.
    pub fn bytes(&self, r: Range<usize>) -> &[u8] {
        &self.buf[r]
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.send(0x1, text.as_bytes()).await
    }

    pub async fn send_pong(&mut self, payload: &[u8]) -> anyhow::Result<()> {
        self.send(0xA, payload).await
    }

    async fn send(&mut self, opcode: u8, payload: &[u8]) -> anyhow::Result<()> {
        // xorshift: masks need not be secret here, only present.
        self.mask ^= self.mask << 13;
        self.mask ^= self.mask >> 17;
        self.mask ^= self.mask << 5;
        let key = self.mask.to_be_bytes();
        let mut f = Vec::with_capacity(payload.len() + 14);
        f.push(0x80 | opcode);
        match payload.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                f.push(0x80 | 126);
                f.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        f.extend_from_slice(&key);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ key[i % 4]));
        self.stream.write_all(&f).await?;
        Ok(())
    }

    /// The next frame, reading as needed; `None` at end of stream. Cancel-safe: state changes
    /// only when a read completes or a frame is returned.
    pub async fn next(&mut self) -> anyhow::Result<Option<Frame>> {
        loop {
            if let Some(f) = self.parse()? {
                return Ok(Some(f));
            }
            self.make_room();
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return Ok(None);
            }
            self.end += n;
            self.read_ns = crate::payload::now_nanos();
        }
    }

    /// When the bytes of the frame [`next`](Self::next) returned last were read (unix nanos).
    pub fn read_at(&self) -> u64 {
        self.read_ns
    }

    /// The next frame if it is a whole text frame already in the buffer (no read, no await):
    /// the subscriber drains a read's frames with this before it waits again. Anything else
    /// (a control or masked frame, a partial one, an empty buffer) is left for
    /// [`next`](Self::next).
    pub fn buffered_text(&mut self) -> Option<Range<usize>> {
        let b = &self.buf[self.start..self.end];
        if b.len() < 2 || b[0] != 0x81 {
            return None;
        }
        let (len, hdr) = match b[1] {
            n @ 0..=125 => (usize::from(n), 2),
            126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            _ => return None,
        };
        if b.len() < hdr + len {
            return None;
        }
        let body = self.start + hdr..self.start + hdr + len;
        self.start += hdr + len;
        Some(body)
    }

    /// Compacts the buffer, and grows it when one frame needs more than it holds.
    fn make_room(&mut self) {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end < self.buf.len() {
            return;
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            let grown = (self.buf.len() * 2).min(MAX_FRAME + 16);
            self.buf.resize(grown, 0);
        }
    }

    fn parse(&mut self) -> anyhow::Result<Option<Frame>> {
        let b = &self.buf[self.start..self.end];
        if b.len() < 2 {
            return Ok(None);
        }
        if b[1] & 0x80 != 0 {
            bail!("server sent a masked frame");
        }
        let (len, hdr) = match b[1] & 0x7F {
            126 if b.len() >= 4 => (usize::from(u16::from_be_bytes([b[2], b[3]])), 4),
            127 if b.len() >= 10 => {
                let mut l = [0u8; 8];
                l.copy_from_slice(&b[2..10]);
                (
                    usize::try_from(u64::from_be_bytes(l)).unwrap_or(usize::MAX),
                    10,
                )
            }
            126 | 127 => return Ok(None),
            n => (usize::from(n), 2),
        };
        if len > MAX_FRAME {
            bail!("server frame of {len} bytes (limit {MAX_FRAME})");
        }
        if b.len() < hdr + len {
            return Ok(None);
        }
        let (fin, op) = (b[0] & 0x80 != 0, b[0] & 0x0F);
        let body = self.start + hdr..self.start + hdr + len;
        self.start += hdr + len;
        Ok(Some(match op {
            0x1 if fin => Frame::Text(body),
            0x0 | 0x1 => bail!("fragmented server message (not expected from the broker)"),
            0x8 => {
                let p = &self.buf[body];
                Frame::Close((p.len() >= 2).then(|| u16::from_be_bytes([p[0], p[1]])))
            }
            0x9 => Frame::Ping(self.buf[body].to_vec()),
            _ => Frame::Other,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader over a pre-filled buffer (parse and make_room need no socket).
    async fn reader(bytes: &[u8], cap: usize) -> RawWs {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = l.local_addr().expect("addr");
        let (s, _) = tokio::join!(TcpStream::connect(addr), l.accept());
        let mut buf = vec![0; cap.max(bytes.len())];
        buf[..bytes.len()].copy_from_slice(bytes);
        RawWs {
            stream: s.expect("connect"),
            buf,
            start: 0,
            end: bytes.len(),
            mask: 1,
            read_ns: 0,
        }
    }

    #[tokio::test]
    async fn buffered_text_takes_whole_text_frames_only() {
        let bytes = [0x81, 2, b'h', b'i', 0x89, 1, b'p', 0x81, 3, b'a'];
        let mut ws = reader(&bytes, 64).await;
        let r = ws.buffered_text().expect("a whole text frame");
        assert_eq!(ws.bytes(r), b"hi");
        assert_eq!(ws.buffered_text(), None, "a ping is left for next()");
        assert_eq!(
            ws.next().await.expect("ping"),
            Some(Frame::Ping(b"p".to_vec()))
        );
        assert_eq!(ws.buffered_text(), None, "a partial frame is left alone");
        let mut long = vec![0x81, 126, 0, 200];
        long.extend(std::iter::repeat_n(b'x', 200));
        let mut ws = reader(&long, 512).await;
        assert_eq!(ws.buffered_text().map(|r| r.len()), Some(200));
        let mut ws = reader(&[0x81, 0x82, 1, 2, 3, 4, 5, 6], 64).await;
        assert_eq!(
            ws.buffered_text(),
            None,
            "a masked frame is left for next() to refuse"
        );
        assert!(ws.next().await.is_err());
    }

    #[tokio::test]
    async fn decodes_frames_in_place() {
        let mut bytes = vec![0x81, 5];
        bytes.extend_from_slice(b"hello");
        bytes.extend_from_slice(&[0x89, 1, b'p', 0x88, 2, 0x03, 0xE9]);
        let long = vec![b'x'; 300];
        bytes.extend_from_slice(&[0x81, 126, 0x01, 0x2C]);
        bytes.extend_from_slice(&long);
        let mut ws = reader(&bytes, 0).await;
        let Some(Frame::Text(r)) = ws.parse().expect("ok") else {
            panic!("text expected")
        };
        assert_eq!(ws.bytes(r), b"hello");
        assert_eq!(ws.parse().expect("ok"), Some(Frame::Ping(b"p".to_vec())));
        assert_eq!(ws.parse().expect("ok"), Some(Frame::Close(Some(1001))));
        let Some(Frame::Text(r)) = ws.parse().expect("ok") else {
            panic!("text expected")
        };
        assert_eq!(ws.bytes(r).len(), 300);
        assert_eq!(ws.parse().expect("ok"), None);
    }

    #[tokio::test]
    async fn waits_for_partial_frames_and_refuses_bad_ones() {
        let mut ws = reader(&[0x81, 126, 0x01], 3).await;
        assert_eq!(ws.parse().expect("ok"), None, "header incomplete");
        let mut ws = reader(&[0x81, 126, 0x01, 0x2C], 4).await;
        assert_eq!(ws.parse().expect("ok"), None, "body incomplete");
        ws.make_room();
        assert!(ws.buf.len() > 4, "a full buffer grows for a larger frame");
        let mut masked = reader(&[0x81, 0x85, 0, 0, 0, 0], 8).await;
        assert!(masked.parse().is_err());
        let mut frag = reader(&[0x01, 1, b'a'], 8).await;
        assert!(frag.parse().is_err());
    }
}
