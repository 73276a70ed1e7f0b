//! The load generator of the SCIM benchmark (`benches/scim.rs`), run as its
//! own process so that it does not share the server's async runtime:
//! `scim-load BASE_URL TOKEN USERS MEMBERS PEER_RATE`. Prints one line per
//! measure. Not a test; bounded by its arguments.

use std::sync::Arc;
use std::time::{Duration, Instant};

use portcullis_tests::{ScimClient, encode};
use serde_json::json;

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [base, token, users, members, peer] = args.as_slice() else {
        eprintln!("usage: scim-load BASE_URL TOKEN USERS MEMBERS PEER_RATE");
        std::process::exit(2);
    };
    let number = |s: &str| s.parse::<f64>().unwrap_or_else(|_| panic!("not a number: {s}"));
    // One thread, as wrk runs with one in the proxy benchmark: on two cores
    // a second load thread only takes CPU from the server it measures.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(load(
        base.clone(),
        token.clone(),
        number(users) as usize,
        number(members) as usize,
        number(peer),
    ));
}

async fn load(base: String, token: String, users: usize, members: usize, peer: f64) {
    let client = Arc::new(ScimClient {
        base,
        token: Some(token),
        http: portcullis_tests::http_client(),
    });

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

    // Filter latency: right after the bulk load (the store may still be
    // writing it out), then again after a second of quiet.
    for when in ["right after the load", "after 1 s idle"] {
        if when != "right after the load" {
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        let lat = filter_latencies(&client, per).await;
        println!(
            "filter userName eq at {} users, {when}: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over {} queries (target p99 < 2 ms)",
            ids.len(),
            pct(&lat, 0.5),
            pct(&lat, 0.99),
            pct(&lat, 1.0),
            lat.len()
        );
    }

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
}

/// 32 clients, 200 `userName eq` queries each; the sorted latencies.
async fn filter_latencies(client: &Arc<ScimClient>, per: usize) -> Vec<Duration> {
    // 32,000 queries (about a second at this rate): enough for a p99 that
    // does not hang on a handful of scheduling hiccups.
    let queries = 1000usize;
    let mut tasks = Vec::new();
    for w in 0..32 {
        let c = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut l = Vec::with_capacity(queries);
            for i in 0..queries {
                let name = format!("user{w}-{}@example.com", (i * 7919) % per.max(1));
                let path = format!("/Users?filter={}", encode(&format!("userName eq \"{name}\"")));
                // Timed: the exchange, up to the last byte of the answer;
                // checking the answer comes after.
                let start = Instant::now();
                let (status, _, body) = c.send_raw(http::Method::GET, &path, None, &[]).await;
                l.push(start.elapsed());
                assert_eq!(status, 200);
                let body: serde_json::Value = serde_json::from_slice(&body).expect("JSON list response");
                assert_eq!(body["totalResults"], 1);
            }
            l
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("reader"));
    }
    lat.sort();
    lat
}
