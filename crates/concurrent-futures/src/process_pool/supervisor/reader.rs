//! A worker's reader thread: reads the handshake answers, then the replies, completing
//! each task's future outside the state lock; when the result stream ends it reaps the
//! process and settles what the worker held ([`Inner::worker_gone`]): the task it ran
//! fails (unless it ended normally), the tasks behind it go back to the queue, and a
//! replacement is claimed if work is left.

use std::fs::File;
use std::io::{self, BufReader};
use std::os::fd::AsFd;
use std::os::unix::process::ExitStatusExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a worker that never answered its handshake most likely lacks.
const GUARD_HINT: &str = "does main() call concurrent_futures::process_worker_main() first (in \
                          a #[test] binary: is concurrent_futures::process_test_support!() \
                          invoked)?";

use nix::errno::Errno;
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};

use super::{Inner, Phase};
use crate::error::{BrokenPoolError, BrokenPoolKind, FutureError, WorkerError, WorkerErrorKind};
use crate::process_pool::process::{Process, describe_status};
use crate::process_pool::sink::Sink;
use crate::process_pool::wire::{self, Handshake};
use crate::unwind::contain;

/// Workers in a row that may die before their handshake before the pool gives up
/// (instead of restarting them in a busy loop).
const MAX_FAILED_STARTS: u32 = 3;
/// How long a worker that closed its result pipe may take to exit by itself before the
/// pool kills it: the exit status is then the worker's own (a panic's 101, a task's
/// `exit(3)`), not the pool's SIGKILL.
const EXIT_GRACE: Duration = Duration::from_secs(2);

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
    /// The reader thread: completes futures from the worker's replies, then handles
    /// the worker's end.
    pub(super) fn read_results(self: &Arc<Self>, key: u64, stdout: File, process: &Process) {
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
                         handshake ({what}); {GUARD_HINT}"
                    ),
                ))),
                Ending::HandshakeTimeout => failures.extend(state.break_pool(broken(
                    BrokenPoolKind::HandshakeTimeout,
                    format!(
                        "a worker process (pid {pid}) did not answer its handshake within \
                         {:?}, so the pool stopped it; {GUARD_HINT}",
                        self.config.handshake_timeout
                    ),
                ))),
                Ending::NoHandshake if !signalled => failures.extend(state.break_pool(broken(
                    BrokenPoolKind::NoHandshake,
                    format!("a worker process ended before its handshake ({how}); {GUARD_HINT}"),
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
                    _ if worker.killed_at_deadline => (
                        WorkerErrorKind::KilledByPool,
                        format!(
                            "the pool killed the worker process (pid {pid}) at its shutdown's \
                             deadline while it ran this task"
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
