//! The browser side of authentication: session cookies, the redirect to
//! the identity provider, and Portcullis's sign-in endpoints
//! (`/.portcullis/callback`, `/.portcullis/signin`, `/.portcullis/logout`,
//! `/.portcullis/signed-out`).
//!
//! Cookies Portcullis sets (all `HttpOnly`, `SameSite=Lax`, `Secure` when
//! `public_url` is https):
//! - `{name}`: the session secret (43 characters), `Path=/`, the
//!   configured `Domain`, for the session's absolute lifetime;
//! - `{name}_signin_{state prefix}`: binds a sign-in in progress to the
//!   browser that started it (login CSRF), `Path=/.portcullis/callback`,
//!   ten minutes;
//! - `{name}_redirects`: counts redirects to the IdP that did not come back
//!   with a usable session, host-only, two minutes. Past [`MAX_REDIRECTS`]
//!   the browser gets an error page instead of another round trip (a
//!   cookie the browser will not send back would otherwise loop forever).
//!
//! Where the browser goes after sign-in is recorded when the sign-in
//! starts, server-side, and only same-site URLs are accepted: no open
//! redirect.
//!
//! What this module does not do: decide access (the proxy's authorize
//! phase), or validate tokens (`session::signin`).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use portcullis_directory::Principal;
use url::Url;

use super::error::{Forbidden, ProxyError, escape_html};
use super::{ProxyBody, RequestContext, full};
use crate::config::Session as SessionConfig;
use crate::session::signin::{RefreshError, SignIn, SignInError};
use crate::session::{IdpTokens, Lookup, NewSession, Session, SessionSecret, Sessions};

/// Redirects to the IdP without a session coming back, before the browser
/// is shown an error instead.
pub const MAX_REDIRECTS: u32 = 5;
/// How long the redirect count is remembered.
const REDIRECT_WINDOW_SECS: u32 = 120;
/// How long a sign-in may take, for its binding cookie.
const SIGNIN_COOKIE_SECS: u32 = 600;
/// A failed refresh is retried after this.
const REFRESH_RETRY: Duration = Duration::from_secs(60);
/// Largest logout form read.
const MAX_FORM: usize = 8 * 1024;

/// Browser sign-in and sessions, as the proxy uses them.
#[derive(Debug)]
pub struct Browser {
    pub sessions: Arc<Sessions>,
    pub signin: Arc<SignIn>,
    public_url: Url,
    secure: bool,
    cookie_name: String,
    signin_prefix: String,
    redirects_cookie: String,
}

/// What the request's cookies say.
#[derive(Debug)]
pub enum SessionState {
    /// No session cookie.
    Absent,
    /// A cookie that names no valid session (expired, revoked, forged).
    Invalid { expired: bool },
    Valid {
        session: Arc<Session>,
        secret: SessionSecret,
    },
}

impl Browser {
    pub fn new(sessions: Arc<Sessions>, signin: Arc<SignIn>, public_url: &Url) -> Browser {
        let name = sessions.config().cookie_name.clone();
        Browser {
            secure: public_url.scheme() == "https",
            public_url: public_url.clone(),
            signin_prefix: format!("{name}_signin_"),
            redirects_cookie: format!("{name}_redirects"),
            cookie_name: name,
            sessions,
            signin,
        }
    }

    fn config(&self) -> &SessionConfig {
        self.sessions.config()
    }

    /// Whether a cookie name is one of Portcullis's (never forwarded).
    pub fn is_own_cookie(&self, name: &str) -> bool {
        name == self.cookie_name || name == self.redirects_cookie || name.starts_with(&self.signin_prefix)
    }

    /// The session the request's cookie names. Several session cookies
    /// (say, one per domain) are each tried.
    pub fn session(&self, headers: &HeaderMap) -> SessionState {
        let mut state = SessionState::Absent;
        for value in cookies(headers, &self.cookie_name) {
            let Some(secret) = SessionSecret::from_cookie(value) else {
                state = SessionState::Invalid { expired: false };
                continue;
            };
            match self.sessions.lookup(&secret) {
                Lookup::Valid(session) => return SessionState::Valid { session, secret },
                Lookup::Expired => state = SessionState::Invalid { expired: true },
                Lookup::Unknown => state = SessionState::Invalid { expired: false },
            }
        }
        state
    }

    /// Whether the request carries the redirect counter (to clear once a
    /// session works).
    pub fn has_redirect_count(&self, headers: &HeaderMap) -> bool {
        cookies(headers, &self.redirects_cookie).next().is_some()
    }

    /// The `Set-Cookie` that clears the redirect counter.
    pub fn clear_redirect_count(&self) -> HeaderValue {
        self.cookie(&self.redirects_cookie, "", "/", 0, false)
    }

    /// Refreshes the IdP's tokens in the background when they have lapsed.
    /// A refusal ends the session; an unreachable IdP does not.
    pub fn maybe_refresh(&self, session: &Arc<Session>, secret: &SessionSecret) {
        if !session.claim_refresh(self.sessions.now()) {
            return;
        }
        let Some(refresh_token) = session.tokens(secret).and_then(|t| t.refresh_token) else {
            self.sessions.refreshed(session, secret, &IdpTokens::default(), None);
            return;
        };
        let (sessions, signin, session, secret) = (
            self.sessions.clone(),
            self.signin.clone(),
            session.clone(),
            secret.clone(),
        );
        tokio::spawn(async move {
            match signin.refresh(&refresh_token, &session.sub).await {
                Ok((tokens, expires_in)) => {
                    let refresh_at = expires_in.map(|d| sessions.now().saturating_add(d.as_secs() as i64));
                    let tokens = IdpTokens {
                        id_token: tokens
                            .id_token
                            .or_else(|| session.tokens(&secret).and_then(|t| t.id_token)),
                        ..tokens
                    };
                    sessions.refreshed(&session, &secret, &tokens, refresh_at);
                    tracing::debug!(user_id = &*session.user_id, "session tokens refreshed");
                }
                Err(RefreshError::Rejected(reason)) => {
                    tracing::info!(user_id = &*session.user_id, %reason, "identity provider ended the session");
                    if let Err(e) = sessions.revoke(&session.handle).await {
                        tracing::error!(error = %e, "cannot revoke a session");
                    }
                }
                Err(RefreshError::Unavailable(reason)) => {
                    tracing::warn!(%reason, "cannot refresh a session now; keeping it");
                    sessions.refresh_postponed(&session, REFRESH_RETRY);
                }
            }
        });
    }

    /// The answer to a request without a usable session: a redirect to the
    /// IdP for a browser navigation, 401 for anything else.
    pub fn challenge(&self, req: &Request<Incoming>, ctx: &RequestContext, state: &SessionState) -> ProxyError {
        let navigation = matches!(*req.method(), Method::GET | Method::HEAD) && ctx.wants_html;
        if !navigation {
            let (code, message) = match state {
                SessionState::Invalid { expired: true } => ("session_expired", "your session has ended; sign in again"),
                SessionState::Invalid { expired: false } => {
                    ("invalid_session", "the session cookie is not valid; sign in again")
                }
                _ => (
                    "missing_credentials",
                    "sign in: open this address in a browser, or send Authorization: Bearer <token>",
                ),
            };
            return ProxyError::Unauthenticated {
                code,
                message: message.into(),
                token_given: false,
            };
        }
        let return_to = self.original_url(req);
        self.start(req.headers(), return_to)
    }

    /// Starts a sign-in that returns to `return_to` (already checked).
    fn start(&self, headers: &HeaderMap, return_to: String) -> ProxyError {
        let count = self.redirect_count(headers);
        if count >= MAX_REDIRECTS {
            return ProxyError::SignInLoop;
        }
        match self.signin.begin(return_to) {
            Ok((location, state)) => {
                let binding = format!("{}{}", self.signin_prefix, state.get(..16).unwrap_or(&state));
                let mut cookies = vec![
                    self.cookie(&binding, &state, "/.portcullis/callback", SIGNIN_COOKIE_SECS, true),
                    self.cookie(
                        &self.redirects_cookie,
                        &(count + 1).to_string(),
                        "/",
                        REDIRECT_WINDOW_SECS,
                        false,
                    ),
                ];
                if self.has_invalid_session_cookie(headers) {
                    cookies.push(self.session_cookie_clear());
                }
                ProxyError::SignInRequired { location, cookies }
            }
            Err(SignInError::Busy) => ProxyError::Unavailable {
                code: "sign_in_busy",
                message: "too many sign-ins are in progress; retry in a minute".into(),
            },
            Err(_) => ProxyError::Unavailable {
                code: "idp_unreachable",
                message: "the identity provider cannot be reached, so you cannot sign in right now; \
                          retry in a minute (if you were signed in, your session still works)"
                    .into(),
            },
        }
    }

    fn has_invalid_session_cookie(&self, headers: &HeaderMap) -> bool {
        cookies(headers, &self.cookie_name).next().is_some()
    }

    fn redirect_count(&self, headers: &HeaderMap) -> u32 {
        cookies(headers, &self.redirects_cookie)
            .filter_map(|v| v.parse::<u32>().ok())
            .max()
            .unwrap_or(0)
    }

    /// The URL the browser asked for, if it is on our site; the site's
    /// root otherwise.
    fn original_url(&self, req: &Request<Incoming>) -> String {
        let host = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()));
        let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
        match host {
            Some(host) => {
                let url = format!("{}://{}{}", self.public_url.scheme(), host, path);
                self.same_site(&url).unwrap_or_else(|| self.root())
            }
            None => self.root(),
        }
    }

    fn root(&self) -> String {
        self.public_url.as_str().to_owned()
    }

    /// `target` as an absolute URL if it is on our site: a path on
    /// `public_url`, or an absolute URL whose host is `public_url`'s or
    /// within the cookie domain (the hosts a session can reach).
    pub fn same_site(&self, target: &str) -> Option<String> {
        if target.starts_with('/') {
            // "//evil" and "/\evil" are protocol-relative to browsers.
            if target.starts_with("//") || target.starts_with("/\\") || target.contains(['\r', '\n']) {
                return None;
            }
            return self.public_url.join(target).ok().map(String::from);
        }
        let url = Url::parse(target).ok()?;
        if !matches!(url.scheme(), "http" | "https") || !url.username().is_empty() || url.password().is_some() {
            return None;
        }
        if url.scheme() != self.public_url.scheme() {
            return None;
        }
        let host = url.host_str()?.to_ascii_lowercase();
        let public = self.public_url.host_str().unwrap_or_default().to_ascii_lowercase();
        let ours = host == public
            || self
                .config()
                .cookie_domain
                .as_ref()
                .is_some_and(|d| host == *d || host.ends_with(&format!(".{d}")));
        ours.then(|| url.to_string())
    }

    /// `/.portcullis/signin?rd=...`: starts a sign-in explicitly.
    pub fn signin_endpoint(&self, req: &Request<Incoming>) -> Result<Response<ProxyBody>, ProxyError> {
        let rd = query_param(req.uri().query(), "rd");
        let return_to = rd
            .as_deref()
            .and_then(|t| self.same_site(t))
            .unwrap_or_else(|| self.root());
        if let SessionState::Valid { .. } = self.session(req.headers()) {
            return Ok(redirect(&return_to, Vec::new()));
        }
        Err(self.start(req.headers(), return_to))
    }

    /// `/.portcullis/callback`: the IdP sends the browser back here.
    pub async fn callback(
        &self,
        req: &Request<Incoming>,
        bind: impl FnOnce(&serde_json::Map<String, serde_json::Value>) -> Result<Arc<Principal>, ProxyError>,
    ) -> Result<(Response<ProxyBody>, Arc<Principal>), ProxyError> {
        let query = req.uri().query();
        let Some(state) = query_param(query, "state") else {
            return Err(ProxyError::bad_request(
                "bad_callback",
                "the sign-in answer has no state",
            ));
        };
        let binding = format!("{}{}", self.signin_prefix, state.get(..16).unwrap_or(&state));
        let bound = cookies(req.headers(), &binding).any(|v| v == state);
        let clear_binding = self.cookie(&binding, "", "/.portcullis/callback", 0, true);
        if !bound {
            return Err(ProxyError::bad_request(
                "sign_in_not_started_here",
                "this sign-in was not started in this browser, or the browser does not keep cookies for this site; \
                 open the address you wanted again",
            ));
        }
        let Some(pending) = self.signin.take(&state) else {
            return Err(ProxyError::bad_request(
                "sign_in_expired",
                "this sign-in has expired or was already completed; open the address you wanted again",
            ));
        };
        if let Some(error) = query_param(query, "error") {
            let description = query_param(query, "error_description");
            tracing::info!(%error, description = description.as_deref(), "identity provider refused a sign-in");
            return Err(ProxyError::Forbidden {
                reason: Forbidden::SignInRefused,
                message: format!(
                    "the identity provider refused the sign-in ({error}{})",
                    description.map(|d| format!(": {d}")).unwrap_or_default()
                ),
            });
        }
        let Some(code) = query_param(query, "code") else {
            return Err(ProxyError::bad_request(
                "bad_callback",
                "the sign-in answer has no code",
            ));
        };
        let completed = self.signin.complete(pending, &code).await.map_err(sign_in_failed)?;
        let principal = bind(&completed.claims)?;
        let now = self.sessions.now();
        let secret = self
            .sessions
            .create(NewSession {
                user_id: principal.id.to_string(),
                sub: completed.sub,
                sid: completed.sid,
                tokens: completed.tokens,
                refresh_at: completed.expires_in.map(|d| now.saturating_add(d.as_secs() as i64)),
            })
            .await
            .map_err(|e| ProxyError::Unavailable {
                code: "store_unavailable",
                message: format!("cannot record your session: {e}").into(),
            })?;
        let session_cookie = self.cookie(
            &self.cookie_name,
            &secret.cookie_value(),
            "/",
            u32::try_from(self.config().absolute_timeout.as_secs()).unwrap_or(u32::MAX),
            true,
        );
        tracing::info!(user = &*principal.user_name, "signed in");
        Ok((
            redirect(&completed.return_to, vec![session_cookie, clear_binding]),
            principal,
        ))
    }

    /// `/.portcullis/logout`: GET shows a confirmation form (a link alone
    /// must not sign anyone out); POST with the form's token ends the
    /// session and, when the IdP supports it, its own session too.
    pub async fn logout(&self, req: Request<Incoming>) -> Result<Response<ProxyBody>, ProxyError> {
        let state = self.session(req.headers());
        if *req.method() == Method::GET || *req.method() == Method::HEAD {
            return Ok(match state {
                SessionState::Valid { secret, .. } => html(StatusCode::OK, &logout_page(&secret.csrf_token())),
                _ => redirect(&self.signed_out_url(), vec![self.session_cookie_clear()]),
            });
        }
        if *req.method() != Method::POST {
            return Err(ProxyError::bad_request(
                "bad_method",
                "log out with the form at this address",
            ));
        }
        let form = Limited::new(req.into_body(), MAX_FORM)
            .collect()
            .await
            .map_err(|_| ProxyError::bad_request("bad_form", "the logout form could not be read"))?
            .to_bytes();
        let token = form_param(&form, "csrf");
        let SessionState::Valid { session, secret } = state else {
            return Ok(redirect(&self.signed_out_url(), vec![self.session_cookie_clear()]));
        };
        if !token.as_deref().is_some_and(|t| secret.csrf_matches(t)) {
            return Err(ProxyError::Forbidden {
                reason: Forbidden::BadForm,
                message: "the logout form is not valid for this session; reload the page and try again".into(),
            });
        }
        let id_token = session.tokens(&secret).and_then(|t| t.id_token);
        self.sessions
            .revoke(&session.handle)
            .await
            .map_err(|e| ProxyError::Unavailable {
                code: "store_unavailable",
                message: format!("cannot end your session: {e}").into(),
            })?;
        tracing::info!(user_id = &*session.user_id, "signed out");
        let target = self
            .signin
            .logout_url(id_token.as_deref(), &self.signed_out_url())
            .map_or_else(|| self.signed_out_url(), String::from);
        Ok(redirect(&target, vec![self.session_cookie_clear()]))
    }

    /// `/.portcullis/signed-out`.
    pub fn signed_out(&self) -> Response<ProxyBody> {
        html(
            StatusCode::OK,
            &format!(
                "<h1>You are signed out</h1><p><a id=\"sign-in-again\" href=\"{}\">Sign in again</a></p>",
                escape_html(&self.root())
            ),
        )
    }

    fn signed_out_url(&self) -> String {
        format!(
            "{}/.portcullis/signed-out",
            self.public_url.as_str().trim_end_matches('/')
        )
    }

    fn session_cookie_clear(&self) -> HeaderValue {
        self.cookie(&self.cookie_name, "", "/", 0, true)
    }

    /// A `Set-Cookie` value. `domain` adds the configured cookie domain.
    fn cookie(&self, name: &str, value: &str, path: &str, max_age: u32, domain: bool) -> HeaderValue {
        let mut c = format!("{name}={value}; Path={path}; Max-Age={max_age}; HttpOnly; SameSite=Lax");
        if self.secure {
            c.push_str("; Secure");
        }
        if domain && let Some(d) = &self.config().cookie_domain {
            c.push_str("; Domain=");
            c.push_str(d);
        }
        // Names and values are our own token characters.
        HeaderValue::from_str(&c).unwrap_or(HeaderValue::from_static("invalid=; Max-Age=0"))
    }
}

fn sign_in_failed(e: SignInError) -> ProxyError {
    match e {
        SignInError::NotReady | SignInError::Unreachable(_) => ProxyError::Unavailable {
            code: "idp_unreachable",
            message: "the identity provider cannot be reached to finish signing in; retry in a minute".into(),
        },
        SignInError::Busy => ProxyError::Unavailable {
            code: "sign_in_busy",
            message: "too many sign-ins are in progress; retry in a minute".into(),
        },
        SignInError::UnknownState => ProxyError::bad_request("sign_in_expired", "this sign-in has expired"),
        SignInError::Refused { error, description } => {
            tracing::info!(%error, description = description.as_deref(), "token endpoint refused a sign-in");
            ProxyError::Forbidden {
                reason: Forbidden::SignInRefused,
                message: format!(
                    "the identity provider refused the sign-in ({error}); open the address you wanted again"
                ),
            }
        }
        SignInError::Exchange(detail) | SignInError::IdToken(detail) => ProxyError::SignInFailed { detail },
    }
}

/// Every value of cookie `name` in the request.
pub fn cookies<'a>(headers: &'a HeaderMap, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(move |pair| {
            let (n, v) = pair.trim().split_once('=')?;
            (n.trim() == name).then_some(v.trim())
        })
}

fn query_param(query: Option<&str>, name: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn form_param(body: &Bytes, name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn redirect(location: &str, cookies: Vec<HeaderValue>) -> Response<ProxyBody> {
    let mut resp = Response::new(full(Bytes::new()));
    *resp.status_mut() = StatusCode::FOUND;
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in cookies {
        h.append(header::SET_COOKIE, c);
    }
    resp
}

fn html(status: StatusCode, body: &str) -> Response<ProxyBody> {
    let page = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>Portcullis</title></head><body>{body}</body></html>\n"
    );
    let mut resp = Response::new(full(Bytes::from(page)));
    *resp.status_mut() = status;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        // No form-action: the logout form's answer redirects to the IdP.
        HeaderValue::from_static("default-src 'none'"),
    );
    resp
}

fn logout_page(csrf: &str) -> String {
    format!(
        "<h1>Sign out?</h1><form method=\"post\" action=\"/.portcullis/logout\">\
         <input type=\"hidden\" name=\"csrf\" value=\"{}\">\
         <button id=\"sign-out\" type=\"submit\">Sign out</button></form>",
        escape_html(csrf)
    )
}

/// The redirect response for [`ProxyError::SignInRequired`].
pub fn sign_in_redirect(location: &Url, cookies: Vec<HeaderValue>) -> Response<ProxyBody> {
    redirect(location.as_str(), cookies)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::session::signin::SignIn;

    fn browser(public_url: &str, domain: Option<&str>) -> (tempfile::TempDir, Browser) {
        let domain_line = domain.map(|d| format!("cookie_domain = \"{d}\"\n")).unwrap_or_default();
        let text = format!(
            "[server]\npublic_url = \"{public_url}\"\n[oidc]\nissuer = \"https://idp.example.com\"\nclient_id = \"pc\"\n\
             [session]\n{domain_line}"
        );
        let config = Config::parse(&text, std::path::Path::new("t.toml"), std::path::Path::new("/")).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let directory = portcullis_directory::Directory::open(dir.path(), Default::default()).unwrap();
        let sessions = Sessions::new(
            directory.sessions(),
            config.session.clone(),
            crate::session::system_clock(),
        );
        let oidc = config.oidc.as_ref().unwrap();
        let signin = SignIn::new(oidc, None, &config.server.public_url).unwrap();
        let b = Browser::new(Arc::new(sessions), Arc::new(signin), &config.server.public_url);
        (dir, b)
    }

    #[test]
    fn cookies_are_secure_on_https_and_carry_the_configured_domain() {
        let (_d, b) = browser("https://portal.example.com", Some("example.com"));
        let c = b.cookie("_portcullis", "v", "/", 60, true);
        let c = c.to_str().unwrap();
        for attr in [
            "HttpOnly",
            "SameSite=Lax",
            "Secure",
            "Domain=example.com",
            "Path=/",
            "Max-Age=60",
        ] {
            assert!(c.contains(attr), "{attr} missing: {c}");
        }
        // The redirect counter stays host-only.
        let c = b.cookie("_portcullis_redirects", "1", "/", 60, false);
        assert!(!c.to_str().unwrap().contains("Domain"));
        let (_d, b) = browser("http://127.0.0.1:8080", None);
        let c = b.cookie("_portcullis", "v", "/", 60, true);
        assert!(!c.to_str().unwrap().contains("Secure"));
        assert!(!c.to_str().unwrap().contains("Domain"));
    }

    #[test]
    fn only_same_site_targets_are_accepted() {
        let (_d, b) = browser("https://portal.example.com", Some("example.com"));
        let check = |target: &str, expected: Option<&str>| {
            assert_eq!(b.same_site(target).as_deref(), expected, "{target}");
        };
        check("/x?y=1", Some("https://portal.example.com/x?y=1"));
        check("https://kibana.example.com/app", Some("https://kibana.example.com/app"));
        check("https://example.com/", Some("https://example.com/"));
        check("https://evil.com/", None);
        check("https://example.com.evil.com/", None);
        check("https://evilexample.com/", None);
        check("http://kibana.example.com/", None);
        check("//evil.com/", None);
        check("/\\evil.com", None);
        check("https://user:pw@kibana.example.com/", None);
        check("javascript:alert(1)", None);
        check("/x\r\nSet-Cookie: a=b", None);
        let (_d, b) = browser("https://portal.example.com", None);
        check_none(&b, "https://kibana.example.com/");
    }

    fn check_none(b: &Browser, target: &str) {
        assert_eq!(b.same_site(target), None, "{target}");
    }

    #[test]
    fn cookie_values_are_read_from_every_cookie_header() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; _portcullis=one"));
        h.append(header::COOKIE, HeaderValue::from_static("_portcullis=two;b=2"));
        assert_eq!(cookies(&h, "_portcullis").collect::<Vec<_>>(), vec!["one", "two"]);
        assert_eq!(cookies(&h, "b").collect::<Vec<_>>(), vec!["2"]);
        assert_eq!(cookies(&h, "_portcullis_x").count(), 0);
    }
}
