//! The compiled form of a policy expression: a small tree whose every node has a static type
//! (checked by `compile`), so evaluation (`eval`) never meets a construct it cannot handle.
//! AND, OR and `||` chains are flat lists; string literals beside typed values are already
//! converted.

use std::fmt;

/// The static type of an expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ty {
    /// A bare `NULL`: fits any type.
    Null,
    Bool,
    Int,
    Text,
    Json,
}

impl fmt::Display for Ty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Null => "unknown",
            Self::Bool => "boolean",
            Self::Int => "integer",
            Self::Text => "text",
            Self::Json => "jsonb",
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Const {
    Null,
    Bool(bool),
    Int(i64),
    Text(Box<str>),
    Json(serde_json::Value),
}

/// A column of the policy's table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Column {
    Pattern,
    Enabled,
    Description,
    ChannelName,
    EventName,
    Payload,
    SenderType,
    SenderId,
}

/// A function without arguments that reads the context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Builtin {
    /// `realtime.channel_name()`: the concrete channel name the client asked for.
    ChannelName,
    Uid,
    Role,
    Email,
    /// `auth.jwt()`: the verified claims.
    Jwt,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CastTo {
    Text,
    Int,
    Bool,
    Uuid,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Node {
    Const(Const),
    Column(Column),
    Builtin(Builtin),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    /// Both sides have the same static type (or one is NULL).
    Cmp(CmpOp, Box<Node>, Box<Node>),
    /// `IS [NOT] DISTINCT FROM`; `negated` for `IS NOT DISTINCT FROM`.
    Distinct {
        left: Box<Node>,
        right: Box<Node>,
        negated: bool,
    },
    IsNull(Box<Node>, bool),
    /// `IS [NOT] TRUE / FALSE / UNKNOWN` (`want: None`).
    IsBool {
        expr: Box<Node>,
        want: Option<bool>,
        negated: bool,
    },
    Like {
        expr: Box<Node>,
        pattern: Box<Node>,
        case_insensitive: bool,
        negated: bool,
    },
    In {
        expr: Box<Node>,
        list: Vec<Node>,
        negated: bool,
    },
    /// `||` of text, integer and boolean parts.
    Concat(Vec<Node>),
    Cast(Box<Node>, CastTo),
    SplitPart(Box<[Node; 3]>),
    Lower(Box<Node>),
    Upper(Box<Node>),
    StartsWith(Box<Node>, Box<Node>),
    /// `->` (`as_text: false`) and `->>`; `key` is text or integer.
    JsonGet {
        expr: Box<Node>,
        key: Box<Node>,
        as_text: bool,
    },
}
