//! A writer for the crash test: opens the directory at the given path and
//! writes continuously from several tasks, printing one line to stdout for
//! every write *after* it is acknowledged (durable):
//!
//! ```text
//! user <id> <userName>
//! member <group id> <user id>
//! inactive <user id>
//! ```
//!
//! It never exits on its own; the test kills it with SIGKILL.

use std::io::Write;
use std::sync::Arc;

use portcullis_directory::{Directory, DirectoryError, GroupUpdate, Id, MembersEdit, Options};
use serde_json::json;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(prefix)) = (args.next(), args.next()) else {
        eprintln!("usage: crash-writer STORE_PATH NAME_PREFIX");
        std::process::exit(2);
    };
    let dir = match Directory::open(std::path::Path::new(&path), Options::default()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("crash-writer: {e}");
            std::process::exit(1);
        }
    };
    let client: Id = Id::from("crash");
    let group = match dir.group_by_name("crash", &format!("group-{prefix}")) {
        Some(g) => g,
        None => {
            let doc = portcullis_tests::obj(json!({"displayName": format!("group-{prefix}")}));
            dir.create_group(&client, doc, vec![])
                .await
                .expect("create group")
                .group
        }
    };
    let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for task in 0..8 {
        let (dir, client, group, out, prefix) =
            (dir.clone(), client.clone(), group.clone(), out.clone(), prefix.clone());
        tasks.push(tokio::spawn(async move {
            let say = |line: String| {
                let mut out = out.lock().expect("stdout lock");
                // A failed write means the test stopped reading: just stop.
                if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
                    std::process::exit(0);
                }
            };
            for n in 0u64.. {
                let name = format!("{prefix}-{task}-{n}@example.com");
                let doc = portcullis_tests::obj(json!({"userName": name, "emails": [{"value": name}]}));
                let user = dir.create_user(&client, doc).await.expect("create user");
                say(format!("user {} {}", user.id, user.user_name()));
                if n % 3 == 0 {
                    let id = user.id.to_string();
                    dir.update_group("crash", &group.id, None, |_, _| {
                        Ok::<_, DirectoryError>(GroupUpdate {
                            doc: None,
                            members: vec![MembersEdit::Add(vec![id.clone()])],
                        })
                    })
                    .await
                    .expect("add member");
                    say(format!("member {} {}", group.id, user.id));
                }
                if n % 5 == 0 {
                    dir.update_user("crash", &user.id, None, |u| {
                        let mut doc = u.doc();
                        doc.insert("active".into(), json!(false));
                        Ok::<_, DirectoryError>(doc)
                    })
                    .await
                    .expect("deactivate");
                    say(format!("inactive {}", user.id));
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}
