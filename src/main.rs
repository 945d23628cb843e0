//! The `release-verdict` command line: `serve` runs the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use release_verdict::config::Config;
use release_verdict::server::Server;
use release_verdict::telemetry;

/// Exit code for a configuration that cannot be used.
const EXIT_BAD_CONFIG: u8 = 78;

#[derive(Parser)]
#[command(
    name = "release-verdict",
    version,
    about = "Is the release OK? Canary-vs-baseline verdicts from OpenTelemetry."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: OTLP in on gRPC and HTTP, verdicts out.
    Serve {
        /// Configuration file (TOML); missing keys take their defaults.
        #[arg(long, short, default_value = "config.toml")]
        config: PathBuf,
        /// Overrides `server.grpc_listen` (OTLP/gRPC).
        #[arg(long)]
        grpc_listen: Option<std::net::SocketAddr>,
        /// Overrides `server.http_listen` (OTLP/HTTP, API, metrics).
        #[arg(long)]
        http_listen: Option<std::net::SocketAddr>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            grpc_listen,
            http_listen,
        } => {
            let mut config = match Config::load(&config) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("release-verdict: {}: {e}", config.display());
                    return ExitCode::from(EXIT_BAD_CONFIG);
                }
            };
            if let Some(addr) = grpc_listen {
                config.server.grpc_listen = addr;
            }
            if let Some(addr) = http_listen {
                config.server.http_listen = addr;
            }
            match serve(config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("release-verdict: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let _guard = telemetry::init(&config.telemetry)?;
        let server = Server::bind(config).await?;
        server.run(shutdown_signal()).await?;
        Ok(())
    })
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
