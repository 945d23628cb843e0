//! `release-verdict serve`: runs the daemon until SIGINT or SIGTERM, the
//! listen addresses optionally overridden; SIGHUP reads the TLS files and
//! the token files again.

use std::path::PathBuf;
use std::process::ExitCode;

use release_verdict::config::Config;
use release_verdict::server::Server;
use release_verdict::telemetry;

use crate::{load, EXIT_BAD_CONFIG};

/// Where the configuration comes from, and the listen overrides.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Configuration file (TOML); missing keys take their defaults.
    /// Without it, ./config.toml if there is one, else the defaults.
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Overrides `server.grpc_listen` (OTLP/gRPC).
    #[arg(long)]
    grpc_listen: Option<std::net::SocketAddr>,
    /// Overrides `server.http_listen` (OTLP/HTTP, API, metrics).
    #[arg(long)]
    http_listen: Option<std::net::SocketAddr>,
    /// Overrides `ledger.advertise_url`: where the other replicas reach
    /// this one (a pod's address from the environment, say).
    #[arg(long, env = "RELEASE_VERDICT_ADVERTISE_URL")]
    advertise_url: Option<String>,
}

/// The `serve` command: the daemon's exit code.
pub fn main(args: Args) -> ExitCode {
    let mut config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(addr) = args.grpc_listen {
        config.server.grpc_listen = addr;
    }
    if let Some(addr) = args.http_listen {
        config.server.http_listen = addr;
    }
    if let Some(url) = args.advertise_url {
        config.ledger.advertise_url = url;
        if let Err(e) = config.validate() {
            eprintln!("release-verdict: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    }
    match serve(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("release-verdict: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let _guard = telemetry::init(&config.telemetry)?;
        let server = Server::bind(config).await?;
        reload_on_sighup(server.reloader());
        server.run(shutdown_signal()).await?;
        Ok(())
    })
}

/// SIGHUP reads the TLS files and the token files again.
fn reload_on_sighup(reloader: release_verdict::server::Reloader) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            reloader.reload();
        }
    });
    #[cfg(not(unix))]
    let _ = reloader;
}

/// SIGINT or SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("SIGINT received"),
        _ = term => tracing::info!("SIGTERM received"),
    }
}
