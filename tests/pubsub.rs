//! Subscribe / publish / deliver end to end, on both drivers, across cores.

mod common;

use std::{collections::HashMap, time::Duration};

use common::*;
use ringcast::{channel::ChannelName, core::sequencer::owner_of};
use serde_json::{Value, json};
use tungstenite::Message;

both_drivers!(publish_reaches_subscribers_with_offsets, |driver| {
    let s = TestServer::start(driver);
    s.channel("order:*");
    let mut sub = s.client("u1");
    let r = sub.subscribe("order:123");
    assert_eq!(r["channel"], "order:123");
    assert!(r["subscriptionId"].as_str().unwrap().len() > 8);
    let mut publ = s.client("u2");
    let ack = publ.publish("order:123", "order.updated", json!({"orderId":"123"}));
    assert_eq!(ack["channel"], "order:123");
    assert_eq!(ack["event"], "order.updated");
    assert_eq!(ack["offset"], 1);
    let m = sub.expect("message");
    assert_eq!(m["messageId"], ack["messageId"]);
    assert_eq!(m["channel"], "order:123");
    assert_eq!(m["event"], "order.updated");
    assert_eq!(m["payload"], json!({"orderId":"123"}));
    assert_eq!(m["senderId"], "u2");
    assert_eq!(m["senderType"], "user");
    assert_eq!(m["offset"], 1);
    assert!(m["timestamp"].as_str().unwrap().ends_with('Z'));
    // The control thread stores the message after the ack went out: its gauges follow.
    let metrics = s.handle.as_ref().unwrap().metrics();
    eventually("the message is counted", Duration::from_secs(5), || {
        metrics.control.published_total.get() == 1 && metrics.control.history_retained.get() == 1
    });
    s.shutdown();
});

both_drivers!(publisher_and_subscriber_on_different_cores, |driver| {
    // Many connections spread over both cores by SO_REUSEPORT; every one must get every
    // message, in offset order, whichever core the publisher landed on.
    let s = TestServer::start(driver);
    s.channel("room:*");
    let mut subs: Vec<Ws> = (0..12).map(|i| s.client(&format!("s{i}"))).collect();
    for w in &mut subs {
        w.subscribe("room:1");
    }
    let mut pubs: Vec<Ws> = (0..4).map(|i| s.client(&format!("p{i}"))).collect();
    for k in 0..20 {
        let p = &mut pubs[k % 4];
        p.publish("room:1", "tick", json!({"k": k}));
    }
    for w in &mut subs {
        for k in 0..20u64 {
            let m = w.expect("message");
            assert_eq!(m["offset"], k + 1);
            assert_eq!(m["payload"]["k"], k);
        }
    }
    let cores_used = s
        .handle
        .as_ref()
        .unwrap()
        .metrics()
        .cores
        .iter()
        .filter(|c| c.ws_connections.get() > 0)
        .count();
    assert_eq!(cores_used, 2, "connections should land on both cores");
    s.shutdown();
});

both_drivers!(
    subscribe_is_idempotent_and_unsubscribe_stops_delivery,
    |driver| {
        let s = TestServer::start(driver);
        s.channel("chat:*");
        let mut a = s.client("a");
        let id1 = a.subscribe("chat:x")["subscriptionId"].clone();
        let id2 = a.subscribe("chat:x")["subscriptionId"].clone();
        assert_eq!(id1, id2);
        let mut b = s.client("b");
        b.publish("chat:x", "m", json!(1));
        a.expect("message");
        a.send(json!({"type":"unsubscribe","channel":"chat:x","ref":"u1"}));
        let u = a.expect("unsubscribed");
        assert_eq!(u["ref"], "u1");
        b.publish("chat:x", "m", json!(2));
        a.expect_silence(Duration::from_millis(200));
        s.shutdown();
    }
);

both_drivers!(
    publisher_receives_its_own_message_when_subscribed,
    |driver| {
        let s = TestServer::start(driver);
        s.channel("self:*");
        let mut a = s.client("a");
        a.subscribe("self:1");
        a.send(json!({"type":"publish","channel":"self:1","event":"e","payload":{},"ref":9}));
        let ack = a.expect("published");
        assert_eq!(ack["ref"], 9);
        let m = a.expect("message");
        assert_eq!(m["messageId"], ack["messageId"]);
        s.shutdown();
    }
);

both_drivers!(db_channel_filters_select_events_and_schema, |driver| {
    let s = TestServer::start(driver);
    s.channel("db:*");
    let sub = |who: &str, filter: Option<serde_json::Value>| {
        let mut w = s.client(who);
        let mut m = json!({"type": "subscribe", "channel": "db:posts"});
        if let Some(f) = filter {
            m["filter"] = f;
        }
        w.send(m);
        w.expect("subscribed");
        w
    };
    let mut inserts = sub("a", Some(json!({"event": "INSERT", "schema": "public"})));
    let mut any = sub("b", Some(json!({"event": "*"})));
    let mut unfiltered = sub("c", None);
    let mut updates = sub("d", Some(json!({"event": "UPDATE"})));
    // A CDC bridge publishes changes with the admin key (senderType "system").
    let mut bridge = s.admin();
    let change = |ev: &str, schema: &str, id: u32| {
        json!({"schema": schema, "table": "posts", "eventType": ev,
               "new": {"id": id}, "old": null})
    };
    bridge.publish("db:posts", "INSERT", change("INSERT", "public", 1));
    bridge.publish("db:posts", "UPDATE", change("UPDATE", "public", 2));
    bridge.publish("db:posts", "INSERT", change("INSERT", "audit", 3));
    let ids = |w: &mut Ws, n: usize| -> Vec<u64> {
        (0..n)
            .map(|_| {
                w.expect("message")["payload"]["new"]["id"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    };
    assert_eq!(ids(&mut inserts, 1), vec![1]);
    assert_eq!(ids(&mut any, 3), vec![1, 2, 3]);
    assert_eq!(ids(&mut unfiltered, 3), vec![1, 2, 3]);
    assert_eq!(ids(&mut updates, 1), vec![2]);
    inserts.expect_silence(Duration::from_millis(150));
    updates.expect_silence(Duration::from_millis(50));
    let m = {
        bridge.publish("db:posts", "DELETE", change("DELETE", "public", 4));
        any.expect("message")
    };
    assert_eq!(m["senderType"], "system");
    assert_eq!(m["event"], "DELETE");

    // On a channel that is not `db:`, a filter is accepted and not applied.
    s.channel("plain:*");
    let mut p = s.client("e");
    p.send(json!({"type": "subscribe", "channel": "plain:1", "filter": {"event": "INSERT"}}));
    p.expect("subscribed");
    bridge.publish("plain:1", "UPDATE", json!({}));
    assert_eq!(p.expect("message")["event"], "UPDATE");
    s.shutdown();
});

both_drivers!(
    pipelined_publishers_on_both_cores_keep_one_order_per_channel,
    |driver| {
        // Channels are sequenced by the core that owns them; publishers on either core send
        // without waiting for acks. Every subscriber must see each channel's offsets 1..=N
        // with no gap or repeat, each publisher's messages in the order it sent them, and
        // exactly the message each ack named.
        let s = TestServer::start(driver);
        s.channel("seq:*");
        let channels: Vec<String> = (0..4).map(|i| format!("seq:{i}")).collect();
        let owners: Vec<usize> = channels
            .iter()
            .map(|c| owner_of(&ChannelName::parse(c).unwrap(), 2))
            .collect();
        assert!(owners.contains(&0) && owners.contains(&1), "{owners:?}");
        let mut subs: Vec<Ws> = (0..6).map(|i| s.client(&format!("s{i}"))).collect();
        for w in &mut subs {
            for c in &channels {
                w.subscribe(c);
            }
        }
        const PER: usize = 60;
        let mut pubs: Vec<Ws> = (0..4).map(|i| s.client(&format!("p{i}"))).collect();
        for k in 0..PER {
            for (p, w) in pubs.iter_mut().enumerate() {
                let ch = &channels[(k + p) % channels.len()];
                let m = json!({"type":"publish","channel":ch,"event":"e","payload":{"p":p,"k":k},"ref":k});
                w.ws.write(Message::text(m.to_string())).unwrap();
            }
        }
        // acks: (channel, offset) -> (publisher, k). Acks of one channel come in send order;
        // across channels they may not (each channel has its own sequencer), so the `ref`
        // says which publish an ack answers.
        let mut acked: HashMap<(String, u64), (u64, u64)> = HashMap::new();
        for (p, w) in pubs.iter_mut().enumerate() {
            w.ws.flush().unwrap();
            let mut last: HashMap<String, u64> = HashMap::new();
            for _ in 0..PER {
                let a = w.expect("published");
                let ch = a["channel"].as_str().unwrap().to_string();
                let k = a["ref"].as_u64().unwrap();
                assert_eq!(ch, channels[(k as usize + p) % channels.len()], "{a}");
                if let Some(prev) = last.insert(ch.clone(), k) {
                    assert!(k > prev, "acks of {ch} out of send order");
                }
                let prev = acked.insert((ch, a["offset"].as_u64().unwrap()), (p as u64, k));
                assert!(prev.is_none(), "offset acked twice: {a}");
            }
        }
        let total = PER * pubs.len();
        for w in &mut subs {
            let mut next: HashMap<String, u64> = HashMap::new();
            let mut last_k: HashMap<(String, u64), u64> = HashMap::new();
            for _ in 0..total {
                let m = w.expect("message");
                let ch = m["channel"].as_str().unwrap().to_string();
                let off = m["offset"].as_u64().unwrap();
                let n = next.entry(ch.clone()).or_insert(1);
                assert_eq!(off, *n, "gap or repeat on {ch}");
                *n += 1;
                let (p, k) = (
                    m["payload"]["p"].as_u64().unwrap(),
                    m["payload"]["k"].as_u64().unwrap(),
                );
                assert_eq!(
                    acked.get(&(ch.clone(), off)),
                    Some(&(p, k)),
                    "ack and message agree"
                );
                if let Some(prev) = last_k.insert((ch, p), k) {
                    assert!(k > prev, "publisher {p} reordered");
                }
            }
            w.expect_silence(Duration::from_millis(50));
        }
        // History holds the same messages under the same offsets.
        let (st, h) = s.http("GET", "/api/realtime/messages?limit=1000", None);
        assert_eq!(st, 200);
        let rows = h.as_array().unwrap();
        assert_eq!(rows.len(), total);
        for r in rows {
            let key = (
                r["channelName"].as_str().unwrap().to_string(),
                r["offset"].as_u64().unwrap(),
            );
            let (p, k) = acked[&key];
            assert_eq!(r["payload"], json!({"p": p, "k": k}));
        }
        s.shutdown();
    }
);

/// WebSocket connections open on each core.
fn ws_per_core(s: &TestServer) -> Vec<u64> {
    let m = s.handle.as_ref().unwrap().metrics();
    m.cores.iter().map(|c| c.ws_connections.get()).collect()
}

/// A client on core `want`: connects until one lands there (the others are returned too, to
/// be kept open so the per-core counts stay put).
fn client_on_core(s: &TestServer, want: usize) -> (Ws, Vec<Ws>) {
    let mut others = Vec::new();
    for i in 0..64 {
        let before = ws_per_core(s);
        let w = s.client(&format!("c{i}"));
        let after = ws_per_core(s);
        if after[want] > before[want] {
            return (w, others);
        }
        others.push(w);
    }
    panic!("no connection landed on core {want}");
}

both_drivers!(
    a_full_core_queue_refuses_publishes_and_loses_none,
    |driver| {
        // Core inboxes of one slot: a burst forwarded to the owner core finds the reply slot
        // taken. Refused publishes get RATE_LIMITED "broker busy" and use no offset; every
        // accepted one is acknowledged, delivered and in history, offsets without gaps.
        let s = TestServer::builder(driver)
            .with(|f| f.server.core_queue = 1)
            .start();
        s.channel("busy:*");
        let ch = "busy:1".to_string();
        let owner = owner_of(&ChannelName::parse(&ch).unwrap(), 2);
        // The publisher on the other core (its publishes are forwarded), the subscriber on the
        // owner (so each accepted publish needs only the publisher core's one reply slot).
        let (mut publ, _a) = client_on_core(&s, 1 - owner);
        let (mut sub, _b) = client_on_core(&s, owner);
        sub.subscribe(&ch);
        const N: usize = 40;
        for k in 0..N {
            let m = json!({"type":"publish","channel":ch,"event":"e","payload":{"k":k},"ref":k});
            publ.ws.write(Message::text(m.to_string())).unwrap();
        }
        publ.ws.flush().unwrap();
        let mut accepted: Vec<(u64, u64)> = Vec::new(); // (offset, k)
        let mut refused = 0;
        for _ in 0..N {
            let a: Value = publ.recv();
            let k = a["ref"].as_u64().unwrap();
            match a["type"].as_str().unwrap() {
                "published" => accepted.push((a["offset"].as_u64().unwrap(), k)),
                "error" => {
                    assert_eq!(a["code"], "RATE_LIMITED", "{a}");
                    assert!(a["message"].as_str().unwrap().contains("busy"), "{a}");
                    assert_eq!(a["channel"], ch.as_str());
                    refused += 1;
                }
                t => panic!("unexpected {t}: {a}"),
            }
        }
        assert!(
            refused > 0,
            "a one-slot queue must refuse part of a 40-publish burst"
        );
        assert!(
            !accepted.is_empty(),
            "the first publish of the burst had a free slot"
        );
        for (i, (off, _)) in accepted.iter().enumerate() {
            assert_eq!(*off, i as u64 + 1, "offsets without gaps: {accepted:?}");
        }
        for (off, k) in &accepted {
            let m = sub.expect("message");
            assert_eq!(m["offset"], *off);
            assert_eq!(m["payload"]["k"], *k);
        }
        sub.expect_silence(Duration::from_millis(100));
        let path = format!("/api/realtime/messages?channelName={ch}&limit=1000");
        let (_, h) = s.http("GET", &path, None);
        assert_eq!(h.as_array().unwrap().len(), accepted.len());
        assert_eq!(s.metric("ringcast_publishes_refused_busy_total"), refused);
        // Once the burst is over the same connection publishes normally again.
        let a = publ.publish(&ch, "e", json!({"k": "after"}));
        assert_eq!(a["offset"], accepted.len() as u64 + 1);
        s.shutdown();
    }
);

both_drivers!(
    subscribers_behind_by_the_same_frames_get_them_whole_and_in_order,
    |driver| {
        // A burst of large messages while nobody reads: each subscriber's frames pile up, so its
        // writer sends several at once, in blocks the core joins once and shares between the
        // subscribers (core::gather), and the kernel takes each block in parts. Every subscriber
        // must still get every message once, whole, in offset order.
        let s = TestServer::start(driver);
        s.channel("burst:*");
        let mut subs: Vec<Ws> = (0..16).map(|i| s.client(&format!("s{i}"))).collect();
        for w in &mut subs {
            w.subscribe("burst:1");
        }
        let mut p = s.client("p");
        let n = 400u64;
        for k in 0..n {
            let pad = format!("{k:0>2000}");
            p.send(
                json!({"type":"publish","channel":"burst:1","event":"e","ref":k,
                      "payload":{"k":k,"pad":pad}}),
            );
        }
        for _ in 0..n {
            p.expect("published");
        }
        for w in &mut subs {
            for k in 0..n {
                let m = w.expect("message");
                assert_eq!(m["offset"], k + 1);
                assert_eq!(m["payload"]["k"], k);
                assert_eq!(m["payload"]["pad"], format!("{k:0>2000}"));
            }
        }
        s.shutdown();
    }
);
