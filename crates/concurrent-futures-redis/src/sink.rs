//! The completing side of a cluster task in the client: turns the worker's outcome
//! into the value (or failure) of the task's [`FutureHandle`](concurrent_futures::FutureHandle).

use std::marker::PhantomData;

use concurrent_futures::{Completer, FutureError, PanicError, PanicLocation};
use serde::de::DeserializeOwned;

use crate::error::TaskError;
use crate::wire::{self, ItemOutcome, Outcome};

/// Why the client fails a task without a worker's outcome.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    Cancelled,
    Task(TaskError),
}

impl Failure {
    fn into_error(self) -> FutureError {
        match self {
            Self::Cancelled => FutureError::Cancelled,
            Self::Task(e) => e.into(),
        }
    }
}

/// Completes a task's future from what the worker sent.
pub(crate) trait Sink: Send {
    /// The worker's outcome.
    fn finish(self: Box<Self>, outcome: Outcome);
    /// The client's own failure.
    fn fail(self: Box<Self>, failure: Failure);
}

/// One item's outcome as the value or failure of a future.
fn item_result<R: DeserializeOwned>(task: &str, item: ItemOutcome) -> Result<R, FutureError> {
    match item {
        ItemOutcome::Value(bytes) => wire::decode(&bytes).map_err(|message| {
            TaskError::ResultDecode {
                task: task.to_owned(),
                message,
            }
            .into()
        }),
        ItemOutcome::Panicked { message, location } => {
            Err(FutureError::Panicked(PanicError::from_parts(
                message,
                location.map(|(file, line, column)| PanicLocation::new(file, line, column)),
            )))
        }
        ItemOutcome::Failed(e) => Err(e.into()),
    }
}

/// The sink of one `submit`.
pub(crate) struct OneSink<R> {
    pub(crate) completer: Completer<R>,
    pub(crate) task: &'static str,
}

impl<R: DeserializeOwned + Send> Sink for OneSink<R> {
    fn finish(self: Box<Self>, outcome: Outcome) {
        let result = match outcome {
            Outcome::Items(mut items) if items.len() == 1 => {
                item_result(self.task, items.pop().expect("one item"))
            }
            Outcome::Items(items) => Err(TaskError::Worker {
                task: self.task.to_owned(),
                worker: String::from("?"),
                message: format!("{} results for one call", items.len()),
            }
            .into()),
            Outcome::Failed(e) => Err(e.into()),
            Outcome::Cancelled => Err(FutureError::Cancelled),
        };
        // A future cancelled meanwhile keeps its cancellation.
        let _ = match result {
            Ok(value) => self.completer.set_result(value).map_err(drop),
            Err(e) => self.completer.set_failure(e).map_err(drop),
        };
    }

    fn fail(self: Box<Self>, failure: Failure) {
        let _ = self.completer.set_failure(failure.into_error());
    }
}

/// The sink of one chunk of a `map`: one result per item.
pub(crate) struct ChunkSink<R> {
    pub(crate) completer: Completer<Vec<Result<R, FutureError>>>,
    pub(crate) task: &'static str,
    pub(crate) len: usize,
    pub(crate) _types: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned + Send> Sink for ChunkSink<R> {
    fn finish(self: Box<Self>, outcome: Outcome) {
        let results = match outcome {
            Outcome::Items(items) if items.len() == self.len => items
                .into_iter()
                .map(|item| item_result(self.task, item))
                .collect(),
            Outcome::Items(items) => {
                let e = TaskError::Worker {
                    task: self.task.to_owned(),
                    worker: String::from("?"),
                    message: format!("{} results for {} items", items.len(), self.len),
                };
                (0..self.len).map(|_| Err(e.clone().into())).collect()
            }
            Outcome::Failed(e) => (0..self.len).map(|_| Err(e.clone().into())).collect(),
            Outcome::Cancelled => (0..self.len).map(|_| Err(FutureError::Cancelled)).collect(),
        };
        let _ = self.completer.set_result(results);
    }

    fn fail(self: Box<Self>, failure: Failure) {
        let results = (0..self.len)
            .map(|_| Err(failure.clone().into_error()))
            .collect();
        let _ = self.completer.set_result(results);
    }
}
