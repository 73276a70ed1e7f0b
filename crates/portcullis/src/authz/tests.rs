//! Decisions explained against a real directory and a compiled policy,
//! through one `check` helper.

use std::sync::Arc;

use portcullis_directory::{Directory, DirectoryError, Id, IdentityAttr, Options};
use portcullis_policy::{RouteSet, Source, compile};
use serde_json::json;

use super::*;
use crate::config::Route;

const POLICY: &str = r#"
[roles.reader]
allow = [{ route = "es", methods = ["GET"], paths = ["/logs-*/_search"] }]
deny = [{ route = "es", paths = ["/_security/**"] }]

[roles.admin]
allow = [{ route = "es", paths = ["/**"] }]

[groups]
"readers" = ["reader"]
"okta:admins" = ["admin"]

[public]
allow = [{ route = "kibana", methods = ["GET"], paths = ["/favicon.ico"] }]
"#;

struct World {
    _tmp: tempfile::TempDir,
    directory: Directory,
    policy: portcullis_policy::Policy,
    router: Router,
}

async fn world() -> World {
    let tmp = tempfile::tempdir().expect("tempdir");
    let directory = Directory::open(tmp.path(), Options::default()).expect("directory");
    let okta: Id = Arc::from("okta");
    let obj = |v: serde_json::Value| v.as_object().cloned().expect("object");
    let alice = directory
        .create_user(&okta, obj(json!({"userName": "alice@example.com"})))
        .await
        .expect("alice");
    let carol = directory
        .create_user(&okta, obj(json!({"userName": "carol@example.com"})))
        .await
        .expect("carol");
    let dave = directory
        .create_user(&okta, obj(json!({"userName": "dave@example.com"})))
        .await
        .expect("dave");
    directory
        .create_group(
            &okta,
            obj(json!({"displayName": "readers"})),
            vec![alice.id.to_string(), dave.id.to_string()],
        )
        .await
        .expect("readers");
    directory
        .create_group(&okta, obj(json!({"displayName": "admins"})), vec![carol.id.to_string()])
        .await
        .expect("admins");
    directory
        .update_user("okta", &dave.id, None, |u| {
            let mut doc = u.doc();
            doc.insert("active".into(), json!(false));
            Ok::<_, DirectoryError>(doc)
        })
        .await
        .expect("deactivate dave");
    let compiled = compile(
        &[Source::new("policies/es.toml", POLICY)],
        &RouteSet::new(["es", "kibana"]),
    )
    .unwrap_or_else(|e| panic!("{e:?}"));
    let route = |name: &str, host: Option<&str>, prefix: &str, allow_encoded_slash: bool| Route {
        host: host.map(Into::into),
        path_prefix: prefix.into(),
        allow_encoded_slash,
        ..Route::new(name, url::Url::parse("http://127.0.0.1:1").expect("url"))
    };
    let router = Router::new(&[
        route("es", Some("es.example.com"), "/", false),
        route("kibana", None, "/", false),
        route("files", None, "/files", true),
    ]);
    World {
        _tmp: tmp,
        directory,
        policy: compiled.policy,
        router,
    }
}

fn check(w: &World, user: Option<&str>, method: &str, url: &str, allowed: bool, reason: &str) {
    let e = explain(
        &w.policy,
        &w.router,
        |u| w.directory.principal_by(IdentityAttr::UserName, u),
        user,
        method,
        url,
    );
    assert_eq!(e.allowed, allowed, "{user:?} {method} {url}:\n{e}");
    assert!(
        e.reason.contains(reason),
        "{user:?} {method} {url}: reason {:?} lacks {reason:?}",
        e.reason
    );
}

#[tokio::test]
async fn explanations_match_what_the_proxy_decides() {
    let w = world().await;
    let es = "https://es.example.com";
    let cases: &[(Option<&str>, &str, String, bool, &str)] = &[
        (
            Some("alice@example.com"),
            "GET",
            format!("{es}/logs-1/_search"),
            true,
            "policies/es.toml:3:10",
        ),
        (
            Some("ALICE@example.com"),
            "get",
            format!("{es}/logs-1/_search"),
            true,
            "allowed by",
        ),
        (
            Some("alice@example.com"),
            "DELETE",
            format!("{es}/logs-1/_search"),
            false,
            "no rule matched",
        ),
        (
            Some("alice@example.com"),
            "GET",
            format!("{es}/_security/user"),
            false,
            "policies/es.toml:4:9",
        ),
        // bypass attempts are decided on the normalized path
        (
            Some("alice@example.com"),
            "GET",
            format!("{es}/logs-1/../_security/user"),
            false,
            "denied by",
        ),
        (
            Some("alice@example.com"),
            "GET",
            format!("{es}/logs-1/%2e%2e/_security/user"),
            false,
            "denied by",
        ),
        (
            Some("alice@example.com"),
            "GET",
            format!("{es}/logs-1%2F_search"),
            false,
            "400",
        ),
        (
            Some("carol@example.com"),
            "DELETE",
            format!("{es}/logs-1"),
            true,
            "admin",
        ),
        (
            Some("dave@example.com"),
            "GET",
            format!("{es}/logs-1/_search"),
            false,
            "user is deactivated",
        ),
        (
            Some("eve@example.com"),
            "GET",
            format!("{es}/logs-1/_search"),
            false,
            "user is not provisioned",
        ),
        (
            None,
            "GET",
            "https://kibana.example.com/favicon.ico".into(),
            true,
            "public",
        ),
        (
            Some("eve@example.com"),
            "GET",
            "https://kibana.example.com/favicon.ico".into(),
            true,
            "public",
        ),
        (None, "GET", format!("{es}/logs-1/_search"), false, "no rule matched"),
        (
            Some("alice@example.com"),
            "GET",
            "not a url".into(),
            false,
            "invalid URL",
        ),
    ];
    for (user, method, url, allowed, reason) in cases {
        check(&w, *user, method, url, *allowed, reason);
    }
    let e = explain(
        &w.policy,
        &w.router,
        |u| w.directory.principal_by(IdentityAttr::UserName, u),
        Some("alice@example.com"),
        "GET",
        &format!("{es}/logs-1/_search"),
    );
    assert_eq!(e.groups, vec!["okta:readers".to_string()]);
    assert_eq!(e.roles, vec!["reader".to_string()]);
    assert_eq!(e.route.as_deref(), Some("es"));
    let text = e.to_string();
    assert!(
        text.starts_with("ALLOW GET https://es.example.com/logs-1/_search\n"),
        "{text}"
    );
}
