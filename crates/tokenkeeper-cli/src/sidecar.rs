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
    let config = load(path)?;
    let env = |name: &str| std::env::var(name).ok();
    let ops_listen = match &config.ops {
        Some(ops) => Some(
            tokenkeeper_sidecar::config::parse_listen("ops.listen", &ops.listen)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        ),
        None => None,
    };
    if ops_listen.is_some() {
        // Before the engine is built, so that its counters record here.
        tokenkeeper_proxy::ops::install_prometheus().map_err(anyhow::Error::msg)?;
    }
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
    let handler = sidecar.handler();
    let ops = match &ops_listen {
        Some(listen) => {
            let bound = tokenkeeper_proxy::server::Bound::bind_to(listen, 1)
                .with_context(|| format!("cannot listen on {listen} (ops.listen)"))?;
            let ops_options = tokenkeeper_proxy::server::ServerOptions {
                workers: 1,
                ..Default::default()
            };
            let addr = shown(bound.listen());
            let ops = tokenkeeper_proxy::ops::Ops::new(handler.readiness());
            Some((bound.serve(Arc::new(ops), &ops_options)?, addr))
        }
        None => None,
    };
    // SIGHUP before the banner: a SIGHUP sent once it is out never meets the default action.
    let hangup = crate::reload::hangup();
    crate::bff::print(&format!(
        "tokenkeeper sidecar on {} ({} routes, {} workers{})",
        shown(bound.listen()),
        config.routes.len(),
        options.workers,
        ops.as_ref()
            .map(|(_, addr)| format!(", operations on {addr}"))
            .unwrap_or_default()
    ));
    let server = bound.serve(Arc::new(handler.clone()), &options)?;
    let watched = path.clone();
    let reloads = tokio::spawn(crate::reload::watch(path.clone(), hangup, move || {
        reload(&watched, &sidecar, &handler)
    }));
    crate::bff::shutdown_signal().await;
    tracing::info!("shutting down: in-flight requests finish");
    reloads.abort();
    server.shutdown();
    server.stopped().await;
    if let Some((ops, _)) = ops {
        ops.shutdown();
        ops.stopped().await;
    }
    Ok(())
}

fn shown(listen: &tokenkeeper_proxy::server::Listen) -> String {
    match listen {
        tokenkeeper_proxy::server::Listen::Tcp(addr) => addr.to_string(),
        other => other.to_string(),
    }
}

fn load(path: &std::path::Path) -> anyhow::Result<tokenkeeper_sidecar::config::SidecarConfig> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    tokenkeeper_sidecar::config::SidecarConfig::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// Reloads the configuration (on SIGHUP and when the file changes: [`crate::reload::watch`]):
/// a configuration that does not build is refused — logged with its key, counted — and the
/// running one stays.
fn reload(
    path: &std::path::Path,
    running: &tokenkeeper_sidecar::Sidecar,
    handler: &tokenkeeper_sidecar::SidecarHandler,
) {
    let env = |name: &str| std::env::var(name).ok();
    let outcome = load(path).and_then(|config| {
        let next = tokenkeeper_sidecar::Sidecar::build(&config, &env)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        next.replace(handler, running).map_err(anyhow::Error::msg)
    });
    match outcome {
        Ok(()) => {
            tracing::warn!(file = %path.display(), "configuration reloaded");
            metrics::counter!("tokenkeeper_sidecar_config_reloads_total", "outcome" => "applied")
                .increment(1);
        }
        Err(error) => {
            tracing::error!(%error, "configuration refused; the running one stays");
            metrics::counter!("tokenkeeper_sidecar_config_reloads_total", "outcome" => "refused")
                .increment(1);
        }
    }
}
