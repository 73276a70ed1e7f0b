//! The HTTP side: the accept loop (one task per connection, HTTP/1.1,
//! header-read timeout, graceful shutdown), routing, capped body reading,
//! the response helpers shared by the endpoints, and the two static
//! endpoints (discovery and JWKS).
//!
//! It does not speak TLS or HTTP/2 (loopback only), and holds no OAuth
//! logic beyond routing: see `authorize` and `token`.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::idp::Inner;
use crate::{authorize, pages, token};

/// The largest request body read (forms and token requests are tiny).
pub(crate) const MAX_BODY: usize = 64 * 1024;
/// How long a client may take to send its request headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish at shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

pub(crate) type Resp = Response<Full<Bytes>>;

pub(crate) async fn serve(inner: Arc<Inner>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let inner = inner.clone();
                    let service = service_fn(move |req| {
                        let inner = inner.clone();
                        async move { Ok::<_, Infallible>(handle(&inner, req).await) }
                    });
                    let mut builder = http1::Builder::new();
                    builder.timer(TokioTimer::new()).header_read_timeout(HEADER_READ_TIMEOUT);
                    let conn = graceful.watch(builder.serve_connection(TokioIo::new(stream), service));
                    tokio::spawn(async move {
                        if let Err(e) = conn.await {
                            tracing::debug!(%peer, error = %e, "development identity provider: connection error");
                        }
                    });
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(error = %e, "development identity provider: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
        }
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::debug!("development identity provider: connections still open at shutdown, leaving them");
        }
    }
}

async fn handle(inner: &Inner, req: Request<Incoming>) -> Resp {
    let (parts, body) = req.into_parts();
    let method = parts.method.clone();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or("").to_owned();
    let allowed: &'static str = match path.as_str() {
        "/.well-known/openid-configuration" | "/jwks.json" => "GET",
        "/authorize" | "/userinfo" | "/logout" => "GET, POST",
        "/token" => "POST",
        _ => return text(StatusCode::NOT_FOUND, "not found\n"),
    };
    let body = if method == Method::POST {
        match read_body(&parts, body).await {
            Ok(body) => body,
            Err(resp) => return resp,
        }
    } else if method == Method::GET {
        Bytes::new()
    } else {
        let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        resp.headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static(allowed));
        return resp;
    };
    match (method, path.as_str()) {
        (Method::GET, "/.well-known/openid-configuration") => json_response(StatusCode::OK, &discovery(inner)),
        (Method::GET, "/jwks.json") => {
            let mut resp = json_response(StatusCode::OK, &inner.signer.jwks());
            resp.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("max-age=60"));
            resp
        }
        (Method::GET, "/authorize") => authorize::authorize_get(inner, &parts, query.as_bytes()),
        (Method::POST, "/authorize") => authorize::authorize_post(inner, &parts, &body),
        (Method::GET, "/logout") => authorize::logout(inner, &parts, query.as_bytes()),
        (Method::POST, "/logout") => match form_body(&parts, &body) {
            Some(form) => authorize::logout(inner, &parts, form),
            None => html(
                StatusCode::BAD_REQUEST,
                pages::error("Bad request", "expected a form body"),
            ),
        },
        (Method::POST, "/token") => token::token(inner, &parts, &body),
        (_, "/userinfo") => token::userinfo(inner, &parts),
        _ => {
            let mut resp = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            resp.headers_mut()
                .insert(http::header::ALLOW, HeaderValue::from_static(allowed));
            resp
        }
    }
}

fn discovery(inner: &Inner) -> Value {
    let iss = inner.issuer_str.as_str();
    json!({
        "issuer": iss,
        "authorization_endpoint": format!("{iss}/authorize"),
        "token_endpoint": format!("{iss}/token"),
        "userinfo_endpoint": format!("{iss}/userinfo"),
        "jwks_uri": format!("{iss}/jwks.json"),
        "end_session_endpoint": format!("{iss}/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": [crate::jwt::ALG],
        "userinfo_signing_alg_values_supported": ["none"],
        "scopes_supported": authorize::SUPPORTED_SCOPES,
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "none"],
        "code_challenge_methods_supported": ["S256"],
        "claims_supported": [
            "iss", "sub", "aud", "exp", "iat", "auth_time", "nonce", "azp", "at_hash", "sid",
            "email", "email_verified", "name", "preferred_username"
        ],
        "prompt_values_supported": ["none", "login"],
        "claims_parameter_supported": false,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
    })
}

/// Reads a request body of at most [`MAX_BODY`] bytes.
async fn read_body(parts: &Parts, body: Incoming) -> Result<Bytes, Resp> {
    let too_large = || text(StatusCode::PAYLOAD_TOO_LARGE, "request body too large\n");
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > MAX_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(text(StatusCode::BAD_REQUEST, "could not read the request body\n")),
    }
}

/// The body if the request is `application/x-www-form-urlencoded` and UTF-8.
pub(crate) fn form_body<'a>(parts: &Parts, body: &'a [u8]) -> Option<&'a [u8]> {
    let content_type = parts.headers.get(CONTENT_TYPE)?.to_str().ok()?;
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        return None;
    }
    std::str::from_utf8(body).ok()?;
    Some(body)
}

fn with_body(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Resp {
    let mut resp = Response::new(Full::new(body.into()));
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    resp
}

pub(crate) fn text(status: StatusCode, body: &'static str) -> Resp {
    with_body(status, "text/plain; charset=utf-8", body)
}

/// An HTML page; not frameable, no scripts, no referrer.
pub(crate) fn html(status: StatusCode, body: String) -> Resp {
    let mut resp = with_body(status, "text/html; charset=utf-8", body);
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"),
    );
    headers.insert(http::header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(http::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

/// A JSON document, not cached (tokens and errors must not be).
pub(crate) fn json_response(status: StatusCode, value: &Value) -> Resp {
    let mut resp = with_body(status, "application/json", value.to_string());
    resp.headers_mut()
        .insert(http::header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// An RFC 6749 5.2 error document.
pub(crate) fn oauth_error(status: StatusCode, error: &str, description: &str) -> Resp {
    json_response(status, &json!({"error": error, "error_description": description}))
}

pub(crate) fn server_error(what: &dyn std::fmt::Display) -> Resp {
    tracing::error!(error = %what, "development identity provider: internal error");
    text(StatusCode::INTERNAL_SERVER_ERROR, "internal error\n")
}

/// A 302 to `location`, with extra headers (cookies).
pub(crate) fn redirect(location: &str, extra: &[(HeaderName, String)]) -> Resp {
    let mut resp = with_body(StatusCode::FOUND, "text/plain; charset=utf-8", Bytes::new());
    let Ok(value) = HeaderValue::from_str(location) else {
        return server_error(&"redirect location is not a valid header value");
    };
    resp.headers_mut().insert(http::header::LOCATION, value);
    resp.headers_mut()
        .insert(http::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    with_headers(resp, extra)
}

/// Appends headers whose values were built at run time (a value that is not
/// a valid header turns the response into a 500).
pub(crate) fn with_headers(mut resp: Resp, extra: &[(HeaderName, String)]) -> Resp {
    for (name, value) in extra {
        let Ok(value) = HeaderValue::from_str(value) else {
            return server_error(&"header value is not valid");
        };
        resp.headers_mut().append(name.clone(), value);
    }
    resp
}
