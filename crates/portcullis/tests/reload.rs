//! Hot reload of the policy directory: a valid change goes live without a
//! restart, an invalid one is rejected and counted while the old policy
//! stays in force.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis::config::Config;
use portcullis::policy_runtime::{PolicyRuntime, watch};
use portcullis_policy::{GroupRef, Request, Subject};

const CONFIG: &str = r#"
[[routes]]
name = "app"
upstream = "http://127.0.0.1:1"
"#;

fn policy(paths: &[&str]) -> String {
    let paths: Vec<String> = paths.iter().map(|p| format!("{p:?}")).collect();
    format!(
        "[roles.user]\nallow = [{{ route = \"app\", paths = [{}] }}]\n[groups]\n\"staff\" = [\"user\"]\n",
        paths.join(", ")
    )
}

fn allowed(runtime: &PolicyRuntime, path: &str) -> bool {
    let groups = [GroupRef::new("okta", "staff")];
    let subject = Subject::new("alice", &groups);
    let req = Request {
        route: "app",
        method: "GET",
        path,
    };
    runtime.current().decide(&subject, &req).allowed
}

/// Waits (bounded) until `cond` holds.
async fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn write(dir: &Path, text: &str) {
    // Write then rename, as editors and config management do, so the watcher
    // never sees a half-written file.
    let tmp = dir.join(".app.toml.tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, dir.join("app.toml")).expect("rename");
}

#[tokio::test]
async fn policy_changes_apply_without_restart_and_bad_ones_are_rejected() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("policies");
    std::fs::create_dir(&dir).expect("mkdir");
    write(&dir, &policy(&["/a"]));
    let config = Config::parse(
        &format!("{CONFIG}\n[policy]\ndir = \"policies\"\n"),
        Path::new("test.toml"),
        tmp.path(),
    )
    .expect("config");
    let (runtime, warnings) = PolicyRuntime::load(&config).expect("policy");
    assert!(warnings.is_empty(), "{warnings:?}");
    let runtime = Arc::new(runtime);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(watch(runtime.clone(), async {
        let _ = stopped.await;
    }));
    assert!(allowed(&runtime, "/a"));
    assert!(!allowed(&runtime, "/b"));
    let first = runtime.stats();

    // A valid change goes live.
    write(&dir, &policy(&["/a", "/b"]));
    eventually("the new policy", || runtime.stats().generation > first.generation).await;
    assert!(allowed(&runtime, "/b"));
    let second = runtime.stats();
    assert_eq!(second.reloads, first.reloads + 1);

    // An invalid change is rejected, counted, and the old policy stays.
    write(&dir, "[roles.user]\nallow = [{ route = \"nope\", paths = [\"/c\"] }]\n");
    eventually("the rejected reload", || runtime.stats().failures > second.failures).await;
    assert_eq!(runtime.stats().generation, second.generation);
    assert!(allowed(&runtime, "/b"));
    assert!(!allowed(&runtime, "/c"));

    // Fixing it is picked up again.
    write(&dir, &policy(&["/c"]));
    eventually("the fixed policy", || runtime.stats().generation > second.generation).await;
    assert!(allowed(&runtime, "/c"));
    assert!(!allowed(&runtime, "/b"));

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(5), watcher)
        .await
        .expect("watcher stops on shutdown")
        .expect("watcher task");
}
