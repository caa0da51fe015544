//! Every indicatif setup, and the only way the run writes while it downloads.
//!
//! The bar is drawn on stderr only when stderr is a terminal and `-v` is off. `-v` lines go to
//! stdout (stderr with `--json`, so stdout stays one JSON object); notes always go to stderr. Both
//! pass through the bar so that they never tear it.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// The download progress: a bar on stderr, or nothing. Cheap to clone (the Ctrl-C handler holds one).
#[derive(Debug, Clone)]
pub(crate) struct Progress {
    bar: Option<ProgressBar>,
    lines_to_stderr: bool,
}

impl Progress {
    /// The progress of `len` downloads. `verbose` hides the bar; `json` sends `-v` lines to stderr.
    pub(crate) fn new(len: usize, verbose: bool, json: bool) -> Self {
        let bar = (!verbose && std::io::stderr().is_terminal()).then(|| download_bar(len as u64));
        Self {
            bar,
            lines_to_stderr: json,
        }
    }

    /// One more download finished.
    pub(crate) fn inc(&self) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
        }
    }

    /// Prints a `-v` result line.
    pub(crate) fn line(&self, line: &str) {
        self.print(line, self.lines_to_stderr);
    }

    /// Prints a diagnostic on stderr.
    pub(crate) fn note(&self, line: &str) {
        self.print(line, true);
    }

    fn print(&self, line: &str, to_stderr: bool) {
        let write = || {
            // A closed stdout (`flags -v | head`) must not kill the run: the counters still decide
            // the exit status, so write errors are ignored.
            if to_stderr {
                let _ = writeln!(std::io::stderr().lock(), "{line}");
            } else {
                let _ = writeln!(std::io::stdout().lock(), "{line}");
            }
        };
        match &self.bar {
            Some(bar) => bar.suspend(write),
            None => write(),
        }
    }

    /// Removes the bar before the final report.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// The download bar: `⠋ [00:00:01] ████████░░░░ 120/194 flags (95/s, ETA 1s)`.
fn download_bar(len: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} flags ({rate}, ETA {eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .with_key(
        "rate",
        |state: &ProgressState, out: &mut dyn std::fmt::Write| {
            let _ = write!(out, "{:.0}/s", state.per_sec());
        },
    )
    .progress_chars("█▉▊▋▌▍▎▏ ");
    let bar =
        ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr()).with_style(style);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}
