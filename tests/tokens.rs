//! Public-key tokens: RS256, ES256 and EdDSA verified with a PEM key file, a JWKS served by a
//! real HTTP server with key rotation (an unknown `kid` is refused once and triggers a
//! refresh), expired / wrong-issuer / wrong-audience tokens refused, and HS256 still accepted
//! alongside. Key pairs are made at test time: EC P-256 and Ed25519 with rcgen, RSA-3072
//! with the `rsa` crate.

mod common;

use std::{
    path::PathBuf,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use common::{jwks::JwksServer, *};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, jwk::Jwk};
use serde_json::{Value, json};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// A signing key made now, with its public half as PEM and as a JWK.
struct TestKey {
    alg: Algorithm,
    kid: String,
    enc: EncodingKey,
    public_pem: String,
    /// The raw public key (uncompressed P-256 point, or the 32 Ed25519 bytes).
    public_raw: Vec<u8>,
}

impl TestKey {
    fn new(alg: Algorithm, kid: &str) -> Self {
        if alg == Algorithm::RS256 {
            return Self::rsa(kid);
        }
        type FromPem = fn(&[u8]) -> jsonwebtoken::errors::Result<EncodingKey>;
        let (rc_alg, from_pem): (_, FromPem) = match alg {
            Algorithm::ES256 => (&rcgen::PKCS_ECDSA_P256_SHA256, EncodingKey::from_ec_pem),
            Algorithm::EdDSA => (&rcgen::PKCS_ED25519, EncodingKey::from_ed_pem),
            other => panic!("no generator for {other:?}"),
        };
        let kp = rcgen::KeyPair::generate_for(rc_alg).expect("key pair");
        Self {
            alg,
            kid: kid.into(),
            enc: from_pem(kp.serialize_pem().as_bytes()).expect("private key"),
            public_pem: kp.public_key_pem(),
            public_raw: kp.public_key_raw().to_vec(),
        }
    }

    fn rsa(kid: &str) -> Self {
        use rsa::{
            Generate,
            pkcs8::{EncodePrivateKey, EncodePublicKey, LineEnding},
        };
        // 3072 bits, from the OS RNG.
        let key = rsa::PrivateKey::generate();
        let private = key.to_pkcs8_pem(LineEnding::LF).expect("private pem");
        let public = key.to_public_key();
        Self {
            alg: Algorithm::RS256,
            kid: kid.into(),
            enc: EncodingKey::from_rsa_pem(private.as_bytes()).expect("private key"),
            public_pem: public
                .to_public_key_pem(LineEnding::LF)
                .expect("public pem"),
            public_raw: Vec::new(),
        }
    }

    fn jwk(&self) -> Value {
        if self.alg == Algorithm::RS256 {
            let public = DecodingKey::from_rsa_pem(self.public_pem.as_bytes()).expect("rsa pem");
            let mut jwk = Jwk::from_decoding_key(&public, Some(self.alg)).expect("jwk");
            jwk.common.key_id = Some(self.kid.clone());
            return serde_json::to_value(jwk).unwrap();
        }
        let public = match self.alg {
            Algorithm::ES256 => DecodingKey::from_ec_der(&self.public_raw),
            _ => DecodingKey::from_ed_der(&self.public_raw),
        };
        let mut jwk = Jwk::from_decoding_key(&public, Some(self.alg)).expect("jwk");
        jwk.common.key_id = Some(self.kid.clone());
        serde_json::to_value(jwk).unwrap()
    }

    /// A token with these claims, its header naming this key's `kid` (or none).
    fn sign(&self, claims: Value, with_kid: bool) -> String {
        let mut h = Header::new(self.alg);
        if with_kid {
            h.kid = Some(self.kid.clone());
        }
        jsonwebtoken::encode(&h, &claims, &self.enc).expect("sign")
    }

    fn token(&self, sub: &str) -> String {
        self.sign(json!({"sub": sub, "exp": now() + 600}), true)
    }
}

fn jwks(keys: &[&TestKey]) -> String {
    json!({"keys": keys.iter().map(|k| k.jwk()).collect::<Vec<_>>()}).to_string()
}

fn pem_file(name: &str, pem: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("ringcast-{}-{name}.pem", std::process::id()));
    std::fs::write(&p, pem).unwrap();
    p
}

fn expect_invalid_token(ws: &mut Ws, token: &str) {
    ws.send(json!({"type": "auth", "token": token}));
    let e = ws.expect("error");
    assert_eq!(e["code"], "INVALID_TOKEN", "{e}");
    assert_eq!(e["message"], "Invalid token", "{e}");
}

/// Whether a fresh socket authenticates with `token` (as `sub`).
fn accepted(s: &TestServer, token: &str) -> bool {
    let mut ws = s.ws();
    ws.send(json!({"type": "auth", "token": token}));
    let v = ws.recv();
    v["type"] == "auth_success"
}

both_drivers!(pem_key_files_verify_es256_and_eddsa, |driver| {
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA] {
        let key = TestKey::new(alg, "unused");
        let other = TestKey::new(alg, "unused");
        let path = pem_file(&format!("{alg:?}-{driver}"), &key.public_pem);
        let s = TestServer::builder(driver)
            .with(|f| f.auth.jwt_public_key_file = path.display().to_string())
            .start();
        let mut ws = s.ws();
        let ok = ws.auth(&key.sign(json!({"sub": "u1", "role": "authenticated"}), false));
        assert_eq!(ok["userId"], "u1", "{alg:?}");
        // Signed by another key, or expired: refused.
        let mut ws = s.ws();
        expect_invalid_token(&mut ws, &other.token("u2"));
        expect_invalid_token(
            &mut ws,
            &key.sign(json!({"sub": "u2", "exp": now() - 60}), false),
        );
        // HS256 with the project secret still works alongside.
        assert_eq!(ws.auth(&token("u3", "authenticated"))["userId"], "u3");
        s.shutdown();
        let _ = std::fs::remove_file(path);
    }
});

both_drivers!(jwks_rotation_refreshes_on_an_unknown_kid, |driver| {
    let a = TestKey::new(Algorithm::ES256, "key-a");
    let b = TestKey::new(Algorithm::EdDSA, "key-b");
    let r = TestKey::new(Algorithm::RS256, "key-r");
    let server = JwksServer::start(jwks(&[&a, &r]));
    let s = TestServer::builder(driver)
        .with(|f| {
            f.auth.jwks_url = server.url();
            f.auth.jwks_refresh = "1h".into(); // only the unknown kid can refresh it
        })
        .start();
    assert_eq!(server.fetches(), 1, "fetched once at start");
    let mut ws = s.ws();
    assert_eq!(ws.auth(&a.token("alice"))["userId"], "alice");
    let mut ws = s.ws();
    assert_eq!(ws.auth(&r.token("rita"))["userId"], "rita");
    // No kid: every key of the algorithm is tried.
    let mut ws = s.ws();
    assert_eq!(
        ws.auth(&a.sign(json!({"sub": "al"}), false))["userId"],
        "al"
    );

    server.serve(jwks(&[&b]));
    let mut ws = s.ws();
    expect_invalid_token(&mut ws, &b.token("bob"));
    eventually(
        "the unknown kid triggered a fetch",
        Duration::from_secs(5),
        || server.fetches() >= 2,
    );
    eventually(
        "key B accepted after the refresh",
        Duration::from_secs(5),
        || accepted(&s, &b.token("bob")),
    );
    // Removed keys stop working on every core (workers = 2: try several sockets).
    for _ in 0..4 {
        let mut ws = s.ws();
        expect_invalid_token(&mut ws, &a.token("alice"));
        expect_invalid_token(&mut ws, &r.token("rita"));
    }
    // HS256 still works alongside.
    s.client("carol");
    s.shutdown();
});

both_drivers!(issuer_and_audience_are_checked, |driver| {
    let key = TestKey::new(Algorithm::ES256, "k1");
    let server = JwksServer::start(jwks(&[&key]));
    let s = TestServer::builder(driver)
        .with(|f| {
            f.auth.jwks_url = server.url();
            f.auth.jwt_issuer = "https://id.example".into();
            f.auth.jwt_audience = "ringcast".into();
        })
        .start();
    let exp = now() + 600;
    let good = json!({"sub": "u1", "iss": "https://id.example", "aud": ["other", "ringcast"], "exp": exp, "team": "red"});
    let mut ws = s.ws();
    let ok = ws.auth(&key.sign(good, true));
    assert_eq!(ok["userId"], "u1");
    let one_aud = json!({"sub": "u1", "iss": "https://id.example", "aud": "ringcast"});
    assert!(accepted(&s, &key.sign(one_aud, true)));
    let mut ws = s.ws();
    for bad in [
        json!({"sub": "u1", "iss": "https://evil.example", "aud": "ringcast", "exp": exp}),
        json!({"sub": "u1", "aud": "ringcast", "exp": exp}),
        json!({"sub": "u1", "iss": "https://id.example", "aud": "other", "exp": exp}),
        json!({"sub": "u1", "iss": "https://id.example", "exp": exp}),
        json!({"sub": "u1", "iss": "https://id.example", "aud": "ringcast", "exp": now() - 5}),
    ] {
        expect_invalid_token(&mut ws, &key.sign(bad, true));
    }
    // The project's HS256 tokens carry no iss/aud and are not held to them.
    assert_eq!(ws.auth(&token("u2", "authenticated"))["userId"], "u2");
    s.shutdown();
});
