//! A Socket.IO client at the packet level (tungstenite over a std socket): the Engine.IO
//! open, CONNECT, events with and without acks, and the server's pings answered on the way.
//! For the codec and protocol tests; the InsForge SDK itself is driven by `tests/sdk.rs`.

use std::{
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use serde_json::{Value, json};
use tungstenite::{Message, WebSocket};

pub struct Sio {
    pub ws: WebSocket<TcpStream>,
    /// The Engine.IO open packet's JSON.
    pub open: Value,
    /// Answer `2` with `3` automatically.
    pub answer_pings: bool,
    pub pings: u32,
    next_ack: u64,
}

impl Sio {
    /// Opens `/socket.io/?EIO=4&transport=websocket` and reads the open packet.
    pub fn open(addr: SocketAddr) -> Self {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let url = format!("ws://{addr}/socket.io/?EIO=4&transport=websocket&t=x");
        let (ws, _) = tungstenite::client(url.as_str(), stream).expect("handshake");
        let mut s = Self {
            ws,
            open: Value::Null,
            answer_pings: true,
            pings: 0,
            next_ack: 7,
        };
        let open = s.recv_text();
        assert!(open.starts_with('0'), "open packet first: {open}");
        s.open = serde_json::from_str(&open[1..]).expect("open JSON");
        s
    }

    /// Opens and CONNECTs with `token`; returns the socket id.
    pub fn connect(addr: SocketAddr, token: &str) -> (Self, String) {
        let mut s = Self::open(addr);
        s.send_text(&format!("40{}", json!({"token": token})));
        let r = s.recv_text();
        assert!(r.starts_with("40{"), "CONNECT accepted: {r}");
        let v: Value = serde_json::from_str(&r[2..]).unwrap();
        let sid = v["sid"].as_str().expect("sid").to_string();
        (s, sid)
    }

    pub fn set_timeout(&mut self, d: Duration) {
        self.ws.get_mut().set_read_timeout(Some(d)).unwrap();
    }

    pub fn send_text(&mut self, t: &str) {
        self.ws.send(Message::text(t.to_string())).expect("send");
    }

    /// The next text message that is not a ping (pings are answered when `answer_pings`).
    pub fn recv_text(&mut self) -> String {
        loop {
            let m = match self.ws.read() {
                Err(tungstenite::Error::Io(e)) if e.kind() == std::io::ErrorKind::Interrupted => {
                    continue;
                }
                r => r.expect("read"),
            };
            match m {
                Message::Text(t) if t.as_str() == "2" => {
                    self.pings += 1;
                    if self.answer_pings {
                        self.send_text("3");
                    }
                }
                Message::Text(t) => return t.to_string(),
                Message::Close(c) => panic!("unexpected close: {c:?}"),
                _ => continue,
            }
        }
    }

    /// The next EVENT: (name, data).
    pub fn recv_event(&mut self) -> (String, Value) {
        let t = self.recv_text();
        assert!(t.starts_with("42["), "expected an event, got {t}");
        let v: Value = serde_json::from_str(&t[2..]).unwrap();
        (v[0].as_str().unwrap().to_string(), v[1].clone())
    }

    /// The next EVENT named `name`, skipping others of `skip` names (presence, say).
    pub fn expect_event(&mut self, name: &str) -> Value {
        let (n, v) = self.recv_event();
        assert_eq!(n, name, "expected {name}, got {n}: {v}");
        v
    }

    pub fn emit(&mut self, name: &str, data: Value) {
        self.send_text(&format!("42{}", json!([name, data])));
    }

    /// Emits with an ack id and returns the ack's first argument.
    pub fn call(&mut self, name: &str, data: Value) -> Value {
        let id = self.next_ack;
        self.next_ack += 1;
        self.send_text(&format!("42{id}{}", json!([name, data])));
        let t = self.recv_text();
        let prefix = format!("43{id}");
        assert!(t.starts_with(&prefix), "expected ack {id}, got {t}");
        let v: Value = serde_json::from_str(&t[prefix.len()..]).unwrap();
        v[0].clone()
    }

    pub fn subscribe(&mut self, ch: &str) -> Value {
        self.call("realtime:subscribe", json!({"channel": ch}))
    }

    pub fn publish(&mut self, ch: &str, event: &str, payload: Value) {
        self.emit(
            "realtime:publish",
            json!({"channel": ch, "event": event, "payload": payload}),
        );
    }

    /// Reads until the server closes; its close frame (code, reason).
    pub fn expect_close(&mut self) -> (u16, String) {
        super::read_close(&mut self.ws)
    }

    /// Asserts no text but pings arrives within `d` (pings answered when `answer_pings`).
    pub fn expect_silence(&mut self, d: Duration) {
        let Self {
            ws,
            pings,
            answer_pings,
            ..
        } = self;
        super::silence(ws, d, |ws, t| {
            assert_eq!(t, "2", "unexpected message: {t}");
            *pings += 1;
            if *answer_pings {
                ws.send(Message::text("3")).expect("send");
            }
        });
    }
}
