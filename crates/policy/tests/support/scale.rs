//! A synthetic large policy shared by the `decide` benchmark and the
//! allocation test: 1,000 rules in 200 roles over 4 routes, and a user in 60
//! groups (plus a direct grant) that hold 50 of those roles. It is generated
//! as TOML text so it goes through the real parser and compiler. It does not
//! measure anything itself.

use std::fmt::Write as _;

use portcullis_policy::{Group, Policy, Request, RouteSet, Source, compile};

pub(crate) const ROUTES: [&str; 4] = ["elasticsearch", "kibana", "grafana", "prometheus"];
const ROLES: usize = 200;
/// Roles 0..50 are the user's.
const USER_ROLES: usize = 50;

/// Route of rule `j` of role `i`.
fn route(i: usize, j: usize) -> &'static str {
    ROUTES[(i + j) % ROUTES.len()]
}

fn policy_text() -> String {
    let mut t = String::new();
    for i in 0..ROLES {
        // 4 allow rules and 1 deny rule per role: 1,000 rules.
        let _ = writeln!(t, "[roles.role-{i:03}]\nallow = [");
        let _ = writeln!(
            t,
            "  {{ route = \"{}\", methods = [\"GET\", \"POST\"], paths = [\"/idx-{i}-*/_search\", \"/idx-{i}-*/_count\"] }},",
            route(i, 0)
        );
        let _ = writeln!(
            t,
            "  {{ route = \"{}\", methods = [\"PUT\"], paths = [\"/idx-{i}-*/_doc/*\"] }},",
            route(i, 1)
        );
        let _ = writeln!(t, "  {{ route = \"{}\", paths = [\"/app-{i}/**\"] }},", route(i, 2));
        let _ = writeln!(
            t,
            "  {{ route = \"{}\", methods = [\"GET\"], paths = [\"/api/**/team-{i}/*\"] }},",
            route(i, 3)
        );
        let _ = writeln!(
            t,
            "]\ndeny = [{{ route = \"{}\", methods = [\"DELETE\"], paths = [\"/idx-{i}-*\"] }}]\n",
            route(i, 0)
        );
    }
    t.push_str("[groups]\n");
    for i in 0..ROLES {
        let _ = writeln!(t, "\"team-{i:03}\" = [\"role-{i:03}\"]");
        let _ = writeln!(t, "\"okta:team-{i:03}-qualified\" = [\"role-{i:03}\"]");
    }
    t.push_str("[users]\n\"bench@example.com\" = [\"role-000\"]\n");
    t.push_str("[public]\nallow = [{ route = \"kibana\", paths = [\"/ui/favicons/*\"] }]\n");
    t
}

/// The compiled policy and the user's 60 groups (50 granting roles, 10 not).
pub(crate) fn fixture() -> (Policy, Vec<Group>) {
    let compiled = compile(&[Source::new("scale.toml", policy_text())], &RouteSet::new(ROUTES))
        .unwrap_or_else(|errors| panic!("scale policy does not compile: {errors:?}"));
    assert_eq!(compiled.policy.rule_count(), 1_001);
    let mut groups: Vec<Group> = (0..USER_ROLES)
        .map(|i| Group {
            client: Some("okta".into()),
            display_name: format!("team-{i:03}"),
        })
        .collect();
    groups.extend((0..10).map(|i| Group {
        client: Some("okta".into()),
        display_name: format!("unrelated-{i}"),
    }));
    (compiled.policy, groups)
}

/// The user name with a direct grant.
pub(crate) const USER: &str = "Bench@Example.com";

/// Allowed by the user's *last* role (role 49, whose search rule is on
/// route 49 % 4 = "kibana"), after the public rules, all 50 roles' deny rules
/// and the other roles' allow rules for the route were tried.
pub(crate) const ALLOWED: Request<'static> = Request {
    route: "kibana",
    method: "GET",
    path: "/idx-49-2024.06/_search",
};

/// Matches no rule: every rule of the user's roles on the route is tried.
pub(crate) const NO_MATCH: Request<'static> = Request {
    route: "kibana",
    method: "GET",
    path: "/idx-999-2024.06/_search",
};

/// Denied by a deny rule of the user's last role.
pub(crate) const DENIED: Request<'static> = Request {
    route: "kibana",
    method: "DELETE",
    path: "/idx-49-2024.06",
};

/// Public.
pub(crate) const PUBLIC: Request<'static> = Request {
    route: "kibana",
    method: "GET",
    path: "/ui/favicons/favicon.svg",
};
