//! Every construct the compiler refuses, with the message and the position it reports.

use crate::policy::{Policy, PolicyError};

/// The position and message of the one error of `expr` in a policy on `table`.
fn refused(table: &str, expr: &str) -> (u64, String) {
    let sql = format!("CREATE POLICY p ON realtime.{table} FOR SELECT USING ({expr})");
    let prefix = sql.len() - expr.len() - 1;
    match Policy::parse(&sql).map_err(|e| e.0) {
        Ok(_) => panic!("accepted {expr}"),
        Err(e) => match &e[..] {
            [PolicyError::Unsupported { at, message, .. }] => {
                assert_eq!(at.line, 1);
                (at.column - prefix as u64, message.clone())
            }
            other => panic!("{expr}: {other:?}"),
        },
    }
}

#[test]
fn refuses_each_construct_where_it_is() {
    // (expression, column within the expression from 1, message start)
    let cases: &[(&str, u64, &str)] = &[
        (
            "now() IS NOT NULL",
            1,
            "function `now` is not supported (supported: split_part",
        ),
        (
            "enabled AND coalesce(pattern, '') = ''",
            13,
            "function `coalesce`",
        ),
        (
            "EXISTS (SELECT 1)",
            9,
            "EXISTS (sub-query) is not supported",
        ),
        ("(SELECT true)", 2, "sub-queries are not supported"),
        (
            "pattern IN (SELECT 'a')",
            1,
            "sub-queries are not supported",
        ),
        (
            "CASE WHEN enabled THEN true END",
            1,
            "CASE is not supported",
        ),
        (
            "count(*) OVER () > 0",
            1,
            "window and aggregate clauses are not supported",
        ),
        (
            "lower(DISTINCT pattern) = 'a'",
            1,
            "clauses in the arguments of `lower`",
        ),
        (
            "id IS NULL",
            1,
            "column `id` is not available on realtime.channels (columns: \
          pattern, enabled, description)",
        ),
        (
            "enabled AND messages.payload IS NULL",
            13,
            "column `messages.payload` is not \
          available (columns of realtime.channels",
        ),
        (
            "auth.uid IS NULL",
            1,
            "column `auth.uid` is not available (did you mean \
          auth.uid()?)",
        ),
        (
            "pattern = 1.5",
            11,
            "numeric literal 1.5 is not supported (only integers)",
        ),
        (
            "pattern = 99999999999999999999",
            11,
            "integer literal 99999999999999999999 is out \
          of range",
        ),
        ("pattern = X'00'", 11, "literal `X'00'` is not supported"),
        ("pattern = $1", 11, "literal `$1` is not supported"),
        (
            "enabled = 'maybe'",
            11,
            "invalid input syntax for type boolean: \"maybe\"",
        ),
        ("'x' = 5", 1, "invalid input syntax for type integer: \"x\""),
        ("enabled = 1", 11, "cannot compare boolean with integer"),
        (
            "pattern",
            1,
            "a policy expression must be boolean, not text",
        ),
        (
            "5 AND enabled",
            1,
            "argument of AND must be boolean, not integer",
        ),
        (
            "enabled OR 'x' || 'y'",
            12,
            "argument of OR must be boolean, not text",
        ),
        (
            "NOT pattern",
            5,
            "argument of NOT must be boolean, not text",
        ),
        (
            "pattern IS TRUE",
            1,
            "argument of IS TRUE / FALSE / UNKNOWN must be boolean",
        ),
        ("1 + 1 = 2", 1, "operator `+` is not supported"),
        ("pattern ~ 'a'", 1, "operator `~` is not supported"),
        ("-length(pattern) = 1", 2, "function `length`"),
        (
            "-(enabled::int) = -1",
            3,
            "unary `-` is only supported on integer literals",
        ),
        (
            "enabled BETWEEN false AND true",
            1,
            "BETWEEN is not supported",
        ),
        (
            "pattern::numeric = '1'",
            1,
            "cast to `NUMERIC` is not supported (supported: text",
        ),
        (
            "pattern::varchar(3) = 'a'",
            1,
            "cast to `VARCHAR(3)` is not supported",
        ),
        (
            "TRY_CAST(pattern AS int) = 1",
            10,
            "`TRY_CAST(pattern AS INT)` is not supported",
        ),
        ("5::uuid IS NULL", 1, "cannot cast type integer to uuid"),
        (
            "'nope'::uuid IS NULL",
            1,
            "invalid input syntax for type uuid: \"nope\"",
        ),
        ("pattern LIKE 'a' ESCAPE '!'", 1, "ESCAPE is not supported"),
        (
            "pattern LIKE 'a\\'",
            14,
            "LIKE pattern must not end with escape character",
        ),
        ("pattern LIKE ANY ('a')", 1, "LIKE ANY is not supported"),
        (
            "split_part(pattern, ':') = 'a'",
            1,
            "function `split_part` takes 3 argument(s), \
          got 2",
        ),
        (
            "realtime.channel_name(1) = 'a'",
            1,
            "function `realtime.channel_name` takes 0",
        ),
        (
            "split_part(pattern, ':', true) = 'a'",
            26,
            "argument 3 of `split_part` must be \
          integer, not boolean",
        ),
        (
            "starts_with(pattern, 5 = 5)",
            22,
            "argument 2 of `starts_with` must be text, \
          not boolean",
        ),
        (
            "auth.jwt() ->> 'a' #> '{a}' IS NULL",
            1,
            "operator `#>` is not supported",
        ),
        (
            "enabled -> 'a' IS NULL",
            1,
            "operator `->` needs jsonb, not boolean",
        ),
        (
            "auth.jwt() -> true IS NULL",
            15,
            "the key of `->` must be text or integer",
        ),
        (
            "'{' -> 'a' IS NULL",
            1,
            "invalid input syntax for type jsonb: \"{\"",
        ),
        ("5 LIKE '5'", 1, "LIKE needs text, not integer"),
        (
            "lower(5) = '5'",
            7,
            "argument 1 of `lower` must be text, not integer",
        ),
        ("ARRAY[1] IS NULL", 7, "`ARRAY[1]` is not supported"),
        ("pattern IN (UNNEST(ARRAY['a']))", 13, "function `unnest`"),
    ];
    let mut failed = Vec::new();
    for &(expr, col, msg) in cases {
        let (got_col, got) = refused("channels", expr);
        if got_col != col || !got.starts_with(msg) {
            failed.push(format!(
                "{expr}\n  got  {got_col}: {got}\n  want {col}: {msg}"
            ));
        }
    }
    assert!(failed.is_empty(), "\n{}", failed.join("\n"));
}

#[test]
fn refuses_json_beside_other_types() {
    let cases: &[(&str, &str)] = &[
        (
            "payload = auth.uid()",
            "cannot compare jsonb with text; use ->>",
        ),
        (
            "payload -> 'n' = 5",
            "cannot compare jsonb with integer; use ->>",
        ),
        (
            "payload = 'x'",
            "invalid input syntax for type jsonb: \"x\"",
        ),
        (
            "payload || 'x' = 'x'",
            "`||` on jsonb is not supported; use ->>",
        ),
        (
            "lower(payload) = 'x'",
            "argument 1 of `lower` must be text, not jsonb; use ->>",
        ),
        ("payload LIKE 'x'", "LIKE needs text, not jsonb"),
        ("payload IN (1)", "cannot compare"),
        ("payload::uuid IS NULL", "cannot cast type jsonb to uuid"),
        (
            "enabled",
            "column `enabled` is not available on realtime.messages",
        ),
    ];
    for &(expr, msg) in cases {
        let (_, got) = refused("messages", expr);
        assert!(got.starts_with(msg), "{expr}: {got}");
    }
}

#[test]
fn limits_nesting() {
    let deep = format!("auth.jwt(){} IS NULL", " -> 'a'".repeat(70));
    assert_eq!(
        refused("messages", &deep).1,
        "expression is nested too deeply"
    );
    // Long AND / OR / || chains are flat, not deep.
    let wide = vec!["auth.uid() = 'x'"; 500].join(" OR ");
    assert!(
        Policy::parse(&format!(
            "CREATE POLICY p ON realtime.messages FOR SELECT USING ({wide})"
        ))
        .is_ok()
    );
}
