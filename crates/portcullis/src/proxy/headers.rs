//! Header hygiene between the client and the upstream.
//!
//! Three rules, applied to every proxied request before Portcullis adds its
//! own headers:
//! 1. hop-by-hop headers (RFC 9110 section 7.6.1, plus those `Connection`
//!    names) end at the proxy; an upgrade keeps `Connection: upgrade` and
//!    `Upgrade`.
//! 2. anything that could pose as identity is removed: every header the
//!    route sets, `x-portcullis-*`, and every `x-forwarded-*` other than the
//!    three Portcullis rebuilds; names are compared after lower-casing and
//!    mapping `_` to `-`, because some upstream frameworks (CGI, WSGI,
//!    nginx with underscores_in_headers) read `X_Forwarded_User` as
//!    `X-Forwarded-User`.
//! 3. `X-Forwarded-For/Proto/Host` and `Forwarded` are rebuilt from the
//!    connection; the client's own values are kept (and appended to) only
//!    when the peer is a configured trusted proxy.
//!
//! Responses lose their hop-by-hop headers too.

use std::fmt::Write as _;
use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};
use ipnet::IpNet;

/// Hop-by-hop headers that are never forwarded. Names, not strings: a
/// removal by string parses the name first. A `static`, not a `const`: a
/// `const` array is built (and dropped) again wherever it is used.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

pub const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
pub const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
pub const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether this request asks for a protocol upgrade (WebSocket and others).
pub fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE) && connection_has(headers, "upgrade")
}

fn connection_has(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Removes hop-by-hop headers. With `upgrade`, `Connection: upgrade` and
/// `Upgrade` survive (and nothing else `Connection` names).
///
/// Runs on every request and every response: one pass over the names
/// present decides what to remove, since a removal hashes its name whether
/// or not the header is there, and most messages carry at most
/// `Connection: keep-alive`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, upgrade: bool) {
    let (mut connection, mut te, mut others) = (false, false, false);
    for name in headers.keys() {
        // By the name's text: comparing `HeaderName`s one by one against
        // the list cost more than everything else here together.
        match name.as_str() {
            "connection" => connection = true,
            "te" => te = true,
            "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "trailer"
            | "transfer-encoding" => others = true,
            "upgrade" if !upgrade => others = true,
            _ => {}
        }
    }
    if connection && let Entry::Occupied(entry) = headers.entry(header::CONNECTION) {
        // Headers named in Connection are hop-by-hop for this message
        // only (`close` too: a header of that name goes). `keep-alive` and
        // `upgrade` name headers dealt with below. The values are taken out
        // with one lookup; most messages name nothing, and then nothing is
        // allocated.
        let mut named: Vec<HeaderName> = Vec::new();
        for value in entry.remove_entry_mult().1 {
            for token in value.as_bytes().split(|&b| b == b',').map(<[u8]>::trim_ascii) {
                let dealt_with = token.is_empty()
                    || token.eq_ignore_ascii_case(b"keep-alive")
                    || token.eq_ignore_ascii_case(b"upgrade");
                if !dealt_with && let Ok(name) = HeaderName::from_bytes(token) {
                    named.push(name);
                }
            }
        }
        for h in named {
            headers.remove(h);
        }
    }
    if te {
        // `TE: trailers` is the one TE value that is end-to-end in
        // practice: gRPC requires it.
        let trailers = headers
            .get(header::TE)
            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
        if trailers {
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        } else {
            headers.remove(header::TE);
        }
    }
    if others {
        for h in HOP_BY_HOP.iter() {
            headers.remove(h);
        }
        if !upgrade {
            headers.remove(header::UPGRADE);
        }
    }
    if upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// `X_Forwarded_User` -> `x-forwarded-user` (header names are already
/// lower case in `http`).
fn canonical(name: &str) -> String {
    name.replace('_', "-")
}

/// The header names a route sets itself, and the first bytes any header
/// that could pose as identity can start with: a request's headers are
/// mostly ruled out by their first byte alone, before any name is
/// compared.
#[derive(Debug, Clone)]
pub struct Managed {
    names: Vec<HeaderName>,
    first: [bool; 256],
}

impl Managed {
    pub fn new(names: Vec<HeaderName>) -> Managed {
        let mut first = [false; 256];
        // `x-forwarded-*` and `x-portcullis-*`; and a leading `_` reads as
        // `-` once canonical.
        for b in [b'x', b'_', b'-'] {
            first[usize::from(b)] = true;
        }
        for name in &names {
            if let Some(&b) = name.as_str().as_bytes().first() {
                first[usize::from(b)] = true;
            }
        }
        Managed { names, first }
    }

    fn may_pose(&self, name: &HeaderName) -> bool {
        name.as_str()
            .as_bytes()
            .first()
            .is_some_and(|&b| self.first[usize::from(b)])
    }
}

/// Removes every header that could be mistaken for identity Portcullis
/// asserts: the names in `managed` (compared canonically), `x-portcullis-*`
/// and `x-forwarded-*` except for/proto/host.
pub fn strip_identity(headers: &mut HeaderMap, managed: &Managed) {
    let doomed = |name: &&HeaderName| {
        if !managed.may_pose(name) {
            return false;
        }
        let raw = name.as_str();
        let c = if raw.contains('_') {
            std::borrow::Cow::Owned(canonical(raw))
        } else {
            std::borrow::Cow::Borrowed(raw)
        };
        let forwarded = c.starts_with("x-forwarded-")
            && !(raw == "x-forwarded-for" || raw == "x-forwarded-proto" || raw == "x-forwarded-host");
        // An underscore spelling of a header Portcullis rebuilds is a
        // spoof, too: only the exact names are replaced below.
        let forwarded_variant =
            raw.contains('_') && matches!(&*c, "x-forwarded-for" | "x-forwarded-proto" | "x-forwarded-host");
        forwarded
            || forwarded_variant
            || c.starts_with("x-portcullis-")
            || managed.names.iter().any(|m| m.as_str() == c)
    };
    // The common request carries none: look before allocating.
    if headers.keys().any(|k| doomed(&k)) {
        let names: Vec<HeaderName> = headers.keys().filter(doomed).cloned().collect();
        for h in names {
            headers.remove(h);
        }
    }
}

/// Whether `ip` is one of the trusted proxies.
pub fn is_trusted(trusted: &[IpNet], ip: IpAddr) -> bool {
    let ip = canonical_ip(ip);
    trusted.iter().any(|net| net.contains(&ip))
}

fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The client's address: the peer, or behind trusted proxies the rightmost
/// `X-Forwarded-For` entry that is not itself a trusted proxy (entries to
/// its left could have been written by the client).
pub fn client_ip(headers: &HeaderMap, peer: IpAddr, trusted: &[IpNet]) -> IpAddr {
    let peer = canonical_ip(peer);
    if !is_trusted(trusted, peer) {
        return peer;
    }
    let mut hops: Vec<IpAddr> = Vec::new();
    for value in headers.get_all(X_FORWARDED_FOR) {
        let Ok(v) = value.to_str() else { return peer };
        for part in v.split(',') {
            match part.trim().parse::<IpAddr>() {
                Ok(ip) => hops.push(canonical_ip(ip)),
                // A malformed chain is not evidence of anything.
                Err(_) => return peer,
            }
        }
    }
    hops.into_iter()
        .rev()
        .find(|ip| !is_trusted(trusted, *ip))
        .unwrap_or(peer)
}

/// What the forwarding headers describe.
#[derive(Debug, Clone, Copy)]
pub struct Forwarding<'a> {
    pub peer: IpAddr,
    pub trusted_peer: bool,
    /// `https` or `http`: how the client reached Portcullis (or, behind a
    /// trusted proxy, what it says).
    pub proto: &'a str,
    pub host: Option<&'a HeaderValue>,
}

/// Rebuilds `X-Forwarded-For/Proto/Host` and `Forwarded`.
pub fn set_forwarding(headers: &mut HeaderMap, f: &Forwarding<'_>) {
    let peer = canonical_ip(f.peer);
    let prior_xff: Option<String> = f.trusted_peer.then(|| join_values(headers, &X_FORWARDED_FOR)).flatten();
    let prior_fwd: Option<String> = f
        .trusted_peer
        .then(|| join_values(headers, &header::FORWARDED))
        .flatten();
    // Each value is allocated once, at its exact size: a `String` whose
    // capacity exceeds its length becomes a header value through a second
    // allocation (`Bytes`' shared form).
    let ip = IpText::of(peer);
    let ip = ip.as_str();
    match prior_xff {
        Some(mut chain) => {
            chain.reserve_exact(2 + ip.len());
            chain.push_str(", ");
            chain.push_str(ip);
            // The `String`'s buffer becomes the value as is.
            set_or_remove(headers, X_FORWARDED_FOR, HeaderValue::try_from(chain).ok());
        }
        None => set_or_remove(headers, X_FORWARDED_FOR, HeaderValue::from_str(ip).ok()),
    }
    let fwd = forwarded_value(prior_fwd.as_deref(), peer, f.proto, f.host);
    set_or_remove(headers, header::FORWARDED, fwd);
    set_proto_and_host(headers, f.trusted_peer, f.proto, f.host);
}

/// The `Forwarded` element for this hop, after the `prior` chain if any.
/// Quotes and backslashes are dropped from the host, which is quoted.
fn forwarded_value(prior: Option<&str>, peer: IpAddr, proto: &str, host: Option<&HeaderValue>) -> Option<HeaderValue> {
    let ip = IpText::of(peer);
    let ip = ip.as_str();
    let host = host.and_then(|h| h.to_str().ok());
    let dropped = host.map_or(0, |h| h.bytes().filter(|b| matches!(b, b'"' | b'\\')).count());
    let host_len = host.map_or(0, |h| ";host=\"\"".len() + h.len() - dropped);
    let for_len = if peer.is_ipv4() {
        "for=".len()
    } else {
        "for=\"[]\"".len()
    };
    let len = prior.map_or(0, |p| p.len() + 2) + for_len + ip.len() + ";proto=".len() + proto.len() + host_len;
    let mut fwd = String::with_capacity(len);
    if let Some(prior) = prior {
        fwd.push_str(prior);
        fwd.push_str(", ");
    }
    if peer.is_ipv4() {
        fwd.push_str("for=");
        fwd.push_str(ip);
    } else {
        fwd.push_str("for=\"[");
        fwd.push_str(ip);
        fwd.push_str("]\"");
    }
    fwd.push_str(";proto=");
    fwd.push_str(proto);
    if let Some(host) = host {
        fwd.push_str(";host=\"");
        if dropped == 0 {
            fwd.push_str(host);
        } else {
            fwd.extend(host.split(['"', '\\']));
        }
        fwd.push('"');
    }
    debug_assert_eq!(fwd.len(), len, "the Forwarded value's size was computed wrong");
    HeaderValue::try_from(fwd).ok()
}

/// `X-Forwarded-Proto` and `X-Forwarded-Host`: what a trusted proxy says
/// about the original request stands; anyone else's is replaced.
fn set_proto_and_host(headers: &mut HeaderMap, trusted_peer: bool, proto: &str, host: Option<&HeaderValue>) {
    let proto = HeaderValue::from_static(proto_static(proto));
    if trusted_peer {
        if !headers.contains_key(X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, proto);
        }
        if !headers.contains_key(X_FORWARDED_HOST)
            && let Some(host) = host
        {
            headers.insert(X_FORWARDED_HOST, host.clone());
        }
    } else {
        headers.insert(X_FORWARDED_PROTO, proto);
        set_or_remove(headers, X_FORWARDED_HOST, host.cloned());
    }
}

fn own_copy(value: &HeaderValue) -> HeaderValue {
    let mut copy = HeaderValue::from_bytes(value.as_bytes()).unwrap_or_else(|_| value.clone());
    copy.set_sensitive(value.is_sensitive());
    copy
}

fn set_or_remove(headers: &mut HeaderMap, name: HeaderName, value: Option<HeaderValue>) {
    match value {
        Some(v) => {
            headers.insert(name, v);
        }
        None => {
            headers.remove(name);
        }
    }
}

/// The forwarding headers of one client connection, made once for all its
/// requests: the peer and the scheme are the connection's, and the
/// `Forwarded` value is kept for the first `Host` the connection sends (a
/// client sends one `Host` per connection in practice; another is written
/// out afresh). A request then clones ready values, instead of writing out
/// the address and the `Forwarded` element and allocating both, on every
/// request. Behind a trusted proxy nothing is kept: the chain the proxy
/// sends differs per request.
#[derive(Debug)]
pub struct ConnForwarding {
    /// Canonical (an IPv4-mapped IPv6 address is IPv4).
    peer: IpAddr,
    trusted: bool,
    proto: &'static str,
    xff: Option<HeaderValue>,
    /// The first `Host` (or none) and its `Forwarded` value.
    forwarded: std::sync::OnceLock<(Option<HeaderValue>, Option<HeaderValue>)>,
}

impl ConnForwarding {
    pub fn new(peer: IpAddr, tls: bool, trusted: &[IpNet]) -> ConnForwarding {
        let peer = canonical_ip(peer);
        ConnForwarding {
            peer,
            trusted: is_trusted(trusted, peer),
            proto: if tls { "https" } else { "http" },
            xff: HeaderValue::from_str(IpText::of(peer).as_str()).ok(),
            forwarded: std::sync::OnceLock::new(),
        }
    }

    /// Whether the peer is one of the trusted proxies.
    pub fn trusted(&self) -> bool {
        self.trusted
    }

    /// The peer's address, an IPv4-mapped IPv6 address written as IPv4.
    pub fn peer(&self) -> IpAddr {
        self.peer
    }

    /// Rebuilds `X-Forwarded-For/Proto/Host` and `Forwarded`, as
    /// [`set_forwarding`] does, for a request of this connection that
    /// named `host`.
    pub fn apply(&self, headers: &mut HeaderMap, host: Option<&HeaderValue>) {
        if self.trusted {
            return set_forwarding(
                headers,
                &Forwarding {
                    peer: self.peer,
                    trusted_peer: true,
                    proto: self.proto,
                    host,
                },
            );
        }
        set_or_remove(headers, X_FORWARDED_FOR, self.xff.clone());
        let fwd = match self.forwarded.get() {
            Some((first, value)) if first.as_ref() == host => value.clone(),
            _ => {
                let value = forwarded_value(None, self.peer, self.proto, host);
                // Kept only if this is the connection's first. The host is
                // copied: the request's value is a slice of the buffer
                // hyper read it into, which a clone would keep alive for
                // as long as the connection is open.
                let _ = self.forwarded.set((host.map(own_copy), value.clone()));
                value
            }
        };
        set_or_remove(headers, header::FORWARDED, fwd);
        set_proto_and_host(headers, false, self.proto, host);
    }
}

/// An address written out as `Display` writes it, on the stack. IPv4 is
/// written by hand rather than through the formatting machinery, which
/// cost a tenth of the proxy's own header work.
struct IpText {
    /// The longest address text is 39 bytes (IPv6, eight full groups);
    /// room to spare.
    buf: [u8; 48],
    len: usize,
}

impl IpText {
    fn of(ip: IpAddr) -> IpText {
        let mut text = IpText { buf: [0; 48], len: 0 };
        match ip {
            IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        text.push(b'.');
                    }
                    if octet >= 100 {
                        text.push(b'0' + octet / 100);
                    }
                    if octet >= 10 {
                        text.push(b'0' + octet / 10 % 10);
                    }
                    text.push(b'0' + octet % 10);
                }
            }
            IpAddr::V6(v6) => {
                let _ = write!(text, "{v6}");
            }
        }
        text
    }

    fn push(&mut self, byte: u8) {
        if let Some(slot) = self.buf.get_mut(self.len) {
            *slot = byte;
            self.len += 1;
        }
    }

    fn as_str(&self) -> &str {
        // Only ASCII is ever written.
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or_default()
    }
}

impl std::fmt::Write for IpText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.buf.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

fn proto_static(proto: &str) -> &'static str {
    if proto == "https" { "https" } else { "http" }
}

fn join_values(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let parts: Vec<&str> = headers.get_all(name).iter().filter_map(|v| v.to_str().ok()).collect();
    (!parts.is_empty()).then(|| parts.join(", "))
}

/// Removes one cookie by name from the `Cookie` header(s), keeping the rest.
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    strip_cookies(headers, |n| n == name);
}

/// Removes the cookies whose name `drop` picks, keeping the rest (in one
/// `Cookie` header). Headers without such a cookie are left as they are.
pub fn strip_cookies(headers: &mut HeaderMap, drop: impl Fn(&str) -> bool) {
    let mut kept = String::new();
    let mut dropped = false;
    for value in headers.get_all(header::COOKIE) {
        // A value that is not text cannot be read to keep what is safe.
        let Ok(value) = value.to_str() else {
            dropped = true;
            continue;
        };
        for pair in value.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let name = pair.split('=').next().unwrap_or_default().trim();
            if drop(name) {
                dropped = true;
            } else {
                if !kept.is_empty() {
                    kept.push_str("; ");
                }
                kept.push_str(pair);
            }
        }
    }
    if !dropped {
        return;
    }
    headers.remove(header::COOKIE);
    if !kept.is_empty()
        && let Ok(v) = HeaderValue::try_from(kept)
    {
        headers.insert(header::COOKIE, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                HeaderValue::from_str(v).expect("value"),
            );
        }
        h
    }

    fn names(h: &HeaderMap) -> Vec<String> {
        let mut v: Vec<String> = h.keys().map(|k| k.as_str().to_owned()).collect();
        v.sort();
        v
    }

    #[test]
    fn identity_spoofs_are_removed_in_every_spelling() {
        let managed = Managed::new(vec![
            HeaderName::from_static("x-auth-user"),
            HeaderName::from_static("es-security-runas-user"),
            HeaderName::from_static("remote-user"),
        ]);
        let mut h = map(&[
            ("X-Forwarded-User", "mallory"),
            ("x_forwarded_user", "mallory"),
            ("X-Forwarded-Email", "m@x"),
            ("x-forwarded-groups", "admins"),
            ("x-forwarded-groups", "admins2"),
            ("X-Portcullis-Roles", "admin"),
            ("x_portcullis_user", "admin"),
            ("X_Auth_User", "admin"),
            ("x-auth-user", "admin"),
            ("es_security_runas_user", "elastic"),
            ("Remote_User", "admin"),
            ("remote-userx", "kept"),
            ("_x_forwarded_user", "kept"),
            ("x_forwarded_for", "1.2.3.4"),
            ("x-forwarded-for", "1.2.3.4"),
            ("accept", "*/*"),
            ("x-auth-userx", "kept"),
        ]);
        strip_identity(&mut h, &managed);
        assert_eq!(
            names(&h),
            [
                "_x_forwarded_user",
                "accept",
                "remote-userx",
                "x-auth-userx",
                "x-forwarded-for"
            ]
        );
    }

    #[test]
    fn hop_by_hop_headers_end_here() {
        let mut h = map(&[
            ("connection", "close, x-secret"),
            ("x-secret", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "gzip"),
            ("upgrade", "websocket"),
            ("proxy-authorization", "Basic x"),
            ("accept", "*/*"),
        ]);
        strip_hop_by_hop(&mut h, false);
        assert_eq!(names(&h), ["accept"]);

        let mut h = map(&[("connection", "Upgrade"), ("upgrade", "websocket"), ("te", "trailers")]);
        assert!(is_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(names(&h), ["connection", "te", "upgrade"]);
    }

    #[test]
    fn hop_by_hop_removal_keeps_end_to_end_headers() {
        // (headers, upgrade, names left)
        let check = |pairs: &[(&str, &str)], upgrade: bool, left: &[&str]| {
            let mut h = map(pairs);
            strip_hop_by_hop(&mut h, upgrade);
            assert_eq!(names(&h), left, "{pairs:?} upgrade={upgrade}");
        };
        check(
            &[("content-type", "text/plain"), ("date", "x")],
            false,
            &["content-type", "date"],
        );
        check(
            &[("connection", "keep-alive"), ("keep-alive", "timeout=5"), ("date", "x")],
            false,
            &["date"],
        );
        check(
            &[("connection", "close"), ("close", "x"), ("date", "x")],
            false,
            &["date"],
        );
        check(&[("upgrade", "h2c"), ("date", "x")], false, &["date"]);
        // Every Connection value counts, and the names in it in any case.
        check(
            &[
                ("connection", "x-a"),
                ("connection", " keep-alive ,X-B,, "),
                ("x-a", "1"),
                ("x-b", "2"),
                ("date", "x"),
            ],
            false,
            &["date"],
        );
        // Every listed name alone (the scan that finds them and the list
        // that removes them must agree), in any case the client sent.
        for name in HOP_BY_HOP.iter() {
            check(&[(name.as_str(), "x"), ("date", "x")], false, &["date"]);
            let shouted = name.as_str().to_ascii_uppercase();
            check(&[(shouted.as_str(), "x"), ("date", "x")], false, &["date"]);
        }
        check(&[("transfer-encoding", "chunked"), ("trailer", "x-sum")], false, &[]);
        check(&[("te", "gzip"), ("te", "trailers")], false, &[]);
        check(&[("te", "trailers"), ("te", "gzip")], false, &["te"]);
        check(
            &[
                ("connection", "upgrade, x-hop"),
                ("upgrade", "websocket"),
                ("x-hop", "1"),
            ],
            true,
            &["connection", "upgrade"],
        );
    }

    #[test]
    fn addresses_are_written_as_display_writes_them() {
        for ip in [
            "0.0.0.0",
            "9.10.99.100",
            "127.0.0.1",
            "255.255.255.255",
            "10.200.5.31",
            "2001:db8::1",
            "::1",
            "1111:2222:3333:4444:5555:6666:7777:8888",
            "::ffff:255.255.255.255",
        ] {
            let ip: IpAddr = ip.parse().expect("ip");
            assert_eq!(IpText::of(ip).as_str(), ip.to_string());
        }
    }

    #[test]
    fn client_ip_is_trusted_only_through_trusted_proxies() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        let h = map(&[("x-forwarded-for", "6.6.6.6, 1.2.3.4"), ("x-forwarded-for", "10.1.1.1")]);
        let lb: IpAddr = "10.0.0.2".parse().expect("ip");
        let outsider: IpAddr = "5.5.5.5".parse().expect("ip");
        assert_eq!(client_ip(&h, lb, &trusted), "1.2.3.4".parse::<IpAddr>().expect("ip"));
        assert_eq!(client_ip(&h, outsider, &trusted), outsider);
        let bad = map(&[("x-forwarded-for", "nonsense")]);
        assert_eq!(client_ip(&bad, lb, &trusted), lb);
    }

    #[test]
    fn forwarding_headers_are_rebuilt_unless_the_peer_is_trusted() {
        let host = HeaderValue::from_static("app.example.com");
        let mut h = map(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-proto", "https"),
            ("forwarded", "for=6.6.6.6"),
        ]);
        set_forwarding(
            &mut h,
            &Forwarding {
                peer: "5.5.5.5".parse().expect("ip"),
                trusted_peer: false,
                proto: "http",
                host: Some(&host),
            },
        );
        assert_eq!(h["x-forwarded-for"], "5.5.5.5");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "app.example.com");
        assert_eq!(h["forwarded"], "for=5.5.5.5;proto=http;host=\"app.example.com\"");

        let mut h = map(&[("x-forwarded-for", "1.2.3.4"), ("x-forwarded-proto", "https")]);
        set_forwarding(
            &mut h,
            &Forwarding {
                peer: "10.0.0.2".parse().expect("ip"),
                trusted_peer: true,
                proto: "http",
                host: None,
            },
        );
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.2");
        assert_eq!(h["x-forwarded-proto"], "https");
    }

    #[test]
    fn a_connection_forwards_what_each_request_would_get_alone() {
        let trusted: Vec<IpNet> = vec!["10.0.0.0/8".parse().expect("net")];
        // The requests of one connection, each with its Host and the
        // client's own forwarding headers: kept values must never answer
        // for a request they do not describe.
        let hosts = [
            Some("a.example"),
            Some("a.example"),
            Some("b.example"),
            None,
            Some("a.example"),
            None,
        ];
        let prior = [
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=6.6.6.6"),
            ("x-forwarded-host", "evil.example"),
        ];
        let check = |peer: &str, tls: bool| {
            let peer: IpAddr = peer.parse().expect("ip");
            let conn = ConnForwarding::new(peer, tls, &trusted);
            for host in hosts {
                let host = host.map(HeaderValue::from_static);
                let (mut kept, mut alone) = (map(&prior), map(&prior));
                conn.apply(&mut kept, host.as_ref());
                set_forwarding(
                    &mut alone,
                    &Forwarding {
                        peer,
                        trusted_peer: is_trusted(&trusted, peer),
                        proto: if tls { "https" } else { "http" },
                        host: host.as_ref(),
                    },
                );
                assert_eq!(kept, alone, "{peer} tls={tls} host={host:?}");
            }
        };
        check("5.5.5.5", false);
        check("5.5.5.5", true);
        check("2001:db8::1", true);
        check("::ffff:5.5.5.5", false);
        check("10.0.0.2", false);
        check("::ffff:10.0.0.2", true);
    }

    /// What a connection keeps must not pin the buffer a request was read
    /// into (hyper's header values are slices of it): an idle connection
    /// would hold kilobytes for one host name.
    #[test]
    fn a_connection_keeps_its_own_copy_of_the_host() {
        let buffer = bytes::Bytes::from(b"GET / HTTP/1.1\r\nhost: app.example\r\n\r\n".to_vec());
        let host = HeaderValue::from_maybe_shared(buffer.slice(22..33)).expect("host");
        assert_eq!(host, "app.example");
        let conn = ConnForwarding::new("5.5.5.5".parse().expect("ip"), false, &[]);
        conn.apply(&mut HeaderMap::new(), Some(&host));
        let (kept, _) = conn.forwarded.get().expect("kept");
        let kept = kept.as_ref().expect("a host");
        assert_eq!(kept, &host);
        let inside = buffer.as_ptr_range();
        assert!(
            !inside.contains(&kept.as_bytes().as_ptr()),
            "the kept host points into the read buffer"
        );
    }

    #[test]
    fn forwarded_names_the_peer_and_host_and_extends_only_a_trusted_chain() {
        // (client's headers, peer, trusted, Host, X-Forwarded-For, Forwarded)
        let check = |prior: &[(&str, &str)], peer: &str, trusted: bool, host: Option<&str>, xff: &str, fwd: &str| {
            let mut h = map(prior);
            let host = host.map(|v| HeaderValue::from_str(v).expect("host"));
            set_forwarding(
                &mut h,
                &Forwarding {
                    peer: peer.parse().expect("ip"),
                    trusted_peer: trusted,
                    proto: "https",
                    host: host.as_ref(),
                },
            );
            assert_eq!(h["x-forwarded-for"], xff, "{prior:?} from {peer}");
            assert_eq!(h["forwarded"], fwd, "{prior:?} from {peer}");
        };
        check(
            &[],
            "2001:db8::1",
            false,
            Some("a\"b\\c.example"),
            "2001:db8::1",
            "for=\"[2001:db8::1]\";proto=https;host=\"abc.example\"",
        );
        // An IPv4 peer seen through an IPv6 socket is written as IPv4.
        check(
            &[],
            "::ffff:10.0.0.2",
            false,
            None,
            "10.0.0.2",
            "for=10.0.0.2;proto=https",
        );
        check(
            &[("forwarded", "for=1.2.3.4"), ("x-forwarded-for", "1.2.3.4")],
            "10.0.0.2",
            true,
            None,
            "1.2.3.4, 10.0.0.2",
            "for=1.2.3.4, for=10.0.0.2;proto=https",
        );
        check(
            &[("forwarded", "for=6.6.6.6"), ("x-forwarded-for", "6.6.6.6")],
            "10.0.0.2",
            false,
            None,
            "10.0.0.2",
            "for=10.0.0.2;proto=https",
        );
    }

    #[test]
    fn one_cookie_is_removed_and_the_others_kept() {
        let mut h = map(&[("cookie", "a=1; _portcullis=secret; b=2"), ("cookie", "_portcullis=x")]);
        strip_cookie(&mut h, "_portcullis");
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h["cookie"], "a=1; b=2");

        // Only the session cookie: no Cookie header is left.
        let mut h = map(&[("cookie", "_portcullis=secret")]);
        strip_cookie(&mut h, "_portcullis");
        assert!(h.get("cookie").is_none());

        // None of ours: left alone, even in two headers.
        let mut h = map(&[("cookie", "a=1"), ("cookie", "b=2")]);
        strip_cookie(&mut h, "_portcullis");
        assert_eq!(h.get_all("cookie").iter().count(), 2);
    }
}
