//! The REST API and the HTTP/1.1 layer under it: channel CRUD in the seed's shape, JSON errors
//! with their statuses, request limits (431, 413, 411, 400), keep-alive and pipelining, slow or
//! silent clients, and the permissions route. Runs on both drivers.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::{Duration, Instant},
};

use common::*;
use serde_json::{Value, json};

const CHANNELS: &str = "/api/realtime/channels";

/// Raw exchange over a fresh connection: (status, head, body).
fn exchange(addr: std::net::SocketAddr, req: &[u8]) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(req).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// Reads exactly one response (head + Content-Length body) from a kept-alive connection.
fn read_response(s: &mut TcpStream) -> (u16, String, String) {
    let (status, head) = read_head(s);
    let len: usize = header(&head, "content-length")
        .map(|v| v.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (status, head, String::from_utf8(body).unwrap())
}

/// Reads one response head (up to the blank line) and nothing more.
fn read_head(s: &mut TcpStream) -> (u16, String) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).expect("read head");
        assert_eq!(
            n,
            1,
            "connection closed mid-head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).unwrap();
    assert!(head.starts_with("HTTP/1.1 "), "not a status line: {head:?}");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head)
}

/// A header's value (name matched case-insensitively).
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn assert_error(status: u16, v: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{v}");
    assert_eq!(v["error"], code, "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
}

/// A request with an arbitrary (possibly invalid) body text, as the admin.
fn admin_raw(s: &TestServer, method: &str, path: &str, body: &str) -> (u16, Value) {
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let (st, text) = raw_http(s.addr, req.as_bytes());
    (
        st,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn is_timestamp(v: &Value) -> bool {
    // 2024-01-15T10:30:00.123Z
    v.as_str().is_some_and(|t| {
        t.len() == 24 && t.ends_with('Z') && t.as_bytes()[10] == b'T' && t.as_bytes()[19] == b'.'
    })
}

both_drivers!(create_returns_the_full_record, |driver| {
    let s = TestServer::start(driver);
    let (st, v) = s.http(
        "POST",
        CHANNELS,
        Some(json!({
            "pattern": "order:*",
            "description": "Order updates channel",
            "webhookUrls": ["https://example.com/webhook"],
            "enabled": true
        })),
    );
    assert_eq!(st, 201, "{v}");
    let id = v["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{id}");
    assert_eq!(v["pattern"], "order:*");
    assert_eq!(v["description"], "Order updates channel");
    assert_eq!(v["webhookUrls"], json!(["https://example.com/webhook"]));
    assert_eq!(v["enabled"], true);
    assert!(is_timestamp(&v["createdAt"]), "{v}");
    assert_eq!(v["createdAt"], v["updatedAt"]);
    let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "createdAt",
            "description",
            "enabled",
            "id",
            "pattern",
            "updatedAt",
            "webhookUrls"
        ]
    );
    s.shutdown();
});

both_drivers!(create_defaults, |driver| {
    let s = TestServer::start(driver);
    let v = s.channel("chat:*");
    assert_eq!(v["enabled"], true);
    assert_eq!(v["description"], Value::Null);
    assert_eq!(v["webhookUrls"], Value::Null);
    // Created disabled on request.
    let (st, v) = s.http(
        "POST",
        CHANNELS,
        Some(json!({"pattern": "off:*", "enabled": false})),
    );
    assert_eq!(st, 201);
    assert_eq!(v["enabled"], false);
    // `%` patterns and exact names are valid too.
    s.channel("chat:%:messages");
    s.channel("system");
    s.shutdown();
});

both_drivers!(duplicate_pattern_is_conflict, |driver| {
    let s = TestServer::start(driver);
    s.channel("order:*");
    let (st, v) = s.http("POST", CHANNELS, Some(json!({"pattern": "order:*"})));
    assert_error(st, &v, 409, "CONFLICT");
    // Even when the first one is disabled.
    let (st, off) = s.http(
        "POST",
        CHANNELS,
        Some(json!({"pattern": "off:*", "enabled": false})),
    );
    assert_eq!(st, 201);
    let (st, v) = s.http("POST", CHANNELS, Some(json!({"pattern": "off:*"})));
    assert_error(st, &v, 409, "CONFLICT");
    // Renaming onto a taken pattern conflicts as well; keeping one's own pattern does not.
    let path = format!("{CHANNELS}/{}", off["id"].as_str().unwrap());
    let (st, v) = s.http("PUT", &path, Some(json!({"pattern": "order:*"})));
    assert_error(st, &v, 409, "CONFLICT");
    let (st, v) = s.http("PUT", &path, Some(json!({"pattern": "off:*"})));
    assert_eq!(st, 200, "{v}");
    let (_, list) = s.http("GET", CHANNELS, None);
    assert_eq!(list.as_array().unwrap().len(), 2);
    s.shutdown();
});

both_drivers!(invalid_create_bodies_are_bad_requests, |driver| {
    let s = TestServer::start(driver);
    let bodies = [
        json!({"pattern": ""}),
        json!({"pattern": "a b"}),
        json!({"pattern": "a::b"}),
        json!({"pattern": "order:"}),
        json!({"pattern": ":x"}),
        json!({"pattern": "caf\u{e9}:*"}),
        json!({"pattern": "a".repeat(256)}),
        json!({"pattern": 5}),
        json!({"description": "no pattern"}),
        json!({"pattern": "x:*", "enabled": "yes"}),
        json!({"pattern": "x:*", "webhookUrls": "https://example.com"}),
        json!({"pattern": "x:*", "webhookUrls": ["ftp://example.com/x"]}),
        json!({"pattern": "x:*", "webhookUrls": ["not a url"]}),
        json!({"pattern": "x:*", "description": "d".repeat(5000)}),
        // Unknown field.
        json!({"pattern": "x:*", "name": "typo"}),
        json!([]),
    ];
    for b in bodies {
        let (st, v) = s.http("POST", CHANNELS, Some(b.clone()));
        assert_eq!(st, 400, "for {b}: {v}");
        assert_eq!(v["error"], "BAD_REQUEST", "for {b}: {v}");
    }
    let (_, list) = s.http("GET", CHANNELS, None);
    assert_eq!(list, json!([]), "nothing was created");
    s.shutdown();
});

both_drivers!(malformed_and_empty_bodies_are_bad_requests, |driver| {
    let s = TestServer::start(driver);
    for body in ["{oops", "{\"pattern\":\"x:*\"", "pattern=x", "\u{0}", ""] {
        let (st, v) = admin_raw(&s, "POST", CHANNELS, body);
        assert_error(st, &v, 400, "BAD_REQUEST");
    }
    let id = s.channel("x:*")["id"].as_str().unwrap().to_string();
    for body in ["{oops", ""] {
        let (st, v) = admin_raw(&s, "PUT", &format!("{CHANNELS}/{id}"), body);
        assert_error(st, &v, 400, "BAD_REQUEST");
    }
    s.shutdown();
});

both_drivers!(get_by_id, |driver| {
    let s = TestServer::start(driver);
    let created = s.channel("order:*");
    let id = created["id"].as_str().unwrap();
    let (st, v) = s.http("GET", &format!("{CHANNELS}/{id}"), None);
    assert_eq!(st, 200);
    assert_eq!(v, created);
    let (st, v) = s.http("GET", &format!("{CHANNELS}/{}", uuid::Uuid::new_v4()), None);
    assert_error(st, &v, 404, "NOT_FOUND");
    for bad in ["not-a-uuid", "123", "550e8400-e29b-41d4-a716-44665544000g"] {
        let (st, v) = s.http("GET", &format!("{CHANNELS}/{bad}"), None);
        assert_error(st, &v, 400, "BAD_REQUEST");
    }
    s.shutdown();
});

both_drivers!(put_is_a_partial_update, |driver| {
    let s = TestServer::start(driver);
    let (_, created) = s.http(
        "POST",
        CHANNELS,
        Some(json!({
            "pattern": "order:*",
            "description": "before",
            "webhookUrls": ["https://example.com/a"]
        })),
    );
    let path = format!("{CHANNELS}/{}", created["id"].as_str().unwrap());
    let (st, v) = s.http("PUT", &path, Some(json!({"description": "after"})));
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["description"], "after");
    for same in ["id", "pattern", "webhookUrls", "enabled", "createdAt"] {
        assert_eq!(v[same], created[same], "{same} must not change");
    }
    assert!(is_timestamp(&v["updatedAt"]));
    assert!(
        v["updatedAt"].as_str().unwrap() > created["updatedAt"].as_str().unwrap(),
        "updatedAt must move: {} -> {}",
        created["updatedAt"],
        v["updatedAt"]
    );
    // The stored record is the one returned.
    let (_, got) = s.http("GET", &path, None);
    assert_eq!(got, v);
    // `null` clears an optional field; the rest stays.
    let (st, v2) = s.http("PUT", &path, Some(json!({"webhookUrls": null})));
    assert_eq!(st, 200);
    assert_eq!(v2["webhookUrls"], Value::Null);
    assert_eq!(v2["description"], "after");
    assert!(v2["updatedAt"].as_str().unwrap() > v["updatedAt"].as_str().unwrap());
    // Bad updates change nothing.
    for bad in [
        json!({"pattern": "bad pattern"}),
        json!({"enabled": 1}),
        json!({"id": "x"}),
        json!({"createdAt": "2024-01-01T00:00:00Z"}),
    ] {
        let (st, e) = s.http("PUT", &path, Some(bad.clone()));
        assert_error(st, &e, 400, "BAD_REQUEST");
    }
    let (_, got) = s.http("GET", &path, None);
    assert_eq!(got, v2);
    // Unknown id.
    let (st, e) = s.http(
        "PUT",
        &format!("{CHANNELS}/{}", uuid::Uuid::new_v4()),
        Some(json!({"enabled": false})),
    );
    assert_error(st, &e, 404, "NOT_FOUND");
    s.shutdown();
});

both_drivers!(patch_updates_too, |driver| {
    let s = TestServer::start(driver);
    let created = s.channel("order:*");
    let path = format!("{CHANNELS}/{}", created["id"].as_str().unwrap());
    let (st, v) = s.http(
        "PATCH",
        &path,
        Some(json!({"enabled": false, "pattern": "orders:*"})),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["enabled"], false);
    assert_eq!(v["pattern"], "orders:*");
    assert_eq!(v["description"], Value::Null);
    assert_eq!(v["createdAt"], created["createdAt"]);
    let (_, got) = s.http("GET", &path, None);
    assert_eq!(got, v);
    s.shutdown();
});

both_drivers!(delete_then_get_is_not_found, |driver| {
    let s = TestServer::start(driver);
    let keep = s.channel("keep:*");
    let created = s.channel("order:*");
    let path = format!("{CHANNELS}/{}", created["id"].as_str().unwrap());
    let (st, v) = s.http("DELETE", &path, None);
    assert_eq!(st, 204);
    assert_eq!(v, Value::Null, "204 has no body");
    let (st, v) = s.http("GET", &path, None);
    assert_error(st, &v, 404, "NOT_FOUND");
    let (st, v) = s.http("DELETE", &path, None);
    assert_error(st, &v, 404, "NOT_FOUND");
    let (_, list) = s.http("GET", CHANNELS, None);
    assert_eq!(list, json!([keep]));
    // The pattern is free again.
    s.channel("order:*");
    s.shutdown();
});

both_drivers!(list_returns_every_channel_in_creation_order, |driver| {
    let s = TestServer::start(driver);
    let (st, v) = s.http("GET", CHANNELS, None);
    assert_eq!((st, v), (200, json!([])));
    let a = s.channel("a:*");
    let b = s.channel("b:*");
    let c = s.channel("c");
    let (st, v) = s.http("GET", CHANNELS, None);
    assert_eq!(st, 200);
    assert_eq!(v, json!([a, b, c]));
    // Trailing slash is the same route.
    let (st, v2) = s.http("GET", &format!("{CHANNELS}/"), None);
    assert_eq!(st, 200);
    assert_eq!(v2, v);
    s.shutdown();
});

both_drivers!(unknown_route_is_json_404, |driver| {
    let s = TestServer::start(driver);
    for p in [
        "/nope",
        "/api/realtime",
        "/api/realtime/channel",
        "/api/realtime/channels/a/b",
        "/api/realtime/messages/x",
        "/",
    ] {
        let (st, head, body) = exchange(
            s.addr,
            format!("GET {p} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(st, 404, "{p}");
        assert_eq!(header(&head, "content-type"), Some("application/json"));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_error(st, &v, 404, "NOT_FOUND");
    }
    s.shutdown();
});

both_drivers!(wrong_method_is_405_with_allow, |driver| {
    let s = TestServer::start(driver);
    let id = uuid::Uuid::new_v4();
    let cases = [
        ("DELETE", CHANNELS.to_string(), "GET, POST"),
        (
            "POST",
            format!("{CHANNELS}/{id}"),
            "GET, PUT, PATCH, DELETE",
        ),
        ("POST", "/health".into(), "GET"),
        ("PUT", "/api/realtime/messages".into(), "GET, POST"),
        ("DELETE", "/api/realtime/permissions".into(), "GET"),
        ("POST", "/realtime".into(), "GET"),
    ];
    for (m, p, allow) in cases {
        let (st, head, body) = exchange(
            s.addr,
            format!(
                "{m} {p} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        );
        assert_eq!(st, 405, "{m} {p}");
        assert_eq!(header(&head, "allow"), Some(allow), "{m} {p}: {head}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "METHOD_NOT_ALLOWED");
    }
    s.shutdown();
});

both_drivers!(oversize_headers_are_431, |driver| {
    let s = TestServer::builder(driver)
        .with(|f| f.http.max_header_bytes = 1024)
        .start();
    let req = format!(
        "GET /health HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(2000)
    );
    let (st, _, body) = exchange(s.addr, req.as_bytes());
    assert_eq!(st, 431, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "HEADERS_TOO_LARGE");
    // Too many headers, each small.
    let many: String = (0..100).map(|i| format!("X-{i}: 1\r\n")).collect();
    let (st, _, _) = exchange(
        s.addr,
        format!("GET /health HTTP/1.1\r\n{many}\r\n").as_bytes(),
    );
    assert_eq!(st, 431);
    // Still serving.
    assert_eq!(s.http("GET", "/health", None).0, 200);
    s.shutdown();
});

both_drivers!(oversize_body_is_413, |driver| {
    let s = TestServer::builder(driver)
        .with(|f| f.http.max_body_bytes = 64)
        .start();
    let body = json!({"pattern": "x:*", "description": "d".repeat(200)}).to_string();
    let (st, v) = admin_raw(&s, "POST", CHANNELS, &body);
    assert_error(st, &v, 413, "PAYLOAD_TOO_LARGE");
    // Refused from Content-Length alone, before any of the body arrives.
    let (st, _, _) = exchange(
        s.addr,
        format!(
            "POST {CHANNELS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Length: 100000000\r\n\r\n"
        )
        .as_bytes(),
    );
    assert_eq!(st, 413);
    // At the limit is fine.
    let small = json!({"pattern": "x:*"}).to_string();
    let (st, v) = admin_raw(&s, "POST", CHANNELS, &small);
    assert_eq!(st, 201, "{v}");
    s.shutdown();
});

both_drivers!(chunked_body_is_411, |driver| {
    let s = TestServer::start(driver);
    let req = format!(
        "POST {CHANNELS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n13\r\n{{\"pattern\":\"x:*\"}} \r\n0\r\n\r\n"
    );
    let (st, _, body) = exchange(s.addr, req.as_bytes());
    assert_eq!(st, 411, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["error"], "LENGTH_REQUIRED");
    let (_, list) = s.http("GET", CHANNELS, None);
    assert_eq!(list, json!([]));
    s.shutdown();
});

both_drivers!(malformed_request_line_is_400, |driver| {
    let s = TestServer::start(driver);
    for req in [
        &b"GARBAGE\x01\r\n\r\n"[..],
        b"GET /health HTTP/9.9\r\n\r\n",
        b"GET /he alth HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /health HTTP/1.1\r\nBad Header\r\n\r\n",
        b"POST /api/realtime/channels HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST /api/realtime/channels HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    ] {
        let (st, _, body) = exchange(s.addr, req);
        assert_eq!(st, 400, "{:?}: {body}", String::from_utf8_lossy(req));
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["error"], "BAD_REQUEST");
    }
    assert_eq!(s.http("GET", "/health", None).0, 200);
    s.shutdown();
});

both_drivers!(keep_alive_and_pipelining, |driver| {
    let s = TestServer::start(driver);
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let (st, head, body) = read_response(&mut c);
    assert_eq!(st, 200);
    assert_eq!(header(&head, "connection"), Some("keep-alive"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "ok"
    );
    // Second request on the same connection, a REST one with a body.
    let body = json!({"pattern": "ka:*"}).to_string();
    c.write_all(
        format!(
            "POST {CHANNELS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .unwrap();
    let (st, _, b) = read_response(&mut c);
    assert_eq!(st, 201, "{b}");
    // Two pipelined requests in one write; the last asks to close.
    c.write_all(
        format!(
            "GET {CHANNELS} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\r\nGET /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .unwrap();
    let (st, _, b) = read_response(&mut c);
    assert_eq!(st, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&b).unwrap()[0]["pattern"],
        "ka:*"
    );
    let (st, head, _) = read_response(&mut c);
    assert_eq!(st, 404);
    assert_eq!(header(&head, "connection"), Some("close"));
    let mut rest = Vec::new();
    assert_eq!(
        c.read_to_end(&mut rest).unwrap(),
        0,
        "closed after Connection: close"
    );
    // HTTP/1.0 closes by default.
    let (st, head, _) = exchange(s.addr, b"GET /health HTTP/1.0\r\n\r\n");
    assert_eq!(st, 200);
    assert_eq!(header(&head, "connection"), Some("close"));
    s.shutdown();
});

both_drivers!(head_is_answered_without_a_body, |driver| {
    let s = TestServer::start(driver);
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // HEAD, then GET on the same connection: the HEAD answer announces the GET's length but
    // carries no body, so the next bytes are the GET's status line.
    c.write_all(
        b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .unwrap();
    let (st, head) = read_head(&mut c);
    assert_eq!(st, 200);
    let (st2, _, body) = read_response(&mut c);
    assert_eq!(st2, 200, "HEAD answer had a body");
    assert_eq!(
        header(&head, "content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "ok"
    );
    let mut rest = Vec::new();
    c.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    // Errors to HEAD requests have no body either.
    let (st, _, body) = exchange(
        s.addr,
        b"HEAD /nope HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((st, body.as_str()), (404, ""));
    s.shutdown();
});

both_drivers!(silent_and_slow_clients_are_cut_off, |driver| {
    let s = TestServer::builder(driver)
        .with(|f| {
            f.http.header_timeout = "300ms".into();
            f.http.keepalive_timeout = "300ms".into();
        })
        .start();
    let opened = Instant::now();
    // Sends nothing at all.
    let mut silent = TcpStream::connect(s.addr).unwrap();
    silent
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    // Sends half a head.
    let mut slow = TcpStream::connect(s.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    slow.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    // Finishes a request, then idles on the kept-alive connection.
    let mut idle = TcpStream::connect(s.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut idle).0, 200);
    // Others are served meanwhile.
    assert_eq!(s.http("GET", "/health", None).0, 200);

    let mut buf = [0u8; 64];
    assert_eq!(silent.read(&mut buf).expect("closed, not timed out"), 0);
    let waited = opened.elapsed();
    assert!(waited >= Duration::from_millis(280), "{waited:?}");
    assert!(waited < Duration::from_millis(1500), "{waited:?}");
    let mut out = Vec::new();
    let _ = slow.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 408 "), "{text}");
    assert_eq!(idle.read(&mut buf).expect("closed, not timed out"), 0);
    assert!(opened.elapsed() < Duration::from_millis(1500));
    // And the server keeps serving.
    assert_eq!(s.http("GET", "/health", None).0, 200);
    let (st, _) = s.http("GET", CHANNELS, None);
    assert_eq!(st, 200);
    s.shutdown();
});

both_drivers!(permissions_have_the_seed_shape, |driver| {
    let s = TestServer::start(driver);
    let (st, v) = s.http("GET", "/api/realtime/permissions", None);
    assert_eq!(st, 200);
    assert_eq!(
        v,
        json!({
            "subscribe": {"policies": [{
                "policyName": "allow_authenticated_subscribe",
                "tableName": "realtime_channels",
                "command": "SELECT",
                "roles": ["authenticated"],
                "using": "enabled = true",
                "withCheck": null
            }]},
            "publish": {"policies": [{
                "policyName": "allow_authenticated_publish",
                "tableName": "realtime_messages",
                "command": "INSERT",
                "roles": ["authenticated"],
                "using": null,
                "withCheck": "true"
            }]},
            "receive": {"policies": [{
                "policyName": "allow_receive",
                "tableName": "realtime_messages",
                "command": "SELECT",
                "roles": ["public"],
                "using": "true",
                "withCheck": null
            }]}
        })
    );
    s.shutdown();

    let s = TestServer::builder(driver)
        .with(|f| f.auth.anon_subscribe = true)
        .start();
    let (st, v) = s.http("GET", "/api/realtime/permissions", None);
    assert_eq!(st, 200);
    let sub = &v["subscribe"]["policies"][0];
    assert_eq!(sub["policyName"], "allow_authenticated_subscribe");
    assert_eq!(sub["roles"], json!(["authenticated", "anon"]));
    assert_eq!(
        v["publish"]["policies"][0]["roles"],
        json!(["authenticated"]),
        "anon_publish is off"
    );
    s.shutdown();
});
