//! Portcullis: an identity-aware reverse proxy whose authorization follows
//! the groups identity providers push over SCIM.
//!
//! This crate is the program: configuration, the command line, and the
//! wiring that starts the directory and the listeners, and the reverse proxy
//! itself. The directory, SCIM, policy and OIDC pieces live in their own
//! crates.
//!
//! # Layout
//! - [`config`]: the TOML configuration, parsed from a string, validated.
//! - [`secret`]: secrets given inline, as files, or as environment variables.
//! - [`cli`]: subcommands and exit codes.
//! - [`app`]: `run(config, listeners, shutdown)`, what `serve` does.
//! - [`admin`]: health endpoints and read-only operator views.
//! - [`metrics`]: Prometheus metrics for the admin listener.
//! - [`routes`]: which configured route a request belongs to.
//! - [`authz`]: a decision explained (what `explain` prints).
//! - [`policy_runtime`]: the live policy and its hot reload.
//! - [`proxy`]: the reverse proxy: route, authenticate, authorize, forward.
//! - [`tls`]: server certificates (hot reload) and upstream TLS clients.
//! - [`web`]: serving a hyper service on a listener (TLS, HTTP/1.1 and
//!   HTTP/2) with graceful shutdown.

pub mod admin;
pub mod alerts;
pub mod app;
pub mod audit;
pub mod authz;
pub mod cli;
pub mod config;
pub mod demo;
pub mod metrics;
pub mod policy_runtime;
pub mod proxy;
pub mod reports;
pub mod routes;
pub mod secret;
pub mod session;
pub mod tls;
pub mod web;

/// An error and its sources, joined with ": " (for logs and messages that
/// must say why an outbound call failed, not only that it did).
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
