//! Proves the end-to-end harness itself (`portcullis_tests::e2e`), without
//! Portcullis in the path: a real `oidc-provider` and a real headless
//! chromium run an authorization code flow with PKCE against a local
//! redirect target, the code is exchanged from Rust, the refresh token works
//! until the OP's control endpoint revokes it, RP-initiated logout lands on
//! the post-logout URI, and the driver's WebSocket and error handling work.
//!
//! Skipped (with a `skipping:` line) when the harness is not installed,
//! unless `PORTCULLIS_E2E=require`; `tests/e2e/setup.sh` installs it.

use std::time::Duration;

use http::StatusCode;
use portcullis_tests::e2e::{self, Browser, Op};
use portcullis_tests::encode;
use portcullis_tests::upstream::Upstream;
use serde_json::json;

const CLIENT_ID: &str = "portcullis-e2e";
const CLIENT_SECRET: &str = "e2e-client-secret";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_code_exchange_refresh_and_logout_through_a_real_browser() {
    if !e2e::require_e2e() {
        return;
    }
    // The redirect target: answers anything with 200 and a JSON echo of the
    // request (its `uri` holds the path and query), and `/ws` is an echo
    // WebSocket.
    let app = Upstream::start("rp").await;
    let redirect_uri = format!("{}/callback", app.url());
    let post_logout_uri = format!("{}/signed-out", app.url());

    let mut op = Op::start(json!({
        "clients": [{
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "redirect_uris": [redirect_uri],
            "post_logout_redirect_uris": [post_logout_uri],
            "token_endpoint_auth_method": "client_secret_post",
        }],
        "accounts": [{
            "username": "alice",
            "password": "correct horse",
            "email": "alice@example.test",
            "name": "Alice Example",
        }],
        "id_token_ttl": 300,
        "access_token_ttl": 300,
        "refresh_token_ttl": 3600,
    }))
    .await;
    assert!(op.issuer().starts_with("http://127.0.0.1:"), "issuer {}", op.issuer());
    let discovery = op.discovery().await;
    assert_eq!(discovery["issuer"], json!(op.issuer()));
    let endpoint = |name: &str| {
        discovery[name]
            .as_str()
            .unwrap_or_else(|| panic!("no {name}"))
            .to_owned()
    };
    let (authorization, token, end_session) = (
        endpoint("authorization_endpoint"),
        endpoint("token_endpoint"),
        endpoint("end_session_endpoint"),
    );

    let verifier = e2e::pkce_verifier();
    let state = "state-from-the-rp";
    let nonce = "nonce-from-the-rp";
    let auth_url = format!(
        "{authorization}?response_type=code&client_id={CLIENT_ID}&redirect_uri={}&scope={}&state={state}&nonce={nonce}\
         &code_challenge={}&code_challenge_method=S256",
        encode(&redirect_uri),
        encode("openid email profile offline_access"),
        e2e::pkce_s256(&verifier),
    );

    let mut browser = Browser::launch().await;
    eprintln!("chromium {}", browser.version());

    // The OP's login page.
    let nav = browser.goto(&auth_url).await.expect("open the authorization endpoint");
    assert_eq!(nav.status, Some(200), "{nav:?}");
    assert!(nav.url.starts_with(&format!("{}/interaction/", op.issuer())), "{nav:?}");

    // A wrong password is refused, on the same form.
    browser.fill("#username", "alice").await.expect("fill username");
    browser
        .fill("#password", "wrong password")
        .await
        .expect("fill password");
    let nav = browser.click_nav("#sign-in").await.expect("submit a wrong password");
    assert_eq!(nav.status, Some(401), "{nav:?}");
    let error = browser.text_of("#error").await.expect("an error on the page");
    assert!(error.contains("Invalid username or password"), "{error:?}");

    // The right one goes through consent (automatic) to the redirect URI.
    browser
        .fill("#password", "correct horse")
        .await
        .expect("fill password again");
    let nav = browser.click_nav("#sign-in").await.expect("submit the right password");
    assert_eq!(nav.status, Some(200), "{nav:?}");
    assert!(
        nav.url.starts_with(&format!("{redirect_uri}?")),
        "landed on {}",
        nav.url
    );
    assert_eq!(e2e::query_param(&nav.url, "state").as_deref(), Some(state));
    assert_eq!(e2e::query_param(&nav.url, "iss").as_deref(), Some(op.issuer()));
    let code = e2e::query_param(&nav.url, "code").expect("a code on the redirect");
    let echoed = browser.text().await.expect("the redirect target's page");
    assert!(echoed.contains("/callback?code="), "the redirect target saw: {echoed}");
    let session_cookies = browser.cookies(Some(op.issuer())).await.expect("cookies");
    assert!(
        session_cookies.iter().any(|c| c.name == "_session" && c.http_only),
        "{session_cookies:?}"
    );

    // The code exchange, from Rust, with the verifier and client secret.
    let (status, tokens) = e2e::post_form(
        &token,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &redirect_uri),
            ("code_verifier", &verifier),
            ("client_id", CLIENT_ID),
            ("client_secret", CLIENT_SECRET),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let id_token = tokens["id_token"].as_str().expect("an id_token").to_owned();
    let refresh_token = tokens["refresh_token"].as_str().expect("a refresh_token").to_owned();
    assert!(tokens["access_token"].is_string(), "{tokens}");
    let claims = e2e::jwt_claims(&id_token).expect("ID token claims");
    assert_eq!(claims["iss"], json!(op.issuer()));
    assert_eq!(claims["aud"], json!(CLIENT_ID));
    assert_eq!(claims["sub"], json!("alice"));
    assert_eq!(claims["nonce"], json!(nonce));
    assert_eq!(claims["email"], json!("alice@example.test"));
    assert_eq!(claims["name"], json!("Alice Example"));
    let lifetime = claims["exp"].as_i64().unwrap_or(0) - claims["iat"].as_i64().unwrap_or(0);
    assert_eq!(lifetime, 300, "id_token_ttl is honoured");

    // The refresh token works (and rotates) ...
    let refresh = |rt: String| {
        let token = token.clone();
        async move {
            e2e::post_form(
                &token,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", &rt),
                    ("client_id", CLIENT_ID),
                    ("client_secret", CLIENT_SECRET),
                ],
            )
            .await
        }
    };
    let (status, refreshed) = refresh(refresh_token.clone()).await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert!(refreshed["id_token"].is_string(), "{refreshed}");
    let rotated = refreshed["refresh_token"]
        .as_str()
        .expect("a rotated refresh_token")
        .to_owned();
    assert_ne!(rotated, refresh_token);
    // ... until the OP revokes the account's grants.
    let revoked = op
        .control("revoke", Some(json!({ "username": "alice" })))
        .await
        .expect("revoke");
    assert_eq!(revoked["grants"], json!(1), "{revoked}");
    let (status, refused) = refresh(rotated).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{refused}");
    assert_eq!(refused["error"], json!("invalid_grant"));

    // RP-initiated logout: confirm on the OP's page, land on the post-logout URI.
    let logout_url = format!(
        "{end_session}?id_token_hint={id_token}&post_logout_redirect_uri={}&state=bye",
        encode(&post_logout_uri)
    );
    let nav = browser.goto(&logout_url).await.expect("open the end-session endpoint");
    assert_eq!(nav.status, Some(200), "{nav:?}");
    let nav = browser.click_nav("#logout-yes").await.expect("confirm the logout");
    assert_eq!(nav.status, Some(200), "{nav:?}");
    assert!(
        nav.url.starts_with(&format!("{post_logout_uri}?")),
        "landed on {}",
        nav.url
    );
    assert_eq!(e2e::query_param(&nav.url, "state").as_deref(), Some("bye"));

    // Signed out at the OP: the authorization endpoint asks for a password again.
    let nav = browser
        .goto(&auth_url)
        .await
        .expect("authorization endpoint after logout");
    assert!(nav.url.starts_with(&format!("{}/interaction/", op.issuer())), "{nav:?}");
    browser.text_of("#sign-in").await.expect("the login form again");

    // The driver's WebSocket support, against the upstream's echo socket.
    let ws_url = format!("{}/ws", app.url().replacen("http://", "ws://", 1));
    let opened = browser.ws_open("echo", &ws_url).await.expect("open a WebSocket");
    assert!(opened.is_open(), "{opened:?}");
    browser.ws_send("echo", "hello through chromium").await.expect("send");
    let state = browser
        .ws_wait("echo", Duration::from_secs(5), |s| !s.messages().is_empty())
        .await
        .expect("an echo");
    assert_eq!(state.messages(), ["hello through chromium"]);
    let evaluated = browser
        .evaluate("return { sum: 20 + 22, ws: Object.keys(window.__ws) };")
        .await
        .expect("evaluate");
    assert_eq!(evaluated, json!({ "sum": 42, "ws": ["echo"] }));

    // A failed command is an error, quickly, and the driver carries on.
    let missing = browser
        .command(json!({ "op": "click", "selector": "#no-such-element", "timeout_ms": 300 }))
        .await
        .expect_err("clicking nothing fails");
    assert!(missing.contains("click"), "{missing}");
    assert!(browser.command(json!({ "op": "no_such_op" })).await.is_err());
    browser.new_context().await.expect("a fresh context");
    assert!(browser.cookies(None).await.expect("cookies").is_empty());
    let nav = browser
        .goto(&format!("{}/after", app.url()))
        .await
        .expect("still driving");
    assert_eq!(nav.status, Some(200));

    browser.close().await.expect("close the browser");
    op.stop().await;
}

#[tokio::test]
async fn a_dead_driver_is_an_error_not_a_hang() {
    if !e2e::require_e2e() {
        return;
    }
    let mut browser = Browser::launch().await;
    browser.command(json!({ "op": "close" })).await.expect("close");
    let started = std::time::Instant::now();
    let err = browser.url().await.expect_err("the driver is gone");
    assert!(err.contains("browser driver"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    let again = browser.goto("http://127.0.0.1:9/").await.expect_err("still gone");
    assert_eq!(again, err);
}
