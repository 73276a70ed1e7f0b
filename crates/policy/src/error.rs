//! Errors and warnings reported while loading and compiling policy and
//! policy-test files.
//!
//! Every problem found in a file carries a [`Location`] and is displayed as
//! `path:line:column: message`, with a lowercase message and no trailing
//! period, so that editors and CI logs can link to it. This module only
//! defines the types; the parser and compiler decide what to report.

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::location::Location;
use crate::method::MethodError;
use crate::pattern::PatternError;

/// An error that prevents a policy (or a policy-test file) from being used.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy directory could not be listed.
    #[error("{}: cannot read directory: {error}", path.display())]
    ReadDir {
        /// The directory.
        path: PathBuf,
        /// The underlying I/O error.
        error: io::Error,
    },
    /// A policy file could not be read (or is not UTF-8).
    #[error("{}: cannot read file: {error}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        error: io::Error,
    },
    /// A problem at a specific place in a file.
    #[error("{location}: {problem}")]
    Invalid {
        /// Where the problem is.
        location: Location,
        /// What is wrong.
        problem: Problem,
    },
}

impl PolicyError {
    /// The location of the problem, for errors that have one.
    #[must_use]
    pub fn location(&self) -> Option<&Location> {
        match self {
            Self::Invalid { location, .. } => Some(location),
            Self::ReadDir { .. } | Self::ReadFile { .. } => None,
        }
    }

    /// What is wrong, for errors found inside a file.
    #[must_use]
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            Self::Invalid { problem, .. } => Some(problem),
            Self::ReadDir { .. } | Self::ReadFile { .. } => None,
        }
    }
}

/// What is wrong at a [`Location`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Problem {
    /// The file is not valid TOML.
    #[error("invalid toml: {message}")]
    Syntax {
        /// The TOML parser's message.
        message: String,
    },
    /// A key that the format does not define (often a typo).
    #[error("unknown key {key:?} {context} (expected one of: {})", expected.join(", "))]
    UnknownKey {
        /// The key as written.
        key: String,
        /// Where it was found, e.g. `in rule`.
        context: &'static str,
        /// The keys allowed there.
        expected: &'static [&'static str],
    },
    /// A value of the wrong TOML type.
    #[error("{what} must be {expected}, found {found}")]
    WrongType {
        /// What the value is, e.g. `"paths"`.
        what: String,
        /// The expected type, e.g. `an array of strings`.
        expected: &'static str,
        /// The TOML type found.
        found: &'static str,
    },
    /// A required key is absent.
    #[error("missing required key {key:?} {context}")]
    MissingKey {
        /// The missing key.
        key: &'static str,
        /// Where it is required, e.g. `in rule`.
        context: &'static str,
    },
    /// A list that must not be empty is empty.
    #[error("{key:?} must not be empty{hint}")]
    EmptyList {
        /// The key holding the list.
        key: &'static str,
        /// Extra advice, starting with `; ` or empty.
        hint: &'static str,
    },
    /// A name (role, user, group) that is the empty string.
    #[error("{what} must not be empty")]
    EmptyName {
        /// What kind of name.
        what: &'static str,
    },
    /// A reference to a role that no policy file defines.
    #[error("unknown role {role:?} ({defined})")]
    UnknownRole {
        /// The role as written.
        role: String,
        /// Description of the defined roles, e.g. `defined roles: a, b`.
        defined: String,
    },
    /// A rule names a route that the proxy configuration does not define.
    #[error("unknown route {route:?} ({known})")]
    UnknownRoute {
        /// The route as written.
        route: String,
        /// Description of the known routes, e.g. `known routes: a, b`.
        known: String,
    },
    /// An invalid path pattern.
    #[error("bad path pattern {pattern:?}: {reason}")]
    BadPattern {
        /// The pattern as written.
        pattern: String,
        /// Why it is invalid.
        reason: PatternError,
    },
    /// An invalid HTTP method name.
    #[error("bad method {method:?}: {reason}")]
    BadMethod {
        /// The method as written.
        method: String,
        /// Why it is invalid.
        reason: MethodError,
    },
    /// An invalid group key (`"displayName"` or `"client:displayName"`).
    #[error("bad group {key:?}: {reason}")]
    BadGroupKey {
        /// The key as written.
        key: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// The same role is defined twice (in two files).
    #[error("role {role:?} is already defined at {first}")]
    DuplicateRole {
        /// The role name.
        role: String,
        /// Where it was defined first.
        first: Location,
    },
    /// More roles than a [`crate::RoleSet`] can hold.
    #[error("too many roles: at most {max} are supported")]
    TooManyRoles {
        /// The limit, [`crate::MAX_ROLES`].
        max: usize,
    },
    /// A policy-test case has a bad `expect` value.
    #[error("bad expect {value:?} (expected \"allow\" or \"deny\")")]
    BadExpect {
        /// The value as written.
        value: String,
    },
}

/// Something legal but almost certainly unintended in a policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Where it is.
    pub location: Location,
    /// What it is.
    pub kind: WarningKind,
}

/// The kinds of [`Warning`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum WarningKind {
    /// A role that no `[groups]` or `[users]` entry grants.
    UnusedRole {
        /// The role name.
        role: String,
    },
    /// An allow rule whose every request is denied by a deny rule of the
    /// same role (or of `[public]`).
    UnreachableRule {
        /// The deny rule that shadows it.
        covered_by: Location,
    },
    /// A rule identical to an earlier rule of the same role and effect.
    DuplicateRule {
        /// The earlier rule.
        first: Location,
    },
}

impl fmt::Display for WarningKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnusedRole { role } => {
                write!(f, "role {role:?} is not granted to any group or user")
            }
            Self::UnreachableRule { covered_by } => {
                write!(f, "allow rule can never match: the deny rule at {covered_by} covers it")
            }
            Self::DuplicateRule { first } => {
                write!(f, "duplicate rule: identical to the rule at {first}")
            }
        }
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.kind)
    }
}

/// Collects located problems from several files and returns them ordered by
/// file (in source order) and position.
#[derive(Debug, Default)]
pub(crate) struct Diagnostics {
    items: Vec<(usize, usize, PolicyError)>,
}

impl Diagnostics {
    pub(crate) fn push(&mut self, file: &crate::location::FileCtx<'_>, offset: usize, problem: Problem) {
        self.items.push((
            file.order,
            offset,
            PolicyError::Invalid {
                location: file.location(offset),
                problem,
            },
        ));
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn into_sorted(mut self) -> Vec<PolicyError> {
        self.items.sort_by_key(|&(order, offset, _)| (order, offset));
        self.items.into_iter().map(|(_, _, e)| e).collect()
    }
}
