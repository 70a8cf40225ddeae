//! Database changes with the redis engine, against a real PostgreSQL and a real Redis:
//! a node killed between hand-off and acknowledgement, the slot's reader failing over to
//! another node, and a slot lost while nobody read it (a `GAP`).

mod common;

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use common::{
    ADMIN_KEY, TestServer, eventually, http, postgres::PgServer, process::BrokerProcess,
    redis::RedisServer,
};
use serde_json::{Value, json};

/// A config file for a redis-engine node reading table `w`.
fn config(redis: &RedisServer, pg: &PgServer, name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!(
        "ringcast-cdc-{name}-{}-{}.toml",
        pg.port,
        std::process::id()
    ));
    std::fs::write(
        &path,
        format!(
            "[server]\nengine = \"redis\"\nworkers = 2\n\
             [redis]\nurl = \"{}\"\n\
             [history]\nmax_messages_per_channel = 100000\n\
             [postgres]\nurl = \"{}\"\ntables = [\"w\"]\n",
            redis.url(),
            pg.url()
        ),
    )
    .unwrap();
    path
}

fn node(cfg: &std::path::Path) -> BrokerProcess {
    BrokerProcess::start(&["--config", cfg.to_str().unwrap()])
}

fn get(addr: SocketAddr, path: &str) -> Value {
    let (s, v) = http(addr, "GET", path, Some(ADMIN_KEY), None);
    assert_eq!(s, 200, "{path}: {v}");
    v
}

fn metric(addr: SocketAddr, name: &str) -> Option<u64> {
    let (_, m) = http(addr, "GET", "/metrics", Some(ADMIN_KEY), None);
    m.as_str()?
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .and_then(|v| v.parse().ok())
}

fn total(addr: SocketAddr) -> u64 {
    get(addr, "/api/realtime/messages/stats")["totalMessages"]
        .as_u64()
        .unwrap()
}

/// Every stored message of `db:w`: the row ids and the message ids.
fn history(addr: SocketAddr) -> (Vec<i64>, Vec<String>) {
    let (mut rows, mut ids) = (Vec::new(), Vec::new());
    for page in 0.. {
        let h = get(
            addr,
            &format!(
                "/api/realtime/messages?channelName=db:w&limit=1000&offset={}",
                page * 1000
            ),
        );
        let h = h.as_array().unwrap();
        for m in h {
            rows.push(m["payload"]["new"]["id"].as_i64().unwrap());
            ids.push(m["id"].as_str().unwrap().to_string());
        }
        if h.len() < 1000 {
            break;
        }
    }
    rows.sort_unstable();
    ids.sort_unstable();
    (rows, ids)
}

fn table(pg: &PgServer) -> Vec<i64> {
    pg.psql("SELECT id FROM w ORDER BY id")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect()
}

fn assert_no_duplicates(ids: &[String]) {
    let mut d = ids.to_vec();
    d.dedup();
    assert_eq!(d.len(), ids.len(), "a message id is stored twice");
}

#[test]
fn a_node_killed_between_hand_off_and_ack_resumes_without_gap_or_duplicate() {
    const N: u64 = 20_000;
    let redis = RedisServer::start();
    let pg = PgServer::start();
    pg.psql("CREATE TABLE w (id int PRIMARY KEY)");
    let cfg = config(&redis, &pg, "kill");
    let mut a = node(&cfg);
    let (s, _) = http(
        a.addr,
        "POST",
        "/api/realtime/channels",
        Some(ADMIN_KEY),
        Some(json!({"pattern": "db:*"})),
    );
    assert_eq!(s, 201);
    // The slot exists once the node reads it: changes before that are not in it.
    eventually("the node reads the slot", Duration::from_secs(20), || {
        metric(a.addr, "ringcast_cdc_slot_owner") == Some(1)
    });
    // One transaction: the checkpoint (and the slot) can only move at its end.
    pg.psql(&format!(
        "INSERT INTO w SELECT g FROM generate_series(1, {N}) g"
    ));
    let mut at_kill = 0;
    eventually(
        "part of the transaction stored",
        Duration::from_secs(60),
        || {
            at_kill = total(a.addr);
            at_kill > 0
        },
    );
    a.kill();
    assert!(
        at_kill < N,
        "the node was killed after the whole transaction was stored ({at_kill}): the \
         transaction is too small for this machine"
    );

    let b = node(&cfg);
    // The channel's history (its stream), not the all-channels index behind the stats: a node
    // killed between a batch's append and its index write leaves the index short (README,
    // "Engines").
    eventually("every row stored", Duration::from_secs(120), || {
        history(b.addr).0.len() as u64 >= N
    });
    std::thread::sleep(Duration::from_millis(500));
    let (rows, ids) = history(b.addr);
    assert_eq!(rows.len() as u64, N, "nothing stored twice");
    assert_eq!(rows, table(&pg), "history holds exactly the table's rows");
    assert_no_duplicates(&ids);
    assert!(
        metric(b.addr, "ringcast_cdc_duplicates_skipped_total").unwrap() > 0,
        "the restarted node read the stored part again and skipped it"
    );
}

#[test]
fn another_node_takes_the_slot_over_when_its_reader_dies() {
    const N: i64 = 200;
    let redis = RedisServer::start();
    let pg = std::sync::Arc::new(PgServer::start());
    pg.psql("CREATE TABLE w (id int PRIMARY KEY)");
    let cfg = config(&redis, &pg, "failover");
    let mut nodes = [node(&cfg), node(&cfg)];
    let (s, _) = http(
        nodes[0].addr,
        "POST",
        "/api/realtime/channels",
        Some(ADMIN_KEY),
        Some(json!({"pattern": "db:*"})),
    );
    assert_eq!(s, 201);
    let owner = |n: &BrokerProcess| metric(n.addr, "ringcast_cdc_slot_owner") == Some(1);
    eventually("one node reads the slot", Duration::from_secs(20), || {
        nodes.iter().filter(|n| owner(n)).count() == 1
    });
    let reader = nodes.iter().position(owner).unwrap();
    let survivor = 1 - reader;

    // A subscriber on the node that survives.
    let mut ws = common::Ws::connect(nodes[survivor].addr);
    ws.auth(&common::token("u1", "authenticated"));
    ws.send(json!({"type": "subscribe", "channel": "db:w"}));
    ws.expect("subscribed");
    let got = std::thread::spawn(move || {
        ws.set_timeout(Duration::from_secs(60));
        let mut ids: Vec<i64> = (0..N)
            .map(|_| {
                ws.expect("message")["payload"]["new"]["id"]
                    .as_i64()
                    .unwrap()
            })
            .collect();
        ws.expect_silence(Duration::from_millis(500));
        ids.sort_unstable();
        ids
    });

    let pg2 = pg.clone();
    let writer = std::thread::spawn(move || {
        for i in 1..=N {
            pg2.psql(&format!("INSERT INTO w VALUES ({i})"));
            std::thread::sleep(Duration::from_millis(5));
        }
    });
    eventually("some rows stored", Duration::from_secs(30), || {
        total(nodes[survivor].addr) >= (N / 4) as u64
    });
    nodes[reader].kill();
    eventually(
        "the survivor took the slot",
        Duration::from_secs(15),
        || owner(&nodes[survivor]),
    );
    writer.join().unwrap();
    let got = got.join().expect("every row reaches the subscriber once");
    assert_eq!(got, table(&pg));
    let addr = nodes[survivor].addr;
    eventually("all stored", Duration::from_secs(30), || {
        total(addr) >= N as u64
    });
    let (rows, ids) = history(addr);
    assert_eq!(rows, table(&pg));
    assert_no_duplicates(&ids);
}

#[test]
fn an_invalidated_slot_is_recreated_and_subscribers_get_a_gap() {
    let redis = RedisServer::start();
    let pg = PgServer::start_with("max_slot_wal_keep_size = 1MB");
    pg.psql("CREATE TABLE w (id int PRIMARY KEY, pad text)");
    let start = || {
        TestServer::builder("auto")
            .redis(&redis.url())
            .with(|f| {
                f.postgres.url = pg.url();
                f.postgres.tables = vec!["w".into()];
            })
            .start()
    };
    let s = start();
    s.channel("db:*");
    let mut ws = s.client("u1");
    ws.subscribe("db:w");
    pg.psql("INSERT INTO w VALUES (1, 'a')");
    ws.set_timeout(Duration::from_secs(20));
    assert_eq!(ws.expect("message")["event"], "INSERT");
    drop(ws);
    s.shutdown();

    // While nobody reads the slot, WAL moves on past what it may keep; a checkpoint then
    // invalidates it.
    for i in 2..6 {
        pg.psql(&format!("INSERT INTO w SELECT {i}, repeat('x', 1000)"));
        pg.psql_db("app", "SELECT pg_switch_wal()");
    }
    pg.psql_db("app", "CHECKPOINT");
    assert_eq!(
        pg.psql_db(
            "app",
            "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'ringcast'"
        ),
        "lost"
    );

    // The gap is announced as soon as the node reads again: find it in history.
    let s = start();
    let mut gap = Value::Null;
    eventually("a GAP message in history", Duration::from_secs(20), || {
        let (_, h) = s.http("GET", "/api/realtime/messages?channelName=db:w", None);
        gap = h[0].clone();
        gap["eventName"] == "GAP"
    });
    assert_eq!(gap["senderType"], "system");
    assert_eq!(gap["payload"]["table"], "w");
    assert_eq!(gap["payload"]["eventType"], "GAP");
    assert!(
        gap["payload"]["reason"]
            .as_str()
            .unwrap()
            .contains("invalidated"),
        "{gap}"
    );
    assert_eq!(s.metric("ringcast_cdc_gaps_total"), 1);
    // The stream goes on from the new slot.
    let mut ws = s.client("u1");
    ws.subscribe("db:w");
    ws.set_timeout(Duration::from_secs(20));
    pg.psql("INSERT INTO w VALUES (10, 'b')");
    let m = ws.expect("message");
    assert_eq!(m["payload"]["new"]["id"], 10);
}

#[test]
fn a_slot_dropped_under_a_running_node_is_recreated_with_a_gap() {
    let pg = PgServer::start();
    pg.psql("CREATE TABLE w (id int PRIMARY KEY)");
    let s = TestServer::builder("auto")
        .with(|f| {
            f.postgres.url = pg.url();
            f.postgres.tables = vec!["w".into()];
        })
        .start();
    s.channel("db:*");
    let mut ws = s.client("u1");
    ws.send(json!({"type": "subscribe", "channel": "db:w", "filter": {"event": "INSERT"}}));
    ws.expect("subscribed");
    ws.set_timeout(Duration::from_secs(20));
    pg.psql("INSERT INTO w VALUES (1)");
    assert_eq!(ws.expect("message")["event"], "INSERT");
    // End the node's session and drop the slot before it comes back.
    pg.psql_db(
        "app",
        "DO $$ BEGIN FOR i IN 1..500 LOOP
           PERFORM pg_terminate_backend(active_pid) FROM pg_replication_slots
             WHERE slot_name = 'ringcast' AND active_pid IS NOT NULL;
           BEGIN PERFORM pg_drop_replication_slot('ringcast'); RETURN;
           EXCEPTION WHEN object_in_use THEN PERFORM pg_sleep(0.005); END;
         END LOOP; RAISE 'could not drop the slot'; END $$",
    );
    let gap = ws.expect("message");
    assert_eq!(
        gap["event"], "GAP",
        "a GAP passes every event filter: {gap}"
    );
    assert!(
        gap["payload"]["reason"]
            .as_str()
            .unwrap()
            .contains("disappeared")
    );
    pg.psql("INSERT INTO w VALUES (2)");
    assert_eq!(ws.expect("message")["payload"]["new"]["id"], 2);
}

#[test]
fn on_a_redis_cluster_a_restarted_node_resumes_at_the_stored_checkpoint() {
    let cluster = common::redis::RedisCluster::start();
    let pg = PgServer::start();
    pg.psql("CREATE TABLE w (id int PRIMARY KEY)");
    let start = || {
        TestServer::builder("auto")
            .redis(&cluster.url())
            .with(|f| {
                f.postgres.url = pg.url();
                f.postgres.tables = vec!["w".into()];
            })
            .start()
    };
    let a = start();
    a.channel("db:*");
    let mut ws = a.client("u1");
    ws.subscribe("db:w");
    ws.set_timeout(Duration::from_secs(20));
    pg.psql("INSERT INTO w VALUES (1); INSERT INTO w VALUES (2); INSERT INTO w VALUES (3)");
    for id in 1..=3 {
        assert_eq!(ws.expect("message")["payload"]["new"]["id"], id);
    }
    drop(ws);
    a.shutdown();
    // While no node reads, two more rows; then a new node reads from the checkpoint in the
    // cluster (not from the start of the slot, and not skipping anything).
    pg.psql("INSERT INTO w VALUES (4); INSERT INTO w VALUES (5)");
    let b = start();
    let addr = b.addr;
    eventually("rows 4 and 5 stored", Duration::from_secs(20), || {
        history(addr).0.len() == 5
    });
    std::thread::sleep(Duration::from_millis(300));
    let (rows, ids) = history(addr);
    assert_eq!(rows, vec![1, 2, 3, 4, 5]);
    assert_no_duplicates(&ids);
    assert_eq!(
        b.metric("ringcast_cdc_duplicates_skipped_total"),
        0,
        "started past them"
    );
}
