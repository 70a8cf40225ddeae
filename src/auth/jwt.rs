//! JWT verification (jsonwebtoken, `rust_crypto` backend), HS256 minting, and the admin key.
//!
//! Accepted: HS256 with the project secret, and, when configured, RS256 / ES256 / EdDSA with
//! the key of `auth.jwt_public_key_file` or a key of the JWKS at `auth.jwks_url` (`auth::keys`).
//! `alg: none` and every other algorithm fail. For every token: `sub` is required, `role`
//! defaults to `authenticated`, `exp` is enforced (no leeway) when present. Public-key tokens
//! only: `iss` must equal `auth.jwt_issuer` and `aud` (a string or an array) must contain
//! `auth.jwt_audience`, when those are set (the project's own HS256 tokens carry neither).
//!
//! Runs on the core that received the token, CPU only: a JWKS `kid` this core does not know
//! asks the `ringcast-jwks` thread for a refresh without waiting, and the token is refused.

use std::{
    cell::RefCell,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::{
    Identity, Role, TokenClaims,
    keys::{JwksStore, KeySet, PUBLIC_ALGORITHMS, PublicKey},
};

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

/// Verifies bearer credentials. One per core (`Arc`s inside, and this core's copy of the
/// JWKS key set).
#[derive(Clone)]
pub struct Verifier {
    key: Arc<DecodingKey>,
    validation: Arc<Validation>,
    admin_key: Option<Arc<str>>,
    /// `auth.anon_key`: a static key that authenticates as `anon` with no user id.
    anon_key: Option<Arc<str>>,
    public: Option<Arc<Public>>,
    /// This core's JWKS key set and the store generation it was read at.
    jwks_seen: RefCell<(u64, Arc<KeySet>)>,
}

/// `PublicKeys` and one `Validation` per accepted algorithm, built once.
struct Public {
    keys: PublicKeys,
    validations: [(Algorithm, Validation); 3],
}

/// How RS256 / ES256 / EdDSA tokens are verified (`[auth]`).
#[derive(Debug, Default)]
pub struct PublicKeys {
    /// `auth.jwt_public_key_file`.
    pub file: Option<PublicKey>,
    /// `auth.jwks_url`: the set the `ringcast-jwks` thread keeps fresh.
    pub jwks: Option<Arc<JwksStore>>,
    /// `auth.jwt_issuer`: required `iss`.
    pub issuer: Option<String>,
    /// `auth.jwt_audience`: required in `aud`.
    pub audience: Option<String>,
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
            anon_key: None,
            public: None,
            jwks_seen: RefCell::new((0, Arc::new(KeySet::default()))),
        }
    }

    /// Also accepts `key` as the anon key (InsForge's `anon_...`): role `anon`, no user id.
    pub fn with_anon_key(mut self, key: Option<&str>) -> Self {
        self.anon_key = key.map(Arc::from);
        self
    }

    /// Also accepts public-key tokens (nothing changes when `keys` has no key).
    pub fn with_public_keys(mut self, keys: PublicKeys) -> Self {
        if keys.file.is_some() || keys.jwks.is_some() {
            self.public = Some(Arc::new(Public {
                keys,
                validations: PUBLIC_ALGORITHMS.map(|a| (a, public_validation(a))),
            }));
        }
        self
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
        if let Some(k) = &self.anon_key
            && constant_time_eq(k.as_bytes(), token.as_bytes())
        {
            return Ok(Identity {
                user_id: None,
                role: Role::Anon,
                email: None,
                expires_at: None,
                claims: None,
            });
        }
        // HS256 (the header is read only when public keys may apply): the fields ringcast
        // needs are decoded, and the whole claim set is kept for policies (`auth.jwt()`),
        // decoded only if one reads it.
        let hs256 = match self.public {
            None => true,
            Some(_) => {
                jsonwebtoken::decode_header(token)
                    .map_err(|_| AuthError::Invalid)?
                    .alg
                    == Algorithm::HS256
            }
        };
        let (c, all) = if hs256 {
            let c = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
                .map_err(|_| AuthError::Invalid)?
                .claims;
            (c, TokenClaims::of_verified(token))
        } else {
            let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Invalid)?;
            let public = self.public.as_deref().ok_or(AuthError::Invalid)?;
            let claims = self.verify_public(public, token, header.alg, header.kid.as_deref())?;
            check_iss_aud(&public.keys, &claims)?;
            let c = Claims::deserialize(&claims).map_err(|_| AuthError::Invalid)?;
            (c, TokenClaims::decoded(claims))
        };
        let all = Arc::new(all);
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

impl Verifier {
    /// An RS256 / ES256 / EdDSA token: the file key, then the JWKS keys that match its header.
    fn verify_public(
        &self,
        public: &Public,
        token: &str,
        alg: Algorithm,
        kid: Option<&str>,
    ) -> Result<serde_json::Value, AuthError> {
        let Some((_, validation)) = public.validations.iter().find(|(a, _)| *a == alg) else {
            return Err(AuthError::Invalid);
        };
        let public = &public.keys;
        let decode = |k: &PublicKey| {
            jsonwebtoken::decode::<serde_json::Value>(token, &k.key, validation)
                .ok()
                .map(|d| d.claims)
        };
        if let Some(k) = public.file.as_ref().filter(|k| k.alg == alg)
            && let Some(claims) = decode(k)
        {
            return Ok(claims);
        }
        let Some(store) = &public.jwks else {
            return Err(AuthError::Invalid);
        };
        let set = {
            let mut seen = self.jwks_seen.borrow_mut();
            let generation = store.generation();
            if seen.0 != generation {
                *seen = (generation, store.current());
            }
            seen.1.clone()
        };
        let mut known = false;
        for k in set.candidates(alg, kid) {
            known = true;
            if let Some(claims) = decode(k) {
                return Ok(claims);
            }
        }
        if !known && kid.is_some() {
            // Perhaps a rotation: the next token with this kid finds the new set.
            store.request_refresh();
        }
        Err(AuthError::Invalid)
    }
}

fn public_validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.validate_exp = false; // as HS256: checked by `verify`, without leeway, only when present
    v.required_spec_claims.clear();
    v.validate_aud = false; // checked by `check_iss_aud`
    v
}

fn check_iss_aud(public: &PublicKeys, claims: &serde_json::Value) -> Result<(), AuthError> {
    if let Some(iss) = &public.issuer
        && claims.get("iss").and_then(|v| v.as_str()) != Some(iss.as_str())
    {
        return Err(AuthError::Invalid);
    }
    if let Some(aud) = &public.audience {
        let ok = match claims.get("aud") {
            Some(serde_json::Value::String(s)) => s == aud,
            Some(serde_json::Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(aud)),
            _ => false,
        };
        if !ok {
            return Err(AuthError::Invalid);
        }
    }
    Ok(())
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
        assert!(v.verify("anon_k").is_err(), "no anon key configured");
        let v = Verifier::new("s3cret", Some("adminkey")).with_anon_key(Some("anon_k"));
        let anon = v.verify("anon_k").unwrap();
        assert_eq!((anon.role, anon.user_id), (Role::Anon, None));
        assert!(v.verify("anon_").is_err());
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

    #[test]
    fn public_key_tokens_carry_their_claims_and_algorithms_do_not_mix() {
        let kp = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let enc = EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap();
        let file = PublicKey::from_pem(kp.public_key_pem().as_bytes()).unwrap();
        assert_eq!(file.alg, Algorithm::ES256);
        let v = Verifier::new("s3cret", None).with_public_keys(PublicKeys {
            file: Some(file),
            ..PublicKeys::default()
        });
        let claims = serde_json::json!({"sub": "u1", "role": "anon", "team": "red"});
        let t = jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &enc).unwrap();
        let id = v.verify(&t).unwrap();
        assert_eq!(id.role, Role::Anon);
        assert_eq!(id.claims.as_deref().and_then(|c| c.get()), Some(&claims));
        // The public key as an HMAC secret (the classic confusion) is not the project secret.
        let pem = kp.public_key_pem();
        let confused = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(pem.as_bytes()).unwrap(),
        )
        .unwrap();
        assert_eq!(v.verify(&confused), Err(AuthError::Invalid));
        // Without public keys configured, an ES256 token is refused.
        assert_eq!(
            Verifier::new("s3cret", None).verify(&t),
            Err(AuthError::Invalid)
        );
    }
}
