//! JSON Web Keys (RFC 7517): reading an issuer's key set, choosing the key
//! for a token, and checking a signature with it.
//!
//! The rule this module keeps: **the key decides the algorithm**. A token's
//! `alg` is only accepted when it is one the selected key is for (its `kty`
//! and `crv`, and its own `alg` when the key names one). So an RSA public key
//! can never be used as an HMAC secret, and an ES256 token cannot be checked
//! against an RSA key or the other way round.
//!
//! Signature math is ring's. This module does not fetch anything (see
//! `verifier`) and never logs key material, only key ids.

use std::sync::Arc;

use ring::signature::{self, RsaPublicKeyComponents, UnparsedPublicKey, VerificationAlgorithm};
use serde::Deserialize;
use serde_json::Value;

use crate::jose::{self, Algorithm};

/// Whether a key can verify ES256 or ES384 tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Curve {
    P256,
    P384,
}

/// The public part of a key, decoded.
#[derive(Clone, PartialEq, Eq)]
enum Material {
    /// Modulus and exponent, big-endian, without leading zeros.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// The uncompressed point `04 || x || y`.
    Ec {
        curve: Curve,
        point: Vec<u8>,
    },
    Ed25519 {
        x: Vec<u8>,
    },
}

/// One usable signing key of an issuer.
#[derive(Clone)]
pub(crate) struct VerifyingKey {
    pub(crate) kid: Option<Arc<str>>,
    /// The key's own `alg`, when the JWKS names one: then it is the only
    /// algorithm the key verifies.
    alg: Option<Algorithm>,
    material: Material,
    /// The RFC 7638 thumbprint: identifies the key material whatever its
    /// `kid`, so that tokens verified with a key that left the set can be
    /// dropped from the cache.
    pub(crate) thumbprint: [u8; 32],
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kty = match &self.material {
            Material::Rsa { .. } => "RSA",
            Material::Ec { curve: Curve::P256, .. } => "EC P-256",
            Material::Ec { curve: Curve::P384, .. } => "EC P-384",
            Material::Ed25519 { .. } => "OKP Ed25519",
        };
        f.debug_struct("VerifyingKey")
            .field("kid", &self.kid)
            .field("kty", &kty)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Whether this key verifies tokens signed with `alg`.
    pub(crate) fn allows(&self, alg: Algorithm) -> bool {
        let family = matches!(
            (&self.material, alg),
            (
                Material::Rsa { .. },
                Algorithm::Rs256
                    | Algorithm::Rs384
                    | Algorithm::Rs512
                    | Algorithm::Ps256
                    | Algorithm::Ps384
                    | Algorithm::Ps512,
            ) | (Material::Ec { curve: Curve::P256, .. }, Algorithm::Es256)
                | (Material::Ec { curve: Curve::P384, .. }, Algorithm::Es384)
                | (Material::Ed25519 { .. }, Algorithm::EdDsa)
        );
        family && self.alg.is_none_or(|own| own == alg)
    }

    /// Checks `signature` over `message`. The caller has checked
    /// [`allows`](Self::allows); this checks it again, since a mismatch
    /// here would be a security bug rather than a bad token.
    pub(crate) fn verify(&self, alg: Algorithm, message: &[u8], signature: &[u8]) -> bool {
        if !self.allows(alg) {
            return false;
        }
        match &self.material {
            Material::Rsa { n, e } => {
                let params = match alg {
                    Algorithm::Rs256 => &signature::RSA_PKCS1_2048_8192_SHA256,
                    Algorithm::Rs384 => &signature::RSA_PKCS1_2048_8192_SHA384,
                    Algorithm::Rs512 => &signature::RSA_PKCS1_2048_8192_SHA512,
                    Algorithm::Ps256 => &signature::RSA_PSS_2048_8192_SHA256,
                    Algorithm::Ps384 => &signature::RSA_PSS_2048_8192_SHA384,
                    Algorithm::Ps512 => &signature::RSA_PSS_2048_8192_SHA512,
                    _ => return false,
                };
                RsaPublicKeyComponents { n, e }
                    .verify(params, message, signature)
                    .is_ok()
            }
            Material::Ec { curve, point } => {
                let algorithm: &dyn VerificationAlgorithm = match curve {
                    Curve::P256 => &signature::ECDSA_P256_SHA256_FIXED,
                    Curve::P384 => &signature::ECDSA_P384_SHA384_FIXED,
                };
                UnparsedPublicKey::new(algorithm, point)
                    .verify(message, signature)
                    .is_ok()
            }
            Material::Ed25519 { x } => UnparsedPublicKey::new(&signature::ED25519, x)
                .verify(message, signature)
                .is_ok(),
        }
    }
}

/// The usable signing keys of one JWKS document.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeySet {
    keys: Vec<VerifyingKey>,
}

/// Why no key was chosen for a token.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Selection {
    /// The token's `kid` is not in the set: worth a refetch.
    UnknownKid,
    /// No `kid` while the set has several keys: the token is ambiguous.
    KidRequired,
    /// The key exists but is not for the token's algorithm.
    AlgorithmMismatch,
}

/// A JWK as it appears in a JWKS, before checking. Every field is optional
/// here so that one odd key can be skipped without refusing the whole set.
#[derive(Deserialize)]
struct RawJwk {
    kty: Option<String>,
    #[serde(rename = "use")]
    use_: Option<String>,
    key_ops: Option<Vec<String>>,
    alg: Option<String>,
    kid: Option<String>,
    crv: Option<String>,
    n: Option<String>,
    e: Option<String>,
    x: Option<String>,
    y: Option<String>,
}

impl KeySet {
    /// Reads a JWKS document. Keys that are not for signatures, use an
    /// algorithm this crate does not verify, or cannot be read are skipped
    /// with a log line naming their `kid`; the document itself must be a
    /// JSON object with a `keys` array.
    pub(crate) fn parse(document: &[u8]) -> Result<KeySet, String> {
        let doc: Value = serde_json::from_slice(document).map_err(|e| format!("not JSON: {e}"))?;
        let keys = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| "no \"keys\" array".to_owned())?;
        let mut set = KeySet::default();
        for (index, key) in keys.iter().enumerate() {
            match parse_key(key) {
                Ok(Some(key)) => set.keys.push(key),
                Ok(None) => {}
                Err(reason) => {
                    let kid = key.get("kid").and_then(Value::as_str).map(jose::shorten);
                    tracing::warn!(index, kid, reason, "skipping a key of the issuer's JWKS");
                }
            }
        }
        Ok(set)
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub(crate) fn contains_thumbprint(&self, thumbprint: &[u8; 32]) -> bool {
        self.keys.iter().any(|k| &k.thumbprint == thumbprint)
    }

    pub(crate) fn thumbprints(&self) -> impl Iterator<Item = &[u8; 32]> {
        self.keys.iter().map(|k| &k.thumbprint)
    }

    pub(crate) fn kids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.kid.as_deref().unwrap_or("(none)")).collect()
    }

    /// The key for a token with this `kid` and `alg`. With a `kid`, only keys
    /// with that `kid` are candidates (if an issuer reuses a `kid` across key
    /// types, the one for `alg` is chosen). Without one, the set must hold
    /// exactly one key.
    pub(crate) fn select(&self, kid: Option<&str>, alg: Algorithm) -> Result<&VerifyingKey, Selection> {
        match kid {
            Some(kid) => {
                let mut candidates = self.keys.iter().filter(|k| k.kid.as_deref() == Some(kid)).peekable();
                if candidates.peek().is_none() {
                    return Err(Selection::UnknownKid);
                }
                candidates.find(|k| k.allows(alg)).ok_or(Selection::AlgorithmMismatch)
            }
            None => match self.keys.as_slice() {
                [only] if only.allows(alg) => Ok(only),
                [_] => Err(Selection::AlgorithmMismatch),
                _ => Err(Selection::KidRequired),
            },
        }
    }
}

/// Reads one key: `Ok(None)` for a key that is fine but not for us (an
/// encryption key), `Err` for one that should have been usable but is not.
fn parse_key(value: &Value) -> Result<Option<VerifyingKey>, &'static str> {
    let raw = RawJwk::deserialize(value).map_err(|_| "not a JWK object")?;
    if raw.use_.as_deref().is_some_and(|u| u != "sig") {
        return Ok(None);
    }
    if let Some(ops) = &raw.key_ops
        && !ops.iter().any(|op| op == "verify")
    {
        return Ok(None);
    }
    let alg = match raw.alg.as_deref() {
        None => None,
        Some(name) => Some(Algorithm::from_name(name).ok_or("its alg is not one this verifier accepts")?),
    };
    let b64 = |field: &Option<String>, name: &'static str| -> Result<Vec<u8>, &'static str> {
        let text = field.as_deref().ok_or(name)?;
        jose::decode(text).ok_or("a key parameter is not base64url")
    };
    let material = match raw.kty.as_deref() {
        Some("RSA") => {
            let n = strip_leading_zeros(b64(&raw.n, "RSA key without n")?);
            let e = strip_leading_zeros(b64(&raw.e, "RSA key without e")?);
            // ring verifies RS*/PS* with 2048..=8192-bit moduli only; a key
            // outside that range would fail every token, so say so now.
            let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
            if !(2048..=8192).contains(&bits) {
                return Err("RSA modulus is not 2048 to 8192 bits");
            }
            if e.is_empty() || e.len() > 4 || e.last().is_some_and(|b| b & 1 == 0) {
                return Err("RSA exponent is not a small odd number");
            }
            Material::Rsa { n, e }
        }
        Some("EC") => {
            let (curve, len) = match raw.crv.as_deref() {
                Some("P-256") => (Curve::P256, 32),
                Some("P-384") => (Curve::P384, 48),
                _ => return Err("EC key on a curve this verifier does not accept"),
            };
            let x = b64(&raw.x, "EC key without x")?;
            let y = b64(&raw.y, "EC key without y")?;
            if x.len() != len || y.len() != len {
                return Err("EC coordinates have the wrong length for the curve");
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Material::Ec { curve, point }
        }
        Some("OKP") => {
            if raw.crv.as_deref() != Some("Ed25519") {
                return Err("OKP key on a curve this verifier does not accept");
            }
            let x = b64(&raw.x, "OKP key without x")?;
            if x.len() != 32 {
                return Err("Ed25519 key is not 32 bytes");
            }
            Material::Ed25519 { x }
        }
        Some("oct") => return Err("symmetric keys are never accepted"),
        _ => return Err("unknown key type"),
    };
    let key = VerifyingKey {
        kid: raw.kid.map(Arc::from),
        alg,
        thumbprint: thumbprint(&material),
        material,
    };
    if let Some(alg) = alg
        && !key.allows(alg)
    {
        return Err("its alg does not fit its key type");
    }
    Ok(Some(key))
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|&&b| b == 0).count();
    bytes.drain(..zeros);
    bytes
}

/// The RFC 7638 thumbprint input of a key: its required members, in
/// lexicographic order, without whitespace.
fn thumbprint(material: &Material) -> [u8; 32] {
    let json = match material {
        Material::Rsa { n, e } => format!(r#"{{"e":"{}","kty":"RSA","n":"{}"}}"#, jose::encode(e), jose::encode(n)),
        Material::Ec { curve, point } => {
            let (crv, len) = match curve {
                Curve::P256 => ("P-256", 32),
                Curve::P384 => ("P-384", 48),
            };
            ec_thumbprint_input(crv, &point[1..1 + len], &point[1 + len..])
        }
        Material::Ed25519 { x } => format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{}"}}"#, jose::encode(x)),
    };
    sha256(json.as_bytes())
}

/// The RFC 7638 thumbprint input of an EC key (shared with the assertion
/// signer, whose `kid` is this thumbprint).
pub(crate) fn ec_thumbprint_input(crv: &str, x: &[u8], y: &[u8]) -> String {
    format!(
        r#"{{"crv":"{crv}","kty":"EC","x":"{}","y":"{}"}}"#,
        jose::encode(x),
        jose::encode(y)
    )
}

pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// The RSA key of RFC 7638 section 3.1, whose thumbprint the RFC gives.
    fn rfc7638_key() -> Value {
        json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        })
    }

    fn set(keys: Vec<Value>) -> KeySet {
        KeySet::parse(json!({ "keys": keys }).to_string().as_bytes()).expect("parses")
    }

    fn ec_key(kid: &str, alg: Option<&str>) -> Value {
        let mut key = json!({
            "kty": "EC", "crv": "P-256", "kid": kid,
            "x": jose::encode(&[1u8; 32]), "y": jose::encode(&[2u8; 32]),
        });
        if let Some(alg) = alg {
            key["alg"] = json!(alg);
        }
        key
    }

    #[test]
    fn thumbprint_matches_rfc7638() {
        let set = set(vec![rfc7638_key()]);
        let key = set.select(Some("2011-04-29"), Algorithm::Rs256).expect("selected");
        assert_eq!(
            jose::encode(&key.thumbprint),
            "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
        );
    }

    #[test]
    fn skips_keys_that_are_not_usable_signing_keys() {
        let mut short_rsa = rfc7638_key();
        short_rsa["n"] = json!(jose::encode(&[0xc1; 128]));
        short_rsa["kid"] = json!("short");
        let keys = vec![
            rfc7638_key(),
            json!({"kty": "RSA", "use": "enc", "kid": "enc", "n": rfc7638_key()["n"], "e": "AQAB"}),
            json!({"kty": "RSA", "key_ops": ["encrypt"], "kid": "ops", "n": rfc7638_key()["n"], "e": "AQAB"}),
            json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}),
            json!({"kty": "RSA", "kid": "no-n", "e": "AQAB"}),
            json!({"kty": "EC", "crv": "P-521", "kid": "p521", "x": "AA", "y": "AA"}),
            json!({"kty": "EC", "crv": "P-256", "kid": "short-x", "x": "AA", "y": "AA"}),
            json!({"kty": "OKP", "crv": "X25519", "kid": "x25519", "x": jose::encode(&[1; 32])}),
            json!({"kty": "RSA", "kid": "hs-alg", "alg": "HS256", "n": rfc7638_key()["n"], "e": "AQAB"}),
            ec_key("ec-says-rs", Some("RS256")),
            short_rsa,
            json!("not an object"),
            json!({"kty": "RSA", "kid": "bad-b64", "n": "!!", "e": "AQAB"}),
            ec_key("ec", Some("ES256")),
            json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": jose::encode(&[1; 32])}),
        ];
        let set = set(keys);
        assert_eq!(set.kids(), vec!["2011-04-29", "ec", "ed"]);
    }

    #[test]
    fn a_document_without_keys_is_refused() {
        assert!(KeySet::parse(b"{}").is_err());
        assert!(KeySet::parse(b"not json").is_err());
        assert!(KeySet::parse(br#"{"keys":{}}"#).is_err());
        assert!(KeySet::parse(br#"{"keys":[]}"#).expect("empty is readable").is_empty());
    }

    #[test]
    fn the_key_decides_the_algorithm() {
        let mut rsa_without_alg = rfc7638_key();
        rsa_without_alg.as_object_mut().unwrap().remove("alg");
        rsa_without_alg["kid"] = json!("rsa-any");
        let set = set(vec![rfc7638_key(), rsa_without_alg, ec_key("ec", None)]);
        let check = |kid: Option<&str>, alg| set.select(kid, alg).map(|k| k.kid.as_deref().unwrap().to_owned());
        // A key naming its alg verifies only that alg.
        assert_eq!(check(Some("2011-04-29"), Algorithm::Rs256), Ok("2011-04-29".to_owned()));
        assert_eq!(
            check(Some("2011-04-29"), Algorithm::Ps256),
            Err(Selection::AlgorithmMismatch)
        );
        // Without one, the key type decides.
        assert_eq!(check(Some("rsa-any"), Algorithm::Ps256), Ok("rsa-any".to_owned()));
        assert_eq!(
            check(Some("rsa-any"), Algorithm::Es256),
            Err(Selection::AlgorithmMismatch)
        );
        assert_eq!(check(Some("ec"), Algorithm::Es256), Ok("ec".to_owned()));
        assert_eq!(check(Some("ec"), Algorithm::Es384), Err(Selection::AlgorithmMismatch));
        assert_eq!(check(Some("ec"), Algorithm::Rs256), Err(Selection::AlgorithmMismatch));
        assert_eq!(check(Some("nope"), Algorithm::Rs256), Err(Selection::UnknownKid));
        assert_eq!(check(None, Algorithm::Rs256), Err(Selection::KidRequired));
    }

    #[test]
    fn a_single_key_is_used_without_kid() {
        let one = set(vec![ec_key("only", None)]);
        assert!(one.select(None, Algorithm::Es256).is_ok());
        assert_eq!(
            one.select(None, Algorithm::Rs256).err(),
            Some(Selection::AlgorithmMismatch)
        );
        // A kid that does not match is still unknown, even with one key.
        assert_eq!(
            one.select(Some("other"), Algorithm::Es256).err(),
            Some(Selection::UnknownKid)
        );
    }

    /// A private key from `testdata/` (committed test keys), PKCS#8 DER.
    fn test_key_der(pem: &str) -> Vec<u8> {
        use rustls_pki_types::pem::PemObject;
        match rustls_pki_types::PrivateKeyDer::from_pem_slice(pem.as_bytes()).expect("PEM") {
            rustls_pki_types::PrivateKeyDer::Pkcs8(der) => der.secret_pkcs8_der().to_vec(),
            _ => panic!("test keys are PKCS#8"),
        }
    }

    /// Signs with ring for every algorithm and checks that the key verifies
    /// exactly its own algorithm's signatures: catches a wrong mapping from
    /// `alg` to ring's verification parameters.
    #[test]
    fn every_algorithm_verifies_its_own_signatures_only() {
        use ring::rand::SystemRandom;
        use ring::signature::{EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair};

        let rng = SystemRandom::new();
        let message = b"header.payload";
        let rsa = RsaKeyPair::from_pkcs8(&test_key_der(include_str!("../testdata/rsa-1.key.pem"))).expect("RSA");
        let public = RsaPublicKeyComponents::<Vec<u8>>::from(rsa.public());
        let rsa_jwk = json!({"kty": "RSA", "kid": "rsa", "n": jose::encode(&public.n), "e": jose::encode(&public.e)});
        let rsa_sign = |padding: &'static dyn ring::signature::RsaEncoding| {
            let mut signature = vec![0; rsa.public().modulus_len()];
            rsa.sign(padding, &rng, message, &mut signature).expect("sign");
            signature
        };
        let ec = |alg: &'static ring::signature::EcdsaSigningAlgorithm, der: Vec<u8>, crv: &str, kid: &str| {
            let key = EcdsaKeyPair::from_pkcs8(alg, &der, &rng).expect("EC");
            let point = key.public_key().as_ref();
            let len = (point.len() - 1) / 2;
            let jwk = json!({"kty": "EC", "crv": crv, "kid": kid,
                "x": jose::encode(&point[1..1 + len]), "y": jose::encode(&point[1 + len..])});
            (jwk, key.sign(&rng, message).expect("sign").as_ref().to_vec())
        };
        let p256 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng).expect("P-256");
        let (p256_jwk, es256) = ec(
            &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            p256.as_ref().to_vec(),
            "P-256",
            "p256",
        );
        let (p384_jwk, es384) = ec(
            &signature::ECDSA_P384_SHA384_FIXED_SIGNING,
            test_key_der(include_str!("../testdata/es384.key.pem")),
            "P-384",
            "p384",
        );
        let ed =
            Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).expect("Ed25519").as_ref()).expect("Ed");
        let ed_jwk = json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": jose::encode(ed.public_key().as_ref())});

        let set = set(vec![rsa_jwk, p256_jwk, p384_jwk, ed_jwk]);
        let signed = [
            (Algorithm::Rs256, "rsa", rsa_sign(&signature::RSA_PKCS1_SHA256)),
            (Algorithm::Rs384, "rsa", rsa_sign(&signature::RSA_PKCS1_SHA384)),
            (Algorithm::Rs512, "rsa", rsa_sign(&signature::RSA_PKCS1_SHA512)),
            (Algorithm::Ps256, "rsa", rsa_sign(&signature::RSA_PSS_SHA256)),
            (Algorithm::Ps384, "rsa", rsa_sign(&signature::RSA_PSS_SHA384)),
            (Algorithm::Ps512, "rsa", rsa_sign(&signature::RSA_PSS_SHA512)),
            (Algorithm::Es256, "p256", es256),
            (Algorithm::Es384, "p384", es384),
            (Algorithm::EdDsa, "ed", ed.sign(message).as_ref().to_vec()),
        ];
        for (alg, kid, signature) in &signed {
            let key = set.select(Some(kid), *alg).expect("key for its alg");
            assert!(key.verify(*alg, message, signature), "{alg} verifies");
            assert!(
                !key.verify(*alg, b"header.tampered", signature),
                "{alg} refuses another message"
            );
            for (other, other_kid, _) in &signed {
                if other != alg && other_kid == kid {
                    assert!(
                        !key.verify(*other, message, signature),
                        "{alg} signature is not {other}"
                    );
                }
            }
        }
    }

    #[test]
    fn the_same_kid_on_two_key_types_picks_the_one_for_the_alg() {
        let mut rsa = rfc7638_key();
        rsa["kid"] = json!("shared");
        let set = set(vec![rsa, ec_key("shared", None)]);
        assert!(set.select(Some("shared"), Algorithm::Es256).is_ok());
        assert!(set.select(Some("shared"), Algorithm::Rs256).is_ok());
        assert_eq!(
            set.select(Some("shared"), Algorithm::EdDsa).err(),
            Some(Selection::AlgorithmMismatch)
        );
    }
}
