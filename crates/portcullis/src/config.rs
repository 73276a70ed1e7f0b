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
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Server {
    /// Where the proxy listens.
    pub listen: SocketAddr,
    /// The URL users reach Portcullis at: used for redirects, cookies and
    /// SCIM `meta.location`.
    pub public_url: Url,
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
}

impl Route {
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
    #[serde(default)]
    routes: Vec<RawRoute>,
}

#[derive(Debug, Deserialize)]
struct RawServer {
    #[serde(default = "default_listen")]
    listen: SocketAddr,
    #[serde(default = "default_public_url")]
    public_url: Url,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            listen: default_listen(),
            public_url: default_public_url(),
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
            routes.push(Route {
                name: r.name,
                host,
                path_prefix: r.path_prefix,
                upstream: r.upstream,
                allow_encoded_slash: r.allow_encoded_slash,
            });
        }

        Config {
            origin: self.located.origin.to_owned(),
            server: Server {
                listen: raw.server.listen,
                public_url,
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
            routes,
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
