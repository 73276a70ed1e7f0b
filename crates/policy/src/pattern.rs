//! Path patterns of rules: parsing/validation, allocation-free matching
//! against normalized request paths, and a conservative "covers" check used
//! by the compiler's unreachable-rule warning.
//!
//! Syntax: a pattern starts with `/` and is split into segments at `/`.
//! A segment `**` matches zero or more whole path segments; a segment `*`
//! matches any one segment; `*` among other characters in a segment matches
//! any run of characters other than `/` (possibly empty), except that such a
//! segment never matches a segment holding a list separator (`,` or its
//! escape `%2C`): Elasticsearch and OpenSearch read `logs-a,secret` as two
//! targets, so `logs-*` must not grant `logs-*,secret`. All other characters
//! are literal. Patterns are written in the *normalized*
//! form of paths (see [`crate::normalize_path`]), which is why `.`/`..`
//! segments, `//`, `%`, `?`, `#`, backslashes and characters that
//! normalization would percent-encode are rejected instead of silently never
//! matching. This module does not normalize request paths; it assumes its
//! input already is.

#[cfg(test)]
mod tests;

/// Why a path pattern was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern does not start with `/`.
    #[error("must start with \"/\"")]
    NotAbsolute,
    /// `//` in the pattern: normalized paths never contain empty segments.
    #[error("empty segment (\"//\") never matches a normalized path")]
    EmptySegment,
    /// A `.` or `..` segment: normalized paths never contain them.
    #[error("dot segment (\".\" or \"..\") never matches a normalized path")]
    DotSegment,
    /// `%`: patterns match decoded paths; percent-escapes are not supported.
    #[error("\"%\" is not allowed (patterns are matched against normalized paths)")]
    Percent,
    /// `?` or `#`: patterns match paths only, never queries or fragments.
    #[error("{0:?} is not allowed (patterns match the path only)")]
    QueryOrFragment(char),
    /// `**` combined with other characters in one segment.
    #[error("\"**\" must be a whole segment")]
    DoubleStarInSegment,
    /// A character that never appears unencoded in a normalized path.
    #[error("character {0:?} is not allowed in a pattern")]
    Character(char),
    /// `,` in a segment that also has `*`: such a segment never matches a
    /// list of targets.
    #[error(
        "\",\" cannot share a segment with \"*\" (a partial wildcard never matches a comma-separated list; write one path per target)"
    )]
    CommaInGlob,
}

/// Characters that may appear literally: RFC 3986 `pchar` without `%`, plus `/`.
fn is_pattern_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "-._~!$&'()*+,;=:@/".contains(c)
}

/// Whether a normalized path segment names several targets, the way
/// Elasticsearch's multi-target syntax does (`a,b`). Normalization keeps
/// escapes of `,` as upper-case `%2C`.
#[inline]
fn is_list(seg: &str) -> bool {
    seg.contains(',') || seg.contains("%2C")
}

/// One segment of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seg {
    /// Matches exactly this text.
    Literal(Box<str>),
    /// `*`: any single segment, including the empty one.
    Star,
    /// A segment containing `*` among other characters.
    Glob(Glob),
    /// `**`: zero or more segments.
    Rest,
}

/// A single-segment glob such as `logs-*` or `a*b*c`: literal parts separated
/// by stars.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Glob {
    prefix: Box<str>,
    middle: Box<[Box<str>]>,
    suffix: Box<str>,
    /// Sum of all literal parts' lengths.
    min_len: usize,
}

impl Glob {
    fn parse(seg: &str) -> Self {
        let parts: Vec<&str> = seg.split('*').collect();
        let prefix = parts.first().copied().unwrap_or("");
        let suffix = if parts.len() > 1 {
            parts.last().copied().unwrap_or("")
        } else {
            ""
        };
        let middle: Box<[Box<str>]> = parts
            .get(1..parts.len().saturating_sub(1))
            .unwrap_or(&[])
            .iter()
            .filter(|p| !p.is_empty())
            .map(|p| Box::from(*p))
            .collect();
        let min_len = prefix.len() + suffix.len() + middle.iter().map(|m| m.len()).sum::<usize>();
        Self {
            prefix: prefix.into(),
            middle,
            suffix: suffix.into(),
            min_len,
        }
    }

    #[inline]
    fn matches(&self, seg: &str) -> bool {
        if is_list(seg) {
            return false;
        }
        if seg.len() < self.min_len || !seg.starts_with(&*self.prefix) || !seg.ends_with(&*self.suffix) {
            return false;
        }
        let Some(mut rest) = seg.get(self.prefix.len()..seg.len() - self.suffix.len()) else {
            return false;
        };
        for part in &self.middle {
            match rest.find(&**part) {
                Some(at) => match rest.get(at + part.len()..) {
                    Some(after) => rest = after,
                    None => return false,
                },
                None => return false,
            }
        }
        true
    }
}

/// A compiled path pattern.
#[derive(Debug, Clone)]
pub(crate) struct Pattern {
    source: Box<str>,
    /// Literal text every matching path starts with (cheap pre-filter).
    prefix: Box<str>,
    /// True when the pattern has no wildcard: match by string equality.
    exact: bool,
    segs: Box<[Seg]>,
}

impl Pattern {
    pub(crate) fn parse(source: &str) -> Result<Self, PatternError> {
        let Some(rest) = source.strip_prefix('/') else {
            return Err(PatternError::NotAbsolute);
        };
        for c in source.chars() {
            match c {
                '%' => return Err(PatternError::Percent),
                '?' | '#' => return Err(PatternError::QueryOrFragment(c)),
                c if !is_pattern_char(c) => return Err(PatternError::Character(c)),
                _ => {}
            }
        }
        let raw: Vec<&str> = rest.split('/').collect();
        let mut segs = Vec::with_capacity(raw.len());
        for (i, seg) in raw.iter().enumerate() {
            let last = i + 1 == raw.len();
            segs.push(match *seg {
                "" if !last => return Err(PatternError::EmptySegment),
                "." | ".." => return Err(PatternError::DotSegment),
                "**" => Seg::Rest,
                "*" => Seg::Star,
                s if s.contains("**") => return Err(PatternError::DoubleStarInSegment),
                s if s.contains('*') && s.contains(',') => return Err(PatternError::CommaInGlob),
                s if s.contains('*') => Seg::Glob(Glob::parse(s)),
                s => Seg::Literal(s.into()),
            });
        }
        let exact = !source.contains('*');
        let prefix = match source.find('*') {
            None => source,
            Some(star) => {
                let before = source.get(..star).unwrap_or("");
                // `/a/**` must also match `/a`, so the slash before a `**`
                // segment is not part of the required prefix.
                let rest_segment = source.get(star..).is_some_and(|s| s.starts_with("**"));
                if rest_segment {
                    before.strip_suffix('/').unwrap_or(before)
                } else {
                    before
                }
            }
        };
        Ok(Self {
            source: source.into(),
            prefix: prefix.into(),
            exact,
            segs: segs.into(),
        })
    }

    /// The pattern as written in the policy file.
    pub(crate) fn as_str(&self) -> &str {
        &self.source
    }

    /// Literal text that every matching path starts with.
    pub(crate) fn literal_prefix(&self) -> &str {
        &self.prefix
    }

    /// Whether the normalized `path` matches. Never allocates.
    #[inline]
    pub(crate) fn matches(&self, path: &str) -> bool {
        if self.exact {
            return path == &*self.source;
        }
        if !path.starts_with(&*self.prefix) {
            return false;
        }
        match path.strip_prefix('/') {
            Some(rest) => match_segments(&self.segs, rest),
            None => false,
        }
    }

    /// Conservatively decides whether every path matched by `other` is also
    /// matched by `self`. `false` means "not proven", not "no".
    pub(crate) fn covers(&self, other: &Self) -> bool {
        covers(&self.segs, &other.segs)
    }
}

/// Segment cursor over the part of a path after its leading `/`. A position
/// greater than `rest.len()` means "no segments left".
#[inline]
fn segment(rest: &str, start: usize) -> (&str, usize) {
    let tail = rest.get(start..).unwrap_or("");
    match tail.find('/') {
        Some(slash) => (tail.get(..slash).unwrap_or(""), start + slash + 1),
        None => (tail, rest.len() + 1),
    }
}

/// Matches pattern segments against the path segments of `rest`, with
/// backtracking on the most recent `**` (the classic linear wildcard
/// algorithm, applied to segments instead of characters).
fn match_segments(segs: &[Seg], rest: &str) -> bool {
    let done = rest.len() + 1;
    let mut p = 0;
    let mut s = 0;
    // (pattern index after the last `**`, path position it resumes from)
    let mut backtrack: Option<(usize, usize)> = None;
    loop {
        if s >= done {
            return segs.get(p..).unwrap_or(&[]).iter().all(|seg| *seg == Seg::Rest);
        }
        match segs.get(p) {
            Some(Seg::Rest) => {
                backtrack = Some((p + 1, s));
                p += 1;
                continue;
            }
            Some(seg) => {
                let (text, next) = segment(rest, s);
                let ok = match seg {
                    Seg::Literal(lit) => **lit == *text,
                    Seg::Star => true,
                    Seg::Glob(glob) => glob.matches(text),
                    Seg::Rest => false,
                };
                if ok {
                    p += 1;
                    s = next;
                    continue;
                }
            }
            None => {}
        }
        // Mismatch (or pattern exhausted with path left): let the last `**`
        // swallow one more segment and retry.
        match backtrack {
            Some((resume_p, from)) => {
                let (_, next) = segment(rest, from);
                backtrack = Some((resume_p, next));
                p = resume_p;
                s = next;
            }
            None => return false,
        }
    }
}

/// Whether segment sequence `d` matches every path that `a` matches.
fn covers(d: &[Seg], a: &[Seg]) -> bool {
    match (d.split_first(), a.split_first()) {
        (None, None) => true,
        // A `**` absorbs any number of the other pattern's leading segments.
        (Some((Seg::Rest, d_rest)), _) => (0..=a.len()).any(|k| covers(d_rest, a.get(k..).unwrap_or(&[]))),
        (Some((ds, d_rest)), Some((as_, a_rest))) => segment_covers(ds, as_) && covers(d_rest, a_rest),
        _ => false,
    }
}

fn segment_covers(d: &Seg, a: &Seg) -> bool {
    match (d, a) {
        (_, Seg::Rest) => false,
        (Seg::Star, _) => true,
        (Seg::Glob(g), Seg::Literal(lit)) => g.matches(lit),
        (Seg::Glob(g), Seg::Glob(h)) => g == h,
        (Seg::Literal(x), Seg::Literal(y)) => x == y,
        _ => false,
    }
}
