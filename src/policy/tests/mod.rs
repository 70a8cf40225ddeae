//! Tests across the module, through the parser: the evaluator (`eval`), the refused
//! constructs (`refused`), the reference policies and the defaults (`examples`).

mod eval;
mod examples;
mod refused;

use super::*;
use crate::auth::Role;

pub(super) const PAYLOAD: &str = r#"{"user_id":"u1","n":5,"s":"5","f":1.5,"arr":[1,2,3],
    "obj":{"a":{"b":"c"}},"nul":null,"t":true}"#;
pub(super) const CLAIMS: &str =
    r#"{"sub":"u1","role":"authenticated","app_metadata":{"team":"red","level":3}}"#;

pub(super) fn auth(
    role: Role,
    uid: Option<&'static str>,
    claims: Option<&'static str>,
) -> AuthInfo<'static> {
    AuthInfo {
        uid,
        role,
        email: Some("a@x.io"),
        claims: claims.map_or_else(LazyJson::absent, LazyJson::raw),
    }
}

pub(super) fn message(payload: &'static str) -> MessageRow<'static> {
    MessageRow {
        channel_name: "chat:lobby",
        event_name: "msg",
        payload: LazyJson::raw(payload),
        sender_type: "user",
        sender_id: Some("u1"),
    }
}

pub(super) const CHANNEL: ChannelRow<'static> = ChannelRow {
    pattern: "user:%",
    enabled: true,
    description: None,
};

/// The expression's three-valued result on `realtime.<table>` in a fixed context.
pub(super) fn eval_on(table: &str, expr: &str) -> Option<bool> {
    let sql = format!("CREATE POLICY t ON realtime.{table} FOR SELECT USING ({expr})");
    let p = Policy::parse(&sql).unwrap_or_else(|e| panic!("{expr}: {e}"));
    let a = auth(Role::Authenticated, Some("u1"), Some(CLAIMS));
    let m = message(PAYLOAD);
    let cx = Ctx {
        channel_name: "user:u1",
        channel: Some(&CHANNEL),
        message: Some(&m),
        auth: &a,
    };
    p.condition.eval(&cx)
}

pub(super) fn table(table: &str, cases: &[(&str, Option<bool>)]) {
    let mut failed = Vec::new();
    for &(expr, want) in cases {
        let got = eval_on(table, expr);
        if got != want {
            failed.push(format!("{expr}: got {got:?}, want {want:?}"));
        }
    }
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
}

pub(super) const T: Option<bool> = Some(true);
pub(super) const F: Option<bool> = Some(false);
pub(super) const N: Option<bool> = None;
