//! `Authorizer`: the single decision point for subscribe, publish and admin access. Today it
//! applies the seed's default policies (CONTRACT.md) with the `auth.anon_*` switches; a policy
//! engine replaces this type later without touching its callers. `permissions()` reports the
//! active policies in the shape of `GET /api/realtime/permissions`.

use serde::Serialize;

use super::{Identity, Role};
use crate::channel::ChannelRecord;

#[derive(Debug, Clone, Copy)]
pub struct Authorizer {
    pub anon_subscribe: bool,
    pub anon_publish: bool,
}

impl Authorizer {
    /// Subscribing needs an enabled channel (the caller resolved it among enabled ones).
    pub fn can_subscribe(&self, who: &Identity, ch: &ChannelRecord) -> bool {
        ch.enabled
            && match who.role {
                Role::ProjectAdmin | Role::Authenticated => true,
                Role::Anon => self.anon_subscribe,
            }
    }

    pub fn can_publish(&self, who: &Identity, ch: &ChannelRecord) -> bool {
        ch.enabled
            && match who.role {
                Role::ProjectAdmin | Role::Authenticated => true,
                Role::Anon => self.anon_publish,
            }
    }

    pub fn is_admin(&self, who: &Identity) -> bool {
        who.role == Role::ProjectAdmin
    }

    pub fn permissions(&self) -> Permissions {
        let roles = |anon: bool| {
            let mut r = vec!["authenticated"];
            if anon {
                r.push("anon");
            }
            r
        };
        Permissions {
            subscribe: PolicySet {
                policies: vec![Policy {
                    policy_name: "allow_authenticated_subscribe",
                    table_name: "realtime_channels",
                    command: "SELECT",
                    roles: roles(self.anon_subscribe),
                    using: Some("enabled = true"),
                    with_check: None,
                }],
            },
            publish: PolicySet {
                policies: vec![Policy {
                    policy_name: "allow_authenticated_publish",
                    table_name: "realtime_messages",
                    command: "INSERT",
                    roles: roles(self.anon_publish),
                    using: None,
                    with_check: Some("true"),
                }],
            },
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Permissions {
    pub subscribe: PolicySet,
    pub publish: PolicySet,
}

#[derive(Debug, Serialize)]
pub struct PolicySet {
    pub policies: Vec<Policy>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    pub policy_name: &'static str,
    pub table_name: &'static str,
    pub command: &'static str,
    pub roles: Vec<&'static str>,
    pub using: Option<&'static str>,
    pub with_check: Option<&'static str>,
}
