//! What a [`Verifier`](crate::Verifier) is told about one issuer, and the
//! rules for the URLs it will fetch.
//!
//! This module checks configuration only; it reads no file and opens no
//! connection (the CA file is read by the HTTP client when the verifier is
//! built).

use std::path::PathBuf;
use std::time::Duration;

use url::{Host, Url};

use crate::error::OidcError;

/// One OpenID Connect issuer whose tokens a [`Verifier`](crate::Verifier)
/// accepts. Build it with [`IssuerConfig::new`] and change the fields that
/// differ from the defaults.
#[derive(Debug, Clone)]
pub struct IssuerConfig {
    /// The issuer identifier, e.g. `https://idp.example.com/realms/x`.
    /// Discovery is fetched from `{issuer}/.well-known/openid-configuration`.
    /// Must be `https`, except for loopback hosts (tests, a local IdP).
    pub issuer: Url,
    /// A token's `aud` (a string or an array) must contain at least one.
    pub audiences: Vec<String>,
    /// Clock skew allowed for `exp`, `nbf` and `iat`. Default 30 s.
    pub leeway: Duration,
    /// A PEM file of extra CA certificates trusted for the IdP, besides the
    /// webpki roots.
    pub ca_file: Option<PathBuf>,
    /// How often the JWKS is refetched. Default 5 min.
    pub refresh_interval: Duration,
    /// A token with an unknown `kid` triggers a JWKS refetch at most this
    /// often. Default 10 s.
    pub unknown_kid_min_interval: Duration,
    /// Time limit of one discovery or JWKS request. Default 5 s.
    pub http_timeout: Duration,
    /// Most verified tokens kept in the cache. Default 100,000; 0 turns the
    /// cache off.
    pub cache_capacity: usize,
    /// Most memory the cache may take, estimated from token sizes.
    /// Default 256 MiB.
    pub cache_max_bytes: usize,
}

impl IssuerConfig {
    /// An issuer with the default leeway, intervals, timeout and cache size.
    pub fn new(issuer: url::Url, audiences: Vec<String>) -> IssuerConfig {
        IssuerConfig {
            issuer,
            audiences,
            leeway: Duration::from_secs(30),
            ca_file: None,
            refresh_interval: Duration::from_secs(5 * 60),
            unknown_kid_min_interval: Duration::from_secs(10),
            http_timeout: Duration::from_secs(5),
            cache_capacity: 100_000,
            cache_max_bytes: 256 * 1024 * 1024,
        }
    }

    /// Checks everything that can be checked without I/O.
    pub(crate) fn validate(&self) -> Result<(), OidcError> {
        check_fetch_url("issuer", &self.issuer)?;
        let invalid = |reason| OidcError::InvalidConfig {
            issuer: self.issuer.to_string(),
            reason,
        };
        if self.issuer.query().is_some() || self.issuer.fragment().is_some() {
            return Err(invalid("an issuer has no query or fragment"));
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return Err(invalid("at least one audience is required, and none may be empty"));
        }
        if self.refresh_interval < Duration::from_secs(1) {
            return Err(invalid("refresh_interval must be at least one second"));
        }
        if self.http_timeout.is_zero() {
            return Err(invalid("http_timeout must not be zero"));
        }
        Ok(())
    }

    /// `{issuer}/.well-known/openid-configuration`, with the issuer's
    /// trailing slash (if any) not doubled.
    pub(crate) fn discovery_url(&self) -> Url {
        let base = self.issuer.as_str().trim_end_matches('/');
        Url::parse(&format!("{base}/.well-known/openid-configuration"))
            .expect("an issuer URL with a path appended is a URL")
    }
}

/// Whether the `issuer` a discovery document announces is the configured
/// one. They must be the same string; the one exception is the trailing
/// slash of an empty path, since [`Url`] always adds it and so cannot tell
/// `https://idp` from `https://idp/` (both are in use).
pub(crate) fn issuer_matches(configured: &Url, announced: &str) -> bool {
    let configured_str = configured.as_str();
    announced == configured_str || (configured.path() == "/" && configured_str.strip_suffix('/') == Some(announced))
}

/// Refuses URLs this crate will not fetch keys from: anything but `https`,
/// except plain `http` to a loopback host (where nobody can sit in between).
pub(crate) fn check_fetch_url(what: &'static str, url: &Url) -> Result<(), OidcError> {
    let refuse = |reason| OidcError::InvalidUrl {
        what,
        url: url.to_string(),
        reason,
    };
    if url.host().is_none() {
        return Err(refuse("has no host"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("must not contain credentials"));
    }
    match url.scheme() {
        "https" => Ok(()),
        "http" if is_loopback(url) => Ok(()),
        "http" => Err(refuse("must use https (plain http is allowed only for loopback hosts)")),
        _ => Err(refuse("must be an https URL")),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Ipv4(addr)) => addr.is_loopback(),
        Some(Host::Ipv6(addr)) => addr.is_loopback(),
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(issuer: &str) -> IssuerConfig {
        IssuerConfig::new(Url::parse(issuer).expect("url"), vec!["api".to_owned()])
    }

    #[test]
    fn only_https_or_loopback_http_is_fetched() {
        let cases = [
            ("https://idp.example.com/realms/x", true),
            ("https://idp.example.com", true),
            ("http://127.0.0.1:8080", true),
            ("http://127.8.9.10", true),
            ("http://[::1]:9000/realms/x", true),
            ("http://localhost:8080", true),
            ("http://LOCALHOST", true),
            ("http://idp.example.com", false),
            ("http://10.0.0.1", false),
            ("http://localhost.example.com", false),
            ("http://[::2]", false),
            ("ftp://idp.example.com", false),
            ("file:///etc/passwd", false),
            ("https://user:pass@idp.example.com", false),
            ("https://idp.example.com/?x=1", false),
            ("https://idp.example.com/#f", false),
        ];
        for (issuer, ok) in cases {
            assert_eq!(config(issuer).validate().is_ok(), ok, "{issuer}");
        }
    }

    #[test]
    fn other_settings_are_checked() {
        let mut c = config("https://idp.example.com");
        c.audiences.clear();
        assert!(c.validate().is_err());
        let mut c = config("https://idp.example.com");
        c.audiences.push(String::new());
        assert!(c.validate().is_err());
        let mut c = config("https://idp.example.com");
        c.http_timeout = Duration::ZERO;
        assert!(c.validate().is_err());
        let mut c = config("https://idp.example.com");
        c.refresh_interval = Duration::from_millis(10);
        assert!(c.validate().is_err());
    }

    #[test]
    fn discovery_url_does_not_double_slashes() {
        assert_eq!(
            config("https://idp.example.com/realms/x").discovery_url().as_str(),
            "https://idp.example.com/realms/x/.well-known/openid-configuration"
        );
        assert_eq!(
            config("https://idp.example.com/").discovery_url().as_str(),
            "https://idp.example.com/.well-known/openid-configuration"
        );
        assert_eq!(
            config("https://idp.example.com/tenant/").discovery_url().as_str(),
            "https://idp.example.com/tenant/.well-known/openid-configuration"
        );
    }

    #[test]
    fn announced_issuer_must_be_the_configured_one() {
        let url = |s: &str| Url::parse(s).unwrap();
        assert!(issuer_matches(&url("https://idp/realms/x"), "https://idp/realms/x"));
        assert!(!issuer_matches(&url("https://idp/realms/x"), "https://idp/realms/x/"));
        assert!(!issuer_matches(&url("https://idp/realms/x"), "https://idp/realms/y"));
        assert!(!issuer_matches(&url("https://idp/realms/x"), "http://idp/realms/x"));
        // Url cannot keep "https://idp" apart from "https://idp/": both match.
        assert!(issuer_matches(&url("https://idp"), "https://idp"));
        assert!(issuer_matches(&url("https://idp"), "https://idp/"));
        assert!(!issuer_matches(&url("https://idp"), "https://IDP"));
        assert!(!issuer_matches(&url("https://idp"), "https://idp:443"));
    }
}
