//! Policies text (one or many `CREATE POLICY` statements separated by `;`) to `Policy`s.
//! Every statement is checked and every error reported with the statement's number and a
//! position. The USING / WITH CHECK expressions are kept exactly as written (`tokens`).
//!
//! Runs where policies are loaded (the control thread, `check-config`), never on a core.

use std::collections::HashSet;

use sqlparser::{
    ast::{
        CreatePolicy, CreatePolicyCommand, CreatePolicyType, Ident, ObjectName, Owner, Spanned,
        Statement,
    },
    dialect::PostgreSqlDialect,
    keywords::Keyword,
    parser::Parser,
    tokenizer::{Token, TokenWithSpan, Tokenizer},
};

use super::{
    compile::compile,
    error::{PolicyError, PolicyErrors, Pos},
    model::{Command, Policy, Roles, Table},
    names::ident_name,
    tokens::{LineIndex, clause, find_kw, is_blank, statements},
};

const ROLES: &str = "anon, authenticated, project_admin, public";

/// Parses and compiles every statement of `text`; all of them or every error.
pub fn parse_policies(text: &str) -> Result<Vec<Policy>, PolicyErrors> {
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, text)
        .tokenize_with_location()
        .map_err(|e| {
            PolicyErrors(vec![PolicyError::Lexical {
                at: Pos::from_location(e.location).unwrap_or(Pos { line: 1, column: 1 }),
                message: e.message,
            }])
        })?;
    let lines = LineIndex::new(text);
    let (mut policies, mut errors) = (Vec::new(), Vec::new());
    let mut names = HashSet::new();
    for (i, stmt) in statements(tokens).into_iter().enumerate() {
        let n = i + 1;
        match statement(&dialect, &lines, stmt, n) {
            Ok(p) if !names.insert(p.name.clone()) => {
                errors.push(PolicyError::Duplicate {
                    statement: n,
                    name: p.name,
                });
            }
            Ok(p) => policies.push(p),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return Err(PolicyErrors(errors));
    }
    if policies.is_empty() {
        return Err(PolicyErrors(vec![PolicyError::Empty]));
    }
    Ok(policies)
}

/// A refusal of one statement: where (`None`: the statement's start) and why.
type Refusal = (Option<Pos>, String);

fn statement(
    dialect: &PostgreSqlDialect,
    lines: &LineIndex<'_>,
    tokens: Vec<TokenWithSpan>,
    n: usize,
) -> Result<Policy, PolicyError> {
    let start = tokens
        .iter()
        .find(|t| !is_blank(t))
        .and_then(|t| Pos::from_location(t.span.start))
        .unwrap_or(Pos { line: 1, column: 1 });
    let refuse = |(at, message): Refusal| PolicyError::Unsupported {
        statement: n,
        at: at.unwrap_or(start),
        message,
    };
    let mut parser = Parser::new(dialect).with_tokens_with_locations(tokens.clone());
    let parsed = parser.parse_statement().map_err(|e| PolicyError::Syntax {
        statement: n,
        message: e.to_string(),
    })?;
    let rest = parser.peek_token();
    if rest.token != Token::EOF {
        let at = Pos::from_location(rest.span.start);
        let message = format!("unexpected `{}` after the statement", rest.token);
        return Err(refuse((at, message)));
    }
    let Statement::CreatePolicy(cp) = parsed else {
        let message = "only CREATE POLICY statements are supported".to_owned();
        return Err(refuse((None, message)));
    };
    let CreatePolicy {
        name,
        table_name,
        policy_type,
        command,
        to,
        using,
        with_check,
    } = cp;
    let table = table_of(&table_name).map_err(refuse)?;
    if policy_type == Some(CreatePolicyType::Restrictive) {
        let at = find_kw(&tokens, Keyword::RESTRICTIVE);
        return Err(refuse((
            at,
            "restrictive policies are not supported".into(),
        )));
    }
    let command = command_of(command, table, &name, &tokens).map_err(refuse)?;
    let (roles, role_names) = roles_of(to, &tokens).map_err(refuse)?;

    let (expr, kws, clause_sql, other, other_kw): (_, &[Keyword], _, _, _) = match command {
        Command::Select => (
            using,
            &[Keyword::USING],
            "USING",
            with_check.map(|_| "WITH CHECK cannot be applied to SELECT"),
            Keyword::WITH,
        ),
        Command::Insert => (
            with_check,
            &[Keyword::WITH, Keyword::CHECK],
            "WITH CHECK",
            using.map(|_| "only WITH CHECK expression allowed for INSERT"),
            Keyword::USING,
        ),
    };
    if let Some(m) = other {
        return Err(refuse((find_kw(&tokens, other_kw), m.into())));
    }
    let Some(expr) = expr else {
        let message = format!(
            "a FOR {} policy needs {clause_sql} (expression)",
            command.as_str()
        );
        return Err(refuse((None, message)));
    };
    let (text, at) = clause(&tokens, lines, kws).ok_or_else(|| PolicyError::Syntax {
        statement: n,
        message: format!("cannot find the text of {clause_sql}"),
    })?;
    let condition = compile(&expr, table, at).map_err(|e| e.in_statement(n))?;
    let (using, with_check) = match command {
        Command::Select => (Some(text), None),
        Command::Insert => (None, Some(text)),
    };
    Ok(Policy {
        name: ident_name(&name),
        table,
        command,
        roles,
        role_names,
        using,
        with_check,
        condition,
    })
}

fn table_of(name: &ObjectName) -> Result<Table, Refusal> {
    let parts: Vec<String> = name
        .0
        .iter()
        .filter_map(|p| p.as_ident().map(ident_name))
        .collect();
    match parts.iter().map(String::as_str).collect::<Vec<_>>()[..] {
        ["realtime", "channels"] => Ok(Table::Channels),
        ["realtime", "messages"] => Ok(Table::Messages),
        _ => Err((
            Pos::from_location(name.span().start),
            format!(
                "table `{name}` is not supported (supported: realtime.channels, \
                 realtime.messages)"
            ),
        )),
    }
}

fn command_of(
    command: Option<CreatePolicyCommand>,
    table: Table,
    name: &Ident,
    tokens: &[TokenWithSpan],
) -> Result<Command, Refusal> {
    let command = match command {
        Some(CreatePolicyCommand::Select) => Command::Select,
        Some(CreatePolicyCommand::Insert) => Command::Insert,
        None => {
            let at = Pos::from_location(name.span.start);
            let message = "FOR ALL (the default) is not supported; write FOR SELECT or FOR INSERT";
            return Err((at, message.into()));
        }
        Some(c) => {
            let message = format!("FOR {c} is not supported; write FOR SELECT or FOR INSERT");
            return Err((find_kw(tokens, Keyword::FOR), message));
        }
    };
    if (table, command) == (Table::Channels, Command::Insert) {
        let message =
            "FOR INSERT on realtime.channels is not supported (subscribing is FOR SELECT)";
        return Err((find_kw(tokens, Keyword::FOR), message.into()));
    }
    Ok(command)
}

/// The roles of a `TO` list and their names as written (lowercased); none is `public`.
fn roles_of(
    to: Option<Vec<Owner>>,
    tokens: &[TokenWithSpan],
) -> Result<(Roles, Vec<String>), Refusal> {
    let mut roles = Roles::default();
    let mut names = Vec::new();
    for owner in to.unwrap_or_default() {
        let Owner::Ident(id) = owner else {
            let message = format!("role `{owner}` is not supported (roles: {ROLES})");
            return Err((find_kw(tokens, Keyword::TO), message));
        };
        let role = ident_name(&id);
        let Some(r) = Roles::parse(&role) else {
            let message = format!("role `{role}` is not supported (roles: {ROLES})");
            return Err((Pos::from_location(id.span.start), message));
        };
        roles = roles.union(r);
        names.push(role);
    }
    if names.is_empty() {
        return Ok((Roles::ALL, vec!["public".to_owned()]));
    }
    Ok((roles, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn errors(sql: &str) -> Vec<PolicyError> {
        match parse_policies(sql) {
            Ok(p) => panic!("accepted {sql}: {p:?}"),
            Err(PolicyErrors(e)) => e,
        }
    }

    /// The one error of a one-statement text, as displayed.
    fn error(sql: &str) -> String {
        let e = errors(sql);
        assert_eq!(e.len(), 1, "{e:?}");
        e[0].to_string()
    }

    const CH: &str = "CREATE POLICY p ON realtime.channels";

    #[test]
    fn accepts_the_grammar() {
        let sql = "create policy P on REALTIME.CHANNELS as permissive for select \
                   to AUTHENTICATED, anon using (ENABLED);\n\
                   CREATE POLICY \"Mixed Case\" ON realtime.\"messages\" FOR INSERT \
                   WITH CHECK (true);\
                   CREATE POLICY r ON realtime.messages FOR SELECT TO public USING (true);;";
        let ps = parse_policies(sql).unwrap();
        assert_eq!(ps.len(), 3);
        assert_eq!(ps[0].name(), "p");
        assert_eq!(
            (ps[0].table(), ps[0].command()),
            (Table::Channels, Command::Select)
        );
        assert_eq!(ps[0].role_names(), ["authenticated", "anon"]);
        assert!(!ps[0].roles().contains(crate::auth::Role::ProjectAdmin));
        assert_eq!(ps[0].using(), Some("ENABLED"));
        assert_eq!(ps[1].name(), "Mixed Case");
        assert_eq!(
            (ps[1].table(), ps[1].command()),
            (Table::Messages, Command::Insert)
        );
        assert_eq!(ps[1].role_names(), ["public"], "no TO is public");
        assert_eq!(ps[1].roles(), Roles::ALL);
        assert_eq!((ps[1].using(), ps[1].with_check()), (None, Some("true")));
        assert_eq!(ps[2].roles(), Roles::ALL);
    }

    #[test]
    fn keeps_expressions_as_written() {
        let sql = "-- the policy file\n\
                   CREATE POLICY p ON realtime.channels FOR SELECT USING (\n  \
                   realtime.channel_name()  =  'é:(x);' || auth.uid() -- trailing\n  );\n\
                   CREATE POLICY q ON realtime.messages FOR INSERT WITH CHECK ( (payload->>'a')::int = 1 )";
        let ps = parse_policies(sql).unwrap();
        assert_eq!(
            ps[0].using(),
            Some("realtime.channel_name()  =  'é:(x);' || auth.uid() -- trailing")
        );
        assert_eq!(ps[1].with_check(), Some("(payload->>'a')::int = 1"));
    }

    #[test]
    fn refuses_with_positions() {
        let cases: &[(&str, &str)] = &[
            (
                "CREATE POLICY p ON realtime.channels AS RESTRICTIVE FOR SELECT USING (true)",
                "statement 1: line 1, column 41: restrictive policies are not supported",
            ),
            (
                "CREATE POLICY p ON realtime.channels FOR ALL USING (true)",
                "statement 1: line 1, column 38: FOR ALL is not supported; write FOR SELECT or \
                 FOR INSERT",
            ),
            (
                "CREATE POLICY p ON realtime.channels USING (true)",
                "statement 1: line 1, column 15: FOR ALL (the default) is not supported; write \
                 FOR SELECT or FOR INSERT",
            ),
            (
                "CREATE POLICY p ON realtime.messages FOR UPDATE USING (true)",
                "statement 1: line 1, column 38: FOR UPDATE is not supported; write FOR SELECT \
                 or FOR INSERT",
            ),
            (
                "CREATE POLICY p ON public.posts FOR SELECT USING (true)",
                "statement 1: line 1, column 20: table `public.posts` is not supported \
                 (supported: realtime.channels, realtime.messages)",
            ),
            (
                "CREATE POLICY p ON channels FOR SELECT USING (true)",
                "statement 1: line 1, column 20: table `channels` is not supported \
                 (supported: realtime.channels, realtime.messages)",
            ),
            (
                "CREATE POLICY p ON realtime.channels FOR SELECT TO anon, postgres USING (true)",
                "statement 1: line 1, column 58: role `postgres` is not supported (roles: anon, \
                 authenticated, project_admin, public)",
            ),
            (
                "CREATE POLICY p ON realtime.channels FOR SELECT TO CURRENT_USER USING (true)",
                "statement 1: line 1, column 49: role `CURRENT_USER` is not supported (roles: \
                 anon, authenticated, project_admin, public)",
            ),
            (
                "CREATE POLICY p ON realtime.messages FOR INSERT USING (true)",
                "statement 1: line 1, column 49: only WITH CHECK expression allowed for INSERT",
            ),
            (
                "CREATE POLICY p ON realtime.messages FOR SELECT USING (true) WITH CHECK (true)",
                "statement 1: line 1, column 62: WITH CHECK cannot be applied to SELECT",
            ),
            (
                "CREATE POLICY p ON realtime.messages FOR SELECT",
                "statement 1: line 1, column 1: a FOR SELECT policy needs USING (expression)",
            ),
            (
                "CREATE POLICY p ON realtime.messages FOR INSERT TO anon",
                "statement 1: line 1, column 1: a FOR INSERT policy needs WITH CHECK (expression)",
            ),
            (
                "CREATE POLICY p ON realtime.channels FOR INSERT WITH CHECK (true)",
                "statement 1: line 1, column 38: FOR INSERT on realtime.channels is not \
                 supported (subscribing is FOR SELECT)",
            ),
            (
                "  SELECT 1",
                "statement 1: line 1, column 3: only CREATE POLICY statements are supported",
            ),
            (
                "CREATE POLICY p ON realtime.channels FOR SELECT USING (true) extra",
                "statement 1: line 1, column 62: unexpected `extra` after the statement",
            ),
            (
                "CREATE POLICY p ON realtime.channels FOR SELECT USING (now() IS NOT NULL)",
                "statement 1: line 1, column 56: function `now` is not supported (supported: \
                 split_part, lower, upper, starts_with, realtime.channel_name, auth.uid, \
                 auth.role, auth.email, auth.jwt)",
            ),
        ];
        for (sql, want) in cases {
            assert_eq!(error(sql), *want, "{sql}");
        }
    }

    #[test]
    fn syntax_lexical_and_empty() {
        let e = error("CREATE POLICY p ON realtime.channels FOR SELECT USING (enabled =)");
        assert!(e.starts_with("statement 1: sql parser error: "), "{e}");
        assert!(e.contains("found: ) at Line: 1, Column: 65"), "{e}");
        assert_eq!(
            error("CREATE POLICY p ON realtime.channels FOR SELECT USING ('oops)"),
            "line 1, column 56: Unterminated string literal"
        );
        assert_eq!(errors("  -- nothing\n ; ;"), vec![PolicyError::Empty]);
        assert_eq!(errors(""), vec![PolicyError::Empty]);
    }

    #[test]
    fn reports_every_statement() {
        let sql = format!(
            "{CH} FOR ALL USING (true);\n\
             {CH} FOR SELECT USING (true);\n\
             CREATE POLICY q ON realtime.channels FOR SELECT USING (\n  enabled AND now());\n\
             CREATE POLICY q ON realtime.channels FOR SELECT USING (true);\n\
             CREATE POLICY q ON realtime.channels FOR SELECT USING (true)"
        );
        let e: Vec<String> = errors(&sql).iter().map(ToString::to_string).collect();
        assert_eq!(e.len(), 3, "{e:#?}");
        assert!(
            e[0].starts_with("statement 1: line 1, column 38: FOR ALL"),
            "{}",
            e[0]
        );
        assert!(
            e[1].starts_with("statement 3: line 4, column 15: function `now`"),
            "{}",
            e[1]
        );
        assert_eq!(e[2], "statement 5: policy `q` is defined twice");
    }

    #[test]
    fn exactly_one() {
        let two = format!(
            "{CH} FOR SELECT USING (true); CREATE POLICY q ON realtime.channels \
                           FOR SELECT USING (true)"
        );
        assert_eq!(
            Policy::parse(&two).unwrap_err().to_string(),
            "expected exactly one CREATE POLICY statement, found 2"
        );
    }
}
