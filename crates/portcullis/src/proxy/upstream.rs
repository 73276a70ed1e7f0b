//! The client side: one pooled hyper client per route, with the route's TLS
//! settings and timeouts, and the tunnel for upgraded connections.
//!
//! Bodies stream in both directions; nothing here buffers a body. Timeouts:
//! `connect_timeout` (TCP connect), `response_timeout` (until the response
//! headers arrive), `idle_timeout` (pooled keep-alive connections), and the
//! optional `total_timeout`, which also bounds the response body.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::ProxyBody;
use super::error::ProxyError;
use crate::config::Route;
use crate::tls::{TlsError, upstream_client_config};
use crate::web::BoxError;

/// One route's upstream.
#[derive(Debug)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, ProxyBody>,
    scheme: Scheme,
    authority: Authority,
    /// The upstream URL's path without its trailing slash ("" for "/").
    base_path: String,
    pub host_header: HeaderValue,
    response_timeout: Duration,
    total_timeout: Option<Duration>,
    pub http2: bool,
}

impl Upstream {
    pub fn new(route: &Route) -> Result<Self, TlsError> {
        let invalid = |message: String| TlsError::Invalid {
            path: std::path::PathBuf::from(format!("routes.{}.upstream", route.name)),
            message,
        };
        let url = &route.upstream;
        let scheme = if url.scheme() == "https" {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        };
        let host = url
            .host_str()
            .ok_or_else(|| invalid("the upstream URL has no host".into()))?;
        let authority_text = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let authority: Authority = authority_text
            .parse()
            .map_err(|e| invalid(format!("bad upstream authority: {e}")))?;
        let host_header = HeaderValue::from_str(&authority_text).map_err(|e| invalid(e.to_string()))?;

        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(route.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let tls = upstream_client_config(
            route.upstream_ca.as_deref(),
            route
                .upstream_client_cert
                .as_ref()
                .map(|(c, k)| (c.as_path(), k.as_path())),
        )?;
        // One protocol per route, never negotiated: an upstream that picked
        // h2 would break WebSocket upgrades, which need HTTP/1.1.
        let builder = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http();
        let connector = if route.upstream_http2 {
            builder.enable_http2().wrap_connector(http)
        } else {
            builder.enable_http1().wrap_connector(http)
        };
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(route.idle_timeout)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .http2_only(route.upstream_http2)
            .build(connector);
        Ok(Upstream {
            client,
            scheme,
            authority,
            base_path: url.path().trim_end_matches('/').to_owned(),
            host_header,
            response_timeout: route.response_timeout,
            total_timeout: route.total_timeout,
            http2: route.upstream_http2,
        })
    }

    /// The upstream URI for a normalized path and the client's raw query.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, ProxyError> {
        let mut pq = String::with_capacity(self.base_path.len() + path.len() + query.map_or(0, |q| q.len() + 1));
        pq.push_str(&self.base_path);
        pq.push_str(path);
        if let Some(q) = query {
            pq.push('?');
            pq.push_str(q);
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| ProxyError::bad_request("bad_path", "the request path cannot be forwarded"))
    }

    /// Sends the request and waits for the response headers.
    pub async fn send(&self, req: Request<ProxyBody>) -> Result<Response<ProxyBody>, ProxyError> {
        let wait = match self.total_timeout {
            Some(total) => total.min(self.response_timeout),
            None => self.response_timeout,
        };
        let resp = match tokio::time::timeout(wait, self.client.request(req)).await {
            Err(_) => {
                return Err(ProxyError::GatewayTimeout {
                    detail: format!("no response headers within {}", humantime::format_duration(wait)),
                });
            }
            Ok(Err(e)) => return Err(classify(&e)),
            Ok(Ok(resp)) => resp,
        };
        Ok(match self.total_timeout {
            Some(total) => resp.map(|b| Deadline::new(b, total).boxed()),
            None => resp.map(|b| b.map_err(BoxError::from).boxed()),
        })
    }
}

/// 504 for timeouts, 502 for everything else. The error text (addresses,
/// TLS details) is for the log only.
fn classify(e: &hyper_util::client::legacy::Error) -> ProxyError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    let mut chain = String::new();
    let mut timed_out = false;
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
    if timed_out || chain.contains("timed out") {
        ProxyError::GatewayTimeout { detail: chain }
    } else {
        ProxyError::BadGateway { detail: chain }
    }
}

/// A response body that fails once the exchange's total time is up.
struct Deadline {
    inner: Incoming,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl Deadline {
    fn new(inner: Incoming, total: Duration) -> Self {
        Deadline {
            inner,
            sleep: Box::pin(tokio::time::sleep(total)),
        }
    }
}

impl Body for Deadline {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.sleep.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err("the upstream exchange exceeded its total timeout".into())));
        }
        Pin::new(&mut self.inner).poll_frame(cx).map_err(BoxError::from)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.inner.size_hint()
    }
}

/// Joins an upgraded client connection to the upgraded upstream connection
/// until either side closes.
pub async fn tunnel(client: hyper::upgrade::OnUpgrade, upstream: hyper::upgrade::OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::debug!(error = %e, "upgrade failed");
            return;
        }
    };
    let mut client = hyper_util::rt::TokioIo::new(client);
    let mut upstream = hyper_util::rt::TokioIo::new(upstream);
    if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        tracing::debug!(error = %e, "upgraded connection ended with an error");
    }
}
