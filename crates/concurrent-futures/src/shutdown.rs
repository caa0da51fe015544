//! [`ShutdownOptions`] and [`ShutdownReport`]: how a pool stops, said at the call site,
//! and what it left behind.

use std::time::Duration;

/// How [`shutdown_with`](crate::ThreadPoolExecutor::shutdown_with) stops a pool: Python's
/// `shutdown(wait, cancel_futures)` with names at the call site, and a deadline.
///
/// The default is Python's: wait, do not cancel, no deadline.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use concurrent_futures::{ShutdownOptions, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::new();
/// let report = pool.shutdown_with(
///     ShutdownOptions::new()
///         .cancel_futures(true)
///         .timeout(Duration::from_secs(5)),
/// );
/// assert!(report.finished());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "options do nothing until passed to `shutdown_with`"]
pub struct ShutdownOptions {
    pub(crate) wait: bool,
    pub(crate) cancel_futures: bool,
    pub(crate) timeout: Option<Duration>,
}

impl ShutdownOptions {
    /// Wait for the pool, cancel nothing, no deadline: `shutdown(wait=True)`.
    pub const fn new() -> Self {
        Self {
            wait: true,
            cancel_futures: false,
            timeout: None,
        }
    }

    /// Whether to wait for the running and (unless cancelled) queued tasks (default
    /// true). Without waiting, the call returns at once and the pool finishes its work
    /// in the background.
    pub const fn wait(mut self, wait: bool) -> Self {
        self.wait = wait;
        self
    }

    /// Whether to cancel the queued tasks at once, and ask the running cancellable ones
    /// to stop (default false): Python's `cancel_futures=True`.
    pub const fn cancel_futures(mut self, cancel: bool) -> Self {
        self.cancel_futures = cancel;
        self
    }

    /// Waits at most `timeout`. When it passes, the queued tasks are cancelled, running
    /// cancellable tasks are asked to stop, a process pool kills the workers still
    /// running, and a thread pool leaves its busy threads to end on their own (a thread
    /// cannot be stopped from outside). Implies waiting.
    pub const fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self.wait = true;
        self
    }
}

impl Default for ShutdownOptions {
    fn default() -> Self {
        Self::new()
    }
}

/// What a shutdown left unfinished: returned by
/// [`shutdown_with`](crate::ThreadPoolExecutor::shutdown_with) and `shutdown_timeout`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    pub(crate) cancelled: usize,
    pub(crate) still_running: usize,
    pub(crate) killed: usize,
    pub(crate) timed_out: bool,
}

impl ShutdownReport {
    /// True when the pool stopped completely: every task ended, nothing was left behind.
    pub fn finished(&self) -> bool {
        !self.timed_out && self.still_running == 0
    }

    /// True when the deadline passed before the pool finished.
    pub fn timed_out(&self) -> bool {
        self.timed_out
    }

    /// Queued tasks this shutdown cancelled (with `cancel_futures`, or at the deadline).
    pub fn cancelled(&self) -> usize {
        self.cancelled
    }

    /// Thread-pool tasks still running when the call returned: their threads were left
    /// to end on their own (their futures complete when they do).
    pub fn still_running(&self) -> usize {
        self.still_running
    }

    /// Process-pool tasks whose workers were killed at the deadline; their futures
    /// failed with [`WorkerErrorKind::KilledByPool`](crate::WorkerErrorKind::KilledByPool).
    pub fn killed(&self) -> usize {
        self.killed
    }
}
