//! The steady load a fault runs under, and what is checked afterwards.
//!
//! A `Publisher` publishes to `f:1` at a fixed rate, each publish with an `idempotencyKey`, and
//! acts as a careful client: a publish whose fate is unknown (`OUTCOME_UNKNOWN`, or no answer
//! before its connection died) is sent again with the same key, after reconnecting if need be,
//! until it gets a definite answer. A `Subscriber` reads `f:1` and, when its connection dies,
//! reconnects and subscribes with `since` (recovery). `verify` then checks the promises.

use std::{
    collections::{HashMap, HashSet},
    net::{SocketAddr, TcpStream},
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use tungstenite::Message;

use crate::common::{ADMIN_KEY, Ws, http, token};

pub const CHANNEL: &str = "f:1";

/// A connection to a node, or the time of the last failed attempt to make one.
enum Link {
    Up(Box<Ws>),
    Down(Instant),
}

fn connect(addr: SocketAddr, sub: &str) -> Option<Ws> {
    let stream = TcpStream::connect_timeout(&addr, Duration::from_millis(200)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    stream.set_nodelay(true).ok()?;
    let (ws, _) = tungstenite::client(format!("ws://{addr}/realtime"), stream).ok()?;
    let mut ws = Ws { ws };
    ws.send(json!({"type": "auth", "token": token(sub, "authenticated")}));
    let v = read(&mut ws).ok()??;
    (v["type"] == "auth_success").then_some(ws)
}

/// The next JSON frame if one is there within the socket's timeout; `Err` when the
/// connection is gone.
fn read(ws: &mut Ws) -> Result<Option<Value>, ()> {
    match ws.ws.read() {
        Ok(Message::Text(t)) => Ok(Some(serde_json::from_str(&t).unwrap())),
        Ok(Message::Close(_)) => Err(()),
        Ok(_) => Ok(None),
        Err(tungstenite::Error::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::Interrupted
            ) =>
        {
            Ok(None)
        }
        Err(_) => Err(()),
    }
}

/// How a publish ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fate {
    Published(String),
    /// `INTERNAL` on the only attempt: the server says it was not published.
    Refused,
}

pub struct Publisher {
    pub name: &'static str,
    addr: SocketAddr,
    link: Link,
    /// Payload `i` values of this publisher start here (publishers never share one).
    base: u64,
    next: u64,
    /// Sent, not yet answered: i -> (sent at, attempt).
    pending: HashMap<u64, Instant>,
    /// Fate unknown, to send again with the same key.
    retry: Vec<u64>,
    /// Publishes that had an attempt whose fate was unknown.
    unknown_once: HashSet<u64>,
    pub fates: HashMap<u64, Fate>,
    pub acked_at: Vec<Instant>,
    /// Answers on connections that stayed up: (how long it took, the answer).
    pub answers: Vec<(Duration, Value)>,
    pub connection_losses: usize,
    interval: Duration,
    started: Option<Instant>,
}

impl Publisher {
    pub fn new(name: &'static str, addr: SocketAddr, base: u64, rate: u32) -> Self {
        let link = match connect(addr, name) {
            Some(mut ws) => {
                ws.set_timeout(Duration::from_millis(2));
                Link::Up(Box::new(ws))
            }
            None => panic!("{name}: cannot connect to {addr}"),
        };
        Self {
            name,
            addr,
            link,
            base,
            next: 0,
            pending: HashMap::new(),
            retry: Vec::new(),
            unknown_once: HashSet::new(),
            fates: HashMap::new(),
            acked_at: Vec::new(),
            answers: Vec::new(),
            connection_losses: 0,
            interval: Duration::from_secs(1) / rate,
            started: None,
        }
    }

    /// Whether every publish has a definite fate.
    pub fn settled(&self) -> bool {
        self.pending.is_empty() && self.retry.is_empty()
    }

    pub fn unsettled(&self) -> usize {
        self.pending.len() + self.retry.len()
    }

    fn send(ws: &mut Ws, i: u64) -> bool {
        let m = json!({"type": "publish", "channel": CHANNEL, "event": "e",
            "payload": {"i": i}, "idempotencyKey": format!("k{i}"), "ref": i});
        ws.ws.send(Message::text(m.to_string())).is_ok()
    }

    /// One turn: (re)connect, send what is due, read answers. `publishing`: new publishes
    /// are still being made.
    pub fn step(&mut self, publishing: bool) {
        let started = *self.started.get_or_insert_with(Instant::now);
        if let Link::Down(at) = self.link {
            if at.elapsed() < Duration::from_millis(100) {
                return;
            }
            match connect(self.addr, self.name) {
                Some(mut ws) => {
                    ws.set_timeout(Duration::from_millis(2));
                    self.link = Link::Up(Box::new(ws));
                }
                None => {
                    self.link = Link::Down(Instant::now());
                    return;
                }
            }
        }
        let Link::Up(ws) = &mut self.link else {
            unreachable!()
        };
        let mut lost = false;
        for i in std::mem::take(&mut self.retry) {
            lost |= !Self::send(ws, i);
            self.pending.insert(i, Instant::now());
        }
        if publishing && started.elapsed() >= self.interval * self.next as u32 {
            let i = self.base + self.next;
            self.next += 1;
            lost |= !Self::send(ws, i);
            self.pending.insert(i, Instant::now());
        }
        let mut answers = Vec::new();
        while !lost {
            match read(ws) {
                Ok(Some(v)) => answers.push(v),
                Ok(None) => break,
                Err(()) => lost = true,
            }
        }
        for v in answers {
            self.answer(v);
        }
        if lost {
            // Whatever was sent and not answered: fate unknown, sent again once reconnected.
            self.connection_losses += 1;
            self.unknown_once.extend(self.pending.keys());
            self.retry.extend(self.pending.drain().map(|(i, _)| i));
            self.link = Link::Down(Instant::now());
        }
    }

    fn answer(&mut self, v: Value) {
        let i = v["ref"]
            .as_u64()
            .unwrap_or_else(|| panic!("{}: answer without ref: {v}", self.name));
        let Some(sent) = self.pending.remove(&i) else {
            panic!("{}: answer to nothing pending: {v}", self.name)
        };
        self.answers.push((sent.elapsed(), v.clone()));
        match (v["type"].as_str(), v["code"].as_str()) {
            (Some("published"), _) => {
                self.acked_at.push(Instant::now());
                let id = v["messageId"].as_str().unwrap().to_string();
                self.fates.insert(i, Fate::Published(id));
            }
            (Some("error"), Some("OUTCOME_UNKNOWN")) => {
                let id = v["messageId"]
                    .as_str()
                    .unwrap_or_else(|| panic!("OUTCOME_UNKNOWN without messageId: {v}"));
                assert!(v["message"].as_str().unwrap().contains(id), "{v}");
                self.unknown_once.insert(i);
                self.retry.push(i);
            }
            // "Not published" is the truth about this attempt only: an earlier attempt whose
            // fate was unknown may still have been stored, so the client asks again.
            (Some("error"), Some("INTERNAL")) if self.unknown_once.contains(&i) => {
                self.retry.push(i)
            }
            (Some("error"), Some("INTERNAL")) => {
                self.fates.insert(i, Fate::Refused);
            }
            _ => panic!("{}: unexpected answer: {v}", self.name),
        }
    }

    /// The longest time between two acknowledgements.
    pub fn unavailable(&self) -> Duration {
        let mut t = self.acked_at.clone();
        t.sort();
        t.windows(2).map(|w| w[1] - w[0]).max().unwrap_or_default()
    }
}

pub struct Subscriber {
    pub name: &'static str,
    addr: SocketAddr,
    link: Link,
    /// Where it stands: the last offset received, and the channel's epoch.
    at: (u64, String),
    /// (offset, payload i), in arrival order, across reconnects.
    pub received: Vec<(u64, u64)>,
    pub reconnects: usize,
}

impl Subscriber {
    pub fn new(name: &'static str, addr: SocketAddr) -> Self {
        let mut ws = connect(addr, name).unwrap_or_else(|| panic!("{name}: cannot connect"));
        ws.send(json!({"type": "subscribe", "channel": CHANNEL}));
        let s = loop {
            let v = read(&mut ws).expect("subscribed").expect("subscribed");
            if v["type"] == "subscribed" {
                break v;
            }
        };
        ws.set_timeout(Duration::from_millis(1));
        Self {
            name,
            addr,
            link: Link::Up(Box::new(ws)),
            at: (
                s["offset"].as_u64().unwrap(),
                s["epoch"].as_str().unwrap().to_string(),
            ),
            received: Vec::new(),
            reconnects: 0,
        }
    }

    pub fn step(&mut self) {
        if let Link::Down(at) = self.link {
            if at.elapsed() < Duration::from_millis(100) {
                return;
            }
            let Some(mut ws) = connect(self.addr, self.name) else {
                self.link = Link::Down(Instant::now());
                return;
            };
            ws.send(json!({"type": "subscribe", "channel": CHANNEL,
                "since": {"offset": self.at.0, "epoch": self.at.1}}));
            ws.set_timeout(Duration::from_secs(2));
            let s = loop {
                match read(&mut ws) {
                    Ok(Some(v)) if v["type"] == "subscribed" => break v,
                    Ok(_) => continue,
                    Err(()) => {
                        self.link = Link::Down(Instant::now());
                        return;
                    }
                }
            };
            assert_eq!(s["recovered"], true, "{}: recovery refused: {s}", self.name);
            ws.set_timeout(Duration::from_millis(1));
            self.reconnects += 1;
            self.link = Link::Up(Box::new(ws));
        }
        let Link::Up(ws) = &mut self.link else {
            unreachable!()
        };
        loop {
            match read(ws) {
                Ok(Some(m)) if m["type"] == "message" => {
                    let offset = m["offset"].as_u64().unwrap();
                    self.received
                        .push((offset, m["payload"]["i"].as_u64().unwrap()));
                    self.at.0 = offset;
                }
                Ok(Some(m)) => panic!("{}: unexpected frame: {m}", self.name),
                Ok(None) => break,
                Err(()) => {
                    self.link = Link::Down(Instant::now());
                    break;
                }
            }
        }
    }
}

/// Every message of `f:1` in a node's history: (offset, payload i, id), by offset.
pub fn history(addr: SocketAddr) -> Vec<(u64, u64, String)> {
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let (st, page) = http(
            addr,
            "GET",
            &format!("/api/realtime/messages?channelName={CHANNEL}&limit=1000&offset={offset}"),
            Some(ADMIN_KEY),
            None,
        );
        assert_eq!(st, 200, "{page}");
        let page = page.as_array().unwrap().clone();
        for m in &page {
            out.push((
                m["offset"].as_u64().unwrap(),
                m["payload"]["i"].as_u64().unwrap(),
                m["id"].as_str().unwrap().to_string(),
            ));
        }
        if page.len() < 1000 {
            break;
        }
        offset += 1000;
    }
    out.sort();
    out
}

/// Checks the promises after a fault; returns a one-line summary.
pub fn verify(
    what: &str,
    nodes: &[SocketAddr],
    publishers: &[Publisher],
    subscribers: &[Subscriber],
) -> String {
    // History: the same on every node, contiguous, no message stored twice.
    let h = history(nodes[0]);
    for n in &nodes[1..] {
        assert_eq!(h, history(*n), "{what}: every node sees one history");
    }
    for (k, (offset, _, _)) in h.iter().enumerate() {
        assert_eq!(*offset, k as u64 + 1, "{what}: offsets contiguous");
    }
    let stored: HashMap<u64, &str> = h.iter().map(|(_, i, id)| (*i, id.as_str())).collect();
    assert_eq!(stored.len(), h.len(), "{what}: a message stored twice");
    // Every definite answer was the truth, and every stored message was acknowledged.
    let mut fates: HashMap<u64, &Fate> = HashMap::new();
    for p in publishers {
        assert!(
            p.settled(),
            "{what}: {}: {} unsettled",
            p.name,
            p.unsettled()
        );
        fates.extend(p.fates.iter().map(|(i, f)| (*i, f)));
        for (took, v) in &p.answers {
            assert!(
                *took < Duration::from_millis(3500),
                "{what}: {}: answered after {took:?}: {v}",
                p.name
            );
        }
    }
    for (i, f) in &fates {
        match f {
            Fate::Published(id) => assert_eq!(
                stored.get(i).copied(),
                Some(id.as_str()),
                "{what}: publish {i} acknowledged as {id}, history has {:?}",
                stored.get(i)
            ),
            Fate::Refused => assert!(
                !stored.contains_key(i),
                "{what}: publish {i} answered `not published` but stored"
            ),
        }
    }
    for i in stored.keys() {
        assert!(
            matches!(fates.get(i), Some(Fate::Published(_))),
            "{what}: {i} is stored but its publisher was never told"
        );
    }
    // Every subscriber got all of history, once, in order (across its reconnects).
    let want: Vec<(u64, u64)> = h.iter().map(|(o, i, _)| (*o, *i)).collect();
    for s in subscribers {
        let first = s.received.first().map_or(1, |r| r.0);
        assert_eq!(first, 1, "{what}: {}: started at offset {first}", s.name);
        if s.received != want {
            let got: HashSet<u64> = s.received.iter().map(|r| r.0).collect();
            let missed = want.iter().filter(|w| !got.contains(&w.0)).count();
            panic!(
                "{what}: {}: got {} messages, history has {} ({missed} missed; {} out of order or twice)",
                s.name,
                s.received.len(),
                want.len(),
                s.received.windows(2).filter(|w| w[0].0 >= w[1].0).count()
            );
        }
    }
    let refused = fates.values().filter(|f| ***f == Fate::Refused).count();
    let slowest = publishers
        .iter()
        .flat_map(|p| p.answers.iter().map(|a| a.0))
        .max()
        .unwrap_or_default();
    let retried: usize = publishers.iter().map(|p| p.unknown_once.len()).sum();
    let gaps: Vec<String> = publishers
        .iter()
        .map(|p| format!("{} {:.1?}", p.name, p.unavailable()))
        .collect();
    format!(
        "{what}: {} published, {refused} refused, {retried} retried after an unknown outcome; \
         slowest answer {slowest:.1?}; no acknowledgement for: {}; subscribers reconnected {:?} times",
        h.len(),
        gaps.join(", "),
        subscribers.iter().map(|s| s.reconnects).collect::<Vec<_>>()
    )
}
