//! Portcullis's audit trail: who reached what, and who changed access,
//! written so that tampering shows.
//!
//! The proxy decides *what* to record (a JSON object per event); this crate
//! decides how it is written, chained, rotated, verified and read back.
//!
//! # Format
//! One record is one JSON line:
//!
//! ```text
//! {"seq":41,"time":"2025-06-01T12:00:00.123456Z","kind":"access","user":"alice",…,"prev":"9f86d0…"}
//! ```
//!
//! - `seq` (first): 1 for the first record ever, then +1 per record, across
//!   rotated files and restarts.
//! - `time` (second): when `log`/`try_log` was called, RFC 3339 UTC with
//!   microseconds. `seq` gives the write order; between concurrent callers
//!   `time` can be a little out of order.
//! - the caller's fields ([`Fields`], built on the caller's thread), in the
//!   order they were added (a map's, in the order it yields them).
//! - `prev` (last): hex SHA-256 of the previous line's bytes (without the
//!   newline); 64 zeros for seq 1. The chain continues across files.
//!
//! Collisions: a caller field named `seq`, `time` or `prev` is not an error
//! and is not lost: it is written with a `_` prefix (`_seq`); from a map,
//! with more underscores if that name is taken too (`__seq`).
//!
//! # Files
//! `audit.log` is the current file. When a record would push it past
//! `max_file_bytes` it is synced and renamed `audit.log.<first seq, 20
//! digits>`, so names sort in chain order; the oldest rotated files beyond
//! `keep_files` are deleted. `audit.log.head` (the head marker) holds the
//! seq and hash of the last synced record, replaced atomically.
//!
//! # Crashes and restarts
//! [`AuditLog::open`] resumes the chain from the last line of the current
//! file (read by seeking from the end), or of the newest rotated file when
//! the current one is empty. A last line without a newline is an
//! interrupted write: it is truncated (with a warning) and the chain
//! continues from the last complete record, so `verify` passes; the record
//! that was being written is lost. A complete last line that is not a
//! record stops `open` with [`AuditError::Corrupt`] (it was not written by
//! a crash). If the files end *before* the head marker (records removed from
//! the end), the writer continues from the head marker, so the removal stays
//! visible as a gap in the chain rather than being papered over.
//!
//! # Limits
//! The chain is unkeyed SHA-256: it shows edits, deletions and reordering,
//! but someone who can rewrite every file *and* the head marker can forge a
//! consistent chain, and deleting whole old files only moves the anchor.
//! Ship records off-host as they are written (`stdout: true` into a log
//! collector) or keep [`VerifyReport::last_hash`] elsewhere to detect that.
//!
//! Not here: deciding what to record, shipping, and locking a file against a
//! second writer process.

mod error;
mod files;
mod line;
mod query;
mod record;
mod verify;
mod writer;

pub use error::AuditError;
pub use files::{files_of, head_path};
pub use line::{GENESIS_PREV, line_hash};
pub use query::{Query, QueryIter, query};
pub use record::Fields;
pub use verify::{Broken, Problem, VerifyReport, verify};
#[doc(hidden)]
pub use writer::WriterPause;
pub use writer::{AuditConfig, AuditLog, AuditStats};

/// Field names in records, shared by the writer, the queries and the proxy.
pub mod fields {
    /// Writer field: the record's number in the chain.
    pub const SEQ: &str = "seq";
    /// Writer field: when the record was submitted (RFC 3339, UTC).
    pub const TIME: &str = "time";
    /// Writer field: hex SHA-256 of the previous line.
    pub const PREV: &str = "prev";
    /// What happened: one of [`kinds`](crate::kinds).
    pub const KIND: &str = "kind";
    /// Who: the user's identifier.
    pub const USER: &str = "user";
    /// Which route (proxy access) was reached.
    pub const ROUTE: &str = "route";
    /// The access decision (`allow`, `deny`...).
    pub const DECISION: &str = "decision";
}

/// Values of the `kind` field.
pub mod kinds {
    /// A request through the proxy and its decision.
    pub const ACCESS: &str = "access";
    /// A provisioning change over SCIM.
    pub const SCIM: &str = "scim";
}
