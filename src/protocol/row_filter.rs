//! The row filter of a `db:` subscription (`filter.where`), beyond the seed and as Supabase's
//! `postgres_changes` filters: `{"column": "id", "op": "eq", "value": 5}` with `eq`, `neq`,
//! `lt`, `lte`, `gt`, `gte`, and `in` (`value` an array). It is matched against the change's
//! `new` row, or `old` for a DELETE.
//!
//! Matching runs on a core, per subscriber that has a row filter; the change's row is parsed
//! at most once per core and message (`ChangeRow::parse`), and only when such a subscriber
//! exists. Numbers compare as numbers (`5` equals `5.0`), strings by their bytes; other types
//! only for equality. A column the row does not carry (not in the table, a key-only `old`, an
//! unchanged TOAST value) matches nothing.

use std::cmp::Ordering;

use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RowOp {
    Eq,
    Neq,
    Lt,
    Lte,
    Gt,
    Gte,
    In,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RowFilter {
    pub column: String,
    pub op: RowOp,
    pub value: Value,
}

impl RowFilter {
    /// Checks what serde cannot: a named column, and a value that fits the operator.
    pub fn validate(&self) -> Result<(), String> {
        if self.column.is_empty() {
            return Err("filter.where.column must not be empty".into());
        }
        let scalar = |v: &Value| !matches!(v, Value::Array(_) | Value::Object(_));
        match (self.op, &self.value) {
            (RowOp::In, Value::Array(items)) if items.iter().all(scalar) => Ok(()),
            (RowOp::In, _) => {
                Err("filter.where.value must be an array of scalars for op `in`".into())
            }
            (RowOp::Lt | RowOp::Lte | RowOp::Gt | RowOp::Gte, v)
                if !matches!(v, Value::Number(_) | Value::String(_)) =>
            {
                Err("filter.where.value must be a number or a string for op lt/lte/gt/gte".into())
            }
            (_, v) if !scalar(v) => {
                Err("filter.where.value must be a string, number, boolean or null".into())
            }
            _ => Ok(()),
        }
    }

    /// Whether the change's row passes (`None`: the change has no such row).
    pub fn matches(&self, row: Option<&Map<String, Value>>) -> bool {
        let Some(v) = row.and_then(|r| r.get(&self.column)) else {
            return false;
        };
        match self.op {
            RowOp::Eq => same(v, &self.value),
            RowOp::Neq => !same(v, &self.value),
            RowOp::In => self
                .value
                .as_array()
                .is_some_and(|items| items.iter().any(|x| same(v, x))),
            RowOp::Lt => order(v, &self.value) == Some(Ordering::Less),
            RowOp::Lte => matches!(
                order(v, &self.value),
                Some(Ordering::Less | Ordering::Equal)
            ),
            RowOp::Gt => order(v, &self.value) == Some(Ordering::Greater),
            RowOp::Gte => matches!(
                order(v, &self.value),
                Some(Ordering::Greater | Ordering::Equal)
            ),
        }
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.as_str().cmp(y.as_str())),
        _ => None,
    }
}

/// The row a change's filter is matched against, read from its `message` frame body.
pub struct ChangeRow(Option<Map<String, Value>>);

impl ChangeRow {
    /// `payload.new`, or `payload.old` for a DELETE.
    pub fn parse(frame_json: &[u8]) -> Self {
        #[derive(Deserialize)]
        struct Payload {
            #[serde(rename = "eventType")]
            event_type: Option<String>,
            new: Option<Map<String, Value>>,
            old: Option<Map<String, Value>>,
        }
        #[derive(Deserialize)]
        struct Frame {
            payload: Option<Payload>,
        }
        let row = serde_json::from_slice::<Frame>(frame_json)
            .ok()
            .and_then(|f| f.payload)
            .and_then(|p| match p.event_type.as_deref() {
                Some("DELETE") => p.old,
                _ => p.new,
            });
        Self(row)
    }

    pub fn get(&self) -> Option<&Map<String, Value>> {
        self.0.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn f(v: Value) -> RowFilter {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn operators() {
        let row = json!({"id": 5, "title": "b", "ok": true, "n": null})
            .as_object()
            .unwrap()
            .clone();
        let r = Some(&row);
        assert!(f(json!({"column":"id","op":"eq","value":5.0})).matches(r));
        assert!(!f(json!({"column":"id","op":"eq","value":"5"})).matches(r));
        assert!(f(json!({"column":"id","op":"neq","value":4})).matches(r));
        assert!(f(json!({"column":"id","op":"lt","value":6})).matches(r));
        assert!(f(json!({"column":"id","op":"lte","value":5})).matches(r));
        assert!(!f(json!({"column":"id","op":"gt","value":5})).matches(r));
        assert!(f(json!({"column":"id","op":"gte","value":5})).matches(r));
        assert!(f(json!({"column":"title","op":"gt","value":"a"})).matches(r));
        assert!(!f(json!({"column":"title","op":"gt","value":1})).matches(r));
        assert!(f(json!({"column":"id","op":"in","value":[1,5]})).matches(r));
        assert!(!f(json!({"column":"id","op":"in","value":[1,2]})).matches(r));
        assert!(f(json!({"column":"ok","op":"eq","value":true})).matches(r));
        assert!(f(json!({"column":"n","op":"eq","value":null})).matches(r));
        assert!(!f(json!({"column":"missing","op":"neq","value":1})).matches(r));
        assert!(!f(json!({"column":"id","op":"eq","value":5})).matches(None));
    }

    #[test]
    fn validation() {
        assert!(
            f(json!({"column":"id","op":"in","value":5}))
                .validate()
                .is_err()
        );
        assert!(
            f(json!({"column":"id","op":"in","value":[[1]]}))
                .validate()
                .is_err()
        );
        assert!(
            f(json!({"column":"id","op":"eq","value":{"a":1}}))
                .validate()
                .is_err()
        );
        assert!(
            f(json!({"column":"id","op":"lt","value":true}))
                .validate()
                .is_err()
        );
        assert!(
            f(json!({"column":"","op":"eq","value":1}))
                .validate()
                .is_err()
        );
        assert!(
            f(json!({"column":"id","op":"in","value":[1,"a",null]}))
                .validate()
                .is_ok()
        );
        assert!(
            serde_json::from_value::<RowFilter>(json!({"column":"id","op":"like","value":1}))
                .is_err()
        );
    }

    #[test]
    fn rows_of_changes() {
        let ins =
            br#"{"type":"message","payload":{"eventType":"INSERT","new":{"id":1},"old":null}}"#;
        assert_eq!(ChangeRow::parse(ins).get().unwrap()["id"], 1);
        let del =
            br#"{"type":"message","payload":{"eventType":"DELETE","new":null,"old":{"id":2}}}"#;
        assert_eq!(ChangeRow::parse(del).get().unwrap()["id"], 2);
        assert!(ChangeRow::parse(b"{}").get().is_none());
    }
}
