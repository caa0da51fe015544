//! The pool's side of the processes: the queue of encoded tasks, one writer and one
//! reader thread per worker process, and what happens when a worker ends.
//!
//! Locks: `Inner::state` (the bookkeeping) may be held while taking a future's own lock
//! (`set_running`) or a worker's `Process` lock (to signal it); never the other way
//! round, and never while a future is completed (completion runs user callbacks).

use std::cell::Cell;
use std::collections::VecDeque;
use std::fmt;
use std::fs::File;
use std::io::{self, BufReader, Write};
use std::os::fd::OwnedFd;
use std::os::unix::process::ExitStatusExt;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitStatus, waitpid};
use nix::unistd::Pid;
use serde::de::DeserializeOwned;

use super::StartMethod;
use super::call::Entry;
use super::fork_server::ForkServer;
use super::wire::{self, ChunkReply, Header};
use super::worker;
use crate::error::{FutureError, PanicError};
use crate::future::Promise;
use crate::map::ChunkOutput;
use crate::sync::{Condvar, Mutex, MutexGuard};

/// How much work (in nanoseconds of measured task time) is queued in each worker's pipe
/// ahead of what it is running: enough to hide the round trip and to batch system calls
/// for tiny tasks, little enough to balance slow tasks across workers (one at a time).
const PIPELINE_NANOS: u64 = 2_000_000;
/// The most tasks queued in one worker's pipe.
const MAX_DEPTH: u64 = 1024;
/// Workers in a row that may die before their handshake before the pool gives up
/// (instead of restarting them in a busy loop).
const MAX_FAILED_STARTS: u32 = 3;

thread_local! {
    /// Set in the pool's own threads, where `shutdown(wait = true)` must not wait for
    /// the thread itself (a done-callback may call it).
    static IN_POOL_THREAD: Cell<bool> = const { Cell::new(false) };
}

/// The completing side of one task, typed by its result; the supervisor sees it erased.
pub(super) trait Sink: Send {
    fn set_running(&self) -> bool;
    fn set_stopper(&self, stop: Box<dyn FnOnce() + Send + 'static>) -> bool;
    fn is_cancelled(&self) -> bool;
    /// Completes the future from a worker's reply frame.
    fn deliver(self: Box<Self>, tag: u8, body: &[u8]);
    fn fail(self: Box<Self>, error: FutureError);
    /// Cancels a task that was never handed to a worker.
    fn cancel_pending(self: Box<Self>);
    /// Cancels a task handed to a worker that never started it.
    fn cancel_unstarted(self: Box<Self>);
}

/// A [`Sink`] around a promise and the function that decodes the reply.
pub(super) struct PromiseSink<T> {
    promise: Promise<T>,
    decode: fn(&[u8]) -> Result<T, FutureError>,
}

impl<T> PromiseSink<T> {
    pub(super) fn new(promise: Promise<T>, decode: fn(&[u8]) -> Result<T, FutureError>) -> Self {
        Self { promise, decode }
    }
}

/// Decodes a single call's result.
pub(super) fn decode_one<R: DeserializeOwned>(body: &[u8]) -> Result<R, FutureError> {
    postcard::from_bytes(body).map_err(|e| {
        FutureError::WorkerFailed(format!("the pool could not decode the result: {e}"))
    })
}

/// Decodes a map chunk's results.
pub(super) fn decode_chunk<R: DeserializeOwned>(
    body: &[u8],
) -> Result<ChunkOutput<R>, FutureError> {
    let reply: ChunkReply<R> = postcard::from_bytes(body).map_err(|e| {
        FutureError::WorkerFailed(format!(
            "the pool could not decode the chunk's results: {e}"
        ))
    })?;
    Ok(ChunkOutput {
        values: reply.values,
        failures: reply
            .failures
            .into_iter()
            .map(|f| {
                let position = usize::try_from(f.position).unwrap_or(usize::MAX);
                let error = if f.panicked {
                    FutureError::Panicked(PanicError::from_message(f.message))
                } else {
                    FutureError::WorkerFailed(f.message)
                };
                (position, error)
            })
            .collect(),
        nanos_per_item: reply.nanos_per_item,
    })
}

impl<T: Send> Sink for PromiseSink<T> {
    fn set_running(&self) -> bool {
        self.promise.set_running()
    }

    fn set_stopper(&self, stop: Box<dyn FnOnce() + Send + 'static>) -> bool {
        self.promise.set_stop_running(stop)
    }

    fn is_cancelled(&self) -> bool {
        self.promise.is_cancelled()
    }

    fn deliver(self: Box<Self>, tag: u8, body: &[u8]) {
        if self.promise.is_cancelled() {
            return;
        }
        let message = || String::from_utf8_lossy(body).into_owned();
        let outcome = match tag {
            wire::TAG_OK => (self.decode)(body),
            wire::TAG_PANICKED => Err(FutureError::Panicked(PanicError::from_message(message()))),
            _ => Err(FutureError::WorkerFailed(message())),
        };
        self.promise.complete(outcome);
    }

    fn fail(self: Box<Self>, error: FutureError) {
        self.promise.complete(Err(error));
    }

    fn cancel_pending(self: Box<Self>) {
        self.promise.cancel();
    }

    fn cancel_unstarted(self: Box<Self>) {
        self.promise.cancel_unstarted();
    }
}

/// A task: the call, its encoded argument and its future.
pub(super) struct Job {
    id: u64,
    entry: Entry,
    payload: Vec<u8>,
    sink: Box<dyn Sink>,
    /// Already moved to running (it went to a worker, which died before running it).
    dispatched: bool,
}

/// Why `enqueue` refused a task.
#[derive(Debug)]
pub(super) enum Refused {
    ShutDown,
    Broken(String),
}

/// The fixed settings of a pool.
#[derive(Debug)]
pub(super) struct Config {
    pub(super) max_workers: usize,
    pub(super) max_tasks_per_child: Option<u64>,
    pub(super) start_method: StartMethod,
    /// The handshake frame every new worker gets first.
    pub(super) hello: Vec<u8>,
}

/// A worker process, signalled and reaped under one lock so that a signal never
/// reaches a reused pid.
///
/// Every worker is this process's child, a forked one too (the fork server forks with
/// `CLONE_PARENT`), so its pid stays ours until we reap it: both kinds are signalled
/// with `kill` and reaped with `waitpid`.
struct Process {
    pid: u32,
    reaped: Mutex<bool>,
}

impl Process {
    fn new(pid: u32) -> Self {
        Self {
            pid,
            reaped: Mutex::new(false),
        }
    }

    fn nix_pid(&self) -> Pid {
        Pid::from_raw(self.pid.cast_signed())
    }

    fn signal(&self, signal: Signal) {
        let reaped = self.reaped.lock();
        if !*reaped {
            // An error means the process is already gone (a zombie until we reap it).
            let _ = nix::sys::signal::kill(self.nix_pid(), signal);
        }
    }

    /// Waits for the process, which closed its result pipe: it has exited or is
    /// exiting (a SIGKILL makes sure of it without changing the status of a process
    /// already exiting).
    fn reap(&self) -> io::Result<ExitStatus> {
        let mut reaped = self.reaped.lock();
        let _ = nix::sys::signal::kill(self.nix_pid(), Signal::SIGKILL);
        let status = wait_for(self.nix_pid());
        *reaped = true;
        status
    }
}

/// `waitpid`, with the status in `ExitStatus`'s raw form.
fn wait_for(pid: Pid) -> io::Result<ExitStatus> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(ExitStatus::from_raw((code & 0xff) << 8)),
            Ok(WaitStatus::Signaled(_, signal, core)) => {
                let core = if core { 0x80 } else { 0 };
                return Ok(ExitStatus::from_raw(signal as i32 | core));
            }
            // Stops and continues are not reported without WUNTRACED/WCONTINUED.
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The pool's fork server, started with the first worker.
enum ForkServerSlot {
    Unstarted,
    Running(ForkServer),
    /// It could not start, failed or the pool is done: workers are started from the
    /// executable.
    Unusable,
}

/// What the pool knows about one worker.
struct Worker {
    key: u64,
    process: Arc<Process>,
    /// Tasks written to the worker, in order; the front one is running.
    in_flight: VecDeque<Job>,
    sent: u64,
    /// The writer thread waits for work.
    waiting: bool,
    wake: Arc<Condvar>,
    /// The writer closed the worker's input: it takes no more tasks.
    closed: bool,
    /// The pool killed it to stop a cancelled task: fail nothing else.
    killed_for_cancel: bool,
}

struct State {
    queue: VecDeque<Job>,
    workers: Vec<Worker>,
    starting: usize,
    shutdown: bool,
    terminating: bool,
    broken: Option<String>,
    next_id: u64,
    next_key: u64,
    threads: Vec<JoinHandle<()>>,
    /// Moving average of the measured task time, in nanoseconds.
    avg_nanos: Option<u64>,
    /// The most the pipeline depth may be now: doubles with each result and falls back
    /// to 1 after a slow one, so that a few quick first results (the average of one
    /// tiny task) cannot queue a batch of slow tasks behind one worker.
    ramp: u64,
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

    fn depth(&self) -> usize {
        let depth = match self.avg_nanos {
            None => 1,
            Some(nanos) => (PIPELINE_NANOS / nanos.max(1)).clamp(1, self.ramp),
        };
        usize::try_from(depth).unwrap_or(1)
    }

    /// A waiting writer is woken only once its worker's pipe holds fewer tasks than
    /// this, so that it refills many at once instead of one write per result.
    fn low_water(&self) -> usize {
        (self.depth() / 2).max(1)
    }

    fn observe(&mut self, nanos: u64) {
        self.ramp = if nanos >= PIPELINE_NANOS {
            1
        } else {
            self.ramp.saturating_mul(2).min(MAX_DEPTH)
        };
        self.avg_nanos = Some(match self.avg_nanos {
            None => nanos,
            Some(avg) => (avg.saturating_mul(7) / 8).saturating_add(nanos / 8),
        });
    }

    /// Wakes the waiting writers that have room (after the queue grew).
    fn wake_writers(&self) {
        let depth = self.depth();
        for w in &self.workers {
            if w.waiting && w.in_flight.len() < depth {
                w.wake.notify_one();
            }
        }
    }

    /// Wakes one waiting writer with room (after one task was queued): the one with the
    /// fewest tasks in its pipe, so that an idle worker gets the task first.
    fn wake_one_writer(&self) {
        let low = self.low_water();
        if let Some(w) = self
            .workers
            .iter()
            .filter(|w| w.waiting && w.in_flight.len() < low)
            .min_by_key(|w| w.in_flight.len())
        {
            w.wake.notify_one();
        }
    }

    /// An open worker (not worker `i`) whose pipe holds fewer tasks than worker `i`'s:
    /// its writer should take the next task rather than queue it behind worker `i`'s
    /// (a slow task there would hold it while the other worker idles; issue 12). Its
    /// writer need not be waiting: one that is writing looks at the queue again after.
    fn less_loaded_writer(&self, i: usize) -> Option<&Worker> {
        let mine = self.workers[i].in_flight.len();
        self.workers
            .iter()
            .enumerate()
            .filter(|&(j, w)| j != i && !w.closed && w.in_flight.len() < mine)
            .min_by_key(|(_, w)| w.in_flight.len())
            .map(|(_, w)| w)
    }

    fn wake_all_writers(&self) {
        for w in &self.workers {
            w.wake.notify_one();
        }
    }

    /// Marks the pool broken: fails every queued task and kills every worker (their
    /// tasks then fail too). Returns the tasks to fail, outside the lock.
    fn break_pool(&mut self, reason: String) -> Vec<(Box<dyn Sink>, FutureError)> {
        if self.broken.is_none() {
            self.broken = Some(reason);
        }
        let reason = self.broken.clone().unwrap_or_default();
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
    /// Taken alone, never with `state`.
    fork_server: Mutex<ForkServerSlot>,
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
                    .map(|w| w.process.pid)
                    .collect::<Vec<_>>(),
            )
            .field("workers_started", &state.started)
            .field("queued", &state.queue.len())
            .field("shut_down", &state.shutdown)
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
    /// Something that is not a handshake came first (a `main` without
    /// `process_worker_main` that printed to stdout, say).
    BadHandshake(String),
    /// The stream broke or made no sense.
    Protocol(String),
}

impl Inner {
    pub(super) fn new(config: Config) -> Arc<Self> {
        Arc::new(Self {
            config,
            state: Mutex::new(State {
                queue: VecDeque::new(),
                workers: Vec::new(),
                starting: 0,
                shutdown: false,
                terminating: false,
                broken: None,
                next_id: 0,
                next_key: 0,
                threads: Vec::new(),
                avg_nanos: None,
                ramp: 1,
                started: 0,
                failed_starts: 0,
            }),
            gone: Condvar::new(),
            fork_server: Mutex::new(ForkServerSlot::Unstarted),
        })
    }

    pub(super) fn max_workers(&self) -> usize {
        self.config.max_workers
    }

    /// Why a submit would be refused now.
    pub(super) fn refusal(&self) -> Option<Refused> {
        let state = self.state.lock();
        if let Some(reason) = &state.broken {
            Some(Refused::Broken(reason.clone()))
        } else if state.shutdown {
            Some(Refused::ShutDown)
        } else {
            None
        }
    }

    /// Queues a task and starts a worker if fewer than `max_workers` take tasks.
    pub(super) fn enqueue(
        self: &Arc<Self>,
        entry: Entry,
        payload: Vec<u8>,
        sink: Box<dyn Sink>,
    ) -> Result<(), Refused> {
        let start = {
            let mut state = self.state.lock();
            if let Some(reason) = &state.broken {
                return Err(Refused::Broken(reason.clone()));
            }
            if state.shutdown {
                return Err(Refused::ShutDown);
            }
            let id = state.next_id;
            state.next_id += 1;
            state.queue.push_back(Job {
                id,
                entry,
                payload,
                sink,
                dispatched: false,
            });
            state.wake_one_writer();
            let start = state.open_workers() < self.config.max_workers;
            if start {
                state.starting += 1;
            }
            start
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
            .map(|w| w.process.pid)
            .collect()
    }

    /// A new worker process with its task and result pipes: forked by the fork server
    /// if the pool uses one and it works, else started from the executable.
    fn launch(&self) -> io::Result<(Process, File, File)> {
        if self.config.start_method == StartMethod::ForkServer {
            let mut slot = self.fork_server.lock();
            if matches!(*slot, ForkServerSlot::Unstarted) {
                *slot =
                    ForkServer::start().map_or(ForkServerSlot::Unusable, ForkServerSlot::Running);
            }
            if let ForkServerSlot::Running(server) = &mut *slot {
                match server.fork() {
                    Ok(forked) => {
                        let process = Process::new(forked.pid);
                        return Ok((process, forked.tasks, forked.results));
                    }
                    // The server is gone or cannot fork: stop it and start workers
                    // from the executable from now on.
                    Err(_) => *slot = ForkServerSlot::Unusable,
                }
            }
        }
        spawn_process()
    }

    /// Starts one worker process and its two threads; `state.starting` was raised for it.
    fn start_worker(self: &Arc<Self>) {
        let spawned = self.launch();
        let mut failures = Vec::new();
        let mut orphan = None;
        {
            let mut state = self.state.lock();
            state.starting -= 1;
            match spawned {
                Ok((process, stdin, stdout)) => {
                    let process = Arc::new(process);
                    if state.terminating || state.broken.is_some() {
                        orphan = Some(process);
                    } else if let Err(e) = self.add_worker(&mut state, &process, stdin, stdout) {
                        orphan = Some(process);
                        if state.workers.is_empty() && state.starting == 0 {
                            failures = state.break_pool(format!(
                                "could not start a thread for a worker process: {e}"
                            ));
                        }
                    }
                }
                Err(e) => {
                    if state.workers.is_empty() && state.starting == 0 {
                        failures =
                            state.break_pool(format!("could not start a worker process: {e}"));
                    }
                }
            }
            self.gone.notify_all();
        }
        if let Some(process) = orphan {
            let _ = process.reap();
        }
        for (sink, error) in failures {
            sink.fail(error);
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
        let wake = Arc::new(Condvar::new());
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
        let writer = std::thread::Builder::new()
            .name(format!("process-pool-writer-{key}"))
            .spawn(move || {
                IN_POOL_THREAD.set(true);
                inner.write_tasks(key, stdin, &writer_wake);
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
    fn write_tasks(self: &Arc<Self>, key: u64, mut stdin: File, wake: &Condvar) {
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
            let mut respawn = false;
            {
                let mut state = self.state.lock();
                loop {
                    let Some(i) = state.index(key) else {
                        return;
                    };
                    let depth = state.depth();
                    let worker = &state.workers[i];
                    let left = self
                        .config
                        .max_tasks_per_child
                        .map_or(u64::MAX, |max| max.saturating_sub(worker.sent));
                    let stop = left == 0
                        || state.terminating
                        || state.broken.is_some()
                        || (state.shutdown && state.queue.is_empty());
                    if stop {
                        state.workers[i].closed = true;
                        respawn = !state.shutdown
                            && left == 0
                            && !state.queue.is_empty()
                            && state.broken.is_none()
                            && !state.terminating
                            && state.open_workers() < self.config.max_workers;
                        if respawn {
                            state.starting += 1;
                        }
                        break;
                    }
                    let room = depth.saturating_sub(worker.in_flight.len());
                    let room = usize::try_from(left).map_or(room, |left| room.min(left));
                    // No more than a fair share of the queue, so that the other workers
                    // (and those starting) get tasks too.
                    let share = state.queue.len().div_ceil(state.open_workers().max(1));
                    let room = room.min(share.max(1));
                    if let Some(other) = state.less_loaded_writer(i)
                        && !state.queue.is_empty()
                    {
                        other.wake.notify_one();
                    } else if room > 0 && !state.queue.is_empty() {
                        self.dispatch(&mut state, i, room, &mut out);
                        if !out.is_empty() {
                            break;
                        }
                        continue;
                    }
                    state.workers[i].waiting = true;
                    state = wake.wait(state);
                    if let Some(i) = state.index(key) {
                        state.workers[i].waiting = false;
                    }
                }
            }
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

    /// Moves up to `room` queued tasks to worker `i`, encoding them into `out`.
    fn dispatch(
        self: &Arc<Self>,
        state: &mut MutexGuard<'_, State>,
        i: usize,
        room: usize,
        out: &mut Vec<u8>,
    ) {
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
                let weak: Weak<Self> = Arc::downgrade(self);
                let id = job.id;
                job.sink.set_stopper(Box::new(move || {
                    if let Some(inner) = weak.upgrade() {
                        inner.stop_running(id);
                    }
                }));
            }
            let header = Header {
                tag: wire::TAG_CALL,
                id: job.id,
                x: job.entry.trampoline,
                y: job.entry.func,
            };
            // The payload size was checked at submit, so the frame fits.
            let _ = wire::push_frame(out, header, &job.payload);
            let worker = &mut state.workers[i];
            worker.in_flight.push_back(job);
            worker.sent += 1;
            taken += 1;
        }
    }

    /// `cancel()` on a running task: kill its worker if the task is what the worker
    /// runs now; a task still waiting in the worker's pipe is simply dropped when its
    /// result comes (the future is already cancelled).
    fn stop_running(&self, id: u64) {
        let mut state = self.state.lock();
        for worker in &mut state.workers {
            if let Some(pos) = worker.in_flight.iter().position(|job| job.id == id) {
                if pos == 0 {
                    worker.killed_for_cancel = true;
                    worker.process.signal(Signal::SIGKILL);
                }
                return;
            }
        }
    }

    /// The reader thread: completes futures from the worker's replies, then handles
    /// the worker's end.
    fn read_results(self: &Arc<Self>, key: u64, stdout: File, process: &Process) {
        let mut input = BufReader::with_capacity(256 * 1024, stdout);
        let mut body = Vec::new();
        let ending = match wire::read_frame(&mut input, &mut body) {
            Ok(Some(h)) if h.tag == wire::TAG_READY => {
                self.state.lock().failed_starts = 0;
                self.serve_results(key, &mut input, &mut body)
            }
            Ok(Some(h)) if h.tag == wire::TAG_INIT_FAILED => {
                Ending::InitFailed(String::from_utf8_lossy(&body).into_owned())
            }
            Ok(Some(h)) if h.tag == wire::TAG_REFUSED => {
                Ending::Refused(String::from_utf8_lossy(&body).into_owned())
            }
            Ok(Some(h)) => Ending::BadHandshake(format!("a message with tag {}", h.tag)),
            Ok(None) => Ending::NoHandshake,
            Err(e) => Ending::BadHandshake(e.to_string()),
        };
        let status = process.reap();
        self.worker_gone(key, process.pid, ending, status);
    }

    fn serve_results(
        self: &Arc<Self>,
        key: u64,
        input: &mut BufReader<File>,
        body: &mut Vec<u8>,
    ) -> Ending {
        loop {
            let header = match wire::read_frame(input, body) {
                Ok(Some(header)) => header,
                Ok(None) => return Ending::Closed,
                Err(e) => return Ending::Protocol(e.to_string()),
            };
            if !matches!(
                header.tag,
                wire::TAG_OK | wire::TAG_PANICKED | wire::TAG_FAILED
            ) {
                return Ending::Protocol(format!("unexpected message (tag {})", header.tag));
            }
            let job = {
                let mut state = self.state.lock();
                let Some(i) = state.index(key) else {
                    return Ending::Closed;
                };
                let worker = &mut state.workers[i];
                if worker
                    .in_flight
                    .front()
                    .is_none_or(|job| job.id != header.id)
                {
                    return Ending::Protocol(format!(
                        "a result for task {} that the worker was not running",
                        header.id
                    ));
                }
                let job = worker.in_flight.pop_front();
                let (waiting, len) = (worker.waiting, worker.in_flight.len());
                state.observe(header.x);
                if waiting && len < state.low_water() && !state.queue.is_empty() {
                    state.workers[i].wake.notify_one();
                }
                job
            };
            if let Some(job) = job {
                job.sink.deliver(header.tag, body);
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
            worker.wake.notify_one();
            let how = describe_status(pid, &status);
            let signalled = matches!(&status, Ok(s) if s.signal().is_some());
            match &ending {
                Ending::InitFailed(message) => failures.extend(state.break_pool(format!(
                    "A process initializer failed, the process pool is not usable anymore: \
                     {message}"
                ))),
                Ending::Refused(message) => failures.extend(state.break_pool(format!(
                    "a worker process refused to serve the pool: {message}"
                ))),
                Ending::BadHandshake(what) => failures.extend(state.break_pool(format!(
                    "a worker process {how} after writing something other than a handshake \
                     ({what}); does main() call concurrent_futures::process_worker_main() \
                     first?"
                ))),
                Ending::NoHandshake if !signalled => failures.extend(state.break_pool(format!(
                    "a worker process ended before its handshake ({how}); does main() \
                     call concurrent_futures::process_worker_main() first?"
                ))),
                Ending::NoHandshake if worker.killed_for_cancel => {}
                Ending::NoHandshake => {
                    // Killed while starting (the OOM killer, say): replace it, unless
                    // every start dies that way.
                    state.failed_starts += 1;
                    if state.failed_starts >= MAX_FAILED_STARTS {
                        failures.extend(state.break_pool(format!(
                            "{MAX_FAILED_STARTS} worker processes in a row died before their \
                             handshake (the last one {how})"
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
                let message = match &ending {
                    Ending::Protocol(e) => format!(
                        "the pool could not read the worker's messages ({e}), so it stopped \
                         the worker process {how} while it ran this task"
                    ),
                    _ => format!("the worker process {how} while running this task"),
                };
                failures.push((job.sink, FutureError::WorkerFailed(message)));
            }
            // The rest never started: they go back to the front of the queue, in order.
            for job in in_flight.into_iter().rev() {
                if job.sink.is_cancelled() {
                    continue;
                }
                if let Some(reason) = &state.broken {
                    failures.push((job.sink, FutureError::BrokenPool(reason.clone())));
                } else if state.terminating {
                    cancels.push(job.sink);
                } else {
                    state.queue.push_front(job);
                }
            }
            let start = !state.queue.is_empty()
                && !state.terminating
                && state.broken.is_none()
                && state.open_workers() < self.config.max_workers;
            if start {
                state.starting += 1;
            }
            state.wake_writers();
            self.gone.notify_all();
            start
        };
        for (sink, error) in failures {
            sink.fail(error);
        }
        for sink in cancels {
            sink.cancel_unstarted();
        }
        if start {
            self.start_worker();
        }
    }

    /// Python's `shutdown(wait, cancel_futures)`; see the executor's docs.
    pub(super) fn shutdown(&self, wait: bool, cancel_futures: bool) {
        let cancelled: Vec<Job> = {
            let mut state = self.state.lock();
            state.shutdown = true;
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
        // No worker will start again: stop the fork server (its drop reaps it).
        let server = std::mem::replace(&mut *self.fork_server.lock(), ForkServerSlot::Unusable);
        drop(server);
    }

    /// `terminate_workers` / `kill_workers`: shut down, cancel the queue, and signal
    /// every worker.
    pub(super) fn signal_workers(&self, signal: Signal) {
        self.shutdown(false, true);
        let state = &mut *self.state.lock();
        if state.workers.is_empty() {
            return;
        }
        state.terminating = true;
        for worker in &state.workers {
            worker.process.signal(signal);
        }
        state.wake_all_writers();
    }
}

/// "exited with status 3", "was killed by signal 9 (SIGKILL)".
pub(super) fn describe_status(pid: u32, status: &io::Result<ExitStatus>) -> String {
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => format!("(pid {pid}) exited with status {code}"),
            (None, Some(signal)) => {
                let name = Signal::try_from(signal).map_or("unknown signal", Signal::as_str);
                let core = if s.core_dumped() { ", core dumped" } else { "" };
                format!("(pid {pid}) was killed by signal {signal} ({name}{core})")
            }
            (None, None) => format!("(pid {pid}) ended with {s}"),
        },
        Err(e) => format!("(pid {pid}) ended; its status is unknown: {e}"),
    }
}

/// Starts the pool's executable again as a worker, with pipes on stdin and stdout.
fn spawn_process() -> io::Result<(Process, File, File)> {
    let mut command = worker::command();
    command.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = command.spawn()?;
    match (child.stdin.take(), child.stdout.take()) {
        (Some(stdin), Some(stdout)) => {
            let (stdin, stdout) = (
                File::from(OwnedFd::from(stdin)),
                File::from(OwnedFd::from(stdout)),
            );
            // Dropping `child` neither kills nor waits: `Process` reaps the pid itself.
            Ok((Process::new(child.id()), stdin, stdout))
        }
        _ => {
            let _ = child.kill();
            let _ = child.wait();
            Err(io::Error::other("the worker process has no pipes"))
        }
    }
}
