//! `tokenkeeper`: the command-line front door.
//!
//! - `tokenkeeper demo` — machine-to-machine tokens end to end, in one process.
#![allow(clippy::print_stdout)]

mod demo;

use clap::{Parser, Subcommand};

/// OAuth 2.0 / OpenID Connect access-token management.
#[derive(Debug, Parser)]
#[command(name = "tokenkeeper", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the client-credentials demo: a test authorization server, a protected API and
    /// concurrent workers calling it through the token middleware while tokens expire.
    Demo(demo::DemoArgs),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Demo(args) => runtime.block_on(demo::run(args)).map(|report| {
            println!("{report}");
        }),
    }
}
