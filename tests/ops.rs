//! Operations: `/health`, `/metrics` (names and moving values), graceful shutdown (1001 to every
//! WebSocket), client pings, server pings and the idle timeout. Runs on both drivers.

mod common;

use std::{
    collections::HashMap,
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};
use tungstenite::Message;

fn metrics(s: &TestServer) -> HashMap<String, u64> {
    let (status, body) = raw_http(
        s.addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.split_once(' ').expect("name value");
            (k.to_string(), v.trim().parse().expect("integer value"))
        })
        .collect()
}

fn metric(s: &TestServer, name: &str) -> u64 {
    *metrics(s)
        .get(name)
        .unwrap_or_else(|| panic!("metric {name} missing"))
}

/// One server frame (unmasked): (opcode, payload).
fn read_frame(s: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).expect("frame header");
    assert_eq!(h[1] & 0x80, 0, "server frames are not masked");
    let len = match h[1] & 0x7f {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).unwrap();
            u64::from(u16::from_be_bytes(b))
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).unwrap();
            u64::from_be_bytes(b)
        }
        n => u64::from(n),
    };
    let mut p = vec![0u8; len as usize];
    s.read_exact(&mut p).unwrap();
    (h[0] & 0x0f, p)
}

fn masked_text(payload: &[u8]) -> Vec<u8> {
    let mask = [9u8, 8, 7, 6];
    let mut v = vec![0x81];
    if payload.len() < 126 {
        v.push(0x80 | payload.len() as u8);
    } else {
        v.push(0x80 | 126);
        v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    }
    v.extend_from_slice(&mask);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    v
}

/// A WebSocket opened by hand over a plain TcpStream (so nothing answers pings for us).
fn raw_ws(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(
        b"GET /realtime HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    )
    .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut b).unwrap();
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    // RFC 6455 section 1.3's example key and answer.
    assert!(
        head.to_ascii_lowercase()
            .contains("sec-websocket-accept: s3pplmbitxaq9kygzzhzrbk+xoo="),
        "{head}"
    );
    s
}

both_drivers!(health_reports_ok, |driver| {
    let s = TestServer::start(driver);
    let (st, v) = http(s.addr, "GET", "/health", None, None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["status"], "ok");
    assert_eq!(v["engine"], "memory");
    assert_eq!(v["engineReachable"], true);
    assert_eq!(v["workers"], 2);
    assert!(v["nodeId"].as_str().is_some_and(|n| !n.is_empty()), "{v}");
    // No credentials needed, and a trailing slash is the same route.
    let (st, _) = http(s.addr, "GET", "/health/", None, None);
    assert_eq!(st, 200);
    s.shutdown();
});

both_drivers!(metrics_are_exposed_and_move, |driver| {
    let s = TestServer::start(driver);
    let (st, text) = raw_http(
        s.addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(st, 200);
    for name in [
        "ringcast_connections",
        "ringcast_ws_connections",
        "ringcast_subscriptions",
        "ringcast_messages_in_total",
        "ringcast_messages_out_total",
        "ringcast_deliveries_total",
        "ringcast_bytes_in_total",
        "ringcast_bytes_out_total",
        "ringcast_queue_drops_total",
        "ringcast_slow_consumer_closes_total",
        "ringcast_send_gate_forgiven_total",
        "ringcast_published_total",
        "ringcast_http_requests_total",
    ] {
        assert!(
            text.contains(&format!("\n# TYPE {name} ")),
            "{name} has no TYPE"
        );
        assert!(text.contains(&format!("\n{name} ")), "{name} missing");
    }
    assert!(text.contains("# TYPE ringcast_connections gauge"));
    assert!(text.contains("# TYPE ringcast_deliveries_total counter"));
    let m0 = metrics(&s);
    assert_eq!(m0["ringcast_ws_connections"], 0);
    assert_eq!(m0["ringcast_deliveries_total"], 0);
    assert_eq!(m0["ringcast_workers"], 2);

    s.channel("m:*");
    let mut subs: Vec<Ws> = (0..3).map(|i| s.client(&format!("s{i}"))).collect();
    for w in &mut subs {
        w.subscribe("m:1");
    }
    let mut p = s.client("p");
    for i in 0..2 {
        p.publish("m:1", "e", json!(i));
    }
    for w in &mut subs {
        w.expect("message");
        w.expect("message");
    }
    p.send(json!({"type": "nope"}));
    p.expect("error");
    eventually("counters moved", Duration::from_secs(2), || {
        let m = metrics(&s);
        m["ringcast_deliveries_total"] == 6
            && m["ringcast_published_total"] == 2
            && m["ringcast_subscriptions"] == 3
            && m["ringcast_ws_connections"] == 4
            && m["ringcast_errors_sent_total"] == 1
    });
    let m1 = metrics(&s);
    // 4 auth + 3 subscribe + 2 publish + 1 bad message.
    assert_eq!(m1["ringcast_messages_in_total"], 10);
    // 4 auth_success + 3 subscribed + 2 published + 6 messages + 1 error.
    assert_eq!(m1["ringcast_messages_out_total"], 16);
    assert!(m1["ringcast_bytes_in_total"] > m0["ringcast_bytes_in_total"]);
    assert!(m1["ringcast_bytes_out_total"] > m0["ringcast_bytes_out_total"]);
    assert!(m1["ringcast_http_requests_total"] > m0["ringcast_http_requests_total"]);
    assert!(m1["ringcast_connections"] >= 4);
    // Gauges come back down when clients leave.
    drop(subs);
    drop(p);
    eventually("gauges back to zero", Duration::from_secs(2), || {
        let m = metrics(&s);
        m["ringcast_ws_connections"] == 0 && m["ringcast_subscriptions"] == 0
    });
    assert_eq!(metric(&s, "ringcast_deliveries_total"), 6);
    s.shutdown();
});

both_drivers!(graceful_shutdown_closes_websockets_with_1001, |driver| {
    let s = TestServer::start(driver);
    s.channel("a:*");
    let addr = s.addr;
    let mut subscribed = s.client("u1");
    subscribed.subscribe("a:1");
    let mut unauthed = s.ws();
    let started = Instant::now();
    let stopper = std::thread::spawn(move || s.shutdown());
    let (code, reason) = subscribed.expect_close();
    assert_eq!(code, 1001, "{reason}");
    assert_eq!(unauthed.expect_close().0, 1001);
    stopper.join().expect("shutdown returns");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    // No longer accepting.
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after shutdown"
    );
});

both_drivers!(client_ping_is_answered_with_pong, |driver| {
    let s = TestServer::start(driver);
    let mut ws = s.ws();
    for (i, payload) in [&b"before-auth"[..], b"", b"after-auth"].iter().enumerate() {
        if i == 2 {
            ws.auth(&token("u1", "authenticated"));
        }
        ws.ws.send(Message::Ping(payload.to_vec().into())).unwrap();
        loop {
            match ws.ws.read().expect("read") {
                Message::Pong(p) => {
                    assert_eq!(&p[..], *payload);
                    break;
                }
                Message::Ping(_) => continue,
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    s.shutdown();
});

both_drivers!(
    server_pings_keep_live_clients_and_drop_silent_ones,
    |driver| {
        let s = TestServer::builder(driver)
            .with(|f| {
                f.websocket.ping_interval = "200ms".into();
                f.websocket.idle_timeout = "600ms".into();
            })
            .start();
        s.channel("a:*");
        // `live` reads, so tungstenite answers every ping with a pong.
        let mut live = s.client("live");
        // `silent` is a hand-made socket that never answers anything.
        let mut silent = raw_ws(s.addr);
        let auth = json!({"type": "auth", "token": token("silent", "authenticated")}).to_string();
        silent.write_all(&masked_text(auth.as_bytes())).unwrap();
        let authed_at = Instant::now();
        let (op, p) = read_frame(&mut silent);
        assert_eq!(op, 0x1);
        assert_eq!(
            serde_json::from_slice::<Value>(&p).unwrap()["type"],
            "auth_success"
        );
        let silent_reader = std::thread::spawn(move || {
            let mut pings = 0;
            loop {
                let (op, p) = read_frame(&mut silent);
                match op {
                    0x9 => pings += 1,
                    0x8 => {
                        let code = u16::from_be_bytes([p[0], p[1]]);
                        return (pings, code, authed_at.elapsed(), silent);
                    }
                    other => panic!("unexpected opcode {other}"),
                }
            }
        });

        live.set_timeout(Duration::from_millis(100));
        let mut pings = 0;
        let until = Instant::now() + Duration::from_millis(1050);
        while Instant::now() < until {
            match live.ws.read() {
                Ok(Message::Ping(_)) => pings += 1,
                Ok(other) => panic!("unexpected {other:?}"),
                Err(tungstenite::Error::Io(e))
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("live client lost its connection: {e}"),
            }
        }
        live.set_timeout(Duration::from_secs(5));
        assert!(
            pings >= 2,
            "server pinged the live client {pings} times in 1.05s"
        );
        // Still open and served well past the idle timeout.
        let r = live.subscribe("a:1");
        assert_eq!(r["channel"], "a:1");

        let (silent_pings, code, after, mut silent) = silent_reader.join().unwrap();
        assert!(silent_pings >= 1, "the silent client was never pinged");
        assert_eq!(code, 1001);
        assert!(
            after >= Duration::from_millis(550),
            "closed after {after:?}"
        );
        assert!(
            after < Duration::from_millis(1500),
            "closed after {after:?}"
        );
        let mut rest = Vec::new();
        assert_eq!(
            silent.read_to_end(&mut rest).unwrap(),
            0,
            "socket ends after close"
        );
        s.shutdown();
    }
);
