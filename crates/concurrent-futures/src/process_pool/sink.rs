//! The completing side of a task, as the supervisor holds it: a [`Sink`] erases the
//! result's type, and a [`PromiseSink`] completes a typed future from a worker's
//! [`Reply`] (decoding it, catching a panic in the result's own `Deserialize`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde::de::DeserializeOwned;

use super::wire::{self, ChunkReply, Reply};
use crate::error::{FutureError, PanicError, WorkerError, WorkerErrorKind};
use crate::future::{Promise, StopRunning};
use crate::map::ChunkOutput;

/// The completing side of one task, typed by its result; the supervisor sees it erased.
pub(super) trait Sink: Send {
    fn set_running(&self) -> bool;
    fn set_stopper(&self, stop: Arc<dyn StopRunning>) -> bool;
    fn is_cancelled(&self) -> bool;
    /// Completes the future from a worker's reply.
    fn deliver(self: Box<Self>, reply: Reply<'_>);
    fn fail(self: Box<Self>, error: FutureError);
    /// Cancels a task that was never handed to a worker.
    fn cancel_pending(self: Box<Self>);
    /// Cancels a task handed to a worker that never started it.
    fn cancel_unstarted(self: Box<Self>);
}

/// How the pool's tasks ended, for `stats()`: each sink counts its task once.
#[derive(Debug, Default)]
pub(super) struct Ended {
    pub(super) completed: AtomicUsize,
    pub(super) failed: AtomicUsize,
    pub(super) cancelled: AtomicUsize,
}

impl Ended {
    pub(super) fn snapshot(&self) -> EndedCounts {
        EndedCounts {
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            cancelled: self.cancelled.load(Ordering::Relaxed),
        }
    }
}

/// [`Ended`]'s counts at one moment.
#[derive(Debug, Clone, Copy)]
pub(super) struct EndedCounts {
    pub(super) completed: usize,
    pub(super) failed: usize,
    pub(super) cancelled: usize,
}

impl EndedCounts {
    pub(super) fn total(&self) -> usize {
        self.completed + self.failed + self.cancelled
    }
}

/// A [`Sink`] around a promise and the function that decodes the reply.
pub(super) struct PromiseSink<T> {
    promise: Promise<T>,
    decode: fn(&[u8]) -> Result<T, FutureError>,
    ended: CountOnce,
}

/// Counts a task's end once: the first `count` wins, and a sink dropped without being
/// completed (a cancelled task the writer skips) counts as cancelled.
struct CountOnce(Option<Arc<Ended>>);

impl CountOnce {
    fn count(&mut self, counter: fn(&Ended) -> &AtomicUsize) {
        if let Some(ended) = self.0.take() {
            counter(&ended).fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl Drop for CountOnce {
    fn drop(&mut self) {
        self.count(|e| &e.cancelled);
    }
}

impl<T> PromiseSink<T> {
    pub(super) fn new(
        promise: Promise<T>,
        decode: fn(&[u8]) -> Result<T, FutureError>,
        ended: Arc<Ended>,
    ) -> Self {
        Self {
            promise,
            decode,
            ended: CountOnce(Some(ended)),
        }
    }

    /// Counts a failure, or a cancellation when the future was cancelled meanwhile.
    fn count_failure(&mut self) {
        if self.promise.is_cancelled() {
            self.ended.count(|e| &e.cancelled);
        } else {
            self.ended.count(|e| &e.failed);
        }
    }
}

/// Decodes a single call's result.
pub(super) fn decode_one<R: DeserializeOwned>(body: &[u8]) -> Result<R, FutureError> {
    postcard::from_bytes(body).map_err(|e| {
        FutureError::WorkerFailed(WorkerError::new(
            WorkerErrorKind::ResultDecode,
            format!("the pool could not decode the result: {e}"),
        ))
    })
}

/// Decodes a map chunk's results.
pub(super) fn decode_chunk<R: DeserializeOwned>(
    body: &[u8],
) -> Result<ChunkOutput<R>, FutureError> {
    let reply: ChunkReply<R> = postcard::from_bytes(body).map_err(|e| {
        FutureError::WorkerFailed(WorkerError::new(
            WorkerErrorKind::ResultDecode,
            format!("the pool could not decode the chunk's results: {e}"),
        ))
    })?;
    Ok(ChunkOutput {
        values: reply.values,
        failures: reply
            .failures
            .into_iter()
            .map(|f| {
                let position = usize::try_from(f.position).unwrap_or(usize::MAX);
                (position, FutureError::from(f.fault))
            })
            .collect(),
        nanos_per_item: reply.nanos_per_item,
    })
}

impl<T: Send> Sink for PromiseSink<T> {
    fn set_running(&self) -> bool {
        self.promise.set_running()
    }

    fn set_stopper(&self, stop: Arc<dyn StopRunning>) -> bool {
        self.promise.set_stop_running(stop)
    }

    fn is_cancelled(&self) -> bool {
        self.promise.is_cancelled()
    }

    fn deliver(mut self: Box<Self>, reply: Reply<'_>) {
        if self.promise.is_cancelled() {
            return;
        }
        let outcome = match reply {
            // The result type's own `Deserialize` is user code and may panic: that fails
            // this task like a panic in the task itself, never the pool's reader thread.
            Reply::Ok(body) => catch_unwind(AssertUnwindSafe(|| (self.decode)(body)))
                .unwrap_or_else(|payload| Err(FutureError::Panicked(PanicError::new(payload)))),
            // The fault says what happened, with its data.
            Reply::Panicked(fault) | Reply::Failed(fault) => {
                Err(wire::Fault::decode(fault).map_or_else(FutureError::from, FutureError::from))
            }
        };
        if outcome.is_ok() {
            self.ended.count(|e| &e.completed);
        } else {
            self.count_failure();
        }
        self.promise.complete(outcome);
    }

    fn fail(mut self: Box<Self>, error: FutureError) {
        self.count_failure();
        self.promise.complete(Err(error));
    }

    fn cancel_pending(mut self: Box<Self>) {
        self.ended.count(|e| &e.cancelled);
        self.promise.cancel();
    }

    fn cancel_unstarted(mut self: Box<Self>) {
        self.ended.count(|e| &e.cancelled);
        self.promise.cancel_unstarted();
    }
}
