//! `hyper-floor LISTEN UPSTREAM [WORKERS]`: a bare HTTP/1.1 pass-through
//! proxy on hyper and tokio, for `tests/bench/proxy.sh` to measure beside
//! nginx and Portcullis.
//!
//! It is laid out as Portcullis's request path is (one single-threaded
//! runtime per worker, each with its own pool of keep-alive HTTP/1.1
//! connections to the upstream, hyper on both sides) and does nothing
//! else: no authentication, no policy, no header changes, no timers, no
//! metrics. What it costs per request is the floor that any proxy built on
//! these crates starts from; what Portcullis costs above it is Portcullis's
//! own work.
//!
//! Not a product: plain HTTP only, no timeouts, no limits, no logging.
//! An upstream that cannot be reached is answered with 502.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;

use http_body_util::{Either, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;

/// A worker's idle upstream connections, most recently used last. Only its
/// own thread touches it, so no lock.
type Pool = Rc<RefCell<Vec<SendRequest<Incoming>>>>;

type Body = Either<Incoming, Empty<Bytes>>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [listen, upstream] => parse(listen, upstream, "2"),
        [listen, upstream, workers] => parse(listen, upstream, workers),
        _ => Err("usage: hyper-floor LISTEN UPSTREAM [WORKERS]".to_owned()),
    };
    let (listen, upstream, workers) = match parsed {
        Ok(p) => p,
        Err(e) => {
            eprintln!("hyper-floor: {e}");
            std::process::exit(2);
        }
    };
    let threads: Vec<_> = (0..workers)
        .map(|_| std::thread::spawn(move || worker(listen, upstream)))
        .collect();
    for t in threads {
        if let Ok(Err(e)) = t.join() {
            eprintln!("hyper-floor: {e}");
            std::process::exit(1);
        }
    }
}

fn parse(listen: &str, upstream: &str, workers: &str) -> Result<(SocketAddr, SocketAddr, usize), String> {
    let listen = listen.parse().map_err(|e| format!("listen address {listen:?}: {e}"))?;
    let upstream = upstream
        .parse()
        .map_err(|e| format!("upstream address {upstream:?}: {e}"))?;
    let workers = workers
        .parse()
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| format!("workers {workers:?}: not a positive number"))?;
    Ok((listen, upstream, workers))
}

/// One worker: its own listening socket on the shared port (the kernel
/// spreads connections over them), its own runtime and pool.
fn worker(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&runtime, async move {
        let socket = match listen {
            SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseport(true)?;
        socket.bind(listen)?;
        let listener = socket.listen(4096)?;
        let pool: Pool = Rc::default();
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                // Out of descriptors, say: wait rather than spin.
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                continue;
            };
            let _ = stream.set_nodelay(true);
            let pool = Rc::clone(&pool);
            tokio::task::spawn_local(async move {
                let service = hyper::service::service_fn(move |req| forward(Rc::clone(&pool), upstream, req));
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    })
}

/// The request as it came, on a pooled connection (or a new one), and the
/// upstream's response as it comes.
async fn forward(
    pool: Pool,
    upstream: SocketAddr,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    let sender = match take_ready(&pool) {
        Some(sender) => Ok(sender),
        None => connect(upstream).await,
    };
    let answer = match sender {
        Ok(mut sender) => {
            let answer = sender.send_request(req).await;
            // Ready again once hyper has read this response's body.
            pool.borrow_mut().push(sender);
            answer.ok()
        }
        Err(_) => None,
    };
    Ok(match answer {
        Some(resp) => resp.map(Either::Left),
        None => {
            let mut resp = Response::new(Either::Right(Empty::new()));
            *resp.status_mut() = StatusCode::BAD_GATEWAY;
            resp
        }
    })
}

/// An idle connection ready for a request. One still reading its last
/// response's body stays in the pool for later; closed ones leave it.
fn take_ready(pool: &Pool) -> Option<SendRequest<Incoming>> {
    let mut idle = pool.borrow_mut();
    idle.retain(|sender| !sender.is_closed());
    let i = idle.iter().rposition(SendRequest::is_ready)?;
    Some(idle.swap_remove(i))
}

async fn connect(upstream: SocketAddr) -> Result<SendRequest<Incoming>, Box<dyn std::error::Error>> {
    let stream = tokio::net::TcpStream::connect(upstream).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::task::spawn_local(conn);
    Ok(sender)
}
