//! `dwcp-control`: the control process binary. Reads the config file, applies command-line
//! overrides, serves until SIGINT/SIGTERM. Prints `listening on <addr>` once bound.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use dwcp_control::Config;

/// DWCP control process.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// TOML config file (see docs/api.md).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Override `listen`.
    #[arg(long)]
    listen: Option<SocketAddr>,
    /// Override `state_dir`.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Override `shm_path`.
    #[arg(long)]
    shm_path: Option<PathBuf>,
    /// Override `node_id`.
    #[arg(long)]
    node_id: Option<String>,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut cfg = match &args.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if let Some(v) = args.listen {
        cfg.listen = v;
    }
    if let Some(v) = args.state_dir {
        cfg.state_dir = v;
    }
    if let Some(v) = args.shm_path {
        cfg.shm_path = v;
    }
    if let Some(v) = args.node_id {
        cfg.node_id = v;
    }
    // Tokio worker threads: 2 by default (the appliance's control process shares the host
    // with pinned dataplane workers); DWCP_CONTROL_THREADS overrides it (load tests).
    let threads = std::env::var("DWCP_CONTROL_THREADS")
        .ok()
        .filter(|v| !v.is_empty())
        .map(|v| v.parse::<usize>().context("DWCP_CONTROL_THREADS"))
        .transpose()?
        .unwrap_or(2)
        .max(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    rt.block_on(async move {
        let shutdown = async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        };
        dwcp_control::server::run(
            cfg,
            |addr| {
                println!("listening on {addr}");
                let _ = std::io::stdout().flush();
            },
            shutdown,
        )
        .await
        .context("control process")
    })
}
