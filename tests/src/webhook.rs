//! A webhook receiver for alert tests: an HTTP server on `127.0.0.1:0` that
//! keeps every request it gets (path and JSON body) and answers each with
//! the next status of a script (then 200 for ever), so tests can check what
//! was posted and that failures were retried.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::net::TcpListener;

/// One request the receiver got, and the status it answered.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: Value,
    pub answered: u16,
}

#[derive(Debug, Default)]
struct State {
    script: Vec<u16>,
    received: Vec<Received>,
}

/// A running receiver; stops when dropped.
#[derive(Debug)]
pub struct Webhook {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Webhook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Webhook {
    /// Answers the first requests with `script`, in order, then 200.
    pub async fn start(script: &[u16]) -> Webhook {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind webhook");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            script: script.iter().rev().copied().collect(),
            received: Vec::new(),
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let path = req.uri().path().to_owned();
                            let bytes = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
                            let mut state = state.lock();
                            let answered = state.script.pop().unwrap_or(200);
                            state.received.push(Received { path, body, answered });
                            let resp = http::Response::builder()
                                .status(answered)
                                .body(Full::new(Bytes::new()))
                                .expect("response");
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Webhook { addr, state, task }
    }

    /// `http://127.0.0.1:port` followed by `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Everything received so far, in order.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().received.clone()
    }

    /// Waits (10 s at most) until `pred` holds for what was received, and
    /// returns it; panics naming `what` otherwise.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let received = self.received();
            if pred(&received) {
                return received;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "webhook never got {what}; got {received:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
