//! Database change notifications from a real PostgreSQL (a throwaway cluster per test): every
//! committed row change reaches `db:<table>` subscribers with the seed's payload, typed
//! values, filters, at least once and without duplicates across restarts.

mod common;

use std::time::Duration;

use common::{TestServer, eventually, postgres::PgServer};
use serde_json::{Value, json};

const POSTS: &str = "CREATE TABLE posts (
    id bigint PRIMARY KEY, title text, views int, score numeric, ratio float8, small int2,
    published boolean, meta jsonb, doc json, tags text[], nums int4[], created_at timestamptz,
    plain_ts timestamp, day date, uid uuid, big numeric, body text);
    ALTER TABLE posts ALTER COLUMN body SET STORAGE EXTERNAL;";

/// A memory-engine node reading `tables` from `pg`, with an enabled `db:*` channel.
fn node(pg: &PgServer, driver: &str, tables: &[&str]) -> TestServer {
    let s = TestServer::builder(driver)
        .with(|f| {
            f.postgres.url = pg.url();
            f.postgres.tables = tables.iter().map(|t| t.to_string()).collect();
        })
        .start();
    s.channel("db:*");
    s
}

fn subscribe(s: &TestServer, ch: &str, filter: Value) -> common::Ws {
    let mut ws = s.client("u1");
    ws.send(json!({"type": "subscribe", "channel": ch, "filter": filter}));
    ws.expect("subscribed");
    ws
}

/// The next `message` frame (skips nothing else: anything else fails the test).
fn next(ws: &mut common::Ws) -> Value {
    ws.set_timeout(Duration::from_secs(20));
    ws.expect("message")
}

both_drivers!(every_type_and_shape_reaches_subscribers, |driver| {
    let pg = PgServer::start();
    pg.psql(POSTS);
    pg.psql("ALTER TABLE posts REPLICA IDENTITY FULL");
    let s = node(&pg, driver, &["public.posts"]);
    let mut ws = subscribe(&s, "db:posts", json!({"event": "*", "schema": "public"}));

    pg.psql(
        "INSERT INTO posts VALUES (1, 'New Post', 7, 12.5, 0.1, 3, true, '{\"a\":[1,2],\"b\":null}',
         '[1, \"x\"]', ARRAY['x','y z','q\"uote',NULL], '{1,2,3}', '2024-01-15 10:30:00+00',
         '2024-01-15 10:30:00.25', '2024-01-15', 'b3e9c0de-0000-4000-8000-000000000001',
         12345678901234567890.5, NULL)",
    );
    let m = next(&mut ws);
    assert_eq!(m["channel"], "db:posts");
    assert_eq!(m["event"], "INSERT");
    assert_eq!(m["senderType"], "system");
    let p = &m["payload"];
    assert_eq!(p["schema"], "public");
    assert_eq!(p["table"], "posts");
    assert_eq!(p["eventType"], "INSERT");
    assert_eq!(p["old"], Value::Null);
    assert!(
        p["commit_timestamp"].as_str().unwrap().ends_with('Z'),
        "{p}"
    );
    let n = &p["new"];
    assert_eq!(n["id"], 1);
    assert_eq!(n["title"], "New Post");
    assert_eq!(n["views"], 7);
    assert_eq!(n["score"], 12.5);
    assert_eq!(n["ratio"], 0.1);
    assert_eq!(n["small"], 3);
    assert_eq!(n["published"], true);
    assert_eq!(n["meta"], json!({"a": [1, 2], "b": null}));
    assert_eq!(n["doc"], json!([1, "x"]));
    assert_eq!(n["tags"], json!(["x", "y z", "q\"uote", null]));
    assert_eq!(n["nums"], json!([1, 2, 3]));
    assert_eq!(n["created_at"], "2024-01-15T10:30:00Z");
    assert_eq!(n["plain_ts"], "2024-01-15T10:30:00.25");
    assert_eq!(n["day"], "2024-01-15");
    assert_eq!(n["uid"], "b3e9c0de-0000-4000-8000-000000000001");
    assert_eq!(
        n["big"], "12345678901234567890.5",
        "more than 15 digits stay a string"
    );
    assert_eq!(n["body"], Value::Null);

    pg.psql("UPDATE posts SET title = 'Updated', views = 8 WHERE id = 1");
    let m = next(&mut ws);
    assert_eq!(m["event"], "UPDATE");
    assert_eq!(m["payload"]["new"]["title"], "Updated");
    assert_eq!(
        m["payload"]["old"]["title"], "New Post",
        "FULL: the whole old row"
    );
    assert_eq!(m["payload"]["old"]["views"], 7);

    // TOAST: a large out-of-line value, then an update that leaves it unchanged.
    let big = "x".repeat(10_000);
    pg.psql(&format!("UPDATE posts SET body = '{big}' WHERE id = 1"));
    let m = next(&mut ws);
    assert_eq!(m["payload"]["new"]["body"].as_str().unwrap().len(), 10_000);
    pg.psql("UPDATE posts SET views = 9 WHERE id = 1");
    let m = next(&mut ws);
    assert_eq!(
        m["payload"]["new"]["body"].as_str().map(str::len),
        Some(10_000),
        "FULL: the unchanged TOAST value is filled from the old row"
    );

    pg.psql("DELETE FROM posts WHERE id = 1");
    let m = next(&mut ws);
    assert_eq!(m["event"], "DELETE");
    assert_eq!(m["payload"]["new"], Value::Null);
    assert_eq!(m["payload"]["old"]["title"], "Updated");

    // History has them, in order, with offsets, as `system` messages.
    let (st, h) = s.http("GET", "/api/realtime/messages?channelName=db:posts", None);
    assert_eq!(st, 200, "{h}");
    let events: Vec<&str> = h
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["eventName"].as_str().unwrap())
        .collect();
    assert_eq!(events, ["DELETE", "UPDATE", "UPDATE", "UPDATE", "INSERT"]);
    assert_eq!(s.metric("ringcast_cdc_slot_owner"), 1);
    assert!(s.metric("ringcast_cdc_changes_total") >= 5);
    // Every change's delays are in the histograms.
    assert!(s.metric("ringcast_cdc_commit_to_send_seconds_count") >= 5);
    assert!(s.metric("ringcast_cdc_send_to_read_seconds_count") >= 5);
});

#[test]
fn default_identity_sends_keys_only_and_leaves_unknown_toast_out() {
    let pg = PgServer::start();
    pg.psql(POSTS);
    let s = node(&pg, "auto", &["public.posts"]);
    let mut ws = subscribe(&s, "db:posts", json!({}));
    let big = "y".repeat(10_000);
    pg.psql(&format!(
        "INSERT INTO posts (id, title, views, body) VALUES (2, 't', 1, '{big}')"
    ));
    assert_eq!(next(&mut ws)["event"], "INSERT");
    pg.psql("UPDATE posts SET views = 2 WHERE id = 2");
    let m = next(&mut ws);
    assert_eq!(m["payload"]["old"], Value::Null, "the key did not change");
    let new = m["payload"]["new"].as_object().unwrap();
    assert_eq!(new["views"], 2);
    assert!(
        !new.contains_key("body"),
        "an unchanged TOAST value without a full old row is left out, not null: {new:?}"
    );
    pg.psql("DELETE FROM posts WHERE id = 2");
    let m = next(&mut ws);
    assert_eq!(
        m["payload"]["old"],
        json!({"id": 2}),
        "the key columns only"
    );
}

#[test]
fn event_schema_and_row_filters_apply_per_subscriber() {
    let pg = PgServer::start();
    pg.psql("CREATE TABLE items (id int PRIMARY KEY, kind text, n int)");
    pg.psql("CREATE SCHEMA shop; CREATE TABLE shop.items (id int PRIMARY KEY, kind text, n int)");
    let s = node(&pg, "auto", &["public.items", "shop.items"]);
    let mut all = subscribe(&s, "db:items", json!({}));
    let mut inserts = subscribe(
        &s,
        "db:items",
        json!({"event": "INSERT", "schema": "public"}),
    );
    let mut shop = subscribe(&s, "db:items", json!({"schema": "shop"}));
    let mut big = subscribe(
        &s,
        "db:items",
        json!({"where": {"column": "n", "op": "gte", "value": 10}}),
    );
    let mut kinds = subscribe(
        &s,
        "db:items",
        json!({"event": "DELETE", "where": {"column": "id", "op": "in", "value": [1, 3]}}),
    );

    pg.psql("INSERT INTO items VALUES (1, 'a', 5), (2, 'b', 50)");
    pg.psql("INSERT INTO shop.items VALUES (3, 'c', 500)");
    pg.psql("UPDATE items SET n = 11 WHERE id = 1");
    pg.psql("DELETE FROM items WHERE id IN (1, 2)");

    let ids = |ws: &mut common::Ws, n: usize| -> Vec<(String, String, i64)> {
        (0..n)
            .map(|_| {
                let m = next(ws);
                let p = &m["payload"];
                let row = if p["eventType"] == "DELETE" {
                    &p["old"]
                } else {
                    &p["new"]
                };
                (
                    m["event"].as_str().unwrap().to_string(),
                    p["schema"].as_str().unwrap().to_string(),
                    row["id"].as_i64().unwrap(),
                )
            })
            .collect()
    };
    let e = |ev: &str, sc: &str, id: i64| (ev.to_string(), sc.to_string(), id);
    assert_eq!(
        ids(&mut all, 6),
        [
            e("INSERT", "public", 1),
            e("INSERT", "public", 2),
            e("INSERT", "shop", 3),
            e("UPDATE", "public", 1),
            e("DELETE", "public", 1),
            e("DELETE", "public", 2)
        ]
    );
    assert_eq!(
        ids(&mut inserts, 2),
        [e("INSERT", "public", 1), e("INSERT", "public", 2)]
    );
    assert_eq!(ids(&mut shop, 1), [e("INSERT", "shop", 3)]);
    // n >= 10: the insert of 2 (50), of shop 3 (500), the update of 1 (11). The deletes'
    // old rows carry the key only: no `n`, so they do not match.
    assert_eq!(
        ids(&mut big, 3),
        [
            e("INSERT", "public", 2),
            e("INSERT", "shop", 3),
            e("UPDATE", "public", 1)
        ]
    );
    assert_eq!(ids(&mut kinds, 1), [e("DELETE", "public", 1)]);
    for ws in [&mut inserts, &mut shop, &mut big, &mut kinds] {
        ws.expect_silence(Duration::from_millis(300));
    }
}

#[test]
fn bad_filters_are_refused_at_subscribe() {
    let pg = PgServer::start();
    pg.psql("CREATE TABLE t (id int PRIMARY KEY)");
    let s = node(&pg, "auto", &["public.t"]);
    let mut ws = s.client("u1");
    for (filter, says) in [
        (json!({"event": "UPSERT"}), "filter.event"),
        (
            json!({"where": {"column": "id", "op": "like", "value": 1}}),
            "like",
        ),
        (
            json!({"where": {"column": "id", "op": "in", "value": 1}}),
            "array",
        ),
        (
            json!({"where": {"column": "", "op": "eq", "value": 1}}),
            "column",
        ),
        (
            json!({"where": {"column": "id", "op": "lt", "value": [1]}}),
            "number or a string",
        ),
        (json!({"where": {"column": "id", "value": 1}}), "op"),
    ] {
        ws.send(json!({"type": "subscribe", "channel": "db:t", "filter": filter}));
        let e = ws.expect("error");
        assert_eq!(e["code"], "INVALID_MESSAGE", "{e}");
        assert!(
            e["message"].as_str().unwrap().contains(says),
            "{filter}: {e}"
        );
    }
    // The connection is still usable.
    ws.send(json!({"type": "subscribe", "channel": "db:t"}));
    ws.expect("subscribed");
}

#[test]
fn a_table_without_an_enabled_channel_is_skipped_and_counted() {
    let pg = PgServer::start();
    pg.psql("CREATE TABLE a (id int PRIMARY KEY); CREATE TABLE b (id int PRIMARY KEY)");
    let s = TestServer::builder("auto")
        .with(|f| {
            f.postgres.url = pg.url();
            f.postgres.tables = vec!["a".into(), "b".into()];
        })
        .start();
    s.channel("db:b");
    let mut ws = subscribe(&s, "db:b", json!({}));
    pg.psql("INSERT INTO a VALUES (1); INSERT INTO b VALUES (1)");
    assert_eq!(next(&mut ws)["payload"]["table"], "b");
    eventually(
        "a's change counted as skipped",
        Duration::from_secs(10),
        || s.metric("ringcast_cdc_changes_skipped_total") == 1,
    );
    let (_, h) = s.http("GET", "/api/realtime/messages?channelName=db:a", None);
    assert_eq!(h, json!([]));
}

/// `ringcast::start` with `[postgres]` pointing at `url` (and `tables`): its error, if any.
fn start_error(url: &str, tables: &[&str]) -> Option<String> {
    let mut f = ringcast::config::FileConfig::default();
    f.server.listen = "127.0.0.1:0".into();
    f.server.workers = 1;
    f.auth.jwt_secret = common::SECRET.into();
    f.postgres.url = url.into();
    f.postgres.tables = tables.iter().map(|t| t.to_string()).collect();
    let cfg = ringcast::config::validate(&f).expect("valid config");
    match ringcast::start(cfg) {
        Ok(h) => {
            h.shutdown();
            None
        }
        Err(e) => Some(e.to_string()),
    }
}

#[test]
fn a_database_that_cannot_serve_the_stream_refuses_the_start_with_the_sql_to_run() {
    let pg = PgServer::start();
    pg.psql("CREATE TABLE posts (id int PRIMARY KEY)");
    // A role without REPLICATION.
    pg.psql_db("app", "GRANT SELECT ON posts TO plain");
    let e = start_error(&pg.url_as("plain", "plain"), &["public.posts"]).expect("refused");
    assert!(e.contains("ALTER ROLE plain WITH REPLICATION"), "{e}");
    // A table that does not exist.
    let e = start_error(&pg.url(), &["public.nope"]).expect("refused");
    assert!(e.contains("public.nope does not exist"), "{e}");
    // A wrong password is not retried forever either.
    let e = start_error(&pg.url_as("ringcast", "wrong"), &["public.posts"]).expect("refused");
    assert!(e.contains("refused the login"), "{e}");
    assert!(!e.contains("wrong"), "the password is never printed: {e}");
    // A table owned by someone else: the publication cannot be created by ringcast.
    pg.psql_db("app", "CREATE TABLE theirs (id int PRIMARY KEY)");
    let e = start_error(&pg.url(), &["public.theirs"]).expect("refused");
    assert!(
        e.contains("CREATE PUBLICATION ringcast FOR TABLE public.theirs"),
        "{e}"
    );
    // What the role may do, it does: the same start with a table it owns works.
    assert_eq!(start_error(&pg.url(), &["public.posts"]), None);
}

#[test]
fn wal_level_replica_refuses_the_start() {
    let pg = PgServer::start_with("wal_level = replica");
    pg.psql("CREATE TABLE posts (id int PRIMARY KEY)");
    let e = start_error(&pg.url(), &["public.posts"]).expect("refused");
    assert!(e.contains("wal_level = replica"), "{e}");
    assert!(e.contains("ALTER SYSTEM SET wal_level = logical"), "{e}");
}

#[test]
fn an_unreachable_database_does_not_stop_the_broker() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Nothing listens there: the broker starts and keeps trying.
    let url = format!("postgres://ringcast:x@127.0.0.1:{port}/app");
    assert_eq!(start_error(&url, &["public.posts"]), None);
}

/// A reader thread that collects `message` frames until it has `n` (or times out).
fn collect(mut ws: common::Ws, n: usize, within: Duration) -> std::thread::JoinHandle<Vec<Value>> {
    std::thread::spawn(move || {
        ws.set_timeout(within);
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            out.push(ws.expect("message"));
        }
        // Anything more would be a duplicate.
        ws.expect_silence(Duration::from_millis(500));
        out
    })
}

#[test]
fn a_transaction_of_100k_rows_streams_through() {
    const N: usize = 100_000;
    let pg = PgServer::start();
    pg.psql("CREATE TABLE bulk (id int PRIMARY KEY, v text)");
    let s = TestServer::builder("auto")
        .with(|f| {
            f.postgres.url = pg.url();
            f.postgres.tables = vec!["bulk".into()];
            f.websocket.outbound_queue_frames = 2 * N;
            f.websocket.outbound_queue_bytes = 512 << 20;
            f.history.max_messages_per_channel = 2 * N;
        })
        .start();
    s.channel("db:*");
    let ws = subscribe(&s, "db:bulk", json!({"event": "INSERT"}));
    let got = collect(ws, N, Duration::from_secs(120));
    pg.psql(&format!(
        "INSERT INTO bulk SELECT g, 'row ' || g FROM generate_series(1, {N}) g"
    ));
    let got = got.join().expect("all rows arrive, once");
    let offsets: Vec<u64> = got.iter().map(|m| m["offset"].as_u64().unwrap()).collect();
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1), "one order");
    let ids: Vec<i64> = got
        .iter()
        .map(|m| m["payload"]["new"]["id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids, (1..=N as i64).collect::<Vec<_>>());
    let (_, st) = s.http("GET", "/api/realtime/messages/stats", None);
    assert_eq!(st["totalMessages"], N as u64, "{st}");
}

/// Inserts ids 1..=n one transaction each, retrying through server restarts; returns once
/// all are in.
fn writer(pg: std::sync::Arc<PgServer>, n: i64) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        for i in 1..=n {
            loop {
                match pg.try_psql("app", &format!("INSERT INTO w VALUES ({i})")) {
                    Ok(_) => break,
                    // Committed before the connection broke.
                    Err(e) if e.contains("duplicate key") => break,
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        }
    })
}

fn ids_of(msgs: &[Value]) -> Vec<i64> {
    let mut ids: Vec<i64> = msgs
        .iter()
        .map(|m| m["payload"]["new"]["id"].as_i64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

#[test]
fn postgres_restarted_fast_and_crashed_under_a_writer_loses_and_repeats_nothing() {
    const N: i64 = 300;
    let pg = std::sync::Arc::new(PgServer::start());
    pg.psql("CREATE TABLE w (id int PRIMARY KEY)");
    let s = node(&pg, "auto", &["w"]);
    let ws = subscribe(&s, "db:w", json!({}));
    let got = collect(ws, N as usize, Duration::from_secs(60));
    let w = writer(pg.clone(), N);
    let count = || {
        pg.try_psql("app", "SELECT count(*) FROM w")
            .ok()
            .and_then(|c| c.parse::<i64>().ok())
    };
    eventually("a third written", Duration::from_secs(60), || {
        count().unwrap_or(0) >= N / 3
    });
    pg.restart_fast();
    eventually("two thirds written", Duration::from_secs(60), || {
        count().unwrap_or(0) >= 2 * N / 3
    });
    pg.crash_and_start();
    pg.wait_ready();
    w.join().unwrap();
    let got = got.join().expect("every row arrives exactly once");
    let table: Vec<i64> = pg
        .psql("SELECT id FROM w ORDER BY id")
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
    assert_eq!(
        ids_of(&got),
        table,
        "the subscriber saw exactly the table's rows"
    );
    assert!(s.metric("ringcast_cdc_reconnects_total") >= 2);
}

#[test]
fn changes_go_to_webhooks_and_counts_like_any_publish() {
    use common::receiver::{Receiver, Reply};
    let pg = PgServer::start();
    pg.psql("CREATE TABLE orders (id int PRIMARY KEY, status text)");
    let hook = Receiver::start(vec![], Reply::Status(200));
    let s = TestServer::builder("auto")
        .with(|f| {
            f.postgres.url = pg.url();
            f.postgres.tables = vec!["orders".into()];
        })
        .start();
    let (st, _) = s.http(
        "POST",
        "/api/realtime/channels",
        Some(json!({"pattern": "db:orders", "webhookUrls": [hook.url("/hook")]})),
    );
    assert_eq!(st, 201);
    let mut ws = subscribe(&s, "db:orders", json!({}));
    pg.psql("INSERT INTO orders VALUES (7, 'new')");
    let m = next(&mut ws);
    let got = hook.wait_for(1, Duration::from_secs(20));
    let body = got[0].json();
    assert_eq!(got[0].header("X-InsForge-Event"), Some("INSERT"));
    assert_eq!(got[0].header("X-InsForge-Channel"), Some("db:orders"));
    assert_eq!(body["messageId"], m["messageId"]);
    assert_eq!(body["senderType"], "system");
    assert_eq!(body["payload"]["new"], json!({"id": 7, "status": "new"}));
    eventually(
        "audience and delivery counted",
        Duration::from_secs(10),
        || {
            let (_, h) = s.http("GET", "/api/realtime/messages?channelName=db:orders", None);
            h[0]["wsAudienceCount"] == 1 && h[0]["whDeliveredCount"] == 1
        },
    );
}

#[test]
fn tiny_queues_still_carry_a_large_transaction() {
    // The change stream holds queue slots for what it has in flight: with queues of 8 it must
    // send small batches, never wait on slots it holds itself.
    const N: usize = 3_000;
    let pg = PgServer::start();
    pg.psql("CREATE TABLE t (id int PRIMARY KEY)");
    let s = TestServer::builder("auto")
        .with(|f| {
            f.postgres.url = pg.url();
            f.postgres.tables = vec!["t".into()];
            f.server.core_queue = 8;
            f.server.engine_queue = 8;
            f.websocket.outbound_queue_frames = 2 * N;
        })
        .start();
    s.channel("db:*");
    let ws = subscribe(&s, "db:t", json!({}));
    let got = collect(ws, N, Duration::from_secs(60));
    pg.psql(&format!("INSERT INTO t SELECT generate_series(1, {N})"));
    let got = got.join().expect("all rows arrive, once");
    assert_eq!(ids_of(&got), (1..=N as i64).collect::<Vec<_>>());
}
