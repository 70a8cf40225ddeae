//! Compiles a sqlparser `Expr` into the typed `Node` tree, refusing (with a position) every
//! construct `eval` does not implement. Types are checked here, string literals converted
//! here, so that evaluation cannot fail. The type rules are in the `policy` module header.

use sqlparser::ast::{
    BinaryOperator, CastKind, Expr, InTarget, Spanned, UnaryOperator, Value as SqlValue,
};

use super::{
    coerce::{CASTS, common},
    error::{CompileError, Pos},
    like,
    model::{Condition, Table},
    node::{CastTo, CmpOp, Const, Node, Ty},
};

/// Deeper nesting is refused: evaluation recurses, and no real policy comes close.
const MAX_DEPTH: usize = 64;
pub(super) const JSON_HINT: &str =
    "; use ->> to read a JSON field as text, and a cast for numbers: (payload ->> 'n')::int";

pub(super) type Typed = (Node, Ty);
pub(super) type Result<T> = std::result::Result<T, CompileError>;

/// Compiles a USING / WITH CHECK expression of a policy on `table`. `at`: the position to
/// report when sqlparser has none for a construct.
pub(crate) fn compile(e: &Expr, table: Table, at: Pos) -> Result<Condition> {
    let mut c = Compiler {
        table,
        reads_payload: false,
        reads_claims: false,
        depth: 0,
    };
    let typed = c.expr(e, at)?;
    let root = c.coerce(typed, Ty::Bool, at, false, |t| {
        format!("a policy expression must be boolean, not {t}")
    })?;
    Ok(Condition {
        root,
        reads_payload: c.reads_payload,
        reads_claims: c.reads_claims,
    })
}

pub(super) struct Compiler {
    pub(super) table: Table,
    pub(super) reads_payload: bool,
    pub(super) reads_claims: bool,
    depth: usize,
}

pub(super) fn pos_of(e: &impl Spanned, fallback: Pos) -> Pos {
    Pos::from_location(e.span().start).unwrap_or(fallback)
}

pub(super) fn err<T>(at: Pos, message: impl Into<String>) -> Result<T> {
    Err(CompileError::new(at, message))
}

/// The start of an expression's SQL, for messages about constructs we do not know by name.
fn excerpt(e: &Expr) -> String {
    let s = e.to_string();
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s,
    }
}

impl Compiler {
    pub(super) fn expr(&mut self, e: &Expr, at: Pos) -> Result<Typed> {
        let at = pos_of(e, at);
        if self.depth == MAX_DEPTH {
            return err(at, "expression is nested too deeply");
        }
        self.depth += 1;
        let r = self.expr_at(e, at);
        self.depth -= 1;
        r
    }

    fn expr_at(&mut self, e: &Expr, at: Pos) -> Result<Typed> {
        match e {
            Expr::Nested(inner) => self.expr(inner, at),
            Expr::Value(v) => literal(&v.value, at),
            Expr::Identifier(id) => self.column(std::slice::from_ref(id), at),
            Expr::CompoundIdentifier(ids) => self.column(ids, at),
            Expr::UnaryOp { op, expr } => self.unary(*op, expr, at),
            Expr::BinaryOp { op, .. } => self.binary(e, op, at),
            Expr::IsNull(x) | Expr::IsNotNull(x) => {
                let (n, _) = self.expr(x, at)?;
                let negated = matches!(e, Expr::IsNotNull(_));
                Ok((Node::IsNull(Box::new(n), negated), Ty::Bool))
            }
            Expr::IsTrue(x)
            | Expr::IsNotTrue(x)
            | Expr::IsFalse(x)
            | Expr::IsNotFalse(x)
            | Expr::IsUnknown(x)
            | Expr::IsNotUnknown(x) => {
                let (want, negated) = match e {
                    Expr::IsTrue(_) => (Some(true), false),
                    Expr::IsNotTrue(_) => (Some(true), true),
                    Expr::IsFalse(_) => (Some(false), false),
                    Expr::IsNotFalse(_) => (Some(false), true),
                    Expr::IsUnknown(_) => (None, false),
                    _ => (None, true),
                };
                let t = self.expr(x, at)?;
                let n = self.coerce(t, Ty::Bool, at, false, |t| {
                    format!("argument of IS TRUE / FALSE / UNKNOWN must be boolean, not {t}")
                })?;
                let expr = Box::new(n);
                Ok((
                    Node::IsBool {
                        expr,
                        want,
                        negated,
                    },
                    Ty::Bool,
                ))
            }
            Expr::IsDistinctFrom(a, b) | Expr::IsNotDistinctFrom(a, b) => {
                let (left, right) = self.comparable(a, b, at)?;
                let negated = matches!(e, Expr::IsNotDistinctFrom(..));
                let (left, right) = (Box::new(left), Box::new(right));
                Ok((
                    Node::Distinct {
                        left,
                        right,
                        negated,
                    },
                    Ty::Bool,
                ))
            }
            Expr::In {
                expr,
                target,
                negated,
                ..
            } => match target {
                InTarget::List(list) => self.in_list(expr, list, *negated, at),
                InTarget::Subquery(_) => err(at, "sub-queries are not supported"),
                _ => err(at, "this form of IN is not supported (only IN (list))"),
            },
            Expr::Like {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            }
            | Expr::ILike {
                negated,
                any,
                expr,
                pattern,
                escape_char,
            } => {
                if *any {
                    return err(at, "LIKE ANY is not supported");
                }
                if escape_char.is_some() {
                    return err(at, "ESCAPE is not supported (`\\` is the escape character)");
                }
                let ci = matches!(e, Expr::ILike { .. });
                self.like(expr, pattern, ci, *negated, at)
            }
            Expr::Cast {
                kind,
                expr,
                data_type,
                format,
            } => {
                if !matches!(kind, CastKind::Cast | CastKind::DoubleColon) || format.is_some() {
                    return err(at, format!("`{}` is not supported", excerpt(e)));
                }
                let Some(to) = CastTo::from_data_type(data_type) else {
                    return err(
                        at,
                        format!("cast to `{data_type}` is not supported (supported: {CASTS})"),
                    );
                };
                let t = self.expr(expr, at)?;
                self.cast(t, to, at)
            }
            Expr::Function(f) => self.function(f, at),
            Expr::Exists { .. } => err(at, "EXISTS (sub-query) is not supported"),
            Expr::Subquery(_) => err(at, "sub-queries are not supported"),
            Expr::Case { .. } => err(at, "CASE is not supported"),
            Expr::Between { .. } => err(
                at,
                "BETWEEN is not supported (write x >= low AND x <= high)",
            ),
            other => err(at, format!("`{}` is not supported", excerpt(other))),
        }
    }

    fn unary(&mut self, op: UnaryOperator, x: &Expr, at: Pos) -> Result<Typed> {
        let t = self.expr(x, at)?;
        match (op, t) {
            (UnaryOperator::Not, t) => {
                let n = self.coerce(t, Ty::Bool, at, false, |t| {
                    format!("argument of NOT must be boolean, not {t}")
                })?;
                Ok((Node::Not(Box::new(n)), Ty::Bool))
            }
            (UnaryOperator::Minus, (Node::Const(Const::Int(i)), _)) => match i.checked_neg() {
                Some(i) => Ok((Node::Const(Const::Int(i)), Ty::Int)),
                None => err(at, "integer literal is out of range"),
            },
            (UnaryOperator::Plus, t @ (Node::Const(Const::Int(_)), _)) => Ok(t),
            (UnaryOperator::Minus | UnaryOperator::Plus, _) => err(
                at,
                format!("unary `{op}` is only supported on integer literals"),
            ),
            _ => err(at, format!("operator `{op}` is not supported")),
        }
    }

    fn binary(&mut self, e: &Expr, op: &BinaryOperator, at: Pos) -> Result<Typed> {
        let Expr::BinaryOp { left, right, .. } = e else {
            unreachable!("called with a BinaryOp")
        };
        let cmp = |op: CmpOp| Some(op);
        let cmp_op = match op {
            BinaryOperator::Eq => cmp(CmpOp::Eq),
            BinaryOperator::NotEq => cmp(CmpOp::Ne),
            BinaryOperator::Lt => cmp(CmpOp::Lt),
            BinaryOperator::LtEq => cmp(CmpOp::Le),
            BinaryOperator::Gt => cmp(CmpOp::Gt),
            BinaryOperator::GtEq => cmp(CmpOp::Ge),
            _ => None,
        };
        if let Some(c) = cmp_op {
            let (l, r) = self.comparable(left, right, at)?;
            return Ok((Node::Cmp(c, Box::new(l), Box::new(r)), Ty::Bool));
        }
        match op {
            BinaryOperator::And | BinaryOperator::Or => {
                let is_and = *op == BinaryOperator::And;
                let mut items = Vec::new();
                for x in chain(e, op) {
                    let t = self.expr(x, at)?;
                    let n = self.coerce(t, Ty::Bool, pos_of(x, at), false, |t| {
                        format!("argument of {op} must be boolean, not {t}")
                    })?;
                    match n {
                        Node::And(v) if is_and => items.extend(v),
                        Node::Or(v) if !is_and => items.extend(v),
                        n => items.push(n),
                    }
                }
                Ok((
                    if is_and {
                        Node::And(items)
                    } else {
                        Node::Or(items)
                    },
                    Ty::Bool,
                ))
            }
            BinaryOperator::StringConcat => {
                let mut parts = Vec::new();
                for x in chain(e, op) {
                    let (n, t) = self.expr(x, at)?;
                    if t == Ty::Json {
                        return err(
                            pos_of(x, at),
                            format!("`||` on jsonb is not supported{JSON_HINT}"),
                        );
                    }
                    match n {
                        Node::Concat(v) => parts.extend(v),
                        n => parts.push(n),
                    }
                }
                Ok((Node::Concat(parts), Ty::Text))
            }
            BinaryOperator::Arrow | BinaryOperator::LongArrow => {
                let as_text = *op == BinaryOperator::LongArrow;
                let base = match self.expr(left, at)? {
                    (n, Ty::Json | Ty::Null) => n,
                    (n @ Node::Const(_), Ty::Text) => self.cast((n, Ty::Text), CastTo::Json, at)?.0,
                    (n, Ty::Text) => n,
                    (_, t) => return err(at, format!("operator `{op}` needs jsonb, not {t}")),
                };
                let key = match self.expr(right, at)? {
                    (n, Ty::Text | Ty::Int | Ty::Null) => n,
                    (_, t) => {
                        return err(
                            pos_of(right.as_ref(), at),
                            format!("the key of `{op}` must be text or integer, not {t}"),
                        );
                    }
                };
                let (expr, key) = (Box::new(base), Box::new(key));
                let ty = if as_text { Ty::Text } else { Ty::Json };
                Ok((Node::JsonGet { expr, key, as_text }, ty))
            }
            _ => err(at, format!("operator `{op}` is not supported")),
        }
    }

    /// Both sides of a comparison, brought to one type.
    fn comparable(&mut self, a: &Expr, b: &Expr, at: Pos) -> Result<(Node, Node)> {
        let l = self.expr(a, at)?;
        let r = self.expr(b, at)?;
        let (lt, rt) = (l.1, r.1);
        let want = common([lt, rt]);
        let hint = if lt == Ty::Json || rt == Ty::Json {
            JSON_HINT
        } else {
            ""
        };
        let msg = |_| format!("cannot compare {lt} with {rt}{hint}");
        Ok((
            self.coerce(l, want, at, true, msg)?,
            self.coerce(r, want, pos_of(b, at), true, msg)?,
        ))
    }

    fn in_list(&mut self, x: &Expr, list: &[Expr], negated: bool, at: Pos) -> Result<Typed> {
        let left = self.expr(x, at)?;
        let items = list
            .iter()
            .map(|i| self.expr(i, at).map(|t| (t, pos_of(i, at))))
            .collect::<Result<Vec<_>>>()?;
        let want = common(std::iter::once(left.1).chain(items.iter().map(|(t, _)| t.1)));
        let lt = left.1;
        let expr = Box::new(self.coerce(left, want, at, true, |t| {
            format!("cannot compare {t} with {want} in IN")
        })?);
        let list = items
            .into_iter()
            .map(|(t, p)| {
                self.coerce(t, want, p, true, |t| {
                    format!("cannot compare {lt} with {t} in IN")
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok((
            Node::In {
                expr,
                list,
                negated,
            },
            Ty::Bool,
        ))
    }

    fn like(&mut self, x: &Expr, p: &Expr, ci: bool, negated: bool, at: Pos) -> Result<Typed> {
        let t = self.expr(x, at)?;
        let expr = self.coerce(t, Ty::Text, at, true, |t| {
            format!("LIKE needs text, not {t}")
        })?;
        let p_at = pos_of(p, at);
        let t = self.expr(p, at)?;
        let pattern = self.coerce(t, Ty::Text, p_at, true, |t| {
            format!("a LIKE pattern must be text, not {t}")
        })?;
        if let Node::Const(Const::Text(s)) = &pattern
            && !like::valid_pattern(s)
        {
            return err(p_at, "LIKE pattern must not end with escape character");
        }
        let (expr, pattern) = (Box::new(expr), Box::new(pattern));
        Ok((
            Node::Like {
                expr,
                pattern,
                case_insensitive: ci,
                negated,
            },
            Ty::Bool,
        ))
    }
}

fn literal(v: &SqlValue, at: Pos) -> Result<Typed> {
    Ok(match v {
        SqlValue::Number(n, _) => {
            let s = n.to_string();
            match s.parse::<i64>() {
                Ok(i) => (Node::Const(Const::Int(i)), Ty::Int),
                Err(_) if s.bytes().all(|b| b.is_ascii_digit()) => {
                    return err(at, format!("integer literal {s} is out of range"));
                }
                Err(_) => {
                    return err(
                        at,
                        format!("numeric literal {s} is not supported (only integers)"),
                    );
                }
            }
        }
        SqlValue::SingleQuotedString(s)
        | SqlValue::EscapedStringLiteral(s)
        | SqlValue::UnicodeStringLiteral(s) => {
            (Node::Const(Const::Text(s.as_str().into())), Ty::Text)
        }
        SqlValue::DollarQuotedString(d) => {
            (Node::Const(Const::Text(d.value.as_str().into())), Ty::Text)
        }
        SqlValue::Boolean(b) => (Node::Const(Const::Bool(*b)), Ty::Bool),
        SqlValue::Null => (Node::Const(Const::Null), Ty::Null),
        other => return err(at, format!("literal `{other}` is not supported")),
    })
}

/// The operands of a chain of one left-associative operator (`a AND b AND c`), in order,
/// without recursing (a long chain is a deep tree).
fn chain<'e>(e: &'e Expr, op: &BinaryOperator) -> Vec<&'e Expr> {
    let mut out = Vec::new();
    let mut stack = vec![e];
    while let Some(x) = stack.pop() {
        match x {
            Expr::BinaryOp { left, op: o, right } if o == op => {
                stack.push(right);
                stack.push(left);
            }
            _ => out.push(x),
        }
    }
    out
}
