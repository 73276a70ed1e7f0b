//! Serving HTTP on a bound listener: accepting, handing connections to
//! worker threads, optional TLS termination, and graceful shutdown that
//! drains in-flight requests under a deadline. One connection's life
//! (protocol choice, HTTP/1.1 and HTTP/2, parking idle HTTP/1.1
//! connections) is in `conn.rs`; what makes parking possible is in
//! `park.rs`.
//!
//! This is transport only: what a request means is the service's business.
//! Each connection gets its own service from `make`, which is told who the
//! peer is and whether the connection is encrypted, since the proxy needs
//! both for `X-Forwarded-*` and the client address it logs.

mod conn;
mod park;
#[cfg(test)]
mod tests;

pub use conn::{ConnCounts, ConnStats};

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Request, Response};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// The response body type of Portcullis's own endpoints.
pub type Body = Full<Bytes>;

/// An error from a boxed body.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How long a TLS handshake may take before the connection is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What a service knows about the connection a request came on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnInfo {
    pub peer: SocketAddr,
    pub tls: bool,
}

/// Transport settings of one listener.
#[derive(Clone)]
pub struct Transport {
    /// Terminate TLS with this acceptor; plain TCP when `None`.
    pub tls: Option<TlsAcceptor>,
    /// Longest time to receive a request's headers (HTTP/1).
    pub header_read_timeout: Duration,
    /// How long in-flight requests may finish after shutdown begins.
    pub grace: Duration,
    /// How long an HTTP/1.1 connection waits for its next request before
    /// it is parked (served by no hyper connection until the client sends
    /// again; see `conn.rs`).
    pub park_after: Duration,
    /// Connection counts, shared by every worker of the listener.
    pub stats: Arc<ConnStats>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("tls", &self.tls.is_some())
            .field("header_read_timeout", &self.header_read_timeout)
            .field("grace", &self.grace)
            .field("park_after", &self.park_after)
            .finish()
    }
}

/// How long an idle HTTP/1.1 connection keeps its hyper connection: long
/// enough that a client sending request after request does not pay for a
/// new one each time, short against how long keep-alive connections
/// usually sit idle (seconds to minutes between a person's clicks, a
/// dashboard's polls, a load balancer's checks). Parking costs nothing a
/// client can see; resuming costs a new hyper connection, a few
/// microseconds.
pub const PARK_AFTER: Duration = Duration::from_millis(250);

impl Transport {
    /// Plain HTTP with default timeouts.
    pub fn plain(grace: Duration) -> Self {
        Transport {
            tls: None,
            header_read_timeout: Duration::from_secs(30),
            grace,
            park_after: PARK_AFTER,
            stats: Arc::default(),
        }
    }
}

/// Accepts connections until `shutdown` resolves, then stops accepting and
/// waits up to the grace period for open connections to finish their
/// requests.
pub async fn serve<M, S, B>(listener: TcpListener, make: M, transport: Transport, shutdown: impl Future<Output = ()>)
where
    M: Fn(ConnInfo) -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    serve_from(Accepted::Listener(listener), make, transport, shutdown).await;
}

/// Where a server's connections come from: its own listener, or a channel
/// fed by an acceptor on another thread (see [`Workers`]).
enum Accepted {
    Listener(TcpListener),
    Channel(tokio::sync::mpsc::UnboundedReceiver<(std::net::TcpStream, SocketAddr)>),
}

impl Accepted {
    /// The next connection; `None` when the channel's sender is gone.
    async fn next(&mut self) -> Option<std::io::Result<(tokio::net::TcpStream, SocketAddr)>> {
        match self {
            Accepted::Listener(l) => Some(l.accept().await),
            Accepted::Channel(rx) => {
                let (stream, peer) = rx.recv().await?;
                Some(tokio::net::TcpStream::from_std(stream).map(|s| (s, peer)))
            }
        }
    }
}

async fn serve_from<M, S, B>(mut source: Accepted, make: M, transport: Transport, shutdown: impl Future<Output = ()>)
where
    M: Fn(ConnInfo) -> S,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let protocols = Arc::new(conn::Protocols::new(&transport));
    // Shutdown is broadcast to every connection task, and each task holds a
    // clone of `alive` until it ends: when the receiver sees every sender
    // gone, every connection has drained.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let (alive, mut all_ended) = tokio::sync::mpsc::channel::<()>(1);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = source.next() => {
                let (stream, peer) = match accepted {
                    None => break,
                    Some(Ok(conn)) => conn,
                    Some(Err(e)) => {
                        accept_failed(&e).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let service = make(ConnInfo { peer, tls: transport.tls.is_some() });
                let connection = conn::Connection {
                    peer,
                    protocols: protocols.clone(),
                    stopped: stopped.clone(),
                    _alive: alive.clone(),
                };
                tokio::spawn(connection.serve(stream, transport.tls.clone(), service));
            }
            () = &mut shutdown => break,
        }
    }
    drop(source);
    let _ = stop.send(true);
    drop(alive);
    if tokio::time::timeout(transport.grace, all_ended.recv()).await.is_err() {
        tracing::warn!(
            grace_secs = transport.grace.as_secs(),
            "connections still open after the grace period; closing them"
        );
    }
}

/// Threads serving one listener, each with its own single-threaded runtime
/// and its own service (so per-worker state such as upstream connection
/// pools stays on one thread and a request never crosses threads). One
/// acceptor hands connections to the workers in turn, which spreads them
/// evenly; workers that all accepted from the socket would race for each
/// connection and could end up with most of them on one thread.
#[derive(Debug)]
pub struct Workers {
    listener: TcpListener,
    queues: Vec<tokio::sync::mpsc::UnboundedSender<(std::net::TcpStream, SocketAddr)>>,
    stop: tokio::sync::watch::Sender<bool>,
    done: Vec<tokio::sync::oneshot::Receiver<()>>,
}

impl Workers {
    /// Starts one worker per service; fails if a thread or runtime cannot
    /// be created, before anything is served.
    pub fn start<M, S, B>(listener: TcpListener, services: Vec<M>, transport: Transport) -> std::io::Result<Workers>
    where
        M: Fn(ConnInfo) -> S + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
        S::Future: Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        let mut done = Vec::with_capacity(services.len());
        let mut queues = Vec::with_capacity(services.len());
        for (i, make) in services.into_iter().enumerate() {
            let (queue, connections) = tokio::sync::mpsc::unbounded_channel();
            let transport = transport.clone();
            let mut stopped = stop_rx.clone();
            let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            std::thread::Builder::new()
                .name(format!("portcullis-worker-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let shutdown = async move {
                            let _ = stopped.wait_for(|s| *s).await;
                        };
                        serve_from(Accepted::Channel(connections), make, transport, shutdown).await;
                    });
                    drop(done_tx);
                })?;
            queues.push(queue);
            done.push(done_rx);
        }
        Ok(Workers {
            listener,
            queues,
            stop,
            done,
        })
    }

    /// Accepts and serves until `shutdown` resolves, then waits for every
    /// worker to drain.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut next = 0usize;
        loop {
            tokio::select! {
                accepted = self.listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(conn) => conn,
                        Err(e) => {
                            accept_failed(&e).await;
                            continue;
                        }
                    };
                    let Ok(stream) = stream.into_std() else { continue };
                    if let Some(queue) = self.queues.get(next % self.queues.len().max(1)) {
                        let _ = queue.send((stream, peer));
                    }
                    next = next.wrapping_add(1);
                }
                () = &mut shutdown => break,
            }
        }
        drop(self.listener);
        let _ = self.stop.send(true);
        for d in self.done {
            let _ = d.await;
        }
    }
}

/// Out of file descriptors and the like: log, and back off rather than
/// spin on the failing accept.
async fn accept_failed(e: &std::io::Error) {
    tracing::warn!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(50)).await;
}

/// A small JSON response.
pub fn json(status: http::StatusCode, body: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}
