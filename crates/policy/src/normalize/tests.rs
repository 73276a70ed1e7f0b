//! Tests for request-path normalization, including known bypass attempts,
//! and a check that every bypass gets the same policy decision as its
//! canonical path.

use std::borrow::Cow;

use super::{NormalizeOptions, PathError, normalize_path};
use crate::{GroupRef, Request, RouteSet, Source, Subject, compile};

const STRICT: NormalizeOptions = NormalizeOptions {
    allow_encoded_slash: false,
};
const LENIENT: NormalizeOptions = NormalizeOptions {
    allow_encoded_slash: true,
};

fn check(raw: &str, opts: NormalizeOptions, expected: Result<&str, PathError>) {
    let got = normalize_path(raw, opts);
    assert_eq!(
        got.as_deref().map_err(Clone::clone),
        expected,
        "normalizing {raw:?} with {opts:?}"
    );
    if let Ok(normal) = &got {
        // Already-normal input is returned without allocating.
        assert_eq!(
            matches!(normal, Cow::Borrowed(_)),
            normal == raw,
            "borrowed iff unchanged for {raw:?}"
        );
        // Idempotent.
        let again = normalize_path(normal, opts);
        assert_eq!(again.as_deref(), Ok(&**normal), "idempotence for {raw:?}");
        assert!(
            matches!(again, Ok(Cow::Borrowed(_))),
            "normal form of {raw:?} is borrowed"
        );
    }
}

#[test]
fn normalization() {
    use PathError::*;
    let table: &[(&str, NormalizeOptions, Result<&str, PathError>)] = &[
        ("/", STRICT, Ok("/")),
        ("/a/b", STRICT, Ok("/a/b")),
        ("/a/", STRICT, Ok("/a/")),
        ("/logs-*/_search", STRICT, Ok("/logs-*/_search")),
        // dot segments, raw and encoded (decoded before removal)
        ("/a/../b", STRICT, Ok("/b")),
        ("/a/%2e%2e/b", STRICT, Ok("/b")),
        ("/a/%2E%2e/b", STRICT, Ok("/b")),
        ("/a/.%2e/b", STRICT, Ok("/b")),
        ("/a/%2e/b", STRICT, Ok("/a/b")),
        ("/a/./b", STRICT, Ok("/a/b")),
        ("/a/b/..", STRICT, Ok("/a/")),
        ("/a/b/.", STRICT, Ok("/a/b/")),
        ("/a/b/../", STRICT, Ok("/a/")),
        ("/%2e", STRICT, Ok("/")),
        ("/%2e%2e/%2e%2e/x", STRICT, Ok("/x")),
        ("/...", STRICT, Ok("/...")),
        ("/a/..b", STRICT, Ok("/a/..b")),
        // climbing above the root is clamped
        ("/..", STRICT, Ok("/")),
        ("/../a", STRICT, Ok("/a")),
        ("/../../etc/passwd", STRICT, Ok("/etc/passwd")),
        ("/a/../../b", STRICT, Ok("/b")),
        // repeated slashes are folded (before dot removal)
        ("//admin", STRICT, Ok("/admin")),
        ("/a//b///c", STRICT, Ok("/a/b/c")),
        ("/a//", STRICT, Ok("/a/")),
        ("/a//../b", STRICT, Ok("/b")),
        // unreserved escapes are decoded, others upper-cased
        ("/%61dmin", STRICT, Ok("/admin")),
        ("/%41%5a%7E%2D%5F", STRICT, Ok("/AZ~-_")),
        ("/a%3ab", STRICT, Ok("/a%3Ab")),
        ("/a%c3%a9", STRICT, Ok("/a%C3%A9")),
        ("/a%20b", STRICT, Ok("/a%20b")),
        ("/%25", STRICT, Ok("/%25")),
        ("/%25zz", STRICT, Ok("/%25zz")),
        // raw characters that must be encoded are
        ("/café", STRICT, Ok("/caf%C3%A9")),
        ("/a b", STRICT, Ok("/a%20b")),
        ("/a|b", STRICT, Ok("/a%7Cb")),
        ("/a?b#c", STRICT, Ok("/a%3Fb%23c")),
        // rejected
        ("", STRICT, Err(NotAbsolute)),
        ("a/b", STRICT, Err(NotAbsolute)),
        ("*", STRICT, Err(NotAbsolute)),
        ("%2Fa", STRICT, Err(NotAbsolute)),
        ("/a%2fb", STRICT, Err(EncodedSlash { offset: 2 })),
        ("/a%2Fb", STRICT, Err(EncodedSlash { offset: 2 })),
        ("/a/%2e%2e%2fb", STRICT, Err(EncodedSlash { offset: 9 })),
        ("/a%5cb", STRICT, Err(EncodedBackslash { offset: 2 })),
        ("/a\\b", STRICT, Err(Backslash { offset: 2 })),
        ("/%252e%252e/admin", STRICT, Err(DoubleEncoding { offset: 1 })),
        ("/%2525", STRICT, Err(DoubleEncoding { offset: 1 })),
        ("/%zz", STRICT, Err(InvalidEscape { offset: 1 })),
        ("/a%", STRICT, Err(InvalidEscape { offset: 2 })),
        ("/a%2", STRICT, Err(InvalidEscape { offset: 2 })),
        ("/a%g1", STRICT, Err(InvalidEscape { offset: 2 })),
        ("/a%00b", STRICT, Err(ControlCharacter { offset: 2 })),
        ("/a%1F", STRICT, Err(ControlCharacter { offset: 2 })),
        ("/a%7f", STRICT, Err(ControlCharacter { offset: 2 })),
        ("/a\tb", STRICT, Err(ControlCharacter { offset: 2 })),
        ("/a\u{7f}", STRICT, Err(ControlCharacter { offset: 2 })),
        // encoded slashes kept (encoded, upper-case) when allowed
        ("/a%2fb", LENIENT, Ok("/a%2Fb")),
        ("/a%5cb", LENIENT, Ok("/a%5Cb")),
        ("/a/..%2f..%2fetc", LENIENT, Ok("/a/..%2F..%2Fetc")),
        ("/a\\b", LENIENT, Err(Backslash { offset: 2 })),
        ("/%252f", LENIENT, Err(DoubleEncoding { offset: 1 })),
    ];
    for &(raw, opts, expected) in table {
        check(raw, opts, expected);
    }
}

#[test]
fn error_messages() {
    assert_eq!(
        PathError::EncodedSlash { offset: 2 }.to_string(),
        "encoded slash (%2F) at byte 2"
    );
    assert_eq!(
        PathError::DoubleEncoding { offset: 1 }.reason(),
        "double percent-encoding in path"
    );
}

const BYPASS_POLICY: &str = r#"
[roles.user]
allow = [{ route = "app", paths = ["/**"] }]
deny = [{ route = "app", paths = ["/admin/**"] }]

[roles.admin]
allow = [{ route = "app", paths = ["/admin/**"] }]

[groups]
"users" = ["user"]
"admins" = ["admin"]
"#;

/// For a bypass attempt, the decision on its normalized form must equal the
/// decision on the canonical path, for every subject.
fn check_bypass(raw: &str, canonical: &str) {
    let compiled = compile(&[Source::new("bypass.toml", BYPASS_POLICY)], &RouteSet::new(["app"]))
        .unwrap_or_else(|e| panic!("{e:?}"));
    let normalized = normalize_path(raw, STRICT).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
    assert_eq!(normalized, canonical, "normal form of {raw:?}");
    let users = [GroupRef::new("scim", "users")];
    let admins = [GroupRef::new("scim", "admins")];
    for groups in [&users[..], &admins[..], &[]] {
        let subject = Subject::new("someone", groups);
        let decide = |path: &str| {
            let req = Request {
                route: "app",
                method: "GET",
                path,
            };
            let d = compiled.policy.decide(&subject, &req);
            (d.allowed, d.reason.rule().map(|r| r.location().clone()))
        };
        assert_eq!(
            decide(&normalized),
            decide(canonical),
            "{raw:?} vs {canonical:?} for {groups:?}"
        );
    }
    // The bypass must actually be denied for plain users.
    let subject = Subject::new("someone", &users);
    let req = Request {
        route: "app",
        method: "GET",
        path: &normalized,
    };
    assert_eq!(
        compiled.policy.decide(&subject, &req).allowed,
        !canonical.starts_with("/admin"),
        "{raw:?} for users"
    );
}

#[test]
fn bypass_attempts_decide_like_canonical_paths() {
    let table: &[(&str, &str)] = &[
        ("/admin/x", "/admin/x"),
        ("/public/../admin/x", "/admin/x"),
        ("/public/%2e%2e/admin/x", "/admin/x"),
        ("/public/%2E%2e/admin/x", "/admin/x"),
        ("/public/.%2e/admin/x", "/admin/x"),
        ("//admin/x", "/admin/x"),
        ("/./admin/x", "/admin/x"),
        ("/%61dmin/x", "/admin/x"),
        ("/%61%64%6d%69%6e/x", "/admin/x"),
        ("/admin/x/..", "/admin/"),
        ("/admin", "/admin"),
        ("/admin/x/../..", "/"),
        ("/../admin/x", "/admin/x"),
        ("/a/b/../../admin//x", "/admin/x"),
    ];
    for &(raw, canonical) in table {
        check_bypass(raw, canonical);
    }
}
