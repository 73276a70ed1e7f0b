//! Tests for path patterns: matching, rejection of bad patterns, and the
//! conservative `covers` relation.

use super::{Pattern, PatternError};

fn check(pattern: &str, path: &str, expected: bool) {
    let p = Pattern::parse(pattern).unwrap_or_else(|e| panic!("pattern {pattern:?}: {e}"));
    assert_eq!(p.matches(path), expected, "pattern {pattern:?} against path {path:?}");
}

#[test]
fn matching() {
    let table: &[(&str, &str, bool)] = &[
        // literal
        ("/", "/", true),
        ("/", "/a", false),
        ("/a", "/a", true),
        ("/a", "/a/", false),
        ("/a", "/ab", false),
        ("/a/", "/a/", true),
        ("/a/", "/a", false),
        ("/Admin", "/admin", false),
        // `**` as a whole segment
        ("/**", "/", true),
        ("/**", "/a", true),
        ("/**", "/a/", true),
        ("/**", "/a/b/c", true),
        ("/a/**", "/a", true),
        ("/a/**", "/a/", true),
        ("/a/**", "/a/b/c", true),
        ("/a/**", "/ab", false),
        ("/a/**", "/b/a", false),
        ("/a/**", "/", false),
        ("/**/_search", "/_search", true),
        ("/**/_search", "/x/y/_search", true),
        ("/**/_search", "/x/_searchy", false),
        ("/a/**/b", "/a/b", true),
        ("/a/**/b", "/a/b/b", true),
        ("/a/**/b/c", "/a/b/x/b/c", true),
        ("/a/**/b/**/c", "/a/b/c", true),
        ("/a/**/b/**/c", "/a/x/b/y/z/c", true),
        ("/a/**/b/**/c", "/a/x/c", false),
        // `*` as a whole segment: exactly one segment, possibly empty
        ("/*", "/", true),
        ("/*", "/a", true),
        ("/*", "/a/b", false),
        ("/a/*", "/a/x", true),
        ("/a/*", "/a/", true),
        ("/a/*", "/a", false),
        ("/a/*", "/a/x/y", false),
        ("/*/_search", "/logs/_search", true),
        // `*` inside a segment
        ("/logs-*/_search", "/logs-2024/_search", true),
        ("/logs-*/_search", "/logs-/_search", true),
        ("/logs-*/_search", "/metrics-1/_search", false),
        ("/logs-*/_search", "/logs-a/b/_search", false),
        ("/logs-*/_search", "/logs-2024/_searchx", false),
        ("/logs-*/_search", "/Logs-2024/_search", false),
        ("/*-prod/x", "/es-prod/x", true),
        ("/*-prod/x", "/es-dev/x", false),
        ("/a*b*c", "/abc", true),
        ("/a*b*c", "/aXbYc", true),
        ("/a*b*c", "/ac", false),
        ("/a*b*c", "/abcb", false),
        ("/a*a", "/a", false),
        ("/a*a", "/aa", true),
        ("/*x*", "/x", true),
        ("/*x*", "/abxcd", true),
        ("/*x*", "/abcd", false),
        ("/caf*", "/caf%C3%A9", true),
        // a partial wildcard never matches a list of targets (raw or
        // escaped comma), so `logs-*` cannot be stretched to another index
        ("/logs-*/_search", "/logs-*,secret/_search", false),
        ("/logs-*/_search", "/logs-a,secret/_search", false),
        ("/logs-*/_search", "/logs-a%2Csecret/_search", false),
        ("/logs-*/_search", "/logs-a,logs-b/_search", false),
        ("/*-prod/x", "/secret,es-prod/x", false),
        ("/a*b*c", "/a,b,c", false),
        ("/**/logs-*", "/x/logs-a,b", false),
        // a whole-segment `*` is any target, lists included; a literal
        // list matches itself only
        ("/*/_search", "/a,b/_search", true),
        ("/logs-a,logs-b/_search", "/logs-a,logs-b/_search", true),
        ("/logs-a,logs-b/_search", "/logs-a,logs-b,secret/_search", false),
        // inputs that are not normalized never panic, and do not match
        ("/a", "a", false),
        ("/**", "", false),
        ("/a/*", "", false),
        ("/*", "/é", true),
        ("/x*", "/xé", true),
    ];
    for &(pattern, path, expected) in table {
        check(pattern, path, expected);
    }
}

fn check_error(pattern: &str, expected: Result<(), PatternError>) {
    assert_eq!(Pattern::parse(pattern).map(|_| ()), expected, "parsing {pattern:?}");
}

#[test]
fn bad_patterns() {
    let table: &[(&str, Result<(), PatternError>)] = &[
        ("/", Ok(())),
        ("/a/", Ok(())),
        ("/a:b@c!$&'()+,;=~._-", Ok(())),
        ("", Err(PatternError::NotAbsolute)),
        ("a/b", Err(PatternError::NotAbsolute)),
        ("*", Err(PatternError::NotAbsolute)),
        ("//a", Err(PatternError::EmptySegment)),
        ("/a//b", Err(PatternError::EmptySegment)),
        ("/a/../b", Err(PatternError::DotSegment)),
        ("/./a", Err(PatternError::DotSegment)),
        ("/a/.", Err(PatternError::DotSegment)),
        ("/a/..", Err(PatternError::DotSegment)),
        ("/a%2e", Err(PatternError::Percent)),
        ("/a?b", Err(PatternError::QueryOrFragment('?'))),
        ("/a#b", Err(PatternError::QueryOrFragment('#'))),
        ("/a**", Err(PatternError::DoubleStarInSegment)),
        ("/***", Err(PatternError::DoubleStarInSegment)),
        ("/a b", Err(PatternError::Character(' '))),
        ("/a\\b", Err(PatternError::Character('\\'))),
        ("/é", Err(PatternError::Character('é'))),
        ("/a\u{0}", Err(PatternError::Character('\u{0}'))),
        ("/logs-*,metrics-*/_search", Err(PatternError::CommaInGlob)),
        ("/a,*", Err(PatternError::CommaInGlob)),
        ("/a,b/*", Ok(())),
    ];
    for (pattern, expected) in table {
        check_error(pattern, expected.clone());
    }
}

fn check_covers(deny: &str, allow: &str, expected: bool) {
    let d = Pattern::parse(deny).unwrap_or_else(|e| panic!("{deny:?}: {e}"));
    let a = Pattern::parse(allow).unwrap_or_else(|e| panic!("{allow:?}: {e}"));
    assert_eq!(d.covers(&a), expected, "does {deny:?} cover {allow:?}");
}

#[test]
fn covers() {
    let table: &[(&str, &str, bool)] = &[
        ("/**", "/a/b", true),
        ("/**", "/**", true),
        ("/**", "/", true),
        ("/a/**", "/a/b/*", true),
        ("/a/**", "/a", true),
        ("/a/**", "/a/**", true),
        ("/a/**", "/b", false),
        ("/a/**", "/**", false),
        ("/a/*", "/a/**", false),
        ("/a/*", "/a/x", true),
        ("/*", "/x", true),
        ("/*", "/logs-*", true),
        ("/logs-*", "/logs-a", true),
        ("/logs-*", "/logs-*", true),
        ("/logs-*", "/metrics-a", false),
        ("/logs-*", "/*", false),
        ("/a", "/a", true),
        ("/a", "/b", false),
        ("/a", "/a/", false),
        ("/**/x", "/a/b/x", true),
        ("/**/x", "/a/b/y", false),
        ("/a/**/z", "/a/**", false),
    ];
    for &(deny, allow, expected) in table {
        check_covers(deny, allow, expected);
    }
}
