//! `tokenkeeper sidecar --config FILE`: the egress token proxy (see `tokenkeeper-sidecar`).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context as _;

/// `tokenkeeper sidecar` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct SidecarArgs {
    /// The configuration file (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Check the configuration and exit (0: it can start).
    #[arg(long)]
    check_config: bool,
}

pub(crate) async fn run(args: SidecarArgs) -> anyhow::Result<()> {
    let path = &args.config;
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let config = tokenkeeper_sidecar::config::SidecarConfig::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let env = |name: &str| std::env::var(name).ok();
    let sidecar = tokenkeeper_sidecar::Sidecar::build(&config, &env)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    if args.check_config {
        crate::bff::print(&format!("{}: configuration OK", path.display()));
        return Ok(());
    }
    let options = tokenkeeper_proxy::server::ServerOptions {
        workers: sidecar.workers(),
        ..Default::default()
    };
    let bound = tokenkeeper_proxy::server::Bound::bind_to(sidecar.listen(), options.workers)
        .with_context(|| format!("cannot listen on {}", sidecar.listen()))?;
    let listen = match bound.listen() {
        tokenkeeper_proxy::server::Listen::Tcp(addr) => addr.to_string(),
        other => other.to_string(),
    };
    crate::bff::print(&format!(
        "tokenkeeper sidecar on {listen} ({} routes, {} workers)",
        config.routes.len(),
        options.workers
    ));
    let server = bound.serve(Arc::new(sidecar.handler()), &options)?;
    crate::bff::shutdown_signal().await;
    tracing::info!("shutting down: in-flight requests finish");
    server.shutdown();
    server.stopped().await;
    Ok(())
}
