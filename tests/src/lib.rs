//! Shared helpers for Portcullis's integration tests.
//!
//! The tests themselves live in `tests/` of this package: each file is one
//! area (crash safety, concurrency, SCIM provisioning, ...). Helper binaries
//! that tests run as real child processes live in `src/bin/`.
//!
//! [`TestServer`] runs the real `portcullis::app::run` in-process on
//! listeners bound to `127.0.0.1:0`, with a store in a temporary directory,
//! and stops it when dropped.

pub mod e2e;
pub mod jar;
pub mod pki;
pub mod upstream;
pub mod webhook;

use std::path::Path;

use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Map, Value};

/// A JSON object from a `json!` literal; panics on anything else, which in a
/// test is a bug in the test.
pub fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not a JSON object: {other}"),
    }
}

/// SCIM clients every test server knows, with their bearer tokens.
pub const OKTA_TOKEN: &str = "okta-test-token";
pub const ENTRA_TOKEN: &str = "entra-test-token";

/// A running Portcullis.
#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:port`
    pub url: String,
    /// `127.0.0.1:port` of the admin listener.
    pub admin: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    /// Starts Portcullis with two SCIM clients (`okta`, `entra`), the given
    /// extra configuration and policy files.
    pub async fn start(extra_config: &str, policies: &[(&str, &str)]) -> TestServer {
        Self::start_full("", extra_config, policies).await
    }

    /// Like [`Self::start`], with extra keys for the `[server]` table.
    pub async fn start_full(server_extra: &str, extra_config: &str, policies: &[(&str, &str)]) -> TestServer {
        let s = Self::start_unready(server_extra, extra_config, policies).await;
        s.wait_ready().await;
        s
    }

    /// Starts the server without waiting for `/readyz` (for tests of a
    /// server that cannot become ready, such as one whose IdP is down).
    pub async fn start_unready(server_extra: &str, extra_config: &str, policies: &[(&str, &str)]) -> TestServer {
        let server = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        Self::start_on(server, server_extra, extra_config, policies).await
    }

    /// Starts the server on a listener the test bound itself (so that its
    /// URL can go into an identity provider's client registration first).
    /// Does not wait for `/readyz`.
    pub async fn start_on(
        server: tokio::net::TcpListener,
        server_extra: &str,
        extra_config: &str,
        policies: &[(&str, &str)],
    ) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let policy_dir = dir.path().join("policies");
        std::fs::create_dir(&policy_dir).expect("policies dir");
        for (name, text) in policies {
            std::fs::write(policy_dir.join(name), text).expect("policy file");
        }
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
        let url = format!("http://{}", server.local_addr().expect("addr"));
        let admin_addr = admin.local_addr().expect("admin addr").to_string();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\npublic_url = \"{url}\"\n{server_extra}\n[admin]\nlisten = \"127.0.0.1:0\"\n\
             [store]\npath = \"data\"\n\
             [[scim.clients]]\nname = \"okta\"\ntoken_sha256 = \"{}\"\n\
             [[scim.clients]]\nname = \"entra\"\ntoken_sha256 = \"{}\"\n{extra_config}",
            portcullis_scim::auth::token_sha256_hex(OKTA_TOKEN),
            portcullis_scim::auth::token_sha256_hex(ENTRA_TOKEN),
        );
        let config = portcullis::config::Config::parse(&text, Path::new("test.toml"), dir.path())
            .unwrap_or_else(|e| panic!("test config: {e}"));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let listeners = portcullis::app::Listeners { server, admin };
        let task = tokio::spawn(async move {
            let shutdown = async {
                let _ = stopped.await;
            };
            if let Err(e) = portcullis::app::run(config, listeners, shutdown).await {
                panic!("portcullis stopped with an error: {e}");
            }
        });
        TestServer {
            url,
            admin: admin_addr,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// `/readyz` of the admin listener: status and body.
    pub async fn readyz(&self) -> (StatusCode, Value) {
        get_json(&format!("http://{}/readyz", self.admin)).await
    }

    /// Waits until `/readyz` answers 200 (20 s at most).
    pub async fn wait_ready(&self) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            let ready = http_client()
                .request(
                    http::Request::get(format!("http://{}/readyz", self.admin))
                        .body(Full::new(Bytes::new()))
                        .expect("request"),
                )
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK);
            if ready {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "server did not become ready");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// A SCIM client speaking as the client with this token.
    pub fn scim(&self, token: &str) -> ScimClient {
        ScimClient {
            base: format!("{}/scim/v2", self.url),
            token: Some(token.to_owned()),
            http: http_client(),
        }
    }

    /// The directory's view of a user, through the admin listener.
    pub async fn principal(&self, user_name: &str) -> (StatusCode, Value) {
        get_json(&format!(
            "http://{}/v1/principal?user={}",
            self.admin,
            encode(user_name)
        ))
        .await
    }

    /// Stops the server and waits for it to finish.
    /// The directory the server's relative paths resolve against.
    pub fn dir(&self) -> &Path {
        self._dir.path()
    }

    /// The proxy listener's address.
    pub fn addr(&self) -> std::net::SocketAddr {
        self.url.trim_start_matches("http://").parse().expect("server address")
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task");
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An HTTP client with a connection pool.
pub fn http_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// Percent-encodes a query parameter value.
pub fn encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

async fn get_json(url: &str) -> (StatusCode, Value) {
    let resp = http_client()
        .request(http::Request::get(url).body(Full::new(Bytes::new())).expect("request"))
        .await
        .expect("GET");
    let status = resp.status();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&body).unwrap_or(Value::Null))
}

/// A SCIM response: status, headers and the JSON body (`Null` if empty).
#[derive(Debug)]
pub struct ScimResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Value,
}

/// A minimal SCIM client for tests. Clones share one connection pool, so
/// requests reuse keep-alive connections as a real IdP's would.
#[derive(Debug, Clone)]
pub struct ScimClient {
    pub base: String,
    pub token: Option<String>,
    pub http: Client<HttpConnector, Full<Bytes>>,
}

impl ScimClient {
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> ScimResponse {
        let (status, headers, body) = self.send_raw(method, path, body, headers).await;
        let body = if body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&body).unwrap_or_else(|e| panic!("non-JSON SCIM body ({e}): {body:?}"))
        };
        ScimResponse { status, headers, body }
    }

    /// [`Self::send`] without parsing the answer: its status, headers and
    /// body bytes (for load generators, which time the exchange alone).
    pub async fn send_raw(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, Bytes) {
        let mut req = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base))
            .header("accept", "application/scim+json");
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let bytes = match body {
            Some(b) => {
                req = req.header("content-type", "application/scim+json; charset=utf-8");
                Bytes::from(b.to_string())
            }
            None => Bytes::new(),
        };
        let resp = self
            .http
            .request(req.body(Full::new(bytes)).expect("request"))
            .await
            .expect("SCIM request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        (status, headers, body)
    }

    pub async fn get(&self, path: &str) -> ScimResponse {
        self.send(Method::GET, path, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> ScimResponse {
        self.send(Method::POST, path, Some(body), &[]).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> ScimResponse {
        self.send(Method::PUT, path, Some(body), &[]).await
    }

    pub async fn patch(&self, path: &str, body: &Value) -> ScimResponse {
        self.send(Method::PATCH, path, Some(body), &[]).await
    }

    pub async fn delete(&self, path: &str) -> ScimResponse {
        self.send(Method::DELETE, path, None, &[]).await
    }

    // ---- provisioning shortcuts for tests of what provisioning changes ----

    /// Creates a user from `user` (a JSON object; `schemas` is added) and
    /// returns its id; panics unless the server answers 201.
    pub async fn create_user(&self, user: Value) -> String {
        let mut doc = user;
        doc["schemas"] = serde_json::json!(["urn:ietf:params:scim:schemas:core:2.0:User"]);
        let r = self.post("/Users", &doc).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        r.body["id"].as_str().expect("id").to_owned()
    }

    /// The id of this client's group with this displayName, if any.
    pub async fn group_id(&self, display_name: &str) -> Option<String> {
        let filter = encode(&format!("displayName eq \"{display_name}\""));
        let r = self.get(&format!("/Groups?filter={filter}")).await;
        r.body["Resources"][0]["id"].as_str().map(str::to_owned)
    }

    /// Adds a user to a group, creating the group if it does not exist.
    pub async fn add_member(&self, group: &str, user_id: &str) {
        match self.group_id(group).await {
            Some(gid) => {
                self.patch_group(
                    &gid,
                    serde_json::json!({"op": "add", "path": "members", "value": [{"value": user_id}]}),
                )
                .await
            }
            None => {
                let r = self
                    .post(
                        "/Groups",
                        &serde_json::json!({
                            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
                            "displayName": group,
                            "members": [{"value": user_id}],
                        }),
                    )
                    .await;
                assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
            }
        }
    }

    /// Removes a user from an existing group.
    pub async fn remove_member(&self, group: &str, user_id: &str) {
        let gid = self.group_id(group).await.expect("group exists");
        let path = format!("members[value eq \"{user_id}\"]");
        self.patch_group(&gid, serde_json::json!({"op": "remove", "path": path}))
            .await;
    }

    async fn patch_group(&self, gid: &str, op: Value) {
        let r = self.patch(&format!("/Groups/{gid}"), &patch_op(op)).await;
        assert!(r.status.is_success(), "{}", r.body);
    }

    /// Sets a user's `active` flag the way Okta does.
    pub async fn set_active(&self, user_id: &str, active: bool) {
        let op = patch_op(serde_json::json!({"op": "replace", "value": {"active": active}}));
        let r = self.patch(&format!("/Users/{user_id}"), &op).await;
        assert!(r.status.is_success(), "{}", r.body);
    }
}

/// A SCIM PatchOp request with one operation.
fn patch_op(op: Value) -> Value {
    serde_json::json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": [op]})
}
