//! Message history and stats over REST: the seed's record fields (plus `offset`), newest first,
//! audience counts, paging and filters, parameter validation, retention by count and age, and
//! `/messages/stats`. Runs on both drivers.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const MESSAGES: &str = "/api/realtime/messages";

fn list(s: &TestServer, query: &str) -> Vec<Value> {
    let (st, v) = s.http("GET", &format!("{MESSAGES}?{query}"), None);
    assert_eq!(st, 200, "{query}: {v}");
    v.as_array().expect("an array").clone()
}

fn offsets(rows: &[Value]) -> Vec<u64> {
    rows.iter().map(|r| r["offset"].as_u64().unwrap()).collect()
}

fn stats(s: &TestServer, query: &str) -> Value {
    let (st, v) = s.http("GET", &format!("{MESSAGES}/stats{query}"), None);
    assert_eq!(st, 200, "{query}: {v}");
    v
}

fn publish_n(p: &mut Ws, ch: &str, event: &str, n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| p.publish(ch, event, json!({"i": i})))
        .collect()
}

both_drivers!(history_lists_seed_fields_newest_first, |driver| {
    let s = TestServer::start(driver);
    let chan = s.channel("order:*");
    let mut subs: Vec<Ws> = (0..3).map(|i| s.client(&format!("s{i}"))).collect();
    for w in &mut subs {
        w.subscribe("order:123");
    }
    let mut p = s.client("770e8400-e29b-41d4-a716-446655440000");
    let events = ["order.created", "order.updated", "order.completed"];
    let mut acks = Vec::new();
    let mut frames = Vec::new();
    for (i, ev) in events.iter().enumerate() {
        let payload = json!({"orderId": "123", "step": i, "total": 99.99});
        acks.push(p.publish("order:123", ev, payload));
    }
    for w in &mut subs {
        for _ in &events {
            frames.push(w.expect("message"));
        }
    }
    // Audience counts are applied asynchronously.
    eventually(
        "wsAudienceCount = 3 on every row",
        Duration::from_secs(2),
        || {
            list(&s, "channelName=order:123")
                .iter()
                .all(|r| r["wsAudienceCount"] == 3)
        },
    );
    let rows = list(&s, "");
    assert_eq!(rows.len(), 3);
    for (k, row) in rows.iter().enumerate() {
        let i = 2 - k; // newest first
        let ack = &acks[i];
        assert_eq!(row["id"], ack["messageId"]);
        assert_eq!(row["eventName"], events[i]);
        assert_eq!(row["channelId"], chan["id"]);
        assert_eq!(row["channelName"], "order:123");
        assert_eq!(
            row["payload"],
            json!({"orderId": "123", "step": i, "total": 99.99})
        );
        assert_eq!(row["senderType"], "user");
        assert_eq!(row["senderId"], "770e8400-e29b-41d4-a716-446655440000");
        assert_eq!(row["wsAudienceCount"], 3);
        assert_eq!(row["whAudienceCount"], 0);
        assert_eq!(row["whDeliveredCount"], 0);
        assert_eq!(row["offset"], (i + 1) as u64);
        assert_eq!(row["offset"], ack["offset"]);
        // The delivered frame carries the same time as the record.
        assert_eq!(row["createdAt"], frames[i]["timestamp"]);
        let t = row["createdAt"].as_str().unwrap();
        assert!(t.len() == 24 && t.ends_with('Z'), "{t}");
        let mut keys: Vec<_> = row.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "channelId",
                "channelName",
                "createdAt",
                "eventName",
                "id",
                "offset",
                "payload",
                "senderId",
                "senderType",
                "whAudienceCount",
                "whDeliveredCount",
                "wsAudienceCount"
            ]
        );
    }
    assert!(rows[0]["createdAt"].as_str() >= rows[2]["createdAt"].as_str());
    s.shutdown();
});

both_drivers!(audience_counts_every_subscriber_on_every_core, |driver| {
    let s = TestServer::start(driver);
    s.channel("room:*");
    let mut p = s.client("p");
    // No subscribers at all.
    let lonely = p.publish("room:0", "e", json!(0));
    // Ten subscribers spread over both cores, the publisher among them.
    let mut subs: Vec<Ws> = (0..9).map(|i| s.client(&format!("s{i}"))).collect();
    for w in &mut subs {
        w.subscribe("room:1");
    }
    p.subscribe("room:1");
    let ack = p.publish("room:1", "e", json!(1));
    for w in subs.iter_mut().chain([&mut p]) {
        assert_eq!(w.expect("message")["messageId"], ack["messageId"]);
    }
    eventually("wsAudienceCount = 10", Duration::from_secs(2), || {
        list(&s, "channelName=room:1")[0]["wsAudienceCount"] == 10
    });
    let zero = list(&s, "channelName=room:0");
    assert_eq!(zero[0]["id"], lonely["messageId"]);
    assert_eq!(zero[0]["wsAudienceCount"], 0);
    s.shutdown();
});

both_drivers!(limit_and_offset_page_newest_first, |driver| {
    let s = TestServer::start(driver);
    s.channel("a:*");
    let mut p = s.client("p");
    publish_n(&mut p, "a:1", "e", 7);
    assert_eq!(offsets(&list(&s, "limit=3")), [7, 6, 5]);
    assert_eq!(offsets(&list(&s, "limit=3&offset=3")), [4, 3, 2]);
    assert_eq!(offsets(&list(&s, "offset=6")), [1]);
    assert_eq!(offsets(&list(&s, "offset=7")), Vec::<u64>::new());
    assert_eq!(
        offsets(&list(&s, "limit=1000&offset=0")),
        [7, 6, 5, 4, 3, 2, 1]
    );
    assert_eq!(offsets(&list(&s, "limit=1")), [7]);
    s.shutdown();
});

both_drivers!(default_limit_is_100, |driver| {
    let s = TestServer::start(driver);
    s.channel("a:*");
    let mut p = s.client("p");
    publish_n(&mut p, "a:1", "e", 120);
    let rows = list(&s, "");
    assert_eq!(rows.len(), 100);
    assert_eq!(rows[0]["offset"], 120);
    assert_eq!(rows[99]["offset"], 21);
    assert_eq!(list(&s, "limit=1000").len(), 120);
    assert_eq!(list(&s, "limit=1000&offset=100").len(), 20);
    s.shutdown();
});

both_drivers!(filters_by_channel_and_event, |driver| {
    let s = TestServer::start(driver);
    let orders = s.channel("order:*");
    let chats = s.channel("chat:*");
    let mut p = s.client("p");
    publish_n(&mut p, "order:1", "order.created", 2);
    publish_n(&mut p, "order:2", "order.created", 1);
    publish_n(&mut p, "order:1", "order.updated", 1);
    publish_n(&mut p, "chat:1", "message", 3);

    let by_id = list(&s, &format!("channelId={}", orders["id"].as_str().unwrap()));
    assert_eq!(by_id.len(), 4);
    assert!(by_id.iter().all(|r| r["channelId"] == orders["id"]));
    let by_id = list(&s, &format!("channelId={}", chats["id"].as_str().unwrap()));
    assert_eq!(by_id.len(), 3);
    assert!(by_id.iter().all(|r| r["channelName"] == "chat:1"));

    let by_name = list(&s, "channelName=order:1");
    assert_eq!(by_name.len(), 3);
    assert!(by_name.iter().all(|r| r["channelName"] == "order:1"));
    assert_eq!(by_name[0]["eventName"], "order.updated");
    // Percent-encoded names work the same.
    assert_eq!(list(&s, "channelName=order%3A1"), by_name);

    let by_event = list(&s, "eventName=order.created");
    assert_eq!(by_event.len(), 3);
    assert!(by_event.iter().all(|r| r["eventName"] == "order.created"));

    let both = list(&s, "channelName=order:1&eventName=order.created");
    assert_eq!(offsets(&both), [2, 1]);
    let all3 = list(
        &s,
        &format!(
            "channelId={}&channelName=order:2&eventName=order.created",
            orders["id"].as_str().unwrap()
        ),
    );
    assert_eq!(all3.len(), 1);

    // Filters that match nothing are empty lists, not errors.
    for q in [
        "channelName=nosuch:1".to_string(),
        "channelName=not%20a%20name".to_string(),
        "eventName=nothing".to_string(),
        format!("channelId={}", uuid::Uuid::new_v4()),
        format!(
            "channelId={}&channelName=order:1",
            chats["id"].as_str().unwrap()
        ),
    ] {
        assert_eq!(list(&s, &q), Vec::<Value>::new(), "{q}");
    }
    s.shutdown();
});

both_drivers!(since_and_until_bound_created_at, |driver| {
    let s = TestServer::start(driver);
    s.channel("a:*");
    let mut p = s.client("p");
    publish_n(&mut p, "a:1", "e", 6);
    let all = list(&s, "");
    let created = |r: &Value| r["createdAt"].as_str().unwrap().to_string();
    // Bounds taken from the records themselves (several may share a millisecond).
    let t_mid = created(&all[3]);
    let t_new = created(&all[1]);
    let want = |f: &dyn Fn(&str) -> bool| -> Vec<u64> {
        all.iter()
            .filter(|r| f(&created(r)))
            .map(|r| r["offset"].as_u64().unwrap())
            .collect()
    };
    let since = offsets(&list(&s, &format!("since={t_mid}")));
    assert_eq!(since, want(&|c| c >= t_mid.as_str()));
    assert!(since.contains(&3) && since.contains(&6), "{since:?}");
    let until = offsets(&list(&s, &format!("until={t_mid}")));
    assert_eq!(until, want(&|c| c <= t_mid.as_str()));
    assert!(until.contains(&1) && until.contains(&3), "{until:?}");
    let between = offsets(&list(&s, &format!("since={t_mid}&until={t_new}")));
    assert_eq!(
        between,
        want(&|c| c >= t_mid.as_str() && c <= t_new.as_str())
    );
    assert!(between.contains(&3) && between.contains(&5), "{between:?}");
    assert_eq!(list(&s, "since=2000-01-01").len(), 6);
    assert_eq!(
        list(&s, "since=2000-01-01T00:00:00Z&until=2999-01-01T00:00:00Z").len(),
        6
    );
    assert_eq!(list(&s, "since=2999-01-01T00:00:00Z").len(), 0);
    assert_eq!(list(&s, "until=2000-01-01T00:00:00Z").len(), 0);
    // An offset-form timestamp (`+` must be percent-encoded in a query).
    assert_eq!(list(&s, "since=2000-01-01T02:00:00%2B02:00").len(), 6);
    s.shutdown();
});

both_drivers!(bad_query_parameters_are_400, |driver| {
    let s = TestServer::start(driver);
    for q in [
        "limit=0",
        "limit=1001",
        "limit=abc",
        "limit=-1",
        "limit=",
        "offset=-1",
        "offset=x",
        "since=garbage",
        "since=2024-13-01",
        "until=yesterday",
        "channelId=not-uuid",
        "bogus=1",
        "limit=10&Limit=5",
        "since=2024-02-01&until=2024-01-01",
        "channelName=%zz",
    ] {
        let (st, v) = s.http("GET", &format!("{MESSAGES}?{q}"), None);
        assert_eq!(st, 400, "{q}: {v}");
        assert_eq!(v["error"], "BAD_REQUEST", "{q}: {v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    for q in ["since=garbage", "limit=5", "until=2024-01-01"] {
        let (st, v) = s.http("GET", &format!("{MESSAGES}/stats?{q}"), None);
        assert_eq!(st, 400, "stats {q}: {v}");
        assert_eq!(v["error"], "BAD_REQUEST");
    }
    s.shutdown();
});

both_drivers!(retention_by_count_per_channel_and_total, |driver| {
    let s = TestServer::builder(driver)
        .with(|f| {
            f.history.max_messages_per_channel = 3;
            f.history.max_total_messages = 5;
        })
        .start();
    s.channel("a:*");
    s.channel("b:*");
    let mut p = s.client("p");
    publish_n(&mut p, "a:1", "e", 3);
    assert_eq!(offsets(&list(&s, "channelName=a:1")), [3, 2, 1]);
    publish_n(&mut p, "b:1", "e", 4);
    // b:1 keeps its newest 3 (per channel); a:1 lost its oldest to the global cap of 5.
    assert_eq!(offsets(&list(&s, "channelName=b:1")), [4, 3, 2]);
    assert_eq!(offsets(&list(&s, "channelName=a:1")), [3, 2]);
    assert_eq!(list(&s, "").len(), 5);
    assert_eq!(stats(&s, "")["totalMessages"], 5);
    // Offsets keep counting after eviction.
    let ack = p.publish("a:1", "e", json!(null));
    assert_eq!(ack["offset"], 4);
    assert_eq!(offsets(&list(&s, "channelName=a:1")), [4, 3]);
    s.shutdown();
});

both_drivers!(retention_by_age, |driver| {
    let s = TestServer::builder(driver)
        .with(|f| f.history.max_age = "300ms".into())
        .start();
    s.channel("a:*");
    let mut p = s.client("p");
    publish_n(&mut p, "a:1", "e", 2);
    assert_eq!(list(&s, "").len(), 2);
    eventually(
        "messages older than 300ms expire",
        Duration::from_secs(2),
        || list(&s, "").is_empty(),
    );
    assert_eq!(stats(&s, "")["totalMessages"], 0);
    p.publish("a:1", "e", json!(1));
    assert_eq!(offsets(&list(&s, "")), [3]);
    s.shutdown();
});

both_drivers!(stats_count_and_rank_events, |driver| {
    let s = TestServer::start(driver);
    let empty = stats(&s, "");
    assert_eq!(
        empty,
        json!({"totalMessages": 0, "whDeliveryRate": 1.0, "topEvents": []})
    );
    s.channel("a:*");
    s.channel("b:*");
    let mut p = s.client("p");
    publish_n(&mut p, "a:1", "order.created", 2);
    publish_n(&mut p, "b:1", "order.created", 1);
    publish_n(&mut p, "a:2", "order.completed", 1);
    publish_n(&mut p, "b:1", "order.updated", 2);
    let st = stats(&s, "");
    assert_eq!(
        st,
        json!({
            "totalMessages": 6,
            "whDeliveryRate": 1.0,
            "topEvents": [
                {"eventName": "order.created", "count": 3},
                {"eventName": "order.updated", "count": 2},
                {"eventName": "order.completed", "count": 1}
            ]
        })
    );
    assert_eq!(stats(&s, "?since=2000-01-01T00:00:00Z"), st);
    assert_eq!(
        stats(&s, "?since=2999-01-01T00:00:00Z"),
        json!({"totalMessages": 0, "whDeliveryRate": 1.0, "topEvents": []})
    );
    // `since` a record's own time includes that record.
    let newest = list(&s, "limit=1");
    let t = newest[0]["createdAt"].as_str().unwrap();
    let recent = stats(&s, &format!("?since={t}"));
    assert!(recent["totalMessages"].as_u64().unwrap() >= 1, "{recent}");
    s.shutdown();
});

both_drivers!(stats_keep_only_the_top_10_events, |driver| {
    let s = TestServer::start(driver);
    s.channel("a:*");
    let mut p = s.client("p");
    // ev00 x12 ... ev11 x1: twelve distinct events with distinct counts.
    for i in 0..12 {
        publish_n(&mut p, "a:1", &format!("ev{i:02}"), 12 - i);
    }
    let st = stats(&s, "");
    assert_eq!(st["totalMessages"], 78);
    let top = st["topEvents"].as_array().unwrap();
    assert_eq!(top.len(), 10);
    for (i, e) in top.iter().enumerate() {
        assert_eq!(e["eventName"], format!("ev{i:02}"));
        assert_eq!(e["count"], (12 - i) as u64);
    }
    s.shutdown();
});
