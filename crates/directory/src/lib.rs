//! The Portcullis identity directory: users and groups that identity
//! providers push over SCIM, cached in memory for the proxy and persisted to
//! sled.
//!
//! # Layout
//! - [`model`]: users, groups, members and the precomputed [`Principal`].
//! - [`Directory`]: the cache (dashmap maps, secondary indexes, membership in
//!   both directions, principals) and every mutation, each durable before it
//!   returns.
//! - `store`: the sled store with group commit; the only module that touches
//!   the disk.
//! - [`events`]: the change stream published after each durable change.
//! - [`sessions`]: durable storage for the proxy's browser sessions, in a
//!   second tree of the same store.
//!
//! What this crate does not do: speak SCIM (attribute schemas, filters,
//! PATCH paths are the `portcullis-scim` crate's), or decide access (the
//! policy crate maps groups to roles).

pub mod activity;
mod directory;
mod error;
pub mod events;
mod key;
pub mod model;
pub mod sessions;
mod store;

pub use activity::ActivityStore;
pub use directory::{
    Directory, Dump, GroupUpdate, GroupWrite, Health, IdentityAttr, Lookup, MemberView, MembersEdit, Options, Stats,
};
pub use error::{DirectoryError, ResourceKind, StoreError};
pub use events::{Change, ChangeKind, PrincipalChange};
pub use model::{Group, Id, Member, MemberKind, Meta, Principal, PrincipalKey, PrincipalKeyHash, User};
pub use sessions::{SessionHandle, SessionStore, StoredSession};
pub use sled::Error as SledError;
pub use store::SCHEMA_VERSION;

#[cfg(test)]
mod tests;
