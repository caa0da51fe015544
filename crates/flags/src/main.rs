//! `flags`: the Fluent Python flags downloader (chapter 20), in Rust: the command line over
//! the download engine, this package's library [`flags_engine`].
//!
//! `flags [CC...]` downloads flag images; `flags serve` runs the test server; `flags bench`
//! measures every mode. This file is the glue: parse ([`cli`]), convert into the engine's
//! [`Plan`], run ([`flags_engine::run`]), and turn the outcome into an exit status (2 for
//! usage errors, 1 for a run that could not be carried out, otherwise the summary's). The
//! crate's README says where the engine ends and the command line begins.

#![deny(clippy::print_stdout, clippy::print_stderr)]

/// Writes one line on stderr, like `eprintln!`, but a stderr that is closed or full is
/// ignored: `eprintln!` panics then, which turned a usage error's status 2 into 101
/// (issue 17). A diagnostic that cannot be written must not change the exit status.
macro_rules! diag {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr().lock(), $($arg)*);
    }};
}

mod bench;
mod cli;
mod serve;
mod signals;

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser;
use flags_engine::{Cancel, GetPlan, ListSource, Plan};

use crate::cli::{BenchArgs, Cli, Command, GetArgs, OutputError, UsageError};

fn main() -> ExitCode {
    // In a worker process of `--mode processes` this serves downloads and never returns.
    concurrent_futures::process_worker_main();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Serve(args)) => serve::main(args),
        Some(Command::Bench(args)) => bench_main(args),
        Some(Command::Worker(args)) => worker_main(args),
        Some(Command::Get(args)) => get_main(args),
        None => match Plan::try_from(cli.download) {
            Ok(plan) => download(&plan).unwrap_or_else(|error| {
                diag!("flags: {error:#}");
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
            diag!("flags bench: {error:#}");
            ExitCode::FAILURE
        }),
        Err(error) => usage_error(&error, &cli::bench_usage()),
    }
}

/// `flags worker`: serves downloads until Ctrl-C or SIGTERM (exit status 130 or 143) or
/// until the broker stays away (1).
fn worker_main(args: cli::WorkerArgs) -> ExitCode {
    let plan = match flags_engine::WorkerPlan::try_from(args) {
        Ok(plan) => plan,
        Err(error) => return usage_error(&error, &cli::worker_usage()),
    };
    let stop = Cancel::new();
    if let Err(error) = signals::install(&stop) {
        diag!("flags worker: cannot take over Ctrl-C and SIGTERM: {error}");
        return ExitCode::FAILURE;
    }
    match flags_engine::serve_worker(&plan, &stop) {
        Ok(()) => stop.stopped().map_or(ExitCode::SUCCESS, |signal| {
            ExitCode::from(signal.exit_status())
        }),
        Err(error) => {
            diag!("flags worker: {:#}", anyhow::Error::from(error));
            ExitCode::FAILURE
        }
    }
}

/// `flags get`: validate, check the list and `--dest`, then download.
fn get_main(args: GetArgs) -> ExitCode {
    let plan = match GetPlan::try_from(args) {
        Ok(plan) => plan,
        Err(error) => return usage_error(&error, &cli::get_usage()),
    };
    if let ListSource::File(list) = &plan.source
        && let Err(error) = cli::prepare_list(list)
    {
        return usage_error(&error, &cli::get_usage());
    }
    let prepared = cli::prepare_dest(&plan.dest)
        .and_then(|()| plan.trace.as_deref().map_or(Ok(()), cli::prepare_trace));
    match prepared {
        Ok(()) => {}
        Err(OutputError::Usage(error)) => return usage_error(&error, &cli::get_usage()),
        Err(OutputError::Full(error)) => {
            diag!("flags get: {error:#}");
            return ExitCode::FAILURE;
        }
    }
    let run = || -> anyhow::Result<ExitCode> {
        let cancel = Cancel::new();
        signals::install(&cancel).context("cannot take over Ctrl-C and SIGTERM")?;
        Ok(flags_engine::run_get(&plan, &cancel)?.exit_code())
    };
    run().unwrap_or_else(|error| {
        diag!("flags get: {error:#}");
        ExitCode::FAILURE
    })
}

/// Prints `*** Usage error: …` and the usage line; exit status 2.
fn usage_error(error: &UsageError, usage: &str) -> ExitCode {
    diag!("*** Usage error: {error}\n{usage}");
    ExitCode::from(2)
}

/// Downloads as `plan` says (the reports are the engine's) and returns the exit status.
fn download(plan: &Plan) -> anyhow::Result<ExitCode> {
    // Before any download: a path that cannot be written is a usage error, a full file
    // system a run-time one.
    let prepared = cli::prepare_dest(&plan.dest)
        .and_then(|()| plan.trace.as_deref().map_or(Ok(()), cli::prepare_trace));
    match prepared {
        Ok(()) => {}
        Err(OutputError::Usage(error)) => return Ok(usage_error(&error, &cli::usage())),
        Err(OutputError::Full(error)) => return Err(error),
    }
    let cancel = Cancel::new();
    signals::install(&cancel).context("cannot take over Ctrl-C and SIGTERM")?;
    Ok(flags_engine::run(plan, &cancel)?.exit_code())
}
