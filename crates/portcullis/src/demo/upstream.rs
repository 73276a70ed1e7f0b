//! The demo's sample upstream app: a small HTTP server on `127.0.0.1:0`
//! that shows what Portcullis told it about the caller: the identity
//! headers, the signed assertion's claims (decoded; an app would verify
//! them against `/.portcullis/jwks.json`), and every header it received.
//!
//! `Accept: application/json` (or a curl without `Accept: text/html`) gets
//! the same as JSON. What it is not: an example of verifying assertions,
//! or anything to deploy.

use std::convert::Infallible;
use std::net::SocketAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

/// The running sample app; stops when dropped.
#[derive(Debug)]
pub struct SampleApp {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SampleApp {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the sample app. `public` is Portcullis's URL, for links.
pub async fn start(public: &str) -> std::io::Result<SampleApp> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let public = public.to_owned();
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let public = public.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let public = public.clone();
                    async move { Ok::<_, Infallible>(respond(&req, &public)) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(SampleApp { addr, task })
}

fn respond(req: &Request<Incoming>, public: &str) -> Response<Full<Bytes>> {
    let h = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let assertion = h("x-portcullis-assertion").and_then(|jwt| claims(&jwt));
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let wants_html = h("accept").is_some_and(|a| a.contains("text/html"));
    if !wants_html {
        let body = json!({
            "app": "portcullis demo sample app",
            "path": req.uri().to_string(),
            "user": h("x-portcullis-user"),
            "email": h("x-portcullis-email"),
            "groups": h("x-portcullis-groups"),
            "roles": h("x-portcullis-roles"),
            "assertion_claims": assertion,
            "headers": headers,
        });
        return reply("application/json", format!("{body:#}\n"));
    }
    let row = |k: &str, v: &str| format!("<tr><th>{}</th><td>{}</td></tr>", esc(k), esc(v));
    let who = match h("x-portcullis-user") {
        Some(user) => format!("<p>Portcullis says you are <b id=\"user\">{}</b>.</p>", esc(&user)),
        None => "<p>This page is public: Portcullis let you in without signing in.</p>".to_owned(),
    };
    let identity: String = [
        ("user", "x-portcullis-user"),
        ("email", "x-portcullis-email"),
        ("groups", "x-portcullis-groups"),
        ("roles", "x-portcullis-roles"),
        ("request id", "x-request-id"),
    ]
    .iter()
    .map(|(label, name)| row(label, &h(name).unwrap_or_else(|| "-".into())))
    .collect();
    let all: String = headers.iter().map(|(k, v)| row(k, v)).collect();
    let assertion = assertion.map_or_else(
        || "<p>(none: public request)</p>".to_owned(),
        |c| format!("<pre id=\"assertion\">{}</pre>", esc(&format!("{c:#}"))),
    );
    let page = format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>Sample app</title>\
         <style>body{{font-family:sans-serif;max-width:60em;margin:2em auto}}th{{text-align:left;padding-right:1em}}\
         td{{font-family:monospace;word-break:break-all}}</style></head><body>\
         <h1>Sample app behind Portcullis</h1>{who}\
         <p>You asked for <code>{path}</code>. Try <a href=\"/\">/</a>, <a href=\"/reports/q3\">/reports/q3</a>, \
         <a href=\"/admin/settings\">/admin/settings</a> (platform-admins only), <a href=\"/public/info\">/public/info</a>, \
         <a href=\"/.portcullis/me\">who am I</a>, <a href=\"/.portcullis/logout\">sign out</a>.</p>\
         <h2>Identity headers</h2><table>{identity}</table>\
         <h2>Signed assertion (claims)</h2>{assertion}\
         <p>Apps verify it with the keys at <code>{public}/.portcullis/jwks.json</code>.</p>\
         <h2>Every header received</h2><table>{all}</table></body></html>",
        path = esc(&req.uri().to_string()),
        public = esc(public),
    );
    reply("text/html; charset=utf-8", page)
}

fn reply(content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    resp
}

/// The payload of a compact JWS, unverified (for display only).
fn claims(jwt: &str) -> Option<Value> {
    let payload = jwt.split('.').nth(1)?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

fn esc(s: &str) -> String {
    crate::proxy::error::escape_html(s)
}
