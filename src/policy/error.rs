//! The errors of loading policies. All of them happen at load; evaluation cannot fail.
//! Positions are sqlparser's: 1-based lines and columns (in characters) of the whole text.

use std::fmt;

/// A line and column in the policies text, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub line: u64,
    pub column: u64,
}

impl Pos {
    pub(crate) fn from_location(l: sqlparser::tokenizer::Location) -> Option<Self> {
        (l.line > 0).then_some(Self {
            line: l.line,
            column: l.column,
        })
    }
}

impl fmt::Display for Pos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}", self.line, self.column)
    }
}

/// One problem in a policies text. `statement` counts the statements of the text from 1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    /// The text could not be split into tokens (an unterminated string or comment).
    #[error("{at}: {message}")]
    Lexical { at: Pos, message: String },
    /// sqlparser refused the statement; its message carries the position.
    #[error("statement {statement}: {message}")]
    Syntax { statement: usize, message: String },
    /// A well-formed statement that ringcast does not accept (a construct, a table, a role...).
    #[error("statement {statement}: {at}: {message}")]
    Unsupported {
        statement: usize,
        at: Pos,
        message: String,
    },
    /// Two statements of the text create policies of the same name.
    #[error("statement {statement}: policy `{name}` is defined twice")]
    Duplicate { statement: usize, name: String },
    /// The text holds no statement at all.
    #[error("no CREATE POLICY statement found")]
    Empty,
    /// `Policy::parse` was given several statements.
    #[error("expected exactly one CREATE POLICY statement, found {0}")]
    NotOne(usize),
}

/// Every error of a policies text, in statement order. Never empty.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// `PolicySet::add` of a name the set already holds (names are unique within a set).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("policy `{0}` already exists")]
pub struct Duplicate(pub String);

/// A construct refused by the compiler, before the statement number is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CompileError {
    pub at: Pos,
    pub message: String,
}

impl CompileError {
    pub fn new(at: Pos, message: impl Into<String>) -> Self {
        Self {
            at,
            message: message.into(),
        }
    }

    pub fn in_statement(self, statement: usize) -> PolicyError {
        PolicyError::Unsupported {
            statement,
            at: self.at,
            message: self.message,
        }
    }
}
