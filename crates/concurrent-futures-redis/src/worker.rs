//! [`Worker`]: turns a process into a worker of one queue. A fetch loop pulls batches
//! with `XREADGROUP` (and reclaims entries whose lease expired), runs each item in the
//! local [`ProcessPoolExecutor`], and a commit thread settles each entry through the
//! fenced scripts and sends the heartbeats; a listener thread stops cancelled tasks.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use concurrent_futures::{FutureError, FutureHandle, ProcessPoolExecutor, ThreadPoolExecutor};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::{Condvar, Mutex};
use redis::{Connection, RedisError, Value};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::broker::{self, Broker, is_connection_error, millis};
use crate::error::{Attempt, BuildError, RunError, TaskError};
use crate::scripts;
use crate::task::Task;
use crate::wire::{
    self, Entry, FIELD_ATTEMPTS, FIELD_ERROR, FIELD_KEY, FIELD_LEASE, FIELD_RESULT, FIELD_SEQ,
    FIELD_TASK, FIELD_WHY, GROUP, ItemOutcome, Keys, Outcome, ResultMsg, TaskMsg,
};

/// The lease of an entry without one (written by another client version).
const DEFAULT_LEASE_MS: u64 = 10_000;
/// How often a worker looks for entries whose lease expired, at most.
const RECLAIM_EVERY_MAX: Duration = Duration::from_millis(500);
/// How many pending entries one reclaim call looks at.
const RECLAIM_PAGE: usize = 100;
/// Cancellations remembered for tasks this worker does not hold (yet).
const RECENT_CANCELS: usize = 10_000;
/// How many settled entries the commit thread puts in one script call at most.
const COMMIT_BATCH: usize = 512;
/// While the oldest pending entry is older than an entry by this much, the commit
/// deletes the entry at once instead of leaving it to the trim (see `scripts::COMMIT`).
const PIN_MS: u64 = 1000;
/// How often a worker that committed trims the task stream.
const TRIM_EVERY: Duration = Duration::from_millis(100);

/// What a registered task looks like to the worker: its fingerprint and how to start
/// one item of it in the pool.
struct Registered {
    fingerprint: u64,
    start: Box<StartFn>,
}

/// Where a worker runs its tasks: its process pool (children), and a thread pool for
/// tasks registered as I/O bound ([`WorkerBuilder::register_io`]). Each is built only
/// when a task needs it.
struct Pools {
    processes: Option<ProcessPoolExecutor>,
    threads: Option<ThreadPoolExecutor>,
}

/// Decodes one item's argument, submits it to its pool and arranges for `done` to get
/// its end; returns what stops it, or the item's end when it could not start.
type StartFn = dyn Fn(&Pools, &[u8], Done) -> Result<Box<dyn Stop>, ItemEnd> + Send + Sync;

/// Receives one item's end.
type Done = Box<dyn FnOnce(ItemEnd) + Send>;

/// Stops a running item (the pool kills the child running it).
trait Stop: Send {
    fn stop(&self);
}

impl<R: Send> Stop for FutureHandle<R> {
    fn stop(&self) {
        self.cancel();
    }
}

/// How one item ended in the pool.
#[derive(Debug)]
enum ItemEnd {
    Outcome(ItemOutcome),
    /// The child running it died: it may run again.
    Died {
        pid: Option<u32>,
        signal: Option<i32>,
        exit_code: Option<i32>,
    },
    /// Stopped by a cancellation or a lost lease.
    Cancelled,
}

/// Builds a [`Worker`]: `Worker::builder().broker(url).queue(name).register(TASK)`.
#[must_use]
pub struct WorkerBuilder {
    broker: Option<String>,
    queue: String,
    procs: Option<usize>,
    prefetch: usize,
    reconnect_budget: Duration,
    registry: HashMap<&'static str, Registered>,
    problems: Vec<String>,
    needs_processes: bool,
    needs_threads: bool,
    threads: usize,
}

impl fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut tasks: Vec<_> = self.registry.keys().collect();
        tasks.sort();
        f.debug_struct("WorkerBuilder")
            .field("broker", &self.broker)
            .field("queue", &self.queue)
            .field("procs", &self.procs)
            .field("prefetch", &self.prefetch)
            .field("tasks", &tasks)
            .finish()
    }
}

impl Default for WorkerBuilder {
    fn default() -> Self {
        Self {
            broker: None,
            queue: String::from("default"),
            procs: None,
            prefetch: 256,
            reconnect_budget: Duration::from_secs(300),
            registry: HashMap::new(),
            problems: Vec::new(),
            needs_processes: false,
            needs_threads: false,
            threads: 32,
        }
    }
}

impl WorkerBuilder {
    /// The broker: `redis://host:port/db` or `redis+unix:///path/to/redis.sock`
    /// (required).
    pub fn broker(mut self, url: impl Into<String>) -> Self {
        self.broker = Some(url.into());
        self
    }

    /// The queue to serve (default `default`).
    pub fn queue(mut self, name: impl Into<String>) -> Self {
        self.queue = name.into();
        self
    }

    /// How many child processes run tasks (default: one per CPU).
    pub fn procs(mut self, n: usize) -> Self {
        self.procs = Some(n);
        self
    }

    /// How many task entries this worker holds at most (running or waiting for a
    /// child), default 256: large for tiny tasks (one broker round trip serves many),
    /// small (the number of procs) for long tasks, so that other workers take the rest.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n;
        self
    }

    /// How long the worker keeps trying to reach a broker that went away before `run`
    /// returns an error (default 5 minutes).
    pub fn reconnect_budget(mut self, budget: Duration) -> Self {
        self.reconnect_budget = budget;
        self
    }

    /// Registers a task: entries naming it (with its fingerprint) run it, each call in
    /// a child process of the worker's process pool (a crash kills the child, and the
    /// task is delivered again). Registering one name twice with different signatures
    /// is a build error.
    pub fn register<A, R>(self, task: Task<A, R>) -> Self
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let f = task.function();
        let mut this = self;
        this.needs_processes = true;
        this.insert(task.name(), task.fingerprint(), move |pools, arg: A| {
            let pool = pools.processes.as_ref().ok_or("no process pool")?;
            pool.submit(f, arg).map_err(|e| e.to_string())
        })
    }

    /// Registers an I/O-bound task (a download, a database call): it runs on a thread
    /// of the worker's thread pool (`threads`, default 32) instead of a child process,
    /// so many wait at once without a process each. A panic fails its future as
    /// usual; a crash would take the worker with it, and a running call cannot be
    /// stopped: cancelling it (or losing its lease) throws its result away when it
    /// returns.
    pub fn register_io<A, R>(self, task: Task<A, R>) -> Self
    where
        A: Serialize + DeserializeOwned + Send + 'static,
        R: Serialize + DeserializeOwned + Send + 'static,
    {
        let f = task.function();
        let mut this = self;
        this.needs_threads = true;
        this.insert(task.name(), task.fingerprint(), move |pools, arg: A| {
            let pool = pools.threads.as_ref().ok_or("no thread pool")?;
            pool.submit(move || f(arg)).map_err(|e| e.to_string())
        })
    }

    /// How many threads run I/O-bound tasks (default 32).
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n;
        self
    }

    /// Adds a task whose items `submit` starts in one of the pools.
    fn insert<A, R, S>(mut self, name: &'static str, fingerprint: u64, submit: S) -> Self
    where
        A: DeserializeOwned + 'static,
        R: Serialize + Send + 'static,
        S: Fn(&Pools, A) -> Result<FutureHandle<R>, String> + Send + Sync + 'static,
    {
        if let Some(known) = self.registry.get(name) {
            if known.fingerprint != fingerprint {
                self.problems.push(format!(
                    "the task {name:?} is registered twice with different signatures"
                ));
            }
            return self;
        }
        let start =
            move |pools: &Pools, bytes: &[u8], done: Done| -> Result<Box<dyn Stop>, ItemEnd> {
                let arg: A = wire::decode(bytes).map_err(|message| {
                    ItemEnd::Outcome(ItemOutcome::Failed(TaskError::ArgumentDecode {
                        task: name.to_owned(),
                        worker: identity().0,
                        message,
                    }))
                })?;
                let handle = submit(pools, arg).map_err(|message| {
                    ItemEnd::Outcome(ItemOutcome::Failed(TaskError::Worker {
                        task: name.to_owned(),
                        worker: identity().0,
                        message,
                    }))
                })?;
                handle.add_done_callback(move |h| {
                    let end = h
                        .try_with_result(|result| item_end(name, result))
                        .unwrap_or(ItemEnd::Cancelled);
                    done(end);
                });
                Ok(Box::new(handle))
            };
        self.registry.insert(
            name,
            Registered {
                fingerprint,
                start: Box::new(start),
            },
        );
        self
    }

    /// Checks the options, connects to the broker (creating the queue's stream and
    /// group when missing) and starts the local process pool.
    ///
    /// # Errors
    ///
    /// [`BuildError`] naming the problem: no broker, a URL that does not parse, a
    /// broker that cannot be reached, no task registered, a name registered twice with
    /// different signatures, or a process pool that cannot start (the program's `main`
    /// must call [`concurrent_futures::process_worker_main`] first).
    pub fn build(self) -> Result<Worker, BuildError> {
        if let Some(problem) = self.problems.first() {
            return Err(BuildError::new(problem.clone()));
        }
        let url = self.broker.as_deref().ok_or_else(|| {
            BuildError::new("no broker given: call .broker(\"redis://host:port/0\")")
        })?;
        let broker = Broker::parse(url)?;
        let keys = Keys::new(&self.queue).map_err(BuildError::new)?;
        if self.registry.is_empty() {
            return Err(BuildError::new(
                "no task registered: call .register(TASK) for each task this worker runs",
            ));
        }
        if self.prefetch == 0 {
            return Err(BuildError::new("prefetch must be at least 1"));
        }
        let io_timeout = Duration::from_secs(15);
        let mut con = broker.connect(io_timeout).map_err(|e| {
            BuildError::new(format!(
                "cannot reach the broker at {}: {e}",
                broker.shown()
            ))
        })?;
        broker::ensure_group(&mut con, &keys.tasks).map_err(|e| {
            BuildError::new(format!("the broker at {} refused: {e}", broker.shown()))
        })?;
        let processes = if self.needs_processes {
            let mut pool = ProcessPoolExecutor::builder();
            if let Some(procs) = self.procs {
                pool = pool.max_workers(procs);
            }
            Some(pool.build().map_err(|e| {
                BuildError::new(format!(
                    "the worker's process pool cannot start: {e} (does main call concurrent_futures::process_worker_main() first?)"
                ))
            })?)
        } else {
            None
        };
        let threads = if self.needs_threads {
            Some(
                ThreadPoolExecutor::builder()
                    .max_workers(self.threads)
                    .thread_name_prefix("cluster-io")
                    .build()
                    .map_err(|e| {
                        BuildError::new(format!("the worker's thread pool cannot start: {e}"))
                    })?,
            )
        } else {
            None
        };
        let consumer = format!("{}:{:04x}", identity().0, crate::client_tag());
        Ok(Worker {
            shared: Arc::new(Shared {
                broker,
                keys,
                consumer,
                host: host_name(),
                registry: self.registry,
                pools: Pools { processes, threads },
                prefetch: self.prefetch,
                reconnect_budget: self.reconnect_budget,
                io_timeout,
                held: Mutex::new(Held::default()),
                space: Condvar::new(),
                stop: Arc::new(AtomicBool::new(false)),
                failed: Mutex::new(None),
            }),
            con,
        })
    }
}

/// A worker of one queue: [`run`](Self::run) serves tasks until stopped.
///
/// A program becomes a worker in three lines (this is what `flags worker --broker URL`
/// does):
///
/// ```no_run
/// use concurrent_futures_redis::{Task, Worker};
///
/// fn square(x: u64) -> u64 {
///     x * x
/// }
/// const SQUARE: Task<u64, u64> = Task::new("square", square);
///
/// fn main() -> anyhow::Result<()> {
///     concurrent_futures::process_worker_main(); // the pool's children stop here
///     Worker::builder()
///         .broker("redis://10.0.0.5:6379/0")
///         .queue("jobs")
///         .register(SQUARE)
///         .build()?
///         .run()?;
///     Ok(())
/// }
/// ```
pub struct Worker {
    shared: Arc<Shared>,
    con: Connection,
}

/// Stops a running [`Worker`] from another thread (a signal handler thread, a test).
#[derive(Debug, Clone)]
pub struct StopHandle(Arc<AtomicBool>);

impl StopHandle {
    /// Asks the worker to stop: it takes no more tasks, finishes and commits those it
    /// holds, and `run` returns.
    pub fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }
}

/// What the worker's threads share.
struct Shared {
    broker: Broker,
    keys: Keys,
    /// This worker's consumer name in the group: `host:pid:tag`.
    consumer: String,
    host: String,
    registry: HashMap<&'static str, Registered>,
    pools: Pools,
    prefetch: usize,
    reconnect_budget: Duration,
    io_timeout: Duration,
    held: Mutex<Held>,
    /// Notified when an entry is settled (room to fetch) and on stop.
    space: Condvar,
    stop: Arc<AtomicBool>,
    /// Why a thread gave up (the broker stayed away).
    failed: Mutex<Option<String>>,
}

/// The entries this worker holds, under one lock.
#[derive(Default)]
struct Held {
    entries: HashMap<String, HeldEntry>,
    by_task: HashMap<(u64, u64), String>,
    recent_cancels: VecDeque<(u64, u64)>,
    recent_set: HashSet<(u64, u64)>,
}

/// One entry this worker holds.
struct HeldEntry {
    client: u64,
    seq: u64,
    lease_ms: u64,
    cancelled: bool,
    stops: Vec<Box<dyn Stop>>,
}

impl Held {
    fn remove(&mut self, entry: &str) -> Option<HeldEntry> {
        let held = self.entries.remove(entry)?;
        self.by_task.remove(&(held.client, held.seq));
        Some(held)
    }

    fn remember_cancel(&mut self, task: (u64, u64)) {
        if self.recent_set.insert(task) {
            self.recent_cancels.push_back(task);
            if self.recent_cancels.len() > RECENT_CANCELS
                && let Some(old) = self.recent_cancels.pop_front()
            {
                self.recent_set.remove(&old);
            }
        }
    }
}

/// An entry taken from the stream, ready to settle once its items ended.
struct Taken {
    entry: String,
    message: TaskMsg,
    raw: Vec<u8>,
    attempts: Vec<Attempt>,
    lease_ms: u64,
}

/// What the commit thread settles.
enum Settle {
    /// Every item of a running entry ended.
    Ran(Arc<Taken>, Vec<ItemEnd>),
    /// An entry settled without running: unknown task, cancelled.
    Now(Arc<Taken>, Outcome),
    /// An entry whose client is gone (its result stream expired): removed unrun.
    ClientGone(Arc<Taken>),
}

/// Collects the ends of one entry's items; the last one hands the entry to the commit
/// thread.
struct Collector {
    taken: Arc<Taken>,
    ends: Mutex<(Vec<Option<ItemEnd>>, usize)>,
    settle: Sender<Settle>,
}

impl Collector {
    fn put(&self, index: usize, end: ItemEnd) {
        let ends = {
            let mut slots = self.ends.lock();
            if slots.0[index].is_none() {
                slots.0[index] = Some(end);
                slots.1 -= 1;
            }
            if slots.1 > 0 {
                return;
            }
            std::mem::take(&mut slots.0)
        };
        let ends = ends
            .into_iter()
            .map(|end| end.unwrap_or(ItemEnd::Cancelled))
            .collect();
        let _ = self.settle.send(Settle::Ran(Arc::clone(&self.taken), ends));
    }
}

impl Worker {
    /// A builder.
    pub fn builder() -> WorkerBuilder {
        WorkerBuilder::default()
    }

    /// This worker's consumer name in the queue's group (`host:pid:tag`).
    pub fn consumer(&self) -> &str {
        &self.shared.consumer
    }

    /// A handle that stops [`run`](Self::run) from another thread.
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle(Arc::clone(&self.shared.stop))
    }

    /// Serves tasks until [`StopHandle::stop`]: fetches batches, runs them in the
    /// process pool, commits their results, sends heartbeats, reclaims the tasks of
    /// workers that vanished, and reconnects with backoff when the broker goes away.
    ///
    /// # Errors
    ///
    /// [`RunError`] when the broker stayed unreachable past the reconnect budget.
    ///
    /// # Blocking
    ///
    /// Until stopped.
    pub fn run(mut self) -> Result<(), RunError> {
        let shared = Arc::clone(&self.shared);
        let (settle_tx, settle_rx) = crossbeam_channel::unbounded();
        let committer = {
            let shared = Arc::clone(&shared);
            let con = shared
                .connect_retrying()
                .ok_or_else(|| RunError::new(shared.failure()))?;
            std::thread::Builder::new()
                .name(String::from("cluster-commit"))
                .spawn(move || commit_loop(&shared, con, &settle_rx))
                .map_err(|e| RunError::new(format!("cannot start a thread: {e}")))?
        };
        let listener = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(String::from("cluster-cancels"))
                .spawn(move || cancel_loop(&shared))
                .map_err(|e| RunError::new(format!("cannot start a thread: {e}")))?
        };
        fetch_loop(&shared, &mut self.con, &settle_tx);
        // Stopped: wait for what this worker holds, then end the threads.
        {
            let mut held = shared.held.lock();
            while !held.entries.is_empty() && shared.failed.lock().is_none() {
                shared.space.wait_for(&mut held, Duration::from_millis(200));
            }
        }
        shared.stop.store(true, Ordering::Release);
        drop(settle_tx);
        let _ = committer.join();
        let _ = listener.join();
        if let Some(pool) = &shared.pools.processes {
            pool.shutdown(true, true);
        }
        if let Some(pool) = &shared.pools.threads {
            pool.shutdown(true, true);
        }
        match shared.failed.lock().take() {
            Some(why) => Err(RunError::new(why)),
            None => Ok(()),
        }
    }
}

impl fmt::Debug for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("broker", &self.shared.broker.shown())
            .field("queue", &self.shared.keys.tasks)
            .field("consumer", &self.shared.consumer)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn stopping(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    fn failure(&self) -> String {
        self.failed
            .lock()
            .clone()
            .unwrap_or_else(|| String::from("stopped"))
    }

    /// A new connection, retried with backoff; `None` (and the failure recorded, the
    /// worker stopping) after the budget.
    fn connect_retrying(&self) -> Option<Connection> {
        let never = AtomicBool::new(false);
        match self
            .broker
            .reconnect(self.io_timeout, &never, self.reconnect_budget)
        {
            Ok(con) => Some(con),
            Err(e) => {
                let why = format!(
                    "the broker at {} stayed unreachable for {:?}: {e}",
                    self.broker.shown(),
                    self.reconnect_budget
                );
                self.failed.lock().get_or_insert(why);
                self.stop.store(true, Ordering::Release);
                self.space.notify_all();
                None
            }
        }
    }

    /// Runs `op`, reconnecting after connection errors (and recreating the group when
    /// the broker lost it). `None` when the broker stayed away past the budget.
    fn retrying<T>(
        &self,
        con: &mut Connection,
        mut op: impl FnMut(&mut Connection) -> Result<T, RedisError>,
    ) -> Option<T> {
        let mut refusals = 0;
        loop {
            match op(con) {
                Ok(value) => return Some(value),
                Err(e) if broker::is_nogroup(&e) => {
                    if broker::ensure_group(con, &self.keys.tasks).is_err() {
                        *con = self.connect_retrying()?;
                    }
                }
                Err(e) if is_connection_error(&e) || e.code() == Some("LOADING") => {
                    *con = self.connect_retrying()?;
                }
                Err(e) => {
                    // Not a connection problem: the broker refuses what the worker asks
                    // (a script error, a server that is not Redis 6.2 or later). Try
                    // again on a new connection, then stop with the broker's words.
                    refusals += 1;
                    if refusals >= 3 {
                        let why = format!(
                            "the broker at {} keeps refusing the worker's commands: {e}",
                            self.broker.shown()
                        );
                        eprintln!("concurrent-futures-redis worker {}: {why}", self.consumer);
                        self.failed.lock().get_or_insert(why);
                        self.stop.store(true, Ordering::Release);
                        self.space.notify_all();
                        return None;
                    }
                    *con = self.connect_retrying()?;
                }
            }
        }
    }

    fn attempt(&self, pid: Option<u32>, signal: Option<i32>, exit_code: Option<i32>) -> Attempt {
        Attempt {
            host: self.host.clone(),
            worker_pid: std::process::id(),
            child_pid: pid,
            exit_code,
            signal,
            lease_expired: false,
        }
    }
}

/// This worker's host and pid, as `host:pid` and the pid.
fn identity() -> (String, u32) {
    let pid = std::process::id();
    (format!("{}:{pid}", host_name()), pid)
}

/// The host's name (`/proc/sys/kernel/hostname`), or `localhost`.
fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().replace(':', "_"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| String::from("localhost"))
}

/// How a pool future ended, as an item's end.
fn item_end<R: Serialize>(task: &str, result: Result<&R, &FutureError>) -> ItemEnd {
    match result {
        Ok(value) => match wire::encode(value) {
            Ok(bytes) => ItemEnd::Outcome(ItemOutcome::Value(bytes)),
            Err(message) => ItemEnd::Outcome(ItemOutcome::Failed(TaskError::Worker {
                task: task.to_owned(),
                worker: identity().0,
                message: format!("cannot encode the result: {message}"),
            })),
        },
        Err(FutureError::Panicked(p)) => ItemEnd::Outcome(ItemOutcome::Panicked {
            message: p.message().to_owned(),
            location: p
                .location()
                .map(|at| (at.file().to_owned(), at.line(), at.column())),
        }),
        Err(FutureError::Cancelled) => ItemEnd::Cancelled,
        Err(FutureError::WorkerFailed(w)) if w.is_died() || w.is_killed_by_pool() => {
            ItemEnd::Died {
                pid: w.pid(),
                signal: w.signal(),
                exit_code: w.exit_code(),
            }
        }
        Err(e) => ItemEnd::Outcome(ItemOutcome::Failed(TaskError::Worker {
            task: task.to_owned(),
            worker: identity().0,
            message: e.to_string(),
        })),
    }
}

/// The fetch loop: reclaim, read a batch, start it; until stopped.
fn fetch_loop(shared: &Arc<Shared>, con: &mut Connection, settle: &Sender<Settle>) {
    let mut cursor = String::new();
    let mut last_reclaim: Option<Instant> = None;
    let mut min_lease = Duration::from_millis(DEFAULT_LEASE_MS);
    while !shared.stopping() {
        let reclaim_every = (min_lease / 4).clamp(Duration::from_millis(10), RECLAIM_EVERY_MAX);
        let room = {
            let mut held = shared.held.lock();
            if held.entries.len() >= shared.prefetch {
                shared.space.wait_for(&mut held, reclaim_every);
            }
            shared.prefetch.saturating_sub(held.entries.len())
        };
        if last_reclaim.is_none_or(|at| at.elapsed() >= reclaim_every) {
            last_reclaim = Some(Instant::now());
            if !reclaim(shared, con, &mut cursor) {
                return;
            }
        }
        if room == 0 {
            continue;
        }
        let Some(read) = shared.retrying(con, |con| {
            redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(GROUP)
                .arg(&shared.consumer)
                .arg("COUNT")
                .arg(room)
                .arg("BLOCK")
                .arg(millis(reclaim_every).max(1))
                .arg("STREAMS")
                .arg(&shared.keys.tasks)
                .arg(">")
                .query::<Value>(con)
        }) else {
            return;
        };
        let entries = wire::parse_read(read);
        if entries.is_empty() {
            continue;
        }
        let Some(taken) = take_entries(shared, con, entries) else {
            return;
        };
        for taken in &taken {
            min_lease = min_lease.min(Duration::from_millis(taken.lease_ms));
        }
        if !start_entries(shared, con, taken, settle) {
            return;
        }
    }
}

/// Decodes fetched entries; dead-letters those that do not decode.
fn take_entries(shared: &Shared, con: &mut Connection, entries: Vec<Entry>) -> Option<Vec<Taken>> {
    let mut taken = Vec::with_capacity(entries.len());
    for entry in entries {
        let raw = entry.field(FIELD_TASK).unwrap_or_default().to_vec();
        let message = match TaskMsg::read(&entry) {
            Ok(message) => message,
            Err(e) => {
                let why = format!("the task message does not decode: {e}");
                eprintln!(
                    "concurrent-futures-redis worker {}: entry {} of {}: {why}; moved to {}",
                    shared.consumer, entry.id, shared.keys.tasks, shared.keys.dead
                );
                dead_letter_raw(shared, con, &entry, &raw, &why)?;
                continue;
            }
        };
        let attempts = wire::decode_attempts(entry.field(FIELD_ATTEMPTS)).unwrap_or_default();
        let lease_ms = entry
            .field(FIELD_LEASE)
            .and_then(|l| std::str::from_utf8(l).ok())
            .and_then(|l| l.parse().ok())
            .unwrap_or(DEFAULT_LEASE_MS);
        taken.push(Taken {
            entry: entry.id,
            message,
            raw,
            attempts,
            lease_ms,
        });
    }
    Some(taken)
}

/// Moves an entry that does not decode to the dead-letter stream, and when its plain
/// key names its client and task, tells the client why (field `e`), so that its future
/// fails instead of waiting.
fn dead_letter_raw(
    shared: &Shared,
    con: &mut Connection,
    entry: &Entry,
    raw: &[u8],
    why: &str,
) -> Option<()> {
    let owner = entry.field(FIELD_KEY).and_then(wire::parse_task_key);
    let answer = format!(
        "worker {} could not read the task: {why} (a client and workers of different versions?)",
        shared.consumer
    );
    shared.retrying(con, |con| {
        let mut call = scripts::MOVE.prepare_invoke();
        call.key(&shared.keys.tasks).key(&shared.keys.dead);
        match owner {
            Some((client, seq)) => {
                call.key(shared.keys.results(client))
                    .key(shared.keys.cancels(client))
                    .arg(GROUP)
                    .arg(&shared.consumer)
                    .arg(&entry.id)
                    .arg(4)
                    .arg(FIELD_SEQ)
                    .arg(seq)
                    .arg(FIELD_ERROR)
                    .arg(&answer)
                    .arg(seq);
            }
            None => {
                call.key(&shared.keys.dead)
                    .key(&shared.keys.dead)
                    .arg(GROUP)
                    .arg(&shared.consumer)
                    .arg(&entry.id)
                    .arg(0)
                    .arg("");
            }
        }
        call.arg(FIELD_TASK).arg(raw).arg(FIELD_WHY).arg(why);
        call.invoke::<Value>(con)
    })?;
    Some(())
}

/// Checks a batch against the broker (clients gone, tasks cancelled) and the registry,
/// then starts what should run. Returns false when the worker must stop.
fn start_entries(
    shared: &Arc<Shared>,
    con: &mut Connection,
    taken: Vec<Taken>,
    settle: &Sender<Settle>,
) -> bool {
    if taken.is_empty() {
        return true;
    }
    // One round trip: is each client alive, and which of its tasks are cancelled.
    let mut clients: Vec<u64> = taken.iter().map(|t| t.message.client).collect();
    clients.sort_unstable();
    clients.dedup();
    let Some(replies) = shared.retrying(con, |con| {
        let mut pipe = redis::pipe();
        for &client in &clients {
            pipe.cmd("EXISTS").arg(shared.keys.results(client));
            let seqs: Vec<u64> = taken
                .iter()
                .filter(|t| t.message.client == client)
                .map(|t| t.message.seq)
                .collect();
            pipe.cmd("SMISMEMBER")
                .arg(shared.keys.cancels(client))
                .arg(seqs);
        }
        pipe.query::<Vec<Value>>(con)
    }) else {
        return false;
    };
    let mut alive = HashSet::new();
    let mut cancelled = HashSet::new();
    for (i, &client) in clients.iter().enumerate() {
        if matches!(replies.get(2 * i), Some(Value::Int(1))) {
            alive.insert(client);
        }
        if let Some(Value::Array(flags)) = replies.get(2 * i + 1) {
            let seqs = taken
                .iter()
                .filter(|t| t.message.client == client)
                .map(|t| t.message.seq);
            for (seq, flag) in seqs.zip(flags) {
                if matches!(flag, Value::Int(1)) {
                    cancelled.insert((client, seq));
                }
            }
        }
    }
    for taken in taken {
        let taken = Arc::new(taken);
        let message = &taken.message;
        let key = (message.client, message.seq);
        if !alive.contains(&message.client) {
            let _ = settle.send(Settle::ClientGone(Arc::clone(&taken)));
            continue;
        }
        let refusal = match shared.registry.get(message.task.as_str()) {
            None => Some(TaskError::UnknownTask {
                task: message.task.clone(),
                worker: identity().0,
            }),
            Some(known) if known.fingerprint != message.fingerprint => {
                Some(TaskError::SignatureMismatch {
                    task: message.task.clone(),
                    worker: identity().0,
                    sent: message.fingerprint,
                    found: known.fingerprint,
                })
            }
            Some(_) => None,
        };
        if let Some(why) = refusal {
            eprintln!(
                "concurrent-futures-redis worker {}: refused task {}:{}: {why}",
                shared.consumer, message.client, message.seq
            );
            let _ = settle.send(Settle::Now(Arc::clone(&taken), Outcome::Failed(why)));
            continue;
        }
        let mut held = shared.held.lock();
        if cancelled.contains(&key) || held.recent_set.contains(&key) {
            drop(held);
            let _ = settle.send(Settle::Now(Arc::clone(&taken), Outcome::Cancelled));
            continue;
        }
        start_one(shared, &mut held, &taken, settle);
    }
    true
}

/// Starts every item of one entry in the pool, under the held lock (so a cancellation
/// sees all of its items or none).
fn start_one(shared: &Arc<Shared>, held: &mut Held, taken: &Arc<Taken>, settle: &Sender<Settle>) {
    let message = &taken.message;
    // Checked by the caller.
    let Some(registered) = shared.registry.get(message.task.as_str()) else {
        return;
    };
    let n = message.items.len();
    if n == 0 {
        let _ = settle.send(Settle::Now(Arc::clone(taken), Outcome::Items(Vec::new())));
        return;
    }
    held.entries.insert(
        taken.entry.clone(),
        HeldEntry {
            client: message.client,
            seq: message.seq,
            lease_ms: taken.lease_ms,
            cancelled: false,
            stops: Vec::with_capacity(n),
        },
    );
    held.by_task
        .insert((message.client, message.seq), taken.entry.clone());
    let collector = Arc::new(Collector {
        taken: Arc::clone(taken),
        ends: Mutex::new(((0..n).map(|_| None).collect(), n)),
        settle: settle.clone(),
    });
    for (index, item) in message.items.iter().enumerate() {
        let done_collector = Arc::clone(&collector);
        let done: Done = Box::new(move |end| done_collector.put(index, end));
        match (registered.start)(&shared.pools, item, done) {
            Ok(stop) => {
                if let Some(entry) = held.entries.get_mut(&taken.entry) {
                    entry.stops.push(stop);
                }
            }
            Err(end) => collector.put(index, end),
        }
    }
}

/// Reclaims entries of vanished workers (past their lease): each counts as an attempt
/// and is requeued, or dead-lettered after `max_deliveries`. Returns false when the
/// worker must stop.
fn reclaim(shared: &Shared, con: &mut Connection, cursor: &mut String) -> bool {
    let start = if cursor.is_empty() {
        "-"
    } else {
        cursor.as_str()
    };
    let Some(reply) = shared.retrying(con, |con| {
        scripts::RECLAIM
            .key(&shared.keys.tasks)
            .arg(GROUP)
            .arg(&shared.consumer)
            .arg(start)
            .arg(RECLAIM_PAGE)
            .arg(10)
            .arg(DEFAULT_LEASE_MS)
            .invoke::<Value>(con)
    }) else {
        return false;
    };
    let Value::Array(mut parts) = reply else {
        return true;
    };
    let claimed = parts.pop();
    *cursor = parts.pop().and_then(wire::string_of).unwrap_or_default();
    let Some(Value::Array(claimed)) = claimed else {
        return true;
    };
    for one in claimed {
        let Value::Array(mut one) = one else { continue };
        if one.len() != 3 {
            continue;
        }
        let fields = one.pop().unwrap_or(Value::Nil);
        let owner = one.pop().and_then(wire::string_of).unwrap_or_default();
        let Some(id) = one.pop().and_then(wire::string_of) else {
            continue;
        };
        let entries = wire::parse_entries(Value::Array(vec![Value::Array(vec![
            Value::BulkString(id.clone().into_bytes()),
            fields,
        ])]));
        let Some(entry) = entries.into_iter().next() else {
            continue;
        };
        let raw = entry.field(FIELD_TASK).unwrap_or_default().to_vec();
        let Ok(message) = TaskMsg::read(&entry) else {
            if dead_letter_raw(
                shared,
                con,
                &entry,
                &raw,
                "the task message does not decode",
            )
            .is_none()
            {
                return false;
            }
            continue;
        };
        let mut attempts = wire::decode_attempts(entry.field(FIELD_ATTEMPTS)).unwrap_or_default();
        if owner == shared.consumer {
            if shared.held.lock().entries.contains_key(&id) {
                continue; // running here, its heartbeat late: keep it
            }
            // Delivered to this worker while its connection broke: it never ran here.
            eprintln!(
                "concurrent-futures-redis worker {}: requeued entry {id} (task {:?} of client {:016x}), delivered to this worker while its connection broke",
                shared.consumer, message.task, message.client
            );
        } else {
            let mut parts = owner.rsplitn(3, ':');
            let _tag = parts.next();
            let worker_pid = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
            let host = parts.next().unwrap_or("?").to_owned();
            attempts.push(Attempt {
                host,
                worker_pid,
                child_pid: None,
                exit_code: None,
                signal: None,
                lease_expired: true,
            });
            eprintln!(
                "concurrent-futures-redis worker {}: claimed entry {id} (task {:?} of client {:016x}) from {owner}, whose lease expired",
                shared.consumer, message.task, message.client
            );
        }
        let lease_ms = entry
            .field(FIELD_LEASE)
            .and_then(|l| std::str::from_utf8(l).ok())
            .and_then(|l| l.parse().ok())
            .unwrap_or(DEFAULT_LEASE_MS);
        let items = message.items.len();
        let taken = Taken {
            entry: id,
            message,
            raw,
            attempts: Vec::new(),
            lease_ms,
        };
        let outcome = if attempts.len() >= taken.message.max_deliveries as usize {
            let why = TaskError::DeliveriesExhausted {
                task: taken.message.task.clone(),
                attempts: attempts.clone(),
            };
            Some(Outcome::Items(
                (0..items)
                    .map(|_| ItemOutcome::Failed(why.clone()))
                    .collect(),
            ))
        } else {
            None
        };
        if move_entry(shared, con, &taken, &attempts, outcome).is_none() {
            return false;
        }
    }
    true
}

/// Requeues an entry with its attempts (no `outcome`), or dead-letters it and sends
/// `outcome` to its client. Fenced. `None` when the broker stayed away.
fn move_entry(
    shared: &Shared,
    con: &mut Connection,
    taken: &Taken,
    attempts: &[Attempt],
    outcome: Option<Outcome>,
) -> Option<()> {
    let attempts_bytes = wire::encode(&attempts).unwrap_or_default();
    let client = taken.message.client;
    let (destination, result) = match outcome {
        Some(outcome) => {
            let result = ResultMsg {
                seq: taken.message.seq,
                outcome,
            };
            (&shared.keys.dead, wire::encode(&result).unwrap_or_default())
        }
        None => (&shared.keys.tasks, Vec::new()),
    };
    let dead = !result.is_empty();
    let moved = shared.retrying(con, |con| {
        let mut call = scripts::MOVE.prepare_invoke();
        call.key(&shared.keys.tasks)
            .key(destination)
            .key(shared.keys.results(client))
            .key(shared.keys.cancels(client))
            .arg(GROUP)
            .arg(&shared.consumer)
            .arg(&taken.entry);
        if dead {
            call.arg(4)
                .arg(FIELD_SEQ)
                .arg(taken.message.seq)
                .arg(FIELD_RESULT)
                .arg(result.as_slice())
                .arg(taken.message.seq);
        } else {
            call.arg(0).arg("");
        }
        call.arg(FIELD_TASK)
            .arg(taken.raw.as_slice())
            .arg(FIELD_LEASE)
            .arg(taken.lease_ms)
            .arg(FIELD_KEY)
            .arg(wire::task_key(client, taken.message.seq))
            .arg(FIELD_ATTEMPTS)
            .arg(attempts_bytes.as_slice());
        call.invoke::<Option<String>>(con)
    })?;
    match moved {
        None => eprintln!(
            "concurrent-futures-redis worker {}: entry {} was claimed by another worker before it could be {}",
            shared.consumer,
            taken.entry,
            if dead { "dead-lettered" } else { "requeued" }
        ),
        Some(_) if dead => eprintln!(
            "concurrent-futures-redis worker {}: task {:?} of client {client:016x} failed {} deliveries; moved to {}",
            shared.consumer,
            taken.message.task,
            attempts.len(),
            shared.keys.dead
        ),
        Some(_) => {}
    }
    Some(())
}

/// The commit thread: settles entries (fenced), sends heartbeats.
fn commit_loop(shared: &Arc<Shared>, mut con: Connection, settle: &Receiver<Settle>) {
    let mut last_beat = Instant::now();
    let mut last_trim = Instant::now();
    let mut committed_since_trim = false;
    loop {
        let beat_every = {
            let held = shared.held.lock();
            let min_lease = held
                .entries
                .values()
                .map(|e| e.lease_ms)
                .min()
                .unwrap_or(DEFAULT_LEASE_MS);
            Duration::from_millis(min_lease / 4).max(Duration::from_millis(2))
        };
        let wait = beat_every
            .saturating_sub(last_beat.elapsed())
            .min(TRIM_EVERY);
        let mut batch = Vec::new();
        match settle.recv_timeout(wait) {
            Ok(first) => {
                batch.push(first);
                while batch.len() < COMMIT_BATCH {
                    match settle.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        if last_beat.elapsed() >= beat_every {
            last_beat = Instant::now();
            if !heartbeat(shared, &mut con) {
                return;
            }
        }
        if !batch.is_empty() {
            committed_since_trim = true;
            if !settle_batch(shared, &mut con, batch) {
                return;
            }
        }
        if committed_since_trim && last_trim.elapsed() >= TRIM_EVERY {
            last_trim = Instant::now();
            committed_since_trim = false;
            let trimmed = shared.retrying(&mut con, |con| {
                scripts::TRIM
                    .key(&shared.keys.tasks)
                    .arg(GROUP)
                    .invoke::<i64>(con)
            });
            if trimmed.is_none() {
                return;
            }
        }
    }
}

/// Extends the leases of the entries this worker holds; stops the tasks of entries it
/// lost. Returns false when the worker must stop.
fn heartbeat(shared: &Shared, con: &mut Connection) -> bool {
    let ids: Vec<String> = shared.held.lock().entries.keys().cloned().collect();
    if ids.is_empty() {
        return true;
    }
    let Some(lost) = shared.retrying(con, |con| {
        let mut call = scripts::EXTEND.prepare_invoke();
        call.key(&shared.keys.tasks)
            .arg(GROUP)
            .arg(&shared.consumer);
        for id in &ids {
            call.arg(id);
        }
        call.invoke::<Vec<String>>(con)
    }) else {
        return false;
    };
    for id in lost {
        let removed = shared.held.lock().remove(&id);
        if let Some(entry) = removed {
            eprintln!(
                "concurrent-futures-redis worker {}: lost the lease on entry {id} (task {:016x}:{}); stopped it",
                shared.consumer, entry.client, entry.seq
            );
            for stop in &entry.stops {
                stop.stop();
            }
            shared.space.notify_all();
        }
    }
    true
}

/// Settles a batch: commits results in one fenced script call, requeues or
/// dead-letters entries whose child died. Returns false when the worker must stop.
fn settle_batch(shared: &Shared, con: &mut Connection, batch: Vec<Settle>) -> bool {
    // (entry, result, whether the task was cancelled: its seq leaves the cancel set)
    let mut commits: Vec<(Arc<Taken>, Vec<u8>, bool)> = Vec::with_capacity(batch.len());
    let mut moves: Vec<(Arc<Taken>, Vec<Attempt>, Option<Outcome>)> = Vec::new();
    let mut gone: HashMap<u64, usize> = HashMap::new();
    for settle in batch {
        let (taken, outcome) = match settle {
            Settle::Now(taken, outcome) => (taken, outcome),
            Settle::ClientGone(taken) => {
                *gone.entry(taken.message.client).or_default() += 1;
                (taken, Outcome::Cancelled)
            }
            Settle::Ran(taken, ends) => {
                let held = shared.held.lock().remove(&taken.entry);
                shared.space.notify_all();
                let Some(held) = held else {
                    continue; // lost its lease: another worker has it
                };
                if held.cancelled || ends.iter().any(|e| matches!(e, ItemEnd::Cancelled)) {
                    (taken, Outcome::Cancelled)
                } else if let Some((pid, signal, exit_code)) = ends.iter().find_map(|e| match e {
                    ItemEnd::Died {
                        pid,
                        signal,
                        exit_code,
                    } => Some((*pid, *signal, *exit_code)),
                    _ => None,
                }) {
                    let mut attempts = taken.attempts.clone();
                    attempts.push(shared.attempt(pid, signal, exit_code));
                    eprintln!(
                        "concurrent-futures-redis worker {}: the child running task {:?} of client {:016x} died (delivery {} of {})",
                        shared.consumer,
                        taken.message.task,
                        taken.message.client,
                        attempts.len(),
                        taken.message.max_deliveries
                    );
                    if attempts.len() >= taken.message.max_deliveries as usize {
                        let why = TaskError::DeliveriesExhausted {
                            task: taken.message.task.clone(),
                            attempts: attempts.clone(),
                        };
                        let items = ends
                            .into_iter()
                            .map(|end| match end {
                                ItemEnd::Outcome(outcome) => outcome,
                                ItemEnd::Died { .. } | ItemEnd::Cancelled => {
                                    ItemOutcome::Failed(why.clone())
                                }
                            })
                            .collect();
                        moves.push((taken, attempts, Some(Outcome::Items(items))));
                    } else {
                        moves.push((taken, attempts, None));
                    }
                    continue;
                } else {
                    let items = ends
                        .into_iter()
                        .map(|end| match end {
                            ItemEnd::Outcome(outcome) => outcome,
                            // Excluded above.
                            ItemEnd::Died { .. } | ItemEnd::Cancelled => {
                                ItemOutcome::Failed(TaskError::Worker {
                                    task: taken.message.task.clone(),
                                    worker: identity().0,
                                    message: String::from("the item did not end"),
                                })
                            }
                        })
                        .collect();
                    (taken, Outcome::Items(items))
                }
            }
        };
        let cancelled = matches!(outcome, Outcome::Cancelled);
        let result = ResultMsg {
            seq: taken.message.seq,
            outcome,
        };
        let bytes = wire::encode(&result).unwrap_or_default();
        commits.push((taken, bytes, cancelled));
    }
    for chunk in commits.chunks(COMMIT_BATCH) {
        let Some(committed) = shared.retrying(con, |con| {
            let mut call = scripts::COMMIT.prepare_invoke();
            call.key(&shared.keys.tasks);
            // Each client's keys once (a batch usually has one client).
            let mut clients: Vec<u64> = Vec::new();
            for (taken, _, _) in chunk {
                if !clients.contains(&taken.message.client) {
                    clients.push(taken.message.client);
                    call.key(shared.keys.results(taken.message.client))
                        .key(shared.keys.cancels(taken.message.client));
                }
            }
            call.arg(GROUP).arg(&shared.consumer).arg(PIN_MS);
            for (taken, bytes, cancelled) in chunk {
                let client = clients
                    .iter()
                    .position(|&c| c == taken.message.client)
                    .unwrap_or(0);
                call.arg(&taken.entry)
                    .arg(bytes.as_slice())
                    .arg(client + 1)
                    .arg(taken.message.seq)
                    .arg(if *cancelled { "1" } else { "" });
            }
            call.invoke::<Vec<i64>>(con)
        }) else {
            return false;
        };
        for ((taken, _, _), ok) in chunk.iter().zip(committed) {
            if ok != 1 {
                eprintln!(
                    "concurrent-futures-redis worker {}: commit of entry {} (task {:016x}:{}) refused: the lease was lost to another worker",
                    shared.consumer, taken.entry, taken.message.client, taken.message.seq
                );
            }
        }
    }
    for (client, count) in gone {
        eprintln!(
            "concurrent-futures-redis worker {}: dropped {count} tasks of client {client:016x}: its result stream is gone (the client died)",
            shared.consumer
        );
    }
    for (taken, attempts, outcome) in moves {
        if move_entry(shared, con, &taken, &attempts, outcome).is_none() {
            return false;
        }
    }
    true
}

/// The cancel listener: stops the items of a task cancelled while this worker holds it.
fn cancel_loop(shared: &Arc<Shared>) {
    while !shared.stopping() {
        let Some(mut con) = shared.connect_retrying() else {
            return;
        };
        if con
            .set_read_timeout(Some(Duration::from_millis(200)))
            .is_err()
        {
            continue;
        }
        let mut pubsub = con.as_pubsub();
        if pubsub.subscribe(&shared.keys.cancel_channel).is_err() {
            continue;
        }
        // Cancellations published while this listener was not subscribed (the broker
        // went away) are in the clients' cancel sets.
        recheck_cancels(shared);
        while !shared.stopping() {
            let message = match pubsub.get_message() {
                Ok(message) => message,
                Err(e) if e.is_timeout() => continue,
                Err(_) => break, // reconnect
            };
            if let Some(task) = wire::parse_task_key(message.get_payload_bytes()) {
                cancel_held(shared, task);
            }
        }
    }
}

/// Stops a task this worker holds, or remembers the cancellation for when it fetches it.
fn cancel_held(shared: &Shared, task: (u64, u64)) {
    let mut held = shared.held.lock();
    let entry = held.by_task.get(&task).cloned();
    match entry.and_then(|id| held.entries.get_mut(&id)) {
        Some(entry) => {
            entry.cancelled = true;
            for stop in &entry.stops {
                stop.stop();
            }
            eprintln!(
                "concurrent-futures-redis worker {}: task {:016x}:{} cancelled; stopped it",
                shared.consumer, task.0, task.1
            );
        }
        None => held.remember_cancel(task),
    }
}

/// Looks up every held task in its client's cancel set and stops those cancelled.
fn recheck_cancels(shared: &Shared) {
    let mut tasks: Vec<(u64, u64)> = shared.held.lock().by_task.keys().copied().collect();
    if tasks.is_empty() {
        return;
    }
    tasks.sort_unstable();
    let Some(mut con) = shared.connect_retrying() else {
        return;
    };
    let mut clients: Vec<u64> = tasks.iter().map(|t| t.0).collect();
    clients.dedup();
    for client in clients {
        let seqs: Vec<u64> = tasks
            .iter()
            .filter(|t| t.0 == client)
            .map(|t| t.1)
            .collect();
        let flags: Result<Vec<i64>, RedisError> = redis::cmd("SMISMEMBER")
            .arg(shared.keys.cancels(client))
            .arg(&seqs)
            .query(&mut con);
        for (seq, flag) in seqs.into_iter().zip(flags.unwrap_or_default()) {
            if flag == 1 {
                cancel_held(shared, (client, seq));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cancel_messages_parse_or_are_ignored() {
        assert_eq!(wire::parse_task_key(b"00000000000000ff:7"), Some((255, 7)));
        assert_eq!(
            wire::parse_task_key(wire::task_key(255, 7).as_bytes()),
            Some((255, 7))
        );
        assert_eq!(wire::parse_task_key(b"zz:7"), None);
        assert_eq!(wire::parse_task_key(b"\xff"), None);
        assert_eq!(wire::parse_task_key(b"12"), None);
    }
}
