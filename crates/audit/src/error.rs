//! The one error type of this crate, [`AuditError`].
//!
//! Every variant that concerns a file names it (and the line when one is
//! known); none of them carries record contents, so an error can be logged
//! without leaking what the audit trail holds. A broken hash chain is not an
//! error: `verify` reports it in its `VerifyReport`.

use std::io;
use std::path::{Path, PathBuf};

/// Why an audit operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The configuration cannot work (for example no file and no stdout).
    #[error("invalid audit config: {0}")]
    Config(&'static str),

    /// A file operation failed; `action` says which ("opening", "reading"...).
    #[error("{action} {}: {source}", .path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// A file the writer must resume from does not hold what it should
    /// (`AuditLog::open` refuses to continue a chain it cannot read), or a
    /// line read by `query` is not a JSON object.
    #[error("corrupt audit log {}: {reason}", locate(.path, *.line))]
    Corrupt {
        path: PathBuf,
        /// 1-based line number, when known (lines found by seeking from the
        /// end of a file have none).
        line: Option<u64>,
        reason: String,
    },

    /// The log was closed (or its writer thread is gone): nothing more can
    /// be submitted.
    #[error("audit log is closed")]
    Closed,

    /// Records that were accepted could not be written before the writer
    /// gave up (only at close, after `AuditConfig::close_timeout` of
    /// retrying).
    #[error("audit writer gave up on {count} unwritten records: {reason}")]
    Unwritten { count: u64, reason: String },

    /// The writer thread panicked (a bug); records queued at that moment
    /// were lost.
    #[error("audit writer thread panicked")]
    WriterPanicked,
}

impl AuditError {
    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        AuditError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn corrupt(path: &Path, line: Option<u64>, reason: impl Into<String>) -> Self {
        AuditError::Corrupt {
            path: path.to_path_buf(),
            line,
            reason: reason.into(),
        }
    }
}

fn locate(path: &Path, line: Option<u64>) -> String {
    match line {
        Some(line) => format!("{} line {line}", path.display()),
        None => format!("{} (last line)", path.display()),
    }
}
