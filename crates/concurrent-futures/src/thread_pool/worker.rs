//! The worker thread's loop.

use std::panic::{AssertUnwindSafe, catch_unwind};

use crossbeam_channel::TryRecvError;

use super::Inner;
use super::counters::{Ran, WorkerCounters};
use crate::error::panic_message;
use crate::sync::Ordering;

/// Runs the initializer, then tasks until the queue is closed and empty; counts each
/// task in `counters`, and says it exited as its last step.
pub(super) fn run(inner: &Inner, counters: &WorkerCounters) {
    serve(inner, counters);
    inner.worker_exited();
}

fn serve(inner: &Inner, counters: &WorkerCounters) {
    if let Some(init) = &inner.initializer {
        let outcome = catch_unwind(AssertUnwindSafe(|| init())).unwrap_or_else(|payload| {
            Err(format!(
                "the initializer panicked: {}",
                panic_message(&*payload)
            ))
        });
        if let Err(reason) = outcome {
            inner.break_pool(reason);
            return;
        }
    }
    let queue = &inner.queue;
    // Whether this worker already counted itself idle (just before publishing its last
    // result, so that a caller woken by that result finds it idle and reuses it).
    let mut counted_idle = false;
    loop {
        let next = if counted_idle {
            queue.recv().ok()
        } else {
            match queue.try_recv() {
                Ok(job) => Some(job),
                Err(TryRecvError::Empty) => {
                    if !inner.saturated() {
                        inner.idle.fetch_add(1, Ordering::AcqRel);
                    }
                    queue.recv().ok()
                }
                Err(TryRecvError::Disconnected) => None,
            }
        };
        let Some(job) = next else {
            break;
        };
        counted_idle = false;
        counters.took();
        if inner.cancelling.load(Ordering::Acquire) {
            job.cancel();
            counters.ended(Ran::Cancelled);
            continue;
        }
        job.run(&mut |ran| {
            counters.ended(ran);
            if !inner.saturated() && queue.is_empty() {
                inner.idle.fetch_add(1, Ordering::AcqRel);
                counted_idle = true;
            }
        });
    }
}
