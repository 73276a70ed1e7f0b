//! What lets an idle HTTP/1.1 keep-alive connection be *parked*: served
//! by no hyper connection at all until the client sends again.
//!
//! hyper gives every HTTP/1.1 connection an 8 KiB read buffer, an 8 KiB
//! write buffer and its connection state, and keeps them for the
//! connection's whole life, busy or idle. Ten thousand idle keep-alive
//! clients (browsers, Elasticsearch clients, load balancers) would hold
//! about 200 MB doing nothing. So the connection task (see `conn.rs`)
//! watches for a connection that has been idle for a while, asks hyper to
//! end it at the message boundary where it waits, takes the socket back
//! (with any bytes hyper had read ahead) and waits for the client with
//! nothing but the socket. The next request gets a fresh hyper connection.
//!
//! This module holds the three pieces that make "idle" observable from
//! outside hyper, all reporting to one [`Activity`]:
//! - [`ParkIo`] wraps the socket: it sees hyper's reads block and its
//!   writes block, replays read-ahead bytes, and turns hyper's shutdown of
//!   the socket into nothing while a park is under way;
//! - [`Tracked`] wraps the service, and [`TrackedBody`] the response body:
//!   a request counts as in flight from the service call until hyper drops
//!   the response body (which it does once the body is written).
//!
//! It does not decide when to park (`conn.rs` does) and it knows nothing
//! of HTTP/2, which is never parked.

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};

use bytes::{Buf, Bytes};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::Service;
use hyper::{Request, Response};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What one connection is doing, as far as parking needs to know.
///
/// Every field is written and read on the connection's own task (hyper
/// polls the socket, the service future and the response body from the
/// task that polls the connection), so the atomics are never contended;
/// they are atomics only because the task must be `Send`.
#[derive(Debug, Default)]
pub(super) struct Activity {
    /// Requests whose response body hyper has not dropped yet.
    in_flight: AtomicUsize,
    /// Requests the service has been called for, ever.
    calls: AtomicU64,
    /// hyper's last read found no data while no request was in flight and
    /// nothing waited to be written: hyper is waiting for the client.
    quiet: AtomicBool,
    /// A park is under way: hyper's shutdown of the socket must not reach
    /// the socket.
    parking: AtomicBool,
}

impl Activity {
    /// Whether hyper is waiting for the client with nothing in flight and
    /// nothing to write.
    pub(super) fn is_quiet(&self) -> bool {
        self.quiet.load(Ordering::Relaxed) && self.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Whether no request is in flight: hyper is reading the next head,
    /// or waiting for it.
    pub(super) fn between_requests(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) == 0
    }

    pub(super) fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    pub(super) fn set_parking(&self, parking: bool) {
        self.parking.store(parking, Ordering::Relaxed);
    }

    fn busy(&self) {
        self.quiet.store(false, Ordering::Relaxed);
    }

    fn read_blocked(&self, write_blocked: bool) {
        if write_blocked || self.in_flight.load(Ordering::Relaxed) != 0 {
            return;
        }
        self.quiet.store(true, Ordering::Relaxed);
    }
}

/// The socket as hyper sees it; see the module documentation.
#[derive(Debug)]
pub(super) struct ParkIo<I> {
    io: I,
    /// Bytes a previous hyper connection read but did not use (the start
    /// of the next request), served before the socket is read again.
    read_ahead: Bytes,
    /// The last write or flush could not complete: hyper holds unwritten
    /// bytes.
    write_blocked: bool,
    activity: Arc<Activity>,
}

impl<I> ParkIo<I> {
    pub(super) fn new(io: I, activity: Arc<Activity>) -> Self {
        ParkIo {
            io,
            read_ahead: Bytes::new(),
            write_blocked: false,
            activity,
        }
    }

    pub(super) fn get_ref(&self) -> &I {
        &self.io
    }

    /// Whether bytes from the last hyper connection wait to be read.
    pub(super) fn has_read_ahead(&self) -> bool {
        !self.read_ahead.is_empty()
    }

    /// Bytes hyper read but did not use, to be served first. Any read-ahead
    /// not yet consumed stays in front of them.
    pub(super) fn push_read_ahead(&mut self, bytes: Bytes) {
        if bytes.is_empty() {
            return;
        }
        if self.read_ahead.is_empty() {
            self.read_ahead = bytes;
        } else {
            let mut joined = Vec::with_capacity(self.read_ahead.len() + bytes.len());
            joined.extend_from_slice(&self.read_ahead);
            joined.extend_from_slice(&bytes);
            self.read_ahead = Bytes::from(joined);
        }
    }

    fn wrote<T>(&mut self, result: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        self.write_blocked = result.is_pending();
        if self.write_blocked {
            self.activity.busy();
        }
        result
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for ParkIo<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.read_ahead.is_empty() {
            let n = this.read_ahead.len().min(buf.remaining());
            buf.put_slice(&this.read_ahead[..n]);
            this.read_ahead.advance(n);
            this.activity.busy();
            return Poll::Ready(Ok(()));
        }
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => {
                this.activity.read_blocked(this.write_blocked);
                Poll::Pending
            }
            ready => {
                this.activity.busy();
                ready
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for ParkIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(result)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(result)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let result = Pin::new(&mut this.io).poll_flush(cx);
        this.wrote(result)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // hyper shuts the socket down when a connection ends; when it ends
        // because it is being parked, the socket lives on.
        if this.activity.parking.load(Ordering::Relaxed) {
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

/// Counts a request in flight for as long as it lives.
#[derive(Debug)]
struct InFlight(Arc<Activity>);

impl InFlight {
    fn new(activity: &Arc<Activity>) -> Self {
        activity.in_flight.fetch_add(1, Ordering::Relaxed);
        activity.calls.fetch_add(1, Ordering::Relaxed);
        activity.busy();
        InFlight(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A service whose requests are counted in flight until their response
/// body is dropped.
#[derive(Debug, Clone)]
pub(super) struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    pub(super) fn new(inner: S, activity: Arc<Activity>) -> Self {
        Tracked { inner, activity }
    }
}

impl<S, B> Service<Request<Incoming>> for Tracked<S>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = Infallible;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        TrackedFuture {
            guard: Some(InFlight::new(&self.activity)),
            inner: self.inner.call(req),
        }
    }
}

pin_project_lite::pin_project! {
    /// The service's future, holding the request's in-flight count until
    /// it hands it to the response body.
    pub(super) struct TrackedFuture<F> {
        guard: Option<InFlight>,
        #[pin]
        inner: F,
    }
}

impl<F, B> std::future::Future for TrackedFuture<F>
where
    F: std::future::Future<Output = Result<Response<B>, Infallible>>,
{
    type Output = Result<Response<TrackedBody<B>>, Infallible>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let resp = match ready!(this.inner.poll(cx)) {
            Ok(resp) => resp,
            Err(never) => match never {},
        };
        let guard = this.guard.take();
        Poll::Ready(Ok(resp.map(|inner| TrackedBody { inner, _guard: guard })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until hyper drops
    /// it.
    pub(super) struct TrackedBody<B> {
        #[pin]
        inner: B,
        _guard: Option<InFlight>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn read_ahead_is_served_before_the_socket_and_a_blocked_read_is_quiet() {
        let (client, server) = tokio::io::duplex(64);
        let activity = Arc::new(Activity::default());
        let mut io = ParkIo::new(server, activity.clone());
        io.push_read_ahead(Bytes::from_static(b"GET / HT"));
        io.push_read_ahead(Bytes::from_static(b"TP/1.1\r\n"));
        let mut client = client;
        client.write_all(b"host: x\r\n\r\n").await.expect("write");
        let mut got = [0u8; 64];
        let mut n = 0;
        while n < 27 {
            n += io.read(&mut got[n..]).await.expect("read");
        }
        assert_eq!(&got[..n], b"GET / HTTP/1.1\r\nhost: x\r\n\r\n");
        assert!(!activity.is_quiet(), "data was read: not quiet");

        // Nothing more to read: the read blocks and the connection is quiet.
        let blocked = futures_poll_once(&mut io).await;
        assert!(blocked, "the read should block");
        assert!(activity.is_quiet());

        // A request in flight is never quiet.
        let guard = InFlight::new(&activity);
        assert!(futures_poll_once(&mut io).await);
        assert!(!activity.is_quiet());
        drop(guard);
        assert!(futures_poll_once(&mut io).await);
        assert!(activity.is_quiet(), "quiet again once the request is done");
        assert_eq!(activity.calls(), 1);

        // Shutdown reaches the socket unless a park is under way.
        activity.set_parking(true);
        io.shutdown().await.expect("shutdown");
        let mut one = [0u8; 1];
        let read = tokio::time::timeout(std::time::Duration::from_millis(50), client.read(&mut one)).await;
        assert!(read.is_err(), "no end of stream while parking: {read:?}");
        activity.set_parking(false);
        io.shutdown().await.expect("shutdown");
        let n = client.read(&mut one).await.expect("read");
        assert_eq!(n, 0, "end of stream after a real shutdown");
    }

    /// Polls one read; true when it blocked.
    async fn futures_poll_once<I: AsyncRead + Unpin>(io: &mut ParkIo<I>) -> bool {
        let mut buf = [0u8; 8];
        std::future::poll_fn(|cx| {
            let mut rb = ReadBuf::new(&mut buf);
            Poll::Ready(Pin::new(&mut *io).poll_read(cx, &mut rb).is_pending())
        })
        .await
    }
}
