//! The per-request context carried through the phases (route,
//! authenticate, authorize, forward, log): what each phase learned, so the
//! next phase, the error mapping and the log line read it from one place.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use http::HeaderMap;
use portcullis_directory::Principal;

use super::ClientConn;

/// A request id: unique within the process and, with overwhelming
/// probability, across restarts (random prefix, then a counter), as 20
/// lower-case hex digits. Kept inline: made on every request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId([u8; 20]);

impl RequestId {
    pub fn next() -> Self {
        static PREFIX: OnceLock<u32> = OnceLock::new();
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let prefix = *PREFIX.get_or_init(rand::random::<u32>);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let value = (u128::from(prefix) << 48) | u128::from(n & 0xffff_ffff_ffff);
        let mut out = [b'0'; 20];
        for (i, b) in out.iter_mut().enumerate() {
            let nibble = (value >> (4 * (19 - i))) & 0xf;
            *b = b"0123456789abcdef"[nibble as usize];
        }
        RequestId(out)
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII hex digits are ever written.
        std::str::from_utf8(&self.0).unwrap_or("-")
    }

    /// The id as a header value, cut from a block this thread shares
    /// among a few hundred ids: a header value of its own would be an
    /// allocation per request. A block is freed when its last id is.
    pub fn header_value(&self) -> http::HeaderValue {
        const BLOCK: usize = 4096;
        thread_local! {
            static IDS: std::cell::RefCell<bytes::BytesMut> = std::cell::RefCell::new(bytes::BytesMut::new());
        }
        let bytes = IDS.with_borrow_mut(|block| {
            if block.capacity() - block.len() < self.0.len() {
                *block = bytes::BytesMut::with_capacity(BLOCK);
            }
            block.extend_from_slice(&self.0);
            block.split().freeze()
        });
        http::HeaderValue::from_maybe_shared(bytes).unwrap_or(http::HeaderValue::from_static("-"))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What is known about one request so far.
#[derive(Debug)]
pub struct RequestContext {
    pub id: RequestId,
    /// The id as a header value, made once: it goes upstream and back to
    /// the client.
    pub id_header: http::HeaderValue,
    pub started: Instant,
    pub conn: Arc<ClientConn>,
    /// The client's address: the peer, or, behind a trusted proxy, the
    /// address it reported.
    pub client_ip: IpAddr,
    /// Whether error pages should be HTML (a browser navigation).
    pub wants_html: bool,
    /// Index into the proxy's routes, once routed.
    pub route: Option<usize>,
    pub route_name: Option<Arc<str>>,
    /// The normalized path, once normalized.
    pub path: Option<String>,
    /// The bound directory user, once authenticated.
    pub principal: Option<Arc<Principal>>,
    /// `allow` or `public` once decided; failures are named by their
    /// status when the request ends.
    pub decision: Option<&'static str>,
    /// A browser with a working session still carries the sign-in redirect
    /// counter: clear it on the response.
    pub clear_redirect_count: bool,
    pub method: http::Method,
    /// The deciding policy rule, once decided (written out as
    /// `file:line:column` only when a record needs it).
    pub rule: Option<portcullis_policy::Location>,
    /// The user's roles and identity under the policy that decided.
    pub resolved: Option<Arc<super::identity::Resolved>>,
    /// How long the upstream took to answer (headers), once forwarded.
    pub upstream: Option<std::time::Duration>,
    /// The error code, when the request failed.
    pub reason: Option<&'static str>,
}

impl RequestContext {
    pub fn new(conn: Arc<ClientConn>, client_ip: IpAddr, method: &http::Method, headers: &HeaderMap) -> Self {
        let id = RequestId::next();
        RequestContext {
            id,
            id_header: id.header_value(),
            started: Instant::now(),
            conn,
            client_ip,
            wants_html: wants_html(headers),
            route: None,
            route_name: None,
            path: None,
            principal: None,
            decision: None,
            clear_redirect_count: false,
            method: method.clone(),
            rule: None,
            resolved: None,
            upstream: None,
            reason: None,
        }
    }

    pub fn route_name(&self) -> &str {
        self.route_name.as_deref().unwrap_or("-")
    }
}

/// A browser navigation asks for HTML; XHR and API clients do not.
///
/// One pass over the headers rather than two lookups: an API client sends
/// a handful of headers, and a lookup hashes its name whether or not the
/// header is there.
fn wants_html(headers: &HeaderMap) -> bool {
    const X_REQUESTED_WITH: http::HeaderName = http::HeaderName::from_static("x-requested-with");
    let mut html = false;
    for (name, value) in headers {
        if name == http::header::ACCEPT {
            html = html || value.to_str().is_ok_and(|accept| accept.contains("text/html"));
        } else if name == X_REQUESTED_WITH && value.as_bytes().eq_ignore_ascii_case(b"xmlhttprequest") {
            return false;
        }
    }
    html
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_navigating_want_html() {
        let check = |pairs: &[(&str, &str)], expected: bool| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.append(
                    http::HeaderName::from_bytes(k.as_bytes()).expect("name"),
                    http::HeaderValue::from_str(v).expect("value"),
                );
            }
            assert_eq!(wants_html(&h), expected, "{pairs:?}");
        };
        check(&[], false);
        check(&[("accept", "text/html,application/xhtml+xml,*/*;q=0.8")], true);
        check(&[("accept", "application/json")], false);
        check(&[("accept", "application/json"), ("accept", "text/html")], true);
        check(
            &[("Accept", "text/html"), ("X-Requested-With", "XMLHttpRequest")],
            false,
        );
        check(
            &[("x-requested-with", "xmlhttprequest"), ("accept", "text/html")],
            false,
        );
        check(&[("x-requested-with", "fetch"), ("accept", "text/html")], true);
        check(&[("accept", "*/*"), ("user-agent", "text/html")], false);
    }

    #[test]
    fn request_ids_are_distinct_hex() {
        let a = RequestId::next();
        let b = RequestId::next();
        assert_ne!(a, b);
        assert_eq!(a.as_str().len(), 20);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(a.header_value(), a.as_str());
    }

    #[test]
    fn request_id_header_values_outlive_their_blocks() {
        // Ids cut from one block and across blocks stay what they were,
        // whichever is dropped first.
        let ids: Vec<RequestId> = (0..1000).map(|_| RequestId::next()).collect();
        let mut values: Vec<http::HeaderValue> = ids.iter().map(RequestId::header_value).collect();
        values.drain(..500);
        let more: Vec<http::HeaderValue> = ids.iter().map(RequestId::header_value).collect();
        for (i, v) in values.iter().enumerate() {
            assert_eq!(v, ids[500 + i].as_str());
        }
        for (id, v) in ids.iter().zip(&more) {
            assert_eq!(v, id.as_str());
        }
    }
}
