//! Every way a proxied request can fail, and the one place that turns a
//! failure into a response.
//!
//! API clients get JSON (`{"error", "message", "request_id"}`), browsers a
//! small HTML page; both carry the request id. The message says what the
//! client can act on (sign in again, ask for a role, retry later) and never
//! what lies behind the proxy: upstream addresses and low-level errors go to
//! the log only, under the same request id.

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::ProxyBody;
use super::context::RequestContext;

/// Why a user with a valid token is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forbidden {
    /// No directory user carries the token's identity claim.
    NotProvisioned,
    /// Several directory users carry it; the proxy will not pick one.
    Ambiguous,
    /// The user exists with `active = false`.
    Deactivated,
    /// The token binds by email and says that the address is not verified.
    EmailUnverified,
    /// None of the user's roles has a rule allowing the request.
    NoRoleAllows,
    /// A deny rule of one of the user's roles matched.
    DeniedByRule,
    /// The identity provider answered a sign-in with an error.
    SignInRefused,
    /// A form (logout) whose token does not belong to the session.
    BadForm,
}

impl Forbidden {
    pub fn code(self) -> &'static str {
        match self {
            Forbidden::NotProvisioned => "not_provisioned",
            Forbidden::Ambiguous => "ambiguous_identity",
            Forbidden::Deactivated => "deactivated",
            Forbidden::EmailUnverified => "email_unverified",
            Forbidden::NoRoleAllows => "no_role_allows",
            Forbidden::DeniedByRule => "denied_by_rule",
            Forbidden::SignInRefused => "sign_in_refused",
            Forbidden::BadForm => "bad_form",
        }
    }
}

/// A failed request. The variants are what the client is told; details for
/// operators ride along in `detail` fields and are logged, never sent.
#[derive(Debug)]
pub enum ProxyError {
    /// 400: the request is malformed or ambiguous.
    BadRequest {
        code: &'static str,
        message: Cow<'static, str>,
    },
    /// 404: no configured route for this host and path.
    NoRoute,
    /// 401: no usable credentials. `code` goes into `WWW-Authenticate`'s
    /// `error_description`; `invalid_token` is set when a token was given.
    Unauthenticated {
        code: &'static str,
        message: Cow<'static, str>,
        token_given: bool,
    },
    /// 302 to the identity provider: a browser navigation without a
    /// session (the browser's form of 401).
    SignInRequired {
        location: url::Url,
        cookies: Vec<HeaderValue>,
    },
    /// 400: the browser keeps coming back without a usable session.
    SignInLoop,
    /// 502: the sign-in could not be completed with the identity provider
    /// (token exchange or ID token refused); details are logged.
    SignInFailed { detail: String },
    /// 403.
    Forbidden { reason: Forbidden, message: String },
    /// 413: the request body is larger than the route allows.
    PayloadTooLarge { limit: u64 },
    /// 502: the upstream could not be reached or broke the exchange.
    BadGateway { detail: String },
    /// 503: a dependency (the IdP's keys) is not available yet.
    Unavailable {
        code: &'static str,
        message: Cow<'static, str>,
    },
    /// 504: the upstream did not answer in time.
    GatewayTimeout { detail: String },
}

impl ProxyError {
    pub fn bad_request(code: &'static str, message: impl Into<Cow<'static, str>>) -> Self {
        ProxyError::BadRequest {
            code,
            message: message.into(),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ProxyError::NoRoute => StatusCode::NOT_FOUND,
            ProxyError::Unauthenticated { .. } => StatusCode::UNAUTHORIZED,
            ProxyError::SignInRequired { .. } => StatusCode::FOUND,
            ProxyError::SignInLoop => StatusCode::BAD_REQUEST,
            ProxyError::SignInFailed { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ProxyError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ProxyError::Unavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::GatewayTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    /// A short stable code, for clients and logs.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::BadRequest { code, .. } => code,
            ProxyError::NoRoute => "no_route",
            ProxyError::Unauthenticated { code, .. } => code,
            ProxyError::SignInRequired { .. } => "sign_in_required",
            ProxyError::SignInLoop => "sign_in_loop",
            ProxyError::SignInFailed { .. } => "sign_in_failed",
            ProxyError::Forbidden { reason, .. } => reason.code(),
            ProxyError::PayloadTooLarge { .. } => "payload_too_large",
            ProxyError::BadGateway { .. } => "bad_gateway",
            ProxyError::Unavailable { code, .. } => code,
            ProxyError::GatewayTimeout { .. } => "gateway_timeout",
        }
    }

    /// What the client is told.
    pub fn message(&self) -> Cow<'_, str> {
        match self {
            ProxyError::BadRequest { message, .. }
            | ProxyError::Unauthenticated { message, .. }
            | ProxyError::Unavailable { message, .. } => Cow::Borrowed(message),
            ProxyError::NoRoute => Cow::Borrowed("no route matches this host and path"),
            ProxyError::SignInRequired { .. } => Cow::Borrowed("sign in at the identity provider"),
            ProxyError::SignInLoop => Cow::Borrowed(
                "signing in keeps starting over: your browser came back from the identity provider several times \
                 without a session. Check that cookies are allowed for this site; operators: check that \
                 session.cookie_domain covers this host and that public_url's scheme matches how it is reached",
            ),
            ProxyError::SignInFailed { .. } => {
                Cow::Borrowed("signing in could not be completed with the identity provider; try again")
            }
            ProxyError::Forbidden { message, .. } => Cow::Borrowed(message),
            ProxyError::PayloadTooLarge { limit } => Cow::Owned(format!(
                "the request body is larger than this route accepts ({limit} bytes)"
            )),
            ProxyError::BadGateway { .. } => Cow::Borrowed("the application behind this address is not reachable"),
            ProxyError::GatewayTimeout { .. } => {
                Cow::Borrowed("the application behind this address did not answer in time")
            }
        }
    }

    /// Builds the response. This is the only place errors become HTTP.
    pub fn into_response(self, ctx: &RequestContext) -> Response<ProxyBody> {
        let status = self.status();
        if let ProxyError::SignInRequired { location, cookies } = self {
            return super::browser::sign_in_redirect(&location, cookies);
        }
        match &self {
            ProxyError::SignInFailed { detail } => {
                tracing::warn!(request_id = %ctx.id, %detail, "sign-in failed");
            }
            ProxyError::BadGateway { detail } | ProxyError::GatewayTimeout { detail } => {
                tracing::warn!(request_id = %ctx.id, route = ctx.route_name(), status = status.as_u16(), %detail, "upstream failure");
            }
            ProxyError::Unavailable { code, .. } => {
                tracing::warn!(request_id = %ctx.id, route = ctx.route_name(), code, "service unavailable");
            }
            _ => tracing::debug!(request_id = %ctx.id, status = status.as_u16(), code = self.code(), "request refused"),
        }
        let message = self.message();
        let (content_type, body) = if ctx.wants_html {
            ("text/html; charset=utf-8", html_page(status, &message, ctx.id.as_str()))
        } else {
            let body = serde_json::json!({
                "error": self.code(),
                "message": message,
                "request_id": ctx.id.as_str(),
            });
            ("application/json", body.to_string())
        };
        let mut resp = Response::new(super::full(Bytes::from(body)));
        *resp.status_mut() = status;
        let headers = resp.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let ProxyError::Unauthenticated { code, token_given, .. } = &self {
            let value = if *token_given {
                format!(r#"Bearer realm="portcullis", error="invalid_token", error_description="{code}""#)
            } else {
                r#"Bearer realm="portcullis""#.to_owned()
            };
            if let Ok(v) = HeaderValue::from_str(&value) {
                headers.insert(header::WWW_AUTHENTICATE, v);
            }
        }
        if matches!(self, ProxyError::Unavailable { .. }) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}

fn html_page(status: StatusCode, message: &str, request_id: &str) -> String {
    let title = status.canonical_reason().unwrap_or("Error");
    format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{code} {title}</title></head>\
         <body><h1>{code} {title}</h1><p>{message}</p><p><small>Request id: {id}</small></p></body></html>\n",
        code = status.as_u16(),
        message = escape_html(message),
        id = escape_html(request_id),
    )
}

pub(crate) fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
