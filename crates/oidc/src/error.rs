//! Errors at this crate's boundary.
//!
//! [`VerifyError`] is what the proxy gets for a bearer token it must refuse;
//! its [`reason`](VerifyError::reason) is a short stable code for
//! `WWW-Authenticate` and JSON bodies. [`OidcError`] is about configuration,
//! talking to the identity provider and Portcullis's own signing key.
//!
//! Messages never contain a token or key material. Values taken from a token
//! (an `alg`, a `kid`) are shortened and quoted, since whoever sent the token
//! chose them.

use std::path::PathBuf;

/// Why a bearer token was refused.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Not a compact JWS this verifier will read: wrong shape, bad base64url,
    /// a header or payload that is not a JSON object, a missing `exp`, a
    /// time claim that is not a number, or a token over the size limit.
    #[error("malformed token: {0}")]
    Malformed(&'static str),

    /// `alg` is `none`, an HMAC algorithm, unknown, or not the one the
    /// selected key is for.
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),

    /// No key of the issuer's key set can verify the token: its `kid` is not
    /// published (even after a refetch), or it has no `kid` while the set
    /// holds several keys.
    #[error("unknown signing key: {0}")]
    UnknownKey(String),

    #[error("bad signature")]
    BadSignature,

    /// `exp` (plus the configured leeway) has passed.
    #[error("token has expired")]
    Expired,

    /// `nbf` or `iat` is in the future (beyond the configured leeway).
    #[error("token is not valid yet")]
    NotYetValid,

    #[error("token is from another issuer")]
    WrongIssuer,

    #[error("token is for another audience")]
    WrongAudience,

    /// No key set has been fetched from the identity provider yet; the
    /// token may well be good, so the proxy answers 503, not 401.
    #[error("the identity provider's keys are not available yet")]
    KeysUnavailable,
}

impl VerifyError {
    /// A short stable code: used in `WWW-Authenticate` `error_description`
    /// and in JSON error bodies, so it must not change between releases.
    pub fn reason(&self) -> &'static str {
        match self {
            VerifyError::Malformed(_) => "malformed",
            VerifyError::UnsupportedAlgorithm(_) => "unsupported_algorithm",
            VerifyError::UnknownKey(_) => "unknown_key",
            VerifyError::BadSignature => "bad_signature",
            VerifyError::Expired => "expired",
            VerifyError::NotYetValid => "not_yet_valid",
            VerifyError::WrongIssuer => "wrong_issuer",
            VerifyError::WrongAudience => "wrong_audience",
            VerifyError::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// Configuration, identity-provider and signing-key errors.
#[derive(Debug, thiserror::Error)]
pub enum OidcError {
    /// The issuer or the JWKS URL is not one this crate will talk to.
    #[error("{what} {url}: {reason}")]
    InvalidUrl {
        what: &'static str,
        url: String,
        reason: &'static str,
    },

    #[error("invalid issuer configuration for {issuer}: {reason}")]
    InvalidConfig { issuer: String, reason: &'static str },

    #[error("cannot read CA file {path}: {source}")]
    CaFile {
        path: PathBuf,
        source: rustls_pki_types::pem::Error,
    },

    #[error("CA file {path} holds no PEM certificate")]
    CaFileEmpty { path: PathBuf },

    #[error("CA file {path}: certificate refused: {source}")]
    CaCertificate { path: PathBuf, source: rustls::Error },

    #[error("tls client configuration: {0}")]
    Tls(#[from] rustls::Error),

    /// Fetching or reading the discovery document failed.
    #[error("discovery at {url}: {reason}")]
    Discovery { url: String, reason: String },

    /// The discovery document names another issuer than the configured one;
    /// OpenID Connect Discovery requires them to be identical.
    #[error("discovery at {url} announces issuer {announced:?}, but the configured issuer is {configured}")]
    IssuerMismatch {
        url: String,
        announced: String,
        configured: String,
    },

    /// Fetching or reading the JWKS failed, or it holds no usable key.
    #[error("jwks at {url}: {reason}")]
    Jwks { url: String, reason: String },

    #[error("cannot read signing key {path}: {source}")]
    SigningKeyFile { path: PathBuf, source: std::io::Error },

    #[error("signing key {path}: {reason}")]
    SigningKey { path: PathBuf, reason: String },

    #[error("cannot generate a signing key")]
    KeyGeneration,

    #[error("cannot sign assertion: {0}")]
    Sign(&'static str),
}
