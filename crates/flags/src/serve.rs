//! `flags serve`: the test server from the command line.

use std::process::ExitCode;

/// Options of `flags serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {}

/// Runs `flags serve` and returns the exit status.
pub(crate) fn main(_args: ServeArgs) -> ExitCode {
    ExitCode::SUCCESS
}
