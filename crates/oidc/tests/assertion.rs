//! Portcullis's own assertions: signed, then verified by this crate's
//! verifier against the signer's published key (served by a `TestIssuer`
//! next to its own keys), with every claim checked; and the key file rules.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_oidc::testing::TestIssuer;
use portcullis_oidc::{Algorithm, AssertionClaims, AssertionSigner, OidcError, Verifier};
use serde_json::{Value, json};

const UPSTREAM: &str = "https://es.example.com";

fn testdata(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata").join(name)
}

fn claims<'a>(groups: &'a [&'a str], roles: &'a [&'a str]) -> AssertionClaims<'a> {
    AssertionClaims {
        subject: "alice@example.com",
        audience: UPSTREAM,
        ttl: Duration::from_secs(120),
        email: Some("alice@example.com"),
        name: Some("Alice Liddell"),
        groups,
        roles,
    }
}

/// A verifier that trusts `signer`: its JWKS is published by a TestIssuer
/// whose issuer string the signer uses.
async fn verifier_for(idp: &TestIssuer, signer: &AssertionSigner) -> Verifier {
    let jwks: Value = serde_json::from_slice(&signer.jwks_json()).expect("JWKS is JSON");
    idp.add_raw_jwk(jwks["keys"][0].clone());
    let mut config = idp.issuer_config();
    config.audiences = vec![UPSTREAM.to_owned()];
    let verifier = Verifier::new(config).expect("valid configuration");
    verifier.refresh().await.expect("keys load");
    verifier
}

fn decode_segment(segment: &str) -> Value {
    // Minimal unpadded base64url decoding, independent of the crate's.
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'-' => 62,
            b'_' => 63,
            _ => panic!("not base64url: {c}"),
        }
    };
    let mut bytes = Vec::new();
    for chunk in segment.as_bytes().chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | value(c) << (18 - 6 * i));
        bytes.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    serde_json::from_slice(&bytes).expect("JSON segment")
}

#[tokio::test]
async fn a_signed_assertion_verifies_with_the_published_key_and_says_everything() {
    let idp = TestIssuer::start().await;
    let signer = AssertionSigner::generate(idp.issuer_str()).expect("key generation");
    let verifier = verifier_for(&idp, &signer).await;

    let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    let token = signer
        .sign(&claims(&["logs-readers", "admins"], &["kibana_user"]))
        .expect("signs");
    let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();

    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(
        decode_segment(parts[0]),
        json!({"alg": "ES256", "typ": "JWT", "kid": signer.kid()})
    );

    let verified = verifier.verify(&token).await.expect("the assertion verifies");
    assert_eq!(verified.algorithm(), Algorithm::Es256);
    assert_eq!(verified.key_id(), Some(signer.kid()));
    let c = verified.claims();
    assert_eq!(c["iss"], json!(idp.issuer_str()));
    assert_eq!(c["sub"], json!("alice@example.com"));
    assert_eq!(c["aud"], json!(UPSTREAM));
    assert_eq!(c["email"], json!("alice@example.com"));
    assert_eq!(c["name"], json!("Alice Liddell"));
    assert_eq!(c["groups"], json!(["logs-readers", "admins"]));
    assert_eq!(c["roles"], json!(["kibana_user"]));
    let iat = c["iat"].as_u64().expect("iat is an integer");
    assert!((before..=after).contains(&iat), "{iat} in {before}..={after}");
    assert_eq!(c["nbf"].as_u64(), Some(iat));
    assert_eq!(c["exp"].as_u64(), Some(iat + 120));
    assert_eq!(verified.expires_at(), UNIX_EPOCH + Duration::from_secs(iat + 120));
    let jti = c["jti"].as_str().expect("jti");
    assert_eq!(jti.len(), 22, "128 random bits");
    let mut names: Vec<&str> = c.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "aud", "email", "exp", "groups", "iat", "iss", "jti", "name", "nbf", "roles", "sub"
        ]
    );

    // Every assertion has its own jti.
    let second = signer.sign(&claims(&[], &[])).expect("signs");
    let second = verifier.verify(&second).await.expect("verifies");
    assert_ne!(second.claim_str("jti"), Some(jti));
}

#[tokio::test]
async fn optional_claims_are_left_out_and_lists_kept_when_empty() {
    let idp = TestIssuer::start().await;
    let signer = AssertionSigner::generate(idp.issuer_str()).expect("key generation");
    let verifier = verifier_for(&idp, &signer).await;
    let token = signer
        .sign(&AssertionClaims {
            subject: "svc-backup",
            audience: UPSTREAM,
            ttl: Duration::from_millis(1500),
            email: None,
            name: None,
            groups: &[],
            roles: &[],
        })
        .expect("signs");
    let verified = verifier.verify(&token).await.expect("verifies");
    let c = verified.claims();
    assert!(!c.contains_key("email") && !c.contains_key("name"));
    assert_eq!((c["groups"].clone(), c["roles"].clone()), (json!([]), json!([])));
    assert_eq!(
        c["exp"].as_u64().unwrap() - c["iat"].as_u64().unwrap(),
        2,
        "ttl rounded up"
    );
}

#[tokio::test]
async fn another_signer_or_audience_does_not_verify() {
    let idp = TestIssuer::start().await;
    let trusted = AssertionSigner::generate(idp.issuer_str()).expect("key generation");
    let verifier = verifier_for(&idp, &trusted).await;
    let stranger = AssertionSigner::generate(idp.issuer_str()).expect("key generation");
    let token = stranger.sign(&claims(&[], &[])).expect("signs");
    assert_eq!(
        verifier.verify(&token).await.expect_err("unknown key").reason(),
        "unknown_key"
    );
    let mut other = claims(&[], &[]);
    other.audience = "https://elsewhere.example.com";
    let token = trusted.sign(&other).expect("signs");
    assert_eq!(
        verifier.verify(&token).await.expect_err("wrong aud").reason(),
        "wrong_audience"
    );
}

#[test]
fn the_jwks_publishes_the_public_key_only() {
    let signer = AssertionSigner::generate("https://portcullis.example.com").expect("key generation");
    let jwks: Value = serde_json::from_slice(&signer.jwks_json()).expect("JSON");
    let keys = jwks["keys"].as_array().expect("keys");
    assert_eq!(keys.len(), 1);
    let key = keys[0].as_object().expect("object");
    let mut names: Vec<&str> = key.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, ["alg", "crv", "kid", "kty", "use", "x", "y"]);
    assert_eq!(
        (&key["kty"], &key["crv"], &key["alg"], &key["use"], &key["kid"]),
        (
            &json!("EC"),
            &json!("P-256"),
            &json!("ES256"),
            &json!("sig"),
            &json!(signer.kid())
        )
    );
    assert_eq!(signer.issuer(), "https://portcullis.example.com");
    let debug = format!("{signer:?}");
    assert!(
        debug.contains(signer.kid()) && !debug.contains(key["x"].as_str().unwrap()),
        "{debug}"
    );
    // A fresh key each time.
    let other = AssertionSigner::generate("https://portcullis.example.com").expect("key generation");
    assert_ne!(other.kid(), signer.kid());
}

#[test]
fn a_pkcs8_key_file_is_read_and_its_kid_is_the_rfc7638_thumbprint() {
    let signer = AssertionSigner::from_pem_file("https://p", &testdata("es256.key.pem")).expect("PKCS#8 P-256");
    // Computed independently (openssl for the point, Python for the
    // thumbprint) when the test key was made.
    assert_eq!(signer.kid(), "mBy0I2XbHFWhGGzZ38X8swLfyHJl4rVwc7QlxfeAHec");
    let jwks: Value = serde_json::from_slice(&signer.jwks_json()).expect("JSON");
    assert_eq!(
        jwks["keys"][0]["x"],
        json!("SNMnwFldo4m4qPSqpZ4P0WwlkSZZgXkUNS8xyDSRTTw")
    );
    assert_eq!(
        jwks["keys"][0]["y"],
        json!("38wg6Y5stFnPYAm4GFq7HHtrIW8_KyIFZ2sC_o6qdE4")
    );
    // The same file gives the same key.
    let again = AssertionSigner::from_pem_file("https://p", &testdata("es256.key.pem")).expect("PKCS#8 P-256");
    assert_eq!(again.kid(), signer.kid());
}

#[test]
fn unusable_key_files_are_refused_with_a_reason() {
    let cases = [
        ("es256-sec1.key.pem", "PKCS#8"),
        ("es384.key.pem", "P-256"),
        ("rsa-1.key.pem", "P-256"),
        ("rsa-1.pub.pem", "no PEM private key"),
        ("README.md", "no PEM private key"),
    ];
    for (file, expected) in cases {
        match AssertionSigner::from_pem_file("https://p", &testdata(file)) {
            Err(error @ OidcError::SigningKey { .. }) => {
                let message = error.to_string();
                assert!(
                    message.contains(expected) && message.contains(file),
                    "{file}: {message}"
                );
            }
            other => panic!("{file}: expected a SigningKey error, got {other:?}"),
        }
    }
    match AssertionSigner::from_pem_file("https://p", &testdata("missing.pem")) {
        Err(error @ OidcError::SigningKeyFile { .. }) => assert!(error.to_string().contains("missing.pem")),
        other => panic!("expected a SigningKeyFile error, got {other:?}"),
    }
}

#[test]
fn a_zero_ttl_is_refused() {
    let signer = AssertionSigner::generate("https://p").expect("key generation");
    let mut c = claims(&[], &[]);
    c.ttl = Duration::ZERO;
    assert!(matches!(signer.sign(&c), Err(OidcError::Sign(_))));
}
