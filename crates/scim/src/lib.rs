//! The SCIM 2.0 service provider (RFC 7643, RFC 7644) that identity
//! providers push users and groups to.
//!
//! # Layout
//! - [`error`]: SCIM errors and their mapping from directory errors.
//! - [`schema`]: attribute definitions of the core User and Group schemas,
//!   the Enterprise User extension and configured custom extensions.
//! - [`filter`]: the filter grammar and PATCH paths: parsing and evaluation.
//! - [`patch`]: the PATCH engine over a resource's JSON document.
//!
//! - [`auth`], [`render`], [`service`] (feature `server`, on by default):
//!   client tokens, rendering from the directory and the HTTP service.
//!
//! What this crate does not do: store anything itself (every change goes
//! through `portcullis_directory::Directory`), or decide access.

#[cfg(feature = "server")]
pub mod auth;
pub mod error;
pub mod filter;
pub mod patch;
#[cfg(feature = "server")]
pub mod render;
pub mod schema;
#[cfg(feature = "server")]
pub mod service;

pub use error::{ScimError, ScimType};

#[cfg(test)]
mod test_util;
