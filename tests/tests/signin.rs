//! Browser sign-in end to end at the HTTP level: a real Portcullis
//! (in-process, on `127.0.0.1:0`), the development OpenID Provider from
//! `portcullis-devidp` with its real login form and token endpoint, a real
//! upstream, SCIM provisioning over HTTP, and a cookie-keeping client that
//! follows the redirects a browser would.
//!
//! The same flows run in a real browser against a certified OP in
//! `browser.rs`; these are the fast, exhaustive ones: state, cookies,
//! open redirects, replays, loops, refresh, logout, IdP outages.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use portcullis_devidp::{DevAccount, DevClient, DevIdp, DevIdpConfig, RunningDevIdp};
use portcullis_tests::jar::{CookieClient, Page};
use portcullis_tests::upstream::Upstream;
use portcullis_tests::{OKTA_TOKEN, ScimClient, TestServer};
use serde_json::json;

const POLICY: &str = r#"
[roles.reader]
allow = [{ route = "app", methods = ["GET", "HEAD"], paths = ["/**"] }]

[roles.other]
allow = [{ route = "other", paths = ["/**"] }]

[groups]
"readers" = ["reader"]
"others" = ["other"]
"#;

const COOKIE: &str = "_portcullis";

struct World {
    server: TestServer,
    idp: Option<RunningDevIdp>,
    idp_handle: DevIdp,
    scim: ScimClient,
    _app: Upstream,
    _other: Upstream,
}

struct Options {
    scopes: &'static str,
    token_ttl: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            scopes: r#"["openid", "email", "profile"]"#,
            token_ttl: Duration::from_secs(300),
        }
    }
}

async fn world() -> World {
    world_with(Options::default()).await
}

async fn world_with(options: Options) -> World {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let client = DevClient::confidential("portcullis", "s3cret", format!("{url}/.portcullis/callback"))
        .with_post_logout_redirect_uri(format!("{url}/.portcullis/signed-out"));
    let idp = DevIdp::bind(DevIdpConfig {
        clients: vec![client],
        accounts: vec![
            DevAccount::new("alice", "alice-pw", "alice@example.com", "Alice"),
            DevAccount::new("bob", "bob-pw", "bob@example.com", "Bob"),
        ],
        id_token_ttl: options.token_ttl,
        access_token_ttl: options.token_ttl,
        ..DevIdpConfig::default()
    })
    .await
    .unwrap();
    let running = idp.spawn();
    let app = Upstream::start("app").await;
    let other = Upstream::start("other").await;
    let config = format!(
        "[oidc]\nissuer = \"{}\"\nclient_id = \"portcullis\"\nclient_secret = \"s3cret\"\nscopes = {}\n\
         [[routes]]\nname = \"app\"\nupstream = \"{}\"\n\
         [[routes]]\nname = \"other\"\npath_prefix = \"/other\"\nupstream = \"{}\"\n",
        idp.issuer_str(),
        options.scopes,
        app.url(),
        other.url(),
    );
    let server = TestServer::start_on(listener, "", &config, &[("app.toml", POLICY)]).await;
    server.wait_ready().await;
    let scim = server.scim(OKTA_TOKEN);
    let world = World {
        server,
        idp: Some(running),
        idp_handle: idp,
        scim,
        _app: app,
        _other: other,
    };
    world.wait_signin_ready().await;
    assert_eq!(world.server.readyz().await.1["sign_in"], "ok");
    world
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url)
    }

    async fn user(&self, email: &str, groups: &[&str]) -> String {
        let id = self
            .scim
            .create_user(json!({"userName": email, "emails": [{"value": email, "primary": true}], "active": true}))
            .await;
        for g in groups {
            self.scim.add_member(g, &id).await;
        }
        id
    }

    /// Sign-in discovery runs in the background; wait until a navigation
    /// is sent to the IdP rather than answered 503.
    async fn wait_signin_ready(&self) {
        let probe = CookieClient::new();
        for _ in 0..200 {
            if probe.get(&self.url("/")).await.status == StatusCode::FOUND {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("sign-in never became ready");
    }

    /// Opens `path` in `browser`, signs in at the IdP form when asked, and
    /// follows redirects to the end.
    async fn visit_signing_in(&self, browser: &CookieClient, path: &str, user: &str, password: &str) -> Page {
        let page = browser.follow(browser.get(&self.url(path)).await).await;
        if page.input("transaction").is_none() {
            return page;
        }
        let answer = self.submit_login(browser, &page, user, password).await;
        browser.follow(answer).await
    }

    async fn submit_login(&self, browser: &CookieClient, form: &Page, user: &str, password: &str) -> Page {
        let transaction = form.input("transaction").expect("login form");
        browser
            .post_form(
                &format!("{}/authorize", self.idp_handle.issuer_str()),
                &[
                    ("transaction", &transaction),
                    ("username", user),
                    ("password", password),
                ],
            )
            .await
    }
}

/// The upstream's echo of the request it received.
fn echoed_header(page: &Page, name: &str) -> Option<String> {
    let v = page.json();
    v["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find_map(|h| (h[0].as_str().unwrap().eq_ignore_ascii_case(name)).then(|| h[1].as_str().unwrap().to_owned()))
}

#[tokio::test]
async fn signing_in_reaches_the_upstream_at_the_deep_link_first_asked_for() {
    let w = world().await;
    w.user("alice@example.com", &["readers"]).await;
    let browser = CookieClient::new();

    let first = browser.get(&w.url("/reports/q3?year=2026&x=%2Fy")).await;
    assert_eq!(first.status, StatusCode::FOUND);
    let to_idp = first.location().unwrap();
    assert!(to_idp.starts_with(w.idp_handle.issuer_str()), "{to_idp}");
    for p in [
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "nonce=",
        "response_type=code",
    ] {
        assert!(to_idp.contains(p), "{p} missing from {to_idp}");
    }
    let binding = first
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with(&format!("{COOKIE}_signin_")))
        .expect("binding cookie");
    assert!(
        binding.contains("Path=/.portcullis/callback") && binding.contains("HttpOnly"),
        "{binding}"
    );

    let form = browser.get(&to_idp).await;
    let callback = w.submit_login(&browser, &form, "alice", "alice-pw").await;
    let callback_url = callback.location().unwrap();
    assert!(
        callback_url.starts_with(&w.url("/.portcullis/callback?")),
        "{callback_url}"
    );
    let landed = browser.get(&callback_url).await;
    assert_eq!(landed.status, StatusCode::FOUND);
    assert_eq!(landed.location().unwrap(), w.url("/reports/q3?year=2026&x=%2Fy"));
    let session = landed.set_cookie(COOKIE).expect("session cookie");
    for attr in ["Path=/", "HttpOnly", "SameSite=Lax", "Max-Age=86400"] {
        assert!(session.contains(attr), "{attr} missing: {session}");
    }
    assert!(!session.contains("Secure"), "http public_url: no Secure ({session})");
    assert!(session.len() < 200, "the cookie is small: {session}");

    let page = browser.follow(landed).await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
    assert_eq!(page.json()["uri"], "/reports/q3?year=2026&x=%2Fy");
    assert_eq!(
        echoed_header(&page, "x-portcullis-user").as_deref(),
        Some("alice@example.com")
    );
    let cookies = echoed_header(&page, "cookie").unwrap_or_default();
    assert!(
        !cookies.contains(COOKIE),
        "Portcullis's cookies are not forwarded: {cookies}"
    );

    // /.portcullis/me answers for the session too.
    let me = browser
        .send(
            Method::GET,
            &w.url("/.portcullis/me"),
            &[("accept", "application/json")],
            Bytes::new(),
        )
        .await;
    assert_eq!(me.status, StatusCode::OK, "{}", me.body);
    assert_eq!(me.json()["user"], "alice@example.com");
    assert_eq!(me.json()["roles"], json!(["reader"]));
}

#[tokio::test]
async fn api_requests_without_a_session_get_401_json_not_a_redirect() {
    let w = world().await;
    let c = CookieClient::new();
    for headers in [
        vec![("accept", "application/json")],
        vec![("accept", "text/html"), ("x-requested-with", "XMLHttpRequest")],
        vec![],
    ] {
        let page = c.send(Method::GET, &w.url("/data"), &headers, Bytes::new()).await;
        assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{headers:?}");
        assert_eq!(page.json()["error"], "missing_credentials");
    }
    // A form POST without a session is not redirected (it could not be
    // replayed after sign-in).
    let page = c
        .send(Method::POST, &w.url("/data"), &[("accept", "text/html")], Bytes::new())
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    // A forged session cookie: 401 for the API, a fresh sign-in (and the
    // bad cookie cleared) for a navigation.
    c.set(&w.server.url, COOKIE, &"A".repeat(43));
    let page = c
        .send(
            Method::GET,
            &w.url("/data"),
            &[("accept", "application/json")],
            Bytes::new(),
        )
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    assert_eq!(page.json()["error"], "invalid_session");
    let page = c.get(&w.url("/data")).await;
    assert_eq!(page.status, StatusCode::FOUND);
    assert!(page.set_cookie(COOKIE).is_some_and(|c| c.contains("Max-Age=0")));
}

#[tokio::test]
async fn a_user_without_the_role_is_refused_with_the_reason() {
    let w = world().await;
    w.user("bob@example.com", &[]).await;
    let browser = CookieClient::new();
    let page = w.visit_signing_in(&browser, "/data", "bob", "bob-pw").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("you have no role here"), "{}", page.body);
    assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/html"));
}

#[tokio::test]
async fn an_unprovisioned_user_gets_no_session() {
    let w = world().await;
    let browser = CookieClient::new();
    let page = w.visit_signing_in(&browser, "/data", "alice", "alice-pw").await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(page.body.contains("not provisioned"), "{}", page.body);
    assert!(browser.cookie(&w.server.url, COOKIE).is_none());
}

#[tokio::test]
async fn deprovisioning_ends_the_session_on_the_next_request_and_reactivation_allows_a_new_sign_in() {
    let w = world().await;
    let alice = w.user("alice@example.com", &["readers"]).await;
    let browser = CookieClient::new();
    assert_eq!(
        w.visit_signing_in(&browser, "/data", "alice", "alice-pw").await.status,
        StatusCode::OK
    );
    let old_cookie = browser.cookie(&w.server.url, COOKIE).unwrap();

    w.scim.set_active(&alice, false).await;
    // The very next page load is refused, whether or not the session was
    // already revoked (the IdP's SSO signs the browser straight back in).
    let page = browser.follow(browser.get(&w.url("/data")).await).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert!(page.body.contains("deactivated"), "{}", page.body);
    // The session itself is gone from the store.
    let api = CookieClient::new();
    api.set(&w.server.url, COOKIE, &old_cookie);
    let page = api
        .send(
            Method::GET,
            &w.url("/data"),
            &[("accept", "application/json")],
            Bytes::new(),
        )
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED, "{}", page.body);

    w.scim.set_active(&alice, true).await;
    let page = w.visit_signing_in(&browser, "/data", "alice", "alice-pw").await;
    assert_eq!(page.status, StatusCode::OK, "{}", page.body);
}

#[tokio::test]
async fn removing_a_group_denies_its_route_on_the_next_request_while_others_still_work() {
    let w = world().await;
    let alice = w.user("alice@example.com", &["readers", "others"]).await;
    let browser = CookieClient::new();
    assert_eq!(
        w.visit_signing_in(&browser, "/data", "alice", "alice-pw").await.status,
        StatusCode::OK
    );
    assert_eq!(browser.get(&w.url("/other/x")).await.status, StatusCode::OK);
    w.scim.remove_member("readers", &alice).await;
    let page = browser.get(&w.url("/data")).await;
    assert_eq!(page.status, StatusCode::FORBIDDEN, "{}", page.body);
    assert_eq!(browser.get(&w.url("/other/x")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn logout_needs_the_form_token_ends_the_session_and_signs_out_at_the_idp() {
    let w = world().await;
    w.user("alice@example.com", &["readers"]).await;
    let browser = CookieClient::new();
    w.visit_signing_in(&browser, "/data", "alice", "alice-pw").await;
    let cookie = browser.cookie(&w.server.url, COOKIE).unwrap();

    // A GET alone (a link, an <img>) signs nobody out.
    let form = browser.get(&w.url("/.portcullis/logout")).await;
    assert_eq!(form.status, StatusCode::OK);
    assert_eq!(browser.get(&w.url("/data")).await.status, StatusCode::OK);
    let csrf = form.input("csrf").expect("csrf input");

    let forged = browser
        .post_form(&w.url("/.portcullis/logout"), &[("csrf", "not-the-token")])
        .await;
    assert_eq!(forged.status, StatusCode::FORBIDDEN);
    assert_eq!(browser.get(&w.url("/data")).await.status, StatusCode::OK);

    let out = browser
        .post_form(&w.url("/.portcullis/logout"), &[("csrf", &csrf)])
        .await;
    assert_eq!(out.status, StatusCode::FOUND);
    assert!(out.set_cookie(COOKIE).unwrap().contains("Max-Age=0"));
    let to_idp = out.location().unwrap();
    assert!(to_idp.starts_with(w.idp_handle.issuer_str()), "{to_idp}");
    assert!(to_idp.contains("id_token_hint="), "{to_idp}");
    assert!(to_idp.contains("post_logout_redirect_uri="), "{to_idp}");
    let signed_out = browser.follow(browser.get(&to_idp).await).await;
    assert_eq!(signed_out.url, w.url("/.portcullis/signed-out"));
    assert!(signed_out.body.contains("signed out"));

    // The old cookie is dead even if someone kept a copy.
    let thief = CookieClient::new();
    thief.set(&w.server.url, COOKIE, &cookie);
    let page = thief
        .send(
            Method::GET,
            &w.url("/data"),
            &[("accept", "application/json")],
            Bytes::new(),
        )
        .await;
    assert_eq!(page.status, StatusCode::UNAUTHORIZED);
    // And the IdP's own session ended too: signing in shows the form again.
    let again = browser.follow(browser.get(&w.url("/data")).await).await;
    assert!(
        again.input("transaction").is_some(),
        "the IdP asks for the password again"
    );
}

#[tokio::test]
async fn the_callback_refuses_foreign_state_missing_binding_and_replays() {
    let w = world().await;
    w.user("alice@example.com", &["readers"]).await;
    let browser = CookieClient::new();
    let to_idp = browser.get(&w.url("/data")).await.location().unwrap();
    let form = browser.get(&to_idp).await;
    let callback_url = w
        .submit_login(&browser, &form, "alice", "alice-pw")
        .await
        .location()
        .unwrap();

    // Another browser (an attacker planting their own sign-in) has no
    // binding cookie for this state.
    let attacker = CookieClient::new();
    let page = attacker.get(&callback_url).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(page.body.contains("not started in this browser"), "{}", page.body);

    // A state never issued.
    let page = browser.get(&w.url("/.portcullis/callback?state=forged&code=x")).await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);

    // The real one works once.
    let ok = browser.get(&callback_url).await;
    assert_eq!(ok.status, StatusCode::FOUND, "{}", ok.body);
    // Replayed (binding cookie put back by hand): the sign-in is used up.
    let state = url::Url::parse(&callback_url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    browser.set(&w.server.url, &format!("{COOKIE}_signin_{}", &state[..16]), &state);
    let replay = browser.get(&callback_url).await;
    assert_eq!(replay.status, StatusCode::BAD_REQUEST);
    assert!(
        replay.body.contains("expired or was already completed"),
        "{}",
        replay.body
    );

    // An IdP error answer is shown, not followed.
    let to_idp = browser.get(&w.url("/data?again")).await;
    assert_eq!(to_idp.status, StatusCode::OK, "already signed in");
    let fresh = CookieClient::new();
    let first = fresh.get(&w.url("/data")).await;
    let state = url::Url::parse(&first.location().unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let page = fresh
        .get(&w.url(&format!(
            "/.portcullis/callback?state={state}&error=access_denied&error_description=%3Cscript%3E"
        )))
        .await;
    assert_eq!(page.status, StatusCode::FORBIDDEN);
    assert!(
        page.body.contains("access_denied") && !page.body.contains("<script>"),
        "{}",
        page.body
    );
}

#[tokio::test]
async fn sign_in_returns_only_to_same_site_urls() {
    let w = world().await;
    w.user("alice@example.com", &["readers"]).await;
    let root = w.url("/");
    for (rd, expected) in [
        ("/deep/link?a=1", w.url("/deep/link?a=1")),
        ("https://evil.example/", root.clone()),
        ("//evil.example/x", root.clone()),
        ("/\\evil.example", root.clone()),
        ("javascript:alert(1)", root.clone()),
        (&w.url("/ok") as &str, w.url("/ok")),
    ] {
        let browser = CookieClient::new();
        let start = browser
            .get(&w.url(&format!("/.portcullis/signin?rd={}", portcullis_tests::encode(rd))))
            .await;
        assert_eq!(start.status, StatusCode::FOUND, "{rd}");
        let form = browser.get(&start.location().unwrap()).await;
        let callback = w.submit_login(&browser, &form, "alice", "alice-pw").await;
        let landed = browser.get(&callback.location().unwrap()).await;
        assert_eq!(landed.location().as_deref(), Some(expected.as_str()), "rd={rd}");
    }
}

#[tokio::test]
async fn a_browser_that_drops_the_session_cookie_gets_an_error_not_an_endless_loop() {
    let w = world().await;
    w.user("alice@example.com", &["readers"]).await;
    let browser = CookieClient::new();
    let mut rounds = 0;
    let mut page = browser.get(&w.url("/data")).await;
    loop {
        if page.status != StatusCode::FOUND {
            break;
        }
        rounds += 1;
        assert!(rounds < 20, "no loop detection after {rounds} round trips");
        let next = page.location().unwrap();
        page = if next.contains("/authorize") {
            let form = browser.get(&next).await;
            if form.input("transaction").is_some() {
                w.submit_login(&browser, &form, "alice", "alice-pw").await
            } else {
                form
            }
        } else {
            browser.get(&next).await
        };
        // The broken browser: never keeps the session.
        browser.remove(&w.server.url, COOKIE);
    }
    assert_eq!(page.status, StatusCode::BAD_REQUEST, "{}", page.body);
    assert!(page.body.contains("keeps starting over"), "{}", page.body);
}

#[tokio::test]
async fn with_the_idp_down_sessions_keep_working_and_new_sign_ins_get_a_503() {
    let mut w = world().await;
    w.user("alice@example.com", &["readers"]).await;
    let browser = CookieClient::new();
    assert_eq!(
        w.visit_signing_in(&browser, "/data", "alice", "alice-pw").await.status,
        StatusCode::OK
    );
    w.idp.take().unwrap().shutdown().await;

    assert_eq!(browser.get(&w.url("/data")).await.status, StatusCode::OK);
    // A new browser is sent to the IdP (discovery is cached); the IdP does
    // not answer, and the code exchange that follows cannot happen. The
    // proxy's own answer for a sign-in it cannot finish is a 503 page.
    let stranger = CookieClient::new();
    let first = stranger.get(&w.url("/data")).await;
    assert_eq!(first.status, StatusCode::FOUND);
    let state = url::Url::parse(&first.location().unwrap())
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    let page = stranger
        .get(&w.url(&format!("/.portcullis/callback?state={state}&code=whatever")))
        .await;
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "{}", page.body);
    assert!(page.body.contains("cannot be reached"), "{}", page.body);
}

#[tokio::test]
async fn with_the_idp_down_at_start_sign_in_pages_say_so() {
    // Reserve a port, then free it: nothing listens there.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", dead.local_addr().unwrap());
    drop(dead);
    let app = Upstream::start("app").await;
    let config = format!(
        "[oidc]\nissuer = \"{issuer}\"\nclient_id = \"portcullis\"\n\
         [[routes]]\nname = \"app\"\nupstream = \"{}\"\n\
         [[routes]]\nname = \"other\"\npath_prefix = \"/other\"\nupstream = \"{}\"\n",
        app.url(),
        app.url()
    );
    let server = TestServer::start_unready("", &config, &[("app.toml", POLICY)]).await;
    let browser = CookieClient::new();
    let mut page = browser.get(&format!("{}/data", server.url)).await;
    for _ in 0..100 {
        if page.status != StatusCode::NOT_FOUND && page.status != StatusCode::BAD_GATEWAY {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        page = browser.get(&format!("{}/data", server.url)).await;
    }
    assert_eq!(page.status, StatusCode::SERVICE_UNAVAILABLE, "{}", page.body);
    assert!(
        page.body.contains("identity provider cannot be reached"),
        "{}",
        page.body
    );
    assert!(page.headers["content-type"].to_str().unwrap().starts_with("text/html"));
    let (_, ready) = server.readyz().await;
    assert!(ready["sign_in"].as_str().unwrap().contains("not reachable"), "{ready}");
}

#[tokio::test]
async fn refresh_tokens_are_used_and_a_refused_refresh_ends_the_session() {
    let w = world_with(Options {
        scopes: r#"["openid", "email", "offline_access"]"#,
        token_ttl: Duration::from_secs(2),
    })
    .await;
    w.user("alice@example.com", &["readers"]).await;
    let browser = CookieClient::new();
    assert_eq!(
        w.visit_signing_in(&browser, "/data", "alice", "alice-pw").await.status,
        StatusCode::OK
    );
    let before = w.idp_handle.stats().refresh_grants;
    tokio::time::sleep(Duration::from_millis(2200)).await;
    // This request finds the tokens lapsed and refreshes in the background.
    assert_eq!(browser.get(&w.url("/data")).await.status, StatusCode::OK);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while w.idp_handle.stats().refresh_grants == before && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(w.idp_handle.stats().refresh_grants > before, "a refresh grant was used");

    // The IdP withdraws the grant: the next due refresh ends the session.
    w.idp_handle.revoke_refresh_tokens("alice");
    tokio::time::sleep(Duration::from_millis(2200)).await;
    assert_eq!(browser.get(&w.url("/data")).await.status, StatusCode::OK);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let page = browser
            .send(
                Method::GET,
                &w.url("/data"),
                &[("accept", "application/json")],
                Bytes::new(),
            )
            .await;
        if page.status == StatusCode::UNAUTHORIZED {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the session outlived its refused refresh"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Captures every log line of this test binary (debug level and up).
fn capture_logs() -> std::sync::Arc<parking_lot::Mutex<Vec<u8>>> {
    use std::sync::{Arc, OnceLock};
    static LOGS: OnceLock<Arc<parking_lot::Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(parking_lot::Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter("debug")
            .with_writer(move || Sink(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one subscriber per test binary");
        logs
    })
    .clone()
}

struct Sink(std::sync::Arc<parking_lot::Mutex<Vec<u8>>>);

impl std::io::Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_code_token_cookie_or_secret_reaches_the_logs() {
    let logs = capture_logs();
    let w = world_with(Options {
        scopes: r#"["openid", "email", "offline_access"]"#,
        token_ttl: Duration::from_secs(2),
    })
    .await;
    w.user("alice@example.com", &["readers"]).await;
    let browser = CookieClient::new();
    let to_idp = browser.get(&w.url("/data")).await.location().unwrap();
    let form = browser.get(&to_idp).await;
    let callback = w
        .submit_login(&browser, &form, "alice", "alice-pw")
        .await
        .location()
        .unwrap();
    let code = url::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .unwrap()
        .1
        .into_owned();
    assert_eq!(
        browser.follow(browser.get(&callback).await).await.status,
        StatusCode::OK
    );
    let cookie = browser.cookie(&w.server.url, COOKIE).unwrap();
    // A refresh, a bad cookie, a logout: more paths that could log.
    tokio::time::sleep(Duration::from_millis(2200)).await;
    browser.get(&w.url("/data")).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while w.idp_handle.stats().refresh_grants == 0 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    CookieClient::new()
        .send(
            Method::GET,
            &w.url("/data"),
            &[("cookie", &format!("{COOKIE}={}", "B".repeat(43)))],
            Bytes::new(),
        )
        .await;
    let csrf = browser.get(&w.url("/.portcullis/logout")).await.input("csrf").unwrap();
    browser
        .post_form(&w.url("/.portcullis/logout"), &[("csrf", &csrf)])
        .await;

    let text = String::from_utf8_lossy(&logs.lock()).into_owned();
    assert!(text.contains("signed in"), "the flow was logged at all: {text}");
    for (what, secret) in [
        ("authorization code", code.as_str()),
        ("session cookie", cookie.as_str()),
        ("client secret", "s3cret"),
        ("logout token", csrf.as_str()),
        ("a JWT", "eyJ"),
        ("a password", "alice-pw"),
    ] {
        assert!(!text.contains(secret), "{what} in the logs");
    }
}
