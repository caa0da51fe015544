//! [`FutureHandle`]: the state machine shared by a task and its handle, the completing
//! side ([`Promise`]), and the [`Waiter`]s that `wait` and `as_completed` install.
//!
//! States: `Pending → Running → Finished`, `Pending → Cancelled`, `Pending → Finished`
//! (a broken pool fails queued work) and, where the executor can stop a running task
//! for real (the process pool), `Running → Cancelled`. Every transition into a done
//! state happens under the future's lock and notifies, outside the lock: blocked
//! `result()` callers, installed waiters (so `wait` and `as_completed` see every
//! cancellation at once, unlike Python's gh-92001), the async waker, then the done
//! callbacks in the order they were added.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::cancel::CancelToken;
use crate::error::{
    BrokenPoolError, FutureError, ResultTimeoutError, TryResultError, panic_message,
};
use std::cell::RefCell;

use crate::sync::{
    AtomicBool, AtomicU8, Condvar, Mutex, Ordering, ReentrantLock, ThreadId, current_thread_id,
};

/// Where a future is in its life. Stored as its `u8` in [`Shared::state`].
#[repr(u8)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Queued: not started, can be cancelled.
    Pending = 0,
    /// A worker runs it; only a stopper (process pool, cancellable task) can cancel it.
    Running = 1,
    /// Done with an outcome (a value or a failure).
    Finished = 2,
    /// Done without a value.
    Cancelled = 3,
}

impl State {
    fn from_bits(bits: u8) -> Self {
        match bits {
            0 => Self::Pending,
            1 => Self::Running,
            2 => Self::Finished,
            // Only `State`s are ever stored.
            _ => Self::Cancelled,
        }
    }

    fn is_done(self) -> bool {
        matches!(self, Self::Finished | Self::Cancelled)
    }
}

type Callback<T> = Box<dyn FnOnce(&FutureHandle<T>) + Send + 'static>;

/// The state shared by a [`FutureHandle`] and the task that completes it.
///
/// `body` is what else lives in the same allocation: nothing for a plain [`pending`]
/// future, the closure itself for a thread-pool task ([`with_task`]), so that a submit
/// allocates once and the record is usually freed by the thread that allocated it.
pub(crate) struct Shared<T, B: ?Sized = dyn Body> {
    /// A [`State`] as its `u8`. Moves into a done state once,
    /// under `slot`'s lock, after `outcome` was written; `State::Pending → State::Running` is a
    /// compare-and-swap without the lock ([`Promise::set_running`]). Read without the
    /// lock: a reader that sees a done state (Acquire) finds the outcome written.
    state: AtomicU8,
    slot: Mutex<Slot<T>>,
    /// The task's outcome: `None` until the future is done, then written once, under
    /// `slot`'s lock, before `state` becomes done; after that only taken (`result`,
    /// `.await`), which waits until the done-callbacks have run (`Slot::delivering`).
    /// A lock of its own, which the thread holding it may take again, so that
    /// [`FutureHandle::with_result`] can lend the value to a closure that formats or
    /// inspects the same future. The `RefCell` is borrowed mutably only to write the
    /// outcome (before the future is done, when nobody lends it) and to take it.
    outcome: ReentrantLock<RefCell<Option<Result<T, FutureError>>>>,
    /// The done-callbacks are running: the outcome may not be taken yet, so that each
    /// callback can read it by reference ([`FutureHandle::try_with_result`]). Set under
    /// `slot`'s lock before `state` becomes done (only when there are callbacks),
    /// cleared under it once they ran; a reader that sees it false after seeing a done
    /// state may take the outcome.
    delivering: AtomicBool,
    /// Notified, with `slot`'s lock, when the future becomes done and when its
    /// done-callbacks have all run.
    done: Condvar,
    body: B,
}

/// What a future's record may carry besides its state (see [`Shared`]).
pub(crate) trait Body: Send + Sync {}

impl Body for () {}

/// A thread-pool task's closure, kept in its future's record until a worker takes it.
pub(crate) struct TaskFn<F>(Mutex<Option<F>>);

impl<F: Send> Body for TaskFn<F> {}

/// The record of a thread-pool task: its future's state and its closure.
pub(crate) type TaskRecord<T, F> = Shared<T, TaskFn<F>>;

/// What a future's transitions read and write together. Every field is read and
/// written only under `Shared::slot`'s lock.
struct Slot<T> {
    /// The outcome is a failure other than cancellation (what `FirstException` looks
    /// for). Written with the outcome, by the transition into `Finished`; false before.
    failed: bool,
    /// The thread running the done-callbacks while `Shared::delivering` is set: it may
    /// take the outcome without waiting for itself (a callback that reaches the owning
    /// handle). Set with `delivering`, cleared with it.
    deliverer: Option<ThreadId>,
    /// Who to notify when done: created on first use, because most futures never get
    /// a callback, waiter or waker, and a smaller record means fewer fresh pages per
    /// submit. Added to only while the future is not done (afterwards a new callback
    /// runs at once, a new waiter is refused); taken by the transition into a done
    /// state. A waker may be stored after that, while callbacks run (`poll` waits for
    /// them), and is woken when they end.
    listeners: Option<Box<Notices<T>>>,
    /// Stops a running task: for real (the process pool kills its worker), or by asking
    /// it (the [`CancelToken`] of a cancellable thread-pool task). Installed only while
    /// `Running`; cleared by every transition into a done state.
    stop_running: Option<Arc<dyn StopRunning>>,
}

/// How an executor stops a running task for real (the process pool: by killing the
/// worker that runs it). Installed with [`Promise::set_stop_running`].
pub(crate) trait StopRunning: Send + Sync {
    /// True when the task can be stopped now. A process task handed to a worker that has
    /// not reached it yet cannot: it will run (Python counts it as running too, and its
    /// `cancel()` returns false), and killing the worker would lose the task it runs.
    fn can_stop(&self) -> bool;
    /// Stops the task; called once, after the future was marked cancelled (for a
    /// cooperative stopper: under the future's lock, possibly more than once, and the
    /// future stays running until the task returns).
    fn stop(&self);
    /// True when the task stops itself: `stop` only asks (sets a token), the future
    /// stays running and becomes cancelled when the task returns.
    fn is_cooperative(&self) -> bool {
        false
    }
    /// The future was given up (a dropped `map`'s chunk, [`IfRunning::Abandon`]): stop
    /// only what has not started, never what runs. By default nothing.
    fn abandon(&self) {}
}

/// What a transition into a done state must notify, collected under the lock and
/// delivered after it is released.
struct Notices<T> {
    callbacks: Vec<Callback<T>>,
    waiters: Vec<(Arc<Waiter>, usize)>,
    waker: Option<Waker>,
}

impl<T> Notices<T> {
    fn none() -> Self {
        Self {
            callbacks: Vec::new(),
            waiters: Vec::new(),
            waker: None,
        }
    }
}

impl<T> Slot<T> {
    /// The listeners, created on first use.
    fn listeners(&mut self) -> &mut Notices<T> {
        self.listeners
            .get_or_insert_with(|| Box::new(Notices::none()))
    }
}

impl<T, B> Shared<T, B> {
    fn with_body(body: B) -> Self {
        Self {
            state: AtomicU8::new(State::Pending as u8),
            slot: Mutex::new(Slot {
                failed: false,
                deliverer: None,
                listeners: None,
                stop_running: None,
            }),
            outcome: ReentrantLock::new(RefCell::new(None)),
            delivering: AtomicBool::new(false),
            done: Condvar::new(),
            body,
        }
    }
}

impl<T> Shared<T> {
    fn state(&self) -> State {
        State::from_bits(self.state.load(Ordering::Acquire))
    }

    fn is_done(&self) -> bool {
        self.state().is_done()
    }

    /// Moves the slot's notification lists out; called with the lock held, right
    /// before the state becomes done.
    fn take_notices(&self, slot: &mut Slot<T>) -> Notices<T> {
        let notices = slot
            .listeners
            .take()
            .map_or_else(Notices::none, |listeners| *listeners);
        if !notices.callbacks.is_empty() {
            slot.deliverer = Some(current_thread_id());
            self.delivering.store(true, Ordering::Release);
        }
        notices
    }

    /// Writes the outcome of a transition into a done state; called with `slot`'s lock
    /// held, before `state` is stored.
    fn store_outcome(&self, outcome: Option<Result<T, FutureError>>) {
        // Nobody lends the outcome of a future that is not done, so the borrow is free.
        if let Ok(mut slot) = self.outcome.lock().try_borrow_mut() {
            *slot = outcome;
        }
    }

    /// Takes the outcome: `None` when it was taken already, or is lent (up this
    /// thread's stack: other threads wait for the lock).
    fn take_stored(&self) -> Option<Result<T, FutureError>> {
        self.outcome.lock().try_borrow_mut().ok()?.take()
    }

    /// Runs `f` with the outcome lent (`None` when it was taken).
    fn lend<R>(&self, f: impl FnOnce(Option<&Result<T, FutureError>>) -> R) -> R {
        let guard = self.outcome.lock();
        let lent = guard.try_borrow().ok();
        f(lent.as_ref().and_then(|o| o.as_ref()))
    }

    /// Delivers the notices of a transition into a done state (no lock held).
    fn deliver(self: &Arc<Self>, notices: Notices<T>) {
        self.done.notify_all();
        for (waiter, token) in notices.waiters {
            waiter.notify(token);
        }
        if let Some(waker) = notices.waker {
            waker.wake();
        }
        if !notices.callbacks.is_empty() {
            let handle = FutureHandle {
                shared: Arc::clone(self),
            };
            for callback in notices.callbacks {
                run_callback(&handle, callback);
            }
            // Let `result()` and `.await` take the value now.
            let waker = {
                let mut slot = self.slot.lock();
                slot.deliverer = None;
                self.delivering.store(false, Ordering::Release);
                slot.listeners.as_mut().and_then(|l| l.waker.take())
            };
            self.done.notify_all();
            if let Some(waker) = waker {
                waker.wake();
            }
        }
    }

    /// True while done-callbacks run in another thread: taking the outcome must wait.
    fn must_wait_for_callbacks(&self, slot: &Slot<T>) -> bool {
        self.delivering.load(Ordering::Acquire) && slot.deliverer != Some(current_thread_id())
    }

    /// Registers `waiter` to hear about completion under `token`. Returns false (and
    /// registers nothing) when the future is already done.
    pub(crate) fn add_waiter(&self, waiter: &Arc<Waiter>, token: usize) -> bool {
        let mut slot = self.slot.lock();
        if self.is_done() {
            return false;
        }
        slot.listeners().waiters.push((Arc::clone(waiter), token));
        true
    }

    /// Removes every registration of `waiter` (a `wait` or `as_completed` that is over).
    pub(crate) fn remove_waiter(&self, waiter: &Arc<Waiter>) {
        let mut slot = self.slot.lock();
        if let Some(listeners) = &mut slot.listeners {
            listeners.waiters.retain(|(w, _)| !Arc::ptr_eq(w, waiter));
        }
    }

    /// True when the future finished with a failure other than cancellation (what
    /// `ReturnWhen::FirstException` looks for).
    pub(crate) fn has_failed(&self) -> bool {
        self.state() == State::Finished && self.slot.lock().failed
    }
}

impl<V, E> Shared<Result<V, E>> {
    /// True when the task finished and returned `Err` (its value is still here: a value
    /// taken by `result()` took its handle too).
    pub(crate) fn returned_err(&self) -> bool {
        self.state() == State::Finished && self.lend(|outcome| matches!(outcome, Some(Ok(Err(_)))))
    }
}

fn run_callback<T>(handle: &FutureHandle<T>, callback: Callback<T>) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(|| callback(handle))) {
        // Python logs "exception calling callback for <repr>" and goes on; so do we.
        eprintln!(
            "concurrent_futures: exception calling callback for {handle:?}: {}",
            panic_message(&*payload)
        );
    }
}

/// The completing side of a future, held by the executor's task.
///
/// Dropping a promise that never completed fails its future with
/// [`FutureError::BrokenPool`], so a lost task can never leave `result()` blocked.
pub(crate) struct Promise<T> {
    shared: Option<Arc<Shared<T>>>,
}

/// A new pending future: the executor keeps the promise, the caller gets the handle.
pub(crate) fn pending<T>() -> (Promise<T>, FutureHandle<T>) {
    let shared: Arc<Shared<T>> = Arc::new(Shared::with_body(()));
    (
        Promise {
            shared: Some(Arc::clone(&shared)),
        },
        FutureHandle { shared },
    )
}

/// A new pending future whose record also holds `func`, the task that completes it:
/// the executor queues the record (see [`TaskRecord::take`]), the caller gets the handle.
pub(crate) fn with_task<T, F: Send + 'static>(func: F) -> (Arc<TaskRecord<T, F>>, FutureHandle<T>) {
    let record = Arc::new(Shared::with_body(TaskFn(Mutex::new(Some(func)))));
    let shared: Arc<Shared<T>> = Arc::clone(&record) as _;
    (record, FutureHandle { shared })
}

impl<T, F: Send + 'static> TaskRecord<T, F> {
    /// Takes the task out of the record, with the promise that completes its future.
    /// The task is `None` when it was taken before (each record is taken once).
    pub(crate) fn take(self: Arc<Self>) -> (Option<F>, Promise<T>) {
        let func = self.body.0.lock().take();
        let shared: Arc<Shared<T>> = self;
        (
            func,
            Promise {
                shared: Some(shared),
            },
        )
    }
}

impl<T> Promise<T> {
    /// Python's `set_running_or_notify_cancel`: moves a pending future to running and
    /// returns true, or returns false when it was cancelled (do not run the task).
    pub(crate) fn set_running(&self) -> bool {
        match &self.shared {
            Some(shared) => shared
                .state
                .compare_exchange(
                    State::Pending as u8,
                    State::Running as u8,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok(),
            None => false,
        }
    }

    /// [`set_running`](Self::set_running) that also installs `stop` in the same step, so
    /// that no `cancel()` can see the task running without its stopper.
    pub(crate) fn set_running_with(&self, stop: Arc<dyn StopRunning>) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        let mut slot = shared.slot.lock();
        if shared.state() != State::Pending {
            return false;
        }
        slot.stop_running = Some(stop);
        shared.state.store(State::Running as u8, Ordering::Release);
        true
    }

    /// Completes a cooperative task: cancelled (its value dropped) when `token` was set
    /// before the future's lock was taken here, finished with `outcome` otherwise. Taken
    /// under the lock that `cancel()` sets the token under, so a `cancel()` that returned
    /// true always ends in a cancelled future.
    pub(crate) fn complete_cooperative(
        mut self,
        outcome: Result<T, FutureError>,
        token: &CancelToken,
    ) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let (notices, dropped) = {
            let mut slot = shared.slot.lock();
            if shared.is_done() {
                return;
            }
            slot.stop_running = None;
            let (state, stored, dropped) = if token.is_cancelled() {
                (State::Cancelled, Err(FutureError::Cancelled), Some(outcome))
            } else {
                slot.failed = matches!(&outcome, Err(e) if !e.is_cancelled());
                (State::Finished, outcome, None)
            };
            shared.store_outcome(Some(stored));
            let notices = shared.take_notices(&mut slot);
            shared.state.store(state as u8, Ordering::Release);
            (notices, dropped)
        };
        // The value of a cancelled task is user code to drop: outside the lock.
        drop(dropped);
        shared.deliver(notices);
    }

    /// Installs what `cancel()` calls to stop this task while it runs. Returns false (and
    /// drops `stop`) when the future is no longer running.
    pub(crate) fn set_stop_running(&self, stop: Arc<dyn StopRunning>) -> bool {
        let Some(shared) = &self.shared else {
            return false;
        };
        let mut slot = shared.slot.lock();
        if shared.state() != State::Running {
            return false;
        }
        slot.stop_running = Some(stop);
        true
    }

    /// True when the future was cancelled (its result would be thrown away).
    pub(crate) fn is_cancelled(&self) -> bool {
        self.shared
            .as_ref()
            .is_none_or(|s| s.state() == State::Cancelled)
    }

    /// Cancels a task that was handed to a worker process (so it counts as running) but
    /// never started there; the stopper is dropped without being called. Notifies
    /// waiters at once. A future that is already done keeps its state.
    pub(crate) fn cancel_unstarted(mut self) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let notices = {
            let mut slot = shared.slot.lock();
            if shared.is_done() {
                return;
            }
            shared.store_outcome(Some(Err(FutureError::Cancelled)));
            slot.stop_running = None;
            let notices = shared.take_notices(&mut slot);
            shared
                .state
                .store(State::Cancelled as u8, Ordering::Release);
            notices
        };
        shared.deliver(notices);
    }

    /// Stores the outcome and notifies everyone. A future that is already done (it was
    /// cancelled meanwhile) keeps its state and the outcome is dropped.
    pub(crate) fn complete(mut self, outcome: Result<T, FutureError>) {
        if let Some(shared) = self.shared.take() {
            let _ = complete(&shared, outcome);
        }
    }

    /// Cancels a task that never ran (`shutdown(cancel_futures = true)`), notifying
    /// waiters at once.
    pub(crate) fn cancel(mut self) {
        if let Some(shared) = self.shared.take()
            && let Some(notices) = try_cancel(&shared, IfRunning::Refuse)
        {
            shared.deliver(notices);
        }
    }
}

/// Stores the outcome and notifies; gives the outcome back when the future was done
/// already (finished or cancelled), keeping what it had.
fn complete<T>(
    shared: &Arc<Shared<T>>,
    outcome: Result<T, FutureError>,
) -> Result<(), Result<T, FutureError>> {
    complete_with(shared, outcome, |outcome| outcome)
}

/// [`complete`] with the outcome `wrap(input)`, made only when the future takes it: a
/// refusal gives `input` itself back (a [`Completer`] returns the caller's value).
fn complete_with<T, V>(
    shared: &Arc<Shared<T>>,
    input: V,
    wrap: impl FnOnce(V) -> Result<T, FutureError>,
) -> Result<(), V> {
    let notices = {
        let mut slot = shared.slot.lock();
        if shared.is_done() {
            return Err(input);
        }
        let outcome = wrap(input);
        slot.failed = matches!(&outcome, Err(e) if !e.is_cancelled());
        shared.store_outcome(Some(outcome));
        slot.stop_running = None;
        let notices = shared.take_notices(&mut slot);
        shared.state.store(State::Finished as u8, Ordering::Release);
        notices
    };
    shared.deliver(notices);
    Ok(())
}

/// What a cancellation does to a task that is already running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IfRunning {
    /// Nothing: only a pending future is cancelled (Python's `cancel()`).
    Refuse,
    /// Where the executor can stop the task (a stopper is installed: the process
    /// pool), the future is cancelled and the stopper is called (the worker is killed).
    Stop,
    /// Where the executor could stop it, the future is cancelled and the stopper is
    /// only told to give up what has not started (`StopRunning::abandon`): what runs
    /// runs to its end and its result is thrown away. For futures nobody else holds (a
    /// dropped `map`'s chunks): Python's rule that dropping the iterator lets running
    /// calls finish.
    Abandon,
}

/// Moves a pending (or, with a stopper installed, running) future to cancelled and
/// returns what to notify; `None` when nothing changed. `if_running` says what happens
/// to a running one.
fn try_cancel<T>(shared: &Arc<Shared<T>>, if_running: IfRunning) -> Option<Notices<T>> {
    if if_running != IfRunning::Refuse && shared.state() == State::Running {
        let slot = shared.slot.lock();
        if shared.state() == State::Running
            && let Some(stopper) = slot.stop_running.as_ref().filter(|s| s.is_cooperative())
        {
            // Ask the task to stop, under the lock its completion decides under: it
            // ends cancelled when it returns (`Promise::complete_cooperative`).
            stopper.stop();
            return Some(Notices::none());
        }
    }
    if if_running == IfRunning::Stop && shared.state() == State::Running {
        // Ask before deciding, and without the future's lock (the executor takes its
        // own lock, which may be held while this one is taken).
        let stopper = shared.slot.lock().stop_running.clone();
        if stopper.is_some_and(|stopper| !stopper.can_stop()) {
            return None;
        }
    }
    let (notices, stop) = {
        let mut slot = shared.slot.lock();
        if shared.is_done() {
            return None;
        }
        // Not done, and only this lock's holder can make it done: the outcome and the
        // notices are set up before the state says done (nobody reads them before); a
        // start that wins the race undoes both.
        shared.store_outcome(Some(Err(FutureError::Cancelled)));
        let notices = shared.take_notices(&mut slot);
        let cancelled_pending = shared
            .state
            .compare_exchange(
                State::Pending as u8,
                State::Cancelled as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok();
        let stop = if cancelled_pending {
            None
        } else if if_running != IfRunning::Refuse
            && shared.state() == State::Running
            && slot
                .stop_running
                .as_ref()
                .is_some_and(|s| s.is_cooperative())
        {
            // The task started (with its stopper) between the look above and this lock:
            // ask it to stop, as the cooperative branch above does, and keep it running.
            shared.store_outcome(None);
            slot.deliverer = None;
            shared.delivering.store(false, Ordering::Release);
            slot.listeners = Some(Box::new(notices));
            if let Some(stopper) = &slot.stop_running {
                stopper.stop();
            }
            return Some(Notices::none());
        } else if if_running != IfRunning::Refuse
            && shared.state() == State::Running
            && slot.stop_running.is_some()
        {
            shared
                .state
                .store(State::Cancelled as u8, Ordering::Release);
            slot.stop_running.take()
        } else {
            shared.store_outcome(None);
            slot.deliverer = None;
            shared.delivering.store(false, Ordering::Release);
            slot.listeners = Some(Box::new(notices));
            return None;
        };
        (notices, stop)
    };
    if let Some(stop) = stop {
        if if_running == IfRunning::Stop {
            stop.stop();
        } else {
            stop.abandon();
        }
    }
    Some(notices)
}

impl<T> Drop for Promise<T> {
    fn drop(&mut self) {
        if let Some(shared) = self.shared.take() {
            let _ = complete(
                &shared,
                Err(FutureError::BrokenPool(BrokenPoolError::task_dropped())),
            );
        }
    }
}

impl<T> fmt::Debug for Promise<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Promise").finish_non_exhaustive()
    }
}

/// Completes a future made with [`FutureHandle::pending`]: the side an executor of your
/// own (or a test) holds, with Python's `set_running_or_notify_cancel`, `set_result` and
/// `set_exception`.
///
/// Each setter fails with [`InvalidStateError`] (giving the value back) when the future is
/// done already, finished or cancelled through its handle; the first outcome stays.
pub struct Completer<T> {
    promise: Promise<T>,
}

impl<T> Completer<T> {
    /// Python's `set_running_or_notify_cancel`: moves the pending future to running and
    /// returns true, or returns false when it was cancelled (do not start the work).
    /// After it, the handle's `cancel()` returns false.
    pub fn set_running(&self) -> bool {
        self.promise.set_running()
    }

    /// Completes the future with `value`.
    ///
    /// # Errors
    ///
    /// [`InvalidStateError`] with `value` when the future was done already.
    pub fn set_result(&self, value: T) -> Result<(), InvalidStateError<T>> {
        self.set(value, Ok)
    }

    /// Fails the future with `error`, Python's `set_exception`.
    ///
    /// # Errors
    ///
    /// [`InvalidStateError`] with `error` when the future was done already.
    pub fn set_failure(&self, error: FutureError) -> Result<(), InvalidStateError<FutureError>> {
        self.set(error, Err)
    }

    /// True when the future was cancelled through its handle: the work may stop.
    pub fn is_cancelled(&self) -> bool {
        self.promise.is_cancelled()
    }

    /// True when the future is done: finished or cancelled.
    pub fn is_done(&self) -> bool {
        self.promise
            .shared
            .as_ref()
            .is_none_or(|shared| shared.is_done())
    }

    fn set<V>(
        &self,
        input: V,
        wrap: impl FnOnce(V) -> Result<T, FutureError>,
    ) -> Result<(), InvalidStateError<V>> {
        let Some(shared) = &self.promise.shared else {
            return Err(InvalidStateError::new(input, false));
        };
        complete_with(shared, input, wrap)
            .map_err(|input| InvalidStateError::new(input, shared.state() == State::Cancelled))
    }
}

impl<T> fmt::Debug for Completer<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Completer")
            .field("done", &self.is_done())
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// A [`Completer`] was asked to complete a future that is done already: Python's
/// `InvalidStateError`. The refused value comes back with [`into_inner`](Self::into_inner).
pub struct InvalidStateError<T> {
    value: crate::error::Exclusive<T>,
    cancelled: bool,
}

impl<T> InvalidStateError<T> {
    fn new(value: T, cancelled: bool) -> Self {
        Self {
            value: crate::error::Exclusive::new(value),
            cancelled,
        }
    }

    /// The refused value (or failure).
    pub fn into_inner(self) -> T {
        self.value.into_inner()
    }

    /// True when the future had been cancelled; false when it had finished.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled
    }
}

impl<T> fmt::Debug for InvalidStateError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InvalidStateError")
            .field("cancelled", &self.cancelled)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for InvalidStateError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.cancelled {
            f.write_str("the future was cancelled already")
        } else {
            f.write_str("the future has finished already")
        }
    }
}

impl<T> std::error::Error for InvalidStateError<T> {}

/// The handle to a task's eventual result: Python's `concurrent.futures.Future`.
///
/// Returned by `submit`. It is not `Clone`: the result is moved out exactly once, by
/// [`result`](Self::result) (or by `.await`, since the handle is also a
/// [`std::future::Future`]). Pass handles, or references to them, to
/// [`as_completed`](crate::as_completed()) and [`wait`](crate::wait()). Dropping a handle
/// does not cancel its task.
///
/// # Examples
///
/// ```
/// use concurrent_futures::ThreadPoolExecutor;
///
/// let pool = ThreadPoolExecutor::new();
/// let handle = pool.submit(|| 6 * 7)?;
/// assert_eq!(handle.result()?, 42);
/// # Ok::<(), anyhow::Error>(())
/// ```
#[doc(alias = "Future")]
pub struct FutureHandle<T> {
    pub(crate) shared: Arc<Shared<T>>,
}

impl<T> FutureHandle<T> {
    /// A pending future and the [`Completer`] that completes it: Python's `Future()`
    /// completed by your own code with `set_result`, for tests, adapters and executors of
    /// your own. The handle works everywhere a pool's does ([`wait`](crate::wait()),
    /// [`as_completed`](crate::as_completed()), `.await`). Dropping the completer before
    /// it completed the future fails it with [`FutureError::BrokenPool`], so no
    /// `result()` waits for ever.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::FutureHandle;
    ///
    /// let (completer, handle) = FutureHandle::pending();
    /// std::thread::spawn(move || completer.set_result(6 * 7));
    /// assert_eq!(handle.result()?, 42);
    ///
    /// // A second outcome is refused and the first kept (Python's InvalidStateError).
    /// let (completer, handle) = FutureHandle::pending();
    /// completer.set_result("first")?;
    /// let refused = completer.set_result("second").unwrap_err();
    /// assert_eq!(refused.into_inner(), "second");
    /// assert_eq!(handle.result()?, "first");
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    #[must_use]
    pub fn pending() -> (Completer<T>, FutureHandle<T>) {
        let (promise, handle) = pending();
        (Completer { promise }, handle)
    }

    /// Attempts to cancel the task, Python's `cancel()`.
    ///
    /// Succeeds (returns true) while the task is pending, or is already cancelled. A
    /// running thread-pool task cannot be stopped (returns false), unless it was
    /// submitted with [`submit_cancellable`](crate::ThreadPoolExecutor::submit_cancellable):
    /// then `cancel()` sets its [`CancelToken`] and returns true, the future stays
    /// running until the task returns, and then ends cancelled (whatever the task
    /// returned is dropped). A process-pool task
    /// that its worker runs now is stopped for real (the worker is killed and
    /// replaced), while one already handed to a worker that has not reached it yet will
    /// run, and returns false, as a task in Python's call queue does. A finished task
    /// returns false. After `cancel()` returned true, the task never runs, or is
    /// stopped. A cancellation is seen at once by
    /// [`wait`](crate::wait()) and [`as_completed`](crate::as_completed()).
    pub fn cancel(&self) -> bool {
        self.cancel_with(IfRunning::Stop)
    }

    /// Cancels without stopping a running task (see [`IfRunning::Abandon`]).
    pub(crate) fn abandon(&self) -> bool {
        self.cancel_with(IfRunning::Abandon)
    }

    fn cancel_with(&self, if_running: IfRunning) -> bool {
        if self.shared.state() == State::Cancelled {
            return true;
        }
        match try_cancel(&self.shared, if_running) {
            Some(notices) => {
                self.shared.deliver(notices);
                true
            }
            None => self.shared.state() == State::Cancelled,
        }
    }

    /// True when the future was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.shared.state() == State::Cancelled
    }

    /// True while the task is running.
    pub fn is_running(&self) -> bool {
        self.shared.state() == State::Running
    }

    /// True when the future finished or was cancelled.
    pub fn is_done(&self) -> bool {
        self.shared.is_done()
    }

    /// Waits for the task and returns its value, Python's `result()`.
    ///
    /// # Errors
    ///
    /// [`FutureError::Cancelled`], [`FutureError::Panicked`] (with the panic message and
    /// payload), [`FutureError::BrokenPool`] or [`FutureError::WorkerFailed`].
    ///
    /// # Blocking
    ///
    /// Blocks until the task is done, however long that takes; see
    /// [`result_timeout`](Self::result_timeout) to bound the wait.
    pub fn result(self) -> Result<T, FutureError> {
        self.block_until(None);
        self.take_outcome()
    }

    /// Waits at most `timeout` for the task and returns its value.
    ///
    /// A zero timeout polls. A timeout too large to add to the current time waits forever.
    ///
    /// # Errors
    ///
    /// [`ResultTimeoutError::Timeout`] gives the handle back, still usable, when the time
    /// runs out; [`ResultTimeoutError::Failed`] as for [`result`](Self::result).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::{ResultTimeoutError, ThreadPoolExecutor};
    ///
    /// let pool = ThreadPoolExecutor::new();
    /// let (tx, rx) = std::sync::mpsc::channel::<()>();
    /// let handle = pool.submit(move || rx.recv().is_ok())?;
    /// let handle = match handle.result_timeout(Duration::from_millis(10)) {
    ///     Err(ResultTimeoutError::Timeout(handle)) => handle, // still usable
    ///     other => panic!("expected a timeout, got {other:?}"),
    /// };
    /// tx.send(())?;
    /// assert!(handle.result()?);
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn result_timeout(self, timeout: Duration) -> Result<T, ResultTimeoutError<T>> {
        if !self.block_until(Instant::now().checked_add(timeout)) {
            return Err(ResultTimeoutError::Timeout(self));
        }
        self.take_outcome().map_err(ResultTimeoutError::Failed)
    }

    /// Returns the value if the future is done, without blocking.
    ///
    /// # Errors
    ///
    /// [`TryResultError::NotReady`] gives the handle back when the task is not done;
    /// [`TryResultError::Failed`] as for [`result`](Self::result).
    pub fn try_result(self) -> Result<T, TryResultError<T>> {
        if !self.is_done() {
            return Err(TryResultError::NotReady(self));
        }
        self.take_outcome().map_err(TryResultError::Failed)
    }

    /// Waits for the task and returns its failure, or `None` when it succeeded, without
    /// consuming the value: Python's `exception()`. A panic comes back with its message
    /// (the payload stays for `result`).
    ///
    /// # Blocking
    ///
    /// Blocks until the task is done.
    pub fn exception(&self) -> Option<FutureError> {
        self.block_until(None);
        self.shared.lend(|outcome| match outcome {
            Some(Err(e)) => Some(e.describe()),
            Some(Ok(_)) => None,
            None => Some(FutureError::ResultTaken),
        })
    }

    /// Waits for the task and lends its outcome to `f`, without consuming the handle:
    /// the value stays for [`result`](Self::result), as Python's `result()` never takes
    /// it. `f` gets the value, or the failure ([`FutureError::ResultTaken`] once the value
    /// was taken).
    ///
    /// While `f` runs, taking the value (`result()`, `.await` in another thread) waits;
    /// `f` itself may format or inspect this future (`Debug`, `exception`, another
    /// `with_result`).
    ///
    /// # Blocking
    ///
    /// Blocks until the task is done.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new();
    /// let handle = pool.submit(|| vec![1, 2, 3])?;
    /// assert_eq!(handle.with_result(|r| r.map(Vec::len).ok()), Some(3)); // lent
    /// assert_eq!(handle.result()?, [1, 2, 3]); // still there
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn with_result<R>(&self, f: impl FnOnce(Result<&T, &FutureError>) -> R) -> R {
        self.block_until(None);
        self.shared.lend(|outcome| match outcome {
            Some(Ok(value)) => f(Ok(value)),
            Some(Err(e)) => f(Err(e)),
            None => f(Err(&FutureError::ResultTaken)),
        })
    }

    /// Waits for the task and returns a clone of its value, leaving the value in place:
    /// Python's `result()` exactly, for values that are `Clone`.
    ///
    /// # Errors
    ///
    /// The failure, as [`exception`](Self::exception) describes it;
    /// [`FutureError::ResultTaken`] when the value was taken already.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new();
    /// let handle = pool.submit(|| String::from("BR"))?;
    /// println!("{handle:?} result: '{}'", handle.result_cloned()?);
    /// assert_eq!(handle.result()?, "BR");
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn result_cloned(&self) -> Result<T, FutureError>
    where
        T: Clone,
    {
        self.with_result(|r| r.cloned().map_err(FutureError::describe))
    }

    /// [`with_result`](Self::with_result) without blocking: `None` (and `f` is not
    /// called) while the task is not done. In a done-callback the future is done and its
    /// value is still there: it cannot be taken before the callbacks ran.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new();
    /// let (tx, rx) = mpsc::channel();
    /// let handle = pool.submit(|| String::from("BR"))?;
    /// handle.add_done_callback(move |h| {
    ///     let len = h.try_with_result(|r| r.map(String::len).ok()).flatten();
    ///     tx.send(len).unwrap();
    /// });
    /// assert_eq!(rx.recv()?, Some(2));
    /// assert_eq!(handle.result()?, "BR");
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn try_with_result<R>(&self, f: impl FnOnce(Result<&T, &FutureError>) -> R) -> Option<R> {
        self.is_done().then(|| self.with_result(f))
    }

    /// Makes the `.await` of this handle cancel its task when the await is given up:
    /// dropped before it completed (a `select!` that took another branch, a timeout). A
    /// task that has not started is cancelled; one that runs is left alone, as
    /// `cancel()` would leave a running thread task. Like Python's
    /// `asyncio.wrap_future`, whose cancellation cancels the wrapped future.
    ///
    /// Plain `.await` of a handle never cancels: dropping a handle does not cancel its
    /// task.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use concurrent_futures::FutureHandle;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build()?.block_on(async {
    /// let (completer, handle) = FutureHandle::<u32>::pending();
    /// let timed = tokio::time::timeout(Duration::from_millis(1), handle.cancel_on_drop());
    /// assert!(timed.await.is_err(), "timed out");
    /// assert!(completer.is_cancelled(), "the task that had not started is cancelled");
    /// # });
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn cancel_on_drop(self) -> CancelOnDrop<T> {
        CancelOnDrop { handle: Some(self) }
    }

    /// Blocks until the task is done, without taking its value.
    pub fn wait(&self) {
        self.block_until(None);
    }

    /// Blocks until the task is done or `timeout` passes; returns whether it is done.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.block_until(Instant::now().checked_add(timeout))
    }

    /// Adds a callback that runs once the future is done (finished or cancelled), with
    /// the handle as argument, Python's `add_done_callback`.
    ///
    /// Callbacks run in the order they were added, in the thread that completes the
    /// future (a worker, or the thread that cancels it); if the future is already done,
    /// the callback runs at once in the calling thread. A panicking callback is reported
    /// on stderr and never kills a worker or skips later callbacks.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::mpsc;
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new();
    /// let (tx, rx) = mpsc::channel();
    /// let handle = pool.submit(|| 1)?;
    /// handle.add_done_callback(move |h| tx.send(h.is_cancelled()).unwrap());
    /// assert_eq!(rx.recv()?, false);
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn add_done_callback<F>(&self, callback: F)
    where
        F: FnOnce(&FutureHandle<T>) + Send + 'static,
    {
        {
            let mut slot = self.shared.slot.lock();
            if !self.shared.is_done() {
                slot.listeners().callbacks.push(Box::new(callback));
                return;
            }
        }
        run_callback(self, Box::new(callback));
    }

    /// Blocks until done or `deadline` (`None`: no deadline); returns whether done.
    fn block_until(&self, deadline: Option<Instant>) -> bool {
        if self.shared.is_done() {
            return true;
        }
        let mut slot = self.shared.slot.lock();
        while !self.shared.is_done() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            slot = self.shared.done.wait_until(slot, deadline).0;
        }
        true
    }

    /// Takes the outcome of a done future, once its done-callbacks have run.
    fn take_outcome(&self) -> Result<T, FutureError> {
        if self.shared.delivering.load(Ordering::Acquire) {
            let mut slot = self.shared.slot.lock();
            while self.shared.must_wait_for_callbacks(&slot) {
                slot = self.shared.done.wait(slot);
            }
        }
        self.shared
            .take_stored()
            .unwrap_or(Err(FutureError::ResultTaken))
    }

    /// The address that identifies this future (shown by `Debug`).
    fn addr(&self) -> *const () {
        Arc::as_ptr(&self.shared).cast()
    }
}

impl<T> std::future::Future for FutureHandle<T> {
    type Output = Result<T, FutureError>;

    /// Completes with the task's outcome; the task keeps running on its pool, so an
    /// async runtime can `.await` a pool result without blocking.
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = self.shared.slot.lock();
        if self.shared.is_done() && !self.shared.must_wait_for_callbacks(&slot) {
            drop(slot);
            return Poll::Ready(self.take_outcome());
        }
        // Not done, or its done-callbacks still run: woken when they are over.
        match &mut slot.listeners().waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            waker => *waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

/// The `.await` of a handle that cancels its task when dropped before completion: see
/// [`FutureHandle::cancel_on_drop`].
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct CancelOnDrop<T> {
    /// `None` once the outcome was returned.
    handle: Option<FutureHandle<T>>,
}

impl<T> CancelOnDrop<T> {
    /// The handle back, without the cancel-on-drop; `None` once the await completed.
    pub fn into_inner(mut self) -> Option<FutureHandle<T>> {
        self.handle.take()
    }
}

impl<T> std::future::Future for CancelOnDrop<T> {
    type Output = Result<T, FutureError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(handle) = self.handle.as_mut() else {
            return Poll::Ready(Err(FutureError::ResultTaken));
        };
        let ready = Pin::new(handle).poll(cx);
        if ready.is_ready() {
            self.handle = None;
        }
        ready
    }
}

impl<T> Drop for CancelOnDrop<T> {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.cancel_with(IfRunning::Refuse);
        }
    }
}

impl<T> PartialEq for FutureHandle<T> {
    /// Handles are equal when they are the same future.
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

impl<T> Eq for FutureHandle<T> {}

impl<T> std::hash::Hash for FutureHandle<T> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.addr().hash(state);
    }
}

impl<T> fmt::Debug for FutureHandle<T> {
    /// Python's repr: `<FutureHandle at 0x7f.. state=finished returned u32>`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state();
        let word = match state {
            State::Pending => "pending",
            State::Running => "running",
            State::Cancelled => "cancelled",
            _ => "finished",
        };
        write!(f, "<FutureHandle at {:p} state={word}", self.addr())?;
        if state == State::Finished {
            self.shared.lend(|outcome| match outcome {
                Some(Ok(_)) => write!(f, " returned {}", short_type_name::<T>()),
                Some(Err(e)) => write!(f, " raised {}", e.kind_name()),
                None => f.write_str(" result taken"),
            })?;
        }
        f.write_str(">")
    }
}

/// `std::any::type_name` without module paths: `Vec<String>`, not
/// `alloc::vec::Vec<alloc::string::String>`.
fn short_type_name<T>() -> String {
    let full = std::any::type_name::<T>();
    let mut out = String::with_capacity(full.len());
    let mut segment = String::new();
    let mut chars = full.chars().peekable();
    while let Some(c) = chars.next() {
        if c == ':' && chars.peek() == Some(&':') {
            chars.next();
            segment.clear();
        } else if c.is_alphanumeric() || c == '_' {
            segment.push(c);
        } else {
            out.push_str(&segment);
            segment.clear();
            out.push(c);
        }
    }
    out.push_str(&segment);
    out
}

/// Something that gives access to a [`FutureHandle`], so that [`wait`](crate::wait()) and
/// [`as_completed`](crate::as_completed()) accept owned handles, references to handles,
/// and `(key, handle)` pairs alike.
pub trait AsHandle {
    /// The value type of the future.
    type Output;

    /// The handle.
    fn as_handle(&self) -> &FutureHandle<Self::Output>;
}

impl<T> AsHandle for FutureHandle<T> {
    type Output = T;
    fn as_handle(&self) -> &FutureHandle<T> {
        self
    }
}

impl<T> AsHandle for &FutureHandle<T> {
    type Output = T;
    fn as_handle(&self) -> &FutureHandle<T> {
        self
    }
}

impl<K, T> AsHandle for (K, FutureHandle<T>) {
    type Output = T;
    fn as_handle(&self) -> &FutureHandle<T> {
        &self.1
    }
}

/// Collects the tokens of futures that became done; shared by one `wait` or
/// `as_completed` call and installed on each of its pending futures.
#[derive(Debug)]
pub(crate) struct Waiter {
    finished: Mutex<Finished>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct Finished {
    tokens: Vec<usize>,
    /// The async task of an [`as_completed_stream`](crate::as_completed_stream) waiting
    /// for the next token.
    waker: Option<Waker>,
}

impl Waiter {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            finished: Mutex::new(Finished::default()),
            ready: Condvar::new(),
        })
    }

    fn notify(&self, token: usize) {
        let waker = {
            let mut finished = self.finished.lock();
            finished.tokens.push(token);
            finished.waker.take()
        };
        self.ready.notify_one();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Waits until at least one token arrived or `deadline` passed, and appends the
    /// tokens (in completion order) to `out`. Returns false on timeout with none.
    pub(crate) fn take(&self, deadline: Option<Instant>, out: &mut Vec<usize>) -> bool {
        let mut finished = self.finished.lock();
        loop {
            if !finished.tokens.is_empty() {
                out.append(&mut finished.tokens);
                return true;
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            finished = self.ready.wait_until(finished, deadline).0;
        }
    }

    /// [`take`](Self::take) for async code: appends the tokens that arrived, or keeps
    /// `cx`'s waker to be woken by the next one and returns false.
    pub(crate) fn poll_take(&self, cx: &Context<'_>, out: &mut Vec<usize>) -> bool {
        let mut finished = self.finished.lock();
        if finished.tokens.is_empty() {
            match &mut finished.waker {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                waker => *waker = Some(cx.waker().clone()),
            }
            return false;
        }
        out.append(&mut finished.tokens);
        true
    }
}

#[cfg(all(test, not(cf_loom)))]
mod tests {
    use super::*;

    #[test]
    fn pending_then_finished() {
        let (promise, handle) = pending::<u32>();
        assert!(!handle.is_done() && !handle.is_running() && !handle.is_cancelled());
        assert!(promise.set_running());
        assert!(handle.is_running());
        assert!(
            !handle.cancel(),
            "a running thread task cannot be cancelled"
        );
        promise.complete(Ok(7));
        assert!(handle.is_done());
        assert_eq!(handle.result().ok(), Some(7));
    }

    #[test]
    fn cancel_of_a_finished_future_keeps_its_value() {
        let (promise, handle) = pending::<u32>();
        assert!(promise.set_running());
        promise.complete(Ok(7));
        assert!(!handle.cancel());
        assert!(!handle.abandon());
        assert!(!handle.cancel_with(IfRunning::Refuse));
        assert_eq!(handle.result().ok(), Some(7));
    }

    #[test]
    fn a_callback_reads_the_value_by_reference_before_anyone_takes_it() {
        let (promise, handle) = pending::<String>();
        let seen = Arc::new(std::sync::Mutex::new(None));
        let s = Arc::clone(&seen);
        handle.add_done_callback(move |h| {
            // Nested reads of the same future in the lending thread do not block.
            let len = h.try_with_result(|r| {
                let _ = format!("{h:?}");
                h.with_result(|again| assert!(again.is_ok()));
                r.map(String::len).ok()
            });
            *s.lock().unwrap() = len.flatten();
        });
        promise.complete(Ok("four".to_owned()));
        assert_eq!(*seen.lock().unwrap(), Some(4));
        assert_eq!(handle.result().unwrap(), "four");
    }

    #[test]
    fn a_callback_that_reaches_the_owning_handle_can_take_the_value() {
        let (promise, handle) = pending::<u32>();
        let owner = Arc::new(std::sync::Mutex::new(None::<FutureHandle<u32>>));
        let taken = Arc::new(std::sync::Mutex::new(None));
        let (o, t) = (Arc::clone(&owner), Arc::clone(&taken));
        handle.add_done_callback(move |_| {
            let handle = o.lock().unwrap().take().unwrap();
            *t.lock().unwrap() = Some(handle.result().ok());
        });
        *owner.lock().unwrap() = Some(handle);
        promise.complete(Ok(5));
        assert_eq!(*taken.lock().unwrap(), Some(Some(5)), "no self-deadlock");
    }

    #[test]
    fn cancel_pending_wins_over_start() {
        let (promise, handle) = pending::<u32>();
        assert!(handle.cancel());
        assert!(handle.cancel(), "cancel is idempotent");
        assert!(!promise.set_running());
        promise.complete(Ok(1));
        assert!(handle.is_cancelled());
        assert!(matches!(handle.result(), Err(FutureError::Cancelled)));
    }

    #[test]
    fn dropped_promise_fails_the_future() {
        let (promise, handle) = pending::<u32>();
        drop(promise);
        assert!(matches!(handle.result(), Err(FutureError::BrokenPool(_))));
    }

    #[test]
    fn running_task_with_stopper_can_be_cancelled() {
        let (promise, handle) = pending::<u32>();
        assert!(promise.set_running());
        struct Stopper(std::sync::Mutex<std::sync::mpsc::Sender<()>>);
        impl StopRunning for Stopper {
            fn can_stop(&self) -> bool {
                true
            }
            fn stop(&self) {
                self.0.lock().unwrap().send(()).unwrap();
            }
        }
        let (tx, rx) = std::sync::mpsc::channel();
        assert!(promise.set_stop_running(Arc::new(Stopper(std::sync::Mutex::new(tx)))));
        assert!(handle.cancel());
        assert!(rx.try_recv().is_ok(), "the stopper ran");
        promise.complete(Ok(3));
        assert!(matches!(handle.result(), Err(FutureError::Cancelled)));
    }

    #[test]
    fn a_running_task_that_cannot_be_stopped_now_is_not_cancelled() {
        struct NotNow;
        impl StopRunning for NotNow {
            fn can_stop(&self) -> bool {
                false
            }
            fn stop(&self) {
                unreachable!("never called when can_stop is false");
            }
        }
        let (promise, handle) = pending::<u32>();
        assert!(promise.set_running());
        assert!(promise.set_stop_running(Arc::new(NotNow)));
        assert!(!handle.cancel());
        assert!(handle.is_running());
        promise.complete(Ok(3));
        assert_eq!(handle.result().unwrap(), 3);
    }

    #[test]
    fn callbacks_run_in_order_once_and_survive_panics() {
        let (promise, handle) = pending::<u32>();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        for i in 0..3 {
            let log = Arc::clone(&log);
            handle.add_done_callback(move |_| {
                log.lock().unwrap().push(i);
                assert_ne!(i, 1, "callback 1 panics on purpose");
            });
        }
        promise.complete(Ok(1));
        assert_eq!(*log.lock().unwrap(), vec![0, 1, 2]);
        let log2 = Arc::clone(&log);
        handle.add_done_callback(move |h| {
            assert!(h.is_done());
            log2.lock().unwrap().push(9);
        });
        assert_eq!(
            *log.lock().unwrap(),
            vec![0, 1, 2, 9],
            "runs at once when done"
        );
    }

    #[test]
    fn debug_looks_like_python_repr() {
        let (promise, handle) = pending::<u32>();
        let text = format!("{handle:?}");
        assert!(text.starts_with("<FutureHandle at 0x") && text.ends_with("state=pending>"));
        promise.complete(Ok(1));
        assert!(format!("{handle:?}").ends_with("state=finished returned u32>"));
        let (promise, handle) = pending::<Vec<String>>();
        promise.complete(Err(FutureError::Cancelled));
        assert!(format!("{handle:?}").ends_with("raised Cancelled>"));
        assert_eq!(short_type_name::<Vec<String>>(), "Vec<String>");
        assert_eq!(
            short_type_name::<Result<u8, std::io::Error>>(),
            "Result<u8, Error>"
        );
    }

    #[test]
    fn result_timeout_gives_the_handle_back() {
        let (promise, handle) = pending::<u32>();
        let handle = match handle.result_timeout(Duration::ZERO) {
            Err(ResultTimeoutError::Timeout(h)) => h,
            other => panic!("unexpected {other:?}"),
        };
        let handle = match handle.try_result() {
            Err(TryResultError::NotReady(h)) => h,
            other => panic!("unexpected {other:?}"),
        };
        promise.complete(Ok(5));
        assert_eq!(handle.result_timeout(Duration::MAX).ok(), Some(5));
    }

    #[test]
    fn exception_peeks_without_consuming() {
        let (promise, handle) = pending::<u32>();
        promise.complete(Err(FutureError::Panicked(crate::error::PanicError::new(
            Box::new("boom"),
        ))));
        match handle.exception() {
            Some(FutureError::Panicked(p)) => assert_eq!(p.message(), "boom"),
            other => panic!("unexpected {other:?}"),
        }
        match handle.result() {
            Err(FutureError::Panicked(p)) => {
                assert_eq!(p.into_panic().downcast_ref::<&str>(), Some(&"boom"));
            }
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[cfg(all(test, cf_loom))]
mod loom_tests {
    //! Model checks of the state machine: every interleaving of a worker completing or
    //! starting a task against a client cancelling it or waiting for it.
    use super::*;
    use loom::thread;

    #[test]
    fn loom_complete_wakes_a_blocked_result() {
        loom::model(|| {
            let (promise, handle) = pending::<u32>();
            let worker = thread::spawn(move || {
                if promise.set_running() {
                    promise.complete(Ok(1));
                }
            });
            assert_eq!(handle.result().ok(), Some(1));
            worker.join().unwrap();
        });
    }

    #[test]
    fn loom_cancel_races_start() {
        loom::model(|| {
            let (promise, handle) = pending::<u32>();
            let worker = thread::spawn(move || {
                if promise.set_running() {
                    promise.complete(Ok(1));
                    true
                } else {
                    false
                }
            });
            let cancelled = handle.cancel();
            let ran = worker.join().unwrap();
            assert_ne!(cancelled, ran, "exactly one of cancel and run wins");
            match handle.result() {
                Ok(1) => assert!(ran),
                Err(FutureError::Cancelled) => assert!(cancelled),
                other => panic!("unexpected {other:?}"),
            }
        });
    }

    #[test]
    fn loom_waiter_hears_cancel_and_completion() {
        loom::model(|| {
            let (p1, h1) = pending::<u32>();
            let (p2, h2) = pending::<u32>();
            let waiter = Waiter::new();
            assert!(h1.shared.add_waiter(&waiter, 0));
            assert!(h2.shared.add_waiter(&waiter, 1));
            let worker = thread::spawn(move || {
                if p1.set_running() {
                    p1.complete(Ok(1));
                }
            });
            h2.cancel();
            drop(p2);
            let mut tokens = Vec::new();
            while tokens.len() < 2 {
                assert!(waiter.take(None, &mut tokens));
            }
            tokens.sort_unstable();
            assert_eq!(tokens, vec![0, 1]);
            worker.join().unwrap();
        });
    }

    /// A stopper that counts its calls (the process pool's kill, in the models).
    struct CountingStop {
        stops: loom::sync::atomic::AtomicUsize,
        cooperative: bool,
    }

    impl StopRunning for CountingStop {
        fn can_stop(&self) -> bool {
            true
        }
        fn stop(&self) {
            self.stops.fetch_add(1, Ordering::SeqCst);
        }
        fn is_cooperative(&self) -> bool {
            self.cooperative
        }
    }

    fn stopper(cooperative: bool) -> Arc<CountingStop> {
        Arc::new(CountingStop {
            stops: loom::sync::atomic::AtomicUsize::new(0),
            cooperative,
        })
    }

    #[test]
    fn loom_cancel_of_a_running_task_races_its_completion() {
        // The process pool: a cancel that wins kills the worker (stop) and the result is
        // dropped; a completion that wins makes cancel() return false. Never both.
        loom::model(|| {
            let (promise, handle) = pending::<u32>();
            assert!(promise.set_running());
            let stop = stopper(false);
            assert!(promise.set_stop_running(Arc::clone(&stop) as Arc<dyn StopRunning>));
            let worker = thread::spawn(move || promise.complete(Ok(1)));
            let cancelled = handle.cancel();
            worker.join().unwrap();
            assert_eq!(stop.stops.load(Ordering::SeqCst), usize::from(cancelled));
            match handle.result() {
                Err(FutureError::Cancelled) => assert!(cancelled),
                Ok(1) => assert!(!cancelled),
                other => panic!("unexpected {other:?}"),
            }
        });
    }

    #[test]
    fn loom_cancel_unstarted_races_a_client_cancel_and_result() {
        loom::model(|| {
            let (promise, handle) = pending::<u32>();
            assert!(promise.set_running());
            let supervisor = thread::spawn(move || promise.cancel_unstarted());
            let _ = handle.cancel();
            assert!(matches!(handle.result(), Err(FutureError::Cancelled)));
            supervisor.join().unwrap();
        });
    }

    #[test]
    fn loom_a_waker_registered_in_poll_races_completion() {
        use std::task::Wake;
        struct Flag(loom::sync::atomic::AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        loom::model(|| {
            let (promise, mut handle) = pending::<u32>();
            let worker = thread::spawn(move || promise.complete(Ok(3)));
            let flag = Arc::new(Flag(loom::sync::atomic::AtomicBool::new(false)));
            let waker = Waker::from(Arc::clone(&flag));
            let mut cx = Context::from_waker(&waker);
            let first = Pin::new(&mut handle).poll(&mut cx);
            worker.join().unwrap();
            match first {
                Poll::Ready(out) => assert_eq!(out.ok(), Some(3)),
                Poll::Pending => {
                    // No lost wake-up: a Pending poll was followed by a wake.
                    assert!(flag.0.load(Ordering::SeqCst));
                    let again = Pin::new(&mut handle).poll(&mut cx);
                    assert!(matches!(again, Poll::Ready(Ok(3))));
                }
            }
        });
    }

    #[test]
    fn loom_cooperative_cancel_races_the_task_returning() {
        // A cancellable thread task: cancel() sets the token under the future's lock and
        // the completion reads it under the same lock, so cancel() == true always ends
        // cancelled, and a value only comes when cancel() said false.
        loom::model(|| {
            let (promise, handle) = pending::<u32>();
            let token = CancelToken::new();
            struct SetToken(CancelToken);
            impl StopRunning for SetToken {
                fn can_stop(&self) -> bool {
                    true
                }
                fn stop(&self) {
                    self.0.cancel();
                }
                fn is_cooperative(&self) -> bool {
                    true
                }
            }
            assert!(promise.set_running_with(Arc::new(SetToken(token.clone()))));
            let worker = thread::spawn(move || promise.complete_cooperative(Ok(9), &token));
            let cancelled = handle.cancel();
            worker.join().unwrap();
            match handle.result() {
                Err(FutureError::Cancelled) => assert!(cancelled),
                Ok(9) => assert!(!cancelled),
                other => panic!("unexpected {other:?}"),
            }
        });
    }

    /// Attack 13 (DEFECT 5): `cancel()` that sees the task pending, then loses the race
    /// to `set_running_with`, takes `try_cancel`'s non-cooperative `Stop` path and marks
    /// the future `Cancelled` while the cancellable task still runs (the docs say it
    /// stays running until the task returns). Fails on the code it was written against.
    #[test]
    fn loom_cooperative_cancel_racing_start_keeps_the_future_running() {
        struct SetToken(CancelToken);
        impl StopRunning for SetToken {
            fn can_stop(&self) -> bool {
                true
            }
            fn stop(&self) {
                self.0.cancel();
            }
            fn is_cooperative(&self) -> bool {
                true
            }
        }
        loom::model(|| {
            let (promise, handle) = pending::<u32>();
            let token = CancelToken::new();
            let started = Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let returned = Arc::new(loom::sync::atomic::AtomicBool::new(false));
            let (s, r, t) = (Arc::clone(&started), Arc::clone(&returned), token.clone());
            let worker = thread::spawn(move || {
                if promise.set_running_with(Arc::new(SetToken(t.clone()))) {
                    s.store(true, Ordering::SeqCst);
                    // The task runs here, then returns.
                    r.store(true, Ordering::SeqCst);
                    promise.complete_cooperative(Ok(9), &t);
                }
            });
            let cancelled = handle.cancel();
            let done_now = handle.is_done();
            let returned_now = returned.load(Ordering::SeqCst);
            worker.join().unwrap();
            if started.load(Ordering::SeqCst) && cancelled {
                assert!(
                    !done_now || returned_now,
                    "the future ended while its cancellable task still ran"
                );
            }
            assert_eq!(
                matches!(handle.result(), Err(FutureError::Cancelled)),
                cancelled
            );
        });
    }

    #[test]
    fn loom_result_waits_for_done_callbacks_that_read_the_value() {
        loom::model(|| {
            let (promise, handle) = pending::<u32>();
            let seen = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
            let s = Arc::clone(&seen);
            handle.add_done_callback(move |h| {
                let value = h.try_with_result(|r| r.ok().copied()).flatten();
                s.store(value.map_or(99, |v| v as usize), Ordering::SeqCst);
            });
            let worker = thread::spawn(move || promise.complete(Ok(4)));
            assert_eq!(handle.result().ok(), Some(4));
            worker.join().unwrap();
            assert_eq!(seen.load(Ordering::SeqCst), 4, "the callback saw the value");
        });
    }

    #[test]
    fn loom_callback_runs_exactly_once() {
        loom::model(|| {
            let (promise, handle) = pending::<u32>();
            let count = Arc::new(loom::sync::atomic::AtomicUsize::new(0));
            let c = Arc::clone(&count);
            let worker = thread::spawn(move || {
                if promise.set_running() {
                    promise.complete(Ok(1));
                }
            });
            handle.add_done_callback(move |_| {
                c.fetch_add(1, Ordering::SeqCst);
            });
            handle.cancel();
            worker.join().unwrap();
            assert_eq!(count.load(Ordering::SeqCst), 1);
        });
    }
}
