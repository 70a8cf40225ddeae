//! Bad client input on the WebSocket: every bad message gets an error frame with its stable
//! `code` (and the client's `ref`) while the connection stays usable; protocol violations close
//! with the RFC 6455 code; limits refuse with their code, never silently. After each, the
//! server still serves other clients. Runs on both drivers.

mod common;

use std::{io::Write, net::TcpStream, time::Duration};

use common::*;
use serde_json::{Value, json};
use tungstenite::Message;

/// A server with `x:*` (used by the test) and `probe:*` (used by `still_serves`).
fn server(driver: &str, f: impl FnOnce(&mut ringcast::config::FileConfig)) -> TestServer {
    let s = TestServer::builder(driver).with(f).start();
    s.channel("x:*");
    s.channel("probe:*");
    s
}

/// Next frame must be an error with `code`; returns it.
fn expect_error(ws: &mut Ws, code: &str) -> Value {
    let e = ws.expect("error");
    assert_eq!(e["code"], code, "{e}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
    e
}

/// A fresh pair of clients can still subscribe, publish and receive.
fn still_serves(s: &TestServer) {
    let mut sub = s.client("probe-sub");
    sub.subscribe("probe:1");
    let mut publ = s.client("probe-pub");
    let ack = publ.publish("probe:1", "probe", json!({"ok": true}));
    let m = sub.expect("message");
    assert_eq!(m["messageId"], ack["messageId"]);
    assert_eq!(m["payload"], json!({"ok": true}));
}

/// One masked client frame (FIN set) with any opcode and payload.
fn masked_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut v = vec![0x80 | opcode];
    let n = payload.len();
    if n < 126 {
        v.push(0x80 | n as u8);
    } else if n <= u16::MAX as usize {
        v.push(0x80 | 126);
        v.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        v.push(0x80 | 127);
        v.extend_from_slice(&(n as u64).to_be_bytes());
    }
    v.extend_from_slice(&mask);
    v.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
    v
}

fn raw_write(ws: &mut Ws, bytes: &[u8]) {
    let s: &mut TcpStream = ws.ws.get_mut();
    s.write_all(bytes).expect("raw write");
    s.flush().unwrap();
}

/// Value of one metric from `GET /metrics`.
fn metric(s: &TestServer, name: &str) -> u64 {
    let (status, body) = raw_http(
        s.addr,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200);
    body.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} missing:\n{body}"))
}

both_drivers!(malformed_json_keeps_connection_usable, |driver| {
    let s = server(driver, |_| {});
    let mut ws = s.client("u1");
    for bad in [
        "{not json",
        "",
        "{\"type\":\"subscribe\"",
        "[]",
        "42",
        "null",
    ] {
        ws.send_text(bad);
        let e = expect_error(&mut ws, "INVALID_MESSAGE");
        assert_eq!(e["type"], "error");
    }
    let r = ws.subscribe("x:1");
    assert_eq!(r["channel"], "x:1");
    still_serves(&s);
    s.shutdown();
});

both_drivers!(wrong_field_types_are_invalid, |driver| {
    let s = server(driver, |_| {});
    let mut ws = s.client("u1");
    for bad in [
        json!({"type": 5}),
        json!({"type": "subscribe", "channel": 5}),
        json!({"type": "subscribe", "channel": ["x:1"]}),
        json!({"type": "publish", "channel": "x:1", "event": 7}),
        json!({"type": "auth", "token": 123}),
        json!({"type": "subscribe", "channel": "x:1", "filter": "INSERT"}),
        json!({"type": "subscribe", "channel": "x:1", "ref": {"a": 1}}),
    ] {
        ws.send(bad.clone());
        let e = ws.expect("error");
        assert_eq!(e["code"], "INVALID_MESSAGE", "for {bad}: {e}");
    }
    ws.subscribe("x:1");
    still_serves(&s);
    s.shutdown();
});

both_drivers!(missing_fields_are_invalid, |driver| {
    let s = server(driver, |_| {});
    let mut ws = s.client("u1");
    for bad in [
        json!({}),
        json!({"channel": "x:1"}),
        json!({"type": "auth"}),
        json!({"type": "subscribe"}),
        json!({"type": "unsubscribe"}),
        json!({"type": "publish", "channel": "x:1", "payload": {}}),
        json!({"type": "publish", "event": "e", "payload": {}}),
    ] {
        ws.send(bad.clone());
        let e = ws.expect("error");
        assert_eq!(e["code"], "INVALID_MESSAGE", "for {bad}: {e}");
    }
    ws.subscribe("x:1");
    still_serves(&s);
    s.shutdown();
});

both_drivers!(unknown_and_misplaced_fields_are_invalid, |driver| {
    let s = server(driver, |_| {});
    let mut ws = s.client("u1");
    for bad in [
        json!({"type": "subscribe", "channel": "x:1", "bogus": 1}),
        json!({"type": "publish", "channel": "x:1", "event": "e", "payload": {}, "extra": true}),
        // Known fields that do not belong to this message type.
        json!({"type": "subscribe", "channel": "x:1", "token": "t"}),
        json!({"type": "unsubscribe", "channel": "x:1", "payload": {}}),
    ] {
        ws.send(bad.clone());
        let e = ws.expect("error");
        assert_eq!(e["code"], "INVALID_MESSAGE", "for {bad}: {e}");
    }
    // Nothing above took effect: not subscribed, nothing published.
    let mut other = s.client("u2");
    other.publish("x:1", "e", json!(1));
    ws.expect_silence(Duration::from_millis(150));
    still_serves(&s);
    s.shutdown();
});

both_drivers!(unknown_type_is_unknown_type, |driver| {
    let s = server(driver, |_| {});
    let mut ws = s.client("u1");
    ws.send(json!({"type": "frobnicate", "channel": "x:1"}));
    let e = expect_error(&mut ws, "UNKNOWN_TYPE");
    assert!(e["message"].as_str().unwrap().contains("frobnicate"), "{e}");
    // Also before authentication.
    let mut fresh = s.ws();
    fresh.send(json!({"type": "hello"}));
    expect_error(&mut fresh, "UNKNOWN_TYPE");
    fresh.auth(&token("u9", "authenticated"));
    ws.subscribe("x:1");
    still_serves(&s);
    s.shutdown();
});

both_drivers!(ref_is_echoed_on_errors, |driver| {
    let s = server(driver, |_| {});
    let mut ws = s.ws();
    // Before auth: UNAUTHORIZED with the ref.
    ws.send(json!({"type": "subscribe", "channel": "x:1", "ref": "r0"}));
    let e = expect_error(&mut ws, "UNAUTHORIZED");
    assert_eq!(e["ref"], "r0");
    ws.send(json!({"type": "auth", "token": "garbage", "ref": 1}));
    let e = expect_error(&mut ws, "INVALID_TOKEN");
    assert_eq!(e["ref"], 1);
    ws.send(json!({"type": "auth", "token": token("u1", "authenticated"), "ref": "a"}));
    let ok = ws.expect("auth_success");
    assert_eq!(ok["ref"], "a");
    let cases = [
        (
            json!({"type": "nope", "ref": "r1"}),
            "UNKNOWN_TYPE",
            json!("r1"),
        ),
        (
            json!({"type": "subscribe", "ref": 42}),
            "INVALID_MESSAGE",
            json!(42),
        ),
        (
            json!({"type": "subscribe", "channel": "x:1", "bogus": true, "ref": "r2"}),
            "INVALID_MESSAGE",
            json!("r2"),
        ),
        (
            json!({"type": "subscribe", "channel": "nosuch:1", "ref": "r3"}),
            "CHANNEL_NOT_FOUND",
            json!("r3"),
        ),
        (
            json!({"type": "publish", "channel": "nosuch:1", "event": "e", "ref": -5}),
            "CHANNEL_NOT_FOUND",
            json!(-5),
        ),
        (
            json!({"type": "subscribe", "channel": "bad name", "ref": "r4"}),
            "INVALID_MESSAGE",
            json!("r4"),
        ),
    ];
    for (msg, code, r) in cases {
        ws.send(msg.clone());
        let e = ws.expect("error");
        assert_eq!(e["code"], code, "for {msg}: {e}");
        assert_eq!(e["ref"], r, "for {msg}: {e}");
    }
    // No ref sent: none echoed.
    ws.send(json!({"type": "nope"}));
    let e = expect_error(&mut ws, "UNKNOWN_TYPE");
    assert!(e.get("ref").is_none(), "{e}");
    still_serves(&s);
    s.shutdown();
});

both_drivers!(binary_frame_gets_error_and_stays_open, |driver| {
    let s = server(driver, |_| {});
    let mut ws = s.client("u1");
    ws.ws
        .send(Message::binary(
            br#"{"type":"subscribe","channel":"x:1"}"#.to_vec(),
        ))
        .unwrap();
    let e = expect_error(&mut ws, "INVALID_MESSAGE");
    assert!(e["message"].as_str().unwrap().contains("binary"), "{e}");
    let r = ws.subscribe("x:1");
    assert_eq!(r["channel"], "x:1");
    still_serves(&s);
    s.shutdown();
});

both_drivers!(invalid_utf8_text_closes_1007, |driver| {
    let s = server(driver, |_| {});
    let mut ws = s.client("u1");
    raw_write(&mut ws, &masked_frame(0x1, &[b'{', 0xff, 0xfe, 0xfd, b'}']));
    let (code, _) = ws.expect_close();
    assert_eq!(code, 1007);
    still_serves(&s);
    s.shutdown();
});

both_drivers!(unmasked_frame_closes_1002, |driver| {
    let s = server(driver, |_| {});
    let mut ws = s.client("u1");
    // Client frames must be masked (RFC 6455 5.1).
    raw_write(&mut ws, &[0x81, 0x02, b'{', b'}']);
    let (code, _) = ws.expect_close();
    assert_eq!(code, 1002);
    still_serves(&s);
    s.shutdown();
});

both_drivers!(huge_frame_closes_1009_from_header, |driver| {
    let s = server(driver, |_| {});
    let mut ws = s.client("u1");
    // Announce a 16 MiB text frame, send only 100 bytes of it: the server must refuse it from
    // the header alone (it cannot wait for the rest: we never send it).
    let mut f = vec![0x81, 0x80 | 127];
    f.extend_from_slice(&(16u64 << 20).to_be_bytes());
    f.extend_from_slice(&[1, 2, 3, 4]);
    f.extend_from_slice(&[b'a'; 100]);
    raw_write(&mut ws, &f);
    let (code, _) = ws.expect_close();
    assert_eq!(code, 1009);
    assert_eq!(metric(&s, "ringcast_protocol_closes_total"), 1);
    still_serves(&s);
    s.shutdown();
});

both_drivers!(frame_just_over_limit_closes_1009, |driver| {
    let s = server(driver, |f| {
        f.websocket.max_frame_bytes = 4096;
        f.websocket.max_payload_bytes = 1024;
    });
    let mut ws = s.client("u1");
    // A complete, valid frame of 4097 bytes: still over the limit.
    let head = r#"{"type":"publish","channel":"x:1","event":"e","payload":""#;
    let body = format!("{head}{}\"}}", "a".repeat(4097 - head.len() - 2));
    assert_eq!(body.len(), 4097);
    raw_write(&mut ws, &masked_frame(0x1, body.as_bytes()));
    let (code, _) = ws.expect_close();
    assert_eq!(code, 1009);
    still_serves(&s);
    s.shutdown();
});

both_drivers!(anything_before_auth_is_unauthorized, |driver| {
    let s = server(driver, |_| {});
    let mut sub = s.client("watcher");
    sub.subscribe("x:1");
    let mut ws = s.ws();
    ws.send(json!({"type": "publish", "channel": "x:1", "event": "e", "payload": {}}));
    let e = expect_error(&mut ws, "UNAUTHORIZED");
    assert_eq!(e["type"], "error");
    ws.send(json!({"type": "subscribe", "channel": "x:1"}));
    expect_error(&mut ws, "UNAUTHORIZED");
    ws.send(json!({"type": "unsubscribe", "channel": "x:1"}));
    expect_error(&mut ws, "UNAUTHORIZED");
    // Nothing was published.
    sub.expect_silence(Duration::from_millis(150));
    // The socket stays open and can authenticate.
    ws.auth(&token("u1", "authenticated"));
    ws.publish("x:1", "e", json!({}));
    sub.expect("message");
    still_serves(&s);
    s.shutdown();
});

both_drivers!(unknown_channel_is_channel_not_found, |driver| {
    let s = server(driver, |_| {});
    let mut ws = s.client("u1");
    ws.send(json!({"type": "subscribe", "channel": "nosuch:1"}));
    let e = expect_error(&mut ws, "CHANNEL_NOT_FOUND");
    assert_eq!(e["message"], "Channel not found or not accessible");
    assert_eq!(e["channel"], "nosuch:1");
    ws.send(json!({"type": "publish", "channel": "nosuch:1", "event": "e", "payload": 1}));
    let e = expect_error(&mut ws, "CHANNEL_NOT_FOUND");
    assert_eq!(e["message"], "Channel not found or not accessible");
    // `x:*` does not match `x` (no `:` after it) nor `xx:1`.
    for name in ["x", "xx:1"] {
        ws.send(json!({"type": "subscribe", "channel": name}));
        expect_error(&mut ws, "CHANNEL_NOT_FOUND");
    }
    ws.subscribe("x:1");
    still_serves(&s);
    s.shutdown();
});

both_drivers!(subscriptions_past_the_limit_are_refused, |driver| {
    let s = server(driver, |f| f.websocket.max_subscriptions = 2);
    let mut ws = s.client("u1");
    let first = ws.subscribe("x:1");
    ws.subscribe("x:2");
    ws.send(json!({"type": "subscribe", "channel": "x:3", "ref": "third"}));
    let e = expect_error(&mut ws, "TOO_MANY_SUBSCRIPTIONS");
    assert_eq!(e["ref"], "third");
    assert_eq!(e["channel"], "x:3");
    // Re-subscribing to a channel already held is not a new subscription.
    assert_eq!(
        ws.subscribe("x:1")["subscriptionId"],
        first["subscriptionId"]
    );
    // The refused subscription really does not exist.
    let mut p = s.client("p");
    p.publish("x:3", "e", json!(3));
    ws.expect_silence(Duration::from_millis(150));
    // Freeing a slot makes room.
    ws.send(json!({"type": "unsubscribe", "channel": "x:2"}));
    ws.expect("unsubscribed");
    ws.subscribe("x:3");
    p.publish("x:3", "e", json!(4));
    assert_eq!(ws.expect("message")["payload"], 4);
    // Another connection has its own budget.
    let mut other = s.client("u2");
    other.subscribe("x:1");
    other.subscribe("x:2");
    still_serves(&s);
    s.shutdown();
});

both_drivers!(
    publish_flood_is_rate_limited_and_acked_ones_arrive,
    |driver| {
        // Refill 1/s, burst 5: 20 publishes sent at once get exactly 5 acks (the test sends them in
        // far less than the one second another token would take).
        let s = server(driver, |f| {
            f.websocket.publish_rate = 1;
            f.websocket.publish_burst = 5;
        });
        let mut sub = s.client("sub");
        sub.subscribe("x:1");
        let mut p = s.client("flooder");
        let n = 20;
        let text: Vec<Message> = (0..n)
        .map(|i| {
            Message::text(
                json!({"type": "publish", "channel": "x:1", "event": "e", "payload": {"i": i}, "ref": i})
                    .to_string(),
            )
        })
        .collect();
        for m in text {
            p.ws.write(m).unwrap();
        }
        p.ws.flush().unwrap();
        let mut acked = Vec::new();
        let mut limited = Vec::new();
        for _ in 0..n {
            let v = p.recv();
            match v["type"].as_str() {
                Some("published") => {
                    acked.push((v["ref"].as_u64().unwrap(), v["messageId"].clone()))
                }
                Some("error") => {
                    assert_eq!(v["code"], "RATE_LIMITED", "{v}");
                    assert_eq!(v["channel"], "x:1");
                    limited.push(v["ref"].as_u64().unwrap());
                }
                _ => panic!("unexpected {v}"),
            }
        }
        assert_eq!(acked.len(), 5, "acked {acked:?}");
        assert_eq!(limited.len(), 15);
        acked.sort_by_key(|a| a.0);
        assert_eq!(
            acked.iter().map(|a| a.0).collect::<Vec<_>>(),
            vec![0, 1, 2, 3, 4],
            "the first five fit the burst"
        );
        // Every acknowledged message reaches the subscriber, in order; nothing else does.
        for (i, id) in &acked {
            let m = sub.expect("message");
            assert_eq!(&m["messageId"], id);
            assert_eq!(m["payload"]["i"], *i);
        }
        sub.expect_silence(Duration::from_millis(150));
        // Other connections have their own bucket.
        still_serves(&s);
        s.shutdown();
    }
);

both_drivers!(oversize_payload_is_refused, |driver| {
    let s = server(driver, |f| f.websocket.max_payload_bytes = 1024);
    let mut sub = s.client("sub");
    sub.subscribe("x:1");
    let mut ws = s.client("u1");
    // The payload as JSON text: a 1030-character string is 1032 bytes.
    ws.send(json!({"type": "publish", "channel": "x:1", "event": "e", "payload": "a".repeat(1030), "ref": "big"}));
    let e = expect_error(&mut ws, "PAYLOAD_TOO_LARGE");
    assert_eq!(e["ref"], "big");
    assert_eq!(e["channel"], "x:1");
    sub.expect_silence(Duration::from_millis(150));
    // Exactly at the limit is fine.
    let ack = ws.publish("x:1", "e", json!("a".repeat(1022)));
    let m = sub.expect("message");
    assert_eq!(m["messageId"], ack["messageId"]);
    still_serves(&s);
    s.shutdown();
});

both_drivers!(
    a_peer_that_stopped_reading_does_not_hold_up_other_writes,
    |driver| {
        // One write in flight per core at a time (limiting at all times: one publish at a time
        // would not put an adaptive gate behind), and queues deep enough that the stuck peer is
        // not closed during the test: only the send gate's forgiveness lets the others go on.
        let s = server(driver, |f| {
            f.server.workers = 1;
            f.server.send_slice = 1;
            f.server.send_gate = "always".into();
            f.websocket.outbound_queue_frames = 10_000;
            f.websocket.outbound_queue_bytes = 512 << 20;
            f.websocket.publish_bytes_rate = 1 << 30;
            f.websocket.publish_bytes_burst = 1 << 30;
        });
        let mut stuck = s.client("stuck");
        stuck.subscribe("x:1");
        let mut reader = s.client("reader");
        reader.subscribe("x:1");
        let mut p = s.client("pub");
        // 24 MiB: more than the stuck peer's socket buffers (a few MiB each way on loopback), so
        // its write blocks; every publish is acked and read by the other subscriber meanwhile.
        let payload = json!("z".repeat(128 << 10));
        for i in 0..192 {
            let ack = p.publish("x:1", "big", payload.clone());
            let m = reader.expect("message");
            assert_eq!(m["messageId"], ack["messageId"], "message {i}");
        }
        assert!(
            metric(&s, "ringcast_send_gate_forgiven_total") >= 1,
            "the stuck write never held the gate: the test did not test it"
        );
        assert_eq!(metric(&s, "ringcast_slow_consumer_closes_total"), 0);
        drop(stuck);
        still_serves(&s);
        s.shutdown();
    }
);

both_drivers!(slow_consumer_is_closed_with_1013, |driver| {
    let s = server(driver, |f| f.websocket.outbound_queue_frames = 8);
    let mut slow = s.client("slow");
    slow.subscribe("x:1");
    let mut p = s.client("fast");
    // 128 KiB messages: the socket buffers fill, then the 8-frame queue, then the subscriber
    // is cut off. Never more than this is needed (buffers are a few MiB at most).
    let payload = json!("z".repeat(128 << 10));
    let mut sent = 0;
    while metric(&s, "ringcast_slow_consumer_closes_total") == 0 {
        assert!(sent < 400, "slow consumer not closed after {sent} messages");
        for _ in 0..8 {
            p.publish("x:1", "big", payload.clone());
            sent += 1;
        }
    }
    eventually("one slow-consumer close", Duration::from_secs(2), || {
        metric(&s, "ringcast_slow_consumer_closes_total") == 1
    });
    assert!(metric(&s, "ringcast_queue_drops_total") >= 1);
    // The slow client finally reads: what made it out, then the close frame.
    let (code, reason) = slow.expect_close();
    assert_eq!(code, 1013, "{reason}");
    assert!(reason.contains("slow"), "{reason}");
    // The publisher was not affected.
    p.publish("x:1", "big", json!("small"));
    still_serves(&s);
    s.shutdown();
});

// Structs read from arrays by position (serde's sequence form) are refused everywhere a
// client sends JSON: protocol messages and their fields, REST bodies.
both_drivers!(arrays_are_not_objects, |driver| {
    let s = server(driver, |_| {});
    let mut ws = s.client("u1");
    for bad in [
        json!(["subscribe", null, null, "x:1"]),
        json!({"type": "subscribe", "channel": "db:x", "filter": []}),
        json!({"type": "subscribe", "channel": "db:x", "filter": ["INSERT", "public", "posts"]}),
        json!({"type": "subscribe", "channel": "db:x", "filter": {"where": ["id", "eq", 1]}}),
        json!({"type": "subscribe", "channel": "x:1", "since": [1, "e"]}),
    ] {
        ws.send(bad.clone());
        let e = expect_error(&mut ws, "INVALID_MESSAGE");
        assert!(
            e["message"].as_str().unwrap().contains("JSON object"),
            "{bad}: {e}"
        );
    }
    // REST: create, update, publish, batch.
    let (st, v) = s.http("POST", "/api/realtime/channels", Some(json!(["arr:x"])));
    assert_eq!(st, 400, "{v}");
    let (_, list) = s.http("GET", "/api/realtime/channels", None);
    assert!(
        !list
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["pattern"] == "arr:x"),
        "nothing created: {list}"
    );
    let (_, rec) = s.http(
        "POST",
        "/api/realtime/channels",
        Some(json!({"pattern": "keep:*", "description": "kept"})),
    );
    let id = rec["id"].as_str().unwrap();
    let (st, v) = s.http(
        "PUT",
        &format!("/api/realtime/channels/{id}"),
        Some(json!([null, null, null, true])),
    );
    assert_eq!(st, 400, "{v}");
    let (_, after) = s.http("GET", &format!("/api/realtime/channels/{id}"), None);
    assert_eq!(after["description"], "kept", "nothing cleared: {after}");
    let (st, v) = s.http(
        "POST",
        "/api/realtime/messages",
        Some(json!(["x:1", "e", {}])),
    );
    assert_eq!(st, 400, "{v}");
    let (st, v) = s.http(
        "POST",
        "/api/realtime/messages/batch",
        Some(json!([[{"channel": "x:1", "event": "e"}]])),
    );
    assert_eq!(st, 400, "{v}");
    let (st, v) = s.http(
        "POST",
        "/api/realtime/messages/batch",
        Some(json!({"messages": [["x:1", "e", {}]]})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["results"][0]["error"], "INVALID_MESSAGE", "{v}");
    still_serves(&s);
    s.shutdown();
});

// RFC 6455 §7.4.1: a close frame with a code no peer may send is a protocol error (1002), not
// a normal close; the codes a peer may send are echoed with 1000.
both_drivers!(invalid_close_codes_close_1002, |driver| {
    let s = server(driver, |_| {});
    for code in [
        0u16, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ] {
        let mut ws = s.client("u1");
        raw_write(&mut ws, &masked_frame(0x8, &code.to_be_bytes()));
        let (got, reason) = ws.expect_close();
        assert_eq!(got, 1002, "close code {code}: {reason}");
    }
    for code in [1000u16, 1001, 3000, 4999] {
        let mut ws = s.client("u1");
        raw_write(&mut ws, &masked_frame(0x8, &code.to_be_bytes()));
        assert_eq!(ws.expect_close().0, 1000, "close code {code}");
    }
    still_serves(&s);
    s.shutdown();
});

// RFC 9110 §8.6 (Content-Length is digits only), RFC 6455 §4.1 (HTTP/1.1, a 16-byte key).
both_drivers!(strict_http_and_upgrade_heads, |driver| {
    let s = server(driver, |_| {});
    for cl in ["+20", "-1", "0x14", " 2 0", "2,0"] {
        let req = format!(
            "POST /api/realtime/channels HTTP/1.1\r\nHost: x\r\nContent-Length: {cl}\r\nConnection: close\r\n\r\n{{\"pattern\":\"cl:*\"}}"
        );
        let (st, body) = raw_http(s.addr, req.as_bytes());
        assert_eq!(st, 400, "Content-Length {cl}: {body}");
    }
    let upgrade = |version: &str, key: &str| {
        format!(
            "GET /realtime HTTP/{version}\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {key}\r\n\r\n"
        )
    };
    for key in [
        "x",
        "dGhlIHNhbXBsZQ==",
        "not base64 at all!!!!!!=",
        "dGhlIHNhbXBsZSBub25jZSB4eA==",
    ] {
        let (st, body) = raw_http(s.addr, upgrade("1.1", key).as_bytes());
        assert_eq!(st, 400, "key {key}: {body}");
    }
    let (st, body) = raw_http(
        s.addr,
        upgrade("1.0", "dGhlIHNhbXBsZSBub25jZQ==").as_bytes(),
    );
    assert_eq!(st, 400, "HTTP/1.0 upgrade: {body}");
    // A valid upgrade still works: tungstenite's handshake, in `still_serves`.
    still_serves(&s);
    s.shutdown();
});

// Issue 19, defect 4: closing a socket with unread input makes the kernel reset it and drop
// what is still queued for the peer. A subscriber with 1 MB of messages in flight to it that
// sends an over-limit frame whole must still get them all, then close 1009.
both_drivers!(close_1009_arrives_after_output_in_flight, |driver| {
    let s = server(driver, |_| {});
    let mut publ = s.client("pub");
    for round in 0..4 {
        let ch = format!("x:linger{round}");
        let mut sub = s.client("sub");
        sub.subscribe(&ch);
        let big = "a".repeat(200_000);
        for _ in 0..5 {
            publ.publish(&ch, "big", json!({"d": big}));
        }
        // Let the deliveries reach the subscriber's queue (the ack can come first).
        std::thread::sleep(Duration::from_millis(100));
        // Not read yet. Now one write: a text frame header announcing 1.1 MB, mask, payload.
        let n = 1_100_000usize;
        let mut frame = vec![0x81u8, 0xFF];
        frame.extend_from_slice(&(n as u64).to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.resize(frame.len() + n, b'x');
        let mut w = sub.ws.get_ref().try_clone().unwrap();
        let writer = std::thread::spawn(move || {
            let _ = w.write_all(&frame);
        });
        // Read only once the server has seen the frame and closed: the message (more than the
        // socket buffers hold) is then still queued on the server's side.
        std::thread::sleep(Duration::from_millis(300));
        sub.set_timeout(Duration::from_secs(10));
        for i in 0..5 {
            let m = sub.expect("message");
            let len = m["payload"]["d"].as_str().map(str::len);
            assert_eq!(len, Some(200_000), "round {round}, message {i}");
        }
        let (code, _) = sub.expect_close();
        assert_eq!(code, 1009, "round {round}");
        drop(sub);
        writer.join().unwrap();
    }
    still_serves(&s);
    s.shutdown();
});

// Issue 19, defect 7: payload bytes are rate-limited per connection too (a user could fill the
// history with 2,000 x 256 KiB within the message burst), on WebSocket and HTTP alike.
both_drivers!(publish_bytes_are_rate_limited, |driver| {
    let s = server(driver, |f| {
        f.websocket.publish_bytes_rate = 100_000;
        f.websocket.publish_bytes_burst = 300_000;
    });
    let pad = "p".repeat(100_000);
    let mut ws = s.client("u1");
    for i in 0..2 {
        ws.publish("x:bytes", "e", json!({"i": i, "pad": pad}));
    }
    ws.send(json!({"type": "publish", "channel": "x:bytes", "event": "e", "payload": {"i": 2, "pad": pad}}));
    ws.expect("published");
    ws.send(json!({"type": "publish", "channel": "x:bytes", "event": "e", "payload": {"i": 3, "pad": pad}}));
    let e = expect_error(&mut ws, "RATE_LIMITED");
    assert!(e["message"].as_str().unwrap().contains("byte rate"), "{e}");
    // Small publishes still pass (a refusal took nothing).
    ws.publish("x:bytes", "e", json!({"small": true}));
    let (st, v) = s.http(
        "POST",
        "/api/realtime/messages",
        Some(json!({"channel": "x:bytes", "event": "e", "payload": {"pad": "p".repeat(200_000)}})),
    );
    assert_eq!(st, 201, "{v}");
    let (st, v) = s.http(
        "POST",
        "/api/realtime/messages",
        Some(json!({"channel": "x:bytes", "event": "e", "payload": {"pad": "p".repeat(200_000)}})),
    );
    // Each HTTP request is its own connection here (`Connection: close`): a fresh bucket.
    assert_eq!(st, 201, "{v}");
    still_serves(&s);
    s.shutdown();
});
