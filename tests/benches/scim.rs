//! SCIM over HTTP on loopback (`cargo bench -p portcullis-tests --bench scim`).
//!
//! Starts a real Portcullis (release build, store in a temp directory) and
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
use std::time::{Duration, Instant};

use portcullis_tests::{OKTA_TOKEN, TestServer, encode};
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

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

async fn run(users: usize, members: usize) {
    println!("# SCIM over HTTP on loopback, 32 concurrent clients");
    let peer = directory_peer(users.min(20_000)).await;
    println!("peer: directory durable creates without HTTP, 32 writers: {peer:.0} /s");

    let server = TestServer::start("", &[]).await;
    let client = Arc::new(server.scim(OKTA_TOKEN));

    // Durable creates.
    let start = Instant::now();
    let per = users / 32;
    let mut tasks = Vec::new();
    for w in 0..32 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::with_capacity(per);
            for i in 0..per {
                let name = format!("user{w}-{i}@example.com");
                let r = c
                    .post(
                        "/Users",
                        &json!({"userName": name, "name": {"givenName": "G", "familyName": "F"},
                                "emails": [{"value": name, "type": "work", "primary": true}], "active": true}),
                    )
                    .await;
                assert_eq!(r.status, 201, "{}", r.body);
                ids.push(r.body["id"].as_str().unwrap_or_default().to_owned());
            }
            ids
        }));
    }
    let mut ids = Vec::with_capacity(users);
    for t in tasks {
        ids.extend(t.await.expect("writer"));
    }
    let rate = ids.len() as f64 / start.elapsed().as_secs_f64();
    println!(
        "durable user creates over HTTP: {rate:.0} /s ({} users; {:.2}x the directory peer; target >= 10,000 /s)",
        ids.len(),
        rate / peer
    );

    // One PATCH adding `members` members.
    let g = client.post("/Groups", &json!({"displayName": "big"})).await;
    let gid = g.body["id"].as_str().unwrap_or_default().to_owned();
    let value: Vec<_> = ids.iter().take(members).map(|id| json!({"value": id})).collect();
    let body = json!({"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
                      "Operations": [{"op": "add", "path": "members", "value": value}]});
    let start = Instant::now();
    let r = client.patch(&format!("/Groups/{gid}"), &body).await;
    let took = start.elapsed();
    assert_eq!(r.status, 204, "{}", r.body);
    println!(
        "group PATCH adding {} members: {:.0} ms (target < 200 ms)",
        value.len(),
        took.as_secs_f64() * 1e3
    );

    // Filter latency.
    let mut lat = Vec::new();
    let mut tasks = Vec::new();
    let queries = 200usize;
    for w in 0..32 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut l = Vec::new();
            for i in 0..queries {
                let name = format!("user{w}-{}@example.com", (i * 7919) % per.max(1));
                let path = format!("/Users?filter={}", encode(&format!("userName eq \"{name}\"")));
                let start = Instant::now();
                let r = c.get(&path).await;
                l.push(start.elapsed());
                assert_eq!(r.body["totalResults"], 1);
            }
            l
        }));
    }
    for t in tasks {
        lat.extend(t.await.expect("reader"));
    }
    lat.sort();
    println!(
        "filter userName eq at {} users: p50 {:.2} ms, p99 {:.2} ms over {} queries (target p99 < 2 ms)",
        ids.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        lat.len()
    );

    // Full paging.
    let start = Instant::now();
    let mut seen = 0usize;
    let mut index = 1usize;
    loop {
        let r = client.get(&format!("/Users?startIndex={index}&count=1000")).await;
        let page = r.body["itemsPerPage"].as_u64().unwrap_or(0) as usize;
        seen += page;
        if page == 0 || seen >= r.body["totalResults"].as_u64().unwrap_or(0) as usize {
            break;
        }
        index += page;
    }
    let took = start.elapsed();
    println!(
        "full list of {seen} users in pages of 1,000: {:.2} s ({:.0} users/s)",
        took.as_secs_f64(),
        seen as f64 / took.as_secs_f64()
    );
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
