//! The pool's side of the processes: the queue of encoded tasks, one writer and one
//! reader thread per worker process, and what happens when a worker ends.
//!
//! Locks: `Inner::state` (the bookkeeping) may be held while taking a future's own lock
//! (`set_running`) or a worker's `Process` lock (to signal it); never the other way
//! round, and never while a future is completed (completion runs user callbacks). The
//! state table of the `README.md` beside this file says, for each piece of `State` and
//! `Worker`, who changes it and what a reader may assume.

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::StartMethod;
use super::pipeline::{self, Pipeline, coarse_now};
use super::process::{Launcher, Process};
use super::sink::{Ended, Sink};
use super::wire::Callee;
use crate::error::{BrokenPoolError, BrokenPoolKind, FutureError};
use crate::future::StopRunning;
use crate::shutdown::{ShutdownOptions, ShutdownReport};
use crate::stats::PoolStats;
use crate::sync::{Condvar, Mutex, MutexGuard, Ordering};
use crate::unwind::contain;

thread_local! {
    /// Set in the pool's own threads, where `shutdown(wait = true)` must not wait for
    /// the thread itself (a done-callback may call it).
    static IN_POOL_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// A task: the call, its encoded argument and its future.
pub(super) struct Job {
    id: u64,
    callee: Callee,
    payload: Vec<u8>,
    sink: Box<dyn Sink>,
    /// Already moved to running (it went to a worker, which died before running it).
    dispatched: bool,
}

/// How `cancel()` stops a process task: by killing its worker, but only while the
/// worker runs that very task. A task still waiting in a worker's pipe will run, so
/// `cancel()` returns false for it, as Python's does for a task in its call queue.
struct TaskStopper {
    pool: Weak<Inner>,
    id: u64,
}

impl StopRunning for TaskStopper {
    fn can_stop(&self) -> bool {
        self.pool
            .upgrade()
            .is_some_and(|pool| pool.is_running_now(self.id))
    }

    fn stop(&self) {
        if let Some(pool) = self.pool.upgrade() {
            pool.stop_running(self.id);
        }
    }
}

/// Why `enqueue` refused a task.
#[derive(Debug)]
pub(super) enum Refused {
    ShutDown,
    Broken(BrokenPoolError),
}

/// The fixed settings of a pool.
#[derive(Debug)]
pub(super) struct Config {
    pub(super) max_workers: usize,
    pub(super) max_tasks_per_child: Option<u64>,
    pub(super) start_method: StartMethod,
    /// The handshake frame every new worker gets first.
    pub(super) hello: Vec<u8>,
    /// How long a new worker may take to accept it.
    pub(super) handshake_timeout: Duration,
}

/// How a writer that waits is woken.
#[derive(Default)]
struct Wake {
    condvar: Condvar,
    /// Notifications so far: the writer/reader hand-off model (`tests`) lets a writer
    /// that waits move only after one, as a condition variable does.
    #[cfg(test)]
    notified: std::sync::atomic::AtomicUsize,
}

impl Wake {
    fn notify(&self) {
        #[cfg(test)]
        self.notified
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.condvar.notify_one();
    }
}

/// What the pool knows about one worker.
struct Worker {
    /// Names the worker to its reader and writer threads (its index changes as others
    /// leave `State::workers`).
    key: u64,
    process: Arc<Process>,
    /// Tasks written to the worker, in order; the front one is running.
    in_flight: VecDeque<Job>,
    /// Tasks handed to it so far (for `max_tasks_per_child`).
    sent: u64,
    /// The writer thread waits for work.
    waiting: bool,
    /// Where its writer waits.
    wake: Arc<Wake>,
    /// The writer closed the worker's input: it takes no more tasks.
    closed: bool,
    /// The pool killed it to stop a cancelled task: fail nothing else.
    killed_for_cancel: bool,
    /// The pool killed it at a shutdown's deadline: its running task failed with
    /// `KilledByPool`, not as if it had died by itself.
    killed_at_deadline: bool,
    /// About when the worker started the task at the front of its pipe (when that task
    /// was written to an empty pipe, or when the result before it came), on the coarse
    /// clock ([`coarse_now`]).
    front_since: Option<u64>,
}

impl Worker {
    /// True when the task it runs has run for long at `now` ([`pipeline::is_stalled`]).
    fn is_stalled(&self, now: u64) -> bool {
        pipeline::is_stalled(self.front_since, now)
    }
}

/// Where the pool is in its life. It only moves forward, one way: `Open`, then
/// `Draining` (`shutdown`), then `Terminating` (`terminate_workers`/`kill_workers`
/// while workers live). Whether the pool is broken is apart from it
/// ([`State::broken`]): a broken pool may be in any phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Phase {
    /// Submits are taken.
    Open,
    /// `shutdown` was called: submits are refused; queued tasks still run (unless
    /// `cancel_futures` cancelled them), replacements still start for them, and each
    /// writer closes its worker's input once the queue is empty.
    Draining,
    /// The live workers were signalled: nothing starts any more, writers close their
    /// workers' input, tasks left in a dead worker's pipe are cancelled, not requeued,
    /// and a worker killed before its handshake is no failed start.
    Terminating,
}

/// The pool's bookkeeping, all under [`Inner::state`]: what each field means and who
/// changes it is in the state table of the `README.md` beside this file.
struct State {
    /// Tasks not handed to a worker yet, in order (requeued ones at the front).
    queue: VecDeque<Job>,
    /// The worker processes that are up, from `add_worker` until their reader's
    /// `worker_gone`.
    workers: Vec<Worker>,
    /// Workers being started: raised by [`State::claim_start`], lowered by
    /// `start_worker` once the process is up (and in `workers`) or failed.
    starting: usize,
    phase: Phase,
    /// Why the pool is broken: set once by [`State::break_pool`], never cleared.
    broken: Option<BrokenPoolError>,
    next_id: u64,
    next_key: u64,
    /// The reader and writer threads, joined by `shutdown(wait = true)`.
    threads: Vec<JoinHandle<()>>,
    /// What the pool has learnt of its tasks' run time, which sets the depth.
    pipeline: Pipeline,
    /// Workers started so far (for `Debug`).
    started: u64,
    /// Workers in a row that died (by a signal) before their handshake.
    failed_starts: u32,
}

impl State {
    fn index(&self, key: u64) -> Option<usize> {
        self.workers.iter().position(|w| w.key == key)
    }

    /// Workers that still take tasks, plus those being started.
    fn open_workers(&self) -> usize {
        self.workers.iter().filter(|w| !w.closed).count() + self.starting
    }

    /// The one decision "start another worker?": only when queued work outnumbers the
    /// workers that would take it at once (idle ones, and those being started), and
    /// fewer than `max_workers` take tasks. So sequential `submit(..).result()` calls
    /// reuse one idle worker, as the thread pool and CPython (bpo-39207) do, while a
    /// burst of submits still starts up to `max_workers`. Queued work keeps a
    /// replacement coming during `shutdown(wait)` too; a broken or terminating pool
    /// starts nothing. Asked only through [`claim_start`](Self::claim_start).
    fn wants_worker(&self, max_workers: usize) -> bool {
        if self.phase == Phase::Terminating || self.broken.is_some() || self.queue.is_empty() {
            return false;
        }
        let idle = self
            .workers
            .iter()
            .filter(|w| !w.closed && w.in_flight.is_empty())
            .count();
        self.open_workers() < max_workers && self.queue.len() > idle + self.starting
    }

    /// Decides whether to start another worker ([`wants_worker`](Self::wants_worker))
    /// and, if so, counts it as starting; the caller must then call
    /// `Inner::start_worker`, which lowers the count. Every worker start goes through
    /// here: a submit (`enqueue`), a retiring worker's writer, a worker's end.
    fn claim_start(&mut self, max_workers: usize) -> bool {
        let start = self.wants_worker(max_workers);
        if start {
            self.starting += 1;
        }
        start
    }

    /// True when a writer must close its worker's input: the worker may take no more
    /// tasks (`tasks_left`), the pool is stopping, or it is shut down with nothing left
    /// to hand out.
    fn must_close(&self, tasks_left: u64) -> bool {
        tasks_left == 0
            || self.phase == Phase::Terminating
            || self.broken.is_some()
            || (self.phase == Phase::Draining && self.queue.is_empty())
    }

    /// Worker `i` answered its front task, which ran for `nanos`: takes that task off
    /// its pipe, and wakes its writer if the pipe fell below the low-water mark while
    /// work waits.
    fn took_result(&mut self, i: usize, nanos: u64) -> Option<Job> {
        let worker = &mut self.workers[i];
        let job = worker.in_flight.pop_front();
        worker.front_since = (!worker.in_flight.is_empty()).then(coarse_now);
        let (waiting, len) = (worker.waiting, worker.in_flight.len());
        self.pipeline.observe(nanos);
        if waiting && len < self.pipeline.low_water() && !self.queue.is_empty() {
            self.workers[i].wake.notify();
        }
        job
    }

    /// Wakes the waiting writers that have room (after the queue grew).
    fn wake_writers(&self) {
        let depth = self.pipeline.depth();
        for w in &self.workers {
            if w.waiting && w.in_flight.len() < depth {
                w.wake.notify();
            }
        }
    }

    /// Wakes one waiting writer with room (after one task was queued): the one with the
    /// fewest tasks in its pipe, so that an idle worker gets the task first.
    fn wake_one_writer(&self) {
        let low = self.pipeline.low_water();
        if let Some(w) = self
            .workers
            .iter()
            .filter(|w| w.waiting && w.in_flight.len() < low)
            .min_by_key(|w| w.in_flight.len())
        {
            w.wake.notify();
        }
    }

    /// An open worker (not worker `i`) whose pipe holds fewer tasks than worker `i`'s:
    /// its writer should take the next task rather than queue it behind worker `i`'s
    /// (a slow task there would hold it while the other worker idles; issue 12). Its
    /// writer need not be waiting: one that is writing looks at the queue again after.
    fn less_loaded_writer(&self, i: usize, now: u64) -> Option<&Worker> {
        let mine = self.workers[i].in_flight.len();
        self.workers
            .iter()
            .enumerate()
            .filter(|&(j, w)| {
                j != i
                    && !w.closed
                    && pipeline::defers_to(mine, w.in_flight.len(), w.is_stalled(now))
            })
            .min_by_key(|(_, w)| w.in_flight.len())
            .map(|(_, w)| w)
    }

    fn wake_all_writers(&self) {
        for w in &self.workers {
            w.wake.notify();
        }
    }

    /// Marks the pool broken: fails every queued task and kills every worker (their
    /// tasks then fail too). Returns the tasks to fail, outside the lock.
    fn break_pool(&mut self, reason: BrokenPoolError) -> Vec<(Box<dyn Sink>, FutureError)> {
        let reason = self.broken.get_or_insert(reason).clone();
        for w in &self.workers {
            w.process.signal(Signal::SIGKILL);
        }
        self.queue
            .drain(..)
            .map(|job| (job.sink, FutureError::BrokenPool(reason.clone())))
            .collect()
    }
}

/// What the pool's handle and its threads share.
pub(super) struct Inner {
    config: Config,
    state: Mutex<State>,
    /// Notified when a worker is gone or failed to start (for `shutdown(wait)`).
    gone: Condvar,
    /// Starts worker processes; its lock is taken alone, never with `state`.
    launcher: Launcher,
    /// How tasks ended, counted by their sinks (no lock).
    ended: Arc<Ended>,
}

impl fmt::Debug for Inner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.state.lock();
        f.debug_struct("ProcessPoolExecutor")
            .field("max_workers", &self.config.max_workers)
            .field("max_tasks_per_child", &self.config.max_tasks_per_child)
            .field(
                "workers",
                &state
                    .workers
                    .iter()
                    .map(|w| w.process.pid())
                    .collect::<Vec<_>>(),
            )
            .field("workers_started", &state.started)
            .field("queued", &state.queue.len())
            .field("shut_down", &(state.phase != Phase::Open))
            .field("broken", &state.broken)
            .finish()
    }
}

impl Inner {
    pub(super) fn new(config: Config) -> Arc<Self> {
        Arc::new(Self {
            launcher: Launcher::new(config.start_method, config.handshake_timeout),
            config,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                workers: Vec::new(),
                starting: 0,
                phase: Phase::Open,
                broken: None,
                next_id: 0,
                next_key: 0,
                threads: Vec::new(),
                pipeline: Pipeline::new(),
                started: 0,
                failed_starts: 0,
            }),
            gone: Condvar::new(),
            ended: Arc::new(Ended::default()),
        })
    }

    /// A pool that was never usable: every submit is refused with `reason`.
    pub(super) fn broken(config: Config, reason: BrokenPoolError) -> Arc<Self> {
        let inner = Self::new(config);
        inner.state.lock().broken = Some(reason);
        inner
    }

    pub(super) fn max_workers(&self) -> usize {
        self.config.max_workers
    }

    /// Why a submit would be refused now.
    pub(super) fn refusal(&self) -> Option<Refused> {
        let state = self.state.lock();
        if let Some(reason) = &state.broken {
            Some(Refused::Broken(reason.clone()))
        } else if state.phase != Phase::Open {
            Some(Refused::ShutDown)
        } else {
            None
        }
    }

    /// Queues a task and starts a worker if fewer than `max_workers` take tasks.
    pub(super) fn enqueue(
        self: &Arc<Self>,
        callee: Callee,
        payload: Vec<u8>,
        sink: Box<dyn Sink>,
    ) -> Result<(), Refused> {
        let start = {
            let mut state = self.state.lock();
            if let Some(reason) = &state.broken {
                return Err(Refused::Broken(reason.clone()));
            }
            if state.phase != Phase::Open {
                return Err(Refused::ShutDown);
            }
            let id = state.next_id;
            state.next_id += 1;
            state.queue.push_back(Job {
                id,
                callee,
                payload,
                sink,
                dispatched: false,
            });
            state.wake_one_writer();
            state.claim_start(self.config.max_workers)
        };
        if start {
            self.start_worker();
        }
        Ok(())
    }

    /// The pids of the live worker processes.
    pub(super) fn worker_pids(&self) -> Vec<u32> {
        self.state
            .lock()
            .workers
            .iter()
            .map(|w| w.process.pid())
            .collect()
    }

    /// Starts one worker process and its two threads; `state.starting` was raised for it.
    fn start_worker(self: &Arc<Self>) {
        let spawned = self.launcher.launch();
        let mut failures = Vec::new();
        let mut orphan = None;
        {
            let mut state = self.state.lock();
            state.starting -= 1;
            // Writers may hold back for a worker being started (`writer_step`).
            state.wake_writers();
            match spawned {
                Ok(started) => {
                    let process = Arc::new(started.process);
                    if state.phase == Phase::Terminating || state.broken.is_some() {
                        orphan = Some(process);
                    } else if let Err(e) =
                        self.add_worker(&mut state, &process, started.tasks, started.results)
                    {
                        orphan = Some(process);
                        if state.workers.is_empty() && state.starting == 0 {
                            failures = state.break_pool(BrokenPoolError::new(
                                BrokenPoolKind::StartFailed,
                                format!("could not start a thread for a worker process: {e}"),
                            ));
                        }
                    }
                }
                Err(e) => {
                    if state.workers.is_empty() && state.starting == 0 {
                        failures = state.break_pool(BrokenPoolError::new(
                            BrokenPoolKind::StartFailed,
                            format!("could not start a worker process: {e}"),
                        ));
                    }
                }
            }
            self.gone.notify_all();
        }
        if let Some(process) = orphan {
            let _ = process.reap(Duration::ZERO);
        }
        for (sink, error) in failures {
            contain("failing a task", || sink.fail(error));
        }
    }

    fn add_worker(
        self: &Arc<Self>,
        state: &mut MutexGuard<'_, State>,
        process: &Arc<Process>,
        stdin: File,
        stdout: File,
    ) -> io::Result<()> {
        let key = state.next_key;
        state.next_key += 1;
        let wake = Arc::new(Wake::default());
        let inner = Arc::clone(self);
        let reader_process = Arc::clone(process);
        let reader = std::thread::Builder::new()
            .name(format!("process-pool-reader-{key}"))
            .spawn(move || {
                IN_POOL_THREAD.set(true);
                inner.read_results(key, stdout, &reader_process);
            })?;
        let inner = Arc::clone(self);
        let writer_wake = Arc::clone(&wake);
        let writer_process = Arc::clone(process);
        let writer = std::thread::Builder::new()
            .name(format!("process-pool-writer-{key}"))
            .spawn(move || {
                IN_POOL_THREAD.set(true);
                let written = catch_unwind(AssertUnwindSafe(|| {
                    inner.write_tasks(key, stdin, &writer_wake);
                }));
                if written.is_err() {
                    // Its worker would wait for input for ever: stop it, and the reader
                    // fails its running task and hands the rest to other workers.
                    writer_process.signal(Signal::SIGKILL);
                }
            });
        state.workers.push(Worker {
            key,
            process: Arc::clone(process),
            in_flight: VecDeque::new(),
            sent: 0,
            waiting: false,
            wake,
            closed: false,
            killed_for_cancel: false,
            killed_at_deadline: false,
            front_since: None,
        });
        state.started += 1;
        state.threads.retain(|t| !t.is_finished());
        state.threads.push(reader);
        match writer {
            Ok(writer) => state.threads.push(writer),
            // Without a writer the worker gets no input: kill it, the reader cleans up.
            Err(_) => process.signal(Signal::SIGKILL),
        }
        Ok(())
    }

    /// True when task `id` is what its worker runs now (the front of its pipe).
    fn is_running_now(&self, id: u64) -> bool {
        let state = self.state.lock();
        state
            .workers
            .iter()
            .any(|w| w.in_flight.front().is_some_and(|job| job.id == id))
    }

    /// `cancel()` on the task a worker runs now (checked by `is_running_now` just
    /// before): kill that worker. If the task has finished meanwhile, nothing is done.
    fn stop_running(&self, id: u64) {
        let mut state = self.state.lock();
        for worker in &mut state.workers {
            if worker.in_flight.front().is_some_and(|job| job.id == id) {
                worker.killed_for_cancel = true;
                worker.process.signal(Signal::SIGKILL);
                return;
            }
        }
    }

    /// Where a new task's sink counts how it ended.
    pub(super) fn ended(&self) -> Arc<Ended> {
        Arc::clone(&self.ended)
    }

    /// The executor's `stats()`.
    pub(super) fn stats(&self) -> PoolStats {
        let (queued, running, workers) = {
            let state = self.state.lock();
            let running: usize = state.workers.iter().map(|w| w.in_flight.len()).sum();
            (state.queue.len(), running, state.workers.len())
        };
        PoolStats {
            queued,
            running,
            workers,
            completed: self.ended.completed.load(Ordering::Relaxed),
            failed: self.ended.failed.load(Ordering::Relaxed),
            cancelled: self.ended.cancelled.load(Ordering::Relaxed),
        }
    }

    /// The executor's `shutdown_with`: Python's `shutdown(wait, cancel_futures)` with a
    /// deadline, after which the workers still running are killed.
    pub(super) fn shutdown_with(&self, options: ShutdownOptions) -> ShutdownReport {
        let deadline = options.timeout.and_then(|t| Instant::now().checked_add(t));
        let mut report = ShutdownReport {
            cancelled: self.shutdown(false, options.cancel_futures),
            ..ShutdownReport::default()
        };
        if !options.wait || IN_POOL_THREAD.get() {
            return report;
        }
        // The counts when the deadline passed, and how many tasks were in the pool then:
        // the kill's victims are what the counts grow by afterwards, whatever stage each
        // was at (running: failed; written to a worker that never started it, or queued:
        // cancelled; finished just before the kill: completed).
        let mut at_deadline = None;
        let mut state = self.state.lock();
        // After the kill, a worker still being started (a slow fork server, a
        // handshake) is not waited for: it is discarded and reaped when its start ends.
        while !state.workers.is_empty() || (state.starting > 0 && at_deadline.is_none()) {
            if at_deadline.is_none() && deadline.is_some_and(|d| Instant::now() >= d) {
                let in_pool = state.queue.len()
                    + state
                        .workers
                        .iter()
                        .map(|w| w.in_flight.len())
                        .sum::<usize>();
                at_deadline = Some((self.ended.snapshot(), in_pool));
                for worker in &mut state.workers {
                    worker.killed_at_deadline = true;
                }
                drop(state);
                self.signal_workers(Signal::SIGKILL);
                state = self.state.lock();
                continue;
            }
            let wake_at = if at_deadline.is_some() {
                None
            } else {
                deadline
            };
            state = self.gone.wait_until(state, wake_at).0;
        }
        let starting = state.starting;
        drop(state);
        if let Some((before, in_pool)) = at_deadline {
            // The readers complete a dead worker's tasks just after they remove it (a
            // moment later); the bound only guards against a count that never comes.
            let settled = Instant::now() + Duration::from_secs(2);
            let mut now = self.ended.snapshot();
            while now.total() < before.total() + in_pool && Instant::now() < settled {
                std::thread::sleep(Duration::from_micros(200));
                now = self.ended.snapshot();
            }
            report.timed_out = true;
            report.killed = now.failed - before.failed;
            report.cancelled += now.cancelled - before.cancelled;
        }
        if starting == 0 {
            self.shutdown(true, false);
        }
        report
    }

    /// Python's `shutdown(wait, cancel_futures)`; see the executor's docs. Returns how
    /// many queued tasks it cancelled.
    pub(super) fn shutdown(&self, wait: bool, cancel_futures: bool) -> usize {
        let cancelled: Vec<Job> = {
            let mut state = self.state.lock();
            state.phase = state.phase.max(Phase::Draining);
            let cancelled = if cancel_futures {
                state.queue.drain(..).collect()
            } else {
                Vec::new()
            };
            state.wake_all_writers();
            cancelled
        };
        let count = cancelled.len();
        for job in cancelled {
            if job.dispatched {
                job.sink.cancel_unstarted();
            } else {
                job.sink.cancel_pending();
            }
        }
        if !wait || IN_POOL_THREAD.get() {
            return count;
        }
        let threads = {
            let mut state = self.state.lock();
            while !state.workers.is_empty() || state.starting > 0 {
                state = self.gone.wait(state);
            }
            std::mem::take(&mut state.threads)
        };
        for thread in threads {
            // The threads catch nothing but run no user code; a join error would be a
            // bug in the pool and there is nobody to hand it to during shutdown.
            let _ = thread.join();
        }
        // No worker will start again.
        self.launcher.stop_fork_server();
        count
    }

    /// `terminate_workers` / `kill_workers`: shut down, cancel the queue, and signal
    /// every worker.
    pub(super) fn signal_workers(&self, signal: Signal) {
        self.shutdown(false, true);
        let state = &mut *self.state.lock();
        // Also with no live worker: one being started is then discarded when it comes up.
        state.phase = Phase::Terminating;
        for worker in &state.workers {
            worker.process.signal(signal);
        }
        state.wake_all_writers();
    }
}

mod reader;
mod writer;

#[cfg(all(test, not(cf_loom)))]
mod handoff_model;
