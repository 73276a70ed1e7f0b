//! Compiler tests: exact `file:line:col: message` errors, warnings, and how
//! several files merge.

use crate::{GroupRef, RouteSet, Source, Subject, compile};

fn sources(files: &[(&str, &str)]) -> Vec<Source> {
    files.iter().map(|(path, text)| Source::new(*path, *text)).collect()
}

fn routes() -> RouteSet {
    RouteSet::new(["elasticsearch", "kibana"])
}

/// Files (path, text) and the exact messages they produce.
type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);

/// Compiles `files` and asserts the exact list of error messages.
fn check_errors(files: &[(&str, &str)], expected: &[&str]) {
    let got: Vec<String> = match compile(&sources(files), &routes()) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.iter().map(ToString::to_string).collect(),
    };
    assert_eq!(got, expected, "errors for {files:#?}");
}

const ROLES: &str = r#"[roles.es-reader]
allow = [{ route = "elasticsearch", paths = ["/**"] }]

[roles.es-admin]
allow = [{ route = "elasticsearch", paths = ["/**"] }]
"#;

#[test]
fn errors() {
    let table: &[Case<'_>] = &[
        // unknown keys, at every level
        (
            &[("p.toml", "[rolez.x]\n")],
            &["p.toml:1:2: unknown key \"rolez\" at top level (expected one of: roles, groups, users, public)"],
        ),
        (
            &[("p.toml", "[roles.x]\nallow = []\nalow = []\n")],
            &["p.toml:3:1: unknown key \"alow\" in role (expected one of: allow, deny)"],
        ),
        (
            &[(
                "p.toml",
                "[roles.x]\nallow = [\n  { route = \"kibana\", path = [\"/\"] },\n]\n",
            )],
            &[
                "p.toml:3:3: missing required key \"paths\" in rule",
                "p.toml:3:23: unknown key \"path\" in rule (expected one of: route, methods, paths)",
            ],
        ),
        (
            &[("p.toml", "[public]\nallow = []\nmethods = []\n")],
            &["p.toml:3:1: unknown key \"methods\" in [public] (expected one of: allow, deny)"],
        ),
        // unknown role, with the defined roles listed in definition order
        (
            &[
                ("policies/a.toml", ROLES),
                (
                    "policies/es.toml",
                    "[groups]\n\"es-readers\" = [\"es-reader\"]\n\"x\" = [\n    \"es-raeder\"]\n",
                ),
            ],
            &["policies/es.toml:4:5: unknown role \"es-raeder\" (defined roles: es-reader, es-admin)"],
        ),
        (
            &[("p.toml", "[users]\n\"a@b\" = [\"admin\"]\n")],
            &["p.toml:2:10: unknown role \"admin\" (no roles are defined)"],
        ),
        // unknown route
        (
            &[(
                "p.toml",
                "[roles.x]\nallow = [{ route = \"elastic\", paths = [\"/\"] }]\n",
            )],
            &["p.toml:2:20: unknown route \"elastic\" (known routes: elasticsearch, kibana)"],
        ),
        // bad patterns: each one reported
        (
            &[(
                "p.toml",
                "[roles.x]\nallow = [{ route = \"kibana\", paths = [\"/a/../b\", \"nope\", \"/ok\", \"/a%2e\"] }]\n",
            )],
            &[
                "p.toml:2:39: bad path pattern \"/a/../b\": dot segment (\".\" or \"..\") never matches a normalized path",
                "p.toml:2:50: bad path pattern \"nope\": must start with \"/\"",
                "p.toml:2:65: bad path pattern \"/a%2e\": \"%\" is not allowed (patterns are matched against normalized paths)",
            ],
        ),
        (
            &[(
                "p.toml",
                "[roles.x]\nallow = [{ route = \"kibana\", paths = [\"/a**\"] }]\n",
            )],
            &["p.toml:2:39: bad path pattern \"/a**\": \"**\" must be a whole segment"],
        ),
        // duplicate role across two files: both locations
        (
            &[("policies/a.toml", ROLES), ("policies/b.toml", "\n[roles.es-admin]\n")],
            &["policies/b.toml:2:8: role \"es-admin\" is already defined at policies/a.toml:4:8"],
        ),
        // bad methods
        (
            &[(
                "p.toml",
                "[roles.x]\nallow = [{ route = \"kibana\", methods = [\"G E T\", \"*\", \"\"], paths = [\"/\"] }]\n",
            )],
            &[
                "p.toml:2:41: bad method \"G E T\": not a valid http method token",
                "p.toml:2:50: bad method \"*\": \"*\" is not a method; omit \"methods\" to match any method",
                "p.toml:2:55: bad method \"\": method name is empty",
            ],
        ),
        (
            &[(
                "p.toml",
                "[roles.x]\nallow = [{ route = \"kibana\", methods = [], paths = [\"/\"] }]\n",
            )],
            &["p.toml:2:40: \"methods\" must not be empty; omit it to match any method"],
        ),
        (
            &[("p.toml", "[roles.x]\nallow = [{ route = \"kibana\", paths = [] }]\n")],
            &["p.toml:2:38: \"paths\" must not be empty"],
        ),
        // wrong types
        (
            &[("p.toml", "[roles.x]\nallow = [{ route = \"kibana\", paths = \"/\" }]\n")],
            &["p.toml:2:38: \"paths\" must be an array of strings, found string"],
        ),
        (
            &[("p.toml", "[roles.x]\nallow = [{ route = 1, paths = [\"/\", 2] }]\n")],
            &[
                "p.toml:2:20: \"route\" must be a string, found integer",
                "p.toml:2:37: each entry of \"paths\" must be a string, found integer",
            ],
        ),
        (
            &[("p.toml", "[roles.x]\nallow = [\"/\"]\n")],
            &["p.toml:2:10: each entry of \"allow\" must be a table, found string"],
        ),
        (
            &[("p.toml", "roles = 1\n")],
            &["p.toml:1:9: \"roles\" must be a table, found integer"],
        ),
        (
            &[("p.toml", "[groups]\ng = \"x\"\n")],
            &["p.toml:2:5: groups.\"g\" must be an array of strings, found string"],
        ),
        // bad group keys and names
        (
            &[(
                "p.toml",
                "[roles.x]\n[groups]\n\":g\" = [\"x\"]\n\"c:\" = [\"x\"]\n\"\" = [\"x\"]\n",
            )],
            &[
                "p.toml:3:1: bad group \":g\": client name before \":\" is empty",
                "p.toml:4:1: bad group \"c:\": display name after \":\" is empty",
                "p.toml:5:1: bad group \"\": group name is empty",
            ],
        ),
        // TOML syntax errors stop that file only; other files are still checked
        (
            &[
                (
                    "a.toml",
                    "[roles.x]\nallow = [{ route = \"kibana\" paths = [\"/\"] }]\n",
                ),
                ("b.toml", "[roles.y]\nallow = [{ route = \"nope\", paths = [\"/\"] }]\n"),
            ],
            &[
                "a.toml:2:29: invalid toml: missing comma between key-value pairs, expected `,`",
                "b.toml:2:20: unknown route \"nope\" (known routes: elasticsearch, kibana)",
            ],
        ),
        (
            &[("a.toml", "[roles.x]\n[roles.x]\n")],
            &["a.toml:2:8: invalid toml: duplicate key"],
        ),
        // columns count characters, not bytes
        (
            &[(
                "p.toml",
                "[roles.\"é\"]\nallow = [{ route = \"ü\", paths = [\"/\"] }]\n",
            )],
            &["p.toml:2:20: unknown route \"ü\" (known routes: elasticsearch, kibana)"],
        ),
        (
            &[(
                "p.toml",
                "# é\n[roles.x]\nallow = [{ route = \"ü\", paths = [\"/\"] }, { route = \"ö\", paths = [\"/\"] }]\n",
            )],
            &[
                "p.toml:3:20: unknown route \"ü\" (known routes: elasticsearch, kibana)",
                "p.toml:3:52: unknown route \"ö\" (known routes: elasticsearch, kibana)",
            ],
        ),
        // array-of-tables syntax for rules is accepted and located at its header
        (
            &[("p.toml", "[roles.x]\n\n[[roles.x.deny]]\nroute = \"kibana\"\n")],
            &["p.toml:3:1: missing required key \"paths\" in rule"],
        ),
    ];
    for (files, expected) in table {
        check_errors(files, expected);
    }
}

/// Compiles `files` (which must succeed) and asserts the exact warnings.
fn check_warnings(files: &[(&str, &str)], expected: &[&str]) {
    let compiled = compile(&sources(files), &routes()).unwrap_or_else(|e| panic!("{files:?} does not compile: {e:?}"));
    let got: Vec<String> = compiled.warnings.iter().map(ToString::to_string).collect();
    assert_eq!(got, expected, "warnings for {files:#?}");
}

#[test]
fn warnings() {
    let table: &[Case<'_>] = &[
        // clean
        (
            &[(
                "w.toml",
                "[roles.r]\nallow = [{ route = \"kibana\", paths = [\"/**\"] }]\n[groups]\ng = [\"r\"]\n",
            )],
            &[],
        ),
        // role never granted
        (
            &[("w.toml", "[roles.r]\n[roles.unused]\n[groups]\ng = [\"r\"]\n")],
            &["w.toml:2:8: role \"unused\" is not granted to any group or user"],
        ),
        // granted through [users] counts
        (&[("w.toml", "[roles.r]\n[users]\n\"a@b\" = [\"r\"]\n")], &[]),
        // allow fully covered by a deny of the same role
        (
            &[(
                "w.toml",
                "[roles.r]\nallow = [\n  { route = \"elasticsearch\", methods = [\"DELETE\"], paths = [\"/logs-*\", \"/x/y\"] },\n]\ndeny = [\n  { route = \"elasticsearch\", paths = [\"/**\"] },\n]\n[groups]\ng = [\"r\"]\n",
            )],
            &["w.toml:3:3: allow rule can never match: the deny rule at w.toml:6:3 covers it"],
        ),
        // not covered: deny has fewer methods, another route, or fewer paths
        (
            &[(
                "w.toml",
                "[roles.r]\nallow = [\n  { route = \"elasticsearch\", paths = [\"/a\"] },\n  { route = \"kibana\", paths = [\"/a\"] },\n  { route = \"elasticsearch\", methods = [\"GET\"], paths = [\"/a\", \"/b/c\"] },\n]\ndeny = [\n  { route = \"elasticsearch\", methods = [\"GET\"], paths = [\"/a\"] },\n]\n[groups]\ng = [\"r\"]\n",
            )],
            &[],
        ),
        // a deny in *another* role does not make an allow unreachable
        (
            &[(
                "w.toml",
                "[roles.r]\nallow = [{ route = \"kibana\", paths = [\"/a\"] }]\n[roles.s]\ndeny = [{ route = \"kibana\", paths = [\"/**\"] }]\n[groups]\ng = [\"r\", \"s\"]\n",
            )],
            &[],
        ),
        // several denies together covering the paths
        (
            &[(
                "w.toml",
                "[roles.r]\nallow = [{ route = \"kibana\", methods = [\"GET\"], paths = [\"/a/b\", \"/c\"] }]\ndeny = [\n  { route = \"kibana\", paths = [\"/a/**\"] },\n  { route = \"kibana\", methods = [\"GET\", \"POST\"], paths = [\"/*\"] },\n]\n[groups]\ng = [\"r\"]\n",
            )],
            &["w.toml:2:10: allow rule can never match: the deny rule at w.toml:4:3 covers it"],
        ),
        // public rules
        (
            &[(
                "w.toml",
                "[public]\nallow = [{ route = \"kibana\", paths = [\"/ui/x\"] }]\ndeny = [{ route = \"kibana\", paths = [\"/ui/*\"] }]\n",
            )],
            &["w.toml:2:10: allow rule can never match: the deny rule at w.toml:3:9 covers it"],
        ),
        // duplicates: same effect, route, methods (any order/case) and paths (any order)
        (
            &[(
                "w.toml",
                "[roles.r]\nallow = [\n  { route = \"kibana\", methods = [\"GET\", \"POST\"], paths = [\"/a\", \"/b\"] },\n  { route = \"kibana\", methods = [\"post\", \"GET\"], paths = [\"/b\", \"/a\"] },\n  { route = \"kibana\", methods = [\"GET\"], paths = [\"/b\", \"/a\"] },\n]\n[groups]\ng = [\"r\"]\n",
            )],
            &["w.toml:4:3: duplicate rule: identical to the rule at w.toml:3:3"],
        ),
        (
            &[
                (
                    "a.toml",
                    "[public]\nallow = [{ route = \"kibana\", paths = [\"/f\"] }]\n",
                ),
                (
                    "b.toml",
                    "[public]\nallow = [{ route = \"kibana\", paths = [\"/f\"] }]\n",
                ),
            ],
            &["b.toml:2:10: duplicate rule: identical to the rule at a.toml:2:10"],
        ),
    ];
    for (files, expected) in table {
        check_warnings(files, expected);
    }
}

/// Compiles `files` and asserts the role names a subject gets.
fn check_roles(files: &[(&str, &str)], user: &str, groups: &[&str], expected: &[&str]) {
    let compiled = compile(&sources(files), &routes()).unwrap_or_else(|e| panic!("{files:?} does not compile: {e:?}"));
    let groups: Vec<GroupRef<'_>> = groups.iter().map(|g| GroupRef::parse(g)).collect();
    let roles = compiled.policy.roles_for(&Subject::new(user, &groups));
    let got: Vec<&str> = compiled.policy.role_names(&roles).collect();
    assert_eq!(got, expected, "roles of {user} in {groups:?}");
}

#[test]
fn merging() {
    let a = "[roles.a]\n[roles.b]\n[groups]\ng = [\"a\"]\n\"c:q\" = [\"a\"]\n[users]\n\"Ann@X\" = [\"a\"]\n";
    let b = "[roles.c]\n[groups]\ng = [\"c\", \"b\"]\n\"c:q\" = [\"c\"]\n[users]\n\"ann@x\" = [\"b\"]\n";
    let files: &[(&str, &str)] = &[("a.toml", a), ("b.toml", b)];
    let table: &[(&str, &[&str], &[&str])] = &[
        // group keys in several files: union of roles, in definition order
        ("nobody", &["g"], &["a", "b", "c"]),
        ("nobody", &["any:g"], &["a", "b", "c"]),
        ("nobody", &["c:q"], &["a", "c"]),
        ("nobody", &["q"], &[]),
        ("nobody", &["d:q"], &[]),
        // users in several files, compared case-insensitively
        ("ANN@x", &[], &["a", "b"]),
        ("ann@x", &["c:q"], &["a", "b", "c"]),
        ("ann@y", &[], &[]),
    ];
    for &(user, groups, expected) in table {
        check_roles(files, user, groups, expected);
    }
}
