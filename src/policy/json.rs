//! jsonb operations: `->` / `->>` lookups (text key, integer index from either end), and
//! jsonb equality and number ordering. Lookups borrow from the document when it is borrowed.

use std::{borrow::Cow, cmp::Ordering};

use serde_json::Value as Json;

use super::eval::Value;

pub(super) fn num_cmp(a: &serde_json::Number, b: &serde_json::Number) -> Option<Ordering> {
    if let (Some(x), Some(y)) = (a.as_i64(), b.as_i64()) {
        return Some(x.cmp(&y));
    }
    if let (Some(x), Some(y)) = (a.as_u64(), b.as_u64()) {
        return Some(x.cmp(&y));
    }
    a.as_f64()?.partial_cmp(&b.as_f64()?)
}

/// jsonb equality: numbers by value (`1` = `1.0`), objects regardless of key order.
pub(super) fn json_eq(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => num_cmp(x, y) == Some(Ordering::Equal),
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_eq(x, y))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_eq(v, w)))
        }
        _ => a == b,
    }
}

pub(super) fn array_index(len: usize, i: i64) -> Option<usize> {
    if i >= 0 {
        usize::try_from(i).ok().filter(|&i| i < len)
    } else {
        len.checked_sub(usize::try_from(i.unsigned_abs()).ok()?)
    }
}

pub(super) fn lookup<'j>(j: &'j Json, key: &Value<'_>) -> Option<&'j Json> {
    match key {
        Value::Text(k) => j.as_object()?.get(&**k),
        Value::Int(i) => {
            let a = j.as_array()?;
            a.get(array_index(a.len(), *i)?)
        }
        _ => None,
    }
}

pub(super) fn lookup_mut<'j>(j: &'j mut Json, key: &Value<'_>) -> Option<&'j mut Json> {
    match key {
        Value::Text(k) => j.as_object_mut()?.get_mut(&**k),
        Value::Int(i) => {
            let a = j.as_array_mut()?;
            let at = array_index(a.len(), *i)?;
            a.get_mut(at)
        }
        _ => None,
    }
}

/// `base -> key` / `base ->> key`; text is parsed as JSON first.
pub(super) fn json_get<'a>(base: Value<'a>, key: &Value<'_>, as_text: bool) -> Value<'a> {
    let doc: Cow<'a, Json> = match base {
        Value::Json(j) => j,
        Value::Text(t) => match serde_json::from_str(&t) {
            Ok(j) => Cow::Owned(j),
            Err(_) => return Value::Null,
        },
        _ => return Value::Null,
    };
    let found = match doc {
        Cow::Borrowed(j) => lookup(j, key).map(Cow::Borrowed),
        Cow::Owned(mut j) => lookup_mut(&mut j, key).map(|v| Cow::Owned(v.take())),
    };
    let Some(found) = found else {
        return Value::Null;
    };
    if !as_text {
        return Value::Json(found);
    }
    match found {
        Cow::Borrowed(Json::String(s)) => Value::Text(Cow::Borrowed(s)),
        Cow::Owned(Json::String(s)) => Value::Text(Cow::Owned(s)),
        Cow::Borrowed(Json::Null) | Cow::Owned(Json::Null) => Value::Null,
        other => Value::Text(Cow::Owned(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn equality_and_lookups() {
        assert!(json_eq(&json!(1), &json!(1.0)));
        assert!(json_eq(
            &json!({"a": [1, 2], "b": null}),
            &json!({"b": null, "a": [1.0, 2]})
        ));
        assert!(!json_eq(&json!([1, 2]), &json!([2, 1])));
        assert!(!json_eq(&json!("1"), &json!(1)));
        let doc = json!({"a": [1, 2, 3]});
        let a = lookup(&doc, &Value::Text("a".into())).unwrap();
        assert_eq!(lookup(a, &Value::Int(-1)), Some(&json!(3)));
        assert_eq!(lookup(a, &Value::Int(-4)), None);
        assert_eq!(lookup(a, &Value::Int(3)), None);
        assert_eq!(
            json_get(
                Value::Text(r#"{"k":"v"}"#.into()),
                &Value::Text("k".into()),
                true
            ),
            Value::Text("v".into())
        );
    }
}
