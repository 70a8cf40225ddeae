//! Who a client is: `Identity`, from an HS256 JWT (with its whole verified claim set, for
//! policies) or the admin key, and its `Role`. What it may do is decided by the policies in
//! force (`policy`, applied on the cores by `core::access`).
//!
//! Verification is CPU-only (HMAC-SHA256) and runs on the core that received the token.

mod jwt;

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
    /// Unix seconds after which the token is no longer valid (`auth.expire_sessions`).
    pub expires_at: Option<u64>,
    /// Every verified claim of the token (`auth.jwt()` in policies); `None` for the admin key.
    pub claims: Option<Arc<serde_json::Value>>,
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
