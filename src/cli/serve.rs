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
    #[cfg(feature = "mimalloc")]
    give_back_freed_memory();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    #[cfg(feature = "mimalloc")]
    runtime.on_thread_park(collect_when_idle);
    let runtime = runtime.build()?;
    runtime.block_on(async {
        let _guard = telemetry::init(&config.telemetry)?;
        let server = Server::bind(config).await?;
        reload_on_sighup(server.reloader());
        server.run(shutdown_signal()).await?;
        Ok(())
    })
}

/// mimalloc hands memory freed to its arenas back to the system once it
/// has been free for `purge_delay` (1 s), but only when some thread next
/// frees a page: a daemon idle after a burst (a flood of 16 MiB gRPC
/// messages refused) kept 150 MiB it no longer used, in some runs for as
/// long as it stayed idle. A thread that asks every second gives it back
/// within about two, and the delay still spares reuse within a burst.
#[cfg(feature = "mimalloc")]
#[allow(unsafe_code)]
fn give_back_freed_memory() {
    let spawned = std::thread::Builder::new()
        .name("give-back".into())
        .spawn(|| loop {
            std::thread::sleep(std::time::Duration::from_secs(1));
            // SAFETY: mi_collect takes no arguments to get wrong: it frees
            // this thread's unused pages and purges the arenas' ranges
            // whose delay has passed, under mimalloc's own locks.
            unsafe { libmimalloc_sys::mi_collect(false) };
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "freed memory is given back only as the allocator runs");
    }
}

/// A worker going idle frees its own unused pages, at most once a second:
/// pages a thread's heap keeps go back to the arenas only when that thread
/// collects, and an idle worker never would.
#[cfg(feature = "mimalloc")]
#[allow(unsafe_code)]
fn collect_when_idle() {
    use std::cell::Cell;
    use std::time::Instant;
    thread_local!(static LAST: Cell<Option<Instant>> = const { Cell::new(None) });
    let now = Instant::now();
    if LAST
        .get()
        .is_some_and(|last| now.duration_since(last).as_secs() < 1)
    {
        return;
    }
    LAST.set(Some(now));
    // SAFETY: as in give_back_freed_memory.
    unsafe { libmimalloc_sys::mi_collect(false) };
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
