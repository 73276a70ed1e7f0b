//! The verifier against a real (in-process) identity provider on
//! `127.0.0.1`: which tokens pass and why the others fail, the cache, key
//! rotation, an IdP outage, unknown-`kid` refetches under concurrency, and
//! the configuration checks at `Verifier::new`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use portcullis_oidc::testing::{AUDIENCE, Alg, TestIssuer};
use portcullis_oidc::{IssuerConfig, MAX_TOKEN_LEN, OidcError, Verifier, VerifyError};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A verifier whose `run` loop is on a task; stopping is dropping.
struct Running {
    verifier: Verifier,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Drop for Running {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::ops::Deref for Running {
    type Target = Verifier;
    fn deref(&self) -> &Verifier {
        &self.verifier
    }
}

/// Starts `run` for a verifier of `idp` (configuration edited by `edit`)
/// and waits until it holds keys.
async fn start(idp: &TestIssuer, edit: impl FnOnce(&mut IssuerConfig)) -> Running {
    let running = spawn_run(idp, edit);
    wait_for("the first key set", || running.is_ready()).await;
    running
}

fn spawn_run(idp: &TestIssuer, edit: impl FnOnce(&mut IssuerConfig)) -> Running {
    let mut config = idp.issuer_config();
    edit(&mut config);
    let verifier = Verifier::new(config).expect("valid configuration");
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn({
        let verifier = verifier.clone();
        async move {
            verifier
                .run(async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    Running {
        verifier,
        stop: Some(stop),
        task,
    }
}

async fn wait_for(what: &str, condition: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs()
}

fn outcome(result: &Result<Arc<portcullis_oidc::VerifiedToken>, VerifyError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(error) => error.reason(),
    }
}

/// Verifies each `(name, token, expected reason or "ok")` and reports every
/// mismatch at once.
async fn check_all(verifier: &Verifier, cases: Vec<(&str, String, &str)>) {
    let mut wrong = Vec::new();
    for (name, token, expected) in cases {
        let result = verifier.verify(&token).await;
        let got = outcome(&result);
        if got != expected {
            wrong.push(format!("{name}: expected {expected}, got {got} ({:?})", result.err()));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
}

/// The token with its payload replaced by `claims` (signature kept).
fn with_payload(token: &str, claims: &Value) -> String {
    with_payload_bytes(token, claims.to_string().as_bytes())
}

/// The token with one character in the middle of its signature changed.
fn with_flipped_signature(token: &str) -> String {
    let dot = token.rfind('.').expect("three parts");
    let mut bytes = token.as_bytes().to_vec();
    let mid = dot + 1 + (token.len() - dot - 1) / 2;
    bytes[mid] = if bytes[mid] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("ascii")
}

fn b64(bytes: &[u8]) -> String {
    // Unpadded base64url, written out so the tests do not share the crate's
    // encoder.
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn tokens_pass_or_fail_for_the_right_reason() {
    let idp = TestIssuer::start().await;
    let verifier = start(&idp, |_| {}).await;
    let now = now();
    let (rsa_kid, ec_kid, ed_kid) = (idp.kid(Alg::Rs256), idp.kid(Alg::Es256), idp.kid(Alg::EdDsa));
    let good = idp.mint(Alg::Es256, json!({"sub": "alice"}));
    let claims = |extra: Value| {
        let mut claims = json!({"sub": "alice"});
        claims
            .as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        claims
    };

    let cases = vec![
        ("RS256", idp.mint(Alg::Rs256, claims(json!({}))), "ok"),
        ("ES256", idp.mint(Alg::Es256, claims(json!({}))), "ok"),
        ("EdDSA", idp.mint(Alg::EdDsa, claims(json!({}))), "ok"),
        (
            "aud array with ours",
            idp.mint(Alg::Es256, claims(json!({"aud": ["x", AUDIENCE]}))),
            "ok",
        ),
        (
            "exp within leeway",
            idp.mint(Alg::Es256, claims(json!({"exp": now - 5}))),
            "ok",
        ),
        // The algorithm comes from the key, never from the token alone.
        (
            "alg none",
            idp.mint_alg_none(claims(json!({}))),
            "unsupported_algorithm",
        ),
        (
            "HS256 with the RSA public key",
            idp.mint_hs256_with_public_key(claims(json!({}))),
            "unsupported_algorithm",
        ),
        (
            "RS256 header, EC key's kid",
            idp.mint_with_header_signed_by(Alg::Rs256, json!({"alg": "RS256", "kid": ec_kid}), claims(json!({}))),
            "unsupported_algorithm",
        ),
        (
            "ES256 header, RSA key's kid",
            idp.mint_with_header_signed_by(Alg::Es256, json!({"alg": "ES256", "kid": rsa_kid}), claims(json!({}))),
            "unsupported_algorithm",
        ),
        (
            "EdDSA header, EC key's kid",
            idp.mint_with_header_signed_by(Alg::EdDsa, json!({"alg": "EdDSA", "kid": ec_kid}), claims(json!({}))),
            "unsupported_algorithm",
        ),
        (
            "PS256 with an RS256-only key",
            idp.mint_with_header_signed_by(Alg::Rs256, json!({"alg": "PS256", "kid": rsa_kid}), claims(json!({}))),
            "unsupported_algorithm",
        ),
        (
            "ES512",
            idp.mint_with_header_signed_by(Alg::Es256, json!({"alg": "ES512", "kid": ec_kid}), claims(json!({}))),
            "unsupported_algorithm",
        ),
        (
            "RS256 header, EC key's kid, signed by the EC key",
            idp.mint_with_header(json!({"alg": "RS256", "kid": ec_kid}), claims(json!({}))),
            "unsupported_algorithm",
        ),
        (
            "header chosen by the test, key by its kid",
            idp.mint_with_header(
                json!({"alg": "EdDSA", "kid": ed_kid, "typ": "at+jwt"}),
                claims(json!({})),
            ),
            "ok",
        ),
        // Keys.
        (
            "unknown kid",
            idp.mint_unknown_kid(Alg::Es256, claims(json!({}))),
            "unknown_key",
        ),
        (
            "no kid, several keys",
            idp.mint_with_header_signed_by(Alg::EdDsa, json!({"alg": "EdDSA"}), claims(json!({}))),
            "unknown_key",
        ),
        (
            "another key's kid",
            idp.mint_with_header_signed_by(Alg::Es256, json!({"alg": "EdDSA", "kid": ed_kid}), claims(json!({}))),
            "bad_signature",
        ),
        // Time.
        (
            "expired",
            idp.mint(Alg::Es256, claims(json!({"exp": now - 120}))),
            "expired",
        ),
        (
            "nbf in the future",
            idp.mint(Alg::Es256, claims(json!({"nbf": now + 120}))),
            "not_yet_valid",
        ),
        (
            "iat in the future",
            idp.mint(Alg::Es256, claims(json!({"iat": now + 120}))),
            "not_yet_valid",
        ),
        (
            "no exp",
            idp.mint(Alg::Es256, claims(json!({"exp": null}))),
            "malformed",
        ),
        (
            "exp as a string",
            idp.mint(Alg::Es256, claims(json!({"exp": (now + 60).to_string()}))),
            "malformed",
        ),
        (
            "nbf as a string",
            idp.mint(Alg::Es256, claims(json!({"nbf": "99999999999"}))),
            "malformed",
        ),
        // Issuer and audience.
        (
            "wrong aud",
            idp.mint(Alg::Es256, claims(json!({"aud": "someone-else"}))),
            "wrong_audience",
        ),
        (
            "no aud",
            idp.mint(Alg::Es256, claims(json!({"aud": null}))),
            "wrong_audience",
        ),
        (
            "wrong iss",
            idp.mint(Alg::Es256, claims(json!({"iss": "https://evil.example"}))),
            "wrong_issuer",
        ),
        (
            "iss with a trailing slash",
            idp.mint(Alg::Es256, claims(json!({"iss": format!("{}/", idp.issuer_str())}))),
            "wrong_issuer",
        ),
        // Tampering and garbage.
        (
            "tampered payload",
            with_payload(
                &good,
                &json!({"sub": "mallory", "iss": idp.issuer_str(), "aud": AUDIENCE, "exp": now + 300}),
            ),
            "bad_signature",
        ),
        ("tampered signature", with_flipped_signature(&good), "bad_signature"),
        (
            "signature cut off",
            good[..good.rfind('.').unwrap() + 1].to_owned(),
            "bad_signature",
        ),
        ("garbage", "garbage".to_owned(), "malformed"),
        ("empty", String::new(), "malformed"),
        ("two parts", "eyJhbGciOiJFUzI1NiJ9.e30".to_owned(), "malformed"),
        ("five parts (JWE)", "a.b.c.d.e".to_owned(), "malformed"),
        ("not base64url", format!("{good}!"), "malformed"),
        ("oversized", format!("{good}{}", "A".repeat(MAX_TOKEN_LEN)), "malformed"),
        (
            "payload not JSON",
            idp.mint_raw(Alg::Es256, json!({"alg": "ES256", "kid": ec_kid}), b"not json"),
            "malformed",
        ),
        (
            "payload an array",
            idp.mint_raw(Alg::Es256, json!({"alg": "ES256", "kid": ec_kid}), b"[1]"),
            "malformed",
        ),
        (
            "payload not JSON, unsigned",
            with_payload_bytes(&good, b"not json"),
            "bad_signature",
        ),
    ];
    check_all(&verifier, cases).await;
}

fn with_payload_bytes(token: &str, payload: &[u8]) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    format!("{}.{}.{}", parts[0], b64(payload), parts[2])
}

#[tokio::test]
async fn a_cache_hit_needs_no_signature_check_and_no_fetch() {
    let idp = TestIssuer::start().await;
    let verifier = start(&idp, |_| {}).await;
    for alg in Alg::ALL {
        let token = idp.mint(alg, json!({"sub": "alice", "email": "alice@example.com"}));
        let (checks, fetches) = (verifier.stats().signature_checks, idp.jwks_fetches());
        let first = verifier.verify(&token).await.expect("valid");
        assert_eq!(
            verifier.stats().signature_checks,
            checks + 1,
            "{alg:?}: first verify checks the signature"
        );
        for _ in 0..3 {
            let again = verifier.verify(&token).await.expect("still valid");
            assert!(Arc::ptr_eq(&first, &again), "{alg:?}: answered from the cache");
        }
        assert_eq!(
            verifier.stats().signature_checks,
            checks + 1,
            "{alg:?}: no check on a hit"
        );
        assert_eq!(idp.jwks_fetches(), fetches, "{alg:?}: no fetch on a hit");
        assert_eq!(first.subject(), Some("alice"));
        assert_eq!(first.claim_str("email"), Some("alice@example.com"));
        assert_eq!(first.algorithm().name(), alg.name());
        assert_eq!(first.key_id(), Some(idp.kid(alg).as_str()));
    }
    assert_eq!(verifier.stats().cache_entries, 3);

    // A refused token is not cached: it is checked again each time.
    let bad = with_flipped_signature(&idp.mint(Alg::Es256, json!({})));
    let checks = verifier.stats().signature_checks;
    for _ in 0..2 {
        assert!(matches!(verifier.verify(&bad).await, Err(VerifyError::BadSignature)));
    }
    assert_eq!(verifier.stats().signature_checks, checks + 2);
    assert_eq!(verifier.stats().cache_entries, 3);

    // verify_uncached always checks; clear_cache empties the cache.
    let token = idp.mint(Alg::EdDsa, json!({"sub": "bob"}));
    verifier.verify(&token).await.expect("valid");
    let checks = verifier.stats().signature_checks;
    verifier.verify_uncached(&token).await.expect("valid");
    assert_eq!(verifier.stats().signature_checks, checks + 1);
    verifier.clear_cache();
    assert_eq!(verifier.stats().cache_entries, 0);
    verifier.verify(&token).await.expect("valid");
    assert_eq!(verifier.stats().signature_checks, checks + 2);
}

#[tokio::test]
async fn keys_are_unavailable_until_the_first_fetch_and_run_retries_until_then() {
    let idp = TestIssuer::start().await;
    idp.set_down(true);
    let token = idp.mint(Alg::Es256, json!({"sub": "alice"}));
    let running = spawn_run(&idp, |_| {});
    wait_for("a failed discovery", || running.stats().discovery_failed >= 1).await;
    assert!(!running.is_ready());
    assert!(matches!(
        running.verify(&token).await,
        Err(VerifyError::KeysUnavailable)
    ));
    assert_eq!(VerifyError::KeysUnavailable.reason(), "keys_unavailable");

    idp.set_down(false);
    wait_for("the key set after the IdP came back", || running.is_ready()).await;
    running.verify(&token).await.expect("valid once keys are held");
    let stats = running.stats();
    assert_eq!((stats.keys, stats.jwks_fetches_ok), (3, 1));
    assert!(stats.keys_fetched_at.is_some());
}

#[tokio::test]
async fn run_returns_when_shutdown_resolves() {
    let idp = TestIssuer::start().await;
    let mut running = start(&idp, |_| {}).await;
    running
        .stop
        .take()
        .expect("not stopped yet")
        .send(())
        .expect("run is listening");
    tokio::time::timeout(Duration::from_secs(5), &mut running.task)
        .await
        .expect("run returned")
        .expect("run did not panic");
}

#[tokio::test]
async fn rotation_while_running_costs_one_refetch() {
    let idp = TestIssuer::start().await;
    let verifier = start(&idp, |_| {}).await;
    let old = idp.mint(Alg::Es256, json!({"sub": "alice"}));
    verifier.verify(&old).await.expect("valid before rotation");
    let fetches = idp.jwks_fetches();

    idp.rotate();
    let new = idp.mint(Alg::Es256, json!({"sub": "alice"}));
    verifier.verify(&new).await.expect("new kid accepted after a refetch");
    assert_eq!(idp.jwks_fetches(), fetches + 1);
    assert_eq!(verifier.stats().unknown_kid_refetches, 1);
    // The other new keys came with the same fetch.
    for alg in [Alg::Rs256, Alg::EdDsa] {
        verifier.verify(&idp.mint(alg, json!({}))).await.expect("valid");
    }
    assert_eq!(idp.jwks_fetches(), fetches + 1);

    // The issuer withdrew the old key, so its tokens left the cache and now
    // fail (another refetch is rate-limited).
    assert!(verifier.stats().withdrawn_key_evictions >= 1);
    let result = verifier.verify(&old).await;
    assert_eq!(outcome(&result), "unknown_key", "{result:?}");
    assert_eq!(idp.jwks_fetches(), fetches + 1);
}

#[tokio::test]
async fn an_idp_outage_keeps_the_keys_in_force() {
    let idp = TestIssuer::start().await;
    let verifier = start(&idp, |_| {}).await;
    idp.set_down(true);
    let error = verifier.refresh().await.expect_err("the IdP is down");
    assert!(error.to_string().contains("503"), "{error}");
    assert!(verifier.is_ready());
    for alg in Alg::ALL {
        let fresh = idp.mint(alg, json!({"sub": "alice"}));
        verifier.verify(&fresh).await.expect("held keys still verify");
    }
    // An unknown kid during the outage: one failed refetch, then unknown_key
    // (not keys_unavailable: the keys held are fine).
    let unknown = idp.mint_unknown_kid(Alg::Es256, json!({}));
    assert_eq!(outcome(&verifier.verify(&unknown).await), "unknown_key");
    let stats = verifier.stats();
    assert!(
        stats.discovery_failed >= 1 && stats.jwks_fetches_failed >= 1,
        "{stats:?}"
    );
    assert_eq!(stats.keys, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kid_refetches_are_single_flight_and_rate_limited() {
    let idp = TestIssuer::start().await;
    let verifier = start(&idp, |c| c.unknown_kid_min_interval = Duration::from_secs(3600)).await;
    idp.set_delay(Duration::from_millis(200));

    // 200 concurrent requests with a kid nobody knows: one fetch.
    let fetches = idp.jwks_fetches();
    let results = concurrently(
        &verifier,
        (0..200).map(|i| idp.mint_unknown_kid(Alg::Es256, json!({"n": i}))),
    )
    .await;
    assert!(results.iter().all(|r| *r == "unknown_key"), "{results:?}");
    assert_eq!(idp.jwks_fetches(), fetches + 1);
    assert_eq!(verifier.stats().unknown_kid_refetches, 1);

    // Within the interval, even a real new kid does not refetch.
    idp.rotate();
    let results = concurrently(&verifier, (0..200).map(|i| idp.mint(Alg::Es256, json!({"n": i})))).await;
    assert!(results.iter().all(|r| *r == "unknown_key"), "{results:?}");
    assert_eq!(idp.jwks_fetches(), fetches + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_with_a_new_kid_share_one_fetch() {
    let idp = TestIssuer::start().await;
    let verifier = start(&idp, |_| {}).await;
    idp.set_delay(Duration::from_millis(200));
    idp.rotate();
    let fetches = idp.jwks_fetches();
    let results = concurrently(&verifier, (0..200).map(|i| idp.mint(Alg::Es256, json!({"n": i})))).await;
    assert!(results.iter().all(|r| *r == "ok"), "{results:?}");
    assert_eq!(idp.jwks_fetches(), fetches + 1);
    assert_eq!(verifier.stats().cache_entries, 200);
}

/// Verifies every token at once, each on its own task.
async fn concurrently(verifier: &Verifier, tokens: impl Iterator<Item = String>) -> Vec<&'static str> {
    let tasks: Vec<_> = tokens
        .map(|token| {
            let verifier = verifier.clone();
            tokio::spawn(async move { outcome(&verifier.verify(&token).await) })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("verify task"));
    }
    results
}

#[tokio::test]
async fn discovery_must_announce_the_configured_issuer() {
    let idp = TestIssuer::start().await;
    idp.set_announced_issuer(Some("https://evil.example"));
    let verifier = Verifier::new(idp.issuer_config()).expect("valid configuration");
    match verifier.refresh().await {
        Err(OidcError::IssuerMismatch { announced, .. }) => assert_eq!(announced, "https://evil.example"),
        other => panic!("expected IssuerMismatch, got {other:?}"),
    }
    assert!(!verifier.is_ready());
    assert_eq!(idp.jwks_fetches(), 0, "no keys from an issuer that is not ours");

    // The announced string is what tokens must carry. Url cannot keep
    // "http://host:port" apart from "http://host:port/", so an issuer
    // announcing the latter is accepted, and then its tokens need the slash.
    let with_slash = format!("{}/", idp.issuer_str());
    idp.set_announced_issuer(Some(&with_slash));
    verifier.refresh().await.expect("same URL");
    let token = idp.mint(Alg::Es256, json!({}));
    assert_eq!(outcome(&verifier.verify(&token).await), "wrong_issuer");
    let token = idp.mint(Alg::Es256, json!({"iss": with_slash}));
    assert_eq!(outcome(&verifier.verify(&token).await), "ok");
}

#[tokio::test]
async fn only_https_or_loopback_issuers_are_accepted() {
    let cases = [
        ("http://idp.example.com", false),
        ("http://192.168.1.10:8080", false),
        ("http://localhost.example.com", false),
        ("ftp://idp.example.com", false),
        ("https://idp.example.com/realms/x", true),
        ("http://127.0.0.1:1", true),
        ("http://[::1]:1", true),
        ("http://localhost:1", true),
    ];
    for (issuer, ok) in cases {
        let config = IssuerConfig::new(issuer.parse().expect("url"), vec![AUDIENCE.to_owned()]);
        let result = Verifier::new(config);
        assert_eq!(result.is_ok(), ok, "{issuer}: {:?}", result.err());
        if let Err(error) = result {
            assert!(matches!(error, OidcError::InvalidUrl { .. }), "{error:?}");
        }
    }
}

#[tokio::test]
async fn unusable_keys_in_the_jwks_are_skipped() {
    let idp = TestIssuer::start().await;
    idp.add_raw_jwk(json!({"kty": "RSA", "use": "enc", "kid": "enc", "n": "AQAB", "e": "AQAB"}));
    idp.add_raw_jwk(json!({"kty": "EC", "crv": "P-256", "kid": "broken", "x": "!!", "y": "!!"}));
    idp.add_raw_jwk(json!({"kty": "oct", "kid": "secret", "k": "c2VjcmV0"}));
    idp.add_raw_jwk(json!("not even an object"));
    let verifier = start(&idp, |_| {}).await;
    assert_eq!(verifier.stats().keys, 3);
    for alg in Alg::ALL {
        verifier.verify(&idp.mint(alg, json!({}))).await.expect("valid");
    }
}

#[tokio::test]
async fn a_slow_idp_times_out() {
    let idp = TestIssuer::start().await;
    idp.set_delay(Duration::from_secs(5));
    let mut config = idp.issuer_config();
    config.http_timeout = Duration::from_millis(200);
    let verifier = Verifier::new(config).expect("valid configuration");
    let started = std::time::Instant::now();
    let error = verifier.refresh().await.expect_err("too slow");
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(matches!(error, OidcError::Discovery { .. }), "{error:?}");
    assert!(error.to_string().contains("within"), "{error}");
}

#[tokio::test]
async fn an_oversized_jwks_is_refused() {
    let idp = TestIssuer::start().await;
    idp.add_raw_jwk(json!({"kty": "RSA", "kid": "huge", "n": "A".repeat(1024 * 1024), "e": "AQAB"}));
    let verifier = Verifier::new(idp.issuer_config()).expect("valid configuration");
    let error = verifier.refresh().await.expect_err("too large");
    assert!(matches!(error, OidcError::Jwks { .. }), "{error:?}");
    assert!(error.to_string().contains("larger than"), "{error}");
    assert!(!verifier.is_ready());
}

#[tokio::test]
async fn the_ca_file_is_read_at_construction() {
    let idp = TestIssuer::start().await;
    let mut config = idp.issuer_config();
    config.ca_file = Some("/nonexistent/ca.pem".into());
    assert!(matches!(Verifier::new(config), Err(OidcError::CaFile { .. })));

    let mut config = idp.issuer_config();
    config.ca_file = Some(concat!(env!("CARGO_MANIFEST_DIR"), "/testdata/rsa-1.pub.pem").into());
    let error = Verifier::new(config).expect_err("no certificate in a public key file");
    assert!(matches!(error, OidcError::CaFileEmpty { .. }), "{error:?}");
    assert!(error.to_string().contains("rsa-1.pub.pem"), "{error}");
}

/// `verify` is what the proxy awaits per request: make sure the future is
/// `Send` (it runs on a multi-threaded runtime).
#[test]
fn verify_future_is_send() {
    fn assert_send<F: Future + Send>(_: F) {}
    let verifier = Verifier::new(IssuerConfig::new(
        "https://idp.example.com".parse().expect("url"),
        vec![AUDIENCE.to_owned()],
    ))
    .expect("valid configuration");
    assert_send(verifier.verify("token"));
    assert_send(verifier.run(std::future::pending()));
}
