//! Crash safety on a real child process: every write the directory
//! acknowledged survives SIGKILL, and the rebuilt indexes are consistent.

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use portcullis_directory::{Directory, IdentityAttr, Lookup, Options};
use rand::Rng;

#[derive(Default)]
struct Acked {
    users: HashMap<String, String>,
    members: HashSet<(String, String)>,
    inactive: HashSet<String>,
}

impl Acked {
    /// Records every complete line; a torn last line was never acknowledged.
    fn absorb(&mut self, output: &[u8]) -> usize {
        let text = String::from_utf8_lossy(output);
        let complete = text.rfind('\n').map_or("", |i| &text[..i]);
        let mut n = 0;
        for line in complete.lines() {
            let parts: Vec<&str> = line.split(' ').collect();
            match parts.as_slice() {
                ["user", id, name] => {
                    self.users.insert(id.to_string(), name.to_string());
                }
                ["member", g, u] => {
                    self.members.insert((g.to_string(), u.to_string()));
                }
                ["inactive", u] => {
                    self.inactive.insert(u.to_string());
                }
                _ => panic!("unexpected line from writer: {line:?}"),
            }
            n += 1;
        }
        n
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let mut acked = Acked::default();
    let mut rng = rand::rng();
    let rounds = 6;
    for round in 0..rounds {
        let mut child = Command::new(env!("CARGO_BIN_EXE_crash-writer"))
            .arg(&store)
            .arg(format!("r{round}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start crash-writer");
        let mut stdout = child.stdout.take().expect("stdout");
        let (first_ack, first_ack_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut buf = Vec::new();
            let mut chunk = [0u8; 8192];
            loop {
                match stdout.read(&mut chunk) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        buf.extend_from_slice(&chunk[..n]);
                        if buf.contains(&b'\n') {
                            let _ = first_ack.send(());
                        }
                    }
                }
            }
            buf
        });
        // Kill at a random moment after the writer is up and writing (its
        // start-up, a rebuild of everything so far, takes a variable time on
        // a loaded machine).
        first_ack_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the writer acknowledged nothing within 60 s");
        std::thread::sleep(Duration::from_millis(rng.random_range(20..500)));
        child.kill().expect("SIGKILL"); // std sends SIGKILL on Unix
        let status = child.wait().expect("wait");
        assert!(status.code().is_none(), "writer must have died by signal, got {status}");
        let lines = acked.absorb(&reader.join().expect("reader"));
        assert!(
            lines > 0,
            "round {round}: the writer acknowledged nothing before being killed"
        );

        // Reopen in this process and check every acknowledged write.
        let dir = Directory::open(&store, Options::default()).expect("reopen after SIGKILL");
        for (id, name) in &acked.users {
            let user = dir
                .user(id)
                .unwrap_or_else(|| panic!("round {round}: acknowledged user {id} lost"));
            assert_eq!(user.user_name(), name);
            assert!(matches!(dir.principal_by(IdentityAttr::UserName, name), Lookup::Found(p) if &*p.id == id));
            assert!(matches!(dir.principal_by(IdentityAttr::Email, name), Lookup::Found(_)));
        }
        for (group, user) in &acked.members {
            let members = dir.members_of(group);
            assert!(
                members.iter().any(|m| &*m.id == user),
                "round {round}: acknowledged membership {user} in {group} lost"
            );
            let p = dir.principal(user).expect("principal");
            assert!(p.groups.iter().any(|g| &*g.id == group));
        }
        for user in &acked.inactive {
            assert!(
                !dir.user(user).expect("user").active(),
                "round {round}: deactivation of {user} lost"
            );
            assert!(!dir.principal(user).expect("principal").active);
        }
        let problems = dir.verify();
        assert!(problems.is_empty(), "round {round}: {problems:#?}");
        eprintln!(
            "round {round}: {} users, {} memberships, {} deactivations acknowledged so far; store consistent",
            acked.users.len(),
            acked.members.len(),
            acked.inactive.len()
        );
    }
}
