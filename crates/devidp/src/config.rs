//! What the development identity provider is told: its address, its
//! registered clients, its accounts and its token lifetimes; and the checks
//! made on them at [`DevIdp::bind`](crate::DevIdp::bind).
//!
//! It does not read files or the environment: the caller builds the
//! configuration in code. Passwords and client secrets are plain strings (it
//! is for development only) but are redacted from `Debug` output.

use std::collections::HashSet;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use url::Url;

use crate::error::DevIdpError;

/// The default lifetime of ID tokens and access tokens: five minutes.
pub const DEFAULT_TOKEN_TTL: Duration = Duration::from_secs(5 * 60);

/// The longest token lifetime accepted (one day); anything longer is a typo.
const MAX_TOKEN_TTL: Duration = Duration::from_secs(24 * 60 * 60);

/// How the development identity provider is set up.
#[derive(Debug, Clone)]
pub struct DevIdpConfig {
    /// Where to listen: a loopback address (127.0.0.0/8 or ::1); port 0 picks a free port.
    pub addr: SocketAddr,
    /// The registered clients (relying parties).
    pub clients: Vec<DevClient>,
    /// The accounts that can sign in.
    pub accounts: Vec<DevAccount>,
    /// How long ID tokens are valid (default 5 minutes).
    pub id_token_ttl: Duration,
    /// How long access tokens are valid (default 5 minutes).
    pub access_token_ttl: Duration,
    /// Whether refresh tokens are issued at all (default true). When on, a
    /// refresh token is issued when the granted scope includes `offline_access`.
    pub issue_refresh_tokens: bool,
}

impl Default for DevIdpConfig {
    /// `127.0.0.1:0`, no clients, no accounts, 5-minute tokens, refresh tokens on.
    fn default() -> DevIdpConfig {
        DevIdpConfig {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            clients: Vec::new(),
            accounts: Vec::new(),
            id_token_ttl: DEFAULT_TOKEN_TTL,
            access_token_ttl: DEFAULT_TOKEN_TTL,
            issue_refresh_tokens: true,
        }
    }
}

impl DevIdpConfig {
    /// A configuration for a demo: one client and the accounts of
    /// [`DevAccount::demo_accounts`] (`alice`/`alice` and `bob`/`bob`).
    pub fn demo(addr: SocketAddr, client: DevClient) -> DevIdpConfig {
        DevIdpConfig {
            addr,
            clients: vec![client],
            accounts: DevAccount::demo_accounts(),
            ..DevIdpConfig::default()
        }
    }

    /// Checks everything but the address (see [`check_loopback`]).
    pub(crate) fn validate(&self) -> Result<(), DevIdpError> {
        let invalid = |msg: String| Err(DevIdpError::InvalidConfig(msg));
        let mut ids = HashSet::new();
        for client in &self.clients {
            if client.id.is_empty() {
                return invalid("a client has an empty id".to_owned());
            }
            if !ids.insert(client.id.as_str()) {
                return invalid(format!("client {:?} is registered twice", client.id));
            }
            if client.secret.as_deref() == Some("") {
                return invalid(format!(
                    "client {:?} has an empty secret (use None for a public client)",
                    client.id
                ));
            }
            if client.redirect_uris.is_empty() {
                return invalid(format!("client {:?} has no redirect uri", client.id));
            }
            for uri in client.redirect_uris.iter().chain(&client.post_logout_redirect_uris) {
                check_redirect_uri(&client.id, uri)?;
            }
        }
        let mut names = HashSet::new();
        for account in &self.accounts {
            if account.username.is_empty() {
                return invalid("an account has an empty username".to_owned());
            }
            if !names.insert(account.username.as_str()) {
                return invalid(format!("account {:?} is listed twice", account.username));
            }
        }
        for (name, ttl) in [
            ("id_token_ttl", self.id_token_ttl),
            ("access_token_ttl", self.access_token_ttl),
        ] {
            if ttl < Duration::from_secs(1) || ttl > MAX_TOKEN_TTL {
                return invalid(format!("{name} must be between 1 second and 1 day, not {ttl:?}"));
            }
        }
        Ok(())
    }

    pub(crate) fn client(&self, id: &str) -> Option<&DevClient> {
        self.clients.iter().find(|c| c.id == id)
    }

    pub(crate) fn account(&self, username: &str) -> Option<&DevAccount> {
        self.accounts.iter().find(|a| a.username == username)
    }
}

/// Refuses any address that is not loopback, before anything is bound.
pub(crate) fn check_loopback(addr: SocketAddr) -> Result<(), DevIdpError> {
    if addr.ip().to_canonical().is_loopback() {
        Ok(())
    } else {
        Err(DevIdpError::NotLoopback { addr })
    }
}

fn check_redirect_uri(client: &str, uri: &str) -> Result<(), DevIdpError> {
    let parsed = Url::parse(uri)
        .map_err(|e| DevIdpError::InvalidConfig(format!("client {client:?}: redirect uri {uri:?}: {e}")))?;
    if parsed.cannot_be_a_base() || parsed.fragment().is_some() {
        return Err(DevIdpError::InvalidConfig(format!(
            "client {client:?}: redirect uri {uri:?} must be an absolute url without a fragment"
        )));
    }
    Ok(())
}

/// A registered client (relying party).
#[derive(Clone)]
pub struct DevClient {
    /// The `client_id`.
    pub id: String,
    /// The client secret; `None` makes a public client, which must use PKCE
    /// and authenticates with `none`.
    pub secret: Option<String>,
    /// The redirect URIs, compared exactly (no normalization, no wildcards).
    pub redirect_uris: Vec<String>,
    /// Where `/logout` may send the browser back to, compared exactly.
    pub post_logout_redirect_uris: Vec<String>,
}

impl DevClient {
    /// A confidential client with one redirect URI and no post-logout redirect URI.
    pub fn confidential(
        id: impl Into<String>,
        secret: impl Into<String>,
        redirect_uri: impl Into<String>,
    ) -> DevClient {
        DevClient {
            id: id.into(),
            secret: Some(secret.into()),
            redirect_uris: vec![redirect_uri.into()],
            post_logout_redirect_uris: Vec::new(),
        }
    }

    /// A public client (PKCE required, no secret) with one redirect URI.
    pub fn public(id: impl Into<String>, redirect_uri: impl Into<String>) -> DevClient {
        DevClient {
            id: id.into(),
            secret: None,
            redirect_uris: vec![redirect_uri.into()],
            post_logout_redirect_uris: Vec::new(),
        }
    }

    /// Adds a post-logout redirect URI.
    pub fn with_post_logout_redirect_uri(mut self, uri: impl Into<String>) -> DevClient {
        self.post_logout_redirect_uris.push(uri.into());
        self
    }

    /// Adds a redirect URI.
    pub fn with_redirect_uri(mut self, uri: impl Into<String>) -> DevClient {
        self.redirect_uris.push(uri.into());
        self
    }
}

impl fmt::Debug for DevClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevClient")
            .field("id", &self.id)
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("redirect_uris", &self.redirect_uris)
            .field("post_logout_redirect_uris", &self.post_logout_redirect_uris)
            .finish()
    }
}

/// An account that can sign in. Its `sub` is its username.
#[derive(Clone)]
pub struct DevAccount {
    /// The login name, also the `sub` and `preferred_username` claims.
    pub username: String,
    /// The password, in clear (development only).
    pub password: String,
    /// The `email` claim (reported as verified).
    pub email: String,
    /// The `name` claim.
    pub name: String,
}

impl DevAccount {
    /// An account.
    pub fn new(
        username: impl Into<String>,
        password: impl Into<String>,
        email: impl Into<String>,
        name: impl Into<String>,
    ) -> DevAccount {
        DevAccount {
            username: username.into(),
            password: password.into(),
            email: email.into(),
            name: name.into(),
        }
    }

    /// The demo accounts: `alice` (password `alice`, alice@example.com) and
    /// `bob` (password `bob`, bob@example.com).
    pub fn demo_accounts() -> Vec<DevAccount> {
        vec![
            DevAccount::new("alice", "alice", "alice@example.com", "Alice Example"),
            DevAccount::new("bob", "bob", "bob@example.com", "Bob Example"),
        ]
    }
}

impl fmt::Debug for DevAccount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DevAccount")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("email", &self.email)
            .field("name", &self.name)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        for (addr, ok) in [
            ("127.0.0.1:0", true),
            ("127.1.2.3:80", true),
            ("[::1]:0", true),
            ("[::ffff:127.0.0.1]:0", true),
            ("0.0.0.0:0", false),
            ("10.0.0.1:0", false),
            ("[::]:0", false),
            ("[::ffff:10.0.0.1]:0", false),
        ] {
            let addr: SocketAddr = addr.parse().unwrap();
            assert_eq!(check_loopback(addr).is_ok(), ok, "{addr}");
        }
    }

    #[test]
    fn validation() {
        let good = DevIdpConfig::demo(
            "127.0.0.1:0".parse().unwrap(),
            DevClient::public("app", "http://127.0.0.1:1/cb"),
        );
        assert!(good.validate().is_ok());

        let mut dup = good.clone();
        dup.clients.push(DevClient::public("app", "http://127.0.0.1:1/cb"));
        assert!(dup.validate().is_err());

        let mut bad_uri = good.clone();
        bad_uri.clients[0].redirect_uris = vec!["/relative".to_owned()];
        assert!(bad_uri.validate().is_err());

        let mut fragment = good.clone();
        fragment.clients[0].redirect_uris = vec!["http://127.0.0.1:1/cb#x".to_owned()];
        assert!(fragment.validate().is_err());

        let mut dup_account = good.clone();
        dup_account
            .accounts
            .push(DevAccount::new("alice", "x", "x@example.com", "X"));
        assert!(dup_account.validate().is_err());

        let mut zero_ttl = good.clone();
        zero_ttl.id_token_ttl = Duration::ZERO;
        assert!(zero_ttl.validate().is_err());

        let mut empty_secret = good;
        empty_secret.clients[0].secret = Some(String::new());
        assert!(empty_secret.validate().is_err());
    }

    #[test]
    fn debug_redacts_secrets() {
        let client = DevClient::confidential("app", "s3cret", "http://127.0.0.1:1/cb");
        let account = DevAccount::new("alice", "pa55word", "a@example.com", "A");
        let shown = format!("{client:?} {account:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("pa55word"), "{shown}");
    }
}
