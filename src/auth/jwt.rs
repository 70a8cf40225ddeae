//! HS256 JWT verification and minting (jsonwebtoken, `rust_crypto` backend), and the admin key.
//!
//! Only HS256 is accepted: `alg: none` and every other algorithm fail. `sub` is required,
//! `role` defaults to `authenticated`, `exp` is enforced (no leeway) when present.

use std::{
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{Identity, Role};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("Invalid token")]
    Invalid,
    #[error("Token expired")]
    Expired,
    #[error("Unknown role `{0}`")]
    UnknownRole(String),
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exp: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// Verifies bearer credentials. Cheap to share: one per core (`Arc` inside).
#[derive(Clone)]
pub struct Verifier {
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
    admin_key: Option<Arc<str>>,
}

impl Verifier {
    pub fn new(secret: &str, admin_key: Option<&str>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false; // checked below without leeway, only when present
        validation.required_spec_claims.clear();
        validation.validate_aud = false;
        Self {
            key: Arc::new(
                DecodingKey::from_secret(secret.as_bytes()).expect("an HMAC key accepts any bytes"),
            ),
            validation: Arc::new(validation),
            admin_key: admin_key.map(Arc::from),
        }
    }

    /// A JWT or the admin key.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if let Some(k) = &self.admin_key
            && constant_time_eq(k.as_bytes(), token.as_bytes())
        {
            return Ok(Identity {
                user_id: None,
                role: Role::ProjectAdmin,
                email: None,
                expires_at: None,
                claims: None,
            });
        }
        // Decoded once as a JSON document: policies read the whole verified claim set
        // (`auth.jwt()`); the fields ringcast itself needs are read from it.
        let data = jsonwebtoken::decode::<serde_json::Value>(token, &self.key, &self.validation)
            .map_err(|_| AuthError::Invalid)?;
        let all = Arc::new(data.claims);
        let c = Claims::deserialize(&*all).map_err(|_| AuthError::Invalid)?;
        if let Some(exp) = c.exp
            && exp <= now_secs()
        {
            return Err(AuthError::Expired);
        }
        if c.sub.is_empty() {
            return Err(AuthError::Invalid);
        }
        let role = match c.role.as_deref() {
            None => Role::Authenticated,
            Some(r) => Role::parse(r).ok_or_else(|| AuthError::UnknownRole(r.to_string()))?,
        };
        Ok(Identity {
            user_id: Some(Arc::from(c.sub)),
            role,
            email: c.email,
            expires_at: c.exp,
            claims: Some(all),
        })
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

/// Mints an HS256 token (`ringcast token`, tests, the load harness). `ttl` zero: no `exp`.
pub fn mint(secret: &str, sub: &str, role: &str, ttl: Duration, email: Option<&str>) -> String {
    let now = now_secs();
    let claims = Claims {
        sub: sub.to_string(),
        role: Some(role.to_string()),
        exp: (!ttl.is_zero()).then(|| now + ttl.as_secs().max(1)),
        iat: Some(now),
        email: email.map(str::to_string),
    };
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.as_bytes()).expect("an HMAC key accepts any bytes"),
    )
    .expect("HS256 encoding cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifies_and_rejects() {
        let v = Verifier::new("s3cret", Some("adminkey"));
        let t = mint(
            "s3cret",
            "u1",
            "authenticated",
            Duration::from_secs(60),
            None,
        );
        let id = v.verify(&t).unwrap();
        assert_eq!(id.user_id.as_deref(), Some("u1"));
        assert_eq!(id.role, Role::Authenticated);
        assert_eq!(v.verify("adminkey").unwrap().role, Role::ProjectAdmin);
        let wrong = mint(
            "other",
            "u1",
            "authenticated",
            Duration::from_secs(60),
            None,
        );
        assert_eq!(v.verify(&wrong), Err(AuthError::Invalid));
        assert_eq!(v.verify("garbage"), Err(AuthError::Invalid));
        let bad_role = mint("s3cret", "u1", "root", Duration::ZERO, None);
        assert!(matches!(
            v.verify(&bad_role),
            Err(AuthError::UnknownRole(_))
        ));
    }

    #[test]
    fn expired_and_alg_none() {
        let v = Verifier::new("s3cret", None);
        let claims = Claims {
            sub: "u".into(),
            role: None,
            exp: Some(1),
            iat: None,
            email: None,
        };
        let t = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"s3cret").unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&t), Err(AuthError::Expired));
        // header {"alg":"none","typ":"JWT"} . {"sub":"u"} . (empty signature)
        let none = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.eyJzdWIiOiJ1In0.";
        assert_eq!(v.verify(none), Err(AuthError::Invalid));
    }
}
