//! Canonicalization of request paths before policy evaluation and forwarding.
//!
//! The proxy evaluates policy on the normalized path *and forwards that same
//! path* upstream, so the policy and the backend always see identical bytes
//! and encoding tricks cannot make them disagree. Rules, in order:
//!
//! 1. The path must start with `/`.
//! 2. Percent-escapes must be `%` plus two hex digits. Escapes of unreserved
//!    characters (`A-Z a-z 0-9 - . _ ~`) are decoded; all other escapes are
//!    kept with upper-case hex.
//! 3. Rejected outright: raw or encoded control characters (including
//!    `%00`), raw backslash, encoded slash `%2F` and encoded backslash `%5C`
//!    (unless [`NormalizeOptions::allow_encoded_slash`], which keeps them
//!    encoded as `%2F`/`%5C`), and double encoding — `%25` followed by two hex
//!    digits, such as `%252e`, whose meaning depends on how often the backend
//!    decodes.
//! 4. Raw characters that may not appear unencoded in a path (non-ASCII bytes,
//!    space, `"`, `<`, `>`, `` ` ``, `^`, `{`, `|`, `}`, `[`, `]`, `?`, `#`)
//!    are percent-encoded with upper-case hex.
//! 5. Repeated slashes are folded (`//a` becomes `/a`), then dot segments are
//!    removed as in RFC 3986 §5.2.4 — *after* decoding, so `%2e%2e` is `..`.
//!    A `..` at the root is clamped: `/../a` becomes `/a` (this is what RFC
//!    3986 and browsers do; since the clamped path is what gets forwarded,
//!    clamping cannot be used to reach anything above the root). A trailing
//!    `.` or `..` segment leaves a trailing slash (`/a/b/..` is `/a/`).
//!
//! Normalization is idempotent. It does not look at the query string (the
//! caller must pass the path only) and does not apply any policy.

use std::borrow::Cow;

#[cfg(test)]
mod tests;

/// Options for [`normalize_path`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NormalizeOptions {
    /// Accept `%2F` and `%5C`, keeping them encoded (upper-case) inside their
    /// segment. Off by default: most backends decode them into separators.
    pub allow_encoded_slash: bool,
}

/// Why a request path was rejected. The proxy answers these with `400 Bad
/// Request`; [`PathError::reason`] gives a short text for the response body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    /// The path is empty or does not start with `/`.
    #[error("path does not start with \"/\"")]
    NotAbsolute,
    /// `%` not followed by two hex digits.
    #[error("invalid percent-escape at byte {offset}")]
    InvalidEscape {
        /// Byte offset of the `%` in the raw path.
        offset: usize,
    },
    /// A raw or percent-encoded control character (0x00-0x1F, 0x7F).
    #[error("control character at byte {offset}")]
    ControlCharacter {
        /// Byte offset of the character (or its escape) in the raw path.
        offset: usize,
    },
    /// `%2F` while encoded slashes are not allowed.
    #[error("encoded slash (%2F) at byte {offset}")]
    EncodedSlash {
        /// Byte offset of the escape in the raw path.
        offset: usize,
    },
    /// `%5C` while encoded slashes are not allowed.
    #[error("encoded backslash (%5C) at byte {offset}")]
    EncodedBackslash {
        /// Byte offset of the escape in the raw path.
        offset: usize,
    },
    /// A raw `\`, which some backends treat as a separator.
    #[error("backslash at byte {offset}")]
    Backslash {
        /// Byte offset of the backslash in the raw path.
        offset: usize,
    },
    /// `%25` followed by two hex digits (for example `%252e`).
    #[error("double percent-encoding at byte {offset}")]
    DoubleEncoding {
        /// Byte offset of the `%25` in the raw path.
        offset: usize,
    },
}

impl PathError {
    /// A short, stable reason without offsets, for response bodies and metrics.
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NotAbsolute => "path does not start with a slash",
            Self::InvalidEscape { .. } => "invalid percent-escape in path",
            Self::ControlCharacter { .. } => "control character in path",
            Self::EncodedSlash { .. } => "encoded slash in path",
            Self::EncodedBackslash { .. } => "encoded backslash in path",
            Self::Backslash { .. } => "backslash in path",
            Self::DoubleEncoding { .. } => "double percent-encoding in path",
        }
    }
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// Characters kept raw: RFC 3986 `pchar` without `%`, plus `/`.
fn is_raw_ok(b: u8) -> bool {
    is_unreserved(b) || b"!$&'()*+,;=:@/".contains(&b)
}

fn is_control(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn decode_escape(bytes: &[u8], at: usize) -> Option<u8> {
    let hi = hex_value(*bytes.get(at + 1)?)?;
    let lo = hex_value(*bytes.get(at + 2)?)?;
    Some(hi << 4 | lo)
}

fn push_encoded(out: &mut String, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push('%');
    out.push(char::from(HEX[usize::from(b >> 4)]));
    out.push(char::from(HEX[usize::from(b & 0x0f)]));
}

/// Normalizes a request path (without query) as described in the module
/// documentation. Returns the input unchanged (borrowed, no allocation) when
/// it already is normal.
///
/// # Errors
///
/// Returns a [`PathError`] for paths that are ambiguous or malformed; the
/// proxy must refuse such requests rather than guess.
pub fn normalize_path(raw: &str, opts: NormalizeOptions) -> Result<Cow<'_, str>, PathError> {
    let bytes = raw.as_bytes();
    if bytes.first() != Some(&b'/') {
        return Err(PathError::NotAbsolute);
    }
    if is_normal(bytes) {
        return Ok(Cow::Borrowed(raw));
    }
    let decoded = decode(bytes, opts)?;
    let normal = remove_dot_segments(&decoded);
    if normal == raw {
        Ok(Cow::Borrowed(raw))
    } else {
        Ok(Cow::Owned(normal))
    }
}

/// Fast check: true when normalization would not change `bytes`.
fn is_normal(bytes: &[u8]) -> bool {
    if !bytes.iter().all(|&b| is_raw_ok(b)) {
        return false;
    }
    // No empty segments except a trailing one, and no dot segments.
    let rest = bytes.get(1..).unwrap_or(&[]);
    let mut iter = rest.split(|&b| b == b'/').peekable();
    while let Some(seg) = iter.next() {
        let last = iter.peek().is_none();
        if (seg.is_empty() && !last) || seg == b"." || seg == b".." {
            return false;
        }
    }
    true
}

/// Step 2-4: validate escapes and characters, decode unreserved escapes,
/// upper-case the others, encode raw characters that need it.
fn decode(bytes: &[u8], opts: NormalizeOptions) -> Result<String, PathError> {
    let mut out = String::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let Some(v) = decode_escape(bytes, i) else {
                return Err(PathError::InvalidEscape { offset: i });
            };
            if v == b'%' && decode_escape(bytes, i + 2).is_some() {
                return Err(PathError::DoubleEncoding { offset: i });
            }
            if is_control(v) {
                return Err(PathError::ControlCharacter { offset: i });
            }
            match v {
                b'/' if !opts.allow_encoded_slash => {
                    return Err(PathError::EncodedSlash { offset: i });
                }
                b'\\' if !opts.allow_encoded_slash => {
                    return Err(PathError::EncodedBackslash { offset: i });
                }
                v if is_unreserved(v) => out.push(char::from(v)),
                v => push_encoded(&mut out, v),
            }
            i += 3;
            continue;
        }
        if b == b'\\' {
            return Err(PathError::Backslash { offset: i });
        }
        if is_control(b) {
            return Err(PathError::ControlCharacter { offset: i });
        }
        if is_raw_ok(b) {
            out.push(char::from(b));
        } else {
            push_encoded(&mut out, b);
        }
        i += 1;
    }
    Ok(out)
}

/// Step 5: fold repeated slashes and remove dot segments. `path` starts with
/// `/` and contains only ASCII.
fn remove_dot_segments(path: &str) -> String {
    let mut stack: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    let rest = path.strip_prefix('/').unwrap_or(path);
    let mut iter = rest.split('/').peekable();
    while let Some(seg) = iter.next() {
        let last = iter.peek().is_none();
        match seg {
            "" => {
                // Repeated slash (folded) or the trailing slash.
                if last {
                    trailing_slash = true;
                }
            }
            "." => trailing_slash = last,
            ".." => {
                stack.pop();
                trailing_slash = last;
            }
            s => {
                stack.push(s);
                trailing_slash = false;
            }
        }
    }
    let mut out = String::with_capacity(path.len());
    for seg in &stack {
        out.push('/');
        out.push_str(seg);
    }
    if trailing_slash || out.is_empty() {
        out.push('/');
    }
    out
}
