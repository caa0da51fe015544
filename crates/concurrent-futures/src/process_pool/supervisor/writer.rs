//! A worker's writer thread: moves queued tasks into the worker's task pipe, many per
//! `write`, and closes the pipe when the worker is to take no more. What it may take is
//! decided under the state lock by [`Inner::writer_step`], with the rules of
//! `pipeline.rs`; whoever changes what that decision depends on wakes it (the state
//! table of the process pool's `README.md`).

use std::fs::File;
use std::io::Write;
use std::sync::Arc;

use super::{Inner, Phase, State, TaskStopper, Wake};
use crate::process_pool::pipeline::{self, Load, coarse_now};
use crate::process_pool::wire::{self, Call};
use crate::sync::MutexGuard;

/// A writer's next move ([`Inner::writer_step`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum WriterStep {
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

impl Inner {
    /// The writer thread: moves queued tasks into the worker's pipe, many per write.
    pub(super) fn write_tasks(self: &Arc<Self>, key: u64, mut stdin: File, wake: &Wake) {
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
    pub(super) fn writer_step(
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
}
