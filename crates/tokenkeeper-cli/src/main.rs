//! `tokenkeeper`: the command-line front door.
//!
//! - `tokenkeeper bff` — the backend-for-frontend host (`--dev`: the whole stack, in one process).
//! - `tokenkeeper sidecar` — the egress token proxy for services in any language.
//! - `tokenkeeper demo` — machine-to-machine tokens end to end, in one process.
//! - `tokenkeeper token` — fetch a client-credentials token and print it.
//! - `tokenkeeper dev-idp` — a development identity provider (the test server, standalone).
//! - `tokenkeeper dpop keygen|proof` — DPoP keys and proofs (also the private_key_jwt key).
#![allow(clippy::print_stdout)]

mod bff;
mod demo;
mod dev_idp;
mod dpop;
mod login;
mod reload;
mod sidecar;
#[cfg(feature = "otel")]
mod telemetry;
mod token;
mod tokens_file;

use clap::{Parser, Subcommand};

/// mimalloc (feature `mimalloc`, on by default): glibc's malloc takes its slow path for the
/// proxied request's boxed upstream exchange (over the 1 KiB of its per-thread cache), about
/// 650 instructions per request through the BFF; mimalloc's per-thread free lists take ~100
/// (`benches/instructions-engine.sh`, BENCHMARKS.md).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// OAuth 2.0 / OpenID Connect access-token management.
#[derive(Debug, Parser)]
#[command(name = "tokenkeeper", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the backend-for-frontend host: `--config FILE` (TOML; `--check-config` validates it),
    /// or `--dev` for the whole development stack on 127.0.0.1 (`--dev --check` runs its
    /// journey headlessly and exits 0 or 1).
    Bff(bff::BffArgs),
    /// Run the egress token proxy: services call it on loopback (or a Unix socket) and it
    /// forwards with each route's token — `--config FILE` (TOML; `--check-config` validates it).
    Sidecar(sidecar::SidecarArgs),
    /// Run the client-credentials demo: a test authorization server, a protected API and
    /// concurrent workers calling it through the token middleware while tokens expire.
    Demo(demo::DemoArgs),
    /// Fetch a client-credentials token and print it (e.g. for
    /// `curl -H "Authorization: Bearer $(tokenkeeper token ...)"`), or — with
    /// `--tokens-file` — the access token of a `login`, refreshed when it is about to expire.
    Token(token::TokenArgs),
    /// Log a user in from the command line with the device flow (`--device`, RFC 8628): prints
    /// where to go and the code to enter, waits, and writes the tokens to `--tokens-file`
    /// (readable by its owner only).
    Login(login::LoginArgs),
    /// Run a development identity provider: discovery, JWKS, client credentials, authorization
    /// code with PKCE (logging in a fixed user), refresh, revocation, introspection.
    DevIdp(dev_idp::DevIdpArgs),
    /// DPoP keys and proofs: `keygen` writes a key (also usable for private_key_jwt with
    /// `token --client-key`), `proof` prints a proof for curl.
    #[command(subcommand)]
    Dpop(dpop::DpopCommand),
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

/// Whether stderr gets colour: only a terminal, and only without `NO_COLOR` (no-color.org).
fn colour() -> bool {
    use std::io::IsTerminal as _;
    std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    // Logs go to stderr: stdout is the command's output (`$(tokenkeeper token ...)`). A
    // one-shot command's failure is printed once, by `main`: the library's warning about the
    // same failed token request is left out (other warnings stay).
    let default_filter = match cli.command {
        Command::Token(_) => "warn,tokenkeeper::client_credentials::manager=error",
        _ => "warn",
    };
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    use tracing_subscriber::Layer as _;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter));
    let json = matches!(&cli.command, Command::Bff(args) if bff::json_logs(args));
    let logs = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let logs: Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync> =
        if json {
            // One object per line: `timestamp`, `level`, `target`, `message` and the event's own
            // fields beside them (BF-25); inside a request, `span` with its fields (`frontend`,
            // and for a proxied one `route`, `method`).
            logs.json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_filter(filter)
                .boxed()
        } else {
            logs.with_ansi(colour()).with_filter(filter).boxed()
        };
    // `[telemetry]` (BF-23): the exporter is made here, before the runtime (its HTTP client
    // blocks, on the exporter's own thread), and flushed when the command returns.
    #[cfg(feature = "otel")]
    let telemetry = match &cli.command {
        Command::Bff(args) => bff::telemetry(args)?,
        _ => None,
    };
    #[cfg_attr(not(feature = "otel"), allow(unused_mut))]
    let mut layers = vec![logs];
    #[cfg(feature = "otel")]
    let provider = match &telemetry {
        Some(settings) => {
            let (layer, provider) = telemetry::layer(settings)?;
            layers.push(layer);
            Some(provider)
        }
        None => None,
    };
    tracing_subscriber::registry().with(layers).init();
    let outcome = run_command(cli);
    #[cfg(feature = "otel")]
    if let Some(provider) = provider {
        telemetry::flush(provider);
    }
    outcome
}

fn run_command(cli: Cli) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.command {
        Command::Bff(args) => runtime.block_on(bff::run(args)),
        Command::Sidecar(args) => runtime.block_on(sidecar::run(args)),
        Command::Demo(args) => runtime.block_on(demo::run(args)).map(|report| {
            println!("{report}");
        }),
        Command::Token(args) => runtime.block_on(token::run(args)).map(|out| {
            println!("{out}");
        }),
        Command::Login(args) => runtime.block_on(login::run(args)),
        Command::Dpop(command) => dpop::run(command).map(|out| {
            println!("{out}");
        }),
        Command::DevIdp(args) => runtime.block_on(async {
            let (server, banner) = dev_idp::start(&args).await?;
            // Written whole, and a closed stdout (a reader that took the first line and left)
            // does not stop the server.
            use std::io::Write as _;
            let mut stdout = std::io::stdout().lock();
            let _ = writeln!(stdout, "{banner}").and_then(|()| stdout.flush());
            drop(stdout);
            tokio::signal::ctrl_c().await?;
            drop(server);
            Ok(())
        }),
    }
}
