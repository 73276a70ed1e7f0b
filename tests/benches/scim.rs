//! SCIM over HTTP on loopback (`cargo bench -p portcullis-tests --bench scim`).
//!
//! Starts a real Portcullis in this process (release build, store in a temp
//! directory) and runs the load from a separate process (`scim-load`), which
//! measures, with 32 concurrent clients: durable user creates per second;
//! one group PATCH adding 10,000 members; `filter=userName eq "..."` latency
//! (p50/p99) at 100,000 users; paging through all 100,000 users. The peer is
//! the directory's own durable create rate without HTTP and JSON, measured
//! in the same run (the ratio shows what the SCIM layer costs).
//!
//! Targets (issue "SCIM"): >= 10,000 creates/s, 10,000-member PATCH under
//! 200 ms, filter p99 under 2 ms. `PORTCULLIS_BENCH_SCALE=0.1` runs a
//! smaller version.

use std::sync::Arc;
use std::time::Instant;

use portcullis_tests::{OKTA_TOKEN, TestServer};
use serde_json::json;

fn main() {
    let scale: f64 = std::env::var("PORTCULLIS_BENCH_SCALE")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);
    let n = |x: usize| ((x as f64 * scale) as usize).max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(n(100_000), n(10_000)));
}

async fn run(users: usize, members: usize) {
    println!("# SCIM over HTTP on loopback, 32 concurrent clients in a separate process");
    let peer = directory_peer(users.min(20_000)).await;
    println!("peer: directory durable creates without HTTP, 32 writers: {peer:.0} /s");
    // PORTCULLIS_BENCH_WORKERS sets `[server] workers`. The default is one
    // server worker, not one per CPU: the load generator runs on the same
    // machine, and a second worker would take its core, so the figures
    // (latency above all) would measure the two processes' contention for
    // the CPUs rather than the server. `PORTCULLIS_BENCH_WORKERS=2` shows
    // that case on two cores.
    let workers = std::env::var("PORTCULLIS_BENCH_WORKERS").unwrap_or_else(|_| "1".into());
    println!("server: [server] workers = {workers}");
    let workers = format!("workers = {workers}");
    let server = TestServer::start_full(&workers, "", &[]).await;
    let status = tokio::process::Command::new(env!("CARGO_BIN_EXE_scim-load"))
        .arg(format!("{}/scim/v2", server.url))
        .arg(OKTA_TOKEN)
        .arg(users.to_string())
        .arg(members.to_string())
        .arg(peer.to_string())
        .status()
        .await
        .expect("run scim-load");
    assert!(status.success(), "scim-load failed: {status}");
    server.stop().await;
}

async fn directory_peer(count: usize) -> f64 {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir =
        portcullis_directory::Directory::open(tmp.path(), portcullis_directory::Options::default()).expect("open");
    let client: portcullis_directory::Id = Arc::from("peer");
    let per = count / 32;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..32 {
        let (dir, client) = (dir.clone(), client.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..per {
                let doc = portcullis_tests::obj(json!({"userName": format!("p{w}-{i}@example.com")}));
                dir.create_user(&client, doc).await.expect("create");
            }
        }));
    }
    for t in tasks {
        t.await.expect("peer writer");
    }
    (per * 32) as f64 / start.elapsed().as_secs_f64()
}
