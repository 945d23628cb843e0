//! `release-verdict simulate`: the judge's evaluation suite on simulated
//! canaries (the library's `sim`), one table row per case.

use std::path::PathBuf;
use std::process::ExitCode;

use release_verdict::sim;

use crate::load;

/// Which configuration, how many releases, which seed and cases.
#[derive(Debug, clap::Args)]
pub struct Args {
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
}

/// The `simulate` command: prints the table.
pub fn main(args: Args) -> ExitCode {
    let config = match load(&args.config) {
        Ok(c) => c,
        Err(code) => return code,
    };
    println!("{}", sim::Summary::header());
    for (k, scenario) in sim::Scenario::suite().iter().enumerate() {
        if args
            .case
            .as_ref()
            .is_some_and(|c| !scenario.name.contains(c.as_str()))
        {
            continue;
        }
        let summary = sim::summarize(
            scenario,
            args.releases,
            args.seed + k as u64 * 1_000_000,
            &config,
        );
        println!("{}", summary.row());
    }
    ExitCode::SUCCESS
}
