//! Policies end to end over real sockets: a `[policies]` file of `CREATE POLICY` statements
//! decides who may subscribe, publish and receive; `project_admin` bypasses them; row level
//! security can be turned off per table; `check-config` reports a bad file.

mod common;

use std::{path::PathBuf, time::Duration};

use common::*;
use serde_json::{Value, json};

const POLICIES: &str = r#"
-- Private user channels: user:<id> for that user only.
CREATE POLICY own_user ON realtime.channels FOR SELECT TO authenticated
  USING (realtime.channel_name() = 'user:' || auth.uid());
-- Team channels: team:<name> for members of that team (a claim in the token).
CREATE POLICY team_member ON realtime.channels FOR SELECT TO authenticated
  USING (split_part(realtime.channel_name(), ':', 1) = 'team'
         AND split_part(realtime.channel_name(), ':', 2) = auth.jwt() -> 'app_metadata' ->> 'team');
-- Public rooms, anon included; and the database changes channel.
CREATE POLICY rooms ON realtime.channels FOR SELECT TO anon, authenticated
  USING (pattern = 'room:*');
CREATE POLICY orders_feed ON realtime.channels FOR SELECT TO authenticated
  USING (realtime.channel_name() = 'db:orders');
-- Publish only your own events.
CREATE POLICY own_events ON realtime.messages FOR INSERT TO authenticated
  WITH CHECK (payload ->> 'user_id' = auth.uid());
-- Receive: everything, except database changes of other users' orders.
CREATE POLICY own_orders ON realtime.messages FOR SELECT TO authenticated
  USING (channel_name NOT LIKE 'db:%' OR payload -> 'new' ->> 'user_id' = auth.uid());
"#;

fn policies_file(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ringcast-policies-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

fn node_with(
    driver: &str,
    text: &str,
    tweak: impl FnOnce(&mut ringcast::config::FileConfig),
) -> TestServer {
    let path = policies_file(&format!("{driver}-{}.sql", text.len()), text);
    let node = TestServer::builder(driver)
        .with(|f| {
            f.policies.file = path.display().to_string();
            tweak(f);
        })
        .start();
    for p in ["user:*", "team:*", "room:*", "db:*"] {
        node.channel(p);
    }
    node
}

/// A token with extra claims (`app_metadata`), as an auth service would mint it.
fn token_with(sub: &str, role: &str, extra: Value) -> String {
    let mut claims = json!({"sub": sub, "role": role, "exp": 4_000_000_000u64});
    claims
        .as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn client_as(node: &TestServer, token: &str) -> Ws {
    let mut ws = node.ws();
    ws.auth(token);
    ws
}

fn subscribe_result(ws: &mut Ws, ch: &str) -> Value {
    ws.send(json!({"type": "subscribe", "channel": ch}));
    ws.recv()
}

fn assert_denied(v: &Value) {
    assert_eq!(v["type"], "error", "{v}");
    assert_eq!(v["code"], "FORBIDDEN", "{v}");
    assert_eq!(v["message"], "not allowed by policy", "{v}");
}

both_drivers!(private_user_and_team_channels, |driver| {
    let node = node_with(driver, POLICIES, |_| {});
    let mut u1 = client_as(
        &node,
        &token_with(
            "u1",
            "authenticated",
            json!({"app_metadata": {"team": "red"}}),
        ),
    );
    assert_eq!(subscribe_result(&mut u1, "user:u1")["type"], "subscribed");
    assert_denied(&subscribe_result(&mut u1, "user:u2"));
    assert_eq!(subscribe_result(&mut u1, "team:red")["type"], "subscribed");
    assert_denied(&subscribe_result(&mut u1, "team:blue"));
    assert_eq!(
        subscribe_result(&mut u1, "room:lobby")["type"],
        "subscribed"
    );
    // Without the claim, no team.
    let mut u2 = client_as(&node, &token("u2", "authenticated"));
    assert_denied(&subscribe_result(&mut u2, "team:red"));
    // anon: only what a policy grants it.
    let mut anon = client_as(&node, &token("visitor", "anon"));
    assert_eq!(
        subscribe_result(&mut anon, "room:lobby")["type"],
        "subscribed"
    );
    assert_denied(&subscribe_result(&mut anon, "user:visitor"));
    // project_admin bypasses policies.
    let mut admin = node.admin();
    assert_eq!(
        subscribe_result(&mut admin, "user:u2")["type"],
        "subscribed"
    );
    // A denied subscribe changed nothing: u1 receives nothing from user:u2.
    let mut p = client_as(&node, &token("u2", "authenticated"));
    p.publish("room:lobby", "hi", json!({"user_id": "u2"}));
    assert_eq!(u1.expect("message")["channel"], "room:lobby");
    u1.expect_silence(Duration::from_millis(100));
});

#[test]
fn publish_only_your_own_events_over_websocket_and_http() {
    let node = node_with("io_uring", POLICIES, |_| {});
    let mut sub = node.admin();
    sub.subscribe("room:lobby");
    let t = token("u1", "authenticated");
    let mut u1 = client_as(&node, &t);
    u1.publish("room:lobby", "e", json!({"user_id": "u1", "text": "mine"}));
    for bad in [
        json!({"user_id": "u2"}),
        json!({"text": "no user"}),
        json!("not an object"),
    ] {
        u1.send(json!({"type": "publish", "channel": "room:lobby", "event": "e", "payload": bad}));
        assert_denied(&u1.expect("error"));
    }
    let (st, v) = http(
        node.addr,
        "POST",
        "/api/realtime/messages",
        Some(&t),
        Some(json!({"channel": "room:lobby", "event": "e", "payload": {"user_id": "u9"}})),
    );
    assert_eq!((st, v["error"].as_str()), (403, Some("FORBIDDEN")), "{v}");
    let (st, _) = http(
        node.addr,
        "POST",
        "/api/realtime/messages",
        Some(&t),
        Some(json!({"channel": "room:lobby", "event": "e", "payload": {"user_id": "u1"}})),
    );
    assert_eq!(st, 201);
    // Exactly the two allowed publishes were delivered and stored.
    assert_eq!(sub.expect("message")["payload"]["text"], "mine");
    assert_eq!(sub.expect("message")["payload"]["user_id"], "u1");
    sub.expect_silence(Duration::from_millis(100));
    let (_, hist) = node.http("GET", "/api/realtime/messages?channelName=room:lobby", None);
    assert_eq!(hist.as_array().unwrap().len(), 2);
}

both_drivers!(receive_policies_filter_each_subscriber, |driver| {
    let node = node_with(driver, POLICIES, |_| {});
    let mut u1 = client_as(&node, &token("u1", "authenticated"));
    let mut u2 = client_as(&node, &token("u2", "authenticated"));
    u1.subscribe("db:orders");
    u2.subscribe("db:orders");
    u1.subscribe("room:lobby");
    u2.subscribe("room:lobby");
    let mut admin = node.admin();
    for owner in ["u1", "u2", "u1"] {
        admin.publish(
            "db:orders",
            "INSERT",
            json!({"table": "orders", "new": {"user_id": owner, "total": 3}}),
        );
    }
    admin.publish("room:lobby", "e", json!({"any": 1}));
    let got = |ws: &mut Ws, n: usize| -> Vec<(String, u64)> {
        (0..n)
            .map(|_| {
                let m = ws.expect("message");
                (
                    m["channel"].as_str().unwrap().to_string(),
                    m["offset"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        got(&mut u1, 3),
        vec![
            ("db:orders".into(), 1),
            ("db:orders".into(), 3),
            ("room:lobby".into(), 1)
        ]
    );
    assert_eq!(
        got(&mut u2, 2),
        vec![("db:orders".into(), 2), ("room:lobby".into(), 1)]
    );
    u1.expect_silence(Duration::from_millis(100));
    u2.expect_silence(Duration::from_millis(100));
    // Recovery applies the same decision to the history it replays.
    let epoch = {
        let mut s = client_as(&node, &token("u2", "authenticated"));
        s.subscribe("room:x")["epoch"].as_str().unwrap().to_string()
    };
    let mut back = client_as(&node, &token("u2", "authenticated"));
    back.send(json!({"type": "subscribe", "channel": "db:orders", "since": {"offset": 0, "epoch": epoch}}));
    assert_eq!(back.expect("subscribed")["recovered"], true);
    assert_eq!(back.expect("message")["offset"], 2);
    back.expect_silence(Duration::from_millis(100));
});

#[test]
fn row_level_security_off_allows_everything_on_that_table() {
    let node = node_with("legacy", POLICIES, |f| f.policies.rls_channels = false);
    let mut anon = client_as(&node, &token("visitor", "anon"));
    assert_eq!(
        subscribe_result(&mut anon, "user:someone")["type"],
        "subscribed"
    );
    // Publishing still follows its policies (RLS stays on for realtime.messages).
    anon.send(json!({"type": "publish", "channel": "user:someone", "event": "e", "payload": {}}));
    assert_denied(&anon.expect("error"));
    let (_, perms) = node.http("GET", "/api/realtime/permissions", None);
    let names: Vec<&str> = perms["subscribe"]["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policyName"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["own_user", "team_member", "rooms", "orders_feed"]);
    let own = &perms["subscribe"]["policies"][0];
    assert_eq!(
        own["using"], "realtime.channel_name() = 'user:' || auth.uid()",
        "as written"
    );
    assert_eq!(own["roles"], json!(["authenticated"]));
    assert_eq!(
        perms["publish"]["policies"][0]["withCheck"],
        "payload ->> 'user_id' = auth.uid()"
    );
}

#[test]
fn a_bad_policies_file_is_refused_with_every_problem() {
    let bad = policies_file(
        "bad.sql",
        "CREATE POLICY a ON realtime.channels FOR SELECT USING (now() > 1);\n\
         CREATE POLICY b ON public.users FOR SELECT USING (true);\n\
         CREATE POLICY c ON realtime.channels FOR SELECT USING (EXISTS (SELECT 1));",
    );
    let cfg = policies_file(
        "bad.toml",
        &format!("[policies]\nfile = \"{}\"\n", bad.display()),
    );
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_ringcast"))
        .args(["check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("now"), "{text}");
    assert!(
        text.contains("public.users") || text.contains("users"),
        "{text}"
    );
    assert!(text.contains("statement 3"), "{text}");
    assert!(text.contains("line 1, column"), "{text}");
}

fn expect_unsubscribed_by_policy(ws: &mut Ws, ch: &str) {
    let m = ws.expect("unsubscribed");
    assert_eq!(m["channel"], ch, "{m}");
    assert_eq!(m["reason"], "not allowed by policy", "{m}");
}

const OWN_USER: &str = "CREATE POLICY own_user ON realtime.channels FOR SELECT TO authenticated USING (realtime.channel_name() = 'user:' || auth.uid())";

both_drivers!(policies_managed_at_run_time, |driver| {
    let node = TestServer::start(driver);
    node.channel("user:*");
    let mut mine = client_as(&node, &token("u1", "authenticated"));
    mine.subscribe("user:u1");
    let mut theirs = client_as(&node, &token("u1", "authenticated"));
    theirs.subscribe("user:u2");
    // Add a private-channel policy: 201 with the policy as GET /permissions shows it.
    let (st, v) = node.http(
        "POST",
        "/api/realtime/permissions/policies",
        Some(json!({ "sql": OWN_USER })),
    );
    assert_eq!(st, 201, "{v}");
    assert_eq!(v["policyName"], "own_user");
    assert_eq!(
        v["using"],
        "realtime.channel_name() = 'user:' || auth.uid()"
    );
    // A duplicate name, bad SQL, an unsupported construct: clear errors, nothing changed.
    let (st, v) = node.http(
        "POST",
        "/api/realtime/permissions/policies",
        Some(json!({ "sql": OWN_USER })),
    );
    assert_eq!(st, 409, "{v}");
    let (st, v) = node.http(
        "POST",
        "/api/realtime/permissions/policies",
        Some(json!({"sql": "CREATE POLICY x ON realtime.channels FOR SELECT USING (now() > 1)"})),
    );
    assert_eq!(st, 400, "{v}");
    assert!(v["message"].as_str().unwrap().contains("now"), "{v}");
    // Removing the default subscribe policy leaves only own_user: the subscriber of another
    // user's channel is unsubscribed with the reason; the owner keeps its subscription.
    let (st, _) = node.http(
        "DELETE",
        "/api/realtime/permissions/policies/allow_authenticated_subscribe",
        None,
    );
    assert_eq!(st, 204);
    expect_unsubscribed_by_policy(&mut theirs, "user:u2");
    assert_denied(&subscribe_result(&mut theirs, "user:u2"));
    let mut admin = node.admin();
    admin.publish("user:u1", "e", json!(1));
    assert_eq!(mine.expect("message")["channel"], "user:u1");
    let (st, _) = node.http("DELETE", "/api/realtime/permissions/policies/nope", None);
    assert_eq!(st, 404);
    let (_, perms) = node.http("GET", "/api/realtime/permissions", None);
    assert_eq!(perms["subscribe"]["policies"].as_array().unwrap().len(), 1);
    // Row level security off on realtime.channels: everyone may subscribe again.
    let (st, v) = node.http(
        "PUT",
        "/api/realtime/permissions/rls",
        Some(json!({"channels": false, "messages": true})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        subscribe_result(&mut theirs, "user:u2")["type"],
        "subscribed"
    );
    let (st, _) = node.http(
        "PUT",
        "/api/realtime/permissions/rls",
        Some(json!({"channels": false})),
    );
    assert_eq!(st, 400, "both tables are given");
    // Only project_admin manages policies.
    let (st, _) = http(
        node.addr,
        "POST",
        "/api/realtime/permissions/policies",
        Some(&token("u1", "authenticated")),
        Some(json!({ "sql": OWN_USER })),
    );
    assert_eq!(st, 403);
});

#[test]
fn a_policy_change_reaches_every_node() {
    let redis = common::redis::RedisServer::start();
    let a = TestServer::builder("io_uring").redis(&redis.url()).start();
    let b = TestServer::builder("legacy").redis(&redis.url()).start();
    a.channel("user:*");
    eventually("channel on B", Duration::from_secs(5), || {
        let (_, l) = b.http("GET", "/api/realtime/channels", None);
        l.as_array().is_some_and(|l| !l.is_empty())
    });
    let mut theirs = client_as(&b, &token("u1", "authenticated"));
    theirs.subscribe("user:u2");
    let (st, _) = a.http(
        "POST",
        "/api/realtime/permissions/policies",
        Some(json!({ "sql": OWN_USER })),
    );
    assert_eq!(st, 201);
    let (st, _) = a.http(
        "DELETE",
        "/api/realtime/permissions/policies/allow_authenticated_subscribe",
        None,
    );
    assert_eq!(st, 204);
    // Node B applies it: its subscriber is told, and new subscribes are decided by it.
    expect_unsubscribed_by_policy(&mut theirs, "user:u2");
    assert_denied(&subscribe_result(&mut theirs, "user:u2"));
    let (_, perms) = b.http("GET", "/api/realtime/permissions", None);
    assert_eq!(perms["subscribe"]["policies"][0]["policyName"], "own_user");
    // A node started later takes the saved set, not its configuration's defaults.
    let c = TestServer::builder("io_uring").redis(&redis.url()).start();
    let mut late = client_as(&c, &token("u1", "authenticated"));
    assert_denied(&subscribe_result(&mut late, "user:u2"));
    assert_eq!(subscribe_result(&mut late, "user:u1")["type"], "subscribed");
}
