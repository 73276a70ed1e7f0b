//! Compact JWS (RFC 7515) with one ephemeral ES256 key: signing the
//! provider's ID tokens and access tokens, publishing the key as a JWKS, and
//! checking the signature of tokens this provider issued itself (access
//! tokens at `/userinfo`, `id_token_hint` at `/logout`).
//!
//! It does not verify anyone else's tokens, knows no other algorithm, and
//! does not check claims (expiry, issuer): callers do.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

use crate::error::DevIdpError;

/// The JOSE algorithm this provider signs with.
pub(crate) const ALG: &str = "ES256";
/// `typ` of ID tokens.
pub(crate) const TYP_ID_TOKEN: &str = "JWT";
/// `typ` of access tokens (RFC 9068).
pub(crate) const TYP_ACCESS_TOKEN: &str = "at+jwt";
/// Tokens longer than this are not even decoded.
const MAX_TOKEN_LEN: usize = 16 * 1024;

/// The signing key, its `kid` and the random source used for signatures and
/// for every random value the provider hands out.
pub(crate) struct Signer {
    key: EcdsaKeyPair,
    kid: String,
    jwk: Value,
    rng: SystemRandom,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signer")
            .field("alg", &ALG)
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A fresh P-256 key; its `kid` is its RFC 7638 thumbprint.
    pub(crate) fn generate() -> Result<Signer, DevIdpError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| DevIdpError::Crypto("generating the p-256 signing key"))?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| DevIdpError::Crypto("loading the generated p-256 signing key"))?;
        // An uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
        let point = key.public_key().as_ref();
        if point.len() != 65 || point[0] != 4 {
            return Err(DevIdpError::Crypto("unexpected p-256 public key encoding"));
        }
        let x = URL_SAFE_NO_PAD.encode(&point[1..33]);
        let y = URL_SAFE_NO_PAD.encode(&point[33..65]);
        // RFC 7638: the required members, lexicographic order, no whitespace.
        let thumbprint_input = format!(r#"{{"crv":"P-256","kty":"EC","x":"{x}","y":"{y}"}}"#);
        let kid = URL_SAFE_NO_PAD.encode(Sha256::digest(thumbprint_input.as_bytes()));
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": x, "y": y, "kid": kid, "use": "sig", "alg": ALG});
        Ok(Signer { key, kid, jwk, rng })
    }

    pub(crate) fn kid(&self) -> &str {
        &self.kid
    }

    /// The JWKS document: `{"keys": [the public key]}`.
    pub(crate) fn jwks(&self) -> Value {
        json!({ "keys": [self.jwk] })
    }

    /// `bytes` random bytes, base64url: codes, tokens, session ids.
    pub(crate) fn random_token(&self, bytes: usize) -> Result<String, DevIdpError> {
        let mut buf = vec![0u8; bytes];
        self.rng
            .fill(&mut buf)
            .map_err(|_| DevIdpError::Crypto("reading the system random source"))?;
        Ok(URL_SAFE_NO_PAD.encode(buf))
    }

    /// Signs `claims` as a compact JWS with the given `typ`.
    pub(crate) fn sign(&self, typ: &str, claims: &Value) -> Result<String, DevIdpError> {
        let header = json!({"alg": ALG, "typ": typ, "kid": self.kid});
        let mut token = String::new();
        token.push_str(&URL_SAFE_NO_PAD.encode(header.to_string()));
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
        let signature = self
            .key
            .sign(&self.rng, token.as_bytes())
            .map_err(|_| DevIdpError::Crypto("signing a token"))?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(signature.as_ref()));
        Ok(token)
    }

    /// The claims of `token` if it is a compact JWS this key signed with the
    /// expected `typ`; claims themselves (exp, iss, ...) are not checked.
    pub(crate) fn verify(&self, token: &str, typ: &str) -> Option<Map<String, Value>> {
        if token.len() > MAX_TOKEN_LEN {
            return None;
        }
        let mut parts = token.split('.');
        let (header_b64, claims_b64, signature_b64) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Map<String, Value> = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(header_b64).ok()?).ok()?;
        if header.get("alg")?.as_str()? != ALG
            || header.get("kid")?.as_str()? != self.kid
            || header.get("typ")?.as_str()? != typ
            || header.contains_key("crit")
        {
            return None;
        }
        let signature = URL_SAFE_NO_PAD.decode(signature_b64).ok()?;
        let signed_len = header_b64.len() + 1 + claims_b64.len();
        let signed = token.get(..signed_len)?;
        ring::signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, self.key.public_key().as_ref())
            .verify(signed.as_bytes(), &signature)
            .ok()?;
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(claims_b64).ok()?).ok()
    }
}

/// The `at_hash` of an access token (OIDC Core 3.1.3.6): the left half of
/// its SHA-256, base64url.
pub(crate) fn at_hash(access_token: &str) -> String {
    let digest = Sha256::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

/// Equality that does not stop at the first differing byte (secrets,
/// passwords, PKCE): compares SHA-256 digests in constant time.
pub(crate) fn secure_eq(a: &[u8], b: &[u8]) -> bool {
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter().zip(db.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The PKCE S256 transform: base64url(SHA-256(verifier)).
pub(crate) fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_then_verify() {
        let signer = Signer::generate().unwrap();
        let token = signer.sign(TYP_ACCESS_TOKEN, &json!({"sub": "alice"})).unwrap();
        let claims = signer.verify(&token, TYP_ACCESS_TOKEN).unwrap();
        assert_eq!(claims["sub"], "alice");
        // Wrong typ: an ID token is not an access token.
        assert!(signer.verify(&token, TYP_ID_TOKEN).is_none());
        // Tampered payload.
        let mut parts: Vec<&str> = token.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(json!({"sub": "mallory"}).to_string());
        parts[1] = &forged;
        assert!(signer.verify(&parts.join("."), TYP_ACCESS_TOKEN).is_none());
        // Another key.
        let other = Signer::generate().unwrap();
        assert!(other.verify(&token, TYP_ACCESS_TOKEN).is_none());
        // Garbage never panics.
        for junk in ["", ".", "..", "a.b.c", "a.b.c.d", "\u{1F600}.\u{1F600}.\u{1F600}"] {
            assert!(signer.verify(junk, TYP_ACCESS_TOKEN).is_none());
        }
    }

    #[test]
    fn pkce_s256_matches_rfc7636_example() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn secure_eq_works() {
        assert!(secure_eq(b"abc", b"abc"));
        assert!(!secure_eq(b"abc", b"abd"));
        assert!(!secure_eq(b"abc", b"abcd"));
    }
}
