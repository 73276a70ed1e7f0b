//! Portcullis's own identity assertions: short-lived ES256 JWTs that tell an
//! upstream (Elasticsearch's JWT realm, for one) who the caller is, and the
//! JWKS that publishes the key to check them with.
//!
//! The key is P-256, either fresh per process ([`AssertionSigner::generate`])
//! or read from a PKCS#8 PEM file so that it survives restarts and can be
//! shared by several instances. Its `kid` is its RFC 7638 thumbprint.
//!
//! What this does not do: rotate keys (one key is published; a rotation would
//! have to keep the previous key in the JWKS until its last assertion
//! expires), or decide what goes into an assertion (the proxy does).

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use ring::rand::{SecureRandom, SystemRandom};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use serde::Serialize;
use serde_json::json;

use crate::error::OidcError;
use crate::jose;
use crate::jwk;

/// Signs Portcullis's assertions. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct AssertionSigner {
    inner: Arc<Signer>,
}

struct Signer {
    issuer: String,
    kid: String,
    key: EcdsaKeyPair,
    rng: SystemRandom,
    /// The encoded protected header, the same for every assertion.
    header: String,
    jwks: Bytes,
}

impl std::fmt::Debug for AssertionSigner {
    // Never the key: only what is public anyway.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("issuer", &self.inner.issuer)
            .field("kid", &self.inner.kid)
            .finish_non_exhaustive()
    }
}

/// What one assertion says. `iss`, `iat`, `nbf`, `exp` and `jti` are added
/// by [`AssertionSigner::sign`].
#[derive(Debug, Clone, Copy)]
pub struct AssertionClaims<'a> {
    pub subject: &'a str,
    pub audience: &'a str,
    /// Lifetime; rounded up to whole seconds, at least one.
    pub ttl: Duration,
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    pub groups: &'a [&'a str],
    pub roles: &'a [&'a str],
}

#[derive(Serialize)]
struct Payload<'a> {
    iss: &'a str,
    sub: &'a str,
    aud: &'a str,
    iat: u64,
    nbf: u64,
    exp: u64,
    jti: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    email: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    groups: &'a [&'a str],
    roles: &'a [&'a str],
}

impl AssertionSigner {
    /// A signer with a fresh P-256 key, for a process whose upstreams fetch
    /// its JWKS (the key changes on every start).
    pub fn generate(issuer: &str) -> Result<AssertionSigner, OidcError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| OidcError::KeyGeneration)?;
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .map_err(|_| OidcError::KeyGeneration)?;
        Ok(AssertionSigner::with_key(issuer, key, rng))
    }

    /// A signer with the EC P-256 key in a PKCS#8 PEM file (`BEGIN PRIVATE
    /// KEY`, as `openssl genpkey -algorithm EC -pkeyopt
    /// ec_paramgen_curve:P-256` writes).
    pub fn from_pem_file(issuer: &str, path: &Path) -> Result<AssertionSigner, OidcError> {
        let refuse = |reason: &str| OidcError::SigningKey {
            path: path.to_owned(),
            reason: reason.to_owned(),
        };
        let pem = std::fs::read(path).map_err(|source| OidcError::SigningKeyFile {
            path: path.to_owned(),
            source,
        })?;
        let der = match PrivateKeyDer::from_pem_slice(&pem) {
            Ok(PrivateKeyDer::Pkcs8(der)) => der,
            Ok(PrivateKeyDer::Sec1(_)) => {
                return Err(refuse(
                    "is a SEC1 key (BEGIN EC PRIVATE KEY); convert it to PKCS#8 with `openssl pkcs8 -topk8 -nocrypt`",
                ));
            }
            Ok(_) => return Err(refuse("is not an EC key")),
            Err(rustls_pki_types::pem::Error::NoItemsFound) => return Err(refuse("holds no PEM private key")),
            Err(error) => return Err(refuse(&format!("is not a readable PEM private key ({error})"))),
        };
        let rng = SystemRandom::new();
        let key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der.secret_pkcs8_der(), &rng)
            .map_err(|e| refuse(&format!("is not a P-256 EC key with its public key included ({e})")))?;
        Ok(AssertionSigner::with_key(issuer, key, rng))
    }

    fn with_key(issuer: &str, key: EcdsaKeyPair, rng: SystemRandom) -> AssertionSigner {
        // The public key is the uncompressed point 04 || x || y.
        let point = key.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        let kid = jose::encode(&jwk::sha256(jwk::ec_thumbprint_input("P-256", x, y).as_bytes()));
        let header = jose::encode(json!({"alg": "ES256", "typ": "JWT", "kid": kid}).to_string().as_bytes());
        let jwks = json!({"keys": [{
            "kty": "EC",
            "crv": "P-256",
            "x": jose::encode(x),
            "y": jose::encode(y),
            "kid": kid,
            "alg": "ES256",
            "use": "sig",
        }]});
        AssertionSigner {
            inner: Arc::new(Signer {
                issuer: issuer.to_owned(),
                kid,
                key,
                rng,
                header,
                jwks: Bytes::from(jwks.to_string()),
            }),
        }
    }

    /// The `iss` of every assertion.
    pub fn issuer(&self) -> &str {
        &self.inner.issuer
    }

    /// The key's `kid` (its RFC 7638 thumbprint).
    pub fn kid(&self) -> &str {
        &self.inner.kid
    }

    /// A signed assertion: header `{"alg":"ES256","typ":"JWT","kid":..}`,
    /// claims `iss`, `sub`, `aud`, `iat`, `nbf` (= `iat`), `exp`, a random
    /// `jti`, `email` and `name` when given, `groups` and `roles` (always,
    /// possibly empty).
    pub fn sign(&self, claims: &AssertionClaims<'_>) -> Result<String, OidcError> {
        let signer = &*self.inner;
        let ttl = claims.ttl.as_secs() + u64::from(claims.ttl.subsec_nanos() > 0);
        if ttl == 0 {
            return Err(OidcError::Sign("ttl must be positive"));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_err(|_| OidcError::Sign("the clock is before 1970"))?
            .as_secs();
        let mut jti = [0u8; 16];
        signer
            .rng
            .fill(&mut jti)
            .map_err(|_| OidcError::Sign("no randomness for jti"))?;
        let jti = jose::encode(&jti);
        let payload = Payload {
            iss: &signer.issuer,
            sub: claims.subject,
            aud: claims.audience,
            iat: now,
            nbf: now,
            exp: now.saturating_add(ttl),
            jti: &jti,
            email: claims.email,
            name: claims.name,
            groups: claims.groups,
            roles: claims.roles,
        };
        let payload = serde_json::to_vec(&payload).map_err(|_| OidcError::Sign("claims do not serialize"))?;
        let mut token = String::with_capacity(signer.header.len() + payload.len() * 4 / 3 + 96);
        token.push_str(&signer.header);
        token.push('.');
        jose::encode_into(&payload, &mut token);
        let signature = signer
            .key
            .sign(&signer.rng, token.as_bytes())
            .map_err(|_| OidcError::Sign("signing failed"))?;
        token.push('.');
        jose::encode_into(signature.as_ref(), &mut token);
        Ok(token)
    }

    /// `{"keys":[{kty,crv,x,y,kid,alg:"ES256",use:"sig"}]}`: what upstreams
    /// fetch to check assertions. Built once; cloning is cheap.
    pub fn jwks_json(&self) -> Bytes {
        self.inner.jwks.clone()
    }
}
