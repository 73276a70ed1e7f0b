//! The client side: one connection pool per route, with the route's TLS
//! settings and timeouts, and the tunnel for upgraded connections.
//!
//! The pool is Portcullis's own, on hyper's connection-level client: an
//! HTTP/1.1 connection goes back to the pool the moment its response body
//! has been read to the end (nothing else to wait for, no task per request),
//! and a request that a pooled connection refused before sending anything
//! (the upstream closed it while idle) is retried once on a new connection.
//! So is an idempotent request without a body that went out on a
//! connection idle for a second or more and was met by the upstream's
//! close instead of an answer: the upstream's keep-alive timeout and the
//! reuse crossed on the wire. Only for those is a copy of the request head
//! kept; a connection in steady use costs nothing extra.
//! HTTP/2 upstreams share one multiplexed connection per route.
//!
//! Bodies stream in both directions; nothing here buffers a body. Timeouts:
//! `connect_timeout` (TCP connect and TLS handshake), `response_timeout`
//! (until the response headers arrive), `idle_timeout` (a pooled connection
//! unused this long is closed instead of reused), and the optional
//! `total_timeout`, which also bounds the response body.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use parking_lot::Mutex;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::ProxyBody;
use super::error::ProxyError;
use crate::config::Route;
use crate::tls::{TlsError, upstream_client_config};
use crate::web::BoxError;

/// Idle HTTP/1.1 connections kept per route; more are closed when freed.
const MAX_IDLE: usize = 1024;

/// A pooled connection idle this long may be closed by the upstream (its
/// keep-alive timeout) just as a request goes out on it. Upstreams close
/// idle connections after seconds (Node.js 5 s, Apache 5 s, gunicorn 2 s),
/// never after milliseconds, so a connection reused within this time that
/// closes instead of answering is an upstream failure, not that race.
const AT_RISK_AFTER: Duration = Duration::from_secs(1);

/// One route's upstream.
pub struct Upstream {
    https: Option<(TlsConnector, ServerName<'static>)>,
    host: String,
    port: u16,
    scheme: Scheme,
    authority: Authority,
    /// The upstream URL's path without its trailing slash ("" for "/").
    base_path: String,
    pub host_header: HeaderValue,
    connect_timeout: Duration,
    response_timeout: Duration,
    idle_timeout: Duration,
    total_timeout: Option<Duration>,
    pub http2: bool,
    pool: Arc<Pool>,
    /// Requests sent again on a new connection (see [`Self::retry_h1`]).
    retries: prometheus_client::metrics::counter::Counter,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("authority", &self.authority)
            .field("https", &self.https.is_some())
            .field("http2", &self.http2)
            .finish_non_exhaustive()
    }
}

/// Connections ready for reuse.
#[derive(Default)]
struct Pool {
    /// Most recently used last, so reuse keeps few connections warm.
    idle: Mutex<Vec<(http1::SendRequest<ProxyBody>, Instant)>>,
    /// The shared HTTP/2 connection.
    h2: Mutex<Option<http2::SendRequest<ProxyBody>>>,
    /// Response timers of finished exchanges, for the next ones. Making a
    /// timer, registering it in tokio's timer wheel and removing it again
    /// cost every request about 700 instructions; a kept timer reset to a
    /// later deadline only moves its expiry, and the wheel catches up when
    /// the old deadline comes. A kept timer still holds the waker of the
    /// last request that polled it (a task's allocation, at most
    /// `MAX_IDLE` of them) until it is used again or fires.
    timers: Mutex<Vec<Pin<Box<tokio::time::Sleep>>>>,
}

impl Pool {
    /// The most recently used idle connection that is neither expired nor
    /// closed, with when it was freed and how long it has been idle; those
    /// found on the way are dropped.
    fn pop_fresh(&self, idle_timeout: Duration) -> Option<(http1::SendRequest<ProxyBody>, Instant, Duration)> {
        let mut idle = self.idle.lock();
        while let Some((sender, since)) = idle.pop() {
            let unused = since.elapsed();
            if unused < idle_timeout && !sender.is_closed() {
                return Some((sender, since, unused));
            }
        }
        None
    }

    /// A response timer set to go off at `deadline`.
    fn timer(&self, deadline: tokio::time::Instant) -> Pin<Box<tokio::time::Sleep>> {
        let kept = self.timers.lock().pop();
        match kept {
            Some(mut timer) => {
                timer.as_mut().reset(deadline);
                timer
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        }
    }

    fn keep_timer(&self, timer: Pin<Box<tokio::time::Sleep>>) {
        let mut timers = self.timers.lock();
        if timers.len() < MAX_IDLE {
            timers.push(timer);
        }
    }

    fn give_back(&self, sender: http1::SendRequest<ProxyBody>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock();
        if idle.len() < MAX_IDLE {
            idle.push((sender, Instant::now()));
        }
    }
}

enum Sender {
    H1(http1::SendRequest<ProxyBody>),
    H2(http2::SendRequest<ProxyBody>),
}

impl Upstream {
    pub fn new(route: &Route) -> Result<Self, TlsError> {
        let invalid = |message: String| TlsError::Invalid {
            path: std::path::PathBuf::from(format!("routes.{}.upstream", route.name)),
            message,
        };
        let url = &route.upstream;
        let host = url
            .host_str()
            .ok_or_else(|| invalid("the upstream URL has no host".into()))?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| invalid("the upstream URL has no port".into()))?;
        let authority_text = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let authority: Authority = authority_text
            .parse()
            .map_err(|e| invalid(format!("bad upstream authority: {e}")))?;
        let host_header = HeaderValue::from_str(&authority_text).map_err(|e| invalid(e.to_string()))?;
        let https = if url.scheme() == "https" {
            let mut config = upstream_client_config(
                route.upstream_ca.as_deref(),
                route
                    .upstream_client_cert
                    .as_ref()
                    .map(|(c, k)| (c.as_path(), k.as_path())),
            )?;
            // One protocol per route, never negotiated: an upstream that
            // picked h2 would break WebSocket upgrades, which need HTTP/1.1.
            config.alpn_protocols = if route.upstream_http2 {
                vec![b"h2".to_vec()]
            } else {
                vec![b"http/1.1".to_vec()]
            };
            // IPv6 literals come bracketed in URLs but not in SNI.
            let name = host.trim_start_matches('[').trim_end_matches(']').to_owned();
            let server_name =
                ServerName::try_from(name).map_err(|e| invalid(format!("bad upstream host name: {e}")))?;
            Some((TlsConnector::from(Arc::new(config)), server_name))
        } else {
            None
        };
        Ok(Upstream {
            https,
            host: host.trim_start_matches('[').trim_end_matches(']').to_owned(),
            port,
            scheme: if url.scheme() == "https" {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            },
            authority,
            base_path: url.path().trim_end_matches('/').to_owned(),
            host_header,
            connect_timeout: route.connect_timeout,
            response_timeout: route.response_timeout,
            idle_timeout: route.idle_timeout,
            total_timeout: route.total_timeout,
            http2: route.upstream_http2,
            pool: Arc::default(),
            retries: Default::default(),
        })
    }

    /// Counts the requests sent again into `retries` (a metric).
    pub fn counting_retries(mut self, retries: prometheus_client::metrics::counter::Counter) -> Self {
        self.retries = retries;
        self
    }

    /// The URI to send for a normalized path and the client's raw query:
    /// origin-form for HTTP/1.1, absolute for HTTP/2 (its `:authority`).
    ///
    /// When the client's path is already the normalized one and the
    /// upstream URL has no path of its own (most requests, most routes),
    /// the client's path and query are moved over as received: no copy
    /// and no second parse.
    pub fn uri(&self, path: &str, client: &mut Uri) -> Result<Uri, ProxyError> {
        let bad = || ProxyError::bad_request("bad_path", "the request path cannot be forwarded");
        if !self.http2 && self.base_path.is_empty() && client.path_and_query().is_some_and(|pq| pq.path() == path) {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = std::mem::take(client).into_parts().path_and_query;
            return Uri::from_parts(parts).map_err(|_| bad());
        }
        let query = client.query();
        let mut pq = String::with_capacity(self.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        pq.push_str(&self.base_path);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        if self.http2 {
            Uri::builder()
                .scheme(self.scheme.clone())
                .authority(self.authority.clone())
                .path_and_query(pq)
                .build()
                .map_err(|_| bad())
        } else {
            Uri::try_from(pq).map_err(|_| bad())
        }
    }

    /// Sends the request and waits for the response headers, under the
    /// response timeout (and the total timeout, when shorter).
    ///
    /// The common case, a pooled HTTP/1.1 connection ready for the next
    /// request, is a small hand-written future ([`Sending`]) rather than
    /// nested `async fn`s: this future is part of every request's, which is
    /// allocated and copied per request, and an `async fn` keeps a copy of
    /// the request in each layer. Everything else is boxed: HTTP/2, no
    /// pooled connection ready, the retry on a fresh one (`exchange`), and
    /// a replayable request on a connection idle for `AT_RISK_AFTER`
    /// (`exchange_replayable`).
    pub fn send(
        &self,
        req: Request<ProxyBody>,
    ) -> Sending<'_, impl Future<Output = Result<Response<Incoming>, TrySendError>> + Send + use<>> {
        let wait = match self.total_timeout {
            Some(total) => total.min(self.response_timeout),
            None => self.response_timeout,
        };
        let state = match self.ready_h1() {
            Some((sender, unused)) if unused >= AT_RISK_AFTER && replayable(&req) => State::Other {
                fut: Box::pin(self.exchange_replayable(sender, req)),
            },
            Some((mut sender, _)) => State::Pooled {
                fut: sender.try_send_request(req),
                sender: Some(sender),
            },
            None => State::Other {
                fut: Box::pin(self.exchange(req)),
            },
        };
        Sending {
            upstream: self,
            wait,
            state,
            timer: Some(self.pool.timer(tokio::time::Instant::now() + wait)),
        }
    }

    /// The most recently used pooled HTTP/1.1 connection, if it can take a
    /// request now (expired and closed ones are dropped on the way), and
    /// how long it was idle.
    fn ready_h1(&self) -> Option<(http1::SendRequest<ProxyBody>, Duration)> {
        if self.http2 {
            return None;
        }
        let (sender, since, unused) = self.pool.pop_fresh(self.idle_timeout)?;
        if sender.is_ready() {
            return Some((sender, unused));
        }
        // Still finishing its last exchange: `exchange` waits for it.
        self.pool.idle.lock().push((sender, since));
        None
    }

    /// Any exchange but the pooled HTTP/1.1 one [`Self::send`] does itself.
    async fn exchange(&self, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ProxyError> {
        let (resp, sender) = match self.checkout().await? {
            Sender::H2(sender) => (self.exchange_h2(sender, req).await?, None),
            Sender::H1(mut sender) => match sender.try_send_request(req).await {
                Ok(resp) => (resp, Some(sender)),
                Err(mut e) => {
                    let Some(req) = e.take_message() else {
                        return Err(bad_gateway(e.error()));
                    };
                    return self.retry_h1(req).await;
                }
            },
        };
        Ok(self.response(resp, sender))
    }

    /// A request that [`replayable`] allows, on a connection idle for
    /// [`AT_RISK_AFTER`] or more: if the upstream closes the connection
    /// instead of answering, the request is sent once more on a new one.
    async fn exchange_replayable(
        &self,
        mut sender: http1::SendRequest<ProxyBody>,
        req: Request<ProxyBody>,
    ) -> Result<Response<ProxyBody>, ProxyError> {
        let replay = Replay::of(&req);
        match sender.try_send_request(req).await {
            Ok(resp) => Ok(self.response(resp, Some(sender))),
            Err(mut e) => match e.take_message() {
                Some(req) => self.retry_h1(req).await,
                None if closed_unanswered(e.error()) => {
                    tracing::debug!(
                        error = %e.error(),
                        "an idle upstream connection closed under an idempotent request; sending it again on a new connection"
                    );
                    self.retry_h1(replay.into_request()).await
                }
                None => Err(bad_gateway(e.error())),
            },
        }
    }

    /// The upstream's response, with a body that gives its HTTP/1.1
    /// connection back to the pool at its end.
    fn response(&self, resp: Response<Incoming>, sender: Option<http1::SendRequest<ProxyBody>>) -> Response<ProxyBody> {
        // An upgraded connection belongs to the tunnel, not the pool.
        let give_back = sender
            .filter(|_| resp.status() != StatusCode::SWITCHING_PROTOCOLS)
            .map(|s| (s, self.pool.clone()));
        let (parts, inner) = resp.into_parts();
        let mut body = UpstreamBody {
            inner,
            give_back,
            deadline: self.total_timeout.map(|t| Box::pin(tokio::time::sleep(t))),
        };
        if body.inner.is_end_stream() {
            // Nobody may ever poll an empty body (HEAD, 204, 304).
            body.finish();
        }
        Response::from_parts(parts, body.boxed())
    }

    async fn exchange_h2(
        &self,
        mut sender: http2::SendRequest<ProxyBody>,
        req: Request<ProxyBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        sender.send_request(req).await.map_err(|e| {
            // A broken shared connection is replaced on next use.
            self.pool.h2.lock().take();
            bad_gateway(&e)
        })
    }

    /// A request a pooled connection refused before anything was written
    /// (the upstream had just closed it) is safe to send again, once, on a
    /// new connection.
    async fn retry_h1(&self, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ProxyError> {
        self.retries.inc();
        let mut sender = Box::pin(self.connect_h1()).await?;
        let resp = sender.send_request(req).await.map_err(|e| bad_gateway(&e))?;
        Ok(self.response(resp, Some(sender)))
    }

    async fn checkout(&self) -> Result<Sender, ProxyError> {
        if self.http2 {
            let shared = self.pool.h2.lock().clone();
            if let Some(mut sender) = shared
                && !sender.is_closed()
                && sender.ready().await.is_ok()
            {
                return Ok(Sender::H2(sender));
            }
            // Boxed: connecting is the cold path, and its (TLS) state is
            // large; inline it would be copied around on every request.
            let sender = Box::pin(self.connect_h2()).await?;
            *self.pool.h2.lock() = Some(sender.clone());
            return Ok(Sender::H2(sender));
        }
        while let Some((mut sender, _, _)) = self.pool.pop_fresh(self.idle_timeout) {
            if sender.ready().await.is_ok() {
                return Ok(Sender::H1(sender));
            }
        }
        Ok(Sender::H1(Box::pin(self.connect_h1()).await?))
    }

    async fn connect_h1(&self) -> Result<http1::SendRequest<ProxyBody>, ProxyError> {
        match self.connect().await? {
            Stream::Plain(tcp) => handshake_h1(tcp).await,
            Stream::Tls(tls) => handshake_h1(*tls).await,
        }
    }

    async fn connect_h2(&self) -> Result<http2::SendRequest<ProxyBody>, ProxyError> {
        match self.connect().await? {
            Stream::Plain(tcp) => handshake_h2(tcp).await,
            Stream::Tls(tls) => handshake_h2(*tls).await,
        }
    }

    /// TCP connect and, for https, the TLS handshake, under the connect
    /// timeout.
    async fn connect(&self) -> Result<Stream, ProxyError> {
        let connect = async {
            let tcp =
                TcpStream::connect((self.host.as_str(), self.port))
                    .await
                    .map_err(|e| ProxyError::BadGateway {
                        detail: format!("connect to {}: {e}", self.authority),
                    })?;
            let _ = tcp.set_nodelay(true);
            match &self.https {
                None => Ok(Stream::Plain(tcp)),
                Some((connector, name)) => {
                    let tls = connector
                        .connect(name.clone(), tcp)
                        .await
                        .map_err(|e| ProxyError::BadGateway {
                            detail: format!("tls handshake with {}: {e}", self.authority),
                        })?;
                    Ok(Stream::Tls(Box::new(tls)))
                }
            }
        };
        match tokio::time::timeout(self.connect_timeout, connect).await {
            Ok(result) => result,
            Err(_) => Err(ProxyError::GatewayTimeout {
                detail: format!(
                    "connect to {} took longer than {}",
                    self.authority,
                    humantime::format_duration(self.connect_timeout)
                ),
            }),
        }
    }
}

type TrySendError = hyper::client::conn::TrySendError<Request<ProxyBody>>;

pin_project_lite::pin_project! {
    /// [`Upstream::send`]'s future: the exchange, and the timer for its
    /// response timeout.
    pub struct Sending<'a, F> {
        upstream: &'a Upstream,
        wait: Duration,
        #[pin]
        state: State<'a, F>,
        // Taken back into the pool when the exchange ends (`Pool::timer`).
        timer: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

pin_project_lite::pin_project! {
    #[project = StateProj]
    enum State<'a, F> {
        /// Sent on a pooled HTTP/1.1 connection; `fut` is hyper's wait for
        /// the response headers.
        Pooled {
            #[pin]
            fut: F,
            sender: Option<http1::SendRequest<ProxyBody>>,
        },
        /// Everything else, boxed.
        Other {
            fut: Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, ProxyError>> + Send + 'a>>,
        },
    }
}

impl<F> Future for Sending<'_, F>
where
    F: Future<Output = Result<Response<Incoming>, TrySendError>>,
{
    type Output = Result<Response<ProxyBody>, ProxyError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let polled = match this.state.as_mut().project() {
            StateProj::Other { fut } => fut.as_mut().poll(cx),
            StateProj::Pooled { fut, sender } => match fut.poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(resp)) => Poll::Ready(Ok(this.upstream.response(resp, sender.take()))),
                Poll::Ready(Err(mut e)) => match e.take_message() {
                    Some(req) => {
                        let upstream: &Upstream = this.upstream;
                        let mut fut = Box::pin(upstream.retry_h1(req));
                        let polled = fut.as_mut().poll(cx);
                        this.state.set(State::Other { fut });
                        polled
                    }
                    None => Poll::Ready(Err(bad_gateway(e.error()))),
                },
            },
        };
        if polled.is_pending() {
            // No timer only once the exchange has ended, when nothing polls.
            let Some(timer) = this.timer.as_mut() else {
                return Poll::Pending;
            };
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
        // Ended, answered or timed out: the timer serves the next exchange.
        if let Some(timer) = this.timer.take() {
            this.upstream.pool.keep_timer(timer);
        }
        match polled {
            Poll::Pending => Poll::Ready(Err(ProxyError::GatewayTimeout {
                detail: format!("no response headers within {}", humantime::format_duration(*this.wait)),
            })),
            ready => ready,
        }
    }
}

/// Whether a request may be sent twice: an idempotent method (RFC 9110,
/// section 9.2.2) and no body, so nothing has to be kept but the head.
fn replayable(req: &Request<ProxyBody>) -> bool {
    matches!(
        *req.method(),
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    ) && req.body().is_end_stream()
}

/// The head of a [`replayable`] request, to send it again.
struct Replay {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Replay {
    fn of(req: &Request<ProxyBody>) -> Replay {
        Replay {
            method: req.method().clone(),
            uri: req.uri().clone(),
            version: req.version(),
            headers: req.headers().clone(),
        }
    }

    fn into_request(self) -> Request<ProxyBody> {
        let mut req = Request::new(super::full(Bytes::new()));
        *req.method_mut() = self.method;
        *req.uri_mut() = self.uri;
        *req.version_mut() = self.version;
        *req.headers_mut() = self.headers;
        req
    }
}

/// Whether the upstream ended the connection where an answer should have
/// been: closed it, or reset it.
fn closed_unanswered(e: &hyper::Error) -> bool {
    if e.is_incomplete_message() {
        return true;
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
            );
        }
        source = err.source();
    }
    false
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn handshake_h1<T>(io: T) -> Result<http1::SendRequest<ProxyBody>, ProxyError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| bad_gateway(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(sender)
}

async fn handshake_h2<T>(io: T) -> Result<http2::SendRequest<ProxyBody>, ProxyError>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .handshake(TokioIo::new(io))
        .await
        .map_err(|e| bad_gateway(&e))?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream h2 connection ended with an error");
        }
    });
    Ok(sender)
}

/// 504 for timeouts, 502 for everything else. The error text (addresses,
/// TLS details) is for the log only.
fn bad_gateway(e: &hyper::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut chain = String::new();
    let mut timed_out = e.is_timeout();
    while let Some(err) = source {
        if !chain.is_empty() {
            chain.push_str(": ");
        }
        chain.push_str(&err.to_string());
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::TimedOut
        {
            timed_out = true;
        }
        source = err.source();
    }
    if timed_out {
        ProxyError::GatewayTimeout { detail: chain }
    } else {
        ProxyError::BadGateway { detail: chain }
    }
}

/// A response body from the upstream: returns its connection to the pool
/// at the end, and fails once the exchange's total time is up.
struct UpstreamBody {
    inner: Incoming,
    give_back: Option<(http1::SendRequest<ProxyBody>, Arc<Pool>)>,
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl UpstreamBody {
    fn finish(&mut self) {
        if let Some((sender, pool)) = self.give_back.take() {
            pool.give_back(sender);
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(deadline) = self.deadline.as_mut()
            && deadline.as_mut().poll(cx).is_ready()
        {
            // The connection is mid-response: never reuse it.
            self.give_back = None;
            return Poll::Ready(Some(Err("the upstream exchange exceeded its total timeout".into())));
        }
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => self.finish(),
            Poll::Ready(Some(Ok(_))) if self.inner.is_end_stream() => self.finish(),
            Poll::Ready(Some(Err(_))) => self.give_back = None,
            _ => {}
        }
        polled.map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Joins an upgraded client connection to the upgraded upstream connection
/// until either side closes, or until `live` says the user's access was
/// withdrawn.
pub async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    live: Option<super::live::LiveGuard>,
) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    let copy = tokio::io::copy_bidirectional(&mut client, &mut upstream);
    match live {
        None => {
            if let Err(e) = copy.await {
                tracing::debug!(error = %e, "upgraded connection ended with an error");
            }
        }
        Some(mut guard) => {
            tokio::select! {
                result = copy => {
                    if let Err(e) = result {
                        tracing::debug!(error = %e, "upgraded connection ended with an error");
                    }
                }
                // Dropping both ends closes them.
                _ = guard.closed.wait_for(|closed| *closed) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn upstream(url: &str, http2: bool) -> Upstream {
        let text = format!("[[routes]]\nname = \"r\"\nupstream = \"{url}\"\nupstream_http2 = {http2}\n");
        let config = Config::parse(&text, Path::new("portcullis.toml"), Path::new("/")).expect("config");
        Upstream::new(&config.routes[0]).expect("upstream")
    }

    #[test]
    fn the_forwarded_uri_is_the_normalized_path_under_the_upstream_path_with_the_raw_query() {
        // (upstream URL, HTTP/2, client's URI, normalized path, URI sent)
        let check = |url: &str, http2: bool, client: &str, path: &str, sent: &str| {
            let mut client_uri: Uri = client.parse().expect("client uri");
            let uri = upstream(url, http2).uri(path, &mut client_uri).expect("uri");
            assert_eq!(uri.to_string(), sent, "{url} {client} -> {path}");
        };
        check("http://up", false, "/a/b?x=%2F1&y", "/a/b", "/a/b?x=%2F1&y");
        check("http://up", false, "/a/b", "/a/b", "/a/b");
        check("http://up", false, "http://example.com/a?q", "/a", "/a?q");
        check("http://up", false, "/a/./c/../b?q=1", "/a/b", "/a/b?q=1");
        check("http://up:8080/base/", false, "/a?q=1", "/a", "/base/a?q=1");
        check("http://up/base", false, "/", "/", "/base/");
        check("https://up:9200", true, "/a?q=1", "/a", "https://up:9200/a?q=1");
    }

    #[test]
    fn only_idempotent_requests_without_a_body_are_sent_again() {
        // (method, body, replayable)
        let check = |method: Method, text: &'static str, expected: bool| {
            let mut req = Request::new(super::super::full(text));
            *req.method_mut() = method.clone();
            assert_eq!(replayable(&req), expected, "{method} with {text:?}");
        };
        check(Method::GET, "", true);
        check(Method::HEAD, "", true);
        check(Method::OPTIONS, "", true);
        check(Method::PUT, "", true);
        check(Method::DELETE, "", true);
        check(Method::GET, "x", false);
        check(Method::PUT, "{}", false);
        check(Method::POST, "", false);
        check(Method::PATCH, "", false);
        check(Method::from_bytes(b"LOCK").expect("method"), "", false);
    }

    #[test]
    fn a_replayed_request_has_the_same_head_and_no_body() {
        let mut req = Request::new(super::super::full(Bytes::new()));
        *req.method_mut() = Method::DELETE;
        *req.uri_mut() = "/a/b?c=d".parse().expect("uri");
        req.headers_mut().append("x-one", HeaderValue::from_static("1"));
        req.headers_mut().append("x-one", HeaderValue::from_static("2"));
        let again = Replay::of(&req).into_request();
        assert_eq!(again.method(), Method::DELETE);
        assert_eq!(again.uri(), "/a/b?c=d");
        assert_eq!(again.version(), req.version());
        assert_eq!(again.headers(), req.headers());
        assert!(again.body().is_end_stream());
    }
}
