//! The fuzz target bodies: one function per input the broker reads from the outside. Each
//! takes arbitrary bytes and must return without panicking, hanging or leaking, whatever
//! they hold; where a cheap oracle exists (pattern matching), the result is also checked.
//!
//! `fuzz_targets/*.rs` hand these to libFuzzer (`cargo fuzz run <name>`); the root crate's
//! `tests/fuzz_corpus.rs` runs them over the seed corpora in `fuzz/seeds/` on stable Rust,
//! so a fixed crash stays fixed without a fuzzer.

use bytes::{Bytes, BytesMut};
use ringcast::{
    auth::{Role, Verifier},
    channel::{ChannelName, ChannelPattern},
    frame::{FrameDecoder, Incoming},
    http::{publish, request, routes},
    policy::{Action, AuthInfo, ChannelRow, Ctx, JsonSource, LazyJson, MessageRow, PolicySet, Rls},
    protocol::parse_client,
    sio::{encode, packet},
};

/// The WebSocket frame decoder, fed in chunks (sizes from the input's first byte), as reads
/// arrive: every message it yields is within the frame limit, and it never asks for more
/// than the limit plus a header.
pub fn ws_frame(data: &[u8]) {
    const MAX: usize = 64 * 1024;
    let Some((&step, data)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut dec = FrameDecoder::new(MAX);
    let mut buf = BytesMut::new();
    for chunk in data.chunks(step) {
        buf.extend_from_slice(chunk);
        loop {
            match dec.decode(&mut buf) {
                Ok(Some(m)) => match m {
                    Incoming::Text(t) => assert!(t.len() <= MAX),
                    Incoming::Ping(p) => assert!(p.len() <= 125),
                    Incoming::Binary | Incoming::Pong | Incoming::Close(_) => {}
                },
                Ok(None) => break,
                Err(e) => {
                    let _ = e.close_code();
                    return;
                }
            }
        }
        assert!(buf.len() <= MAX + 14 + step, "buffered past a frame");
    }
}

/// A client message (one text frame of the raw protocol).
pub fn client_msg(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    match parse_client(&text) {
        Ok(inbound) => drop(inbound),
        Err(e) => {
            let _ = e.code.as_str();
        }
    }
}

/// One HTTP request: the head (httparse and our header rules), the body length, the
/// WebSocket and Socket.IO upgrade checks, the route (path, method, query, body) and, for
/// publishes, the item checks.
pub fn http_request(data: &[u8]) {
    const MAX_HEAD: usize = 16 * 1024;
    const MAX_BODY: usize = 64 * 1024;
    let (head, n) = match request::parse_head(data, MAX_HEAD) {
        Ok(Some(h)) => h,
        Ok(None) | Err(_) => return,
    };
    let mut buf = BytesMut::from(&data[n..]);
    let body = match request::body_len(&head, MAX_BODY) {
        Ok(len) if len <= buf.len() => request::take_body(&mut buf, len),
        Ok(_) | Err(_) => Bytes::new(),
    };
    let _ = ringcast::ws::handshake::response(&head);
    if ringcast::sio::handshake::is_path(&head.path) {
        let _ = ringcast::sio::handshake::check(&head);
    }
    let _ = request::query_pairs(&head.query);
    let Ok(ep) = routes::endpoint(&head) else {
        return;
    };
    let _ = ep.needs_admin(&head.method);
    match ep.call(&head, &body) {
        Ok(routes::Call::Publish) => {
            if let Ok(item) = publish::parse_item(&body) {
                let _ = publish::check(item, 1024);
            }
        }
        Ok(routes::Call::PublishBatch) => {
            if let Ok(batch) = publish::parse_batch(&body) {
                for raw in batch.messages {
                    if let Ok(item) = publish::parse_item(raw.get().as_bytes()) {
                        let _ = publish::check(item, 1024);
                    }
                }
            }
        }
        Ok(_) | Err(_) => {}
    }
}

const JWT_SECRET: &str = "fuzz-secret-fuzz-secret-fuzz-secret";

/// JWT verification. An input starting with an even byte is a token as sent; one starting
/// with an odd byte is a claims document, signed here with the verifier's secret, so the
/// claims checks behind the signature are reached too.
pub fn jwt(data: &[u8]) {
    use base64::Engine as _;
    use hmac::{KeyInit, Mac};
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let token = if first % 2 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let signing = format!(
            "{}.{}",
            b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64.encode(rest)
        );
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(JWT_SECRET.as_bytes())
            .expect("HMAC takes any key");
        mac.update(signing.as_bytes());
        format!("{signing}.{}", b64.encode(mac.finalize().into_bytes()))
    };
    let v = Verifier::new(JWT_SECRET, Some("fuzz-admin-key")).with_anon_key(Some("anon_fuzz"));
    if let Ok(who) = v.verify(&token)
        && let Some(c) = &who.claims
    {
        let _ = c.json();
    }
}

/// Channel names and patterns: parsing, and `matches` against a plain dynamic-programming
/// reference of the same `LIKE` rule (`*` and `%` match any run). Input: pattern, a newline,
/// then the name.
pub fn channel_pattern(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (pat, name) = text.split_once('\n').unwrap_or((&text, ""));
    let _ = ChannelName::parse(name);
    let _ = ChannelName::parse(pat);
    let Ok(p) = ChannelPattern::parse(pat) else {
        return;
    };
    assert!(p.literal_prefix_len() <= p.as_str().len());
    let got = p.matches(name);
    assert_eq!(
        got,
        like_reference(p.as_str().as_bytes(), name.as_bytes()),
        "pattern {pat:?} name {name:?}"
    );
    if !p.has_wildcard() {
        assert_eq!(got, pat == name);
    }
}

fn like_reference(p: &[u8], s: &[u8]) -> bool {
    // m[j]: pattern prefix of the current length matches s[..j].
    let mut m = vec![false; s.len() + 1];
    m[0] = true;
    for &c in p {
        let mut next = vec![false; s.len() + 1];
        if c == b'*' || c == b'%' {
            let mut any = false;
            for j in 0..=s.len() {
                any |= m[j];
                next[j] = any;
            }
        } else {
            for j in 1..=s.len() {
                next[j] = m[j - 1] && s[j - 1] == c;
            }
        }
        m = next;
    }
    m[s.len()]
}

/// A configuration file: lenient TOML parsing, then validation. The paths of the files that
/// validation reads (PEM key, policies, CA certificates) are cleared first: the fuzzer must
/// not read `/dev/zero`.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let (mut file, _errors) = ringcast::config::parse_toml(&text);
    file.auth.jwt_public_key_file.clear();
    file.policies.file.clear();
    file.webhooks.ca_file.clear();
    // `workers = 0` (one per core) reads the cgroup's CPU limit from /sys on every call,
    // which would make this target 20 times slower; the value is not parsed differently.
    if file.server.workers == 0 {
        file.server.workers = 1;
    }
    let _ = ringcast::config::validate(&file);
}

/// The Socket.IO front end: an Engine.IO packet, the Socket.IO packet inside, its event, and
/// the re-encoding of a raw `message` frame for Socket.IO clients.
pub fn socketio(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(packet::Engine::Message(m)) = packet::decode_engine(&text)
        && let Ok(p) = packet::decode_socket(m)
        && let Some(d) = p.data
    {
        let _ = packet::decode_event(d);
    }
    let _ = encode::message_from_raw(data);
}

/// One pgoutput message from the replication stream.
pub fn pgoutput(data: &[u8]) {
    let _ = ringcast::cdc::pgoutput::parse(&Bytes::copy_from_slice(data));
}

/// RLS policies: `CREATE POLICY` text (before a NUL byte) parsed and added to a set, then
/// every decision made with the JSON after the NUL as both payload and claims.
pub fn policy(data: &[u8]) {
    let (sql, json) = match data.iter().position(|&b| b == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &b""[..]),
    };
    let Ok(sql) = std::str::from_utf8(sql) else {
        return;
    };
    let Ok(policies) = ringcast::policy::parse_policies(sql) else {
        return;
    };
    let mut set = PolicySet::new(Rls {
        channels: true,
        messages: true,
    });
    for p in policies {
        let _ = set.add(p);
    }
    let _ = set.permissions();
    let json = String::from_utf8_lossy(json);
    let channel = ChannelRow {
        pattern: "chat:%",
        enabled: true,
        description: None,
    };
    let message = MessageRow {
        channel_name: "chat:lobby",
        event_name: "message",
        payload: LazyJson::raw(&json),
        sender_type: "user",
        sender_id: Some("6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
    };
    for role in [Role::Anon, Role::Authenticated, Role::ProjectAdmin] {
        let auth = AuthInfo {
            uid: Some("6ba7b810-9dad-11d1-80b4-00c04fd430c8"),
            role,
            email: Some("ada@example.com"),
            claims: LazyJson::raw(&json),
        };
        let cx = Ctx {
            channel_name: "chat:lobby",
            channel: Some(&channel),
            message: Some(&message),
            auth: &auth,
        };
        for action in [Action::Subscribe, Action::Publish, Action::Receive] {
            let _ = set.allows(action, &cx);
        }
    }
}
