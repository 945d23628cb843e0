//! `release-verdict ledger export`: the ledger's events as Parquet or JSON
//! lines, to a file or standard output. Exits 0 written, 64 bad arguments,
//! 66 no ledger file, 78 bad configuration, 1 a read or write failed.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use release_verdict::config::LedgerConfig;
use release_verdict::ledger::event::parse_time;
use release_verdict::ledger::export::{export, ExportError, Format};
use release_verdict::model::UnixNanos;
use release_verdict::server::postgres_options;

use crate::{load, EXIT_BAD_CONFIG, EXIT_NO_INPUT, EXIT_USAGE};

/// The ledger's commands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Write the ledger's events as Parquet (for DuckDB, BigQuery, a
    /// warehouse) or JSON lines. Runs beside a live daemon.
    Export(ExportOptions),
}

#[derive(Debug, clap::Args)]
pub struct ExportOptions {
    /// Configuration file whose [ledger] path is read (as for serve).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// The ledger itself (a file, or a PostgreSQL URL whose password is in
    /// RELEASE_VERDICT_LEDGER_PASSWORD), instead of the configuration's.
    #[arg(long)]
    ledger: Option<String>,
    #[arg(long, value_enum)]
    format: Format,
    /// Events at or after this time: RFC 3339, or an age such as "7d".
    #[arg(long)]
    since: Option<String>,
    /// Events before this time: RFC 3339, or an age such as "1h".
    #[arg(long)]
    until: Option<String>,
    /// The file to write; standard output by default.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub fn main(command: Command) -> ExitCode {
    let Command::Export(o) = command;
    let (path, postgres) = match o.ledger {
        // A PostgreSQL password then comes from the environment.
        Some(path) if o.config.is_none() => (path, postgres_options(&LedgerConfig::default())),
        ledger => match load(&o.config) {
            Ok(c) => (
                ledger.unwrap_or_else(|| c.ledger.location().to_string()),
                postgres_options(&c.ledger),
            ),
            Err(code) => return code,
        },
    };
    let postgres = match postgres {
        Ok(options) => options,
        Err(e) => {
            eprintln!("release-verdict ledger export: {e}");
            return ExitCode::from(EXIT_BAD_CONFIG);
        }
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as UnixNanos);
    let (since, until) = match (time(&o.since, now), time(&o.until, now)) {
        (Ok(s), Ok(u)) => (s, u),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("release-verdict ledger export: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let written = match &o.output {
        None => export(&path, &postgres, since, until, o.format, std::io::stdout()),
        Some(file) => match std::fs::File::create(file) {
            Ok(f) => {
                let result = export(&path, &postgres, since, until, o.format, f);
                if result.is_err() {
                    let _ = std::fs::remove_file(file);
                }
                result
            }
            Err(e) => Err(ExportError::Io(e)),
        },
    };
    match written {
        Ok(n) => {
            let to = o
                .output
                .as_ref()
                .map_or("standard output".into(), |f| f.display().to_string());
            eprintln!("release-verdict: exported {n} events from {path} to {to}");
            let _ = std::io::stdout().flush();
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("release-verdict ledger export: {e}");
            ExitCode::from(match e {
                ExportError::Missing(_) | ExportError::InMemory => EXIT_NO_INPUT,
                ExportError::TooNew { .. } => EXIT_BAD_CONFIG,
                _ => 1,
            })
        }
    }
}

/// RFC 3339, or an age before `now` ("7d", "90m").
fn time(value: &Option<String>, now: UnixNanos) -> Result<Option<UnixNanos>, String> {
    let Some(s) = value else {
        return Ok(None);
    };
    if let Ok(age) = humantime::parse_duration(s) {
        return Ok(Some(now.saturating_sub(age.as_nanos() as UnixNanos)));
    }
    parse_time(s)
        .map(Some)
        .map_err(|e| format!("{e}; or give an age such as 7d"))
}
