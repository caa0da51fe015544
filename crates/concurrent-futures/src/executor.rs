//! [`Executor`]: what both pools offer, so code can take "any executor" as Python code
//! takes `concurrent.futures.Executor`.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::{MapError, SubmitError};
use crate::future::FutureHandle;
use crate::map::{Map, MapOptions};
use crate::process_pool::ProcessPoolExecutor;
use crate::shutdown::{ShutdownOptions, ShutdownReport};
use crate::stats::PoolStats;
use crate::thread_pool::ThreadPoolExecutor;

/// The operations both pools share, Python's `Executor`: `submit`, `map` and
/// `shutdown` of a plain function with a serde argument and result, the common ground of
/// threads and processes (a closure cannot cross to another process).
///
/// The methods are generic (the trait is not object-safe): take `&impl Executor` or
/// `E: Executor`. Each one does what the pool's own method of the same name does; on a
/// [`ThreadPoolExecutor`] the function simply runs on a worker thread and nothing is
/// encoded. Called on a concrete pool, `pool.submit(..)` is the pool's own method (a
/// thread pool's takes a closure); in generic code it is this one.
///
/// # Examples
///
/// The same function on either pool:
///
/// ```
/// use concurrent_futures::{Executor, ProcessPoolExecutor, ThreadPoolExecutor};
///
/// fn collatz_steps(mut n: u64) -> u32 {
///     let mut steps = 0;
///     while n != 1 {
///         n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
///         steps += 1;
///     }
///     steps
/// }
///
/// /// Works on any executor, as a Python function taking an `Executor` does.
/// fn longest(pool: &impl Executor) -> anyhow::Result<u32> {
///     let first = pool.submit(collatz_steps, 27)?.result()?;
///     let rest = pool.map(collatz_steps, 1..1000)?.try_collect_vec()?;
///     Ok(rest.into_iter().max().unwrap_or(0).max(first))
/// }
///
/// fn main() -> anyhow::Result<()> {
///     concurrent_futures::process_worker_main(); // a worker never gets past this line
///     let threads = ThreadPoolExecutor::builder().max_workers(2).build()?;
///     let processes = ProcessPoolExecutor::builder().max_workers(2).build()?;
///     assert_eq!(longest(&threads)?, 178);
///     assert_eq!(longest(&processes)?, 178);
///     threads.shutdown(true, false);
///     Executor::shutdown(&processes, true, false);
///     Ok(())
/// }
/// ```
pub trait Executor {
    /// Schedules `f(arg)` and returns its handle, Python's `submit(fn, arg)`.
    ///
    /// # Errors
    ///
    /// [`SubmitError`] when the executor is shut down or broken; it gives `arg` back.
    fn submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<FutureHandle<R>, SubmitError<A>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static;

    /// `f` over `items`: ordered, lazy and bounded, Python's `map(fn, items)`.
    ///
    /// # Errors
    ///
    /// [`MapError`] when the executor refuses the work.
    fn map<I, A, R>(&self, f: fn(A) -> R, items: I) -> Result<Map<'_, I::IntoIter, R>, MapError>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_with(f, items, MapOptions::new())
    }

    /// [`map`](Self::map) with options: window, chunk size, timeout.
    ///
    /// # Errors
    ///
    /// As for [`map`](Self::map), and [`MapError::InvalidOption`] for a zero window or
    /// chunk size.
    fn map_with<I, A, R>(
        &self,
        f: fn(A) -> R,
        items: I,
        options: MapOptions,
    ) -> Result<Map<'_, I::IntoIter, R>, MapError>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static;

    /// Stops the executor, Python's `shutdown(wait, cancel_futures)`. Idempotent.
    fn shutdown(&self, wait: bool, cancel_futures: bool);

    /// `shutdown` with named options and a deadline; see
    /// [`ThreadPoolExecutor::shutdown_with`] and [`ProcessPoolExecutor::shutdown_with`].
    fn shutdown_with(&self, options: ShutdownOptions) -> ShutdownReport;

    /// What the executor is doing now; see [`PoolStats`].
    fn stats(&self) -> PoolStats;

    /// How many workers the executor runs at most.
    fn max_workers(&self) -> usize;
}

impl Executor for ThreadPoolExecutor {
    fn submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<FutureHandle<R>, SubmitError<A>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.submit_made(arg, |arg| move || f(arg))
    }

    fn map_with<I, A, R>(
        &self,
        f: fn(A) -> R,
        items: I,
        options: MapOptions,
    ) -> Result<Map<'_, I::IntoIter, R>, MapError>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        ThreadPoolExecutor::map_with(self, f, items, options)
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        ThreadPoolExecutor::shutdown(self, wait, cancel_futures);
    }

    fn shutdown_with(&self, options: ShutdownOptions) -> ShutdownReport {
        ThreadPoolExecutor::shutdown_with(self, options)
    }

    fn stats(&self) -> PoolStats {
        ThreadPoolExecutor::stats(self)
    }

    fn max_workers(&self) -> usize {
        ThreadPoolExecutor::max_workers(self)
    }
}

impl Executor for ProcessPoolExecutor {
    fn submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<FutureHandle<R>, SubmitError<A>>
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        ProcessPoolExecutor::submit(self, f, arg)
    }

    fn map_with<I, A, R>(
        &self,
        f: fn(A) -> R,
        items: I,
        options: MapOptions,
    ) -> Result<Map<'_, I::IntoIter, R>, MapError>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        ProcessPoolExecutor::map_with(self, f, items, options)
    }

    fn shutdown(&self, wait: bool, cancel_futures: bool) {
        ProcessPoolExecutor::shutdown(self, wait, cancel_futures);
    }

    fn shutdown_with(&self, options: ShutdownOptions) -> ShutdownReport {
        ProcessPoolExecutor::shutdown_with(self, options)
    }

    fn stats(&self) -> PoolStats {
        ProcessPoolExecutor::stats(self)
    }

    fn max_workers(&self) -> usize {
        ProcessPoolExecutor::max_workers(self)
    }
}
