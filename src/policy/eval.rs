//! Evaluates a compiled `Node` against a `Ctx` with SQL three-valued logic (`None` is NULL).
//! Values borrow from the tree and the context; see the module header of `policy` for what
//! allocates. Never fails: what PostgreSQL would raise at run time (a bad cast, a malformed
//! LIKE pattern, `split_part(.., 0)`) is NULL here. Runs on a core; no I/O, no locks.

use std::{borrow::Cow, cmp::Ordering, ops::Range};

use serde_json::Value as Json;

use super::{
    cast::cast,
    context::Ctx,
    json::{json_eq, json_get, num_cmp},
    like,
    node::{Builtin, CmpOp, Column, Const, Node},
};

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value<'a> {
    Null,
    Bool(bool),
    Int(i64),
    Text(Cow<'a, str>),
    Json(Cow<'a, Json>),
}

/// A boolean node's value.
pub(crate) fn truth<'a>(n: &'a Node, cx: &Ctx<'a>) -> Option<bool> {
    match n {
        Node::Not(e) => truth(e, cx).map(|b| !b),
        Node::And(items) => {
            let mut unknown = false;
            for i in items {
                match truth(i, cx) {
                    Some(false) => return Some(false),
                    None => unknown = true,
                    Some(true) => {}
                }
            }
            (!unknown).then_some(true)
        }
        Node::Or(items) => {
            let mut unknown = false;
            for i in items {
                match truth(i, cx) {
                    Some(true) => return Some(true),
                    None => unknown = true,
                    Some(false) => {}
                }
            }
            (!unknown).then_some(false)
        }
        Node::Cmp(op, l, r) => compare(*op, l, r, cx),
        Node::Distinct {
            left,
            right,
            negated,
        } => {
            let (a, b) = (eval(left, cx), eval(right, cx));
            let distinct = match (&a, &b) {
                (Value::Null, Value::Null) => false,
                (Value::Null, _) | (_, Value::Null) => true,
                _ => equal(&a, &b) != Some(true),
            };
            Some(distinct != *negated)
        }
        Node::IsNull(e, negated) => Some(matches!(eval(e, cx), Value::Null) != *negated),
        Node::IsBool {
            expr,
            want,
            negated,
        } => Some((truth(expr, cx) == *want) != *negated),
        Node::Like {
            expr,
            pattern,
            case_insensitive,
            negated,
        } => {
            let t = text(eval(expr, cx))?;
            let p = text(eval(pattern, cx))?;
            like::like(&t, &p, *case_insensitive).map(|m| m != *negated)
        }
        Node::In {
            expr,
            list,
            negated,
        } => {
            let v = eval(expr, cx);
            if matches!(v, Value::Null) {
                return None;
            }
            let mut unknown = false;
            for item in list {
                match equal(&v, &eval(item, cx)) {
                    Some(true) => return Some(!negated),
                    None => unknown = true,
                    Some(false) => {}
                }
            }
            (!unknown).then_some(*negated)
        }
        Node::StartsWith(s, prefix) => {
            let s = text(eval(s, cx))?;
            let prefix = text(eval(prefix, cx))?;
            Some(s.starts_with(&*prefix))
        }
        _ => match eval(n, cx) {
            Value::Bool(b) => Some(b),
            _ => None,
        },
    }
}

pub(crate) fn eval<'a>(n: &'a Node, cx: &Ctx<'a>) -> Value<'a> {
    match n {
        Node::Const(c) => match c {
            Const::Null => Value::Null,
            Const::Bool(b) => Value::Bool(*b),
            Const::Int(i) => Value::Int(*i),
            Const::Text(s) => Value::Text(Cow::Borrowed(s)),
            Const::Json(j) => Value::Json(Cow::Borrowed(j)),
        },
        Node::Column(c) => column(*c, cx),
        Node::Builtin(b) => builtin(*b, cx),
        Node::Concat(parts) => {
            let mut out = String::new();
            for p in parts {
                match text(eval(p, cx)) {
                    Some(s) => out.push_str(&s),
                    None => return Value::Null,
                }
            }
            Value::Text(Cow::Owned(out))
        }
        Node::Cast(e, to) => cast(eval(e, cx), *to),
        Node::SplitPart(args) => {
            let [s, delim, field] = &**args;
            let (Some(s), Some(delim), Value::Int(field)) =
                (text(eval(s, cx)), text(eval(delim, cx)), eval(field, cx))
            else {
                return Value::Null;
            };
            match split_part(&s, &delim, field) {
                Some(r) => Value::Text(slice(s, r)),
                None => Value::Null,
            }
        }
        Node::Lower(e) => text(eval(e, cx)).map_or(Value::Null, |s| {
            Value::Text(if s.chars().any(char::is_uppercase) {
                Cow::Owned(s.to_lowercase())
            } else {
                s
            })
        }),
        Node::Upper(e) => text(eval(e, cx)).map_or(Value::Null, |s| {
            Value::Text(if s.chars().any(char::is_lowercase) {
                Cow::Owned(s.to_uppercase())
            } else {
                s
            })
        }),
        Node::JsonGet { expr, key, as_text } => json_get(eval(expr, cx), &eval(key, cx), *as_text),
        _ => truth(n, cx).map_or(Value::Null, Value::Bool),
    }
}

fn borrowed_text<'a>(s: Option<&'a str>) -> Value<'a> {
    s.map_or(Value::Null, |s| Value::Text(Cow::Borrowed(s)))
}

fn column<'a>(c: Column, cx: &Ctx<'a>) -> Value<'a> {
    let (ch, msg) = (cx.channel, cx.message);
    match c {
        Column::Pattern => borrowed_text(ch.map(|r| r.pattern)),
        Column::Enabled => ch.map_or(Value::Null, |r| Value::Bool(r.enabled)),
        Column::Description => borrowed_text(ch.and_then(|r| r.description)),
        Column::ChannelName => borrowed_text(msg.map(|m| m.channel_name)),
        Column::EventName => borrowed_text(msg.map(|m| m.event_name)),
        Column::Payload => msg
            .and_then(|m| m.payload.get())
            .map_or(Value::Null, |j| Value::Json(Cow::Borrowed(j))),
        Column::SenderType => borrowed_text(msg.map(|m| m.sender_type)),
        Column::SenderId => borrowed_text(msg.and_then(|m| m.sender_id)),
    }
}

fn builtin<'a>(b: Builtin, cx: &Ctx<'a>) -> Value<'a> {
    let auth = cx.auth;
    match b {
        Builtin::ChannelName => Value::Text(Cow::Borrowed(cx.channel_name)),
        Builtin::Uid => borrowed_text(auth.uid),
        Builtin::Role => Value::Text(Cow::Borrowed(auth.role.as_str())),
        Builtin::Email => borrowed_text(auth.email),
        Builtin::Jwt => auth
            .claims
            .get()
            .map_or(Value::Null, |j| Value::Json(Cow::Borrowed(j))),
    }
}

/// A value as text (`||`, `::text`, function arguments); `None` for NULL.
pub(super) fn text(v: Value<'_>) -> Option<Cow<'_, str>> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(Cow::Borrowed(if b { "true" } else { "false" })),
        Value::Int(i) => Some(Cow::Owned(i.to_string())),
        Value::Text(t) => Some(t),
        Value::Json(j) => Some(Cow::Owned(j.to_string())),
    }
}

fn compare<'a>(op: CmpOp, l: &'a Node, r: &'a Node, cx: &Ctx<'a>) -> Option<bool> {
    if let CmpOp::Eq | CmpOp::Ne = op
        && let (other, Node::Concat(parts)) | (Node::Concat(parts), other) = (l, r)
    {
        return concat_eq(other, parts, cx).map(|eq| eq == (op == CmpOp::Eq));
    }
    let a = eval(l, cx);
    if matches!(a, Value::Null) {
        return None;
    }
    let b = eval(r, cx);
    match op {
        CmpOp::Eq => equal(&a, &b),
        CmpOp::Ne => equal(&a, &b).map(|e| !e),
        CmpOp::Lt => order(&a, &b).map(Ordering::is_lt),
        CmpOp::Le => order(&a, &b).map(Ordering::is_le),
        CmpOp::Gt => order(&a, &b).map(Ordering::is_gt),
        CmpOp::Ge => order(&a, &b).map(Ordering::is_ge),
    }
}

/// `other = p1 || p2 || ...` piece by piece, without building the concatenation.
fn concat_eq<'a>(other: &'a Node, parts: &'a [Node], cx: &Ctx<'a>) -> Option<bool> {
    let whole = text(eval(other, cx))?;
    let mut rest: &str = &whole;
    let (mut matched, mut unknown) = (true, false);
    for p in parts {
        // Every part is evaluated: a NULL one makes the result NULL even after a mismatch.
        match text(eval(p, cx)) {
            None => unknown = true,
            Some(piece) if matched => match rest.strip_prefix(&*piece) {
                Some(r) => rest = r,
                None => matched = false,
            },
            Some(_) => {}
        }
    }
    (!unknown).then_some(matched && rest.is_empty())
}

fn equal(a: &Value<'_>, b: &Value<'_>) -> Option<bool> {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => Some(x == y),
        (Value::Int(x), Value::Int(y)) => Some(x == y),
        (Value::Text(x), Value::Text(y)) => Some(x == y),
        (Value::Json(x), Value::Json(y)) => Some(json_eq(x, y)),
        // NULL, or types the compiler keeps apart.
        _ => None,
    }
}

fn order(a: &Value<'_>, b: &Value<'_>) -> Option<Ordering> {
    match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::Text(x), Value::Text(y)) => Some(x.as_bytes().cmp(y.as_bytes())),
        (Value::Json(x), Value::Json(y)) => match (&**x, &**y) {
            (Json::Number(m), Json::Number(n)) => num_cmp(m, n),
            (Json::String(m), Json::String(n)) => Some(m.as_bytes().cmp(n.as_bytes())),
            (Json::Bool(m), Json::Bool(n)) => Some(m.cmp(n)),
            _ => None,
        },
        _ => None,
    }
}

/// The byte range of field `field` (from 1; negative from the end) of `s` split on `delim`,
/// as PostgreSQL's `split_part`: empty past the last field, `None` (an error there) for 0.
fn split_part(s: &str, delim: &str, field: i64) -> Option<Range<usize>> {
    if field == 0 {
        return None;
    }
    if delim.is_empty() {
        return Some(if field == 1 || field == -1 {
            0..s.len()
        } else {
            0..0
        });
    }
    let field = if field > 0 {
        field
    } else {
        let fields = s.matches(delim).count() as i64 + 1;
        fields + field + 1
    };
    if field < 1 {
        return Some(0..0);
    }
    let mut start = 0;
    let mut n = 1;
    for (at, _) in s.match_indices(delim) {
        if n == field {
            return Some(start..at);
        }
        start = at + delim.len();
        n += 1;
    }
    Some(if n == field { start..s.len() } else { 0..0 })
}

fn slice(s: Cow<'_, str>, r: Range<usize>) -> Cow<'_, str> {
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(&b[r]),
        Cow::Owned(o) => Cow::Owned(o[r].to_owned()),
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_part_like_postgres() {
        let cases: &[(&str, &str, i64, Option<&str>)] = &[
            ("user:42:x", ":", 1, Some("user")),
            ("user:42:x", ":", 2, Some("42")),
            ("user:42:x", ":", 3, Some("x")),
            ("user:42:x", ":", 4, Some("")),
            ("user:42:x", ":", -1, Some("x")),
            ("user:42:x", ":", -3, Some("user")),
            ("user:42:x", ":", -4, Some("")),
            ("user:42:x", ":", 0, None),
            ("a::b", "::", 2, Some("b")),
            ("abc", "", 1, Some("abc")),
            ("abc", "", -1, Some("abc")),
            ("abc", "", 2, Some("")),
            ("", ":", 1, Some("")),
            ("abc", ":", 1, Some("abc")),
            ("abc", ":", 2, Some("")),
        ];
        for &(s, d, n, want) in cases {
            assert_eq!(
                split_part(s, d, n).map(|r| &s[r]),
                want,
                "split_part({s:?}, {d:?}, {n})"
            );
        }
    }

    #[test]
    fn json_order() {
        use serde_json::json;
        let j = |v: Json| Value::Json(Cow::Owned(v));
        assert_eq!(order(&j(json!(2)), &j(json!(10.5))), Some(Ordering::Less));
        assert_eq!(
            order(&j(json!("b")), &j(json!("a"))),
            Some(Ordering::Greater)
        );
        assert_eq!(order(&j(json!("b")), &j(json!(1))), None);
        assert_eq!(order(&j(json!([1])), &j(json!([1]))), None);
    }
}
