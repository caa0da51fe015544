//! [`run`]: one download run, as the `flags` command makes it: the reports around the downloads.

use std::io::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::download::{self, Cancel, Target};
use crate::error::Error;
use crate::plan::{Plan, Server};
use crate::progress::Progress;
use crate::report::{self, JsonReport, Record, Summary, Tally};
use crate::trace;

/// Downloads as `plan` says, printing what the `flags` command prints, and returns what was
/// counted.
///
/// Starts the built-in server for [`Server::Builtin`] (and stops it at the end), prints the
/// flags2 initial report on stdout (not with [`Plan::json`]), downloads in [`Plan::mode`]
/// with a progress bar on stderr (only when stderr is a terminal and [`Plan::verbose`] is
/// off; `verbose` prints a line per download instead), writes [`Plan::trace`], and prints the
/// final report or the `--json` object on stdout. `plan.dest` must exist.
///
/// `cancel` stops the run: codes not started are not attempted, and the downloads in flight
/// finish (within [`Plan::timeout`]), as after Ctrl-C. A failed download is counted in the
/// [`Summary`], not returned as an error; a closed stdout is ignored.
///
/// # Errors
///
/// [`Error`] when the run cannot be carried out: the built-in server, an HTTP client, a pool
/// or a runtime cannot start, or the trace cannot be written.
pub fn run(plan: &Plan, cancel: &Arc<Cancel>) -> Result<Summary, Error> {
    // Keeps the built-in server running until the run ends.
    let (label, base_url, _builtin) = match &plan.server {
        Server::Builtin => {
            let server = slow_server::start(slow_server::ServerConfig::new())
                .map_err(Error::BuiltinServer)?;
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
        cancel: Arc::clone(cancel),
    };
    let mut tally = Tally::default();
    let start = Instant::now();
    download::run(plan, target, &mut |record| {
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
        save_trace(path, &tally.records, start)?;
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
        serde_json::to_string(&json).map_err(Error::Json)? + "\n"
    } else {
        report::final_report(&tally, total, elapsed, interrupted)
    };
    // A closed stdout does not change the outcome: the counters decide the exit status.
    let _ = std::io::stdout().lock().write_all(out.as_bytes());
    Ok(Summary { tally, interrupted })
}

/// Writes the trace of `records` to `path`.
fn save_trace(path: &Path, records: &[Record], start: Instant) -> Result<(), Error> {
    let file = std::fs::File::create(path).map_err(|source| Error::TraceCreate {
        path: path.to_owned(),
        source,
    })?;
    let mut file = std::io::BufWriter::new(file);
    trace::write_trace(&mut file, records, start)
        .and_then(|()| file.flush())
        .map_err(|source| Error::TraceWrite {
            path: path.to_owned(),
            source,
        })
}
