//! `portcullis demo`: Portcullis doing its job in one command, with
//! nothing to install or configure.
//!
//! It starts, all on loopback:
//! - the development OpenID Provider (`portcullis-devidp`: development
//!   only, it refuses any other address) with three accounts;
//! - a sample upstream app that shows the identity headers and the signed
//!   assertion it received ([`upstream`]);
//! - Portcullis itself, through the same `app::run` as `serve`, with a
//!   generated configuration, demo policies and a store in a temporary
//!   directory.
//!
//! Then it provisions the demo users and groups **through the real SCIM
//! endpoint** over HTTP, as an identity provider would, writes a small state
//! file (the SCIM URL, token and user ids, mode 0600) so that a second
//! terminal can run `portcullis demo deprovision alice`, and prints the
//! URLs, the accounts, and a curl line with a bearer token.
//!
//! What it is not: a deployment. Passwords are printed, the store is
//! deleted on exit, and nothing listens beyond 127.0.0.1.

pub mod upstream;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use portcullis_devidp::{DevAccount, DevClient, DevIdp, DevIdpConfig};
use serde_json::{Value, json};

use crate::app::{self, Listeners};
use crate::config::Config;

/// The client id Portcullis has at the demo IdP.
const CLIENT_ID: &str = "portcullis-demo";

/// The demo policy: engineers read the app, platform admins may do
/// anything, `/public/` is open to everyone.
pub const POLICY: &str = r#"# The demo policy (written by `portcullis demo`).

[roles.engineer]
allow = [{ route = "app", methods = ["GET", "HEAD"], paths = ["/", "/reports/**"] }]

[roles.admin]
allow = [{ route = "app", paths = ["/**"] }]

[public]
allow = [{ route = "app", methods = ["GET"], paths = ["/public/**"] }]

[groups]
"engineering" = ["engineer"]
"platform-admins" = ["admin"]
"#;

/// One demo account: its IdP login and what SCIM provisions for it.
struct Person {
    login: &'static str,
    name: &'static str,
    groups: &'static [&'static str],
    what: &'static str,
}

const PEOPLE: [Person; 3] = [
    Person {
        login: "alice",
        name: "Alice Admin",
        groups: &["engineering", "platform-admins"],
        what: "engineering + platform-admins: everything",
    },
    Person {
        login: "bob",
        name: "Bob Builder",
        groups: &["engineering"],
        what: "engineering: /, /reports/ (not /admin/)",
    },
    Person {
        login: "carol",
        name: "Carol Contractor",
        groups: &[],
        what: "no groups: provisioned, but no access",
    },
];

/// Where the demo listens.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub listen: SocketAddr,
    pub idp_listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Where the running demo leaves its SCIM URL and token for
    /// `portcullis demo deprovision`.
    pub state_file: PathBuf,
}

impl DemoOptions {
    /// The default state file: `portcullis-demo.json` in the temp dir.
    pub fn default_state_file() -> PathBuf {
        std::env::temp_dir().join("portcullis-demo.json")
    }
}

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("the demo listens on loopback only, not {0} (it prints passwords and tokens)")]
    NotLoopback(SocketAddr),
    #[error("cannot listen on {addr}: {source} (is another demo or server running? try --listen)")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("development identity provider: {0}")]
    Idp(#[from] portcullis_devidp::DevIdpError),
    #[error("demo setup: {0}")]
    Setup(String),
    #[error(transparent)]
    Run(#[from] app::RunError),
    #[error("demo state file {path}: {reason} (is the demo running? start it with `portcullis demo`)")]
    State { path: PathBuf, reason: String },
}

/// What the running demo leaves for `portcullis demo deprovision`.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct State {
    scim_url: String,
    scim_token: String,
    /// login -> SCIM user id
    users: std::collections::BTreeMap<String, String>,
}

/// Runs the demo until `shutdown` resolves, printing its banner to `out`.
pub async fn run(
    options: DemoOptions,
    shutdown: impl std::future::Future<Output = ()>,
    out: &mut (dyn Write + Send),
) -> Result<(), DemoError> {
    for addr in [options.listen, options.idp_listen, options.admin_listen] {
        if !addr.ip().is_loopback() {
            return Err(DemoError::NotLoopback(addr));
        }
    }
    let dir = tempfile::Builder::new()
        .prefix("portcullis-demo-")
        .tempdir()
        .map_err(|e| DemoError::Setup(format!("cannot create a temporary directory: {e}")))?;
    let bind = |addr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| DemoError::Bind { addr, source })
    };
    let listeners = Listeners {
        server: bind(options.listen).await?,
        admin: bind(options.admin_listen).await?,
    };
    let public = format!("http://{}", local(&listeners.server)?);
    let admin = local(&listeners.admin)?;

    let client_secret = random_token();
    let idp = DevIdp::bind(DevIdpConfig {
        addr: options.idp_listen,
        clients: vec![
            DevClient::confidential(
                CLIENT_ID,
                client_secret.clone(),
                format!("{public}/.portcullis/callback"),
            )
            .with_post_logout_redirect_uri(format!("{public}/.portcullis/signed-out")),
        ],
        accounts: PEOPLE
            .iter()
            .map(|p| DevAccount::new(p.login, p.login, email(p.login), p.name))
            .collect(),
        access_token_ttl: Duration::from_secs(3600),
        ..DevIdpConfig::default()
    })
    .await?;
    let idp_running = idp.spawn();
    let app_upstream = upstream::start(&public)
        .await
        .map_err(|e| DemoError::Setup(format!("cannot start the sample app: {e}")))?;

    let scim_token = random_token();
    let policies = dir.path().join("policies");
    std::fs::create_dir(&policies)
        .and_then(|()| std::fs::write(policies.join("demo.toml"), POLICY))
        .map_err(|e| DemoError::Setup(format!("cannot write the demo policy: {e}")))?;
    let config_text = format!(
        r#"# Generated by `portcullis demo`.
[server]
listen = "{listen}"
public_url = "{public}"
[admin]
listen = "{admin}"
[store]
path = "data"
[policy]
dir = "policies"
[[scim.clients]]
name = "demo-idp"
token_sha256 = "{token_hash}"
[oidc]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{client_secret}"
scopes = ["openid", "email", "profile", "offline_access"]
[identity]
claim = "email"
attribute = "userName"
[[routes]]
name = "app"
upstream = "http://{upstream}"
"#,
        listen = local(&listeners.server)?,
        token_hash = portcullis_scim::auth::token_sha256_hex(&scim_token),
        issuer = idp.issuer_str(),
        upstream = app_upstream.addr,
    );
    let config = Config::parse(&config_text, Path::new("demo.toml"), dir.path())
        .map_err(|e| DemoError::Setup(format!("generated configuration: {e}")))?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(app::run(config, listeners, async {
        let _ = stop_rx.await;
    }));
    let provisioned = async {
        wait_ready(&admin.to_string()).await?;
        provision(&public, &scim_token).await
    };
    let users = tokio::select! {
        users = provisioned => users,
        ended = &mut server => Err(server_ended(ended)),
    };
    let users = match users {
        Ok(users) => users,
        Err(e) => {
            let _ = stop_tx.send(());
            idp_running.shutdown().await;
            return Err(e);
        }
    };
    let state = State {
        scim_url: format!("{public}/scim/v2"),
        scim_token: scim_token.clone(),
        users,
    };
    write_state(&options.state_file, &state)?;
    let token = idp.mint_access_token("alice", CLIENT_ID)?;
    let _ = writeln!(
        out,
        "{}",
        banner(
            &public,
            idp.issuer_str(),
            &admin.to_string(),
            &options.state_file,
            &state,
            &token
        )
    );
    let _ = out.flush();

    let result = tokio::select! {
        () = shutdown => {
            let _ = writeln!(out, "stopping the demo ...");
            let _ = stop_tx.send(());
            match server.await {
                Ok(Ok(())) => Ok(()),
                ended => Err(server_ended(ended)),
            }
        }
        // The server stopped on its own: that is an error.
        ended = &mut server => Err(server_ended(ended)),
    };
    let _ = std::fs::remove_file(&options.state_file);
    idp_running.shutdown().await;
    drop(app_upstream);
    result
}

fn server_ended(ended: Result<Result<(), app::RunError>, tokio::task::JoinError>) -> DemoError {
    match ended {
        Ok(Ok(())) => DemoError::Setup("the server stopped unexpectedly".into()),
        Ok(Err(e)) => DemoError::Run(e),
        Err(e) => DemoError::Setup(format!("the server task failed: {e}")),
    }
}

fn local(listener: &tokio::net::TcpListener) -> Result<SocketAddr, DemoError> {
    listener
        .local_addr()
        .map_err(|e| DemoError::Setup(format!("cannot read a listener's address: {e}")))
}

fn email(login: &str) -> String {
    format!("{login}@example.com")
}

fn random_token() -> String {
    hex_string(&rand::random::<[u8; 24]>())
}

fn hex_string(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn banner(public: &str, issuer: &str, admin: &str, state_file: &Path, state: &State, token: &str) -> String {
    let mut s = String::new();
    s.push_str("\nPortcullis demo is running.\n\n");
    s.push_str(&format!(
        "  Open             {public}/  (sign in as one of the accounts below)\n"
    ));
    s.push_str(&format!("  Who am I         {public}/.portcullis/me\n"));
    s.push_str(&format!("  Sign out         {public}/.portcullis/logout\n"));
    s.push_str(&format!("  SCIM endpoint    {}\n", state.scim_url));
    s.push_str(&format!(
        "  Dev IdP          {issuer}  (development only: not for production use)\n"
    ));
    s.push_str(&format!("  Metrics          http://{admin}/metrics\n\n"));
    s.push_str("  Accounts (password = login):\n");
    for p in &PEOPLE {
        s.push_str(&format!("    {:<6} {:<20} {}\n", p.login, email(p.login), p.what));
    }
    s.push_str("\n  As an API client (alice's bearer token, valid 1 hour):\n");
    s.push_str(&format!(
        "    curl -H 'Authorization: Bearer {token}' {public}/reports/q3\n\n"
    ));
    s.push_str("  Watch access end the moment the IdP says so (in a second terminal):\n");
    s.push_str(&format!(
        "    portcullis demo deprovision bob --state-file {}\n",
        state_file.display()
    ));
    if let Some(bob) = state.users.get("bob") {
        s.push_str(&format!(
            "    (or, by hand: curl -X PATCH -H 'Authorization: Bearer {}' -H 'Content-Type: application/scim+json' \\\n       -d '{{\"schemas\":[\"urn:ietf:params:scim:api:messages:2.0:PatchOp\"],\"Operations\":[{{\"op\":\"replace\",\"value\":{{\"active\":false}}}}]}}' \\\n       {}/Users/{bob})\n",
            state.scim_token, state.scim_url
        ));
    }
    s.push_str("\n  Ctrl-C stops the demo and deletes its data.\n");
    s
}

async fn wait_ready(admin: &str) -> Result<(), DemoError> {
    for _ in 0..400 {
        if let Ok((StatusCode::OK, _)) = send(Method::GET, &format!("http://{admin}/readyz"), None, None).await {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    Err(DemoError::Setup("the server did not become ready within 10 s".into()))
}

/// Creates the demo users and groups over SCIM; returns login -> id.
async fn provision(public: &str, token: &str) -> Result<std::collections::BTreeMap<String, String>, DemoError> {
    let scim = format!("{public}/scim/v2");
    let mut ids = std::collections::BTreeMap::new();
    for p in &PEOPLE {
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:User"],
            "userName": email(p.login),
            "name": {"formatted": p.name},
            "displayName": p.name,
            "emails": [{"value": email(p.login), "type": "work", "primary": true}],
            "active": true,
        });
        let (status, answer) = send(Method::POST, &format!("{scim}/Users"), Some(token), Some(&body)).await?;
        if status != StatusCode::CREATED {
            return Err(DemoError::Setup(format!(
                "SCIM create user {}: {status} {answer}",
                p.login
            )));
        }
        let id = answer["id"].as_str().unwrap_or_default().to_owned();
        ids.insert(p.login.to_owned(), id);
    }
    for group in ["engineering", "platform-admins"] {
        let members: Vec<Value> = PEOPLE
            .iter()
            .filter(|p| p.groups.contains(&group))
            .filter_map(|p| ids.get(p.login))
            .map(|id| json!({"value": id}))
            .collect();
        let body = json!({
            "schemas": ["urn:ietf:params:scim:schemas:core:2.0:Group"],
            "displayName": group,
            "members": members,
        });
        let (status, answer) = send(Method::POST, &format!("{scim}/Groups"), Some(token), Some(&body)).await?;
        if status != StatusCode::CREATED {
            return Err(DemoError::Setup(format!(
                "SCIM create group {group}: {status} {answer}"
            )));
        }
    }
    Ok(ids)
}

async fn send(
    method: Method,
    url: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Result<(StatusCode, Value), DemoError> {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(t) = token {
        req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
    }
    if body.is_some() {
        req = req.header(http::header::CONTENT_TYPE, "application/scim+json");
    }
    let bytes = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
    let req = req
        .body(Full::new(bytes))
        .map_err(|e| DemoError::Setup(format!("cannot build a request: {e}")))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .map_err(|_| DemoError::Setup(format!("{url} did not answer within 10 s")))?
        .map_err(|e| DemoError::Setup(format!("{url}: {e}")))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| DemoError::Setup(format!("{url}: {e}")))?
        .to_bytes();
    Ok((status, serde_json::from_slice(&body).unwrap_or(Value::Null)))
}

fn write_state(path: &Path, state: &State) -> Result<(), DemoError> {
    use std::os::unix::fs::OpenOptionsExt;
    let err = |e: std::io::Error| DemoError::State {
        path: path.to_owned(),
        reason: e.to_string(),
    };
    let text = serde_json::to_vec_pretty(state).unwrap_or_default();
    let _ = std::fs::remove_file(path);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    f.write_all(&text).map_err(err)
}

fn read_state(path: &Path) -> Result<State, DemoError> {
    let err = |reason: String| DemoError::State {
        path: path.to_owned(),
        reason,
    };
    let text = std::fs::read(path).map_err(|e| err(e.to_string()))?;
    serde_json::from_slice(&text).map_err(|e| err(format!("not a demo state file: {e}")))
}

/// `portcullis demo deprovision|reactivate LOGIN`: sets the user's `active`
/// flag over SCIM, as the IdP would.
pub async fn set_active(state_file: &Path, login: &str, active: bool) -> Result<String, DemoError> {
    let state = read_state(state_file)?;
    let login = login.split('@').next().unwrap_or(login);
    let id = state.users.get(login).ok_or_else(|| DemoError::State {
        path: state_file.to_owned(),
        reason: format!(
            "no demo user {login:?} (the demo users are {})",
            state.users.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    })?;
    let body = json!({
        "schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"],
        "Operations": [{"op": "replace", "value": {"active": active}}],
    });
    let (status, answer) = send(
        Method::PATCH,
        &format!("{}/Users/{id}", state.scim_url),
        Some(&state.scim_token),
        Some(&body),
    )
    .await?;
    if !status.is_success() {
        return Err(DemoError::Setup(format!("SCIM PATCH answered {status}: {answer}")));
    }
    Ok(format!(
        "{} is now {} (SCIM PATCH /Users/{id} answered {status}); their next request is decided on it",
        email(login),
        if active { "active" } else { "deactivated" }
    ))
}
