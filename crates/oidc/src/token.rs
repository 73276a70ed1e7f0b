//! A verified token's claims, and the claim rules a token must meet after
//! its signature has checked out: issuer, audience, and the time claims.
//!
//! Time claims (`exp`, `nbf`, `iat`) must be JSON numbers when present
//! (integers or fractions, RFC 7519 NumericDate). A time claim of another
//! type makes the token malformed rather than letting it pass as if the
//! claim were absent. `exp` is required.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::error::VerifyError;
use crate::jose::Algorithm;

/// The claims of a token whose signature, issuer, audience and validity
/// period have been checked.
pub struct VerifiedToken {
    claims: Map<String, Value>,
    expires_at: SystemTime,
    algorithm: Algorithm,
    key_id: Option<Arc<str>>,
    /// `expires_at` plus the leeway: when the cache stops answering for it.
    pub(crate) valid_until: SystemTime,
    /// The key it was verified with (RFC 7638 thumbprint), and the key-set
    /// generation that key came from: the cache drops tokens of keys the
    /// issuer withdraws.
    pub(crate) thumbprint: [u8; 32],
    pub(crate) generation: u64,
}

impl std::fmt::Debug for VerifiedToken {
    // Claims can carry personal data (email, name); a debug print names
    // them without their values, except the subject.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedToken")
            .field("sub", &self.subject())
            .field("expires_at", &self.expires_at)
            .field("algorithm", &self.algorithm)
            .field("key_id", &self.key_id)
            .field("claims", &self.claims.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl VerifiedToken {
    /// Every claim of the token.
    pub fn claims(&self) -> &Map<String, Value> {
        &self.claims
    }

    /// A claim that is a JSON string; `None` when absent or of another type.
    pub fn claim_str(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// The `sub` claim.
    pub fn subject(&self) -> Option<&str> {
        self.claim_str("sub")
    }

    /// The `exp` claim.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// The algorithm the token was signed with.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The `kid` of the key that verified it, if the key has one.
    pub fn key_id(&self) -> Option<&str> {
        self.key_id.as_deref()
    }

    #[cfg(test)]
    pub(crate) fn for_tests(valid_until: SystemTime, thumbprint: [u8; 32]) -> VerifiedToken {
        VerifiedToken {
            claims: Map::new(),
            expires_at: valid_until,
            algorithm: Algorithm::Es256,
            key_id: None,
            valid_until,
            thumbprint,
            generation: 0,
        }
    }
}

/// What a token's claims must satisfy.
#[derive(Debug)]
pub(crate) struct Rules<'a> {
    /// The issuer string exactly as discovery announced it.
    pub(crate) issuer: &'a str,
    pub(crate) audiences: &'a [String],
    pub(crate) leeway: Duration,
}

/// What the verifier knows about the key, for the [`VerifiedToken`].
#[derive(Debug)]
pub(crate) struct KeyInfo {
    pub(crate) algorithm: Algorithm,
    pub(crate) key_id: Option<Arc<str>>,
    pub(crate) thumbprint: [u8; 32],
    pub(crate) generation: u64,
}

/// Checks the claims of a token whose signature is good.
pub(crate) fn check(
    claims: Map<String, Value>,
    rules: &Rules<'_>,
    key: KeyInfo,
    now: SystemTime,
) -> Result<VerifiedToken, VerifyError> {
    if claims.get("iss").and_then(Value::as_str) != Some(rules.issuer) {
        return Err(VerifyError::WrongIssuer);
    }
    let audience_ok = match claims.get("aud") {
        Some(Value::String(aud)) => rules.audiences.iter().any(|a| a == aud),
        Some(Value::Array(auds)) => auds
            .iter()
            .filter_map(Value::as_str)
            .any(|aud| rules.audiences.iter().any(|a| a == aud)),
        _ => false,
    };
    if !audience_ok {
        return Err(VerifyError::WrongAudience);
    }

    let now_secs = now.duration_since(UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64());
    let leeway = rules.leeway.as_secs_f64();
    let exp =
        numeric_date(&claims, "exp", "exp is not a number")?.ok_or(VerifyError::Malformed("token has no exp claim"))?;
    if now_secs >= exp + leeway {
        return Err(VerifyError::Expired);
    }
    if let Some(nbf) = numeric_date(&claims, "nbf", "nbf is not a number")?
        && nbf > now_secs + leeway
    {
        return Err(VerifyError::NotYetValid);
    }
    if let Some(iat) = numeric_date(&claims, "iat", "iat is not a number")?
        && iat > now_secs + leeway
    {
        return Err(VerifyError::NotYetValid);
    }

    let expires_at = system_time(exp);
    Ok(VerifiedToken {
        claims,
        expires_at,
        valid_until: expires_at.checked_add(rules.leeway).unwrap_or(expires_at),
        algorithm: key.algorithm,
        key_id: key.key_id,
        thumbprint: key.thumbprint,
        generation: key.generation,
    })
}

/// A NumericDate claim: `None` when absent, an error when not a finite
/// number.
fn numeric_date(claims: &Map<String, Value>, name: &str, error: &'static str) -> Result<Option<f64>, VerifyError> {
    match claims.get(name) {
        None => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|v| v.is_finite())
            .map(Some)
            .ok_or(VerifyError::Malformed(error)),
        Some(_) => Err(VerifyError::Malformed(error)),
    }
}

/// Seconds since the epoch as a time; absurdly far futures are clamped to
/// the year 5000 or so rather than overflowing.
fn system_time(secs: f64) -> SystemTime {
    const FAR: Duration = Duration::from_secs(100_000_000_000);
    let since_epoch = Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(FAR).min(FAR);
    UNIX_EPOCH + since_epoch
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: u64 = 1_700_000_000;

    fn run(claims: Value) -> Result<VerifiedToken, VerifyError> {
        let Value::Object(claims) = claims else {
            panic!("claims must be an object")
        };
        let audiences = ["api".to_owned(), "other".to_owned()];
        let rules = Rules {
            issuer: "https://idp",
            audiences: &audiences,
            leeway: Duration::from_secs(30),
        };
        let key = KeyInfo {
            algorithm: Algorithm::Es256,
            key_id: None,
            thumbprint: [0; 32],
            generation: 1,
        };
        check(claims, &rules, key, UNIX_EPOCH + Duration::from_secs(NOW))
    }

    fn reason(claims: Value) -> &'static str {
        match run(claims) {
            Ok(_) => "ok",
            Err(e) => e.reason(),
        }
    }

    #[test]
    fn claim_rules() {
        let cases = [
            (json!({"iss": "https://idp", "aud": "api", "exp": NOW + 60}), "ok"),
            (
                json!({"iss": "https://idp", "aud": ["x", "other"], "exp": NOW + 60}),
                "ok",
            ),
            (
                json!({"iss": "https://idp", "aud": "api", "exp": (NOW + 60) as f64 + 0.5}),
                "ok",
            ),
            (
                json!({"iss": "https://idp/", "aud": "api", "exp": NOW + 60}),
                "wrong_issuer",
            ),
            (
                json!({"iss": ["https://idp"], "aud": "api", "exp": NOW + 60}),
                "wrong_issuer",
            ),
            (json!({"aud": "api", "exp": NOW + 60}), "wrong_issuer"),
            (
                json!({"iss": "https://idp", "aud": "x", "exp": NOW + 60}),
                "wrong_audience",
            ),
            (
                json!({"iss": "https://idp", "aud": ["x", 1], "exp": NOW + 60}),
                "wrong_audience",
            ),
            (
                json!({"iss": "https://idp", "aud": [], "exp": NOW + 60}),
                "wrong_audience",
            ),
            (json!({"iss": "https://idp", "exp": NOW + 60}), "wrong_audience"),
            (json!({"iss": "https://idp", "aud": "api"}), "malformed"),
            (
                json!({"iss": "https://idp", "aud": "api", "exp": "9999999999"}),
                "malformed",
            ),
            (json!({"iss": "https://idp", "aud": "api", "exp": null}), "malformed"),
            // Within the leeway, then past it.
            (json!({"iss": "https://idp", "aud": "api", "exp": NOW - 29}), "ok"),
            (json!({"iss": "https://idp", "aud": "api", "exp": NOW - 30}), "expired"),
            (json!({"iss": "https://idp", "aud": "api", "exp": 0}), "expired"),
            (json!({"iss": "https://idp", "aud": "api", "exp": -5}), "expired"),
            (
                json!({"iss": "https://idp", "aud": "api", "exp": NOW + 60, "nbf": NOW + 30}),
                "ok",
            ),
            (
                json!({"iss": "https://idp", "aud": "api", "exp": NOW + 60, "nbf": NOW + 31}),
                "not_yet_valid",
            ),
            (
                json!({"iss": "https://idp", "aud": "api", "exp": NOW + 600, "nbf": "99999999999"}),
                "malformed",
            ),
            (
                json!({"iss": "https://idp", "aud": "api", "exp": NOW + 60, "iat": NOW + 31}),
                "not_yet_valid",
            ),
            (
                json!({"iss": "https://idp", "aud": "api", "exp": NOW + 60, "iat": true}),
                "malformed",
            ),
            (json!({"iss": "https://idp", "aud": "api", "exp": 1e300}), "ok"),
        ];
        for (claims, expected) in cases {
            assert_eq!(reason(claims.clone()), expected, "{claims}");
        }
    }

    #[test]
    fn accessors() {
        let token = run(json!({
            "iss": "https://idp", "aud": "api", "exp": NOW + 60,
            "sub": "alice", "email": "a@example.com", "groups": ["g"], "n": 1,
        }))
        .expect("valid");
        assert_eq!(token.subject(), Some("alice"));
        assert_eq!(token.claim_str("email"), Some("a@example.com"));
        assert_eq!(token.claim_str("groups"), None);
        assert_eq!(token.claim_str("n"), None);
        assert_eq!(token.claim_str("missing"), None);
        assert_eq!(token.expires_at(), UNIX_EPOCH + Duration::from_secs(NOW + 60));
        assert_eq!(token.valid_until, UNIX_EPOCH + Duration::from_secs(NOW + 90));
        assert_eq!(token.claims().len(), 7);
        let debug = format!("{token:?}");
        assert!(!debug.contains("a@example.com"), "{debug}");
    }
}
