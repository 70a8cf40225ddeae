//! The Socket.IO front end at the packet level over real sockets: the Engine.IO handshake and
//! heartbeat, CONNECT and its refusals, every malformed packet answered (never a crash),
//! the InsForge events, one message reaching both protocols, presence (one join and one
//! leave per member, raw opt-in, REST), and presence across two redis-engine nodes,
//! including a node that is killed. The real InsForge SDK is driven by `tests/sdk.rs`.

mod common;

use std::time::Duration;

use common::{process::BrokerProcess, redis::RedisServer, sio::Sio, *};
use serde_json::{Value, json};

const UA: &str = "11111111-1111-1111-1111-111111111111";
const UB: &str = "22222222-2222-2222-2222-222222222222";

fn server(driver: &str) -> TestServer {
    let s = TestServer::builder(driver)
        .with(|f| {
            f.auth.anon_key = "anon_test".into();
            f.auth.anon_subscribe = true;
            f.socketio.ping_interval = "300ms".into();
            f.socketio.ping_timeout = "400ms".into();
        })
        .start();
    s.channel("room:*");
    s
}

both_drivers!(handshake_and_connect, |driver| {
    let s = server(driver);
    let mut c = Sio::open(s.addr);
    for k in [
        "sid",
        "upgrades",
        "pingInterval",
        "pingTimeout",
        "maxPayload",
    ] {
        assert!(c.open.get(k).is_some(), "open packet lacks {k}: {}", c.open);
    }
    assert_eq!(c.open["pingInterval"], 300);
    assert_eq!(c.open["upgrades"], json!([]));
    // No token, then a bad one: 44 each time, the connection stays.
    c.send_text("40{}");
    assert_eq!(
        c.recv_text(),
        r#"44{"message":"No authentication provided"}"#
    );
    c.send_text("40");
    assert_eq!(
        c.recv_text(),
        r#"44{"message":"No authentication provided"}"#
    );
    c.send_text(r#"40{"token":"not-a-jwt"}"#);
    assert_eq!(c.recv_text(), r#"44{"message":"Invalid token"}"#);
    // Another namespace is refused with its prefix; the main one still connects after it.
    c.send_text(r#"40/v1/realtime,{"token":"x"}"#);
    assert_eq!(
        c.recv_text(),
        r#"44/v1/realtime,{"message":"Invalid namespace"}"#
    );
    // Events before CONNECT are ignored.
    c.send_text(r#"42["realtime:subscribe",{"channel":"room:1"}]"#);
    c.send_text(&format!(
        "40{}",
        json!({"token": token(UA, "authenticated")})
    ));
    let ok = c.recv_text();
    assert!(ok.starts_with(r#"40{"sid":""#), "{ok}");
    // The admin key in `token` (createAdminClient), the anon key, and `apiKey`.
    for auth in [
        json!({"token": ADMIN_KEY}),
        json!({"token": "anon_test"}),
        json!({"apiKey": ADMIN_KEY}),
    ] {
        let mut c = Sio::open(s.addr);
        c.send_text(&format!("40{auth}"));
        assert!(c.recv_text().starts_with("40{"), "{auth}");
    }
    s.shutdown();
});

both_drivers!(polling_and_other_versions_get_a_clear_400, |driver| {
    let s = server(driver);
    let (st, body) = raw_http(
        s.addr,
        b"GET /socket.io/?EIO=4&transport=polling&t=Pabc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(st, 400);
    assert!(body.contains("transports: ['websocket']"), "{body}");
    let (st, body) = raw_http(
        s.addr,
        b"GET /socket.io/?EIO=3&transport=websocket HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    );
    assert_eq!(st, 400);
    assert!(body.contains("EIO=3"), "{body}");
    s.shutdown();
});

both_drivers!(malformed_packets_get_clear_errors, |driver| {
    let s = server(driver);
    // Before CONNECT: 44 with what was wrong.
    let mut c = Sio::open(s.addr);
    c.send_text("4");
    assert!(c.recv_text().contains("empty Socket.IO packet"));
    c.send_text("49");
    assert!(c.recv_text().contains("unknown Socket.IO packet type"));
    // After CONNECT: realtime:error INVALID_MESSAGE, and the connection keeps working.
    let (mut c, _) = Sio::connect(s.addr, &token(UA, "authenticated"));
    for (bad, want) in [
        ("42", "must be a non-empty array"),
        ("42[", "not valid JSON"),
        ("42{}", "not valid JSON"),
        ("42[]", "non-empty array"),
        ("42[1,2]", "non-empty array"),
        (r#"42["nope",{}]"#, "unknown event `nope`"),
        (r#"42["realtime:subscribe"]"#, "needs {\"channel\": string}"),
        (
            r#"42["realtime:subscribe",{"chan":1}]"#,
            "needs {\"channel\": string}",
        ),
        (r#"42["realtime:publish",[1]]"#, "realtime:publish needs"),
        (
            r#"42["realtime:subscribe",["room:1"]]"#,
            "needs {\"channel\": string}",
        ),
        (
            r#"42["realtime:publish",["room:1","e",{}]]"#,
            "realtime:publish needs",
        ),
        (
            r#"451-["realtime:publish",{"_placeholder":true,"num":0}]"#,
            "binary",
        ),
        (
            &format!("42{}[\"e\"]", "9".repeat(20)),
            "ack id is too long",
        ),
    ] {
        c.send_text(bad);
        let v = c.expect_event("realtime:error");
        assert_eq!(v["code"], "INVALID_MESSAGE", "{bad}: {v}");
        assert!(v["message"].as_str().unwrap().contains(want), "{bad}: {v}");
    }
    c.ws.send(tungstenite::Message::binary(vec![1u8, 2]))
        .unwrap();
    let v = c.expect_event("realtime:error");
    assert!(v["message"].as_str().unwrap().contains("binary"), "{v}");
    assert_eq!(c.subscribe("room:1")["ok"], true, "still usable");
    // Acks and noops from the client are ignored.
    c.send_text("431[]");
    c.send_text("6");
    c.expect_silence(Duration::from_millis(200));
    // An unknown Engine.IO type: this is not Engine.IO; close 1003 saying why.
    c.send_text("x");
    let (code, reason) = c.expect_close();
    assert_eq!(code, 1003);
    assert!(reason.contains("unknown Engine.IO packet type"), "{reason}");
    s.shutdown();
});

both_drivers!(server_pings_and_closes_on_a_missing_pong, |driver| {
    let s = server(driver);
    let (mut c, _) = Sio::connect(s.addr, &token(UA, "authenticated"));
    c.expect_silence(Duration::from_millis(1500));
    assert!(c.pings >= 3, "pinged every 300 ms: {}", c.pings);
    c.answer_pings = false;
    c.set_timeout(Duration::from_secs(3));
    let (code, reason) = c.expect_close();
    assert_eq!((code, reason.as_str()), (1001, "ping timeout"));
    s.shutdown();
});

both_drivers!(insforge_events_and_both_protocols, |driver| {
    let s = server(driver);
    let (mut a, _) = Sio::connect(s.addr, &token(UA, "authenticated"));
    let ack = a.subscribe("room:1");
    assert_eq!(ack["ok"], true, "{ack}");
    assert_eq!(ack["channel"], "room:1");
    assert_eq!(ack["presence"]["members"][0]["presenceId"], UA);
    // Refused: no channel pattern matches; a bad name.
    let no = a.subscribe("nomatch:1");
    assert_eq!(no["ok"], false);
    assert_eq!(no["error"]["code"], "REALTIME_UNAUTHORIZED", "{no}");
    // Publish without subscribe, reserved names, non-object payloads.
    a.publish("room:2", "e", json!({"x": 1}));
    let e = a.expect_event("realtime:error");
    assert_eq!(e["code"], "REALTIME_NOT_SUBSCRIBED", "{e}");
    assert_eq!(e["channel"], "room:2");
    for ev in [
        "connect",
        "disconnect",
        "error",
        "presence:join",
        "realtime:error",
    ] {
        a.publish("room:1", ev, json!({"x": 1}));
        let e = a.expect_event("realtime:error");
        assert_eq!(e["code"], "INVALID_MESSAGE", "{ev}: {e}");
        assert!(e["message"].as_str().unwrap().contains("reserved"), "{e}");
    }
    for p in [json!([1, 2]), json!(3), json!("s"), Value::Null] {
        a.publish("room:1", "e", p.clone());
        let e = a.expect_event("realtime:error");
        assert!(
            e["message"].as_str().unwrap().contains("JSON object"),
            "{p}: {e}"
        );
    }
    // A raw subscriber of the same channel.
    let mut raw = s.client("raw-1");
    raw.subscribe("room:1");
    // Socket.IO publish: the publisher gets its own message, spread, with meta; raw gets the
    // message frame.
    a.publish(
        "room:1",
        "order.updated",
        json!({"orderId": "1", "nested": {"a": [1, null]}}),
    );
    let m = a.expect_event("order.updated");
    assert_eq!(m["orderId"], "1");
    assert_eq!(m["nested"]["a"], json!([1, null]));
    assert_eq!(m["meta"]["channel"], "realtime:room:1");
    assert_eq!(m["meta"]["senderType"], "user");
    assert_eq!(m["meta"]["senderId"], UA);
    let r = raw.expect("message");
    assert_eq!(r["event"], "order.updated");
    assert_eq!(r["payload"]["orderId"], "1");
    assert_eq!(r["messageId"], m["meta"]["messageId"], "the same message");
    // Raw publish reaches the Socket.IO subscriber; a non-object arrives as {payload, meta}.
    raw.publish("room:1", "from.raw", json!({"x": 1}));
    let m = a.expect_event("from.raw");
    assert_eq!(m["x"], 1);
    assert_eq!(m["meta"]["senderId"], "raw-1");
    raw.expect("message");
    raw.publish("room:1", "scalar", json!(42));
    assert_eq!(a.expect_event("scalar")["payload"], 42);
    raw.expect("message");
    // Reserved names are refused on the raw protocol and over HTTP too.
    raw.send(json!({"type": "publish", "channel": "room:1", "event": "disconnect", "payload": {}}));
    let e = raw.expect("error");
    assert_eq!(e["code"], "INVALID_MESSAGE");
    let (st, v) = s.http(
        "POST",
        "/api/realtime/messages",
        Some(json!({"channel": "room:1", "event": "connect", "payload": {}})),
    );
    assert_eq!(st, 400, "{v}");
    // The admin publishes as system; an unsubscribed socket receives nothing more.
    let (mut admin, _) = Sio::connect(s.addr, ADMIN_KEY);
    admin.subscribe("room:1");
    // The admin key has no user id: a member of its own (anonymous, by socket id).
    let j = a.expect_event("presence:join");
    assert_eq!(j["member"]["type"], "anonymous");
    admin.publish("room:1", "sys", json!({}));
    let sys = a.expect_event("sys");
    assert_eq!(sys["meta"]["senderType"], "system");
    assert!(sys["meta"].get("senderId").is_none(), "{sys}");
    admin.expect_event("sys");
    raw.expect("message");
    a.emit("realtime:unsubscribe", json!({"channel": "room:1"}));
    // The unsubscribe has no answer (as in InsForge): a round trip on the same socket shows it
    // was applied before the next publish.
    assert_eq!(a.subscribe("room:2")["ok"], true);
    raw.publish("room:1", "after", json!({}));
    raw.expect("message");
    a.expect_silence(Duration::from_millis(300));
    // History and stats count Socket.IO publishes like any other.
    let (_, h) = s.http("GET", "/api/realtime/messages?channelName=room:1", None);
    let events: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["eventName"].as_str().unwrap())
        .collect();
    assert!(
        events.contains(&"order.updated") && events.contains(&"sys"),
        "{events:?}"
    );
    s.shutdown();
});

/// A member's join and leave as a raw `presence` frame.
fn presence_frame(ws: &mut Ws) -> (String, String) {
    let v = ws.expect("presence");
    (
        v["event"].as_str().unwrap().to_string(),
        v["member"]["presenceId"].as_str().unwrap().to_string(),
    )
}

both_drivers!(presence_one_join_and_leave_per_member, |driver| {
    let s = server(driver);
    // A raw client that asks for presence.
    let mut watch = s.client("watcher");
    watch.send(json!({"type": "subscribe", "channel": "room:p", "presence": true}));
    let sub = watch.expect("subscribed");
    assert_eq!(
        sub["presence"]["members"][0]["presenceId"], "watcher",
        "{sub}"
    );
    // A raw subscriber without presence is not a member and gets no presence frames.
    let mut quiet = s.client("quiet");
    let q = quiet.subscribe("room:p");
    assert!(q.get("presence").is_none(), "{q}");
    // User A on two sockets (on different cores, most likely): one join, one leave.
    let (mut a1, _) = Sio::connect(s.addr, &token(UA, "authenticated"));
    a1.subscribe("room:p");
    assert_eq!(presence_frame(&mut watch), ("join".into(), UA.into()));
    let (mut a2, _) = Sio::connect(s.addr, &token(UA, "authenticated"));
    let ack = a2.subscribe("room:p");
    let ids: Vec<&str> = ack["presence"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["presenceId"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2, "watcher and A once: {ack}");
    assert!(ids.contains(&UA) && ids.contains(&"watcher"));
    // An anonymous member (anon key) is keyed by its socket id.
    let (mut anon, sid) = Sio::connect(s.addr, "anon_test");
    let ack = anon.subscribe("room:p");
    assert!(
        ack["presence"]["members"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["type"] == "anonymous" && m["presenceId"] == sid.as_str()),
        "{ack}"
    );
    assert_eq!(presence_frame(&mut watch), ("join".into(), sid.clone()));
    // Socket.IO members get presence:join with the bare channel name; not for themselves.
    let j = a1.expect_event("presence:join");
    assert_eq!(j["member"]["presenceId"], sid.as_str());
    assert_eq!(j["member"]["type"], "anonymous");
    assert_eq!(j["meta"]["channel"], "room:p");
    assert_eq!(j["meta"]["senderType"], "system");
    anon.expect_silence(Duration::from_millis(100));
    // REST: the members.
    let (st, v) = s.http("GET", "/api/realtime/presence/room:p", None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["members"].as_array().unwrap().len(), 3, "{v}");
    let (st, _) = http(s.addr, "GET", "/api/realtime/presence/room:p", None, None);
    assert_eq!(st, 401, "admin only");
    // A's first socket leaves: nothing; the second: one leave.
    a1.emit("realtime:unsubscribe", json!({"channel": "room:p"}));
    watch.expect_silence(Duration::from_millis(300));
    drop(a2);
    assert_eq!(presence_frame(&mut watch), ("leave".into(), UA.into()));
    let l = anon.expect_event("presence:leave");
    assert_eq!(l["member"]["presenceId"], UA);
    // A disconnect leaves too.
    drop(anon);
    assert_eq!(presence_frame(&mut watch), ("leave".into(), sid));
    quiet.expect_silence(Duration::from_millis(200));
    s.shutdown();
});

fn presence_config(dir: &std::path::Path) -> String {
    let p = dir.join(format!("presence-{}.toml", std::process::id()));
    std::fs::write(
        &p,
        "[presence]\nheartbeat = \"200ms\"\nttl = \"1s\"\n[auth]\nanon_key = \"anon_test\"\nanon_subscribe = true\n",
    )
    .unwrap();
    p.display().to_string()
}

#[test]
fn presence_across_redis_nodes_and_a_killed_node() {
    let redis = RedisServer::start();
    let url = redis.url();
    let cfg = presence_config(&std::env::temp_dir());
    let args = ["--engine", "redis", "--redis-url", &url, "--config", &cfg];
    let a = BrokerProcess::start(&args);
    let mut b = BrokerProcess::start(&args);
    let (st, v) = http(
        a.addr,
        "POST",
        "/api/realtime/channels",
        Some(ADMIN_KEY),
        Some(json!({"pattern": "room:*"})),
    );
    assert_eq!(st, 201, "{v}");
    eventually("channel on node b", Duration::from_secs(5), || {
        let (_, l) = http(
            b.addr,
            "GET",
            "/api/realtime/channels",
            Some(ADMIN_KEY),
            None,
        );
        l.as_array().is_some_and(|l| !l.is_empty())
    });
    // SDK-style client on A, another on B, a raw watcher on B.
    let (mut on_a, _) = Sio::connect(a.addr, &token(UA, "authenticated"));
    on_a.subscribe("room:x");
    let mut watch = Ws::connect(b.addr);
    watch.auth(&token("watcher", "authenticated"));
    watch.send(json!({"type": "subscribe", "channel": "room:x", "presence": true}));
    let sub = watch.expect("subscribed");
    assert_eq!(
        sub["presence"]["members"].as_array().unwrap().len(),
        2,
        "A's member is seen from B: {sub}"
    );
    assert_eq!(
        on_a.expect_event("presence:join")["member"]["presenceId"],
        "watcher"
    );
    let (mut on_b, _) = Sio::connect(b.addr, &token(UB, "authenticated"));
    on_b.subscribe("room:x");
    assert_eq!(
        on_a.expect_event("presence:join")["member"]["presenceId"],
        UB
    );
    assert_eq!(presence_frame(&mut watch), ("join".into(), UB.into()));
    // The same user on both nodes: still one member.
    let (mut a_on_b, _) = Sio::connect(b.addr, &token(UA, "authenticated"));
    let ack = a_on_b.subscribe("room:x");
    assert_eq!(
        ack["presence"]["members"].as_array().unwrap().len(),
        3,
        "{ack}"
    );
    watch.expect_silence(Duration::from_millis(300));
    // Messages cross nodes both ways, for both protocols.
    on_b.publish("room:x", "hi", json!({"n": 1}));
    assert_eq!(on_a.expect_event("hi")["n"], 1);
    assert_eq!(watch.expect("message")["payload"]["n"], 1);
    // REST on either node sees every node's members.
    let (_, v) = http(
        a.addr,
        "GET",
        "/api/realtime/presence/room:x",
        Some(ADMIN_KEY),
        None,
    );
    assert_eq!(v["members"].as_array().unwrap().len(), 3, "{v}");
    // Node B dies (SIGKILL, nothing said): its members UB and the watcher are gone after
    // ttl (1 s) and a heartbeat of A (200 ms); UA stays (it still has a socket on A).
    b.kill();
    drop((watch, on_b, a_on_b));
    let mut left = Vec::new();
    on_a.set_timeout(Duration::from_secs(10));
    while left.len() < 2 {
        let v = on_a.expect_event("presence:leave");
        left.push(v["member"]["presenceId"].as_str().unwrap().to_string());
    }
    left.sort();
    assert_eq!(left, vec![UB.to_string(), "watcher".to_string()]);
    let (_, v) = http(
        a.addr,
        "GET",
        "/api/realtime/presence/room:x",
        Some(ADMIN_KEY),
        None,
    );
    assert_eq!(v["members"].as_array().unwrap().len(), 1, "{v}");
    let _ = std::fs::remove_file(cfg);
}

both_drivers!(server_ended_subscriptions_are_told, |driver| {
    let s = TestServer::builder(driver).start();
    let rec = s.channel("gone:*");
    let (mut a, _) = Sio::connect(s.addr, &token(UA, "authenticated"));
    assert_eq!(a.subscribe("gone:1")["ok"], true);
    let mut raw = s.client("raw-1");
    raw.subscribe("gone:1");
    let id = rec["id"].as_str().unwrap();
    let (st, v) = s.http(
        "PUT",
        &format!("/api/realtime/channels/{id}"),
        Some(json!({"enabled": false})),
    );
    assert_eq!(st, 200, "{v}");
    let e = a.expect_event("realtime:error");
    assert_eq!(e["code"], "REALTIME_UNSUBSCRIBED", "{e}");
    assert_eq!(e["channel"], "gone:1");
    let u = raw.expect("unsubscribed");
    assert_eq!(u["reason"], "channel disabled or deleted");
    s.shutdown();
});
