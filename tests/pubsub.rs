//! Subscribe / publish / deliver end to end, on both drivers, across cores.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

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
    let metrics = s.handle.as_ref().unwrap().metrics();
    assert_eq!(metrics.control.history_retained.get(), 1);
    assert_eq!(metrics.control.published_total.get(), 1);
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
