//! The JSON payload of one row change, as the seed's database-change notification carries it:
//! `{"schema","table","commit_timestamp","eventType","new","old"}`, keys in that order, columns
//! in table order, values typed by their column's type (`value::write_json`).
//!
//! Owns: which columns an old or new row shows (key-only old tuples, unchanged TOAST values),
//! the finding of a change in a pgoutput `Message` (`Change`), and the commit timestamp's
//! format. Never decodes wire bytes (that is `pgoutput`) and keeps no state.
//!
//! Invariants: the payload is valid JSON; a tuple that does not match its relation's column
//! count is a `RowError` (the caller's relation cache is stale), never a panic or a guess.

use std::borrow::Cow;

use time::{OffsetDateTime, macros::datetime};

use super::pgoutput::{Column, Datum, Message, OldKind, Relation};
use super::value;

/// Why a change could not become a payload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RowError {
    #[error(
        "{schema}.{table}: {tuple} tuple has {got} column(s), the relation has {expected} (stale relation cache)"
    )]
    ColumnCount {
        schema: Box<str>,
        table: Box<str>,
        tuple: &'static str,
        expected: usize,
        got: usize,
    },
    #[error("{schema}.{table}: {event} change without its {tuple} tuple")]
    MissingTuple {
        schema: Box<str>,
        table: Box<str>,
        event: &'static str,
        tuple: &'static str,
    },
}

/// The kind of a row change, as `eventType` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Event {
    Insert,
    Update,
    Delete,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Insert => "INSERT",
            Self::Update => "UPDATE",
            Self::Delete => "DELETE",
        }
    }
}

/// A row change found in a pgoutput message, borrowing its tuples.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change<'a> {
    /// The relation OID; look it up in the relation cache.
    pub rel: u32,
    pub event: Event,
    pub new: Option<&'a [Datum]>,
    pub old: Option<(OldKind, &'a [Datum])>,
}

impl<'a> Change<'a> {
    /// The change an Insert, Update or Delete carries; `None` for every other message.
    pub fn from_message(msg: &'a Message) -> Option<Self> {
        let (rel, event, new, old) = match msg {
            Message::Insert { rel, new } => (*rel, Event::Insert, Some(new), None),
            Message::Update { rel, old, new } => (*rel, Event::Update, Some(new), old.as_ref()),
            Message::Delete { rel, old } => (*rel, Event::Delete, None, Some(old)),
            _ => return None,
        };
        Some(Self {
            rel,
            event,
            new: new.map(Vec::as_slice),
            old: old.map(|(kind, tuple)| (*kind, tuple.as_slice())),
        })
    }

    /// `payload` for this change.
    pub fn payload(&self, rel: &Relation, commit_timestamp: &str) -> Result<Vec<u8>, RowError> {
        payload(rel, self.event, self.new, self.old, commit_timestamp)
    }
}

/// The payload of one change to `rel`. INSERT and UPDATE need `new`, DELETE needs `old`.
///
/// `new` shows every column, except unchanged TOAST values that a full old row cannot supply:
/// those are left out (a null would tell clients the column was cleared). `old` shows the whole
/// old row for `OldKind::Full` and only the key columns for `OldKind::Key` (pgoutput sends NULL
/// for the others); it is null when the server sent no old tuple.
pub fn payload(
    rel: &Relation,
    event: Event,
    new: Option<&[Datum]>,
    old: Option<(OldKind, &[Datum])>,
    commit_timestamp: &str,
) -> Result<Vec<u8>, RowError> {
    check_tuples(rel, event, new, old)?;
    let mut out = Vec::with_capacity(estimate_len(rel, new, old, commit_timestamp));
    out.extend_from_slice(b"{\"schema\":");
    value::write_str(&rel.schema, &mut out);
    out.extend_from_slice(b",\"table\":");
    value::write_str(&rel.name, &mut out);
    out.extend_from_slice(b",\"commit_timestamp\":");
    value::write_str(commit_timestamp, &mut out);
    out.extend_from_slice(b",\"eventType\":\"");
    out.extend_from_slice(event.as_str().as_bytes());
    out.extend_from_slice(b"\",\"new\":");
    match new {
        Some(new) => write_new(&rel.columns, new, old, &mut out),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"old\":");
    match old {
        Some((kind, old)) => write_old(&rel.columns, kind, old, &mut out),
        None => out.extend_from_slice(b"null"),
    }
    out.push(b'}');
    Ok(out)
}

/// A commit timestamp (microseconds since 2000-01-01T00:00:00Z, PostgreSQL's epoch) as RFC 3339
/// UTC with 6 fractional digits: `2026-11-29T08:20:34.200063Z`. Times outside years 0000–9999
/// (which RFC 3339 cannot write, and no real commit has) are clamped to that range.
pub fn pg_time_to_rfc3339(micros_since_2000: i64) -> String {
    const PG_EPOCH_UNIX_MICROS: i128 = 946_684_800_000_000;
    const MIN: OffsetDateTime = datetime!(0000-01-01 00:00:00 UTC);
    const MAX: OffsetDateTime = datetime!(9999-12-31 23:59:59.999999 UTC);
    let unix_nanos = (i128::from(micros_since_2000) + PG_EPOCH_UNIX_MICROS) * 1000;
    let t = OffsetDateTime::from_unix_timestamp_nanos(unix_nanos)
        .unwrap_or(if unix_nanos < 0 { MIN } else { MAX })
        .clamp(MIN, MAX);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.microsecond()
    )
}

fn check_tuples(
    rel: &Relation,
    event: Event,
    new: Option<&[Datum]>,
    old: Option<(OldKind, &[Datum])>,
) -> Result<(), RowError> {
    let missing = match event {
        Event::Insert | Event::Update if new.is_none() => Some("new"),
        Event::Delete if old.is_none() => Some("old"),
        _ => None,
    };
    if let Some(tuple) = missing {
        return Err(RowError::MissingTuple {
            schema: rel.schema.clone(),
            table: rel.name.clone(),
            event: event.as_str(),
            tuple,
        });
    }
    let tuples = [("new", new), ("old", old.map(|(_, t)| t))];
    for (tuple, datums) in tuples {
        let got = datums.map_or(rel.columns.len(), <[Datum]>::len);
        if got != rel.columns.len() {
            return Err(RowError::ColumnCount {
                schema: rel.schema.clone(),
                table: rel.name.clone(),
                tuple,
                expected: rel.columns.len(),
                got,
            });
        }
    }
    Ok(())
}

/// Enough capacity for the usual payload, so it is written without reallocating: the fixed
/// text, names, and values (plus room for quotes, escapes and separators).
fn estimate_len(
    rel: &Relation,
    new: Option<&[Datum]>,
    old: Option<(OldKind, &[Datum])>,
    commit_timestamp: &str,
) -> usize {
    let names: usize = rel.columns.iter().map(|c| c.name.len() + 8).sum();
    let values = |tuple: &[Datum]| -> usize {
        tuple
            .iter()
            .map(|d| match d {
                Datum::Text(b) => b.len() + 2,
                Datum::Binary(b) => 2 * b.len() + 4,
                Datum::Null | Datum::Unchanged => 4,
            })
            .sum()
    };
    let tuples = new.map_or(0, |t| names + values(t)) + old.map_or(0, |(_, t)| names + values(t));
    96 + rel.schema.len() + rel.name.len() + commit_timestamp.len() + tuples
}

fn write_new(
    columns: &[Column],
    new: &[Datum],
    old: Option<(OldKind, &[Datum])>,
    out: &mut Vec<u8>,
) {
    // Only a full old row has real values to stand in for unchanged TOAST ones.
    let full_old = match old {
        Some((OldKind::Full, old)) => Some(old),
        _ => None,
    };
    let mut fields = Fields::open(out);
    for (i, (column, datum)) in columns.iter().zip(new).enumerate() {
        let datum = match datum {
            Datum::Unchanged => match full_old.and_then(|old| old.get(i)) {
                Some(Datum::Unchanged) | None => continue,
                Some(filled) => filled,
            },
            datum => datum,
        };
        fields.write(column, datum);
    }
    fields.close();
}

fn write_old(columns: &[Column], kind: OldKind, old: &[Datum], out: &mut Vec<u8>) {
    let mut fields = Fields::open(out);
    for (column, datum) in columns.iter().zip(old) {
        // Key-only tuples carry NULL, not the value, in non-key columns: leave those out.
        // An unchanged TOAST value has no value to show.
        if (kind == OldKind::Key && !column.key) || *datum == Datum::Unchanged {
            continue;
        }
        fields.write(column, datum);
    }
    fields.close();
}

/// A JSON object being written, one column at a time.
struct Fields<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

impl<'o> Fields<'o> {
    fn open(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    fn write(&mut self, column: &Column, datum: &Datum) {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        value::write_str(&column.name, self.out);
        self.out.push(b':');
        write_datum(column.type_oid, datum, self.out);
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

fn write_datum(type_oid: u32, datum: &Datum, out: &mut Vec<u8>) {
    match datum {
        // Callers drop Unchanged before this; null is the only honest rendering left.
        Datum::Null | Datum::Unchanged => out.extend_from_slice(b"null"),
        Datum::Text(bytes) => {
            // A UTF8 database always sends UTF-8. A SQL_ASCII one may not: replace the bad
            // bytes rather than fail a change that would fail again on every reconnect.
            let text = match std::str::from_utf8(bytes) {
                Ok(text) => Cow::Borrowed(text),
                Err(_) => String::from_utf8_lossy(bytes),
            };
            value::write_json(type_oid, &text, out);
        }
        Datum::Binary(bytes) => write_hex(bytes, out),
    }
}

/// Binary values (never requested) in bytea's hex text form, `"\\x…"`.
fn write_hex(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(2 * bytes.len() + 5);
    out.extend_from_slice(br#""\\x"#);
    for &b in bytes {
        out.push(HEX[usize::from(b >> 4)]);
        out.push(HEX[usize::from(b & 0xf)]);
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    const TS: &str = "2024-01-15T10:30:00.123456Z";

    fn column(name: &str, type_oid: u32, key: bool) -> Column {
        Column {
            name: name.into(),
            type_oid,
            type_mod: -1,
            key,
        }
    }

    /// public.posts (id int8 key, title text, body text, meta jsonb).
    fn posts() -> Relation {
        Relation {
            id: 16384,
            schema: "public".into(),
            name: "posts".into(),
            replica_identity: b'd',
            columns: vec![
                column("id", value::INT8, true),
                column("title", value::TEXT, false),
                column("body", value::TEXT, false),
                column("meta", value::JSONB, false),
            ],
        }
    }

    fn t(s: &str) -> Datum {
        Datum::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn to_string(bytes: Vec<u8>) -> String {
        let s = String::from_utf8(bytes).unwrap();
        serde_json::from_str::<serde_json::Value>(&s).unwrap_or_else(|e| panic!("{s}: {e}"));
        s
    }

    fn run(event: Event, new: Option<&[Datum]>, old: Option<(OldKind, &[Datum])>) -> String {
        to_string(payload(&posts(), event, new, old, TS).unwrap())
    }

    const HEAD: &str = r#"{"schema":"public","table":"posts","commit_timestamp":"2024-01-15T10:30:00.123456Z","eventType":"#;

    #[test]
    fn insert() {
        let new = [t("1"), t("hi"), Datum::Null, t(r#"{"k": [1]}"#)];
        assert_eq!(
            run(Event::Insert, Some(&new), None),
            format!(
                r#"{HEAD}"INSERT","new":{{"id":1,"title":"hi","body":null,"meta":{{"k": [1]}}}},"old":null}}"#
            )
        );
    }

    #[test]
    fn keys_in_order_and_parseable() {
        let new = [t("1"), t("hi"), Datum::Null, Datum::Null];
        let s = run(Event::Insert, Some(&new), None);
        let positions: Vec<usize> = [
            "\"schema\"",
            "\"table\"",
            "\"commit_timestamp\"",
            "\"eventType\"",
            "\"new\"",
            "\"old\"",
        ]
        .iter()
        .map(|k| s.find(k).unwrap())
        .collect();
        assert!(positions.windows(2).all(|w| w[0] < w[1]), "{s}");
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["new"]["id"], 1);
        assert_eq!(v["eventType"], "INSERT");
    }

    #[test]
    fn update_with_full_old() {
        let old = [t("1"), t("before"), t("b"), Datum::Null];
        let new = [t("1"), t("after"), t("b"), Datum::Null];
        assert_eq!(
            run(Event::Update, Some(&new), Some((OldKind::Full, &old))),
            format!(
                r#"{HEAD}"UPDATE","new":{{"id":1,"title":"after","body":"b","meta":null}},"old":{{"id":1,"title":"before","body":"b","meta":null}}}}"#
            )
        );
    }

    #[test]
    fn update_with_key_old_shows_key_columns_only() {
        let old = [t("1"), Datum::Null, Datum::Null, Datum::Null];
        let new = [t("2"), t("x"), t("b"), Datum::Null];
        assert_eq!(
            run(Event::Update, Some(&new), Some((OldKind::Key, &old))),
            format!(
                r#"{HEAD}"UPDATE","new":{{"id":2,"title":"x","body":"b","meta":null}},"old":{{"id":1}}}}"#
            )
        );
    }

    #[test]
    fn update_without_old() {
        let new = [t("2"), t("x"), t("b"), Datum::Null];
        assert!(run(Event::Update, Some(&new), None).ends_with(r#""meta":null},"old":null}"#));
    }

    #[test]
    fn delete_key_and_full() {
        let key = [t("7"), Datum::Null, Datum::Null, Datum::Null];
        assert_eq!(
            run(Event::Delete, None, Some((OldKind::Key, &key))),
            format!(r#"{HEAD}"DELETE","new":null,"old":{{"id":7}}}}"#)
        );
        let full = [t("7"), t("gone"), Datum::Null, t("[]")];
        assert_eq!(
            run(Event::Delete, None, Some((OldKind::Full, &full))),
            format!(
                r#"{HEAD}"DELETE","new":null,"old":{{"id":7,"title":"gone","body":null,"meta":[]}}}}"#
            )
        );
    }

    #[test]
    fn unchanged_toast_filled_from_full_old() {
        let old = [t("1"), t("a"), t("long body"), Datum::Null];
        let new = [t("1"), t("b"), Datum::Unchanged, Datum::Unchanged];
        assert_eq!(
            run(Event::Update, Some(&new), Some((OldKind::Full, &old))),
            format!(
                r#"{HEAD}"UPDATE","new":{{"id":1,"title":"b","body":"long body","meta":null}},"old":{{"id":1,"title":"a","body":"long body","meta":null}}}}"#
            )
        );
    }

    #[test]
    fn unchanged_toast_left_out_when_it_cannot_be_filled() {
        let new = [t("1"), t("b"), Datum::Unchanged, t("{}")];
        let expected_new = r#""new":{"id":1,"title":"b","meta":{}}"#;
        // No old tuple.
        assert!(run(Event::Update, Some(&new), None).contains(expected_new));
        // A key-only old tuple's NULLs are not values.
        let key = [t("1"), Datum::Null, Datum::Null, Datum::Null];
        assert!(run(Event::Update, Some(&new), Some((OldKind::Key, &key))).contains(expected_new));
        // A full old tuple that is unchanged there too.
        let full = [t("1"), t("a"), Datum::Unchanged, t("{}")];
        let s = run(Event::Update, Some(&new), Some((OldKind::Full, &full)));
        assert!(s.contains(expected_new), "{s}");
        assert!(
            s.ends_with(r#""old":{"id":1,"title":"a","meta":{}}}"#),
            "{s}"
        );
        // The first column unchanged: no leading comma.
        let new = [Datum::Unchanged, t("b"), t("c"), t("1")];
        assert!(
            run(Event::Update, Some(&new), None)
                .contains(r#""new":{"title":"b","body":"c","meta":1}"#)
        );
    }

    #[test]
    fn odd_names_are_escaped() {
        let rel = Relation {
            id: 1,
            schema: "my \"schema\"".into(),
            name: "tab\\le\n".into(),
            replica_identity: b'f',
            columns: vec![column("wé\"ird\u{1}", value::INT4, true)],
        };
        let s = to_string(payload(&rel, Event::Insert, Some(&[t("5")]), None, TS).unwrap());
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v["schema"], "my \"schema\"");
        assert_eq!(v["table"], "tab\\le\n");
        assert_eq!(v["new"]["wé\"ird\u{1}"], 5);
    }

    #[test]
    fn binary_and_invalid_utf8_values() {
        let rel = Relation {
            columns: vec![column("a", value::TEXT, false), column("b", 17, false)],
            ..posts()
        };
        let new = [
            Datum::Text(Bytes::from_static(b"ok\xff")),
            Datum::Binary(Bytes::from_static(&[0xde, 0xad, 0x01])),
        ];
        let s = to_string(payload(&rel, Event::Insert, Some(&new), None, TS).unwrap());
        let expected = "\"new\":{\"a\":\"ok\u{fffd}\",\"b\":\"\\\\xdead01\"}";
        assert!(s.contains(expected), "{s}");
    }

    #[test]
    fn column_count_mismatch_is_an_error() {
        let short = [t("1")];
        let err = payload(&posts(), Event::Insert, Some(&short), None, TS).unwrap_err();
        assert_eq!(
            err,
            RowError::ColumnCount {
                schema: "public".into(),
                table: "posts".into(),
                tuple: "new",
                expected: 4,
                got: 1
            }
        );
        let new = [t("1"), t("a"), t("b"), t("{}")];
        assert!(matches!(
            payload(
                &posts(),
                Event::Update,
                Some(&new),
                Some((OldKind::Full, &short)),
                TS
            ),
            Err(RowError::ColumnCount { tuple: "old", .. })
        ));
    }

    #[test]
    fn missing_tuple_is_an_error() {
        assert!(matches!(
            payload(&posts(), Event::Insert, None, None, TS),
            Err(RowError::MissingTuple { tuple: "new", .. })
        ));
        assert!(matches!(
            payload(&posts(), Event::Delete, None, None, TS),
            Err(RowError::MissingTuple { tuple: "old", .. })
        ));
    }

    #[test]
    fn change_from_message() {
        let insert = Message::Insert {
            rel: 5,
            new: vec![t("1")],
        };
        let c = Change::from_message(&insert).unwrap();
        assert_eq!((c.rel, c.event, c.old), (5, Event::Insert, None));
        assert_eq!(c.new.map(<[Datum]>::len), Some(1));

        let update = Message::Update {
            rel: 5,
            old: Some((OldKind::Key, vec![t("1")])),
            new: vec![t("2")],
        };
        let c = Change::from_message(&update).unwrap();
        assert_eq!(c.event, Event::Update);
        assert_eq!(c.old, Some((OldKind::Key, &[t("1")][..])));

        let delete = Message::Delete {
            rel: 5,
            old: (OldKind::Full, vec![t("1")]),
        };
        let c = Change::from_message(&delete).unwrap();
        assert_eq!((c.event, c.new), (Event::Delete, None));

        assert_eq!(Change::from_message(&Message::Origin), None);
        assert_eq!(
            Change::from_message(&Message::Truncate { rels: vec![5] }),
            None
        );
    }

    #[test]
    fn change_payload_matches_payload() {
        let rel = Relation {
            columns: vec![column("id", value::INT8, true)],
            ..posts()
        };
        let msg = Message::Delete {
            rel: rel.id,
            old: (OldKind::Key, vec![t("3")]),
        };
        let change = Change::from_message(&msg).unwrap();
        assert_eq!(
            to_string(change.payload(&rel, TS).unwrap()),
            format!(r#"{HEAD}"DELETE","new":null,"old":{{"id":3}}}}"#)
        );
    }

    #[test]
    fn event_names() {
        assert_eq!(Event::Insert.as_str(), "INSERT");
        assert_eq!(Event::Update.as_str(), "UPDATE");
        assert_eq!(Event::Delete.as_str(), "DELETE");
    }

    #[test]
    fn commit_timestamps() {
        assert_eq!(pg_time_to_rfc3339(0), "2000-01-01T00:00:00.000000Z");
        assert_eq!(pg_time_to_rfc3339(1), "2000-01-01T00:00:00.000001Z");
        // 2024-01-15T10:30:00.123456Z is 1705314600 s after the Unix epoch.
        let micros = (1_705_314_600 - 946_684_800) * 1_000_000 + 123_456;
        assert_eq!(pg_time_to_rfc3339(micros), "2024-01-15T10:30:00.123456Z");
        assert_eq!(pg_time_to_rfc3339(-1), "1999-12-31T23:59:59.999999Z");
        assert_eq!(
            pg_time_to_rfc3339(-946_684_800_000_000),
            "1970-01-01T00:00:00.000000Z"
        );
        assert_eq!(pg_time_to_rfc3339(i64::MAX), "9999-12-31T23:59:59.999999Z");
        assert_eq!(pg_time_to_rfc3339(i64::MIN), "0000-01-01T00:00:00.000000Z");
    }
}
