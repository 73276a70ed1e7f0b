//! The proxy end to end on real sockets: a real Portcullis (in-process, on
//! `127.0.0.1:0`), a real upstream that reports what reached it, a real
//! OIDC issuer serving discovery and JWKS, and SCIM provisioning over HTTP.
//!
//! Each test provisions its users through SCIM and then asks through the
//! proxy, so what is checked is the whole path: token -> directory user ->
//! groups -> roles -> decision -> forwarded request.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use portcullis_oidc::testing::{Alg, TestIssuer};
use portcullis_tests::upstream::Upstream;
use portcullis_tests::{OKTA_TOKEN, ScimClient, TestServer, http_client};
use serde_json::{Value, json};

const POLICY: &str = r#"
[roles.reader]
allow = [{ route = "app", methods = ["GET", "HEAD"], paths = ["/data/**", "/ws"] }]
deny = [{ route = "app", paths = ["/data/secret/**"] }]

[roles.writer]
allow = [{ route = "app", methods = ["POST", "PUT"], paths = ["/data/**", "/upload"] }]

[roles.other]
allow = [{ route = "other", paths = ["/**"] }]

[public]
allow = [{ route = "app", methods = ["GET"], paths = ["/public/**"] }]

[groups]
"readers" = ["reader", "other"]
"writers" = ["writer"]
"#;

/// A proxy in front of one upstream ("app" on `/`) and a second one
/// ("other" on `other.test`), trusting tokens from `idp`.
struct World {
    server: TestServer,
    idp: TestIssuer,
    _app: Upstream,
    _other: Upstream,
    scim: ScimClient,
}

async fn world_with(route_extra: &str) -> World {
    let idp = TestIssuer::start().await;
    let app = Upstream::start("app").await;
    let other = Upstream::start("other").await;
    let config = format!(
        "[oidc]\nissuer = \"{}\"\naudiences = [\"portcullis-test\"]\n\
         [[routes]]\nname = \"app\"\nupstream = \"{}\"\n{route_extra}\n\
         [[routes]]\nname = \"other\"\nhost = \"other.test\"\nupstream = \"{}\"\n",
        idp.issuer(),
        app.url(),
        other.url(),
    );
    let server = TestServer::start(&config, &[("app.toml", POLICY)]).await;
    let scim = server.scim(OKTA_TOKEN);
    World {
        server,
        idp,
        _app: app,
        _other: other,
        scim,
    }
}

async fn world() -> World {
    world_with("").await
}

impl World {
    /// Provisions a user (and their group memberships); returns the user id.
    async fn user(&self, user_name: &str, groups: &[&str]) -> String {
        let id = self
            .scim
            .create_user(json!({
                "userName": user_name,
                "displayName": format!("User {user_name}"),
                "emails": [{"value": user_name, "primary": true}],
                "active": true,
            }))
            .await;
        for g in groups {
            self.add_to_group(g, &id).await;
        }
        id
    }

    async fn add_to_group(&self, name: &str, user_id: &str) {
        self.scim.add_member(name, user_id).await;
    }

    async fn remove_from_group(&self, name: &str, user_id: &str) {
        self.scim.remove_member(name, user_id).await;
    }

    async fn set_active(&self, user_id: &str, active: bool) {
        self.scim.set_active(user_id, active).await;
    }

    fn token(&self, email: &str) -> String {
        self.idp.mint(Alg::Es256, json!({"sub": email, "email": email}))
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(Method::GET, path, token, &[], Bytes::new()).await
    }

    /// A GET for another host (the second route).
    async fn get_on(&self, host: &str, path: &str, token: &str) -> Reply {
        self.send(Method::GET, path, Some(token), &[("host", host)], Bytes::new())
            .await
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Reply {
        send(&self.server.url, method, path, token, headers, body).await
    }
}

/// An upstream that answers the first request on each connection and
/// closes the connection when the second arrives, unanswered: what a
/// keep-alive timeout crossing a reused connection looks like from the
/// proxy. An idempotent request without a body on a connection idle for a
/// second or more is sent again on a new connection; anything else gets
/// the 502 it would get from a failing upstream.
#[tokio::test]
async fn a_keep_alive_close_crossing_an_idle_connection_is_retried_when_idempotent() {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    // (connection number, request line), in arrival order.
    let seen: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let log = seen.clone();
    let task = tokio::spawn(async move {
        let mut n = 0;
        while let Ok((mut conn, _)) = listener.accept().await {
            n += 1;
            let log = log.clone();
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                for nth in 0.. {
                    let head_end = loop {
                        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => got.extend_from_slice(&buf[..k]),
                        }
                    };
                    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
                    let line = head.lines().next().unwrap_or_default().to_owned();
                    log.lock().expect("log").push((n, line.clone()));
                    if nth > 0 {
                        return; // closed, unanswered
                    }
                    let length: usize = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().to_owned())
                        })
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    while got.len() < head_end + length {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(k) => got.extend_from_slice(&buf[..k]),
                        }
                    }
                    got.drain(..head_end + length);
                    let body = line.split(' ').nth(1).unwrap_or_default().to_owned();
                    let answer = format!("HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}", body.len());
                    if conn.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    let idp = TestIssuer::start().await;
    let config = format!(
        "[oidc]\nissuer = \"{}\"\naudiences = [\"portcullis-test\"]\n\
         [[routes]]\nname = \"app\"\nupstream = \"http://{upstream}\"\n",
        idp.issuer(),
    );
    let policy = "[public]\nallow = [{ route = \"app\", paths = [\"/**\"] }]\n";
    // One worker, one pool: every request finds the connection the last
    // one freed.
    let server = TestServer::start_full("workers = 1", &config, &[("app.toml", policy)]).await;
    let ask = |method: Method, path: &'static str, body: &'static str| {
        let base = server.url.clone();
        async move {
            let r = send(&base, method, path, None, &[], Bytes::from_static(body.as_bytes())).await;
            (r.status, r.text)
        }
    };
    let idle = || tokio::time::sleep(Duration::from_millis(1200));
    let lines = |seen: &Mutex<Vec<(usize, String)>>, target: &str| -> Vec<usize> {
        let seen = seen.lock().expect("log");
        seen.iter()
            .filter(|(_, line)| line.split(' ').nth(1) == Some(target))
            .map(|(n, _)| *n)
            .collect()
    };

    assert_eq!(ask(Method::GET, "/a", "").await, (StatusCode::OK, "/a".into()));
    idle().await;
    // Connection 1 closes under it: sent again, on connection 2.
    assert_eq!(ask(Method::GET, "/b", "").await, (StatusCode::OK, "/b".into()));
    assert_eq!(lines(&seen, "/b"), [1, 2]);
    idle().await;
    // Not idempotent with a body: once only, and a 502.
    let (status, _) = ask(Method::POST, "/c", "x").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(lines(&seen, "/c"), [2]);
    // A PUT without a body is idempotent (connection 3 answers /d, closes
    // under /e, and connection 4 answers it).
    assert_eq!(ask(Method::GET, "/d", "").await, (StatusCode::OK, "/d".into()));
    idle().await;
    assert_eq!(ask(Method::PUT, "/e", "").await, (StatusCode::OK, "/e".into()));
    assert_eq!(lines(&seen, "/e"), [3, 4]);
    // A connection reused at once that closes instead of answering is a
    // failing upstream, not the race: no second attempt.
    let (status, _) = ask(Method::GET, "/f", "").await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_eq!(lines(&seen, "/f"), [4]);
    // Both second attempts are counted.
    let scraped = scrape(&server).await;
    assert_eq!(
        sample(&scraped, "portcullis_upstream_retries_total", &[("route", "app")]),
        Some(2.0)
    );
    task.abort();
}

/// What came back through the proxy.
#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Value,
    text: String,
}

impl Reply {
    /// The headers the upstream received, from its echo.
    fn upstream_headers(&self, name: &str) -> Vec<String> {
        self.body["headers"]
            .as_array()
            .map(|hs| {
                hs.iter()
                    .filter(|h| h[0] == name)
                    .filter_map(|h| h[1].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn upstream_header(&self, name: &str) -> Option<String> {
        let all = self.upstream_headers(name);
        assert!(
            all.len() <= 1,
            "{name} reached the upstream {} times: {all:?}",
            all.len()
        );
        all.into_iter().next()
    }
}

async fn send(
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Bytes,
) -> Reply {
    let mut req = Request::builder().method(method).uri(format!("{base}{path}"));
    if let Some(t) = token {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = http_client()
        .request(req.body(Full::new(body)).expect("request"))
        .await
        .expect("request through the proxy");
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.expect("body").to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    Reply {
        status,
        headers,
        body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        text,
    }
}

/// One case of the access table: who asks for what, and what they get.
struct Case<'a> {
    what: &'a str,
    method: Method,
    path: &'a str,
    token: Option<String>,
    status: StatusCode,
    /// The `error` code of a refusal, or the upstream that answered.
    code: &'a str,
}

async fn check(w: &World, case: Case<'_>) {
    let r = w
        .send(case.method.clone(), case.path, case.token.as_deref(), &[], Bytes::new())
        .await;
    assert_eq!(
        r.status, case.status,
        "{}: {} {} -> {}",
        case.what, case.method, case.path, r.text
    );
    let code = if r.status.is_success() {
        r.body["upstream"].as_str().unwrap_or_default()
    } else {
        r.body["error"].as_str().unwrap_or_default()
    };
    assert_eq!(code, case.code, "{}: {}", case.what, r.text);
    assert!(r.headers.contains_key("x-request-id"), "{}: no request id", case.what);
    if !r.status.is_success() {
        assert_eq!(
            r.body["request_id"].as_str(),
            r.headers["x-request-id"].to_str().ok(),
            "{}",
            case.what
        );
    }
}

#[tokio::test]
async fn access_follows_directory_groups_and_policy() {
    let w = world().await;
    w.user("reader@example.com", &["readers"]).await;
    w.user("writer@example.com", &["writers"]).await;
    w.user("nobody@example.com", &[]).await;
    let off = w.user("gone@example.com", &["readers"]).await;
    w.set_active(&off, false).await;
    let reader = Some(w.token("reader@example.com"));
    let writer = Some(w.token("writer@example.com"));
    let cases = [
        ("anonymous public", Method::GET, "/public/logo.png", None, 200, "app"),
        ("anonymous private", Method::GET, "/data/x", None, 401, "missing_token"),
        ("reader reads", Method::GET, "/data/x", reader.clone(), 200, "app"),
        ("reader head", Method::HEAD, "/data/x", reader.clone(), 200, ""),
        (
            "reader writes",
            Method::POST,
            "/data/x",
            reader.clone(),
            403,
            "no_role_allows",
        ),
        (
            "reader secret",
            Method::GET,
            "/data/secret/k",
            reader.clone(),
            403,
            "denied_by_rule",
        ),
        ("writer writes", Method::POST, "/data/x", writer.clone(), 200, "app"),
        (
            "writer reads",
            Method::GET,
            "/data/x",
            writer.clone(),
            403,
            "no_role_allows",
        ),
        (
            "no groups",
            Method::GET,
            "/data/x",
            Some(w.token("nobody@example.com")),
            403,
            "no_role_allows",
        ),
        (
            "not provisioned",
            Method::GET,
            "/data/x",
            Some(w.token("stranger@example.com")),
            403,
            "not_provisioned",
        ),
        (
            "deactivated",
            Method::GET,
            "/data/x",
            Some(w.token("gone@example.com")),
            403,
            "deactivated",
        ),
        (
            "reserved path",
            Method::GET,
            "/.portcullis/nothing",
            reader.clone(),
            404,
            "no_route",
        ),
        (
            "dot segments",
            Method::GET,
            "/public/../data/secret/k",
            None,
            401,
            "missing_token",
        ),
        (
            "encoded dots",
            Method::GET,
            "/data/%2e%2e/data/secret/k",
            reader.clone(),
            403,
            "denied_by_rule",
        ),
        (
            "double slash",
            Method::GET,
            "/data//secret/k",
            reader.clone(),
            403,
            "denied_by_rule",
        ),
        (
            "encoded slash",
            Method::GET,
            "/data/secret%2Fk",
            reader.clone(),
            400,
            "bad_path",
        ),
        (
            "backslash",
            Method::GET,
            "/data\\secret/k",
            reader.clone(),
            400,
            "bad_path",
        ),
    ];
    for (what, method, path, token, status, code) in cases {
        check(
            &w,
            Case {
                what,
                method,
                path,
                token,
                status: StatusCode::from_u16(status).expect("status"),
                code,
            },
        )
        .await;
    }
}

#[tokio::test]
async fn a_refusal_says_why_and_how_to_authenticate() {
    let w = world().await;
    w.user("reader@example.com", &["readers"]).await;
    let r = w.get("/data/x", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"portcullis\"");
    let r = w.get("/data/x", Some("not-a-jwt")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let challenge = r.headers["www-authenticate"].to_str().expect("ascii");
    assert!(challenge.contains("error=\"invalid_token\""), "{challenge}");

    let token = w.token("reader@example.com");
    let r = w.send(Method::DELETE, "/data/x", Some(&token), &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let message = r.body["message"].as_str().expect("message");
    assert!(message.contains("DELETE /data/x on app"), "{message}");
    assert!(message.contains("reader"), "{message}");

    // A browser gets a page, not JSON.
    let r = w
        .send(
            Method::DELETE,
            "/data/x",
            Some(&token),
            &[("accept", "text/html")],
            Bytes::new(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(
        r.headers["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    assert!(r.text.contains("<h1>403 Forbidden</h1>"), "{}", r.text);
}

#[tokio::test]
async fn forged_and_stale_tokens_are_refused() {
    let w = world().await;
    w.user("reader@example.com", &["readers"]).await;
    let claims = |extra: Value| {
        let mut c = json!({"sub": "reader@example.com", "email": "reader@example.com"});
        for (k, v) in extra.as_object().expect("object") {
            c[k] = v.clone();
        }
        c
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let cases: Vec<(&str, String)> = vec![
        ("alg none", w.idp.mint_alg_none(claims(json!({})))),
        (
            "hs256 with the public key",
            w.idp.mint_hs256_with_public_key(claims(json!({}))),
        ),
        ("unknown kid", w.idp.mint_unknown_kid(Alg::Es256, claims(json!({})))),
        ("expired", w.idp.mint(Alg::Es256, claims(json!({"exp": now - 600})))),
        (
            "not yet valid",
            w.idp.mint(Alg::Es256, claims(json!({"nbf": now + 600}))),
        ),
        (
            "wrong audience",
            w.idp.mint(Alg::Es256, claims(json!({"aud": "someone-else"}))),
        ),
        (
            "wrong issuer",
            w.idp
                .mint(Alg::Es256, claims(json!({"iss": "https://evil.example.com"}))),
        ),
        ("tampered", {
            let good = w.idp.mint(Alg::Rs256, claims(json!({})));
            let mut parts: Vec<String> = good.split('.').map(str::to_owned).collect();
            parts[1] = parts[1].chars().rev().collect();
            parts.join(".")
        }),
    ];
    for (what, token) in cases {
        let r = w.get("/data/x", Some(&token)).await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{what}: {}", r.text);
    }
    // A token whose bytes are not UTF-8 (HTTP allows such header bytes)
    // is refused as malformed, without a panic.
    {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut conn = tokio::net::TcpStream::connect(w.server.addr()).await.expect("connect");
        let request = b"GET /data/x HTTP/1.1\r\nhost: app.test\r\nconnection: close\r\naccept: application/json\r\nauthorization: Bearer eyJ\xff\xfe.x.y\r\n\r\n";
        conn.write_all(request).await.expect("write");
        let mut answer = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), conn.read_to_end(&mut answer))
            .await
            .expect("an answer in time")
            .expect("read");
        let answer = String::from_utf8_lossy(&answer);
        assert!(answer.starts_with("HTTP/1.1 401 "), "{answer}");
        assert!(answer.contains("malformed_authorization"), "{answer}");
    }
    // Each supported algorithm works.
    for alg in [Alg::Rs256, Alg::Es256, Alg::EdDsa] {
        let r = w.get("/data/x", Some(&w.idp.mint(alg, claims(json!({}))))).await;
        assert_eq!(r.status, StatusCode::OK, "{alg:?}: {}", r.text);
    }
}

#[tokio::test]
async fn key_rotation_and_an_idp_outage_do_not_interrupt_service() {
    let w = world().await;
    w.user("reader@example.com", &["readers"]).await;
    let before = w.token("reader@example.com");
    assert_eq!(w.get("/data/x", Some(&before)).await.status, StatusCode::OK);

    w.idp.rotate();
    let after = w.token("reader@example.com");
    assert_eq!(
        w.get("/data/x", Some(&after)).await.status,
        StatusCode::OK,
        "new key after rotation"
    );

    w.idp.set_down(true);
    assert_eq!(
        w.get("/data/x", Some(&after)).await.status,
        StatusCode::OK,
        "known keys keep working while the IdP is down"
    );
    let fresh = w.idp.mint(
        Alg::Rs256,
        json!({"sub": "reader@example.com", "email": "reader@example.com", "x": 1}),
    );
    assert_eq!(
        w.get("/data/x", Some(&fresh)).await.status,
        StatusCode::OK,
        "an unseen token signed with a known key verifies without the IdP"
    );
}

#[tokio::test]
async fn scim_changes_apply_to_the_very_next_request() {
    let w = world().await;
    let id = w.user("reader@example.com", &["readers"]).await;
    let token = w.token("reader@example.com");
    assert_eq!(w.get("/data/x", Some(&token)).await.status, StatusCode::OK);

    w.remove_from_group("readers", &id).await;
    let r = w.get("/data/x", Some(&token)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.body["error"], "no_role_allows");

    w.add_to_group("readers", &id).await;
    assert_eq!(w.get("/data/x", Some(&token)).await.status, StatusCode::OK);

    w.set_active(&id, false).await;
    let r = w.get("/data/x", Some(&token)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["error"], "deactivated");

    w.set_active(&id, true).await;
    assert_eq!(w.get("/data/x", Some(&token)).await.status, StatusCode::OK);

    let r = w.scim.send(Method::DELETE, &format!("/Users/{id}"), None, &[]).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = w.get("/data/x", Some(&token)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["error"], "not_provisioned");
}

#[tokio::test]
async fn spoofed_identity_never_reaches_the_upstream() {
    let w = world().await;
    w.user("reader@example.com", &["readers", "unmapped-group"]).await;
    let token = w.token("reader@example.com");
    let spoofs = [
        ("X-Forwarded-User", "admin@example.com"),
        ("x_forwarded_user", "admin@example.com"),
        ("X-Forwarded-Email", "admin@example.com"),
        ("X-Forwarded-Groups", "admins"),
        ("X-Portcullis-User", "admin@example.com"),
        ("x-portcullis-user", "admin2@example.com"),
        ("X_Portcullis_Groups", "admins"),
        ("x-portcullis-roles", "admin"),
        ("x-portcullis-assertion", "forged"),
        ("x_forwarded_for", "6.6.6.6"),
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("Forwarded", "for=6.6.6.6"),
        ("Connection", "x-keep-me"),
        ("x-keep-me", "hop-by-hop"),
        ("x-request-id", "client-chosen"),
        ("x-custom", "kept"),
    ];
    let r = w
        .send(Method::GET, "/data/x", Some(&token), &spoofs, Bytes::new())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.upstream_header("x-portcullis-user").as_deref(),
        Some("reader@example.com")
    );
    assert_eq!(
        r.upstream_header("x-portcullis-email").as_deref(),
        Some("reader@example.com")
    );
    // Only groups the policy grants roles to are passed by default.
    assert_eq!(r.upstream_header("x-portcullis-groups").as_deref(), Some("readers"));
    assert_eq!(r.upstream_header("x-portcullis-roles").as_deref(), Some("other,reader"));
    assert_eq!(r.upstream_header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
    assert_eq!(r.upstream_header("x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(
        r.upstream_header("forwarded").as_deref(),
        Some(format!("for=127.0.0.1;proto=http;host=\"{}\"", w.server.addr()).as_str())
    );
    assert_eq!(
        r.upstream_header("x-request-id").as_deref(),
        r.headers["x-request-id"].to_str().ok()
    );
    assert_eq!(r.upstream_header("x-custom").as_deref(), Some("kept"));
    for gone in [
        "x_forwarded_user",
        "x-forwarded-user",
        "x-forwarded-email",
        "x-forwarded-groups",
        "x_portcullis_groups",
        "x_forwarded_for",
        "x-keep-me",
        "authorization",
        "keep-alive",
    ] {
        assert!(r.upstream_headers(gone).is_empty(), "{gone} reached the upstream");
    }
    assert!(
        r.headers.get("keep-alive").is_none(),
        "hop-by-hop response header passed back"
    );

    // The assertion verifies with the published keys and says who this is.
    let assertion = r.upstream_header("x-portcullis-assertion").expect("assertion");
    let jwks = send(
        &w.server.url,
        Method::GET,
        "/.portcullis/jwks.json",
        None,
        &[],
        Bytes::new(),
    )
    .await;
    assert_eq!(jwks.status, StatusCode::OK);
    let verified = portcullis_oidc::verify_with_jwks(
        &assertion,
        jwks.text.as_bytes(),
        &w.server.url,
        &["app".to_owned()],
        Duration::ZERO,
    )
    .expect("the assertion verifies with the published keys");
    let claims = Value::Object(verified.claims().clone());
    // Not for another audience, and not with another key set.
    assert!(
        portcullis_oidc::verify_with_jwks(
            &assertion,
            jwks.text.as_bytes(),
            &w.server.url,
            &["es".to_owned()],
            Duration::ZERO
        )
        .is_err()
    );
    let foreign = portcullis_oidc::AssertionSigner::generate(&w.server.url)
        .expect("signer")
        .jwks_json();
    assert!(
        portcullis_oidc::verify_with_jwks(&assertion, &foreign, &w.server.url, &["app".to_owned()], Duration::ZERO)
            .is_err()
    );
    assert_eq!(claims["sub"], "reader@example.com");
    assert_eq!(claims["aud"], "app");
    assert_eq!(claims["iss"], w.server.url);
    assert_eq!(claims["groups"], json!(["readers"]));
    assert_eq!(claims["roles"], json!(["other", "reader"]));

    // Anonymous public requests carry no identity at all.
    let r = w.send(Method::GET, "/public/x", None, &spoofs, Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK);
    for gone in [
        "x-portcullis-user",
        "x-portcullis-assertion",
        "x-forwarded-user",
        "x_forwarded_user",
    ] {
        assert!(
            r.upstream_headers(gone).is_empty(),
            "{gone} reached the upstream anonymously"
        );
    }
}

#[tokio::test]
async fn the_forwarded_path_is_the_normalized_one_and_routes_pick_upstreams() {
    let w = world().await;
    w.user("reader@example.com", &["readers"]).await;
    let token = w.token("reader@example.com");
    let r = w.get("/data/a/./b/../c%7e?q=%2F1", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["uri"], "/data/a/c~?q=%2F1");
    assert_eq!(r.body["upstream"], "app");

    let r = w.get_on("other.test", "/anything", &token).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["upstream"], "other");
    assert_eq!(r.upstream_header("x-forwarded-host").as_deref(), Some("other.test"));
}

#[tokio::test]
async fn upstream_failures_are_502_and_504_without_details() {
    let idp = TestIssuer::start().await;
    // A port nothing listens on: bind, note, close.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let slow = Upstream::start("slow").await;
    let config = format!(
        "[oidc]\nissuer = \"{}\"\naudiences = [\"portcullis-test\"]\n\
         [[routes]]\nname = \"app\"\nupstream = \"http://{dead}\"\n\
         [[routes]]\nname = \"other\"\nhost = \"other.test\"\nupstream = \"{}\"\nresponse_timeout = \"300ms\"\n",
        idp.issuer(),
        slow.url(),
    );
    let server = TestServer::start(&config, &[("app.toml", POLICY)]).await;
    let w = World {
        scim: server.scim(OKTA_TOKEN),
        server,
        idp,
        _app: Upstream::start("unused").await,
        _other: slow,
    };
    w.user("reader@example.com", &["readers"]).await;
    let token = w.token("reader@example.com");
    let r = w.get("/data/x", Some(&token)).await;
    assert_eq!(r.status, StatusCode::BAD_GATEWAY, "{}", r.text);
    assert_eq!(r.body["error"], "bad_gateway");
    assert!(
        !r.text.contains(&dead.port().to_string()),
        "upstream address leaked: {}",
        r.text
    );

    let started = std::time::Instant::now();
    let r = w.get_on("other.test", "/slow?ms=3000", &token).await;
    assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "{}", r.text);
    assert!(started.elapsed() < Duration::from_secs(2), "timed out too late");

    // Response timers outlive their exchange and serve the next ones. A
    // kept timer's old deadline (300 ms after the quick exchanges) passes
    // 100 ms into the slow one: it must neither fire then nor miss the
    // slow one's own deadline, before and after it has fired once.
    for round in 0..2 {
        for _ in 0..3 {
            let r = w.get_on("other.test", "/slow?ms=0", &token).await;
            assert_eq!(r.status, StatusCode::OK, "round {round}: {}", r.text);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let started = std::time::Instant::now();
        let r = w.get_on("other.test", "/slow?ms=3000", &token).await;
        let took = started.elapsed();
        assert_eq!(r.status, StatusCode::GATEWAY_TIMEOUT, "round {round}: {}", r.text);
        assert!(
            took >= Duration::from_millis(290),
            "round {round}: timed out early, after {took:?}"
        );
        assert!(
            took < Duration::from_secs(2),
            "round {round}: timed out too late, after {took:?}"
        );
    }
}

#[tokio::test]
async fn bodies_stream_both_ways_and_limits_apply() {
    let w = world_with("max_request_body = 1048576").await;
    w.user("writer@example.com", &["writers", "readers"]).await;
    let token = w.token("writer@example.com");

    // 1 MiB exactly passes; one byte more is refused before the upstream.
    let r = w
        .send(
            Method::POST,
            "/upload",
            Some(&token),
            &[],
            Bytes::from(vec![0u8; 1 << 20]),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.text, (1u64 << 20).to_string());
    let r = w
        .send(
            Method::POST,
            "/upload",
            Some(&token),
            &[],
            Bytes::from(vec![0u8; (1 << 20) + 1]),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "{}", r.text);
    assert_eq!(r.body["error"], "payload_too_large");
}

/// A request refused before its body is read (413 by its declared length,
/// 401 without a token) ends its connection while the client is still
/// writing the body. The client must get to finish writing (as HTTP
/// clients such as hyper's report a failed write instead of the answer)
/// and then read the answer: the connection is not reset under it. The
/// body is well over what the sockets' buffers hold, so without lingering
/// the writes fail.
#[tokio::test]
async fn refused_requests_are_answered_while_the_client_still_sends_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let w = world_with("max_request_body = 1048576").await;
    w.user("writer@example.com", &["writers", "readers"]).await;
    let token = w.token("writer@example.com");
    const BODY: usize = 24 << 20;
    // (host, Authorization header, expected status): the app route limits
    // bodies to 1 MiB, the other route does not.
    let cases = [
        ("app.test", format!("Authorization: Bearer {token}\r\n"), 413),
        ("other.test", String::new(), 401),
    ];
    for (host, auth, expected) in cases {
        let stream = tokio::net::TcpStream::connect(w.server.addr()).await.expect("connect");
        let (mut rx, mut tx) = stream.into_split();
        let head = format!(
            "POST /upload HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Length: {BODY}\r\nAccept: application/json\r\n\r\n"
        );
        let written = tokio::time::timeout(Duration::from_secs(20), async move {
            tx.write_all(head.as_bytes()).await?;
            let chunk = vec![b'x'; 1 << 16];
            for _ in 0..BODY / chunk.len() {
                tx.write_all(&chunk).await?;
            }
            tx.shutdown().await
        })
        .await
        .expect("writing the body hangs");
        assert!(
            written.is_ok(),
            "the body could not be written ({expected} expected): {written:?}"
        );
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(20), rx.read_to_end(&mut answer))
            .await
            .expect("reading the answer hangs");
        let text = String::from_utf8_lossy(&answer);
        assert!(read.is_ok(), "reading the answer failed: {read:?}; got {text:?}");
        assert!(
            text.starts_with(&format!("HTTP/1.1 {expected} ")),
            "expected {expected}, got {text:?}"
        );
    }
}

#[tokio::test]
async fn upstream_credentials_run_as_assertion_in_authorization_and_opt_ins() {
    let idp = TestIssuer::start().await;
    let up = Upstream::start("es").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("es-proxy-user");
    std::fs::write(&secret, "portcullis-proxy:s3cret\n").expect("secret");
    let config = format!(
        "[oidc]\nissuer = \"{issuer}\"\naudiences = [\"portcullis-test\"]\n\
         [identity]\nclaim = \"email\"\nattribute = \"emails\"\n\
         [[routes]]\nname = \"es\"\npath_prefix = \"/es\"\nupstream = \"{up}\"\nrun_as_header = \"es-security-runas-user\"\n\
         [routes.credentials]\nbasic_file = \"{secret}\"\n\
         [[routes]]\nname = \"jwt\"\npath_prefix = \"/jwt\"\nupstream = \"{up}\"\nassertion_audience = \"es-prod\"\n\
         assertion_groups = \"all\"\n[routes.headers]\nassertion = \"authorization\"\ngroups = \"\"\n\
         [[routes]]\nname = \"fwd\"\npath_prefix = \"/fwd\"\nupstream = \"{up}\"\nforward_authorization = true\n",
        issuer = idp.issuer(),
        up = up.url(),
        secret = secret.display(),
    );
    let policy = r#"
[roles.staff]
allow = [{ route = "es", paths = ["/**"] }, { route = "jwt", paths = ["/**"] }, { route = "fwd", paths = ["/**"] }]
[groups]
"staff" = ["staff"]
"#;
    let server = TestServer::start_full("trusted_proxies = [\"127.0.0.1\"]", &config, &[("all.toml", policy)]).await;
    let w = World {
        scim: server.scim(OKTA_TOKEN),
        server,
        idp,
        _app: up,
        _other: Upstream::start("unused").await,
    };
    // Bound by email, not userName.
    let id = w
        .scim
        .create_user(json!({"userName": "alice", "emails": [{"value": "Alice@Corp.example", "type": "work"}]}))
        .await;
    w.add_to_group("staff", &id).await;
    w.add_to_group("unmapped", &id).await;
    let token = w.token("alice@corp.example");
    let spoofs = [
        ("es-security-runas-user", "elastic"),
        ("es_security_runas_user", "elastic"),
        ("x-forwarded-for", "203.0.113.9"),
        ("x-forwarded-proto", "https"),
    ];

    let r = w
        .send(Method::GET, "/es/_search", Some(&token), &spoofs, Bytes::new())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.upstream_header("authorization").as_deref(),
        Some("Basic cG9ydGN1bGxpcy1wcm94eTpzM2NyZXQ="),
        "the route's credentials replace the client's token"
    );
    assert_eq!(r.upstream_header("es-security-runas-user").as_deref(), Some("alice"));
    assert!(r.upstream_headers("es_security_runas_user").is_empty());
    // The peer is a trusted proxy: its forwarding headers are kept and extended.
    assert_eq!(
        r.upstream_header("x-forwarded-for").as_deref(),
        Some("203.0.113.9, 127.0.0.1")
    );
    assert_eq!(r.upstream_header("x-forwarded-proto").as_deref(), Some("https"));

    let r = w.get("/jwt/_search", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(
        r.upstream_headers("x-portcullis-groups").is_empty(),
        "disabled header sent"
    );
    let bearer = r.upstream_header("authorization").expect("assertion in Authorization");
    let assertion = bearer.strip_prefix("Bearer ").expect("bearer");
    let jwks = send(
        &w.server.url,
        Method::GET,
        "/.portcullis/jwks.json",
        None,
        &[],
        Bytes::new(),
    )
    .await;
    let verified = portcullis_oidc::verify_with_jwks(
        assertion,
        jwks.text.as_bytes(),
        &w.server.url,
        &["es-prod".to_owned()],
        Duration::ZERO,
    )
    .expect("assertion verifies");
    assert_eq!(verified.claim_str("sub"), Some("alice"));
    // The directory compares emails case-insensitively and hands them out folded.
    assert_eq!(verified.claim_str("email"), Some("alice@corp.example"));
    assert_eq!(verified.claims()["groups"], json!(["staff", "unmapped"]));

    let r = w.get("/fwd/x", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.upstream_header("authorization"), Some(format!("Bearer {token}")));
}

#[tokio::test]
async fn an_idp_down_from_the_start_gives_503_until_it_answers() {
    let idp = TestIssuer::start().await;
    idp.set_down(true);
    let app = Upstream::start("app").await;
    let config = format!(
        "[oidc]\nissuer = \"{}\"\naudiences = [\"portcullis-test\"]\n[[routes]]\nname = \"app\"\nupstream = \"{}\"\n\
         [[routes]]\nname = \"other\"\nhost = \"other.test\"\nupstream = \"{}\"\n",
        idp.issuer(),
        app.url(),
        app.url()
    );
    let server = TestServer::start_unready("", &config, &[("app.toml", POLICY)]).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // Wait until the server answers at all (not ready, as the IdP is down).
    let (status, body) = loop {
        if let Ok(r) = tokio::time::timeout(Duration::from_secs(1), server.readyz()).await {
            break r;
        }
        assert!(tokio::time::Instant::now() < deadline, "admin listener never answered");
    };
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["oidc"], "waiting for discovery and keys");

    let token = idp.mint(Alg::Es256, json!({"sub": "a", "email": "a@example.com"}));
    let r = send(&server.url, Method::GET, "/data/x", Some(&token), &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{}", r.text);
    assert_eq!(r.body["error"], "idp_unavailable");
    assert!(r.headers.contains_key("retry-after"));
    let r = send(&server.url, Method::GET, "/public/x", None, &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::OK, "public routes do not need the IdP");

    idp.set_down(false);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while server.readyz().await.0 != StatusCode::OK {
        assert!(
            tokio::time::Instant::now() < deadline,
            "never became ready after the IdP came back"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = send(&server.url, Method::GET, "/data/x", Some(&token), &[], Bytes::new()).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "{}", r.text);
    assert_eq!(r.body["error"], "not_provisioned");
}

/// The admin listener's `/metrics`, parsed as Prometheus text.
async fn scrape(server: &TestServer) -> prometheus_parse::Scrape {
    let resp = http_client()
        .request(
            Request::get(format!("http://{}/metrics", server.admin))
                .body(Full::new(Bytes::new()))
                .expect("request"),
        )
        .await
        .expect("scrape");
    assert_eq!(resp.status(), StatusCode::OK);
    let text = String::from_utf8(resp.into_body().collect().await.expect("body").to_bytes().to_vec()).expect("utf-8");
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition")
}

/// The value of one sample, by metric name and labels.
fn sample(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    scrape
        .samples
        .iter()
        .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(ref h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => f64::NAN,
        })
}

/// An idle HTTP/1.1 keep-alive connection is parked (its HTTP state
/// dropped) after 250 ms, shows in the metrics as such, and serves its
/// next request like any other.
#[tokio::test]
async fn idle_connections_are_parked_counted_and_still_served() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let w = world().await;
    w.user("reader@example.com", &["readers"]).await;
    let token = w.token("reader@example.com");
    let mut conn = tokio::net::TcpStream::connect(w.server.addr()).await.expect("connect");
    let request = format!("GET /data/x HTTP/1.1\r\nhost: app.test\r\nauthorization: Bearer {token}\r\n\r\n");
    let answer = async |conn: &mut tokio::net::TcpStream| {
        conn.write_all(request.as_bytes()).await.expect("write");
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        // The upstream echoes JSON; read until the head and a body of the
        // announced length are in.
        loop {
            let n = tokio::time::timeout(Duration::from_secs(5), conn.read(&mut buf))
                .await
                .expect("an answer in time")
                .expect("read");
            assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
            if let Some((head, body)) = text.split_once("\r\n\r\n") {
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .expect("content-length");
                if body.len() >= len {
                    return head.lines().next().unwrap_or_default().to_owned();
                }
            }
        }
    };
    assert!(answer(&mut conn).await.contains(" 200 "));
    let parked = async || {
        let m = scrape(&w.server).await;
        (
            sample(&m, "portcullis_client_connections_parked", &[]),
            sample(&m, "portcullis_client_connections_parks_total", &[]),
        )
    };
    let started = std::time::Instant::now();
    loop {
        let (now, ever) = parked().await;
        if now >= Some(1.0) && ever >= Some(1.0) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "never parked: {now:?} {ever:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The parked connection answers its next request, on the same socket.
    assert!(answer(&mut conn).await.contains(" 200 "));
    let m = scrape(&w.server).await;
    assert!(sample(&m, "portcullis_client_connections", &[]) >= Some(1.0));
}

#[tokio::test]
async fn metrics_count_decisions_scim_and_the_directory() {
    let w = world().await;
    w.user("reader@example.com", &["readers"]).await;
    let token = w.token("reader@example.com");
    for _ in 0..3 {
        assert_eq!(w.get("/data/x", Some(&token)).await.status, StatusCode::OK);
    }
    assert_eq!(
        w.get("/data/secret/x", Some(&token)).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(w.get("/data/x", None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(w.get("/public/x", None).await.status, StatusCode::OK);
    assert_eq!(w.get("/.portcullis/jwks.json", None).await.status, StatusCode::OK);

    // A SCIM call with a wrong token is counted without a client.
    let stranger = w.server.scim("not-a-token");
    assert_eq!(
        stranger.send(Method::GET, "/Users", None, &[]).await.status,
        StatusCode::UNAUTHORIZED
    );

    let m = scrape(&w.server).await;
    assert_eq!(
        sample(
            &m,
            "portcullis_scim_requests_total",
            &[
                ("client", "-"),
                ("operation", "list"),
                ("method", "GET"),
                ("status", "401")
            ]
        ),
        Some(1.0)
    );
    let requests = |decision: &str, status: &str| {
        sample(
            &m,
            "portcullis_requests_total",
            &[("route", "app"), ("decision", decision), ("status", status)],
        )
    };
    assert_eq!(requests("allow", "200"), Some(3.0));
    assert_eq!(requests("deny", "403"), Some(1.0));
    assert_eq!(requests("unauthenticated", "401"), Some(1.0));
    assert_eq!(requests("public", "200"), Some(1.0));
    assert_eq!(
        sample(
            &m,
            "portcullis_requests_total",
            &[("route", "-"), ("decision", "public"), ("status", "200")]
        ),
        Some(1.0),
        "Portcullis's own endpoints count as public, not as errors"
    );
    assert_eq!(sample(&m, "portcullis_directory_users", &[]), Some(1.0));
    assert_eq!(sample(&m, "portcullis_directory_groups", &[]), Some(1.0));
    // One user created, one group created (SCIM 201s), plus a lookup.
    assert_eq!(
        sample(
            &m,
            "portcullis_scim_requests_total",
            &[("operation", "create"), ("method", "POST"), ("status", "201")]
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&m, "portcullis_jwks_fetches_total", &[]).map(|v| v >= 1.0),
        Some(true)
    );
    assert_eq!(
        sample(&m, "portcullis_jwt_signature_checks_total", &[]),
        Some(1.0),
        "the token is verified once"
    );
    let upstream_count = m
        .samples
        .iter()
        .find(|s| s.metric == "portcullis_upstream_duration_seconds_count" && s.labels.get("route") == Some("app"))
        .map(|s| match s.value {
            prometheus_parse::Value::Untyped(v) | prometheus_parse::Value::Counter(v) => v,
            _ => f64::NAN,
        });
    assert_eq!(
        upstream_count,
        Some(4.0),
        "three allowed and one public request reached the upstream"
    );
}

#[tokio::test]
async fn me_shows_groups_and_roles_as_they_are_now() {
    let w = world().await;
    let id = w.user("reader@example.com", &["readers", "unmapped"]).await;
    let token = w.token("reader@example.com");
    let r = w.get("/.portcullis/me", None).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    let r = w.get("/.portcullis/me", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(r.body["user"], "reader@example.com");
    assert_eq!(r.body["id"], id.as_str());
    assert_eq!(r.body["active"], true);
    assert_eq!(r.body["roles"], json!(["other", "reader"]));
    assert_eq!(
        r.body["groups"],
        json!([
            {"name": "readers", "client": "okta", "grants_roles": true},
            {"name": "unmapped", "client": "okta", "grants_roles": false},
        ])
    );

    w.remove_from_group("readers", &id).await;
    let r = w.get("/.portcullis/me", Some(&token)).await;
    assert_eq!(r.body["roles"], json!([]), "{}", r.text);
    assert_eq!(
        r.body["groups"],
        json!([{"name": "unmapped", "client": "okta", "grants_roles": false}])
    );

    w.set_active(&id, false).await;
    let r = w.get("/.portcullis/me", Some(&token)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(r.body["error"], "deactivated");
}

#[tokio::test]
async fn an_email_the_idp_has_not_verified_binds_nobody() {
    let w = world().await;
    w.user("reader@example.com", &["readers"]).await;
    let mint = |verified: Option<Value>| {
        let mut claims = json!({"sub": "r", "email": "reader@example.com"});
        if let Some(v) = verified {
            claims["email_verified"] = v;
        }
        w.idp.mint(Alg::Es256, claims)
    };
    for (verified, status) in [
        (None, StatusCode::OK),
        (Some(json!(true)), StatusCode::OK),
        (Some(json!("true")), StatusCode::OK),
        (Some(json!(false)), StatusCode::FORBIDDEN),
        (Some(json!("False")), StatusCode::FORBIDDEN),
    ] {
        let r = w.get("/data/x", Some(&mint(verified.clone()))).await;
        assert_eq!(r.status, status, "email_verified = {verified:?}: {}", r.text);
        if status == StatusCode::FORBIDDEN {
            assert_eq!(r.body["error"], "email_unverified", "{}", r.text);
        }
    }

    // An operator who binds by email on purpose can turn the check off.
    let lenient = world_with("\n[identity]\nrequire_verified_email = false\n").await;
    lenient.user("reader@example.com", &["readers"]).await;
    let token = lenient.idp.mint(
        Alg::Es256,
        json!({"sub": "r", "email": "reader@example.com", "email_verified": false}),
    );
    assert_eq!(lenient.get("/data/x", Some(&token)).await.status, StatusCode::OK);
}

#[tokio::test]
async fn the_email_passed_upstream_is_the_primary_one() {
    let w = world().await;
    let id = w
        .scim
        .create_user(json!({
            "userName": "multi@example.com",
            "emails": [
                {"value": "old-address@example.com", "type": "home"},
                {"value": "Main.Address@Example.com", "type": "work", "primary": "True"},
            ],
        }))
        .await;
    w.scim.add_member("readers", &id).await;
    let token = w.token("multi@example.com");
    let r = w.get("/data/x", Some(&token)).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_eq!(
        r.upstream_header("x-portcullis-email").as_deref(),
        Some("main.address@example.com")
    );
}

/// An upstream that closes every connection right after its answer (while
/// saying nothing of it, as some servers and load balancers do): pooled
/// connections it has closed are never used, so every request gets its
/// answer.
#[tokio::test]
async fn upstream_connections_closed_after_each_answer_are_not_reused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = accepted.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tokio::spawn(async move {
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = conn.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok").await;
                // Closed a moment later (so the proxy has pooled the
                // connection by then), without a `Connection: close`.
                tokio::time::sleep(Duration::from_millis(5)).await;
            });
        }
    });
    let idp = TestIssuer::start().await;
    let config = format!(
        "[oidc]\nissuer = \"{}\"\naudiences = [\"portcullis-test\"]\n\
         [[routes]]\nname = \"app\"\nupstream = \"http://{upstream}\"\n\
         [[routes]]\nname = \"other\"\nhost = \"other.test\"\nupstream = \"http://{upstream}\"\n",
        idp.issuer(),
    );
    let server = TestServer::start(&config, &[("app.toml", POLICY)]).await;
    let client = http_client();
    for i in 0..20 {
        let resp = client
            .request(
                Request::get(format!("{}/public/{i}", server.url))
                    .body(Full::new(Bytes::new()))
                    .expect("request"),
            )
            .await
            .expect("response");
        assert_eq!(resp.status(), StatusCode::OK, "request {i}");
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        assert_eq!(&body[..], b"ok");
        // Time for the close to reach the proxy's pool.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::Relaxed),
        20,
        "one upstream connection per request"
    );
    task.abort();
}
