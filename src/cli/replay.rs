//! `release-verdict replay`: opens the recorded file (or standard input)
//! and prints verdict lines. Only the command line lives here: the engine
//! is the library's `release_verdict::replay`, which tests/replay.rs also
//! drives directly.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::{load, EXIT_NO_INPUT};

/// What to replay, and how.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The file to read; `-` for standard input.
    file: PathBuf,
    /// Configuration file (as for serve).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Print every release's verdict at every tick, not only changes.
    #[arg(long)]
    every_tick: bool,
}

/// The `replay` command: verdict lines on stdout, problems on stderr.
pub fn main(args: Args) -> ExitCode {
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let file = args.file;
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
    match release_verdict::replay::replay(config, input, out, args.every_tick) {
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
