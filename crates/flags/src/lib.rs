//! The download engine of `flags`, the Fluent Python flags downloader (chapter 20).
//!
//! The `flags` binary of this package is a thin command line over this library, in ripgrep's
//! shape (the library is named apart from the binary so that both get documented): it parses
//! its arguments with clap, converts them into a [`Plan`], calls [`run`](fn@run) and turns the
//! [`Summary`] (or the [`Error`]) into an exit status. Nothing here knows about clap or the
//! binary's modules; `flags serve` and `flags bench` live in the binary too, `bench` reading
//! back the [`JsonReport`] and [`TraceLine`]s a run writes.
//!
//! - [`Plan`], [`Mode`], [`NameBy`], [`Server`]: what a run is asked to do.
//! - [`run`](fn@run): a run as the command makes it (built-in server, reports, progress,
//!   trace).
//! - The four modes share one download path (the GET with retries, the classification of the
//!   answer, the atomic save) and differ only in scheduling: a loop, our
//!   `ThreadPoolExecutor`, tokio tasks, or our `ProcessPoolExecutor` (whose worker processes
//!   need `concurrent_futures::process_worker_main()` at the top of `main`).
//! - [`Record`] and [`Outcome`]: what one download yields; [`Tally`] and [`Summary`]: what a
//!   run counts; [`JsonReport`] and [`TraceLine`]: what it writes for programs to read.
//! - [`Cancel`]: the token that Ctrl-C or SIGTERM cancels, with the [`Stop`] that says
//!   which; [`exit_between_saves`] for a second one.
//! - [`countries`]: the code lists and the expansion of `CC...` arguments.
//!
//! # Examples
//!
//! Two flags from the built-in test server, on two threads:
//!
//! ```
//! use std::time::Duration;
//!
//! use flags_engine::{Cancel, Mode, NameBy, Plan, Server};
//!
//! let dest = tempfile::tempdir()?;
//! let codes = vec!["BR".to_owned(), "CN".to_owned()];
//! let plan = Plan {
//!     concurrency: Mode::Threads.concurrency(30, codes.len()),
//!     codes,
//!     server: Server::Builtin,
//!     mode: Mode::Threads,
//!     dest: dest.path().to_owned(),
//!     timeout: Duration::from_secs(10),
//!     retries: 0,
//!     json: false,
//!     verbose: true,
//!     name_by: NameBy::Code,
//!     trace: None,
//!     cluster: None,
//! };
//! let summary = flags_engine::run(&plan, &Cancel::new())?;
//! assert_eq!(summary.tally.downloaded, 2);
//! assert!(dest.path().join("BR.gif").is_file());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

#![deny(missing_docs)]
// Output goes through `progress` or a locked handle whose errors are ignored: `println!`
// and `eprintln!` panic on a closed stream (issue 17).
#![deny(clippy::print_stdout, clippy::print_stderr)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

pub mod book;
pub mod countries;
mod download;
mod error;
mod get;
#[cfg(test)]
mod layering;
mod plan;
mod progress;
mod report;
mod run;
mod trace;

pub use crate::download::{Cancel, exit_between_saves};
pub use crate::download::{WorkerPlan, serve_worker};
pub use crate::error::Error;
pub use crate::get::{
    FAILED, FAILED_PART, GetPlan, GetReport, GetSummary, GetTally, JOURNAL, ListSource, run_get,
};
pub use crate::plan::{Cluster, MAX_CONCURRENT_REQ, Mode, NameBy, Plan, Server};
pub use crate::report::{
    DownloadStatus, EXIT_INTERRUPTED, ErrorDetail, JsonReport, Outcome, Record, Stop, Summary,
    Tally,
};
pub use crate::run::run;
pub use crate::trace::{BadTraceLine, TraceLine, parse_trace, write_trace};
