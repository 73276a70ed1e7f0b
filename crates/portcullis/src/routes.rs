//! Which configured route a request belongs to: by host, then by the
//! longest path prefix.
//!
//! Matching runs on the normalized path (see `portcullis_policy::
//! normalize_path`), so `/kibana/../es` cannot pick one route and reach
//! another. A route with a `host` beats a route without one; among routes
//! of the same kind, the longest prefix wins, and a prefix matches only at a
//! segment boundary (`/kibana` matches `/kibana` and `/kibana/app`, not
//! `/kibanana`). Hosts compare case-insensitively and without their port.

use crate::config::Route;

/// The configured routes, ready for matching.
#[derive(Debug, Clone)]
pub struct Router {
    /// Sorted so the first match is the best: host-specific first, then
    /// longest prefix.
    routes: Vec<(usize, Route)>,
}

impl Router {
    pub fn new(routes: &[Route]) -> Self {
        let mut routes: Vec<(usize, Route)> = routes.iter().cloned().enumerate().collect();
        routes.sort_by_key(|(_, r)| (r.host.is_none(), std::cmp::Reverse(r.path_prefix.len())));
        Router { routes }
    }

    /// The route for a request to `host` (as in the `Host` header, port
    /// allowed) and a normalized `path`.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Route> {
        self.find(host, path).map(|i| &self.routes[i].1)
    }

    /// Like [`Self::route`], giving the route's index in the configuration.
    pub fn route_index(&self, host: Option<&str>, path: &str) -> Option<usize> {
        self.find(host, path).map(|i| self.routes[i].0)
    }

    fn find(&self, host: Option<&str>, path: &str) -> Option<usize> {
        let host = host.map(strip_port);
        self.routes.iter().position(|(_, r)| {
            let host_ok = match (&r.host, host) {
                (None, _) => true,
                (Some(want), Some(got)) => strip_port(want).eq_ignore_ascii_case(got),
                (Some(_), None) => false,
            };
            host_ok && prefix_matches(&r.path_prefix, path)
        })
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.routes.iter().map(|(_, r)| r.name.as_str())
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        // [v6]:port
        return host.split_inclusive(']').next().unwrap_or(host);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

fn prefix_matches(prefix: &str, path: &str) -> bool {
    if prefix == "/" || path == prefix {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some(rest) => prefix.ends_with('/') || rest.starts_with('/'),
        None => false,
    }
}

/// Splits an absolute URL or a bare path into (host, path, query-less).
/// Bare paths have no host.
pub fn split_url(url: &str) -> Result<(Option<String>, String), String> {
    if url.starts_with('/') {
        let path = url.split(['?', '#']).next().unwrap_or(url);
        return Ok((None, path.to_owned()));
    }
    let parsed = url::Url::parse(url).map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    let host = parsed.host_str().map(|h| match parsed.port() {
        Some(p) => format!("{h}:{p}"),
        None => h.to_owned(),
    });
    Ok((host, parsed.path().to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, host: Option<&str>, prefix: &str) -> Route {
        Route {
            host: host.map(Into::into),
            path_prefix: prefix.into(),
            ..Route::new(name, url::Url::parse("http://127.0.0.1:1").expect("url"))
        }
    }

    fn check(host: Option<&str>, path: &str, want: Option<&str>) {
        let router = Router::new(&[
            route("any", None, "/"),
            route("kibana", None, "/kibana"),
            route("es", Some("es.example.com"), "/"),
            route("es-admin", Some("es.example.com"), "/_security"),
        ]);
        let got = router.route(host, path).map(|r| r.name.as_str());
        assert_eq!(got, want, "{host:?} {path}");
    }

    #[test]
    fn routes_match_by_host_then_longest_prefix_at_segment_boundaries() {
        check(None, "/", Some("any"));
        check(None, "/kibana", Some("kibana"));
        check(None, "/kibana/app/home", Some("kibana"));
        check(None, "/kibanana", Some("any"));
        check(Some("es.example.com"), "/kibana", Some("es"));
        check(Some("ES.example.com:443"), "/_security/user", Some("es-admin"));
        check(Some("es.example.com"), "/_securityx", Some("es"));
        check(Some("other.example.com"), "/x", Some("any"));
    }

    #[test]
    fn urls_split_into_host_and_path() {
        assert_eq!(
            split_url("https://es.example.com:9200/a/b?q=1").expect("url"),
            (Some("es.example.com:9200".into()), "/a/b".into())
        );
        assert_eq!(split_url("/a?x").expect("path"), (None, "/a".into()));
        assert!(split_url("es.example.com/a").is_err());
    }
}
