//! Authentication and authorization, on the socket and on REST: HS256 JWTs (valid, expired,
//! wrong secret, `alg: none`, unknown role), the admin key, the anon switches, the auth
//! timeout, and the REST admin requirement. Runs on both drivers.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use ringcast::auth::Claims;
use serde_json::{Value, json};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn jwt(secret: &str, claims: &Claims) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

fn claims(sub: &str, role: Option<&str>, exp: Option<u64>) -> Claims {
    Claims {
        sub: sub.into(),
        role: role.map(str::to_string),
        exp,
        iat: Some(now()),
        email: None,
    }
}

fn b64url(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for c in data.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

/// An unsigned token (`alg: none`) claiming to be a project admin.
fn alg_none_token(sub: &str) -> String {
    format!(
        "{}.{}.",
        b64url(br#"{"alg":"none","typ":"JWT"}"#),
        b64url(
            json!({"sub": sub, "role": "project_admin"})
                .to_string()
                .as_bytes()
        )
    )
}

/// Sends an auth message; expects the seed's error for a bad token.
fn expect_invalid_token(ws: &mut Ws, token: &str) {
    ws.send(json!({"type": "auth", "token": token}));
    let e = ws.expect("error");
    assert_eq!(e["code"], "INVALID_TOKEN", "{e}");
    assert_eq!(e["message"], "Invalid token", "{e}");
}

/// The socket is still open and unauthenticated: a subscribe is refused as UNAUTHORIZED.
fn expect_still_unauthed(ws: &mut Ws) {
    ws.send(json!({"type": "subscribe", "channel": "a:1"}));
    let e = ws.expect("error");
    assert_eq!(e["code"], "UNAUTHORIZED", "{e}");
}

both_drivers!(valid_token_authenticates_with_its_sub, |driver| {
    let s = TestServer::start(driver);
    let mut ws = s.ws();
    let ok = ws.auth(&token("user-42", "authenticated"));
    assert_eq!(ok["userId"], "user-42");
    assert_eq!(ok["role"], "authenticated");
    // `role` defaults to `authenticated`.
    let mut ws2 = s.ws();
    let ok = ws2.auth(&jwt(SECRET, &claims("u7", None, Some(now() + 60))));
    assert_eq!(ok["userId"], "u7");
    assert_eq!(ok["role"], "authenticated");
    // No `exp` at all is accepted (exp is enforced only when present).
    let mut ws3 = s.ws();
    let ok = ws3.auth(&jwt(SECRET, &claims("u8", Some("authenticated"), None)));
    assert_eq!(ok["userId"], "u8");
    s.shutdown();
});

both_drivers!(expired_token_is_refused_and_socket_stays_open, |driver| {
    let s = TestServer::start(driver);
    s.channel("a:*");
    let mut ws = s.ws();
    let expired = jwt(
        SECRET,
        &claims("u1", Some("authenticated"), Some(now() - 60)),
    );
    expect_invalid_token(&mut ws, &expired);
    expect_still_unauthed(&mut ws);
    let ok = ws.auth(&token("u1", "authenticated"));
    assert_eq!(ok["userId"], "u1");
    ws.subscribe("a:1");
    s.shutdown();
});

both_drivers!(wrong_secret_token_is_refused, |driver| {
    let s = TestServer::start(driver);
    s.channel("a:*");
    let mut ws = s.ws();
    let forged = ringcast::auth::mint(
        "not-the-secret",
        "u1",
        "project_admin",
        Duration::from_secs(60),
        None,
    );
    expect_invalid_token(&mut ws, &forged);
    expect_still_unauthed(&mut ws);
    ws.auth(&token("u1", "authenticated"));
    ws.subscribe("a:1");
    s.shutdown();
});

both_drivers!(alg_none_token_is_refused, |driver| {
    let s = TestServer::start(driver);
    s.channel("a:*");
    // The encoder above really produces the classic unsigned header.
    assert!(alg_none_token("u").starts_with("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0."));
    let mut ws = s.ws();
    expect_invalid_token(&mut ws, &alg_none_token("mallory"));
    // A real signature's worth of junk after it changes nothing.
    expect_invalid_token(&mut ws, &format!("{}AAAA", alg_none_token("mallory")));
    expect_still_unauthed(&mut ws);
    // Nor on REST.
    let (st, v) = http(
        s.addr,
        "GET",
        "/api/realtime/channels",
        Some(&alg_none_token("mallory")),
        None,
    );
    assert_eq!(st, 401, "{v}");
    assert_eq!(v["error"], "UNAUTHORIZED");
    ws.auth(&token("u1", "authenticated"));
    ws.subscribe("a:1");
    s.shutdown();
});

both_drivers!(malformed_tokens_are_refused, |driver| {
    let s = TestServer::start(driver);
    let mut ws = s.ws();
    let unknown_role = jwt(SECRET, &claims("u1", Some("root"), Some(now() + 60)));
    let empty_sub = jwt(SECRET, &claims("", Some("authenticated"), Some(now() + 60)));
    for t in ["", "garbage", "a.b.c", &unknown_role, &empty_sub] {
        expect_invalid_token(&mut ws, t);
    }
    expect_still_unauthed(&mut ws);
    ws.auth(&token("u1", "authenticated"));
    s.shutdown();
});

both_drivers!(admin_key_on_socket_publishes_as_system, |driver| {
    let s = TestServer::start(driver);
    s.channel("a:*");
    let mut sub = s.client("watcher");
    sub.subscribe("a:1");
    let mut admin = s.ws();
    let ok = admin.auth(ADMIN_KEY);
    assert_eq!(ok["role"], "project_admin");
    assert_eq!(ok["userId"], Value::Null);
    let ack = admin.publish("a:1", "announce", json!({"x": 1}));
    let m = sub.expect("message");
    assert_eq!(m["messageId"], ack["messageId"]);
    assert_eq!(m["senderType"], "system");
    assert_eq!(m["senderId"], Value::Null);
    // A project_admin JWT publishes as system too, with its sub as sender.
    let mut admin_jwt = s.ws();
    admin_jwt.auth(&token("boss", "project_admin"));
    admin_jwt.publish("a:1", "announce", json!(2));
    let m = sub.expect("message");
    assert_eq!(m["senderType"], "system");
    assert_eq!(m["senderId"], "boss");
    // A user publishes as user.
    let mut user = s.client("joe");
    user.publish("a:1", "chat", json!(3));
    let m = sub.expect("message");
    assert_eq!(m["senderType"], "user");
    assert_eq!(m["senderId"], "joe");
    // A near miss of the admin key is just a bad token.
    let mut ws = s.ws();
    expect_invalid_token(&mut ws, &format!("{ADMIN_KEY}x"));
    s.shutdown();
});

both_drivers!(anon_may_do_nothing_by_default, |driver| {
    let s = TestServer::start(driver);
    s.channel("a:*");
    let mut watcher = s.client("watcher");
    watcher.subscribe("a:1");
    let mut anon = s.ws();
    let ok = anon.auth(&token("visitor", "anon"));
    assert_eq!(ok["role"], "anon");
    anon.send(json!({"type": "subscribe", "channel": "a:1", "ref": 1}));
    let e = anon.expect("error");
    assert_eq!(e["code"], "FORBIDDEN", "{e}");
    assert_eq!(e["ref"], 1);
    anon.send(json!({"type": "publish", "channel": "a:1", "event": "e", "payload": {}}));
    let e = anon.expect("error");
    assert_eq!(e["code"], "FORBIDDEN", "{e}");
    watcher.expect_silence(Duration::from_millis(150));
    // An unknown channel is still reported as not found.
    anon.send(json!({"type": "subscribe", "channel": "nosuch:1"}));
    assert_eq!(anon.expect("error")["code"], "CHANNEL_NOT_FOUND");
    s.shutdown();
});

both_drivers!(anon_subscribe_switch_allows_only_subscribe, |driver| {
    let s = TestServer::builder(driver)
        .with(|f| f.auth.anon_subscribe = true)
        .start();
    s.channel("a:*");
    let mut anon = s.ws();
    anon.auth(&token("visitor", "anon"));
    anon.subscribe("a:1");
    anon.send(json!({"type": "publish", "channel": "a:1", "event": "e", "payload": {}}));
    assert_eq!(anon.expect("error")["code"], "FORBIDDEN");
    let mut user = s.client("u1");
    let ack = user.publish("a:1", "e", json!(1));
    assert_eq!(anon.expect("message")["messageId"], ack["messageId"]);
    s.shutdown();
});

both_drivers!(anon_publish_switch_allows_publish, |driver| {
    let s = TestServer::builder(driver)
        .with(|f| {
            f.auth.anon_subscribe = true;
            f.auth.anon_publish = true;
        })
        .start();
    s.channel("a:*");
    let mut anon = s.ws();
    anon.auth(&token("visitor", "anon"));
    anon.subscribe("a:1");
    let ack = anon.publish("a:1", "e", json!({"hi": 1}));
    let m = anon.expect("message");
    assert_eq!(m["messageId"], ack["messageId"]);
    assert_eq!(m["senderId"], "visitor");
    assert_eq!(m["senderType"], "user");
    s.shutdown();
});

both_drivers!(
    unauthenticated_socket_is_closed_after_auth_timeout,
    |driver| {
        let s = TestServer::builder(driver)
            .with(|f| f.auth.auth_timeout = "300ms".into())
            .start();
        s.channel("a:*");
        let opened = Instant::now();
        let mut silent = s.ws();
        let mut failed = s.ws();
        let mut good = s.ws();
        good.auth(&token("u1", "authenticated"));
        // A failed attempt does not count as authenticating.
        expect_invalid_token(&mut failed, "garbage");
        let (code, reason) = silent.expect_close();
        let waited = opened.elapsed();
        assert_eq!(code, 1008, "{reason}");
        assert!(
            waited >= Duration::from_millis(280),
            "closed after {waited:?}"
        );
        assert!(
            waited < Duration::from_millis(1500),
            "closed after {waited:?}"
        );
        assert_eq!(failed.expect_close().0, 1008);
        // The authenticated socket, opened at the same time, is still served.
        let r = good.subscribe("a:1");
        assert_eq!(r["channel"], "a:1");
        s.shutdown();
    }
);

both_drivers!(rest_requires_project_admin, |driver| {
    let s = TestServer::start(driver);
    let path = "/api/realtime/channels";
    let cases: Vec<(Option<String>, u16, &str)> = vec![
        (None, 401, "UNAUTHORIZED"),
        (Some("garbage".into()), 401, "UNAUTHORIZED"),
        (
            Some(jwt(
                SECRET,
                &claims("u1", Some("project_admin"), Some(now() - 5)),
            )),
            401,
            "UNAUTHORIZED",
        ),
        (
            Some(ringcast::auth::mint(
                "wrong",
                "u1",
                "project_admin",
                Duration::from_secs(60),
                None,
            )),
            401,
            "UNAUTHORIZED",
        ),
        (Some(token("u1", "authenticated")), 403, "FORBIDDEN"),
        (Some(token("u1", "anon")), 403, "FORBIDDEN"),
    ];
    for (bearer, status, code) in cases {
        let (st, v) = http(s.addr, "GET", path, bearer.as_deref(), None);
        assert_eq!(st, status, "{bearer:?}: {v}");
        assert_eq!(v["error"], code, "{v}");
        assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    }
    // Not a bearer scheme.
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {ADMIN_KEY}\r\nConnection: close\r\n\r\n"
    );
    assert_eq!(raw_http(s.addr, req.as_bytes()).0, 401);
    // Admins.
    let (st, v) = http(s.addr, "GET", path, Some(ADMIN_KEY), None);
    assert_eq!(st, 200, "{v}");
    assert_eq!(v, json!([]));
    let (st, v) = http(
        s.addr,
        "GET",
        path,
        Some(&token("boss", "project_admin")),
        None,
    );
    assert_eq!(st, 200, "{v}");
    // Every admin route refuses a plain user.
    for p in [
        "/api/realtime/messages",
        "/api/realtime/messages/stats",
        "/api/realtime/permissions",
        "/api/realtime/channels/550e8400-e29b-41d4-a716-446655440000",
    ] {
        let (st, _) = http(s.addr, "GET", p, Some(&token("u1", "authenticated")), None);
        assert_eq!(st, 403, "{p}");
        let (st, _) = http(s.addr, "GET", p, None, None);
        assert_eq!(st, 401, "{p}");
    }
    // A user cannot create channels either.
    let (st, _) = http(
        s.addr,
        "POST",
        path,
        Some(&token("u1", "authenticated")),
        Some(json!({"pattern": "x:*"})),
    );
    assert_eq!(st, 403);
    let (st, v) = s.http("GET", path, None);
    assert_eq!((st, v), (200, json!([])), "nothing was created");
    s.shutdown();
});
