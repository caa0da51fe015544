//! The crate's errors: [`BuildError`], [`RunError`], [`SubmitError`], and [`TaskError`],
//! the cluster's own reasons for a future's failure (inside
//! [`FutureError::Executor`]).

use std::fmt;

use concurrent_futures::{Exclusive, ExecutorError, FutureError};
use serde::{Deserialize, Serialize};

/// A [`ClusterExecutor`](crate::ClusterExecutor) or [`Worker`](crate::Worker) could not
/// be built: the broker URL does not parse, the broker cannot be reached, an option is
/// out of range, or (for a worker) the local process pool could not start.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct BuildError {
    message: String,
}

impl BuildError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// [`Worker::run`](crate::Worker::run) stopped for a reason other than a stop request:
/// the broker stayed unreachable longer than the worker's reconnect budget.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct RunError {
    message: String,
}

impl RunError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// `submit` refused the task; the argument comes back with
/// [`into_inner`](Self::into_inner).
#[non_exhaustive]
pub enum SubmitError<A> {
    /// The executor was shut down.
    ShutDown(Exclusive<A>),
    /// The executor is broken (the broker stayed unreachable past the reconnect budget);
    /// the error says why.
    Broken(Exclusive<A>, TaskError),
    /// The argument could not be encoded.
    Encode(Exclusive<A>, String),
}

impl<A> SubmitError<A> {
    /// The refused argument.
    pub fn into_inner(self) -> A {
        match self {
            Self::ShutDown(a) | Self::Broken(a, _) | Self::Encode(a, _) => a.into_inner(),
        }
    }

    /// True when the executor was shut down.
    pub fn is_shutdown(&self) -> bool {
        matches!(self, Self::ShutDown(_))
    }
}

impl<A> fmt::Debug for SubmitError<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShutDown(_) => f.write_str("ShutDown(..)"),
            Self::Broken(_, why) => f.debug_tuple("Broken").field(&"..").field(why).finish(),
            Self::Encode(_, why) => f.debug_tuple("Encode").field(&"..").field(why).finish(),
        }
    }
}

impl<A> fmt::Display for SubmitError<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShutDown(_) => f.write_str("cannot schedule new futures after shutdown"),
            Self::Broken(_, why) => write!(f, "cannot schedule new futures: {why}"),
            Self::Encode(_, why) => write!(f, "cannot encode the argument: {why}"),
        }
    }
}

impl<A> std::error::Error for SubmitError<A> {}

/// Why the cluster failed a task, carried by
/// [`FutureError::Executor`]: use
/// [`TaskError::of`] (or `error.executor_error()?.downcast_ref::<TaskError>()`) to get it.
///
/// A task's own `Err` is its value and a task's panic is
/// [`FutureError::Panicked`], as in the local
/// pools; these are the failures only a cluster has.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The worker has no task of that name: it was not run.
    #[error(
        "worker {worker} does not know the task {task:?}; it was not run (register it in the worker)"
    )]
    UnknownTask {
        /// The task's name.
        task: String,
        /// The worker that refused it (`host:pid`).
        worker: String,
    },
    /// The worker knows the name with other argument or result types (another build):
    /// it was not run, and its argument was not decoded.
    #[error(
        "worker {worker} knows the task {task:?} with another signature (fingerprint {found:#018x}, the client sent {sent:#018x}): a worker of another build? It was not run"
    )]
    SignatureMismatch {
        /// The task's name.
        task: String,
        /// The worker that refused it.
        worker: String,
        /// The fingerprint the client sent.
        sent: u64,
        /// The worker's fingerprint for that name.
        found: u64,
    },
    /// The worker could not decode the argument; the task was not run.
    #[error("worker {worker} could not decode the argument of {task:?}: {message}")]
    ArgumentDecode {
        /// The task's name.
        task: String,
        /// The worker.
        worker: String,
        /// The decoder's message.
        message: String,
    },
    /// The client could not decode the result.
    #[error("could not decode the result of {task:?}: {message}")]
    ResultDecode {
        /// The task's name.
        task: String,
        /// The decoder's message.
        message: String,
    },
    /// The task or its result could not be read on the other side: a worker could not
    /// decode the task message, or this client the worker's result. Usually a client and
    /// workers built with different versions of this crate. The task did not run (or
    /// its result is lost).
    #[error("{message}")]
    Undecodable {
        /// What could not be read, and by whom.
        message: String,
    },
    /// The worker could not run the task or send its result (its local pool refused
    /// it, the result could not be encoded).
    #[error("worker {worker} could not complete {task:?}: {message}")]
    Worker {
        /// The task's name.
        task: String,
        /// The worker.
        worker: String,
        /// What went wrong.
        message: String,
    },
    /// Every delivery of the task killed the process running it (or its worker
    /// vanished): after `max_deliveries` attempts it was moved to the queue's
    /// dead-letter stream. Each attempt says where it ran and how it ended.
    #[error("the task {task:?} failed {n} deliveries, each killing the process that ran it, and was moved to the dead-letter stream: {list}", n = attempts.len(), list = AttemptList(attempts))]
    DeliveriesExhausted {
        /// The task's name.
        task: String,
        /// One entry per delivery, in order.
        attempts: Vec<Attempt>,
    },
    /// The broker lost the task: it restarted without its data (or was flushed), and
    /// the executor was built with [`OnDataLoss::Fail`](crate::OnDataLoss::Fail).
    #[error("the broker lost the task {task:?} (it restarted without its data)")]
    BrokerDataLost {
        /// The task's name.
        task: String,
    },
    /// The broker stayed unreachable longer than the reconnect budget.
    #[error("the broker stayed unreachable: {message}")]
    BrokerUnavailable {
        /// The last connection error.
        message: String,
    },
}

impl TaskError {
    /// The cluster's reason inside a future's error, when it is one.
    pub fn of(error: &FutureError) -> Option<&TaskError> {
        error.executor_error()?.downcast_ref::<TaskError>()
    }

    /// The attempts of a [`TaskError::DeliveriesExhausted`].
    pub fn attempts(&self) -> Option<&[Attempt]> {
        match self {
            Self::DeliveriesExhausted { attempts, .. } => Some(attempts),
            _ => None,
        }
    }
}

impl From<TaskError> for FutureError {
    fn from(e: TaskError) -> Self {
        FutureError::Executor(ExecutorError::new(e))
    }
}

/// One delivery of a task that did not complete: where it ran and how it ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    pub(crate) host: String,
    pub(crate) worker_pid: u32,
    pub(crate) child_pid: Option<u32>,
    pub(crate) exit_code: Option<i32>,
    pub(crate) signal: Option<i32>,
    pub(crate) lease_expired: bool,
}

impl Attempt {
    /// The worker's host name.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The worker process's pid (on its host).
    pub fn worker_pid(&self) -> u32 {
        self.worker_pid
    }

    /// The pid of the worker's child that ran the task and died, when known.
    pub fn child_pid(&self) -> Option<u32> {
        self.child_pid
    }

    /// The child's exit code, when it exited.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
    }

    /// The signal that killed the child (9 SIGKILL, 6 SIGABRT), when one did.
    pub fn signal(&self) -> Option<i32> {
        self.signal
    }

    /// True when the whole worker vanished (killed, stopped, host gone) and another
    /// worker claimed the task after its lease: then only the host and worker pid are
    /// known.
    pub fn is_lease_expired(&self) -> bool {
        self.lease_expired
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "host {} worker pid {}", self.host, self.worker_pid)?;
        if self.lease_expired {
            return f.write_str(": the worker vanished and its lease expired");
        }
        if let Some(pid) = self.child_pid {
            write!(f, ", child pid {pid}")?;
        }
        match (self.signal, self.exit_code) {
            (Some(signal), _) => write!(f, " killed by signal {signal}"),
            (None, Some(code)) => write!(f, " exited with status {code}"),
            (None, None) => f.write_str(" died"),
        }
    }
}

struct AttemptList<'a>(&'a [Attempt]);

impl fmt::Display for AttemptList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, attempt) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}. {attempt}", i + 1)?;
        }
        Ok(())
    }
}
