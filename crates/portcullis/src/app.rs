//! Wiring: opens the identity directory and serves the listeners until
//! shutdown. `main` stays thin; tests call [`run`] with listeners bound to
//! `127.0.0.1:0` and their own shutdown future.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use portcullis_directory::{Directory, Options, StoreError};
use portcullis_oidc::{AssertionSigner, IssuerConfig, Verifier};
use portcullis_scim::auth::ClientCredential;
use portcullis_scim::service::{Limits, Scim, Settings};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;

use crate::admin::Admin;
use crate::alerts;
use crate::config::Config;
use crate::metrics::{Exporter, Metrics, Sources};
use crate::policy_runtime::{self, PolicyRuntime};
use crate::proxy::{Proxy, ProxyBody, ProxyParts};
use crate::routes::Router;
use crate::session::Sessions;
use crate::session::signin::SignIn;
use crate::tls::ServerCert;
use crate::web::{self, Transport};

/// How long in-flight admin requests may take to finish after shutdown
/// begins (the proxy listener's grace is configurable).
pub const ADMIN_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How often the TLS certificate files are checked for a change.
const CERT_POLL: Duration = Duration::from_secs(5);

/// The sockets Portcullis serves on, already bound.
#[derive(Debug)]
pub struct Listeners {
    pub server: TcpListener,
    pub admin: TcpListener,
}

impl Listeners {
    /// Binds the addresses the configuration names.
    pub async fn bind(config: &Config) -> Result<Listeners, RunError> {
        let bind = |addr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| RunError::Bind { addr, source })
        };
        Ok(Listeners {
            server: bind(config.server.listen).await?,
            admin: bind(config.admin.listen).await?,
        })
    }
}

/// Why Portcullis could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{} policy error(s):\n{}", .0.len(), .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Policy(Vec<portcullis_policy::PolicyError>),
    #[error("start-up task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("{0}")]
    Scim(String),
    #[error("tls: {0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("oidc: {0}")]
    Oidc(String),
    #[error(transparent)]
    Proxy(#[from] crate::proxy::ProxyStartError),
    #[error("cannot start the worker threads: {source}")]
    Workers { source: std::io::Error },
    #[error("audit trail: {0}")]
    Audit(portcullis_audit::AuditError),
    #[error("alerts: {0}")]
    Alerts(String),
}

/// Opens the directory at the configured path. Blocking work (sled open and
/// the cache rebuild) runs off the async threads.
pub async fn open_directory(config: &Config) -> Result<Directory, RunError> {
    let path = config.store.path.clone();
    let directory = tokio::task::spawn_blocking(move || Directory::open(&path, Options::default())).await??;
    Ok(directory)
}

/// Runs Portcullis until `shutdown` resolves, then drains.
pub async fn run(config: Config, listeners: Listeners, shutdown: impl Future<Output = ()>) -> Result<(), RunError> {
    let (policy, warnings) = PolicyRuntime::load(&config).map_err(RunError::Policy)?;
    for w in &warnings {
        tracing::warn!(warning = %w, "policy warning");
    }
    let policy = Arc::new(policy);
    let directory = open_directory(&config).await?;
    let stats = directory.stats();
    tracing::info!(
        store = %config.store.path.display(),
        users = stats.users,
        groups = stats.groups,
        memberships = stats.memberships,
        "identity directory loaded"
    );
    tracing::info!(dir = %config.policy.dir.display(), rules = policy.current().rule_count(), "policy loaded");
    let (stop_tx, stop_rx) = watch::channel(false);
    let stopped = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    if let (Ok(server), Ok(admin)) = (listeners.server.local_addr(), listeners.admin.local_addr()) {
        tracing::info!(%server, %admin, public_url = %config.server.public_url, "listening");
    }
    let router = Arc::new(Router::new(&config.routes));
    let env = |k: &str| std::env::var(k).ok();
    let scim = scim_service(&config, directory.clone(), env)?;
    let verifier = match &config.oidc {
        Some(o) => {
            let mut issuer = IssuerConfig::new(o.issuer.clone(), o.audiences.clone());
            issuer.leeway = o.leeway;
            issuer.ca_file = o.ca_file.clone();
            Some(Verifier::new(issuer).map_err(|e| RunError::Oidc(e.to_string()))?)
        }
        None => None,
    };
    let signer = match &config.assertion.key_file {
        Some(path) => AssertionSigner::from_pem_file(&config.assertion.issuer, path),
        None => AssertionSigner::generate(&config.assertion.issuer),
    }
    .map_err(|e| RunError::Oidc(e.to_string()))?;
    let metrics = Metrics::default();
    let audit = crate::audit::Audit::open(&config.audit).map_err(RunError::Audit)?;
    let activity = Arc::new(crate::reports::Activity::new(directory.activity()));
    let (alerter, alerter_task) = alerts::Alerter::new(
        config.alerts.webhook.clone(),
        config.alerts.webhook_ca.as_deref(),
        alerts::DEFAULT_CAPACITY,
    )
    .map_err(|e| RunError::Alerts(e.to_string()))?;
    let alert_rules = alerts::AlertRules {
        groups: config.alerts.groups.clone(),
        roles: config.alerts.roles.clone(),
    };
    let scim_clients: Vec<String> = config.scim.clients.iter().map(|c| c.name.clone()).collect();
    let feed = alerts::FeedHealth::new(&scim_clients, config.alerts.scim_silence);
    if !alert_rules.is_empty() {
        let (directory, rules, alerter) = (directory.clone(), alert_rules.clone(), alerter.clone());
        policy.on_reload(Box::new(move |old, new| {
            alerts::on_policy_reload(old, new, &directory, &rules, &alerter);
        }));
    }
    let browser = browser(&config, &directory, &env)?;
    let signin = browser.as_ref().map(|b| b.signin.clone());
    let admin_signin = signin.clone();
    let sessions = browser.as_ref().map(|b| b.sessions.clone());
    let proxy = Proxy::new(
        &config,
        ProxyParts {
            policy: policy.clone(),
            directory: directory.clone(),
            verifier: verifier.clone(),
            browser,
            signer,
            metrics: metrics.clone(),
            audit: audit.clone(),
            activity: Some(activity.clone()),
        },
        &env,
    )?;
    let cert = match &config.server.tls {
        Some(tls) => Some(ServerCert::load(&tls.cert, &tls.key)?),
        None => None,
    };
    let transport = Transport {
        tls: match &cert {
            Some(cert) => Some(TlsAcceptor::from(Arc::new(cert.server_config()?))),
            None => None,
        },
        header_read_timeout: config.server.header_read_timeout,
        grace: config.server.shutdown_grace,
        park_after: web::PARK_AFTER,
        stats: Arc::default(),
    };

    let mut tasks = Vec::new();
    tasks.push(tokio::spawn(policy_runtime::watch(
        policy.clone(),
        stopped(stop_rx.clone()),
    )));
    if let Some(verifier) = verifier.clone() {
        let stop = stopped(stop_rx.clone());
        tasks.push(tokio::spawn(async move { verifier.run(stop).await }));
    }
    if let Some(cert) = cert.clone() {
        tasks.push(tokio::spawn(cert.watch(CERT_POLL, stopped(stop_rx.clone()))));
    }
    if let Some(signin) = signin {
        tracing::info!(redirect_uri = signin.redirect_uri(), "browser sign-in enabled");
        let stop = stopped(stop_rx.clone());
        tasks.push(tokio::spawn(async move { signin.run(stop).await }));
    }
    tasks.push(tokio::spawn(activity.clone().run(stopped(stop_rx.clone()))));
    tasks.push(tokio::spawn(alerter_task.run(stopped(stop_rx.clone()))));
    tasks.push(tokio::spawn(alerts::watch_directory(
        directory.clone(),
        policy.clone(),
        alert_rules,
        alerter.clone(),
        stopped(stop_rx.clone()),
    )));
    // Checked ten times per silence window (at most once a minute), so an
    // alert is at most a tenth of the window late.
    let feed_check = config.alerts.scim_silence.map_or(Duration::from_secs(60), |s| {
        (s / 10).clamp(Duration::from_millis(100), Duration::from_secs(60))
    });
    tasks.push(tokio::spawn(alerts::watch_feeds(
        feed.clone(),
        alerter.clone(),
        feed_check,
        stopped(stop_rx.clone()),
    )));
    if let Some(audit) = audit.clone() {
        tasks.push(tokio::spawn(audit.run_scim(
            directory.clone(),
            policy.clone(),
            stopped(stop_rx.clone()),
        )));
    }
    if let Some(sessions) = sessions.clone() {
        tasks.push(tokio::spawn(sessions.run(directory.clone(), stopped(stop_rx.clone()))));
    }
    let exporter = Arc::new(Exporter::new(
        &metrics,
        Sources {
            directory: directory.clone(),
            policy: policy.clone(),
            verifier: verifier.clone(),
            live: proxy.live(),
            cert,
            sessions: sessions.clone(),
            audit: audit.clone(),
            alerts: Some((alerter.clone(), feed.clone())),
            connections: transport.stats.clone(),
        },
    ));
    tasks.push(tokio::spawn(crate::proxy::live::watch(
        proxy.live(),
        directory.clone(),
        policy.clone(),
        stopped(stop_rx.clone()),
    )));
    let workers = match config.server.workers {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    };
    let mut services = Vec::with_capacity(workers);
    for _ in 0..workers {
        let gateway = Gateway {
            feed: feed.clone(),
            scim: scim.clone(),
            proxy: proxy.fork()?,
            metrics: metrics.clone(),
        };
        services.push(move |conn| GatewayConn {
            conn: gateway.proxy.client_conn(conn),
            gateway: gateway.clone(),
        });
    }
    drop(proxy);
    let workers =
        web::Workers::start(listeners.server, services, transport).map_err(|source| RunError::Workers { source })?;
    let server = tokio::spawn(workers.run(stopped(stop_rx.clone())));
    let admin = Admin {
        directory: directory.clone(),
        policy,
        router,
        verifier,
        signin: admin_signin,
        activity,
        feed,
        metrics: exporter,
    };
    let admin = tokio::spawn(web::serve(
        listeners.admin,
        move |_| admin.clone(),
        Transport::plain(ADMIN_SHUTDOWN_GRACE),
        stopped(stop_rx),
    ));
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop_tx.send(true);
    server.await?;
    admin.await?;
    for task in tasks {
        task.await?;
    }
    drop(directory);
    tracing::info!("stopped");
    Ok(())
}

/// Browser sign-in and sessions, when `[oidc] client_id` is set.
fn browser(
    config: &Config,
    directory: &Directory,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<crate::proxy::browser::Browser>, RunError> {
    let Some(oidc) = config.oidc.as_ref().filter(|o| o.client.is_some()) else {
        return Ok(None);
    };
    let secret = match oidc.client.as_ref().and_then(|c| c.client_secret.as_ref()) {
        Some(s) => Some(
            s.resolve(env)
                .map_err(|e| RunError::Oidc(format!("oidc.client_secret: {e}")))?,
        ),
        None => None,
    };
    let signin = SignIn::new(oidc, secret, &config.server.public_url).map_err(RunError::Oidc)?;
    let sessions = Sessions::new(
        directory.sessions(),
        config.session.clone(),
        crate::session::system_clock(),
    );
    Ok(Some(crate::proxy::browser::Browser::new(
        Arc::new(sessions),
        Arc::new(signin),
        &config.server.public_url,
    )))
}

/// Builds the SCIM service from the configuration, reading each client's
/// token hash from wherever the configuration says it is.
pub fn scim_service(
    config: &Config,
    directory: Directory,
    env: impl Fn(&str) -> Option<String>,
) -> Result<Scim, RunError> {
    let mut clients = Vec::with_capacity(config.scim.clients.len());
    for (i, c) in config.scim.clients.iter().enumerate() {
        let hex = c
            .token_sha256
            .resolve(&env)
            .map_err(|e| RunError::Scim(format!("scim.clients[{i}].token_sha256: {e}")))?;
        clients.push(ClientCredential::from_hex(&c.name, &hex, c.rate_limit).map_err(RunError::Scim)?);
    }
    let base_url = format!(
        "{}{}",
        config.server.public_url.as_str().trim_end_matches('/'),
        config.scim.path
    );
    Scim::new(
        directory,
        Settings {
            base_path: config.scim.path.clone(),
            base_url,
            clients,
            custom_schemas: config.scim.schemas.clone(),
            limits: Limits::default(),
        },
    )
    .map_err(RunError::Scim)
}

/// The main listener: SCIM under its base path, everything else to the
/// proxy.
#[derive(Debug, Clone)]
struct Gateway {
    /// Last successful request per SCIM client (feed health).
    feed: alerts::FeedHealth,
    scim: Scim,
    proxy: Proxy,
    metrics: Metrics,
}

/// The gateway bound to one connection.
#[derive(Debug, Clone)]
struct GatewayConn {
    gateway: Gateway,
    conn: Arc<crate::proxy::ClientConn>,
}

impl hyper::service::Service<Request<Incoming>> for GatewayConn {
    type Response = Response<ProxyBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

    fn call(&self, req: Request<Incoming>) -> Self::Future {
        // Two boxes rather than one async block with both branches, whose
        // state would be the larger of the two on every request.
        if self.gateway.scim.owns(req.uri().path()) {
            let scim = self.gateway.scim.clone();
            let metrics = self.gateway.metrics.clone();
            let feed = self.gateway.feed.clone();
            Box::pin(async move {
                let method = req.method().clone();
                let operation = scim.operation(&method, req.uri().path());
                let resp = scim.handle(req).await;
                let caller = resp
                    .extensions()
                    .get::<portcullis_scim::service::ScimCaller>()
                    .map(|c| &c.0);
                metrics.scim_request(caller, operation, &method, resp.status().as_u16());
                if let Some(client) = caller
                    && resp.status().is_success()
                {
                    feed.record_success(client, std::time::SystemTime::now());
                }
                Ok(resp.map(|b| b.map_err(|never| match never {}).boxed()))
            })
        } else {
            Box::pin(self.gateway.proxy.clone().handle(Box::new(req), self.conn.clone()))
        }
    }
}
