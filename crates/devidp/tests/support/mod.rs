//! Test support: a provider with known clients and accounts, a tiny HTTP
//! client (redirects are not followed), a "browser" that keeps the
//! provider's session cookie, PKCE helpers, and an independent ES256 JWT
//! check against the published JWKS (ring only, not the crate's code).

#![allow(dead_code, unreachable_pub)]

use std::collections::HashMap;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use portcullis_devidp::{DevAccount, DevClient, DevIdp, DevIdpConfig, RunningDevIdp};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use url::Url;

pub const APP: &str = "app";
pub const APP_SECRET: &str = "app-secret";
pub const APP_REDIRECT: &str = "http://127.0.0.1:9/callback";
pub const APP_LOGOUT_REDIRECT: &str = "http://127.0.0.1:9/signed-out";
pub const SPA: &str = "spa";
pub const SPA_REDIRECT: &str = "http://127.0.0.1:9/spa/callback?from=devidp";

pub fn config() -> DevIdpConfig {
    let mut config = DevIdpConfig::demo(
        "127.0.0.1:0".parse().unwrap(),
        DevClient::confidential(APP, APP_SECRET, APP_REDIRECT).with_post_logout_redirect_uri(APP_LOGOUT_REDIRECT),
    );
    config.clients.push(DevClient::public(SPA, SPA_REDIRECT));
    config.accounts.push(DevAccount::new(
        "carol",
        "c&rol<pw>",
        "carol@example.com",
        "Carol \"C\" O'Neil",
    ));
    config
}

pub async fn start() -> RunningDevIdp {
    start_with(config()).await
}

pub async fn start_with(config: DevIdpConfig) -> RunningDevIdp {
    DevIdp::bind(config).await.expect("bind").spawn()
}

#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not json ({e}): {}", self.body))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().expect("ascii header"))
    }

    pub fn location(&self) -> Url {
        assert_eq!(self.status, StatusCode::FOUND, "expected a redirect: {self:?}");
        Url::parse(self.header("location").expect("location")).expect("location is a url")
    }

    /// The OAuth error of a token endpoint reply.
    pub fn oauth_error(&self) -> String {
        assert_eq!(self.header("cache-control"), Some("no-store"), "{self:?}");
        self.json()["error"].as_str().expect("error").to_owned()
    }
}

pub fn query(url: &Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

#[derive(Clone)]
pub struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for Http {
    fn default() -> Http {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
        }
    }
}

impl Http {
    pub async fn send(&self, method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<Bytes>) -> Reply {
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = self
            .client
            .request(req.body(Full::new(body.into())).unwrap())
            .await
            .expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    pub async fn get(&self, url: &str) -> Reply {
        self.send(Method::GET, url, &[], Bytes::new()).await
    }

    pub async fn post_form(&self, url: &str, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut all = vec![("content-type", "application/x-www-form-urlencoded")];
        all.extend_from_slice(headers);
        self.send(Method::POST, url, &all, body.to_owned()).await
    }
}

/// A browser: sends the cookies the provider set (only its own cookie matters).
#[derive(Default)]
pub struct Browser {
    pub http: Http,
    pub cookies: HashMap<String, String>,
}

impl Browser {
    fn absorb(&mut self, reply: &Reply) {
        for value in reply.headers.get_all("set-cookie") {
            let value = value.to_str().unwrap();
            let (pair, attrs) = value.split_once(';').unwrap_or((value, ""));
            let (name, val) = pair.split_once('=').unwrap();
            if attrs.contains("Max-Age=0") || val.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), val.to_owned());
            }
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn get(&mut self, url: &str) -> Reply {
        let cookie = self.cookie_header();
        let headers: Vec<(&str, &str)> = if cookie.is_empty() {
            vec![]
        } else {
            vec![("cookie", &cookie)]
        };
        let reply = self.http.send(Method::GET, url, &headers, Bytes::new()).await;
        self.absorb(&reply);
        reply
    }

    pub async fn post_form(&mut self, url: &str, body: &str) -> Reply {
        let cookie = self.cookie_header();
        let headers: Vec<(&str, &str)> = if cookie.is_empty() {
            vec![]
        } else {
            vec![("cookie", &cookie)]
        };
        let reply = self.http.post_form(url, &headers, body).await;
        self.absorb(&reply);
        reply
    }
}

/// A login form's hidden transaction id.
pub fn transaction_of(html: &str) -> String {
    let marker = "name=\"transaction\" value=\"";
    let start = html.find(marker).unwrap_or_else(|| panic!("no login form in {html}")) + marker.len();
    let len = html[start..].find('"').unwrap();
    html[start..start + len].to_owned()
}

pub fn is_login_form(reply: &Reply) -> bool {
    reply.status == StatusCode::OK
        && reply.body.contains("id=\"sign-in\"")
        && reply.body.contains("name=\"transaction\"")
}

pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

pub fn pkce() -> Pkce {
    let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
    Pkce { verifier, challenge }
}

pub fn authorize_url(idp: &DevIdp, params: &[(&str, &str)]) -> String {
    format!("{}/authorize?{}", idp.issuer_str(), form(params))
}

/// The usual request of a public client with PKCE.
pub fn spa_authorize(idp: &DevIdp, pkce: &Pkce, state: &str, nonce: &str, extra: &[(&str, &str)]) -> String {
    let mut params = vec![
        ("response_type", "code"),
        ("client_id", SPA),
        ("redirect_uri", SPA_REDIRECT),
        ("scope", "openid email profile offline_access"),
        ("state", state),
        ("nonce", nonce),
        ("code_challenge", &pkce.challenge),
        ("code_challenge_method", "S256"),
    ];
    params.extend_from_slice(extra);
    authorize_url(idp, &params)
}

/// Submits the login form and returns the provider's reply.
pub async fn submit_login(browser: &mut Browser, idp: &DevIdp, form_page: &Reply, user: &str, password: &str) -> Reply {
    let transaction = transaction_of(&form_page.body);
    let body = form(&[
        ("transaction", &transaction),
        ("username", user),
        ("password", password),
    ]);
    browser
        .post_form(&format!("{}/authorize", idp.issuer_str()), &body)
        .await
}

/// Authorize, sign in as alice if the form shows (not when the browser has
/// a session), return the code from the redirect.
pub async fn spa_code(browser: &mut Browser, idp: &DevIdp, pkce: &Pkce, nonce: &str) -> String {
    let page = browser.get(&spa_authorize(idp, pkce, "st", nonce, &[])).await;
    let reply = if is_login_form(&page) {
        submit_login(browser, idp, &page, "alice", "alice").await
    } else {
        page
    };
    let q = query(&reply.location());
    q["code"].clone()
}

pub async fn spa_redeem(http: &Http, idp: &DevIdp, code: &str, verifier: &str) -> Reply {
    let body = form(&[
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", SPA_REDIRECT),
        ("client_id", SPA),
        ("code_verifier", verifier),
    ]);
    http.post_form(&format!("{}/token", idp.issuer_str()), &[], &body).await
}

pub async fn refresh(http: &Http, idp: &DevIdp, refresh_token: &str) -> Reply {
    let body = form(&[
        ("grant_type", "refresh_token"),
        ("refresh_token", refresh_token),
        ("client_id", SPA),
    ]);
    http.post_form(&format!("{}/token", idp.issuer_str()), &[], &body).await
}

/// Full sign-in of alice through the SPA client; the token response.
pub async fn spa_tokens(browser: &mut Browser, idp: &DevIdp, nonce: &str) -> Value {
    let pkce = pkce();
    let code = spa_code(browser, idp, &pkce, nonce).await;
    let reply = spa_redeem(&browser.http, idp, &code, &pkce.verifier).await;
    assert_eq!(reply.status, StatusCode::OK, "{reply:?}");
    reply.json()
}

/// Verifies an ES256 compact JWS against the provider's published JWKS
/// with ring, and returns (header, claims).
pub async fn verify_jwt(http: &Http, idp: &DevIdp, token: &str) -> (Map<String, Value>, Map<String, Value>) {
    let discovery = http.get(&idp.discovery_url()).await.json();
    let jwks = http.get(discovery["jwks_uri"].as_str().unwrap()).await.json();
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "compact JWS");
    let header: Map<String, Value> = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "ES256");
    let key = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
        .expect("kid in jwks");
    assert_eq!(key["kty"], "EC");
    assert_eq!(key["crv"], "P-256");
    let mut point = vec![4u8];
    point.extend(URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap());
    point.extend(URL_SAFE_NO_PAD.decode(key["y"].as_str().unwrap()).unwrap());
    let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    let signed = format!("{}.{}", parts[0], parts[1]);
    ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_FIXED, &point)
        .verify(signed.as_bytes(), &signature)
        .expect("signature verifies against the JWKS");
    let claims: Map<String, Value> = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
    (header, claims)
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}
