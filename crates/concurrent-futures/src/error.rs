//! Error types, one per operation (as crossbeam does for channels).
//!
//! Every error is `Send + Sync + 'static`, whatever it carries, so that `?` turns it into
//! an `anyhow::Error` or a `Box<dyn Error + Send + Sync>`. A panic payload
//! (`Box<dyn Any + Send>`) and a refused task (often a closure that is not `Sync`) are
//! therefore held in an [`Exclusive`], as tokio's `JoinError` holds its payload in a
//! `SyncWrapper`.

use std::any::Any;
use std::fmt;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use crate::FutureHandle;
use crate::panic_site;

/// Owns a value and lends it out only by value or through `&mut`, so that it is `Sync`
/// whenever the value is `Send`, even if the value is not `Sync`.
///
/// Sharing `&Exclusive<T>` between threads is harmless because nothing can be done with
/// it: there is no `&T` to be had from a shared reference. This is what lets an error
/// that gives back a task which is not `Sync` (a closure capturing a
/// [`Cell`](std::cell::Cell), say) still be `Send + Sync` and go through `?` into
/// `anyhow::Error`. It plays the part of tokio's `SyncWrapper` and of the unstable
/// `std::sync::Exclusive`.
///
/// # Examples
///
/// ```
/// use std::cell::Cell;
/// use concurrent_futures::{SubmitError, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::new();
/// pool.shutdown(true, false);
/// let calls = Cell::new(0); // Send, not Sync
/// match pool.submit(move || { calls.set(calls.get() + 1); calls.get() }) {
///     Err(SubmitError::ShutDown(task)) => assert_eq!(task.into_inner()(), 1),
///     other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
/// }
/// ```
pub struct Exclusive<T> {
    // std's lock rather than `crate::sync`'s: it is never locked (so never poisoned and
    // never part of a loom model); it is here only because `Mutex<T>` is `Sync` for
    // `T: Send`, which gives that guarantee without `unsafe`.
    inner: std::sync::Mutex<T>,
}

impl<T> Exclusive<T> {
    /// Wraps `value`.
    pub fn new(value: T) -> Self {
        Self {
            inner: std::sync::Mutex::new(value),
        }
    }

    /// The value, moved out.
    pub fn into_inner(self) -> T {
        self.inner
            .into_inner()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The value, borrowed mutably (a `&mut` proves that no other thread can see it).
    pub fn get_mut(&mut self) -> &mut T {
        self.inner
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl<T> From<T> for Exclusive<T> {
    fn from(value: T) -> Self {
        Self::new(value)
    }
}

impl<T> fmt::Debug for Exclusive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Showing the value would need `&T`, which is exactly what this type withholds.
        f.debug_struct("Exclusive").finish_non_exhaustive()
    }
}

/// Why a future holds no value: what [`FutureHandle::result`] returns instead of one.
///
/// A task's own `Result<T, E>` is the task's value and is never wrapped in this type:
/// a task returning `Err(e)` finishes successfully with the value `Err(e)`.
#[derive(Debug)]
#[non_exhaustive]
pub enum FutureError {
    /// The future was cancelled before it finished (`cancel()` or
    /// `shutdown(cancel_futures = true)`), Python's `CancelledError`.
    Cancelled,
    /// The task panicked; the worker survived. Holds the panic message and payload.
    Panicked(PanicError),
    /// The pool became unusable before the task could run, Python's `BrokenExecutor`:
    /// for example a worker initializer failed. [`BrokenPoolError::kind`] says why.
    BrokenPool(BrokenPoolError),
    /// A process-pool task could not be completed because of the worker process or the
    /// wire: the worker died while running it ([`WorkerError::exit_code`],
    /// [`WorkerError::signal`]), or its argument or result could not be encoded or
    /// decoded ([`WorkerError::kind`]). The pool itself stays usable.
    WorkerFailed(WorkerError),
    /// The value was already taken (the handle was polled again after it completed).
    ResultTaken,
    /// An executor outside this crate (a [`Completer`](crate::Completer)'s owner, such as
    /// a cluster executor) failed the task for a reason of its own, Python's
    /// `set_exception` with an exception class of the executor's; the
    /// [`ExecutorError`] carries that error, reachable with
    /// [`downcast_ref`](ExecutorError::downcast_ref).
    Executor(ExecutorError),
}

impl FutureError {
    /// True for [`FutureError::Cancelled`].
    pub fn is_cancelled(&self) -> bool {
        matches!(self, Self::Cancelled)
    }

    /// True for [`FutureError::Panicked`].
    pub fn is_panic(&self) -> bool {
        matches!(self, Self::Panicked(_))
    }

    /// True for [`FutureError::BrokenPool`].
    pub fn is_broken_pool(&self) -> bool {
        matches!(self, Self::BrokenPool(_))
    }

    /// True for [`FutureError::WorkerFailed`].
    pub fn is_worker_failed(&self) -> bool {
        matches!(self, Self::WorkerFailed(_))
    }

    /// The worker's failure, for [`FutureError::WorkerFailed`].
    pub fn worker_error(&self) -> Option<&WorkerError> {
        match self {
            Self::WorkerFailed(e) => Some(e),
            _ => None,
        }
    }

    /// Why the pool broke, for [`FutureError::BrokenPool`].
    pub fn broken_pool_error(&self) -> Option<&BrokenPoolError> {
        match self {
            Self::BrokenPool(e) => Some(e),
            _ => None,
        }
    }

    /// The executor's own error, for [`FutureError::Executor`].
    pub fn executor_error(&self) -> Option<&ExecutorError> {
        match self {
            Self::Executor(e) => Some(e),
            _ => None,
        }
    }

    /// A copy for [`FutureHandle::exception`]: the same kind and message, without a panic
    /// payload (the payload can only be moved out once, through `result`).
    pub(crate) fn describe(&self) -> Self {
        match self {
            Self::Cancelled => Self::Cancelled,
            Self::Panicked(p) => Self::Panicked(PanicError::from_parts(
                p.0.message.clone(),
                p.0.location.clone(),
            )),
            Self::BrokenPool(m) => Self::BrokenPool(m.clone()),
            Self::WorkerFailed(m) => Self::WorkerFailed(m.clone()),
            Self::ResultTaken => Self::ResultTaken,
            Self::Executor(e) => Self::Executor(e.clone()),
        }
    }

    /// The short name used by `FutureHandle`'s `Debug` output (`raised Panicked`).
    pub(crate) fn kind_name(&self) -> &'static str {
        match self {
            Self::Cancelled => "Cancelled",
            Self::Panicked(_) => "Panicked",
            Self::BrokenPool(_) => "BrokenPool",
            Self::WorkerFailed(_) => "WorkerFailed",
            Self::ResultTaken => "ResultTaken",
            Self::Executor(_) => "Executor",
        }
    }
}

impl fmt::Display for FutureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cancelled => f.write_str("the future was cancelled"),
            // The location first, as std prints "thread 'main' panicked at src/main.rs:2:5".
            Self::Panicked(p) => match &p.0.location {
                Some(at) => write!(f, "the task panicked at {at}: {}", p.0.message),
                None => write!(f, "the task panicked: {}", p.0.message),
            },
            Self::BrokenPool(m) => write!(f, "broken pool: {m}"),
            Self::WorkerFailed(m) => write!(f, "worker failed: {m}"),
            Self::ResultTaken => f.write_str("the result was already taken"),
            Self::Executor(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for FutureError {}

impl From<ExecutorError> for FutureError {
    fn from(e: ExecutorError) -> Self {
        Self::Executor(e)
    }
}

/// A failure defined by an executor outside this crate: what [`FutureError::Executor`]
/// holds. It shares the error (an `Arc`), so that [`FutureHandle::exception`] can
/// hand out a copy; [`downcast_ref`](Self::downcast_ref) reaches the executor's own
/// type and its data.
///
/// # Examples
///
/// ```
/// use concurrent_futures::{ExecutorError, FutureHandle};
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("no worker knows the task {0:?}")]
/// struct UnknownTask(String);
///
/// let (completer, handle) = FutureHandle::<u32>::pending();
/// completer.set_failure(ExecutorError::new(UnknownTask("resize".into())).into())?;
/// let error = handle.result().unwrap_err();
/// assert_eq!(error.to_string(), "no worker knows the task \"resize\"");
/// let why = error.executor_error().and_then(|e| e.downcast_ref::<UnknownTask>());
/// assert_eq!(why.map(|u| u.0.as_str()), Some("resize"));
/// # Ok::<(), anyhow::Error>(())
/// ```
///
/// [`FutureHandle::exception`]: crate::FutureHandle::exception
#[derive(Clone)]
pub struct ExecutorError(Arc<Box<dyn std::error::Error + Send + Sync + 'static>>);

impl ExecutorError {
    /// Wraps the executor's error.
    pub fn new(error: impl std::error::Error + Send + Sync + 'static) -> Self {
        // Boxed inside the `Arc` so that the pointer is thin and `FutureError` stays
        // two words.
        Self(Arc::new(Box::new(error)))
    }

    /// The executor's error as its own type, when it is an `E`.
    pub fn downcast_ref<E: std::error::Error + 'static>(&self) -> Option<&E> {
        self.0.downcast_ref::<E>()
    }

    /// The executor's error.
    pub fn get_ref(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &**self.0
    }
}

impl fmt::Debug for ExecutorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("ExecutorError").field(&self.0).finish()
    }
}

impl fmt::Display for ExecutorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for ExecutorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

impl From<WorkerError> for FutureError {
    fn from(e: WorkerError) -> Self {
        Self::WorkerFailed(e)
    }
}

impl From<BrokenPoolError> for FutureError {
    fn from(e: BrokenPoolError) -> Self {
        Self::BrokenPool(e)
    }
}

/// What a [`WorkerError`] or [`BrokenPoolError`] holds, boxed: an error travels in every
/// `Result<T, FutureError>`, so a small one keeps every task's future record small.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ProcessFailure<K> {
    kind: K,
    end: ProcessEnd,
    message: String,
}

/// How a worker process ended, when it did: its pid and exit status, as the pool saw
/// them. Shared by [`WorkerError`] and [`BrokenPoolError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct ProcessEnd {
    pid: Option<u32>,
    status: Option<ExitStatus>,
}

impl ProcessEnd {
    fn exit_code(&self) -> Option<i32> {
        self.status.and_then(|s| s.code())
    }

    fn signal(&self) -> Option<i32> {
        self.status.and_then(|s| s.signal())
    }
}

/// Why a process-pool task failed without a value of its own (it did not panic): the
/// worker process died under it, or its argument or result could not cross between
/// the processes. What [`FutureError::WorkerFailed`] holds.
///
/// Opaque, like tokio's `JoinError`: [`kind`](Self::kind) and the predicates say what
/// happened, [`pid`](Self::pid), [`exit_status`](Self::exit_status),
/// [`exit_code`](Self::exit_code) and [`signal`](Self::signal) give the process's data
/// when it ended, and `Display` (or [`message`](Self::message)) is the sentence for a
/// person.
///
/// # Examples
///
/// ```
/// use concurrent_futures::{FutureError, ProcessPoolExecutor, WorkerErrorKind};
///
/// fn crash(code: i32) -> u32 {
///     std::process::exit(code)
/// }
///
/// fn main() -> anyhow::Result<()> {
///     concurrent_futures::process_worker_main();
///     let pool = ProcessPoolExecutor::builder().max_workers(1).build()?;
///     match pool.submit(crash, 3)?.result() {
///         Err(FutureError::WorkerFailed(e)) => {
///             assert_eq!(e.kind(), WorkerErrorKind::Died);
///             assert_eq!(e.exit_code(), Some(3));
///             assert!(e.pid().is_some());
///         }
///         other => panic!("expected a dead worker, got {other:?}"),
///     }
///     Ok(())
/// }
/// ```
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.message)]
pub struct WorkerError(Box<ProcessFailure<WorkerErrorKind>>);

/// What went wrong in a [`WorkerError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WorkerErrorKind {
    /// The worker process exited or was killed by a signal while it ran the task
    /// (`exit(3)`, `abort()`, the OOM killer, `kill_workers()`). The exit status or
    /// signal is in [`WorkerError::exit_code`] and [`WorkerError::signal`].
    Died,
    /// The worker closed its result pipe while running the task and did not exit in
    /// time, so the pool killed it: its signal is the pool's, not the task's.
    KilledByPool,
    /// The worker's messages made no sense (a corrupt or truncated stream, a result
    /// for another task, a reply with the wrong number of results), so the pool
    /// stopped the worker while it ran the task.
    Protocol,
    /// The task function is not in the executable's own code (it lives in a shared
    /// library, say), so a worker process cannot find it.
    NotInExecutable,
    /// The pool could not encode the argument.
    ArgumentEncode,
    /// The encoded argument is larger than a message may be.
    ArgumentTooLarge,
    /// The worker could not decode the argument.
    ArgumentDecode,
    /// The worker could not encode the result.
    ResultEncode,
    /// The encoded result is larger than a message may be.
    ResultTooLarge,
    /// The pool could not decode the result.
    ResultDecode,
}

impl fmt::Debug for WorkerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkerError")
            .field("kind", &self.0.kind)
            .field("pid", &self.0.end.pid)
            .field("exit_status", &self.0.end.status)
            .field("message", &self.0.message)
            .finish()
    }
}

impl WorkerError {
    pub(crate) fn new(kind: WorkerErrorKind, message: impl Into<String>) -> Self {
        Self(Box::new(ProcessFailure {
            kind,
            end: ProcessEnd::default(),
            message: message.into(),
        }))
    }

    /// The same error, naming the worker process (and its exit status when it ended).
    pub(crate) fn with_process(mut self, pid: u32, status: Option<ExitStatus>) -> Self {
        self.0.end = ProcessEnd {
            pid: Some(pid),
            status,
        };
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> WorkerErrorKind {
        self.0.kind
    }

    /// The worker process concerned, when the failure happened in or to one.
    pub fn pid(&self) -> Option<u32> {
        self.0.end.pid
    }

    /// The worker's exit status, when it ended and the pool reaped it.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.0.end.status
    }

    /// The worker's exit code, when it exited (rather than being killed by a signal).
    pub fn exit_code(&self) -> Option<i32> {
        self.0.end.exit_code()
    }

    /// The signal that killed the worker (9 for SIGKILL, 6 for SIGABRT), when one did.
    pub fn signal(&self) -> Option<i32> {
        self.0.end.signal()
    }

    /// The sentence that `Display` shows ("the worker process (pid 42) exited with status
    /// 3 while running this task").
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// True when the worker process ended by itself while it ran the task
    /// ([`WorkerErrorKind::Died`]).
    pub fn is_died(&self) -> bool {
        self.0.kind == WorkerErrorKind::Died
    }

    /// True when the worker process was killed by a signal, whoever sent it.
    pub fn is_signaled(&self) -> bool {
        self.signal().is_some()
    }

    /// True when the pool itself killed the worker ([`WorkerErrorKind::KilledByPool`]).
    pub fn is_killed_by_pool(&self) -> bool {
        self.0.kind == WorkerErrorKind::KilledByPool
    }

    /// True when the worker's messages made no sense ([`WorkerErrorKind::Protocol`]).
    pub fn is_protocol(&self) -> bool {
        self.0.kind == WorkerErrorKind::Protocol
    }

    /// True when the argument or the result could not cross between the processes: not
    /// encodable, not decodable, or too large. The worker is fine and goes on.
    pub fn is_encoding(&self) -> bool {
        matches!(
            self.0.kind,
            WorkerErrorKind::ArgumentEncode
                | WorkerErrorKind::ArgumentTooLarge
                | WorkerErrorKind::ArgumentDecode
                | WorkerErrorKind::ResultEncode
                | WorkerErrorKind::ResultTooLarge
                | WorkerErrorKind::ResultDecode
        )
    }
}

/// Why a pool is broken, Python's `BrokenExecutor`: what [`FutureError::BrokenPool`],
/// [`SubmitError::Broken`] and [`MapError::Broken`] hold.
///
/// Opaque, like [`WorkerError`]: [`kind`](Self::kind) says why, and when a worker
/// process was involved, [`pid`](Self::pid), [`exit_status`](Self::exit_status) and
/// [`signal`](Self::signal) say which and how it ended. `Display` (or
/// [`message`](Self::message)) is the sentence for a person.
///
/// # Examples
///
/// ```
/// use concurrent_futures::{BrokenPoolKind, SubmitError, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::builder()
///     .initializer(|| Err("no config".to_owned()))
///     .build()?;
/// let first = pool.submit(|| 1)?;
/// let why = first.result().unwrap_err();
/// let why = why.broken_pool_error().expect("a broken pool");
/// assert_eq!(why.kind(), BrokenPoolKind::InitializerFailed);
/// assert!(why.message().ends_with("no config"));
/// match pool.submit(|| 2) {
///     Err(SubmitError::Broken(_, why)) => assert!(why.is_initializer_failed()),
///     other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
/// }
/// # Ok::<(), anyhow::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.message)]
pub struct BrokenPoolError(Box<ProcessFailure<BrokenPoolKind>>);

/// Why a pool broke, in a [`BrokenPoolError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum BrokenPoolKind {
    /// A worker's initializer returned `Err` or panicked.
    InitializerFailed,
    /// A worker process refused the handshake: it is not the pool's executable, or not
    /// the same build of it.
    HandshakeRefused,
    /// A worker process ended before its handshake (usually: `main` does not call
    /// `process_worker_main()` first, so the worker ran the program instead).
    NoHandshake,
    /// A worker process wrote something other than a handshake first.
    BadHandshake,
    /// A worker process did not send its handshake in time.
    HandshakeTimeout,
    /// Several worker processes in a row were killed before their handshake, so the
    /// pool stopped starting them.
    RepeatedStartDeaths,
    /// No worker (thread or process) could be started at all.
    StartFailed,
    /// The executor dropped the task before it completed (it went away without running
    /// it).
    TaskDropped,
}

impl fmt::Debug for BrokenPoolError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BrokenPoolError")
            .field("kind", &self.0.kind)
            .field("pid", &self.0.end.pid)
            .field("exit_status", &self.0.end.status)
            .field("message", &self.0.message)
            .finish()
    }
}

impl BrokenPoolError {
    pub(crate) fn new(kind: BrokenPoolKind, message: impl Into<String>) -> Self {
        Self(Box::new(ProcessFailure {
            kind,
            end: ProcessEnd::default(),
            message: message.into(),
        }))
    }

    /// A task's promise was dropped before it completed.
    pub(crate) fn task_dropped() -> Self {
        Self::new(
            BrokenPoolKind::TaskDropped,
            "the task was dropped by the executor before it completed",
        )
    }

    /// The same error, naming the worker process that broke the pool (and its exit
    /// status when it ended).
    pub(crate) fn with_process(mut self, pid: u32, status: Option<ExitStatus>) -> Self {
        self.0.end = ProcessEnd {
            pid: Some(pid),
            status,
        };
        self
    }

    /// Why the pool broke.
    pub fn kind(&self) -> BrokenPoolKind {
        self.0.kind
    }

    /// The worker process that broke the pool, when one did.
    pub fn pid(&self) -> Option<u32> {
        self.0.end.pid
    }

    /// That worker's exit status, when it ended and the pool reaped it.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.0.end.status
    }

    /// That worker's exit code, when it exited (rather than being killed by a signal).
    pub fn exit_code(&self) -> Option<i32> {
        self.0.end.exit_code()
    }

    /// The signal that killed that worker, when one did.
    pub fn signal(&self) -> Option<i32> {
        self.0.end.signal()
    }

    /// The sentence that `Display` shows.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// True when an initializer failed ([`BrokenPoolKind::InitializerFailed`]).
    pub fn is_initializer_failed(&self) -> bool {
        self.0.kind == BrokenPoolKind::InitializerFailed
    }

    /// True when a worker process did not complete its handshake: it refused, ended
    /// first, wrote something else or took too long.
    pub fn is_handshake_failed(&self) -> bool {
        matches!(
            self.0.kind,
            BrokenPoolKind::HandshakeRefused
                | BrokenPoolKind::NoHandshake
                | BrokenPoolKind::BadHandshake
                | BrokenPoolKind::HandshakeTimeout
        )
    }

    /// True when the executor dropped the task ([`BrokenPoolKind::TaskDropped`]).
    pub fn is_task_dropped(&self) -> bool {
        self.0.kind == BrokenPoolKind::TaskDropped
    }
}

/// A task's panic, caught by the pool: the message, where it happened and (once) the
/// payload.
///
/// `Display` shows the bare message, like [`message`](Self::message); the location is in
/// `Debug` and in the `Display` of [`FutureError::Panicked`] (`the task panicked at
/// src/main.rs:7:9: boom`).
///
/// # Examples
///
/// ```
/// use concurrent_futures::{FutureError, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::new();
/// let line = line!() + 1;
/// let handle = pool.submit(|| -> u32 { panic!("boom") })?;
/// match handle.result() {
///     Err(FutureError::Panicked(p)) => {
///         assert_eq!(p.message(), "boom");
///         assert_eq!(p.location().map(|at| at.line()), Some(line));
///     }
///     other => panic!("expected a panic, got {other:?}"),
/// }
/// # Ok::<(), anyhow::Error>(())
/// ```
pub struct PanicError(Box<PanicParts>);

/// What a [`PanicError`] holds, boxed for the same reason as [`ProcessFailure`].
struct PanicParts {
    message: String,
    location: Option<PanicLocation>,
    payload: Option<Exclusive<Box<dyn Any + Send + 'static>>>,
}

impl PanicError {
    /// A panic caught on this thread just now: the location comes from the panic hook
    /// (see [`panic_site`]), when it recorded this very panic.
    pub(crate) fn new(payload: Box<dyn Any + Send + 'static>) -> Self {
        let message = panic_message(&*payload);
        let location = panic_site::take(payload_str(&*payload));
        Self(Box::new(PanicParts {
            message,
            location,
            payload: Some(Exclusive::new(payload)),
        }))
    }

    /// A panic known only by its message and location, for example one that happened in
    /// another process or on another host (an executor outside this crate reports it
    /// through a [`Completer`](crate::Completer)), or a copy without the payload.
    /// [`into_panic`](Self::into_panic) then gives the message as a `String` payload.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{PanicError, PanicLocation};
    ///
    /// let at = PanicLocation::new("src/tasks.rs", 12, 5);
    /// let panic = PanicError::from_parts("boom".to_owned(), Some(at));
    /// assert_eq!(panic.message(), "boom");
    /// assert_eq!(panic.location().map(|at| at.line()), Some(12));
    /// ```
    pub fn from_parts(message: String, location: Option<PanicLocation>) -> Self {
        Self(Box::new(PanicParts {
            message,
            location,
            payload: None,
        }))
    }

    /// The panic message (`"boom"` for `panic!("boom")`), or a placeholder when the payload
    /// was neither a `&str` nor a `String`.
    pub fn message(&self) -> &str {
        &self.0.message
    }

    /// Where the task panicked, when known: for panics in tasks and `map` items of both
    /// pools (a process-pool worker notes the location and sends it with the message),
    /// unless the program replaced the panic hook after the pool was built or, in a
    /// worker, after `process_worker_main` (a replacement that calls the hook it took
    /// keeps this working), or the panic was raised with [`std::panic::resume_unwind`],
    /// which runs no hook.
    pub fn location(&self) -> Option<&PanicLocation> {
        self.0.location.as_ref()
    }

    /// The panic payload, to re-raise it with [`std::panic::resume_unwind`]. When the
    /// payload is not available (a copy made by `exception()`, or a panic in another
    /// process), the message is returned as a `String` payload.
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        let parts = *self.0;
        match parts.payload {
            Some(payload) => payload.into_inner(),
            None => Box::new(parts.message),
        }
    }
}

impl fmt::Debug for PanicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PanicError")
            .field("message", &self.0.message)
            .field("location", &self.0.location)
            .finish_non_exhaustive()
    }
}

impl fmt::Display for PanicError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.message)
    }
}

/// Where a panic happened, as [`std::panic::Location`] reports it, but owned (so that it
/// can outlive the panic and cross from a worker process). `Display` shows
/// `file:line:column`, as std's panic message does.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PanicLocation {
    file: String,
    line: u32,
    column: u32,
}

impl PanicLocation {
    /// A location from its parts, as [`std::panic::Location`] gives them (for a panic
    /// reported by another process or host).
    pub fn new(file: impl Into<String>, line: u32, column: u32) -> Self {
        Self {
            file: file.into(),
            line,
            column,
        }
    }

    /// The source file, as the compiler named it (`src/main.rs`, or a path relative to
    /// the workspace root).
    pub fn file(&self) -> &str {
        &self.file
    }

    /// The line, counted from 1.
    pub fn line(&self) -> u32 {
        self.line
    }

    /// The column, counted from 1.
    pub fn column(&self) -> u32 {
        self.column
    }
}

impl From<&std::panic::Location<'_>> for PanicLocation {
    fn from(at: &std::panic::Location<'_>) -> Self {
        Self::new(at.file(), at.line(), at.column())
    }
}

impl fmt::Display for PanicLocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// The message of a panic payload.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    payload_str(payload).map_or_else(|| "<non-string panic payload>".to_owned(), str::to_owned)
}

/// The payload as a string, when it is one (what `PanicHookInfo::payload_as_str` sees).
fn payload_str(payload: &(dyn Any + Send)) -> Option<&str> {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        Some(s)
    } else {
        payload.downcast_ref::<String>().map(String::as_str)
    }
}

/// The error of [`FutureHandle::result_timeout`]: the future did not finish in time (the
/// handle is given back, still usable) or it finished without a value.
#[non_exhaustive]
pub enum ResultTimeoutError<T> {
    /// The timeout passed first; the handle is still pending or running.
    Timeout(FutureHandle<T>),
    /// The future finished without a value.
    Failed(FutureError),
}

/// The error of [`FutureHandle::try_result`]: the future is not done yet (the handle is
/// given back) or it finished without a value.
#[non_exhaustive]
pub enum TryResultError<T> {
    /// The future is still pending or running.
    NotReady(FutureHandle<T>),
    /// The future finished without a value.
    Failed(FutureError),
}

macro_rules! give_back_impls {
    ($ty:ident, $waiting:ident, $text:literal) => {
        impl<T> $ty<T> {
            /// The handle, when the future was not done yet.
            pub fn into_handle(self) -> Option<FutureHandle<T>> {
                match self {
                    Self::$waiting(handle) => Some(handle),
                    Self::Failed(_) => None,
                }
            }
        }

        impl<T> fmt::Debug for $ty<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    Self::$waiting(_) => f.write_str(concat!(stringify!($waiting), "(..)")),
                    Self::Failed(e) => f.debug_tuple("Failed").field(e).finish(),
                }
            }
        }

        impl<T> fmt::Display for $ty<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                match self {
                    Self::$waiting(_) => f.write_str($text),
                    Self::Failed(e) => fmt::Display::fmt(e, f),
                }
            }
        }

        impl<T> std::error::Error for $ty<T> {}
    };
}

give_back_impls!(
    ResultTimeoutError,
    Timeout,
    "the future did not finish within the timeout"
);
give_back_impls!(TryResultError, NotReady, "the future is not done yet");

impl<T> ResultTimeoutError<T> {
    /// True when the timeout passed first.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }
}

impl<T> TryResultError<T> {
    /// True when the future was not done yet.
    pub fn is_not_ready(&self) -> bool {
        matches!(self, Self::NotReady(_))
    }
}

/// The error of `submit`: the task was refused and is given back.
///
/// The task is held in an [`Exclusive`], so that this error is `Send + Sync` even for a
/// task that is not `Sync`: [`into_inner`](Self::into_inner) (or
/// [`Exclusive::into_inner`] on a matched variant) gives it back.
#[non_exhaustive]
pub enum SubmitError<F> {
    /// The executor was shut down: Python's "cannot schedule new futures after shutdown".
    ShutDown(Exclusive<F>),
    /// The executor is broken (for example an initializer failed); the error says why.
    Broken(Exclusive<F>, BrokenPoolError),
}

impl<F> SubmitError<F> {
    pub(crate) fn shut_down(task: F) -> Self {
        Self::ShutDown(Exclusive::new(task))
    }

    pub(crate) fn broken(task: F, reason: BrokenPoolError) -> Self {
        Self::Broken(Exclusive::new(task), reason)
    }

    /// The refused task.
    pub fn into_inner(self) -> F {
        match self {
            Self::ShutDown(f) | Self::Broken(f, _) => f.into_inner(),
        }
    }

    /// True when the executor was shut down.
    pub fn is_shutdown(&self) -> bool {
        matches!(self, Self::ShutDown(_))
    }

    /// True when the executor is broken.
    pub fn is_broken(&self) -> bool {
        matches!(self, Self::Broken(..))
    }

    /// Why the executor is broken, when it is.
    pub fn broken_pool_error(&self) -> Option<&BrokenPoolError> {
        match self {
            Self::Broken(_, why) => Some(why),
            Self::ShutDown(_) => None,
        }
    }
}

impl<F> fmt::Debug for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShutDown(_) => f.write_str("ShutDown(..)"),
            Self::Broken(_, m) => f.debug_tuple("Broken").field(&"..").field(m).finish(),
        }
    }
}

impl<F> fmt::Display for SubmitError<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ShutDown(_) => f.write_str("cannot schedule new futures after shutdown"),
            Self::Broken(_, m) => write!(f, "cannot schedule new futures: {m}"),
        }
    }
}

impl<F> std::error::Error for SubmitError<F> {}

/// An executor could not be built: an option was out of range or a resource was missing.
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

/// `as_completed` ran out of time: Python's `TimeoutError("2 (of 4) futures unfinished")`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{unfinished} (of {total}) futures unfinished after {timeout:?}")]
pub struct AsCompletedTimeout {
    /// How many futures were not done when the time ran out.
    pub unfinished: usize,
    /// How many distinct futures were given.
    pub total: usize,
    /// The timeout that passed.
    pub timeout: Duration,
}

/// `map` could not start: the executor refused the work or an option was invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MapError {
    /// The executor was shut down.
    #[error("cannot schedule new futures after shutdown")]
    ShutDown,
    /// The executor is broken; the error says why.
    #[error("cannot schedule new futures: {0}")]
    Broken(BrokenPoolError),
    /// An option was out of range (a zero window or chunk size).
    #[error("invalid map option: {0}")]
    InvalidOption(&'static str),
}

/// Why one item of a `map` has no value.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MapItemError {
    /// This item's call failed (it panicked, was cancelled, or the pool broke); the map
    /// goes on with the next item.
    #[error(transparent)]
    Failed(FutureError),
    /// The map's deadline (measured from the call to `map`) passed before this item's
    /// result arrived. The map ends: unstarted work is cancelled.
    #[error("the map did not finish within {0:?}")]
    Timeout(Duration),
    /// The executor was shut down or broke before this item could be submitted. The map ends.
    #[error("the executor stopped before the item could be submitted: {0}")]
    Stopped(MapError),
}

impl MapItemError {
    /// True when this item's call panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self, Self::Failed(e) if e.is_panic())
    }

    /// True when the map's deadline passed.
    pub fn is_timeout(&self) -> bool {
        matches!(self, Self::Timeout(_))
    }
}

impl From<FutureError> for MapItemError {
    fn from(e: FutureError) -> Self {
        Self::Failed(e)
    }
}
