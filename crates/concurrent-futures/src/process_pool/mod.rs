//! [`ProcessPoolExecutor`]: runs plain functions in worker processes, which are the
//! current executable, started again or forked from a fork server that is. Design notes:
//! `README.md` beside this file.

mod call;
mod fork_server;
mod image;
mod pipeline;
mod process;
mod sink;
mod supervisor;
mod sys;
mod wire;
mod worker;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde::Serialize;
use serde::de::DeserializeOwned;

use self::sink::{PromiseSink, decode_chunk, decode_one};
use self::supervisor::{Config, Inner, Refused};
use self::wire::Callee;
use crate::error::{
    BrokenPoolError, BrokenPoolKind, BuildError, FutureError, MapError, SubmitError, WorkerError,
    WorkerErrorKind,
};
use crate::future::{self, FutureHandle};
use crate::map::{Chunk, ChunkResults, ChunkSubmit, Map, MapOptions, MapUnordered};
use crate::panic_site;
use crate::shutdown::{ShutdownOptions, ShutdownReport};
use crate::stats::PoolStats;
use crate::thread_pool::InitResult;

/// The largest encoded argument (or chunk of arguments) a task may have.
const MAX_PAYLOAD: usize = 1 << 30;
/// How long a new worker may take to accept the handshake, unless the builder says.
const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// Turns this process into a process-pool worker if it was started as one, and
/// otherwise returns at once: the Rust form of Python's `if __name__ == "__main__":`
/// guard. Call it first thing in `main` of every program (and example, bench or
/// `harness = false` test) that builds a [`ProcessPoolExecutor`].
///
/// Workers are the program's own executable started again with a marker in the
/// environment (by default once, as a fork server that forks every worker); in such a
/// process this function serves tasks (or forks workers) until the pool closes the
/// pipe, then exits the process: it never returns there. Without the call, a worker
/// would run the program's `main` instead; a pool built there refuses to start
/// (`build` fails), and the parent pool reports itself broken with a hint.
///
/// # Examples
///
/// ```
/// use concurrent_futures::ProcessPoolExecutor;
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
///
/// fn main() -> anyhow::Result<()> {
///     concurrent_futures::process_worker_main(); // first thing in main
///     let pool = ProcessPoolExecutor::builder().max_workers(2).build()?;
///     assert_eq!(pool.submit(square, 12)?.result()?, 144);
///     Ok(())
/// }
/// ```
pub fn process_worker_main() {
    if worker::started_as_worker() && !worker::is_serving() {
        // Task panics are reported with their location, which only the hook sees.
        panic_site::install();
        let status = if fork_server::started_as_fork_server() {
            fork_server::serve()
        } else {
            worker::serve()
        };
        std::process::exit(status);
    }
}

/// A pool of worker processes that run plain functions and hand back
/// [`FutureHandle`]s: Python's `concurrent.futures.ProcessPoolExecutor`.
///
/// A task is a function pointer `fn(A) -> R` with a serde argument and result (use a
/// tuple for several arguments); closures that capture are refused at compile time,
/// since nothing captured can cross to another process. The handles are the same as
/// the thread pool's, so [`as_completed`](crate::as_completed()) and
/// [`wait`](crate::wait()) take handles of both pools together.
///
/// Failures stay where they happen, unlike Python's `BrokenProcessPool`: a panic is
/// that handle's [`FutureError::Panicked`]; a worker that dies (killed, aborts, exits)
/// fails only the task it was running, with [`FutureError::WorkerFailed`] carrying its
/// pid and exit status or signal ([`WorkerError`]), and a replacement takes the
/// remaining tasks; a result that cannot be encoded or decoded fails its task only.
/// [`FutureHandle::cancel`] on the task a worker runs kills and replaces that worker. Only a
/// failing initializer breaks the pool.
///
/// `main` must call [`process_worker_main`] first. Linux only (it reads `/proc`).
///
/// Dropping the pool is `shutdown(wait = true, cancel_futures = false)`: queued tasks
/// still run, and every worker process has been reaped when the drop returns.
///
/// # Examples
///
/// ```
/// use concurrent_futures::ProcessPoolExecutor;
///
/// fn is_prime(n: u64) -> bool {
///     n >= 2 && (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
/// }
///
/// fn main() -> anyhow::Result<()> {
///     concurrent_futures::process_worker_main();
///     let pool = ProcessPoolExecutor::builder().max_workers(2).build()?;
///     let handle = pool.submit(is_prime, 97)?;
///     assert!(handle.result()?);
///     let primes: Vec<bool> = pool.map(is_prime, [2, 4, 97])?.collect::<Result<_, _>>()?;
///     assert_eq!(primes, [true, false, true]);
///     Ok(())
/// }
/// ```
///
/// A closure that captures is not a task:
///
/// ```compile_fail,E0308
/// use concurrent_futures::ProcessPoolExecutor;
///
/// let pool = ProcessPoolExecutor::builder().build().unwrap();
/// let offset = 10u64;
/// let _ = pool.submit(move |x: u64| x + offset, 1); // error: cannot coerce to `fn`
/// ```
#[derive(Clone)]
pub struct ProcessPoolExecutor {
    inner: Arc<Inner>,
    /// Shared by the clones: the last one dropped shuts the pool down.
    _last_clone: Arc<ShutdownOnDrop>,
}

/// Shuts its pool down when dropped, that is, when the last clone of the pool is gone
/// (the pool's threads hold `Inner`, not this).
struct ShutdownOnDrop(Arc<Inner>);

impl Drop for ShutdownOnDrop {
    /// `shutdown(wait = true, cancel_futures = false)`.
    fn drop(&mut self) {
        self.0.shutdown(true, false);
    }
}

impl ProcessPoolExecutor {
    /// A pool with the default options (one worker per CPU, the fork server), like
    /// [`ThreadPoolExecutor::new`](crate::ThreadPoolExecutor::new) and Python's
    /// `ProcessPoolExecutor()`.
    ///
    /// Building cannot fail here: where [`build`](ProcessPoolBuilder::build) would
    /// return an error (this process is a worker whose `main` skipped
    /// [`process_worker_main`], or the executable cannot be identified), the pool is
    /// broken from the start and every submit is refused with
    /// [`SubmitError::Broken`] saying why, as Python reports
    /// at the first use.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ProcessPoolExecutor;
    ///
    /// fn square(x: u64) -> u64 {
    ///     x * x
    /// }
    ///
    /// fn main() -> anyhow::Result<()> {
    ///     concurrent_futures::process_worker_main();
    ///     let pool = ProcessPoolExecutor::new();
    ///     assert_eq!(pool.submit(square, 12)?.result()?, 144);
    ///     Ok(())
    /// }
    /// ```
    pub fn new() -> Self {
        Self::builder().build().unwrap_or_else(|error| {
            Self::from_inner(Inner::broken(
                Config {
                    max_workers: 1,
                    max_tasks_per_child: None,
                    start_method: StartMethod::default(),
                    hello: Vec::new(),
                    handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
                },
                BrokenPoolError::new(
                    BrokenPoolKind::StartFailed,
                    format!("the process pool could not be built: {error}"),
                ),
            ))
        })
    }

    fn from_inner(inner: Arc<Inner>) -> Self {
        Self {
            _last_clone: Arc::new(ShutdownOnDrop(Arc::clone(&inner))),
            inner,
        }
    }

    /// A builder for the pool's options.
    pub fn builder() -> ProcessPoolBuilder {
        ProcessPoolBuilder::new()
    }

    /// The most worker processes this pool runs at once.
    pub fn max_workers(&self) -> usize {
        self.inner.max_workers()
    }

    /// The process ids of the live workers (for monitoring and tests).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.inner.worker_pids()
    }

    /// Schedules `f(arg)` to run in a worker process and returns its handle, Python's
    /// `submit`. Workers start on demand, up to `max_workers`.
    ///
    /// An argument that cannot be encoded, or a function that is not in the
    /// executable's own code, gives a handle that already failed with
    /// [`FutureError::WorkerFailed`].
    ///
    /// # Errors
    ///
    /// [`SubmitError::ShutDown`] after [`shutdown`](Self::shutdown) (or
    /// `terminate_workers`/`kill_workers`), [`SubmitError::Broken`] once an
    /// initializer failed; both give the argument back.
    ///
    /// # Blocking
    ///
    /// Does not wait for the task. While fewer than `max_workers` workers run, a submit
    /// starts one (a process spawn: about a millisecond); the worker's handshake and
    /// initializer run in the background.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{FutureError, ProcessPoolExecutor};
    ///
    /// fn divide((a, b): (u32, u32)) -> u32 {
    ///     a / b
    /// }
    ///
    /// fn main() -> anyhow::Result<()> {
    ///     concurrent_futures::process_worker_main();
    ///     let pool = ProcessPoolExecutor::builder().max_workers(1).build()?;
    ///     assert_eq!(pool.submit(divide, (10, 2))?.result()?, 5);
    ///     match pool.submit(divide, (1, 0))?.result() {
    ///         Err(FutureError::Panicked(p)) => assert!(p.message().contains("divide by zero")),
    ///         other => panic!("expected a panic, got {other:?}"),
    ///     }
    ///     assert_eq!(pool.submit(divide, (9, 3))?.result()?, 3); // the worker lives on
    ///     Ok(())
    /// }
    /// ```
    pub fn submit<A, R>(&self, f: fn(A) -> R, arg: A) -> Result<FutureHandle<R>, SubmitError<A>>
    where
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        if let Some(refused) = self.inner.refusal() {
            return Err(refusal(refused, arg));
        }
        let (promise, handle) = future::pending::<R>();
        let prepared =
            call::one(f).and_then(|callee| Ok((callee, encode(&arg, size_of::<A>() + 8)?)));
        let (callee, payload) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                promise.complete(Err(error));
                return Ok(handle);
            }
        };
        let sink = Box::new(PromiseSink::new(
            promise,
            decode_one::<R>,
            self.inner.ended(),
        ));
        match self.inner.enqueue(callee, payload, sink) {
            Ok(()) => Ok(handle),
            Err(refused) => Err(refusal(refused, arg)),
        }
    }

    /// Runs `f` on every item in the worker processes and yields the results in input
    /// order, lazily, as [`ThreadPoolExecutor::map`](crate::ThreadPoolExecutor::map)
    /// does: a bounded window of chunks in flight, chunk sizes that adapt to the cost
    /// of a call (or a fixed [`MapOptions::chunksize`]), and a failing item (a panic)
    /// is an `Err` at its place while iteration goes on. A chunk is one message to one
    /// worker, so large chunks make tiny calls cheap. Dropping the iterator early
    /// cancels its chunks in flight; a chunk a worker is running is stopped for real
    /// (that worker is killed and replaced).
    ///
    /// # Blocking
    ///
    /// `map` submits the first window of chunks and returns; each `next()` blocks
    /// until the next result in input order is back.
    ///
    /// # Errors
    ///
    /// [`MapError::ShutDown`] or [`MapError::Broken`] when the pool refuses work.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ProcessPoolExecutor;
    ///
    /// fn cube(x: i64) -> i64 {
    ///     x * x * x
    /// }
    ///
    /// fn main() -> anyhow::Result<()> {
    ///     concurrent_futures::process_worker_main();
    ///     let pool = ProcessPoolExecutor::builder().max_workers(2).build()?;
    ///     let cubes: Vec<i64> = pool.map(cube, 1..=4)?.collect::<Result<_, _>>()?;
    ///     assert_eq!(cubes, [1, 8, 27, 64]);
    ///     Ok(())
    /// }
    /// ```
    pub fn map<I, A, R>(&self, f: fn(A) -> R, items: I) -> Result<Map<'_, I::IntoIter, R>, MapError>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        self.map_with(f, items, MapOptions::new())
    }

    /// [`map`](Self::map) with options: window, chunk size (Python's `chunksize`),
    /// timeout.
    ///
    /// # Errors
    ///
    /// As for [`map`](Self::map), and [`MapError::InvalidOption`] for a zero window or
    /// chunk size.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{MapOptions, ProcessPoolExecutor};
    ///
    /// fn double(x: u32) -> u32 {
    ///     2 * x
    /// }
    ///
    /// fn main() -> anyhow::Result<()> {
    ///     concurrent_futures::process_worker_main();
    ///     let pool = ProcessPoolExecutor::builder().max_workers(2).build()?;
    ///     let options = MapOptions::new().chunksize(100);
    ///     let sum: u32 = pool
    ///         .map_with(double, 0..1000, options)?
    ///         .sum::<Result<u32, _>>()?;
    ///     assert_eq!(sum, 999_000);
    ///     Ok(())
    /// }
    /// ```
    pub fn map_with<I, A, R>(
        &self,
        f: fn(A) -> R,
        items: I,
        options: MapOptions,
    ) -> Result<Map<'_, I::IntoIter, R>, MapError>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        Map::new(
            Box::new(ProcessChunks { pool: self, f }),
            items.into_iter(),
            self.default_window(),
            options,
        )
    }

    /// Like [`map`](Self::map), but yields results as they complete, not in input order.
    ///
    /// # Errors
    ///
    /// As for [`map_with`](Self::map_with).
    pub fn map_unordered<I, A, R>(
        &self,
        f: fn(A) -> R,
        items: I,
        options: MapOptions,
    ) -> Result<MapUnordered<'_, I::IntoIter, R>, MapError>
    where
        I: IntoIterator<Item = A>,
        A: Serialize + DeserializeOwned + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        MapUnordered::new(
            Box::new(ProcessChunks { pool: self, f }),
            items.into_iter(),
            self.default_window(),
            options,
        )
    }

    /// Stops the pool, Python's `shutdown(wait, cancel_futures)`. Idempotent.
    ///
    /// Later submits are refused. With `cancel_futures`, every task not yet handed to a
    /// worker is cancelled at once; otherwise queued tasks still run. Running tasks
    /// finish. Workers exit when no work is left.
    ///
    /// # Blocking
    ///
    /// With `wait`, blocks until the queued work is done (unless cancelled) and every
    /// worker process has exited and been reaped. Called from a done-callback running
    /// on the pool's own thread, it does not wait.
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.inner.shutdown(wait, cancel_futures);
    }

    /// [`shutdown`](Self::shutdown) with its options named at the call site, and an
    /// optional deadline: when it passes, the tasks still queued are cancelled and the
    /// workers still running are killed (their tasks fail with
    /// [`FutureError::WorkerFailed`]); the call returns once they are reaped. Returns
    /// what did not finish.
    pub fn shutdown_with(&self, options: ShutdownOptions) -> ShutdownReport {
        self.inner.shutdown_with(options)
    }

    /// `shutdown_with(ShutdownOptions::new().timeout(timeout))`: waits at most `timeout`,
    /// then kills what still runs.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::{FutureError, ProcessPoolExecutor};
    ///
    /// fn stuck(_: ()) {
    ///     std::thread::sleep(Duration::from_secs(3600));
    /// }
    ///
    /// fn main() -> anyhow::Result<()> {
    ///     concurrent_futures::process_worker_main();
    ///     let pool = ProcessPoolExecutor::builder().max_workers(1).build()?;
    ///     let handle = pool.submit(stuck, ())?;
    ///     while !handle.is_running() {
    ///         std::thread::yield_now();
    ///     }
    ///     let report = pool.shutdown_timeout(Duration::from_millis(100));
    ///     assert!(report.timed_out());
    ///     assert!(matches!(handle.result(), Err(FutureError::WorkerFailed(_))));
    ///     Ok(())
    /// }
    /// ```
    pub fn shutdown_timeout(&self, timeout: Duration) -> ShutdownReport {
        self.shutdown_with(ShutdownOptions::new().timeout(timeout))
    }

    /// What the pool is doing now: queued tasks, tasks in the workers' hands, tasks
    /// ended (completed, failed, cancelled), live worker processes. Cheap enough to poll
    /// from a progress bar.
    pub fn stats(&self) -> PoolStats {
        self.inner.stats()
    }

    /// Python 3.14's `terminate_workers()`: `shutdown(wait = false, cancel_futures =
    /// true)`, then SIGTERM to every live worker. Running tasks fail with
    /// [`FutureError::WorkerFailed`] carrying the signal; tasks waiting in a worker's
    /// pipe are cancelled. Drop (or `shutdown(true, _)`) still reaps the processes.
    pub fn terminate_workers(&self) {
        self.inner.signal_workers(Signal::SIGTERM);
    }

    /// Python 3.14's `kill_workers()`: as [`terminate_workers`](Self::terminate_workers)
    /// with SIGKILL, which a worker cannot catch or ignore.
    pub fn kill_workers(&self) {
        self.inner.signal_workers(Signal::SIGKILL);
    }

    /// Chunks in flight by default: enough to keep every worker's pipe busy.
    fn default_window(&self) -> usize {
        self.inner.max_workers().saturating_mul(8).max(16)
    }
}

fn refusal<A>(refused: Refused, arg: A) -> SubmitError<A> {
    match refused {
        Refused::ShutDown => SubmitError::shut_down(arg),
        Refused::Broken(reason) => SubmitError::broken(arg, reason),
    }
}

/// Encodes a task's argument; `hint` is the expected size (a chunk is encoded in one
/// allocation instead of a series of doublings).
fn encode<T: Serialize + ?Sized>(value: &T, hint: usize) -> Result<Vec<u8>, FutureError> {
    let buffer = Vec::with_capacity(hint.clamp(16, 1 << 20));
    let bytes = postcard::serialize_with_flavor(value, wire::Owned(buffer)).map_err(|e| {
        FutureError::WorkerFailed(WorkerError::new(
            WorkerErrorKind::ArgumentEncode,
            format!("could not encode the argument: {e}"),
        ))
    })?;
    if bytes.len() > MAX_PAYLOAD {
        return Err(FutureError::WorkerFailed(WorkerError::new(
            WorkerErrorKind::ArgumentTooLarge,
            format!(
                "the encoded argument has {} bytes, more than the limit of {MAX_PAYLOAD}",
                bytes.len()
            ),
        )));
    }
    Ok(bytes)
}

/// Submits `map` chunks to a process pool: one message per chunk.
struct ProcessChunks<'a, A, R> {
    pool: &'a ProcessPoolExecutor,
    f: fn(A) -> R,
}

impl<A, R> ChunkSubmit<A, R> for ProcessChunks<'_, A, R>
where
    A: Serialize + DeserializeOwned + 'static,
    R: Serialize + DeserializeOwned + Send + 'static,
{
    /// A chunk is one message to one worker: the feeder bounds the automatic chunks
    /// instead of sharing them (see `shares_chunks`).
    fn submit_chunk(&self, chunk: Chunk<A>) -> Result<FutureHandle<ChunkResults<R>>, MapError> {
        let chunk = chunk.into_items();
        let inner = &self.pool.inner;
        if let Some(refused) = inner.refusal() {
            return Err(map_refusal(refused));
        }
        let (promise, handle) = future::pending::<ChunkResults<R>>();
        let prepared = call::chunk(self.f).and_then(|callee| {
            Ok((
                callee,
                encode(&chunk, chunk.len() * (size_of::<A>() + 1) + 8)?,
            ))
        });
        let (callee, payload) = match prepared {
            Ok(prepared) => prepared,
            Err(error) => {
                promise.complete(Err(error));
                return Ok(handle);
            }
        };
        let sink = Box::new(PromiseSink::new(
            promise,
            decode_results::<R>,
            inner.ended(),
        ));
        inner
            .enqueue(callee, payload, sink)
            .map(|()| handle)
            .map_err(map_refusal)
    }

    fn shares_chunks(&self) -> bool {
        false
    }

    fn workers(&self) -> usize {
        self.pool.inner.max_workers()
    }
}

/// Decodes a chunk's reply for the map iterators.
fn decode_results<R: DeserializeOwned>(body: &[u8]) -> Result<ChunkResults<R>, FutureError> {
    decode_chunk(body).map(ChunkResults::from)
}

fn map_refusal(refused: Refused) -> MapError {
    match refused {
        Refused::ShutDown => MapError::ShutDown,
        Refused::Broken(reason) => MapError::Broken(reason),
    }
}

impl Default for ProcessPoolExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for ProcessPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.inner, f)
    }
}

/// Builds a [`ProcessPoolExecutor`], as Python's constructor arguments do.
///
/// # Examples
///
/// ```
/// use concurrent_futures::ProcessPoolExecutor;
///
/// fn check_config(limit: u32) -> Result<(), String> {
///     if limit > 0 { Ok(()) } else { Err("limit must be positive".to_owned()) }
/// }
///
/// fn main() -> anyhow::Result<()> {
///     concurrent_futures::process_worker_main();
///     let pool = ProcessPoolExecutor::builder()
///         .max_workers(2)
///         .max_tasks_per_child(100)
///         .initializer(check_config, 5)
///         .build()?;
///     assert_eq!(pool.max_workers(), 2);
///     Ok(())
/// }
/// ```
#[must_use = "a builder does nothing until `build` is called"]
pub struct ProcessPoolBuilder {
    max_workers: Option<usize>,
    max_tasks_per_child: Option<usize>,
    start_method: StartMethod,
    initializer: Option<Result<(Callee, Vec<u8>), String>>,
    handshake_timeout: Duration,
}

/// How a [`ProcessPoolExecutor`] starts its worker processes (Python's `mp_context`
/// start methods; there is no plain `fork`, which is unsound in a process with threads).
///
/// Either way a worker begins in the same fresh state, at
/// [`process_worker_main`] of the same executable, with nothing of the pool's memory.
///
/// # Examples
///
/// ```
/// use concurrent_futures::{ProcessPoolExecutor, StartMethod};
///
/// fn main() -> anyhow::Result<()> {
///     concurrent_futures::process_worker_main();
///     let pool = ProcessPoolExecutor::builder()
///         .start_method(StartMethod::Spawn)
///         .build()?;
///     assert_eq!(pool.submit(u64::count_ones, 7)?.result()?, 3);
///     Ok(())
/// }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum StartMethod {
    /// Python's `forkserver` (its default on Linux since 3.14), and ours: with the
    /// first worker, the pool starts the executable once more, with a marker that makes
    /// it a *fork server*; every worker is then a fork of that small single-threaded
    /// process (its limits, such as no `pthread_atfork` handlers in a forked worker, are
    /// in the crate's `src/process_pool/README.md`).
    /// A fork skips the executable's start-up (loading, relocations, CPU-feature probes),
    /// which matters when a pool starts hundreds of workers (figures in the crate's
    /// `BENCHMARKS.md`, "start methods"). The server takes the pool's environment and working directory once,
    /// when it starts: later changes to them do not reach later workers. If
    /// the server cannot start or dies, the pool starts workers as with `Spawn`; so it
    /// does on targets other than x86_64 and aarch64 Linux, where the server's raw
    /// `clone` is not built.
    #[default]
    ForkServer,
    /// Python's `spawn`: every worker is the executable started again (`execve`).
    Spawn,
}

impl ProcessPoolBuilder {
    fn new() -> Self {
        Self {
            max_workers: None,
            max_tasks_per_child: None,
            start_method: StartMethod::default(),
            initializer: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// The most worker processes (default: the number of CPUs). Zero is refused by
    /// [`build`](Self::build).
    pub fn max_workers(mut self, n: usize) -> Self {
        self.max_workers = Some(n);
        self
    }

    /// A worker exits after this many tasks (a `map` chunk counts as one) and a new
    /// one replaces it (default: no limit). Zero is refused by [`build`](Self::build).
    pub fn max_tasks_per_child(mut self, n: usize) -> Self {
        self.max_tasks_per_child = Some(n);
        self
    }

    /// How worker processes start (default [`StartMethod::ForkServer`]).
    pub fn start_method(mut self, method: StartMethod) -> Self {
        self.start_method = method;
        self
    }

    /// How long a new worker process may take to reach [`process_worker_main`] and
    /// accept the pool's handshake (default 30 s; the initializer's run is not counted).
    /// A worker that does not answer in time (a `main` that blocks or runs on before
    /// the call) is killed and the pool is broken, with
    /// [`FutureError::BrokenPool`] saying so, instead of leaving its tasks pending.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }

    /// `f(arg)` runs once in each worker process before its first task (Python's
    /// `initializer` and `initargs`).
    ///
    /// If it returns `Err` (or panics), the pool is broken, as in Python, but without
    /// restarting workers in a loop: every pending future fails with
    /// [`FutureError::BrokenPool`] carrying the initializer's message, and later
    /// submits are refused.
    ///
    /// `f` returns `()` (it cannot fail) or `Result<(), E>` for any error that can be
    /// shown ([`InitResult`]); see
    /// [`initializer_fn`](Self::initializer_fn) for one without an argument.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ProcessPoolExecutor;
    ///
    /// fn set_level(level: u8) -> Result<(), String> {
    ///     if level > 3 { Err(format!("no level {level}")) } else { Ok(()) }
    /// }
    /// fn quiet() {}
    /// fn double(x: u8) -> u8 {
    ///     x * 2
    /// }
    ///
    /// fn main() -> anyhow::Result<()> {
    ///     concurrent_futures::process_worker_main();
    ///     let with_arg = ProcessPoolExecutor::builder().initializer(set_level, 2).build()?;
    ///     let plain = ProcessPoolExecutor::builder().initializer_fn(quiet).build()?;
    ///     assert_eq!(with_arg.submit(double, 1)?.result()?, 2);
    ///     assert_eq!(plain.submit(double, 2)?.result()?, 4);
    ///     Ok(())
    /// }
    /// ```
    pub fn initializer<A, R>(mut self, f: fn(A) -> R, arg: A) -> Self
    where
        A: Serialize + DeserializeOwned + 'static,
        R: InitResult + 'static,
    {
        let prepared = call::init(f)
            .and_then(|callee| Ok((callee, encode(&arg, size_of::<A>() + 8)?)))
            .map_err(|e| format!("invalid initializer: {e}"));
        self.initializer = Some(prepared);
        self
    }

    /// [`initializer`](Self::initializer) for a plain function without an argument
    /// (Python's `initializer=f` without `initargs`).
    pub fn initializer_fn<R: InitResult + 'static>(mut self, f: fn() -> R) -> Self {
        let prepared = call::init_no_arg(f)
            .and_then(|callee| Ok((callee, encode(&(), 8)?)))
            .map_err(|e| format!("invalid initializer: {e}"));
        self.initializer = Some(prepared);
        self
    }

    /// Builds the pool. No process starts until the first task.
    ///
    /// # Errors
    ///
    /// A [`BuildError`] when `max_workers` or `max_tasks_per_child` is zero, when the
    /// initializer's argument cannot be encoded, when `/proc` is not available, or when
    /// this process is a worker whose `main` did not call [`process_worker_main`] first
    /// (which would otherwise start workers without end).
    pub fn build(self) -> Result<ProcessPoolExecutor, BuildError> {
        let max_workers = self
            .max_workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if max_workers == 0 {
            return Err(BuildError::new("max_workers must be greater than 0"));
        }
        if self.max_tasks_per_child == Some(0) {
            return Err(BuildError::new("max_tasks_per_child must be >= 1"));
        }
        if worker::is_unserved_worker() {
            return Err(BuildError::new(
                "this process was started as a process-pool worker, but main() did not call \
                 concurrent_futures::process_worker_main() first",
            ));
        }
        // A result type's `Deserialize` may panic in the pool: the hook gives that panic
        // its location.
        panic_site::install();
        let init = match self.initializer {
            None => None,
            Some(Ok(init)) => Some(init),
            Some(Err(message)) => return Err(BuildError::new(message)),
        };
        let exe = image::identity()
            .map_err(|e| BuildError::new(format!("cannot identify the running executable: {e}")))?;
        let hello = wire::Hello {
            version: wire::PROTOCOL_VERSION,
            exe,
            probes: call::probes(),
            init,
            max_tasks: self.max_tasks_per_child.map_or(0, |n| n as u64),
        };
        let frame = wire::hello_frame(&hello)
            .map_err(|e| BuildError::new(format!("cannot encode the handshake: {e}")))?;
        Ok(ProcessPoolExecutor::from_inner(Inner::new(Config {
            max_workers,
            max_tasks_per_child: self.max_tasks_per_child.map(|n| n as u64),
            start_method: self.start_method,
            hello: frame,
            handshake_timeout: self.handshake_timeout,
        })))
    }
}

impl fmt::Debug for ProcessPoolBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProcessPoolBuilder")
            .field("max_workers", &self.max_workers)
            .field("max_tasks_per_child", &self.max_tasks_per_child)
            .field("handshake_timeout", &self.handshake_timeout)
            .field("start_method", &self.start_method)
            .field("initializer", &self.initializer.is_some())
            .finish()
    }
}
