//! Webhooks against real HTTP(S) receivers on loopback: the envelope, headers and signature,
//! retries (503 then 200, 429 with Retry-After, timeouts) and permanent failures (404),
//! counts and stats, TLS trusted through config, refused private targets, the bounded
//! hand-off, the memory engine's flush at shutdown, and with Redis: deliveries that survive a
//! killed node (same node back) and that another node takes over.
//!
//! The pool does not touch monoio, so only the envelope test runs on both drivers.

mod common;

use std::time::{Duration, Instant};

use common::{
    process::BrokerProcess,
    receiver::{Receiver, Reply},
    redis::RedisServer,
    *,
};
use hmac::{Hmac, KeyInit, Mac};
use ringcast::config::FileConfig;
use serde_json::{Value, json};
use sha2::Sha256;

const WAIT: Duration = Duration::from_secs(10);

/// Fast retries for tests (production defaults are 1 s initial, 60 s cap, 5 min max age).
fn fast(f: &mut FileConfig) {
    f.webhooks.retry_initial = "100ms".into();
    f.webhooks.retry_max = "400ms".into();
    f.webhooks.timeout = "2s".into();
}

/// Publishes one message (event `e`) as a fresh client; returns its `messageId`.
fn publish_id(s: &TestServer, channel: &str, payload: Value) -> String {
    let ack = s.client("p").publish(channel, "e", payload);
    ack["messageId"].as_str().expect("published").to_string()
}

fn hooked_channel(s: &TestServer, pattern: &str, urls: &[String]) -> Value {
    let (st, v) = s.http(
        "POST",
        "/api/realtime/channels",
        Some(json!({"pattern": pattern, "webhookUrls": urls})),
    );
    assert_eq!(st, 201, "{v}");
    v
}

/// The history row of a message (by id), from any node.
fn row(s: &TestServer, channel: &str, id: &str) -> Value {
    let (st, h) = s.http(
        "GET",
        &format!("/api/realtime/messages?channelName={channel}"),
        None,
    );
    assert_eq!(st, 200, "{h}");
    h.as_array()
        .unwrap()
        .iter()
        .find(|m| m["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("message {id} not in history: {h}"))
}

fn wait_delivered(s: &TestServer, channel: &str, id: &str, n: u64) {
    eventually("whDeliveredCount", WAIT, || {
        row(s, channel, id)["whDeliveredCount"] == n
    });
}

fn outcome(s: &TestServer, o: &str) -> u64 {
    s.metric(&format!(
        "ringcast_webhook_deliveries_total{{outcome=\"{o}\"}}"
    ))
}

fn sign(secret: &str, ts: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

both_drivers!(envelope_headers_and_signature, |driver| {
    let hook = Receiver::start(vec![], Reply::Status(200));
    let s = TestServer::builder(driver)
        .with(|f| f.webhooks.secret = "whsec".into())
        .start();
    let ch = hooked_channel(&s, "order:*", &[hook.url("/hook")]);
    let mut sub = s.client("sub");
    sub.subscribe("order:1");
    let mut p = s.client("user-1");
    let ack = p.publish("order:1", "order.updated", json!({"orderId": "1"}));
    let id = ack["messageId"].as_str().unwrap().to_string();
    assert_eq!(sub.expect("message")["messageId"], id);

    let got = hook.wait_for(1, WAIT);
    let r = &got[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/hook");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-insforge-event"), Some("order.updated"));
    assert_eq!(r.header("x-insforge-channel"), Some("order:1"));
    assert_eq!(r.header("x-insforge-message-id"), Some(id.as_str()));
    let ts = r.header("x-insforge-timestamp").expect("timestamp header");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!((ts.parse::<i64>().unwrap() - now).abs() <= 5, "{ts}");
    assert_eq!(
        r.header("x-insforge-signature"),
        Some(sign("whsec", ts, &r.body).as_str()),
        "signature over \"{{timestamp}}.{{body}}\""
    );
    assert_ne!(
        r.header("x-insforge-signature"),
        Some(sign("other", ts, &r.body).as_str())
    );
    let env = r.json();
    assert_eq!(env["messageId"], id);
    assert_eq!(env["channelId"], ch["id"]);
    assert_eq!(env["channelName"], "order:1");
    assert_eq!(env["event"], "order.updated");
    assert_eq!(env["payload"], json!({"orderId": "1"}));
    assert_eq!(env["senderId"], "user-1");
    assert_eq!(env["senderType"], "user");
    assert!(env["timestamp"].as_str().unwrap().ends_with('Z'));

    wait_delivered(&s, "order:1", &id, 1);
    let m = row(&s, "order:1", &id);
    assert_eq!(m["whAudienceCount"], 1);
    let (_, stats) = s.http("GET", "/api/realtime/messages/stats", None);
    assert_eq!(stats["whDeliveryRate"], 1.0);
    assert_eq!(outcome(&s, "delivered"), 1);
    assert_eq!(hook.requests().len(), 1, "delivered once");
    s.shutdown();
});

#[test]
fn unsigned_without_a_secret() {
    let hook = Receiver::start(vec![], Reply::Status(204));
    let s = TestServer::start("auto");
    hooked_channel(&s, "u:*", &[hook.url("/")]);
    s.client("p").publish("u:1", "e", json!({}));
    let r = &hook.wait_for(1, WAIT)[0];
    assert!(r.header("x-insforge-signature").is_none());
    assert!(r.header("x-insforge-timestamp").is_some());
    s.shutdown();
}

#[test]
fn retried_after_503_twice_and_counted_once() {
    let hook = Receiver::start(
        vec![Reply::Status(503), Reply::Status(503)],
        Reply::Status(200),
    );
    let s = TestServer::builder("auto").with(fast).start();
    hooked_channel(&s, "r:*", &[hook.url("/h")]);
    let id = publish_id(&s, "r:1", json!({"n": 1}));
    let got = hook.wait_for(3, WAIT);
    assert!(
        got.iter()
            .all(|r| r.header("x-insforge-message-id") == Some(&id))
    );
    assert!(
        got.iter().all(|r| r.body == got[0].body),
        "same envelope each time"
    );
    wait_delivered(&s, "r:1", &id, 1);
    std::thread::sleep(Duration::from_millis(600));
    assert_eq!(hook.requests().len(), 3, "no attempt after the 200");
    assert_eq!(outcome(&s, "delivered"), 1);
    assert_eq!(s.metric("ringcast_webhook_retries_total"), 2);
    assert_eq!(s.metric("ringcast_webhook_attempts_total"), 3);
    assert_eq!(s.metric("ringcast_webhook_pending"), 0);
    s.shutdown();
}

#[test]
fn not_found_is_permanent_and_not_retried() {
    let hook = Receiver::start(vec![], Reply::Status(404));
    let s = TestServer::builder("auto").with(fast).start();
    hooked_channel(&s, "nf:*", &[hook.url("/gone")]);
    let id = publish_id(&s, "nf:1", json!({}));
    hook.wait_for(1, WAIT);
    eventually("failed counted", WAIT, || outcome(&s, "failed") == 1);
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(hook.requests().len(), 1, "404 is not retried");
    let m = row(&s, "nf:1", &id);
    assert_eq!(m["whAudienceCount"], 1);
    assert_eq!(m["whDeliveredCount"], 0);
    let (_, stats) = s.http("GET", "/api/realtime/messages/stats", None);
    assert_eq!(stats["whDeliveryRate"], 0.0);
    s.shutdown();
}

#[test]
fn retry_after_is_honoured() {
    let hook = Receiver::start(
        vec![Reply::StatusWithHeaders(
            429,
            vec![("Retry-After".into(), "1".into())],
        )],
        Reply::Status(200),
    );
    let s = TestServer::builder("auto").with(fast).start();
    hooked_channel(&s, "ra:*", &[hook.url("/")]);
    s.client("p").publish("ra:1", "e", json!({}));
    let got = hook.wait_for(2, WAIT);
    let gap = got[1].at - got[0].at;
    // The backoff alone would retry after 50-100 ms.
    assert!(gap >= Duration::from_millis(900), "retried after {gap:?}");
    eventually("delivered", WAIT, || outcome(&s, "delivered") == 1);
    s.shutdown();
}

#[test]
fn silent_receiver_is_retried_until_max_age_and_websockets_are_unaffected() {
    let hook = Receiver::start(vec![], Reply::Hang);
    let s = TestServer::builder("auto")
        .with(|f| {
            fast(f);
            f.webhooks.timeout = "300ms".into();
            f.webhooks.max_age = "2s".into();
        })
        .start();
    hooked_channel(&s, "slow:*", &[hook.url("/")]);
    let mut sub = s.client("sub");
    sub.subscribe("slow:1");
    let mut p = s.client("p");
    for i in 0..20 {
        p.publish("slow:1", "e", json!({"i": i}));
        // Live delivery does not wait for the webhook: each message arrives before the next
        // publish, while the receiver holds every request open.
        assert_eq!(sub.expect("message")["payload"]["i"], i);
    }
    // Each delivery is attempted again after its timeout.
    eventually("retried", WAIT, || {
        s.metric("ringcast_webhook_retries_total") >= 20
    });
    eventually("given up after max age", WAIT, || {
        outcome(&s, "expired") == 20
    });
    assert_eq!(outcome(&s, "delivered"), 0);
    assert_eq!(s.metric("ringcast_webhook_pending"), 0);
    s.shutdown();
}

#[test]
fn no_attempt_starts_after_max_age_even_when_waiting_for_the_endpoint() {
    let hook = Receiver::start(vec![], Reply::Hang);
    let s = TestServer::builder("auto")
        .with(|f| {
            fast(f);
            f.webhooks.timeout = "1s".into();
            f.webhooks.max_age = "1500ms".into();
            f.webhooks.max_per_endpoint = 1;
        })
        .start();
    hooked_channel(&s, "age:*", &[hook.url("/")]);
    let mut p = s.client("p");
    for _ in 0..5 {
        p.publish("age:1", "e", json!({}));
    }
    // One request at a time, each held 1 s: at most two start within 1.5 s of the publishes;
    // the rest expire while queued for the endpoint instead of being sent late.
    eventually("all expired", WAIT, || outcome(&s, "expired") == 5);
    let n = hook.requests().len();
    assert!((1..=3).contains(&n), "{n} requests");
    s.shutdown();
}

#[test]
fn two_urls_one_failing_counts_one_of_two() {
    let ok = Receiver::start(vec![], Reply::Status(200));
    let bad = Receiver::start(vec![], Reply::Status(410));
    let s = TestServer::builder("auto").with(fast).start();
    hooked_channel(&s, "two:*", &[ok.url("/a"), bad.url("/b")]);
    let id = publish_id(&s, "two:1", json!({}));
    ok.wait_for(1, WAIT);
    bad.wait_for(1, WAIT);
    wait_delivered(&s, "two:1", &id, 1);
    eventually("failed counted", WAIT, || outcome(&s, "failed") == 1);
    let m = row(&s, "two:1", &id);
    assert_eq!(m["whAudienceCount"], 2);
    let (_, stats) = s.http("GET", "/api/realtime/messages/stats", None);
    assert_eq!(stats["whDeliveryRate"], 0.5);
    s.shutdown();
}

#[test]
fn https_receiver_trusted_through_config() {
    let (hook, ca) = Receiver::https(vec![], Reply::Status(200));
    let trusted = TestServer::builder("auto")
        .with(|f| f.webhooks.ca_file = ca.display().to_string())
        .start();
    hooked_channel(&trusted, "tls:*", &[hook.url("/secure")]);
    let id = publish_id(&trusted, "tls:1", json!({}));
    let r = &hook.wait_for(1, WAIT)[0];
    assert_eq!(r.json()["messageId"], id);
    wait_delivered(&trusted, "tls:1", &id, 1);
    trusted.shutdown();

    // Without the CA the certificate is refused: retried, never delivered.
    let untrusted = TestServer::builder("auto")
        .with(|f| {
            fast(f);
            f.webhooks.max_age = "1s".into();
        })
        .start();
    hooked_channel(&untrusted, "tls:*", &[hook.url("/secure")]);
    untrusted.client("p").publish("tls:1", "e", json!({}));
    eventually("expired", WAIT, || outcome(&untrusted, "expired") == 1);
    assert_eq!(
        hook.requests().len(),
        1,
        "no request over an untrusted TLS link"
    );
    untrusted.shutdown();
}

#[test]
fn private_targets_are_refused_when_configured() {
    let hook = Receiver::start(vec![], Reply::Status(200));
    let s = TestServer::builder("auto")
        .with(|f| {
            fast(f);
            f.webhooks.deny_private_networks = true;
        })
        .start();
    let by_name = hook.url("/").replace("127.0.0.1", "localhost");
    hooked_channel(&s, "priv:*", &[hook.url("/"), by_name]);
    s.client("p").publish("priv:1", "e", json!({}));
    eventually("both refused", WAIT, || outcome(&s, "failed") == 2);
    assert_eq!(outcome(&s, "expired"), 0, "refused, not retried");
    assert!(hook.requests().is_empty());
    s.shutdown();
}

#[test]
fn a_full_hand_off_queue_counts_deliveries_dropped() {
    let hook = Receiver::start(vec![], Reply::Hang);
    let s = TestServer::builder("auto")
        .with(|f| {
            f.webhooks.queue = 1;
            f.webhooks.max_in_flight = 1;
            f.webhooks.timeout = "5s".into();
        })
        .start();
    hooked_channel(&s, "full:*", &[hook.url("/")]);
    let mut p = s.client("p");
    for _ in 0..20 {
        assert_eq!(p.publish("full:1", "e", json!({}))["type"], "published");
    }
    // One in flight, one queued, the rest dropped (and said so).
    eventually("dropped counted", WAIT, || outcome(&s, "dropped") == 18);
    assert_eq!(s.metric("ringcast_webhook_pending"), 2);
    s.shutdown();
}

#[test]
fn memory_engine_flushes_pending_deliveries_at_shutdown() {
    let hook = Receiver::start(vec![Reply::Status(503)], Reply::Status(200));
    let s = TestServer::builder("auto")
        .with(|f| {
            f.webhooks.retry_initial = "30s".into();
            f.webhooks.retry_max = "30s".into();
            f.server.shutdown_grace = "3s".into();
        })
        .start();
    hooked_channel(&s, "flush:*", &[hook.url("/")]);
    s.client("p").publish("flush:1", "e", json!({}));
    hook.wait_for(1, WAIT);
    // The retry is 15-30 s away; shutting down attempts it now.
    let t = Instant::now();
    s.shutdown();
    assert_eq!(hook.requests().len(), 2, "flushed at shutdown");
    assert!(t.elapsed() < Duration::from_secs(10));
}

fn redis_node(redis: &RedisServer, node_id: &str, config: &std::path::Path) -> BrokerProcess {
    let url = redis.url();
    let config = config.display().to_string();
    BrokerProcess::start(&[
        "--config",
        &config,
        "--engine",
        "redis",
        "--redis-url",
        &url,
        "--node-id",
        node_id,
    ])
}

#[test]
fn redis_deliveries_survive_a_killed_node() {
    let redis = RedisServer::start();
    // A port with nothing listening (yet).
    let mut down = Receiver::start(vec![], Reply::Status(200));
    let hook_addr = down.addr();
    let url = down.url("/after-restart");
    down.stop();
    // max_in_flight = 2: the node holds two deliveries when killed (its own pending entries,
    // resumed page by page after the restart); the other three were never read.
    let config = std::env::temp_dir().join(format!("ringcast-wh-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[webhooks]\nretry_initial = \"100ms\"\nretry_max = \"300ms\"\nclaim_after = \"30s\"\nmax_in_flight = 2\n",
    )
    .unwrap();
    let mut node = redis_node(&redis, "node-1", &config);
    let (st, _) = http(
        node.addr,
        "POST",
        "/api/realtime/channels",
        Some(ADMIN_KEY),
        Some(json!({"pattern": "dur:*", "webhookUrls": [url]})),
    );
    assert_eq!(st, 201);
    let mut p = Ws::connect(node.addr);
    p.auth(&token("p", "authenticated"));
    let mut ids = Vec::new();
    for i in 0..5 {
        let ack = p.publish("dur:1", "e", json!({"i": i}));
        assert_eq!(ack["type"], "published", "{ack}");
        ids.push(ack["messageId"].as_str().unwrap().to_string());
    }
    std::thread::sleep(Duration::from_millis(300)); // a few refused attempts
    node.kill();
    let hook = Receiver::start_on(hook_addr, vec![], Reply::Status(200));
    // The same node comes back and takes its own pending deliveries again at once (another
    // node would only claim them after `claim_after`).
    let node = redis_node(&redis, "node-1", &config);
    let got = hook.wait_for(5, WAIT);
    let mut delivered: Vec<String> = got
        .iter()
        .map(|r| r.json()["messageId"].as_str().unwrap().to_string())
        .collect();
    delivered.sort();
    delivered.dedup();
    ids.sort();
    assert_eq!(
        delivered, ids,
        "every acknowledged message's webhook arrived"
    );
    eventually("counted once each", WAIT, || {
        let (_, h) = http(
            node.addr,
            "GET",
            "/api/realtime/messages?channelName=dur:1",
            Some(ADMIN_KEY),
            None,
        );
        h.as_array()
            .unwrap()
            .iter()
            .all(|m| m["whDeliveredCount"] == 1 && m["whAudienceCount"] == 1)
    });
    assert_eq!(
        redis.command(&["XLEN", "rc:{wh}:pending"]),
        ":0\r\n",
        "nothing left pending"
    );
    let _ = std::fs::remove_file(&config);
}

#[test]
fn redis_another_node_takes_over_abandoned_deliveries() {
    let redis = RedisServer::start();
    let mut down = Receiver::start(vec![], Reply::Status(200));
    let hook_addr = down.addr();
    let url = down.url("/");
    down.stop();
    let node = |id: &str| {
        TestServer::builder("auto")
            .redis(&redis.url())
            .with(|f| {
                fast(f);
                f.server.node_id = id.into();
                f.webhooks.claim_after = "1s".into();
            })
            .start()
    };
    let a = node("a");
    hooked_channel(&a, "take:*", &[url]);
    let ack = a.client("p").publish("take:1", "e", json!({}));
    let id = ack["messageId"].as_str().unwrap().to_string();
    std::thread::sleep(Duration::from_millis(300));
    // A stops while retrying: the delivery stays pending in Redis under A.
    a.shutdown();
    let hook = Receiver::start_on(hook_addr, vec![], Reply::Status(200));
    let b = node("b");
    let got = hook.wait_for(1, WAIT);
    assert_eq!(got[0].json()["messageId"], id);
    wait_delivered(&b, "take:1", &id, 1);
    assert!(b.metric("ringcast_webhook_claimed_total") >= 1);
    let (_, stats) = b.http("GET", "/api/realtime/messages/stats", None);
    assert_eq!(stats["whDeliveryRate"], 1.0);
    b.shutdown();
}

#[test]
fn redis_counts_are_shared_across_nodes() {
    let redis = RedisServer::start();
    let hook = Receiver::start(vec![], Reply::Status(200));
    let a = TestServer::builder("auto").redis(&redis.url()).start();
    let b = TestServer::builder("auto").redis(&redis.url()).start();
    hooked_channel(&a, "sh:*", &[hook.url("/")]);
    eventually("channel on B", WAIT, || {
        let (_, l) = b.http("GET", "/api/realtime/channels", None);
        l.as_array().is_some_and(|l| !l.is_empty())
    });
    let mut ids = Vec::new();
    for (i, n) in [&a, &b, &a, &b].iter().enumerate() {
        let ack = n.client("p").publish("sh:1", "e", json!({"i": i}));
        ids.push(ack["messageId"].as_str().unwrap().to_string());
    }
    let got = hook.wait_for(4, WAIT);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        hook.requests().len(),
        4,
        "one delivery per message: {got:?}"
    );
    for id in &ids {
        wait_delivered(&a, "sh:1", id, 1);
        assert_eq!(row(&b, "sh:1", id)["whDeliveredCount"], 1);
    }
    a.shutdown();
    b.shutdown();
}

#[test]
fn redis_going_away_while_retrying_loses_no_delivery() {
    let mut redis = RedisServer::start_persistent();
    // Fails three times (the delivery is held and retried), then accepts.
    let hook = Receiver::start(
        vec![Reply::Status(503), Reply::Status(503), Reply::Status(503)],
        Reply::Status(200),
    );
    let s = TestServer::builder("auto")
        .redis(&redis.url())
        .with(|f| {
            f.webhooks.retry_initial = "500ms".into();
            f.webhooks.retry_max = "500ms".into();
            f.webhooks.claim_after = "2s".into();
        })
        .start();
    hooked_channel(&s, "away:*", &[hook.url("/")]);
    let id = publish_id(&s, "away:1", json!({}));
    hook.wait_for(1, WAIT);
    // Redis goes away while the delivery waits to be retried, and comes back with its data.
    redis.stop();
    std::thread::sleep(Duration::from_millis(1500));
    redis.restart();
    wait_delivered(&s, "away:1", &id, 1);
    eventually("nothing left pending", WAIT, || {
        redis.command(&["XLEN", "rc:{wh}:pending"]) == ":0\r\n"
    });
    assert_eq!(s.metric("ringcast_webhook_pending"), 0);
    let got = hook.requests();
    assert!(got.len() >= 4, "{} requests", got.len());
    assert!(
        got.iter()
            .all(|r| r.header("x-insforge-message-id") == Some(id.as_str()))
    );
    s.shutdown();
}

/// Issue 19, defect 3: a URL that hangs must not hold every request slot of its host. With
/// 100 deliveries to `/hang` waiting (each held for the 3 s timeout, then retried), a delivery
/// to `/ok` on the same host and port goes out at once, not behind the hung ones' timeouts.
#[test]
fn a_hanging_url_does_not_starve_the_other_urls_of_its_host() {
    let hook = Receiver::start(
        vec![],
        Reply::ByPath(
            vec![("/hang".into(), Reply::Hang)],
            Box::new(Reply::Status(200)),
        ),
    );
    let s = TestServer::builder("auto")
        .with(|f| {
            fast(f);
            f.webhooks.timeout = "3s".into();
            f.websocket.publish_rate = 10_000;
            f.websocket.publish_burst = 10_000;
        })
        .start();
    hooked_channel(&s, "hang:*", &[hook.url("/hang")]);
    hooked_channel(&s, "ok:*", &[hook.url("/ok")]);
    let mut p = s.client("p");
    for i in 0..100 {
        p.publish("hang:1", "e", json!({"i": i}));
    }
    // The hung URL holds what it may of the host (half of webhooks.max_per_endpoint).
    eventually("hung requests open", WAIT, || {
        hook.requests().iter().filter(|r| r.path == "/hang").count() >= 8
    });
    let sent = std::time::Instant::now();
    p.publish("ok:1", "e", json!({"ok": true}));
    eventually("the /ok delivery arrived", WAIT, || {
        hook.requests().iter().any(|r| r.path == "/ok")
    });
    let took = sent.elapsed();
    // Behind the hung requests it would wait for their 3 s timeouts (60 s for all 100).
    assert!(
        took < Duration::from_secs(2),
        "the /ok delivery waited {took:?}"
    );
    s.shutdown();
}
