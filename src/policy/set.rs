//! `PolicySet`: the policies in force and PostgreSQL's row-level-security rules for choosing
//! among them. An immutable snapshot once built: the control plane owns and edits one, cores
//! read an `Arc<PolicySet>` and decide without locks.
//!
//! Rules, as PostgreSQL applies them: `project_admin` bypasses RLS (its table owner / BYPASSRLS
//! role), so it is always allowed; on a table without RLS every action is allowed; otherwise
//! the permissive policies of the action's command whose roles include the caller's (or
//! `public`) are OR'ed, and no such policy means deny.
//!
//! Channel existence and `enabled` are not decided here: the caller resolves the channel
//! among enabled ones first, as InsForge's `WHERE enabled AND (pattern = $1 OR $1 LIKE
//! pattern)` lookup does.

use serde::Serialize;

use crate::auth::Role;

use super::{
    context::Ctx,
    error::Duplicate,
    model::{Command, Policy, Table},
    parse::parse_policies,
};

/// What a client does: subscribe (SELECT on `realtime.channels`), publish (INSERT on
/// `realtime.messages`), receive a message (SELECT on `realtime.messages`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Subscribe,
    Publish,
    Receive,
}

impl Action {
    pub fn table(self) -> Table {
        match self {
            Self::Subscribe => Table::Channels,
            Self::Publish | Self::Receive => Table::Messages,
        }
    }

    pub fn command(self) -> Command {
        match self {
            Self::Subscribe | Self::Receive => Command::Select,
            Self::Publish => Command::Insert,
        }
    }
}

/// Whether row-level security is enabled on each table (`ALTER TABLE ... ENABLE ROW LEVEL
/// SECURITY`). Off: the table's policies are ignored and everything is allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Rls {
    pub channels: bool,
    pub messages: bool,
}

impl Rls {
    pub fn on(self, table: Table) -> bool {
        match table {
            Table::Channels => self.channels,
            Table::Messages => self.messages,
        }
    }
}

#[derive(Debug, Clone, Default)]
pub struct PolicySet {
    /// Names are unique (PostgreSQL: per table; here per set, so a name alone identifies a
    /// policy in the REST API).
    policies: Vec<Policy>,
    pub rls: Rls,
}

impl PolicySet {
    pub fn new(rls: Rls) -> Self {
        Self {
            policies: Vec::new(),
            rls,
        }
    }

    /// Today's behaviour (`auth::Authorizer`, CONTRACT.md), as policies with RLS on both tables:
    ///
    /// ```sql
    /// CREATE POLICY allow_authenticated_subscribe ON realtime.channels
    ///   FOR SELECT TO authenticated[, anon] USING (enabled = true);
    /// CREATE POLICY allow_authenticated_publish ON realtime.messages
    ///   FOR INSERT TO authenticated[, anon] WITH CHECK (true);
    /// CREATE POLICY allow_receive ON realtime.messages FOR SELECT TO public USING (true);
    /// ```
    ///
    /// `allow_receive` exists because RLS on `realtime.messages` (needed for the publish
    /// policy) also governs SELECT: without a SELECT policy nobody would receive anything,
    /// while today every subscriber receives every message of its channel. Replace it to
    /// filter what subscribers receive.
    pub fn defaults(anon_subscribe: bool, anon_publish: bool) -> Self {
        let to = |anon: bool| {
            if anon {
                "authenticated, anon"
            } else {
                "authenticated"
            }
        };
        let sql = format!(
            "CREATE POLICY allow_authenticated_subscribe ON realtime.channels \
               FOR SELECT TO {} USING (enabled = true);
             CREATE POLICY allow_authenticated_publish ON realtime.messages \
               FOR INSERT TO {} WITH CHECK (true);
             CREATE POLICY allow_receive ON realtime.messages FOR SELECT TO public USING (true);",
            to(anon_subscribe),
            to(anon_publish),
        );
        let mut set = Self::new(Rls {
            channels: true,
            messages: true,
        });
        for p in parse_policies(&sql).expect("the default policies are valid") {
            set.add(p)
                .expect("the default policies have distinct names");
        }
        set
    }

    pub fn add(&mut self, policy: Policy) -> Result<(), Duplicate> {
        if self.get(&policy.name).is_some() {
            return Err(Duplicate(policy.name));
        }
        self.policies.push(policy);
        Ok(())
    }

    /// Removes and returns the policy of that name, if any.
    pub fn remove(&mut self, name: &str) -> Option<Policy> {
        let at = self.policies.iter().position(|p| p.name == name)?;
        Some(self.policies.remove(at))
    }

    pub fn get(&self, name: &str) -> Option<&Policy> {
        self.policies.iter().find(|p| p.name == name)
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// The policies that decide `action` for `role` when RLS is on.
    fn applicable(&self, action: Action, role: Role) -> impl Iterator<Item = &Policy> {
        let (table, command) = (action.table(), action.command());
        self.policies
            .iter()
            .filter(move |p| p.table == table && p.command == command && p.roles.contains(role))
    }

    /// Whether the caller (`cx.auth.role`: the role RLS chooses policies by is the one
    /// `auth.role()` reports, so they cannot disagree) may do `action` in context `cx`.
    pub fn allows(&self, action: Action, cx: &Ctx<'_>) -> bool {
        let role = cx.auth.role;
        role == Role::ProjectAdmin
            || !self.rls.on(action.table())
            || self.applicable(action, role).any(|p| p.check(cx))
    }

    /// Whether `allows(action, cx)` is true for every `cx` of this role, so that a caller
    /// deciding for many subscribers can skip building contexts (the default receive policy).
    pub fn allows_unconditionally(&self, action: Action, role: Role) -> bool {
        role == Role::ProjectAdmin
            || !self.rls.on(action.table())
            || self.applicable(action, role).any(Policy::is_unconditional)
    }

    /// Whether deciding `action` for `role` may read the message payload.
    pub fn reads_payload(&self, action: Action, role: Role) -> bool {
        !self.allows_unconditionally(action, role)
            && self.applicable(action, role).any(Policy::reads_payload)
    }

    /// Whether deciding `action` for `role` may read `auth.jwt()`.
    pub fn reads_claims(&self, action: Action, role: Role) -> bool {
        !self.allows_unconditionally(action, role)
            && self.applicable(action, role).any(Policy::reads_claims)
    }

    /// `GET /api/realtime/permissions`: the policies grouped by action, in the seed's shape.
    pub fn permissions(&self) -> PermissionsView<'_> {
        let list = |action: Action| PolicyList {
            policies: self
                .policies
                .iter()
                .filter(|p| p.table == action.table() && p.command == action.command())
                .map(Policy::view)
                .collect(),
        };
        PermissionsView {
            subscribe: list(Action::Subscribe),
            publish: list(Action::Publish),
            receive: list(Action::Receive),
        }
    }
}

#[derive(Debug, Serialize, PartialEq)]
pub struct PermissionsView<'a> {
    pub subscribe: PolicyList<'a>,
    pub publish: PolicyList<'a>,
    pub receive: PolicyList<'a>,
}

#[derive(Debug, Serialize, PartialEq)]
pub struct PolicyList<'a> {
    pub policies: Vec<PolicyView<'a>>,
}

/// One policy as the REST API reports it: the expressions as written.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PolicyView<'a> {
    pub policy_name: &'a str,
    /// `realtime_channels` / `realtime_messages`, as the seed's API names them.
    pub table_name: &'static str,
    pub command: &'static str,
    pub roles: &'a [String],
    pub using: Option<&'a str>,
    pub with_check: Option<&'a str>,
}

impl Policy {
    pub fn view(&self) -> PolicyView<'_> {
        PolicyView {
            policy_name: &self.name,
            table_name: self.table.api_name(),
            command: self.command.as_str(),
            roles: &self.role_names,
            using: self.using.as_deref(),
            with_check: self.with_check.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{AuthInfo, ChannelRow, LazyJson, MessageRow, PolicyErrors};

    fn set(rls: Rls, sql: &str) -> Result<PolicySet, PolicyErrors> {
        let mut s = PolicySet::new(rls);
        for p in parse_policies(sql)? {
            s.add(p).unwrap();
        }
        Ok(s)
    }

    const ON: Rls = Rls {
        channels: true,
        messages: true,
    };

    /// Decides `action` for `role` on channel `name` (pattern `name` too), message event `ev`.
    fn allows(s: &PolicySet, action: Action, role: Role, name: &str) -> bool {
        let auth = AuthInfo {
            uid: Some("u1"),
            role,
            email: None,
            claims: LazyJson::absent(),
        };
        let row = ChannelRow {
            pattern: name,
            enabled: true,
            description: None,
        };
        let msg = MessageRow {
            channel_name: name,
            event_name: "ev",
            payload: LazyJson::raw("{}"),
            sender_type: "user",
            sender_id: Some("u1"),
        };
        let cx = Ctx {
            channel_name: name,
            channel: Some(&row),
            message: Some(&msg),
            auth: &auth,
        };
        s.allows(action, &cx)
    }

    use Role::{Anon, Authenticated as Auth, ProjectAdmin as Admin};

    #[test]
    fn permissive_policies_are_ored_per_role_and_command() {
        let s = set(
            ON,
            "CREATE POLICY a ON realtime.channels FOR SELECT TO authenticated USING (pattern = 'a');
             CREATE POLICY b ON realtime.channels FOR SELECT TO authenticated, anon \
               USING (pattern = 'b');
             CREATE POLICY c ON realtime.channels FOR SELECT USING (pattern = 'c');
             CREATE POLICY r ON realtime.messages FOR SELECT TO anon USING (true)",
        )
        .unwrap();
        let sub = |role, name| allows(&s, Action::Subscribe, role, name);
        assert!(sub(Auth, "a") && sub(Auth, "b") && sub(Auth, "c"));
        assert!(!sub(Auth, "d"), "no policy's expression is true");
        assert!(!sub(Anon, "a"), "policy a is not for anon");
        assert!(
            sub(Anon, "b") && sub(Anon, "c"),
            "b names anon, c is public"
        );
        assert!(sub(Admin, "d"), "project_admin bypasses RLS");
        // Other commands of the same table are not affected.
        assert!(allows(&s, Action::Receive, Anon, "x"));
        assert!(
            !allows(&s, Action::Receive, Auth, "x"),
            "no receive policy for authenticated"
        );
        assert!(
            !allows(&s, Action::Publish, Anon, "x"),
            "no INSERT policy: deny"
        );
        assert!(allows(&s, Action::Publish, Admin, "x"));
    }

    #[test]
    fn rls_off_allows_and_no_policy_denies() {
        let empty = PolicySet::new(ON);
        for action in [Action::Subscribe, Action::Publish, Action::Receive] {
            assert!(!allows(&empty, action, Anon, "x"));
            assert!(!allows(&empty, action, Auth, "x"));
            assert!(allows(&empty, action, Admin, "x"));
        }
        let strict = "CREATE POLICY no ON realtime.channels FOR SELECT USING (false);
                      CREATE POLICY no2 ON realtime.messages FOR INSERT WITH CHECK (false)";
        let off = set(Rls::default(), strict).unwrap();
        for action in [Action::Subscribe, Action::Publish, Action::Receive] {
            assert!(allows(&off, action, Anon, "x"), "RLS off: {action:?}");
        }
        let half = set(
            Rls {
                channels: false,
                messages: true,
            },
            strict,
        )
        .unwrap();
        assert!(allows(&half, Action::Subscribe, Anon, "x"));
        assert!(!allows(&half, Action::Publish, Anon, "x"));
    }

    #[test]
    fn add_remove_and_duplicates() {
        let mut s = PolicySet::defaults(false, false);
        let dup = Policy::parse(
            "CREATE POLICY allow_receive ON realtime.messages FOR SELECT USING (false)",
        )
        .unwrap();
        assert_eq!(s.add(dup), Err(Duplicate("allow_receive".into())));
        assert!(s.allows_unconditionally(Action::Receive, Auth));
        let removed = s.remove("allow_receive").unwrap();
        assert_eq!(removed.using(), Some("true"));
        assert!(s.remove("allow_receive").is_none());
        assert!(!s.allows_unconditionally(Action::Receive, Auth));
        assert!(!allows(&s, Action::Receive, Auth, "x"));
        s.add(
            Policy::parse(
                "CREATE POLICY own ON realtime.messages FOR SELECT \
                 USING (payload ->> 'to' = auth.uid())",
            )
            .unwrap(),
        )
        .unwrap();
        assert!(s.reads_payload(Action::Receive, Auth));
        assert!(!s.reads_payload(Action::Receive, Admin));
        assert!(!s.reads_payload(Action::Publish, Auth));
        assert!(!s.reads_claims(Action::Receive, Auth));
        assert_eq!(
            s.policies().iter().map(Policy::name).collect::<Vec<_>>(),
            [
                "allow_authenticated_subscribe",
                "allow_authenticated_publish",
                "own"
            ]
        );
        let view = s.permissions();
        assert_eq!(view.receive.policies.len(), 1);
        assert_eq!(
            view.receive.policies[0].using,
            Some("payload ->> 'to' = auth.uid()")
        );
    }
}
