//! The `portcullis` command line: what each subcommand does and the exit
//! code it returns. `main` only installs logging and calls [`main`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

use crate::app::{self, Listeners};
use crate::config::Config;
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
}

/// Runs a parsed command line and returns the process exit code.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve { config } => serve(&config),
        Command::Check { config } => check(&config),
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
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listeners = Listeners::bind(&config).await?;
        app::run(config, listeners, shutdown_signal()).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
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
/// well-formed, the store (if it exists) opens and is consistent, the policy
/// directory exists. Returns one message per problem.
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
