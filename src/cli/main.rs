//! The `release-verdict` command line: `serve` runs the daemon; `replay`,
//! `simulate`, `gate`, `status`, `loadgen` and `event` drive or query it; `ledger
//! export` writes the ledger's events for other tools. This file parses the
//! command line and hands each command to its file beside it; all of them
//! work over the library's public face.

// The library forbids unsafe code; here one audited call asks the
// allocator to give memory back (`serve::give_back_freed_memory`).
#![deny(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use release_verdict::config::Config;

mod event;
mod exit;
mod gate;
mod ledger;
mod loadgen;
mod replay;
mod serve;
mod simulate;
mod status;

/// Exit code for a configuration that cannot be used.
pub(crate) const EXIT_BAD_CONFIG: u8 = 78;
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
    Serve(serve::Args),
    /// Judge recorded telemetry: OTLP/JSON lines (the Collector's file
    /// exporter format) in, one verdict object per line out whenever a
    /// release's verdict changes. Time comes from the telemetry.
    Replay(replay::Args),
    /// Run the judge's evaluation suite on simulated canaries and print a table.
    Simulate(simulate::Args),
    /// Wait until a release is green or red, for a CI step: polls the
    /// daemon's JSON API, prints the verdict's reason and exits 0 green,
    /// 1 red, 2 undecided at the timeout, 3 unreachable or unknown release,
    /// 4 ambiguous id.
    #[command(after_help = gate::EXIT_CODES_HELP)]
    Gate(gate::Args),
    /// What the daemon sees, for a person or a CI log: one line per release
    /// in flight, or one release's checks, endpoints, error kinds and
    /// exemplars; who sends what, attributed to a release or not, and why
    /// not (--senders, or when nothing is in flight). Exits 0 shown,
    /// 3 unreachable or unknown release, 4 ambiguous id, 64 bad --server.
    Status(status::Args),
    /// Send realistic OTLP span traffic: services with a stable deployment
    /// (sent first, so it is the baseline) and a canary each, optionally with
    /// a regression in the canaries. Reports what the daemon accepted.
    Loadgen(release_verdict::loadgen::Options),
    /// Post one event to the release ledger from a pipeline or controller
    /// (deploy_started, promoted, rolled_back, commit, incident_started…).
    /// Exits 0 recorded (or already recorded by its --event-id),
    /// 3 unreachable or failed, 64 refused as bad input.
    Event(event::Options),
    /// The release ledger: `ledger export` writes its events as Parquet or
    /// JSON lines.
    Ledger {
        #[command(subcommand)]
        command: ledger::Command,
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
        Command::Serve(args) => serve::main(args),
        Command::Replay(args) => replay::main(args),
        Command::Simulate(args) => simulate::main(args),
        Command::Gate(args) => gate::main(args),
        Command::Status(args) => status::main(args),
        Command::Event(options) => ExitCode::from(event::main(&options)),
        Command::Ledger { command } => ledger::main(command),
        Command::Loadgen(options) => loadgen::main(options),
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
