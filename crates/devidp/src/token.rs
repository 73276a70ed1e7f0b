//! The back-channel endpoints: `/token` (client authentication, the
//! `authorization_code` and `refresh_token` grants) and `/userinfo`.
//!
//! Every token endpoint error is an RFC 6749 5.2 JSON document with
//! `Cache-Control: no-store`, counted in `token_requests_refused`. Not here:
//! other grants (client credentials, password, device, token exchange),
//! token introspection and revocation endpoints.

use http::StatusCode;
use http::header::WWW_AUTHENTICATE;
use http::request::Parts;
use serde_json::json;
use tokio::time::Instant;

use crate::config::DevClient;
use crate::idp::{Inner, TokenSet, bump};
use crate::jwt::{s256, secure_eq};
use crate::params::{Params, basic_credentials};
use crate::server::{Resp, form_body, json_response, oauth_error, with_headers};

/// A refused token request.
struct Refusal {
    status: StatusCode,
    error: &'static str,
    description: String,
}

fn refuse(error: &'static str, description: impl Into<String>) -> Refusal {
    Refusal {
        status: StatusCode::BAD_REQUEST,
        error,
        description: description.into(),
    }
}

fn invalid_client(description: impl Into<String>) -> Refusal {
    Refusal {
        status: StatusCode::UNAUTHORIZED,
        error: "invalid_client",
        description: description.into(),
    }
}

/// `POST /token`.
pub(crate) fn token(inner: &Inner, parts: &Parts, body: &[u8]) -> Resp {
    match token_inner(inner, parts, body) {
        Ok(tokens) => {
            let mut doc = json!({
                "access_token": tokens.access_token,
                "token_type": "Bearer",
                "expires_in": tokens.expires_in,
                "id_token": tokens.id_token,
                "scope": tokens.scope,
            });
            if let (Some(refresh), Some(map)) = (tokens.refresh_token, doc.as_object_mut()) {
                map.insert("refresh_token".to_owned(), refresh.into());
            }
            json_response(StatusCode::OK, &doc)
        }
        Err(refusal) => {
            bump(&inner.counters.token_requests_refused);
            tracing::debug!(error = refusal.error, description = %refusal.description, "development identity provider: token request refused");
            let resp = oauth_error(refusal.status, refusal.error, &refusal.description);
            if refusal.status == StatusCode::UNAUTHORIZED {
                with_headers(resp, &[(WWW_AUTHENTICATE, "Basic realm=\"devidp\"".to_owned())])
            } else {
                resp
            }
        }
    }
}

fn token_inner(inner: &Inner, parts: &Parts, body: &[u8]) -> Result<TokenSet, Refusal> {
    let form = form_body(parts, body).ok_or_else(|| {
        refuse(
            "invalid_request",
            "expected an application/x-www-form-urlencoded UTF-8 body",
        )
    })?;
    let params = Params::parse(form);
    let get = |name| params.get(name).map_err(|e| refuse("invalid_request", e.describe()));
    let client = authenticate(inner, parts, &params)?;
    match get("grant_type")? {
        Some("authorization_code") => code_grant(inner, client, &params),
        Some("refresh_token") => refresh_grant(inner, client, &params),
        Some(other) => Err(refuse(
            "unsupported_grant_type",
            format!("grant_type {other:?} is not supported"),
        )),
        None => Err(refuse("invalid_request", "grant_type is required")),
    }
}

/// Client authentication: `client_secret_basic`, `client_secret_post`, or
/// `none` for public clients (client_id in the body).
fn authenticate<'a>(inner: &'a Inner, parts: &Parts, params: &Params) -> Result<&'a DevClient, Refusal> {
    let get = |name| params.get(name).map_err(|e| refuse("invalid_request", e.describe()));
    let body_id = get("client_id")?;
    let body_secret = get("client_secret")?;
    let (id, secret) = match basic_credentials(&parts.headers) {
        Some(Err(())) => {
            return Err(invalid_client(
                "the Authorization header is not valid client_secret_basic",
            ));
        }
        Some(Ok((id, secret))) => {
            if body_secret.is_some() {
                return Err(refuse(
                    "invalid_request",
                    "use one client authentication method, not two",
                ));
            }
            if body_id.is_some_and(|b| b != id) {
                return Err(refuse(
                    "invalid_request",
                    "client_id in the body differs from the Authorization header",
                ));
            }
            (id, Some(secret))
        }
        None => match body_id {
            Some(id) => (id.to_owned(), body_secret.map(str::to_owned)),
            None => return Err(invalid_client("client authentication is required")),
        },
    };
    let client = inner
        .config
        .client(&id)
        .ok_or_else(|| invalid_client("unknown client"))?;
    match (&client.secret, secret) {
        (Some(expected), Some(given)) if secure_eq(expected.as_bytes(), given.as_bytes()) => Ok(client),
        (Some(_), Some(_)) => Err(invalid_client("client authentication failed")),
        (Some(_), None) => Err(invalid_client("this client must authenticate with its secret")),
        (None, None) => Ok(client),
        (None, Some(_)) => Err(invalid_client("a public client has no secret")),
    }
}

/// RFC 7636 4.1: 43 to 128 unreserved characters.
fn is_code_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len())
        && verifier
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn code_grant(inner: &Inner, client: &DevClient, params: &Params) -> Result<TokenSet, Refusal> {
    let get = |name| params.get(name).map_err(|e| refuse("invalid_request", e.describe()));
    let code = get("code")?.ok_or_else(|| refuse("invalid_request", "code is required"))?;
    let redirect_uri = get("redirect_uri")?.ok_or_else(|| refuse("invalid_request", "redirect_uri is required"))?;
    let verifier = get("code_verifier")?;
    if verifier.is_some_and(|v| !is_code_verifier(v)) {
        return Err(refuse(
            "invalid_request",
            "code_verifier must be 43 to 128 unreserved characters",
        ));
    }

    let now = Instant::now();
    let (grant, nonce) = {
        let mut state = inner.state.lock();
        let Some(entry) = state.codes.get_mut(code, now) else {
            return Err(refuse(
                "invalid_grant",
                "the authorization code is unknown or has expired",
            ));
        };
        if entry.redeemed {
            // A replayed code: revoke what was issued from it (RFC 6749 4.1.2).
            let family = entry.grant.family.clone();
            state.refresh_tokens.retain(|_, r| r.grant.family != family);
            return Err(refuse("invalid_grant", "the authorization code has already been used"));
        }
        // One attempt per code, successful or not.
        entry.redeemed = true;
        if entry.grant.client_id != client.id {
            return Err(refuse(
                "invalid_grant",
                "the authorization code was issued to another client",
            ));
        }
        if entry.redirect_uri != redirect_uri {
            return Err(refuse(
                "invalid_grant",
                "redirect_uri differs from the authorization request's",
            ));
        }
        match (&entry.code_challenge, verifier) {
            (Some(challenge), Some(verifier)) => {
                if !secure_eq(s256(verifier).as_bytes(), challenge.as_bytes()) {
                    return Err(refuse(
                        "invalid_grant",
                        "code_verifier does not match the code_challenge",
                    ));
                }
            }
            (Some(_), None) => return Err(refuse("invalid_grant", "code_verifier is required")),
            (None, Some(_)) => {
                return Err(refuse(
                    "invalid_grant",
                    "code_verifier given but the authorization request had no code_challenge",
                ));
            }
            (None, None) => {}
        }
        (entry.grant.clone(), entry.nonce.clone())
    };
    bump(&inner.counters.codes_redeemed);
    let with_refresh = inner.config.issue_refresh_tokens && grant.has_scope("offline_access");
    inner
        .issue_tokens(&grant, &grant.scope, nonce.as_deref(), with_refresh)
        .map_err(|e| refuse("server_error", e.to_string()))
}

fn refresh_grant(inner: &Inner, client: &DevClient, params: &Params) -> Result<TokenSet, Refusal> {
    let get = |name| params.get(name).map_err(|e| refuse("invalid_request", e.describe()));
    let token = get("refresh_token")?.ok_or_else(|| refuse("invalid_request", "refresh_token is required"))?;
    let requested_scope = get("scope")?;
    let now = Instant::now();
    let requested: Option<Vec<&str>> = requested_scope.map(|s| s.split_ascii_whitespace().collect());
    let (grant, scope) = {
        let mut state = inner.state.lock();
        let Some(entry) = state.refresh_tokens.get_mut(token, now) else {
            return Err(refuse(
                "invalid_grant",
                "the refresh token is unknown, revoked, used or expired",
            ));
        };
        if entry.grant.client_id != client.id {
            return Err(refuse(
                "invalid_grant",
                "the refresh token was issued to another client",
            ));
        }
        // A narrower scope applies to the new access token; the new refresh
        // token keeps the original (RFC 6749 6). Checked before rotation, so
        // a bad request does not spend the token.
        let scope: Vec<String> = match &requested {
            None => entry.grant.scope.clone(),
            Some(requested) => {
                if let Some(extra) = requested.iter().find(|s| !entry.grant.has_scope(s)) {
                    return Err(refuse(
                        "invalid_scope",
                        format!("scope {extra:?} was not granted originally"),
                    ));
                }
                entry
                    .grant
                    .scope
                    .iter()
                    .filter(|s| requested.contains(&s.as_str()))
                    .cloned()
                    .collect()
            }
        };
        // Rotation: a refresh token works once.
        let Some(entry) = state.refresh_tokens.remove(token) else {
            return Err(refuse(
                "invalid_grant",
                "the refresh token is unknown, revoked, used or expired",
            ));
        };
        (entry.grant, scope)
    };
    bump(&inner.counters.refresh_grants);
    inner
        .issue_tokens(&grant, &scope, None, true)
        .map_err(|e| refuse("server_error", e.to_string()))
}

/// `GET` or `POST /userinfo` with `Authorization: Bearer <access token>`.
pub(crate) fn userinfo(inner: &Inner, parts: &Parts) -> Resp {
    let challenge = |error: Option<&str>| {
        let value = match error {
            None => "Bearer realm=\"devidp\"".to_owned(),
            Some(description) => {
                format!("Bearer realm=\"devidp\", error=\"invalid_token\", error_description=\"{description}\"")
            }
        };
        let resp = json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_token", "error_description": error.unwrap_or("a bearer access token is required")}),
        );
        with_headers(resp, &[(WWW_AUTHENTICATE, value)])
    };
    let Some(header) = parts.headers.get(http::header::AUTHORIZATION) else {
        return challenge(None);
    };
    let token = header
        .to_str()
        .ok()
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(token) = token else {
        return challenge(Some("the Authorization header is not a bearer token"));
    };
    let claims = match inner.verify_access_token(token) {
        Ok(claims) => claims,
        Err(why) => return challenge(Some(why)),
    };
    let sub = claims.get("sub").and_then(serde_json::Value::as_str).unwrap_or("");
    let Some(account) = inner.config.account(sub) else {
        return challenge(Some("the access token's subject is not an account here"));
    };
    json_response(
        StatusCode::OK,
        &json!({
            "sub": account.username,
            "email": account.email,
            "email_verified": true,
            "name": account.name,
            "preferred_username": account.username,
        }),
    )
}
