//! One column value, in PostgreSQL's text output format, written as JSON and typed by the
//! column's type OID (`write_json`); plus the JSON string escaper the CDC payload uses
//! (`write_str`).
//!
//! Assumes the session settings the CDC connection pins on the walsender (`DateStyle=ISO,YMD`,
//! `TimeZone=UTC`, `extra_float_digits=1`): the text forms below depend on them.
//!
//! Invariants: always appends exactly one valid JSON value, whatever the text. A text that
//! does not have the form its type promises (or that JSON cannot carry faithfully: NaN,
//! infinities, numerics past f64 precision, multi-dimensional arrays) becomes a JSON string of
//! the text as is. That is also why this module has no error type. Runs per value on the CDC
//! hot path: it writes into the caller's buffer and allocates only to unescape array elements.

use serde_json::value::RawValue;

// Built-in type OIDs (fixed in PostgreSQL's catalog, `pg_type.dat`).
pub const BOOL: u32 = 16;
pub const INT8: u32 = 20;
pub const INT2: u32 = 21;
pub const INT4: u32 = 23;
pub const TEXT: u32 = 25;
pub const OID: u32 = 26;
pub const JSON: u32 = 114;
pub const FLOAT4: u32 = 700;
pub const FLOAT8: u32 = 701;
pub const VARCHAR: u32 = 1043;
pub const TIMESTAMP: u32 = 1114;
pub const TIMESTAMPTZ: u32 = 1184;
pub const NUMERIC: u32 = 1700;
pub const UUID: u32 = 2950;
pub const JSONB: u32 = 3802;

pub const JSON_ARRAY: u32 = 199;
pub const BOOL_ARRAY: u32 = 1000;
pub const INT2_ARRAY: u32 = 1005;
pub const INT4_ARRAY: u32 = 1007;
pub const TEXT_ARRAY: u32 = 1009;
pub const VARCHAR_ARRAY: u32 = 1015;
pub const INT8_ARRAY: u32 = 1016;
pub const FLOAT4_ARRAY: u32 = 1021;
pub const FLOAT8_ARRAY: u32 = 1022;
pub const OID_ARRAY: u32 = 1028;
pub const TIMESTAMP_ARRAY: u32 = 1115;
pub const TIMESTAMPTZ_ARRAY: u32 = 1185;
pub const NUMERIC_ARRAY: u32 = 1231;
pub const UUID_ARRAY: u32 = 2951;
pub const JSONB_ARRAY: u32 = 3807;

/// Numerics with more significant digits than this stay strings: an f64 (what a JavaScript
/// client parses a JSON number into) holds 15 decimal digits exactly.
const NUMERIC_MAX_DIGITS: usize = 15;
/// Numerics with more leading zeros than this (`0.000…1`) stay strings: they would underflow
/// an f64's normal range (about 1e-308).
const NUMERIC_MAX_LEADING_ZEROS: usize = 300;

/// Appends the JSON form of one non-NULL value of type `type_oid` whose text output is `text`.
pub fn write_json(type_oid: u32, text: &str, out: &mut Vec<u8>) {
    match array_element(type_oid) {
        Some(element) => write_array(element, text, out),
        None => write_scalar(type_oid, text, out),
    }
}

/// Appends `text` as a JSON string literal.
pub fn write_str(text: &str, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.reserve(text.len() + 2);
    out.push(b'"');
    let bytes = text.as_bytes();
    let mut clean_from = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let control;
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0x00..=0x1f => {
                control = [
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[usize::from(b >> 4)],
                    HEX[usize::from(b & 0xf)],
                ];
                &control
            }
            _ => continue,
        };
        // Copy the run that needed no escaping in one go.
        out.extend_from_slice(&bytes[clean_from..i]);
        out.extend_from_slice(escape);
        clean_from = i + 1;
    }
    out.extend_from_slice(&bytes[clean_from..]);
    out.push(b'"');
}

/// The element type of the 1-D array types we type element by element.
fn array_element(type_oid: u32) -> Option<u32> {
    Some(match type_oid {
        BOOL_ARRAY => BOOL,
        INT2_ARRAY => INT2,
        INT4_ARRAY => INT4,
        INT8_ARRAY => INT8,
        OID_ARRAY => OID,
        FLOAT4_ARRAY => FLOAT4,
        FLOAT8_ARRAY => FLOAT8,
        NUMERIC_ARRAY => NUMERIC,
        TEXT_ARRAY => TEXT,
        VARCHAR_ARRAY => VARCHAR,
        UUID_ARRAY => UUID,
        JSON_ARRAY => JSON,
        JSONB_ARRAY => JSONB,
        TIMESTAMP_ARRAY => TIMESTAMP,
        TIMESTAMPTZ_ARRAY => TIMESTAMPTZ,
        _ => return None,
    })
}

fn write_scalar(type_oid: u32, text: &str, out: &mut Vec<u8>) {
    match type_oid {
        BOOL => match text {
            "t" => out.extend_from_slice(b"true"),
            "f" => out.extend_from_slice(b"false"),
            _ => write_str(text, out),
        },
        // NaN and ±Infinity fail the number check and become strings, as they must.
        INT2 | INT4 | INT8 | OID | FLOAT4 | FLOAT8 => write_number(text, is_json_number(text), out),
        NUMERIC => write_number(text, numeric_fits_f64(text), out),
        JSON | JSONB => write_embedded_json(text, out),
        TIMESTAMPTZ => write_timestamp(text, true, out),
        TIMESTAMP => write_timestamp(text, false, out),
        _ => write_str(text, out),
    }
}

fn write_number(text: &str, as_number: bool, out: &mut Vec<u8>) {
    if as_number {
        out.extend_from_slice(text.as_bytes());
    } else {
        write_str(text, out);
    }
}

/// RFC 8259's number grammar: `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`. Checked even
/// for integer types so an unexpected text can never make the payload invalid JSON.
fn is_json_number(text: &str) -> bool {
    let b = text.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(b'1'..=b'9') => i = skip_digits(b, i + 1),
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        let start = i + 1;
        i = skip_digits(b, start);
        if i == start {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        let start = i;
        i = skip_digits(b, start);
        if i == start {
            return false;
        }
    }
    i == b.len()
}

fn skip_digits(b: &[u8], mut i: usize) -> usize {
    while b.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    i
}

/// A numeric's text can be a JSON number without losing precision: finite, at most 15
/// significant digits (trailing zeros count: `1.500` keeps its scale only as 4 digits), and
/// not so small that it underflows. numeric_out never uses an exponent.
fn numeric_fits_f64(text: &str) -> bool {
    if !is_json_number(text) || text.contains(['e', 'E']) {
        return false;
    }
    let digits = text.bytes().filter(u8::is_ascii_digit);
    let leading_zeros = digits.clone().take_while(|&d| d == b'0').count();
    let significant = digits.count() - leading_zeros;
    significant <= NUMERIC_MAX_DIGITS && leading_zeros <= NUMERIC_MAX_LEADING_ZEROS
}

/// json/jsonb text is embedded as JSON. A text serde_json rejects (nesting past its depth
/// limit of 128, say) is sent as a string rather than making the payload invalid.
fn write_embedded_json(text: &str, out: &mut Vec<u8>) {
    match serde_json::from_str::<&RawValue>(text) {
        Ok(raw) => out.extend_from_slice(raw.get().as_bytes()),
        Err(_) => write_str(text, out),
    }
}

/// `2024-01-15 10:30:00[.ffffff][+05:30]` -> `"2024-01-15T10:30:00[.ffffff][+05:30|Z]"`.
/// Anything else (`infinity`, BC dates, years past 9999, offsets with seconds, which RFC 3339
/// cannot express) is sent as the text.
fn write_timestamp(text: &str, zoned: bool, out: &mut Vec<u8>) {
    let b = text.as_bytes();
    let Some(date) = b.get(..10).filter(|d| has_shape(d, b"dddd-dd-dd")) else {
        return write_str(text, out);
    };
    let Some(hms) = b
        .get(11..19)
        .filter(|t| b.get(10) == Some(&b' ') && has_shape(t, b"dd:dd:dd"))
    else {
        return write_str(text, out);
    };
    let mut end = 19;
    if b.get(end) == Some(&b'.') {
        end = skip_digits(b, end + 1);
        if end == 20 {
            return write_str(text, out);
        }
    }
    let (Some(fraction), Some(zone)) = (b.get(19..end), b.get(end..)) else {
        return write_str(text, out);
    };
    let zone = if zoned {
        parse_zone(zone)
    } else {
        zone.is_empty().then_some(Zone::Local)
    };
    let Some(zone) = zone else {
        return write_str(text, out);
    };
    // Only ASCII digits and separators from here on: nothing to escape.
    out.push(b'"');
    out.extend_from_slice(date);
    out.push(b'T');
    out.extend_from_slice(hms);
    out.extend_from_slice(fraction);
    match zone {
        Zone::Local => {}
        Zone::Utc => out.push(b'Z'),
        Zone::Offset {
            sign,
            hours,
            minutes,
        } => {
            out.push(sign);
            out.extend_from_slice(&hours);
            out.push(b':');
            out.extend_from_slice(&minutes);
        }
    }
    out.push(b'"');
}

/// The zone suffix of a timestamp's text.
enum Zone {
    /// timestamp without time zone.
    Local,
    Utc,
    Offset {
        sign: u8,
        hours: [u8; 2],
        minutes: [u8; 2],
    },
}

/// `+00`, `+05:30`, `-07` (PostgreSQL omits zero minutes). Offsets with seconds are refused.
fn parse_zone(zone: &[u8]) -> Option<Zone> {
    let (&sign, rest) = zone.split_first()?;
    if sign != b'+' && sign != b'-' {
        return None;
    }
    let (hours, minutes) = match rest {
        [h1, h2] => ([*h1, *h2], [b'0', b'0']),
        [h1, h2, b':', m1, m2] => ([*h1, *h2], [*m1, *m2]),
        _ => return None,
    };
    if !hours.iter().chain(&minutes).all(u8::is_ascii_digit) {
        return None;
    }
    if hours == *b"00" && minutes == *b"00" {
        return Some(Zone::Utc);
    }
    Some(Zone::Offset {
        sign,
        hours,
        minutes,
    })
}

/// `text` matches `shape`, where `d` stands for any ASCII digit and other bytes for themselves.
fn has_shape(text: &[u8], shape: &[u8]) -> bool {
    text.len() == shape.len()
        && text.iter().zip(shape).all(|(&t, &s)| {
            if s == b'd' {
                t.is_ascii_digit()
            } else {
                t == s
            }
        })
}

/// A 1-D array literal as a JSON array of `element`-typed values; anything else (several
/// dimensions, explicit bounds `[0:1]={…}`, malformed) as the text.
fn write_array(element: u32, text: &str, out: &mut Vec<u8>) {
    let start = out.len();
    if push_array(element, text, out).is_none() {
        out.truncate(start);
        write_str(text, out);
    }
}

/// Parses array_out's format: `{a,"b c",NULL}`, quoted elements with backslash escapes,
/// unquoted `NULL` for null. Writes as it goes; `None` means "not a 1-D literal" and leaves
/// partial output for the caller to drop.
fn push_array(element: u32, text: &str, out: &mut Vec<u8>) -> Option<()> {
    let mut rest = text.strip_prefix('{')?.strip_suffix('}')?;
    out.push(b'[');
    if rest.is_empty() {
        out.push(b']');
        return Some(());
    }
    // Holds an unescaped element; allocated only if some element has escapes.
    let mut unescaped = String::new();
    loop {
        rest = if let Some(quoted) = rest.strip_prefix('"') {
            let (len, escaped) = quoted_len(quoted)?;
            let value = quoted.get(..len)?;
            if escaped {
                unescape(value, &mut unescaped);
                write_scalar(element, &unescaped, out);
            } else {
                write_scalar(element, value, out);
            }
            quoted.get(len + 1..)?
        } else {
            let len = rest.find([',', '}']).unwrap_or(rest.len());
            let value = rest.get(..len)?;
            // A brace means a nested dimension; quotes or backslashes mean a malformed text.
            if value.is_empty() || value.contains(['{', '}', '"', '\\']) {
                return None;
            }
            if value.eq_ignore_ascii_case("NULL") {
                out.extend_from_slice(b"null");
            } else {
                write_scalar(element, value, out);
            }
            rest.get(len..)?
        };
        match rest.strip_prefix(',') {
            Some(next) => {
                rest = next;
                out.push(b',');
            }
            None if rest.is_empty() => break,
            None => return None,
        }
    }
    out.push(b']');
    Some(())
}

/// The length of a quoted element's body (up to its closing quote), and whether it holds
/// backslash escapes. Byte-wise is safe: `"` and `\` never occur inside a UTF-8 sequence.
fn quoted_len(quoted: &str) -> Option<(usize, bool)> {
    let b = quoted.as_bytes();
    let mut escaped = false;
    let mut i = 0;
    loop {
        match b.get(i)? {
            b'"' => return Some((i, escaped)),
            b'\\' => {
                escaped = true;
                i += 2;
            }
            _ => i += 1,
        }
    }
}

fn unescape(body: &str, into: &mut String) {
    into.clear();
    let mut chars = body.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            into.extend(chars.next());
        } else {
            into.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(type_oid: u32, text: &str) -> String {
        let mut out = Vec::new();
        write_json(type_oid, text, &mut out);
        let s = String::from_utf8(out).unwrap();
        serde_json::from_str::<serde_json::Value>(&s)
            .unwrap_or_else(|e| panic!("invalid JSON {s:?} for {text:?}: {e}"));
        s
    }

    #[test]
    fn bool() {
        assert_eq!(json(BOOL, "t"), "true");
        assert_eq!(json(BOOL, "f"), "false");
        assert_eq!(json(BOOL, "maybe"), r#""maybe""#);
    }

    #[test]
    fn integers() {
        assert_eq!(json(INT2, "-32768"), "-32768");
        assert_eq!(json(INT4, "42"), "42");
        assert_eq!(json(INT8, "9223372036854775807"), "9223372036854775807");
        assert_eq!(json(OID, "16384"), "16384");
        assert_eq!(json(INT4, "12abc"), r#""12abc""#);
        assert_eq!(json(INT4, ""), r#""""#);
    }

    #[test]
    fn floats() {
        assert_eq!(json(FLOAT8, "3.14"), "3.14");
        assert_eq!(json(FLOAT8, "-0"), "-0");
        assert_eq!(json(FLOAT8, "1.5e+20"), "1.5e+20");
        assert_eq!(json(FLOAT4, "1e-05"), "1e-05");
        assert_eq!(json(FLOAT8, "NaN"), r#""NaN""#);
        assert_eq!(json(FLOAT8, "Infinity"), r#""Infinity""#);
        assert_eq!(json(FLOAT4, "-Infinity"), r#""-Infinity""#);
    }

    #[test]
    fn numeric() {
        assert_eq!(json(NUMERIC, "12.50"), "12.50");
        assert_eq!(json(NUMERIC, "-0.001"), "-0.001");
        assert_eq!(json(NUMERIC, "123456789012345"), "123456789012345");
        assert_eq!(
            json(NUMERIC, "0.000123456789012345"),
            "0.000123456789012345"
        );
        assert_eq!(json(NUMERIC, "1234567890123456"), r#""1234567890123456""#);
        assert_eq!(json(NUMERIC, "1.234567890123456"), r#""1.234567890123456""#);
        assert_eq!(json(NUMERIC, "NaN"), r#""NaN""#);
        assert_eq!(json(NUMERIC, "Infinity"), r#""Infinity""#);
        assert_eq!(json(NUMERIC, "-Infinity"), r#""-Infinity""#);
        let tiny = format!("0.{}1", "0".repeat(400));
        assert_eq!(json(NUMERIC, &tiny), format!("\"{tiny}\""));
    }

    #[test]
    fn json_and_jsonb() {
        assert_eq!(
            json(JSONB, r#"{"a": [1, 2.5, null]}"#),
            r#"{"a": [1, 2.5, null]}"#
        );
        assert_eq!(json(JSON, "  [1,\n 2] "), "[1,\n 2]");
        assert_eq!(json(JSONB, r#""str""#), r#""str""#);
        assert_eq!(json(JSONB, "12345678901234567890"), "12345678901234567890");
        assert_eq!(json(JSON, "{bad"), r#""{bad""#);
        assert_eq!(json(JSON, "1 2"), r#""1 2""#);
    }

    #[test]
    fn timestamptz() {
        assert_eq!(
            json(TIMESTAMPTZ, "2024-01-15 10:30:00+00"),
            r#""2024-01-15T10:30:00Z""#
        );
        assert_eq!(
            json(TIMESTAMPTZ, "2024-01-15 10:30:00.123456+05:30"),
            r#""2024-01-15T10:30:00.123456+05:30""#
        );
        assert_eq!(
            json(TIMESTAMPTZ, "2024-01-15 10:30:00.5-07"),
            r#""2024-01-15T10:30:00.5-07:00""#
        );
        assert_eq!(
            json(TIMESTAMPTZ, "2024-01-15 10:30:00+00:00"),
            r#""2024-01-15T10:30:00Z""#
        );
        assert_eq!(json(TIMESTAMPTZ, "infinity"), r#""infinity""#);
        assert_eq!(json(TIMESTAMPTZ, "-infinity"), r#""-infinity""#);
        // Fallbacks: BC, five-digit year, offset with seconds, no zone, empty fraction.
        for text in [
            "0044-03-15 12:00:00+00 BC",
            "10000-01-01 00:00:00+00",
            "1850-01-01 00:00:00+00:53:28",
            "2024-01-15 10:30:00",
            "2024-01-15 10:30:00.+00",
        ] {
            assert_eq!(json(TIMESTAMPTZ, text), format!("\"{text}\""));
        }
    }

    #[test]
    fn timestamp() {
        assert_eq!(
            json(TIMESTAMP, "2024-01-15 10:30:00"),
            r#""2024-01-15T10:30:00""#
        );
        assert_eq!(
            json(TIMESTAMP, "2024-01-15 10:30:00.000001"),
            r#""2024-01-15T10:30:00.000001""#
        );
        assert_eq!(
            json(TIMESTAMP, "2024-01-15 10:30:00+00"),
            r#""2024-01-15 10:30:00+00""#
        );
        assert_eq!(json(TIMESTAMP, "infinity"), r#""infinity""#);
    }

    #[test]
    fn other_types_are_strings() {
        assert_eq!(json(TEXT, "hello"), r#""hello""#);
        assert_eq!(
            json(UUID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
            r#""a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11""#
        );
        assert_eq!(json(1082, "2024-01-15"), r#""2024-01-15""#); // date
        assert_eq!(json(1186, "1 day 02:00:00"), r#""1 day 02:00:00""#); // interval
        assert_eq!(json(17, r"\xdeadbeef"), r#""\\xdeadbeef""#); // bytea
        assert_eq!(json(90001, "happy"), r#""happy""#); // an enum
    }

    #[test]
    fn string_escaping() {
        let nasty: String = (0u8..0x20)
            .map(char::from)
            .chain("\"\\/é€😀\u{7f}".chars())
            .collect();
        let s = json(TEXT, &nasty);
        assert_eq!(serde_json::from_str::<String>(&s).unwrap(), nasty);
        assert_eq!(json(TEXT, "a\"b\\c\n"), r#""a\"b\\c\n""#);
        assert_eq!(json(TEXT, "\u{1}"), r#""\u0001""#);
        assert_eq!(json(TEXT, "\u{1f}x"), r#""\u001fx""#);
    }

    #[test]
    fn arrays_of_numbers_and_bools() {
        assert_eq!(json(INT4_ARRAY, "{1,2,3}"), "[1,2,3]");
        assert_eq!(json(INT8_ARRAY, "{}"), "[]");
        assert_eq!(json(INT2_ARRAY, "{1,NULL,-3}"), "[1,null,-3]");
        assert_eq!(json(OID_ARRAY, "{26}"), "[26]");
        assert_eq!(json(BOOL_ARRAY, "{t,f,NULL}"), "[true,false,null]");
        assert_eq!(
            json(FLOAT8_ARRAY, "{1.5,NaN,-Infinity}"),
            r#"[1.5,"NaN","-Infinity"]"#
        );
        assert_eq!(json(FLOAT4_ARRAY, "{0.25}"), "[0.25]");
        assert_eq!(
            json(NUMERIC_ARRAY, "{1.50,12345678901234567}"),
            r#"[1.50,"12345678901234567"]"#
        );
    }

    #[test]
    fn arrays_of_strings() {
        assert_eq!(
            json(TEXT_ARRAY, r#"{"x","y z","a\"b","c\\d",NULL}"#),
            r#"["x","y z","a\"b","c\\d",null]"#
        );
        assert_eq!(
            json(TEXT_ARRAY, r#"{"NULL",null,plain,"é,}"}"#),
            r#"["NULL",null,"plain","é,}"]"#
        );
        assert_eq!(json(VARCHAR_ARRAY, r#"{"",a}"#), r#"["","a"]"#);
        assert_eq!(
            json(UUID_ARRAY, "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}"),
            r#"["a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"]"#
        );
    }

    #[test]
    fn arrays_of_json_and_timestamps() {
        assert_eq!(
            json(JSONB_ARRAY, r#"{"{\"a\": 1}","[1, 2]",NULL}"#),
            r#"[{"a": 1},[1, 2],null]"#
        );
        assert_eq!(json(JSON_ARRAY, r#"{"{bad"}"#), r#"["{bad"]"#);
        assert_eq!(
            json(
                TIMESTAMPTZ_ARRAY,
                r#"{"2024-01-15 10:30:00+00","2024-01-15 10:30:00.25-07"}"#
            ),
            r#"["2024-01-15T10:30:00Z","2024-01-15T10:30:00.25-07:00"]"#
        );
        assert_eq!(
            json(TIMESTAMP_ARRAY, r#"{"2024-01-15 10:30:00",infinity}"#),
            r#"["2024-01-15T10:30:00","infinity"]"#
        );
    }

    #[test]
    fn array_fallbacks_are_the_text() {
        for text in [
            "{{1,2},{3,4}}",
            "[0:1]={1,2}",
            "{1,}",
            "{,1}",
            r#"{"unterminated}"#,
            r#"{"a"b}"#,
            "{1",
            "1,2",
            "",
        ] {
            assert_eq!(
                json(INT4_ARRAY, text),
                serde_json::to_string(text).unwrap(),
                "{text}"
            );
        }
    }

    #[test]
    fn appends_after_existing_output() {
        let mut out = b"[".to_vec();
        write_json(INT4_ARRAY, "{{1}}", &mut out);
        out.push(b',');
        write_json(INT4, "7", &mut out);
        out.push(b']');
        assert_eq!(out, br#"["{{1}}",7]"#);
    }
}
