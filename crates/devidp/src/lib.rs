//! A development-only OpenID Provider, for `portcullis demo` and for the
//! proxy's in-process sign-in tests.
//!
//! It is a real OpenID Provider for the authorization code flow (with PKCE),
//! enough for an unmodified OpenID Connect client (the `openidconnect`
//! crate's `CoreClient` with discovery) to sign in against it:
//!
//! - discovery at `{issuer}/.well-known/openid-configuration` and the key at
//!   `/jwks.json`;
//! - `/authorize`: a login form (with a visible "not for production" banner),
//!   an SSO session cookie (`devidp_session`) that makes a second sign-in in
//!   the same browser silent, `prompt=login`, `prompt=none` and `max_age`;
//! - `/token`: the `authorization_code` grant (single-use codes bound to the
//!   client, the redirect URI and the PKCE verifier) and the `refresh_token`
//!   grant (rotating refresh tokens); client authentication by
//!   `client_secret_basic`, `client_secret_post`, or none for public clients;
//! - `/userinfo` for its own access tokens, and `/logout` (RP-Initiated
//!   Logout 1.0).
//!
//! ID tokens and access tokens are ES256 JWTs signed with one P-256 key made
//! at [`DevIdp::bind`]. A refresh token is issued when
//! [`DevIdpConfig::issue_refresh_tokens`] is on **and** the granted scope
//! includes `offline_access`.
//!
//! What it is **not**: anything for production. It listens on loopback
//! addresses only and over plain HTTP; everything (accounts, sessions,
//! codes, refresh tokens) lives in memory and is lost when it stops; it has
//! one ephemeral signing key and no key rotation; no consent screen, no
//! dynamic client registration, no implicit or hybrid flows, no request
//! objects, no token introspection or revocation endpoints, no back- or
//! front-channel logout. Its logout is a plain GET without a confirmation
//! step. Its maps are bounded and its inputs checked so that a test cannot
//! crash it, but it is not hardened against a determined attacker.
//!
//! ```no_run
//! # async fn example() -> Result<(), portcullis_devidp::DevIdpError> {
//! use portcullis_devidp::{DevClient, DevIdp, DevIdpConfig};
//!
//! let client = DevClient::confidential("portcullis", "dev-secret", "http://127.0.0.1:8080/.portcullis/callback");
//! let config = DevIdpConfig::demo("127.0.0.1:0".parse().unwrap(), client);
//! let idp = DevIdp::bind(config).await?;
//! println!("issuer: {}", idp.issuer_str());
//! let running = idp.spawn();
//! // ... sign in against it ...
//! running.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod authorize;
mod config;
mod error;
mod idp;
mod jwt;
mod pages;
mod params;
mod server;
mod store;
mod token;

pub use config::{DEFAULT_TOKEN_TTL, DevAccount, DevClient, DevIdpConfig};
pub use error::DevIdpError;
pub use idp::{DevIdp, DevIdpStats, RunningDevIdp};

/// The name of the OP's SSO session cookie.
pub const SESSION_COOKIE: &str = "devidp_session";

/// The banner shown on every page the provider renders.
pub const BANNER: &str = "Development identity provider: not for production use";
