//! The evaluator, construct by construct: three-valued logic, comparisons and coercions,
//! LIKE, JSON arrows, functions, `||`, casts, and type mismatches that evaluate to NULL.

use super::*;

#[test]
fn three_valued_logic() {
    table(
        "messages",
        &[
            ("NULL AND false", F),
            ("false AND NULL", F),
            ("NULL AND true", N),
            ("NULL OR true", T),
            ("NULL OR false", N),
            ("NOT NULL", N),
            ("NOT false", T),
            ("true AND true AND (false OR true)", T),
            ("NULL = NULL", N),
            ("NULL <> 1", N),
            ("NULL IS NULL", T),
            ("1 IS NOT NULL", T),
            ("payload -> 'missing' IS NULL", T),
            ("payload -> 'nul' IS NULL", F),
            ("payload ->> 'nul' IS NULL", T),
            ("NULL IS NOT DISTINCT FROM NULL", T),
            ("sender_id IS DISTINCT FROM NULL", T),
            ("sender_id IS NOT DISTINCT FROM auth.uid()", T),
            ("(NULL = 1) IS UNKNOWN", T),
            ("(1 = 1) IS TRUE", T),
            ("(1 = 2) IS NOT TRUE", T),
            ("(NULL = 1) IS NOT FALSE", T),
            ("(1 = 2) IS FALSE", T),
            ("NOT (1 = 1) IS TRUE", F),
            ("1 IN (1, NULL)", T),
            ("1 IN (2, NULL)", N),
            ("1 NOT IN (2, NULL)", N),
            ("1 NOT IN (2, 3)", T),
            ("NULL IN (1)", N),
            ("event_name IN ('a', 'msg')", T),
            ("'5' IN (4, 5)", T),
        ],
    );
}

#[test]
fn comparisons_and_coercions() {
    table(
        "messages",
        &[
            ("1 < 2", T),
            ("2 <= 2", T),
            ("3 > 2", T),
            ("2 >= 3", F),
            ("1 <> 2", T),
            ("1 != 2", T),
            ("-5 < 0", T),
            ("'a' < 'b'", T),
            ("'B' < 'a'", T),
            ("'é' > 'z'", T),
            ("true > false", T),
            // A text literal is read as the other side's type.
            ("'5' = 5", T),
            ("5 = ' 5 '", T),
            // Other text is cast at evaluation; NULL when it is not a number.
            ("payload ->> 's' = 5", T),
            ("payload ->> 'n' > 4", T),
            ("payload ->> 'user_id' = 5", N),
            ("payload ->> 'user_id' > 3", N),
            ("(payload ->> 'user_id')::int IS NULL", T),
            ("(payload ->> 'f')::int IS NULL", T),
        ],
    );
    table(
        "channels",
        &[
            ("enabled", T),
            ("enabled = true", T),
            ("enabled = 'yes'", T),
            ("enabled = 'f'", F),
            ("NOT enabled", F),
            ("pattern = 'user:%'", T),
            ("realtime.channel_name() LIKE pattern", T),
            ("channels.pattern LIKE 'user%'", T),
            ("realtime.channels.enabled", T),
            ("description IS NULL", T),
            ("description = 'x'", N),
            ("\"enabled\"", T),
        ],
    );
}

#[test]
fn like_and_ilike() {
    table(
        "messages",
        &[
            ("event_name LIKE 'm%'", T),
            ("event_name NOT LIKE 'm%'", F),
            ("channel_name LIKE 'chat:_obby'", T),
            ("channel_name LIKE 'chat:_'", F),
            ("channel_name LIKE '%'", T),
            ("channel_name LIKE 'CHAT:%'", F),
            ("channel_name ILIKE 'CHAT:%'", T),
            ("channel_name NOT ILIKE 'CHAT:%'", F),
            ("sender_id LIKE NULL", N),
            ("NULL LIKE '%'", N),
            ("'a_c' LIKE 'a\\_c'", T),
            ("'abc' LIKE 'a\\_c'", F),
            ("'100%' LIKE '100\\%'", T),
            ("channel_name LIKE payload ->> 'user_id'", F),
            ("'u1' LIKE payload ->> 'user_id'", T),
            ("('a' || 'b') LIKE 'ab'", T),
            ("5::text LIKE '5'", T),
        ],
    );
}

#[test]
fn json_arrows() {
    table(
        "messages",
        &[
            ("payload ->> 'user_id' = 'u1'", T),
            ("payload -> 'user_id' = '\"u1\"'", T),
            ("payload -> 'obj' -> 'a' ->> 'b' = 'c'", T),
            ("payload -> 'arr' ->> 0 = '1'", T),
            ("payload -> 'arr' ->> -1 = '3'", T),
            ("payload -> 'arr' -> 5 IS NULL", T),
            ("payload -> 'arr' -> -4 IS NULL", T),
            ("payload -> 'obj' -> 0 IS NULL", T),
            ("payload -> 'arr' -> 'a' IS NULL", T),
            ("payload -> 'n' = '5.0'", T),
            ("payload -> 'n' > '4'", T),
            ("payload -> 'n' > '\"4\"'", N),
            ("payload -> 'obj' = '{\"a\": {\"b\": \"c\"}}'", T),
            ("payload ->> 'obj' = '{\"a\":{\"b\":\"c\"}}'", T),
            ("payload ->> 'n' = '5'", T),
            ("payload ->> 't' = 'true'", T),
            ("(payload ->> 'n')::int = 5", T),
            ("(payload -> 'f')::int = 2", T),
            ("(payload -> 't')::bool", T),
            ("(payload -> 'user_id')::int IS NULL", T),
            ("'{\"a\": 1}' -> 'a' = '1'", T),
            ("payload ->> ('user' || '_id') = 'u1'", T),
            ("payload -> (payload ->> 'n')::int IS NULL", T),
            ("event_name -> 'x' IS NULL", T),
            ("auth.jwt() -> 'app_metadata' ->> 'team' = 'red'", T),
            ("(auth.jwt() -> 'app_metadata' ->> 'level')::int >= 3", T),
            ("auth.jwt() ->> 'sub' = auth.uid()", T),
            ("payload::text LIKE '{%'", T),
        ],
    );
}

#[test]
fn functions_concat_and_casts() {
    table(
        "messages",
        &[
            ("split_part(realtime.channel_name(), ':', 2) = 'u1'", T),
            ("split_part(realtime.channel_name(), ':', -1) = 'u1'", T),
            ("split_part('a:b', ':', 0) IS NULL", T),
            ("split_part('a:b', ':', '2') = 'b'", T),
            ("lower('AbC') = 'abc'", T),
            ("upper(event_name) = 'MSG'", T),
            ("pg_catalog.lower('É') = 'é'", T),
            ("starts_with(channel_name, 'chat:')", T),
            ("starts_with(channel_name, 'x')", F),
            ("starts_with(NULL, 'x') IS NULL", T),
            ("auth.role() = 'authenticated'", T),
            ("auth.email() LIKE '%@x.io'", T),
            ("auth.uid() = sender_id", T),
            ("realtime.channel_name() = 'user:' || auth.uid()", T),
            ("'user:' || auth.uid() = realtime.channel_name()", T),
            ("realtime.channel_name() <> 'user:' || auth.uid()", F),
            ("realtime.channel_name() = 'user:' || NULL", N),
            ("realtime.channel_name() = 'x' || NULL", N),
            ("NOT (realtime.channel_name() = 'x' || NULL)", N),
            ("realtime.channel_name() = 'use' || 'r:u1'", T),
            ("realtime.channel_name() = 'user:' || 'u1' || 'x'", F),
            ("realtime.channel_name() = 'user:' || 'u'", F),
            ("'n' || 5 || true = 'n5true'", T),
            ("('a' || 'b') = 'ab'", T),
            ("'42'::int = 42", T),
            ("CAST('42' AS bigint) = 42", T),
            ("42::text = '42'", T),
            ("true::text = 'true'", T),
            ("'t'::boolean", T),
            ("1::bool", T),
            ("0::boolean", F),
            ("sender_id::uuid IS NULL", T),
            (
                "'6BA7B810-9DAD-11D1-80B4-00C04FD430C8'::uuid \
                 = '6ba7b810-9dad-11d1-80b4-00c04fd430c8'",
                T,
            ),
            ("'{\"a\":1}'::jsonb -> 'a' = '1'", T),
            ("NULL::int IS NULL", T),
            ("auth.uid()::text = 'u1'", T),
            ("event_name::varchar = 'msg'", T),
        ],
    );
}

#[test]
fn missing_rows_read_null() {
    let p = Policy::parse(
        "CREATE POLICY p ON realtime.messages FOR SELECT USING (channel_name IS NULL \
         AND payload IS NULL AND auth.uid() IS NULL AND auth.jwt() IS NULL \
         AND auth.email() IS NULL)",
    )
    .unwrap();
    let a = AuthInfo {
        uid: None,
        role: Role::Anon,
        email: None,
        claims: LazyJson::absent(),
    };
    let cx = Ctx {
        channel_name: "c",
        channel: None,
        message: None,
        auth: &a,
    };
    assert!(p.check(&cx));
}
