//! Types at compile time: the casts we implement, the common type of a comparison, and how a
//! typed expression is brought to another type (string literals converted now, other text
//! cast at evaluation where the rules allow it).

use sqlparser::ast::DataType;

use super::{
    cast::cast,
    compile::{Compiler, Result, Typed, err},
    error::Pos,
    eval::Value,
    node::{CastTo, Const, Node, Ty},
};

pub(super) const CASTS: &str = "text, varchar, int, integer, int4, int8, bigint, bool, boolean, \
                                uuid, json, jsonb";

impl CastTo {
    pub(super) fn ty(self) -> Ty {
        match self {
            Self::Text | Self::Uuid => Ty::Text,
            Self::Int => Ty::Int,
            Self::Bool => Ty::Bool,
            Self::Json => Ty::Json,
        }
    }

    pub(super) fn sql_name(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::Int => "integer",
            Self::Bool => "boolean",
            Self::Uuid => "uuid",
            Self::Json => "jsonb",
        }
    }

    pub(super) fn from_data_type(t: &DataType) -> Option<Self> {
        Some(match t {
            DataType::Text | DataType::Varchar(None) | DataType::CharacterVarying(None) => {
                Self::Text
            }
            DataType::Int(None)
            | DataType::Integer(None)
            | DataType::Int4(None)
            | DataType::Int8(None)
            | DataType::BigInt(None) => Self::Int,
            DataType::Bool | DataType::Boolean => Self::Bool,
            DataType::Uuid => Self::Uuid,
            DataType::JSON | DataType::JSONB => Self::Json,
            _ => return None,
        })
    }
}

/// The type both sides of a comparison are brought to: text gives way to the other type.
pub(super) fn common(tys: impl IntoIterator<Item = Ty>) -> Ty {
    tys.into_iter().fold(Ty::Null, |best, t| match (best, t) {
        (Ty::Null, t) | (Ty::Text, t) => t,
        (b, _) => b,
    })
}

fn const_value(c: &Const) -> Value<'_> {
    match c {
        Const::Null => Value::Null,
        Const::Bool(b) => Value::Bool(*b),
        Const::Int(i) => Value::Int(*i),
        Const::Text(s) => Value::Text(s.as_ref().into()),
        Const::Json(j) => Value::Json(std::borrow::Cow::Borrowed(j)),
    }
}

fn value_const(v: Value<'_>) -> Const {
    match v {
        Value::Null => Const::Null,
        Value::Bool(b) => Const::Bool(b),
        Value::Int(i) => Const::Int(i),
        Value::Text(s) => Const::Text(s.into()),
        Value::Json(j) => Const::Json(j.into_owned()),
    }
}

impl Compiler {
    pub(super) fn cast(&self, (node, ty): Typed, to: CastTo, at: Pos) -> Result<Typed> {
        let out = to.ty();
        let refused = match (ty, to) {
            (Ty::Null, _) => return Ok((node, out)),
            (Ty::Int | Ty::Bool | Ty::Json, CastTo::Uuid) => true,
            (Ty::Int | Ty::Bool, CastTo::Json) => true,
            _ => false,
        };
        if refused {
            return err(at, format!("cannot cast type {ty} to {}", to.sql_name()));
        }
        if ty == out && to != CastTo::Uuid {
            return Ok((node, ty));
        }
        if let Node::Const(c) = &node {
            let folded = value_const(cast(const_value(c), to));
            if folded == Const::Null {
                let shown = match c {
                    Const::Text(s) => format!("\"{s}\""),
                    c => format!("{c:?}"),
                };
                return err(
                    at,
                    format!("invalid input syntax for type {}: {shown}", to.sql_name()),
                );
            }
            return Ok((Node::Const(folded), out));
        }
        Ok((Node::Cast(Box::new(node), to), out))
    }

    /// `t` as a `want`. Text literals are converted now; other text (when `lenient`) at
    /// evaluation, NULL when it does not convert. Integers and booleans never become text
    /// implicitly (as in PostgreSQL; `||` converts them itself).
    pub(super) fn coerce(
        &self,
        t: Typed,
        want: Ty,
        at: Pos,
        lenient: bool,
        msg: impl FnOnce(Ty) -> String,
    ) -> Result<Node> {
        let ty = t.1;
        if ty == want || ty == Ty::Null || want == Ty::Null {
            return Ok(t.0);
        }
        let literal = matches!(t.0, Node::Const(_));
        let to = match (ty, want) {
            (Ty::Text, Ty::Int) if literal || lenient => CastTo::Int,
            (Ty::Text, Ty::Bool) if literal || lenient => CastTo::Bool,
            (Ty::Text, Ty::Json) if literal => CastTo::Json,
            _ => return err(at, msg(ty)),
        };
        self.cast(t, to, at).map(|(n, _)| n)
    }
}
