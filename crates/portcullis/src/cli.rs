//! The `portcullis` command line: what each subcommand does and the exit
//! code it returns. `main` only installs logging and calls [`main`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::app::{self, Listeners};
use crate::authz::{self, Explanation};
use crate::config::Config;
use crate::policy_runtime::route_set;
use crate::routes::{Router, split_url};
use crate::secret::SecretSource;

/// Exit code for an invalid configuration (EX_USAGE).
pub const EXIT_CONFIG: u8 = 64;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Identity-aware reverse proxy driven by SCIM-provisioned groups"
)]
pub struct Cli {
    /// Log format: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy, the SCIM endpoint and the admin listener.
    Serve {
        /// The configuration file.
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the configuration and everything it references; exit 0 when
    /// all is well, 1 with every problem listed otherwise.
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Show whether a user may make a request, with the user's groups and
    /// roles as the directory holds them now and the rule that decided.
    /// Asks the running server (its admin listener) when there is one, so
    /// the answer reflects the live policy; otherwise reads the store and
    /// the policy files directly.
    Explain {
        #[arg(long, short)]
        config: PathBuf,
        /// The SCIM userName; omit for an anonymous request.
        #[arg(long)]
        user: Option<String>,
        #[arg(long, default_value = "GET")]
        method: String,
        /// An absolute URL (its host selects the route) or a path.
        #[arg(long)]
        url: String,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// See Portcullis work in one command: the proxy on 127.0.0.1:8080, a
    /// built-in development identity provider, a sample app, demo users
    /// provisioned over SCIM. Ctrl-C stops it and deletes its data.
    Demo {
        #[command(subcommand)]
        action: Option<DemoAction>,
        /// Where the proxy listens (loopback only).
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
        /// Where the development identity provider listens (loopback only).
        #[arg(long, default_value = "127.0.0.1:8081")]
        idp_listen: std::net::SocketAddr,
        /// Where the admin listener (health, metrics) listens.
        #[arg(long, default_value = "127.0.0.1:9090")]
        admin_listen: std::net::SocketAddr,
        /// Where the running demo keeps its SCIM token for the actions below.
        #[arg(long, global = true)]
        state_file: Option<PathBuf>,
    },
    /// Each SCIM client's last successful push, from the running server.
    /// Exits 0 when every feed is healthy, 2 when one has been silent longer
    /// than `[alerts] scim_silence`, 1 when the server cannot be asked.
    Status {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
        format: StatusFormat,
    },
    /// Access reviews, from the running server (or the store when none runs).
    Report {
        #[command(subcommand)]
        command: ReportCommand,
    },
    /// Audit trail tools: verify the hash chain, query records.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Print a new random bearer token for a SCIM client, and the
    /// configuration lines that hold its SHA-256 (the token itself is never
    /// stored by Portcullis: give it to the identity provider).
    ScimToken {
        /// The client's name in `[[scim.clients]]`.
        #[arg(long)]
        client: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Every user, their effective groups, roles and last access.
    Access {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long, value_enum, default_value_t = ReportFormat::Csv)]
        format: ReportFormat,
    },
    /// Users with no access in the last N days, or never.
    Stale {
        #[arg(long, short)]
        config: PathBuf,
        #[arg(long)]
        days: u32,
        #[arg(long, value_enum, default_value_t = ReportFormat::Csv)]
        format: ReportFormat,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StatusFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    Csv,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of audit files (the current file and its rotated
    /// siblings, in any order); exit 0 when it holds, 1 naming the first
    /// broken link (file, line, seq, what is wrong).
    Verify {
        /// Audit files; with `--config`, the configured file and its
        /// rotated siblings.
        files: Vec<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Print the records (JSON lines) that match every given condition.
    Query {
        files: Vec<PathBuf>,
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// The userName.
        #[arg(long)]
        user: Option<String>,
        /// RFC 3339 time, or a duration back from now such as `24h`.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        /// allow, deny, public, unauthenticated, error, sign_in.
        #[arg(long)]
        decision: Option<String>,
        /// access or scim.
        #[arg(long)]
        kind: Option<String>,
        #[arg(long)]
        route: Option<String>,
    },
}

/// What a second terminal can do to a running demo, as its IdP would.
#[derive(Debug, Subcommand)]
pub enum DemoAction {
    /// Deactivate a demo user over SCIM: their access ends on their next
    /// request, and their open connections close.
    Deprovision {
        /// alice, bob or carol.
        user: String,
    },
    /// Activate a demo user again.
    Reactivate { user: String },
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Run the policy tests in `<policy dir>/tests/*.toml` against the policy
    /// files; print each failure with the deciding rule, end with
    /// `N passed, M failed`, and exit 1 on any failure.
    Test {
        #[arg(long, short)]
        config: PathBuf,
    },
}

/// Runs a parsed command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Check { config } => check(&config),
        Command::Explain {
            config,
            user,
            method,
            url,
        } => explain(&config, user.as_deref(), &method, &url),
        Command::Policy {
            command: PolicyCommand::Test { config },
        } => policy_test(&config),
        Command::ScimToken { client } => scim_token(&client),
        Command::Audit { command } => audit(command),
        Command::Report { command } => report(command),
        Command::Status { config, format } => status(&config, format),
        Command::Demo {
            action,
            listen,
            idp_listen,
            admin_listen,
            state_file,
        } => {
            let state_file = state_file.unwrap_or_else(crate::demo::DemoOptions::default_state_file);
            match action {
                None => demo(crate::demo::DemoOptions {
                    listen,
                    idp_listen,
                    admin_listen,
                    state_file,
                }),
                Some(DemoAction::Deprovision { user }) => demo_action(&state_file, &user, false),
                Some(DemoAction::Reactivate { user }) => demo_action(&state_file, &user, true),
            }
        }
    }
}

fn status(path: &Path, format: StatusFormat) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let body = match admin_get(&config, "/v1/status") {
        Ok(Some(body)) => body,
        Ok(None) => {
            eprintln!(
                "error: no server answers on the admin listener {}: feed status lives in the running server",
                config.admin.listen
            );
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let status: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("error: unexpected answer from the admin listener: {e}");
            return ExitCode::FAILURE;
        }
    };
    let clients = status["scim_clients"].as_array().cloned().unwrap_or_default();
    match format {
        StatusFormat::Json => println!("{status}"),
        StatusFormat::Text => {
            println!(
                "{:<20} {:<28} {:>12}  state",
                "scim client", "last success", "silent for"
            );
            for c in &clients {
                let silent_for = c["silent_for_seconds"].as_u64().map_or_else(
                    || "-".to_owned(),
                    |s| humantime::format_duration(std::time::Duration::from_secs(s)).to_string(),
                );
                println!(
                    "{:<20} {:<28} {:>12}  {}",
                    c["client"].as_str().unwrap_or("?"),
                    c["last_success"].as_str().unwrap_or("never"),
                    silent_for,
                    if c["silent"] == true { "SILENT" } else { "ok" }
                );
            }
        }
    }
    if clients.iter().any(|c| c["silent"] == true) {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    }
}

fn report(command: ReportCommand) -> ExitCode {
    let (path, days, format) = match command {
        ReportCommand::Access { config, format } => (config, None, format),
        ReportCommand::Stale { config, days, format } => (config, Some(days), format),
    };
    let config = match load_config(&path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let endpoint = match days {
        Some(d) => format!("/v1/report/stale?days={d}"),
        None => "/v1/report/access".to_owned(),
    };
    let rows: Result<Vec<crate::reports::AccessRow>, String> = match admin_get(&config, &endpoint) {
        Ok(Some(body)) => {
            serde_json::from_slice(&body).map_err(|e| format!("unexpected answer from the admin listener: {e}"))
        }
        Ok(None) => report_locally(&config, days),
        Err(e) => Err(e),
    };
    match rows {
        Ok(rows) => {
            match format {
                ReportFormat::Csv => print!("{}", crate::reports::csv(&rows)),
                ReportFormat::Json => println!("{}", serde_json::json!(rows)),
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn report_locally(config: &Config, days: Option<u32>) -> Result<Vec<crate::reports::AccessRow>, String> {
    let compiled = portcullis_policy::load_dir(&config.policy.dir, &route_set(config))
        .map_err(|errors| errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))?;
    let directory = open_store_directly(config)?;
    let last = crate::reports::Activity::new(directory.activity()).all();
    let rows = crate::reports::access(&directory, &compiled.policy, &last);
    Ok(match days {
        Some(days) => {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            crate::reports::stale(rows, &last, days, now)
        }
        None => rows,
    })
}

/// The audit files named on the command line, or the configured file and
/// its rotated siblings.
fn audit_files(files: Vec<PathBuf>, config: Option<&Path>) -> Result<Vec<PathBuf>, String> {
    if !files.is_empty() {
        return Ok(files);
    }
    let Some(path) = config else {
        return Err("name the audit files, or --config to use the configured [audit] path".into());
    };
    let config = Config::load(path).map_err(|e| e.to_string())?;
    let Some(audit) = config.audit.path else {
        return Err(format!("{}: [audit] path is not set", path.display()));
    };
    let files = portcullis_audit::files_of(&audit).map_err(|e| e.to_string())?;
    if files.is_empty() {
        return Err(format!("no audit files at {}", audit.display()));
    }
    Ok(files)
}

fn audit(command: AuditCommand) -> ExitCode {
    match command {
        AuditCommand::Verify { files, config } => {
            let files = match audit_files(files, config.as_deref()) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            match portcullis_audit::verify(&files) {
                Ok(report) => match &report.broken {
                    None => {
                        println!(
                            "ok: {} record(s) in {} file(s), seq {}..{}, last hash {}{}",
                            report.records,
                            report.files.len(),
                            report.first_seq.unwrap_or(0),
                            report.last_seq.unwrap_or(0),
                            report.last_hash.as_deref().unwrap_or("-"),
                            if report.anchor.is_some() {
                                " (starts mid-chain: older files were rotated away)"
                            } else {
                                ""
                            }
                        );
                        ExitCode::SUCCESS
                    }
                    Some(broken) => {
                        println!("BROKEN: {broken}");
                        println!("{} record(s) before it verified", report.records);
                        ExitCode::FAILURE
                    }
                },
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        AuditCommand::Query {
            files,
            config,
            user,
            since,
            until,
            decision,
            kind,
            route,
        } => {
            let files = match audit_files(files, config.as_deref()) {
                Ok(f) => f,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let time = |arg: &Option<String>, name: &str| -> Result<Option<time::OffsetDateTime>, String> {
                let Some(text) = arg else { return Ok(None) };
                if let Ok(t) = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339) {
                    return Ok(Some(t));
                }
                let back = humantime::parse_duration(text)
                    .map_err(|_| format!("--{name} {text:?}: not an RFC 3339 time or a duration like 24h"))?;
                Ok(Some(time::OffsetDateTime::now_utc() - back))
            };
            let query = match (time(&since, "since"), time(&until, "until")) {
                (Ok(since), Ok(until)) => portcullis_audit::Query {
                    user,
                    since,
                    until,
                    decision,
                    kind,
                    route,
                },
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_CONFIG);
                }
            };
            let mut failed = false;
            let stdout = std::io::stdout();
            let mut out = std::io::BufWriter::new(stdout.lock());
            for record in portcullis_audit::query(&files, &query) {
                match record {
                    Ok(r) => {
                        use std::io::Write;
                        if writeln!(out, "{}", serde_json::Value::Object(r)).is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        eprintln!("warning: {e}");
                        failed = true;
                    }
                }
            }
            if failed { ExitCode::FAILURE } else { ExitCode::SUCCESS }
        }
    }
}

fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

fn demo(options: crate::demo::DemoOptions) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(crate::demo::run(options, shutdown_signal(), &mut std::io::stdout()));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ crate::demo::DemoError::NotLoopback(_)) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn demo_action(state_file: &Path, user: &str, active: bool) -> ExitCode {
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(crate::demo::set_active(state_file, user, active)) {
        Ok(message) => {
            println!("{message}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Some(runtime) = runtime() else {
        return ExitCode::FAILURE;
    };
    let result = runtime.block_on(async {
        let listeners = Listeners::bind(&config).await?;
        app::run(config, listeners, shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(
            e @ (app::RunError::Scim(_) | app::RunError::Tls(_) | app::RunError::Oidc(_) | app::RunError::Proxy(_)),
        ) => {
            // What the configuration points at is unusable: a usage error,
            // like an invalid file.
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(app::RunError::Policy(errors)) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("error: the policy does not compile; not starting");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            tracing::error!(error = %e, "portcullis stopped");
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn check(path: &Path) -> ExitCode {
    let config = match Config::load(path) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("{errors}");
            eprintln!("{}: {} problem(s)", path.display(), errors.0.len());
            return ExitCode::FAILURE;
        }
    };
    let problems = check_references(&config, |k| std::env::var(k).ok());
    for p in &problems {
        eprintln!("{}: {p}", path.display());
    }
    if problems.is_empty() {
        println!(
            "{}: ok ({} route(s), {} SCIM client(s), store {})",
            path.display(),
            config.routes.len(),
            config.scim.clients.len(),
            config.store.path.display()
        );
        ExitCode::SUCCESS
    } else {
        eprintln!("{}: {} problem(s)", path.display(), problems.len());
        ExitCode::FAILURE
    }
}

/// Checks what the configuration points at: secrets can be read and are
/// well-formed, certificate and key files load, the store (if it exists)
/// opens and is consistent, the policy directory exists and compiles. Returns one message per problem.
pub fn check_references(config: &Config, env: impl Fn(&str) -> Option<String>) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, client) in config.scim.clients.iter().enumerate() {
        let key = format!("scim.clients[{i}].token_sha256");
        match client.token_sha256.resolve(&env) {
            Ok(hex) if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {}
            Ok(_) if matches!(client.token_sha256, SecretSource::Inline(_)) => {}
            Ok(_) => problems.push(format!("{key}: the value read is not 64 hex digits")),
            Err(e) => problems.push(format!("{key}: {e}")),
        }
    }
    if !config.policy.dir.is_dir() {
        problems.push(format!(
            "policy.dir: {} is not a directory",
            config.policy.dir.display()
        ));
    } else {
        match portcullis_policy::load_dir(&config.policy.dir, &route_set(config)) {
            Ok(compiled) => {
                for w in compiled.warnings {
                    eprintln!("warning: {w}");
                }
                let unqualified = compiled.policy.unqualified_groups();
                if config.scim.clients.len() > 1 && !unqualified.is_empty() {
                    eprintln!(
                        "warning: {} SCIM clients are configured and the policy grants roles to unqualified \
                         groups ({}): a group of that name from any client matches; qualify them as \"client:name\"",
                        config.scim.clients.len(),
                        unqualified.join(", ")
                    );
                }
            }
            Err(errors) => problems.extend(errors.iter().map(|e| e.to_string())),
        }
        let tests = config.policy.dir.join("tests");
        if tests.is_dir()
            && let Err(errors) = portcullis_policy::read_tests_dir(&tests)
        {
            problems.extend(errors.iter().map(|e| e.to_string()));
        }
    }
    if let Some(oidc) = &config.oidc {
        if let Some(secret) = oidc.client.as_ref().and_then(|c| c.client_secret.as_ref())
            && let Err(e) = secret.resolve(&env)
        {
            problems.push(format!("oidc.client_secret: {e}"));
        }
        if let Some(ca) = &oidc.ca_file
            && let Err(e) = crate::tls::load_certs(ca)
        {
            problems.push(format!("oidc.ca_file: {e}"));
        }
    }
    if let Some(ca) = &config.alerts.webhook_ca
        && let Err(e) = crate::tls::load_certs(ca)
    {
        problems.push(format!("alerts.webhook_ca: {e}"));
    }
    if let Some(tls) = &config.server.tls
        && let Err(e) = crate::tls::ServerCert::load(&tls.cert, &tls.key)
    {
        problems.push(format!("server.tls: {e}"));
    }
    if let Some(path) = &config.assertion.key_file
        && let Err(e) = portcullis_oidc::AssertionSigner::from_pem_file(&config.assertion.issuer, path)
    {
        problems.push(format!("assertion.key_file: {e}"));
    }
    for (i, route) in config.routes.iter().enumerate() {
        if let Err(e) = crate::proxy::upstream::Upstream::new(route) {
            problems.push(format!("routes[{i}]: {e}"));
        }
        if let Some(c) = &route.credentials
            && let Err(e) = crate::proxy::credentials_header(c, &env)
        {
            problems.push(format!("routes[{i}].credentials: {e}"));
        }
    }
    let store = &config.store.path;
    if store.exists() {
        match portcullis_directory::Directory::open(store, portcullis_directory::Options::default()) {
            Ok(dir) => {
                for p in dir.verify() {
                    problems.push(format!("store.path: {}: {p}", store.display()));
                }
            }
            Err(portcullis_directory::StoreError::Open { source, .. }) if is_locked(&source) => {
                // A running server holds the lock; its own start-up check covers it.
                eprintln!(
                    "note: store {} is in use by a running process; not checked",
                    store.display()
                );
            }
            Err(e) => problems.push(format!("store.path: {e}")),
        }
    } else if let Some(parent) = store.parent().filter(|p| !p.as_os_str().is_empty())
        && !parent.exists()
    {
        problems.push(format!(
            "store.path: parent directory {} does not exist",
            parent.display()
        ));
    }
    problems
}

fn is_locked(e: &portcullis_directory::SledError) -> bool {
    e.to_string().contains("lock")
}

/// Loads the configuration for a command other than `serve`/`check`; on
/// failure prints the errors and gives the exit code.
fn load_config(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|errors| {
        eprintln!("{errors}");
        ExitCode::from(EXIT_CONFIG)
    })
}

fn explain(path: &Path, user: Option<&str>, method: &str, url: &str) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("method", method).append_pair("url", url);
    if let Some(u) = user {
        query.append_pair("user", u);
    }
    let explanation: Result<Explanation, String> = match admin_get(&config, &format!("/v1/explain?{}", query.finish()))
    {
        Ok(Some(body)) => {
            serde_json::from_slice(&body).map_err(|e| format!("unexpected answer from the admin listener: {e}"))
        }
        Ok(None) => explain_locally(&config, user, method, url),
        Err(e) => Err(e),
    };
    match explanation {
        Ok(e) => {
            println!("{e}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn explain_locally(config: &Config, user: Option<&str>, method: &str, url: &str) -> Result<Explanation, String> {
    let compiled = portcullis_policy::load_dir(&config.policy.dir, &route_set(config))
        .map_err(|errors| errors.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))?;
    let directory = match user {
        Some(_) => Some(open_store_directly(config)?),
        None => None,
    };
    let lookup = |u: &str| match &directory {
        Some(d) => d.principal_by(portcullis_directory::IdentityAttr::UserName, u),
        None => portcullis_directory::Lookup::NotFound,
    };
    let router = Router::new(&config.routes);
    Ok(authz::explain(&compiled.policy, &router, lookup, user, method, url))
}

/// Opens the store when no server is running; never creates one.
fn open_store_directly(config: &Config) -> Result<portcullis_directory::Directory, String> {
    if !config.store.path.exists() {
        return Err(format!(
            "no server answered on the admin listener {} and there is no store at {}",
            config.admin.listen,
            config.store.path.display()
        ));
    }
    portcullis_directory::Directory::open(&config.store.path, portcullis_directory::Options::default()).map_err(|e| {
        format!(
            "{e} (no server answered on the admin listener {}, so the store was read directly)",
            config.admin.listen
        )
    })
}

/// GETs a path from the running server's admin listener. `Ok(None)` when
/// nothing listens there (the server is not running).
fn admin_get(config: &Config, path_and_query: &str) -> Result<Option<bytes::Bytes>, String> {
    let mut addr = config.admin.listen;
    if addr.port() == 0 {
        return Ok(None);
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        use http_body_util::BodyExt;
        let stream =
            match tokio::time::timeout(std::time::Duration::from_secs(2), tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(None),
                Ok(Err(e)) => return Err(format!("cannot reach the admin listener {addr}: {e}")),
                Err(_) => return Err(format!("the admin listener {addr} did not answer within 2 s")),
            };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("admin listener {addr}: {e}"))?;
        tokio::spawn(conn);
        let req = http::Request::get(path_and_query)
            .header(http::header::HOST, addr.to_string())
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| e.to_string())?;
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("admin listener {addr}: {e}"))?;
        let status = resp.status();
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("admin listener {addr}: {e}"))?
            .to_bytes();
        if status.is_success() || status == http::StatusCode::NOT_FOUND {
            Ok(Some(body))
        } else {
            Err(format!(
                "admin listener {addr} answered {status}: {}",
                String::from_utf8_lossy(&body)
            ))
        }
    })
}

fn policy_test(path: &Path) -> ExitCode {
    let config = match load_config(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let compiled = match portcullis_policy::load_dir(&config.policy.dir, &route_set(&config)) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let cases = match portcullis_policy::read_tests_dir(&config.policy.dir.join("tests")) {
        Ok(c) => c,
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            return ExitCode::FAILURE;
        }
    };
    let router = Router::new(&config.routes);
    let mut directory: Option<Result<portcullis_directory::Directory, String>> = None;
    let report = portcullis_policy::run_tests(
        &compiled.policy,
        &cases,
        |url, route| resolve_target(&config, &router, url, route),
        |user| {
            // Users are looked up in the running server if there is one,
            // else in the store; only cases that name a user need either.
            let query = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("user", user)
                .finish();
            match admin_get(&config, &format!("/v1/principal?{query}"))? {
                Some(body) => groups_from_json(&body, user),
                None => {
                    let dir = directory.get_or_insert_with(|| open_store_directly(&config));
                    let dir = dir.as_ref().map_err(Clone::clone)?;
                    match dir.principal_by(portcullis_directory::IdentityAttr::UserName, user) {
                        portcullis_directory::Lookup::Found(p) if p.active => Ok(p
                            .groups
                            .iter()
                            .map(|g| portcullis_policy::Group {
                                client: Some(g.owner.to_string()),
                                display_name: g.display_name().to_owned(),
                            })
                            .collect()),
                        portcullis_directory::Lookup::Found(_) => Err(format!("user {user:?} is deactivated")),
                        _ => Err(format!("user {user:?} is not provisioned")),
                    }
                }
            }
        },
    );
    print!("{report}");
    if !report.to_string().ends_with('\n') {
        println!();
    }
    if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn resolve_target(
    config: &Config,
    router: &Router,
    url: &str,
    route: Option<&str>,
) -> Result<portcullis_policy::Target, String> {
    let (host, path) = split_url(url)?;
    let route = match route {
        Some(r) if config.routes.iter().any(|x| x.name == r) => r.to_owned(),
        Some(r) => return Err(format!("unknown route {r:?}")),
        None => {
            let normalized = portcullis_policy::normalize_path(&path, portcullis_policy::NormalizeOptions::default())
                .map(|p| p.into_owned())
                .unwrap_or_else(|_| path.clone());
            router
                .route(host.as_deref(), &normalized)
                .map(|r| r.name.clone())
                .ok_or_else(|| format!("no route matches {url:?}"))?
        }
    };
    let normalize = config
        .routes
        .iter()
        .find(|r| r.name == route)
        .map(|r| r.normalize_options())
        .unwrap_or_default();
    Ok(portcullis_policy::Target { route, path, normalize })
}

fn groups_from_json(body: &[u8], user: &str) -> Result<Vec<portcullis_policy::Group>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if v["error"] == "not_provisioned" {
        return Err(format!("user {user:?} is not provisioned"));
    }
    if v["active"] == false {
        return Err(format!("user {user:?} is deactivated"));
    }
    Ok(v["groups"]
        .as_array()
        .map(|groups| {
            groups
                .iter()
                .map(|g| portcullis_policy::Group {
                    client: g["client"].as_str().map(str::to_owned),
                    display_name: g["displayName"].as_str().unwrap_or_default().to_owned(),
                })
                .collect()
        })
        .unwrap_or_default())
}

fn scim_token(client: &str) -> ExitCode {
    let token = portcullis_scim::auth::new_token();
    println!("token for the identity provider (shown once; keep it secret):");
    println!("  {token}");
    println!();
    println!("configuration:");
    println!("[[scim.clients]]");
    println!("name = \"{client}\"");
    println!("token_sha256 = \"{}\"", portcullis_scim::auth::token_sha256_hex(&token));
    ExitCode::SUCCESS
}
