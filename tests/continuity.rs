//! Continuity on one node (memory engine): recovery on subscribe (`since`), idempotent
//! publishes, HTTP publishes, sessions that end with their tokens, and the `reconnect` frame
//! of a graceful shutdown. Multi-node and Redis cases are in `continuity_redis.rs`.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    thread,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};

both_drivers!(recovery_at_the_seam_under_a_steady_rate, |driver| {
    let node = TestServer::builder(driver)
        .with(|f| {
            f.websocket.publish_rate = 100_000;
            f.websocket.publish_burst = 100_000;
        })
        .start();
    node.channel("seam:*");
    // Channels owned by either core: the seam holds whichever core sequences the channel.
    for ch in ["seam:a", "seam:b"] {
        let total = 3000;
        let mut sub = node.client("s");
        let first = sub.subscribe(ch);
        assert_eq!(first["offset"], 0);
        let epoch = first["epoch"].as_str().unwrap().to_string();
        assert_eq!(epoch.len(), 8, "{first}");
        let publisher = steady_publisher(node.addr, ch, 1, total, Duration::ZERO);
        let got = read_until(&mut sub, 40);
        let last = *got.last().unwrap();
        drop(sub);
        // Away while publishes continue, then back with where it stood.
        thread::sleep(Duration::from_millis(60));
        let mut back = node.client("s");
        let s = subscribe_since(&mut back, ch, last, &epoch);
        assert_eq!(s["recovered"], true, "{s}");
        assert_eq!(s["epoch"], epoch.as_str());
        assert!(s["offset"].as_u64().unwrap() >= last, "{s}");
        assert!(s.get("firstOffset").is_none(), "{s}");
        let rest = read_until(&mut back, total);
        let all: Vec<u64> = got.into_iter().chain(rest).collect();
        assert_eq!(
            all,
            (1..=total).collect::<Vec<_>>(),
            "gap or duplicate at the seam"
        );
        publisher.join().unwrap();
        back.expect_silence(Duration::from_millis(100));
    }
});

#[test]
fn up_to_date_subscriber_recovers_nothing_and_misses_nothing() {
    let node = TestServer::start("io_uring");
    node.channel("u:*");
    let mut p = node.client("p");
    for k in 1..=3 {
        p.publish("u:1", "e", json!(k));
    }
    let mut s = node.client("s");
    let first = s.subscribe("u:1");
    assert_eq!(first["offset"], 3);
    let epoch = first["epoch"].as_str().unwrap().to_string();
    drop(s);
    let mut s = node.client("s");
    let r = subscribe_since(&mut s, "u:1", 3, &epoch);
    assert_eq!(r["recovered"], true);
    s.expect_silence(Duration::from_millis(100));
    p.publish("u:1", "e", json!(4));
    assert_eq!(s.expect("message")["offset"], 4);
}

#[test]
fn recovery_past_retention_wrong_epoch_and_recover_max_say_recovered_false() {
    let node = TestServer::builder("legacy")
        .with(|f| {
            f.history.max_messages_per_channel = 10;
            f.history.recover_max = 5;
        })
        .start();
    node.channel("r:*");
    let mut p = node.client("p");
    for k in 1..=30 {
        p.publish("r:1", "e", json!(k));
    }
    let mut s = node.client("s");
    let epoch = s.subscribe("r:2")["epoch"].as_str().unwrap().to_string();

    // Older than retention (21..=30 kept) and more than recover_max: not recovered.
    let r = subscribe_since(&mut s, "r:1", 2, &epoch);
    assert_eq!(r["recovered"], false, "{r}");
    assert_eq!(r["firstOffset"], 21, "{r}");
    assert_eq!(r["offset"], 30);
    s.expect_silence(Duration::from_millis(100));
    // Still subscribed, live from 31.
    p.publish("r:1", "e", json!(31));
    assert_eq!(s.expect("message")["offset"], 31);

    // Within retention but more than recover_max (5): not recovered.
    let mut s2 = node.client("s2");
    let r = subscribe_since(&mut s2, "r:1", 24, &epoch);
    assert_eq!(
        (r["recovered"].clone(), r["firstOffset"].clone()),
        (json!(false), json!(22))
    );
    s2.expect_silence(Duration::from_millis(100));

    // Within both: the missed ones, in order.
    let mut s3 = node.client("s3");
    let r = subscribe_since(&mut s3, "r:1", 27, &epoch);
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(read_until(&mut s3, 31), vec![28, 29, 30, 31]);

    // Another epoch: not recovered, nothing replayed.
    let mut s4 = node.client("s4");
    let r = subscribe_since(&mut s4, "r:1", 27, "00000000");
    assert_eq!(r["recovered"], false);
    assert_eq!(r["firstOffset"], 22);
    s4.expect_silence(Duration::from_millis(100));

    // An offset ahead of the channel: not recovered either.
    let mut s5 = node.client("s5");
    let r = subscribe_since(&mut s5, "r:1", 99, &epoch);
    assert_eq!(r["recovered"], false);

    // A bad `since` is a clear error.
    s5.send(json!({"type": "subscribe", "channel": "r:1", "since": {"offset": "x"}}));
    assert_eq!(s5.expect("error")["code"], "INVALID_MESSAGE");
}

#[test]
fn subscribers_coming_back_to_one_position_share_the_history_reads() {
    let node = TestServer::start("io_uring");
    node.channel("many:*");
    let mut first = node.client("s");
    let epoch = first.subscribe("many:1")["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    drop(first);
    let mut p = node.client("p");
    for k in 1..=100 {
        p.publish("many:1", "e", json!(k));
    }
    let mut subs: Vec<Ws> = (0..40).map(|i| node.client(&format!("s{i}"))).collect();
    for s in &mut subs {
        s.send(json!({"type": "subscribe", "channel": "many:1", "since": {"offset": 0, "epoch": epoch}}));
    }
    for s in &mut subs {
        assert_eq!(s.expect("subscribed")["recovered"], true);
        assert_eq!(read_until(s, 100), (1..=100).collect::<Vec<_>>());
    }
    let reads = node.metric("ringcast_recovery_reads_total");
    let shared = node.metric("ringcast_recovery_reads_shared_total");
    // One read per core's position at most (the cores may have different positions only if
    // a publish came between): everything else was shared.
    assert!(
        reads <= 2,
        "{reads} engine reads for 40 identical recoveries"
    );
    assert_eq!(reads + shared, 40);
}

#[test]
fn a_restarted_memory_node_has_a_new_epoch() {
    let node = TestServer::start("io_uring");
    node.channel("e:*");
    let mut s = node.client("s");
    let before = s.subscribe("e:1")["epoch"].as_str().unwrap().to_string();
    node.client("p").publish("e:1", "x", json!(1));
    drop(s);
    node.shutdown();
    let node = TestServer::start("io_uring");
    node.channel("e:*");
    node.client("p").publish("e:1", "x", json!(1));
    let mut s = node.client("s");
    let r = subscribe_since(&mut s, "e:1", 1, &before);
    assert_ne!(r["epoch"], before.as_str());
    assert_eq!(
        r["recovered"], false,
        "history from before the restart is gone: {r}"
    );
    assert_eq!(r["firstOffset"], 1);
}

#[test]
fn a_subscriber_far_behind_catches_up_paced_without_being_dropped() {
    // An outbound queue of 64 frames, 2,000 missed messages: the catch-up must be paced.
    let node = TestServer::builder("io_uring")
        .with(|f| {
            f.websocket.outbound_queue_frames = 64;
            f.websocket.publish_rate = 10_000;
            f.websocket.publish_burst = 10_000;
        })
        .start();
    node.channel("far:*");
    let mut s = node.client("s");
    let epoch = s.subscribe("far:1")["epoch"].as_str().unwrap().to_string();
    drop(s);
    let mut p = node.client("p");
    // 4 KiB each: 8 MB missed, more than the socket buffers hold.
    let pad = "x".repeat(4096);
    for chunk in 0..40 {
        for k in 1..=50 {
            p.send(json!({"type": "publish", "channel": "far:1", "event": "e", "payload": {"k": chunk * 50 + k, "pad": pad}}));
        }
        for _ in 0..50 {
            p.expect("published");
        }
    }
    let mut s = node.client("s");
    let r = subscribe_since(&mut s, "far:1", 0, &epoch);
    assert_eq!(r["recovered"], true, "{r}");
    // Live messages published during the catch-up follow the recovered ones. The client
    // reads nothing for a while: the catch-up waits for room, the live messages pass what
    // may be held and are read from history instead.
    let publisher = steady_publisher(node.addr, "far:1", 2001, 3000, Duration::ZERO);
    thread::sleep(Duration::from_millis(500));
    assert_eq!(read_until(&mut s, 3000), (1..=3000).collect::<Vec<_>>());
    publisher.join().unwrap();
    s.expect_silence(Duration::from_millis(100));
    assert_eq!(node.metric("ringcast_slow_consumer_closes_total"), 0);
    assert!(node.metric("ringcast_recovered_messages_total") >= 2000);
    assert!(node.metric("ringcast_recovery_overflows_total") >= 1);
}

#[test]
fn idempotent_publishes_over_websocket_and_http_publish_once() {
    let node = TestServer::start("io_uring");
    node.channel("i:*");
    let mut sub = node.client("s");
    sub.subscribe("i:1");
    let mut p = node.client("p");
    let send = |p: &mut Ws, key: &str| {
        p.send(json!({"type": "publish", "channel": "i:1", "event": "e", "payload": {"v": 1}, "idempotencyKey": key}));
        p.expect("published")
    };
    let a = send(&mut p, "k-1");
    let b = send(&mut p, "k-1");
    assert_eq!(a["messageId"], b["messageId"]);
    assert_eq!(a["offset"], b["offset"]);
    // Over HTTP, the same key on the same channel: the same ack.
    let (st, h) = node.http(
        "POST",
        "/api/realtime/messages",
        Some(json!({"channel": "i:1", "event": "e", "payload": {"v": 1}, "idempotencyKey": "k-1"})),
    );
    assert_eq!(st, 201, "{h}");
    assert_eq!(h["messageId"], a["messageId"]);
    assert_eq!(h["offset"], a["offset"]);
    // Another key, or the same key on another channel, publishes.
    let c = send(&mut p, "k-2");
    assert_eq!(c["offset"], 2);
    p.send(json!({"type": "publish", "channel": "i:2", "event": "e", "idempotencyKey": "k-1"}));
    assert_eq!(p.expect("published")["offset"], 1);
    assert_eq!(read_until(&mut sub, 2), vec![1, 2]);
    sub.expect_silence(Duration::from_millis(100));
    let (_, hist) = node.http("GET", "/api/realtime/messages?channelName=i:1", None);
    assert_eq!(hist.as_array().unwrap().len(), 2, "{hist}");
    assert_eq!(node.metric("ringcast_publish_duplicates_total"), 2);
}

#[test]
fn concurrent_repeats_race_and_publish_once() {
    let node = TestServer::builder("io_uring")
        .with(|f| {
            f.websocket.publish_rate = 10_000;
            f.websocket.publish_burst = 10_000;
        })
        .start();
    node.channel("race:*");
    let mut sub = node.client("s");
    sub.subscribe("race:1");
    // Four connections (spread over both cores) send the same 200 keys at once.
    let acks: Vec<Vec<Value>> = (0..4)
        .map(|i| {
            let addr = node.addr;
            thread::spawn(move || {
                let mut p = Ws::connect(addr);
                p.auth(&token(&format!("p{i}"), "authenticated"));
                for k in 0..200 {
                    p.send(json!({"type": "publish", "channel": "race:1", "event": "e", "payload": k, "idempotencyKey": format!("key-{k}")}));
                }
                (0..200).map(|_| p.expect("published")).collect::<Vec<_>>()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    for k in 0..200 {
        let ids: Vec<&Value> = acks.iter().map(|a| &a[k]["messageId"]).collect();
        assert!(ids.windows(2).all(|w| w[0] == w[1]), "key-{k}: {ids:?}");
    }
    assert_eq!(read_until(&mut sub, 200), (1..=200).collect::<Vec<_>>());
    sub.expect_silence(Duration::from_millis(150));
}

#[test]
fn idempotency_keys_expire_with_their_window() {
    let node = TestServer::builder("legacy")
        .with(|f| f.publish.idempotency_window = "300ms".into())
        .start();
    node.channel("w:*");
    let mut p = node.client("p");
    let msg = json!({"type": "publish", "channel": "w:1", "event": "e", "idempotencyKey": "k"});
    p.send(msg.clone());
    assert_eq!(p.expect("published")["offset"], 1);
    p.send(msg.clone());
    assert_eq!(p.expect("published")["offset"], 1);
    thread::sleep(Duration::from_millis(400));
    p.send(msg);
    assert_eq!(p.expect("published")["offset"], 2, "the window passed");
    // An over-long key is refused, never truncated.
    p.send(json!({"type": "publish", "channel": "w:1", "event": "e", "idempotencyKey": "k".repeat(129)}));
    assert_eq!(p.expect("error")["code"], "INVALID_MESSAGE");
}

both_drivers!(http_publish_happy_path, |driver| {
    let node = TestServer::builder(driver).start();
    node.channel("h:*");
    let mut sub = node.client("s");
    sub.subscribe("h:1");
    let user = token("u-1", "authenticated");
    let (st, ack) = http(
        node.addr,
        "POST",
        "/api/realtime/messages",
        Some(&user),
        Some(json!({"channel": "h:1", "event": "created", "payload": {"a": [1, 2]}})),
    );
    assert_eq!(st, 201, "{ack}");
    assert_eq!(ack["channel"], "h:1");
    assert_eq!(ack["event"], "created");
    assert_eq!(ack["offset"], 1);
    assert!(ack["timestamp"].as_str().unwrap().ends_with('Z'));
    let m = sub.expect("message");
    assert_eq!(m["messageId"], ack["messageId"]);
    assert_eq!(m["payload"], json!({"a": [1, 2]}));
    assert_eq!(m["senderId"], "u-1");
    assert_eq!(m["senderType"], "user");
    // The admin key publishes as the system.
    let (st, _) = node.http(
        "POST",
        "/api/realtime/messages",
        Some(json!({"channel": "h:1", "event": "e"})),
    );
    assert_eq!(st, 201);
    let m = sub.expect("message");
    assert_eq!(
        (m["senderType"].clone(), m["payload"].clone()),
        (json!("system"), Value::Null)
    );
    let (_, hist) = node.http("GET", "/api/realtime/messages?channelName=h:1", None);
    assert_eq!(hist.as_array().unwrap().len(), 2);
});

#[test]
fn http_publish_errors_carry_the_websocket_codes() {
    let node = TestServer::builder("io_uring")
        .with(|f| {
            f.websocket.max_payload_bytes = 100;
            f.websocket.publish_rate = 1;
            f.websocket.publish_burst = 1;
        })
        .start();
    node.channel("h:*");
    node.http(
        "POST",
        "/api/realtime/channels",
        Some(json!({"pattern": "off:*", "enabled": false})),
    );
    let user = token("u", "authenticated");
    let post = |bearer: Option<&str>, body: Value| {
        http(
            node.addr,
            "POST",
            "/api/realtime/messages",
            bearer,
            Some(body),
        )
    };
    let ok = json!({"channel": "h:1", "event": "e"});
    let cases: Vec<(Option<String>, Value, u16, &str)> = vec![
        (None, ok.clone(), 401, "UNAUTHORIZED"),
        (Some("nope".into()), ok.clone(), 401, "INVALID_TOKEN"),
        (Some(token("a", "anon")), ok.clone(), 403, "FORBIDDEN"),
        (
            Some(user.clone()),
            json!({"channel": "x:1", "event": "e"}),
            404,
            "CHANNEL_NOT_FOUND",
        ),
        (
            Some(user.clone()),
            json!({"channel": "off:1", "event": "e"}),
            404,
            "CHANNEL_NOT_FOUND",
        ),
        (
            Some(user.clone()),
            json!({"channel": "h 1", "event": "e"}),
            400,
            "INVALID_MESSAGE",
        ),
        (
            Some(user.clone()),
            json!({"channel": "h:1"}),
            400,
            "INVALID_MESSAGE",
        ),
        (
            Some(user.clone()),
            json!({"channel": "h:1", "event": ""}),
            400,
            "INVALID_MESSAGE",
        ),
        (
            Some(user.clone()),
            json!({"channel": "h:1", "event": "e", "extra": 1}),
            400,
            "INVALID_MESSAGE",
        ),
        (
            Some(user.clone()),
            json!({"channel": "h:1", "event": "e", "idempotencyKey": "k".repeat(129)}),
            400,
            "INVALID_MESSAGE",
        ),
        (
            Some(user.clone()),
            json!({"channel": "h:1", "event": "e", "payload": "x".repeat(200)}),
            413,
            "PAYLOAD_TOO_LARGE",
        ),
    ];
    for (bearer, body, status, code) in cases {
        let (st, v) = post(bearer.as_deref(), body.clone());
        assert_eq!(
            (st, v["error"].as_str().unwrap_or("")),
            (status, code),
            "{body}: {v}"
        );
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // Rate limits are per connection, as on a WebSocket: one kept-alive connection, burst 1.
    let mut c = TcpStream::connect(node.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let body = ok.to_string();
    let req = format!(
        "POST /api/realtime/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {user}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    c.write_all(format!("{req}{req}").as_bytes()).unwrap();
    let answers = read_responses(&mut c, 2);
    assert_eq!(answers[0].0, 201, "{:?}", answers[0]);
    assert_eq!(answers[1].0, 429, "{:?}", answers[1]);
    assert!(answers[1].1.contains("RATE_LIMITED"));
    // Methods and routes.
    let (st, _) = http(
        node.addr,
        "PUT",
        "/api/realtime/messages",
        Some(&user),
        Some(ok.clone()),
    );
    assert_eq!(st, 405);
    let (st, _) = http(
        node.addr,
        "GET",
        "/api/realtime/messages/batch",
        Some(&user),
        None,
    );
    assert_eq!(st, 405);
}

/// Reads `n` HTTP responses from a kept-alive connection: (status, body).
fn read_responses(c: &mut TcpStream, n: usize) -> Vec<(u16, String)> {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut chunk = [0u8; 65536];
    while out.len() < n {
        // Parse whatever complete responses are buffered.
        loop {
            let text = String::from_utf8_lossy(&buf).to_string();
            let Some(head_end) = text.find("\r\n\r\n") else {
                break;
            };
            let head = &text[..head_end];
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length: ")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() < head_end + 4 + len {
                break;
            }
            let status = head.split(' ').nth(1).unwrap().parse().unwrap();
            let body = String::from_utf8_lossy(&buf[head_end + 4..head_end + 4 + len]).to_string();
            out.push((status, body));
            buf.drain(..head_end + 4 + len);
        }
        if out.len() >= n {
            break;
        }
        let k = c.read(&mut chunk).expect("read");
        assert!(k > 0, "connection closed after {} responses", out.len());
        buf.extend_from_slice(&chunk[..k]);
    }
    out
}

#[test]
fn http_batch_mixes_good_and_bad_items_and_pipelines() {
    let node = TestServer::builder("legacy")
        .with(|f| {
            f.websocket.publish_rate = 10_000;
            f.websocket.publish_burst = 10_000;
        })
        .start();
    node.channel("b:*");
    let mut sub = node.client("s");
    sub.subscribe("b:1");
    let (st, v) = node.http(
        "POST",
        "/api/realtime/messages/batch",
        Some(json!({"messages": [
            {"channel": "b:1", "event": "one", "payload": 1},
            {"channel": "nope:1", "event": "e"},
            {"channel": "b:1", "event": "two", "payload": 2, "idempotencyKey": "x"},
            {"channel": "b:1"},
            "not an object",
            {"channel": "b:1", "event": "three", "payload": 3, "idempotencyKey": "x"},
        ]})),
    );
    assert_eq!(st, 200, "{v}");
    let r = v["results"].as_array().unwrap();
    assert_eq!(r.len(), 6);
    assert_eq!(
        (r[0]["offset"].clone(), r[0]["event"].clone()),
        (json!(1), json!("one"))
    );
    assert_eq!(r[1]["error"], "CHANNEL_NOT_FOUND");
    assert_eq!(r[2]["offset"], 2);
    assert_eq!(r[3]["error"], "INVALID_MESSAGE");
    assert_eq!(r[4]["error"], "INVALID_MESSAGE");
    assert_eq!(
        r[5]["messageId"], r[2]["messageId"],
        "a repeated key within the batch"
    );
    assert_eq!(read_until(&mut sub, 2), vec![1, 2]);
    sub.expect_silence(Duration::from_millis(100));
    // Too many items, none, or a body that is not a batch.
    let many: Vec<Value> = (0..1001)
        .map(|_| json!({"channel": "b:1", "event": "e"}))
        .collect();
    for body in [
        json!({"messages": many}),
        json!({"messages": []}),
        json!([1]),
    ] {
        let (st, v) = node.http("POST", "/api/realtime/messages/batch", Some(body));
        assert_eq!(st, 400, "{v}");
    }
    // 1,000 items are fine, in order.
    let items: Vec<Value> = (0..1000)
        .map(|k| json!({"channel": "b:2", "event": "e", "payload": k}))
        .collect();
    let (st, v) = node.http(
        "POST",
        "/api/realtime/messages/batch",
        Some(json!({"messages": items})),
    );
    assert_eq!(st, 200);
    let offsets: Vec<u64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (1..=1000).collect::<Vec<_>>());
    // Keep-alive pipelining: three requests in one write, three answers in order.
    let mut c = TcpStream::connect(node.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut wire = String::new();
    for k in 0..3 {
        let body = json!({"channel": "b:3", "event": "e", "payload": k}).to_string();
        wire.push_str(&format!(
            "POST /api/realtime/messages HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        ));
    }
    c.write_all(wire.as_bytes()).unwrap();
    let answers = read_responses(&mut c, 3);
    for (k, (st, body)) in answers.iter().enumerate() {
        assert_eq!(*st, 201);
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["offset"], k as u64 + 1);
    }
}

fn token_expiring_in(sub: &str, secs: u64) -> String {
    ringcast::auth::mint(
        SECRET,
        sub,
        "authenticated",
        Duration::from_secs(secs),
        None,
    )
}

#[test]
fn a_session_ends_when_its_token_does() {
    let node = TestServer::builder("io_uring")
        .with(|f| f.auth.expire_warning = "1s".into())
        .start();
    node.channel("t:*");
    let mut ws = node.ws();
    ws.auth(&token_expiring_in("u", 2));
    ws.subscribe("t:1");
    let started = Instant::now();
    let w = ws.expect("token_expiring");
    assert!(w["expiresAt"].as_str().unwrap().ends_with('Z'), "{w}");
    let (code, reason) = ws.expect_close();
    assert_eq!((code, reason.as_str()), (1008, "token expired"));
    let took = started.elapsed();
    assert!(took <= Duration::from_secs(4), "closed after {took:?}");
    assert_eq!(node.metric("ringcast_sessions_expired_total"), 1);
}

#[test]
fn a_new_token_extends_the_session_and_keeps_its_subscriptions() {
    let node = TestServer::builder("legacy")
        .with(|f| f.auth.expire_warning = "1s".into())
        .start();
    node.channel("t:*");
    let mut ws = node.ws();
    ws.auth(&token_expiring_in("u", 2));
    ws.subscribe("t:1");
    ws.expect("token_expiring");
    // Another user's token does not take over the socket.
    ws.send(json!({"type": "auth", "token": token("someone-else", "authenticated")}));
    let e = ws.expect("error");
    assert_eq!(e["code"], "FORBIDDEN", "{e}");
    // The same user's new token extends it.
    ws.auth(&token("u", "authenticated"));
    thread::sleep(Duration::from_millis(2500));
    node.client("p").publish("t:1", "e", json!(1));
    assert_eq!(
        ws.expect("message")["offset"],
        1,
        "still open, still subscribed"
    );
}

#[test]
fn expiry_off_keeps_todays_behaviour_and_tokens_without_exp_never_expire() {
    let node = TestServer::builder("io_uring")
        .with(|f| f.auth.expire_sessions = false)
        .start();
    node.channel("t:*");
    let mut ws = node.ws();
    ws.auth(&token_expiring_in("u", 1));
    ws.subscribe("t:1");
    let never = ringcast::auth::mint(SECRET, "v", "authenticated", Duration::ZERO, None);
    let node2 = TestServer::start("io_uring");
    node2.channel("t:*");
    let mut ws2 = node2.ws();
    ws2.auth(&never);
    ws2.subscribe("t:1");
    thread::sleep(Duration::from_millis(2200));
    ws.expect_silence(Duration::from_millis(50));
    ws2.expect_silence(Duration::from_millis(50));
    node.client("p").publish("t:1", "e", json!(1));
    assert_eq!(ws.expect("message")["offset"], 1);
    node2.client("p").publish("t:1", "e", json!(1));
    assert_eq!(ws2.expect("message")["offset"], 1);
    // An expired token is refused at auth, as any invalid one (CONTRACT.md).
    let mut ws3 = node2.ws();
    let expired = ringcast::auth::mint(SECRET, "w", "authenticated", Duration::from_secs(1), None);
    thread::sleep(Duration::from_millis(1100));
    ws3.send(json!({"type": "auth", "token": expired}));
    let e = ws3.expect("error");
    assert_eq!(
        (e["code"].as_str(), e["message"].as_str()),
        (Some("INVALID_TOKEN"), Some("Invalid token"))
    );
}

#[test]
fn shutdown_tells_each_client_where_it_stands() {
    let node = TestServer::start("io_uring");
    node.channel("d:*");
    let mut ws = node.client("s");
    let epoch = ws.subscribe("d:1")["epoch"].as_str().unwrap().to_string();
    ws.subscribe("d:2");
    let mut p = node.client("p");
    for k in 1..=3 {
        p.publish("d:1", "e", json!(k));
    }
    assert_eq!(read_until(&mut ws, 3), vec![1, 2, 3]);
    let stopper = thread::spawn(move || node.shutdown());
    let r = ws.expect("reconnect");
    assert_eq!(r["channels"]["d:1"], json!({"offset": 3, "epoch": epoch}));
    assert_eq!(r["channels"]["d:2"]["offset"], 0);
    let (code, _) = ws.expect_close();
    assert_eq!(code, 1001);
    stopper.join().unwrap();
}
