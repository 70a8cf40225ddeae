//! Who a client is: `Identity`, from a JWT (HS256 with the project secret, or RS256 / ES256 /
//! EdDSA with a configured public key or JWKS; with its whole verified claim set, for policies)
//! or the admin key, and its `Role`. What it may do is decided by the policies in force
//! (`policy`, applied on the cores by `core::access`).
//!
//! - `jwt`: verification, on the core that received the token, CPU only;
//! - `keys`: public keys (PEM file, JWKS set) and how the cores share the JWKS set;
//! - `jwks`: the `ringcast-jwks` thread that fetches the JWKS (never on a core).

mod claims;
pub mod jwks;
mod jwt;
pub mod keys;

pub use claims::TokenClaims;
pub use jwt::{AuthError, Claims, PublicKeys, Verifier, mint};
pub use keys::{JwksStore, KeySet, PublicKey};

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
    pub claims: Option<Arc<TokenClaims>>,
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
