//! Per-thread task counters, summed by `stats()`: each worker writes only its own, so
//! counting costs a task no shared cache line.

use crate::error::FutureError;
use crate::sync::{AtomicUsize, Ordering};

/// How a task a worker took ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ran {
    /// It returned.
    Completed,
    /// It panicked.
    Failed,
    /// It was cancelled before it started, or it ended with its token set.
    Cancelled,
}

impl Ran {
    pub(crate) fn of<T>(outcome: &Result<T, FutureError>) -> Self {
        if outcome.is_ok() {
            Self::Completed
        } else {
            Self::Failed
        }
    }
}

/// One worker's counts. Written only by its worker (a load and a store, no
/// read-modify-write), read by `stats()` on any thread; aligned to its own cache lines
/// so that two workers' counters never share one.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct WorkerCounters {
    taken: AtomicUsize,
    completed: AtomicUsize,
    failed: AtomicUsize,
    cancelled: AtomicUsize,
}

impl WorkerCounters {
    /// The worker took a task off the queue.
    pub(crate) fn took(&self) {
        bump(&self.taken);
    }

    /// The task the worker took ended.
    pub(crate) fn ended(&self, ran: Ran) {
        bump(match ran {
            Ran::Completed => &self.completed,
            Ran::Failed => &self.failed,
            Ran::Cancelled => &self.cancelled,
        });
    }

    pub(crate) fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }

    /// Completed, failed and cancelled tasks.
    pub(crate) fn ended_counts(&self) -> (usize, usize, usize) {
        (
            self.completed.load(Ordering::Acquire),
            self.failed.load(Ordering::Acquire),
            self.cancelled.load(Ordering::Acquire),
        )
    }
}

/// Adds one to a counter that only the calling thread writes.
fn bump(counter: &AtomicUsize) {
    counter.store(counter.load(Ordering::Relaxed) + 1, Ordering::Release);
}
