//! Criterion benchmark of bearer-token verification and assertion signing
//! (`cargo bench -p portcullis-oidc`; add `-- --warm-up-time 1
//! --measurement-time 2` for a quick run). Measures, for RS256, ES256 and
//! EdDSA tokens of a realistic size (about 1 KiB: a dozen claims and a few
//! groups):
//!
//! - `verify (cache hit)`: the proxy's hot path, a token seen before;
//! - `verify (cold)`: a full verification (parse, key choice, signature,
//!   claims), as for a token seen for the first time;
//!
//! and `AssertionSigner::sign` for a typical assertion. The keys come from
//! an in-process `TestIssuer` on 127.0.0.1. It does not measure fetching.
//!
//! Every verify future here completes on its first poll (no fetch is
//! needed), so it is polled directly rather than through a runtime, which
//! would add its own overhead to a sub-microsecond figure.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use portcullis_oidc::testing::{Alg, TestIssuer};
use portcullis_oidc::{AssertionClaims, AssertionSigner, Verifier};
use serde_json::json;

/// Polls a future that is expected to be ready at once.
fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(future).poll(&mut cx) {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("benchmarked future was not ready at once"),
    }
}

fn realistic_claims() -> serde_json::Value {
    json!({
        "sub": "5f0c8c1e-8d5a-4c57-9a43-2f2d7c1b9e11",
        "preferred_username": "alice@example.com",
        "email": "alice@example.com",
        "email_verified": true,
        "name": "Alice Liddell",
        "given_name": "Alice",
        "family_name": "Liddell",
        "azp": "portcullis",
        "scope": "openid profile email",
        "sid": "0a6e3c9d-2b1f-4e5a-8c7d-9f0e1d2c3b4a",
        "groups": ["logs-readers", "metrics-readers", "kibana-users", "oncall-platform", "team-search"],
    })
}

fn verify(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime");
    let idp = rt.block_on(TestIssuer::start());
    let verifier = Verifier::new(idp.issuer_config()).expect("configuration");
    rt.block_on(verifier.refresh()).expect("keys");

    let mut g = c.benchmark_group("oidc");
    for alg in Alg::ALL {
        let token = idp.mint(alg, realistic_claims());
        println!("{} token: {} bytes", alg.name(), token.len());
        let _guard = rt.enter();
        now_or_never(verifier.verify(&token)).expect("valid token");
        g.bench_function(format!("verify (cache hit) {}", alg.name()), |b| {
            b.iter(|| now_or_never(verifier.verify(black_box(&token))).expect("valid"))
        });
        g.bench_function(format!("verify (cold) {}", alg.name()), |b| {
            b.iter(|| now_or_never(verifier.verify_uncached(black_box(&token))).expect("valid"))
        });
    }

    let signer = AssertionSigner::generate("https://portcullis.example.com").expect("key");
    let groups = ["logs-readers", "metrics-readers", "kibana-users"];
    let claims = AssertionClaims {
        subject: "alice@example.com",
        audience: "https://es.example.com",
        ttl: Duration::from_secs(60),
        email: Some("alice@example.com"),
        name: Some("Alice Liddell"),
        groups: &groups,
        roles: &["kibana_user"],
    };
    g.bench_function("assertion sign ES256", |b| {
        b.iter(|| signer.sign(black_box(&claims)).expect("signs"))
    });
    g.finish();
}

criterion_group!(benches, verify);
criterion_main!(benches);
