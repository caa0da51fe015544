//! [`ClusterExecutor`]: the client. `submit` and `map` put tasks into the queue's task
//! stream (a writer thread batches the `XADD`s into pipelines) and return ordinary
//! [`FutureHandle`]s; a reader thread reads the client's result stream, completes the
//! futures and keeps the stream alive (its expiry is the client's heartbeat).

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use concurrent_futures::{Exclusive, FutureError, FutureHandle};
use crossbeam_channel::{Receiver, Sender};
use parking_lot::{Condvar, Mutex};
use redis::{Connection, RedisError, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::broker::{self, Broker, is_connection_error, millis};
use crate::error::{BuildError, SubmitError, TaskError};
use crate::scripts;
use crate::sink::{ChunkSink, Failure, OneSink, Sink};
use crate::task::Task;
use crate::wire::{
    self, FIELD_ERROR, FIELD_KEY, FIELD_LEASE, FIELD_RESULT, FIELD_SEQ, FIELD_TASK, GROUP, Keys,
    Outcome, ResultMsg, TaskMsg,
};

/// How many chunks one `map` keeps in flight at most (fewer with a smaller window).
const MAP_WINDOW: usize = 64;
/// How many commands the writer puts in one pipeline at most.
const WRITE_BATCH: usize = 1024;
/// How many results the reader takes per read at most.
const READ_BATCH: usize = 4096;
/// The longest a reader's blocking read waits before it looks at its heartbeat and
/// shutdown state.
const READ_BLOCK: Duration = Duration::from_millis(100);

/// What the client does with its unfinished tasks when the broker comes back without
/// its data (restarted without persistence, flushed, failed over to an empty replica).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnDataLoss {
    /// Submit them again (the client keeps every unfinished task's message, at most
    /// `window` of them). A task that had already run may run again; its future still
    /// gets one result.
    #[default]
    Resubmit,
    /// Fail their futures with [`TaskError::BrokerDataLost`].
    Fail,
}

/// Builds a [`ClusterExecutor`]: `ClusterExecutor::builder().broker(url).queue(name)`.
#[derive(Debug, Clone)]
#[must_use]
pub struct ClusterExecutorBuilder {
    broker: Option<String>,
    queue: String,
    lease: Duration,
    max_deliveries: u32,
    window: usize,
    client_ttl: Duration,
    reconnect_budget: Duration,
    on_data_loss: OnDataLoss,
}

impl Default for ClusterExecutorBuilder {
    fn default() -> Self {
        Self {
            broker: None,
            queue: String::from("default"),
            lease: Duration::from_secs(10),
            max_deliveries: 3,
            window: 4096,
            client_ttl: Duration::from_secs(30),
            reconnect_budget: Duration::from_secs(60),
            on_data_loss: OnDataLoss::Resubmit,
        }
    }
}

impl ClusterExecutorBuilder {
    /// The broker: `redis://host:port/db` or `redis+unix:///path/to/redis.sock`
    /// (required).
    pub fn broker(mut self, url: impl Into<String>) -> Self {
        self.broker = Some(url.into());
        self
    }

    /// The queue: the prefix of every key (default `default`). Workers serve one queue.
    pub fn queue(mut self, name: impl Into<String>) -> Self {
        self.queue = name.into();
        self
    }

    /// How long a worker may hold a task without a heartbeat before another worker
    /// claims it (default 10 s). Workers extend it while the task runs, so it bounds
    /// how late a vanished worker's tasks start again, not how long a task may run.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How many deliveries a task gets before it is dead-lettered, when each one kills
    /// the process running it (default 3).
    pub fn max_deliveries(mut self, n: u32) -> Self {
        self.max_deliveries = n;
        self
    }

    /// How many tasks (messages: a `map` chunk is one) this client has in flight at
    /// most (default 4096): `submit` blocks while the window is full.
    pub fn window(mut self, n: usize) -> Self {
        self.window = n;
        self
    }

    /// How long the client's result stream outlives the client's last heartbeat
    /// (default 30 s): after a client dies, its results and cancel set expire, and
    /// workers drop its queued tasks.
    pub fn client_ttl(mut self, ttl: Duration) -> Self {
        self.client_ttl = ttl;
        self
    }

    /// How long the client keeps trying to reach a broker that went away before it
    /// fails its unfinished futures with [`TaskError::BrokerUnavailable`] (default 60 s).
    pub fn reconnect_budget(mut self, budget: Duration) -> Self {
        self.reconnect_budget = budget;
        self
    }

    /// What to do when the broker comes back without its data (default: resubmit).
    pub fn on_data_loss(mut self, policy: OnDataLoss) -> Self {
        self.on_data_loss = policy;
        self
    }

    /// Connects to the broker, creates the queue's stream and group when missing and
    /// this client's result stream, and starts the client's two threads.
    ///
    /// # Errors
    ///
    /// [`BuildError`] naming the problem: no broker given, a URL that does not parse, a
    /// broker that cannot be reached, a bad queue name or an option out of range.
    ///
    /// # Blocking
    ///
    /// Connects (at most 5 s per connection).
    pub fn build(self) -> Result<ClusterExecutor, BuildError> {
        let url = self.broker.as_deref().ok_or_else(|| {
            BuildError::new("no broker given: call .broker(\"redis://host:port/0\")")
        })?;
        let broker = Broker::parse(url)?;
        let keys = Keys::new(&self.queue).map_err(BuildError::new)?;
        if self.window == 0 {
            return Err(BuildError::new("the window must be at least 1"));
        }
        if self.max_deliveries == 0 {
            return Err(BuildError::new("max_deliveries must be at least 1"));
        }
        if self.lease < Duration::from_millis(10) {
            return Err(BuildError::new("the lease must be at least 10 ms"));
        }
        if self.client_ttl < Duration::from_millis(300) {
            return Err(BuildError::new("the client ttl must be at least 300 ms"));
        }
        let io_timeout = READ_BLOCK + Duration::from_secs(10);
        let connect = |what: &str| {
            broker.connect(io_timeout).map_err(|e| {
                BuildError::new(format!(
                    "cannot reach the broker at {} ({what}): {e}",
                    broker.shown()
                ))
            })
        };
        let mut reader_con = connect("reader")?;
        let writer_con = connect("writer")?;
        let client = random_id();
        let results = keys.results(client);
        let hello = start_result_stream(&mut reader_con, &keys, &results, self.client_ttl)
            .map_err(|e| {
                BuildError::new(format!("the broker at {} refused: {e}", broker.shown()))
            })?;
        let (to_writer, commands) = crossbeam_channel::unbounded();
        let inner = Arc::new(Inner {
            broker,
            cancels: keys.cancels(client),
            keys,
            client,
            results,
            lease_ms: millis(self.lease),
            max_deliveries: self.max_deliveries,
            window: self.window,
            client_ttl: self.client_ttl,
            reconnect_budget: self.reconnect_budget,
            on_data_loss: self.on_data_loss,
            io_timeout,
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            to_writer,
            stop: AtomicBool::new(false),
            unexpected_results: AtomicU64::new(0),
            second_runs: AtomicU64::new(0),
        });
        let writer = {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name(String::from("cluster-writer"))
                .spawn(move || writer_loop(&inner, writer_con, &commands))
                .map_err(|e| BuildError::new(format!("cannot start a thread: {e}")))?
        };
        let reader = {
            let inner = Arc::clone(&inner);
            std::thread::Builder::new()
                .name(String::from("cluster-reader"))
                .spawn(move || reader_loop(&inner, reader_con, hello))
                .map_err(|e| BuildError::new(format!("cannot start a thread: {e}")))?
        };
        Ok(ClusterExecutor {
            inner,
            threads: Mutex::new(vec![writer, reader]),
        })
    }
}

/// Creates the task stream and group when missing, and this client's result stream
/// (one hello entry, so that it exists; workers add results only to a stream that
/// exists) with its expiry. Returns the hello entry's id, where reading starts.
fn start_result_stream(
    con: &mut Connection,
    keys: &Keys,
    results: &str,
    ttl: Duration,
) -> Result<String, RedisError> {
    broker::ensure_group(con, &keys.tasks)?;
    let (id, ()): (String, ()) = redis::pipe()
        .cmd("XADD")
        .arg(results)
        .arg("*")
        .arg("hello")
        .arg(1)
        .cmd("PEXPIRE")
        .arg(results)
        .arg(millis(ttl))
        .ignore()
        .query(con)
        .map(|(id,): (String,)| (id, ()))?;
    Ok(id)
}

/// A random client id: std's `RandomState` is seeded from the OS; mixed with the pid
/// and the time so that two clients never share a result stream.
pub(crate) fn random_id() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    if let Ok(now) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        hasher.write_u128(now.as_nanos());
    }
    hasher.finish()
}

/// Runs tasks on the workers of a queue on a Redis broker, across any number of hosts,
/// and hands back the same [`FutureHandle`]s as the local pools: Dask's `Client` as a
/// `concurrent.futures` executor, on Redis Streams.
///
/// A task is a [`Task`] (a plain function under a stable name) that the workers
/// registered; the client sends its name, a fingerprint of its types and the encoded
/// argument. Failures: a task's `Err` is its value and its panic is
/// [`FutureError::Panicked`] (neither is retried); a task whose process dies runs
/// again at once on another delivery, and after `max_deliveries` such deaths fails with
/// [`TaskError::DeliveriesExhausted`] listing each attempt; a worker that vanishes has
/// its tasks claimed by another after their lease. See the crate's README for the
/// design.
///
/// Dropping the executor is `shutdown(true, false)`: it waits for every task, as
/// Python's `with` block does (with no worker serving the queue, until the broker stays
/// away past the reconnect budget; call `shutdown(true, true)` first to give up what is
/// left).
///
/// Not the [`Executor`](concurrent_futures::Executor) trait: its `submit` takes a bare
/// `fn(A) -> R`, which cannot say which name a worker on another host knows the
/// function by (and its `map` returns the core crate's `Map`, which only the core crate
/// can build). `submit` and `map` here take a [`Task`].
///
/// # Examples
///
/// ```no_run
/// use concurrent_futures::as_completed;
/// use concurrent_futures_redis::{ClusterExecutor, Task};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// const SQUARE: Task<u64, u64> = Task::new("square", square);
///
/// let cluster = ClusterExecutor::builder()
///     .broker("redis://127.0.0.1:6379/0")
///     .queue("jobs")
///     .build()?;
/// let handles: Vec<_> = (1..=3)
///     .map(|n| cluster.submit(SQUARE, n))
///     .collect::<Result<_, _>>()?;
/// for handle in as_completed(handles, None) {
///     println!("{}", handle?.result()?);
/// }
/// let squares: Vec<u64> = cluster.map(SQUARE, 1..=1000, 100).collect::<Result<_, _>>()?;
/// assert_eq!(squares[999], 1_000_000);
/// # Ok::<(), anyhow::Error>(())
/// ```
pub struct ClusterExecutor {
    inner: Arc<Inner>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// What the client's threads and its handles share.
struct Inner {
    broker: Broker,
    keys: Keys,
    client: u64,
    results: String,
    cancels: String,
    lease_ms: u64,
    max_deliveries: u32,
    window: usize,
    client_ttl: Duration,
    reconnect_budget: Duration,
    on_data_loss: OnDataLoss,
    io_timeout: Duration,
    state: Mutex<State>,
    /// Notified when a task finishes (window space), on shutdown and on breaking.
    changed: Condvar,
    to_writer: Sender<Command>,
    /// Set when both threads should end (the client shut down and nothing is pending).
    stop: AtomicBool,
    /// Results for tasks that were neither pending nor cancelled: a second result for
    /// one task (which the fence should make impossible). Kept for tests and monitoring.
    unexpected_results: AtomicU64,
    /// Results dropped because they came from a second run of a task that was sent
    /// twice (see `State::in_doubt`).
    second_runs: AtomicU64,
}

/// The client's bookkeeping, under `Inner::state`'s lock.
#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    /// Tasks cancelled while a worker held them: their result (a cancellation, or a
    /// value that raced the cancel) may still come, and is not unexpected.
    cancelled_in_flight: HashSet<u64>,
    /// Tasks sent again after a connection broke during their batch: the broker may
    /// have added them twice, so a second result is expected. Kept until that second
    /// result, or until the client ends (a few per broken connection).
    in_doubt: HashSet<u64>,
    next_seq: u64,
    closed: bool,
    broken: Option<TaskError>,
    max_in_flight: usize,
    submitted: u64,
    completed: u64,
}

/// A task sent and not yet finished.
struct Pending {
    task: &'static str,
    message: Arc<Vec<u8>>,
    /// The task stream entry, once the writer added it.
    entry: Option<String>,
    sink: Box<dyn Sink>,
}

/// Work for the writer thread.
enum Command {
    Submit(u64, Arc<Vec<u8>>),
    Cancel(u64),
    Stop,
}

/// Counters of a [`ClusterExecutor`], from [`ClusterExecutor::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Tasks (messages) submitted.
    pub submitted: u64,
    /// Tasks whose result (or failure) arrived.
    pub completed: u64,
    /// Tasks in flight now.
    pub in_flight: usize,
    /// The most tasks that were in flight at once: never more than the window.
    pub max_in_flight: usize,
    /// Results that arrived for a task that already had one, other than those counted
    /// in `second_runs`: always 0 while the fence holds.
    pub unexpected_results: u64,
    /// Results of a second run of a task that the client sent twice (the connection
    /// broke after the broker took a batch of `XADD`s and before its reply): dropped,
    /// the future kept its first result. Tasks run at least once.
    pub second_runs: u64,
}

impl ClusterExecutor {
    /// A builder: `ClusterExecutor::builder().broker(url).queue(name).build()?`.
    pub fn builder() -> ClusterExecutorBuilder {
        ClusterExecutorBuilder::default()
    }

    /// This client's id (its result stream is `{queue}:r:<id in hex>`).
    pub fn client_id(&self) -> u64 {
        self.inner.client
    }

    /// The counters.
    pub fn stats(&self) -> ClusterStats {
        let state = self.inner.state.lock();
        ClusterStats {
            submitted: state.submitted,
            completed: state.completed,
            in_flight: state.pending.len(),
            max_in_flight: state.max_in_flight,
            unexpected_results: self.inner.unexpected_results.load(Ordering::Relaxed),
            second_runs: self.inner.second_runs.load(Ordering::Relaxed),
        }
    }

    /// Sends `task(arg)` to the queue's workers and returns its handle, Python's
    /// `submit(fn, arg)`.
    ///
    /// `cancel()` on the handle removes a task no worker holds from the stream, and
    /// makes the worker that holds one kill the process running it; either way the
    /// handle is cancelled at once. A cluster task's handle stays pending (not
    /// `is_running()`) until its result arrives: the client does not hear when a
    /// worker starts it.
    ///
    /// # Errors
    ///
    /// [`SubmitError`] with the argument: the executor is shut down or broken, or the
    /// argument cannot be encoded.
    ///
    /// # Blocking
    ///
    /// Blocks while `window` tasks are in flight.
    pub fn submit<A, R>(&self, task: Task<A, R>, arg: A) -> Result<FutureHandle<R>, SubmitError<A>>
    where
        A: Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        let item = match wire::encode(&arg) {
            Ok(item) => item,
            Err(e) => return Err(SubmitError::Encode(Exclusive::new(arg), e)),
        };
        let (completer, handle) = FutureHandle::pending();
        let sink = Box::new(OneSink {
            completer,
            task: task.name(),
        });
        match self.enqueue(task.name(), task.fingerprint(), vec![item], sink) {
            Ok(seq) => {
                self.cancel_on_cancel(&handle, seq);
                Ok(handle)
            }
            Err(Failure::Task(e)) => Err(SubmitError::Broken(Exclusive::new(arg), e)),
            Err(Failure::Cancelled) => Err(SubmitError::ShutDown(Exclusive::new(arg))),
        }
    }

    /// `task` over `items`, ordered and lazy, Python's `map(fn, items)`: `chunksize`
    /// items per message, at most 64 messages of the map in flight (or the executor's
    /// `window`, when smaller), so an endless input runs in constant memory (client and
    /// broker). A failing item is an `Err` at its place and iteration goes on. Dropping
    /// the iterator cancels its chunks in flight.
    ///
    /// A chunk is one delivery: a worker runs its items one by one in its process
    /// pool, and when one of them kills its process, the chunk is delivered again (and
    /// after `max_deliveries`, only the items that killed their process fail).
    ///
    /// # Panics
    ///
    /// When `chunksize` is 0.
    pub fn map<I, A, R>(
        &self,
        task: Task<A, R>,
        items: I,
        chunksize: usize,
    ) -> ClusterMap<'_, I::IntoIter, A, R>
    where
        I: IntoIterator<Item = A>,
        A: Serialize,
        R: DeserializeOwned + Send + 'static,
    {
        assert!(chunksize > 0, "the chunk size must be at least 1");
        ClusterMap {
            executor: self,
            task,
            input: items.into_iter(),
            chunksize,
            window: self.inner.window.min(MAP_WINDOW),
            in_flight: VecDeque::new(),
            current: Vec::new().into_iter(),
            _types: PhantomData,
        }
    }

    /// Stops the executor, Python's `shutdown(wait, cancel_futures)`: later submits are
    /// refused; with `cancel_futures`, every unfinished task is cancelled (removed from
    /// the stream, or stopped by the worker holding it); with `wait`, the call returns
    /// once every task finished, and the client's keys (result stream, cancel set) are
    /// deleted. Idempotent.
    ///
    /// # Blocking
    ///
    /// With `wait`, until every unfinished task completes (or the broker stays away
    /// past the reconnect budget, which fails them).
    pub fn shutdown(&self, wait: bool, cancel_futures: bool) {
        let seqs: Vec<u64> = {
            let mut state = self.inner.state.lock();
            state.closed = true;
            self.inner.changed.notify_all();
            if cancel_futures {
                state.pending.keys().copied().collect()
            } else {
                Vec::new()
            }
        };
        for seq in seqs {
            let _ = self.inner.to_writer.send(Command::Cancel(seq));
        }
        if wait {
            let threads = std::mem::take(&mut *self.threads.lock());
            for thread in threads {
                let _ = thread.join();
            }
        }
    }

    /// Puts a task in the writer's queue once the window has room; returns its
    /// sequence number, or why it was refused.
    fn enqueue(
        &self,
        task: &'static str,
        fingerprint: u64,
        items: Vec<Vec<u8>>,
        sink: Box<dyn Sink>,
    ) -> Result<u64, Failure> {
        let inner = &*self.inner;
        let mut state = inner.state.lock();
        loop {
            if let Some(why) = &state.broken {
                return Err(Failure::Task(why.clone()));
            }
            if state.closed {
                return Err(Failure::Cancelled);
            }
            if state.pending.len() < inner.window {
                break;
            }
            inner.changed.wait(&mut state);
        }
        let seq = state.next_seq;
        state.next_seq += 1;
        let message = TaskMsg {
            client: inner.client,
            seq,
            task: task.to_owned(),
            fingerprint,
            max_deliveries: inner.max_deliveries,
            items,
        };
        // Encoding plain bytes and strings cannot fail.
        let message = Arc::new(wire::encode(&message).unwrap_or_default());
        state.pending.insert(
            seq,
            Pending {
                task,
                message: Arc::clone(&message),
                entry: None,
                sink,
            },
        );
        state.submitted += 1;
        state.max_in_flight = state.max_in_flight.max(state.pending.len());
        drop(state);
        let _ = inner.to_writer.send(Command::Submit(seq, message));
        Ok(seq)
    }

    /// Makes `cancel()` on `handle` reach the broker.
    fn cancel_on_cancel<T>(&self, handle: &FutureHandle<T>, seq: u64) {
        let to_writer = self.inner.to_writer.clone();
        handle.add_done_callback(move |h| {
            if h.is_cancelled() {
                let _ = to_writer.send(Command::Cancel(seq));
            }
        });
    }
}

impl Drop for ClusterExecutor {
    fn drop(&mut self) {
        self.shutdown(true, false);
    }
}

impl fmt::Debug for ClusterExecutor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterExecutor")
            .field("broker", &self.inner.broker.shown())
            .field("queue", &self.inner.keys.tasks)
            .field("client", &format_args!("{:016x}", self.inner.client))
            .field("stats", &self.stats())
            .finish()
    }
}

/// The ordered, lazy results of [`ClusterExecutor::map`].
pub struct ClusterMap<'a, I, A, R> {
    executor: &'a ClusterExecutor,
    task: Task<A, R>,
    input: I,
    chunksize: usize,
    window: usize,
    in_flight: VecDeque<FutureHandle<Vec<Result<R, FutureError>>>>,
    current: std::vec::IntoIter<Result<R, FutureError>>,
    _types: PhantomData<fn(A)>,
}

impl<I, A, R> ClusterMap<'_, I, A, R>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    /// Submits chunks until the window is full or the input ends; an error when the
    /// executor refused one.
    fn fill(&mut self) -> Result<(), FutureError> {
        while self.in_flight.len() < self.window {
            let mut items = Vec::with_capacity(self.chunksize);
            for arg in self.input.by_ref().take(self.chunksize) {
                let item = wire::encode(&arg).map_err(|message| {
                    FutureError::from(TaskError::Worker {
                        task: self.task.name().to_owned(),
                        worker: String::from("client"),
                        message: format!("cannot encode an argument: {message}"),
                    })
                })?;
                items.push(item);
            }
            if items.is_empty() {
                return Ok(());
            }
            let (completer, handle) = FutureHandle::pending();
            let sink = Box::new(ChunkSink {
                completer,
                task: self.task.name(),
                len: items.len(),
                _types: PhantomData,
            });
            match self
                .executor
                .enqueue(self.task.name(), self.task.fingerprint(), items, sink)
            {
                Ok(seq) => {
                    self.executor.cancel_on_cancel(&handle, seq);
                    self.in_flight.push_back(handle);
                }
                Err(Failure::Task(e)) => return Err(e.into()),
                Err(Failure::Cancelled) => {
                    return Err(TaskError::Worker {
                        task: self.task.name().to_owned(),
                        worker: String::from("client"),
                        message: String::from("the executor was shut down"),
                    }
                    .into());
                }
            }
        }
        Ok(())
    }
}

impl<I, A, R> Iterator for ClusterMap<'_, I, A, R>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned + Send + 'static,
{
    type Item = Result<R, FutureError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(item) = self.current.next() {
                return Some(item);
            }
            if let Err(e) = self.fill() {
                return Some(Err(e));
            }
            let handle = self.in_flight.pop_front()?;
            match handle.result() {
                Ok(results) => self.current = results.into_iter(),
                Err(e) => return Some(Err(e)),
            }
        }
    }
}

impl<I, A, R> Drop for ClusterMap<'_, I, A, R> {
    fn drop(&mut self) {
        for handle in &self.in_flight {
            handle.cancel();
        }
    }
}

impl<I, A, R> fmt::Debug for ClusterMap<'_, I, A, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterMap")
            .field("task", &self.task.name())
            .field("chunks_in_flight", &self.in_flight.len())
            .finish_non_exhaustive()
    }
}

impl Inner {
    /// A connection after the broker went away; `None` when the budget ran out (then
    /// the executor is broken and every unfinished future failed).
    fn reconnect(&self) -> Option<Connection> {
        match self
            .broker
            .reconnect(self.io_timeout, &self.stop, self.reconnect_budget)
        {
            Ok(con) => Some(con),
            Err(e) => {
                self.break_with(TaskError::BrokerUnavailable {
                    message: format!("{}: {e}", self.broker.shown()),
                });
                None
            }
        }
    }

    /// Fails every unfinished future and refuses later submits.
    fn break_with(&self, why: TaskError) {
        let sinks: Vec<Box<dyn Sink>> = {
            let mut state = self.state.lock();
            if state.broken.is_none() {
                state.broken = Some(why.clone());
            }
            let sinks = state.pending.drain().map(|(_, p)| p.sink).collect();
            self.changed.notify_all();
            sinks
        };
        for sink in sinks {
            sink.fail(Failure::Task(why.clone()));
        }
    }

    /// True once the client is shut down and nothing is pending (or it broke).
    fn finished(&self) -> bool {
        let state = self.state.lock();
        (state.closed && state.pending.is_empty()) || state.broken.is_some()
    }
}

/// The writer thread: `XADD`s in pipelines, cancellations through the cancel script.
fn writer_loop(inner: &Inner, mut con: Connection, commands: &Receiver<Command>) {
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        let Ok(first) = commands.recv() else { return };
        batch.push(first);
        while batch.len() < WRITE_BATCH {
            match commands.try_recv() {
                Ok(command) => batch.push(command),
                Err(_) => break,
            }
        }
        let mut submits = Vec::new();
        let mut cancels = Vec::new();
        let mut stop = false;
        for command in batch.drain(..) {
            match command {
                Command::Submit(seq, message) => submits.push((seq, message)),
                Command::Cancel(seq) => cancels.push(seq),
                Command::Stop => stop = true,
            }
        }
        if !submits.is_empty() {
            let mut tries = 0;
            let Some(ids) = run_retrying(inner, &mut con, |con| {
                tries += 1;
                if tries == 2 {
                    // The connection broke after the batch was sent: the broker may have
                    // added some of it, which now go in twice (their second results are
                    // expected, and dropped).
                    let mut state = inner.state.lock();
                    state.in_doubt.extend(submits.iter().map(|(seq, _)| *seq));
                }
                add_tasks(inner, con, &submits)
            }) else {
                return;
            };
            let mut state = inner.state.lock();
            for ((seq, _), id) in submits.iter().zip(ids) {
                if let Some(pending) = state.pending.get_mut(seq) {
                    pending.entry = Some(id);
                }
            }
        }
        for seq in cancels {
            let pending = {
                let mut state = inner.state.lock();
                let Some(pending) = state.pending.remove(&seq) else {
                    continue;
                };
                // Before the cancel script runs: the worker's answer (its cancellation,
                // or a result that raced it) may reach the reader first.
                if pending.entry.is_some() {
                    state.cancelled_in_flight.insert(seq);
                }
                pending
            };
            inner.changed.notify_all();
            pending.sink.fail(Failure::Cancelled);
            let Some(entry) = pending.entry else { continue };
            let Some(outcome) = run_retrying(inner, &mut con, |con| {
                scripts::CANCEL
                    .key(&inner.keys.tasks)
                    .key(&inner.cancels)
                    .arg(GROUP)
                    .arg(&entry)
                    .arg(seq)
                    .arg(&inner.keys.cancel_channel)
                    .arg(wire::task_key(inner.client, seq))
                    .arg(millis(inner.client_ttl))
                    .invoke::<i64>(con)
            }) else {
                return;
            };
            if outcome == 1 {
                // Removed before any worker took it: no answer will come.
                inner.state.lock().cancelled_in_flight.remove(&seq);
            }
        }
        if stop {
            return;
        }
    }
}

/// `XADD`s a batch of tasks in one pipeline; returns their entry ids.
fn add_tasks(
    inner: &Inner,
    con: &mut Connection,
    submits: &[(u64, Arc<Vec<u8>>)],
) -> Result<Vec<String>, RedisError> {
    let mut pipe = redis::pipe();
    for (seq, message) in submits {
        pipe.cmd("XADD")
            .arg(&inner.keys.tasks)
            .arg("*")
            .arg(FIELD_TASK)
            .arg(message.as_slice())
            .arg(FIELD_LEASE)
            .arg(inner.lease_ms)
            .arg(FIELD_KEY)
            .arg(wire::task_key(inner.client, *seq));
    }
    pipe.query(con)
}

/// Runs `op`, reconnecting and running it again after a connection error (a batch of
/// `XADD`s that reached the broker before the connection broke is then added twice:
/// its tasks may run twice, and their futures still get one result each). `None` when
/// the broker stayed away past the budget, or on another error (the executor broke).
fn run_retrying<T>(
    inner: &Inner,
    con: &mut Connection,
    mut op: impl FnMut(&mut Connection) -> Result<T, RedisError>,
) -> Option<T> {
    loop {
        match op(con) {
            Ok(value) => return Some(value),
            Err(e) if is_connection_error(&e) || e.code() == Some("LOADING") => {
                *con = inner.reconnect()?;
            }
            Err(e) if broker::is_nogroup(&e) => {
                // The broker lost the queue (the reader deals with the data loss).
                if broker::ensure_group(con, &inner.keys.tasks).is_err() {
                    *con = inner.reconnect()?;
                }
            }
            Err(e) => {
                inner.break_with(TaskError::BrokerUnavailable {
                    message: format!("{} answered: {e}", inner.broker.shown()),
                });
                return None;
            }
        }
    }
}

/// The reader thread: results in, futures completed, heartbeats out.
fn reader_loop(inner: &Inner, mut con: Connection, hello: String) {
    let mut last = hello;
    let ttl_ms = millis(inner.client_ttl);
    let beat_every = inner.client_ttl / 3;
    let mut last_beat = std::time::Instant::now();
    loop {
        if inner.finished() {
            break;
        }
        if last_beat.elapsed() >= beat_every {
            last_beat = std::time::Instant::now();
            let beat: Result<(i64, ()), RedisError> = redis::pipe()
                .cmd("PEXPIRE")
                .arg(&inner.results)
                .arg(ttl_ms)
                .cmd("PEXPIRE")
                .arg(&inner.cancels)
                .arg(ttl_ms)
                .ignore()
                .query(&mut con)
                .map(|(alive,): (i64,)| (alive, ()));
            match beat {
                Ok((1, ())) => {}
                Ok(_) => {
                    if !recover_lost_data(inner, &mut con, &mut last) {
                        break;
                    }
                }
                Err(_) => {
                    let Some(fresh) = inner.reconnect() else {
                        break;
                    };
                    con = fresh;
                    if !check_after_reconnect(inner, &mut con, &mut last) {
                        break;
                    }
                }
            }
        }
        let read: Result<Value, RedisError> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(READ_BATCH)
            .arg("BLOCK")
            .arg(millis(READ_BLOCK))
            .arg("STREAMS")
            .arg(&inner.results)
            .arg(&last)
            .query(&mut con);
        let entries = match read {
            Ok(value) => wire::parse_read(value),
            Err(_) => {
                let Some(fresh) = inner.reconnect() else {
                    break;
                };
                con = fresh;
                if !check_after_reconnect(inner, &mut con, &mut last) {
                    break;
                }
                continue;
            }
        };
        if entries.is_empty() {
            continue;
        }
        let mut done = Vec::with_capacity(entries.len());
        for entry in &entries {
            let seq = entry
                .field(FIELD_SEQ)
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse::<u64>().ok());
            // A worker that could not read the task (another version) says so in plain
            // text; a result this client cannot read fails its task. Either way the
            // future ends instead of waiting.
            let undecodable = match (entry.field(FIELD_RESULT), entry.field(FIELD_ERROR)) {
                (Some(bytes), _) => match wire::decode::<ResultMsg>(bytes) {
                    Ok(result) => {
                        done.push(result);
                        continue;
                    }
                    Err(e) => format!("the worker's result does not decode: {e}"),
                },
                (None, Some(text)) => String::from_utf8_lossy(text).into_owned(),
                (None, None) => continue, // the hello entry
            };
            match seq {
                Some(seq) => done.push(ResultMsg {
                    seq,
                    outcome: Outcome::Failed(TaskError::Undecodable {
                        message: undecodable,
                    }),
                }),
                None => eprintln!(
                    "concurrent-futures-redis: an entry in {} names no task ({undecodable}); ignored",
                    inner.results
                ),
            }
        }
        if let Some(entry) = entries.last() {
            last.clone_from(&entry.id);
        }
        let mut finished = Vec::with_capacity(done.len());
        {
            let mut state = inner.state.lock();
            for result in done {
                if let Some(pending) = state.pending.remove(&result.seq) {
                    state.completed += 1;
                    finished.push((pending.sink, result.outcome));
                } else if state.in_doubt.remove(&result.seq) {
                    inner.second_runs.fetch_add(1, Ordering::Relaxed);
                } else if !state.cancelled_in_flight.remove(&result.seq) {
                    inner.unexpected_results.fetch_add(1, Ordering::Relaxed);
                }
            }
            inner.changed.notify_all();
        }
        for (sink, outcome) in finished {
            sink.finish(outcome);
        }
        // Read results are of no further use: trim them (all but the last, which a trim
        // to its own id keeps) so the stream stays small. A trim frees whole nodes,
        // far cheaper for the broker than deleting entries one by one.
        let _: Result<(), RedisError> = redis::cmd("XTRIM")
            .arg(&inner.results)
            .arg("MINID")
            .arg(&last)
            .query(&mut con);
    }
    inner.stop.store(true, Ordering::Release);
    let _ = inner.to_writer.send(Command::Stop);
    // The client leaves nothing behind.
    let _: Result<(), RedisError> = redis::cmd("DEL")
        .arg(&inner.results)
        .arg(&inner.cancels)
        .query(&mut con);
}

/// After a reconnect: when the result stream is gone, the broker lost its data.
/// Returns false when the client should stop.
fn check_after_reconnect(inner: &Inner, con: &mut Connection, last: &mut String) -> bool {
    match redis::cmd("EXISTS").arg(&inner.results).query::<i64>(con) {
        Ok(1) => true,
        Ok(_) => recover_lost_data(inner, con, last),
        Err(_) => true, // the next read reconnects again
    }
}

/// The broker lost this client's data: start a new result stream, and resubmit or fail
/// every unfinished task. Returns false when the client should stop.
fn recover_lost_data(inner: &Inner, con: &mut Connection, last: &mut String) -> bool {
    match start_result_stream(con, &inner.keys, &inner.results, inner.client_ttl) {
        Ok(hello) => *last = hello,
        Err(_) => return true, // retried at the next heartbeat
    }
    eprintln!(
        "concurrent-futures-redis: the broker at {} lost this client's data; {} unfinished tasks",
        inner.broker.shown(),
        match inner.on_data_loss {
            OnDataLoss::Resubmit => "resubmitting its",
            OnDataLoss::Fail => "failing its",
        }
    );
    match inner.on_data_loss {
        OnDataLoss::Resubmit => {
            let again: Vec<(u64, Arc<Vec<u8>>)> = {
                let mut state = inner.state.lock();
                state.cancelled_in_flight.clear();
                state
                    .pending
                    .iter_mut()
                    .map(|(seq, p)| {
                        p.entry = None;
                        (*seq, Arc::clone(&p.message))
                    })
                    .collect()
            };
            for (seq, message) in again {
                let _ = inner.to_writer.send(Command::Submit(seq, message));
            }
        }
        OnDataLoss::Fail => {
            let lost: Vec<(&'static str, Box<dyn Sink>)> = {
                let mut state = inner.state.lock();
                let lost = state
                    .pending
                    .drain()
                    .map(|(_, p)| (p.task, p.sink))
                    .collect();
                inner.changed.notify_all();
                lost
            };
            for (task, sink) in lost {
                sink.fail(Failure::Task(TaskError::BrokerDataLost {
                    task: task.to_owned(),
                }));
            }
        }
    }
    true
}
