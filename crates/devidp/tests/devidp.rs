//! The development OpenID Provider over real HTTP on 127.0.0.1: discovery,
//! the code flow with PKCE, the token endpoint's refusals, refresh
//! rotation, SSO session and logout, userinfo, and malformed input.

mod support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use http::{Method, StatusCode};
use portcullis_devidp::{BANNER, DevIdp, DevIdpConfig, DevIdpError, SESSION_COOKIE};
use sha2::{Digest, Sha256};
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[tokio::test]
async fn discovery_describes_the_bound_port() {
    let idp = start().await;
    let port = idp.local_addr().port();
    assert_ne!(port, 0);
    let issuer = format!("http://127.0.0.1:{port}");
    assert_eq!(idp.issuer_str(), issuer);
    assert_eq!(idp.issuer().as_str(), format!("{issuer}/"));

    let http = Http::default();
    let reply = http.get(&format!("{issuer}/.well-known/openid-configuration")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    let d = reply.json();
    assert_eq!(d["issuer"], issuer);
    for (field, path) in [
        ("authorization_endpoint", "/authorize"),
        ("token_endpoint", "/token"),
        ("userinfo_endpoint", "/userinfo"),
        ("jwks_uri", "/jwks.json"),
        ("end_session_endpoint", "/logout"),
    ] {
        assert_eq!(d[field], format!("{issuer}{path}"), "{field}");
    }
    let list = |f: &str| -> Vec<String> {
        d[f].as_array()
            .unwrap_or_else(|| panic!("{f}"))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(list("response_types_supported"), ["code"]);
    assert_eq!(list("subject_types_supported"), ["public"]);
    assert_eq!(list("id_token_signing_alg_values_supported"), ["ES256"]);
    assert_eq!(list("code_challenge_methods_supported"), ["S256"]);
    assert_eq!(list("grant_types_supported"), ["authorization_code", "refresh_token"]);
    for scope in ["openid", "email", "profile", "offline_access"] {
        assert!(list("scopes_supported").contains(&scope.to_owned()), "{scope}");
    }
    for method in ["client_secret_basic", "client_secret_post", "none"] {
        assert!(
            list("token_endpoint_auth_methods_supported").contains(&method.to_owned()),
            "{method}"
        );
    }
    for claim in ["sub", "email", "name", "preferred_username", "nonce", "sid"] {
        assert!(list("claims_supported").contains(&claim.to_owned()), "{claim}");
    }

    // Every discovered URL is served by this listener.
    let jwks = http.get(d["jwks_uri"].as_str().unwrap()).await;
    assert_eq!(jwks.status, StatusCode::OK);
    let keys = jwks.json()["keys"].as_array().unwrap().clone();
    assert_eq!(keys.len(), 1);
    assert_eq!(keys[0]["alg"], "ES256");
    assert_eq!(keys[0]["use"], "sig");
    assert!(keys[0]["kid"].as_str().is_some_and(|k| !k.is_empty()));
    assert!(keys[0].get("d").is_none(), "no private key material");
    idp.shutdown().await;
}

#[tokio::test]
async fn refuses_non_loopback_addresses() {
    for addr in ["0.0.0.0:0", "10.0.0.1:0", "[::]:0", "192.168.1.1:8080"] {
        let config = DevIdpConfig {
            addr: addr.parse().unwrap(),
            ..config()
        };
        match DevIdp::bind(config).await {
            Err(e @ DevIdpError::NotLoopback { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("development only"), "{msg}");
                assert_eq!(msg, msg.to_lowercase(), "lowercase message");
            }
            other => panic!("{addr}: expected NotLoopback, got {other:?}"),
        }
    }
    // Loopback, including IPv6 when the host has it, is fine.
    let v4 = DevIdp::bind(DevIdpConfig {
        addr: "127.0.0.1:0".parse().unwrap(),
        ..config()
    })
    .await;
    assert!(v4.is_ok());
    if let Ok(v6) = DevIdp::bind(DevIdpConfig {
        addr: "[::1]:0".parse().unwrap(),
        ..config()
    })
    .await
    {
        assert!(v6.issuer_str().starts_with("http://[::1]:"), "{}", v6.issuer_str());
    }
}

#[tokio::test]
async fn invalid_configuration_is_refused() {
    let mut config = config();
    config.clients.push(config.clients[0].clone());
    assert!(matches!(DevIdp::bind(config).await, Err(DevIdpError::InvalidConfig(_))));
}

#[tokio::test]
async fn code_flow_with_pkce_public_client() {
    let idp = start().await;
    let mut browser = Browser::default();
    let pkce = pkce();

    // The form.
    let page = browser
        .get(&spa_authorize(&idp, &pkce, "state-1", "nonce-1", &[]))
        .await;
    assert!(is_login_form(&page), "{page:?}");
    assert!(page.body.contains(BANNER));
    assert!(page.body.contains(r#"<input id="username" name="username""#));
    assert!(
        page.body
            .contains(r#"<input id="password" name="password" type="password""#)
    );
    assert!(page.body.contains(r#"<button id="sign-in" type="submit">"#));
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(page.header("x-frame-options").is_some());

    // Credentials: 302 back with code, state and iss, and the SSO cookie.
    let reply = submit_login(&mut browser, &idp, &page, "alice", "alice").await;
    let location = reply.location();
    assert_eq!(location.origin().ascii_serialization(), "http://127.0.0.1:9");
    assert_eq!(location.path(), "/spa/callback");
    let q = query(&location);
    assert_eq!(q["from"], "devidp", "the redirect uri's own query is kept");
    assert_eq!(q["state"], "state-1");
    assert_eq!(q["iss"], idp.issuer_str());
    assert!(!q.contains_key("error"));
    let cookie = reply.header("set-cookie").expect("session cookie");
    assert!(
        cookie.starts_with(&format!("{SESSION_COOKIE}=")) && cookie.contains("HttpOnly"),
        "{cookie}"
    );

    // Token exchange.
    let reply = spa_redeem(&browser.http, &idp, &q["code"], &pkce.verifier).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let tokens = reply.json();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 300);
    assert!(
        tokens["refresh_token"].as_str().is_some(),
        "offline_access was requested"
    );
    assert_eq!(tokens["scope"], "openid email profile offline_access");

    // The ID token, checked independently against the JWKS.
    let (header, claims) = verify_jwt(&browser.http, &idp, tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(header["typ"], "JWT");
    assert_eq!(claims["iss"], idp.issuer_str());
    assert_eq!(claims["aud"], SPA);
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["nonce"], "nonce-1");
    assert_eq!(claims["email"], "alice@example.com");
    assert_eq!(claims["email_verified"], true);
    assert_eq!(claims["name"], "Alice Example");
    assert_eq!(claims["preferred_username"], "alice");
    assert!(claims["sid"].as_str().is_some_and(|s| !s.is_empty()));
    let (iat, exp, auth_time) = (
        claims["iat"].as_u64().unwrap(),
        claims["exp"].as_u64().unwrap(),
        claims["auth_time"].as_u64().unwrap(),
    );
    assert!(iat.abs_diff(now()) <= 5 && exp == iat + 300 && auth_time <= iat);
    let access_token = tokens["access_token"].as_str().unwrap();
    let digest = Sha256::digest(access_token.as_bytes());
    assert_eq!(claims["at_hash"], URL_SAFE_NO_PAD.encode(&digest[..16]));

    // The access token is a JWT from the same key.
    let (header, at) = verify_jwt(&browser.http, &idp, access_token).await;
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(at["iss"], idp.issuer_str());
    assert_eq!(at["sub"], "alice");
    assert_eq!(at["client_id"], SPA);

    let stats = idp.stats();
    assert_eq!(
        (stats.codes_issued, stats.codes_redeemed, stats.password_logins),
        (1, 1, 1)
    );
    assert_eq!(stats.token_requests_refused, 0);
    idp.shutdown().await;
}

#[tokio::test]
async fn confidential_client_authentication() {
    let idp = start().await;
    let mut browser = Browser::default();
    let token_url = format!("{}/token", idp.issuer_str());
    let code = async |browser: &mut Browser, scope: &str| {
        let url = authorize_url(
            &idp,
            &[
                ("response_type", "code"),
                ("client_id", APP),
                ("redirect_uri", APP_REDIRECT),
                ("scope", scope),
            ],
        );
        let page = browser.get(&url).await;
        let reply = if is_login_form(&page) {
            submit_login(browser, &idp, &page, "bob", "bob").await
        } else {
            page
        };
        query(&reply.location())["code"].clone()
    };
    let redeem = |code: &str| {
        form(&[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", APP_REDIRECT),
        ])
    };
    let basic = |secret: &str| format!("Basic {}", STANDARD.encode(format!("{APP}:{secret}")));

    // client_secret_basic, without offline_access: no refresh token.
    let c = code(&mut browser, "openid email").await;
    let reply = browser
        .http
        .post_form(&token_url, &[("authorization", &basic(APP_SECRET))], &redeem(&c))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let tokens = reply.json();
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    let (_, claims) = verify_jwt(&browser.http, &idp, tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["aud"], APP);
    assert_eq!(claims["sub"], "bob");
    assert!(claims.get("nonce").is_none());

    // client_secret_post.
    let c = code(&mut browser, "openid offline_access").await;
    let body = format!(
        "{}&{}",
        redeem(&c),
        form(&[("client_id", APP), ("client_secret", APP_SECRET)])
    );
    let reply = browser.http.post_form(&token_url, &[], &body).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert!(reply.json()["refresh_token"].is_string());

    // Wrong secret, missing secret, unknown client: 401 invalid_client.
    let c = code(&mut browser, "openid").await;
    let reply = browser
        .http
        .post_form(&token_url, &[("authorization", &basic("wrong"))], &redeem(&c))
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.oauth_error(), "invalid_client");
    assert!(reply.header("www-authenticate").is_some_and(|v| v.starts_with("Basic")));
    let body = format!("{}&client_id={APP}", redeem(&c));
    let reply = browser.http.post_form(&token_url, &[], &body).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.oauth_error(), "invalid_client");
    let reply = browser
        .http
        .post_form(&token_url, &[], &format!("{}&client_id=nobody", redeem(&c)))
        .await;
    assert_eq!(reply.oauth_error(), "invalid_client");
    // Two methods at once.
    let body = format!("{}&client_secret={APP_SECRET}", redeem(&c));
    let reply = browser
        .http
        .post_form(&token_url, &[("authorization", &basic(APP_SECRET))], &body)
        .await;
    assert_eq!(reply.oauth_error(), "invalid_request");
    // A code of the confidential client redeemed by the public one.
    let c = code(&mut browser, "openid").await;
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", &c),
        ("redirect_uri", APP_REDIRECT),
        ("client_id", SPA),
    ]);
    let reply = browser.http.post_form(&token_url, &[], &body).await;
    assert_eq!(reply.oauth_error(), "invalid_grant");
    assert_eq!(idp.stats().token_requests_refused, 5);
    idp.shutdown().await;
}

#[tokio::test]
async fn wrong_password_shows_the_form_again() {
    let idp = start().await;
    let mut browser = Browser::default();
    let pkce = pkce();
    let page = browser.get(&spa_authorize(&idp, &pkce, "s", "n", &[])).await;

    let wrong_password = submit_login(&mut browser, &idp, &page, "alice", "nope").await;
    let unknown_user = submit_login(&mut browser, &idp, &page, "mallory", "alice").await;
    for reply in [&wrong_password, &unknown_user] {
        assert!(is_login_form(reply), "{reply:?}");
        assert!(reply.header("location").is_none() && reply.header("set-cookie").is_none());
        assert!(reply.body.contains("Incorrect username or password."), "{}", reply.body);
    }
    // The same message whichever part was wrong.
    let error = |html: &str| {
        html.split("id=\"error\"")
            .nth(1)
            .map(|s| s[..80.min(s.len())].to_owned())
    };
    assert_eq!(error(&wrong_password.body), error(&unknown_user.body));
    assert_eq!(idp.stats().failed_logins, 2);
    assert_eq!(idp.stats().codes_issued, 0);

    // The same transaction still works with the right password.
    let reply = submit_login(&mut browser, &idp, &wrong_password, "alice", "alice").await;
    assert!(query(&reply.location()).contains_key("code"));
    // And it is single-use.
    let again = submit_login(&mut browser, &idp, &page, "alice", "alice").await;
    assert_eq!(again.status, StatusCode::BAD_REQUEST);
    idp.shutdown().await;
}

#[tokio::test]
async fn wrong_or_missing_pkce_verifier_is_invalid_grant() {
    let idp = start().await;
    let mut browser = Browser::default();
    let p = pkce();
    let code = spa_code(&mut browser, &idp, &p, "n").await;
    let reply = spa_redeem(&browser.http, &idp, &code, &pkce().verifier).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.oauth_error(), "invalid_grant");
    // The code got its one attempt: the right verifier no longer helps.
    let reply = spa_redeem(&browser.http, &idp, &code, &p.verifier).await;
    assert_eq!(reply.oauth_error(), "invalid_grant");

    // No verifier at all.
    let p = pkce();
    let code = spa_code(&mut browser, &idp, &p, "n").await;
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", SPA_REDIRECT),
        ("client_id", SPA),
    ]);
    let reply = browser
        .http
        .post_form(&format!("{}/token", idp.issuer_str()), &[], &body)
        .await;
    assert_eq!(reply.oauth_error(), "invalid_grant");

    // A redirect_uri other than the authorization request's.
    let p = pkce();
    let code = spa_code(&mut browser, &idp, &p, "n").await;
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", "http://127.0.0.1:9/elsewhere"),
        ("client_id", SPA),
        ("code_verifier", &p.verifier),
    ]);
    let reply = browser
        .http
        .post_form(&format!("{}/token", idp.issuer_str()), &[], &body)
        .await;
    assert_eq!(reply.oauth_error(), "invalid_grant");
    assert_eq!(idp.stats().codes_redeemed, 0);
    idp.shutdown().await;
}

#[tokio::test]
async fn replayed_code_is_refused_and_revokes_its_tokens() {
    let idp = start().await;
    let mut browser = Browser::default();
    let p = pkce();
    let code = spa_code(&mut browser, &idp, &p, "n").await;
    let first = spa_redeem(&browser.http, &idp, &code, &p.verifier).await;
    assert_eq!(first.status, StatusCode::OK);
    let refresh_token = first.json()["refresh_token"].as_str().unwrap().to_owned();

    let replay = spa_redeem(&browser.http, &idp, &code, &p.verifier).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert_eq!(replay.oauth_error(), "invalid_grant");
    assert_eq!(idp.stats().codes_redeemed, 1);
    // The refresh token issued from the replayed code is revoked.
    assert_eq!(
        refresh(&browser.http, &idp, &refresh_token).await.oauth_error(),
        "invalid_grant"
    );
    idp.shutdown().await;
}

#[tokio::test]
async fn expired_code_is_invalid_grant() {
    let idp = start().await;
    idp.set_code_ttl(Duration::ZERO);
    let mut browser = Browser::default();
    let p = pkce();
    let code = spa_code(&mut browser, &idp, &p, "n").await;
    let reply = spa_redeem(&browser.http, &idp, &code, &p.verifier).await;
    assert_eq!(reply.oauth_error(), "invalid_grant");
    assert!(reply.json()["error_description"].as_str().unwrap().contains("expired"));

    // With time to spare it works (so the refusal above was the expiry).
    idp.set_code_ttl(Duration::from_secs(60));
    let p = pkce();
    let code = spa_code(&mut browser, &idp, &p, "n").await;
    assert_eq!(
        spa_redeem(&browser.http, &idp, &code, &p.verifier).await.status,
        StatusCode::OK
    );
    idp.shutdown().await;
}

#[tokio::test]
async fn untrusted_client_or_redirect_uri_gets_a_page_not_a_redirect() {
    let idp = start().await;
    let http = Http::default();
    let p = pkce();
    let cases: [&[(&str, &str)]; 5] = [
        &[("client_id", SPA), ("redirect_uri", "http://127.0.0.1:9/evil")],
        &[("client_id", SPA), ("redirect_uri", "http://127.0.0.1:9/spa/callback")], // query differs: not exact
        &[("client_id", "unknown"), ("redirect_uri", SPA_REDIRECT)],
        &[("redirect_uri", SPA_REDIRECT)],
        &[("client_id", SPA)],
    ];
    for case in cases {
        let mut params = vec![
            ("response_type", "code"),
            ("scope", "openid"),
            ("state", "s"),
            ("code_challenge", p.challenge.as_str()),
            ("code_challenge_method", "S256"),
        ];
        params.extend_from_slice(case);
        let reply = http.get(&authorize_url(&idp, &params)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{case:?}");
        assert!(reply.header("location").is_none(), "{case:?}");
        assert!(reply.header("content-type").unwrap().starts_with("text/html"));
        assert!(reply.body.contains(BANNER));
    }
    idp.shutdown().await;
}

#[tokio::test]
async fn other_authorization_errors_redirect_with_error_and_state() {
    let idp = start().await;
    let http = Http::default();
    let p = pkce();
    let state = "a b&c=<d>";
    let base = |extra: &[(&'static str, &'static str)]| {
        let mut params: Vec<(&str, &str)> = vec![("client_id", SPA), ("redirect_uri", SPA_REDIRECT), ("state", state)];
        params.extend_from_slice(extra);
        params
    };
    let challenge: &'static str = Box::leak(p.challenge.clone().into_boxed_str());
    let pkce_params = [("code_challenge", challenge), ("code_challenge_method", "S256")];
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (
            [
                base(&[("response_type", "token"), ("scope", "openid")]),
                pkce_params.to_vec(),
            ]
            .concat(),
            "unsupported_response_type",
        ),
        (
            [base(&[("scope", "openid")]), pkce_params.to_vec()].concat(),
            "invalid_request",
        ),
        (
            [
                base(&[("response_type", "code"), ("scope", "email")]),
                pkce_params.to_vec(),
            ]
            .concat(),
            "invalid_scope",
        ),
        (
            base(&[("response_type", "code"), ("scope", "openid")]),
            "invalid_request",
        ), // public client without PKCE
        (
            base(&[
                ("response_type", "code"),
                ("scope", "openid"),
                ("code_challenge", challenge),
                ("code_challenge_method", "plain"),
            ]),
            "invalid_request",
        ),
        (
            base(&[
                ("response_type", "code"),
                ("scope", "openid"),
                ("code_challenge", challenge),
            ]),
            "invalid_request",
        ),
        (
            [
                base(&[("response_type", "code"), ("scope", "openid"), ("request", "x")]),
                pkce_params.to_vec(),
            ]
            .concat(),
            "request_not_supported",
        ),
        (
            [
                base(&[("response_type", "code"), ("scope", "openid"), ("prompt", "none")]),
                pkce_params.to_vec(),
            ]
            .concat(),
            "login_required",
        ),
        (
            [
                base(&[
                    ("response_type", "code"),
                    ("scope", "openid"),
                    ("nonce", "1"),
                    ("nonce", "2"),
                ]),
                pkce_params.to_vec(),
            ]
            .concat(),
            "invalid_request",
        ),
    ];
    for (params, expected) in cases {
        let reply = http.get(&authorize_url(&idp, &params)).await;
        let location = reply.location();
        assert!(
            location
                .as_str()
                .starts_with("http://127.0.0.1:9/spa/callback?from=devidp&"),
            "{location}"
        );
        let q = query(&location);
        assert_eq!(q["error"], expected, "{params:?}");
        assert_eq!(q["state"], state, "state round-trips exactly");
        assert_eq!(q["iss"], idp.issuer_str());
        assert!(!q.contains_key("code"));
    }
    assert_eq!(idp.stats().codes_issued, 0);
    idp.shutdown().await;
}

#[tokio::test]
async fn refresh_grant_rotates() {
    let idp = start().await;
    let mut browser = Browser::default();
    let tokens = spa_tokens(&mut browser, &idp, "n-1").await;
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (_, first_claims) = verify_jwt(&browser.http, &idp, tokens["id_token"].as_str().unwrap()).await;

    let reply = refresh(&browser.http, &idp, &first).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let rotated = reply.json();
    let second = rotated["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    let (_, claims) = verify_jwt(&browser.http, &idp, rotated["id_token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["aud"], SPA);
    assert!(claims.get("nonce").is_none(), "no nonce on a refreshed ID token");
    assert_eq!(claims["auth_time"], first_claims["auth_time"]);
    assert_eq!(claims["sid"], first_claims["sid"]);
    verify_jwt(&browser.http, &idp, rotated["access_token"].as_str().unwrap()).await;

    // The old one is spent.
    let reply = refresh(&browser.http, &idp, &first).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert_eq!(reply.oauth_error(), "invalid_grant");
    // The new one works once too; a narrower scope is allowed, a wider one is not.
    let body = form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", &second),
        ("client_id", APP),
        ("client_secret", APP_SECRET),
    ]);
    let reply = browser
        .http
        .post_form(&format!("{}/token", idp.issuer_str()), &[], &body)
        .await;
    assert_eq!(reply.oauth_error(), "invalid_grant", "another client's refresh token");
    let tokens = spa_tokens(&mut browser, &idp, "n-2").await;
    let third = tokens["refresh_token"].as_str().unwrap();
    let body = form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", third),
        ("client_id", SPA),
        ("scope", "openid admin"),
    ]);
    let reply = browser
        .http
        .post_form(&format!("{}/token", idp.issuer_str()), &[], &body)
        .await;
    assert_eq!(reply.oauth_error(), "invalid_scope");
    let body = form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", third),
        ("client_id", SPA),
        ("scope", "openid"),
    ]);
    let reply = browser
        .http
        .post_form(&format!("{}/token", idp.issuer_str()), &[], &body)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    assert_eq!(reply.json()["scope"], "openid");
    assert_eq!(idp.stats().refresh_grants, 2);
    idp.shutdown().await;
}

#[tokio::test]
async fn revoked_refresh_tokens_are_invalid_grant() {
    let idp = start().await;
    let mut browser = Browser::default();
    let a = spa_tokens(&mut browser, &idp, "n").await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let b = spa_tokens(&mut browser, &idp, "n").await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    idp.revoke_refresh_tokens("bob"); // someone else: no effect
    idp.revoke_refresh_tokens("alice");
    for token in [a, b] {
        assert_eq!(
            refresh(&browser.http, &idp, &token).await.oauth_error(),
            "invalid_grant"
        );
    }
    assert_eq!(
        refresh(&browser.http, &idp, "never-issued").await.oauth_error(),
        "invalid_grant"
    );
    idp.shutdown().await;
}

#[tokio::test]
async fn refresh_tokens_can_be_switched_off() {
    let idp = start_with(DevIdpConfig {
        issue_refresh_tokens: false,
        ..config()
    })
    .await;
    let mut browser = Browser::default();
    let tokens = spa_tokens(&mut browser, &idp, "n").await;
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    idp.shutdown().await;
}

#[tokio::test]
async fn sso_session_prompt_login_and_logout() {
    let idp = start().await;
    let mut browser = Browser::default();
    spa_tokens(&mut browser, &idp, "n").await;
    assert!(browser.cookies.contains_key(SESSION_COOKIE));

    // Second sign-in in the same browser: straight back with a code.
    let p = pkce();
    let reply = browser.get(&spa_authorize(&idp, &p, "s2", "n2", &[])).await;
    let q = query(&reply.location());
    assert_eq!(q["state"], "s2");
    let tokens = spa_redeem(&browser.http, &idp, &q["code"], &p.verifier).await.json();
    let (_, claims) = verify_jwt(&browser.http, &idp, tokens["id_token"].as_str().unwrap()).await;
    assert_eq!(
        (claims["sub"].as_str(), claims["nonce"].as_str()),
        (Some("alice"), Some("n2"))
    );
    assert_eq!(idp.stats().silent_logins, 1);
    // prompt=none works with a session too.
    let reply = browser
        .get(&spa_authorize(&idp, &p, "s", "n", &[("prompt", "none")]))
        .await;
    assert!(query(&reply.location()).contains_key("code"));
    // A browser without the cookie sees the form.
    let mut other = Browser::default();
    assert!(is_login_form(&other.get(&spa_authorize(&idp, &p, "s", "n", &[])).await));

    // prompt=login and max_age=0 force the form.
    for extra in [("prompt", "login"), ("max_age", "0")] {
        let page = browser.get(&spa_authorize(&idp, &p, "s", "n", &[extra])).await;
        assert!(is_login_form(&page), "{extra:?}: {page:?}");
    }
    // A generous max_age does not.
    let reply = browser
        .get(&spa_authorize(&idp, &p, "s", "n", &[("max_age", "3600")]))
        .await;
    assert!(query(&reply.location()).contains_key("code"));

    // Logout to a registered post-logout URI, with state; the cookie is cleared.
    let logout = format!(
        "{}/logout?{}",
        idp.issuer_str(),
        form(&[
            ("client_id", APP),
            ("post_logout_redirect_uri", APP_LOGOUT_REDIRECT),
            ("state", "bye")
        ])
    );
    let reply = browser.get(&logout).await;
    let location = reply.location();
    assert_eq!(location.as_str(), format!("{APP_LOGOUT_REDIRECT}?state=bye"));
    assert!(reply.header("set-cookie").unwrap().contains("Max-Age=0"));
    assert!(!browser.cookies.contains_key(SESSION_COOKIE));
    // The server-side session is gone too: the old cookie value no longer works.
    assert!(is_login_form(
        &browser.get(&spa_authorize(&idp, &p, "s", "n", &[])).await
    ));
    assert_eq!(idp.stats().logouts, 1);
    idp.shutdown().await;
}

#[tokio::test]
async fn old_session_cookie_is_dead_after_logout() {
    let idp = start().await;
    let mut browser = Browser::default();
    spa_tokens(&mut browser, &idp, "n").await;
    let stolen = browser.cookies[SESSION_COOKIE].clone();
    browser.get(&format!("{}/logout", idp.issuer_str())).await;
    let mut replayer = Browser::default();
    replayer.cookies.insert(SESSION_COOKIE.to_owned(), stolen);
    let p = pkce();
    assert!(is_login_form(
        &replayer.get(&spa_authorize(&idp, &p, "s", "n", &[])).await
    ));
    idp.shutdown().await;
}

#[tokio::test]
async fn logout_redirects_only_to_registered_uris() {
    let idp = start().await;
    let mut browser = Browser::default();
    let tokens = spa_tokens(&mut browser, &idp, "n").await;
    let spa_id_token = tokens["id_token"].as_str().unwrap().to_owned();
    let logout = |params: &[(&str, &str)]| format!("{}/logout?{}", idp.issuer_str(), form(params));

    let refused: [Vec<(&str, &str)>; 5] = [
        // Not registered for the client.
        vec![
            ("client_id", APP),
            ("post_logout_redirect_uri", "http://127.0.0.1:9/evil"),
        ],
        // Registered for another client than the one named.
        vec![("client_id", SPA), ("post_logout_redirect_uri", APP_LOGOUT_REDIRECT)],
        // No client named at all.
        vec![("post_logout_redirect_uri", APP_LOGOUT_REDIRECT)],
        // The hint names the SPA, whose list is empty.
        vec![
            ("id_token_hint", &spa_id_token),
            ("post_logout_redirect_uri", APP_LOGOUT_REDIRECT),
        ],
        // A forged hint.
        vec![
            ("id_token_hint", "e30.e30.AAAA"),
            ("post_logout_redirect_uri", APP_LOGOUT_REDIRECT),
        ],
    ];
    for params in refused {
        let reply = browser.get(&logout(&params)).await;
        assert_eq!(reply.status, StatusCode::OK, "{params:?}");
        assert!(reply.header("location").is_none(), "{params:?}");
        assert!(reply.body.contains("You are signed out"));
        assert!(reply.body.contains(BANNER));
    }
    // The bare endpoint: the signed-out page.
    let reply = browser.get(&logout(&[])).await;
    assert!(reply.body.contains("You are signed out") && reply.header("location").is_none());
    // An unregistered URI is reflected escaped.
    let reply = browser
        .get(&logout(&[
            ("client_id", APP),
            ("post_logout_redirect_uri", "http://x/<script>"),
        ]))
        .await;
    assert!(
        !reply.body.contains("<script>") && reply.body.contains("&lt;script&gt;"),
        "{}",
        reply.body
    );

    // An id_token_hint of the confidential client names it, so its URI is accepted.
    let url = authorize_url(
        &idp,
        &[
            ("response_type", "code"),
            ("client_id", APP),
            ("redirect_uri", APP_REDIRECT),
            ("scope", "openid"),
        ],
    );
    let page = browser.get(&url).await;
    let reply = submit_login(&mut browser, &idp, &page, "alice", "alice").await;
    let code = query(&reply.location())["code"].clone();
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", &code),
        ("redirect_uri", APP_REDIRECT),
        ("client_id", APP),
        ("client_secret", APP_SECRET),
    ]);
    let tokens = browser
        .http
        .post_form(&format!("{}/token", idp.issuer_str()), &[], &body)
        .await
        .json();
    let hint = tokens["id_token"].as_str().unwrap();
    let reply = browser
        .get(&logout(&[
            ("id_token_hint", hint),
            ("post_logout_redirect_uri", APP_LOGOUT_REDIRECT),
        ]))
        .await;
    assert_eq!(reply.location().as_str(), APP_LOGOUT_REDIRECT);
    idp.shutdown().await;
}

#[tokio::test]
async fn userinfo_needs_a_valid_access_token() {
    let idp = start().await;
    let mut browser = Browser::default();
    let tokens = spa_tokens(&mut browser, &idp, "n").await;
    let url = format!("{}/userinfo", idp.issuer_str());
    let http = &browser.http;
    let bearer = |t: &str| format!("Bearer {t}");

    let at = tokens["access_token"].as_str().unwrap();
    let reply = http
        .send(Method::GET, &url, &[("authorization", &bearer(at))], "")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    let info = reply.json();
    assert_eq!(info["sub"], "alice");
    assert_eq!(info["email"], "alice@example.com");
    assert_eq!(info["name"], "Alice Example");
    assert_eq!(info["preferred_username"], "alice");
    // POST works too.
    let reply = http
        .send(Method::POST, &url, &[("authorization", &bearer(at))], "")
        .await;
    assert_eq!(reply.status, StatusCode::OK);

    let reply = http.get(&url).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert!(reply.header("www-authenticate").unwrap().starts_with("Bearer"));
    let id_token = tokens["id_token"].as_str().unwrap();
    let mut tampered = at.to_owned();
    tampered.pop();
    tampered.push(if at.ends_with('A') { 'B' } else { 'A' });
    for bad in [
        bearer("garbage"),
        bearer(id_token),
        bearer(&tampered),
        format!("Basic {at}"),
    ] {
        let reply = http.send(Method::GET, &url, &[("authorization", &bad)], "").await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{bad}");
        assert!(
            reply.header("www-authenticate").unwrap().contains("invalid_token"),
            "{bad}"
        );
    }
    // Another provider's token (same shape, other key).
    let other = start().await;
    let foreign = other.mint_access_token("alice", "api").unwrap();
    let reply = http
        .send(Method::GET, &url, &[("authorization", &bearer(&foreign))], "")
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    other.shutdown().await;
    idp.shutdown().await;
}

#[tokio::test]
async fn minted_access_tokens_verify_against_the_jwks() {
    let idp = start().await;
    let http = Http::default();
    let token = idp.mint_access_token("carol", "my-api").unwrap();
    let (header, claims) = verify_jwt(&http, &idp, &token).await;
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(claims["iss"], idp.issuer_str());
    assert_eq!(claims["aud"], "my-api");
    assert_eq!(claims["sub"], "carol");
    assert_eq!(claims["email"], "carol@example.com");
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp > now() && exp <= now() + 301);
    let reply = http
        .send(
            Method::GET,
            &format!("{}/userinfo", idp.issuer_str()),
            &[("authorization", &format!("Bearer {token}"))],
            "",
        )
        .await;
    assert_eq!(reply.json()["name"], "Carol \"C\" O'Neil");
    assert!(matches!(
        idp.mint_access_token("nobody", "my-api"),
        Err(DevIdpError::UnknownAccount(_))
    ));
    idp.shutdown().await;
}

#[tokio::test]
async fn reflected_values_are_html_escaped() {
    let idp = start().await;
    let mut browser = Browser::default();
    let evil = "<script>alert('x')</script>\"";

    // Unknown client id, unregistered redirect URI.
    for params in [
        vec![("client_id", evil), ("redirect_uri", SPA_REDIRECT)],
        vec![("client_id", SPA), ("redirect_uri", evil)],
    ] {
        let reply = browser.get(&authorize_url(&idp, &params)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST);
        assert!(!reply.body.contains("<script>"), "{}", reply.body);
        assert!(
            reply.body.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"),
            "{}",
            reply.body
        );
    }
    // A login_hint and a typed username shown back in the form.
    let p = pkce();
    let page = browser
        .get(&spa_authorize(&idp, &p, evil, "n", &[("login_hint", evil)]))
        .await;
    assert!(is_login_form(&page));
    assert!(
        !page.body.contains("<script>") && page.body.contains("value=\"&lt;script&gt;"),
        "{}",
        page.body
    );
    let reply = submit_login(&mut browser, &idp, &page, evil, "x").await;
    assert!(is_login_form(&reply));
    assert!(!reply.body.contains("<script>"), "{}", reply.body);
    // The state is never put in the page, and comes back intact in the redirect.
    let reply = submit_login(&mut browser, &idp, &page, "carol", "c&rol<pw>").await;
    assert_eq!(query(&reply.location())["state"], evil);
    idp.shutdown().await;
}

/// Method, URL, headers, body, expected status, expected OAuth error.
type Case<'a> = (
    Method,
    String,
    Vec<(&'a str, &'a str)>,
    Vec<u8>,
    StatusCode,
    Option<&'a str>,
);

#[tokio::test]
async fn malformed_requests_get_4xx_and_the_server_keeps_serving() {
    let idp = start().await;
    let http = Http::default();
    let base = idp.issuer_str().to_owned();
    let token = format!("{base}/token");

    let form_ct = ("content-type", "application/x-www-form-urlencoded");
    let cases: Vec<Case<'_>> = vec![
        (
            Method::POST,
            token.clone(),
            vec![("content-type", "application/json")],
            b"{}".to_vec(),
            StatusCode::BAD_REQUEST,
            Some("invalid_request"),
        ),
        (
            Method::POST,
            token.clone(),
            vec![form_ct],
            b"client_id=spa".to_vec(),
            StatusCode::BAD_REQUEST,
            Some("invalid_request"),
        ),
        (
            Method::POST,
            token.clone(),
            vec![form_ct],
            b"client_id=spa&grant_type=password".to_vec(),
            StatusCode::BAD_REQUEST,
            Some("unsupported_grant_type"),
        ),
        (
            Method::POST,
            token.clone(),
            vec![form_ct],
            b"client_id=spa&grant_type=authorization_code".to_vec(),
            StatusCode::BAD_REQUEST,
            Some("invalid_request"),
        ),
        (
            Method::POST,
            token.clone(),
            vec![form_ct],
            b"client_id=spa&grant_type=refresh_token&grant_type=refresh_token".to_vec(),
            StatusCode::BAD_REQUEST,
            Some("invalid_request"),
        ),
        (
            Method::POST,
            token.clone(),
            vec![form_ct],
            b"client_id=spa&grant_type=authorization_code&code=x&redirect_uri=y&code_verifier=short".to_vec(),
            StatusCode::BAD_REQUEST,
            Some("invalid_request"),
        ),
        (
            Method::POST,
            token.clone(),
            vec![form_ct],
            b"client_id=%FF%FE&grant_type=%%%".to_vec(),
            StatusCode::UNAUTHORIZED,
            Some("invalid_client"),
        ),
        (
            Method::POST,
            token.clone(),
            vec![form_ct],
            b"client_id=spa&\xff\xfe".to_vec(),
            StatusCode::BAD_REQUEST,
            Some("invalid_request"),
        ),
        (
            Method::POST,
            token.clone(),
            vec![form_ct, ("authorization", "Basic !!!")],
            b"grant_type=refresh_token".to_vec(),
            StatusCode::UNAUTHORIZED,
            Some("invalid_client"),
        ),
        (
            Method::POST,
            token.clone(),
            vec![form_ct],
            vec![b'a'; 200 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
        ),
        (
            Method::POST,
            token.clone(),
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
            Some("invalid_request"),
        ),
        (
            Method::GET,
            token.clone(),
            vec![],
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            None,
        ),
        (
            Method::PUT,
            format!("{base}/authorize"),
            vec![],
            vec![],
            StatusCode::METHOD_NOT_ALLOWED,
            None,
        ),
        (
            Method::GET,
            format!("{base}/authorize"),
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            Method::GET,
            format!("{base}/authorize?%%%=%%&&&==="),
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            Method::POST,
            format!("{base}/authorize"),
            vec![("content-type", "text/plain")],
            b"x".to_vec(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            Method::POST,
            format!("{base}/authorize"),
            vec![form_ct],
            b"transaction=nope&username=alice&password=alice".to_vec(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            Method::POST,
            format!("{base}/authorize"),
            vec![form_ct],
            b"username=alice".to_vec(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            Method::POST,
            format!("{base}/authorize"),
            vec![form_ct],
            vec![b'a'; 100 * 1024],
            StatusCode::PAYLOAD_TOO_LARGE,
            None,
        ),
        (
            Method::POST,
            format!("{base}/logout"),
            vec![("content-type", "text/plain")],
            b"x".to_vec(),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            Method::GET,
            format!("{base}/logout?state=1&state=2"),
            vec![],
            vec![],
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            Method::GET,
            format!("{base}/nope"),
            vec![],
            vec![],
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            Method::GET,
            format!("{base}/.well-known/openid-configuration/x"),
            vec![],
            vec![],
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            Method::GET,
            format!("{base}/userinfo"),
            vec![("authorization", "Bearer")],
            vec![],
            StatusCode::UNAUTHORIZED,
            None,
        ),
    ];
    for (method, url, headers, body, status, error) in cases {
        let reply = http.send(method.clone(), &url, &headers, body).await;
        assert_eq!(reply.status, status, "{method} {url} {headers:?}: {}", reply.body);
        if let Some(error) = error {
            assert_eq!(reply.oauth_error(), error, "{method} {url}");
        }
    }

    // A huge body sent without a Content-Length (chunked) is cut off too.
    let mut stream = tokio::net::TcpStream::connect(idp.local_addr()).await.unwrap();
    let chunk = vec![b'a'; 16 * 1024];
    let mut request = b"POST /token HTTP/1.1\r\nhost: x\r\ncontent-type: application/x-www-form-urlencoded\r\ntransfer-encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..8 {
        request.extend(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend(&chunk);
        request.extend(b"\r\n");
    }
    request.extend(b"0\r\n\r\n");
    let _ = stream.write_all(&request).await;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).await.unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");

    // Garbage that is not HTTP at all.
    let mut stream = tokio::net::TcpStream::connect(idp.local_addr()).await.unwrap();
    stream.write_all(b"\x00\x01GARBAGE \xff\r\n\r\n").await.unwrap();
    let mut buf = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut buf)).await;

    // Still serving.
    assert_eq!(http.get(&idp.discovery_url()).await.status, StatusCode::OK);
    let mut browser = Browser::default();
    spa_tokens(&mut browser, &idp, "n").await;
    assert!(idp.stats().token_requests_refused >= 10);
    idp.shutdown().await;
}

#[tokio::test]
async fn shutdown_stops_listening() {
    let idp = start().await;
    let addr = idp.local_addr();
    let handle: DevIdp = (*idp).clone();
    assert_eq!(
        Http::default().get(&handle.discovery_url()).await.status,
        StatusCode::OK
    );
    idp.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "listener closed");
    // Running a second time is a no-op, not a panic.
    tokio::time::timeout(Duration::from_secs(5), handle.run(std::future::pending()))
        .await
        .unwrap();
}
