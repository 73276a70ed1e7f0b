//! Browser sign-in with a real browser and a real, certified OpenID
//! Provider: headless Debian chromium driven by playwright-core, the
//! `oidc-provider` npm package on loopback, a real Portcullis and upstream,
//! and SCIM provisioning over HTTP.
//!
//! Cases: sign in and land on the deep link first asked for, with the
//! session cookie's attributes as the browser stored them; logout through
//! the form and the IdP's end-session page; a user without the role gets
//! 403; group removal gives 403 on the next request while another route
//! still works; deactivation closes an open WebSocket within 1 s and the
//! next page load is denied.
//!
//! Skipped (with a `skipping:` line) when the harness is not installed,
//! unless `PORTCULLIS_E2E=require` (as `tests/run.sh` sets after running
//! `tests/e2e/setup.sh`).

use std::time::{Duration, Instant};

use portcullis_tests::e2e::{self, Browser, Op};
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

struct World {
    server: TestServer,
    scim: ScimClient,
    op: Op,
    browser: Browser,
    _app: Upstream,
    _other: Upstream,
}

async fn world() -> Option<World> {
    if !e2e::require_e2e() {
        return None;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let account = |name: &str| json!({"username": name, "password": format!("{name}-pw"), "email": format!("{name}@example.test"), "name": name});
    let op = Op::start(json!({
        "clients": [{
            "client_id": "portcullis",
            "client_secret": "e2e-secret",
            "redirect_uris": [format!("{url}/.portcullis/callback")],
            "post_logout_redirect_uris": [format!("{url}/.portcullis/signed-out")],
        }],
        "accounts": [account("alice"), account("bob")],
        "id_token_ttl": 300,
        "access_token_ttl": 300,
        "refresh_token_ttl": 3600,
    }))
    .await;
    let app = Upstream::start("app").await;
    let other = Upstream::start("other").await;
    let config = format!(
        "[oidc]\nissuer = \"{}\"\nclient_id = \"portcullis\"\nclient_secret = \"e2e-secret\"\n\
         scopes = [\"openid\", \"email\", \"profile\", \"offline_access\"]\n\
         [[routes]]\nname = \"app\"\nupstream = \"{}\"\n\
         [[routes]]\nname = \"other\"\npath_prefix = \"/other\"\nupstream = \"{}\"\n",
        op.issuer(),
        app.url(),
        other.url(),
    );
    let server = TestServer::start_on(listener, "", &config, &[("app.toml", POLICY)]).await;
    server.wait_ready().await;
    let scim = server.scim(OKTA_TOKEN);
    let browser = Browser::launch().await;
    Some(World {
        server,
        scim,
        op,
        browser,
        _app: app,
        _other: other,
    })
}

impl World {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.url)
    }

    async fn user(&self, name: &str, groups: &[&str]) -> String {
        let email = format!("{name}@example.test");
        let id = self
            .scim
            .create_user(json!({"userName": email, "emails": [{"value": email, "primary": true}], "active": true}))
            .await;
        for g in groups {
            self.scim.add_member(g, &id).await;
        }
        id
    }

    /// Opens `path`; if the IdP's login form shows, signs in as `name`.
    /// Returns the final status and URL. Sign-in discovery runs in the
    /// background, so the first navigation may find it not ready yet.
    async fn open(&mut self, path: &str, name: &str) -> e2e::Nav {
        let mut nav = self.browser.goto(&self.url(path)).await.unwrap();
        for _ in 0..100 {
            if nav.status != Some(503) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            nav = self.browser.goto(&self.url(path)).await.unwrap();
        }
        if nav.url.starts_with(self.op.issuer()) {
            self.browser.fill("#username", name).await.unwrap();
            self.browser.fill("#password", &format!("{name}-pw")).await.unwrap();
            nav = self.browser.click_nav("#sign-in").await.unwrap();
        }
        nav
    }

    async fn body(&mut self) -> String {
        self.browser.text().await.unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_lands_on_the_deep_link_and_logout_ends_both_sessions() {
    let Some(mut w) = world().await else { return };
    w.user("alice", &["readers"]).await;

    let nav = w.open("/reports/q3?year=2026", "alice").await;
    assert_eq!(nav.url, w.url("/reports/q3?year=2026"));
    assert_eq!(nav.status, Some(200));
    let body = w.body().await;
    assert!(body.contains("\"uri\":\"/reports/q3?year=2026\""), "{body}");
    assert!(
        body.contains("alice@example.test"),
        "identity header reached the upstream: {body}"
    );
    assert!(!body.contains("_portcullis"), "session cookie not forwarded: {body}");

    let cookies = w.browser.cookies(Some(&w.server.url)).await.unwrap();
    let session = cookies
        .iter()
        .find(|c| c.name == "_portcullis")
        .expect("session cookie");
    assert!(session.http_only);
    assert_eq!(session.same_site, "Lax");
    assert!(!session.secure, "plain-http public_url");
    assert!(session.value.len() < 100);
    assert!(
        !cookies.iter().any(|c| c.name.starts_with("_portcullis_signin_")),
        "the sign-in binding cookie is cleared: {cookies:?}"
    );

    // Logout: the confirmation form, then the IdP's end-session page.
    let nav = w.browser.goto(&w.url("/.portcullis/logout")).await.unwrap();
    assert_eq!(nav.status, Some(200));
    w.browser.click_nav("#sign-out").await.unwrap();
    let url = w.browser.url().await.unwrap();
    if url.starts_with(w.op.issuer()) {
        w.browser.click_nav("#logout-yes").await.unwrap();
    }
    let landed = w
        .browser
        .wait_url(&w.url("/.portcullis/signed-out"), Duration::from_secs(10))
        .await
        .unwrap();
    assert!(landed.starts_with(&w.url("/.portcullis/signed-out")), "{landed}");
    let cookies = w.browser.cookies(Some(&w.server.url)).await.unwrap();
    assert!(!cookies.iter().any(|c| c.name == "_portcullis"), "{cookies:?}");
    // Both sessions ended: the IdP asks for the password again.
    let nav = w.browser.goto(&w.url("/reports")).await.unwrap();
    assert!(nav.url.starts_with(w.op.issuer()), "back at the IdP: {}", nav.url);
    w.browser.text_of("#username").await.expect("login form");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_decide_and_a_group_removal_applies_on_the_next_request() {
    let Some(mut w) = world().await else { return };
    w.user("bob", &[]).await;
    let alice = w.user("alice", &["readers", "others"]).await;

    let nav = w.open("/data", "bob").await;
    assert_eq!(nav.status, Some(403));
    let body = w.body().await;
    assert!(body.contains("you have no role here"), "{body}");

    w.browser.new_context().await.unwrap();
    assert_eq!(w.open("/data", "alice").await.status, Some(200));
    assert_eq!(w.browser.goto(&w.url("/other/x")).await.unwrap().status, Some(200));
    w.scim.remove_member("readers", &alice).await;
    let nav = w.browser.goto(&w.url("/data")).await.unwrap();
    assert_eq!(nav.status, Some(403));
    assert_eq!(w.browser.goto(&w.url("/other/x")).await.unwrap().status, Some(200));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deactivation_closes_the_websocket_within_a_second_and_denies_the_next_page_load() {
    let Some(mut w) = world().await else { return };
    let alice = w.user("alice", &["readers"]).await;
    assert_eq!(w.open("/data", "alice").await.status, Some(200));

    let ws_url = w.url("/ws").replacen("http://", "ws://", 1);
    let state = w.browser.ws_open("live", &ws_url).await.unwrap();
    assert!(state.is_open(), "{state:?}");
    w.browser.ws_send("live", "ping").await.unwrap();
    w.browser
        .ws_wait("live", Duration::from_secs(5), |s| s.messages().contains(&"ping"))
        .await
        .unwrap();

    w.scim.set_active(&alice, false).await;
    let acknowledged = Instant::now();
    let closed = w
        .browser
        .ws_wait("live", Duration::from_secs(1), |s| s.ready_state == 3)
        .await
        .unwrap();
    let took = acknowledged.elapsed();
    assert!(took < Duration::from_secs(1), "closed after {took:?}: {closed:?}");

    // The next page load is denied (the IdP signs the browser straight back
    // in, and the directory says no).
    let nav = w.browser.goto(&w.url("/data")).await.unwrap();
    assert_eq!(nav.status, Some(403), "{}", nav.url);
    let body = w.body().await;
    assert!(body.contains("deactivated"), "{body}");
}
