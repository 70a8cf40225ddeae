//! Names in policy expressions: the columns of the policy's table and the functions we
//! implement, resolved as PostgreSQL does (unquoted identifiers fold to lowercase).

use sqlparser::ast::{
    Expr, Function, FunctionArg, FunctionArgExpr, FunctionArguments, Ident, ObjectNamePart,
};

use super::{
    compile::{Compiler, JSON_HINT, Result, Typed, err, pos_of},
    error::Pos,
    model::Table,
    node::{Builtin, Column, Node, Ty},
};

const FUNCTIONS: &str = "split_part, lower, upper, starts_with, realtime.channel_name, \
                         auth.uid, auth.role, auth.email, auth.jwt";

/// PostgreSQL folds unquoted identifiers to lowercase.
pub(crate) fn ident_name(id: &Ident) -> String {
    if id.quote_style.is_some() {
        id.value.clone()
    } else {
        id.value.to_lowercase()
    }
}

impl Compiler {
    pub(super) fn column(&mut self, ids: &[Ident], at: Pos) -> Result<Typed> {
        let parts: Vec<String> = ids.iter().map(ident_name).collect();
        let (table, columns) = match self.table {
            Table::Channels => ("channels", "pattern, enabled, description"),
            Table::Messages => (
                "messages",
                "channel_name, event_name, payload, sender_type, sender_id",
            ),
        };
        let name = match parts.as_slice() {
            [c] => c.as_str(),
            [t, c] if t == table => c.as_str(),
            [s, t, c] if s == "realtime" && t == table => c.as_str(),
            _ => {
                let full = parts.join(".");
                let hint = if matches!(
                    full.as_str(),
                    "auth.uid" | "auth.role" | "auth.email" | "auth.jwt" | "realtime.channel_name"
                ) {
                    format!(" (did you mean {full}()?)")
                } else {
                    format!(" (columns of {}: {columns})", self.table.sql_name())
                };
                return err(at, format!("column `{full}` is not available{hint}"));
            }
        };
        let (col, ty) = match (self.table, name) {
            (Table::Channels, "pattern") => (Column::Pattern, Ty::Text),
            (Table::Channels, "enabled") => (Column::Enabled, Ty::Bool),
            (Table::Channels, "description") => (Column::Description, Ty::Text),
            (Table::Messages, "channel_name") => (Column::ChannelName, Ty::Text),
            (Table::Messages, "event_name") => (Column::EventName, Ty::Text),
            (Table::Messages, "payload") => (Column::Payload, Ty::Json),
            (Table::Messages, "sender_type") => (Column::SenderType, Ty::Text),
            (Table::Messages, "sender_id") => (Column::SenderId, Ty::Text),
            _ => {
                return err(
                    at,
                    format!(
                        "column `{name}` is not available on {} (columns: {columns})",
                        self.table.sql_name()
                    ),
                );
            }
        };
        self.reads_payload |= col == Column::Payload;
        Ok((Node::Column(col), ty))
    }

    pub(super) fn function(&mut self, f: &Function, at: Pos) -> Result<Typed> {
        let at = pos_of(&f.name, at);
        let mut parts = Vec::new();
        for p in &f.name.0 {
            match p {
                ObjectNamePart::Identifier(id) => parts.push(ident_name(id)),
                ObjectNamePart::Function(_) => {
                    return err(at, "this function name is not supported");
                }
            }
        }
        let full = parts.join(".");
        if f.filter.is_some()
            || f.over.is_some()
            || !f.within_group.is_empty()
            || f.null_treatment.is_some()
            || !matches!(f.parameters, FunctionArguments::None)
        {
            return err(
                at,
                format!("window and aggregate clauses are not supported (in `{full}`)"),
            );
        }
        let args: Vec<&Expr> = match &f.args {
            FunctionArguments::None => Vec::new(),
            FunctionArguments::Subquery(_) => return err(at, "sub-queries are not supported"),
            FunctionArguments::List(l) => {
                if l.duplicate_treatment.is_some() || !l.clauses.is_empty() {
                    return err(
                        at,
                        format!("clauses in the arguments of `{full}` are not supported"),
                    );
                }
                let mut v = Vec::new();
                for a in &l.args {
                    match a {
                        FunctionArg::Unnamed(FunctionArgExpr::Expr(e)) => v.push(e),
                        _ => {
                            return err(
                                at,
                                format!(
                                    "named or wildcard arguments of `{full}` are not supported"
                                ),
                            );
                        }
                    }
                }
                v
            }
        };
        let name = full.strip_prefix("pg_catalog.").unwrap_or(&full);
        let (arity, ret) = match name {
            "split_part" => (3, Ty::Text),
            "lower" | "upper" => (1, Ty::Text),
            "starts_with" => (2, Ty::Bool),
            "realtime.channel_name" | "auth.uid" | "auth.role" | "auth.email" => (0, Ty::Text),
            "auth.jwt" => (0, Ty::Json),
            _ => {
                return err(
                    at,
                    format!("function `{full}` is not supported (supported: {FUNCTIONS})"),
                );
            }
        };
        if args.len() != arity {
            return err(
                at,
                format!(
                    "function `{full}` takes {arity} argument(s), got {}",
                    args.len()
                ),
            );
        }
        let mut typed = Vec::with_capacity(arity);
        for (i, (a, want)) in args.iter().zip([Ty::Text, Ty::Text, Ty::Int]).enumerate() {
            let want = if name == "starts_with" {
                Ty::Text
            } else {
                want
            };
            let t = self.expr(a, at)?;
            typed.push(self.coerce(t, want, pos_of(*a, at), true, |t| {
                let hint = if t == Ty::Json { JSON_HINT } else { "" };
                format!(
                    "argument {} of `{full}` must be {want}, not {t}{hint}",
                    i + 1
                )
            })?);
        }
        let mut args = typed.into_iter();
        let mut next = || Box::new(args.next().expect("arity checked"));
        let node = match name {
            "split_part" => Node::SplitPart(Box::new([*next(), *next(), *next()])),
            "lower" => Node::Lower(next()),
            "upper" => Node::Upper(next()),
            "starts_with" => Node::StartsWith(next(), next()),
            "realtime.channel_name" => Node::Builtin(Builtin::ChannelName),
            "auth.uid" => Node::Builtin(Builtin::Uid),
            "auth.role" => Node::Builtin(Builtin::Role),
            "auth.email" => Node::Builtin(Builtin::Email),
            _ => {
                self.reads_claims = true;
                Node::Builtin(Builtin::Jwt)
            }
        };
        Ok((node, ret))
    }
}
