//! `flags`: the Fluent Python flags downloader (chapter 20), in Rust: the command line over
//! the download engine, this package's library [`flags_engine`].
//!
//! `flags [CC...]` downloads flag images; `flags serve` runs the test server; `flags bench`
//! measures every mode. This file is the glue: parse ([`cli`]), convert into the engine's
//! [`Plan`], run ([`flags_engine::run`]), and turn the outcome into an exit status (2 for
//! usage errors, 1 for a run that could not be carried out, otherwise the summary's). The
//! crate's README says where the engine ends and the command line begins.

mod bench;
mod cli;
mod serve;

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use flags_engine::{Cancel, EXIT_INTERRUPTED, Plan, exit_between_saves};

use crate::cli::{BenchArgs, Cli, Command, UsageError};

fn main() -> ExitCode {
    // In a worker process of `--mode processes` this serves downloads and never returns.
    concurrent_futures::process_worker_main();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Serve(args)) => serve::main(args),
        Some(Command::Bench(args)) => bench_main(args),
        None => match Plan::try_from(cli.download) {
            Ok(plan) => download(&plan).unwrap_or_else(|error| {
                eprintln!("flags: {error:#}");
                ExitCode::FAILURE
            }),
            Err(error) => usage_error(&error, &cli::usage()),
        },
    }
}

/// `flags bench`: the probe of one measured run, or a whole bench.
fn bench_main(args: BenchArgs) -> ExitCode {
    if !args.probe.is_empty() {
        return bench::probe(&args.probe);
    }
    match bench::Plan::try_from(args) {
        Ok(plan) => bench::run(&plan).unwrap_or_else(|error| {
            eprintln!("flags bench: {error:#}");
            ExitCode::FAILURE
        }),
        Err(error) => usage_error(&error, &cli::bench_usage()),
    }
}

/// Prints `*** Usage error: …` and the usage line; exit status 2.
fn usage_error(error: &UsageError, usage: &str) -> ExitCode {
    eprintln!("*** Usage error: {error}\n{usage}");
    ExitCode::from(2)
}

/// Downloads as `plan` says (the reports are the engine's) and returns the exit status.
fn download(plan: &Plan) -> anyhow::Result<ExitCode> {
    if let Err(error) = cli::prepare_dest(&plan.dest) {
        return Ok(usage_error(&error, &cli::usage()));
    }
    let cancel = Cancel::new();
    ctrlc::set_handler({
        let cancel = Arc::clone(&cancel);
        move || {
            if cancel.is_cancelled() {
                // A second Ctrl-C does not wait for the requests in flight; it only waits for
                // a save in progress (a short write), so no temporary file is left behind.
                eprintln!("*** Interrupted again: exiting now");
                exit_between_saves(EXIT_INTERRUPTED.into());
            }
            cancel.cancel();
        }
    })
    .context("cannot install the Ctrl-C handler")?;
    Ok(flags_engine::run(plan, &cancel)?.exit_code())
}
