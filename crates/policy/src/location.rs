//! Source locations: turning the byte offsets reported by the TOML parser into
//! `path:line:column` positions that people can jump to.
//!
//! Lines and columns are 1-based; columns count characters (Unicode scalar
//! values), not bytes, so a position after a non-ASCII character still points
//! at the right place in an editor. This module does not know anything about
//! the policy format; it only maps offsets.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

/// A position in a policy or policy-test file, displayed as `path:line:column`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Location {
    /// The file, as it was given in [`crate::Source::path`].
    pub path: Arc<Path>,
    /// 1-based line number.
    pub line: u32,
    /// 1-based column, counted in characters.
    pub column: u32,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// Maps byte offsets of one text to line/column pairs.
#[derive(Debug, Clone)]
pub(crate) struct LineIndex {
    /// Byte offset at which each line starts; the first entry is always 0.
    starts: Vec<usize>,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let mut starts = vec![0];
        starts.extend(
            text.bytes()
                .enumerate()
                .filter(|&(_, b)| b == b'\n')
                .map(|(i, _)| i + 1),
        );
        Self { starts }
    }

    /// Returns the 1-based `(line, column)` of `offset` in `text`.
    ///
    /// Offsets past the end are clamped to the end; offsets inside a
    /// multi-byte character are moved back to the character's start.
    pub(crate) fn locate(&self, text: &str, offset: usize) -> (u32, u32) {
        let mut offset = offset.min(text.len());
        while offset > 0 && !text.is_char_boundary(offset) {
            offset -= 1;
        }
        // Number of line starts at or before `offset`; at least 1 because the
        // first start is 0.
        let line = self.starts.partition_point(|&start| start <= offset).max(1);
        let start = self.starts.get(line - 1).copied().unwrap_or(0);
        let column = text.get(start..offset).map_or(0, |s| s.chars().count()) + 1;
        (saturate(line), saturate(column))
    }
}

fn saturate(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// One source file being parsed: its path, text and line index.
#[derive(Debug)]
pub(crate) struct FileCtx<'a> {
    /// Position of the file in the list of sources; used to order errors.
    pub(crate) order: usize,
    pub(crate) path: Arc<Path>,
    pub(crate) text: &'a str,
    index: LineIndex,
}

impl<'a> FileCtx<'a> {
    pub(crate) fn new(order: usize, path: &Path, text: &'a str) -> Self {
        Self {
            order,
            path: Arc::from(path),
            text,
            index: LineIndex::new(text),
        }
    }

    pub(crate) fn location(&self, offset: usize) -> Location {
        let (line, column) = self.index.locate(self.text, offset);
        Location {
            path: Arc::clone(&self.path),
            line,
            column,
        }
    }
}
