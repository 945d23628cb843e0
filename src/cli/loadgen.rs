//! `release-verdict loadgen`: runs the library's traffic generator
//! (`release_verdict::loadgen`, whose options are the command's flags) and
//! prints its report.

use std::process::ExitCode;

use release_verdict::loadgen::{run, Options};

/// The `loadgen` command: the report on stdout, or why it could not run.
pub fn main(options: Options) -> ExitCode {
    let run = tokio::runtime::Runtime::new().map(|rt| rt.block_on(run(options)));
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
