//! Mints the HS256 JWTs the broker accepts (`sub`, `role`, `exp`), with jsonwebtoken 12
//! (`rust_crypto` backend only).

use anyhow::Context;
use jsonwebtoken::{EncodingKey, Header};
use serde::Serialize;

#[derive(Serialize)]
struct Claims<'a> {
    sub: &'a str,
    role: &'a str,
    exp: u64,
}

/// Mints tokens with one key; tokens live two hours past now (longer than any bounded run).
pub struct Minter {
    key: EncodingKey,
    exp: u64,
}

impl Minter {
    pub fn new(secret: &str) -> anyhow::Result<Self> {
        let key = EncodingKey::from_secret(secret.as_bytes()).context("JWT key")?;
        let exp = crate::payload::now_nanos() / 1_000_000_000 + 7200;
        Ok(Self { key, exp })
    }

    pub fn mint(&self, sub: &str, role: &str) -> anyhow::Result<String> {
        let claims = Claims {
            sub,
            role,
            exp: self.exp,
        };
        jsonwebtoken::encode(&Header::default(), &claims, &self.key).context("minting a JWT")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mints_hs256() {
        let t = Minter::new("s")
            .and_then(|m| m.mint("u1", "authenticated"))
            .expect("mints");
        assert_eq!(t.split('.').count(), 3);
        let h = jsonwebtoken::decode_header(&t).expect("header");
        assert_eq!(h.alg, jsonwebtoken::Algorithm::HS256);
    }
}
