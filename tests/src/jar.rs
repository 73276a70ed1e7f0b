//! A minimal cookie-keeping HTTP client for in-process sign-in tests: it
//! acts like a browser at the HTTP level (keeps cookies per host, sends
//! `Accept: text/html`, follows redirects one at a time on request) without
//! running a browser.
//!
//! What it does not do: honour cookie `Path`, `Secure` or `SameSite` (the
//! real-browser tests under `tests/e2e` cover those), run scripts, or parse
//! HTML beyond finding a form's hidden inputs.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use parking_lot::Mutex;

use crate::http_client;

/// One answer.
#[derive(Debug, Clone)]
pub struct Page {
    pub url: String,
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: String,
}

impl Page {
    /// The `Location` header, made absolute against the page's URL.
    pub fn location(&self) -> Option<String> {
        let loc = self.headers.get(header::LOCATION)?.to_str().ok()?;
        let base = url::Url::parse(&self.url).ok()?;
        base.join(loc).ok().map(String::from)
    }

    /// Every `Set-Cookie` value.
    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all(header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// The `Set-Cookie` for one cookie name.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.split('=').next() == Some(name))
    }

    /// The value of a form input (by `name`), from the page's HTML.
    pub fn input(&self, name: &str) -> Option<String> {
        let marker = format!("name=\"{name}\"");
        let tag_start = self.body.find(&marker).and_then(|i| self.body[..i].rfind('<'))?;
        let tag_end = self.body[tag_start..].find('>')? + tag_start;
        let tag = &self.body[tag_start..tag_end];
        let value = tag.split("value=\"").nth(1)?.split('"').next()?;
        Some(html_unescape(value))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
}

fn html_unescape(s: &str) -> String {
    s.replace("&quot;", "\"")
        .replace("&#39;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A browser-like client with a cookie jar keyed by host (as browsers key
/// cookies: not by port).
#[derive(Debug, Default)]
pub struct CookieClient {
    jar: Mutex<BTreeMap<(String, String), String>>,
}

impl CookieClient {
    pub fn new() -> CookieClient {
        CookieClient::default()
    }

    /// GET as a browser navigation (`Accept: text/html`).
    pub async fn get(&self, url: &str) -> Page {
        self.send(
            Method::GET,
            url,
            &[("accept", "text/html,application/xhtml+xml")],
            Bytes::new(),
        )
        .await
    }

    /// A request with extra headers (cookies are added).
    pub async fn send(&self, method: Method, url: &str, headers: &[(&str, &str)], body: Bytes) -> Page {
        let host = host_of(url);
        let mut req = Request::builder().method(method).uri(url);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let cookie = self.cookie_header(&host);
        if !cookie.is_empty() {
            req = req.header(header::COOKIE, cookie);
        }
        let resp = http_client()
            .request(req.body(Full::new(body)).expect("request"))
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        let page = Page {
            url: url.to_owned(),
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        };
        for c in page.set_cookies() {
            self.store(&host, &c);
        }
        page
    }

    /// POSTs a form.
    pub async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Page {
        let body: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form)
            .finish();
        self.send(
            Method::POST,
            url,
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("accept", "text/html"),
            ],
            Bytes::from(body),
        )
        .await
    }

    /// Follows redirects from `page` (at most 10) with GETs.
    pub async fn follow(&self, mut page: Page) -> Page {
        for _ in 0..10 {
            if !page.status.is_redirection() {
                return page;
            }
            let next = page.location().expect("redirect without Location");
            page = self.get(&next).await;
        }
        panic!("more than 10 redirects, last at {}", page.url);
    }

    pub fn cookie(&self, host_url: &str, name: &str) -> Option<String> {
        self.jar.lock().get(&(host_of(host_url), name.to_owned())).cloned()
    }

    pub fn set(&self, host_url: &str, name: &str, value: &str) {
        self.jar
            .lock()
            .insert((host_of(host_url), name.to_owned()), value.to_owned());
    }

    pub fn remove(&self, host_url: &str, name: &str) {
        self.jar.lock().remove(&(host_of(host_url), name.to_owned()));
    }

    fn cookie_header(&self, host: &str) -> String {
        self.jar
            .lock()
            .iter()
            .filter(|((h, _), _)| h == host)
            .map(|((_, n), v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn store(&self, host: &str, set_cookie: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|p| p.trim().split_once('=')) else {
            return;
        };
        let expired = parts.any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
        let key = (host.to_owned(), name.to_owned());
        if expired || value.is_empty() {
            self.jar.lock().remove(&key);
        } else {
            self.jar.lock().insert(key, value.to_owned());
        }
    }
}

fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default()
}
