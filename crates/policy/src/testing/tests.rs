//! Tests for policy-test files: parsing (with exact error locations), the
//! runner and its report, URL resolution, and the shipped example policies.

use std::path::PathBuf;

use super::{HostResolver, Target, split_url};
use crate::{Group, NormalizeOptions, RouteSet, Source, compile, load_dir, parse_tests, read_tests_dir, run_tests};

/// Parses one test file and asserts the exact error messages (empty = ok).
fn check_parse(text: &str, expected: &[&str]) {
    let got: Vec<String> = match parse_tests(&[Source::new("t.toml", text)]) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(got, expected, "parsing {text:?}");
}

#[test]
fn parse_errors() {
    let table: &[(&str, &[&str])] = &[
        ("[[case]]\nmethod = \"GET\"\nurl = \"/\"\nexpect = \"allow\"\n", &[]),
        (
            "[[case]]\nmethod = \"GET\"\nurl = \"/\"\nexpect = \"allow\"\ngroups = [\"a\", \"c:b\"]\nuser = \"u\"\nroute = \"r\"\nname = \"n\"\n",
            &[],
        ),
        ("", &[]),
        (
            "[[cases]]\n",
            &["t.toml:1:3: unknown key \"cases\" at top level of a test file (expected one of: case)"],
        ),
        (
            "[[case]]\nmethod = \"GET\"\nurl = \"/\"\nexpect = \"allowed\"\n",
            &["t.toml:4:10: bad expect \"allowed\" (expected \"allow\" or \"deny\")"],
        ),
        (
            "[[case]]\nmethod = \"GET\"\nexpect = \"deny\"\nuser = \"u\"\nusr = \"x\"\n",
            &[
                "t.toml:1:1: missing required key \"url\" in test case",
                "t.toml:5:1: unknown key \"usr\" in test case (expected one of: name, user, groups, method, url, route, expect)",
            ],
        ),
        (
            "[[case]]\nmethod = \"G T\"\nurl = \"/\"\nexpect = \"deny\"\ngroups = [\":x\", 3]\n",
            &[
                "t.toml:2:10: bad method \"G T\": not a valid http method token",
                "t.toml:5:11: bad group \":x\": client name before \":\" is empty",
                "t.toml:5:17: each entry of \"groups\" must be a string, found integer",
            ],
        ),
        (
            "case = { method = \"GET\" }\n",
            &["t.toml:1:8: \"case\" must be an array of tables, found table"],
        ),
        (
            "[[case]]\nmethod = \"GET\"\nurl = /\n",
            &["t.toml:3:7: invalid toml: string values must be quoted, expected literal string"],
        ),
    ];
    for (text, expected) in table {
        check_parse(text, expected);
    }
}

const POLICY: &str = r#"
[roles.reader]
allow = [{ route = "es", methods = ["GET"], paths = ["/logs-*/_search"] }]
deny = [{ route = "es", paths = ["/_security/**"] }]
[groups]
"readers" = ["reader"]
[users]
"root@x" = ["reader"]
[public]
allow = [{ route = "web", paths = ["/favicon.ico"] }]
"#;

/// Runs `cases` against [`POLICY`] and asserts the exact report text.
fn check_run(cases: &str, expected: &str) {
    let compiled =
        compile(&[Source::new("p.toml", POLICY)], &RouteSet::new(["es", "web"])).unwrap_or_else(|e| panic!("{e:?}"));
    let cases = parse_tests(&[Source::new("t.toml", cases)]).unwrap_or_else(|e| panic!("{e:?}"));
    let resolver = HostResolver::new([("es.x", "es"), ("web.x", "web")]);
    let report = run_tests(
        &compiled.policy,
        &cases,
        |url, route| resolver.resolve(url, route),
        |user| match user {
            "alice" => Ok(vec![Group::parse("okta:readers")]),
            "bob" => Ok(vec![]),
            _ => Err(format!("no such user {user:?}")),
        },
    );
    assert_eq!(report.to_string(), expected);
    assert_eq!(report.success(), report.failed() == 0);
}

#[test]
fn runner() {
    let table: &[(&str, &str)] = &[
        ("", "0 passed, 0 failed"),
        (
            "[[case]]\nuser = \"alice\"\nmethod = \"get\"\nurl = \"https://es.x/logs-1/_search\"\nexpect = \"allow\"\n",
            "1 passed, 0 failed",
        ),
        (
            "[[case]]\nname = \"bob reads\"\nuser = \"bob\"\nmethod = \"GET\"\nurl = \"https://es.x/logs-1/_search\"\nexpect = \"allow\"\n",
            "FAIL t.toml:1:1: bob reads (GET https://es.x/logs-1/_search): expected allow, got deny: no rule matched (default deny); roles: (none)\n0 passed, 1 failed",
        ),
        (
            "[[case]]\ngroups = [\"readers\"]\nmethod = \"GET\"\nurl = \"https://es.x/logs-1/../_security/x\"\nexpect = \"allow\"\n",
            "FAIL t.toml:1:1: GET https://es.x/logs-1/../_security/x: expected allow, got deny: denied by deny rule of role \"reader\" at p.toml:4:9; roles: reader\n0 passed, 1 failed",
        ),
        (
            "[[case]]\ngroups = [\"readers\"]\nmethod = \"GET\"\nurl = \"https://es.x/logs-1/_search\"\nexpect = \"deny\"\n",
            "FAIL t.toml:1:1: GET https://es.x/logs-1/_search: expected deny, got allow: allowed by allow rule of role \"reader\" at p.toml:3:10; roles: reader\n0 passed, 1 failed",
        ),
        // user plus explicit groups: no directory lookup, [users] still applies
        (
            "[[case]]\nuser = \"ROOT@x\"\ngroups = []\nmethod = \"GET\"\nurl = \"https://es.x/logs-1/_search\"\nexpect = \"allow\"\n",
            "1 passed, 0 failed",
        ),
        // anonymous: public rules only
        (
            "[[case]]\nmethod = \"GET\"\nurl = \"https://web.x/favicon.ico\"\nexpect = \"allow\"\n[[case]]\nmethod = \"GET\"\nurl = \"https://es.x/logs-1/_search\"\nexpect = \"deny\"\n",
            "2 passed, 0 failed",
        ),
        // a path the proxy would refuse counts as a denial
        (
            "[[case]]\ngroups = [\"readers\"]\nmethod = \"GET\"\nurl = \"https://es.x/logs-1%2f_search\"\nexpect = \"deny\"\n[[case]]\ngroups = [\"readers\"]\nmethod = \"GET\"\nurl = \"https://es.x/logs-1%2f_search\"\nexpect = \"allow\"\n",
            "FAIL t.toml:6:1: GET https://es.x/logs-1%2f_search: expected allow, got deny: bad path: encoded slash (%2F) at byte 7\n1 passed, 1 failed",
        ),
        // cases that cannot run fail with the reason
        (
            "[[case]]\nuser = \"mallory\"\nmethod = \"GET\"\nurl = \"https://es.x/\"\nexpect = \"deny\"\n[[case]]\ngroups = []\nmethod = \"GET\"\nurl = \"https://nowhere.x/\"\nexpect = \"deny\"\n[[case]]\ngroups = []\nmethod = \"GET\"\nurl = \"/logs\"\nexpect = \"deny\"\n",
            "FAIL t.toml:1:1: GET https://es.x/: expected deny, got error: no such user \"mallory\"\nFAIL t.toml:6:1: GET https://nowhere.x/: expected deny, got error: no route for host \"nowhere.x\"\nFAIL t.toml:11:1: GET /logs: expected deny, got error: cannot resolve a route for \"/logs\": no host\n0 passed, 3 failed",
        ),
        // an explicit route wins over the host
        (
            "[[case]]\ngroups = [\"readers\"]\nmethod = \"GET\"\nurl = \"/logs-1/_search\"\nroute = \"es\"\nexpect = \"allow\"\n[[case]]\ngroups = [\"readers\"]\nmethod = \"GET\"\nurl = \"https://es.x/logs-1/_search\"\nroute = \"web\"\nexpect = \"deny\"\n",
            "2 passed, 0 failed",
        ),
    ];
    for &(cases, expected) in table {
        check_run(cases, expected);
    }
}

fn check_resolve(url: &str, route: Option<&str>, expected: Result<(&str, &str), &str>) {
    let resolver = HostResolver::new([("es.example.com", "es")]);
    let got = resolver.resolve(url, route);
    let expected = expected
        .map(|(route, path)| Target {
            route: route.to_owned(),
            path: path.to_owned(),
            normalize: NormalizeOptions::default(),
        })
        .map_err(str::to_owned);
    assert_eq!(got, expected, "resolving {url:?} with route {route:?}");
}

/// URL, explicit route, and the expected (route, path) or error.
type Resolve<'a> = (&'a str, Option<&'a str>, Result<(&'a str, &'a str), &'a str>);

#[test]
fn resolving() {
    let table: &[Resolve<'_>] = &[
        ("https://es.example.com/a/b?q=1#f", None, Ok(("es", "/a/b"))),
        ("https://ES.example.com:9200/a", None, Ok(("es", "/a"))),
        ("http://user:pw@es.example.com/a", None, Ok(("es", "/a"))),
        ("https://es.example.com", None, Ok(("es", "/"))),
        ("https://es.example.com?q", None, Ok(("es", "/"))),
        ("https://es.example.com/%2e%2e/x", None, Ok(("es", "/%2e%2e/x"))),
        ("/a/b?x", Some("kibana"), Ok(("kibana", "/a/b"))),
        ("https://other.example.com/a", Some("es"), Ok(("es", "/a"))),
        (
            "https://other.example.com/a",
            None,
            Err("no route for host \"other.example.com\""),
        ),
        ("/a", None, Err("cannot resolve a route for \"/a\": no host")),
    ];
    for &(url, route, expected) in table {
        check_resolve(url, route, expected);
    }
    assert_eq!(split_url("https://[::1]:8080/x"), (Some("[::1]"), "/x"));
}

/// The example policies in `policies/` compile without warnings against
/// the routes they are written for, and every case in `policies/tests/`
/// passes.
#[test]
fn example_policies_pass_their_tests() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies");
    let routes = RouteSet::new(["elasticsearch", "kibana"]);
    let compiled = load_dir(&dir, &routes).unwrap_or_else(|errors| {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("example policies do not compile:\n{}", text.join("\n"))
    });
    let warnings: Vec<String> = compiled.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(warnings, Vec::<String>::new(), "example policy warnings");
    let cases = read_tests_dir(&dir.join("tests")).unwrap_or_else(|errors| {
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        panic!("example tests do not parse:\n{}", text.join("\n"))
    });
    assert!(cases.len() >= 15, "only {} example cases", cases.len());
    assert!(
        cases.iter().filter(|c| c.expect == crate::Expect::Deny).count() >= 5,
        "example cases should include denials"
    );
    let resolver = HostResolver::new([("es.example.com", "elasticsearch"), ("kibana.example.com", "kibana")]);
    let report = run_tests(
        &compiled.policy,
        &cases,
        |url, route| resolver.resolve(url, route),
        |user| Err(format!("no directory in unit tests (user {user:?})")),
    );
    assert!(report.success(), "{report}");
    assert_eq!(report.summary(), format!("{} passed, 0 failed", cases.len()));
}
