//! Decision tests: one table of subjects and requests against one fixture
//! policy, checking the outcome, the deciding rule's line and the roles.

use crate::{GroupRef, Policy, Reason, Request, RouteSet, Source, Subject, compile};

const FIXTURE: &str = r#"
[roles.reader]
allow = [
  { route = "es", methods = ["GET", "post"], paths = ["/logs-*/_search", "/logs-*/_count"] },
  { route = "kibana", paths = ["/**"] },
]
deny = [{ route = "es", methods = ["DELETE"], paths = ["/**"] }]

[roles.no-security]
deny = [{ route = "es", paths = ["/_security/**"] }]

[roles.writer]
allow = [{ route = "es", methods = ["PUT", "POST"], paths = ["/logs-*/_doc/*", "/logs-*/_bulk"] }]

[roles.admin]
allow = [{ route = "es", paths = ["/**"] }]

[roles.ext]
allow = [{ route = "es", methods = ["PROPFIND"], paths = ["/dav/*"] }]

[groups]
"readers" = ["reader", "no-security"]
"writers" = ["writer"]
"okta:admins" = ["admin"]
"ext" = ["ext"]

[users]
"Breakglass@Example.com" = ["admin"]

[public]
allow = [
  { route = "kibana", paths = ["/ui/favicons/*"] },
  { route = "es", methods = ["GET"], paths = ["/public/**"] },
]
deny = [{ route = "es", paths = ["/public/secret"] }]
"#;

fn policy() -> Policy {
    compile(
        &[Source::new("fixture.toml", FIXTURE)],
        &RouteSet::new(["es", "kibana"]),
    )
    .unwrap_or_else(|e| panic!("fixture does not compile: {e:?}"))
    .policy
}

/// The 1-based line of the only fixture line containing `marker`.
fn line_of(marker: &str) -> u32 {
    let lines: Vec<usize> = FIXTURE
        .lines()
        .enumerate()
        .filter(|(_, l)| l.contains(marker))
        .map(|(i, _)| i + 1)
        .collect();
    assert_eq!(lines.len(), 1, "marker {marker:?} must be unique");
    u32::try_from(lines[0]).unwrap_or(u32::MAX)
}

/// Who asks.
#[derive(Debug, Clone, Copy)]
enum Who<'a> {
    /// `decide` with a user name (or none) and groups (`"name"` or `"client:name"`).
    User(Option<&'a str>, &'a [&'a str]),
    /// `decide_public`.
    Public,
}

/// The expected outcome; rules are identified by a unique marker on their line.
#[derive(Debug, Clone, Copy)]
enum Want<'a> {
    Allowed(&'a str),
    Denied(&'a str),
    Public(&'a str),
    NoRuleMatched,
}

fn check(policy: &Policy, who: Who<'_>, route: &str, method: &str, path: &str, want: Want<'_>, roles: &[&str]) {
    let req = Request { route, method, path };
    let decision = match who {
        Who::User(user, groups) => {
            let groups: Vec<GroupRef<'_>> = groups.iter().map(|g| GroupRef::parse(g)).collect();
            let subject = Subject {
                user_name: user,
                groups: &groups,
            };
            policy.decide(&subject, &req)
        }
        Who::Public => policy.decide_public(&req),
    };
    let context = format!("{who:?} {method} {route}{path}: got {:?}", decision.reason);
    let (allowed, line) = match (want, decision.reason) {
        (Want::Allowed(m), Reason::Allowed { rule }) => (true, Some((m, rule))),
        (Want::Denied(m), Reason::Denied { rule }) => (false, Some((m, rule))),
        (Want::Public(m), Reason::Public { rule }) => (true, Some((m, rule))),
        (Want::NoRuleMatched, Reason::NoRuleMatched) => (false, None),
        _ => panic!("{context}, want {want:?}"),
    };
    assert_eq!(decision.allowed, allowed, "{context}");
    if let Some((marker, rule)) = line {
        assert_eq!(rule.location().line, line_of(marker), "{context}");
        assert_eq!(rule.location().path.to_str(), Some("fixture.toml"), "{context}");
    }
    let got: Vec<&str> = policy.role_names(&decision.roles).collect();
    assert_eq!(got, roles, "{context}: roles");
}

/// Who, route, method, path, expected outcome, expected role names.
type Case<'a> = (Who<'a>, &'a str, &'a str, &'a str, Want<'a>, &'a [&'a str]);

#[test]
fn decisions() {
    use Want::*;
    const READERS: Who<'_> = Who::User(Some("alice"), &["scim:readers"]);
    const SEARCH: &str = "/logs-*/_search";
    const READER_ROLES: &[&str] = &["reader", "no-security"];
    let table: &[Case<'_>] = &[
        // patterns and methods
        (READERS, "es", "GET", "/logs-1/_search", Allowed(SEARCH), READER_ROLES),
        (READERS, "es", "post", "/logs-1/_count", Allowed(SEARCH), READER_ROLES),
        (READERS, "es", "Get", "/logs-/_search", Allowed(SEARCH), READER_ROLES),
        (READERS, "es", "PUT", "/logs-1/_search", NoRuleMatched, READER_ROLES),
        (READERS, "es", "GET", "/metrics-1/_search", NoRuleMatched, READER_ROLES),
        (READERS, "es", "GET", "/logs-1/_search/x", NoRuleMatched, READER_ROLES),
        (
            READERS,
            "kibana",
            "DELETE",
            "/app/anything/at/all",
            Allowed("route = \"kibana\", paths = [\"/**\"]"),
            READER_ROLES,
        ),
        (
            READERS,
            "kibana",
            "GET",
            "/",
            Allowed("route = \"kibana\", paths = [\"/**\"]"),
            READER_ROLES,
        ),
        // deny wins, within a role and across roles
        (
            READERS,
            "es",
            "DELETE",
            "/logs-1",
            Denied("methods = [\"DELETE\"]"),
            READER_ROLES,
        ),
        (
            READERS,
            "es",
            "GET",
            "/_security/user",
            Denied("/_security/**"),
            READER_ROLES,
        ),
        (
            Who::User(None, &["okta:admins", "readers"]),
            "es",
            "DELETE",
            "/logs-1",
            Denied("methods = [\"DELETE\"]"),
            &["reader", "no-security", "admin"],
        ),
        (
            Who::User(None, &["okta:admins"]),
            "es",
            "DELETE",
            "/logs-1",
            Allowed("route = \"es\", paths = [\"/**\"]"),
            &["admin"],
        ),
        // qualified vs unqualified group keys; exact display names
        (
            Who::User(None, &["other:admins"]),
            "es",
            "GET",
            "/x",
            NoRuleMatched,
            &[],
        ),
        (Who::User(None, &["admins"]), "es", "GET", "/x", NoRuleMatched, &[]),
        (Who::User(None, &["okta:Admins"]), "es", "GET", "/x", NoRuleMatched, &[]),
        (
            Who::User(None, &["okta:readers"]),
            "es",
            "GET",
            "/logs-1/_search",
            Allowed(SEARCH),
            READER_ROLES,
        ),
        (
            Who::User(None, &["readers"]),
            "es",
            "GET",
            "/logs-1/_search",
            Allowed(SEARCH),
            READER_ROLES,
        ),
        (
            Who::User(None, &["Readers"]),
            "es",
            "GET",
            "/logs-1/_search",
            NoRuleMatched,
            &[],
        ),
        (
            Who::User(None, &["readers "]),
            "es",
            "GET",
            "/logs-1/_search",
            NoRuleMatched,
            &[],
        ),
        // users: direct grants, case-insensitive
        (
            Who::User(Some("breakglass@example.com"), &[]),
            "es",
            "DELETE",
            "/x",
            Allowed("route = \"es\", paths = [\"/**\"]"),
            &["admin"],
        ),
        (
            Who::User(Some("BREAKGLASS@EXAMPLE.COM"), &[]),
            "es",
            "DELETE",
            "/x",
            Allowed("route = \"es\", paths = [\"/**\"]"),
            &["admin"],
        ),
        (
            Who::User(Some("breakglass@example.org"), &[]),
            "es",
            "DELETE",
            "/x",
            NoRuleMatched,
            &[],
        ),
        (
            Who::User(Some("breakglass"), &[]),
            "es",
            "DELETE",
            "/x",
            NoRuleMatched,
            &[],
        ),
        // extension methods
        (
            Who::User(None, &["ext"]),
            "es",
            "PROPFIND",
            "/dav/x",
            Allowed("PROPFIND"),
            &["ext"],
        ),
        (
            Who::User(None, &["ext"]),
            "es",
            "propfind",
            "/dav/x",
            Allowed("PROPFIND"),
            &["ext"],
        ),
        (
            Who::User(None, &["ext"]),
            "es",
            "GET",
            "/dav/x",
            NoRuleMatched,
            &["ext"],
        ),
        (
            Who::User(None, &["ext"]),
            "es",
            "PROPPATCH",
            "/dav/x",
            NoRuleMatched,
            &["ext"],
        ),
        // writers: `*` is exactly one segment
        (
            Who::User(None, &["writers"]),
            "es",
            "PUT",
            "/logs-1/_doc/1",
            Allowed("_bulk"),
            &["writer"],
        ),
        (
            Who::User(None, &["writers"]),
            "es",
            "PUT",
            "/logs-1/_doc/1/x",
            NoRuleMatched,
            &["writer"],
        ),
        (
            Who::User(None, &["writers"]),
            "es",
            "GET",
            "/logs-1/_bulk",
            NoRuleMatched,
            &["writer"],
        ),
        // public: no identity needed, public deny wins over public allow
        (
            Who::Public,
            "kibana",
            "GET",
            "/ui/favicons/a.png",
            Public("/ui/favicons/*"),
            &[],
        ),
        (Who::Public, "kibana", "GET", "/ui/favicons/a/b.png", NoRuleMatched, &[]),
        (Who::Public, "kibana", "GET", "/app/home", NoRuleMatched, &[]),
        (Who::Public, "es", "GET", "/public/x", Public("/public/**"), &[]),
        (Who::Public, "es", "POST", "/public/x", NoRuleMatched, &[]),
        (
            Who::Public,
            "es",
            "GET",
            "/public/secret",
            Denied("/public/secret"),
            &[],
        ),
        (
            Who::User(None, &[]),
            "kibana",
            "GET",
            "/ui/favicons/a.png",
            Public("/ui/favicons/*"),
            &[],
        ),
        (Who::User(None, &[]), "es", "GET", "/public/secret", NoRuleMatched, &[]),
        // public first: a role's deny does not take public access away
        (
            READERS,
            "kibana",
            "GET",
            "/ui/favicons/a.png",
            Public("/ui/favicons/*"),
            READER_ROLES,
        ),
        (READERS, "es", "GET", "/public/secret", NoRuleMatched, READER_ROLES),
        (
            Who::User(None, &["okta:admins"]),
            "es",
            "GET",
            "/public/secret",
            Allowed("route = \"es\", paths = [\"/**\"]"),
            &["admin"],
        ),
        // default deny
        (Who::User(None, &[]), "es", "GET", "/logs-1/_search", NoRuleMatched, &[]),
        (READERS, "nope", "GET", "/logs-1/_search", NoRuleMatched, READER_ROLES),
        (Who::Public, "nope", "GET", "/", NoRuleMatched, &[]),
        (READERS, "es", "GET", "", NoRuleMatched, READER_ROLES),
        (READERS, "es", "", "/logs-1/_search", NoRuleMatched, READER_ROLES),
    ];
    let policy = policy();
    for &(who, route, method, path, want, roles) in table {
        check(&policy, who, route, method, path, want, roles);
    }
}

#[test]
fn empty_policy_denies_everything() {
    let policy = Policy::empty();
    check(
        &policy,
        Who::User(Some("a"), &["g"]),
        "es",
        "GET",
        "/",
        Want::NoRuleMatched,
        &[],
    );
    check(&policy, Who::Public, "es", "GET", "/", Want::NoRuleMatched, &[]);
}

#[test]
fn reason_and_rule_display() {
    let policy = policy();
    let groups = [GroupRef::new("scim", "readers")];
    let subject = Subject::new("alice", &groups);
    let req = Request {
        route: "es",
        method: "DELETE",
        path: "/logs-1",
    };
    let decision = policy.decide(&subject, &req);
    let line = line_of("methods = [\"DELETE\"]");
    assert_eq!(
        decision.reason.to_string(),
        format!("denied by deny rule of role \"reader\" at fixture.toml:{line}:9")
    );
    let rule = decision.reason.rule().unwrap_or_else(|| panic!("no rule"));
    assert_eq!(rule.methods(), Some(&["DELETE".to_owned()][..]));
    assert_eq!(rule.paths(), &["/**".to_owned()]);
    assert_eq!(rule.route(), "es");
    assert_eq!(rule.role(), Some("reader"));
}

#[test]
fn unqualified_group_grants_are_listed() {
    let text = "[roles.r]\nallow = [{ route = \"es\", paths = [\"/\"] }]\n[groups]\n\"b\" = [\"r\"]\n\"okta:c\" = [\"r\"]\n\"a\" = [\"r\"]\n";
    let compiled = crate::compile(&[crate::Source::new("p.toml", text)], &crate::RouteSet::new(["es"]))
        .unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(compiled.policy.unqualified_groups(), vec!["a", "b"]);
}
