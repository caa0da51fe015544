//! `flags`: the Fluent Python flags downloader (chapter 20), in Rust.
//!
//! `flags [CC...]` downloads flag images; `flags serve` runs the test server.
//! See the workspace README for the tour.

mod bench;
mod cli;
mod countries;
mod download;
mod plan;
mod progress;
mod report;
mod serve;
mod trace;

use std::io::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;

use crate::cli::{BenchArgs, Cli, Command, UsageError};
use crate::download::{Cancel, Target};
use crate::plan::{Plan, Server};
use crate::progress::Progress;
use crate::report::{JsonReport, Tally};

fn main() -> ExitCode {
    // In a worker process of `--mode processes` this serves downloads and never returns.
    concurrent_futures::process_worker_main();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Serve(args)) => serve::main(args),
        Some(Command::Bench(args)) => bench_main(args),
        None => match Plan::try_from(cli.download) {
            Ok(plan) => run(plan).unwrap_or_else(|error| {
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

/// Downloads as `plan` says, prints the reports and returns the exit status.
fn run(plan: Plan) -> anyhow::Result<ExitCode> {
    if let Err(error) = cli::prepare_dest(&plan.dest) {
        return Ok(usage_error(&error, &cli::usage()));
    }
    let cancel = Cancel::new();
    ctrlc::set_handler({
        let cancel = Arc::clone(&cancel);
        move || {
            if cancel.is_cancelled() {
                // A second Ctrl-C does not wait for the requests in flight; it only waits for
                // a save in progress (microseconds), so no temporary file is left behind.
                eprintln!("*** Interrupted again: exiting now");
                download::exit_between_saves(report::EXIT_INTERRUPTED.into());
            }
            cancel.cancel();
        }
    })
    .context("cannot install the Ctrl-C handler")?;

    // Keeps the built-in server running until the run ends.
    let (label, base_url, _builtin) = match &plan.server {
        Server::Builtin => {
            let server = slow_server::start(slow_server::ServerConfig::new())
                .context("cannot start the built-in server")?;
            ("BUILTIN", server.flags_url(), Some(server))
        }
        Server::Remote { label, base_url } => (*label, base_url.clone(), None),
    };
    if !plan.json {
        let header = report::initial_report(label, &base_url, &plan.codes, plan.concurrency);
        let _ = std::io::stdout().lock().write_all(header.as_bytes());
    }

    let progress = Progress::new(plan.codes.len(), plan.verbose, plan.json);
    cancel.on_cancel({
        let progress = progress.clone();
        move || progress.note("*** Interrupted: starting no more downloads")
    });
    let target = Target {
        base_url: base_url.clone(),
        dest: plan.dest.clone(),
        name_by: plan.name_by,
        retries: plan.retries,
        timeout: plan.timeout,
        cancel: Arc::clone(&cancel),
    };
    let mut tally = Tally::default();
    let start = Instant::now();
    download::run(&plan, target, &mut |record| {
        progress.inc();
        if plan.verbose {
            progress.line(&report::verbose_line(&record));
        }
        tally.add(record);
    })?;
    let elapsed = start.elapsed();
    cancel.wait_settled();
    progress.finish();

    if let Some(path) = &plan.trace {
        let mut file = std::io::BufWriter::new(
            std::fs::File::create(path)
                .with_context(|| format!("cannot create --trace {}", path.display()))?,
        );
        trace::write_trace(&mut file, &tally.records, start)
            .and_then(|()| file.flush())
            .with_context(|| format!("cannot write --trace {}", path.display()))?;
    }
    let interrupted = cancel.is_cancelled();
    let total = plan.codes.len();
    let out = if plan.json {
        let json = JsonReport::new(
            (label, &base_url),
            plan.mode,
            total,
            plan.concurrency,
            &tally,
            elapsed,
            interrupted,
        );
        serde_json::to_string(&json).context("cannot encode the JSON report")? + "\n"
    } else {
        report::final_report(&tally, total, elapsed, interrupted)
    };
    // A closed stdout does not change the outcome: the counters decide the exit status.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(report::exit_code(&tally, interrupted))
}
