//! The redis engine with real redis-server processes and several ringcast nodes: cross-node
//! delivery and order, registry propagation, history, audience counts and stats from any
//! node, and Redis going away and coming back.

mod common;

use std::time::Duration;

use common::{redis::RedisServer, *};
use serde_json::json;

/// Waits until `node`'s registry holds `pattern` (changes propagate through Redis).
fn wait_channel(node: &TestServer, pattern: &str) {
    eventually("channel propagated", Duration::from_secs(5), || {
        let (_, list) = node.http("GET", "/api/realtime/channels", None);
        list.as_array()
            .is_some_and(|l| l.iter().any(|c| c["pattern"] == pattern))
    });
}

/// The field names of a Redis hash, sorted by number.
fn hash_fields(redis: &RedisServer, key: &str) -> Vec<u64> {
    let reply = redis.command(&["HKEYS", key]);
    let mut f: Vec<u64> = reply
        .split("\r\n")
        .filter(|l| !l.is_empty() && !l.starts_with(['*', '$']))
        .map(|l| l.parse().unwrap_or_else(|_| panic!("HKEYS {key}: {reply}")))
        .collect();
    f.sort_unstable();
    f
}

/// The number in an integer (or bulk string) reply.
fn int_reply(reply: &str) -> i64 {
    reply
        .split("\r\n")
        .find_map(|l| {
            l.strip_prefix(':')
                .or_else(|| (!l.starts_with(['$', '*'])).then_some(l))
        })
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("not a number: {reply:?}"))
}

/// Raises the per-connection publish limit so a test can send hundreds of publishes at once.
fn allow_bursts(f: &mut ringcast::config::FileConfig) {
    f.websocket.publish_rate = 10_000;
    f.websocket.publish_burst = 10_000;
}

/// One redis-engine node whose all-channels index holds at most `max_total` messages.
fn index_capped_node(redis: &RedisServer, max_total: usize) -> TestServer {
    TestServer::builder("io_uring")
        .redis(&redis.url())
        .with(|f| {
            f.history.max_total_messages = max_total;
            allow_bursts(f);
        })
        .start()
}

fn two_nodes(driver: &str, redis: &RedisServer) -> (TestServer, TestServer) {
    let a = TestServer::builder(driver).redis(&redis.url()).start();
    let b = TestServer::builder(driver).redis(&redis.url()).start();
    (a, b)
}

both_drivers!(channel_created_on_one_node_works_on_another, |driver| {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(driver, &redis);
    a.channel("order:*");
    // Registry changes reach the other node through Redis within milliseconds.
    let mut sub = b.client("s");
    eventually("channel visible on node B", Duration::from_secs(3), || {
        sub.send(json!({"type": "subscribe", "channel": "order:1"}));
        sub.recv()["type"] == "subscribed"
    });
    let mut publ = a.client("p");
    let ack = publ.publish("order:1", "created", json!({"n": 1}));
    assert_eq!(ack["offset"], 1);
    let m = sub.expect("message");
    assert_eq!(m["messageId"], ack["messageId"]);
    assert_eq!(m["offset"], 1);
    assert_eq!(m["senderId"], "p");
    // A duplicate pattern is refused whichever node it is created on.
    let (status, _) = b.http(
        "POST",
        "/api/realtime/channels",
        Some(json!({"pattern": "order:*"})),
    );
    assert_eq!(status, 409);
    let (_, list_a) = a.http("GET", "/api/realtime/channels", None);
    let (_, list_b) = b.http("GET", "/api/realtime/channels", None);
    assert_eq!(list_a, list_b);
    a.shutdown();
    b.shutdown();
});

both_drivers!(
    concurrent_publishers_on_both_nodes_one_order_everywhere,
    |driver| {
        let redis = RedisServer::start();
        let (a, b) = two_nodes(driver, &redis);
        a.channel("room:*");
        let mut subs = vec![
            a.client("sa"),
            b.client("sb"),
            a.client("sa2"),
            b.client("sb2"),
        ];
        for s in &mut subs {
            eventually("subscribe", Duration::from_secs(3), || {
                s.send(json!({"type": "subscribe", "channel": "room:1"}));
                s.recv()["type"] == "subscribed"
            });
        }
        let mut pa = a.client("pa");
        let mut pb = b.client("pb");
        const N: u64 = 50;
        // Fire both publishers' messages without waiting, so they interleave in Redis.
        for k in 0..N {
            pa.send(json!({"type":"publish","channel":"room:1","event":"e","payload":{"from":"a","k":k}}));
            pb.send(json!({"type":"publish","channel":"room:1","event":"e","payload":{"from":"b","k":k}}));
        }
        let mut orders = Vec::new();
        for s in &mut subs {
            let mut seen = Vec::new();
            for i in 1..=2 * N {
                let m = s.expect("message");
                assert_eq!(m["offset"], i, "offsets arrive in order without gaps");
                seen.push((m["payload"]["from"].clone(), m["payload"]["k"].clone()));
            }
            orders.push(seen);
        }
        assert!(
            orders.windows(2).all(|w| w[0] == w[1]),
            "every subscriber on every node sees one order"
        );
        let mut acks = 0;
        for p in [&mut pa, &mut pb] {
            for _ in 0..N {
                assert_eq!(p.recv()["type"], "published");
                acks += 1;
            }
        }
        assert_eq!(acks, 2 * N);
        // History is the same from either node, newest first, in that same order.
        let q = "/api/realtime/messages?channelName=room:1&limit=1000";
        let (_, ha) = a.http("GET", q, None);
        let (_, hb) = b.http("GET", q, None);
        let offs = |h: &serde_json::Value| -> Vec<u64> {
            h.as_array()
                .unwrap()
                .iter()
                .map(|m| m["offset"].as_u64().unwrap())
                .collect()
        };
        assert_eq!(offs(&ha), (1..=2 * N).rev().collect::<Vec<_>>());
        assert_eq!(offs(&ha), offs(&hb));
        a.shutdown();
        b.shutdown();
    }
);

both_drivers!(disable_on_one_node_unsubscribes_on_the_other, |driver| {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(driver, &redis);
    let rec = a.channel("live:*");
    wait_channel(&b, "live:*");
    let mut sub = a.client("s");
    sub.subscribe("live:1");
    let id = rec["id"].as_str().unwrap();
    let (status, _) = b.http(
        "PUT",
        &format!("/api/realtime/channels/{id}"),
        Some(json!({"enabled": false})),
    );
    assert_eq!(status, 200);
    let u = sub.expect("unsubscribed");
    assert_eq!(u["channel"], "live:1");
    sub.send(json!({"type":"publish","channel":"live:1","event":"e","payload":{}}));
    assert_eq!(sub.expect("error")["code"], "CHANNEL_NOT_FOUND");
    a.shutdown();
    b.shutdown();
});

both_drivers!(audience_and_stats_are_summed_over_nodes, |driver| {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(driver, &redis);
    a.channel("aud:*");
    wait_channel(&b, "aud:*");
    let mut subs: Vec<Ws> = (0..2).map(|i| a.client(&format!("a{i}"))).collect();
    subs.extend((0..3).map(|i| b.client(&format!("b{i}"))));
    for s in &mut subs {
        eventually("subscribe", Duration::from_secs(3), || {
            s.send(json!({"type": "subscribe", "channel": "aud:1"}));
            s.recv()["type"] == "subscribed"
        });
    }
    let mut p = b.client("p");
    p.publish("aud:1", "hello", json!({}));
    p.publish("aud:1", "bye", json!({}));
    p.publish("aud:1", "hello", json!({}));
    for s in &mut subs {
        for _ in 0..3 {
            s.expect("message");
        }
    }
    for node in [&a, &b] {
        eventually(
            "wsAudienceCount summed over nodes",
            Duration::from_secs(3),
            || {
                let (_, h) = node.http("GET", "/api/realtime/messages?channelName=aud:1", None);
                h.as_array()
                    .unwrap()
                    .iter()
                    .all(|m| m["wsAudienceCount"] == 5)
            },
        );
        let (s, stats) = node.http("GET", "/api/realtime/messages/stats", None);
        assert_eq!(s, 200);
        assert_eq!(stats["totalMessages"], 3);
        assert_eq!(
            stats["topEvents"][0],
            json!({"eventName": "hello", "count": 2})
        );
    }
    a.shutdown();
    b.shutdown();
});

#[test]
fn redis_going_away_gives_errors_then_recovers() {
    // Persistent, as in production: a Redis restarted without its data has no channels
    // (the node then reloads that empty registry and refuses publishes, correctly).
    let mut redis = RedisServer::start_persistent();
    let a = TestServer::builder("io_uring").redis(&redis.url()).start();
    a.channel("r:*");
    let mut sub = a.client("s");
    sub.subscribe("r:1");
    let mut p = a.client("p");
    p.publish("r:1", "before", json!({}));
    assert_eq!(sub.expect("message")["event"], "before");

    redis.stop();
    // No false acknowledgement while Redis is away: an error frame, and /health says so.
    p.set_timeout(Duration::from_secs(15));
    p.send(json!({"type":"publish","channel":"r:1","event":"lost","payload":{}}));
    let e = p.expect("error");
    // Never sent (INTERNAL, not published), or sent to a Redis that died (OUTCOME_UNKNOWN).
    assert!(
        matches!(e["code"].as_str(), Some("INTERNAL" | "OUTCOME_UNKNOWN")),
        "{e}"
    );
    let (status, health) = a.http("GET", "/health", None);
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["engineReachable"], false);

    redis.restart();
    // Publishing works again, and the node re-subscribes its live subscriber in Redis, so new
    // messages reach it (the gap fill after a reconnection has tests of its own).
    sub.set_timeout(Duration::from_millis(300));
    eventually(
        "publish and delivery work after Redis returns",
        Duration::from_secs(20),
        || {
            p.send(json!({"type":"publish","channel":"r:1","event":"after","payload":{}}));
            if p.recv()["type"] != "published" {
                return false;
            }
            match sub.ws.read() {
                Ok(tungstenite::Message::Text(t)) => t.contains("\"event\":\"after\""),
                _ => false,
            }
        },
    );
    let (status, _) = a.http("GET", "/health", None);
    assert_eq!(status, 200);
    a.shutdown();
}

#[test]
fn unreachable_redis_refuses_to_start() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut f = ringcast::config::FileConfig::default();
    f.server.listen = "127.0.0.1:0".into();
    f.server.engine = "redis".into();
    f.redis.url = format!("redis://127.0.0.1:{port}");
    let cfg = ringcast::config::validate(&f).unwrap();
    let err = match ringcast::start(cfg) {
        Ok(_) => panic!("started without Redis"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("redis"), "{err}");
}

/// Reads `message` frames until offset `upto`; asserts 1..=upto exactly once, in order.
fn expect_offsets(sub: &mut Ws, upto: u64) -> Vec<String> {
    expect_offsets_from(sub, 1, upto)
}

/// Reads `message` frames until offset `upto`; asserts from..=upto exactly once, in order.
fn expect_offsets_from(sub: &mut Ws, from: u64, upto: u64) -> Vec<String> {
    let mut ids = Vec::new();
    let mut next = from;
    while next <= upto {
        let m = sub.recv();
        if m["type"] != "message" {
            continue;
        }
        assert_eq!(m["offset"], next, "gap or duplicate at {next}: {m}");
        ids.push(m["messageId"].as_str().unwrap().to_string());
        next += 1;
    }
    ids
}

both_drivers!(pubsub_link_drop_mid_stream_loses_nothing, |driver| {
    let redis = RedisServer::start();
    let (a, b) = two_nodes(driver, &redis);
    a.channel("gap:*");
    wait_channel(&b, "gap:*");
    let mut sub = a.client("s");
    sub.subscribe("gap:1");
    let mut p = b.client("p");
    let mut publish = |range: std::ops::RangeInclusive<u64>| {
        for k in range {
            let ack = p.publish("gap:1", "e", json!({"k": k}));
            assert_eq!(ack["offset"], k);
        }
    };
    publish(1..=100);
    // Cut every pub/sub connection (both nodes'), and publish while they are down.
    let r = redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert!(r.starts_with(':'), "{r}");
    publish(101..=150);
    eventually("node A reconnected", Duration::from_secs(10), || {
        a.metric("ringcast_backplane_reconnects_total") >= 1
    });
    // Everything up to the end of the outage arrived (live or from the stream) ...
    expect_offsets(&mut sub, 150);
    let filled = a.metric("ringcast_backplane_gap_fill_messages_total");
    assert!(
        filled <= 50,
        "only the outage window comes from the stream: {filled}"
    );
    publish(151..=300);
    expect_offsets_from(&mut sub, 151, 300);
    sub.expect_silence(Duration::from_millis(200));
    // Live delivery resumed after the reconnection: nothing after it came from the stream.
    assert_eq!(
        a.metric("ringcast_backplane_gap_fill_messages_total"),
        filled
    );
    let _ = a.metric("ringcast_backplane_lag_ms");
    a.shutdown();
    b.shutdown();
});

#[test]
fn redis_restart_mid_stream_loses_no_acknowledged_message() {
    let mut redis = RedisServer::start_persistent();
    let a = TestServer::builder("io_uring").redis(&redis.url()).start();
    a.channel("dur:*");
    let mut sub = a.client("s");
    sub.subscribe("dur:1");
    sub.set_timeout(Duration::from_secs(20));
    let mut p = a.client("p");
    p.set_timeout(Duration::from_secs(20));
    let mut acked = Vec::new();
    let mut highest = 0;
    for k in 0..60 {
        if k == 30 {
            redis.stop();
            // While Redis is down: refused, never acknowledged.
            p.send(json!({"type":"publish","channel":"dur:1","event":"e","payload":{"k":k}}));
            let e = p.expect("error");
            assert!(
                matches!(e["code"].as_str(), Some("INTERNAL" | "OUTCOME_UNKNOWN")),
                "{e}"
            );
            redis.restart();
        }
        // Retry until accepted: the node reconnects by itself.
        loop {
            p.send(json!({"type":"publish","channel":"dur:1","event":"e","payload":{"k":k}}));
            let r = p.recv();
            if r["type"] == "published" {
                highest = highest.max(r["offset"].as_u64().unwrap());
                acked.push(r["messageId"].as_str().unwrap().to_string());
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // The subscriber stayed connected: it sees every stored offset once, in order, and so
    // every acknowledged message.
    let seen = expect_offsets(&mut sub, highest);
    for id in &acked {
        assert!(
            seen.contains(id),
            "acknowledged message {id} never delivered"
        );
    }
    a.shutdown();
}

#[test]
fn two_nodes_on_a_redis_cluster() {
    let cluster = common::redis::RedisCluster::start();
    let a = TestServer::builder("io_uring")
        .redis(&cluster.url())
        .start();
    let b = TestServer::builder("legacy").redis(&cluster.url()).start();
    // Channels whose keys hash to different slots (so to different masters).
    let names: Vec<String> = (0..6).map(|i| format!("c{i}:room")).collect();
    a.channel("c*");
    wait_channel(&b, "c*");
    let mut subs_b: Vec<Ws> = Vec::new();
    for n in &names {
        let mut s = b.client("s");
        eventually("subscribe on node B", Duration::from_secs(5), || {
            s.send(json!({"type": "subscribe", "channel": n}));
            s.recv()["type"] == "subscribed"
        });
        subs_b.push(s);
    }
    let mut pa = a.client("pa");
    let mut pb = b.client("pb");
    for k in 0..10u64 {
        for n in &names {
            let p = if k % 2 == 0 { &mut pa } else { &mut pb };
            assert_eq!(p.publish(n, "e", json!({"k": k}))["offset"], k + 1);
        }
    }
    for s in &mut subs_b {
        expect_offsets(s, 10);
    }
    let (_, ha) = a.http("GET", "/api/realtime/messages?channelName=c3:room", None);
    let (_, hb) = b.http("GET", "/api/realtime/messages?channelName=c3:room", None);
    assert_eq!(ha.as_array().unwrap().len(), 10);
    assert_eq!(ha, hb);
    let (_, stats) = b.http("GET", "/api/realtime/messages/stats", None);
    assert_eq!(stats["totalMessages"], 60);
    a.shutdown();
    b.shutdown();
}

#[test]
fn killed_node_does_not_stop_the_others() {
    let redis = RedisServer::start();
    let url = redis.url();
    let mut child =
        common::process::BrokerProcess::start(&["--engine", "redis", "--redis-url", &url]);
    let killed = child.addr;
    let b = TestServer::builder("io_uring").redis(&redis.url()).start();
    let (s, _) = http(
        killed,
        "POST",
        "/api/realtime/channels",
        Some(ADMIN_KEY),
        Some(json!({"pattern": "k:*"})),
    );
    assert_eq!(s, 201);
    wait_channel(&b, "k:*");
    let mut on_a = Ws::connect(killed);
    on_a.auth(&token("a", "authenticated"));
    on_a.subscribe("k:1");
    let mut on_b = b.client("b");
    eventually("subscribe on B", Duration::from_secs(3), || {
        on_b.send(json!({"type": "subscribe", "channel": "k:1"}));
        on_b.recv()["type"] == "subscribed"
    });
    let mut pub_a = Ws::connect(killed);
    pub_a.auth(&token("pa", "authenticated"));
    pub_a.publish("k:1", "from-a", json!({}));
    assert_eq!(on_a.expect("message")["event"], "from-a");
    assert_eq!(on_b.expect("message")["event"], "from-a");

    child.kill(); // SIGKILL: no graceful close
    let mut p = b.client("p");
    p.publish("k:1", "after-kill", json!({}));
    let m = on_b.expect("message");
    assert_eq!(m["event"], "after-kill");
    assert_eq!(m["offset"], 2);
    let (_, h) = b.http("GET", "/api/realtime/messages?channelName=k:1", None);
    assert_eq!(
        h.as_array().unwrap().len(),
        2,
        "the killed node's message is in history"
    );
    b.shutdown();
}

#[test]
fn redis_history_is_trimmed_by_age() {
    let redis = RedisServer::start();
    let a = TestServer::builder("io_uring")
        .redis(&redis.url())
        .with(|f| f.history.max_age = "1s".into())
        .start();
    a.channel("old:*");
    let mut s = a.client("s");
    s.subscribe("old:1");
    let mut p = a.client("p");
    for _ in 0..3 {
        p.publish("old:1", "old", json!({}));
        s.expect("message");
    }
    eventually("audience counts written", Duration::from_secs(3), || {
        hash_fields(&redis, "rc:{old:1}:aud") == [1, 2, 3]
    });
    std::thread::sleep(Duration::from_millis(1100)); // let those three age past max_age
    p.publish("old:1", "new", json!({}));
    eventually(
        "old messages trimmed from both indexes",
        Duration::from_secs(3),
        || {
            let (_, by_channel) = a.http("GET", "/api/realtime/messages?channelName=old:1", None);
            let (_, all) = a.http("GET", "/api/realtime/messages", None);
            let events = |v: &serde_json::Value| -> Vec<String> {
                v.as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m["eventName"].as_str().unwrap().to_string())
                    .collect()
            };
            events(&by_channel) == ["new"] && events(&all) == ["new"]
        },
    );
    s.expect("message");
    eventually(
        "the trimmed messages' audience counts go with them",
        Duration::from_secs(3),
        || hash_fields(&redis, "rc:{old:1}:aud") == [4],
    );
    a.shutdown();
}

#[test]
fn counts_of_messages_trimmed_by_count_go_with_them() {
    // wsAudienceCount and whDeliveredCount live in per-channel hashes beside the stream; a
    // message trimmed from the stream must take its counts along, or the hashes grow forever.
    let redis = RedisServer::start();
    let sink = common::receiver::Receiver::start(vec![], common::receiver::Reply::Status(200));
    let node = TestServer::builder("io_uring")
        .redis(&redis.url())
        .with(|f| {
            f.history.max_messages_per_channel = 5;
            allow_bursts(f);
        })
        .start();
    let (st, v) = node.http(
        "POST",
        "/api/realtime/channels",
        Some(json!({"pattern": "kept:*", "webhookUrls": [sink.url("/h")]})),
    );
    assert_eq!(st, 201, "{v}");
    let mut s = node.client("s");
    s.subscribe("kept:1");
    let mut p = node.client("p");
    // One at a time (each batch trims one message), then a burst (batches trim many).
    for i in 0..20 {
        p.publish("kept:1", "e", json!({"i": i}));
        s.expect("message");
    }
    for i in 0..300 {
        p.send(json!({"type": "publish", "channel": "kept:1", "event": "e", "payload": {"i": i}}));
    }
    for _ in 0..300 {
        p.expect("published");
        s.expect("message");
    }
    sink.wait_for(320, Duration::from_secs(20));
    eventually(
        "the kept messages have their counts",
        Duration::from_secs(5),
        || {
            let (_, h) = node.http("GET", "/api/realtime/messages?channelName=kept:1", None);
            let h = h.as_array().unwrap().clone();
            h.len() == 5
                && h.iter()
                    .all(|m| m["wsAudienceCount"] == 1 && m["whDeliveredCount"] == 1)
        },
    );
    // Counts that arrived after their message was trimmed were refused, the rest deleted.
    for hash in ["rc:{kept:1}:aud", "rc:{kept:1}:whd"] {
        assert_eq!(
            hash_fields(&redis, hash),
            [316, 317, 318, 319, 320],
            "{hash}"
        );
    }
    node.shutdown();
}

#[test]
fn audience_counts_redis_refuses_are_counted_and_lose_no_message() {
    let redis = RedisServer::start();
    let node = TestServer::builder("io_uring").redis(&redis.url()).start();
    node.channel("w:*");
    // A key of the wrong type: every audience write of this channel fails (WRONGTYPE).
    assert!(
        redis
            .command(&["SET", "rc:{w:1}:aud", "x"])
            .starts_with("+OK")
    );
    let mut s = node.client("s");
    s.subscribe("w:1");
    let mut p = node.client("p");
    for i in 0..3 {
        p.publish("w:1", "e", json!({"i": i}));
        assert_eq!(s.expect("message")["payload"]["i"], i);
    }
    eventually("refused writes counted", Duration::from_secs(3), || {
        node.metric("ringcast_audience_writes_dropped_total") == 3
    });
    // Writes work again once the key is fixed.
    redis.command(&["DEL", "rc:{w:1}:aud"]);
    p.publish("w:1", "e", json!({"i": 3}));
    s.expect("message");
    eventually("the next count is written", Duration::from_secs(3), || {
        let (_, h) = node.http("GET", "/api/realtime/messages?channelName=w:1", None);
        h[0]["wsAudienceCount"] == 1 && h[0]["offset"] == 4
    });
    assert_eq!(node.metric("ringcast_audience_writes_dropped_total"), 3);
    node.shutdown();
}

#[test]
fn a_burst_of_publishes_is_batched_and_keeps_its_order() {
    let redis = RedisServer::start();
    let node = TestServer::builder("io_uring")
        .redis(&redis.url())
        .with(|f| {
            allow_bursts(f);
            f.history.max_messages_per_channel = 250;
        })
        .start();
    node.channel("burst:*");
    let mut sub = node.client("s");
    sub.subscribe("burst:1");
    let mut p = node.client("p");
    let before = redis.command(&["INFO", "commandstats"]);
    // 300 publishes written back to back, none waiting for its ack.
    for i in 0..300 {
        p.send(
            json!({"type": "publish", "channel": "burst:1", "event": "b",
            "payload": {"i": i}, "ref": i}),
        );
    }
    for i in 0..300u64 {
        let ack = p.expect("published");
        assert_eq!(ack["ref"], i, "acks in publish order");
        assert_eq!(ack["offset"], i + 1, "offsets in publish order");
    }
    for i in 0..300u64 {
        let m = sub.expect("message");
        assert_eq!(
            (m["offset"].as_u64(), m["payload"]["i"].as_u64()),
            (Some(i + 1), Some(i))
        );
    }
    let (_, h) = node.http(
        "GET",
        "/api/realtime/messages?channelName=burst:1&limit=1000",
        None,
    );
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 250, "exact per-channel retention across batches");
    assert_eq!(h[0]["offset"], 300);
    assert_eq!(h[249]["offset"], 51);
    // Batched: far fewer script calls than publishes (one publish script and one index
    // script per batch; unbatched this would be at least 600).
    // (The publish script goes as EVAL, the index script as EVALSHA.)
    let calls = |s: &str| -> u64 {
        ["cmdstat_eval:calls=", "cmdstat_evalsha:calls="]
            .iter()
            .filter_map(|k| {
                s.lines()
                    .find_map(|l| l.strip_prefix(k))
                    .and_then(|r| r.split(',').next())
                    .and_then(|n| n.parse::<u64>().ok())
            })
            .sum()
    };
    let after = redis.command(&["INFO", "commandstats"]);
    let used = calls(&after) - calls(&before);
    assert!(used < 400, "{used} script calls for 300 publishes");
    // A batch is one stream entry: fewer entries than the 250 messages kept.
    let entries = int_reply(&redis.command(&["XLEN", "rc:{burst:1}:log"]));
    assert!(entries < 200, "{entries} stream entries for 250 messages");
    node.shutdown();
}

#[test]
fn a_foreign_payload_on_a_live_channel_is_dropped_and_loses_nothing() {
    // Something else (or a node of another ringcast version) publishes on a channel's sharded
    // pub/sub channel: the nodes must neither deliver it nor let its offset hide real messages.
    let redis = RedisServer::start();
    let (a, b) = two_nodes("io_uring", &redis);
    a.channel("feed:*");
    wait_channel(&b, "feed:*");
    let mut sub = b.client("s");
    sub.subscribe("feed:1");
    let mut publ = a.client("p");
    assert_eq!(publ.publish("feed:1", "e", json!({"k": 1}))["offset"], 1);
    assert_eq!(sub.expect("message")["offset"], 1);
    for junk in [
        r#"{"type":"message","channel":"feed:1","event":"x","payload":{},"offset":99}"#,
        "2 999:truncated",
        "not a batch",
    ] {
        redis.command(&["SPUBLISH", "rc:{feed:1}:live", junk]);
    }
    sub.expect_silence(Duration::from_millis(300));
    for k in 2..=3 {
        assert_eq!(publ.publish("feed:1", "e", json!({"k": k}))["offset"], k);
        let m = sub.expect("message");
        assert_eq!(
            m["offset"], k,
            "the junk's offset 99 must not hide offset {k}"
        );
        assert_eq!(m["payload"]["k"], k);
    }
    sub.expect_silence(Duration::from_millis(300));
    a.shutdown();
    b.shutdown();
}

#[test]
fn a_node_that_falls_behind_resyncs_from_redis() {
    // Node B buffers one pub/sub message: a burst makes its reader drop some. What it dropped
    // may include a registry announcement, so it must reload the registry (and read its
    // channels' streams) instead of waiting for the next message on each channel.
    let redis = RedisServer::start();
    let a = TestServer::builder("io_uring").redis(&redis.url()).start();
    let b = TestServer::builder("io_uring")
        .redis(&redis.url())
        .with(|f| f.redis.pubsub_buffer = 1)
        .start();
    let rec = a.channel("feed:*");
    wait_channel(&b, "feed:*");
    let mut sub = b.client("s");
    sub.subscribe("feed:1");
    assert_eq!(b.metric("ringcast_backplane_resyncs_total"), 0);

    // Disable the channel behind the nodes' backs: stored, never announced.
    let id = rec["id"].as_str().unwrap();
    let stored = redis.command(&["HGET", "rc:{reg}:channels", id]);
    let json = stored.lines().nth(1).expect("the channel record");
    assert!(json.contains("\"enabled\":true"), "{json}");
    let disabled = json.replace("\"enabled\":true", "\"enabled\":false");
    redis.command(&["HSET", "rc:{reg}:channels", id, &disabled]);
    sub.expect_silence(Duration::from_millis(300));

    // A burst of 5,000 pub/sub messages at once: B's reader falls behind and drops some.
    redis.command(&[
        "EVAL",
        "for i = 1, 5000 do redis.call('SPUBLISH', KEYS[1], 'x') end return 1",
        "1",
        "rc:{feed:1}:live",
    ]);
    let u = sub.expect("unsubscribed");
    assert_eq!(
        u["channel"], "feed:1",
        "the resync reloaded the registry: {u}"
    );
    eventually("resync counted", Duration::from_secs(3), || {
        b.metric("ringcast_backplane_resyncs_total") >= 1
            && b.metric("ringcast_backplane_dropped_total") >= 1
    });
    a.shutdown();
    b.shutdown();
}

#[test]
fn publishes_waiting_for_redis_are_bounded_and_the_rest_refused_busy() {
    // While Redis holds every script, at most `server.engine_queue` publishes may wait for
    // it; the rest are refused at once (RATE_LIMITED "broker busy", no offset used), and
    // every publish that waited is acknowledged once Redis answers.
    let redis = RedisServer::start();
    let node = TestServer::builder("io_uring")
        .redis(&redis.url())
        .with(|f| f.server.engine_queue = 4)
        .start();
    node.channel("slow:*");
    let mut p = node.client("p");
    assert!(
        redis
            .command(&["CLIENT", "PAUSE", "1500", "WRITE"])
            .starts_with("+OK")
    );
    for i in 0..10 {
        p.send(json!({"type": "publish", "channel": "slow:1", "event": "e",
            "payload": {"i": i}, "ref": i}));
        std::thread::sleep(Duration::from_millis(20));
    }
    let (mut acked, mut busy) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let v = p.recv();
        match v["type"].as_str() {
            Some("published") => acked.push((v["ref"].as_u64().unwrap(), v["offset"].clone())),
            Some("error") => {
                assert_eq!(v["code"], "RATE_LIMITED", "{v}");
                assert!(v["message"].as_str().unwrap().contains("busy"), "{v}");
                busy.push(v["ref"].as_u64().unwrap());
            }
            _ => panic!("unexpected {v}"),
        }
    }
    // (4 exactly unless a core's own queue to the control thread, also 4, refused first.)
    assert!(
        (1..=4).contains(&acked.len()),
        "acked {acked:?}, refused {busy:?}"
    );
    assert_eq!(acked.len() + busy.len(), 10);
    for (k, (_, off)) in acked.iter().enumerate() {
        assert_eq!(off, &json!(k + 1), "offsets without gaps: {acked:?}");
    }
    assert!(node.metric("ringcast_publishes_refused_backlog_total") >= 1);
    // Redis answers again: publishing goes on from the next offset.
    assert_eq!(
        p.publish("slow:1", "e", json!({}))["offset"],
        json!(acked.len() + 1)
    );
    node.shutdown();
}

#[test]
fn a_burst_with_many_webhook_deliveries_is_acked_in_order() {
    // With webhooks, a batch stores its deliveries in several sequential writes, so a batch
    // can finish after the channel's next one (two are at Redis at once): acks must still
    // come in publish order, with consecutive offsets.
    let redis = RedisServer::start();
    let sink = common::receiver::Receiver::start(vec![], common::receiver::Reply::Status(200));
    let node = TestServer::builder("io_uring")
        .redis(&redis.url())
        .with(allow_bursts)
        .start();
    let urls: Vec<String> = (0..8).map(|i| sink.url(&format!("/h{i}"))).collect();
    let (st, v) = node.http(
        "POST",
        "/api/realtime/channels",
        Some(json!({"pattern": "hooked:*", "webhookUrls": urls})),
    );
    assert_eq!(st, 201, "{v}");
    let mut p = node.client("p");
    const N: u64 = 2000;
    for i in 0..N {
        p.send(
            json!({"type": "publish", "channel": "hooked:1", "event": "b",
            "payload": {"i": i}, "ref": i}),
        );
    }
    for i in 0..N {
        let ack = p.expect("published");
        assert_eq!(ack["ref"], i, "acks in publish order");
        assert_eq!(ack["offset"], i + 1, "offsets in publish order");
    }
    node.shutdown();
}

/// Puts `n` old messages into the all-channels index, straight into Redis (quick to write,
/// slow to scan).
fn fill_index(redis: &RedisServer, n: usize) {
    let record = r#"{"id":"0190a000-0000-7000-8000-000000000000","eventName":"old","channelId":"0190a000-0000-7000-8000-000000000001","channelName":"filler:1","payload":{"x":"yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy"},"senderType":"user","senderId":null,"wsAudienceCount":0,"whAudienceCount":0,"whDeliveredCount":0,"createdAt":"2026-01-01T00:00:00.000Z","offset":1}"#;
    let script = "for i = 1, tonumber(ARGV[1]) do redis.call('XADD', KEYS[1], '*', 'r', ARGV[2]) end return 1";
    let r = redis.command(&["EVAL", script, "1", "rc:messages", &n.to_string(), record]);
    assert!(r.starts_with(":1"), "{r}");
}

#[test]
fn a_long_stats_scan_does_not_hold_up_delivery() {
    // Stats read the whole all-channels index from Redis, page by page. The node answers such
    // a read from a task of its own: messages keep flowing while it runs.
    let redis = RedisServer::start();
    let node = TestServer::builder("io_uring").redis(&redis.url()).start();
    const FILLER: usize = 300_000;
    fill_index(&redis, FILLER);
    node.channel("busy:*");
    let mut s = node.client("s");
    s.subscribe("busy:1");
    let mut p = node.client("p");
    let addr = node.addr;
    let started = std::time::Instant::now();
    let stats = std::thread::spawn(move || {
        let (st, v) = common::http(
            addr,
            "GET",
            "/api/realtime/messages/stats",
            Some(ADMIN_KEY),
            None,
        );
        (st, v, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200)); // the scan is under way
    p.publish("busy:1", "live", json!({}));
    s.expect("message");
    let delivered = started.elapsed();
    let (st, v, answered) = stats.join().unwrap();
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["totalMessages"], FILLER, "{v}"); // the scan began before the publish
    assert!(
        delivered < answered,
        "the message waited for the scan: delivered after {delivered:?}, stats answered after {answered:?}"
    );
    node.shutdown();
}

#[test]
fn history_and_stats_reads_at_once_are_bounded() {
    // Each read is a task of its own; at most 64 run at once, the rest are refused (503)
    // rather than queued without bound.
    let redis = RedisServer::start();
    let node = TestServer::builder("io_uring").redis(&redis.url()).start();
    fill_index(&redis, 2_000);
    let addr = node.addr;
    // Redis holds every command for 2 s: the reads that got a slot wait in Redis (not on the
    // node's CPU, which a busy test machine may not give), so all 100 are in progress at once.
    let r = redis.command(&["CLIENT", "PAUSE", "2000", "ALL"]);
    assert!(r.starts_with("+OK"), "{r}");
    let readers: Vec<_> = (0..100)
        .map(|_| {
            std::thread::spawn(move || {
                common::http(
                    addr,
                    "GET",
                    "/api/realtime/messages/stats",
                    Some(ADMIN_KEY),
                    None,
                )
            })
        })
        .collect();
    let answers: Vec<(u16, serde_json::Value)> =
        readers.into_iter().map(|t| t.join().unwrap()).collect();
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let busy: Vec<_> = answers.iter().filter(|(s, _)| *s == 503).collect();
    assert_eq!(ok + busy.len(), 100, "{answers:?}");
    assert!(
        (1..=64).contains(&ok),
        "{ok} answered: {:?}",
        answers.first()
    );
    assert!(!busy.is_empty(), "100 reads at once, none refused");
    assert!(
        busy[0]
            .1
            .to_string()
            .contains("too many history or stats reads"),
        "{:?}",
        busy[0]
    );
    for (_, v) in answers.iter().filter(|(s, _)| *s == 200) {
        assert_eq!(v["totalMessages"], 2_000);
    }
    // Slots come back: a read afterwards is answered.
    let (s, v) = node.http("GET", "/api/realtime/messages/stats", None);
    assert_eq!((s, &v["totalMessages"]), (200, &json!(2_000)));
    node.shutdown();
}

#[test]
fn subscribing_and_leaving_while_messages_flow_skips_and_repeats_nothing() {
    // A node sets up its Redis subscription to a channel on a task of its own; messages that
    // arrive meanwhile are held until it knows where it joined. Subscribers come and go on
    // two cores while another node publishes: after each `subscribed` a subscriber sees
    // consecutive offsets, and after `unsubscribed` nothing.
    let redis = RedisServer::start();
    let a = TestServer::builder("io_uring")
        .redis(&redis.url())
        .workers(2)
        .start();
    let b = TestServer::builder("io_uring")
        .redis(&redis.url())
        .with(allow_bursts)
        .start();
    a.channel("churn:*");
    wait_channel(&b, "churn:*");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let publisher = {
        let (stop, mut p) = (stop.clone(), b.client("p"));
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 20_000 {
                p.publish("churn:1", "e", json!({"n": n}));
                n += 1;
            }
            n
        })
    };
    let subscribers: Vec<_> = (0..3)
        .map(|i| {
            let mut s = a.client(&format!("s{i}"));
            std::thread::spawn(move || {
                for _ in 0..25 {
                    s.subscribe("churn:1");
                    let mut prev: Option<u64> = None;
                    for _ in 0..8 {
                        let m = s.expect("message");
                        let off = m["offset"].as_u64().unwrap();
                        if let Some(p) = prev {
                            assert_eq!(off, p + 1, "consecutive offsets after subscribing");
                        }
                        prev = Some(off);
                    }
                    s.send(json!({"type": "unsubscribe", "channel": "churn:1"}));
                    loop {
                        let m = s.recv();
                        if m["type"] == "unsubscribed" {
                            break;
                        }
                        assert_eq!(m["type"], "message", "{m}");
                        let off = m["offset"].as_u64().unwrap();
                        assert_eq!(Some(off), prev.map(|p| p + 1), "consecutive offsets");
                        prev = Some(off);
                    }
                }
            })
        })
        .collect();
    for s in subscribers {
        s.join().unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let published = publisher.join().unwrap();
    assert!(published > 0);
    a.shutdown();
    b.shutdown();
}

#[test]
fn a_subscription_redis_cannot_take_gets_an_error_then_works_after() {
    // A node's first subscriber of a channel makes it subscribe in Redis. If Redis is away, the
    // client gets an error frame, not a `subscribed` that would never receive anything.
    let mut redis = RedisServer::start_persistent();
    let a = TestServer::builder("io_uring").redis(&redis.url()).start();
    a.channel("late:*");
    let mut s = a.client("s");
    redis.stop();
    s.set_timeout(Duration::from_secs(15));
    s.send(json!({"type": "subscribe", "channel": "late:1"}));
    let e = s.expect("error");
    assert_eq!(e["code"], "INTERNAL", "{e}");
    assert!(e["message"].as_str().unwrap().contains("retry"), "{e}");
    redis.restart();
    let mut p = a.client("p");
    eventually("subscribe works again", Duration::from_secs(20), || {
        s.send(json!({"type": "subscribe", "channel": "late:1"}));
        s.recv()["type"] == "subscribed"
    });
    p.set_timeout(Duration::from_secs(10));
    p.publish("late:1", "after", json!({}));
    assert_eq!(s.expect("message")["event"], "after");
    a.shutdown();
}

#[test]
fn the_all_channels_index_is_capped_by_messages_not_entries() {
    // `history.max_total_messages` bounds the all-channels index in messages, though each
    // index entry holds a whole publish batch (1 to 256 messages).
    let redis = RedisServer::start();
    let node = index_capped_node(&redis, 100);
    node.channel("cap:*");
    let mut p = node.client("p");
    for round in 0..3 {
        for i in 0..150 {
            let ch = if i % 2 == 0 { "cap:a" } else { "cap:b" };
            p.send(json!({"type": "publish", "channel": ch, "event": "e",
                "payload": {"round": round, "i": i}}));
        }
        for _ in 0..150 {
            p.expect("published");
        }
    }
    let (_, all) = node.http("GET", "/api/realtime/messages?limit=1000", None);
    let all = all.as_array().unwrap();
    // Whole entries go: between 100 - 75 (the most one entry of this run can hold) and 100.
    assert!(
        (25..=100).contains(&all.len()),
        "{} messages in the index",
        all.len()
    );
    // (Batches of different channels reach the index in either order.)
    assert_eq!(all[0]["payload"]["round"], 2, "the newest stay: {}", all[0]);
    let (_, st) = node.http("GET", "/api/realtime/messages/stats", None);
    assert_eq!(st["totalMessages"], all.len());
    // The bookkeeping matches the stream.
    assert_eq!(
        int_reply(&redis.command(&["GET", "{rc:messages}:total"])),
        all.len() as i64
    );
    assert_eq!(
        int_reply(&redis.command(&["XLEN", "rc:messages"])),
        int_reply(&redis.command(&["LLEN", "{rc:messages}:sizes"]))
    );
    // Each channel keeps its own history (10,000 by default): none of it went.
    let (_, a) = node.http(
        "GET",
        "/api/realtime/messages?channelName=cap:a&limit=1000",
        None,
    );
    assert_eq!(a.as_array().unwrap().len(), 225);
    node.shutdown();
}

#[test]
fn history_written_before_batching_is_read_and_continued() {
    // Before publish batches were stored as one entry, a channel stream held one record per
    // entry (id `{offset}-1`). Such data stays readable, and publishing continues after it.
    let redis = RedisServer::start();
    let node = TestServer::builder("io_uring")
        .redis(&redis.url())
        .with(|f| f.history.max_messages_per_channel = 4)
        .start();
    let id = node.channel("old:*")["id"].as_str().unwrap().to_string();
    for off in 1..=3 {
        let rec = format!(
            r#"{{"id":"0190a000-0000-7000-8000-00000000000{off}","eventName":"old","channelId":"{id}","channelName":"old:1","payload":{{"n":{off}}},"senderType":"user","senderId":null,"wsAudienceCount":0,"whAudienceCount":0,"whDeliveredCount":0,"createdAt":"2026-01-01T00:00:0{off}.000Z","offset":0}}"#
        );
        let r = redis.command(&["XADD", "rc:{old:1}:log", &format!("{off}-1"), "r", &rec]);
        assert!(r.contains(&format!("{off}-1")), "{r}");
        redis.command(&["HSET", "rc:{old:1}:aud", &off.to_string(), "1"]);
    }
    redis.command(&["SET", "rc:{old:1}:seq", "3"]);
    let mut p = node.client("p");
    for n in 4..=6 {
        let ack = p.publish("old:1", "new", json!({"n": n}));
        assert_eq!(ack["offset"], n);
    }
    let (_, h) = node.http("GET", "/api/realtime/messages?channelName=old:1", None);
    let got: Vec<(u64, u64)> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["offset"].as_u64().unwrap(),
                m["payload"]["n"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [(6, 6), (5, 5), (4, 4), (3, 3)],
        "the newest 4, old and new"
    );
    assert_eq!(h[3]["eventName"], "old");
    // The counts of the trimmed old messages went with them.
    assert_eq!(hash_fields(&redis, "rc:{old:1}:aud"), [3]);
    node.shutdown();
}

#[test]
fn a_batch_larger_than_the_index_cap_keeps_the_newest_batch() {
    // `history.max_total_messages` below a batch's size: the index keeps its newest entry
    // rather than trimming itself empty.
    let redis = RedisServer::start();
    let node = index_capped_node(&redis, 3);
    node.channel("tiny:*");
    let mut p = node.client("p");
    for i in 0..100 {
        p.send(json!({"type": "publish", "channel": "tiny:1", "event": "e", "payload": {"i": i}}));
    }
    for _ in 0..100 {
        p.expect("published");
    }
    let (_, all) = node.http("GET", "/api/realtime/messages?limit=1000", None);
    let all = all.as_array().unwrap();
    assert!(!all.is_empty(), "the index trimmed itself empty");
    assert_eq!(
        all[0]["offset"], 100,
        "the newest message stays: {}",
        all[0]
    );
    assert_eq!(
        int_reply(&redis.command(&["GET", "{rc:messages}:total"])),
        all.len() as i64
    );
    node.shutdown();
}

#[test]
fn lowering_the_per_channel_limit_drops_the_counts_of_everything_trimmed() {
    // A channel that never reached its limit has no head yet; when a lower limit trims it for
    // the first time, the counts of every trimmed message go, not just the last batch's.
    let redis = RedisServer::start();
    let node = TestServer::builder("io_uring").redis(&redis.url()).start();
    node.channel("low:*");
    let mut s = node.client("s");
    s.subscribe("low:1");
    let mut p = node.client("p");
    for i in 0..50 {
        p.publish("low:1", "e", json!({"i": i}));
        s.expect("message");
    }
    eventually(
        "every message has its audience count",
        Duration::from_secs(5),
        || hash_fields(&redis, "rc:{low:1}:aud").len() == 50,
    );
    node.shutdown();
    let node = TestServer::builder("io_uring")
        .redis(&redis.url())
        .with(|f| f.history.max_messages_per_channel = 10)
        .start();
    let mut p = node.client("p");
    let ack = p.publish("low:1", "e", json!({"i": 50}));
    assert_eq!(ack["offset"], 51);
    let (_, h) = node.http("GET", "/api/realtime/messages?channelName=low:1", None);
    let h = h.as_array().unwrap();
    assert_eq!(h.len(), 10);
    assert_eq!(h[9]["offset"], 42);
    assert_eq!(
        hash_fields(&redis, "rc:{low:1}:aud"),
        (42..=50).collect::<Vec<u64>>(),
        "counts of trimmed messages left behind"
    );
    node.shutdown();
}
