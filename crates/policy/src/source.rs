//! Policy sources: the text of policy files, and reading them from a
//! directory.
//!
//! Parsing works on [`Source`] values so that it can be tested (and driven by
//! a file watcher) without touching the filesystem. [`read_dir`] reads every
//! `*.toml` file directly inside a directory — not recursively, so the
//! `tests/` subdirectory holding policy tests is never mistaken for policy —
//! skipping hidden files (editor swap and lock files start with `.`). It does
//! not compile anything; [`load_dir`] does both.

use std::fs;
use std::path::{Path, PathBuf};

use crate::compile::{Compiled, compile};
use crate::error::PolicyError;
use crate::policy::RouteSet;

#[cfg(test)]
mod tests;

/// The text of one policy (or policy-test) file and the path used in messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// Shown in error messages; need not exist on disk.
    pub path: PathBuf,
    /// The file's contents.
    pub text: String,
}

impl Source {
    /// A source from a path and its text.
    pub fn new(path: impl Into<PathBuf>, text: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            text: text.into(),
        }
    }
}

/// Reads every non-hidden `*.toml` regular file directly in `dir` (symbolic
/// links are followed), sorted by file name.
///
/// # Errors
///
/// [`PolicyError::ReadDir`] if the directory cannot be listed,
/// [`PolicyError::ReadFile`] for the first file that cannot be read as UTF-8.
pub fn read_dir(dir: &Path) -> Result<Vec<Source>, PolicyError> {
    let read_dir_error = |error| PolicyError::ReadDir {
        path: dir.to_path_buf(),
        error,
    };
    let mut paths = Vec::new();
    for entry in fs::read_dir(dir).map_err(read_dir_error)? {
        let entry = entry.map_err(read_dir_error)?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name.starts_with('.') || !name.ends_with(".toml") {
            continue;
        }
        let path = entry.path();
        // `fs::metadata` follows symlinks; dangling links are skipped.
        if fs::metadata(&path).is_ok_and(|m| m.is_file()) {
            paths.push(path);
        }
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| match fs::read_to_string(&path) {
            Ok(text) => Ok(Source { path, text }),
            Err(error) => Err(PolicyError::ReadFile { path, error }),
        })
        .collect()
}

/// [`read_dir`] followed by [`compile`].
///
/// # Errors
///
/// The read error, or every problem found while compiling.
pub fn load_dir(dir: &Path, routes: &RouteSet) -> Result<Compiled, Vec<PolicyError>> {
    let sources = read_dir(dir).map_err(|e| vec![e])?;
    compile(&sources, routes)
}
