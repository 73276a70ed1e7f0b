//! Large bodies stream through the proxy in both directions with flat
//! memory: 1 GiB up and 1 GiB down, while the resident set of this process
//! (proxy, upstream and client all live in it) is sampled.
//!
//! Alone in its own test binary so no other test's allocations disturb the
//! measurement.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis_tests::TestServer;
use portcullis_tests::upstream::Upstream;

const GIB: u64 = 1 << 30;
/// How much the resident set may grow while a gibibyte passes through.
const GROWTH_LIMIT: u64 = 64 << 20;

fn rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Samples the RSS every 10 ms until stopped; returns the peak.
fn sampler() -> (Arc<AtomicBool>, tokio::task::JoinHandle<u64>) {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let task = tokio::spawn(async move {
        let mut peak = 0;
        while !flag.load(Ordering::Relaxed) {
            peak = peak.max(rss());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        peak
    });
    (stop, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gibibyte_each_way_with_flat_memory() {
    let app = Upstream::start("app").await;
    let policy = "[public]\nallow = [{ route = \"app\", paths = [\"/**\"] }]\n";
    let config = format!("[[routes]]\nname = \"app\"\nupstream = \"{}\"\n", app.url());
    let server = TestServer::start(&config, &[("app.toml", policy)]).await;
    let client: Client<_, http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>> =
        Client::builder(TokioExecutor::new()).build_http();

    // Warm up allocator pools and connections first.
    let warm = client
        .request(
            Request::get(format!("{}/big?bytes={}", server.url, 1 << 24))
                .body(http_body_util::Empty::new().boxed())
                .expect("req"),
        )
        .await
        .expect("warm-up");
    let _ = warm.into_body().collect().await;
    let base = rss();

    // Download.
    let (stop, peak) = sampler();
    let resp = client
        .request(
            Request::get(format!("{}/big?bytes={GIB}", server.url))
                .body(http_body_util::Empty::new().boxed())
                .expect("req"),
        )
        .await
        .expect("download");
    assert_eq!(resp.status(), StatusCode::OK);
    let mut body = resp.into_body();
    let mut got = 0u64;
    while let Some(frame) = body.frame().await {
        got += frame.expect("frame").data_ref().map_or(0, |d| d.len() as u64);
    }
    stop.store(true, Ordering::Relaxed);
    let down_peak = peak.await.expect("sampler");
    assert_eq!(got, GIB);

    // Upload, generated chunk by chunk.
    let (stop, peak) = sampler();
    let sent = Arc::new(AtomicU64::new(0));
    let counter = sent.clone();
    let chunk = Bytes::from(vec![7u8; 256 * 1024]);
    let stream = futures_util::stream::unfold(GIB, move |left| {
        let chunk = chunk.clone();
        let counter = counter.clone();
        async move {
            if left == 0 {
                return None;
            }
            let n = left.min(chunk.len() as u64);
            counter.fetch_add(n, Ordering::Relaxed);
            Some((
                Ok::<_, std::convert::Infallible>(Frame::data(chunk.slice(..n as usize))),
                left - n,
            ))
        }
    });
    let resp = client
        .request(
            Request::post(format!("{}/upload", server.url))
                .body(StreamBody::new(stream).boxed())
                .expect("req"),
        )
        .await
        .expect("upload");
    assert_eq!(resp.status(), StatusCode::OK);
    let text = resp.into_body().collect().await.expect("body").to_bytes();
    stop.store(true, Ordering::Relaxed);
    let up_peak = peak.await.expect("sampler");
    assert_eq!(String::from_utf8_lossy(&text), GIB.to_string());
    assert_eq!(sent.load(Ordering::Relaxed), GIB);

    let down = down_peak.saturating_sub(base);
    let up = up_peak.saturating_sub(base);
    eprintln!(
        "rss before {} MiB, growth downloading 1 GiB {} MiB, uploading 1 GiB {} MiB",
        base >> 20,
        down >> 20,
        up >> 20
    );
    assert!(down < GROWTH_LIMIT, "download grew the RSS by {} MiB", down >> 20);
    assert!(up < GROWTH_LIMIT, "upload grew the RSS by {} MiB", up >> 20);
}
