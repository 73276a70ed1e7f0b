//! The browser-facing endpoints: `/authorize` (request validation, the
//! login form, the SSO session cookie, code issuance) and `/logout`
//! (RP-Initiated Logout 1.0).
//!
//! Requests whose client or redirect URI cannot be trusted get an error page
//! and are never redirected (RFC 6749 4.1.2.1); other errors go back to the
//! client as `error=` redirects. There is no consent screen and no account
//! chooser. Token issuance itself is in `idp`.

use http::StatusCode;
use http::header::SET_COOKIE;
use http::request::Parts;
use tokio::time::Instant;
use url::Url;

use crate::SESSION_COOKIE;
use crate::config::DevClient;
use crate::idp::{Inner, SignIn, bump, unix_now};
use crate::jwt::{self, secure_eq};
use crate::pages;
use crate::params::{Params, cookie_values};
use crate::server::{Resp, form_body, html, redirect, server_error, with_headers};
use crate::store::{self, AuthRequest, Session, Transaction};

/// The scopes this provider knows; others are ignored (OIDC Core 3.1.2.1).
pub(crate) const SUPPORTED_SCOPES: [&str; 4] = ["openid", "email", "profile", "offline_access"];
/// Wrong passwords allowed on one form before it must be reopened.
const MAX_FAILED_ATTEMPTS: u32 = 20;
const BAD_CREDENTIALS: &str = "Incorrect username or password.";

fn bad_request_page(heading: &str, message: &str) -> Resp {
    html(StatusCode::BAD_REQUEST, pages::error(heading, message))
}

/// A validated client and redirect URI: from here on, errors go back to the client.
struct Return<'a> {
    inner: &'a Inner,
    redirect_uri: &'a str,
    state: Option<&'a str>,
}

impl Return<'_> {
    /// `redirect_uri` plus the given parameters, then `state` and `iss`.
    fn location(&self, params: &[(&str, &str)]) -> Result<String, url::ParseError> {
        let mut url = Url::parse(self.redirect_uri)?;
        {
            let mut query = url.query_pairs_mut();
            for (k, v) in params {
                query.append_pair(k, v);
            }
            if let Some(state) = self.state {
                query.append_pair("state", state);
            }
            query.append_pair("iss", &self.inner.issuer_str);
        }
        Ok(url.into())
    }

    fn error(&self, error: &str, description: &str) -> Resp {
        match self.location(&[("error", error), ("error_description", description)]) {
            Ok(location) => redirect(&location, &[]),
            Err(e) => server_error(&e),
        }
    }

    fn code(&self, code: &str, cookie: Option<String>) -> Resp {
        let extra: Vec<_> = cookie.into_iter().map(|c| (SET_COOKIE, c)).collect();
        match self.location(&[("code", code)]) {
            Ok(location) => redirect(&location, &extra),
            Err(e) => server_error(&e),
        }
    }
}

/// `GET /authorize`.
pub(crate) fn authorize_get(inner: &Inner, parts: &Parts, query: &[u8]) -> Resp {
    let params = Params::parse(query);
    let client_id = match params.get("client_id") {
        Ok(Some(id)) => id,
        Ok(None) => return bad_request_page("Invalid sign-in request", "The request has no client_id."),
        Err(e) => return bad_request_page("Invalid sign-in request", &e.describe()),
    };
    let Some(client) = inner.config.client(client_id) else {
        return bad_request_page(
            "Invalid sign-in request",
            &format!("The application {client_id:?} is not registered with this identity provider."),
        );
    };
    let redirect_uri = match params.get("redirect_uri") {
        Ok(Some(uri)) => uri,
        Ok(None) => return bad_request_page("Invalid sign-in request", "The request has no redirect_uri."),
        Err(e) => return bad_request_page("Invalid sign-in request", &e.describe()),
    };
    if !client.redirect_uris.iter().any(|u| u == redirect_uri) {
        return bad_request_page(
            "Invalid sign-in request",
            &format!("The redirect URI {redirect_uri:?} is not registered for the application {client_id:?}."),
        );
    }
    let mut ret = Return {
        inner,
        redirect_uri,
        state: None,
    };
    match params.get("state") {
        Ok(state) => ret.state = state,
        Err(e) => return ret.error("invalid_request", &e.describe()),
    }
    let (request, prompt, max_age) = match validate(client, redirect_uri, &params) {
        Ok(valid) => valid,
        Err((error, description)) => return ret.error(error, &description),
    };

    let now = Instant::now();
    // max_age=0 is prompt=login; a larger one needs a recent enough password.
    let force_login = prompt.login || max_age == Some(0);
    let session = current_session(inner, parts, now);
    let usable =
        session.filter(|s| !force_login && max_age.is_none_or(|max| unix_now().saturating_sub(s.auth_time) <= max));
    if let Some(sign_in) = usable {
        return match inner.issue_code(&request, &sign_in) {
            Ok(code) => {
                bump(&inner.counters.silent_logins);
                ret.code(&code, None)
            }
            Err(e) => server_error(&e),
        };
    }
    if prompt.none {
        return ret.error(
            "login_required",
            "the user is not signed in and prompt=none forbids asking",
        );
    }

    let transaction = match inner.random_secret() {
        Ok(t) => t,
        Err(e) => return server_error(&e),
    };
    let username = request.login_hint.clone().unwrap_or_default();
    inner.state.lock().transactions.insert(
        transaction.clone(),
        Transaction {
            request,
            created: now,
            expires: now + store::TRANSACTION_TTL,
            failed_attempts: 0,
        },
        now,
    );
    html(
        StatusCode::OK,
        pages::login(&pages::Login {
            client_id,
            transaction: &transaction,
            username: &username,
            error: None,
        }),
    )
}

#[derive(Debug, Default)]
struct Prompt {
    none: bool,
    login: bool,
}

type Invalid = (&'static str, String);

/// Checks everything after the client and redirect URI.
fn validate(
    client: &DevClient,
    redirect_uri: &str,
    params: &Params,
) -> Result<(AuthRequest, Prompt, Option<u64>), Invalid> {
    let get = |name| params.get(name).map_err(|e| ("invalid_request", e.describe()));
    if get("request")?.is_some() {
        return Err(("request_not_supported", "request objects are not supported".to_owned()));
    }
    if get("request_uri")?.is_some() {
        return Err(("request_uri_not_supported", "request_uri is not supported".to_owned()));
    }
    match get("response_type")? {
        None => return Err(("invalid_request", "response_type is required".to_owned())),
        Some("code") => {}
        Some(other) => {
            return Err((
                "unsupported_response_type",
                format!("response_type {other:?} is not supported; use code"),
            ));
        }
    }
    if let Some(mode) = get("response_mode")?
        && mode != "query"
    {
        return Err((
            "invalid_request",
            format!("response_mode {mode:?} is not supported; use query"),
        ));
    }
    let requested: Vec<&str> = get("scope")?.unwrap_or("").split_ascii_whitespace().collect();
    if !requested.contains(&"openid") {
        return Err(("invalid_scope", "scope must include openid".to_owned()));
    }
    let scope: Vec<String> = SUPPORTED_SCOPES
        .iter()
        .filter(|s| requested.contains(s))
        .map(|s| (*s).to_owned())
        .collect();

    let method = get("code_challenge_method")?;
    if let Some(method) = method
        && method != "S256"
    {
        return Err((
            "invalid_request",
            format!("code_challenge_method {method:?} is not supported; use S256"),
        ));
    }
    let code_challenge = match (get("code_challenge")?, method.is_some()) {
        (Some(challenge), true) => {
            if !is_s256_challenge(challenge) {
                return Err((
                    "invalid_request",
                    "code_challenge is not a base64url SHA-256 value".to_owned(),
                ));
            }
            Some(challenge.to_owned())
        }
        // RFC 7636: no method means plain, which this provider refuses.
        (Some(_), false) => {
            return Err((
                "invalid_request",
                "code_challenge_method is required; only S256 is supported".to_owned(),
            ));
        }
        (None, true) => {
            return Err((
                "invalid_request",
                "code_challenge_method without code_challenge".to_owned(),
            ));
        }
        (None, false) if client.secret.is_none() => {
            return Err((
                "invalid_request",
                "PKCE (code_challenge with S256) is required for public clients".to_owned(),
            ));
        }
        (None, false) => None,
    };

    let mut prompt = Prompt::default();
    for value in get("prompt")?.unwrap_or("").split_ascii_whitespace() {
        match value {
            "none" => prompt.none = true,
            "login" => prompt.login = true,
            _ => {} // consent, select_account: nothing to show
        }
    }
    if prompt.none && get("prompt")?.is_some_and(|p| p.split_ascii_whitespace().count() > 1) {
        return Err((
            "invalid_request",
            "prompt=none cannot be combined with other values".to_owned(),
        ));
    }
    let max_age = match get("max_age")? {
        None => None,
        Some(v) => Some(
            v.parse::<u64>()
                .map_err(|_| ("invalid_request", "max_age is not a number".to_owned()))?,
        ),
    };
    let request = AuthRequest {
        client_id: client.id.clone(),
        redirect_uri: redirect_uri.to_owned(),
        scope,
        state: get("state")?.map(str::to_owned),
        nonce: get("nonce")?.map(str::to_owned),
        code_challenge,
        login_hint: get("login_hint")?.map(str::to_owned),
    };
    Ok((request, prompt, max_age))
}

/// 43 base64url characters: the S256 transform of a verifier.
fn is_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The browser's live SSO session, if any of its `devidp_session` cookies names one.
fn current_session(inner: &Inner, parts: &Parts, now: Instant) -> Option<SignIn> {
    let mut state = inner.state.lock();
    for value in cookie_values(&parts.headers, SESSION_COOKIE) {
        if let Some(session) = state.sessions.get_mut(value, now)
            && inner.config.account(&session.username).is_some()
        {
            return Some(SignIn {
                username: session.username.clone(),
                sid: session.sid.clone(),
                auth_time: session.auth_time,
            });
        }
    }
    None
}

fn session_cookie(value: &str, max_age: u64) -> String {
    format!("{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax")
}

/// `POST /authorize`: the login form submitted.
pub(crate) fn authorize_post(inner: &Inner, parts: &Parts, body: &[u8]) -> Resp {
    let Some(form) = form_body(parts, body) else {
        return bad_request_page(
            "Invalid sign-in request",
            "Expected a form (application/x-www-form-urlencoded, UTF-8).",
        );
    };
    let params = Params::parse(form);
    let (transaction_id, username, password) = match (
        params.get("transaction"),
        params.get("username"),
        params.get("password"),
    ) {
        (Ok(t), Ok(u), Ok(p)) => (t, u, p),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            return bad_request_page("Invalid sign-in request", &e.describe());
        }
    };
    let expired = || {
        bad_request_page(
            "Sign-in request expired",
            "This sign-in request has expired or is unknown. Go back to the application and sign in again.",
        )
    };
    let Some(transaction_id) = transaction_id else {
        return expired();
    };
    let now = Instant::now();
    let username = username.unwrap_or("");
    let account = inner.config.account(username);
    let password_ok = match (account, password) {
        (Some(account), Some(password)) => secure_eq(password.as_bytes(), account.password.as_bytes()),
        (None, Some(password)) => {
            // Same work as for a known account: do not reveal which part was wrong.
            let _ = secure_eq(password.as_bytes(), b"not an account");
            false
        }
        (_, None) => false,
    };

    let request = {
        let mut state = inner.state.lock();
        let Some(transaction) = state.transactions.get_mut(transaction_id, now) else {
            return expired();
        };
        if !password_ok {
            transaction.failed_attempts += 1;
            let attempts = transaction.failed_attempts;
            let client_id = transaction.request.client_id.clone();
            if attempts >= MAX_FAILED_ATTEMPTS {
                state.transactions.remove(transaction_id);
            }
            drop(state);
            bump(&inner.counters.failed_logins);
            if attempts >= MAX_FAILED_ATTEMPTS {
                return html(
                    StatusCode::TOO_MANY_REQUESTS,
                    pages::error("Too many attempts", "Go back to the application and sign in again."),
                );
            }
            let error = if password.is_none() || username.is_empty() {
                "Enter your username and password."
            } else {
                BAD_CREDENTIALS
            };
            return html(
                StatusCode::OK,
                pages::login(&pages::Login {
                    client_id: &client_id,
                    transaction: transaction_id,
                    username,
                    error: Some(error),
                }),
            );
        }
        let Some(transaction) = state.transactions.remove(transaction_id) else {
            return expired();
        };
        // Signing in again replaces this browser's previous session.
        for old in cookie_values(&parts.headers, SESSION_COOKIE) {
            state.sessions.remove(old);
        }
        transaction.request
    };
    let Some(account) = account else {
        return server_error(&"password accepted for an unknown account");
    };

    let (cookie_value, sid) = match (inner.random_secret(), inner.random_id()) {
        (Ok(c), Ok(s)) => (c, s),
        (Err(e), _) | (_, Err(e)) => return server_error(&e),
    };
    let sign_in = SignIn {
        username: account.username.clone(),
        sid: sid.clone(),
        auth_time: unix_now(),
    };
    inner.state.lock().sessions.insert(
        cookie_value.clone(),
        Session {
            username: account.username.clone(),
            sid,
            auth_time: sign_in.auth_time,
            created: now,
            expires: now + store::SESSION_TTL,
        },
        now,
    );
    bump(&inner.counters.password_logins);
    tracing::debug!(username = %account.username, client = %request.client_id, "development identity provider: signed in");
    let ret = Return {
        inner,
        redirect_uri: &request.redirect_uri,
        state: request.state.as_deref(),
    };
    match inner.issue_code(&request, &sign_in) {
        Ok(code) => ret.code(&code, Some(session_cookie(&cookie_value, store::SESSION_TTL.as_secs()))),
        Err(e) => server_error(&e),
    }
}

/// `GET` or `POST /logout`: ends the browser's SSO session, then returns to
/// a registered post-logout redirect URI or shows the signed-out page.
pub(crate) fn logout(inner: &Inner, parts: &Parts, query: &[u8]) -> Resp {
    let params = Params::parse(query);
    let get = |name| params.get(name);
    let (hint, return_to, state, client_id) = match (
        get("id_token_hint"),
        get("post_logout_redirect_uri"),
        get("state"),
        get("client_id"),
    ) {
        (Ok(h), Ok(r), Ok(s), Ok(c)) => (h, r, s, c),
        (Err(e), ..) | (_, Err(e), ..) | (_, _, Err(e), _) | (.., Err(e)) => {
            return bad_request_page("Invalid sign-out request", &e.describe());
        }
    };

    // End the session whatever else is wrong with the request.
    {
        let mut st = inner.state.lock();
        for value in cookie_values(&parts.headers, SESSION_COOKIE) {
            st.sessions.remove(value);
        }
    }
    bump(&inner.counters.logouts);
    let clear = [(SET_COOKIE, session_cookie("", 0))];

    let unknown = "the application is not registered with this provider";
    let client = match (hint.map(|h| id_token_audience(inner, h)), client_id) {
        (Some(None), _) => Err("the id_token_hint was not issued by this provider"),
        (Some(Some(hinted)), Some(id)) if hinted != id => Err("client_id does not match the id_token_hint"),
        (Some(Some(hinted)), _) => inner.config.client(&hinted).ok_or(unknown),
        (None, Some(id)) => inner.config.client(id).ok_or(unknown),
        (None, None) => Err("the request does not say which application it came from"),
    };
    let note = match (return_to, client) {
        (None, _) => None,
        (Some(uri), Ok(client)) if client.post_logout_redirect_uris.iter().any(|u| u == uri) => {
            let mut url = match Url::parse(uri) {
                Ok(url) => url,
                Err(e) => return server_error(&e),
            };
            if let Some(state) = state {
                url.query_pairs_mut().append_pair("state", state);
            }
            return redirect(url.as_str(), &clear);
        }
        (Some(uri), Ok(_)) => Some(format!(
            "You were not sent back to {uri} because it is not a registered post-logout redirect URI."
        )),
        (Some(uri), Err(why)) => Some(format!("You were not sent back to {uri}: {why}.")),
    };
    with_headers(html(StatusCode::OK, pages::signed_out(note.as_deref())), &clear)
}

/// The client (`aud`) of an ID token this provider signed; expired ones are
/// fine (RP-Initiated Logout 1.0 section 2).
fn id_token_audience(inner: &Inner, token: &str) -> Option<String> {
    let claims = inner.signer.verify(token, jwt::TYP_ID_TOKEN)?;
    if claims.get("iss")?.as_str()? != inner.issuer_str {
        return None;
    }
    match claims.get("aud")? {
        serde_json::Value::String(aud) => Some(aud.clone()),
        serde_json::Value::Array(auds) => auds.first()?.as_str().map(str::to_owned),
        _ => None,
    }
}
