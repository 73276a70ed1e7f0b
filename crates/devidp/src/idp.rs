//! [`DevIdp`]: the provider's handle (bind, run, mint, test hooks), the
//! state shared by every request, and the minting of codes and tokens that
//! both the HTTP endpoints and the handle use.
//!
//! HTTP handling itself lives in `server`, `authorize` and `token`; this
//! module holds no request parsing.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::Mutex;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use url::Url;

use crate::config::{DevAccount, DevIdpConfig, check_loopback};
use crate::error::DevIdpError;
use crate::jwt::{self, Signer};
use crate::store::{self, AuthRequest, Code, Grant, Refresh, State};

/// Random bytes in codes, refresh tokens and session cookies.
const SECRET_BYTES: usize = 32;
/// Random bytes in identifiers that are not secrets (sid, jti, family).
const ID_BYTES: usize = 16;
/// The `client_id` claim of tokens made by [`DevIdp::mint_access_token`].
const MINT_CLIENT_ID: &str = "portcullis-devidp";

/// A running (or about to run) development OpenID Provider. Cheap to clone:
/// clones share one listener, key and state.
#[derive(Clone)]
pub struct DevIdp {
    pub(crate) inner: Arc<Inner>,
}

impl fmt::Debug for DevIdp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevIdp")
            .field("issuer", &self.inner.issuer_str)
            .field("kid", &self.inner.signer.kid())
            .finish_non_exhaustive()
    }
}

/// Counters, for tests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DevIdpStats {
    /// Authorization codes issued (after a password or a silent SSO sign-in).
    pub codes_issued: u64,
    /// Authorization codes exchanged for tokens.
    pub codes_redeemed: u64,
    /// Token endpoint requests answered with an error.
    pub token_requests_refused: u64,
    /// Successful refresh token grants.
    pub refresh_grants: u64,
    /// Successful password sign-ins at the login form.
    pub password_logins: u64,
    /// Wrong username or password at the login form.
    pub failed_logins: u64,
    /// Authorization requests answered from the SSO session, without the form.
    pub silent_logins: u64,
    /// Requests to the end-session endpoint.
    pub logouts: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) codes_issued: AtomicU64,
    pub(crate) codes_redeemed: AtomicU64,
    pub(crate) token_requests_refused: AtomicU64,
    pub(crate) refresh_grants: AtomicU64,
    pub(crate) password_logins: AtomicU64,
    pub(crate) failed_logins: AtomicU64,
    pub(crate) silent_logins: AtomicU64,
    pub(crate) logouts: AtomicU64,
}

pub(crate) fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Everything a request handler needs.
#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) config: DevIdpConfig,
    pub(crate) issuer: Url,
    /// The issuer exactly as announced and put in tokens (no trailing slash).
    pub(crate) issuer_str: String,
    pub(crate) local_addr: SocketAddr,
    pub(crate) signer: Signer,
    pub(crate) state: Mutex<State>,
    pub(crate) counters: Counters,
    pub(crate) code_ttl: Mutex<Duration>,
    pub(crate) listener: Mutex<Option<TcpListener>>,
}

/// The identity of a signed-in browser: who and from which SSO session.
#[derive(Debug, Clone)]
pub(crate) struct SignIn {
    pub(crate) username: String,
    pub(crate) sid: String,
    pub(crate) auth_time: u64,
}

/// What the token endpoint returns.
#[derive(Debug)]
pub(crate) struct TokenSet {
    pub(crate) access_token: String,
    pub(crate) expires_in: u64,
    pub(crate) id_token: String,
    pub(crate) refresh_token: Option<String>,
    pub(crate) scope: String,
}

pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl DevIdp {
    /// Checks the configuration, makes the signing key and binds the
    /// listener. A non-loopback address is refused with
    /// [`DevIdpError::NotLoopback`] before anything is bound.
    pub async fn bind(config: DevIdpConfig) -> Result<DevIdp, DevIdpError> {
        check_loopback(config.addr)?;
        config.validate()?;
        let signer = Signer::generate()?;
        let listener = TcpListener::bind(config.addr)
            .await
            .map_err(|source| DevIdpError::Bind {
                addr: config.addr,
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| DevIdpError::Bind {
            addr: config.addr,
            source,
        })?;
        let issuer_str = format!("http://{local_addr}");
        let issuer = Url::parse(&issuer_str)
            .map_err(|e| DevIdpError::InvalidConfig(format!("issuer {issuer_str:?} is not a url: {e}")))?;
        tracing::info!(issuer = %issuer_str, "development identity provider listening (not for production use)");
        Ok(DevIdp {
            inner: Arc::new(Inner {
                config,
                issuer,
                issuer_str,
                local_addr,
                signer,
                state: Mutex::new(State::new()),
                counters: Counters::default(),
                code_ttl: Mutex::new(store::DEFAULT_CODE_TTL),
                listener: Mutex::new(Some(listener)),
            }),
        })
    }

    /// The issuer, `http://127.0.0.1:PORT`, as a [`Url`] (which displays it
    /// with a trailing `/`). For an exact string comparison, as the
    /// `openidconnect` crate makes, use [`DevIdp::issuer_str`].
    pub fn issuer(&self) -> &Url {
        &self.inner.issuer
    }

    /// The issuer exactly as announced in discovery and in the `iss` claim:
    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn issuer_str(&self) -> &str {
        &self.inner.issuer_str
    }

    /// The discovery document's URL.
    pub fn discovery_url(&self) -> String {
        format!("{}/.well-known/openid-configuration", self.inner.issuer_str)
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The configuration it was bound with.
    pub fn config(&self) -> &DevIdpConfig {
        &self.inner.config
    }

    /// Serves until `shutdown` resolves, one task per connection; an error on
    /// one connection never stops the server. Connections still open at
    /// shutdown get a few seconds to finish. Only the first call on a
    /// provider (or any of its clones) serves; later calls return at once.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let listener = self.inner.listener.lock().take();
        match listener {
            Some(listener) => crate::server::serve(self.inner, listener, shutdown).await,
            None => tracing::warn!("development identity provider: run called twice; ignoring"),
        }
    }

    /// Runs the provider on a tokio task until the returned handle is shut
    /// down or dropped.
    pub fn spawn(&self) -> RunningDevIdp {
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(self.clone().run(async move {
            let _ = rx.await;
        }));
        RunningDevIdp {
            idp: self.clone(),
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// Mints an access token (an ES256 JWT, `typ` `at+jwt`, same key and
    /// issuer as the ID tokens) for a known account, with the given
    /// audience, valid for `access_token_ttl`. For curl examples and tests.
    pub fn mint_access_token(&self, username: &str, audience: &str) -> Result<String, DevIdpError> {
        let account = self
            .inner
            .config
            .account(username)
            .ok_or_else(|| DevIdpError::UnknownAccount(username.to_owned()))?;
        let grant = Grant {
            client_id: MINT_CLIENT_ID.to_owned(),
            username: account.username.clone(),
            scope: vec!["openid".to_owned(), "email".to_owned(), "profile".to_owned()],
            sid: String::new(),
            auth_time: unix_now(),
            family: String::new(),
        };
        self.inner
            .access_token(&grant, account, audience, &grant.scope_string(), unix_now())
    }

    /// Counters since bind.
    pub fn stats(&self) -> DevIdpStats {
        let c = &self.inner.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        DevIdpStats {
            codes_issued: get(&c.codes_issued),
            codes_redeemed: get(&c.codes_redeemed),
            token_requests_refused: get(&c.token_requests_refused),
            refresh_grants: get(&c.refresh_grants),
            password_logins: get(&c.password_logins),
            failed_logins: get(&c.failed_logins),
            silent_logins: get(&c.silent_logins),
            logouts: get(&c.logouts),
        }
    }

    /// Revokes every refresh token of `username`: their next refresh grant
    /// gets `invalid_grant`. Access and ID tokens already issued stay valid
    /// until they expire (they are self-contained JWTs).
    pub fn revoke_refresh_tokens(&self, username: &str) {
        self.inner
            .state
            .lock()
            .refresh_tokens
            .retain(|_, r| r.grant.username != username);
    }

    /// Ends every SSO session of `username`, as if they had logged out in
    /// every browser: their next authorization request shows the form.
    pub fn end_sessions(&self, username: &str) {
        self.inner.state.lock().sessions.retain(|_, s| s.username != username);
    }

    /// Tests: how long authorization codes issued from now on stay
    /// redeemable (default 60 seconds; zero makes every code expired).
    pub fn set_code_ttl(&self, ttl: Duration) {
        *self.inner.code_ttl.lock() = ttl;
    }
}

/// A provider serving on a tokio task ([`DevIdp::spawn`]). Dropping it
/// stops the server too, without waiting.
#[derive(Debug)]
pub struct RunningDevIdp {
    idp: DevIdp,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl RunningDevIdp {
    /// Stops accepting connections and waits for the server task to end.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(e) = task.await
        {
            tracing::warn!(error = %e, "development identity provider task ended abnormally");
        }
    }
}

impl Deref for RunningDevIdp {
    type Target = DevIdp;

    fn deref(&self) -> &DevIdp {
        &self.idp
    }
}

impl Drop for RunningDevIdp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Inner {
    pub(crate) fn random_secret(&self) -> Result<String, DevIdpError> {
        self.signer.random_token(SECRET_BYTES)
    }

    pub(crate) fn random_id(&self) -> Result<String, DevIdpError> {
        self.signer.random_token(ID_BYTES)
    }

    /// Issues an authorization code for a validated request and a signed-in
    /// browser; returns the code.
    pub(crate) fn issue_code(&self, request: &AuthRequest, sign_in: &SignIn) -> Result<String, DevIdpError> {
        let code = self.random_secret()?;
        let family = self.random_id()?;
        let now = Instant::now();
        let ttl = *self.code_ttl.lock();
        let entry = Code {
            grant: Grant {
                client_id: request.client_id.clone(),
                username: sign_in.username.clone(),
                scope: request.scope.clone(),
                sid: sign_in.sid.clone(),
                auth_time: sign_in.auth_time,
                family,
            },
            redirect_uri: request.redirect_uri.clone(),
            nonce: request.nonce.clone(),
            code_challenge: request.code_challenge.clone(),
            redeemed: false,
            created: now,
            expires: now + ttl,
        };
        self.state.lock().codes.insert(code.clone(), entry, now);
        bump(&self.counters.codes_issued);
        Ok(code)
    }

    /// Mints the token endpoint's answer for `grant`. `token_scope` may be
    /// narrower than the grant's (a refresh request's `scope`). A refresh
    /// token is stored and returned when `with_refresh`.
    pub(crate) fn issue_tokens(
        &self,
        grant: &Grant,
        token_scope: &[String],
        nonce: Option<&str>,
        with_refresh: bool,
    ) -> Result<TokenSet, DevIdpError> {
        let account = self
            .config
            .account(&grant.username)
            .ok_or_else(|| DevIdpError::UnknownAccount(grant.username.clone()))?;
        let now = unix_now();
        let scope = token_scope.join(" ");
        let access_token = self.access_token(grant, account, &grant.client_id, &scope, now)?;
        let id_token = self.id_token(grant, account, nonce, &access_token, now)?;
        let refresh_token = if with_refresh {
            let token = self.random_secret()?;
            let at = Instant::now();
            let entry = Refresh {
                grant: grant.clone(),
                created: at,
                expires: at + store::REFRESH_TTL,
            };
            self.state.lock().refresh_tokens.insert(token.clone(), entry, at);
            Some(token)
        } else {
            None
        };
        Ok(TokenSet {
            access_token,
            expires_in: self.config.access_token_ttl.as_secs(),
            id_token,
            refresh_token,
            scope,
        })
    }

    fn id_token(
        &self,
        grant: &Grant,
        account: &DevAccount,
        nonce: Option<&str>,
        access_token: &str,
        now: u64,
    ) -> Result<String, DevIdpError> {
        let mut claims = json!({
            "iss": self.issuer_str,
            "sub": account.username,
            "aud": grant.client_id,
            "azp": grant.client_id,
            "exp": now + self.config.id_token_ttl.as_secs(),
            "iat": now,
            "auth_time": grant.auth_time,
            "at_hash": jwt::at_hash(access_token),
            "sid": grant.sid,
            "email": account.email,
            "email_verified": true,
            "name": account.name,
            "preferred_username": account.username,
        });
        if let (Some(nonce), Value::Object(map)) = (nonce, &mut claims) {
            map.insert("nonce".to_owned(), Value::String(nonce.to_owned()));
        }
        self.signer.sign(jwt::TYP_ID_TOKEN, &claims)
    }

    pub(crate) fn access_token(
        &self,
        grant: &Grant,
        account: &DevAccount,
        audience: &str,
        scope: &str,
        now: u64,
    ) -> Result<String, DevIdpError> {
        let mut claims = json!({
            "iss": self.issuer_str,
            "sub": account.username,
            "aud": audience,
            "client_id": grant.client_id,
            "scope": scope,
            "exp": now + self.config.access_token_ttl.as_secs(),
            "iat": now,
            "nbf": now,
            "jti": self.random_id()?,
            "auth_time": grant.auth_time,
            "email": account.email,
            "email_verified": true,
            "name": account.name,
            "preferred_username": account.username,
        });
        if !grant.sid.is_empty()
            && let Value::Object(map) = &mut claims
        {
            map.insert("sid".to_owned(), Value::String(grant.sid.clone()));
        }
        self.signer.sign(jwt::TYP_ACCESS_TOKEN, &claims)
    }

    /// The claims of a valid (signed here, unexpired, right issuer) access token.
    pub(crate) fn verify_access_token(&self, token: &str) -> Result<serde_json::Map<String, Value>, &'static str> {
        let claims = self
            .signer
            .verify(token, jwt::TYP_ACCESS_TOKEN)
            .ok_or("the access token is malformed or not signed by this provider")?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer_str.as_str()) {
            return Err("the access token was issued by another issuer");
        }
        match claims.get("exp").and_then(Value::as_u64) {
            Some(exp) if exp > unix_now() => Ok(claims),
            _ => Err("the access token has expired"),
        }
    }
}
