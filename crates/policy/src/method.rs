//! HTTP method sets of rules: validation of method names in policy files and
//! allocation-free matching of a request's method.
//!
//! Methods are compared ASCII-case-insensitively and stored upper-case. The
//! nine methods of RFC 9110/5789 are kept in a bitmask; any other valid token
//! (for example `PROPFIND`) is kept as a string. This module does not decide
//! whether a method is *allowed* — only whether a rule's method set contains it.

use std::fmt;

/// The standard methods, in bit order.
const KNOWN: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH",
];

/// Why a method name in a policy file was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MethodError {
    /// The empty string.
    #[error("method name is empty")]
    Empty,
    /// `"*"`: rules match any method by omitting `methods`.
    #[error("\"*\" is not a method; omit \"methods\" to match any method")]
    Wildcard,
    /// Characters outside the HTTP token alphabet (RFC 9110 `tchar`).
    #[error("not a valid http method token")]
    NotAToken,
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Validates a method name and returns it upper-cased.
pub(crate) fn validate_method(name: &str) -> Result<String, MethodError> {
    if name.is_empty() {
        return Err(MethodError::Empty);
    }
    if name == "*" {
        return Err(MethodError::Wildcard);
    }
    if !name.bytes().all(is_tchar) {
        return Err(MethodError::NotAToken);
    }
    Ok(name.to_ascii_uppercase())
}

/// A request method, classified once per decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MethodKey<'a> {
    Known(u16),
    Other(&'a str),
}

impl<'a> MethodKey<'a> {
    #[inline]
    pub(crate) fn classify(method: &'a str) -> Self {
        for (i, known) in KNOWN.iter().enumerate() {
            if known.len() == method.len() && known.eq_ignore_ascii_case(method) {
                return Self::Known(1 << i);
            }
        }
        Self::Other(method)
    }
}

/// The methods a rule applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MethodSet {
    any: bool,
    mask: u16,
    /// Upper-cased, sorted, de-duplicated extension methods.
    other: Box<[Box<str>]>,
}

impl MethodSet {
    /// Every method.
    pub(crate) fn any() -> Self {
        Self {
            any: true,
            mask: 0,
            other: Box::new([]),
        }
    }

    /// The given (already validated, upper-cased) methods.
    pub(crate) fn from_validated<'s>(methods: impl IntoIterator<Item = &'s str>) -> Self {
        let mut mask = 0;
        let mut other: Vec<Box<str>> = Vec::new();
        for m in methods {
            match MethodKey::classify(m) {
                MethodKey::Known(bit) => mask |= bit,
                MethodKey::Other(name) => other.push(name.to_ascii_uppercase().into()),
            }
        }
        other.sort();
        other.dedup();
        Self {
            any: false,
            mask,
            other: other.into(),
        }
    }

    #[inline]
    pub(crate) fn matches(&self, method: MethodKey<'_>) -> bool {
        self.any
            || match method {
                MethodKey::Known(bit) => self.mask & bit != 0,
                MethodKey::Other(name) => self.other.iter().any(|o| o.eq_ignore_ascii_case(name)),
            }
    }

    /// Whether every method matched by `other` is matched by `self`.
    pub(crate) fn is_superset_of(&self, other: &Self) -> bool {
        if self.any {
            return true;
        }
        !other.any && other.mask & !self.mask == 0 && other.other.iter().all(|m| self.other.contains(m))
    }
}

impl fmt::Display for MethodSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.any {
            return f.write_str("any method");
        }
        let known = KNOWN
            .iter()
            .enumerate()
            .filter(|&(i, _)| self.mask & (1 << i) != 0)
            .map(|(_, name)| *name);
        let mut first = true;
        for name in known.chain(self.other.iter().map(|s| &**s)) {
            if !first {
                f.write_str(", ")?;
            }
            first = false;
            f.write_str(name)?;
        }
        Ok(())
    }
}
