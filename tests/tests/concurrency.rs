//! Many tasks mutating overlapping users and groups at once: afterwards the
//! cache, its indexes and a fresh reload from sled all agree.

use std::sync::Arc;

use portcullis_directory::{Directory, DirectoryError, GroupUpdate, Id, MembersEdit, Options};
use portcullis_tests::obj;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

const TASKS: usize = 16;
const OPS_PER_TASK: usize = 250;
const USERS: usize = 40;
const GROUPS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_leave_cache_indexes_and_disk_in_agreement() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let client: Id = Id::from("okta");
    let dump = {
        let dir = Directory::open(tmp.path(), Options::default()).expect("open");
        let mut groups = Vec::new();
        for g in 0..GROUPS {
            let doc = obj(json!({"displayName": format!("g{g}")}));
            groups.push(
                dir.create_group(&client, doc, vec![])
                    .await
                    .expect("group")
                    .group
                    .id
                    .to_string(),
            );
        }
        let groups = Arc::new(groups);
        let mut tasks = Vec::new();
        for t in 0..TASKS {
            let (dir, client, groups) = (dir.clone(), client.clone(), groups.clone());
            tasks.push(tokio::spawn(async move {
                // Seeded per task: a failure reproduces with the same interleaving odds.
                let mut rng = StdRng::seed_from_u64(t as u64);
                let mut outcomes = [0usize; 2];
                for _ in 0..OPS_PER_TASK {
                    // Names collide across tasks on purpose: uniqueness must hold.
                    let name = format!("user{}@example.com", rng.random_range(0..USERS));
                    let group = groups[rng.random_range(0..GROUPS)].clone();
                    let result = match rng.random_range(0..7) {
                        0 | 1 => dir
                            .create_user(&client, obj(json!({"userName": name, "emails": [{"value": name}]})))
                            .await
                            .map(drop),
                        2 => match dir.user_by_name(&name) {
                            Some(u) => dir.delete_user("okta", &u.id, None).await,
                            None => Ok(()),
                        },
                        3 => match dir.user_by_name(&name) {
                            Some(u) => {
                                let active = rng.random_bool(0.5);
                                dir.update_user("okta", &u.id, None, |u| {
                                    let mut doc = u.doc();
                                    doc.insert("active".into(), json!(active));
                                    doc.insert("title".into(), json!(format!("t{t}")));
                                    Ok::<_, DirectoryError>(doc)
                                })
                                .await
                                .map(drop)
                            }
                            None => Ok(()),
                        },
                        4 | 5 => {
                            let ids: Vec<String> = (0..3)
                                .filter_map(|_| {
                                    dir.user_by_name(&format!("user{}@example.com", rng.random_range(0..USERS)))
                                })
                                .map(|u| u.id.to_string())
                                .collect();
                            let edit = if rng.random_bool(0.6) {
                                MembersEdit::Add(ids)
                            } else {
                                MembersEdit::Remove(ids)
                            };
                            dir.update_group("okta", &group, None, |_, _| {
                                Ok::<_, DirectoryError>(GroupUpdate {
                                    doc: None,
                                    members: vec![edit],
                                })
                            })
                            .await
                            .map(drop)
                        }
                        _ => {
                            // Nest one group in another (cycles allowed) or rename.
                            let other = groups[rng.random_range(0..GROUPS)].clone();
                            let rename = rng.random_bool(0.3);
                            dir.update_group("okta", &group, None, |g, _| {
                                let mut doc = g.doc();
                                if rename {
                                    doc.insert("displayName".into(), json!(format!("{}-{t}", g.display_name())));
                                }
                                let members = if other == *g.id {
                                    vec![]
                                } else {
                                    vec![MembersEdit::Add(vec![other])]
                                };
                                Ok::<_, DirectoryError>(GroupUpdate {
                                    doc: Some(doc),
                                    members,
                                })
                            })
                            .await
                            .map(drop)
                        }
                    };
                    match result {
                        Ok(()) => outcomes[0] += 1,
                        Err(DirectoryError::Conflict { .. } | DirectoryError::NotFound { .. }) => outcomes[1] += 1,
                        Err(e) => panic!("unexpected error: {e}"),
                    }
                }
                outcomes
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += t.await.expect("task")[0];
        }
        assert!(ok > TASKS * OPS_PER_TASK / 2, "too few writes succeeded: {ok}");
        let problems = dir.verify();
        assert!(problems.is_empty(), "{problems:#?}");
        dir.dump()
    };
    let reloaded = Directory::open(tmp.path(), Options::default()).expect("reopen");
    assert!(reloaded.verify().is_empty());
    let fresh = reloaded.dump();
    assert_eq!(fresh.users, dump.users, "users differ after reload");
    assert_eq!(fresh.groups, dump.groups, "groups differ after reload");
    assert_eq!(fresh.edges, dump.edges, "memberships differ after reload");
    assert_eq!(
        fresh.principals, dump.principals,
        "effective groups differ after reload"
    );
}
