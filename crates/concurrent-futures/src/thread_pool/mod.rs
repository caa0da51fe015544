//! [`ThreadPoolExecutor`]: runs closures on a lazily grown pool of threads.
//!
//! The design follows tokio's blocking pool: one queue (a crossbeam channel), a lock
//! around the pool's bookkeeping (never held while user code runs), and workers that
//! exit when the queue is closed and empty. Workers start lazily, as in Python: a
//! submit starts a thread only when no worker is idle and fewer than `max_workers`
//! run, so sequential `submit(..).result()` calls reuse one thread.

mod builder;
mod counters;
mod worker;

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use self::builder::Initializer;
pub use self::builder::{InitResult, ThreadPoolBuilder};
pub(crate) use self::counters::Ran;
use self::counters::WorkerCounters;
use crate::cancel::CancelToken;
use crate::error::{
    BrokenPoolError, BrokenPoolKind, FutureError, MapError, PanicError, SubmitError,
};
use crate::future::{self, FutureHandle, StopRunning, TaskRecord};
use crate::map::{
    Chunk, ChunkOutput, ChunkResults, ChunkSubmit, Map, MapOptions, MapUnordered, SharedChunk,
};
use crate::panic_site;
use crate::shutdown::{ShutdownOptions, ShutdownReport};
use crate::stats::PoolStats;
use crate::sync::{AtomicBool, AtomicUsize, Condvar, Mutex, Ordering};
use crate::unwind::contain;

/// A unit of queued work, type-erased: a task's record, which holds both its closure
/// and its future's state (one allocation per submit).
pub(crate) trait Job: Send + Sync {
    /// Runs the task unless it was cancelled; `before_publish` runs once, after the task
    /// and before its result becomes visible, with how it ended (the worker counts it
    /// and announces itself idle there, so a caller woken by the result sees both).
    fn run(self: Arc<Self>, before_publish: &mut dyn FnMut(Ran));
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
    fn run(self: Arc<Self>, before_publish: &mut dyn FnMut(Ran)) {
        let (func, promise) = self.take();
        let Some(func) = func else {
            return before_publish(Ran::Cancelled);
        };
        if !promise.set_running() {
            // Cancelled while queued: the closure's captures are dropped here, on the
            // worker, and their `Drop` is user code.
            contain("dropping a cancelled task", move || drop(func));
            return before_publish(Ran::Cancelled);
        }
        // A panic caught earlier on this worker (by an earlier task itself, say) must not
        // lend its location to this task's panic.
        panic_site::forget();
        let outcome = catch_unwind(AssertUnwindSafe(func))
            .map_err(|payload| FutureError::Panicked(PanicError::new(payload)));
        before_publish(Ran::of(&outcome));
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

/// A task that receives a [`CancelToken`] ([`ThreadPoolExecutor::submit_cancellable`]),
/// with the pool's token, whose child the task's token is.
struct Cancellable<G> {
    task: G,
    pool_token: CancelToken,
}

/// What `cancel()` does to a running cancellable task: sets its token.
struct SetToken(CancelToken);

impl StopRunning for SetToken {
    fn can_stop(&self) -> bool {
        true
    }

    fn stop(&self) {
        self.0.cancel();
    }

    fn is_cooperative(&self) -> bool {
        true
    }
}

impl<G, T> Job for TaskRecord<T, Cancellable<G>>
where
    G: FnOnce(&CancelToken) -> T + Send + 'static,
    T: Send,
{
    fn run(self: Arc<Self>, before_publish: &mut dyn FnMut(Ran)) {
        let (func, promise) = self.take();
        let Some(Cancellable { task, pool_token }) = func else {
            return before_publish(Ran::Cancelled);
        };
        let token = pool_token.child_token();
        if !promise.set_running_with(Arc::new(SetToken(token.clone()))) {
            contain("dropping a cancelled task", move || drop(task));
            return before_publish(Ran::Cancelled);
        }
        panic_site::forget();
        let outcome = catch_unwind(AssertUnwindSafe(|| task(&token)))
            .map_err(|payload| FutureError::Panicked(PanicError::new(payload)));
        // A token set after this look is counted as completed, though the future
        // ends cancelled: the counters are a progress gauge, not the outcome.
        before_publish(if token.is_cancelled() {
            Ran::Cancelled
        } else {
            Ran::of(&outcome)
        });
        contain("completing a task", move || {
            promise.complete_cooperative(outcome, &token);
        });
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
    fn run(mut self, before_publish: &mut dyn FnMut(Ran)) {
        match self.0.take() {
            Some(job) => job.run(before_publish),
            None => before_publish(Ran::Cancelled),
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
    /// The parent of every cancellable task's token: cancelled with `cancelling`, so
    /// that a shutdown that cancels futures also asks the running tasks to stop.
    tokens: CancelToken,
    /// Queued tasks cancelled by a shutdown (the workers count the rest).
    cancelled_in_queue: AtomicUsize,
    /// Queued tasks failed because an initializer broke the pool.
    failed_in_queue: AtomicUsize,
    state: Mutex<State>,
    /// Notified, with `state`'s lock, when a worker thread exits.
    exited: Condvar,
    max_workers: usize,
    prefix: String,
    initializer: Option<Initializer>,
    stack_size: Option<usize>,
    /// How long dropping the last handle waits for running tasks (`None`: for ever).
    drop_timeout: Option<Duration>,
}

/// The pool's bookkeeping, under `Inner::state`'s lock.
struct State {
    /// `None` once the pool is shut down: workers exit when the queue is empty.
    sender: Option<Sender<BoxedJob>>,
    broken: Option<BrokenPoolError>,
    /// Handles of the threads not joined yet.
    threads: Vec<JoinHandle<()>>,
    /// Threads started (never decreases).
    spawned: usize,
    /// Threads that have not exited: incremented at spawn, decremented by the thread
    /// itself as its last step.
    live: usize,
    /// A shutdown's deadline passed with threads still busy: they were left to end on
    /// their own, and later shutdowns do not wait for them again.
    detached: bool,
    /// Each thread's task counters, summed by `stats()`.
    counters: Vec<Arc<WorkerCounters>>,
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

    /// See [`ThreadPoolExecutor::stats`].
    fn stats(&self) -> PoolStats {
        let (counters, workers) = {
            let state = self.state.lock();
            (state.counters.clone(), state.live)
        };
        let mut stats = PoolStats {
            workers,
            cancelled: self.cancelled_in_queue.load(Ordering::Relaxed),
            failed: self.failed_in_queue.load(Ordering::Relaxed),
            ..PoolStats::default()
        };
        // Ends are read before starts, so a task that ends meanwhile is never counted
        // as ended without having started.
        let mut ended = 0;
        for c in &counters {
            let (completed, failed, cancelled) = c.ended_counts();
            stats.completed += completed;
            stats.failed += failed;
            stats.cancelled += cancelled;
            ended += completed + failed + cancelled;
        }
        let taken: usize = counters.iter().map(|c| c.taken()).sum();
        stats.running = taken.saturating_sub(ended);
        stats.queued = self.queue.len();
        stats
    }

    /// Called by a worker thread as its last step.
    fn worker_exited(&self) {
        let mut state = self.state.lock();
        state.live -= 1;
        drop(state);
        self.exited.notify_all();
    }

    /// Cancels every queued task and asks the running cancellable ones to stop; returns
    /// how many queued tasks it cancelled.
    fn cancel_queued(&self) -> usize {
        self.cancelling.store(true, Ordering::Release);
        // The queue first: a running task that stops on its token frees a worker, which
        // would otherwise take (and cancel) a queued task before this count sees it.
        let mut cancelled = 0;
        for job in self.queue.try_iter() {
            job.cancel();
            cancelled += 1;
        }
        self.cancelled_in_queue
            .fetch_add(cancelled, Ordering::Relaxed);
        self.tokens.cancel();
        cancelled
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
            self.failed_in_queue.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A pool of threads that run submitted closures and hand back [`FutureHandle`]s:
/// Python's `concurrent.futures.ThreadPoolExecutor`.
///
/// Dropping the pool is `shutdown(wait = true)`, like leaving Python's `with` block:
/// queued tasks still run and the drop waits for them.
///
/// The pool is a cheap shared handle: a clone submits to the same threads, and the pool
/// shuts down when the last clone is dropped (or when any clone calls `shutdown`).
///
/// # Dropping a pool whose task is stuck
///
/// A thread cannot be stopped from outside, so a drop waits for running tasks, like
/// Python's `with` block. It is never silent about it: a drop still waiting after 10
/// seconds says on stderr how many tasks it waits for. To bound the wait, call
/// [`shutdown_timeout`](Self::shutdown_timeout) first (it reports what did not finish,
/// asks cancellable tasks to stop, and leaves the busy threads to end on their own), or
/// build the pool with a [`drop_timeout`](ThreadPoolBuilder::drop_timeout). In async
/// code, drop a pool outside the runtime's worker threads (`spawn_blocking`) or after
/// `shutdown_timeout`: a blocked drop there stalls every task of that thread.
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
///
/// // A clone is the same pool, for another thread: no Arc needed.
/// let shared = pool.clone();
/// let from_thread = std::thread::spawn(move || shared.submit(|| 7)?.result().map_err(anyhow::Error::from));
/// assert_eq!(from_thread.join().unwrap()?, 7);
/// # Ok::<(), anyhow::Error>(())
/// ```
#[derive(Clone)]
pub struct ThreadPoolExecutor {
    inner: Arc<Inner>,
    /// Shared by the clones: the last one dropped shuts the pool down.
    _last_clone: Arc<ShutdownOnDrop>,
}

/// Shuts its pool down when dropped, that is, when the last clone of the pool is gone
/// (the worker threads hold `Inner`, not this).
struct ShutdownOnDrop(Arc<Inner>);

impl Drop for ShutdownOnDrop {
    /// `shutdown(wait = true, cancel_futures = false)`, bounded by the builder's
    /// `drop_timeout`, with a note on stderr when it waits long.
    fn drop(&mut self) {
        let options = match self.0.drop_timeout {
            Some(timeout) => ShutdownOptions::new().timeout(timeout),
            None => ShutdownOptions::new(),
        };
        shutdown(&self.0, options, true);
    }
}

/// How long a drop waits before it says on stderr what it waits for.
const DROP_NOTE_AFTER: Duration = Duration::from_secs(10);

impl ThreadPoolExecutor {
    /// A pool with the default options (`min(32, CPUs + 4)` workers).
    pub fn new() -> Self {
        // The default worker count is never zero, so the default build cannot fail;
        // the fallback keeps this panic-free all the same.
        Self::builder().build().unwrap_or_else(|_| {
            Self::from_parts(1, "ThreadPoolExecutor".to_owned(), None, None, None)
        })
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
        drop_timeout: Option<Duration>,
    ) -> Self {
        // Panic errors carry the panic's location, which only a panic hook can see.
        panic_site::install();
        let (sender, queue) = crossbeam_channel::unbounded();
        let inner = Arc::new(Inner {
            queue,
            idle: AtomicUsize::new(0),
            started: AtomicUsize::new(0),
            cancelling: AtomicBool::new(false),
            tokens: CancelToken::new(),
            cancelled_in_queue: AtomicUsize::new(0),
            failed_in_queue: AtomicUsize::new(0),
            state: Mutex::new(State {
                sender: Some(sender),
                broken: None,
                threads: Vec::new(),
                spawned: 0,
                live: 0,
                detached: false,
                counters: Vec::new(),
            }),
            exited: Condvar::new(),
            max_workers,
            prefix,
            initializer,
            stack_size,
            drop_timeout,
        });
        Self {
            _last_clone: Arc::new(ShutdownOnDrop(Arc::clone(&inner))),
            inner,
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

    /// Schedules `task` with a [`CancelToken`] it can watch, so that it can be cancelled
    /// while it runs: [`FutureHandle::cancel`] then sets the token and returns true, and
    /// the future ends [`FutureError::Cancelled`] when the task returns (the value it
    /// returned is dropped). A task whose token is set by the time it returns ends
    /// cancelled, however it was set: by `cancel()`, by a shutdown that cancels futures
    /// (which sets the token of every running cancellable task), or by the task itself.
    ///
    /// The name says what the caller gets: a task that can be cancelled, where `submit`'s
    /// cannot once it runs. Python has no equivalent; its users poll an `Event`.
    ///
    /// # Errors
    ///
    /// As for [`submit`](Self::submit).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::{CancelToken, ShutdownOptions, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new();
    /// let poller = pool.submit_cancellable(|token: &CancelToken| {
    ///     let mut polls = 0u32;
    ///     while !token.wait_timeout(Duration::from_millis(5)) {
    ///         polls += 1; // poll something, then back off until cancelled
    ///     }
    ///     polls
    /// })?;
    /// // A shutdown that cancels futures stops the poller too, instead of waiting for ever.
    /// pool.shutdown_with(ShutdownOptions::new().cancel_futures(true));
    /// assert!(poller.is_cancelled());
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn submit_cancellable<G, T>(&self, task: G) -> Result<FutureHandle<T>, SubmitError<G>>
    where
        G: FnOnce(&CancelToken) -> T + Send + 'static,
        T: Send + 'static,
    {
        let pool_token = self.inner.tokens.clone();
        self.submit_job(task, |task| {
            let (record, handle) = future::with_task(Cancellable { task, pool_token });
            (record as Arc<dyn Job>, handle)
        })
    }

    /// What the pool is doing now: queued, running and finished tasks, live threads.
    /// Cheap enough to poll from a progress bar (a lock and a sum over the threads).
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::builder().max_workers(2).build()?;
    /// let handles: Vec<_> = (0..10).map(|i| pool.submit(move || i).unwrap()).collect();
    /// for handle in handles {
    ///     handle.result()?;
    /// }
    /// let stats = pool.stats();
    /// assert_eq!(stats.done(), 10);
    /// assert_eq!((stats.queued, stats.running), (0, 0));
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn stats(&self) -> PoolStats {
        self.inner.stats()
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
        self.submit_job(input, |input| {
            let task = make(input);
            if size_of::<F>() <= INLINE_TASK_BYTES {
                let (record, handle) = future::with_task(task);
                (record as Arc<dyn Job>, handle)
            } else {
                let (record, handle) = future::with_task(Box::new(task));
                (record as Arc<dyn Job>, handle)
            }
        })
    }

    /// Queues the job that `make` builds from `input`, once the pool has taken the work.
    pub(crate) fn submit_job<X, T>(
        &self,
        input: X,
        make: impl FnOnce(X) -> (Arc<dyn Job>, FutureHandle<T>),
    ) -> Result<FutureHandle<T>, SubmitError<X>> {
        let (handle, lost) = {
            let mut state = self.inner.state.lock();
            if let Some(reason) = &state.broken {
                return Err(SubmitError::broken(input, reason.clone()));
            }
            let Some(sender) = &state.sender else {
                return Err(SubmitError::shut_down(input));
            };
            let (job, handle) = make(input);
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
        let counters = Arc::new(WorkerCounters::default());
        let mine = Arc::clone(&counters);
        match builder.spawn(move || worker::run(&inner, &mine)) {
            Ok(thread) => {
                state.spawned += 1;
                state.live += 1;
                state.counters.push(counters);
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
    /// cancelled at once (and [`wait`](crate::wait()) / [`as_completed`](crate::as_completed()))
    /// see it immediately), and so is a task a worker has taken off the queue but not
    /// started; running [cancellable](Self::submit_cancellable) tasks have their token
    /// set; otherwise queued tasks still run. Running tasks always finish.
    /// [`shutdown_with`](Self::shutdown_with) says the same with names, and a deadline.
    ///
    /// # Blocking
    ///
    /// With `wait`, blocks until every worker has exited (after the queue drained). A
    /// worker thread calling `shutdown(true, _)` on its own pool does not wait for itself.
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        self.shutdown_with(
            ShutdownOptions::new()
                .wait(wait)
                .cancel_futures(cancel_futures),
        );
    }

    /// [`shutdown`](Self::shutdown) with its options named at the call site, and an
    /// optional deadline; returns what did not finish.
    ///
    /// When the deadline passes, the tasks still queued are cancelled, running
    /// cancellable tasks have their token set, and the call returns: threads still busy
    /// are left to end on their own (their futures complete when their tasks return),
    /// and later shutdowns and the drop do not wait for them again.
    pub fn shutdown_with(&self, options: ShutdownOptions) -> ShutdownReport {
        shutdown(&self.inner, options, false)
    }

    /// `shutdown_with(ShutdownOptions::new().timeout(timeout))`: waits at most
    /// `timeout` for the queued and running tasks.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new();
    /// let (tx, rx) = std::sync::mpsc::channel::<()>();
    /// let stuck = pool.submit(move || rx.recv().is_ok())?; // waits for a message
    /// let report = pool.shutdown_timeout(Duration::from_millis(50));
    /// assert!(report.timed_out());
    /// assert_eq!(report.still_running(), 1);
    /// drop(pool); // does not wait again
    /// tx.send(())?;
    /// assert!(stuck.result()?);
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn shutdown_timeout(&self, timeout: Duration) -> ShutdownReport {
        self.shutdown_with(ShutdownOptions::new().timeout(timeout))
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

/// Stops the pool `inner` (see [`ThreadPoolExecutor::shutdown_with`]); `note_when_slow`
/// (the drop) says on stderr what it waits for once the wait grows long.
fn shutdown(inner: &Inner, options: ShutdownOptions, note_when_slow: bool) -> ShutdownReport {
    let started = Instant::now();
    let deadline = options.timeout.and_then(|t| started.checked_add(t));
    let mut report = ShutdownReport::default();
    inner.state.lock().sender = None;
    if options.cancel_futures {
        report.cancelled = inner.cancel_queued();
    }
    if !options.wait {
        return report;
    }
    let me = std::thread::current().id();
    let mut state = inner.state.lock();
    // A worker that shuts its own pool down does not wait for itself.
    let own = usize::from(state.threads.iter().any(|t| t.thread().id() == me));
    let mut note_at = note_when_slow.then(|| started + DROP_NOTE_AFTER);
    while state.live > own && !state.detached {
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            state.detached = true;
            drop(state);
            report.cancelled += inner.cancel_queued();
            report.timed_out = true;
            report.still_running = inner.stats().running;
            return report;
        }
        if let Some(at) = note_at.filter(|at| now >= *at) {
            eprintln!(
                "concurrent_futures: dropping {} has waited {:?} for {} running task(s); \
                 see ThreadPoolExecutor::shutdown_timeout to bound the wait",
                inner.prefix,
                at - started,
                state.live - own,
            );
            note_at = None;
        }
        let wake_at = [deadline, note_at].into_iter().flatten().min();
        state = inner.exited.wait_until(state, wake_at).0;
    }
    if state.detached {
        // An earlier shutdown's deadline left threads busy: say so, without waiting again.
        let busy = state.live.saturating_sub(own);
        drop(state);
        if busy > 0 {
            report.timed_out = true;
            report.still_running = inner.stats().running.max(1);
        }
        return report;
    }
    let threads = std::mem::take(&mut state.threads);
    drop(state);
    for thread in threads {
        if thread.thread().id() != me {
            // Workers catch every task panic; a join error would be a bug in the pool
            // itself and there is nobody to hand it to during shutdown.
            let _ = thread.join();
        }
    }
    report
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
