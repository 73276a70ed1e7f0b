//! OpenID Connect for Portcullis: verifying the bearer JWTs an identity
//! provider issues, and signing Portcullis's own identity assertions for
//! upstreams.
//!
//! # Layout
//! - [`IssuerConfig`], [`Verifier`]: one issuer's discovery document and
//!   JWKS (fetched with retries, refreshed, kept while the IdP is down,
//!   refetched once for an unknown `kid`), verification of compact JWS
//!   tokens, and the verified-token cache that makes a repeat token cheap.
//! - [`VerifiedToken`]: the claims of a token that passed.
//! - [`VerifyError`]: why a token was refused, with a stable
//!   [`reason`](VerifyError::reason) code; [`OidcError`] for everything else.
//! - [`AssertionSigner`]: ES256 assertions for upstreams and the JWKS that
//!   publishes their key; [`verify_with_jwks`] checks one against a given
//!   key set, as an upstream would.
//! - `testing` (feature `testing`): `TestIssuer`, an in-process IdP for
//!   tests.
//!
//! Security rules kept throughout: the key chooses the algorithm, never the
//! token alone (`alg: none` and HMAC are refused outright); only RSA, EC and
//! Ed25519 public keys are accepted; keys are fetched over https (plain http
//! only to loopback); tokens and key material are never logged.
//!
//! What this crate does not do: browser sign-in (authorization code flow,
//! sessions, cookies), token introspection, encrypted tokens (JWE), or
//! deciding access: a verified token says who the caller is; the directory
//! and the policy say what they may reach.

mod assertion;
mod cache;
mod config;
mod error;
mod http;
mod jose;
mod jwk;
mod jwks;
mod token;
mod verifier;

#[cfg(feature = "testing")]
pub mod testing;

pub use assertion::{AssertionClaims, AssertionSigner};
pub use config::IssuerConfig;
pub use error::{OidcError, VerifyError};
pub use jose::{Algorithm, MAX_TOKEN_LEN};
pub use jwks::verify_with_jwks;
pub use token::VerifiedToken;
pub use verifier::{Verifier, VerifierStats};
