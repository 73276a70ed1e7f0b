//! Browser sign-in with the `openidconnect` crate: discovery, the
//! authorization code flow with PKCE (S256), `state` and `nonce`, ID token
//! validation, refresh, and the RP-initiated logout URL.
//!
//! A sign-in in progress is kept in memory under its `state` for ten
//! minutes (bounded in number) and can be completed once: a replayed
//! callback finds nothing. The proxy also binds it to the browser that
//! started it with a short-lived cookie (login CSRF).
//!
//! Discovery runs in the background with backoff until it succeeds and is
//! repeated hourly; an ID token signed with a key the client does not know
//! triggers one rate-limited re-discovery (the IdP rotated its keys).
//! While the IdP is unreachable, [`SignIn::is_ready`] is false and new
//! sign-ins get a 503; existing sessions do not need the IdP.
//!
//! What this module does not do: sessions or cookies (`session`), or bind
//! the signed-in identity to a directory user (the proxy does, with the
//! same `[identity]` rule bearer tokens use).

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwapOption;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use dashmap::DashMap;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreErrorResponseType};
use openidconnect::{
    AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl,
    Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier, ProviderMetadataWithLogout, RedirectUrl,
    RefreshToken, RequestTokenError, Scope, TokenResponse,
};
use parking_lot::Mutex;
use serde_json::{Map, Value};
use url::Url;

use super::IdpTokens;
use super::http::IdpHttp;
use crate::config::Oidc;

type Client =
    CoreClient<EndpointSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointMaybeSet, EndpointMaybeSet>;

/// How long a started sign-in may take.
const PENDING_TTL: Duration = Duration::from_secs(600);
/// Sign-ins in progress at once; beyond this, new ones get a 503.
const MAX_PENDING: usize = 50_000;
/// How often discovery (and the JWKS) is refreshed.
const REDISCOVER_EVERY: Duration = Duration::from_secs(3600);
/// Least time between re-discoveries triggered by an unknown signing key.
const REDISCOVER_MIN_INTERVAL: Duration = Duration::from_secs(30);

/// Why a sign-in could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    #[error("the identity provider is not reachable")]
    NotReady,
    #[error("too many sign-ins in progress")]
    Busy,
    #[error("unknown or already used sign-in state")]
    UnknownState,
    #[error("the identity provider refused the sign-in: {error}")]
    Refused { error: String, description: Option<String> },
    #[error("token exchange failed: {0}")]
    Exchange(String),
    #[error("the identity provider cannot be reached for the token exchange: {0}")]
    Unreachable(String),
    #[error("the ID token was refused: {0}")]
    IdToken(String),
}

/// Why a refresh failed.
#[derive(Debug, thiserror::Error)]
pub enum RefreshError {
    /// The IdP says the grant is gone: the session must end.
    #[error("the identity provider refused the refresh token: {0}")]
    Rejected(String),
    /// The IdP could not be asked; try later, keep the session.
    #[error("refresh failed: {0}")]
    Unavailable(String),
}

/// A completed sign-in.
#[derive(Debug)]
pub struct Completed {
    /// Where the browser first wanted to go.
    pub return_to: String,
    /// Every claim of the verified ID token.
    pub claims: Map<String, Value>,
    pub sub: String,
    pub sid: Option<String>,
    pub tokens: IdpTokens,
    /// Seconds until the IdP's tokens lapse, when it said.
    pub expires_in: Option<Duration>,
}

struct Pending {
    verifier: PkceCodeVerifier,
    nonce: Nonce,
    return_to: String,
    started: Instant,
}

struct Provider {
    client: Client,
    end_session: Option<Url>,
}

/// The sign-in client for one issuer.
pub struct SignIn {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: Option<ClientSecret>,
    scopes: Vec<Scope>,
    redirect: RedirectUrl,
    http: IdpHttp,
    provider: ArcSwapOption<Provider>,
    pending: DashMap<String, Pending>,
    last_rediscovery: Mutex<Option<Instant>>,
}

impl std::fmt::Debug for SignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SignIn")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id.as_str())
            .field("ready", &self.is_ready())
            .field("pending", &self.pending.len())
            .finish_non_exhaustive()
    }
}

impl SignIn {
    /// Builds the client; no network traffic until [`SignIn::run`] or
    /// [`SignIn::discover`].
    pub fn new(oidc: &Oidc, client_secret: Option<String>, public_url: &Url) -> Result<SignIn, String> {
        let client = oidc.client.as_ref().ok_or("sign-in needs [oidc] client_id")?;
        let issuer = IssuerUrl::new(oidc.issuer.as_str().to_owned()).map_err(|e| format!("oidc.issuer: {e}"))?;
        let redirect = RedirectUrl::new(format!(
            "{}/.portcullis/callback",
            public_url.as_str().trim_end_matches('/')
        ))
        .map_err(|e| format!("server.public_url: {e}"))?;
        let http = IdpHttp::new(oidc.ca_file.as_deref(), Duration::from_secs(10)).map_err(|e| e.to_string())?;
        Ok(SignIn {
            issuer,
            client_id: ClientId::new(client.client_id.clone()),
            client_secret: client_secret.map(ClientSecret::new),
            scopes: client
                .scopes
                .iter()
                .filter(|s| *s != "openid")
                .cloned()
                .map(Scope::new)
                .collect(),
            redirect,
            http,
            provider: ArcSwapOption::empty(),
            pending: DashMap::new(),
            last_rediscovery: Mutex::new(None),
        })
    }

    /// The redirect URI to register at the IdP.
    pub fn redirect_uri(&self) -> &str {
        self.redirect.as_str()
    }

    /// Whether discovery has succeeded, so sign-ins can start.
    pub fn is_ready(&self) -> bool {
        self.provider.load().is_some()
    }

    /// Fetches the discovery document and JWKS once.
    ///
    /// `openidconnect` compares the announced issuer with the configured one
    /// byte for byte, but a URL without a path reads back with a trailing
    /// slash (`https://accounts.google.com/`); so the other spelling is
    /// tried when the first is refused.
    pub async fn discover(&self) -> Result<(), String> {
        let configured = self.issuer.as_str();
        let other = match configured.strip_suffix('/') {
            Some(trimmed) => trimmed.to_owned(),
            None => format!("{configured}/"),
        };
        let mut first_error = None;
        let mut metadata = None;
        for spelling in [configured.to_owned(), other] {
            let Ok(issuer) = IssuerUrl::new(spelling) else { continue };
            match ProviderMetadataWithLogout::discover_async(issuer, &self.http).await {
                Ok(m) => {
                    metadata = Some(m);
                    break;
                }
                Err(e) => {
                    let retry = matches!(e, openidconnect::DiscoveryError::Validation(_));
                    first_error.get_or_insert_with(|| crate::error_chain(&e));
                    if !retry {
                        break;
                    }
                }
            }
        }
        let metadata = metadata.ok_or_else(|| first_error.unwrap_or_else(|| "no usable issuer URL".into()))?;
        let end_session = metadata
            .additional_metadata()
            .end_session_endpoint
            .as_ref()
            .map(|u| u.url().clone());
        let client = CoreClient::from_provider_metadata(metadata, self.client_id.clone(), self.client_secret.clone())
            .set_redirect_uri(self.redirect.clone());
        self.provider.store(Some(Arc::new(Provider { client, end_session })));
        Ok(())
    }

    /// Discovers with backoff until it works, then again every hour, until
    /// `shutdown`. A failed refresh keeps the last good provider data.
    pub async fn run(&self, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut delay = Duration::from_millis(500);
        loop {
            let wait = match self.discover().await {
                Ok(()) => {
                    tracing::info!(issuer = self.issuer.as_str(), "sign-in: identity provider discovered");
                    delay = Duration::from_millis(500);
                    REDISCOVER_EVERY
                }
                Err(e) => {
                    tracing::warn!(issuer = self.issuer.as_str(), error = %e, retry_in = ?delay, "sign-in: discovery failed");
                    let wait = delay;
                    delay = (delay * 2).min(Duration::from_secs(60));
                    wait
                }
            };
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Starts a sign-in: the IdP URL to send the browser to, and the
    /// `state` that names this sign-in.
    pub fn begin(&self, return_to: String) -> Result<(Url, String), SignInError> {
        let provider = self.provider.load_full().ok_or(SignInError::NotReady)?;
        if self.pending.len() >= MAX_PENDING {
            self.pending.retain(|_, p| p.started.elapsed() < PENDING_TTL);
            if self.pending.len() >= MAX_PENDING {
                return Err(SignInError::Busy);
            }
        }
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let state = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let state_for_url = state.clone();
        let (url, _, nonce) = provider
            .client
            .authorize_url(
                CoreAuthenticationFlow::AuthorizationCode,
                move || CsrfToken::new(state_for_url),
                Nonce::new_random,
            )
            .add_scopes(self.scopes.iter().cloned())
            .set_pkce_challenge(challenge)
            .url();
        self.pending.insert(
            state.clone(),
            Pending {
                verifier,
                nonce,
                return_to,
                started: Instant::now(),
            },
        );
        Ok((url, state))
    }

    /// Takes the sign-in named by `state` (once), if it has not expired.
    /// Returns where it wanted to go.
    pub fn take(&self, state: &str) -> Option<PendingSignIn> {
        let (_, pending) = self.pending.remove(state)?;
        (pending.started.elapsed() < PENDING_TTL).then_some(PendingSignIn(pending))
    }

    /// Finishes a sign-in: redeems the code and validates the ID token.
    pub async fn complete(&self, pending: PendingSignIn, code: &str) -> Result<Completed, SignInError> {
        let pending = pending.0;
        let provider = self.provider.load_full().ok_or(SignInError::NotReady)?;
        let response = provider
            .client
            .exchange_code(AuthorizationCode::new(code.to_owned()))
            .map_err(|e| SignInError::Exchange(e.to_string()))?
            .set_pkce_verifier(pending.verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r) => SignInError::Refused {
                    error: r.error().as_ref().to_owned(),
                    description: r.error_description().cloned(),
                },
                RequestTokenError::Request(e) => SignInError::Unreachable(e.to_string()),
                other => SignInError::Exchange(crate::error_chain(&other)),
            })?;
        let id_token = response
            .id_token()
            .ok_or_else(|| SignInError::IdToken("the token response has no ID token".into()))?;
        let verify = |client: &Client| {
            let verifier = client.id_token_verifier();
            id_token.claims(&verifier, &pending.nonce).map(drop)
        };
        if let Err(first) = verify(&provider.client) {
            // An unknown key may mean the IdP rotated: look again, once.
            let retried = if is_signature_error(&first) && self.rediscover_allowed() {
                self.discover()
                    .await
                    .ok()
                    .and_then(|()| self.provider.load_full())
                    .map(|p| verify(&p.client))
            } else {
                None
            };
            match retried {
                Some(Ok(())) => {}
                Some(Err(e)) => return Err(SignInError::IdToken(e.to_string())),
                None => return Err(SignInError::IdToken(first.to_string())),
            }
        }
        let claims = payload_claims(&id_token.to_string()).map_err(SignInError::IdToken)?;
        let sub = claims
            .get("sub")
            .and_then(Value::as_str)
            .ok_or_else(|| SignInError::IdToken("no sub claim".into()))?
            .to_owned();
        let sid = claims.get("sid").and_then(Value::as_str).map(str::to_owned);
        Ok(Completed {
            return_to: pending.return_to,
            sub,
            sid,
            tokens: IdpTokens {
                refresh_token: response.refresh_token().map(|t| t.secret().clone()),
                id_token: Some(id_token.to_string()),
            },
            expires_in: response.expires_in(),
            claims,
        })
    }

    /// Redeems a refresh token. The new ID token, if any, must be valid
    /// and name the same subject.
    pub async fn refresh(&self, refresh_token: &str, sub: &str) -> Result<(IdpTokens, Option<Duration>), RefreshError> {
        let provider = self
            .provider
            .load_full()
            .ok_or_else(|| RefreshError::Unavailable("the identity provider is not reachable".into()))?;
        let token = RefreshToken::new(refresh_token.to_owned());
        let response = provider
            .client
            .exchange_refresh_token(&token)
            .map_err(|e| RefreshError::Unavailable(e.to_string()))?
            .request_async(&self.http)
            .await
            .map_err(|e| match e {
                RequestTokenError::ServerResponse(r)
                    if matches!(
                        r.error(),
                        CoreErrorResponseType::InvalidGrant | CoreErrorResponseType::UnauthorizedClient
                    ) =>
                {
                    RefreshError::Rejected(r.error().as_ref().to_owned())
                }
                other => RefreshError::Unavailable(crate::error_chain(&other)),
            })?;
        let id_token = match response.id_token() {
            Some(id_token) => {
                let verifier = provider.client.id_token_verifier();
                let claims = id_token
                    .claims(&verifier, |_: Option<&Nonce>| Ok(()))
                    .map_err(|e| RefreshError::Rejected(format!("refreshed ID token refused: {e}")))?;
                if claims.subject().as_str() != sub {
                    return Err(RefreshError::Rejected(
                        "refreshed ID token names another subject".into(),
                    ));
                }
                Some(id_token.to_string())
            }
            None => None,
        };
        Ok((
            IdpTokens {
                // Some IdPs rotate refresh tokens, others keep them.
                refresh_token: Some(
                    response
                        .refresh_token()
                        .map_or_else(|| refresh_token.to_owned(), |t| t.secret().clone()),
                ),
                id_token,
            },
            response.expires_in(),
        ))
    }

    /// The IdP's end-session URL for RP-initiated logout, if it has one.
    pub fn logout_url(&self, id_token: Option<&str>, post_logout: &str) -> Option<Url> {
        let provider = self.provider.load_full()?;
        let mut url = provider.end_session.clone()?;
        {
            let mut q = url.query_pairs_mut();
            if let Some(hint) = id_token {
                q.append_pair("id_token_hint", hint);
            }
            q.append_pair("client_id", self.client_id.as_str());
            q.append_pair("post_logout_redirect_uri", post_logout);
        }
        Some(url)
    }

    fn rediscover_allowed(&self) -> bool {
        let mut last = self.last_rediscovery.lock();
        if last.is_some_and(|t| t.elapsed() < REDISCOVER_MIN_INTERVAL) {
            return false;
        }
        *last = Some(Instant::now());
        true
    }
}

/// A sign-in taken from the pending set, ready to complete.
pub struct PendingSignIn(Pending);

impl std::fmt::Debug for PendingSignIn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingSignIn")
            .field("return_to", &self.0.return_to)
            .finish_non_exhaustive()
    }
}

impl PendingSignIn {
    pub fn return_to(&self) -> &str {
        &self.0.return_to
    }
}

fn is_signature_error(e: &openidconnect::ClaimsVerificationError) -> bool {
    matches!(e, openidconnect::ClaimsVerificationError::SignatureVerification(_))
}

/// The claims of a compact JWS whose signature was already verified.
fn payload_claims(compact: &str) -> Result<Map<String, Value>, String> {
    let payload = compact.split('.').nth(1).ok_or("the ID token is not a compact JWS")?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload)
        .map_err(|_| "the ID token payload is not base64url")?;
    serde_json::from_slice(&bytes).map_err(|_| "the ID token payload is not a JSON object".to_owned())
}
