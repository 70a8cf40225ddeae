//! The `[postgres]` section, validated: where the database change stream (`cdc`) reads from.
//!
//! Owns parsing of the connection URL (`postgres://user:password@host:port/dbname`) and of the
//! table list. The password is kept out of `Debug` and every message, so it is never logged.

use std::fmt;

/// A validated `[postgres]` section (present only when `url` is set).
#[derive(Clone)]
pub struct PostgresConfig {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
    pub publication: String,
    pub slot: String,
    pub tables: Tables,
}

impl fmt::Debug for PostgresConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresConfig")
            .field("url", &self.display_url())
            .field("publication", &self.publication)
            .field("slot", &self.slot)
            .field("tables", &self.tables)
            .finish()
    }
}

impl PostgresConfig {
    /// The URL without its password, for logs and errors.
    pub fn display_url(&self) -> String {
        format!(
            "postgres://{}@{}:{}/{}",
            self.user, self.host, self.port, self.dbname
        )
    }
}

/// Which tables' changes are published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tables {
    /// Every table (`["*"]`: a publication `FOR ALL TABLES`).
    All,
    /// These `(schema, table)` pairs.
    List(Vec<(String, String)>),
}

/// The parts of a connection URL.
#[derive(Debug, PartialEq, Eq)]
pub struct PgUrl {
    pub host: String,
    pub port: u16,
    pub user: String,
    pub password: String,
    pub dbname: String,
}

/// Parses `postgres[ql]://user[:password]@host[:port][/dbname][?sslmode=disable|prefer]`.
/// User, password and dbname may be percent-encoded. Errors never repeat the password.
pub fn parse_url(url: &str) -> Result<PgUrl, String> {
    let rest = url
        .strip_prefix("postgres://")
        .or_else(|| url.strip_prefix("postgresql://"))
        .ok_or("must start with postgres:// or postgresql://")?;
    let (rest, query) = rest.split_once('?').unwrap_or((rest, ""));
    for kv in query.split('&').filter(|kv| !kv.is_empty()) {
        match kv.split_once('=') {
            Some(("sslmode", "disable" | "prefer" | "allow")) => {}
            Some(("sslmode", other)) => {
                return Err(format!(
                    "sslmode={other}: TLS to PostgreSQL is not supported; use sslmode=disable \
                     on a trusted network or a local TLS tunnel"
                ));
            }
            Some(("application_name", _)) => {}
            _ => return Err(format!("unsupported URL parameter `{kv}`")),
        }
    }
    let (auth, hostpart) = rest
        .rsplit_once('@')
        .ok_or("has no user (postgres://user:password@host/dbname)")?;
    let (user, password) = match auth.split_once(':') {
        Some((u, p)) => (decode(u)?, decode(p)?),
        None => (decode(auth)?, String::new()),
    };
    if user.is_empty() {
        return Err("has an empty user".into());
    }
    let (hostport, db) = hostpart.split_once('/').unwrap_or((hostpart, ""));
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || p.is_empty() => (
            h,
            p.parse::<u16>()
                .map_err(|_| format!("port `{p}` is not a number 1-65535"))?,
        ),
        _ => (hostport, 5432),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err("has no host".into());
    }
    let dbname = if db.is_empty() {
        user.clone()
    } else {
        decode(db)?
    };
    Ok(PgUrl {
        host: host.to_string(),
        port,
        user,
        password,
        dbname,
    })
}

/// Percent-decoding (`%40` is `@`).
fn decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("has a bad percent escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "is not UTF-8 once percent-decoded".to_string())
}

/// A publication or slot name PostgreSQL accepts unquoted: lowercase letters, digits and `_`,
/// not starting with a digit, at most 63 bytes (slot names allow nothing else).
pub fn valid_identifier(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
}

/// `["public.posts", ...]` or `["*"]`. A name without a schema is in `public`.
pub fn parse_tables(list: &[String]) -> Result<Tables, String> {
    if list.iter().any(|t| t == "*") {
        return if list.len() == 1 {
            Ok(Tables::All)
        } else {
            Err("`*` (every table) must be the only entry".into())
        };
    }
    if list.is_empty() {
        return Err("list the tables to publish (`[\"public.posts\"]`) or `[\"*\"]`".into());
    }
    let mut out = Vec::with_capacity(list.len());
    for t in list {
        let (schema, table) = t.split_once('.').unwrap_or(("public", t));
        let ok = |s: &str| {
            !s.is_empty()
                && s.bytes()
                    .all(|c| c.is_ascii_alphanumeric() || c == b'_' || c == b'-')
        };
        if !ok(schema) || !ok(table) {
            return Err(format!(
                "`{t}` is not schema.table (letters, digits, `_`, `-`)"
            ));
        }
        out.push((schema.to_string(), table.to_string()));
    }
    Ok(Tables::List(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = parse_url("postgres://ring%40cast:p%3Ass@127.0.0.1:55432/app").unwrap();
        assert_eq!(
            u,
            PgUrl {
                host: "127.0.0.1".into(),
                port: 55432,
                user: "ring@cast".into(),
                password: "p:ss".into(),
                dbname: "app".into(),
            }
        );
        let u = parse_url("postgresql://bob@db.example?sslmode=disable").unwrap();
        assert_eq!((u.port, u.dbname.as_str()), (5432, "bob"));
        for bad in [
            "mysql://a@b/c",
            "postgres://host/db",
            "postgres://a:secret@h:99999/db",
            "postgres://a:secret@h/db?sslmode=require",
            "postgres://a:secret@h/db?foo=1",
        ] {
            let e = parse_url(bad).unwrap_err();
            assert!(!e.contains("secret"), "{bad}: {e}");
        }
    }

    #[test]
    fn tables_and_names() {
        assert_eq!(parse_tables(&["*".into()]), Ok(Tables::All));
        assert_eq!(
            parse_tables(&["public.posts".into(), "users".into()]),
            Ok(Tables::List(vec![
                ("public".into(), "posts".into()),
                ("public".into(), "users".into())
            ]))
        );
        assert!(parse_tables(&["*".into(), "a.b".into()]).is_err());
        assert!(parse_tables(&[]).is_err());
        assert!(parse_tables(&["a b".into()]).is_err());
        assert!(valid_identifier("ringcast_1"));
        assert!(!valid_identifier("Ringcast") && !valid_identifier("1x") && !valid_identifier(""));
    }
}
