//! `TokenClaims`: every verified claim of a token, for policies (`auth.jwt()`). Kept as the
//! token's payload segment and decoded into JSON only when a policy first reads it, so an
//! `auth` costs no JSON document unless some policy needs one.

use std::sync::OnceLock;

use base64::Engine as _;

pub struct TokenClaims {
    /// The token's payload segment (base64url), when not decoded yet.
    segment: Box<str>,
    json: OnceLock<Option<serde_json::Value>>,
}

impl TokenClaims {
    /// The claims of a token whose signature was verified.
    pub fn of_verified(token: &str) -> Self {
        Self {
            segment: token.split('.').nth(1).unwrap_or("").into(),
            json: OnceLock::new(),
        }
    }

    /// Claims already decoded (public-key tokens are decoded to check `iss` / `aud`).
    pub fn decoded(v: serde_json::Value) -> Self {
        let json = OnceLock::new();
        let _ = json.set(Some(v));
        Self {
            segment: "".into(),
            json,
        }
    }

    /// The claims as JSON (`None` if the segment does not decode, which a verified token's
    /// does).
    pub fn get(&self) -> Option<&serde_json::Value> {
        self.json
            .get_or_init(|| {
                let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(self.segment.as_bytes())
                    .ok()?;
                serde_json::from_slice(&bytes).ok()
            })
            .as_ref()
    }
}

impl crate::policy::JsonSource for TokenClaims {
    fn json(&self) -> Option<&serde_json::Value> {
        self.get()
    }
}

impl std::fmt::Debug for TokenClaims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenClaims").finish_non_exhaustive()
    }
}

impl PartialEq for TokenClaims {
    fn eq(&self, other: &Self) -> bool {
        self.get() == other.get()
    }
}

impl Eq for TokenClaims {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_payload_segment_on_first_read() {
        let t = crate::auth::mint("s", "u1", "authenticated", std::time::Duration::ZERO, None);
        let c = TokenClaims::of_verified(&t);
        assert_eq!(c.get().unwrap()["sub"], "u1");
        assert!(TokenClaims::of_verified("a.!!.c").get().is_none());
        let d = TokenClaims::decoded(serde_json::json!({"sub": "x"}));
        assert_eq!(d.get().unwrap()["sub"], "x");
    }
}
