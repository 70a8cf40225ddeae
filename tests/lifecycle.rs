//! Channel lifecycle seen from the socket: which record a name resolves to (exact, then longest
//! literal prefix, `*` and `%` alike), and what disabling, re-enabling, re-patterning and
//! deleting a channel do to current subscribers, new subscribes, publishes and history.
//! Runs on both drivers.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const CHANNELS: &str = "/api/realtime/channels";

fn id_of(rec: &Value) -> String {
    rec["id"].as_str().unwrap().to_string()
}

fn set_enabled(s: &TestServer, id: &str, on: bool) {
    let (st, v) = s.http(
        "PUT",
        &format!("{CHANNELS}/{id}"),
        Some(json!({"enabled": on})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["enabled"], on);
}

/// History rows of one channel name, newest first.
fn history_of(s: &TestServer, name: &str) -> Vec<Value> {
    let (st, v) = s.http(
        "GET",
        &format!("/api/realtime/messages?channelName={name}"),
        None,
    );
    assert_eq!(st, 200, "{v}");
    v.as_array().unwrap().clone()
}

/// Publishes on `name` and returns the id of the channel record it was stored under.
fn resolves_to(s: &TestServer, p: &mut Ws, name: &str) -> String {
    let ack = p.publish(name, "probe", json!({}));
    let rows = history_of(s, name);
    assert_eq!(rows[0]["id"], ack["messageId"]);
    rows[0]["channelId"].as_str().unwrap().to_string()
}

fn expect_not_found(ws: &mut Ws, msg: Value) {
    ws.send(msg.clone());
    let e = ws.expect("error");
    assert_eq!(e["code"], "CHANNEL_NOT_FOUND", "for {msg}: {e}");
    assert_eq!(e["message"], "Channel not found or not accessible");
}

fn sub_msg(ch: &str) -> Value {
    json!({"type": "subscribe", "channel": ch})
}

fn pub_msg(ch: &str) -> Value {
    json!({"type": "publish", "channel": ch, "event": "e", "payload": {}})
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

fn expect_unsubscribed(ws: &mut Ws, ch: &str) {
    let u = ws.expect("unsubscribed");
    assert_eq!(u["channel"], ch, "{u}");
    assert!(u.get("ref").is_none(), "server-initiated: no ref: {u}");
}

both_drivers!(names_resolve_exact_then_longest_literal_prefix, |driver| {
    let s = TestServer::start(driver);
    let any_order = id_of(&s.channel("order:*"));
    let order_1x = id_of(&s.channel("order:1*"));
    let order_123 = id_of(&s.channel("order:123"));
    let chat = id_of(&s.channel("chat:%"));
    let chat_msgs = id_of(&s.channel("chat:%:messages"));
    let feed = id_of(&s.channel("feed%"));
    let mut p = s.client("p");
    let cases = [
        ("order:123", &order_123),
        ("order:124", &order_1x),
        ("order:1", &order_1x),
        ("order:1:a:b", &order_1x),
        ("order:9", &any_order),
        ("chat:room1:messages", &chat_msgs),
        ("chat:a:b:messages", &chat_msgs),
        ("chat:room1", &chat),
        ("chat:room1:other", &chat),
        ("feed", &feed),
        ("feed:x:y", &feed),
        ("feedback", &feed),
    ];
    for (name, want) in cases {
        assert_eq!(&resolves_to(&s, &mut p, name), want, "{name}");
    }
    // Subscribing resolves the same way, and wildcard subscribers receive.
    let mut sub = s.client("sub");
    for name in ["order:123", "order:124", "chat:x:messages", "feed"] {
        sub.subscribe(name);
    }
    let ack = p.publish("chat:x:messages", "m", json!(1));
    let m = sub.expect("message");
    assert_eq!(
        (&m["channel"], &m["messageId"]),
        (&json!("chat:x:messages"), &ack["messageId"])
    );
    for name in ["orders:1", "order", "chat", "fee", "x:order:1"] {
        expect_not_found(&mut sub, sub_msg(name));
        expect_not_found(&mut p, pub_msg(name));
    }
    // A disabled record is skipped: the next best match takes over.
    set_enabled(&s, &order_123, false);
    assert_eq!(resolves_to(&s, &mut p, "order:123"), order_1x);
    set_enabled(&s, &order_1x, false);
    assert_eq!(resolves_to(&s, &mut p, "order:123"), any_order);
    s.shutdown();
});

both_drivers!(
    disabling_unsubscribes_and_reenabling_allows_again,
    |driver| {
        let s = TestServer::start(driver);
        let room = id_of(&s.channel("room:*"));
        s.channel("keep:*");
        // Enough subscribers to land on both cores.
        let mut subs: Vec<Ws> = (0..6).map(|i| s.client(&format!("s{i}"))).collect();
        for w in &mut subs {
            w.subscribe("room:1");
        }
        let mut other_room = s.client("r2");
        other_room.subscribe("room:2");
        let mut keeper = s.client("k");
        keeper.subscribe("keep:1");
        let mut p = s.client("p");
        p.publish("room:1", "before", json!(0));
        for w in &mut subs {
            assert_eq!(w.expect("message")["event"], "before");
        }
        eventually("8 subscriptions", Duration::from_secs(2), || {
            metric(&s, "ringcast_subscriptions") == 8
        });

        set_enabled(&s, &room, false);
        // The REST answer comes after every core applied the change: `unsubscribed` is already
        // on its way to each subscriber.
        for w in &mut subs {
            expect_unsubscribed(w, "room:1");
        }
        expect_unsubscribed(&mut other_room, "room:2");
        assert_eq!(
            metric(&s, "ringcast_subscriptions"),
            1,
            "only keep:1 is left"
        );
        expect_not_found(&mut p, pub_msg("room:1"));
        let mut newcomer = s.client("n");
        expect_not_found(&mut newcomer, sub_msg("room:1"));
        // Other channels are untouched.
        p.publish("keep:1", "still", json!(1));
        assert_eq!(keeper.expect("message")["event"], "still");
        for w in &mut subs {
            w.expect_silence(Duration::from_millis(50));
        }

        set_enabled(&s, &room, true);
        newcomer.subscribe("room:1");
        let ack = p.publish("room:1", "after", json!(2));
        let m = newcomer.expect("message");
        assert_eq!(m["messageId"], ack["messageId"]);
        // The old subscribers were really unsubscribed: nothing until they subscribe again.
        subs[0].expect_silence(Duration::from_millis(100));
        subs[0].subscribe("room:1");
        p.publish("room:1", "again", json!(3));
        assert_eq!(subs[0].expect("message")["event"], "again");
        assert_eq!(newcomer.expect("message")["event"], "again");
        s.shutdown();
    }
);

both_drivers!(
    disabling_a_wildcard_keeps_names_another_record_serves,
    |driver| {
        let s = TestServer::start(driver);
        let any = id_of(&s.channel("order:*"));
        s.channel("order:vip");
        let mut a = s.client("a");
        a.subscribe("order:1");
        let mut b = s.client("b");
        b.subscribe("order:vip");
        set_enabled(&s, &any, false);
        expect_unsubscribed(&mut a, "order:1");
        b.expect_silence(Duration::from_millis(100));
        let mut p = s.client("p");
        let ack = p.publish("order:vip", "e", json!(1));
        assert_eq!(b.expect("message")["messageId"], ack["messageId"]);
        a.expect_silence(Duration::from_millis(50));
        s.shutdown();
    }
);

both_drivers!(
    changing_a_pattern_unsubscribes_names_it_no_longer_covers,
    |driver| {
        let s = TestServer::start(driver);
        let id = id_of(&s.channel("room:*"));
        let mut a = s.client("a");
        a.subscribe("room:1");
        let (st, v) = s.http(
            "PUT",
            &format!("{CHANNELS}/{id}"),
            Some(json!({"pattern": "hall:*"})),
        );
        assert_eq!(st, 200, "{v}");
        expect_unsubscribed(&mut a, "room:1");
        expect_not_found(&mut a, sub_msg("room:1"));
        a.subscribe("hall:1");
        s.shutdown();
    }
);

both_drivers!(deleting_unsubscribes_and_history_survives, |driver| {
    let s = TestServer::start(driver);
    let gone = id_of(&s.channel("gone:*"));
    let mut subs: Vec<Ws> = (0..4).map(|i| s.client(&format!("s{i}"))).collect();
    for w in &mut subs {
        w.subscribe("gone:1");
    }
    let mut p = s.client("p");
    let acks: Vec<Value> = (0..3)
        .map(|i| p.publish("gone:1", &format!("ev{i}"), json!({"i": i})))
        .collect();
    for w in &mut subs {
        for _ in 0..3 {
            w.expect("message");
        }
    }
    let (st, _) = s.http("DELETE", &format!("{CHANNELS}/{gone}"), None);
    assert_eq!(st, 204);
    for w in &mut subs {
        expect_unsubscribed(w, "gone:1");
    }
    expect_not_found(&mut p, pub_msg("gone:1"));
    expect_not_found(&mut subs[0], sub_msg("gone:1"));
    for w in &mut subs {
        w.expect_silence(Duration::from_millis(50));
    }
    // History keeps the messages, with the deleted channel's id.
    let rows = history_of(&s, "gone:1");
    assert_eq!(rows.len(), 3);
    for (row, ack) in rows.iter().zip(acks.iter().rev()) {
        assert_eq!(row["id"], ack["messageId"]);
        assert_eq!(row["channelId"], gone.as_str());
        assert_eq!(row["channelName"], "gone:1");
    }
    let (st, by_id) = s.http(
        "GET",
        &format!("/api/realtime/messages?channelId={gone}"),
        None,
    );
    assert_eq!(st, 200);
    assert_eq!(by_id.as_array().unwrap(), &rows);
    // A new channel with the same pattern is a new record; old rows keep the old id.
    let again = id_of(&s.channel("gone:*"));
    assert_ne!(again, gone);
    subs[0].subscribe("gone:1");
    p.publish("gone:1", "new", json!(9));
    assert_eq!(subs[0].expect("message")["event"], "new");
    let rows = history_of(&s, "gone:1");
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["channelId"], again.as_str());
    assert!(rows[1..].iter().all(|r| r["channelId"] == gone.as_str()));
    s.shutdown();
});
