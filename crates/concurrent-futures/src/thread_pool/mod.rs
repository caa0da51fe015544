//! [`ThreadPoolExecutor`]: runs closures on a lazily grown pool of threads.
//!
//! The design follows tokio's blocking pool: one queue (a crossbeam channel), a lock
//! around the pool's bookkeeping (never held while user code runs), and workers that
//! exit when the queue is closed and empty. Workers start lazily, as in Python: a
//! submit starts a thread only when no worker is idle and fewer than `max_workers`
//! run, so sequential `submit(..).result()` calls reuse one thread.

mod builder;
mod worker;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{Receiver, Sender};

use self::builder::Initializer;
pub use self::builder::ThreadPoolBuilder;
use crate::error::{
    BrokenPoolError, BrokenPoolKind, FutureError, MapError, PanicError, SubmitError,
};
use crate::future::{self, FutureHandle, TaskRecord};
use crate::map::{
    Chunk, ChunkOutput, ChunkResults, ChunkSubmit, Map, MapOptions, MapUnordered, SharedChunk,
};
use crate::panic_site;
use crate::sync::{AtomicBool, AtomicUsize, Mutex, Ordering};
use crate::unwind::contain;

/// A unit of queued work, type-erased: a task's record, which holds both its closure
/// and its future's state (one allocation per submit).
pub(crate) trait Job: Send + Sync {
    /// Runs the task unless it was cancelled; `before_publish` runs after the task and
    /// before its result becomes visible (the worker announces itself idle there).
    fn run(self: Arc<Self>, before_publish: &mut dyn FnMut());
    /// Cancels the task without running it.
    fn cancel(self: Arc<Self>);
    /// Fails the task without running it.
    fn fail(self: Arc<Self>, error: FutureError);
}

impl<F, T> Job for TaskRecord<T, F>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send,
{
    fn run(self: Arc<Self>, before_publish: &mut dyn FnMut()) {
        let (func, promise) = self.take();
        let Some(func) = func else {
            return;
        };
        if !promise.set_running() {
            // Cancelled while queued: the closure's captures are dropped here, on the
            // worker, and their `Drop` is user code.
            contain("dropping a cancelled task", move || drop(func));
            return;
        }
        // A panic caught earlier on this worker (by an earlier task itself, say) must not
        // lend its location to this task's panic.
        panic_site::forget();
        let outcome = catch_unwind(AssertUnwindSafe(func))
            .map_err(|payload| FutureError::Panicked(PanicError::new(payload)));
        before_publish();
        // If its handle is gone, the value is dropped here: user code on the worker.
        contain("completing a task", move || promise.complete(outcome));
    }

    fn cancel(self: Arc<Self>) {
        let (func, promise) = self.take();
        contain("dropping a cancelled task", move || drop(func));
        promise.cancel();
    }

    fn fail(self: Arc<Self>, error: FutureError) {
        let (func, promise) = self.take();
        contain("dropping a failed task", move || drop(func));
        promise.complete(Err(error));
    }
}

/// Closures larger than this go behind their own box, so that a handle kept after its
/// task ran does not keep the closure's bytes alive in the shared record.
const INLINE_TASK_BYTES: usize = 64;

/// A queued job. Dropped without being run, cancelled or failed (its queue was dropped),
/// it fails its future, so that no `result()` can block forever on a lost task.
struct BoxedJob(Option<Arc<dyn Job>>);

impl BoxedJob {
    fn run(mut self, before_publish: &mut dyn FnMut()) {
        if let Some(job) = self.0.take() {
            job.run(before_publish);
        }
    }

    fn cancel(mut self) {
        if let Some(job) = self.0.take() {
            job.cancel();
        }
    }

    fn fail(mut self, error: FutureError) {
        if let Some(job) = self.0.take() {
            job.fail(error);
        }
    }
}

impl Drop for BoxedJob {
    fn drop(&mut self) {
        if let Some(job) = self.0.take() {
            job.fail(FutureError::BrokenPool(BrokenPoolError::task_dropped()));
        }
    }
}

/// What the pool's threads and its handle share.
pub(crate) struct Inner {
    /// A receiving end kept by the pool itself, to drain the queue on cancel or break.
    queue: Receiver<BoxedJob>,
    /// Workers that are idle (or about to be) and not yet claimed by a submit. Only
    /// kept until every worker has started: after that no submit needs it.
    idle: AtomicUsize,
    /// Threads started: `State::spawned`, readable without the lock.
    started: AtomicUsize,
    /// Set by `shutdown(_, cancel_futures = true)`: a job a worker has already taken off
    /// the queue, but not started, is cancelled instead of run.
    cancelling: AtomicBool,
    state: Mutex<State>,
    max_workers: usize,
    prefix: String,
    initializer: Option<Initializer>,
    stack_size: Option<usize>,
}

struct State {
    /// `None` once the pool is shut down: workers exit when the queue is empty.
    sender: Option<Sender<BoxedJob>>,
    broken: Option<BrokenPoolError>,
    threads: Vec<JoinHandle<()>>,
    spawned: usize,
}

impl Inner {
    /// True once `max_workers` threads started: no more idle accounting is needed,
    /// which spares every task two atomic operations on a line all threads share.
    fn saturated(&self) -> bool {
        self.started.load(Ordering::Acquire) >= self.max_workers
    }

    /// Takes one idle worker for a new task; false when none is idle.
    fn claim_idle(&self) -> bool {
        self.idle
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Marks the pool broken (an initializer failed) and fails every queued task.
    fn break_pool(&self, reason: String) {
        let message = BrokenPoolError::new(
            BrokenPoolKind::InitializerFailed,
            format!("A thread initializer failed, the thread pool is not usable anymore: {reason}"),
        );
        {
            let mut state = self.state.lock();
            if state.broken.is_none() {
                state.broken = Some(message.clone());
            }
        }
        for job in self.queue.try_iter() {
            job.fail(FutureError::BrokenPool(message.clone()));
        }
    }
}

/// A pool of threads that run submitted closures and hand back [`FutureHandle`]s:
/// Python's `concurrent.futures.ThreadPoolExecutor`.
///
/// Dropping the pool is `shutdown(wait = true)`, like leaving Python's `with` block:
/// queued tasks still run and the drop waits for them.
///
/// # Examples
///
/// ```
/// use concurrent_futures::ThreadPoolExecutor;
///
/// let pool = ThreadPoolExecutor::builder().max_workers(3).build()?;
/// let handles: Vec<_> = (1..=3)
///     .map(|n| pool.submit(move || n * 10))
///     .collect::<Result<_, _>>()?;
/// let total: i32 = handles.into_iter().map(|h| h.result()).sum::<Result<_, _>>()?;
/// assert_eq!(total, 60);
/// # Ok::<(), anyhow::Error>(())
/// ```
pub struct ThreadPoolExecutor {
    inner: Arc<Inner>,
}

impl ThreadPoolExecutor {
    /// A pool with the default options (`min(32, CPUs + 4)` workers).
    pub fn new() -> Self {
        // The default worker count is never zero, so the default build cannot fail;
        // the fallback keeps this panic-free all the same.
        Self::builder()
            .build()
            .unwrap_or_else(|_| Self::from_parts(1, "ThreadPoolExecutor".to_owned(), None, None))
    }

    /// A builder for the pool's options.
    pub fn builder() -> ThreadPoolBuilder {
        ThreadPoolBuilder::new()
    }

    pub(crate) fn from_parts(
        max_workers: usize,
        prefix: String,
        initializer: Option<Initializer>,
        stack_size: Option<usize>,
    ) -> Self {
        // Panic errors carry the panic's location, which only a panic hook can see.
        panic_site::install();
        let (sender, queue) = crossbeam_channel::unbounded();
        Self {
            inner: Arc::new(Inner {
                queue,
                idle: AtomicUsize::new(0),
                started: AtomicUsize::new(0),
                cancelling: AtomicBool::new(false),
                state: Mutex::new(State {
                    sender: Some(sender),
                    broken: None,
                    threads: Vec::new(),
                    spawned: 0,
                }),
                max_workers,
                prefix,
                initializer,
                stack_size,
            }),
        }
    }

    /// The most worker threads this pool starts.
    pub fn max_workers(&self) -> usize {
        self.inner.max_workers
    }

    /// Schedules `task` to run on a worker and returns its handle, Python's `submit`.
    ///
    /// A task's panic is caught: the worker lives on and the handle's `result()` returns
    /// [`FutureError::Panicked`] with the message.
    ///
    /// # Errors
    ///
    /// [`SubmitError::ShutDown`] after [`shutdown`](Self::shutdown), and
    /// [`SubmitError::Broken`] once an initializer failed; both give the task back.
    pub fn submit<F, T>(&self, task: F) -> Result<FutureHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.submit_made(task, |task| task)
    }

    /// Submits the task that `make` builds from `input`, once the pool has taken the work
    /// (decided under its lock): a refusal gives `input` back, which for
    /// [`Executor::submit`](crate::Executor::submit) is the argument, not a closure around
    /// it.
    pub(crate) fn submit_made<X, F, T>(
        &self,
        input: X,
        make: impl FnOnce(X) -> F,
    ) -> Result<FutureHandle<T>, SubmitError<X>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let (handle, lost) = {
            let mut state = self.inner.state.lock();
            if let Some(reason) = &state.broken {
                return Err(SubmitError::broken(input, reason.clone()));
            }
            let Some(sender) = &state.sender else {
                return Err(SubmitError::shut_down(input));
            };
            let task = make(input);
            let (job, handle) = if size_of::<F>() <= INLINE_TASK_BYTES {
                let (record, handle) = future::with_task(task);
                (record as Arc<dyn Job>, handle)
            } else {
                let (record, handle) = future::with_task(Box::new(task));
                (record as Arc<dyn Job>, handle)
            };
            // An unbounded send only fails without receivers, and the pool holds one;
            // a failed send drops the job, which then fails the handle.
            let _ = sender.send(BoxedJob(Some(job)));
            (handle, self.adjust_thread_count(&mut state))
        };
        for job in lost {
            job.fail(FutureError::BrokenPool(BrokenPoolError::new(
                BrokenPoolKind::StartFailed,
                "no worker thread could be started",
            )));
        }
        Ok(handle)
    }

    /// Starts a worker unless an idle one can take the new task or `max_workers` run.
    /// Returns the queued tasks to fail when no worker exists and none could start.
    fn adjust_thread_count(&self, state: &mut State) -> Vec<BoxedJob> {
        if state.spawned >= self.inner.max_workers || self.inner.claim_idle() {
            return Vec::new();
        }
        let mut builder =
            std::thread::Builder::new().name(format!("{}_{}", self.inner.prefix, state.spawned));
        if let Some(bytes) = self.inner.stack_size {
            builder = builder.stack_size(bytes);
        }
        let inner = Arc::clone(&self.inner);
        match builder.spawn(move || worker::run(&inner)) {
            Ok(thread) => {
                state.spawned += 1;
                self.inner.started.store(state.spawned, Ordering::Release);
                state.threads.push(thread);
                Vec::new()
            }
            Err(_) if state.spawned == 0 => self.inner.queue.try_iter().collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Stops the pool, Python's `shutdown(wait, cancel_futures)`. Idempotent.
    ///
    /// Later submits are refused. With `cancel_futures`, every task still queued is
    /// cancelled at once (and [`wait`](crate::wait()) / [`as_completed`](crate::as_completed())
    /// see it immediately), and so is a task a worker has taken off the queue but not
    /// started; otherwise queued tasks still run. Running tasks always finish.
    ///
    /// # Blocking
    ///
    /// With `wait`, blocks until every worker has exited (after the queue drained). A
    /// worker thread calling `shutdown(true, _)` on its own pool does not wait for itself.
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        let (cancelled, threads) = {
            let mut state = self.inner.state.lock();
            state.sender = None;
            if cancel_futures {
                self.inner.cancelling.store(true, Ordering::Release);
            }
            let cancelled: Vec<BoxedJob> = if cancel_futures {
                self.inner.queue.try_iter().collect()
            } else {
                Vec::new()
            };
            let threads = if wait {
                std::mem::take(&mut state.threads)
            } else {
                Vec::new()
            };
            (cancelled, threads)
        };
        for job in cancelled {
            job.cancel();
        }
        let me = std::thread::current().id();
        for thread in threads {
            if thread.thread().id() != me {
                // Workers catch every task panic; a join error would be a bug in the
                // pool itself and there is nobody to hand it to during shutdown.
                let _ = thread.join();
            }
        }
    }

    /// Runs `f` on every item, in parallel, and yields the results in input order,
    /// lazily: Python's `Executor.map` with a bounded `buffersize`.
    ///
    /// Only a window of items is in flight at a time (see [`MapOptions`]), so an endless
    /// iterator runs in constant memory. Items are batched into chunks whose size adapts
    /// to how long `f` takes: tiny calls are grouped, slow ones (I/O) go one by one. A
    /// failing item yields an error when it is reached and iteration goes on past it.
    /// Dropping the iterator cancels the work that has not started.
    ///
    /// # Errors
    ///
    /// [`MapError::ShutDown`] or [`MapError::Broken`] when the pool refuses work.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new();
    /// let squares: Vec<u64> = pool
    ///     .map(|x: u64| x * x, 1..=5)?
    ///     .collect::<Result<_, _>>()?;
    /// assert_eq!(squares, [1, 4, 9, 16, 25]);
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn map<I, F, R>(&self, f: F, items: I) -> Result<Map<'_, I::IntoIter, R>, MapError>
    where
        I: IntoIterator,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> R + Send + Sync + 'static,
        R: Send + 'static,
    {
        self.map_with(f, items, MapOptions::new())
    }

    /// [`map`](Self::map) with options: window, chunk size, timeout.
    ///
    /// # Errors
    ///
    /// As for [`map`](Self::map), and [`MapError::InvalidOption`] for a zero window or
    /// chunk size.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::{MapOptions, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new();
    /// let options = MapOptions::new()
    ///     .window(4)
    ///     .chunksize(1)
    ///     .timeout(Duration::from_secs(60));
    /// let mut results = pool.map_with(|x: u32| x + 1, 0.., options)?; // endless input
    /// assert_eq!(results.next().transpose()?, Some(1));
    /// assert_eq!(results.next().transpose()?, Some(2));
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn map_with<I, F, R>(
        &self,
        f: F,
        items: I,
        options: MapOptions,
    ) -> Result<Map<'_, I::IntoIter, R>, MapError>
    where
        I: IntoIterator,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> R + Send + Sync + 'static,
        R: Send + 'static,
    {
        Map::new(
            Box::new(ThreadChunks {
                pool: self,
                f: Arc::new(f),
            }),
            items.into_iter(),
            self.default_window(),
            options,
        )
    }

    /// Like [`map`](Self::map), but yields results as they complete, not in input order
    /// (Python has no such method; people rebuild it from `as_completed`).
    ///
    /// # Errors
    ///
    /// As for [`map_with`](Self::map_with).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{MapOptions, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new();
    /// let mut squares: Vec<u64> = pool
    ///     .map_unordered(|x: u64| x * x, 1..=5, MapOptions::new())?
    ///     .collect::<Result<_, _>>()?;
    /// squares.sort();
    /// assert_eq!(squares, [1, 4, 9, 16, 25]);
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn map_unordered<I, F, R>(
        &self,
        f: F,
        items: I,
        options: MapOptions,
    ) -> Result<MapUnordered<'_, I::IntoIter, R>, MapError>
    where
        I: IntoIterator,
        I::Item: Send + 'static,
        F: Fn(I::Item) -> R + Send + Sync + 'static,
        R: Send + 'static,
    {
        MapUnordered::new(
            Box::new(ThreadChunks {
                pool: self,
                f: Arc::new(f),
            }),
            items.into_iter(),
            self.default_window(),
            options,
        )
    }

    /// Chunks in flight by default: enough to keep every worker busy while the consumer
    /// takes results.
    fn default_window(&self) -> usize {
        self.inner.max_workers.saturating_mul(2).max(2)
    }
}

/// Submits `map` chunks to a thread pool.
struct ThreadChunks<'a, F> {
    pool: &'a ThreadPoolExecutor,
    f: Arc<F>,
}

impl<A, R, F> ChunkSubmit<A, R> for ThreadChunks<'_, F>
where
    A: Send + 'static,
    R: Send + 'static,
    F: Fn(A) -> R + Send + Sync + 'static,
{
    fn submit_chunk(&self, chunk: Chunk<A>) -> Result<FutureHandle<ChunkResults<R>>, MapError> {
        let blocks = match chunk {
            Chunk::Shared(blocks) if blocks.len() > 1 => blocks,
            chunk => {
                let (items, f) = (chunk.into_items(), Arc::clone(&self.f));
                return self
                    .pool
                    .submit(move || ChunkResults::from(ChunkOutput::run(items, &*f)))
                    .map_err(map_refusal);
            }
        };
        // One drainer per worker that could help (see `SharedChunk`): the queue is FIFO,
        // so a drainer that starts after the others emptied the chunk finds nothing to
        // claim and returns.
        let drainers = self.pool.max_workers().min(blocks.len());
        let (chunk, handle) = SharedChunk::new(blocks, Arc::clone(&self.f));
        for n in 0..drainers {
            let chunk = Arc::clone(&chunk);
            match self.pool.submit(move || chunk.drain()) {
                Ok(_) => {}
                Err(e) if n == 0 => return Err(map_refusal(e)),
                // The drainers already queued take every block.
                Err(_) => break,
            }
        }
        Ok(handle)
    }

    fn shares_chunks(&self) -> bool {
        true
    }

    fn workers(&self) -> usize {
        self.pool.max_workers()
    }
}

fn map_refusal<F>(refused: SubmitError<F>) -> MapError {
    match refused {
        SubmitError::ShutDown(_) => MapError::ShutDown,
        SubmitError::Broken(_, reason) => MapError::Broken(reason),
    }
}

impl Default for ThreadPoolExecutor {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for ThreadPoolExecutor {
    /// `shutdown(wait = true, cancel_futures = false)`.
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl fmt::Debug for ThreadPoolExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.state.lock();
        f.debug_struct("ThreadPoolExecutor")
            .field("max_workers", &self.inner.max_workers)
            .field("thread_name_prefix", &self.inner.prefix)
            .field("threads", &state.spawned)
            .field("queued", &self.inner.queue.len())
            .field("shut_down", &state.sender.is_none())
            .field("broken", &state.broken)
            .finish()
    }
}
