//! A loaded policy: its name, table, command and roles, the expression text as written (what
//! `GET /api/realtime/permissions` reports) and the compiled condition that decides.

use crate::auth::Role;

use super::{context::Ctx, eval, node::Node};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Table {
    /// `realtime.channels`: SELECT decides subscribing.
    Channels,
    /// `realtime.messages`: INSERT decides publishing, SELECT receiving.
    Messages,
}

impl Table {
    /// The SQL name, `realtime.channels`.
    pub fn sql_name(self) -> &'static str {
        match self {
            Self::Channels => "realtime.channels",
            Self::Messages => "realtime.messages",
        }
    }

    /// The name `GET /api/realtime/permissions` reports (the seed's `realtime_channels`).
    pub fn api_name(self) -> &'static str {
        match self {
            Self::Channels => "realtime_channels",
            Self::Messages => "realtime_messages",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Select,
    Insert,
}

impl Command {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Select => "SELECT",
            Self::Insert => "INSERT",
        }
    }
}

/// The roles a policy applies to: a set of `Role`s (`public` is all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Roles(u8);

impl Roles {
    pub const ALL: Self = Self(0b111);

    fn bit(role: Role) -> u8 {
        match role {
            Role::Anon => 1,
            Role::Authenticated => 2,
            Role::ProjectAdmin => 4,
        }
    }

    /// A role name of a `TO` list; `public` is every role.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "public" => Some(Self::ALL),
            _ => Role::parse(name).map(|r| Self(Self::bit(r))),
        }
    }

    pub fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    pub fn contains(self, role: Role) -> bool {
        self.0 & Self::bit(role) != 0
    }
}

/// The compiled expression of a policy and what it reads.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Condition {
    pub root: Node,
    pub reads_payload: bool,
    pub reads_claims: bool,
}

impl Condition {
    /// Three-valued: `None` is SQL NULL.
    pub fn eval(&self, cx: &Ctx<'_>) -> Option<bool> {
        eval::truth(&self.root, cx)
    }
}

/// One permissive policy. Build with `parse_policies` (or `Policy::parse`).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    pub(crate) name: String,
    pub(crate) table: Table,
    pub(crate) command: Command,
    pub(crate) roles: Roles,
    /// The `TO` list as written (lowercased names), `["public"]` when there was none.
    pub(crate) role_names: Vec<String>,
    pub(crate) using: Option<String>,
    pub(crate) with_check: Option<String>,
    /// USING for SELECT, WITH CHECK for INSERT.
    pub(crate) condition: Condition,
}

impl Policy {
    /// The policy as one `CREATE POLICY` statement that parses back to it (how the engine
    /// stores policies added at run time).
    pub fn to_sql(&self) -> String {
        let mut s = format!(
            "CREATE POLICY \"{}\" ON {} FOR {} TO {}",
            self.name.replace('"', "\"\""),
            self.table.sql_name(),
            self.command.as_str(),
            self.role_names.join(", ")
        );
        if let Some(u) = &self.using {
            s.push_str(&format!(" USING ({u})"));
        }
        if let Some(c) = &self.with_check {
            s.push_str(&format!(" WITH CHECK ({c})"));
        }
        s
    }

    /// Exactly one `CREATE POLICY` statement.
    pub fn parse(sql: &str) -> Result<Self, super::PolicyErrors> {
        let mut all = super::parse_policies(sql)?;
        if all.len() != 1 {
            return Err(super::PolicyErrors(vec![super::PolicyError::NotOne(
                all.len(),
            )]));
        }
        Ok(all.remove(0))
    }

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn table(&self) -> Table {
        self.table
    }
    pub fn command(&self) -> Command {
        self.command
    }
    pub fn roles(&self) -> Roles {
        self.roles
    }
    pub fn role_names(&self) -> &[String] {
        &self.role_names
    }
    /// The USING expression exactly as written.
    pub fn using(&self) -> Option<&str> {
        self.using.as_deref()
    }
    /// The WITH CHECK expression exactly as written.
    pub fn with_check(&self) -> Option<&str> {
        self.with_check.as_deref()
    }

    /// Whether deciding reads `payload` (and so parses the message's JSON).
    pub fn reads_payload(&self) -> bool {
        self.condition.reads_payload
    }

    /// Whether deciding reads `auth.jwt()` (and so parses the claims).
    pub fn reads_claims(&self) -> bool {
        self.condition.reads_claims
    }

    /// Whether the expression is the constant TRUE: it allows without looking at the context.
    pub fn is_unconditional(&self) -> bool {
        matches!(
            self.condition.root,
            Node::Const(super::node::Const::Bool(true))
        )
    }

    /// Whether this policy's expression is TRUE for `cx` (roles and table are the set's job).
    pub fn check(&self, cx: &Ctx<'_>) -> bool {
        self.condition.eval(cx) == Some(true)
    }
}
