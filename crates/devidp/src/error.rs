//! The one error type of this crate, for what goes wrong while setting the
//! provider up or minting a token on a caller's behalf.
//!
//! Errors in handling HTTP requests are not here: those become OAuth error
//! responses or error pages and never leave the server.

use std::net::SocketAddr;

/// Why the development identity provider could not start, or could not mint a
/// token.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DevIdpError {
    /// The configured address is not a loopback address.
    #[error(
        "refusing to listen on {addr}: this identity provider is for development only \
         and listens on loopback addresses (127.0.0.0/8 or ::1) only"
    )]
    NotLoopback {
        /// The refused address.
        addr: SocketAddr,
    },
    /// Binding the listener failed.
    #[error("binding the development identity provider to {addr}: {source}")]
    Bind {
        /// The address that could not be bound.
        addr: SocketAddr,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The configuration is inconsistent (duplicate client, bad redirect URI, ...).
    #[error("invalid development identity provider configuration: {0}")]
    InvalidConfig(String),
    /// [`DevIdp::mint_access_token`](crate::DevIdp::mint_access_token) was
    /// asked for an account that does not exist.
    #[error("unknown development account {0:?}")]
    UnknownAccount(String),
    /// The signing key could not be made or used, or the system random source failed.
    #[error("development identity provider crypto: {0}")]
    Crypto(&'static str),
}
