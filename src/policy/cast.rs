//! Casts (`::type`, `CAST`, and the implicit ones the compiler inserts) at evaluation: a value
//! that does not convert is NULL, where PostgreSQL would raise an error.

use std::borrow::Cow;

use serde_json::Value as Json;

use super::{
    eval::{Value, text},
    node::CastTo,
};

pub(crate) fn cast(v: Value<'_>, to: CastTo) -> Value<'_> {
    match (to, v) {
        (_, Value::Null) => Value::Null,
        (CastTo::Text, v) => text(v).map_or(Value::Null, Value::Text),
        (CastTo::Int, Value::Int(i)) => Value::Int(i),
        (CastTo::Int, Value::Bool(b)) => Value::Int(i64::from(b)),
        (CastTo::Int, Value::Text(s)) => s.trim().parse().map_or(Value::Null, Value::Int),
        (CastTo::Int, Value::Json(j)) => json_int(&j).map_or(Value::Null, Value::Int),
        (CastTo::Bool, Value::Bool(b)) => Value::Bool(b),
        (CastTo::Bool, Value::Int(i)) => Value::Bool(i != 0),
        (CastTo::Bool, Value::Text(s)) => parse_bool(&s).map_or(Value::Null, Value::Bool),
        (CastTo::Bool, Value::Json(j)) => j.as_bool().map_or(Value::Null, Value::Bool),
        (CastTo::Uuid, Value::Text(s)) => uuid_text(s),
        (CastTo::Json, Value::Json(j)) => Value::Json(j),
        (CastTo::Json, Value::Text(s)) => {
            serde_json::from_str(&s).map_or(Value::Null, |j| Value::Json(Cow::Owned(j)))
        }
        (CastTo::Json, Value::Int(i)) => Value::Json(Cow::Owned(i.into())),
        (CastTo::Json, Value::Bool(b)) => Value::Json(Cow::Owned(b.into())),
        (CastTo::Uuid, _) => Value::Null,
    }
}

/// jsonb to integer: a number, rounded half away from zero as PostgreSQL's numeric does.
pub(super) fn json_int(j: &Json) -> Option<i64> {
    let n = j.as_number()?;
    if let Some(i) = n.as_i64() {
        return Some(i);
    }
    let f = n.as_f64()?.round();
    // i64::MAX as f64 rounds up to 2^63, itself out of range.
    (f >= i64::MIN as f64 && f < i64::MAX as f64).then_some(f as i64)
}

/// PostgreSQL's boolean input: `t`, `true`, `y`, `yes`, `on`, `1` and their `f` / `n` /
/// `off` / `0` counterparts, any unambiguous prefix, any case, surrounding blanks ignored.
pub(crate) fn parse_bool(s: &str) -> Option<bool> {
    let s = s.trim();
    let prefix_of = |word: &str, min: usize| {
        s.len() >= min && s.len() <= word.len() && word[..s.len()].eq_ignore_ascii_case(s)
    };
    if prefix_of("true", 1) || prefix_of("yes", 1) || prefix_of("on", 2) || s == "1" {
        Some(true)
    } else if prefix_of("false", 1) || prefix_of("no", 1) || prefix_of("off", 2) || s == "0" {
        Some(false)
    } else {
        None
    }
}

/// A uuid in its canonical lowercase hyphenated form (borrowed when it already is).
pub(super) fn uuid_text(s: Cow<'_, str>) -> Value<'_> {
    let Ok(u) = uuid::Uuid::try_parse(&s) else {
        return Value::Null;
    };
    let mut buf = uuid::Uuid::encode_buffer();
    let canonical = u.hyphenated().encode_lower(&mut buf);
    if *canonical == *s {
        Value::Text(s)
    } else {
        Value::Text(Cow::Owned(canonical.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_like_postgres() {
        for t in ["t", "TRUE", " yes ", "y", "on", "1", "tr"] {
            assert_eq!(parse_bool(t), Some(true), "{t}");
        }
        for f in ["f", "False", "no", "n", "off", "of", "0"] {
            assert_eq!(parse_bool(f), Some(false), "{f}");
        }
        for x in ["o", "", "2", "truee", "nope", "é"] {
            assert_eq!(parse_bool(x), None, "{x}");
        }
    }

    #[test]
    fn casts_that_fail_are_null() {
        let t = |s: &'static str| Value::Text(Cow::Borrowed(s));
        assert_eq!(cast(t(" 42 "), CastTo::Int), Value::Int(42));
        assert_eq!(cast(t("4x"), CastTo::Int), Value::Null);
        assert_eq!(cast(t("99999999999999999999"), CastTo::Int), Value::Null);
        let j = |v: Json| Value::Json(Cow::Owned(v));
        assert_eq!(cast(j(1.5.into()), CastTo::Int), Value::Int(2));
        assert_eq!(cast(j((-2.5).into()), CastTo::Int), Value::Int(-3));
        assert_eq!(cast(j(1e300.into()), CastTo::Int), Value::Null);
        assert_eq!(cast(j("1".into()), CastTo::Int), Value::Null);
        assert_eq!(cast(j(true.into()), CastTo::Bool), Value::Bool(true));
        assert_eq!(cast(j("x".into()), CastTo::Text), t("\"x\""));
        assert_eq!(cast(Value::Int(0), CastTo::Bool), Value::Bool(false));
        assert_eq!(cast(Value::Bool(true), CastTo::Text), t("true"));
        assert_eq!(cast(t("{bad"), CastTo::Json), Value::Null);
        let u = "6ba7b810-9dad-11d1-80b4-00c04fd430c8";
        assert!(matches!(
            cast(t(u), CastTo::Uuid),
            Value::Text(Cow::Borrowed(_))
        ));
        assert_eq!(
            cast(t("{6BA7B810-9DAD-11D1-80B4-00C04FD430C8}"), CastTo::Uuid),
            t(u)
        );
        assert_eq!(cast(t("not-a-uuid"), CastTo::Uuid), Value::Null);
    }
}
