//! Tests for the hot-reload handle: reload keeps the old policy on error,
//! generations count successful stores, and concurrent readers never see a
//! mixture of two policies.

use std::sync::atomic::{AtomicBool, Ordering};

use super::PolicyHandle;
use crate::{GroupRef, Policy, Request, RouteSet, Source, Subject, compile};

/// Allows `/a` (role ids: `ra` = 0, `rb` = 1).
const POLICY_A: &str = r#"
[roles.ra]
allow = [{ route = "app", paths = ["/a"] }]
[roles.rb]
allow = [{ route = "app", paths = ["/b"] }]
[groups]
"g" = ["ra"]
"unused" = ["rb"]
"#;

/// Allows `/b`, with the roles in the other order so that role ids computed
/// on one policy would mean something else on the other.
const POLICY_B: &str = r#"
[roles.rb]
allow = [{ route = "app", paths = ["/b"] }]
[roles.ra]
allow = [{ route = "app", paths = ["/a"] }]
[groups]
"g" = ["rb"]
"unused" = ["ra"]
"#;

const BROKEN: &str = "[roles.x]\nallow = [{ route = \"nope\", paths = [\"/\"] }]\n";

fn routes() -> RouteSet {
    RouteSet::new(["app"])
}

fn compiled(text: &str) -> Policy {
    compile(&[Source::new("p.toml", text)], &routes())
        .unwrap_or_else(|e| panic!("{e:?}"))
        .policy
}

fn allowed(policy: &Policy, path: &str) -> bool {
    let groups = [GroupRef::new("scim", "g")];
    let subject = Subject::new("u", &groups);
    let roles = policy.roles_for(&subject);
    let req = Request {
        route: "app",
        method: "GET",
        path,
    };
    policy.decide_with_roles(&roles, &req).allowed
}

/// Applies one reload and checks the outcome, the generation and which
/// policy is in force afterwards.
fn check(handle: &PolicyHandle, text: &str, ok: bool, generation: u64, a_allowed: bool) {
    let result = handle.reload(&[Source::new("p.toml", text)], &routes());
    assert_eq!(result.is_ok(), ok, "reload result {result:?}");
    let policy = handle.load();
    assert_eq!(policy.generation(), generation);
    assert_eq!(handle.generation(), generation);
    assert_eq!(allowed(&policy, "/a"), a_allowed, "/a at generation {generation}");
    assert_eq!(allowed(&policy, "/b"), !a_allowed, "/b at generation {generation}");
}

#[test]
fn reloads() {
    let handle = PolicyHandle::new(compiled(POLICY_A));
    assert_eq!(handle.generation(), 1);
    let table: &[(&str, bool, u64, bool)] = &[
        (POLICY_B, true, 2, false),
        (BROKEN, false, 2, false),
        ("[roles", false, 2, false),
        (POLICY_A, true, 3, true),
        (BROKEN, false, 3, true),
        (POLICY_A, true, 4, true),
    ];
    for &(text, ok, generation, a_allowed) in table {
        check(&handle, text, ok, generation, a_allowed);
    }
    let errors = handle
        .reload(&[Source::new("p.toml", BROKEN)], &routes())
        .err()
        .unwrap_or_default();
    assert_eq!(
        errors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["p.toml:2:20: unknown route \"nope\" (known routes: app)"]
    );
}

#[test]
fn reload_dir_keeps_old_policy_when_a_file_is_missing() {
    let handle = PolicyHandle::new(compiled(POLICY_A));
    let missing = std::path::Path::new("/nonexistent/portcullis/policies");
    let result = handle.reload_dir(missing, &routes());
    assert!(result.is_err());
    assert_eq!(handle.generation(), 1);
    assert!(allowed(&handle.load(), "/a"));
}

/// Readers evaluate continuously while a writer swaps between two policies
/// that allow disjoint paths. Every snapshot must behave entirely like one
/// of them: exactly one of `/a`, `/b` allowed, matching the generation's
/// parity (odd = A, even = B), with generations never going backwards.
#[test]
fn concurrent_readers_never_see_a_mixed_policy() {
    const SWAPS: u64 = 2_000;
    let a = compiled(POLICY_A);
    let b = compiled(POLICY_B);
    let handle = PolicyHandle::new(a.clone());
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..3)
            .map(|_| {
                s.spawn(|| {
                    let mut last = 0;
                    let mut checks = 0u64;
                    while !done.load(Ordering::Acquire) || checks == 0 {
                        let policy = handle.load();
                        let generation = policy.generation();
                        assert!(generation >= last, "generation went back: {last} -> {generation}");
                        last = generation;
                        let on_a = allowed(&policy, "/a");
                        let on_b = allowed(&policy, "/b");
                        assert!(on_a != on_b, "mixed policy at generation {generation}");
                        assert_eq!(on_a, generation % 2 == 1, "generation {generation}");
                        checks += 1;
                    }
                    checks
                })
            })
            .collect();
        for i in 0..SWAPS {
            // Generation i + 2 is stored now: even = B, odd = A.
            let next = if i % 2 == 0 { b.clone() } else { a.clone() };
            if i % 100 == 0 {
                let text = if i % 2 == 0 { POLICY_B } else { POLICY_A };
                assert!(handle.reload(&[Source::new("p.toml", text)], &routes()).is_ok());
            } else {
                handle.store(next);
            }
        }
        done.store(true, Ordering::Release);
        for reader in readers {
            let checks = reader.join().unwrap_or_else(|_| panic!("reader panicked"));
            assert!(checks > 0);
        }
    });
    assert_eq!(handle.generation(), SWAPS + 1);
}
