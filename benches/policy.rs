//! RLS policy decisions (`PolicySet::allows`), as a core makes them per subscribe, publish and
//! delivered message: the defaults and the three reference policies. JSON parsed once per
//! message or connection (`*_cached`) and parsed in every decision (`*_parse`) are measured
//! apart. Inputs are built outside `b.iter`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use ringcast::{
    auth::Role,
    policy::{Action, AuthInfo, ChannelRow, Ctx, LazyJson, MessageRow, PolicySet, Rls},
};

const OWN_USER: &str = "CREATE POLICY own_user ON realtime.channels FOR SELECT TO authenticated \
                        USING (realtime.channel_name() = 'user:' || auth.uid())";
const TEAM: &str = "CREATE POLICY team ON realtime.channels FOR SELECT TO authenticated \
                    USING (split_part(realtime.channel_name(), ':', 2) = \
                    auth.jwt() -> 'app_metadata' ->> 'team')";
const OWN_EVENTS: &str = "CREATE POLICY own_events ON realtime.messages FOR INSERT \
                          TO authenticated WITH CHECK (payload ->> 'user_id' = auth.uid())";
const UID: &str = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
const CLAIMS: &str = r#"{"sub":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","role":"authenticated",
    "email":"ada@example.com","exp":1900000000,"app_metadata":{"provider":"email","team":"red"}}"#;
const PAYLOAD: &str = r#"{"user_id":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","text":"hello there",
    "sent_at":"2026-01-01T00:00:00Z","attachments":[]}"#;
const CHANNEL: ChannelRow<'static> = ChannelRow {
    pattern: "user:%",
    enabled: true,
    description: None,
};

fn one(sql: &str) -> PolicySet {
    let mut set = PolicySet::new(Rls {
        channels: true,
        messages: true,
    });
    for p in ringcast::policy::parse_policies(sql).unwrap() {
        set.add(p).unwrap();
    }
    set
}

fn auth(claims: &str) -> AuthInfo<'_> {
    AuthInfo {
        uid: Some(UID),
        role: Role::Authenticated,
        email: Some("ada@example.com"),
        claims: LazyJson::raw(claims),
    }
}

fn message(payload: &str) -> MessageRow<'_> {
    MessageRow {
        channel_name: "chat:lobby",
        event_name: "message",
        payload: LazyJson::raw(payload),
        sender_type: "user",
        sender_id: Some(UID),
    }
}

fn decide(c: &mut Criterion) {
    let mut g = c.benchmark_group("policy");
    let defaults = PolicySet::defaults(true, false);
    let a = auth(CLAIMS);
    let m = message(PAYLOAD);
    let cx = |channel_name| Ctx {
        channel_name,
        channel: Some(&CHANNEL),
        message: Some(&m),
        auth: &a,
    };
    let user_cx = cx("user:6ba7b810-9dad-11d1-80b4-00c04fd430c8");
    for (name, action) in [
        ("default_subscribe", Action::Subscribe),
        ("default_publish", Action::Publish),
        ("default_receive", Action::Receive),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| defaults.allows(black_box(action), black_box(&user_cx)))
        });
    }

    let own_user = one(OWN_USER);
    assert!(own_user.allows(Action::Subscribe, &user_cx));
    g.bench_function("own_user_subscribe", |b| {
        b.iter(|| own_user.allows(Action::Subscribe, black_box(&user_cx)))
    });

    let team = one(TEAM);
    let team_cx = cx("team:red:chat");
    assert!(team.allows(Action::Subscribe, &team_cx));
    g.bench_function("team_subscribe_claims_cached", |b| {
        b.iter(|| team.allows(Action::Subscribe, black_box(&team_cx)))
    });
    g.bench_function("team_subscribe_claims_parse", |b| {
        b.iter(|| {
            let a = auth(black_box(CLAIMS));
            let cx = Ctx {
                auth: &a,
                ..team_cx
            };
            team.allows(Action::Subscribe, &cx)
        })
    });

    let own_events = one(OWN_EVENTS);
    let chat_cx = cx("chat:lobby");
    assert!(own_events.allows(Action::Publish, &chat_cx));
    g.bench_function("own_events_publish_payload_cached", |b| {
        b.iter(|| own_events.allows(Action::Publish, black_box(&chat_cx)))
    });
    g.bench_function("own_events_publish_payload_parse", |b| {
        b.iter(|| {
            let m = message(black_box(PAYLOAD));
            let cx = Ctx {
                message: Some(&m),
                ..chat_cx
            };
            own_events.allows(Action::Publish, &cx)
        })
    });
    g.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
