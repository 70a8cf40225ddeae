//! Continuity across nodes (redis engine, real redis-server processes): recovery with the
//! publisher and the recovering subscriber on different nodes, on a 3-master cluster, across
//! a node restart and across lost Redis data; idempotent publishes decided in Redis for every
//! node; and a rolling restart's `reconnect` frame followed by recovery on another node.

mod common;

use std::{
    thread,
    time::{Duration, Instant},
};

use common::{
    redis::{RedisCluster, RedisServer},
    *,
};
use serde_json::{Value, json};

fn wait_channel(node: &TestServer, pattern: &str) {
    eventually("channel propagated", Duration::from_secs(5), || {
        let (_, list) = node.http("GET", "/api/realtime/channels", None);
        list.as_array()
            .is_some_and(|l| l.iter().any(|c| c["pattern"] == pattern))
    });
}

fn node(driver: &str, url: &str) -> TestServer {
    TestServer::builder(driver)
        .redis(url)
        .with(|f| {
            f.websocket.publish_rate = 10_000;
            f.websocket.publish_burst = 10_000;
        })
        .start()
}

/// Subscribes on one node, drops away mid-stream, recovers on the other while `publish_on`
/// keeps publishing: every offset exactly once, in order.
fn recover_across_nodes(a: &TestServer, b: &TestServer, ch: &str) {
    let total = 1500;
    let mut s = a.client("s");
    let first = s.subscribe(ch);
    let epoch = first["epoch"].as_str().unwrap().to_string();
    assert_eq!(epoch.len(), 8, "{first}");
    let publisher = steady_publisher(a.addr, ch, 1, total, Duration::ZERO);
    let got = read_until(&mut s, 30);
    let last = *got.last().unwrap();
    drop(s);
    thread::sleep(Duration::from_millis(50));
    let mut back = b.client("s");
    let r = subscribe_since(&mut back, ch, last, &epoch);
    assert_eq!(r["recovered"], true, "{r}");
    assert_eq!(r["epoch"], epoch.as_str());
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

both_drivers!(recovery_on_another_node_under_a_steady_rate, |driver| {
    let redis = RedisServer::start();
    let a = node(driver, &redis.url());
    let b = node(driver, &redis.url());
    a.channel("seam:*");
    wait_channel(&b, "seam:*");
    recover_across_nodes(&a, &b, "seam:1");
    // The channel is already served on node B now: the next recovery is from its position.
    recover_across_nodes(&a, &b, "seam:2");
});

#[test]
fn recovery_on_a_three_master_cluster() {
    let cluster = RedisCluster::start();
    let a = node("io_uring", &cluster.url());
    let b = node("legacy", &cluster.url());
    a.channel("c*");
    wait_channel(&b, "c*");
    // Names that hash to different slots, so to different masters.
    for n in ["c0:room", "c1:room", "c4:room"] {
        recover_across_nodes(&a, &b, n);
    }
}

#[test]
fn a_restarted_node_keeps_the_epoch_and_lost_redis_data_changes_it() {
    let redis = RedisServer::start();
    let a = node("io_uring", &redis.url());
    a.channel("r:*");
    let mut s = a.client("s");
    let epoch = s.subscribe("r:1")["epoch"].as_str().unwrap().to_string();
    let mut p = a.client("p");
    for k in 1..=5 {
        p.publish("r:1", "e", json!(k));
    }
    assert_eq!(read_until(&mut s, 5), vec![1, 2, 3, 4, 5]);
    drop((s, p));
    a.shutdown();
    // A ringcast node restart: history and epoch live in Redis.
    let a = node("io_uring", &redis.url());
    let mut p = a.client("p");
    for k in 6..=8 {
        p.publish("r:1", "e", json!(k));
    }
    let mut s = a.client("s");
    let r = subscribe_since(&mut s, "r:1", 5, &epoch);
    assert_eq!(
        (r["recovered"].clone(), r["epoch"].clone()),
        (json!(true), json!(epoch))
    );
    assert_eq!(read_until(&mut s, 8), vec![6, 7, 8]);
    drop((s, p));
    a.shutdown();
    // Redis loses everything: a new epoch, so the old position does not apply.
    redis.command(&["FLUSHALL"]);
    let a = node("io_uring", &redis.url());
    a.channel("r:*");
    a.client("p").publish("r:1", "e", json!(1));
    let mut s = a.client("s");
    let r = subscribe_since(&mut s, "r:1", 8, &epoch);
    assert_ne!(r["epoch"], epoch.as_str());
    assert_eq!(r["recovered"], false, "{r}");
    assert_eq!(r["firstOffset"], 1, "{r}");
}

#[test]
fn redis_recovery_refuses_past_retention() {
    let redis = RedisServer::start();
    let a = TestServer::builder("legacy")
        .redis(&redis.url())
        .with(|f| f.history.max_messages_per_channel = 10)
        .start();
    a.channel("t:*");
    let mut s = a.client("s");
    let epoch = s.subscribe("t:2")["epoch"].as_str().unwrap().to_string();
    let mut p = a.client("p");
    for k in 1..=25 {
        p.publish("t:1", "e", json!(k));
    }
    let mut s = a.client("s");
    // t:1's epoch: made when first asked for (this subscribe).
    let e1 = s.subscribe("t:1")["epoch"].as_str().unwrap().to_string();
    assert_ne!(e1, epoch, "epochs are per channel with redis");
    let mut s2 = a.client("s2");
    let r = subscribe_since(&mut s2, "t:1", 3, &e1);
    assert_eq!(
        (r["recovered"].clone(), r["firstOffset"].clone()),
        (json!(false), json!(16))
    );
    let mut s3 = a.client("s3");
    let r = subscribe_since(&mut s3, "t:1", 20, &e1);
    assert_eq!(r["recovered"], true);
    assert_eq!(read_until(&mut s3, 25), vec![21, 22, 23, 24, 25]);
}

#[test]
fn idempotent_repeats_publish_once_across_nodes() {
    let redis = RedisServer::start();
    let a = node("io_uring", &redis.url());
    let b = node("legacy", &redis.url());
    a.channel("i:*");
    wait_channel(&b, "i:*");
    let mut sub = b.client("s");
    sub.subscribe("i:1");
    // Four publishers on two nodes send the same 100 keys at once.
    let acks: Vec<Vec<Value>> = (0..4)
        .map(|i| {
            let addr = if i % 2 == 0 { a.addr } else { b.addr };
            thread::spawn(move || {
                let mut p = Ws::connect(addr);
                p.auth(&token(&format!("p{i}"), "authenticated"));
                for k in 0..100 {
                    p.send(json!({"type": "publish", "channel": "i:1", "event": "e", "payload": k, "idempotencyKey": format!("key-{k}")}));
                }
                (0..100).map(|_| p.expect("published")).collect::<Vec<_>>()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    for k in 0..100 {
        let acks_k: Vec<(&Value, &Value)> = acks
            .iter()
            .map(|a| (&a[k]["messageId"], &a[k]["offset"]))
            .collect();
        assert!(
            acks_k.windows(2).all(|w| w[0] == w[1]),
            "key-{k}: {acks_k:?}"
        );
    }
    assert_eq!(read_until(&mut sub, 100), (1..=100).collect::<Vec<_>>());
    sub.expect_silence(Duration::from_millis(200));
    // Over HTTP on the other node: the first ack again.
    let (st, h) = a.http(
        "POST",
        "/api/realtime/messages",
        Some(json!({"channel": "i:1", "event": "e", "payload": 5, "idempotencyKey": "key-5"})),
    );
    assert_eq!(st, 201);
    assert_eq!(h["messageId"], acks[1][5]["messageId"]);
    let (_, hist) = b.http(
        "GET",
        "/api/realtime/messages?channelName=i:1&limit=1000",
        None,
    );
    assert_eq!(hist.as_array().unwrap().len(), 100);
    let (_, stats) = a.http("GET", "/api/realtime/messages/stats", None);
    assert_eq!(stats["totalMessages"], 100, "the index holds no repeat");
}

#[test]
fn redis_idempotency_keys_expire_with_the_window() {
    let redis = RedisServer::start();
    let a = TestServer::builder("io_uring")
        .redis(&redis.url())
        .with(|f| f.publish.idempotency_window = "300ms".into())
        .start();
    a.channel("w:*");
    let mut p = a.client("p");
    let msg = json!({"type": "publish", "channel": "w:1", "event": "e", "idempotencyKey": "k"});
    p.send(msg.clone());
    assert_eq!(p.expect("published")["offset"], 1);
    p.send(msg.clone());
    assert_eq!(p.expect("published")["offset"], 1);
    thread::sleep(Duration::from_millis(450));
    p.send(msg);
    assert_eq!(p.expect("published")["offset"], 2);
}

#[test]
fn http_publish_on_the_redis_engine() {
    let redis = RedisServer::start();
    let a = node("io_uring", &redis.url());
    let b = node("legacy", &redis.url());
    a.channel("h:*");
    wait_channel(&b, "h:*");
    let mut sub = b.client("s");
    sub.subscribe("h:1");
    let items: Vec<Value> = (0..100)
        .map(|k| json!({"channel": "h:1", "event": "e", "payload": k}))
        .collect();
    let (st, v) = a.http(
        "POST",
        "/api/realtime/messages/batch",
        Some(json!({"messages": items})),
    );
    assert_eq!(st, 200, "{v}");
    let offsets: Vec<u64> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["offset"].as_u64().unwrap())
        .collect();
    assert_eq!(offsets, (1..=100).collect::<Vec<_>>());
    assert_eq!(read_until(&mut sub, 100), (1..=100).collect::<Vec<_>>());
}

#[test]
fn a_rolling_restart_loses_nothing() {
    let redis = RedisServer::start();
    let a = node("io_uring", &redis.url());
    let b = node("io_uring", &redis.url());
    a.channel("roll:*");
    wait_channel(&b, "roll:*");
    let mut s = a.client("s");
    s.subscribe("roll:1");
    let total = 300;
    let publisher = steady_publisher(b.addr, "roll:1", 1, total, Duration::from_micros(500));
    let got = read_until(&mut s, 20);
    // Node A is stopped (SIGTERM in production): the client is told where it stands.
    let stopper = thread::spawn(move || a.shutdown());
    let mut seen = got;
    let position = loop {
        let m = s.recv();
        match m["type"].as_str() {
            Some("message") => seen.push(m["offset"].as_u64().unwrap()),
            Some("reconnect") => break m["channels"]["roll:1"].clone(),
            _ => panic!("unexpected {m}"),
        }
    };
    assert_eq!(s.expect_close().0, 1001);
    stopper.join().unwrap();
    assert_eq!(position["offset"], *seen.last().unwrap(), "{position}");
    let t = Instant::now();
    let mut back = b.client("s");
    let r = subscribe_since(
        &mut back,
        "roll:1",
        position["offset"].as_u64().unwrap(),
        position["epoch"].as_str().unwrap(),
    );
    assert_eq!(r["recovered"], true, "{r}");
    seen.extend(read_until(&mut back, total));
    assert_eq!(seen, (1..=total).collect::<Vec<_>>());
    publisher.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(10));
}
