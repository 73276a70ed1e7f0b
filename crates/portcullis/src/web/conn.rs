//! One accepted connection, from its first byte to its end: the TLS
//! handshake (when the listener terminates TLS), the choice of HTTP/1.1 or
//! HTTP/2 (ALPN under TLS, the HTTP/2 preface otherwise), then HTTP until
//! the client leaves, the connection idles out, or shutdown drains it.
//!
//! HTTP/1.1 connections are *parked* when idle (see `park.rs` for why):
//! once hyper has waited `park_after` for the next request with nothing in
//! flight, it is asked to end the connection where it waits, the socket is
//! taken back, and the task waits on the bare socket; the next request
//! gets a new hyper connection on the same socket. A client cannot tell.
//! The header read timeout is kept here rather than by hyper (whose timer
//! costs an allocation and a registration per request): a request head
//! must arrive whole within it of the last request's end, and an idle
//! connection, parked or not, is closed after it, as hyper would do.
//! When hyper ends a connection, what the client still sends is read and
//! dropped for a moment before the socket closes (a lingering close; see
//! `linger`).
//!
//! Not here: what requests mean (the service's business) and accepting
//! (`mod.rs`).

use std::convert::Infallible;
use std::future::{Future, poll_fn};
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use super::park::{Activity, ParkIo, Tracked};
use super::{BoxError, HANDSHAKE_TIMEOUT, Transport};

/// Counts of a listener's client connections, read by the metrics.
#[derive(Debug, Default)]
pub struct ConnStats {
    open: AtomicUsize,
    parked: AtomicUsize,
    parks: AtomicU64,
}

/// A snapshot of [`ConnStats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnCounts {
    /// Client connections open now, parked or not.
    pub open: usize,
    /// Idle HTTP/1.1 connections held without a hyper connection now.
    pub parked: usize,
    /// Times an idle HTTP/1.1 connection was parked, ever.
    pub parks: u64,
}

impl ConnStats {
    pub fn counts(&self) -> ConnCounts {
        ConnCounts {
            open: self.open.load(Ordering::Relaxed),
            parked: self.parked.load(Ordering::Relaxed),
            parks: self.parks.load(Ordering::Relaxed),
        }
    }
}

/// Holds one unit of a gauge for as long as it lives.
struct Held<'a>(&'a AtomicUsize);

impl<'a> Held<'a> {
    fn new(gauge: &'a AtomicUsize) -> Self {
        gauge.fetch_add(1, Ordering::Relaxed);
        Held(gauge)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The HTTP settings every connection of a listener uses (shared, not
/// copied into each connection).
pub(super) struct Protocols {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
    header_read_timeout: Duration,
    park_after: Duration,
    stats: Arc<ConnStats>,
}

impl Protocols {
    pub(super) fn new(transport: &Transport) -> Self {
        let mut h1 = http1::Builder::new();
        // The header read timeout is kept by `drive`, on the timer it
        // re-arms for parking anyway: hyper's own makes, registers and
        // drops a timer per request (3.5% of a proxied request's
        // instructions).
        h1.header_read_timeout(None);
        let mut h2 = http2::Builder::new(TokioExecutor::new());
        h2.timer(TokioTimer::new());
        Protocols {
            http1: h1,
            http2: h2,
            header_read_timeout: transport.header_read_timeout,
            park_after: transport.park_after,
            stats: transport.stats.clone(),
        }
    }
}

/// A socket whose readiness can be awaited without reading it, so a parked
/// connection holds no buffer.
pub(super) trait Socket: AsyncRead + AsyncWrite + Unpin + Send + 'static {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>>;
}

impl Socket for TcpStream {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        TcpStream::poll_read_ready(self, cx)
    }
}

/// A parked TLS connection waits on its TCP socket: when hyper last read,
/// rustls held no undelivered plaintext (its read came back empty), so
/// anything new must arrive on the socket first.
impl Socket for tokio_rustls::server::TlsStream<TcpStream> {
    fn poll_read_ready(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_ref().0.poll_read_ready(cx)
    }
}

/// Which HTTP a connection speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Protocol {
    Http1,
    Http2,
}

/// One accepted connection, until it ends.
pub(super) struct Connection {
    pub(super) peer: SocketAddr,
    pub(super) protocols: Arc<Protocols>,
    /// Becomes `true` when the server shuts down.
    pub(super) stopped: watch::Receiver<bool>,
    /// Held for the connection's life: the server has drained when every
    /// clone is gone.
    pub(super) _alive: mpsc::Sender<()>,
}

impl Connection {
    /// TLS handshake (when configured) and protocol choice, then HTTP. A
    /// connection that has not spoken HTTP yet has nothing to drain, so
    /// shutdown simply closes it.
    pub(super) async fn serve<S, B>(mut self, stream: TcpStream, tls: Option<TlsAcceptor>, service: S)
    where
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
        S::Future: Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let stats = self.protocols.stats.clone();
        let _open = Held::new(&stats.open);
        // The task lives as long as the connection, and its size is that
        // of the largest thing it ever awaits. So each step is boxed: the
        // sniffing and the TLS handshake (large rustls state) are freed
        // when done, and the task then holds only the protocol the
        // connection speaks (an idle HTTP/1.1 connection's few hundred
        // bytes, or an HTTP/2 connection's some kilobytes).
        match tls {
            None => match Box::pin(self.first_bytes(&stream)).await {
                Some(Protocol::Http1) => Box::pin(self.http1(stream, service)).await,
                Some(Protocol::Http2) => Box::pin(self.http2(stream, service)).await,
                None => {}
            },
            Some(acceptor) => {
                let Some(tls) = Box::pin(self.handshake(acceptor, stream)).await else {
                    return;
                };
                if tls.get_ref().1.alpn_protocol() == Some(b"h2") {
                    Box::pin(self.http2(*tls, service)).await;
                } else {
                    Box::pin(self.http1(*tls, service)).await;
                }
            }
        }
    }

    /// Waits, up to the header read timeout, for the client's first bytes
    /// and tells its protocol from them; `None` when the client leaves
    /// first, the time runs out, or the server stops.
    async fn first_bytes(&mut self, stream: &TcpStream) -> Option<Protocol> {
        let peer = self.peer;
        let sniffed = tokio::select! {
            p = tokio::time::timeout(self.protocols.header_read_timeout, sniff(stream)) => p,
            _ = self.stopped.wait_for(|s| *s) => return None,
        };
        match sniffed {
            Ok(Ok(protocol)) => protocol,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "connection failed before its first request");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "no request before the header read timeout");
                None
            }
        }
    }

    /// The TLS handshake, bounded in time; `None` (logged) when it fails or
    /// the server stops. The stream comes boxed, so a caller that keeps it
    /// only to move it on does not grow by its size.
    async fn handshake(
        &mut self,
        acceptor: TlsAcceptor,
        stream: TcpStream,
    ) -> Option<Box<tokio_rustls::server::TlsStream<TcpStream>>> {
        let peer = self.peer;
        let handshake = tokio::select! {
            h = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => h,
            _ = self.stopped.wait_for(|s| *s) => return None,
        };
        match handshake {
            Ok(Ok(tls)) => Some(Box::new(tls)),
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "tls handshake failed");
                None
            }
            Err(_) => {
                tracing::debug!(%peer, "tls handshake timed out");
                None
            }
        }
    }

    async fn http2<I, S, B>(&mut self, io: I, service: S)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
        S::Future: Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let conn = self.protocols.http2.serve_connection(TokioIo::new(io), service);
        tokio::pin!(conn);
        let stopping = tokio::select! {
            result = conn.as_mut() => Err(result),
            _ = self.stopped.wait_for(|s| *s) => Ok(()),
        };
        let result = match stopping {
            Err(result) => result,
            Ok(()) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
        }
    }

    /// HTTP/1.1 until the client leaves, parking the connection whenever
    /// it idles (see the module documentation).
    pub(super) async fn http1<I, S, B>(&mut self, io: I, service: S)
    where
        I: Socket,
        S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
        S::Future: Send + 'static,
        B: hyper::body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let activity = Arc::new(Activity::default());
        let mut io = ParkIo::new(io, activity.clone());
        let mut service = Tracked::new(service, activity.clone());
        // The first request is already there (sniffed), or may already sit
        // decrypted in the TLS layer where socket readiness cannot see it:
        // start hyper at once.
        let mut parked = false;
        loop {
            if parked {
                let _parked = Held::new(&self.protocols.stats.parked);
                // hyper's header read timeout closes an idle connection it
                // serves; a parked one gets what is left of that time.
                let idle = self
                    .protocols
                    .header_read_timeout
                    .saturating_sub(self.protocols.park_after);
                let readable = poll_fn(|cx| io.get_ref().poll_read_ready(cx));
                let woke = tokio::select! {
                    r = tokio::time::timeout(idle, readable) => r,
                    _ = self.stopped.wait_for(|s| *s) => return,
                };
                match woke {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::debug!(peer = %self.peer, error = %e, "parked connection failed");
                        return;
                    }
                    Err(_) => return,
                }
            }
            // A hyper connection is parked only once it has served a
            // request: then it waits in its keep-alive state, where a
            // graceful shutdown closes it at once even with part of the
            // next request read ahead (which the next connection gets). A
            // client that trickles a request in meets the new connection's
            // header read timeout instead of a fresh park.
            let parkable_after = activity.calls() + 1;
            let conn = self
                .protocols
                .http1
                .serve_connection(TokioIo::new(io), service)
                .with_upgrades();
            let conn = Box::pin(conn);
            let (conn, ended) = drive(
                conn,
                &activity,
                parkable_after,
                Deadlines {
                    park_after: self.protocols.park_after,
                    header_read_timeout: self.protocols.header_read_timeout,
                },
                &mut self.stopped,
            )
            .await;
            match ended {
                Ended::HeadTimedOut => {
                    tracing::debug!(peer = %self.peer, "no request head within the header read timeout");
                    return;
                }
                Ended::Done(Err(e)) => {
                    tracing::debug!(peer = %self.peer, error = %e, "connection ended with an error");
                    return;
                }
                Ended::Done(Ok(())) => {
                    // hyper has answered and shut its side; the client may
                    // still be sending a body that was never read.
                    if let Some(parts) = Pin::into_inner(conn).into_parts() {
                        Box::pin(linger(parts.io.into_inner(), &mut self.stopped)).await;
                    }
                    return;
                }
                Ended::Parked => {}
            }
            // Parked: hyper ended at the message boundary where it waited
            // and left the socket open. `None` would mean the connection
            // was upgraded, which cannot happen while nothing is in flight.
            let Some(parts) = Pin::into_inner(conn).into_parts() else {
                return;
            };
            activity.set_parking(false);
            self.protocols.stats.parks.fetch_add(1, Ordering::Relaxed);
            io = parts.io.into_inner();
            io.push_read_ahead(parts.read_buf);
            service = parts.service;
            parked = !io.has_read_ahead();
        }
    }
}

/// How long, and for how many bytes, a connection hyper has ended is
/// still read from before it is closed.
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 64 << 20;

/// Reads and drops what the client still sends after hyper ended the
/// connection, until the client closes, `LINGER_TIME` or `LINGER_BYTES`
/// runs out, or the server stops. A request refused before its body was
/// read (413, 401, 403) ends the connection while the client may still be
/// writing that body; closing a socket with unread bytes makes the kernel
/// reset it, and a reset makes the client drop the answer it was sent and
/// report a broken pipe instead. Lingering lets the answer arrive, as
/// nginx's `lingering_close` does. A client that has closed ends it at once.
async fn linger<I: Socket>(mut io: ParkIo<I>, stopped: &mut watch::Receiver<bool>) {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 4096];
    let mut left = LINGER_BYTES;
    let drain = async {
        while left > 0 {
            match io.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    };
    tokio::select! {
        _ = tokio::time::timeout(LINGER_TIME, drain) => {}
        _ = stopped.wait_for(|s| *s) => {}
    }
}

type Http1Conn<I, S> = http1::UpgradeableConnection<TokioIo<ParkIo<I>>, Tracked<S>>;

/// How one hyper HTTP/1.1 connection ended.
enum Ended {
    /// The client left, shutdown drained it, or hyper failed.
    Done(hyper::Result<()>),
    /// It sat idle for `park_after` and was asked to end where it waited.
    Parked,
    /// No whole request head came within the header read timeout since
    /// the last request (or the connection) began to wait for one.
    HeadTimedOut,
}

/// The times [`drive`] keeps.
#[derive(Clone, Copy)]
struct Deadlines {
    park_after: Duration,
    header_read_timeout: Duration,
}

/// Runs one hyper HTTP/1.1 connection until it ends (see [`Ended`]). The
/// connection is handed back so its socket can be taken out.
///
/// One timer serves both deadlines, both counted from the end of the last
/// request (or the start): the header read timeout, and parking after
/// `park_after`. It is made at the first wait and re-armed after, so a
/// busy connection pays a timer reset per request.
async fn drive<I, S, B>(
    mut conn: Pin<Box<Http1Conn<I, S>>>,
    activity: &Activity,
    parkable_after: u64,
    times: Deadlines,
    stopped: &mut watch::Receiver<bool>,
) -> (Pin<Box<Http1Conn<I, S>>>, Ended)
where
    I: Socket,
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible> + Send + 'static,
    S::Future: Send + 'static,
    B: hyper::body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    use tokio::time::Instant;
    // Polling the shutdown future registers with the watch's `Notify` each
    // time, and this runs on every wake-up of the connection: after the
    // first poll (which registers this task's waker, the same for every
    // later poll), it is polled again only once the value has changed.
    let changed = stopped.clone();
    let mut stop_polled = false;
    let stop = stopped.wait_for(|s| *s);
    tokio::pin!(stop);
    let mut draining = false;
    let mut parking = false;
    let mut timer: Option<Pin<Box<tokio::time::Sleep>>> = None;
    let mut armed_at: Option<Instant> = None;
    // The wait for the next request: the request count it began after,
    // when it began, and from when the park delay now runs (later than the
    // start when hyper was not idle at the first try).
    let mut wait: Option<(u64, Instant, Instant)> = None;
    let ended = poll_fn(|cx| {
        loop {
            if !draining && !parking && (!stop_polled || changed.has_changed().unwrap_or(true)) {
                stop_polled = true;
                if stop.as_mut().poll(cx).is_ready() {
                    draining = true;
                    conn.as_mut().graceful_shutdown();
                }
            }
            if let Poll::Ready(result) = conn.as_mut().poll(cx) {
                return Poll::Ready(match result {
                    Ok(()) if parking => Ended::Parked,
                    result => Ended::Done(result),
                });
            }
            if draining || parking || !activity.between_requests() {
                return Poll::Pending;
            }
            let calls = activity.calls();
            let (since, park_from) = match wait {
                Some((after, since, park_from)) if after == calls => (since, park_from),
                _ => {
                    let now = Instant::now();
                    wait = Some((calls, now, now));
                    (now, now)
                }
            };
            let head_ends = since + times.header_read_timeout;
            let parkable = calls >= parkable_after;
            let next = if parkable {
                head_ends.min(park_from + times.park_after)
            } else {
                head_ends
            };
            if armed_at != Some(next) {
                match &mut timer {
                    Some(t) => t.as_mut().reset(next),
                    None => timer = Some(Box::pin(tokio::time::sleep_until(next))),
                }
                armed_at = Some(next);
            }
            let Some(t) = timer.as_mut() else {
                return Poll::Pending;
            };
            if t.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            if next == head_ends {
                return Poll::Ready(Ended::HeadTimedOut);
            }
            // `park_after` since the last request. hyper was polled just
            // above: if it is waiting for the client with nothing in flight
            // and nothing to write, it closes at once when asked to shut
            // down gracefully, without writing anything. Otherwise (a
            // response still being written, a request arriving) try again
            // `park_after` from now.
            if !activity.is_quiet() {
                wait = Some((calls, since, Instant::now()));
                continue;
            }
            parking = true;
            activity.set_parking(true);
            conn.as_mut().graceful_shutdown();
        }
    })
    .await;
    (conn, ended)
}

/// What a plain-text connection speaks, from its first bytes, left unread
/// for hyper: HTTP/2 when they are the HTTP/2 connection preface (prior
/// knowledge, RFC 9113 section 3.3), HTTP/1 otherwise. `None` when the
/// client closes before sending anything.
pub(super) async fn sniff(stream: &TcpStream) -> io::Result<Option<Protocol>> {
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
