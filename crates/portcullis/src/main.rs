//! The `portcullis` binary: parse the command line, install logging, run.

use std::process::ExitCode;

use clap::Parser;
use portcullis::cli::{self, Cli, LogFormat};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `PORTCULLIS_LOG` (or `RUST_LOG`) takes a tracing filter such as
    // `info,portcullis_directory=debug`.
    let filter = EnvFilter::try_from_env("PORTCULLIS_LOG")
        .or_else(|_| EnvFilter::try_from_default_env())
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
    cli::main(cli)
}
