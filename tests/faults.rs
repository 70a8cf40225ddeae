//! Faults under a steady load, against real processes: two ringcast nodes (redis engine, each
//! its own process) on one `redis-server` with AOF; on each node a publisher at 100/s and a
//! subscriber, all on `f:1`. Each fault lasts from 1 s to 5 s of a 7 s run:
//!
//! - Redis paused (SIGSTOP, SIGCONT): connections stay open, nothing answers;
//! - Redis killed (SIGKILL) and restarted from its AOF;
//! - Redis shut down gracefully (`SHUTDOWN`) and restarted;
//! - node B killed (SIGKILL) and restarted: its clients lose their connections;
//! - node A cut off from Redis (its Redis link down, in a network namespace of its own) while
//!   its clients stay connected (skipped, with the reason, where namespaces cannot be made);
//! - a webhook receiver down and back while both nodes publish to a hooked channel.
//!
//! The clients behave as the README tells them to: a publish whose fate is unknown is sent
//! again with its `idempotencyKey`, a subscriber whose connection died subscribes again with
//! `since`. Checked afterwards (`load::verify`): history is the same on both nodes, contiguous,
//! nothing stored twice; every acknowledgement is in history with its id; every "not
//! published" is not; every stored message was acknowledged to its publisher; every answer on
//! a live connection came within the promised 3 s; every subscriber got all of history once
//! and in order. The time without acknowledgements is printed per publisher.

mod common;
#[path = "faults/load.rs"]
mod load;
#[path = "faults/netns.rs"]
mod netns;

use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use common::{
    ADMIN_KEY, eventually, http,
    process::BrokerProcess,
    receiver::{Receiver, Reply},
    redis::RedisServer,
};
use load::{Publisher, Subscriber, verify};
use netns::Netns;
use serde_json::json;

const RATE: u32 = 100;
const RUN: Duration = Duration::from_secs(7);
const FAULT_FROM: Duration = Duration::from_secs(1);
const FAULT_TO: Duration = Duration::from_secs(5);

fn node_args(url: &str, id: &str) -> Vec<String> {
    ["--engine", "redis", "--redis-url", url, "--node-id", id]
        .map(String::from)
        .to_vec()
}

fn start_node(redis_url: &str, id: &str) -> BrokerProcess {
    let args = node_args(redis_url, id);
    BrokerProcess::start(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Makes `pattern` on `a` and waits until `b` knows it.
fn channel(a: SocketAddr, b: SocketAddr, body: serde_json::Value) {
    let (st, v) = http(
        a,
        "POST",
        "/api/realtime/channels",
        Some(ADMIN_KEY),
        Some(body),
    );
    assert_eq!(st, 201, "{v}");
    eventually("channel on b", Duration::from_secs(5), || {
        let (_, l) = http(b, "GET", "/api/realtime/channels", Some(ADMIN_KEY), None);
        l.as_array().is_some_and(|l| !l.is_empty())
    });
}

/// Runs the load on nodes `a` and `b` with `fault(true)` at 1 s and `fault(false)` at 5 s,
/// waits until every publish has a definite fate, then checks and prints.
fn drive(what: &str, a: SocketAddr, b: SocketAddr, mut fault: impl FnMut(bool)) {
    channel(a, b, json!({"pattern": "f:*"}));
    let mut subs = [Subscriber::new("sub-a", a), Subscriber::new("sub-b", b)];
    let mut pubs = [
        Publisher::new("pub-a", a, 0, RATE),
        Publisher::new("pub-b", b, 1_000_000, RATE),
    ];
    let start = Instant::now();
    let (mut began, mut ended) = (false, false);
    loop {
        let t = start.elapsed();
        if !began && t >= FAULT_FROM {
            fault(true);
            began = true;
        }
        if !ended && t >= FAULT_TO {
            fault(false);
            ended = true;
        }
        let publishing = t < RUN;
        for p in &mut pubs {
            p.step(publishing);
        }
        for s in &mut subs {
            s.step();
        }
        if !publishing && pubs.iter().all(Publisher::settled) {
            break;
        }
        assert!(
            t < Duration::from_secs(60),
            "{what}: publishes without a definite answer: {:?}",
            pubs.iter().map(Publisher::unsettled).collect::<Vec<_>>()
        );
    }
    // Subscribers: until they hold all of history (or 10 s).
    let want = load::history(a).len();
    let end = Instant::now() + Duration::from_secs(10);
    while subs.iter().any(|s| s.received.len() < want) && Instant::now() < end {
        for s in &mut subs {
            s.step();
        }
    }
    let summary = verify(what, &[a, b], &pubs, &subs);
    eprintln!("{summary}");
    let unknown_or_refused = pubs
        .iter()
        .map(|p| {
            p.answers
                .iter()
                .filter(|(_, v)| v["type"] == "error")
                .count()
        })
        .sum::<usize>()
        + pubs.iter().map(|p| p.connection_losses).sum::<usize>();
    assert!(unknown_or_refused > 0, "{what}: the fault had no effect");
}

#[test]
fn chaos_redis_paused() {
    let redis = RedisServer::start_persistent();
    let a = start_node(&redis.url(), "a");
    let b = start_node(&redis.url(), "b");
    drive("redis paused 4 s", a.addr, b.addr, |begin| {
        redis.pause(begin)
    });
}

#[test]
fn chaos_redis_killed_and_restarted() {
    let mut redis = RedisServer::start_persistent();
    let a = start_node(&redis.url(), "a");
    let b = start_node(&redis.url(), "b");
    drive("redis killed, down 4 s", a.addr, b.addr, |begin| {
        if begin { redis.stop() } else { redis.restart() }
    });
}

#[test]
fn chaos_redis_shut_down_and_restarted() {
    let mut redis = RedisServer::start_persistent();
    let a = start_node(&redis.url(), "a");
    let b = start_node(&redis.url(), "b");
    drive("redis SHUTDOWN, down 4 s", a.addr, b.addr, |begin| {
        if begin {
            redis.shutdown()
        } else {
            redis.restart()
        }
    });
}

#[test]
fn chaos_node_killed_and_restarted() {
    let redis = RedisServer::start_persistent();
    let a = start_node(&redis.url(), "a");
    let mut b = start_node(&redis.url(), "b");
    let addr = b.addr;
    drive("node b killed, down 4 s", a.addr, addr, |begin| {
        if begin { b.kill() } else { b.restart() }
    });
}

#[test]
fn chaos_node_cut_off_from_redis() {
    let ns = match Netns::create() {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!(
                "SKIPPED chaos_node_cut_off_from_redis: cannot make a network namespace ({why}); \
                 it needs root or CAP_NET_ADMIN and iproute2"
            );
            return;
        }
    };
    let mut redis = RedisServer::start_persistent();
    redis.also_bind = Some(ns.redis_ip.to_string());
    redis.stop();
    redis.restart();
    // Node a lives in the namespace: clients reach it on one link, Redis on the other.
    let a_addr: SocketAddr = (ns.node_ip, 18080).into();
    let a_url = format!("redis://{}:{}", ns.redis_ip, redis.port);
    let args = node_args(&a_url, "a");
    let a = BrokerProcess::start_at(
        &ns.exec_prefix(),
        a_addr,
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let b = start_node(&redis.url(), "b");
    drive("node a cut off from redis 4 s", a.addr, b.addr, |begin| {
        ns.redis_link(!begin)
    });
}

#[test]
fn chaos_webhook_receiver_down_and_back() {
    let redis = RedisServer::start_persistent();
    let config = std::env::temp_dir().join(format!("ringcast-faults-{}.toml", std::process::id()));
    std::fs::write(
        &config,
        "[webhooks]\nretry_initial = \"100ms\"\nretry_max = \"500ms\"\ntimeout = \"2s\"\n",
    )
    .unwrap();
    let cfg = config.display().to_string();
    let url = redis.url();
    let node = |id: &str| {
        BrokerProcess::start(&[
            "--config",
            &cfg,
            "--engine",
            "redis",
            "--redis-url",
            &url,
            "--node-id",
            id,
        ])
    };
    let (a, b) = (node("a"), node("b"));
    let mut hook = Some(Receiver::start(vec![], Reply::Status(200)));
    let hook_addr = hook.as_ref().unwrap().addr();
    let hook_url = hook.as_ref().unwrap().url("/hook");
    channel(
        a.addr,
        b.addr,
        json!({"pattern": "f:*", "webhookUrls": [hook_url]}),
    );
    let mut pubs = [
        Publisher::new("pub-a", a.addr, 0, RATE / 2),
        Publisher::new("pub-b", b.addr, 1_000_000, RATE / 2),
    ];
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut back_at = None;
    while start.elapsed() < Duration::from_secs(6) || !pubs.iter().all(Publisher::settled) {
        let t = start.elapsed();
        if t >= FAULT_FROM && back_at.is_none() && hook.is_some() {
            let mut h = hook.take().unwrap();
            seen.extend(h.requests());
            h.stop();
        }
        if t >= Duration::from_secs(4) && hook.is_none() {
            hook = Some(Receiver::start_on(hook_addr, vec![], Reply::Status(200)));
            back_at = Some(Instant::now());
        }
        for p in &mut pubs {
            p.step(t < Duration::from_secs(6));
        }
        assert!(t < Duration::from_secs(30), "publishes unsettled");
    }
    let h = load::history(a.addr);
    let want: std::collections::HashSet<String> = h.iter().map(|m| m.2.clone()).collect();
    let ids = |r: &[common::receiver::Received]| -> Vec<String> {
        r.iter()
            .map(|r| r.json()["messageId"].as_str().unwrap().to_string())
            .collect()
    };
    let hook = hook.unwrap();
    let end = Instant::now() + Duration::from_secs(30);
    let (got, caught_up) = loop {
        let mut all = ids(&seen);
        all.extend(ids(&hook.requests()));
        let set: std::collections::HashSet<String> = all.iter().cloned().collect();
        if want.is_subset(&set) {
            break (all, back_at.unwrap().elapsed());
        }
        assert!(
            Instant::now() < end,
            "webhooks missing: {} of {}",
            want.difference(&set).count(),
            want.len()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let extra = got.len() - want.len();
    assert!(
        got.iter().all(|id| want.contains(id)),
        "a webhook for a message not in history"
    );
    eprintln!(
        "webhook receiver down 3 s: {} messages, every one delivered; backlog delivered {caught_up:.1?} \
         after the receiver came back; {extra} delivered more than once",
        want.len()
    );
    let _ = std::fs::remove_file(&config);
}
