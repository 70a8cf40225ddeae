//! The three reference policies, and the defaults against today's `Authorizer`.

use serde_json::json;

use super::*;
use crate::auth::Role as R;

/// Private user channel, team channel by claim, publish only your own events.
const OWN_USER: &str = "CREATE POLICY own_user ON realtime.channels FOR SELECT TO authenticated \
                        USING (realtime.channel_name() = 'user:' || auth.uid())";
const TEAM: &str = "CREATE POLICY team ON realtime.channels FOR SELECT TO authenticated \
                    USING (split_part(realtime.channel_name(), ':', 2) = \
                    auth.jwt() -> 'app_metadata' ->> 'team')";
const OWN_EVENTS: &str = "CREATE POLICY own_events ON realtime.messages FOR INSERT \
                          TO authenticated WITH CHECK (payload ->> 'user_id' = auth.uid())";

fn set_of(sql: &str) -> PolicySet {
    let mut set = PolicySet::new(Rls {
        channels: true,
        messages: true,
    });
    for p in parse_policies(sql).unwrap() {
        set.add(p).unwrap();
    }
    set
}

#[test]
fn private_user_channel() {
    let set = set_of(OWN_USER);
    let decide = |channel: &str, a: &AuthInfo<'_>| {
        let cx = Ctx {
            channel_name: channel,
            channel: Some(&CHANNEL),
            message: None,
            auth: a,
        };
        set.allows(Action::Subscribe, &cx)
    };
    let u1 = auth(Role::Authenticated, Some("u1"), None);
    assert!(decide("user:u1", &u1));
    assert!(!decide("user:u2", &u1));
    assert!(!decide("user:u1x", &u1));
    assert!(!decide("user:", &u1));
    assert!(!decide("user:u1", &auth(Role::Anon, None, None)));
    assert!(
        !decide("user:u1", &auth(Role::Anon, Some("u1"), None)),
        "TO authenticated"
    );
    assert!(decide("user:u9", &auth(Role::ProjectAdmin, None, None)));
    assert!(!set.get("own_user").unwrap().reads_claims());
}

#[test]
fn team_channel_by_claim() {
    let p = Policy::parse(TEAM).unwrap();
    // `=` binds looser than `->` / `->>`, as in PostgreSQL.
    let node::Node::Cmp(node::CmpOp::Eq, _, right) = &p.condition.root else {
        panic!("{:?}", p.condition.root)
    };
    assert!(matches!(**right, node::Node::JsonGet { as_text: true, .. }));
    assert!(p.reads_claims() && !p.reads_payload());
    assert_eq!(
        p.using(),
        Some(
            "split_part(realtime.channel_name(), ':', 2) = auth.jwt() -> 'app_metadata' ->> 'team'"
        )
    );
    let set = set_of(TEAM);
    let decide = |channel: &str, claims: Option<&'static str>| {
        let a = auth(Role::Authenticated, Some("u1"), claims);
        let cx = Ctx {
            channel_name: channel,
            channel: Some(&CHANNEL),
            message: None,
            auth: &a,
        };
        set.allows(Action::Subscribe, &cx)
    };
    assert!(decide("team:red:chat", Some(CLAIMS)));
    assert!(decide("team:red", Some(CLAIMS)));
    assert!(!decide("team:blue:chat", Some(CLAIMS)));
    assert!(!decide("team:red:chat", None));
    assert!(!decide("team:red:chat", Some(r#"{"sub":"u1"}"#)));
    assert!(!decide("team:red:chat", Some("not json")));
}

#[test]
fn publish_only_own_events() {
    let set = set_of(OWN_EVENTS);
    assert!(set.reads_payload(Action::Publish, Role::Authenticated));
    assert!(!set.reads_payload(Action::Publish, Role::ProjectAdmin));
    let decide = |payload: &'static str, uid: Option<&'static str>| {
        let a = auth(Role::Authenticated, uid, None);
        let m = message(payload);
        let cx = Ctx {
            channel_name: "chat:lobby",
            channel: None,
            message: Some(&m),
            auth: &a,
        };
        set.allows(Action::Publish, &cx)
    };
    assert!(decide(r#"{"user_id":"u1","text":"hi"}"#, Some("u1")));
    assert!(!decide(r#"{"user_id":"u2"}"#, Some("u1")));
    assert!(!decide(r#"{"text":"hi"}"#, Some("u1")));
    assert!(!decide(r#"{"user_id":"u1"}"#, None));
    // `->>` of the number 1 is the text '1', as in PostgreSQL.
    assert!(decide(r#"{"user_id":1}"#, Some("1")));
    assert!(!decide("{broken", Some("u1")));
}

#[test]
fn payload_is_parsed_only_when_read() {
    let set = set_of(OWN_USER);
    let a = auth(Role::Authenticated, Some("u1"), None);
    let m = message("{not json at all");
    let cx = Ctx {
        channel_name: "user:u1",
        channel: Some(&CHANNEL),
        message: Some(&m),
        auth: &a,
    };
    assert!(set.allows(Action::Subscribe, &cx));
    assert!(!set.get("own_user").unwrap().reads_payload());
}

#[test]
fn defaults_decide_as_the_authorizer() {
    let record = |enabled| crate::channel::ChannelRecord {
        id: uuid::Uuid::nil(),
        pattern: crate::channel::ChannelPattern::parse("user:%").unwrap(),
        description: None,
        webhook_urls: None,
        enabled,
        created_at: crate::timestamp::Timestamp(0),
        updated_at: crate::timestamp::Timestamp(0),
    };
    let (enabled, disabled) = (record(true), record(false));
    for anon_subscribe in [false, true] {
        for anon_publish in [false, true] {
            // What the fixed `Authorizer` these defaults replaced decided: enabled channels only,
            // `authenticated` and `project_admin` always, `anon` by its switch.
            let old = |role: R, enabled: bool, anon: bool| {
                enabled
                    && match role {
                        R::ProjectAdmin | R::Authenticated => true,
                        R::Anon => anon,
                    }
            };
            let set = PolicySet::defaults(anon_subscribe, anon_publish);
            for role in [Role::Anon, Role::Authenticated, Role::ProjectAdmin] {
                let a = auth(role, None, None);
                let m = message("{}");
                for ch in [&enabled, &disabled] {
                    let row = ChannelRow {
                        pattern: ch.pattern.as_str(),
                        enabled: ch.enabled,
                        description: None,
                    };
                    let cx = Ctx {
                        channel_name: "user:u1",
                        channel: Some(&row),
                        message: Some(&m),
                        auth: &a,
                    };
                    let case = format!("{role:?} {anon_subscribe} {anon_publish} {}", ch.enabled);
                    // The channel lookup only finds enabled channels: what the set decides for
                    // a disabled one matters only where the policy reads `enabled`.
                    if ch.enabled || role != Role::ProjectAdmin {
                        assert_eq!(
                            set.allows(Action::Subscribe, &cx),
                            old(role, ch.enabled, anon_subscribe),
                            "subscribe {case}"
                        );
                    }
                    if ch.enabled {
                        assert_eq!(
                            set.allows(Action::Publish, &cx),
                            old(role, ch.enabled, anon_publish),
                            "publish {case}"
                        );
                    }
                    assert!(set.allows(Action::Receive, &cx), "receive {case}");
                    assert!(set.allows_unconditionally(Action::Receive, role));
                }
            }
            let roles = |anon: bool| {
                if anon {
                    json!(["authenticated", "anon"])
                } else {
                    json!(["authenticated"])
                }
            };
            // `GET /permissions` as the `Authorizer` reported it.
            let today = json!({
                "subscribe": {"policies": [{
                    "policyName": "allow_authenticated_subscribe",
                    "tableName": "realtime_channels",
                    "command": "SELECT",
                    "roles": roles(anon_subscribe),
                    "using": "enabled = true",
                    "withCheck": null,
                }]},
                "publish": {"policies": [{
                    "policyName": "allow_authenticated_publish",
                    "tableName": "realtime_messages",
                    "command": "INSERT",
                    "roles": roles(anon_publish),
                    "using": null,
                    "withCheck": "true",
                }]},
            });
            let mut ours = serde_json::to_value(set.permissions()).unwrap();
            let receive = ours.as_object_mut().unwrap().remove("receive").unwrap();
            assert_eq!(ours, today);
            assert_eq!(
                receive,
                json!({"policies": [{
                    "policyName": "allow_receive",
                    "tableName": "realtime_messages",
                    "command": "SELECT",
                    "roles": ["public"],
                    "using": "true",
                    "withCheck": null
                }]})
            );
        }
    }
}

#[test]
fn sets_are_shared_across_cores() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<PolicySet>();
    send_sync::<Policy>();
}
