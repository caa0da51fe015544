//! [`ThreadPoolBuilder`]: the options of a [`ThreadPoolExecutor`].

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::ThreadPoolExecutor;
use crate::error::BuildError;

/// A worker initializer: `Err(message)` (or a panic) breaks the pool.
pub(crate) type Initializer = Arc<dyn Fn() -> Result<(), String> + Send + Sync + 'static>;

/// What an initializer may return: `()` (it cannot fail) or `Result<(), E>` with an
/// error that can be shown (an `Err` breaks the pool, with the error's text).
pub trait InitResult {
    /// The outcome, with the error as text.
    ///
    /// # Errors
    ///
    /// The initializer's error, formatted.
    fn into_result(self) -> Result<(), String>;
}

impl InitResult for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display> InitResult for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// Numbers the pools built without a thread name prefix (`ThreadPoolExecutor-{n}`).
static UNNAMED_POOLS: AtomicUsize = AtomicUsize::new(0);

/// Python's default worker count, `min(32, CPUs + 4)`.
pub(crate) fn default_max_workers() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cpus + 4).min(32)
}

/// Builds a [`ThreadPoolExecutor`], as Python's constructor arguments do.
///
/// # Examples
///
/// ```
/// use concurrent_futures::ThreadPoolExecutor;
///
/// let pool = ThreadPoolExecutor::builder()
///     .max_workers(4)
///     .thread_name_prefix("downloader")
///     .initializer(|| {
///         // set up per-thread state here
///     })
///     .build()?;
/// let name = pool.submit(|| std::thread::current().name().map(str::to_owned))?.result()?;
/// assert_eq!(name.as_deref(), Some("downloader_0"));
/// # Ok::<(), anyhow::Error>(())
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct ThreadPoolBuilder {
    max_workers: Option<usize>,
    thread_name_prefix: Option<String>,
    initializer: Option<Initializer>,
    stack_size: Option<usize>,
    drop_timeout: Option<Duration>,
}

impl ThreadPoolBuilder {
    pub(crate) fn new() -> Self {
        Self {
            max_workers: None,
            thread_name_prefix: None,
            initializer: None,
            stack_size: None,
            drop_timeout: None,
        }
    }

    /// The most worker threads the pool starts (default `min(32, CPUs + 4)`). Zero is
    /// refused by [`build`](Self::build).
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// Names the worker threads `{prefix}_{i}` (default prefix `ThreadPoolExecutor-{n}`).
    pub fn thread_name_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.thread_name_prefix = Some(prefix.into());
        self
    }

    /// A function each worker thread runs once, before its first task: a plain `fn()`,
    /// a closure returning `()`, or one returning `Result<(), E>` for any error that
    /// can be shown ([`InitResult`]).
    ///
    /// If it returns `Err` (or panics), the pool is broken, as in Python: queued futures
    /// fail with [`FutureError::BrokenPool`](crate::FutureError::BrokenPool) of kind
    /// [`InitializerFailed`](crate::BrokenPoolKind::InitializerFailed) carrying the
    /// message, and later submits are refused.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// fn quiet() {}
    /// fn checked() -> std::io::Result<()> {
    ///     Ok(())
    /// }
    /// let _plain = ThreadPoolExecutor::builder().initializer(quiet).build()?;
    /// let _result = ThreadPoolExecutor::builder().initializer(checked).build()?;
    /// let _closure = ThreadPoolExecutor::builder()
    ///     .initializer(|| std::fs::metadata("/").map(drop))
    ///     .build()?;
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn initializer<F, R>(mut self, init: F) -> Self
    where
        F: Fn() -> R + Send + Sync + 'static,
        R: InitResult,
    {
        self.initializer = Some(Arc::new(move || init().into_result()));
        self
    }

    /// Bounds how long dropping the pool (its last clone) waits for running tasks:
    /// after `timeout`, as [`shutdown_timeout`](ThreadPoolExecutor::shutdown_timeout),
    /// the queued tasks are cancelled, cancellable ones asked to stop, and busy threads
    /// left to end on their own. Default: the drop waits for them, as Python's `with`
    /// block does.
    pub fn drop_timeout(mut self, timeout: Duration) -> Self {
        self.drop_timeout = Some(timeout);
        self
    }

    /// The stack size of each worker thread, in bytes (default: the platform's).
    pub fn stack_size(mut self, bytes: usize) -> Self {
        self.stack_size = Some(bytes);
        self
    }

    /// Builds the pool. No thread starts until the first `submit`.
    ///
    /// The first pool built in a process installs a panic hook that notes where each
    /// panic happens (for [`PanicError::location`](crate::PanicError::location)) and then
    /// calls the hook it replaced, so panics print as before. A hook the program sets
    /// later replaces it (and the locations) unless it calls the hook it takes.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] when `max_workers` is zero.
    pub fn build(self) -> Result<ThreadPoolExecutor, BuildError> {
        let max_workers = self.max_workers.unwrap_or_else(default_max_workers);
        if max_workers == 0 {
            return Err(BuildError::new("max_workers must be greater than 0"));
        }
        let prefix = self.thread_name_prefix.unwrap_or_else(|| {
            let n = UNNAMED_POOLS.fetch_add(1, Ordering::Relaxed);
            format!("ThreadPoolExecutor-{n}")
        });
        Ok(ThreadPoolExecutor::from_parts(
            max_workers,
            prefix,
            self.initializer,
            self.stack_size,
            self.drop_timeout,
        ))
    }
}

impl fmt::Debug for ThreadPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ThreadPoolBuilder")
            .field("max_workers", &self.max_workers)
            .field("thread_name_prefix", &self.thread_name_prefix)
            .field("initializer", &self.initializer.is_some())
            .field("stack_size", &self.stack_size)
            .field("drop_timeout", &self.drop_timeout)
            .finish()
    }
}
