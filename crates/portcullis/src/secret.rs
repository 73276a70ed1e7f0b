//! Secrets given in the configuration: inline, from a file, or from an
//! environment variable (`key`, `key_file`, `key_env`).
//!
//! A [`SecretSource`] is what the config says; [`SecretSource::resolve`]
//! reads it. Resolution is separate from parsing so that parsing stays free
//! of I/O and so that `portcullis check` can report every unreadable secret.
//! Neither type ever prints a secret value: `Debug` redacts inline values.

use std::fmt;
use std::path::PathBuf;

/// Where a secret comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretSource {
    Inline(String),
    File(PathBuf),
    Env(String),
}

impl fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretSource::Inline(_) => f.write_str("Inline(<redacted>)"),
            SecretSource::File(p) => f.debug_tuple("File").field(p).finish(),
            SecretSource::Env(n) => f.debug_tuple("Env").field(n).finish(),
        }
    }
}

/// Why a secret could not be read. Never contains the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("cannot read secret file {path}: {source}")]
    File { path: PathBuf, source: std::io::Error },
    #[error("environment variable {0} is not set")]
    EnvMissing(String),
    #[error("secret from {0} is empty")]
    Empty(String),
}

impl SecretSource {
    /// Reads the secret. `env` looks up an environment variable; pass
    /// `|k| std::env::var(k).ok()` in production and a map in tests.
    /// Surrounding whitespace (a file's trailing newline) is trimmed.
    pub fn resolve(&self, env: impl Fn(&str) -> Option<String>) -> Result<String, SecretError> {
        let (value, from) = match self {
            SecretSource::Inline(v) => (v.clone(), "inline value".to_owned()),
            SecretSource::File(path) => {
                let v = std::fs::read_to_string(path).map_err(|source| SecretError::File {
                    path: path.clone(),
                    source,
                })?;
                (v, format!("file {}", path.display()))
            }
            SecretSource::Env(name) => {
                let v = env(name).ok_or_else(|| SecretError::EnvMissing(name.clone()))?;
                (v, format!("environment variable {name}"))
            }
        };
        let value = value.trim().to_owned();
        if value.is_empty() {
            return Err(SecretError::Empty(from));
        }
        Ok(value)
    }
}
