//! Reports over a real directory on a temp dir, with time passed in.

use std::sync::Arc;

use portcullis_directory::{DirectoryError, Id, Options};
use portcullis_policy::{RouteSet, Source, compile};
use serde_json::json;

use super::*;

const POLICY: &str = r#"
[roles.reader]
allow = [{ route = "app", paths = ["/**"] }]
[roles.admin]
allow = [{ route = "app", paths = ["/**"] }]
[groups]
"readers" = ["reader"]
"admins" = ["admin"]
"#;

struct World {
    _tmp: tempfile::TempDir,
    directory: Directory,
    policy: Policy,
    ids: HashMap<&'static str, String>,
}

async fn world() -> World {
    let tmp = tempfile::tempdir().unwrap();
    let directory = Directory::open(tmp.path(), Options::default()).unwrap();
    let okta: Id = Arc::from("okta");
    let obj = |v: serde_json::Value| v.as_object().cloned().unwrap();
    let mut ids = HashMap::new();
    for name in ["alice", "bob", "carol, the \"contractor\""] {
        let u = directory
            .create_user(&okta, obj(json!({"userName": name, "active": true})))
            .await
            .unwrap();
        ids.insert(if name.starts_with("carol") { "carol" } else { name }, u.id.to_string());
    }
    let admins = directory
        .create_group(&okta, obj(json!({"displayName": "admins"})), vec![ids["alice"].clone()])
        .await
        .unwrap();
    // Nested: admins are readers too.
    directory
        .create_group(
            &okta,
            obj(json!({"displayName": "readers"})),
            vec![ids["bob"].clone(), admins.group.id.to_string()],
        )
        .await
        .unwrap();
    directory
        .update_user("okta", &ids["bob"], None, |u| {
            let mut doc = u.doc();
            doc.insert("active".into(), json!(false));
            Ok::<_, DirectoryError>(doc)
        })
        .await
        .unwrap();
    let policy = compile(&[Source::new("p.toml", POLICY)], &RouteSet::new(["app"]))
        .unwrap_or_else(|e| panic!("{e:?}"))
        .policy;
    World {
        _tmp: tmp,
        directory,
        policy,
        ids,
    }
}

#[tokio::test]
async fn the_access_report_lists_effective_groups_and_current_roles() {
    let w = world().await;
    let rows = access(&w.directory, &w.policy, &HashMap::new());
    let users: Vec<&str> = rows.iter().map(|r| r.user.as_str()).collect();
    assert_eq!(users, vec!["alice", "bob", "carol, the \"contractor\""]);
    assert_eq!(
        rows[0].groups,
        vec!["okta/admins", "okta/readers"],
        "nested membership counts"
    );
    assert_eq!(rows[0].roles, vec!["admin", "reader"]);
    assert!(!rows[1].active);
    assert_eq!(rows[1].groups, vec!["okta/readers"]);
    assert!(rows[1].roles.is_empty(), "a deactivated user holds no role");
    assert!(rows[2].groups.is_empty() && rows[2].roles.is_empty());

    let text = csv(&rows);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "user,user_id,active,groups,roles,last_access");
    assert_eq!(
        lines[1],
        format!("alice,{},true,okta/admins;okta/readers,admin;reader,", w.ids["alice"])
    );
    assert!(
        lines[3].starts_with("\"carol, the \"\"contractor\"\"\","),
        "{}",
        lines[3]
    );
}

#[tokio::test]
async fn stale_users_are_those_without_access_for_n_days_or_ever() {
    let w = world().await;
    let activity = Activity::new(w.directory.activity());
    let day = 86_400;
    let t0 = 1_800_000_000;
    let alice = w.directory.principal(&w.ids["alice"]).unwrap();
    let bob = w.directory.principal(&w.ids["bob"]).unwrap();
    activity.touch(&alice, t0);
    activity.touch(&bob, t0 - 40 * day);
    // Moves of less than the resolution are not even written to memory.
    activity.touch(&alice, t0 + 30);
    assert_eq!(activity.flush().await.unwrap(), 2);
    assert_eq!(activity.flush().await.unwrap(), 0, "nothing changed since");
    activity.touch(&alice, t0 + 5 * day);
    assert_eq!(activity.flush().await.unwrap(), 1);

    let last = activity.all();
    let rows = access(&w.directory, &w.policy, &last);
    assert!(
        rows[0].last_access.as_deref().unwrap().starts_with("2027-01-"),
        "{:?}",
        rows[0]
    );
    let stale_users = |days: u32, now: i64| -> Vec<String> {
        stale(access(&w.directory, &w.policy, &last), &last, days, now)
            .into_iter()
            .map(|r| r.user)
            .collect()
    };
    // 30 days after t0+5d: bob (40+ days) and carol (never) are stale.
    assert_eq!(stale_users(30, t0 + 5 * day), vec!["bob", "carol, the \"contractor\""]);
    // 60 days later still: alice too.
    assert_eq!(stale_users(30, t0 + 65 * day).len(), 3);
    assert_eq!(stale_users(90, t0 + 5 * day), vec!["carol, the \"contractor\""]);

    // Written to the store: a new Activity (a restart) knows the times.
    let again = Activity::new(w.directory.activity());
    assert_eq!(again.all().get(&w.ids["alice"]), Some(&(t0 + 5 * day)));
}
