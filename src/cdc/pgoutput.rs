//! Decoder of one pgoutput message (logical replication protocol version 1): the `data` of an
//! XLogData that the transport (pgwire-replication) forwards raw. Begin and Commit never reach
//! this module; the transport turns them into its own events.
//!
//! Owns: the wire layout of Relation, Type, Insert, Update, Delete, Truncate and Origin
//! messages, and the `Message` they become. It never interprets values (that is `value` and
//! `row`) and never keeps state (the relation cache belongs to the caller).
//!
//! Invariants: malformed or truncated input is a `DecodeError`, never a panic; every read is
//! bounds-checked. Column values are `Bytes` slices of the input, so decoding copies no row data.
//! An unknown message tag is `Message::Other`, so a newer server cannot wedge the stream.

use bytes::Bytes;

/// Why a pgoutput message could not be decoded. `at` is a byte offset into the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("pgoutput message truncated: {field} needs {need} byte(s) at offset {at}, {have} left")]
    Truncated {
        field: &'static str,
        at: usize,
        need: usize,
        have: usize,
    },
    #[error("pgoutput {field} at offset {at} has no NUL terminator")]
    Unterminated { field: &'static str, at: usize },
    #[error("pgoutput {field} at offset {at} is not UTF-8")]
    NotUtf8 { field: &'static str, at: usize },
    #[error("pgoutput {field} at offset {at}: unexpected byte {got:#04x}")]
    Unexpected {
        field: &'static str,
        at: usize,
        got: u8,
    },
    #[error("pgoutput {field} at offset {at}: negative length {len}")]
    NegativeLength {
        field: &'static str,
        at: usize,
        len: i32,
    },
    #[error("pgoutput '{}' message has {extra} trailing byte(s)", char::from(*tag))]
    Trailing { tag: u8, extra: usize },
}

/// One column of a relation, in table order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: Box<str>,
    /// The column's type OID: picks the JSON form of its values (`value::write_json`).
    pub type_oid: u32,
    pub type_mod: i32,
    /// Part of the replica identity (primary key or identity index). A key-only old tuple
    /// carries values for these columns only.
    pub key: bool,
}

/// A Relation message: the shape of a table. The server sends one before the first change to
/// a table in a session and again after any schema or identity change; the newest replaces
/// the cached one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    /// The relation OID that change messages refer to.
    pub id: u32,
    pub schema: Box<str>,
    pub name: Box<str>,
    /// `relreplident`: `b'd'` default (primary key), `b'n'` nothing, `b'f'` full, `b'i'` index.
    pub replica_identity: u8,
    pub columns: Vec<Column>,
}

/// One column value of a tuple.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Datum {
    Null,
    /// An unchanged out-of-line (TOASTed) value: the server did not send it.
    Unchanged,
    /// Text output format; a slice of the message, not a copy.
    Text(Bytes),
    /// Binary format; only sent when binary mode is requested, which we do not do.
    Binary(Bytes),
}

/// What an old tuple holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    /// `'K'`: replica identity columns only; every other column is sent as NULL.
    Key,
    /// `'O'`: the whole old row (REPLICA IDENTITY FULL).
    Full,
}

/// One decoded pgoutput message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Relation(Relation),
    /// A user-defined type's name; decoded for logging only.
    Type {
        oid: u32,
        schema: Box<str>,
        name: Box<str>,
    },
    Insert {
        rel: u32,
        new: Vec<Datum>,
    },
    /// `old` is absent when the identity did not change and the table is not FULL.
    Update {
        rel: u32,
        old: Option<(OldKind, Vec<Datum>)>,
        new: Vec<Datum>,
    },
    Delete {
        rel: u32,
        old: (OldKind, Vec<Datum>),
    },
    /// The truncated relation OIDs (the CASCADE / RESTART IDENTITY options are dropped).
    Truncate {
        rels: Vec<u32>,
    },
    /// Replication origin of the transaction; content ignored.
    Origin,
    /// Any other tag (logical decoding message, a newer protocol's message): skipped.
    Other(u8),
}

/// Decodes one pgoutput message. Datums share `data`'s buffer.
pub fn parse(data: &Bytes) -> Result<Message, DecodeError> {
    let mut r = Reader { data, pos: 0 };
    let tag = r.u8("message tag")?;
    let msg = match tag {
        b'R' => Message::Relation(r.relation()?),
        b'Y' => Message::Type {
            oid: r.u32("type oid")?,
            schema: r.cstr("type namespace")?,
            name: r.cstr("type name")?,
        },
        b'I' => {
            let rel = r.u32("relation oid")?;
            r.expect(b'N', "insert new-tuple marker")?;
            Message::Insert {
                rel,
                new: r.tuple()?,
            }
        }
        b'U' => r.update()?,
        b'D' => {
            let rel = r.u32("relation oid")?;
            let kind = r.old_kind("delete old-tuple marker")?;
            Message::Delete {
                rel,
                old: (kind, r.tuple()?),
            }
        }
        b'T' => r.truncate()?,
        // Origin content (commit LSN, name) is of no use to us: skip it unread.
        b'O' => return Ok(Message::Origin),
        other => return Ok(Message::Other(other)),
    };
    r.finish(tag)?;
    Ok(msg)
}

/// A bounds-checked cursor over one message.
struct Reader<'a> {
    data: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn remaining(&self) -> usize {
        self.data.len().saturating_sub(self.pos)
    }

    fn truncated(&self, field: &'static str, need: usize) -> DecodeError {
        DecodeError::Truncated {
            field,
            at: self.pos,
            need,
            have: self.remaining(),
        }
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], DecodeError> {
        let bytes = self
            .data
            .get(self.pos..)
            .and_then(|rest| rest.get(..N))
            .and_then(|b| <[u8; N]>::try_from(b).ok())
            .ok_or_else(|| self.truncated(field, N))?;
        self.pos += N;
        Ok(bytes)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }

    fn i32(&mut self, field: &'static str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(field)?))
    }

    fn expect(&mut self, want: u8, field: &'static str) -> Result<(), DecodeError> {
        let at = self.pos;
        match self.u8(field)? {
            got if got == want => Ok(()),
            got => Err(DecodeError::Unexpected { field, at, got }),
        }
    }

    /// A NUL-terminated string. Names are short and live in the relation cache, so they are
    /// copied out rather than kept as slices of the message.
    fn cstr(&mut self, field: &'static str) -> Result<Box<str>, DecodeError> {
        let at = self.pos;
        let rest = self.data.get(at..).unwrap_or_default();
        let len = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Unterminated { field, at })?;
        let text = rest.get(..len).unwrap_or_default();
        let text = std::str::from_utf8(text).map_err(|_| DecodeError::NotUtf8 { field, at })?;
        self.pos += len + 1;
        Ok(text.into())
    }

    /// An Int32 length then that many bytes, as a slice of the message.
    fn sized(&mut self, field: &'static str) -> Result<Bytes, DecodeError> {
        let at = self.pos;
        let len = self.i32(field)?;
        let len =
            usize::try_from(len).map_err(|_| DecodeError::NegativeLength { field, at, len })?;
        if len > self.remaining() {
            return Err(self.truncated(field, len));
        }
        let value = self.data.slice(self.pos..self.pos + len);
        self.pos += len;
        Ok(value)
    }

    fn finish(&self, tag: u8) -> Result<(), DecodeError> {
        match self.remaining() {
            0 => Ok(()),
            extra => Err(DecodeError::Trailing { tag, extra }),
        }
    }

    /// Capacity for `n` items of at least `min_size` bytes each, bounded by what is left, so a
    /// corrupt count cannot make us allocate more than the message could hold.
    fn capacity(&self, n: usize, min_size: usize) -> usize {
        n.min(self.remaining() / min_size)
    }

    fn relation(&mut self) -> Result<Relation, DecodeError> {
        let id = self.u32("relation oid")?;
        let schema = self.cstr("relation namespace")?;
        let name = self.cstr("relation name")?;
        let replica_identity = self.u8("replica identity")?;
        let n = usize::from(self.u16("relation column count")?);
        // flags (1) + name (>= 1) + type oid (4) + type modifier (4)
        let mut columns = Vec::with_capacity(self.capacity(n, 10));
        for _ in 0..n {
            let flags = self.u8("column flags")?;
            columns.push(Column {
                name: self.cstr("column name")?,
                type_oid: self.u32("column type oid")?,
                type_mod: self.i32("column type modifier")?,
                key: flags & 1 != 0,
            });
        }
        Ok(Relation {
            id,
            schema,
            name,
            replica_identity,
            columns,
        })
    }

    fn tuple(&mut self) -> Result<Vec<Datum>, DecodeError> {
        let n = usize::from(self.u16("tuple column count")?);
        let mut datums = Vec::with_capacity(self.capacity(n, 1));
        for _ in 0..n {
            let at = self.pos;
            let datum = match self.u8("tuple column kind")? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                b't' => Datum::Text(self.sized("text value")?),
                b'b' => Datum::Binary(self.sized("binary value")?),
                got => {
                    return Err(DecodeError::Unexpected {
                        field: "tuple column kind",
                        at,
                        got,
                    });
                }
            };
            datums.push(datum);
        }
        Ok(datums)
    }

    fn old_kind(&mut self, field: &'static str) -> Result<OldKind, DecodeError> {
        let at = self.pos;
        match self.u8(field)? {
            b'K' => Ok(OldKind::Key),
            b'O' => Ok(OldKind::Full),
            got => Err(DecodeError::Unexpected { field, at, got }),
        }
    }

    fn update(&mut self) -> Result<Message, DecodeError> {
        const FIELD: &str = "update tuple marker";
        let rel = self.u32("relation oid")?;
        let at = self.pos;
        let old = match self.u8(FIELD)? {
            b'N' => None,
            got @ (b'K' | b'O') => {
                let kind = if got == b'K' {
                    OldKind::Key
                } else {
                    OldKind::Full
                };
                let old = self.tuple()?;
                self.expect(b'N', "update new-tuple marker")?;
                Some((kind, old))
            }
            got => {
                return Err(DecodeError::Unexpected {
                    field: FIELD,
                    at,
                    got,
                });
            }
        };
        Ok(Message::Update {
            rel,
            old,
            new: self.tuple()?,
        })
    }

    fn truncate(&mut self) -> Result<Message, DecodeError> {
        // Int32 on the wire; a negative count would be corrupt and runs out of bytes below.
        let n = self.u32("truncate relation count")? as usize;
        self.u8("truncate options")?;
        let mut rels = Vec::with_capacity(self.capacity(n, 4));
        for _ in 0..n {
            rels.push(self.u32("truncated relation oid")?);
        }
        Ok(Message::Truncate { rels })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A test-only encoder of pgoutput messages.
    #[derive(Default)]
    struct Enc(Vec<u8>);

    impl Enc {
        fn tag(t: u8) -> Self {
            Self(vec![t])
        }
        fn u8(mut self, v: u8) -> Self {
            self.0.push(v);
            self
        }
        fn u16(mut self, v: u16) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn u32(mut self, v: u32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn i32(mut self, v: i32) -> Self {
            self.0.extend_from_slice(&v.to_be_bytes());
            self
        }
        fn cstr(mut self, s: &str) -> Self {
            self.0.extend_from_slice(s.as_bytes());
            self.0.push(0);
            self
        }
        /// `None` = NULL, `Some("\u{1}")` = unchanged TOAST, anything else = text.
        fn tuple(self, cols: &[Option<&str>]) -> Self {
            let mut e = self.u16(cols.len() as u16);
            for c in cols {
                e = match c {
                    None => e.u8(b'n'),
                    Some("\u{1}") => e.u8(b'u'),
                    Some(t) => {
                        let mut e = e.u8(b't').i32(t.len() as i32);
                        e.0.extend_from_slice(t.as_bytes());
                        e
                    }
                };
            }
            e
        }
        fn bytes(self) -> Bytes {
            Bytes::from(self.0)
        }
    }

    fn text(s: &str) -> Datum {
        Datum::Text(Bytes::copy_from_slice(s.as_bytes()))
    }

    fn relation_msg() -> Bytes {
        Enc::tag(b'R')
            .u32(16384)
            .cstr("public")
            .cstr("posts")
            .u8(b'f')
            .u16(2)
            .u8(1)
            .cstr("id")
            .u32(20)
            .i32(-1)
            .u8(0)
            .cstr("title")
            .u32(1043)
            .i32(104)
            .bytes()
    }

    fn insert_msg() -> Bytes {
        Enc::tag(b'I')
            .u32(16384)
            .u8(b'N')
            .tuple(&[Some("1"), None, Some("\u{1}"), Some("héllo")])
            .bytes()
    }

    #[test]
    fn relation() {
        let Message::Relation(r) = parse(&relation_msg()).unwrap() else {
            panic!("not a relation");
        };
        assert_eq!(r.id, 16384);
        assert_eq!(&*r.schema, "public");
        assert_eq!(&*r.name, "posts");
        assert_eq!(r.replica_identity, b'f');
        assert_eq!(
            r.columns,
            vec![
                Column {
                    name: "id".into(),
                    type_oid: 20,
                    type_mod: -1,
                    key: true
                },
                Column {
                    name: "title".into(),
                    type_oid: 1043,
                    type_mod: 104,
                    key: false
                },
            ]
        );
    }

    #[test]
    fn type_message() {
        let msg = Enc::tag(b'Y')
            .u32(90001)
            .cstr("public")
            .cstr("mood")
            .bytes();
        assert_eq!(
            parse(&msg).unwrap(),
            Message::Type {
                oid: 90001,
                schema: "public".into(),
                name: "mood".into()
            }
        );
    }

    #[test]
    fn insert_with_every_datum_kind() {
        let msg = insert_msg();
        let parsed = parse(&msg).unwrap();
        assert_eq!(
            parsed,
            Message::Insert {
                rel: 16384,
                new: vec![text("1"), Datum::Null, Datum::Unchanged, text("héllo")],
            }
        );
        // Values are slices of the message, not copies.
        let Message::Insert { new, .. } = parsed else {
            unreachable!()
        };
        let Datum::Text(v) = &new[0] else {
            unreachable!()
        };
        let range = msg.as_ptr() as usize..msg.as_ptr() as usize + msg.len();
        assert!(range.contains(&(v.as_ptr() as usize)));
    }

    #[test]
    fn binary_datum() {
        let mut e = Enc::tag(b'I').u32(1).u8(b'N').u16(1).u8(b'b').i32(2);
        e.0.extend_from_slice(&[0xde, 0xad]);
        assert_eq!(
            parse(&e.bytes()).unwrap(),
            Message::Insert {
                rel: 1,
                new: vec![Datum::Binary(Bytes::from_static(&[0xde, 0xad]))]
            }
        );
    }

    #[test]
    fn update_without_old() {
        let msg = Enc::tag(b'U').u32(7).u8(b'N').tuple(&[Some("2")]).bytes();
        assert_eq!(
            parse(&msg).unwrap(),
            Message::Update {
                rel: 7,
                old: None,
                new: vec![text("2")]
            }
        );
    }

    #[test]
    fn update_with_key_and_full_old() {
        for (marker, kind) in [(b'K', OldKind::Key), (b'O', OldKind::Full)] {
            let msg = Enc::tag(b'U')
                .u32(7)
                .u8(marker)
                .tuple(&[Some("1"), None])
                .u8(b'N')
                .tuple(&[Some("2"), Some("x")])
                .bytes();
            assert_eq!(
                parse(&msg).unwrap(),
                Message::Update {
                    rel: 7,
                    old: Some((kind, vec![text("1"), Datum::Null])),
                    new: vec![text("2"), text("x")]
                }
            );
        }
    }

    #[test]
    fn update_old_tuple_must_be_followed_by_new() {
        let msg = Enc::tag(b'U')
            .u32(7)
            .u8(b'K')
            .tuple(&[Some("1")])
            .u8(b'X')
            .tuple(&[Some("2")])
            .bytes();
        assert!(matches!(
            parse(&msg),
            Err(DecodeError::Unexpected { got: b'X', .. })
        ));
    }

    #[test]
    fn delete_key_and_full() {
        for (marker, kind) in [(b'K', OldKind::Key), (b'O', OldKind::Full)] {
            let msg = Enc::tag(b'D')
                .u32(9)
                .u8(marker)
                .tuple(&[Some("5"), None])
                .bytes();
            assert_eq!(
                parse(&msg).unwrap(),
                Message::Delete {
                    rel: 9,
                    old: (kind, vec![text("5"), Datum::Null])
                }
            );
        }
        let bad = Enc::tag(b'D').u32(9).u8(b'N').tuple(&[]).bytes();
        assert!(matches!(
            parse(&bad),
            Err(DecodeError::Unexpected {
                at: 5,
                got: b'N',
                ..
            })
        ));
    }

    #[test]
    fn truncate() {
        let msg = Enc::tag(b'T').u32(2).u8(1).u32(10).u32(11).bytes();
        assert_eq!(
            parse(&msg).unwrap(),
            Message::Truncate { rels: vec![10, 11] }
        );
        // A huge count does not allocate for it: it runs out of bytes.
        let lying = Enc::tag(b'T').u32(u32::MAX).u8(0).u32(10).bytes();
        assert!(matches!(parse(&lying), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn origin_and_other_tags() {
        let origin = Enc::tag(b'O').u32(0).u32(42).cstr("node_a").bytes();
        assert_eq!(parse(&origin).unwrap(), Message::Origin);
        let logical = Enc::tag(b'M').u8(1).bytes();
        assert_eq!(parse(&logical).unwrap(), Message::Other(b'M'));
        assert_eq!(
            parse(&Bytes::from_static(b"B")).unwrap(),
            Message::Other(b'B')
        );
    }

    #[test]
    fn empty_message_is_truncated() {
        assert!(matches!(
            parse(&Bytes::new()),
            Err(DecodeError::Truncated {
                field: "message tag",
                ..
            })
        ));
    }

    #[test]
    fn every_truncation_errors() {
        for full in [insert_msg(), relation_msg()] {
            for len in 0..full.len() {
                let cut = full.slice(..len);
                assert!(parse(&cut).is_err(), "prefix of {len} bytes decoded");
            }
            assert!(parse(&full).is_ok());
        }
    }

    #[test]
    fn truncation_error_names_the_field() {
        let cut = insert_msg().slice(..12); // inside the first text value
        let err = parse(&cut).unwrap_err();
        assert!(
            matches!(
                err,
                DecodeError::Truncated {
                    field: "text value",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("text value"));
    }

    #[test]
    fn malformed_inputs() {
        let bad_kind = Enc::tag(b'I').u32(1).u8(b'N').u16(1).u8(b'z').bytes();
        assert!(matches!(
            parse(&bad_kind),
            Err(DecodeError::Unexpected {
                field: "tuple column kind",
                at: 8,
                got: b'z'
            })
        ));

        let negative = Enc::tag(b'I')
            .u32(1)
            .u8(b'N')
            .u16(1)
            .u8(b't')
            .i32(-5)
            .bytes();
        assert!(matches!(
            parse(&negative),
            Err(DecodeError::NegativeLength { len: -5, .. })
        ));

        let huge = Enc::tag(b'I')
            .u32(1)
            .u8(b'N')
            .u16(1)
            .u8(b't')
            .i32(i32::MAX)
            .bytes();
        assert!(matches!(parse(&huge), Err(DecodeError::Truncated { .. })));

        let no_marker = Enc::tag(b'I').u32(1).u8(b'X').tuple(&[]).bytes();
        assert!(matches!(
            parse(&no_marker),
            Err(DecodeError::Unexpected { got: b'X', .. })
        ));

        let mut not_utf8 = Enc::tag(b'Y').u32(1);
        not_utf8.0.extend_from_slice(&[0xff, 0xfe, 0]);
        let not_utf8 = not_utf8.cstr("x").bytes();
        assert!(matches!(
            parse(&not_utf8),
            Err(DecodeError::NotUtf8 {
                field: "type namespace",
                at: 5
            })
        ));

        let unterminated = Enc::tag(b'Y').u32(1).cstr("public").u8(b'a').bytes();
        assert!(matches!(
            parse(&unterminated),
            Err(DecodeError::Unterminated {
                field: "type name",
                ..
            })
        ));

        let trailing = Enc::tag(b'I').u32(1).u8(b'N').tuple(&[]).u8(0).bytes();
        assert_eq!(
            parse(&trailing),
            Err(DecodeError::Trailing {
                tag: b'I',
                extra: 1
            })
        );
    }
}
