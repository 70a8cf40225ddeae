//! Checks and prepares the database before the change stream starts, on the replication
//! session itself (a gated `pgwire-replication` session runs SQL before START_REPLICATION):
//! `wal_level`, the tables, the publication and the slot.
//!
//! What it can fix (a missing publication or slot, a table missing from the publication) it
//! fixes when the role may; what it cannot is a `SetupError::Fatal` that says what is wrong
//! and prints the exact SQL to run. A slot that PostgreSQL invalidated
//! (`max_slot_wal_keep_size` exceeded), or that is gone while this node had a checkpoint, is
//! dropped and created again, and reported as a gap.

use pgwire_replication::{Lsn, PgWireError, ReplicationClient};

use crate::config::{PostgresConfig, Tables};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// The database is not set up for the change stream and this node cannot fix it: the
    /// message says what to run. Not retried at start (the node refuses to start).
    #[error("{0}")]
    Fatal(String),
    /// Could not reach or talk to the database; retried with backoff.
    #[error("{0}")]
    Transient(String),
}

/// What the stream needs to know once the database is ready.
#[derive(Debug)]
pub struct Ready {
    /// Set when the slot had to be created again over a checkpoint: changes were lost.
    pub gap: Option<String>,
    /// The tables of the publication, `(schema, table)` (where a gap is announced).
    pub tables: Vec<(String, String)>,
    /// The slot's `confirmed_flush_lsn`: where a fresh slot starts (a gap's position).
    pub slot_lsn: u64,
}

/// Runs every check on a gated session. `had_checkpoint`: this node (or the cluster, redis
/// engine) already read from the slot, so a missing slot is a gap, not a first start.
pub async fn prepare(
    c: &mut ReplicationClient,
    cfg: &PostgresConfig,
    had_checkpoint: bool,
) -> Result<Ready, SetupError> {
    // The first statement is where a refused login shows (the session connects lazily).
    let wal_level = c
        .simple_query("SHOW wal_level")
        .await
        .map_err(|e| connect_error(&e, cfg))?
        .first()
        .and_then(|r| text(r, 0))
        .unwrap_or_default();
    if wal_level != "logical" {
        return Err(SetupError::Fatal(format!(
            "PostgreSQL has wal_level = {wal_level}; the change stream needs logical. As a \
             superuser run: ALTER SYSTEM SET wal_level = logical; then restart PostgreSQL"
        )));
    }
    if let Tables::List(list) = &cfg.tables {
        for (schema, table) in list {
            let sql = format!("SELECT to_regclass({})", literal(&qualified(schema, table)));
            if one(c, &sql).await?.is_none() {
                return Err(SetupError::Fatal(format!(
                    "postgres.tables: table {schema}.{table} does not exist in database `{}`",
                    cfg.dbname
                )));
            }
            replica_identity(c, schema, table).await?;
        }
    }
    publication(c, cfg).await?;
    let tables = publication_tables(c, &cfg.publication).await?;
    let gap = slot(c, cfg, had_checkpoint).await?;
    let slot_lsn = one(
        c,
        &format!(
            "SELECT confirmed_flush_lsn::text FROM pg_replication_slots WHERE slot_name = {}",
            literal(&cfg.slot)
        ),
    )
    .await?
    .and_then(|l| Lsn::parse(&l).ok())
    .map_or(0, |l| l.0);
    Ok(Ready {
        gap,
        tables,
        slot_lsn,
    })
}

/// Ensures the publication exists and holds every configured table.
async fn publication(c: &mut ReplicationClient, cfg: &PostgresConfig) -> Result<(), SetupError> {
    let p = &cfg.publication;
    let all = one(
        c,
        &format!(
            "SELECT puballtables::text FROM pg_publication WHERE pubname = {}",
            literal(p)
        ),
    )
    .await?;
    let create = match &cfg.tables {
        Tables::All => format!(
            "CREATE PUBLICATION {p} FOR ALL TABLES WITH (publish = 'insert, update, delete')"
        ),
        Tables::List(list) => format!(
            "CREATE PUBLICATION {p} FOR TABLE {} WITH (publish = 'insert, update, delete')",
            list.iter()
                .map(|(s, t)| qualified(s, t))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    match (all.as_deref(), &cfg.tables) {
        (None, _) => {
            run(c, &create).await.map_err(|e| {
                fatal_sql(
                    format!(
                        "publication `{p}` is missing and role `{}` may not create it",
                        cfg.user
                    ),
                    e,
                    &create,
                )
            })?;
            tracing::info!(publication = %p, "created the publication");
            Ok(())
        }
        (Some("true"), _) => Ok(()),
        (Some(_), Tables::All) => Err(SetupError::Fatal(format!(
            "publication `{p}` exists but does not publish every table (postgres.tables = \
             [\"*\"]). Run: DROP PUBLICATION {p}; {create};"
        ))),
        (Some(_), Tables::List(list)) => {
            let have = publication_tables(c, p).await?;
            for (s, t) in list {
                if have.iter().any(|(hs, ht)| hs == s && ht == t) {
                    continue;
                }
                let add = format!("ALTER PUBLICATION {p} ADD TABLE {}", qualified(s, t));
                run(c, &add).await.map_err(|e| {
                    fatal_sql(
                        format!("table {s}.{t} is not in publication `{p}` and role `{}` may not add it", cfg.user),
                        e,
                        &add,
                    )
                })?;
                tracing::info!(publication = %p, table = %format!("{s}.{t}"), "added a table to the publication");
            }
            Ok(())
        }
    }
}

async fn publication_tables(
    c: &mut ReplicationClient,
    p: &str,
) -> Result<Vec<(String, String)>, SetupError> {
    let rows = query(
        c,
        &format!(
            "SELECT schemaname, tablename FROM pg_publication_tables WHERE pubname = {}",
            literal(p)
        ),
    )
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| Some((text(&r, 0)?, text(&r, 1)?)))
        .collect())
}

/// Warns about tables whose old rows will be partial (DEFAULT) or whose updates and deletes
/// will fail (NOTHING: PostgreSQL refuses them in a table that publishes them).
async fn replica_identity(
    c: &mut ReplicationClient,
    schema: &str,
    table: &str,
) -> Result<(), SetupError> {
    let sql = format!(
        "SELECT relreplident::text FROM pg_class WHERE oid = {}::regclass",
        literal(&qualified(schema, table))
    );
    match one(c, &sql).await?.as_deref() {
        Some("n") => tracing::error!(
            table = %format!("{schema}.{table}"),
            "REPLICA IDENTITY NOTHING: PostgreSQL will refuse UPDATE and DELETE on this table \
             once it is published; run ALTER TABLE {} REPLICA IDENTITY FULL (or DEFAULT with a \
             primary key)",
            qualified(schema, table)
        ),
        Some("d" | "i") => tracing::info!(
            table = %format!("{schema}.{table}"),
            "old rows of updates and deletes carry the key columns only; for whole old rows run \
             ALTER TABLE {} REPLICA IDENTITY FULL",
            qualified(schema, table)
        ),
        _ => {}
    }
    Ok(())
}

/// Ensures the slot exists and can be read; recreates an invalidated one. Returns the gap, if
/// the slot was lost.
async fn slot(
    c: &mut ReplicationClient,
    cfg: &PostgresConfig,
    had_checkpoint: bool,
) -> Result<Option<String>, SetupError> {
    let s = &cfg.slot;
    let rows = query(
        c,
        &format!(
            "SELECT plugin, coalesce(wal_status, ''), database FROM pg_replication_slots \
             WHERE slot_name = {}",
            literal(s)
        ),
    )
    .await?;
    let create = format!(
        "SELECT pg_create_logical_replication_slot({}, 'pgoutput')",
        literal(s)
    );
    let gap = match rows.first() {
        Some(r) => {
            let plugin = text(r, 0).unwrap_or_default();
            let db = text(r, 2).unwrap_or_default();
            if plugin != "pgoutput" || db != cfg.dbname {
                return Err(SetupError::Fatal(format!(
                    "replication slot `{s}` exists for plugin `{plugin}` in database `{db}`, \
                     not pgoutput in `{}`: set postgres.slot to another name, or run \
                     SELECT pg_drop_replication_slot({});",
                    cfg.dbname,
                    literal(s)
                )));
            }
            if text(r, 1).as_deref() != Some("lost") {
                return Ok(None);
            }
            let drop = format!("SELECT pg_drop_replication_slot({})", literal(s));
            run(c, &drop).await.map_err(|e| {
                fatal_sql(
                    format!("replication slot `{s}` was invalidated and cannot be dropped"),
                    e,
                    &drop,
                )
            })?;
            Some(format!(
                "replication slot `{s}` was invalidated by PostgreSQL (max_slot_wal_keep_size \
                 exceeded): changes made while it was behind are lost"
            ))
        }
        None if had_checkpoint => Some(format!(
            "replication slot `{s}` disappeared (dropped, or lost in a failover): changes made \
             since the last checkpoint are lost"
        )),
        None => None,
    };
    match run(c, &create).await {
        Ok(()) => {}
        Err(e) => {
            return Err(fatal_sql(
                format!(
                    "replication slot `{s}` is missing and role `{}` may not create it",
                    cfg.user
                ),
                e,
                &create,
            ));
        }
    }
    tracing::info!(slot = %s, "created the replication slot");
    Ok(gap)
}

/// A fatal error that quotes the server's words and the SQL that fixes it.
fn fatal_sql(what: String, server: String, sql: &str) -> SetupError {
    SetupError::Fatal(format!("{what} ({server}). Run as a role that may: {sql};"))
}

/// `schema.table`, each part quoted as an identifier.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", ident(schema), ident(table))
}

fn ident(s: &str) -> String {
    let plain = s
        .bytes()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_')
        && !s.starts_with(|c: char| c.is_ascii_digit());
    if plain {
        s.to_string()
    } else {
        format!("\"{}\"", s.replace('"', "\"\""))
    }
}

fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn text(row: &[Option<bytes::Bytes>], i: usize) -> Option<String> {
    row.get(i)?
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

async fn query(
    c: &mut ReplicationClient,
    sql: &str,
) -> Result<Vec<pgwire_replication::QueryRow>, SetupError> {
    c.simple_query(sql).await.map_err(|e| classify(e, sql))
}

/// The first column of the first row (`None`: no row, or NULL).
async fn one(c: &mut ReplicationClient, sql: &str) -> Result<Option<String>, SetupError> {
    Ok(query(c, sql).await?.first().and_then(|r| text(r, 0)))
}

/// Runs a statement; a server error comes back as its text (the caller says what to do).
/// `duplicate_object` (42710: the publication or slot exists, the table is already in the
/// publication) is success: another node of the cluster did it first.
async fn run(c: &mut ReplicationClient, sql: &str) -> Result<(), String> {
    match c.simple_query(sql).await {
        Ok(_) => Ok(()),
        Err(PgWireError::Server(m)) if m.contains("42710") => Ok(()),
        Err(PgWireError::Server(m)) => Err(m),
        Err(e) => Err(e.to_string()),
    }
}

/// A failed check query: the server refusing it is fatal, anything else transient.
fn classify(e: PgWireError, sql: &str) -> SetupError {
    match e {
        PgWireError::Server(m) => SetupError::Fatal(format!("`{sql}` failed: {m}")),
        e => SetupError::Transient(e.to_string()),
    }
}

/// Maps a connection error: a role without REPLICATION, a bad password or a missing database
/// will not fix themselves; network errors and a server starting up will.
pub fn connect_error(e: &PgWireError, cfg: &PostgresConfig) -> SetupError {
    let m = e.to_string();
    if m.contains("must be superuser or replication role") || m.contains("42501") {
        SetupError::Fatal(format!(
            "role `{}` may not read the change stream ({m}). As a superuser run: ALTER ROLE {} \
             WITH REPLICATION;",
            cfg.user,
            ident(&cfg.user)
        ))
    } else if e.is_auth() || m.contains("28P01") || m.contains("28000") {
        SetupError::Fatal(format!(
            "PostgreSQL refused the login of `{}` at {} ({m})",
            cfg.user,
            cfg.display_url()
        ))
    } else if m.contains("3D000") {
        SetupError::Fatal(format!("database `{}` does not exist ({m})", cfg.dbname))
    } else {
        SetupError::Transient(format!("{} at {}", m, cfg.display_url()))
    }
}

/// The LSN PostgreSQL text form of a position.
pub fn lsn_text(l: u64) -> String {
    Lsn(l).to_pg_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quoting() {
        assert_eq!(qualified("public", "posts"), "public.posts");
        assert_eq!(qualified("Public", "my\"t"), "\"Public\".\"my\"\"t\"");
        assert_eq!(literal("o'x"), "'o''x'");
    }
}
