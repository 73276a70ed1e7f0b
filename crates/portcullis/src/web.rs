//! Serving HTTP on a bound listener: HTTP/1.1 and HTTP/2 on each accepted
//! connection (by ALPN under TLS, by preface otherwise), optional TLS
//! termination, and graceful shutdown that drains in-flight requests under a
//! deadline.
//!
//! This is transport only: what a request means is the service's business.
//! Each connection gets its own service from `make`, which is told who the
//! peer is and whether the connection is encrypted, since the proxy needs
//! both for `X-Forwarded-*` and the client address it logs.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
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
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport")
            .field("tls", &self.tls.is_some())
            .field("header_read_timeout", &self.header_read_timeout)
            .field("grace", &self.grace)
            .finish()
    }
}

impl Transport {
    /// Plain HTTP with default timeouts.
    pub fn plain(grace: Duration) -> Self {
        Transport {
            tls: None,
            header_read_timeout: Duration::from_secs(30),
            grace,
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
    let protocols = Protocols::new(&transport);
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
                let connection = Connection {
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

/// The HTTP/1.1 and HTTP/2 settings every connection of a listener uses.
///
/// Each connection is served by the one protocol it speaks (hyper's
/// `http1` or `http2` connection), not by hyper-util's `auto` connection,
/// which holds the state of both: with 10,000 idle keep-alive connections
/// that was 222 MB of memory against 148 MB this way.
#[derive(Clone)]
struct Protocols {
    http1: hyper::server::conn::http1::Builder,
    http2: hyper::server::conn::http2::Builder<TokioExecutor>,
    header_read_timeout: Duration,
}

impl Protocols {
    fn new(transport: &Transport) -> Self {
        let mut http1 = hyper::server::conn::http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            .header_read_timeout(transport.header_read_timeout);
        let mut http2 = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
        http2.timer(TokioTimer::new());
        Protocols {
            http1,
            http2,
            header_read_timeout: transport.header_read_timeout,
        }
    }
}

/// One accepted connection, until it ends.
struct Connection {
    peer: SocketAddr,
    protocols: Protocols,
    /// Becomes `true` when the server shuts down.
    stopped: tokio::sync::watch::Receiver<bool>,
    /// Held for the connection's life; see `serve_from`.
    _alive: tokio::sync::mpsc::Sender<()>,
}

/// Which HTTP a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    Http1,
    Http2,
}

impl Connection {
    /// TLS handshake (when configured) and protocol choice, then HTTP until
    /// the client leaves or shutdown drains the connection. Before it
    /// speaks HTTP a connection has nothing to drain, so shutdown simply
    /// closes it.
    async fn serve<S, B>(mut self, stream: tokio::net::TcpStream, tls: Option<TlsAcceptor>, service: S)
    where
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
        S::Future: Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let peer = self.peer;
        let mut stopped = self.stopped.clone();
        let stop = async move {
            let _ = stopped.wait_for(|s| *s).await;
        };
        match tls {
            None => {
                let sniffed = tokio::select! {
                    p = tokio::time::timeout(self.protocols.header_read_timeout, sniff(&stream)) => p,
                    () = stop => return,
                };
                match sniffed {
                    Ok(Ok(Some(protocol))) => self.http(protocol, TokioIo::new(stream), service).await,
                    Ok(Ok(None)) => {}
                    Ok(Err(e)) => tracing::debug!(%peer, error = %e, "connection failed before its first request"),
                    Err(_) => tracing::debug!(%peer, "no request before the header read timeout"),
                }
            }
            Some(acceptor) => {
                let handshake = tokio::select! {
                    h = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => h,
                    () = stop => return,
                };
                let tls = match handshake {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "tls handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "tls handshake timed out");
                        return;
                    }
                };
                let protocol = if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Protocol::Http2
                } else {
                    Protocol::Http1
                };
                self.http(protocol, TokioIo::new(tls), service).await;
            }
        }
    }

    async fn http<I, S, B>(&mut self, protocol: Protocol, io: I, service: S)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
        S::Future: Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let result = match protocol {
            Protocol::Http1 => {
                let conn = self.protocols.http1.serve_connection(io, service).with_upgrades();
                drain_on_stop(conn, &mut self.stopped, |c| c.graceful_shutdown()).await
            }
            Protocol::Http2 => {
                let conn = self.protocols.http2.serve_connection(io, service);
                drain_on_stop(conn, &mut self.stopped, |c| c.graceful_shutdown()).await
            }
        };
        if let Err(e) = result {
            tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
        }
    }
}

/// Runs a connection; when the server stops, asks it to finish its
/// in-flight requests and close, and runs it until it has.
async fn drain_on_stop<C, T>(
    conn: C,
    stopped: &mut tokio::sync::watch::Receiver<bool>,
    graceful_shutdown: impl FnOnce(std::pin::Pin<&mut C>),
) -> T
where
    C: Future<Output = T>,
{
    tokio::pin!(conn);
    tokio::select! {
        result = conn.as_mut() => return result,
        _ = stopped.wait_for(|s| *s) => graceful_shutdown(conn.as_mut()),
    }
    conn.await
}

/// What a plain-text connection speaks, from its first bytes, left unread
/// for hyper: HTTP/2 when they are the HTTP/2 connection preface (prior
/// knowledge, RFC 9113 section 3.3), HTTP/1 otherwise. `None` when the
/// client closes before sending anything.
async fn sniff(stream: &tokio::net::TcpStream) -> std::io::Result<Option<Protocol>> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    let mut buf = [0u8; PREFACE.len()];
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 {
            return Ok(None);
        }
        if buf.get(..n) != PREFACE.get(..n) {
            return Ok(Some(Protocol::Http1));
        }
        if n == PREFACE.len() {
            return Ok(Some(Protocol::Http2));
        }
        // Part of the preface so far. `peek` returns at once while those
        // bytes wait unread, so give the rest a moment to arrive (the
        // caller bounds the whole wait by the header read timeout).
        tokio::time::sleep(Duration::from_millis(2)).await;
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// What `sniff` decides when the client sends `parts`, one write each
    /// with a pause between, then closes (`close`) or waits.
    async fn check(parts: &[&[u8]], close: bool, expected: Option<Protocol>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let sent = String::from_utf8_lossy(&parts.concat()).into_owned();
        let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
        let client = tokio::spawn(async move {
            let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
            for p in parts {
                tcp.write_all(&p).await.expect("write");
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            if !close {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        });
        let (stream, _) = listener.accept().await.expect("accept");
        let got = tokio::time::timeout(Duration::from_secs(1), sniff(&stream))
            .await
            .expect("sniff decides in time")
            .expect("sniff");
        assert_eq!(got, expected, "{sent:?}");
        // What was sniffed is still there for hyper to read.
        let mut first = [0u8; 1];
        if expected.is_some() {
            assert_eq!(stream.peek(&mut first).await.expect("peek"), 1);
        }
        client.abort();
    }

    #[tokio::test]
    async fn plain_connections_are_told_apart_by_their_first_bytes() {
        let preface: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
        check(&[b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"], false, Some(Protocol::Http1)).await;
        check(&[preface], false, Some(Protocol::Http2)).await;
        // The preface split across segments still gives HTTP/2.
        check(
            &[b"PR", b"I * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n"],
            false,
            Some(Protocol::Http2),
        )
        .await;
        // A start that leaves the preface is HTTP/1, even after a pause.
        check(&[b"PR", b"OPFIND / HTTP/1.1\r\n"], false, Some(Protocol::Http1)).await;
        check(&[b"POST / HTTP/1.1\r\n"], false, Some(Protocol::Http1)).await;
        // Closed before a byte: nothing to serve.
        check(&[], true, None).await;
    }
}
