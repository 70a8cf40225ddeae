//! Who a client is (`Identity`, from an HS256 JWT or the admin key) and what it may do
//! (`Authorizer`, the one place subscribe/publish/admin permissions are decided).
//!
//! Verification is CPU-only (HMAC-SHA256) and runs on the core that received the token.

mod authorizer;
mod jwt;

pub use authorizer::{Authorizer, Permissions, Policy};
pub use jwt::{AuthError, Claims, Verifier, mint};

use std::sync::Arc;

/// The roles of CONTRACT.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Anon,
    Authenticated,
    ProjectAdmin,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "anon" => Some(Self::Anon),
            "authenticated" => Some(Self::Authenticated),
            "project_admin" => Some(Self::ProjectAdmin),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Anon => "anon",
            Self::Authenticated => "authenticated",
            Self::ProjectAdmin => "project_admin",
        }
    }
}

/// An authenticated principal. Messages an admin publishes have `senderType: "system"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// JWT `sub`; `None` for the static admin key.
    pub user_id: Option<Arc<str>>,
    pub role: Role,
    pub email: Option<String>,
    /// Unix seconds after which the token is no longer valid (not enforced on live sockets).
    pub expires_at: Option<u64>,
}

impl Identity {
    pub fn sender_type(&self) -> &'static str {
        if self.role == Role::ProjectAdmin {
            "system"
        } else {
            "user"
        }
    }
}
