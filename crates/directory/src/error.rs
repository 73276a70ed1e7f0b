//! Errors at the directory boundary.
//!
//! [`DirectoryError`] is what a caller of a directory operation can get back;
//! the SCIM layer maps each variant to a SCIM status and `scimType`.
//! [`StoreError`] is about the disk: it reaches callers wrapped in
//! `DirectoryError::Store` or, at start-up, directly from `Directory::open`.

use std::path::PathBuf;

use crate::model::MemberKind;

/// Why a directory operation was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The resource does not exist, or belongs to another SCIM client (which
    /// is reported the same way so that clients cannot probe each other).
    #[error("{kind} {id} not found")]
    NotFound { kind: ResourceKind, id: String },

    /// A uniqueness rule would be broken.
    #[error("{attribute} {value:?} is already taken")]
    Conflict { attribute: &'static str, value: String },

    /// The caller's expected version (`If-Match`) is not the current one.
    #[error("{kind} {id} is at version {current}, not {expected}")]
    VersionMismatch {
        kind: ResourceKind,
        id: String,
        expected: u64,
        current: u64,
    },

    /// An attribute the directory depends on is missing or malformed.
    #[error("attribute {attribute} {reason}")]
    InvalidAttribute { attribute: &'static str, reason: String },

    /// A membership change that makes no sense (a group inside itself).
    #[error("invalid member {id}: {reason}")]
    InvalidMember {
        kind: MemberKind,
        id: String,
        reason: &'static str,
    },

    /// The write could not be made durable; the directory refuses writes
    /// from then on (see `Directory::is_failed`).
    #[error("identity store: {0}")]
    Store(#[from] StoreError),
}

/// The two kinds of resource the directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResourceKind {
    User,
    Group,
}

impl std::fmt::Display for ResourceKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ResourceKind::User => "user",
            ResourceKind::Group => "group",
        })
    }
}

/// Failures of the durable store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store at {path}: {source}")]
    Open { path: PathBuf, source: sled::Error },

    #[error(
        "store at {path} has schema version {found}, but this build reads version {expected}; \
         refusing to start rather than risk misreading it"
    )]
    SchemaVersion {
        path: PathBuf,
        found: String,
        expected: u32,
    },

    #[error("store at {path} holds records but no schema version; refusing to start")]
    MissingSchemaVersion { path: PathBuf },

    #[error("store record {key} cannot be decoded: {reason}")]
    Corrupt { key: String, reason: String },

    #[error("store write failed: {0}")]
    Write(sled::Error),

    #[error("store flush failed: {0}")]
    Flush(String),

    /// An earlier flush failed, so the in-memory state may be ahead of the
    /// disk; no further writes are accepted until restart.
    #[error("store is failed after an earlier flush error: {0}")]
    Failed(String),

    #[error("store is closed")]
    Closed,
}
