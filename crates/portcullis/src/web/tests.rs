//! Connection handling over real loopback sockets, with a raw client so
//! that pipelining, pauses and partial writes are exactly as written: the
//! protocol choice, and parking of idle HTTP/1.1 connections (requests
//! across a park, read-ahead kept, nothing parked mid-request, upgrades,
//! TLS, idle timeout, shutdown).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::conn::{Protocol, sniff};
use super::*;

type TestBody = BoxBody<Bytes, BoxError>;

/// A body that sends "a", waits, then sends "b".
struct Paused {
    step: u8,
    pause: Pin<Box<tokio::time::Sleep>>,
}

impl hyper::body::Body for Paused {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.step {
            0 => {
                self.step = 1;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"a")))))
            }
            1 => {
                std::task::ready!(self.pause.as_mut().poll(cx));
                self.step = 2;
                Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"b")))))
            }
            _ => Poll::Ready(None),
        }
    }
}

fn full(body: impl Into<Bytes>) -> TestBody {
    Full::new(body.into()).map_err(|never| match never {}).boxed()
}

/// `/hello`, `/echo` (the request body), `/slow` (a body with a pause of
/// `pause`), `/upgrade` (101, then an echo of the upgraded stream).
async fn handle(mut req: Request<Incoming>, pause: Duration) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_owned();
    let resp = match path.as_str() {
        "/hello" => Response::new(full("hello")),
        "/echo" => {
            let body = req
                .into_body()
                .collect()
                .await
                .map(|c| c.to_bytes())
                .unwrap_or_default();
            Response::new(full(body))
        }
        "/slow" => Response::new(
            Paused {
                step: 0,
                pause: Box::pin(tokio::time::sleep(pause)),
            }
            .boxed(),
        ),
        "/upgrade" => {
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let mut io = hyper_util::rt::TokioIo::new(upgraded);
                    let mut buf = [0u8; 64];
                    while let Ok(n) = io.read(&mut buf).await {
                        if n == 0 || io.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                    }
                }
            });
            Response::builder()
                .status(101)
                .header("connection", "upgrade")
                .header("upgrade", "echo")
                .body(full(""))
                .expect("response")
        }
        _ => Response::builder().status(404).body(full("")).expect("response"),
    };
    Ok(resp)
}

struct Server {
    addr: SocketAddr,
    stats: Arc<ConnStats>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

const PARK: Duration = Duration::from_millis(100);
/// Comfortably more than `PARK`, for a connection to be parked by then.
const PARKED: Duration = Duration::from_millis(400);

async fn start(tls: Option<TlsAcceptor>, header_read_timeout: Duration) -> Server {
    start_parking_after(tls, header_read_timeout, PARK).await
}

async fn start_parking_after(tls: Option<TlsAcceptor>, header_read_timeout: Duration, park_after: Duration) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let stats = Arc::new(ConnStats::default());
    let transport = Transport {
        tls,
        header_read_timeout,
        grace: Duration::from_secs(5),
        park_after,
        stats: stats.clone(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let make = |_| hyper::service::service_fn(|req| handle(req, PARKED));
    let task = tokio::spawn(serve(listener, make, transport, async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        stats,
        stop: Some(stop),
        task,
    }
}

/// One response read off a raw connection: status, headers (lower-cased
/// names) and body (content-length or chunked).
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

async fn read_answer<S: AsyncRead + Unpin>(stream: &mut S, pending: &mut Vec<u8>) -> Answer {
    async fn fill<S: AsyncRead + Unpin>(stream: &mut S, pending: &mut Vec<u8>) {
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("read");
        assert!(
            n > 0,
            "connection closed mid-answer; have {:?}",
            String::from_utf8_lossy(pending)
        );
        pending.extend_from_slice(&buf[..n]);
    }
    let head_end = loop {
        if let Some(i) = pending.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        fill(stream, pending).await;
    };
    let head = String::from_utf8_lossy(&pending[..head_end]).into_owned();
    pending.drain(..head_end);
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let mut answer = Answer {
        status,
        headers,
        body: Vec::new(),
    };
    if let Some(len) = answer.header("content-length") {
        let len: usize = len.parse().expect("content-length");
        while pending.len() < len {
            fill(stream, pending).await;
        }
        answer.body = pending.drain(..len).collect();
    } else if answer.header("transfer-encoding") == Some("chunked") {
        loop {
            let line_end = loop {
                if let Some(i) = pending.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                fill(stream, pending).await;
            };
            let size = usize::from_str_radix(&String::from_utf8_lossy(&pending[..line_end]), 16).expect("chunk size");
            while pending.len() < line_end + 2 + size + 2 {
                fill(stream, pending).await;
            }
            answer
                .body
                .extend_from_slice(&pending[line_end + 2..line_end + 2 + size]);
            pending.drain(..line_end + 2 + size + 2);
            if size == 0 {
                break;
            }
        }
    }
    answer
}

const HELLO: &[u8] = b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\n";

/// Sends `request` and expects a kept-alive 200 with `body`.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, request: &[u8], body: &[u8]) {
    stream.write_all(request).await.expect("write");
    let mut pending = Vec::new();
    let answer = read_answer(stream, &mut pending).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.body, body, "{answer:?}");
    assert_eq!(answer.header("connection"), None, "kept alive: {answer:?}");
    assert!(pending.is_empty(), "nothing more than the answer");
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < Duration::from_secs(5), "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn an_idle_connection_is_parked_and_its_next_requests_are_served() {
    let server = start(None, Duration::from_secs(10)).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    // Requests in quick succession keep the same hyper connection.
    for _ in 0..3 {
        exchange(&mut stream, HELLO, b"hello").await;
    }
    assert_eq!(server.stats.counts().parks, 0, "a busy connection is not parked");
    eventually("the connection parked", || server.stats.counts().parked == 1).await;
    assert_eq!(server.stats.counts().parks, 1);
    assert_eq!(server.stats.counts().open, 1);

    // The parked connection serves the next requests, a body included.
    exchange(&mut stream, HELLO, b"hello").await;
    assert_eq!(server.stats.counts().parked, 0);
    exchange(
        &mut stream,
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\nabcde",
        b"abcde",
    )
    .await;
    eventually("parked again", || server.stats.counts().parks == 2).await;
    exchange(&mut stream, HELLO, b"hello").await;

    drop(stream);
    eventually("the connection counted closed", || server.stats.counts().open == 0).await;
}

#[tokio::test]
async fn bytes_read_ahead_of_a_park_start_the_next_request() {
    let server = start(None, Duration::from_secs(10)).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    // A request and the start of the next one in one write.
    stream
        .write_all(b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\nGET /ec")
        .await
        .expect("write");
    let mut pending = Vec::new();
    let first = read_answer(&mut stream, &mut pending).await;
    assert_eq!((first.status, first.body.as_slice()), (200, &b"hello"[..]));
    eventually("the connection parked", || server.stats.counts().parks == 1).await;
    // The rest of the second request, after the park.
    tokio::time::sleep(PARKED).await;
    stream
        .write_all(b"ho HTTP/1.1\r\nhost: x\r\ncontent-length: 2\r\n\r\nok")
        .await
        .expect("write");
    let second = read_answer(&mut stream, &mut pending).await;
    assert_eq!((second.status, second.body.as_slice()), (200, &b"ok"[..]), "{second:?}");
    // A pipelined pair, both answered in order.
    stream
        .write_all(
            b"GET /hello HTTP/1.1\r\nhost: x\r\n\r\nPOST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 1\r\n\r\nz",
        )
        .await
        .expect("write");
    let third = read_answer(&mut stream, &mut pending).await;
    let fourth = read_answer(&mut stream, &mut pending).await;
    assert_eq!(third.body, b"hello");
    assert_eq!(fourth.body, b"z");
}

#[tokio::test]
async fn nothing_is_parked_in_the_middle_of_a_request() {
    let server = start(None, Duration::from_secs(10)).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");

    // A response that pauses longer than the park delay, to a silent client.
    exchange(&mut stream, b"GET /slow HTTP/1.1\r\nhost: x\r\n\r\n", b"ab").await;
    assert_eq!(server.stats.counts().parks, 0, "parked during a response");

    // A request body that pauses longer than the park delay.
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 4\r\n\r\nab")
        .await
        .expect("write");
    tokio::time::sleep(PARKED).await;
    exchange(&mut stream, b"cd", b"abcd").await;
    assert_eq!(server.stats.counts().parks, 0, "parked during a request body");

    // Request headers that pause: the half-read request is not lost (a park
    // hands it to the next hyper connection, whose header read timeout
    // then applies).
    stream.write_all(b"GET /hello HTTP/1.1\r\n").await.expect("write");
    tokio::time::sleep(PARKED).await;
    exchange(&mut stream, b"host: x\r\n\r\n", b"hello").await;
}

#[tokio::test]
async fn an_upgraded_connection_is_never_parked() {
    let server = start(None, Duration::from_secs(10)).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    exchange(&mut stream, HELLO, b"hello").await;
    stream
        .write_all(b"GET /upgrade HTTP/1.1\r\nhost: x\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n")
        .await
        .expect("write");
    let mut pending = Vec::new();
    let answer = read_answer(&mut stream, &mut pending).await;
    assert_eq!(answer.status, 101);
    for word in [&b"ping"[..], b"pong"] {
        stream.write_all(word).await.expect("write");
        let mut got = [0u8; 4];
        tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut got))
            .await
            .expect("echo in time")
            .expect("echo");
        assert_eq!(&got, word);
        tokio::time::sleep(PARKED).await;
    }
    assert_eq!(server.stats.counts().parks, 0);
}

#[tokio::test]
async fn a_parked_connection_is_closed_after_the_idle_time() {
    let server = start(None, Duration::from_millis(800)).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    exchange(&mut stream, HELLO, b"hello").await;
    let idle_from = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0, "closed, without a word");
    let idle = idle_from.elapsed();
    assert!(idle >= Duration::from_millis(700), "closed after {idle:?}");
    assert_eq!(server.stats.counts().parks, 1);
    eventually("counted closed", || server.stats.counts().open == 0).await;
}

/// A client that trickles a request head in, a byte now and then, is
/// closed once the header read timeout has passed since the head began,
/// on a fresh connection and on one that served a request before (where
/// the trickle also meets the park).
#[tokio::test]
async fn a_request_head_trickled_in_is_cut_off_at_the_header_read_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(800);
    let server = start(None, TIMEOUT).await;
    for served_before in [false, true] {
        let mut stream = TcpStream::connect(server.addr).await.expect("connect");
        if served_before {
            exchange(&mut stream, HELLO, b"hello").await;
        }
        let began = Instant::now();
        stream
            .write_all(b"GET /slow HTTP/1.1\r\nhost: x\r\nx-slow: ")
            .await
            .expect("write");
        // One byte every 50 ms for up to 8 s, reading as we go: the server
        // must close long before that.
        let mut buf = [0u8; 64];
        let closed = loop {
            if began.elapsed() > Duration::from_secs(8) {
                break None;
            }
            match tokio::time::timeout(Duration::from_millis(50), stream.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break Some(began.elapsed()),
                Ok(Ok(n)) => panic!("an answer to half a head: {:?}", String::from_utf8_lossy(&buf[..n])),
                Err(_) => {}
            }
            if stream.write_all(b"a").await.is_err() {
                break Some(began.elapsed());
            }
        };
        let closed = closed.unwrap_or_else(|| panic!("still open after 8 s (served before: {served_before})"));
        assert!(
            closed >= TIMEOUT - Duration::from_millis(50),
            "closed early, after {closed:?}"
        );
        // Generous: a loaded test machine may be slow to run the timer.
        assert!(
            closed < TIMEOUT + PARKED + Duration::from_secs(2),
            "closed late, after {closed:?}"
        );
    }
}

#[tokio::test]
async fn shutdown_closes_parked_connections_at_once() {
    let mut server = start(None, Duration::from_secs(30)).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    exchange(&mut stream, HELLO, b"hello").await;
    eventually("the connection parked", || server.stats.counts().parked == 1).await;
    shuts_down_at_once(&mut server, &mut stream, "the parked connection").await;
}

/// An idle connection hyper still holds (not parked) that has served a
/// few requests, so that the shutdown signal is seen on a later wake-up
/// than the first, closes at once too.
#[tokio::test]
async fn shutdown_closes_idle_unparked_connections_at_once() {
    let mut server = start_parking_after(None, Duration::from_secs(30), Duration::from_secs(60)).await;
    let mut stream = TcpStream::connect(server.addr).await.expect("connect");
    for _ in 0..3 {
        exchange(&mut stream, HELLO, b"hello").await;
    }
    assert_eq!(server.stats.counts().parked, 0);
    shuts_down_at_once(&mut server, &mut stream, "the idle connection").await;
}

/// Stops the server and checks it ends within 2 s, `stream` closed.
async fn shuts_down_at_once(server: &mut Server, stream: &mut TcpStream, what: &str) {
    let begun = Instant::now();
    let _ = server.stop.take().map(|s| s.send(()));
    tokio::time::timeout(Duration::from_secs(2), &mut server.task)
        .await
        .unwrap_or_else(|_| panic!("shutdown waited for {what}"))
        .expect("no panic");
    assert!(begun.elapsed() < Duration::from_secs(2));
    let mut buf = [0u8; 1];
    assert_eq!(stream.read(&mut buf).await.unwrap_or(0), 0, "closed");
}

#[tokio::test]
async fn a_tls_connection_is_parked_and_resumed() {
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("cert");
    let cert_der = cert.cert.der().clone();
    let key = rustls_pki_types::PrivateKeyDer::Pkcs8(cert.signing_key.serialize_der().into());
    let mut server_config = rustls::ServerConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert_der.clone()], key)
        .expect("server config");
    server_config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let server = start(
        Some(TlsAcceptor::from(Arc::new(server_config))),
        Duration::from_secs(10),
    )
    .await;

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert_der).expect("root");
    let mut client_config = rustls::ClientConfig::builder_with_provider(crate::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    client_config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config));
    let tcp = TcpStream::connect(server.addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = connector.connect(name, tcp).await.expect("handshake");

    exchange(&mut tls, HELLO, b"hello").await;
    eventually("the connection parked", || server.stats.counts().parks == 1).await;
    exchange(&mut tls, HELLO, b"hello").await;
    exchange(
        &mut tls,
        b"POST /echo HTTP/1.1\r\nhost: x\r\ncontent-length: 3\r\n\r\nxyz",
        b"xyz",
    )
    .await;
    eventually("parked again", || server.stats.counts().parks == 2).await;
    exchange(&mut tls, HELLO, b"hello").await;
}

/// What `sniff` decides when the client sends `parts`, one write each
/// with a pause between, then closes (`close`) or waits.
async fn check_sniff(parts: &[&[u8]], close: bool, expected: Option<Protocol>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let sent = String::from_utf8_lossy(&parts.concat()).into_owned();
    let parts: Vec<Vec<u8>> = parts.iter().map(|p| p.to_vec()).collect();
    let client = tokio::spawn(async move {
        let mut tcp = TcpStream::connect(addr).await.expect("connect");
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
    check_sniff(&[b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"], false, Some(Protocol::Http1)).await;
    check_sniff(&[preface], false, Some(Protocol::Http2)).await;
    // The preface split across segments still gives HTTP/2.
    check_sniff(
        &[b"PR", b"I * HTTP/2.0\r\n", b"\r\nSM\r\n\r\n"],
        false,
        Some(Protocol::Http2),
    )
    .await;
    // A start that leaves the preface is HTTP/1, even after a pause.
    check_sniff(&[b"PR", b"OPFIND / HTTP/1.1\r\n"], false, Some(Protocol::Http1)).await;
    // A client that closes without a word.
    check_sniff(&[], true, None).await;
}

/// What a connection's task holds for its whole life: the futures of its
/// steps are boxed, so an idle HTTP/1.1 connection costs a few hundred
/// bytes of task, not the kilobytes of a TLS handshake or an HTTP/2
/// connection (6.8 KB before they were boxed).
#[tokio::test]
async fn a_connection_task_stays_small() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let transport = Transport::plain(Duration::from_secs(1));
    let protocols = Arc::new(conn::Protocols::new(&transport));
    let (_stop, stopped) = tokio::sync::watch::channel(false);
    let (alive, _all_ended) = tokio::sync::mpsc::channel::<()>(1);
    let connection = || conn::Connection {
        peer: addr,
        protocols: protocols.clone(),
        stopped: stopped.clone(),
        _alive: alive.clone(),
    };
    let service = || hyper::service::service_fn(|req| handle(req, PARKED));

    let stream = TcpStream::connect(addr).await.expect("connect");
    let whole = connection().serve(stream, None, service());
    assert!(
        std::mem::size_of_val(&whole) <= 512,
        "task future: {} bytes",
        std::mem::size_of_val(&whole)
    );
    let stream = TcpStream::connect(addr).await.expect("connect");
    let mut c = connection();
    let http1 = c.http1(stream, service());
    assert!(
        std::mem::size_of_val(&http1) <= 1024,
        "HTTP/1.1 future: {} bytes",
        std::mem::size_of_val(&http1)
    );
}
