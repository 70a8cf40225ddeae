//! Row-level-security policies for realtime, written as PostgreSQL `CREATE POLICY` statements
//! (the way InsForge and Supabase users write them), parsed with `sqlparser` and compiled to a
//! small typed tree that is evaluated on the cores: no database, no locks, no I/O.
//!
//! ```text
//! parse.rs    policies text -> statements -> Policy (every error, with statement and position)
//! tokens.rs   statement splitting, keyword positions, the expressions' text as written
//! compile.rs  sqlparser Expr -> Node, with static types; refuses what it cannot evaluate
//! coerce.rs   compile-time types: casts, the common type of a comparison, literal conversion
//! names.rs    columns and functions
//! node.rs     the compiled tree (Node, Ty, Const, ...)
//! eval.rs     three-valued evaluation of a Node against a Ctx
//! cast.rs     casts at evaluation (NULL when a value does not convert)
//! json.rs     -> / ->> lookups, jsonb equality and number order
//! context.rs  Ctx: the channel, message and caller a decision is about; lazily parsed JSON
//! like.rs     LIKE / ILIKE matching
//! model.rs    Policy, Table, Command, Roles
//! set.rs      PolicySet: PostgreSQL RLS semantics, the defaults, the permissions view
//! error.rs    PolicyError, PolicyErrors, Duplicate
//! ```
//!
//! # What a policy can say
//!
//! `CREATE POLICY name ON realtime.channels|realtime.messages [AS PERMISSIVE]
//! FOR SELECT|INSERT [TO role[, ...]] [USING (expr)] [WITH CHECK (expr)]`. Subscribing is a
//! SELECT on `realtime.channels` (USING), publishing an INSERT on `realtime.messages` (WITH
//! CHECK), receiving a message a SELECT on `realtime.messages` (USING). Roles: `anon`,
//! `authenticated`, `project_admin`, `public` (all; the default).
//!
//! Expressions: `= <> != < <= > >=`, `AND OR NOT`, `[NOT] LIKE / ILIKE` (`%`, `_`, `\` escapes),
//! `[NOT] IN (list)`, `IS [NOT] NULL / TRUE / FALSE / UNKNOWN`, `IS [NOT] DISTINCT FROM`, `||`,
//! `->` and `->>` (text key or integer index, negative from the end), casts `::type` and
//! `CAST(x AS type)` to `text`, `varchar`, `int`, `integer`, `int4`, `int8`, `bigint`, `bool`,
//! `boolean`, `uuid`, `json`, `jsonb`; `split_part`, `lower`, `upper`, `starts_with`,
//! `realtime.channel_name()`, `auth.uid()`, `auth.role()`, `auth.email()`, `auth.jwt()`; string,
//! integer, boolean and NULL literals. Columns, optionally qualified (`channels.pattern`,
//! `realtime.channels.pattern`): `pattern`, `enabled`, `description` on `realtime.channels`;
//! `channel_name`, `event_name`, `payload`, `sender_type`, `sender_id` on `realtime.messages`.
//! Everything else is refused when the policy is loaded, with its line and column.
//!
//! # Types and coercions (where this differs from PostgreSQL it is mostly more lenient, and it
//! never fails at evaluation)
//!
//! - Every expression has a static type: boolean, integer (all integers are 64-bit), text,
//!   jsonb, or unknown (a bare `NULL`). `uuid` values (`auth.uid()`, `sender_id`, `::uuid`) are
//!   text; `::uuid` checks the syntax and normalises to lowercase hyphenated form.
//! - A string literal beside an integer, boolean or jsonb is read as that type when the policy
//!   is loaded, as PostgreSQL reads an untyped literal; an invalid one is a load error.
//! - Text beside an integer or a boolean (a column, `->>`, a function; PostgreSQL would refuse
//!   the operator) is cast at evaluation: `(payload ->> 'n') = 5` compares as integers, and a
//!   text that is not an integer makes the comparison NULL. Text that is not a boolean likewise.
//! - jsonb compares only with jsonb (numbers by value, so `1 = 1.0`); ordering (`<`...) is
//!   defined between two JSON numbers, two strings or two booleans, otherwise NULL. Comparing
//!   jsonb with text or integer is a load error that suggests `->>` and a cast.
//! - Integer beside boolean is a load error, as in PostgreSQL.
//! - Text compares by bytes (the "C" collation). `||` turns integers and booleans into text;
//!   nothing else does (function arguments, LIKE): write `::text`, as in PostgreSQL.
//! - `->` / `->>` on text parse it as JSON at evaluation (NULL if it is not JSON). `->>` of a JSON
//!   string is the string; of JSON `null`, SQL NULL; of anything else, its compact JSON text
//!   (`{"a":1}`, where PostgreSQL prints `{"a": 1}`; likewise `::text` of jsonb).
//! - Casts that fail at evaluation (`'abc'::int` from a column, `jsonb` string to integer, a
//!   malformed uuid) give NULL instead of PostgreSQL's error; `split_part` with position 0
//!   likewise. A dynamic LIKE pattern ending in a lone `\` matches nothing (NULL).
//! - Operators bind as in PostgreSQL (sqlparser's PostgreSQL dialect follows its table): `->`,
//!   `->>` and `||` bind tighter than `LIKE` and `IN`, which bind tighter than `=` and `<`,
//!   then `IS`, `NOT`, `AND`, `OR`. So `a = auth.jwt() -> 'x' ->> 'y'` needs no parentheses.
//!
//! Three-valued logic throughout (NULL AND FALSE = FALSE, NULL OR TRUE = TRUE, NOT NULL =
//! NULL); a policy allows only when its expression is TRUE.
//!
//! # Cost
//!
//! Evaluation borrows from the compiled tree and the context. It allocates only for `||`
//! outside an equality (`x = 'a' || y` compares piece by piece without allocating), `lower` /
//! `upper` of text that changes, integer-to-text conversions, `->>` of a non-string, casts to
//! text and jsonb, and the one-time parse of the payload or claims when a policy reads them
//! (`Policy::reads_payload`, `Policy::reads_claims`); the parse is cached in the context.

mod cast;
mod coerce;
mod compile;
mod context;
mod error;
mod eval;
mod json;
mod like;
mod model;
mod names;
mod node;
mod parse;
mod set;
mod tokens;

#[cfg(test)]
mod tests;

pub use context::{AuthInfo, ChannelRow, Ctx, JsonSource, LazyJson, MessageRow};
pub use error::{Duplicate, PolicyError, PolicyErrors, Pos};
pub use model::{Command, Policy, Roles, Table};
pub use parse::parse_policies;
pub use set::{Action, PermissionsView, PolicyList, PolicySet, PolicyView, Rls};
