//! The `release-verdict` command line: `serve` runs the daemon; `replay`,
//! `simulate`, `gate`, `loadgen` and `event` drive or query it; `ledger
//! export` writes the ledger's events for other tools.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use release_verdict::config::Config;
use release_verdict::server::Server;
use release_verdict::{sim, telemetry};

mod event_cmd;
mod gate;
mod ledger_cmd;

/// Exit code for a configuration that cannot be used.
const EXIT_BAD_CONFIG: u8 = 78;
/// Exit code for an input file that cannot be opened.
const EXIT_NO_INPUT: u8 = 66;

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
        /// Without it, ./config.toml if there is one, else the defaults.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Overrides `server.grpc_listen` (OTLP/gRPC).
        #[arg(long)]
        grpc_listen: Option<std::net::SocketAddr>,
        /// Overrides `server.http_listen` (OTLP/HTTP, API, metrics).
        #[arg(long)]
        http_listen: Option<std::net::SocketAddr>,
    },
    /// Judge recorded telemetry: OTLP/JSON lines (the Collector's file
    /// exporter format) in, one verdict object per line out whenever a
    /// release's verdict changes. Time comes from the telemetry.
    Replay {
        /// The file to read; `-` for standard input.
        file: PathBuf,
        /// Configuration file (as for serve).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Print every release's verdict at every tick, not only changes.
        #[arg(long)]
        every_tick: bool,
    },
    /// Run the judge's evaluation suite on simulated canaries and print a table.
    Simulate {
        /// Configuration whose [judge] and [checks] are evaluated (as for serve).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Simulated releases per case.
        #[arg(long, default_value_t = 200)]
        releases: usize,
        /// First seed; case k uses seeds from seed + k * 1_000_000.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Only the cases whose name contains this.
        #[arg(long)]
        case: Option<String>,
    },
    /// Wait until a release is green or red, for a CI step: polls the
    /// daemon's JSON API, prints the verdict's reason and exits 0 green,
    /// 1 red, 2 undecided at the timeout, 3 unreachable or unknown release,
    /// 4 ambiguous id.
    #[command(after_help = gate::EXIT_CODES_HELP)]
    Gate {
        /// The daemon's HTTP address (the OTLP/HTTP port, 4318 by default):
        /// http:// or https://, with an optional path prefix.
        #[arg(long, env = "RELEASE_VERDICT_SERVER")]
        server: String,
        /// The release to wait on (its `deployment.id`).
        #[arg(long)]
        deployment_id: String,
        /// Narrows the lookup when the id is tracked in several services.
        #[arg(long)]
        service: Option<String>,
        /// Narrows the lookup when the id is tracked in several environments.
        #[arg(long)]
        environment: Option<String>,
        /// Give up after this long, e.g. "10m" or "90s".
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
        /// Time between polls.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
        interval: std::time::Duration,
        /// A read token, when the daemon asks for one ([auth] read_tokens_file).
        #[arg(long, env = "RELEASE_VERDICT_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// CA certificates (PEM) to trust for an https:// server with a
        /// private CA ([server.tls]).
        #[arg(long, env = "RELEASE_VERDICT_CA_FILE")]
        ca_file: Option<PathBuf>,
    },
    /// Send realistic OTLP span traffic: services with a stable deployment
    /// (sent first, so it is the baseline) and a canary each, optionally with
    /// a regression in the canaries. Reports what the daemon accepted.
    Loadgen(release_verdict::loadgen::Options),
    /// Post one event to the release ledger from a pipeline or controller
    /// (deploy_started, promoted, rolled_back, commit, incident_started…).
    /// Exits 0 recorded (or already recorded by its --event-id),
    /// 3 unreachable or failed, 64 refused as bad input.
    Event(event_cmd::Options),
    /// The release ledger: `ledger export` writes its events as Parquet or
    /// JSON lines.
    Ledger {
        #[command(subcommand)]
        command: ledger_cmd::Command,
    },
}

/// Exit code for a command line that cannot be used (sysexits EX_USAGE),
/// kept apart from gate's 2 ("undecided").
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Command::Serve {
            config,
            grpc_listen,
            http_listen,
        } => {
            let mut config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
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
        Command::Replay {
            file,
            config,
            every_tick,
        } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let input: Box<dyn std::io::BufRead> = if file.as_os_str() == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                match std::fs::File::open(&file) {
                    Ok(f) => Box::new(std::io::BufReader::new(f)),
                    Err(e) => {
                        eprintln!("release-verdict: {}: {e}", file.display());
                        return ExitCode::from(EXIT_NO_INPUT);
                    }
                }
            };
            let out = std::io::BufWriter::new(std::io::stdout().lock());
            match release_verdict::replay::replay(config, input, out, every_tick) {
                Ok(s) => {
                    if let Some(p) = &s.first_problem {
                        eprintln!(
                            "release-verdict: {} of {} lines skipped or partly refused; first: {p}",
                            s.skipped, s.lines
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("release-verdict: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Simulate {
            config,
            releases,
            seed,
            case,
        } => {
            let config = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            println!("{}", sim::Summary::header());
            for (k, scenario) in sim::Scenario::suite().iter().enumerate() {
                if case
                    .as_ref()
                    .is_some_and(|c| !scenario.name.contains(c.as_str()))
                {
                    continue;
                }
                let summary =
                    sim::summarize(scenario, releases, seed + k as u64 * 1_000_000, &config);
                println!("{}", summary.row());
            }
            ExitCode::SUCCESS
        }
        Command::Gate {
            server,
            deployment_id,
            service,
            environment,
            timeout,
            interval,
            token,
            ca_file,
        } => {
            let url = gate::verdict_url(
                &server,
                &deployment_id,
                service.as_deref(),
                environment.as_deref(),
            );
            match url {
                Ok(url) => ExitCode::from(gate::main(gate::Options {
                    url,
                    deployment_id,
                    timeout,
                    interval,
                    token,
                    ca_file,
                })),
                Err(e) => {
                    eprintln!("release-verdict gate: {e}");
                    ExitCode::from(gate::exit::USAGE)
                }
            }
        }
        Command::Event(options) => ExitCode::from(event_cmd::main(&options)),
        Command::Ledger { command } => ledger_cmd::main(command),
        Command::Loadgen(options) => {
            let run = tokio::runtime::Runtime::new()
                .map(|rt| rt.block_on(release_verdict::loadgen::run(options)));
            match run {
                Ok(Ok(report)) => {
                    println!("{}", report.summary());
                    ExitCode::SUCCESS
                }
                Ok(Err(e)) => {
                    eprintln!("release-verdict loadgen: {e}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("release-verdict loadgen: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// The configuration file read when none is named.
const DEFAULT_CONFIG: &str = "config.toml";

/// Loads the configuration, or says why not and gives the exit code. A
/// file named with --config must be there; without it, ./config.toml is
/// read if present, else the built-in defaults are used (said once).
fn load(path: &Option<PathBuf>) -> Result<Config, ExitCode> {
    let path = match path {
        Some(p) => p.clone(),
        None if std::path::Path::new(DEFAULT_CONFIG).is_file() => PathBuf::from(DEFAULT_CONFIG),
        None => {
            eprintln!("release-verdict: no --config and no ./{DEFAULT_CONFIG}: using the built-in defaults");
            return Ok(Config::default());
        }
    };
    Config::load(&path).map_err(|e| {
        eprintln!("release-verdict: {}: {e}", path.display());
        ExitCode::from(EXIT_BAD_CONFIG)
    })
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

/// SIGHUP reads the TLS files again.
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
