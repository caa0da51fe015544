//! Python's [`concurrent.futures`](https://docs.python.org/3/library/concurrent.futures.html)
//! made Rust-native: pools of workers that run your functions and hand back
//! [`FutureHandle`]s, with `submit`, an ordered lazy `map`, `as_completed`, `wait` and
//! `shutdown`.
//!
//! # Submit and result
//!
//! ```
//! use concurrent_futures::ThreadPoolExecutor;
//!
//! let pool = ThreadPoolExecutor::builder().max_workers(4).build()?;
//! let handle = pool.submit(|| (1..=10).sum::<u32>())?;
//! assert_eq!(handle.result()?, 55);
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! # Map: ordered, lazy, bounded
//!
//! Results come back in input order. Only a window of items is in flight, so the input
//! may be endless; a failing item is an `Err` at its place and iteration goes on.
//!
//! ```
//! use concurrent_futures::ThreadPoolExecutor;
//!
//! let pool = ThreadPoolExecutor::new();
//! let firsts: Vec<u64> = pool
//!     .map(|n: u64| n * n, 1..) // an endless input
//!     ?
//!     .take(4)
//!     .collect::<Result<_, _>>()?;
//! assert_eq!(firsts, [1, 4, 9, 16]);
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! # As completed
//!
//! ```
//! use concurrent_futures::{ThreadPoolExecutor, as_completed};
//!
//! let pool = ThreadPoolExecutor::new();
//! let handles: Vec<_> = ["br", "cn", "in"]
//!     .into_iter()
//!     .map(|cc| pool.submit(move || cc.to_uppercase()))
//!     .collect::<Result<_, _>>()?;
//! let mut codes: Vec<String> = Vec::new();
//! for handle in as_completed(handles, None) {
//!     codes.push(handle?.result()?);
//! }
//! codes.sort();
//! assert_eq!(codes, ["BR", "CN", "IN"]);
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! # Wait
//!
//! ```
//! use std::time::Duration;
//! use concurrent_futures::{ReturnWhen, ThreadPoolExecutor, wait};
//!
//! let pool = ThreadPoolExecutor::new();
//! let handles: Vec<_> = (0..3).map(|i| pool.submit(move || i)).collect::<Result<_, _>>()?;
//! let sets = wait(&handles, Some(Duration::from_secs(10)), ReturnWhen::AllCompleted);
//! assert_eq!(sets.done.len(), 3);
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! # Shutdown and cancellation
//!
//! `shutdown(wait, cancel_futures)` refuses later submits; with `cancel_futures` it
//! cancels everything still queued, and unlike Python (gh-92001) those cancellations are
//! seen at once by `wait` and `as_completed`. Dropping a pool is `shutdown(true, false)`.
//!
//! ```
//! use concurrent_futures::{FutureError, ThreadPoolExecutor};
//!
//! let pool = ThreadPoolExecutor::builder().max_workers(1).build()?;
//! let (started_tx, started) = std::sync::mpsc::channel();
//! let (tx, rx) = std::sync::mpsc::channel::<()>();
//! let running = pool.submit(move || {
//!     started_tx.send(()).unwrap();
//!     rx.recv().is_ok()
//! })?;
//! started.recv()?; // the one worker is busy now
//! let queued = pool.submit(|| "never runs")?;
//! assert!(queued.cancel());
//! tx.send(())?;
//! pool.shutdown(true, true);
//! assert!(running.result()?);
//! assert!(matches!(queued.result(), Err(FutureError::Cancelled)));
//! assert!(pool.submit(|| ()).is_err());
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! # Panics
//!
//! A task's panic is caught: the worker survives and the handle reports it, with the
//! panic's message and, for thread-pool tasks, its location ([`PanicError::location`]).
//!
//! ```
//! use concurrent_futures::{FutureError, ThreadPoolExecutor};
//!
//! let pool = ThreadPoolExecutor::new();
//! let handle = pool.submit(|| -> u32 { panic!("boom") })?;
//! match handle.result() {
//!     Err(FutureError::Panicked(p)) => assert_eq!(p.message(), "boom"),
//!     other => panic!("expected a panic, got {other:?}"),
//! }
//! assert_eq!(pool.submit(|| 1)?.result()?, 1); // the pool still works
//! # Ok::<(), anyhow::Error>(())
//! ```
//!
//! # Processes
//!
//! [`ProcessPoolExecutor`] runs plain functions (`fn(A) -> R`, serde argument and
//! result) in worker processes, forks of this executable started once more as a fork
//! server (or each started again, [`StartMethod::Spawn`]): call
//! [`process_worker_main`] first thing in `main`. A worker that dies fails only the task
//! it was running (with its exit status or signal) and is replaced.
//!
//! ```
//! use concurrent_futures::{FutureError, MapOptions, ProcessPoolExecutor};
//!
//! fn collatz_steps(mut n: u64) -> u32 {
//!     let mut steps = 0;
//!     while n != 1 {
//!         n = if n % 2 == 0 { n / 2 } else { 3 * n + 1 };
//!         steps += 1;
//!     }
//!     steps
//! }
//!
//! fn crash(code: i32) -> u32 {
//!     std::process::exit(code)
//! }
//!
//! fn main() -> anyhow::Result<()> {
//!     concurrent_futures::process_worker_main(); // a worker never gets past this line
//!     let pool = ProcessPoolExecutor::builder().max_workers(2).build()?;
//!     assert_eq!(pool.submit(collatz_steps, 27)?.result()?, 111);
//!     let options = MapOptions::new().chunksize(100);
//!     let longest = pool.map_with(collatz_steps, 1..1000, options)?.map(|r| r.unwrap_or(0)).max();
//!     assert_eq!(longest, Some(178));
//!     match pool.submit(crash, 3)?.result() {
//!         Err(FutureError::WorkerFailed(why)) => assert_eq!(why.exit_code(), Some(3)),
//!         other => panic!("expected a dead worker, got {other:?}"),
//!     }
//!     assert_eq!(pool.submit(collatz_steps, 6)?.result()?, 8); // a new worker took over
//!     Ok(())
//! }
//! ```
//!
//! # From Python to Rust
//!
//! | Python | Rust |
//! |---|---|
//! | `ThreadPoolExecutor(max_workers=4, thread_name_prefix="w", initializer=f)` | `ThreadPoolExecutor::builder().max_workers(4).thread_name_prefix("w").initializer(f).build()?` |
//! | `with ThreadPoolExecutor() as ex:` | `let ex = ThreadPoolExecutor::new();` (drop = `shutdown(wait=True)`) |
//! | `ex.submit(fn, *args)` | `ex.submit(move \|\| f(args))?` |
//! | `ex.map(fn, it, timeout=t, buffersize=n)` | `ex.map_with(f, it, MapOptions::new().timeout(t).window(n))?` |
//! | `list(ex.map(fn, it))` | `ex.map(f, it)?.try_collect_vec()?` ([`Map::try_collect_vec`]) |
//! | (none) | `ex.map_unordered(f, it, MapOptions::new())?` |
//! | `ex.shutdown(wait=True, cancel_futures=False)` | `ex.shutdown(true, false)`, or `ex.shutdown_with(ShutdownOptions::new().cancel_futures(false))` ([`ShutdownOptions`]) |
//! | (none: `shutdown` blocks for ever on a stuck task) | `ex.shutdown_timeout(d)` → [`ShutdownReport`] (cancelled, still running, killed); `ThreadPoolBuilder::drop_timeout(d)` |
//! | `threading.Event` polled by a task | `ex.submit_cancellable(\|token\| ..)?`; `f.cancel()` sets the [`CancelToken`]; `token.wait_timeout(d)`, `token.cancelled().await` |
//! | (none: everything a task uses must outlive it) | `ex.scope(\|s\| { s.submit(\|\| words.len())?; .. })` ([`Scope`]): tasks borrow, joined before `scope` returns |
//! | `ex._work_queue.qsize()` (private), tqdm around `as_completed` | `ex.stats()` ([`PoolStats`]: queued, running, completed, failed, cancelled, workers) |
//! | `ex2 = ex` (a reference) | `let ex2 = ex.clone();` (the last clone's drop shuts down) |
//! | `Future` | [`FutureHandle<T>`] |
//! | `f = Future()`, `f.set_result(v)`, `f.set_exception(e)`, `f.set_running_or_notify_cancel()` | `let (c, f) = FutureHandle::pending();`, `c.set_result(v)?`, `c.set_failure(e)?`, `c.set_running()` ([`Completer`]) |
//! | `InvalidStateError` | [`InvalidStateError`] (gives the refused value back) |
//! | `def run(ex: Executor): ex.submit(fn, arg); ex.map(fn, it)` | `fn run(ex: &impl Executor) { ex.submit(f, arg)?; ex.map(f, it)?; }` ([`Executor`], both pools) |
//! | `f.result()`, `f.result(timeout=t)` | `f.result()?`, `f.result_timeout(t)` |
//! | `f.exception()` | `f.exception()` |
//! | `f.result()` (does not consume) | `f.with_result(\|r\| ..)`, `f.try_with_result(\|r\| ..)` (also inside done-callbacks) |
//! | `f.cancel()`, `f.cancelled()`, `f.running()`, `f.done()` | `f.cancel()`, `f.is_cancelled()`, `f.is_running()`, `f.is_done()` |
//! | `f.add_done_callback(fn)` | `f.add_done_callback(\|f\| ..)` |
//! | `await asyncio.wrap_future(f)` | `f.await`; `f.cancel_on_drop().await` cancels a task not started when the await is given up |
//! | `for f in asyncio.as_completed(fs)` | `while let Some(f) = as_completed_stream(fs).next().await` ([`as_completed_stream`]) |
//! | `as_completed(fs, timeout=t)` | [`as_completed(fs, Some(t))`](as_completed()) |
//! | `wait(fs, timeout, return_when=FIRST_COMPLETED)` | [`wait(fs, timeout, ReturnWhen::FirstCompleted)`](wait()) |
//! | `wait(fs, return_when=FIRST_EXCEPTION)` where tasks return errors | [`wait_fallible(fs, None, ReturnWhen::FirstException)`](wait_fallible()): a task's `Err` counts as its exception |
//! | `CancelledError` | [`FutureError::Cancelled`] |
//! | `BrokenExecutor` | [`FutureError::BrokenPool`], [`SubmitError::Broken`] |
//! | `TimeoutError` | [`ResultTimeoutError::Timeout`], [`AsCompletedTimeout`], [`MapItemError::Timeout`] |
//! | `RuntimeError('cannot schedule new futures after shutdown')` | [`SubmitError::ShutDown`] |
//! | `ProcessPoolExecutor()` | [`ProcessPoolExecutor::new()`] (a build error becomes a broken pool) |
//! | `ProcessPoolExecutor(max_workers=2, initializer=f, initargs=(a,), max_tasks_per_child=n)` | `ProcessPoolExecutor::builder().max_workers(2).initializer(f, a).max_tasks_per_child(n).build()?` |
//! | `ProcessPoolExecutor(mp_context=get_context("spawn"))` | `ProcessPoolExecutor::builder().start_method(StartMethod::Spawn).build()?` (default: `ForkServer`) |
//! | `if __name__ == "__main__":` | [`process_worker_main()`](process_worker_main) first in `main` |
//! | a process pool in a pytest test | [`process_test_support!()`](process_test_support) once in the test file |
//! | `ProcessPoolExecutor(initializer=f)` | `ProcessPoolExecutor::builder().initializer_fn(f).build()?` |
//! | `pex.submit(fn, arg)` (fn picklable, module level) | `pex.submit(f, arg)?` with `f: fn(A) -> R`, serde `A`, `R` |
//! | `pex.map(fn, it, chunksize=n)` | `pex.map_with(f, it, MapOptions::new().chunksize(n))?` |
//! | `pex.terminate_workers()`, `pex.kill_workers()` | `pex.terminate_workers()`, `pex.kill_workers()` |
//! | `BrokenProcessPool` (every future, after a worker dies) | [`FutureError::WorkerFailed`] (only the dead worker's task, with [`WorkerError::exit_code`] or [`WorkerError::signal`]); [`FutureError::BrokenPool`] for a failed initializer ([`BrokenPoolKind::InitializerFailed`]) |

#![deny(missing_docs)]
#![warn(missing_debug_implementations, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod as_completed;
mod cancel;
mod error;
mod executor;
mod future;
mod map;
mod panic_site;
mod process_pool;
mod scope;
mod shutdown;
mod stats;
mod sync;
mod test_support;
mod thread_pool;
mod unwind;
mod wait;

pub use crate::as_completed::{AsCompleted, AsCompletedStream, as_completed, as_completed_stream};
pub use crate::cancel::{CancelToken, Cancelled};
pub use crate::error::{
    AsCompletedTimeout, BrokenPoolError, BrokenPoolKind, BuildError, Exclusive, ExecutorError,
    FutureError, MapError, MapItemError, PanicError, PanicLocation, ResultTimeoutError,
    SubmitError, TryResultError, WorkerError, WorkerErrorKind,
};
pub use crate::executor::Executor;
pub use crate::future::{AsHandle, CancelOnDrop, Completer, FutureHandle, InvalidStateError};
pub use crate::map::{Map, MapOptions, MapUnordered};
pub use crate::process_pool::{
    ProcessPoolBuilder, ProcessPoolExecutor, StartMethod, process_worker_main,
};
pub use crate::scope::Scope;
pub use crate::shutdown::{ShutdownOptions, ShutdownReport};
pub use crate::stats::PoolStats;
pub use crate::thread_pool::{InitResult, ThreadPoolBuilder, ThreadPoolExecutor};
pub use crate::wait::{DoneAndNotDone, ReturnWhen, wait, wait_fallible};
