//! Tests for filters and paths: parsing (AST shape via `Display`, errors
//! with positions), every filter example of RFC 7644 3.4.2.2 parsed and
//! evaluated, IdP quirks, validation, index hints, sort keys, projection,
//! and robustness (deep nesting, megabyte inputs, a seeded random smoke
//! test).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::schema::{ENTERPRISE_URN, ResourceKind, Schemas, USER_URN};

fn schemas() -> Schemas {
    Schemas::new(&[]).unwrap_or_else(|e| panic!("built-in schemas: {e}"))
}

/// RFC 7643 8.2's full user, as Portcullis returns it.
fn bjensen() -> Value {
    json!({
        "schemas": [USER_URN, ENTERPRISE_URN],
        "id": "2819c223-7f76-453a-919d-413861904646",
        "externalId": "701984",
        "userName": "bjensen",
        "name": {
            "formatted": "Ms. Barbara J Jensen, III",
            "familyName": "Jensen",
            "givenName": "Barbara",
            "middleName": "Jane",
            "honorificPrefix": "Ms.",
            "honorificSuffix": "III"
        },
        "displayName": "Babs Jensen",
        "nickName": "Babs",
        "profileUrl": "https://login.example.com/bjensen",
        "emails": [
            {"value": "bjensen@example.com", "type": "work", "primary": true},
            {"value": "babs@jensen.org", "type": "home"}
        ],
        "addresses": [
            {"type": "work", "streetAddress": "100 Universal City Plaza", "locality": "Hollywood",
             "region": "CA", "postalCode": "91608", "country": "USA", "primary": true},
            {"type": "home", "streetAddress": "456 Hollywood Blvd", "locality": "Hollywood",
             "region": "CA", "postalCode": "91608", "country": "USA"}
        ],
        "phoneNumbers": [{"value": "555-555-5555", "type": "work"}, {"value": "555-555-4444", "type": "mobile"}],
        "ims": [{"value": "someaimhandle", "type": "aim"}],
        "userType": "Employee",
        "title": "Tour Guide",
        "preferredLanguage": "en-US",
        "locale": "en-US",
        "timezone": "America/Los_Angeles",
        "active": true,
        "password": "t1meMa$heen",
        "groups": [{"value": "e9e30dba-f08f-4109-8486-d5c6a331660a", "display": "Tour Guides", "type": "direct"}],
        ENTERPRISE_URN: {
            "employeeNumber": "701984",
            "costCenter": "4130",
            "organization": "Universal Studios",
            "division": "Theme Park",
            "department": "Tour Operations",
            "manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d", "displayName": "John Smith"}
        },
        "meta": {
            "resourceType": "User",
            "created": "2010-01-23T04:56:22Z",
            "lastModified": "2011-05-13T04:42:34Z",
            "version": "W/\"3694e05e9dff591\"",
            "location": "https://example.com/v2/Users/2819c223-7f76-453a-919d-413861904646"
        }
    })
}

/// A second user: an intern with an example.org address and an XMPP handle.
fn jomalley() -> Value {
    json!({
        "schemas": [USER_URN],
        "id": "b2c1",
        "externalId": "Jim-01",
        "userName": "jomalley",
        "name": {"familyName": "O'Malley", "givenName": "Jim"},
        "userType": "Intern",
        "active": false,
        "emails": [{"value": "jim@example.org", "type": "work"}],
        "ims": [{"value": "jim@foo.com", "type": "xmpp"}],
        "meta": {"resourceType": "User", "created": "2010-01-01T00:00:00Z", "lastModified": "2010-02-01T00:00:00Z"}
    })
}

/// A user with almost nothing.
fn nobody() -> Value {
    json!({"schemas": [USER_URN], "id": "n0", "userName": "nobody"})
}

fn group() -> Value {
    json!({
        "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
        "id": "g1",
        "displayName": "Tour Guides",
        "members": [
            {"value": "2819c223-7f76-453a-919d-413861904646", "display": "Babs Jensen", "type": "User"},
            {"value": "902c246b", "display": "Admins", "type": "Group"}
        ],
        "meta": {"resourceType": "Group", "created": "2010-01-23T04:56:22Z", "lastModified": "2011-05-13T04:42:34Z"}
    })
}

fn parse(s: &str) -> Filter {
    parse_filter(s).unwrap_or_else(|e| panic!("filter {s:?}: {e}"))
}

// ---- parsing -------------------------------------------------------------------

/// Parses `input` and compares its canonical form (fully parenthesized).
fn check_parse(input: &str, expected: &str) {
    assert_eq!(parse(input).to_string(), expected, "filter {input:?}");
}

#[test]
fn parsing() {
    let table: &[(&str, &str)] = &[
        ("userName eq \"bjensen\"", "userName eq \"bjensen\""),
        // operators and keywords in any case (PingOne sends `username Eq`)
        ("username Eq \"x\"", "username eq \"x\""),
        ("userName EQ \"x\" AND title PR", "(userName eq \"x\" and title pr)"),
        ("NOT (title pr)", "not (title pr)"),
        ("not(title pr)", "not (title pr)"),
        // precedence: and binds tighter than or; chains keep their order
        ("a pr or b pr and c pr", "(a pr or (b pr and c pr))"),
        ("a pr and b pr or c pr", "((a pr and b pr) or c pr)"),
        ("a pr and b pr and c pr", "((a pr and b pr) and c pr)"),
        ("a pr and (b pr or c pr)", "(a pr and (b pr or c pr))"),
        ("((a pr))", "a pr"),
        // whitespace anywhere between tokens, or none where unambiguous
        ("  userName   eq   \"x\"  ", "userName eq \"x\""),
        ("userName\teq\t\"x\"", "userName eq \"x\""),
        ("userName eq\"x\"", "userName eq \"x\""),
        ("(title pr)and(userType eq \"E\")", "(title pr and userType eq \"E\")"),
        // values
        ("active eq true", "active eq true"),
        ("active eq False", "active eq false"),
        ("manager eq null", "manager eq null"),
        ("age gt 42", "age gt 42"),
        ("weight le -1.5e3", "weight le -1500.0"),
        // numbers parse correctly rounded, so they print back the same
        (
            "x ne 555555555555555558888888885588888.8800",
            "x ne 5.5555555555555556e+32",
        ),
        ("x eq 18446744073709551615", "x eq 18446744073709551615"),
        ("x eq 1e400", "x eq \"1e400\""),
        (
            "x eq \"a \\\"quoted\\\" \\u00e9 \\\\ word\"",
            "x eq \"a \\\"quoted\\\" é \\\\ word\"",
        ),
        ("x eq \"\"", "x eq \"\""),
        ("x eq \"élan ünïcode\"", "x eq \"élan ünïcode\""),
        // bare tokens are strings (authentik, Entra's `externalId eq jyoung`)
        ("userName eq bob", "userName eq \"bob\""),
        (
            "userName eq bob@example.com and active eq true",
            "(userName eq \"bob@example.com\" and active eq true)",
        ),
        ("(externalId eq jyoung)", "externalId eq \"jyoung\""),
        ("externalId eq 12abc", "externalId eq \"12abc\""),
        ("externalId eq 007", "externalId eq \"007\""),
        ("x eq naïve", "x eq \"naïve\""),
        // paths
        ("name.familyName co \"O'Malley\"", "name.familyName co \"O'Malley\""),
        (
            "urn:ietf:params:scim:schemas:core:2.0:User:userName sw \"J\"",
            "urn:ietf:params:scim:schemas:core:2.0:User:userName sw \"J\"",
        ),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq \"m\"",
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq \"m\"",
        ),
        ("members.$ref pr", "members.$ref pr"),
        ("not eq \"x\"", "not eq \"x\""),
        ("orange pr or and pr", "(orange pr or and pr)"),
        // value paths
        (
            "emails[type eq \"work\" and value co \"@example.com\"]",
            "emails[(type eq \"work\" and value co \"@example.com\")]",
        ),
        (
            "emails[type eq \"work\"].value eq \"x\"",
            "emails[(type eq \"work\" and value eq \"x\")]",
        ),
        (
            "emails[type eq \"work\"].value pr",
            "emails[(type eq \"work\" and value pr)]",
        ),
        ("emails[not (type eq \"work\")]", "emails[not (type eq \"work\")]"),
        ("emails[ type eq work ]", "emails[type eq \"work\"]"),
    ];
    for (input, expected) in table {
        check_parse(input, expected);
    }
}

/// Parses `input` expecting an error of `kind` whose detail contains
/// `detail`.
fn check_error(input: &str, kind: ScimType, detail: &str) {
    match parse_filter(input) {
        Ok(f) => panic!("filter {input:?} parsed as {f}"),
        Err(e) => {
            assert_eq!((e.status, e.scim_type), (400, Some(kind)), "filter {input:?}: {e}");
            assert!(
                e.detail.contains(detail),
                "filter {input:?}: {:?} lacks {detail:?}",
                e.detail
            );
        }
    }
}

#[test]
fn parse_errors() {
    let f = ScimType::InvalidFilter;
    let table: &[(&str, &str)] = &[
        (
            "",
            "at byte 0: expected a filter expression, found the end of the input",
        ),
        ("   ", "at byte 3: expected a filter expression"),
        ("userName", "at byte 8: expected an operator"),
        ("userName eq", "at byte 11: expected a value"),
        (
            "userName xx \"a\"",
            "at byte 9: expected an operator (eq, ne, co, sw, ew, gt, lt, ge, le or pr), found \"xx \\\"a\\\"\"",
        ),
        (
            "userName eq \"bob",
            "at byte 12: expected a string with a closing quote",
        ),
        ("userName eq \"b\\qb\"", "at byte 12: expected a valid JSON string"),
        ("userName eq \"a\" and", "at byte 19: expected an attribute path"),
        // `or` is also a valid attribute name
        ("userName eq \"a\" or or x pr", "at byte 22: expected an operator"),
        (
            "userName eq \"a\" userName eq \"b\"",
            "at byte 16: expected \"and\", \"or\" or the end of the filter",
        ),
        ("(title pr", "at byte 9: expected \")\""),
        ("title pr)", "at byte 8: expected \"and\", \"or\""),
        ("not title pr", "at byte 4: expected an operator"),
        ("emails[type eq \"work\"", "at byte 21: expected \"]\""),
        (
            "emails[type[value pr] pr]",
            "at byte 11: expected an operator (value filters cannot be nested)",
        ),
        ("emails[urn:x:y:type pr]", "at byte 7: expected a sub-attribute name"),
        ("emails[a.b pr]", "at byte 7: expected a sub-attribute name"),
        (
            "emails.value[type pr]",
            "at byte 12: expected an operator (a value filter applies",
        ),
        ("emails[type pr].", "at byte 16: expected a sub-attribute name"),
        ("emails[type pr].value", "at byte 21: expected an operator"),
        ("1abc eq \"x\"", "at byte 0: expected an attribute path such as"),
        ("name.a.b pr", "at byte 0: expected an attribute path such as"),
        ("urn: pr", "at byte 0: expected an attribute path such as"),
        ("\"x\" eq userName", "at byte 0: expected an attribute path"),
        ("userName eq )", "at byte 12: expected a value"),
        ("() ", "at byte 1: expected an attribute path"),
    ];
    for (input, detail) in table {
        check_error(input, f, detail);
    }
}

#[test]
fn nesting_and_size_are_bounded() {
    let depth_error = format!("nested deeper than {MAX_DEPTH} levels");
    let deep = |open: &str, close: &str, n: usize| format!("{}title pr{}", open.repeat(n), close.repeat(n));
    // At the limit it parses; one more level is refused, never a stack overflow.
    parse(&deep("(", ")", MAX_DEPTH));
    parse(&deep("not (", ")", MAX_DEPTH));
    check_error(&deep("(", ")", MAX_DEPTH + 1), ScimType::InvalidFilter, &depth_error);
    check_error(&deep("not(", ")", MAX_DEPTH + 1), ScimType::InvalidFilter, &depth_error);
    for n in [10_000, 1_000_000] {
        check_error(&"(".repeat(n), ScimType::InvalidFilter, &depth_error);
        check_error(&"not(".repeat(n), ScimType::InvalidFilter, &depth_error);
        check_error(&deep("not (", ")", n), ScimType::InvalidFilter, &depth_error);
    }
    // Value filters count as nesting too.
    check_error(
        &format!("{}emails[type pr]{}", "(".repeat(MAX_DEPTH), ")".repeat(MAX_DEPTH)),
        ScimType::InvalidFilter,
        &depth_error,
    );

    // Long chains: balanced trees, so evaluation and drop stay shallow.
    let started = Instant::now();
    let chain = vec!["userName eq \"x\""; MAX_TERMS].join(" or ");
    let f = parse(&chain);
    assert!(!f.matches(&bjensen(), schemas().resource(ResourceKind::User)));
    let chain_and = vec!["title pr"; MAX_TERMS].join(" and ");
    assert!(parse(&chain_and).matches(&bjensen(), schemas().resource(ResourceKind::User)));
    check_error(
        &format!("{chain} or title pr"),
        ScimType::InvalidFilter,
        &format!("more than {MAX_TERMS} comparisons"),
    );
    // Deep and long at once: 64 levels, each with a long chain.
    let mut nested = String::from("title pr");
    for _ in 0..MAX_DEPTH {
        nested = format!("({nested} and {})", vec!["title pr"; 100].join(" and "));
    }
    assert!(parse(&nested).matches(&bjensen(), schemas().resource(ResourceKind::User)));

    // Megabyte inputs parse (or fail) in linear time.
    let long_string = format!("displayName eq \"{}\"", "a\\\"b".repeat(400_000));
    assert!(matches!(parse(&long_string), Filter::Compare { .. }));
    let long_token = format!("displayName eq {}", "b".repeat(2_000_000));
    assert!(matches!(parse(&long_token), Filter::Compare { .. }));
    let long_path = "a".repeat(2_000_000);
    check_error(
        &long_path,
        ScimType::InvalidFilter,
        "at byte 2000000: expected an operator",
    );
    let unterminated = format!("displayName eq \"{}", "\\\\".repeat(1_000_000));
    check_error(
        &unterminated,
        ScimType::InvalidFilter,
        "expected a string with a closing quote",
    );
    let spaces = format!("title{}pr", " ".repeat(2_000_000));
    parse(&spaces);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
}

// ---- evaluation ------------------------------------------------------------------

/// Evaluates `filter` against `resource` (a user).
fn check(filter: &str, resource: &Value, expected: bool) {
    let s = schemas();
    let f = parse(filter);
    assert_eq!(
        f.matches(resource, s.resource(ResourceKind::User)),
        expected,
        "filter {filter:?} against {}",
        resource["userName"]
    );
}

#[test]
fn rfc7644_filter_examples() {
    // Every example of RFC 7644 3.4.2.2, against three users.
    let (b, j, n) = (&bjensen(), &jomalley(), &nobody());
    let table: &[(&str, [bool; 3])] = &[
        ("userName eq \"bjensen\"", [true, false, false]),
        ("name.familyName co \"O'Malley\"", [false, true, false]),
        ("userName sw \"J\"", [false, true, false]),
        (
            "urn:ietf:params:scim:schemas:core:2.0:User:userName sw \"J\"",
            [false, true, false],
        ),
        ("title pr", [true, false, false]),
        ("meta.lastModified gt \"2011-05-13T04:42:34Z\"", [false, false, false]),
        ("meta.lastModified ge \"2011-05-13T04:42:34Z\"", [true, false, false]),
        ("meta.lastModified lt \"2011-05-13T04:42:34Z\"", [false, true, false]),
        ("meta.lastModified le \"2011-05-13T04:42:34Z\"", [true, true, false]),
        ("title pr and userType eq \"Employee\"", [true, false, false]),
        ("title pr or userType eq \"Intern\"", [true, true, false]),
        (
            "schemas eq \"urn:ietf:params:scim:schemas:extension:enterprise:2.0:User\"",
            [true, false, false],
        ),
        (
            "userType eq \"Employee\" and (emails co \"example.com\" or emails.value co \"example.org\")",
            [true, false, false],
        ),
        (
            "userType ne \"Employee\" and not (emails co \"example.com\" or emails.value co \"example.org\")",
            [false, false, true],
        ),
        (
            "userType eq \"Employee\" and (emails.type eq \"work\")",
            [true, false, false],
        ),
        (
            "userType eq \"Employee\" and emails[type eq \"work\" and value co \"@example.com\"]",
            [true, false, false],
        ),
        (
            "emails[type eq \"work\" and value co \"@example.com\"] or ims[type eq \"xmpp\" and value co \"@foo.com\"]",
            [true, true, false],
        ),
        // 3.4.2.2: attribute names and operators are case-insensitive
        ("userName Eq \"bjensen\"", [true, false, false]),
        ("Username eq \"bjensen\"", [true, false, false]),
    ];
    for (filter, expected) in table {
        for (user, want) in [b, j, n].into_iter().zip(expected) {
            check(filter, user, *want);
        }
    }
}

#[test]
fn evaluation() {
    let b = &bjensen();
    let j = &jomalley();
    let table: &[(&str, &Value, bool)] = &[
        // caseExact=false: userName, emails.value, name.*
        ("userName eq \"BJENSEN\"", b, true),
        ("USERNAME eq \"bjensen\"", b, true),
        ("emails.value eq \"BJensen@Example.com\"", b, true),
        ("name.givenName eq \"barbara\"", b, true),
        // caseExact=true: id, externalId, meta.version
        ("externalId eq \"jim-01\"", j, false),
        ("externalId eq \"Jim-01\"", j, true),
        ("id eq \"2819C223-7F76-453A-919D-413861904646\"", b, false),
        ("id eq \"2819c223-7f76-453a-919d-413861904646\"", b, true),
        // ne is "not eq"
        ("userName ne \"bjensen\"", b, false),
        ("userName ne \"BJENSEN\"", b, false),
        ("title ne \"x\"", j, true),
        ("emails ne \"bjensen@example.com\"", b, false),
        // co / sw / ew / ordering on strings
        ("displayName co \"BS JEN\"", b, true),
        ("displayName sw \"babs\"", b, true),
        ("displayName ew \"JENSEN\"", b, true),
        ("displayName ew \"babs\"", b, false),
        ("userName gt \"a\"", b, true),
        ("userName lt \"B\"", b, false),
        ("userName ge \"BJENSEN\"", b, true),
        ("userName le \"bjensen\"", b, true),
        // booleans, also given as strings or bare tokens
        ("active eq true", b, true),
        ("active eq false", j, true),
        ("active eq \"True\"", b, true),
        ("active eq TRUE", b, true),
        ("active ne true", j, true),
        ("active gt false", b, false),
        ("active co \"t\"", b, false),
        // dateTime compares instants, whatever the offset
        ("meta.lastModified eq \"2011-05-13T06:42:34+02:00\"", b, true),
        ("meta.lastModified gt \"2011-05-13T04:42:33.999Z\"", b, true),
        ("meta.created lt \"2010-01-23T04:56:22.5Z\"", b, true),
        // not a date-time: compared as text (validate refuses it)
        ("meta.created gt \"2010-01-23T04:56\"", b, true),
        ("meta.lastModified sw \"2011-05\"", b, true),
        // numbers and bare numeric tokens against strings
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:employeeNumber eq 701984",
            b,
            true,
        ),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:costCenter gt \"4000\"",
            b,
            true,
        ),
        // extensions, qualified or not (Entra filters on `manager`)
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department eq \"tour operations\"",
            b,
            true,
        ),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq \"26118915-6090-4610-87e4-49d8ca9f808d\"",
            b,
            true,
        ),
        (
            "URN:IETF:PARAMS:SCIM:SCHEMAS:EXTENSION:ENTERPRISE:2.0:USER:DEPARTMENT pr",
            b,
            true,
        ),
        ("manager.value eq \"26118915-6090-4610-87e4-49d8ca9f808d\"", b, true),
        (
            "id eq \"2819c223-7f76-453a-919d-413861904646\" and manager eq \"26118915-6090-4610-87e4-49d8ca9f808d\"",
            b,
            false,
        ),
        ("department eq \"Tour Operations\"", b, true),
        ("urn:ietf:params:scim:schemas:core:2.0:User:department pr", b, false),
        ("urn:x:y:department pr", b, false),
        // multi-valued: any value; complex without sub-attribute means `value`
        ("emails eq \"babs@jensen.org\"", b, true),
        ("emails.type eq \"home\"", b, true),
        ("emails co \"@foo.com\"", b, false),
        ("phoneNumbers sw \"555-555-4\"", b, true),
        ("addresses.locality eq \"hollywood\"", b, true),
        ("groups.display eq \"tour guides\"", b, true),
        // value paths, and Entra's sub-attribute after the filter
        ("emails[type eq \"work\"].value eq \"bjensen@example.com\"", b, true),
        ("emails[type eq \"home\"].value eq \"bjensen@example.com\"", b, false),
        ("emails[type eq \"work\" and primary eq true]", b, true),
        ("emails[type eq \"home\" and primary eq true]", b, false),
        ("emails[primary pr]", j, false),
        ("emails[not (type eq \"work\")]", b, true),
        ("emails[not (type eq \"work\")]", j, false),
        (
            "addresses[postalCode eq \"91608\" and type eq \"home\"].streetAddress sw \"456\"",
            b,
            true,
        ),
        ("name[givenName eq \"Barbara\"]", b, true),
        ("emails[unknown eq \"x\"]", b, false),
        ("userName[value eq \"x\"]", b, false),
        // pr: not null, "", [] or {}
        ("nickName pr", b, true),
        ("nickName pr", j, false),
        ("emails pr", b, true),
        ("name pr", j, true),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager pr",
            b,
            true,
        ),
        ("password pr", b, true),
        // null
        ("title eq null", j, true),
        ("title eq null", b, false),
        ("title ne null", b, true),
        ("emails eq null", j, false),
        ("title gt null", b, false),
        // unknown attributes match nothing, whatever the operator
        ("favoriteColor eq \"blue\"", b, false),
        ("favoriteColor ne \"blue\"", b, false),
        ("favoriteColor pr", b, false),
        ("not (favoriteColor eq \"blue\")", b, true),
        ("name.nonsense pr", b, false),
        // complex without sub-attribute is no comparison
        ("name eq \"Barbara\"", b, false),
        ("addresses eq \"x\"", b, false),
    ];
    for (filter, resource, expected) in table {
        check(filter, resource, *expected);
    }
}

#[test]
fn evaluation_on_groups_and_member_filters() {
    let s = schemas();
    let gs = s.resource(ResourceKind::Group);
    let g = group();
    let table: &[(&str, bool)] = &[
        ("displayName eq \"tour guides\"", true),
        ("members.value eq \"902c246b\"", true),
        ("members eq \"902c246b\"", true),
        ("members[type eq \"Group\" and value sw \"902\"]", true),
        // `display` is a read-only member sub-attribute: filters see it
        ("members[display co \"adm\"]", true),
        ("members[type eq \"Bot\"]", false),
        ("userName pr", false),
    ];
    for (filter, expected) in table {
        assert_eq!(parse(filter).matches(&g, gs), *expected, "{filter}");
    }
    // How the service evaluates MemberEdit::RemoveWhere: the member filter
    // wrapped in a value path, against a one-member document.
    let inner = parse("value sw \"u1\" or type eq \"Group\"");
    let member = |v: &str, t: &str, d: &str| json!({"members": [{"value": v, "type": t, "display": d}]});
    let wrapped = Filter::ValuePath {
        path: AttrPath::new("members"),
        filter: Box::new(inner.clone()),
    };
    assert!(wrapped.matches(&member("u1", "User", "Babs Jensen"), gs));
    assert!(wrapped.matches(&member("g2", "Group", "Admins"), gs));
    assert!(!wrapped.matches(&member("u2", "User", "Jim"), gs));
    let members_attr = gs.core().attribute("members").unwrap_or_else(|| panic!("members"));
    assert!(inner.matches_element(&json!({"value": "g", "type": "Group"}), members_attr));
}

/// Validates `filter` against the User schema.
fn check_validate(filter: &str, expected: Result<(), &str>) {
    let s = schemas();
    let got = parse(filter).validate(s.resource(ResourceKind::User));
    match (got, expected) {
        (Ok(()), Ok(())) => {}
        (Err(e), Err(detail)) => {
            assert_eq!(e.scim_type, Some(ScimType::InvalidFilter), "{filter}");
            assert!(e.detail.contains(detail), "{filter}: {:?} lacks {detail:?}", e.detail);
        }
        (got, want) => panic!("filter {filter:?}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn validation() {
    let table: &[(&str, Result<(), &str>)] = &[
        ("userName eq \"x\"", Ok(())),
        ("emails co \"x\"", Ok(())),
        ("favoriteColor gt 3", Ok(())),
        ("name pr", Ok(())),
        ("meta.lastModified gt \"2011-05-13T04:42:34Z\"", Ok(())),
        ("active eq true", Ok(())),
        ("emails[type eq \"work\"].value eq \"x\"", Ok(())),
        ("active gt true", Err("active is boolean: gt does not apply")),
        ("x509Certificates.value le \"x\"", Err("is binary: le does not apply")),
        (
            "title pr and not (active ge false)",
            Err("active is boolean: ge does not apply"),
        ),
        ("name eq \"Barbara\"", Err("name is complex")),
        ("addresses co \"x\"", Err("addresses is complex")),
        ("emails[primary lt true]", Err("primary is boolean")),
        (
            "userName[value eq \"x\"]",
            Err("a value filter needs a complex attribute"),
        ),
        ("title gt null", Err("only eq and ne compare with null")),
        (
            "meta.created gt \"2010-01-23T04:56\"",
            Err("is not an RFC 3339 date-time"),
        ),
        ("meta.created eq 5", Err("is not an RFC 3339 date-time")),
        ("meta.created sw \"2010\"", Ok(())),
        ("meta.created eq null", Ok(())),
    ];
    for (filter, expected) in table {
        check_validate(filter, *expected);
    }
}

// ---- index hints -------------------------------------------------------------------

/// The candidate equalities of `filter`, as `path=value` strings.
fn check_equalities(filter: &str, expected: &[&str], single: Option<&str>) {
    let f = parse(filter);
    let got: Vec<String> = f
        .candidate_equalities()
        .iter()
        .map(|(p, v)| format!("{p}={v}"))
        .collect();
    assert_eq!(got, expected, "candidate equalities of {filter:?}");
    let got_single = f.equality_lookup().map(|(p, v)| format!("{p}={v}"));
    assert_eq!(got_single.as_deref(), single, "equality lookup of {filter:?}");
}

#[test]
fn index_hints() {
    let table: &[(&str, &[&str], Option<&str>)] = &[
        ("userName eq \"bob\"", &["userName=bob"], Some("userName=bob")),
        ("externalId eq \"e1\"", &["externalId=e1"], Some("externalId=e1")),
        (
            "emails.value eq \"a@b\"",
            &["emails.value=a@b"],
            Some("emails.value=a@b"),
        ),
        (
            "emails[value eq \"a@b\"]",
            &["emails.value=a@b"],
            Some("emails.value=a@b"),
        ),
        (
            "members[value eq \"u1\"]",
            &["members.value=u1"],
            Some("members.value=u1"),
        ),
        (
            "emails[type eq \"work\"].value eq \"a@b\"",
            &["emails.type=work", "emails.value=a@b"],
            None,
        ),
        // Entra's manager lookup: id first, whatever the written order
        ("manager eq \"m1\" and id eq \"u1\"", &["id=u1", "manager=m1"], None),
        (
            "displayName eq \"d\" and externalId eq \"e\" and userName eq \"u\"",
            &["userName=u", "externalId=e", "displayName=d"],
            None,
        ),
        ("userName eq bob", &["userName=bob"], Some("userName=bob")),
        // not necessary conditions: left out
        ("userName eq \"a\" or userName eq \"b\"", &[], None),
        ("not (userName eq \"a\")", &[], None),
        ("userName ne \"a\"", &[], None),
        ("userName co \"a\"", &[], None),
        ("active eq true", &[], None),
        ("externalId eq 12345", &[], None),
        ("title pr and userName eq \"u\"", &["userName=u"], None),
        (
            "urn:ietf:params:scim:schemas:core:2.0:User:userName eq \"u\"",
            &["urn:ietf:params:scim:schemas:core:2.0:User:userName=u"],
            Some("urn:ietf:params:scim:schemas:core:2.0:User:userName=u"),
        ),
    ];
    for (filter, expected, single) in table {
        check_equalities(filter, expected, *single);
    }
}

// ---- paths -------------------------------------------------------------------------

/// Parses a PATCH path: `Ok(canonical form)` or `Err((scimType, detail))`.
type PathExpect = Result<&'static str, (ScimType, &'static str)>;

fn check_path(input: &str, expected: PathExpect) {
    match (parse_path(input), expected) {
        (Ok(p), Ok(want)) => assert_eq!(p.to_string(), want, "path {input:?}"),
        (Err(e), Err((kind, detail))) => {
            assert_eq!(e.scim_type, Some(kind), "path {input:?}: {e}");
            assert!(
                e.detail.contains(detail),
                "path {input:?}: {:?} lacks {detail:?}",
                e.detail
            );
        }
        (got, want) => panic!("path {input:?}: got {got:?}, want {want:?}"),
    }
}

#[test]
fn patch_paths() {
    let p = ScimType::InvalidPath;
    let table: &[(&str, PathExpect)] = &[
        // RFC 7644 3.5.2 examples
        ("members", Ok("members")),
        ("name.familyName", Ok("name.familyName")),
        ("addresses[type eq \"work\"]", Ok("addresses[type eq \"work\"]")),
        (
            "members[value eq \"2819c223-7f76-453a-919d-413861904646\"]",
            Ok("members[value eq \"2819c223-7f76-453a-919d-413861904646\"]"),
        ),
        (
            "members[value eq \"2819c223-7f76-453a-919d-413861904646\"].displayName",
            Ok("members[value eq \"2819c223-7f76-453a-919d-413861904646\"].displayName"),
        ),
        // what IdPs send
        ("emails[type eq \"work\"].value", Ok("emails[type eq \"work\"].value")),
        (
            "addresses[type eq \"work\"].streetAddress",
            Ok("addresses[type eq \"work\"].streetAddress"),
        ),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            Ok("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department"),
        ),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
            Ok("urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"),
        ),
        (
            "emails[type eq \"work\" and value ew \"example.com\"]",
            Ok("emails[(type eq \"work\" and value ew \"example.com\")]"),
        ),
        ("  active  ", Ok("active")),
        // errors: structure is invalidPath, the filter inside is invalidFilter
        ("", Err((p, "at byte 0: expected an attribute path"))),
        ("name.", Err((p, "at byte 0: expected an attribute path"))),
        ("a b", Err((p, "at byte 2: expected the end of the path"))),
        (
            "name.givenName[x pr]",
            Err((p, "a value filter applies to an attribute")),
        ),
        (
            "emails[type eq \"work\"].",
            Err((p, "at byte 23: expected a sub-attribute name")),
        ),
        (
            "emails[type eq \"work\"]x",
            Err((p, "at byte 22: expected the end of the path")),
        ),
        (
            "emails[type eq \"work\"].value.x",
            Err((p, "at byte 23: expected a sub-attribute name")),
        ),
        (
            "emails[type eq]",
            Err((ScimType::InvalidFilter, "invalid path at byte 14: expected a value")),
        ),
        (
            "emails[type eq \"work\"",
            Err((ScimType::InvalidFilter, "expected \"]\"")),
        ),
        ("emails[a[b pr] pr]", Err((ScimType::InvalidFilter, "cannot be nested"))),
    ];
    for (input, expected) in table {
        check_path(input, *expected);
    }
    let deep = format!("emails[{}type pr{}]", "(".repeat(100_000), ")".repeat(100_000));
    check_path(&deep, Err((ScimType::InvalidFilter, "nested deeper than 64 levels")));
}

#[test]
fn attribute_lists() {
    let table: &[(&str, Result<&[&str], ()>)] = &[
        ("userName", Ok(&["userName"])),
        (
            "userName, name.givenName ,emails.value",
            Ok(&["userName", "name.givenName", "emails.value"]),
        ),
        ("userName,,", Ok(&["userName"])),
        (
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
            Ok(&["urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value"]),
        ),
        ("", Ok(&[])),
        ("userName,emails[type eq \"work\"]", Err(())),
        ("a.b.c", Err(())),
    ];
    for (input, expected) in table {
        let got = parse_attr_list(input).map(|v| v.iter().map(ToString::to_string).collect::<Vec<_>>());
        match (got, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, *want, "{input:?}"),
            (Err(e), Err(())) => assert_eq!(e.scim_type, Some(ScimType::InvalidValue), "{input:?}"),
            (got, want) => panic!("{input:?}: got {got:?}, want {want:?}"),
        }
    }
}

// ---- sorting -------------------------------------------------------------------------

#[test]
fn sort_keys() {
    let s = schemas();
    let us = s.resource(ResourceKind::User);
    let key = |v: &Value, path: &str| sort_key(v, &AttrPath::parse(path).unwrap_or_else(|e| panic!("{e}")), us);
    let string = |s: &str| Some(SortValue::String(s.to_owned()));
    let table: Vec<(Value, &str, Option<SortValue>)> = vec![
        // caseExact=false: lower-cased; caseExact=true: as is
        (bjensen(), "displayName", string("babs jensen")),
        (jomalley(), "externalId", string("Jim-01")),
        (bjensen(), "name.familyName", string("jensen")),
        // multi-valued: the primary value, else the first
        (bjensen(), "emails", string("bjensen@example.com")),
        (bjensen(), "emails.type", string("work")),
        (
            json!({"emails": [{"value": "B@x"}, {"value": "a@x", "primary": true}]}),
            "emails",
            string("a@x"),
        ),
        (
            json!({"emails": [{"value": "B@x"}, {"value": "a@x"}]}),
            "emails.value",
            string("b@x"),
        ),
        // instants, booleans
        (
            bjensen(),
            "meta.lastModified",
            Some(SortValue::DateTime(1_305_261_754_000_000_000)),
        ),
        (bjensen(), "active", Some(SortValue::Bool(true))),
        (
            bjensen(),
            "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:department",
            string("tour operations"),
        ),
        // absent or not sortable
        (jomalley(), "title", None),
        (bjensen(), "name", None),
        (bjensen(), "favoriteColor", None),
        (json!({"emails": []}), "emails", None),
    ];
    for (resource, path, expected) in table {
        assert_eq!(key(&resource, path), expected, "sort key {path}");
    }
    // Instants order by time, not text; numbers numerically.
    let early = json!({"meta": {"lastModified": "2011-05-13T06:00:00+02:00"}});
    let late = json!({"meta": {"lastModified": "2011-05-13T05:00:00Z"}});
    assert!(key(&early, "meta.lastModified") < key(&late, "meta.lastModified"));
    assert!(SortValue::Number(2.0) < SortValue::Number(10.0));
    assert!(SortValue::String("a".into()) < SortValue::String("b".into()));
    assert!(SortValue::Bool(false) < SortValue::Bool(true));
}

// ---- projection ------------------------------------------------------------------------

/// Projects bjensen (or `resource`) and compares the top-level keys and
/// selected sub-values.
fn check_project(attributes: &str, excluded: &str, expected_keys: &[&str], probes: &[(&str, Value)]) {
    let s = schemas();
    let list = |l: &str| (!l.is_empty()).then(|| parse_attr_list(l).unwrap_or_else(|e| panic!("{l}: {e}")));
    let (a, x) = (list(attributes), list(excluded));
    let out = project(&bjensen(), s.resource(ResourceKind::User), a.as_deref(), x.as_deref());
    assert_eq!(
        project_owned(bjensen(), s.resource(ResourceKind::User), a.as_deref(), x.as_deref()),
        out,
        "project_owned and project differ for attributes={attributes:?} excludedAttributes={excluded:?}"
    );
    let mut keys: Vec<&str> = out
        .as_object()
        .map(|m| m.keys().map(String::as_str).collect())
        .unwrap_or_default();
    keys.sort_unstable();
    let mut want = expected_keys.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "attributes={attributes:?} excludedAttributes={excluded:?}");
    for (pointer, value) in probes {
        let got = out.pointer(pointer).cloned().unwrap_or(Value::Null);
        assert_eq!(
            &got, value,
            "{pointer} with attributes={attributes:?} excluded={excluded:?}"
        );
    }
}

#[test]
fn projection() {
    let all_but_password = [
        "schemas",
        "id",
        "externalId",
        "userName",
        "name",
        "displayName",
        "nickName",
        "profileUrl",
        "emails",
        "addresses",
        "phoneNumbers",
        "ims",
        "userType",
        "title",
        "preferredLanguage",
        "locale",
        "timezone",
        "active",
        "groups",
        ENTERPRISE_URN,
        "meta",
    ];
    check_project("", "", &all_but_password, &[]);
    // attributes: the named ones plus `id` and `schemas`
    check_project("userName", "", &["schemas", "id", "userName"], &[]);
    check_project("USERNAME,password", "", &["schemas", "id", "userName"], &[]);
    check_project(
        "name.givenName,emails.value",
        "",
        &["schemas", "id", "name", "emails"],
        &[
            ("/name", json!({"givenName": "Barbara"})),
            (
                "/emails",
                json!([{"value": "bjensen@example.com"}, {"value": "babs@jensen.org"}]),
            ),
        ],
    );
    check_project(
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
        "",
        &["schemas", "id", ENTERPRISE_URN],
        &[(
            &format!("/{}", ENTERPRISE_URN.replace('/', "~1")),
            json!({"manager": {"value": "26118915-6090-4610-87e4-49d8ca9f808d"}}),
        )],
    );
    check_project(
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        "",
        &["schemas", "id", ENTERPRISE_URN],
        &[],
    );
    check_project("department", "", &["schemas", "id", ENTERPRISE_URN], &[]);
    check_project(
        "meta.lastModified",
        "",
        &["schemas", "id", "meta"],
        &[("/meta", json!({"lastModified": "2011-05-13T04:42:34Z"}))],
    );
    check_project("favoriteColor", "", &["schemas", "id"], &[]);
    // excludedAttributes: never `id` or `schemas`
    let without =
        |drop: &[&str]| -> Vec<&str> { all_but_password.iter().copied().filter(|k| !drop.contains(k)).collect() };
    check_project("", "emails,groups,id,schemas", &without(&["emails", "groups"]), &[]);
    check_project(
        "",
        "name.givenName",
        &all_but_password,
        &[("/name/givenName", Value::Null), ("/name/familyName", json!("Jensen"))],
    );
    check_project(
        "",
        "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User",
        &without(&[ENTERPRISE_URN]),
        &[],
    );
    check_project(
        "",
        "emails.type,emails.primary,emails.value",
        &without(&["emails"]),
        &[],
    );
    // both: attributes first, then exclusions
    check_project(
        "name,userName",
        "name.formatted,userName",
        &["schemas", "id", "name"],
        &[("/name/formatted", Value::Null)],
    );
}

#[test]
fn projection_of_groups() {
    let s = schemas();
    let gs = s.resource(ResourceKind::Group);
    let excluded = parse_attr_list("members").unwrap_or_else(|e| panic!("{e}"));
    let out = project(&group(), gs, None, Some(&excluded));
    assert_eq!(
        project(&group(), gs, None, None),
        project_owned(group(), gs, None, None)
    );
    assert!(
        out.get("members").is_none() && out.get("displayName").is_some(),
        "{out}"
    );
    let only = parse_attr_list("members.value").unwrap_or_else(|e| panic!("{e}"));
    let out = project(&group(), gs, Some(&only), None);
    assert_eq!(
        out,
        json!({"schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"], "id": "g1",
               "members": [{"value": "2819c223-7f76-453a-919d-413861904646"}, {"value": "902c246b"}]})
    );
}

// ---- deterministic fuzz smoke test ---------------------------------------------------------

use crate::test_util::Rng;

const TOKENS: &[&str] = &[
    "userName",
    "emails",
    "emails.value",
    "name.familyName",
    "meta.lastModified",
    "active",
    "members",
    "title",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value",
    "urn:ietf:params:scim:schemas:core:2.0:User:userName",
    "schemas",
    "type",
    "value",
    "primary",
    "$ref",
    "x",
    " eq ",
    " ne ",
    " co ",
    " sw ",
    " ew ",
    " gt ",
    " lt ",
    " ge ",
    " le ",
    " pr",
    " and ",
    " or ",
    "not",
    " not ",
    "(",
    ")",
    "[",
    "]",
    ".",
    "\"",
    "\"work\"",
    "\"2011-05-13T04:42:34Z\"",
    "true",
    "false",
    "null",
    "42",
    "-1.5e3",
    "\\",
    "\\u00e9",
    " ",
    "  ",
    "é",
    "bob",
    ":",
    "urn:",
    "\u{0}",
    "\t",
];

const SEEDS: &[&str] = &[
    "userName eq \"bjensen\"",
    "emails[type eq \"work\" and value co \"@example.com\"] or ims[type eq \"xmpp\" and value co \"@foo.com\"]",
    "userType ne \"Employee\" and not (emails co \"example.com\" or emails.value co \"example.org\")",
    "emails[type eq \"work\"].value eq \"x\"",
    "meta.lastModified gt \"2011-05-13T04:42:34Z\"",
    "urn:ietf:params:scim:schemas:extension:enterprise:2.0:User:manager.value eq bob",
];

fn random_filter(rng: &mut Rng) -> String {
    match rng.below(4) {
        // token soup
        0 => (0..rng.below(40)).map(|_| rng.pick(TOKENS)).collect(),
        // a seed with random byte edits
        1 => {
            let mut bytes = rng.pick(SEEDS).as_bytes().to_vec();
            for _ in 0..=rng.below(6) {
                let at = rng.below(bytes.len() + 1);
                match rng.below(3) {
                    0 if at < bytes.len() => {
                        bytes.remove(at);
                    }
                    1 => bytes.insert(at, (rng.next() & 0xff) as u8),
                    _ => {
                        let t = rng.pick(TOKENS).as_bytes();
                        bytes.splice(at..at, t.iter().copied());
                    }
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        // deep nesting
        2 => {
            let n = rng.below(3 * MAX_DEPTH);
            let open = rng.pick(&["(", "not (", "not(", "emails["]);
            format!(
                "{}{}{}",
                open.repeat(n),
                rng.pick(SEEDS),
                rng.pick(&[")", "]"]).repeat(n)
            )
        }
        // long chains, now and then very long
        _ => {
            let n = if rng.below(50) == 0 {
                rng.below(3000)
            } else {
                rng.below(100)
            };
            let op = rng.pick(&[" and ", " or "]);
            vec![rng.pick(SEEDS); n + 1].join(op)
        }
    }
}

#[test]
fn fuzz_smoke() {
    let s = schemas();
    let us = s.resource(ResourceKind::User);
    let gs = s.resource(ResourceKind::Group);
    let resources = [
        bjensen(),
        jomalley(),
        nobody(),
        group(),
        json!(null),
        json!([1, 2]),
        json!({"emails": "x"}),
    ];
    let mut rng = Rng::new(0x5eed_f117);
    let started = Instant::now();
    let (mut ok, mut err) = (0, 0);
    for _ in 0..4000 {
        let input = random_filter(&mut rng);
        match parse_filter(&input) {
            Ok(f) => {
                ok += 1;
                for r in &resources {
                    f.matches(r, us);
                    f.matches(r, gs);
                }
                let _ = f.validate(us);
                f.candidate_equalities();
                f.equality_lookup();
                // The canonical form parses back to the same filter when it
                // fits the limits (it adds parentheses).
                if let Ok(again) = parse_filter(&f.to_string()) {
                    assert_eq!(again, f, "round trip of {input:?}");
                }
            }
            Err(e) => {
                err += 1;
                assert_eq!(e.scim_type, Some(ScimType::InvalidFilter), "{input:?}: {e}");
            }
        }
        if let Ok(p) = parse_path(&input) {
            assert!(parse_path(&p.to_string()).is_ok(), "path round trip of {input:?}");
        }
        let _ = parse_attr_list(&input);
        for r in &resources {
            if let Ok(p) = AttrPath::parse(&input) {
                sort_key(r, &p, us);
                project(r, us, Some(std::slice::from_ref(&p)), Some(std::slice::from_ref(&p)));
            }
        }
    }
    assert!(
        ok > 100 && err > 100,
        "the generator should produce both: {ok} parsed, {err} refused"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}
