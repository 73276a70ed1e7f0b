//! Criterion benchmark of the evaluation hot path on a large policy: 1,000
//! rules in 200 roles over 4 routes, for a user in 60 groups holding 50
//! roles (see `tests/support/scale.rs`). Measures `roles_for`, `decide` for
//! allowed, denied and unmatched requests, and `normalize_path`. It does not
//! check allocation-freedom (`tests/no_alloc.rs` does).
//!
//! Run with `cargo bench -p portcullis-policy`; add
//! `-- --warm-up-time 1 --measurement-time 2` for a quick run.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_policy::{GroupRef, NormalizeOptions, Subject, normalize_path};

#[path = "../tests/support/scale.rs"]
mod scale;

fn decide(c: &mut Criterion) {
    let (policy, owned) = scale::fixture();
    let groups: Vec<GroupRef<'_>> = owned.iter().map(|g| g.as_ref()).collect();
    let subject = Subject::new(scale::USER, &groups);
    let roles = policy.roles_for(&subject);
    assert_eq!(roles.len(), 50);
    assert!(policy.decide(&subject, &scale::ALLOWED).allowed);
    assert!(!policy.decide(&subject, &scale::DENIED).allowed);
    assert!(!policy.decide(&subject, &scale::NO_MATCH).allowed);
    assert!(policy.decide(&subject, &scale::PUBLIC).allowed);

    let mut g = c.benchmark_group("policy");
    g.bench_function("roles_for (60 groups, 50 roles)", |b| {
        b.iter(|| policy.roles_for(black_box(&subject)))
    });
    g.bench_function("decide allowed", |b| {
        b.iter(|| policy.decide(black_box(&subject), black_box(&scale::ALLOWED)).allowed)
    });
    g.bench_function("decide denied by rule", |b| {
        b.iter(|| policy.decide(black_box(&subject), black_box(&scale::DENIED)).allowed)
    });
    g.bench_function("decide no rule matched", |b| {
        b.iter(|| policy.decide(black_box(&subject), black_box(&scale::NO_MATCH)).allowed)
    });
    g.bench_function("decide_with_roles allowed (roles cached)", |b| {
        b.iter(|| {
            policy
                .decide_with_roles(black_box(&roles), black_box(&scale::ALLOWED))
                .allowed
        })
    });
    g.bench_function("decide_public", |b| {
        b.iter(|| policy.decide_public(black_box(&scale::PUBLIC)).allowed)
    });
    g.bench_function("normalize_path normal", |b| {
        b.iter(|| normalize_path(black_box("/idx-49-2024.06/_search"), NormalizeOptions::default()))
    });
    g.bench_function("normalize_path with dot segments and escapes", |b| {
        b.iter(|| {
            normalize_path(
                black_box("/app/%61pi/../idx-49-2024.06//_search"),
                NormalizeOptions::default(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, decide);
criterion_main!(benches);
