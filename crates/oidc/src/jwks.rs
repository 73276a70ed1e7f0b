//! Verification against a key set given as a document rather than fetched
//! from an issuer: how an upstream (or a test, or an operator debugging an
//! assertion) checks what Portcullis signed, with the JWKS from
//! `/.portcullis/jwks.json`.
//!
//! The same rules as [`crate::Verifier`] apply (the key chooses the
//! algorithm; `iss`, `aud`, `exp`, `nbf`, `iat` checked), without discovery,
//! refetching or caching.

use std::time::{Duration, SystemTime};

use serde_json::{Map, Value};

use crate::error::VerifyError;
use crate::jose::{self, Compact};
use crate::jwk::{KeySet, Selection};
use crate::token::{self, KeyInfo, Rules, VerifiedToken};

/// Verifies `token` with the keys in `jwks` (a JWKS JSON document), for
/// this exact `issuer` and one of `audiences`.
pub fn verify_with_jwks(
    token: &str,
    jwks: &[u8],
    issuer: &str,
    audiences: &[String],
    leeway: Duration,
) -> Result<VerifiedToken, VerifyError> {
    let keys = KeySet::parse(jwks).map_err(|_| VerifyError::KeysUnavailable)?;
    let compact = Compact::parse(token)?;
    let key = match keys.select(compact.kid.as_deref(), compact.alg) {
        Ok(key) => key,
        Err(Selection::UnknownKid | Selection::KidRequired) => {
            return Err(VerifyError::UnknownKey("no matching key in the key set".to_owned()));
        }
        Err(Selection::AlgorithmMismatch) => {
            return Err(VerifyError::UnsupportedAlgorithm(format!(
                "{} is not the algorithm of the key",
                compact.alg
            )));
        }
    };
    let signature = jose::decode(compact.signature).ok_or(VerifyError::Malformed("signature is not base64url"))?;
    if !key.verify(compact.alg, compact.signing_input.as_bytes(), &signature) {
        return Err(VerifyError::BadSignature);
    }
    let payload = jose::decode(compact.payload).ok_or(VerifyError::Malformed("payload is not base64url"))?;
    let claims: Map<String, Value> =
        serde_json::from_slice(&payload).map_err(|_| VerifyError::Malformed("payload is not a JSON object"))?;
    let rules = Rules {
        issuer,
        audiences,
        leeway,
    };
    let info = KeyInfo {
        algorithm: compact.alg,
        key_id: key.kid.clone(),
        thumbprint: key.thumbprint,
        generation: 0,
    };
    token::check(claims, &rules, info, SystemTime::now())
}
