//! The configuration file: one TOML document, parsed from a string.
//!
//! [`Config::parse`] turns text into a validated [`Config`] and does no I/O:
//! it neither reads files nor looks at the environment. [`Config::load`]
//! reads the file and calls it. Secrets stay unresolved [`SecretSource`]s
//! here; they are read when the component that needs them starts (see
//! [`crate::secret`]).
//!
//! Every error names the file, line, column and key. Unknown keys are
//! errors: a typo must not silently fall back to a default. Relative paths
//! in the file are relative to the directory the file is in.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};
use url::Url;

use crate::secret::SecretSource;

/// A validated configuration. There is deliberately no `Default`: every
/// component gets its configuration passed in explicitly.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The file this was read from, for messages.
    pub origin: PathBuf,
    pub server: Server,
    pub admin: Admin,
    pub store: Store,
    pub policy: Policy,
    pub scim: Scim,
    /// The OpenID Connect provider whose bearer tokens the proxy accepts;
    /// without it every non-public request is refused with 401.
    pub oidc: Option<Oidc>,
    /// Browser sessions (used when `[oidc] client_id` enables sign-in).
    pub session: Session,
    pub identity: IdentityBinding,
    pub assertion: Assertion,
    pub audit: Audit,
    pub alerts: Alerts,
    pub routes: Vec<Route>,
}

/// High-risk alerts and SCIM feed health (see `crate::alerts`).
#[derive(Debug, Clone, PartialEq)]
pub struct Alerts {
    /// Groups (display names, or `client:name`) whose grant raises an alert.
    pub groups: Vec<String>,
    /// Roles whose grant, or widening by a policy reload, raises an alert.
    pub roles: Vec<String>,
    /// Where alerts are POSTed as JSON; logged only when absent.
    pub webhook: Option<Url>,
    pub webhook_ca: Option<PathBuf>,
    /// A SCIM client silent this long raises an alert.
    pub scim_silence: Option<Duration>,
}

/// The audit trail (see `crate::audit`).
#[derive(Debug, Clone, PartialEq)]
pub struct Audit {
    /// The current audit file; rotated siblings sit beside it. Off when
    /// absent (unless `stdout`).
    pub path: Option<PathBuf>,
    /// Also write each record to standard output.
    pub stdout: bool,
    pub max_file_bytes: u64,
    /// Rotated files kept besides the current one; 0 keeps all.
    pub keep_files: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// The URL users reach Portcullis at: used for redirects, cookies and
    /// SCIM `meta.location`.
    pub public_url: Url,
    /// Serve HTTPS with these PEM files; plain HTTP when absent.
    pub tls: Option<Tls>,
    /// Peers whose `X-Forwarded-*` / `Forwarded` headers are believed (a
    /// load balancer in front). Anyone else's are replaced.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// How long in-flight requests may run after shutdown begins.
    pub shutdown_grace: Duration,
    /// Longest time to receive a request's headers (slowloris guard).
    pub header_read_timeout: Duration,
    /// Threads serving the main listener, each with its own runtime and
    /// upstream connection pools; 0 means one per CPU.
    pub workers: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Tls {
    /// Certificate chain, leaf first.
    pub cert: PathBuf,
    /// PKCS#8, PKCS#1 or SEC1 private key.
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Oidc {
    pub issuer: Url,
    /// A token's `aud` must name at least one of these.
    pub audiences: Vec<String>,
    /// Extra CA certificates (PEM) for reaching the issuer.
    pub ca_file: Option<PathBuf>,
    /// Clock skew allowed on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Browser sign-in (authorization code flow); bearer tokens only when
    /// absent.
    pub client: Option<OidcClient>,
}

/// Portcullis as an OpenID Connect client, for browser sign-in.
#[derive(Debug, Clone, PartialEq)]
pub struct OidcClient {
    pub client_id: String,
    /// Absent for a public client (PKCE alone).
    pub client_secret: Option<SecretSource>,
    /// Always includes `openid`.
    pub scopes: Vec<String>,
}

/// Browser sessions: server-side, in the store, named by a random secret in
/// a cookie.
#[derive(Debug, Clone, PartialEq)]
pub struct Session {
    pub cookie_name: String,
    /// Share one sign-in across subdomains (`example.com`); host-only when
    /// absent.
    pub cookie_domain: Option<String>,
    /// A session unused this long ends.
    pub idle_timeout: Duration,
    /// A session ends this long after sign-in, however active.
    pub absolute_timeout: Duration,
}

/// How a verified token is bound to a directory user.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityBinding {
    /// The token claim holding the user's identifier.
    pub claim: String,
    /// The SCIM attribute the claim is looked up as.
    pub attribute: portcullis_directory::IdentityAttr,
    /// With `claim = "email"`: refuse a token whose `email_verified` claim
    /// is false (an address the IdP has not verified names nobody).
    pub require_verified_email: bool,
}

/// Portcullis's own signed identity assertion for upstreams.
#[derive(Debug, Clone, PartialEq)]
pub struct Assertion {
    /// `iss` of the assertion; defaults to `public_url`.
    pub issuer: String,
    /// A PKCS#8 P-256 key; a fresh key per process when absent (fine for
    /// one instance, but several instances must share a key file).
    pub key_file: Option<PathBuf>,
    /// Lifetime of one assertion.
    pub ttl: Duration,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Admin {
    /// Where health (and later metrics) is served; keep it private.
    pub listen: SocketAddr,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Store {
    /// The sled directory.
    pub path: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// The directory of policy files.
    pub dir: PathBuf,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Scim {
    /// Path prefix of the SCIM endpoint under `public_url`.
    pub path: String,
    pub clients: Vec<ScimClient>,
    /// Custom extension schemas, served in `/Schemas` and validated like
    /// the built-in ones.
    pub schemas: Vec<portcullis_scim::schema::CustomSchema>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ScimClient {
    pub name: String,
    /// Hex SHA-256 of the client's bearer token.
    pub token_sha256: SecretSource,
    /// Requests per second (and burst) this client may make; none if absent.
    pub rate_limit: Option<u32>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    pub host: Option<String>,
    pub path_prefix: String,
    pub upstream: Url,
    /// Accept `%2F` (an encoded slash) in paths, kept encoded; refused with
    /// 400 otherwise, since it makes one path readable two ways.
    pub allow_encoded_slash: bool,
    /// Pass the client's own `Authorization` header upstream.
    pub forward_authorization: bool,
    /// Send Portcullis's session cookie to the upstream (off: an upstream
    /// holding it could act as the user).
    pub forward_session_cookie: bool,
    /// The share of allowed and public requests recorded in the audit
    /// trail (0 to 1); denials are always recorded.
    pub audit_allowed: f64,
    /// Trust these CA certificates (PEM) for an https upstream, instead of
    /// the public roots.
    pub upstream_ca: Option<PathBuf>,
    /// Client certificate and key (PEM) for mutual TLS to the upstream.
    pub upstream_client_cert: Option<(PathBuf, PathBuf)>,
    /// Speak HTTP/2 to the upstream with prior knowledge (h2c for http
    /// upstreams; gRPC servers usually want this).
    pub upstream_http2: bool,
    pub connect_timeout: Duration,
    /// Time from sending the request to receiving the response headers.
    pub response_timeout: Duration,
    /// How long an idle pooled upstream connection is kept.
    pub idle_timeout: Duration,
    /// Limit on the whole exchange, bodies included; none by default so
    /// long downloads and WebSockets are not cut.
    pub total_timeout: Option<Duration>,
    /// Largest request body accepted (413 above); unlimited when absent.
    pub max_request_body: Option<u64>,
    pub headers: IdentityHeaders,
    /// `aud` of the assertion sent to this route.
    pub assertion_audience: String,
    /// Which groups the assertion and the groups header carry.
    pub assertion_groups: GroupScope,
    /// Portcullis's own credentials for the upstream.
    pub credentials: Option<Credentials>,
    /// A header carrying the user's `userName`, e.g.
    /// `es-security-runas-user` for Elasticsearch run-as.
    pub run_as_header: Option<http::HeaderName>,
}

/// Header names Portcullis sets on requests to a route; `None` sends none.
#[derive(Debug, Clone, PartialEq)]
pub struct IdentityHeaders {
    pub user: Option<http::HeaderName>,
    pub email: Option<http::HeaderName>,
    pub groups: Option<http::HeaderName>,
    pub roles: Option<http::HeaderName>,
    /// The signed assertion; `authorization` sends it as `Bearer`.
    pub assertion: Option<http::HeaderName>,
    pub request_id: Option<http::HeaderName>,
}

impl IdentityHeaders {
    /// Every header name Portcullis sets for this route.
    pub fn names(&self) -> impl Iterator<Item = &http::HeaderName> {
        [
            &self.user,
            &self.email,
            &self.groups,
            &self.roles,
            &self.assertion,
            &self.request_id,
        ]
        .into_iter()
        .flatten()
    }
}

/// Which of a user's groups are passed upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GroupScope {
    /// Only groups the policy grants roles to: keeps headers small for
    /// users in hundreds of groups.
    Policy,
    /// Every group.
    All,
    /// None.
    None,
}

/// Credentials Portcullis presents to an upstream on every request.
#[derive(Debug, Clone, PartialEq)]
pub enum Credentials {
    /// `user:password`.
    Basic(SecretSource),
    /// A bearer token.
    Bearer(SecretSource),
}

impl Route {
    /// A route to `upstream` with every optional setting at its documented
    /// default (what a `[[routes]]` entry with only `name` and `upstream`
    /// gives).
    pub fn new(name: &str, upstream: Url) -> Route {
        let duration = |text: String| humantime::parse_duration(&text).unwrap_or(Duration::from_secs(5));
        let header = |text: String| {
            http::HeaderName::from_bytes(text.as_bytes())
                .ok()
                .map(static_header_name)
        };
        Route {
            name: name.to_owned(),
            host: None,
            path_prefix: default_path_prefix(),
            upstream,
            allow_encoded_slash: false,
            forward_authorization: false,
            forward_session_cookie: false,
            audit_allowed: 1.0,
            upstream_ca: None,
            upstream_client_cert: None,
            upstream_http2: false,
            connect_timeout: duration(default_connect_timeout()),
            response_timeout: duration(default_response_timeout()),
            idle_timeout: duration(default_idle_timeout()),
            total_timeout: None,
            max_request_body: None,
            headers: IdentityHeaders {
                user: header(default_user_header()),
                email: header(default_email_header()),
                groups: header(default_groups_header()),
                roles: header(default_roles_header()),
                assertion: header(default_assertion_header()),
                request_id: header(default_request_id_header()),
            },
            assertion_audience: name.to_owned(),
            assertion_groups: default_group_scope(),
            credentials: None,
            run_as_header: None,
        }
    }

    /// How this route's request paths are normalized.
    pub fn normalize_options(&self) -> portcullis_policy::NormalizeOptions {
        portcullis_policy::NormalizeOptions {
            allow_encoded_slash: self.allow_encoded_slash,
        }
    }
}

/// One configuration problem, located in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: usize,
    pub column: usize,
    /// The dotted key, e.g. `routes[1].upstream`; empty for syntax errors.
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}: ", self.file.display(), self.line, self.column)?;
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one configuration file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Config {
    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: path.to_owned(),
                line: 0,
                column: 0,
                key: String::new(),
                message: format!("cannot read config file: {e}"),
            }])
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Config::parse(&text, path, base)
    }

    /// Parses configuration text. `origin` names the text in messages;
    /// relative paths are resolved against `base_dir`. No I/O happens here.
    pub fn parse(text: &str, origin: &Path, base_dir: &Path) -> Result<Config, ConfigErrors> {
        let located = Located { text, origin };
        let root = DeTable::parse(text).map_err(|e| ConfigErrors(vec![located.syntax(&e)]))?;
        let mut index = KeyIndex::default();
        index.walk_table(String::new(), root.get_ref());

        let mut errors = Vec::new();
        let mut unknown = Vec::new();
        let raw: Option<RawConfig> =
            match serde_ignored::deserialize(toml::Deserializer::from(root), |path| unknown.push(path.to_string())) {
                Ok(raw) => Some(raw),
                Err(e) => {
                    errors.push(located.type_error(&index, &e));
                    None
                }
            };
        for path in unknown {
            let key = display_key(&path);
            let span = index.key_span(&path);
            errors.push(located.at(span, key, "unknown key".into()));
        }
        let Some(raw) = raw else {
            return Err(ConfigErrors(sorted(errors)));
        };
        let mut v = Validator {
            located: &located,
            index: &index,
            errors,
        };
        let config = v.validate(raw, base_dir);
        if v.errors.is_empty() {
            Ok(config)
        } else {
            Err(ConfigErrors(sorted(v.errors)))
        }
    }
}

fn sorted(mut errors: Vec<ConfigError>) -> Vec<ConfigError> {
    errors.sort_by_key(|e| (e.line, e.column));
    errors
}

// ---- raw, as written in the file -------------------------------------------

#[derive(Debug, Deserialize, Default)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    scim: RawScim,
    oidc: Option<RawOidc>,
    #[serde(default)]
    session: RawSession,
    #[serde(default)]
    identity: RawIdentity,
    #[serde(default)]
    assertion: RawAssertion,
    #[serde(default)]
    audit: RawAudit,
    #[serde(default)]
    alerts: RawAlerts,
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize, Default)]
struct RawAlerts {
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
    webhook: Option<Url>,
    webhook_ca: Option<PathBuf>,
    scim_silence: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawAudit {
    path: Option<PathBuf>,
    #[serde(default)]
    stdout: bool,
    #[serde(default = "default_audit_max_file_bytes")]
    max_file_bytes: u64,
    #[serde(default = "default_audit_keep_files")]
    keep_files: usize,
}

impl Default for RawAudit {
    fn default() -> Self {
        RawAudit {
            path: None,
            stdout: false,
            max_file_bytes: default_audit_max_file_bytes(),
            keep_files: default_audit_keep_files(),
        }
    }
}

fn default_audit_max_file_bytes() -> u64 {
    100 * 1024 * 1024
}
fn default_audit_keep_files() -> usize {
    10
}
fn default_audit_allowed() -> f64 {
    1.0
}

#[derive(Debug, Deserialize)]
struct RawServer {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    #[serde(default = "default_public_url")]
    public_url: Url,
    tls: Option<RawTls>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default = "default_shutdown_grace")]
    shutdown_grace: String,
    #[serde(default = "default_header_read_timeout")]
    header_read_timeout: String,
    #[serde(default)]
    workers: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: default_listen(),
            public_url: default_public_url(),
            tls: None,
            trusted_proxies: Vec::new(),
            shutdown_grace: default_shutdown_grace(),
            header_read_timeout: default_header_read_timeout(),
            workers: 0,
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawTls {
    cert: PathBuf,
    key: PathBuf,
}

#[derive(Debug, Deserialize)]
struct RawOidc {
    issuer: Url,
    #[serde(default)]
    audiences: Vec<String>,
    ca_file: Option<PathBuf>,
    #[serde(default = "default_leeway")]
    leeway: String,
    client_id: Option<String>,
    client_secret: Option<String>,
    client_secret_file: Option<PathBuf>,
    client_secret_env: Option<String>,
    scopes: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct RawSession {
    #[serde(default = "default_cookie_name")]
    cookie_name: String,
    cookie_domain: Option<String>,
    #[serde(default = "default_idle_timeout_session")]
    idle_timeout: String,
    #[serde(default = "default_absolute_timeout")]
    absolute_timeout: String,
}

impl Default for RawSession {
    fn default() -> Self {
        RawSession {
            cookie_name: default_cookie_name(),
            cookie_domain: None,
            idle_timeout: default_idle_timeout_session(),
            absolute_timeout: default_absolute_timeout(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawIdentity {
    #[serde(default = "default_identity_claim")]
    claim: String,
    #[serde(default = "default_identity_attribute")]
    attribute: String,
    #[serde(default = "default_true")]
    require_verified_email: bool,
}

impl Default for RawIdentity {
    fn default() -> Self {
        RawIdentity {
            claim: default_identity_claim(),
            attribute: default_identity_attribute(),
            require_verified_email: true,
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawAssertion {
    issuer: Option<String>,
    key_file: Option<PathBuf>,
    #[serde(default = "default_assertion_ttl")]
    ttl: String,
}

impl Default for RawAssertion {
    fn default() -> Self {
        RawAssertion {
            issuer: None,
            key_file: None,
            ttl: default_assertion_ttl(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawAdmin {
    #[serde(default = "default_admin_listen")]
    listen: SocketAddr,
}

impl Default for RawAdmin {
    fn default() -> Self {
        RawAdmin {
            listen: default_admin_listen(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawStore {
    #[serde(default = "default_store_path")]
    path: PathBuf,
}

impl Default for RawStore {
    fn default() -> Self {
        RawStore {
            path: default_store_path(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawPolicy {
    #[serde(default = "default_policy_dir")]
    dir: PathBuf,
}

impl Default for RawPolicy {
    fn default() -> Self {
        RawPolicy {
            dir: default_policy_dir(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawScim {
    #[serde(default = "default_scim_path")]
    path: String,
    #[serde(default)]
    clients: Vec<RawScimClient>,
    #[serde(default)]
    schemas: Vec<portcullis_scim::schema::CustomSchema>,
}

impl Default for RawScim {
    fn default() -> Self {
        RawScim {
            path: default_scim_path(),
            clients: Vec::new(),
            schemas: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawScimClient {
    name: String,
    rate_limit: Option<u32>,
    token_sha256: Option<String>,
    token_sha256_file: Option<PathBuf>,
    token_sha256_env: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawRoute {
    name: String,
    host: Option<String>,
    #[serde(default = "default_path_prefix")]
    path_prefix: String,
    upstream: Url,
    #[serde(default)]
    allow_encoded_slash: bool,
    #[serde(default)]
    forward_authorization: bool,
    #[serde(default)]
    forward_session_cookie: bool,
    #[serde(default = "default_audit_allowed")]
    audit_allowed: f64,
    upstream_ca: Option<PathBuf>,
    upstream_client_cert: Option<PathBuf>,
    upstream_client_key: Option<PathBuf>,
    #[serde(default)]
    upstream_http2: bool,
    #[serde(default = "default_connect_timeout")]
    connect_timeout: String,
    #[serde(default = "default_response_timeout")]
    response_timeout: String,
    #[serde(default = "default_idle_timeout")]
    idle_timeout: String,
    total_timeout: Option<String>,
    max_request_body: Option<u64>,
    #[serde(default)]
    headers: RawHeaders,
    assertion_audience: Option<String>,
    #[serde(default = "default_group_scope")]
    assertion_groups: GroupScope,
    credentials: Option<RawCredentials>,
    run_as_header: Option<String>,
}

#[derive(Debug, Deserialize)]
struct RawHeaders {
    #[serde(default = "default_user_header")]
    user: String,
    #[serde(default = "default_email_header")]
    email: String,
    #[serde(default = "default_groups_header")]
    groups: String,
    #[serde(default = "default_roles_header")]
    roles: String,
    #[serde(default = "default_assertion_header")]
    assertion: String,
    #[serde(default = "default_request_id_header")]
    request_id: String,
}

impl Default for RawHeaders {
    fn default() -> Self {
        RawHeaders {
            user: default_user_header(),
            email: default_email_header(),
            groups: default_groups_header(),
            roles: default_roles_header(),
            assertion: default_assertion_header(),
            request_id: default_request_id_header(),
        }
    }
}

#[derive(Debug, Deserialize)]
struct RawCredentials {
    basic: Option<String>,
    basic_file: Option<PathBuf>,
    basic_env: Option<String>,
    bearer: Option<String>,
    bearer_file: Option<PathBuf>,
    bearer_env: Option<String>,
}

/// The same name, over text that lives as long as the process. A header
/// name Portcullis sets is cloned into every upstream request, and a
/// clone of a name parsed at run time is an atomic reference count
/// (twice, with the drop); one over static text is not. Each distinct name
/// is kept once, however often configurations are parsed.
fn static_header_name(name: http::HeaderName) -> http::HeaderName {
    static NAMES: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    let text: &'static str = match names.get(name.as_str()) {
        Some(&text) => text,
        None => {
            let text: &'static str = Box::leak(Box::from(name.as_str()));
            names.insert(text);
            text
        }
    };
    // A parsed name is lower case and valid, which is all `from_static`
    // asks.
    http::HeaderName::from_static(text)
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}
fn default_public_url() -> Url {
    #[allow(clippy::expect_used)]
    Url::parse("http://127.0.0.1:8080").expect("constant URL parses")
}
fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9090))
}
fn default_store_path() -> PathBuf {
    PathBuf::from("./data")
}
fn default_policy_dir() -> PathBuf {
    PathBuf::from("policies")
}
fn default_scim_path() -> String {
    "/scim/v2".into()
}
fn default_path_prefix() -> String {
    "/".into()
}
fn default_shutdown_grace() -> String {
    "10s".into()
}
fn default_header_read_timeout() -> String {
    "30s".into()
}
fn default_leeway() -> String {
    "30s".into()
}
fn default_cookie_name() -> String {
    "_portcullis".into()
}
fn default_idle_timeout_session() -> String {
    "8h".into()
}
fn default_absolute_timeout() -> String {
    "24h".into()
}
fn default_true() -> bool {
    true
}
fn default_identity_claim() -> String {
    "email".into()
}
fn default_identity_attribute() -> String {
    "userName".into()
}
fn default_assertion_ttl() -> String {
    "5m".into()
}
fn default_connect_timeout() -> String {
    "5s".into()
}
fn default_response_timeout() -> String {
    "60s".into()
}
fn default_idle_timeout() -> String {
    "90s".into()
}
fn default_group_scope() -> GroupScope {
    GroupScope::Policy
}
fn default_user_header() -> String {
    "x-portcullis-user".into()
}
fn default_email_header() -> String {
    "x-portcullis-email".into()
}
fn default_groups_header() -> String {
    "x-portcullis-groups".into()
}
fn default_roles_header() -> String {
    "x-portcullis-roles".into()
}
fn default_assertion_header() -> String {
    "x-portcullis-assertion".into()
}
fn default_request_id_header() -> String {
    "x-request-id".into()
}

// ---- validation --------------------------------------------------------------

struct Validator<'a> {
    located: &'a Located<'a>,
    index: &'a KeyIndex,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn error(&mut self, path: &str, message: impl Into<String>) {
        let span = self.index.value_span(path);
        self.errors
            .push(self.located.at(span, display_key(path), message.into()));
    }

    fn validate(&mut self, raw: RawConfig, base: &Path) -> Config {
        let public_url = raw.server.public_url;
        if !matches!(public_url.scheme(), "http" | "https") {
            self.error("server.public_url", "must be an http or https URL");
        }
        if public_url.query().is_some() || public_url.fragment().is_some() {
            self.error("server.public_url", "must not have a query or fragment");
        }
        if raw.server.listen == raw.admin.listen && raw.server.listen.port() != 0 {
            self.error("admin.listen", "must differ from server.listen");
        }

        let scim_path = raw.scim.path;
        if !scim_path.starts_with('/') || scim_path.len() < 2 || scim_path.ends_with('/') {
            self.error("scim.path", "must start with / and not end with / (e.g. \"/scim/v2\")");
        }
        let mut clients = Vec::new();
        let mut seen = HashSet::new();
        for (i, c) in raw.scim.clients.into_iter().enumerate() {
            let at = format!("scim.clients.{i}");
            if !valid_name(&c.name) {
                self.error(&format!("{at}.name"), "must be 1-64 characters of a-z, 0-9, - and _");
            } else if !seen.insert(c.name.clone()) {
                self.error(&format!("{at}.name"), format!("duplicate client name {:?}", c.name));
            }
            let secret = self.secret(
                &at,
                "token_sha256",
                c.token_sha256,
                c.token_sha256_file,
                c.token_sha256_env,
                base,
            );
            if let Some(SecretSource::Inline(hex)) = &secret
                && !is_sha256_hex(hex)
            {
                self.error(
                    &format!("{at}.token_sha256"),
                    "must be 64 hex digits (the SHA-256 of the token)",
                );
            }
            if c.rate_limit == Some(0) {
                self.error(&format!("{at}.rate_limit"), "must be at least 1 (omit it for no limit)");
            }
            if let Some(token_sha256) = secret {
                clients.push(ScimClient {
                    name: c.name,
                    token_sha256,
                    rate_limit: c.rate_limit,
                });
            }
        }

        if let Err(e) = portcullis_scim::schema::Schemas::new(&raw.scim.schemas) {
            self.error("scim.schemas", e.to_string());
        }

        let mut routes = Vec::new();
        let mut names = HashSet::new();
        let mut matchers = HashSet::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
            let at = format!("routes.{i}");
            if !valid_name(&r.name) {
                self.error(&format!("{at}.name"), "must be 1-64 characters of a-z, 0-9, - and _");
            } else if !names.insert(r.name.clone()) {
                self.error(&format!("{at}.name"), format!("duplicate route name {:?}", r.name));
            }
            if !r.path_prefix.starts_with('/') {
                self.error(&format!("{at}.path_prefix"), "must start with /");
            }
            let host = r.host.map(|h| h.to_ascii_lowercase());
            if let Some(h) = &host
                && (h.is_empty() || h.contains(['/', ' ', '@']))
            {
                self.error(&format!("{at}.host"), "must be a host name, optionally with :port");
            }
            if !matchers.insert((host.clone(), r.path_prefix.clone())) {
                self.error(
                    &format!("{at}.path_prefix"),
                    "another route has the same host and path_prefix",
                );
            }
            if !matches!(r.upstream.scheme(), "http" | "https") || r.upstream.host().is_none() {
                self.error(&format!("{at}.upstream"), "must be an http or https URL with a host");
            }
            let upstream_client_cert = match (r.upstream_client_cert, r.upstream_client_key) {
                (Some(cert), Some(key)) => Some((base.join(cert), base.join(key))),
                (None, None) => None,
                (Some(_), None) => {
                    self.error(
                        &format!("{at}.upstream_client_cert"),
                        "needs upstream_client_key as well",
                    );
                    None
                }
                (None, Some(_)) => {
                    self.error(
                        &format!("{at}.upstream_client_key"),
                        "needs upstream_client_cert as well",
                    );
                    None
                }
            };
            if r.upstream.scheme() == "http" && (r.upstream_ca.is_some() || upstream_client_cert.is_some()) {
                self.error(&format!("{at}.upstream"), "TLS settings need an https upstream");
            }
            let headers = r.headers;
            let headers = IdentityHeaders {
                user: self.header_name(&format!("{at}.headers.user"), &headers.user),
                email: self.header_name(&format!("{at}.headers.email"), &headers.email),
                groups: self.header_name(&format!("{at}.headers.groups"), &headers.groups),
                roles: self.header_name(&format!("{at}.headers.roles"), &headers.roles),
                assertion: self.header_name(&format!("{at}.headers.assertion"), &headers.assertion),
                request_id: self.header_name(&format!("{at}.headers.request_id"), &headers.request_id),
            };
            let credentials = r
                .credentials
                .and_then(|c| self.credentials(&format!("{at}.credentials"), c, base));
            let authorization_in_use = headers.assertion.as_ref() == Some(&http::header::AUTHORIZATION);
            if authorization_in_use && credentials.is_some() {
                self.error(
                    &format!("{at}.headers.assertion"),
                    "the assertion cannot go in Authorization when the route has credentials",
                );
            }
            if (authorization_in_use || credentials.is_some()) && r.forward_authorization {
                self.error(
                    &format!("{at}.forward_authorization"),
                    "the client's Authorization cannot be forwarded when Portcullis sets its own",
                );
            }
            let run_as_header = r
                .run_as_header
                .and_then(|h| self.header_name(&format!("{at}.run_as_header"), &h));
            if let Some(h) = &run_as_header
                && is_reserved_header(h)
            {
                self.error(&format!("{at}.run_as_header"), format!("{h} is managed by the proxy"));
            }
            for (key, name) in [
                ("user", &headers.user),
                ("email", &headers.email),
                ("groups", &headers.groups),
                ("roles", &headers.roles),
                ("request_id", &headers.request_id),
            ] {
                if let Some(h) = name
                    && (is_reserved_header(h) || h == http::header::AUTHORIZATION)
                {
                    self.error(&format!("{at}.headers.{key}"), format!("{h} is managed by the proxy"));
                }
            }
            if !(0.0..=1.0).contains(&r.audit_allowed) {
                self.error(&format!("{at}.audit_allowed"), "must be between 0 and 1");
            }
            let total_timeout = r
                .total_timeout
                .map(|t| self.duration(&format!("{at}.total_timeout"), &t));
            routes.push(Route {
                connect_timeout: self.duration(&format!("{at}.connect_timeout"), &r.connect_timeout),
                response_timeout: self.duration(&format!("{at}.response_timeout"), &r.response_timeout),
                idle_timeout: self.duration(&format!("{at}.idle_timeout"), &r.idle_timeout),
                total_timeout,
                assertion_audience: r.assertion_audience.unwrap_or_else(|| r.name.clone()),
                name: r.name,
                host,
                path_prefix: r.path_prefix,
                upstream: r.upstream,
                allow_encoded_slash: r.allow_encoded_slash,
                forward_authorization: r.forward_authorization,
                forward_session_cookie: r.forward_session_cookie,
                audit_allowed: r.audit_allowed,
                upstream_ca: r.upstream_ca.map(|p| base.join(p)),
                upstream_client_cert,
                upstream_http2: r.upstream_http2,
                max_request_body: r.max_request_body,
                headers,
                assertion_groups: r.assertion_groups,
                credentials,
                run_as_header,
            });
        }

        let tls = raw.server.tls.map(|t| Tls {
            cert: base.join(t.cert),
            key: base.join(t.key),
        });
        let mut trusted_proxies = Vec::new();
        for (i, cidr) in raw.server.trusted_proxies.iter().enumerate() {
            // A bare address means that one host.
            let parsed = cidr
                .parse::<ipnet::IpNet>()
                .or_else(|_| cidr.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
            match parsed {
                Ok(net) => trusted_proxies.push(net),
                Err(_) => self.error(
                    &format!("server.trusted_proxies.{i}"),
                    format!("{cidr:?} is not an IP address or CIDR range"),
                ),
            }
        }
        let shutdown_grace = self.duration("server.shutdown_grace", &raw.server.shutdown_grace);
        let header_read_timeout = self.duration("server.header_read_timeout", &raw.server.header_read_timeout);

        let oidc = raw.oidc.map(|o| {
            let client = match o.client_id {
                Some(client_id) => {
                    if client_id.is_empty() {
                        self.error("oidc.client_id", "must not be empty");
                    }
                    let secret_given =
                        o.client_secret.is_some() || o.client_secret_file.is_some() || o.client_secret_env.is_some();
                    let client_secret = if secret_given {
                        self.secret(
                            "oidc",
                            "client_secret",
                            o.client_secret,
                            o.client_secret_file,
                            o.client_secret_env,
                            base,
                        )
                    } else {
                        None
                    };
                    let mut scopes = o
                        .scopes
                        .unwrap_or_else(|| vec!["openid".into(), "email".into(), "profile".into()]);
                    if scopes.iter().any(|s| s.is_empty() || s.contains([' ', '"', '\\'])) {
                        self.error("oidc.scopes", "a scope is one word without spaces or quotes");
                    }
                    if !scopes.iter().any(|s| s == "openid") {
                        scopes.insert(0, "openid".into());
                    }
                    Some(OidcClient {
                        client_id,
                        client_secret,
                        scopes,
                    })
                }
                None => {
                    if o.client_secret.is_some() || o.client_secret_file.is_some() || o.client_secret_env.is_some() {
                        self.error("oidc.client_id", "a client secret needs a client_id");
                    }
                    if o.scopes.is_some() {
                        self.error("oidc.scopes", "scopes are for sign-in, which needs a client_id");
                    }
                    None
                }
            };
            let mut audiences = o.audiences;
            if audiences.is_empty() {
                match &client {
                    // Tokens issued to Portcullis itself name its client id.
                    Some(c) => audiences.push(c.client_id.clone()),
                    None => self.error("oidc.audiences", "name at least one audience"),
                }
            }
            let loopback = match o.issuer.host() {
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                Some(url::Host::Domain(d)) => d == "localhost",
                None => false,
            };
            if o.issuer.scheme() != "https" && !(o.issuer.scheme() == "http" && loopback) {
                self.error("oidc.issuer", "must be an https URL (http only for a loopback address)");
            }
            Oidc {
                issuer: o.issuer,
                audiences,
                ca_file: o.ca_file.map(|p| base.join(p)),
                leeway: self.duration("oidc.leeway", &o.leeway),
                client,
            }
        });
        let session = self.session(raw.session, &public_url);
        let attribute = match raw.identity.attribute.as_str() {
            "userName" => portcullis_directory::IdentityAttr::UserName,
            "externalId" => portcullis_directory::IdentityAttr::ExternalId,
            "emails" => portcullis_directory::IdentityAttr::Email,
            other => {
                self.error(
                    "identity.attribute",
                    format!("{other:?} is not one of \"userName\", \"externalId\", \"emails\""),
                );
                portcullis_directory::IdentityAttr::UserName
            }
        };
        if raw.identity.claim.is_empty() {
            self.error("identity.claim", "must name a token claim");
        }
        let assertion_ttl = self.duration("assertion.ttl", &raw.assertion.ttl);
        if assertion_ttl < Duration::from_secs(10) || assertion_ttl > Duration::from_secs(3600) {
            self.error("assertion.ttl", "must be between 10s and 1h");
        }
        let assertion = Assertion {
            issuer: raw
                .assertion
                .issuer
                .unwrap_or_else(|| public_url.as_str().trim_end_matches('/').to_owned()),
            key_file: raw.assertion.key_file.map(|p| base.join(p)),
            ttl: assertion_ttl,
        };

        if raw.audit.max_file_bytes < 4096 {
            self.error("audit.max_file_bytes", "must be at least 4096");
        }
        if let Some(url) = &raw.alerts.webhook
            && !matches!(url.scheme(), "http" | "https")
        {
            self.error("alerts.webhook", "must be an http or https URL");
        }
        let alerts = Alerts {
            groups: raw.alerts.groups,
            roles: raw.alerts.roles,
            webhook: raw.alerts.webhook,
            webhook_ca: raw.alerts.webhook_ca.map(|p| base.join(p)),
            scim_silence: raw
                .alerts
                .scim_silence
                .map(|t| self.duration("alerts.scim_silence", &t)),
        };
        let audit = Audit {
            path: raw.audit.path.map(|p| base.join(p)),
            stdout: raw.audit.stdout,
            max_file_bytes: raw.audit.max_file_bytes,
            keep_files: raw.audit.keep_files,
        };
        Config {
            origin: self.located.origin.to_owned(),
            server: Server {
                listen: raw.server.listen,
                public_url,
                tls,
                trusted_proxies,
                shutdown_grace,
                header_read_timeout,
                workers: raw.server.workers,
            },
            admin: Admin {
                listen: raw.admin.listen,
            },
            store: Store {
                path: base.join(raw.store.path),
            },
            policy: Policy {
                dir: base.join(raw.policy.dir),
            },
            scim: Scim {
                path: scim_path,
                clients,
                schemas: raw.scim.schemas,
            },
            oidc,
            session,
            identity: IdentityBinding {
                claim: raw.identity.claim,
                attribute,
                require_verified_email: raw.identity.require_verified_email,
            },
            assertion,
            audit,
            alerts,
            routes,
        }
    }

    /// A duration such as `5s`, `250ms` or `2m`.
    fn duration(&mut self, path: &str, text: &str) -> Duration {
        match humantime::parse_duration(text) {
            Ok(d) => d,
            Err(e) => {
                self.error(
                    path,
                    format!("{text:?} is not a duration like \"5s\" or \"250ms\": {e}"),
                );
                Duration::ZERO
            }
        }
    }

    fn session(&mut self, raw: RawSession, public_url: &Url) -> Session {
        let https = public_url.scheme() == "https";
        let name = &raw.cookie_name;
        let token_char = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if name.is_empty() || name.len() > 64 || !name.bytes().all(token_char) {
            self.error("session.cookie_name", "must be 1-64 letters, digits or !#$%&'*+-.^_`|~");
        }
        if name.starts_with("__Secure-") && !https {
            self.error("session.cookie_name", "a __Secure- cookie needs an https public_url");
        }
        if name.starts_with("__Host-") && (!https || raw.cookie_domain.is_some()) {
            self.error(
                "session.cookie_name",
                "a __Host- cookie needs an https public_url and no cookie_domain",
            );
        }
        let cookie_domain = raw
            .cookie_domain
            .map(|d| d.trim_start_matches('.').to_ascii_lowercase());
        if let Some(domain) = &cookie_domain {
            let host = public_url.host_str().unwrap_or_default().to_ascii_lowercase();
            let covers = host == *domain || host.ends_with(&format!(".{domain}"));
            if domain.is_empty() || !domain.contains('.') && domain != "localhost" {
                self.error("session.cookie_domain", "must be a domain such as example.com");
            } else if !covers {
                self.error(
                    "session.cookie_domain",
                    format!("must be public_url's host ({host}) or a parent of it, or browsers drop the cookie"),
                );
            }
        }
        let idle_timeout = self.duration("session.idle_timeout", &raw.idle_timeout);
        let absolute_timeout = self.duration("session.absolute_timeout", &raw.absolute_timeout);
        if idle_timeout < Duration::from_secs(60) {
            self.error("session.idle_timeout", "must be at least 1m");
        }
        if absolute_timeout < idle_timeout {
            self.error("session.absolute_timeout", "must be at least idle_timeout");
        }
        Session {
            cookie_name: raw.cookie_name,
            cookie_domain,
            idle_timeout,
            absolute_timeout,
        }
    }

    /// A header name; the empty string means "do not send this header".
    fn header_name(&mut self, path: &str, text: &str) -> Option<http::HeaderName> {
        if text.is_empty() {
            return None;
        }
        match http::HeaderName::from_bytes(text.as_bytes()) {
            Ok(h) => Some(static_header_name(h)),
            Err(_) => {
                self.error(path, format!("{text:?} is not a valid header name"));
                None
            }
        }
    }

    /// Exactly one of `basic`, `basic_file`, `basic_env`, `bearer`,
    /// `bearer_file`, `bearer_env`.
    fn credentials(&mut self, at: &str, c: RawCredentials, base: &Path) -> Option<Credentials> {
        let basic = [c.basic.is_some(), c.basic_file.is_some(), c.basic_env.is_some()];
        let bearer = [c.bearer.is_some(), c.bearer_file.is_some(), c.bearer_env.is_some()];
        let given = basic.iter().chain(&bearer).filter(|b| **b).count();
        if given != 1 {
            self.error(
                at,
                "give exactly one of basic, basic_file, basic_env, bearer, bearer_file or bearer_env",
            );
            return None;
        }
        if basic.contains(&true) {
            self.secret(at, "basic", c.basic, c.basic_file, c.basic_env, base)
                .map(Credentials::Basic)
        } else {
            self.secret(at, "bearer", c.bearer, c.bearer_file, c.bearer_env, base)
                .map(Credentials::Bearer)
        }
    }

    /// Exactly one of `key`, `key_file`, `key_env`.
    fn secret(
        &mut self,
        at: &str,
        key: &str,
        inline: Option<String>,
        file: Option<PathBuf>,
        env: Option<String>,
        base: &Path,
    ) -> Option<SecretSource> {
        let present: Vec<String> = [
            (inline.is_some(), key.to_owned()),
            (file.is_some(), format!("{key}_file")),
            (env.is_some(), format!("{key}_env")),
        ]
        .into_iter()
        .filter_map(|(given, name)| given.then_some(name))
        .collect();
        if present.len() != 1 {
            let msg = format!("give exactly one of {key}, {key}_file or {key}_env");
            // Point at the table when none is given, else at the second one.
            let path = match present.get(1) {
                Some(second) => format!("{at}.{second}"),
                None => at.to_owned(),
            };
            self.error(&path, msg);
            return None;
        }
        if let Some(name) = &env
            && (name.is_empty() || name.contains('='))
        {
            self.error(&format!("{at}.{key}_env"), "must be an environment variable name");
        }
        inline
            .map(SecretSource::Inline)
            .or_else(|| file.map(|f| SecretSource::File(base.join(f))))
            .or_else(|| env.map(SecretSource::Env))
    }
}

/// Headers that carry transport or forwarding information: a route may not
/// use them for identity.
fn is_reserved_header(h: &http::HeaderName) -> bool {
    use http::header;
    [
        header::HOST,
        header::CONNECTION,
        header::TRANSFER_ENCODING,
        header::CONTENT_LENGTH,
        header::UPGRADE,
        header::TE,
        header::COOKIE,
        header::FORWARDED,
    ]
    .contains(h)
        || h.as_str().starts_with("x-forwarded-")
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

// ---- locating keys in the text -------------------------------------------------

/// The text being parsed, for turning byte spans into line and column.
struct Located<'a> {
    text: &'a str,
    origin: &'a Path,
}

impl Located<'_> {
    fn at(&self, span: Option<Range<usize>>, key: String, message: String) -> ConfigError {
        let (line, column) = span.map_or((1, 1), |s| line_col(self.text, s.start));
        ConfigError {
            file: self.origin.to_owned(),
            line,
            column,
            key,
            message,
        }
    }

    fn syntax(&self, e: &toml::de::Error) -> ConfigError {
        self.at(e.span(), String::new(), first_line(e.message()))
    }

    fn type_error(&self, index: &KeyIndex, e: &toml::de::Error) -> ConfigError {
        let key = e.span().and_then(|s| index.key_at(&s)).unwrap_or_default();
        self.at(e.span(), display_key(&key), first_line(e.message()))
    }
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).trim().to_owned()
}

/// 1-based line and column (in characters) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before.get(line_start..).map_or(1, |s| s.chars().count() + 1);
    (line, column)
}

/// Every key in the document with the spans of the key and its value, under
/// the same dotted paths `serde_ignored` reports (`routes.0.name`).
#[derive(Debug, Default)]
struct KeyIndex {
    keys: BTreeMap<String, (Range<usize>, Range<usize>)>,
}

impl KeyIndex {
    fn walk_table(&mut self, prefix: String, table: &DeTable<'_>) {
        for (k, v) in table {
            let path = join(&prefix, k.get_ref());
            self.keys.insert(path.clone(), (k.span(), v.span()));
            self.walk_value(path, v);
        }
    }

    fn walk_value(&mut self, path: String, value: &Spanned<DeValue<'_>>) {
        match value.get_ref() {
            DeValue::Table(t) => self.walk_table(path, t),
            DeValue::Array(items) => {
                for (i, item) in items.iter().enumerate() {
                    let p = format!("{path}.{i}");
                    self.keys.insert(p.clone(), (item.span(), item.span()));
                    self.walk_value(p, item);
                }
            }
            _ => {}
        }
    }

    fn key_span(&self, path: &str) -> Option<Range<usize>> {
        self.keys.get(path).map(|(k, _)| k.clone())
    }

    /// The value's span, or the closest enclosing key's when the key is absent
    /// (a missing required key is reported at its table).
    fn value_span(&self, path: &str) -> Option<Range<usize>> {
        let mut p = path;
        loop {
            if let Some((_, v)) = self.keys.get(p) {
                return Some(v.clone());
            }
            p = p.rsplit_once('.')?.0;
        }
    }

    /// The innermost key whose value contains `span`.
    fn key_at(&self, span: &Range<usize>) -> Option<String> {
        self.keys
            .iter()
            .filter(|(_, (k, v))| {
                (v.start <= span.start && span.end <= v.end) || (k.start <= span.start && span.end <= k.end)
            })
            // Narrowest value first; on a tie (an array of tables and its
            // item share the header's span) the deeper key.
            .min_by_key(|(p, (_, v))| (v.end - v.start, std::cmp::Reverse(p.len())))
            .map(|(p, _)| p.clone())
    }
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        format!("{prefix}.{key}")
    }
}

/// `routes.0.upstream` -> `routes[0].upstream`.
fn display_key(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for (i, seg) in path.split('.').enumerate() {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else {
            if i > 0 {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

#[cfg(test)]
mod tests;
