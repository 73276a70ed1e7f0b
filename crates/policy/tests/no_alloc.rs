//! Proves that the evaluation hot path never touches the heap: a counting
//! global allocator (from the `stats_alloc` crate, so this file needs no
//! `unsafe`) records every allocation while decisions are made on a large
//! policy. Keep this file to a single test: the counters are process-wide,
//! so a second test running in parallel would be counted too. It does not
//! measure speed (see `benches/decide.rs`).

use std::alloc::System;

use portcullis_policy::{GroupRef, NormalizeOptions, Reason, Subject, normalize_path};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[path = "support/scale.rs"]
mod scale;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Runs `f` a few times after a warm-up call and asserts that no allocation,
/// reallocation or deallocation happened meanwhile.
fn check(what: &str, mut f: impl FnMut() -> bool) {
    assert!(f(), "{what}: unexpected result during warm-up");
    let region = Region::new(GLOBAL);
    let mut all_ok = true;
    for _ in 0..100 {
        all_ok &= f();
    }
    let stats = region.change();
    assert!(all_ok, "{what}: unexpected result");
    assert_eq!(
        (stats.allocations, stats.reallocations, stats.deallocations),
        (0, 0, 0),
        "{what} allocated: {stats:?}"
    );
}

#[test]
fn decisions_do_not_allocate() {
    let (policy, owned) = scale::fixture();
    let groups: Vec<GroupRef<'_>> = owned.iter().map(|g| g.as_ref()).collect();
    let subject = Subject::new(scale::USER, &groups);
    let table: &[(&str, &dyn Fn() -> bool)] = &[
        ("roles_for", &|| policy.roles_for(&subject).len() == 50),
        ("decide (allowed)", &|| {
            matches!(policy.decide(&subject, &scale::ALLOWED).reason, Reason::Allowed { .. })
        }),
        ("decide (denied by rule)", &|| {
            matches!(policy.decide(&subject, &scale::DENIED).reason, Reason::Denied { .. })
        }),
        ("decide (no rule matched)", &|| {
            policy.decide(&subject, &scale::NO_MATCH).reason == Reason::NoRuleMatched
        }),
        ("decide (public)", &|| {
            matches!(policy.decide(&subject, &scale::PUBLIC).reason, Reason::Public { .. })
        }),
        ("decide_public", &|| policy.decide_public(&scale::PUBLIC).allowed),
        ("normalize_path (already normal)", &|| {
            normalize_path(scale::ALLOWED.path, NormalizeOptions::default()).is_ok()
        }),
    ];
    for (what, f) in table {
        check(what, f);
    }
}
