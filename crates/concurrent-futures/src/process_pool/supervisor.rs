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
use std::io::{self, BufReader, Write};
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitStatus;
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::Signal;

use super::StartMethod;
use super::pipeline::{self, Load, Pipeline, coarse_now};
use super::process::{Launcher, Process, describe_status};
use super::sink::Sink;
use super::wire::{self, Call, Callee, Handshake};
use crate::error::{BrokenPoolError, BrokenPoolKind, FutureError, WorkerError, WorkerErrorKind};
use crate::future::StopRunning;
use crate::sync::{Condvar, Mutex, MutexGuard};
use crate::unwind::contain;

/// Workers in a row that may die before their handshake before the pool gives up
/// (instead of restarting them in a busy loop).
const MAX_FAILED_STARTS: u32 = 3;
/// How long a worker that closed its result pipe may take to exit by itself before the
/// pool kills it: the exit status is then the worker's own (a panic's 101, a task's
/// `exit(3)`), not the pool's SIGKILL.
const EXIT_GRACE: Duration = Duration::from_secs(2);

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

/// A writer's next move ([`Inner::writer_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriterStep {
    /// The worker is gone: nothing to do.
    Gone,
    /// Close the worker's input (it was marked `closed`); start a replacement first
    /// when `respawn` (its `starting` was counted).
    Close { respawn: bool },
    /// Write the tasks moved into the buffer.
    Write,
    /// Nothing to do until woken (the worker was marked `waiting`).
    Wait,
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

/// How a worker's result stream ended.
enum Ending {
    /// The stream ended between frames (the worker exited or was killed).
    Closed,
    /// The handshake never came: the process ended first.
    NoHandshake,
    InitFailed(String),
    Refused(String),
    /// Something that is not a handshake came first.
    BadHandshake(String),
    /// Nothing came within the handshake deadline (a `main` that blocks or runs on
    /// before `process_worker_main`, say).
    HandshakeTimeout,
    /// The stream broke or made no sense.
    Protocol(String),
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

    /// The writer thread: moves queued tasks into the worker's pipe, many per write.
    fn write_tasks(self: &Arc<Self>, key: u64, mut stdin: File, wake: &Wake) {
        let mut out = Vec::with_capacity(64 * 1024);
        out.extend_from_slice(&self.config.hello);
        loop {
            if !out.is_empty() {
                if stdin.write_all(&out).is_err() {
                    // The worker is gone; its reader reports it.
                    return;
                }
                out.clear();
                if out.capacity() > 1 << 20 {
                    out.shrink_to(64 * 1024);
                }
            }
            let step = {
                let mut state = self.state.lock();
                loop {
                    match self.writer_step(&mut state, key, &mut out) {
                        WriterStep::Wait => {}
                        step => break step,
                    }
                    state = wake.condvar.wait(state);
                    if let Some(i) = state.index(key) {
                        state.workers[i].waiting = false;
                    }
                }
            };
            let respawn = match step {
                WriterStep::Gone => return,
                WriterStep::Close { respawn } => respawn,
                WriterStep::Write | WriterStep::Wait => false,
            };
            if out.is_empty() {
                // Closing the pipe tells the worker to finish what it has and exit.
                drop(stdin);
                if respawn {
                    self.start_worker();
                }
                return;
            }
        }
    }

    /// What worker `key`'s writer does next, decided under the state lock: close the
    /// worker's input, write the tasks it moved into `out`, or wait (then it is marked
    /// `waiting`, and whoever changes what this decision depends on must wake it: see
    /// `must_close`, `dispatch`, the reader, `shutdown` and `worker_gone`).
    fn writer_step(
        self: &Arc<Self>,
        state: &mut MutexGuard<'_, State>,
        key: u64,
        out: &mut Vec<u8>,
    ) -> WriterStep {
        loop {
            let Some(i) = state.index(key) else {
                return WriterStep::Gone;
            };
            let depth = state.pipeline.depth();
            let worker = &state.workers[i];
            let left = self
                .config
                .max_tasks_per_child
                .map_or(u64::MAX, |max| max.saturating_sub(worker.sent));
            if state.must_close(left) {
                state.workers[i].closed = true;
                // Writers that held back for this worker while it was free.
                state.wake_writers();
                // A retiring worker (`max_tasks_per_child`) is replaced at once when
                // work waits, not only after its process ends.
                let respawn = state.claim_start(self.config.max_workers);
                return WriterStep::Close { respawn };
            }
            let now = coarse_now();
            let mine = Load {
                in_flight: worker.in_flight.len(),
                tasks_left: left,
                stalled: worker.is_stalled(now),
            };
            // How many tasks the depth, the worker's limit and a fair share of the queue
            // leave room for; none behind a running task while a worker is being started
            // or behind one that has run for long (`pipeline::room`).
            let mut room = pipeline::room(
                depth,
                mine,
                state.queue.len(),
                state.open_workers(),
                state.starting,
            );
            // Nor while another worker has fewer tasks in its pipe (an idle one first):
            // its writer takes this one (woken here; one that is writing looks at the
            // queue after). Whoever ends a hold-back wakes the writers (a free worker's
            // first dispatch, a start that ended), but liveness does not rest on that:
            // a writer that holds back has a task in flight, and its reader wakes it.
            if room > 0
                && !state.queue.is_empty()
                && let Some(other) = state.less_loaded_writer(i, now)
            {
                other.wake.notify();
                room = 0;
            }
            if room > 0 && !state.queue.is_empty() {
                self.dispatch(state, i, room, out);
                if !out.is_empty() {
                    return WriterStep::Write;
                }
                continue;
            }
            state.workers[i].waiting = true;
            return WriterStep::Wait;
        }
    }

    /// Moves up to `room` queued tasks to worker `i`, encoding them into `out`.
    fn dispatch(
        self: &Arc<Self>,
        state: &mut MutexGuard<'_, State>,
        i: usize,
        room: usize,
        out: &mut Vec<u8>,
    ) {
        let was_free = state.workers[i].in_flight.is_empty();
        let mut taken = 0;
        while taken < room {
            let Some(mut job) = state.queue.pop_front() else {
                break;
            };
            if job.dispatched {
                if job.sink.is_cancelled() {
                    continue;
                }
            } else {
                if !job.sink.set_running() {
                    continue; // cancelled while queued
                }
                job.dispatched = true;
                job.sink.set_stopper(Arc::new(TaskStopper {
                    pool: Arc::downgrade(self),
                    id: job.id,
                }));
            }
            let call = Call {
                id: job.id,
                callee: job.callee,
                argument: &job.payload,
            };
            // The payload size was checked at submit, so the frame fits.
            let _ = wire::push_call(out, &call);
            let worker = &mut state.workers[i];
            worker.in_flight.push_back(job);
            worker.sent += 1;
            taken += 1;
        }
        // The queue ran dry during a shutdown: every other writer must now close its
        // worker's input. One asleep with a full pipe would otherwise wait for a wake-up
        // that its reader gives only while work is queued, and `shutdown(wait)` would
        // wait for its worker for ever.
        if state.phase != Phase::Open && state.queue.is_empty() {
            state.wake_all_writers();
        }
        if was_free && taken > 0 {
            state.workers[i].front_since = Some(coarse_now());
            // A free worker became busy: the writers that held back for it (as the
            // less-loaded one) may take what is left.
            if !state.queue.is_empty() {
                state.wake_writers();
            }
        }
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

    /// The reader thread: completes futures from the worker's replies, then handles
    /// the worker's end.
    fn read_results(self: &Arc<Self>, key: u64, stdout: File, process: &Process) {
        let mut input = BufReader::with_capacity(256 * 1024, stdout);
        let mut body = Vec::new();
        let ending = match self.handshake(&mut input, &mut body) {
            Err(ending) => ending,
            Ok(()) => {
                self.state.lock().failed_starts = 0;
                // Whatever goes wrong on this thread must end in `worker_gone` below:
                // a reader that died here would strand its worker and its tasks.
                catch_unwind(AssertUnwindSafe(|| {
                    self.serve_results(key, &mut input, &mut body)
                }))
                .unwrap_or_else(|payload| {
                    Ending::Protocol(format!(
                        "the pool's reader thread panicked: {}",
                        crate::error::panic_message(&*payload)
                    ))
                })
            }
        };
        // A worker whose stream made no sense, or that is silent, is stopped at once;
        // any other has ended its output because it is exiting, and gets the time to.
        let grace = match ending {
            Ending::Protocol(_) | Ending::BadHandshake(_) | Ending::HandshakeTimeout => {
                Duration::ZERO
            }
            _ => EXIT_GRACE,
        };
        let (status, killed) = process.reap(grace);
        self.worker_gone(key, process.pid(), ending, status, killed);
    }

    /// Reads a new worker's answers to the handshake: `Accepted` within the deadline,
    /// then (after its initializer, unbounded) `Ready`; anything else ends the worker.
    fn handshake(&self, input: &mut BufReader<File>, body: &mut Vec<u8>) -> Result<(), Ending> {
        if !readable_within(input, self.config.handshake_timeout) {
            return Err(Ending::HandshakeTimeout);
        }
        let mut expect = Handshake::Accepted;
        loop {
            match wire::read_handshake(input, body) {
                Ok(Some(answer)) if answer == expect => {}
                Ok(Some(Handshake::Refused(why))) => return Err(Ending::Refused(why.into_owned())),
                Ok(Some(Handshake::InitFailed(message))) if expect == Handshake::Ready => {
                    return Err(Ending::InitFailed(message.into_owned()));
                }
                Ok(Some(other)) => {
                    return Err(Ending::BadHandshake(format!("{other:?} out of turn")));
                }
                Ok(None) => return Err(Ending::NoHandshake),
                Err(e) => return Err(Ending::BadHandshake(e.to_string())),
            }
            if expect == Handshake::Ready {
                return Ok(());
            }
            expect = Handshake::Ready;
        }
    }

    fn serve_results(
        self: &Arc<Self>,
        key: u64,
        input: &mut BufReader<File>,
        body: &mut Vec<u8>,
    ) -> Ending {
        loop {
            let frame = match wire::read_reply(input, body) {
                Ok(Some(frame)) => frame,
                Ok(None) => return Ending::Closed,
                Err(e) => return Ending::Protocol(e.to_string()),
            };
            let job = {
                let mut state = self.state.lock();
                let Some(i) = state.index(key) else {
                    return Ending::Closed;
                };
                let worker = &mut state.workers[i];
                if worker
                    .in_flight
                    .front()
                    .is_none_or(|job| job.id != frame.id)
                {
                    return Ending::Protocol(format!(
                        "a result for task {} that the worker was not running",
                        frame.id
                    ));
                }
                state.took_result(i, frame.nanos)
            };
            if let Some(job) = job {
                contain("completing a task", || job.sink.deliver(frame.reply));
            }
        }
    }

    /// A worker's result stream ended: fail the task it was running (if it did not
    /// end normally), give the tasks it never started to other workers, and start a
    /// replacement if work is left.
    fn worker_gone(
        self: &Arc<Self>,
        key: u64,
        pid: u32,
        ending: Ending,
        status: io::Result<ExitStatus>,
        killed_by_pool: bool,
    ) {
        let mut failures: Vec<(Box<dyn Sink>, FutureError)> = Vec::new();
        let mut cancels: Vec<Box<dyn Sink>> = Vec::new();
        let start = {
            let mut state = self.state.lock();
            let Some(i) = state.index(key) else {
                return;
            };
            let worker = state.workers.remove(i);
            // Its writer may wait for work: let it see the worker is gone.
            worker.wake.notify();
            let how = describe_status(pid, &status);
            let signalled = matches!(&status, Ok(s) if s.signal().is_some());
            let end = status.as_ref().ok().copied();
            let broken = |kind, message| BrokenPoolError::new(kind, message).with_process(pid, end);
            match &ending {
                Ending::InitFailed(message) => failures.extend(state.break_pool(broken(
                    BrokenPoolKind::InitializerFailed,
                    format!(
                        "A process initializer failed, the process pool is not usable \
                         anymore: {message}"
                    ),
                ))),
                Ending::Refused(message) => failures.extend(state.break_pool(broken(
                    BrokenPoolKind::HandshakeRefused,
                    format!("a worker process refused to serve the pool: {message}"),
                ))),
                Ending::BadHandshake(what) => failures.extend(state.break_pool(broken(
                    BrokenPoolKind::BadHandshake,
                    format!(
                        "a worker process {how} after writing something other than a \
                         handshake ({what}); does main() call \
                         concurrent_futures::process_worker_main() first?"
                    ),
                ))),
                Ending::HandshakeTimeout => failures.extend(state.break_pool(broken(
                    BrokenPoolKind::HandshakeTimeout,
                    format!(
                        "a worker process (pid {pid}) did not answer its handshake within \
                         {:?}, so the pool stopped it; does main() call \
                         concurrent_futures::process_worker_main() first?",
                        self.config.handshake_timeout
                    ),
                ))),
                Ending::NoHandshake if !signalled => failures.extend(state.break_pool(broken(
                    BrokenPoolKind::NoHandshake,
                    format!(
                        "a worker process ended before its handshake ({how}); does main() \
                         call concurrent_futures::process_worker_main() first?"
                    ),
                ))),
                // Killed by the pool (cancel, terminate_workers/kill_workers): not a
                // failed start.
                Ending::NoHandshake
                    if worker.killed_for_cancel || state.phase == Phase::Terminating => {}
                Ending::NoHandshake => {
                    // Killed while starting (the OOM killer, say): replace it, unless
                    // every start dies that way.
                    state.failed_starts += 1;
                    if state.failed_starts >= MAX_FAILED_STARTS {
                        failures.extend(state.break_pool(broken(
                            BrokenPoolKind::RepeatedStartDeaths,
                            format!(
                                "{MAX_FAILED_STARTS} worker processes in a row died before \
                                 their handshake (the last one {how})"
                            ),
                        )));
                    }
                }
                Ending::Closed | Ending::Protocol(_) => {}
            }
            let mut in_flight = worker.in_flight;
            // Only a worker past its handshake ran anything.
            let ran_tasks = matches!(ending, Ending::Closed | Ending::Protocol(_));
            if ran_tasks
                && !worker.killed_for_cancel
                && let Some(job) = in_flight.pop_front()
                && !job.sink.is_cancelled()
            {
                let (kind, message) = match &ending {
                    Ending::Protocol(e) => (
                        WorkerErrorKind::Protocol,
                        format!(
                            "the pool could not read the worker's messages ({e}), so it \
                             stopped the worker process {how} while it ran this task"
                        ),
                    ),
                    _ if killed_by_pool => (
                        WorkerErrorKind::KilledByPool,
                        format!(
                            "the worker process (pid {pid}) closed its result pipe while \
                             running this task and did not exit within {EXIT_GRACE:?}, so the \
                             pool killed it"
                        ),
                    ),
                    _ => (
                        WorkerErrorKind::Died,
                        format!("the worker process {how} while running this task"),
                    ),
                };
                let error = WorkerError::new(kind, message).with_process(pid, end);
                failures.push((job.sink, FutureError::WorkerFailed(error)));
            }
            // The rest never started: they go back to the front of the queue, in order.
            for job in in_flight.into_iter().rev() {
                if job.sink.is_cancelled() {
                    continue;
                }
                if let Some(reason) = &state.broken {
                    failures.push((job.sink, FutureError::BrokenPool(reason.clone())));
                } else if state.phase == Phase::Terminating {
                    cancels.push(job.sink);
                } else {
                    state.queue.push_front(job);
                }
            }
            let start = state.claim_start(self.config.max_workers);
            state.wake_writers();
            self.gone.notify_all();
            start
        };
        for (sink, error) in failures {
            contain("failing a task", || sink.fail(error));
        }
        for sink in cancels {
            contain("cancelling a task", || sink.cancel_unstarted());
        }
        if start {
            self.start_worker();
        }
    }

    /// Python's `shutdown(wait, cancel_futures)`; see the executor's docs.
    pub(super) fn shutdown(&self, wait: bool, cancel_futures: bool) {
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
        for job in cancelled {
            if job.dispatched {
                job.sink.cancel_unstarted();
            } else {
                job.sink.cancel_pending();
            }
        }
        if !wait || IN_POOL_THREAD.get() {
            return;
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
    }

    /// `terminate_workers` / `kill_workers`: shut down, cancel the queue, and signal
    /// every worker.
    pub(super) fn signal_workers(&self, signal: Signal) {
        self.shutdown(false, true);
        let state = &mut *self.state.lock();
        if state.workers.is_empty() {
            return;
        }
        state.phase = Phase::Terminating;
        for worker in &state.workers {
            worker.process.signal(signal);
        }
        state.wake_all_writers();
    }
}

/// Waits until `input` has bytes to read (or its end) for at most `limit`; false when
/// the time ran out first.
fn readable_within(input: &BufReader<File>, limit: Duration) -> bool {
    if !input.buffer().is_empty() {
        return true;
    }
    // A limit too large to add to the clock is no limit.
    let deadline = Instant::now().checked_add(limit);
    loop {
        let left = deadline.map_or(Duration::MAX, |d| {
            d.saturating_duration_since(Instant::now())
        });
        // Whole milliseconds, rounded up, within what `poll` takes.
        let millis = u16::try_from(left.as_millis().saturating_add(1)).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(input.get_ref().as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(millis)) {
            Ok(0) if left.is_zero() => return false,
            Ok(0) | Err(Errno::EINTR) => {}
            // Readable, closed, or an error the read will report.
            Ok(_) | Err(_) => return true,
        }
    }
}

#[cfg(all(test, not(cf_loom)))]
mod handoff_model;
