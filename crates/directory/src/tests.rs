//! Unit tests for the directory: indexes, membership in both directions,
//! uniqueness, versions, events and reload. Each test runs against a real
//! sled store in a temporary directory.

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::*;

fn obj(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        other => panic!("not an object: {other}"),
    }
}

fn user_doc(name: &str) -> Map<String, Value> {
    obj(json!({ "userName": name }))
}

struct Fixture {
    _dir: tempfile::TempDir,
    dir: Directory,
    okta: Id,
    entra: Id,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = Directory::open(tmp.path(), Options::default()).expect("open");
    Fixture {
        _dir: tmp,
        dir,
        okta: Id::from("okta"),
        entra: Id::from("entra"),
    }
}

impl Fixture {
    async fn user(&self, doc: Value) -> Arc<User> {
        self.dir.create_user(&self.okta, obj(doc)).await.expect("create user")
    }

    async fn group(&self, name: &str, members: &[&Arc<str>]) -> Arc<Group> {
        let members = members.iter().map(|m| m.to_string()).collect();
        let w = self
            .dir
            .create_group(&self.okta, obj(json!({ "displayName": name })), members)
            .await
            .expect("create group");
        assert!(w.unknown_members.is_empty(), "{:?}", w.unknown_members);
        w.group
    }

    async fn edit(&self, group: &Group, edits: Vec<MembersEdit>) -> GroupWrite {
        self.dir
            .update_group(&self.okta, &group.id, None, |_, _| {
                Ok::<_, DirectoryError>(GroupUpdate {
                    doc: None,
                    members: edits,
                })
            })
            .await
            .expect("update group")
    }

    fn effective(&self, user: &User) -> Vec<String> {
        let p = self.dir.principal(&user.id).expect("principal");
        p.groups.iter().map(|g| g.display_name().to_owned()).collect()
    }

    fn assert_consistent(&self) {
        let problems = self.dir.verify();
        assert!(problems.is_empty(), "{problems:#?}");
    }
}

#[tokio::test]
async fn user_name_is_unique_case_insensitively_across_clients() {
    let f = fixture();
    // (client, userName, expected to succeed)
    let table: &[(&Id, &str, bool)] = &[
        (&f.okta, "alice@example.com", true),
        (&f.okta, "ALICE@example.com", false),
        (&f.entra, "Alice@Example.Com", false),
        (&f.entra, "bob@example.com", true),
        (&f.okta, "alice@example.org", true),
        (&f.okta, "straße@example.com", true),
        (&f.okta, "STRASSE@example.com", true), // full case folding is not lower-casing
        (&f.okta, "STRAßE@example.com", false),
    ];
    for (client, name, ok) in table {
        let got = f.dir.create_user(client, user_doc(name)).await;
        match (ok, &got) {
            (true, Ok(_)) => {}
            (
                false,
                Err(DirectoryError::Conflict {
                    attribute: "userName", ..
                }),
            ) => {}
            _ => panic!("create {name} as {client}: expected ok={ok}, got {got:?}"),
        }
    }
    f.assert_consistent();

    // Renames follow the same rule; changing only the case of one's own name is fine.
    let bob = f.dir.user_by_name("BOB@example.com").expect("bob by name");
    let rename = |to: &'static str| {
        let dir = f.dir.clone();
        let id = bob.id.clone();
        async move {
            dir.update_user("entra", &id, None, |u| {
                let mut doc = u.doc();
                doc.insert("userName".into(), json!(to));
                Ok::<_, DirectoryError>(doc)
            })
            .await
        }
    };
    assert!(matches!(
        rename("alice@EXAMPLE.com").await,
        Err(DirectoryError::Conflict { .. })
    ));
    let renamed = rename("Bob@Example.com").await.expect("case-only rename");
    assert_eq!(renamed.user_name(), "Bob@Example.com");
    assert_eq!(renamed.meta.version, 2);
    assert!(f.dir.user_by_name("bob@example.com").is_some());
    f.assert_consistent();
}

#[tokio::test]
async fn identity_lookups_use_the_indexes() {
    let f = fixture();
    f.user(
        json!({"userName": "alice", "externalId": "00u1", "emails": [{"value": "Alice@Example.com", "type": "work"}]}),
    )
    .await;
    f.user(json!({"userName": "bob", "externalId": "00u2", "emails": [{"value": "shared@example.com"}]}))
        .await;
    f.user(json!({"userName": "carol", "externalId": "00u2", "emails": [{"value": "SHARED@example.com"}]}))
        .await;

    enum Want {
        User(&'static str),
        None,
        Ambiguous(usize),
    }
    let table = [
        (IdentityAttr::UserName, "ALICE", Want::User("alice")),
        (IdentityAttr::UserName, "alice ", Want::None),
        (IdentityAttr::UserName, "dave", Want::None),
        (IdentityAttr::Email, "alice@example.com", Want::User("alice")),
        (IdentityAttr::Email, "shared@example.com", Want::Ambiguous(2)),
        (IdentityAttr::ExternalId, "00u1", Want::User("alice")),
        (IdentityAttr::ExternalId, "00U1", Want::None), // externalId is case-exact
        (IdentityAttr::ExternalId, "00u2", Want::Ambiguous(2)),
    ];
    for (attr, value, want) in table {
        let got = f.dir.principal_by(attr, value);
        match (&want, &got) {
            (Want::User(name), Lookup::Found(p)) if &*p.user_name == *name => {}
            (Want::None, Lookup::NotFound) => {}
            (Want::Ambiguous(n), Lookup::Ambiguous(m)) if n == m => {}
            _ => panic!("{attr:?} {value:?}: got {got:?}"),
        }
    }

    // Changing an email moves the user between index entries.
    let carol = f.dir.user_by_name("carol").expect("carol");
    f.dir
        .update_user("okta", &carol.id, None, |u| {
            let mut doc = u.doc();
            doc.insert("emails".into(), json!([{"value": "carol@example.com"}]));
            Ok::<_, DirectoryError>(doc)
        })
        .await
        .expect("update");
    assert!(
        matches!(f.dir.principal_by(IdentityAttr::Email, "shared@example.com"), Lookup::Found(p) if &*p.user_name == "bob")
    );
    assert!(matches!(
        f.dir.principal_by(IdentityAttr::Email, "carol@example.com"),
        Lookup::Found(_)
    ));
    f.assert_consistent();
}

#[tokio::test]
async fn membership_is_kept_in_both_directions_with_nesting() {
    let f = fixture();
    let alice = f.user(json!({"userName": "alice"})).await;
    let bob = f.user(json!({"userName": "bob"})).await;
    let readers = f.group("es-readers", &[&alice.id]).await;
    let writers = f.group("es-writers", &[&bob.id]).await;
    // staff contains both groups: nested membership counts.
    let staff = f.group("staff", &[&readers.id, &writers.id]).await;

    let table: &[(&Arc<User>, &[&str])] = &[(&alice, &["es-readers", "staff"]), (&bob, &["es-writers", "staff"])];
    for (user, want) in table {
        assert_eq!(f.effective(user), *want, "{}", user.user_name());
    }
    assert_eq!(
        f.dir.members_of(&staff.id).iter().map(|m| m.kind).collect::<Vec<_>>(),
        vec![MemberKind::Group, MemberKind::Group]
    );
    assert_eq!(f.dir.direct_groups_of(&alice.id).len(), 1);
    f.assert_consistent();

    // Taking es-writers out of staff takes staff away from bob only.
    f.edit(&staff, vec![MembersEdit::Remove(vec![writers.id.to_string()])])
        .await;
    assert_eq!(f.effective(&bob), vec!["es-writers"]);
    assert_eq!(f.effective(&alice), vec!["es-readers", "staff"]);

    // A rename of a parent group reaches every nested member.
    f.dir
        .update_group("okta", &staff.id, None, |g, _| {
            let mut doc = g.doc();
            doc.insert("displayName".into(), json!("all-staff"));
            Ok::<_, DirectoryError>(GroupUpdate {
                doc: Some(doc),
                members: vec![],
            })
        })
        .await
        .expect("rename");
    assert_eq!(f.effective(&alice), vec!["all-staff", "es-readers"]);

    // Cycles are tolerated and terminate.
    f.edit(&readers, vec![MembersEdit::Add(vec![staff.id.to_string()])])
        .await;
    assert_eq!(f.effective(&alice), vec!["all-staff", "es-readers"]);

    // Deleting a group removes it from members and from parents.
    f.dir.delete_group("okta", &readers.id, None).await.expect("delete");
    assert!(f.effective(&alice).is_empty());
    assert!(f.dir.members_of(&staff.id).is_empty());
    f.assert_consistent();

    // Deleting a user removes its memberships and bumps the group's version.
    let before = f.dir.group(&writers.id).expect("writers").meta.version;
    f.dir.delete_user("okta", &bob.id, None).await.expect("delete bob");
    assert!(f.dir.members_of(&writers.id).is_empty());
    assert_eq!(f.dir.group(&writers.id).expect("writers").meta.version, before + 1);
    assert!(f.dir.principal(&bob.id).is_none());
    f.assert_consistent();
}

#[tokio::test]
async fn member_edits_compose_in_order() {
    let f = fixture();
    let mut ids = Vec::new();
    for n in ["u0", "u1", "u2", "u3"] {
        ids.push(f.user(json!({"userName": n})).await.id.to_string());
    }
    let s = |i: &[usize]| i.iter().map(|&i| ids[i].clone()).collect::<Vec<_>>();
    // (starting members, edits, final members, unknown ids reported)
    type Case = (Vec<usize>, Vec<MembersEdit>, Vec<usize>, usize);
    let table: Vec<Case> = vec![
        (vec![], vec![MembersEdit::Add(s(&[0, 1]))], vec![0, 1], 0),
        (vec![0], vec![MembersEdit::Add(s(&[0]))], vec![0], 0),
        (vec![0, 1], vec![MembersEdit::Remove(s(&[1]))], vec![0], 0),
        (vec![0], vec![MembersEdit::Remove(s(&[2]))], vec![0], 0),
        (vec![0, 1], vec![MembersEdit::Replace(s(&[1, 2]))], vec![1, 2], 0),
        (vec![0, 1], vec![MembersEdit::Replace(vec![])], vec![], 0),
        (
            vec![0],
            vec![MembersEdit::Remove(s(&[0])), MembersEdit::Add(s(&[0]))],
            vec![0],
            0,
        ),
        (
            vec![],
            vec![MembersEdit::Add(s(&[3])), MembersEdit::Remove(s(&[3]))],
            vec![],
            0,
        ),
        (
            vec![0],
            vec![MembersEdit::Add(vec![
                "no-such-id".into(),
                ids[1].clone(),
                "no-such-id".into(),
            ])],
            vec![0, 1],
            1,
        ),
    ];
    for (i, (start, edits, want, unknown)) in table.into_iter().enumerate() {
        let g = f
            .dir
            .create_group(&f.okta, obj(json!({"displayName": format!("g{i}")})), s(&start))
            .await
            .expect("group");
        let w = f.edit(&g.group, edits.clone()).await;
        let mut got: Vec<String> = f
            .dir
            .members_of(&g.group.id)
            .into_iter()
            .map(|m| m.id.to_string())
            .collect();
        got.sort();
        let mut want = s(&want);
        want.sort();
        assert_eq!(got, want, "case {i}: {edits:?}");
        assert_eq!(w.unknown_members.len(), unknown, "case {i}");
        let changed = got != {
            let mut s = s(&start);
            s.sort();
            s
        };
        let version = f.dir.group(&g.group.id).expect("group").meta.version;
        assert_eq!(
            version,
            if changed { 2 } else { 1 },
            "case {i}: a no-op edit keeps the version"
        );
    }
    f.assert_consistent();
}

#[tokio::test]
async fn clients_see_and_change_only_their_own_resources() {
    let f = fixture();
    let alice = f.user(json!({"userName": "alice"})).await;
    let theirs = f
        .dir
        .create_user(&f.entra, user_doc("mallory"))
        .await
        .expect("entra user");
    // entra cannot change or delete okta's user, nor put it in its groups.
    let err = f.dir.delete_user("entra", &alice.id, None).await;
    assert!(matches!(err, Err(DirectoryError::NotFound { .. })), "{err:?}");
    let w = f
        .dir
        .create_group(
            &f.entra,
            obj(json!({"displayName": "admins"})),
            vec![alice.id.to_string(), theirs.id.to_string()],
        )
        .await
        .expect("group");
    assert_eq!(w.unknown_members, vec![alice.id.to_string()]);
    // Group names are unique per client only.
    f.group("admins", &[]).await;
    let dup = f
        .dir
        .create_group(&f.okta, obj(json!({"displayName": "ADMINS"})), vec![])
        .await;
    assert!(matches!(
        dup,
        Err(DirectoryError::Conflict {
            attribute: "displayName",
            ..
        })
    ));
    assert_eq!(f.dir.users_of("entra").len(), 1);
    assert_eq!(f.dir.groups_of("okta").len(), 1);
}

#[tokio::test]
async fn versions_guard_concurrent_edits_and_no_ops_write_nothing() {
    let f = fixture();
    let alice = f.user(json!({"userName": "alice", "active": true})).await;
    let stale = f
        .dir
        .update_user("okta", &alice.id, Some(7), |u| Ok::<_, DirectoryError>(u.doc()))
        .await;
    assert!(matches!(
        stale,
        Err(DirectoryError::VersionMismatch {
            expected: 7,
            current: 1,
            ..
        })
    ));
    let same = f
        .dir
        .update_user("okta", &alice.id, Some(1), |u| Ok::<_, DirectoryError>(u.doc()))
        .await
        .expect("no-op");
    assert_eq!(same.meta.version, 1);
    assert!(Arc::ptr_eq(&same, &alice) || same.meta == alice.meta);
    let bad = f
        .dir
        .update_user("okta", &alice.id, None, |u| {
            let mut doc = u.doc();
            doc.insert("active".into(), json!("False"));
            Ok::<_, DirectoryError>(doc)
        })
        .await;
    assert!(matches!(
        bad,
        Err(DirectoryError::InvalidAttribute {
            attribute: "active",
            ..
        })
    ));
    let g = f.group("g", &[]).await;
    let selfref = f
        .dir
        .update_group("okta", &g.id, None, |g, _| {
            Ok::<_, DirectoryError>(GroupUpdate {
                doc: None,
                members: vec![MembersEdit::Add(vec![g.id.to_string()])],
            })
        })
        .await;
    assert!(matches!(selfref, Err(DirectoryError::InvalidMember { .. })));
}

#[tokio::test]
async fn changes_are_published_in_order_with_principal_deltas() {
    let f = fixture();
    let mut events = f.dir.subscribe();
    let alice = f.user(json!({"userName": "alice"})).await;
    let g = f.group("admins", &[&alice.id]).await;
    f.dir
        .update_user("okta", &alice.id, None, |u| {
            let mut doc = u.doc();
            doc.insert("active".into(), json!(false));
            Ok::<_, DirectoryError>(doc)
        })
        .await
        .expect("deactivate");
    f.edit(&g, vec![MembersEdit::Remove(vec![alice.id.to_string()])]).await;

    let mut seqs = Vec::new();
    let mut kinds = Vec::new();
    for _ in 0..4 {
        let c = events.recv().await.expect("event");
        seqs.push(c.seq);
        kinds.push(match &c.kind {
            ChangeKind::UserCreated { .. } => "user+",
            ChangeKind::GroupCreated { added, .. } => {
                assert_eq!(added.len(), 1);
                "group+"
            }
            ChangeKind::UserUpdated { .. } => {
                assert_eq!(c.principals.len(), 1);
                assert!(c.principals[0].revokes(), "deactivation revokes");
                "user~"
            }
            ChangeKind::GroupUpdated { removed, .. } => {
                assert_eq!(removed.len(), 1);
                let p = &c.principals[0];
                assert_eq!(p.before.as_ref().map(|p| p.groups.len()), Some(1));
                assert_eq!(p.after.as_ref().map(|p| p.groups.len()), Some(0));
                "group~"
            }
            other => panic!("unexpected {other:?}"),
        });
        assert_eq!(&*c.actor, "okta");
    }
    assert_eq!(kinds, ["user+", "group+", "user~", "group~"]);
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
}

#[tokio::test]
async fn reopening_rebuilds_the_same_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let okta = Id::from("okta");
    let before = {
        let dir = Directory::open(tmp.path(), Options::default()).expect("open");
        let a = dir.create_user(&okta, user_doc("alice")).await.expect("alice");
        let b = dir.create_user(&okta, user_doc("bob")).await.expect("bob");
        let inner = dir
            .create_group(&okta, obj(json!({"displayName": "inner"})), vec![a.id.to_string()])
            .await
            .expect("inner");
        dir.create_group(
            &okta,
            obj(json!({"displayName": "outer"})),
            vec![inner.group.id.to_string(), b.id.to_string()],
        )
        .await
        .expect("outer");
        dir.delete_user("okta", &b.id, None).await.expect("delete");
        dir.dump()
    };
    let dir = Directory::open(tmp.path(), Options::default()).expect("reopen");
    assert_eq!(dir.dump(), before);
    assert!(dir.verify().is_empty());
    let alice = dir.user_by_name("ALICE").expect("alice");
    let p = dir.principal(&alice.id).expect("principal");
    assert_eq!(
        p.groups.iter().map(|g| g.display_name()).collect::<Vec<_>>(),
        ["inner", "outer"]
    );
}

#[tokio::test]
async fn a_store_that_cannot_be_read_stops_the_start() {
    // Another schema version.
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let db = crate::store::open_sled(&sled::Config::new().path(tmp.path())).expect("sled");
        db.insert("schema_version", "99").expect("insert");
        db.flush().expect("flush");
    }
    let err = Directory::open(tmp.path(), Options::default()).expect_err("must refuse");
    assert!(
        matches!(err, StoreError::SchemaVersion { ref found, .. } if found == "99"),
        "{err}"
    );
    assert!(err.to_string().contains("schema version 99"), "{err}");

    // A record that does not decode.
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let dir = Directory::open(tmp.path(), Options::default()).expect("open");
        dir.create_user(&Id::from("okta"), user_doc("alice"))
            .await
            .expect("alice");
    }
    {
        let db = crate::store::open_sled(&sled::Config::new().path(tmp.path())).expect("sled");
        let tree = db.open_tree("directory").expect("tree");
        tree.insert("u:broken", "{not json").expect("insert");
        db.flush().expect("flush");
    }
    let err = Directory::open(tmp.path(), Options::default()).expect_err("must refuse");
    assert!(
        matches!(err, StoreError::Corrupt { ref key, .. } if key == "u:broken"),
        "{err}"
    );

    // Data without a schema marker.
    let tmp = tempfile::tempdir().expect("tempdir");
    {
        let db = crate::store::open_sled(&sled::Config::new().path(tmp.path())).expect("sled");
        db.open_tree("directory")
            .expect("tree")
            .insert("u:x", "{}")
            .expect("insert");
        db.flush().expect("flush");
    }
    let err = Directory::open(tmp.path(), Options::default()).expect_err("must refuse");
    assert!(matches!(err, StoreError::MissingSchemaVersion { .. }), "{err}");

    // A store already open elsewhere.
    let tmp = tempfile::tempdir().expect("tempdir");
    let _held = Directory::open(tmp.path(), Options::default()).expect("open");
    let err = Directory::open(tmp.path(), Options::default()).expect_err("locked");
    assert!(matches!(err, StoreError::Open { .. }), "{err}");
}
