//! Every indicatif setup, and the only way the run writes while it downloads.
//!
//! The bar is drawn on stderr only when stderr is a terminal and `-v` is off. `-v` lines go to
//! stdout (stderr with `--json`, so stdout stays one JSON object); notes always go to stderr. Both
//! pass through the bar so that they never tear it.

use std::io::{IsTerminal, Write};
use std::thread::JoinHandle;
use std::time::Duration;

use concurrent_futures::{CancelToken, PoolStats};
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

    /// The progress of a list of unknown length (`flags get`): a count and a rate.
    pub(crate) fn stream(verbose: bool, json: bool) -> Self {
        let bar = (!verbose && std::io::stderr().is_terminal()).then(url_bar);
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

    /// Shows, next to the count, what the pool is doing (`12 running, 150 queued`), read
    /// from its `stats()` while the returned guard lives: the pool counts, so nothing wraps
    /// the futures. The count itself stays the results loop's, which also sees a
    /// cancelled download as not done.
    pub(crate) fn watch_pool(
        &self,
        stats: impl Fn() -> PoolStats + Send + 'static,
    ) -> Option<PoolWatch> {
        let bar = self.bar.clone()?;
        let stop = CancelToken::new();
        let stopped = stop.clone();
        let thread = std::thread::Builder::new()
            .name("flags-progress".to_owned())
            .spawn(move || {
                while !stopped.wait_timeout(POOL_WATCH_INTERVAL) {
                    let now = stats();
                    bar.set_message(format!("{} running, {} queued", now.running, now.queued));
                }
            })
            .ok()?;
        Some(PoolWatch {
            stop,
            thread: Some(thread),
        })
    }

    /// Removes the bar before the final report.
    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

/// How often the bar reads the pool's stats: as often as it redraws.
const POOL_WATCH_INTERVAL: Duration = Duration::from_millis(100);

/// Keeps [`Progress::watch_pool`]'s reader running; stops it when dropped.
#[derive(Debug)]
pub(crate) struct PoolWatch {
    stop: CancelToken,
    thread: Option<JoinHandle<()>>,
}

impl Drop for PoolWatch {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The download bar: `⠋ [00:00:01] ████████░░░░ 120/194 flags (95/s, ETA 1s) 30 running, 44
/// queued` (the last part in the pool modes).
fn download_bar(len: u64) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {pos}/{len} flags ({rate}, ETA {eta}) {msg}",
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

/// `flags get`'s bar: `⠋ [00:00:01] 120000 URLs (95000/s)`.
fn url_bar() -> ProgressBar {
    let style = ProgressStyle::with_template("{spinner} [{elapsed_precise}] {pos} URLs ({rate})")
        .unwrap_or_else(|_| ProgressStyle::default_spinner())
        .with_key(
            "rate",
            |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                let _ = write!(out, "{:.0}/s", state.per_sec());
            },
        );
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr()).with_style(style);
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issue_13_the_bar_shows_the_pools_own_counts() {
        let bar = ProgressBar::with_draw_target(Some(10), ProgressDrawTarget::hidden());
        let progress = Progress {
            bar: Some(bar.clone()),
            lines_to_stderr: false,
        };
        let pool = concurrent_futures::ThreadPoolExecutor::builder()
            .max_workers(1)
            .build()
            .unwrap();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let (started, running) = std::sync::mpsc::channel();
        let held = pool
            .submit(move || {
                started.send(()).unwrap();
                gate.recv().ok();
            })
            .unwrap();
        running.recv().unwrap();
        let queued: Vec<_> = (0..2).map(|_| pool.submit(|| ()).unwrap()).collect();
        let watch = progress.watch_pool({
            let pool = pool.clone();
            move || pool.stats()
        });
        assert!(watch.is_some());
        // Read by the watcher within a redraw or two; the bound only guards against a hang.
        let seen = CancelToken::new();
        for _ in 0..600 {
            if bar.message() == "1 running, 2 queued" {
                seen.cancel();
                break;
            }
            seen.wait_timeout(Duration::from_millis(50));
        }
        assert_eq!(bar.message(), "1 running, 2 queued");
        drop(watch);
        release.send(()).unwrap();
        held.result().unwrap();
        for h in queued {
            h.result().unwrap();
        }
        assert!(progress.watch_pool(PoolStats::default).is_some());
        let no_bar = Progress {
            bar: None,
            lines_to_stderr: false,
        };
        assert!(
            no_bar.watch_pool(PoolStats::default).is_none(),
            "no bar, no reader"
        );
    }
}
