//! [`Scope`]: thread-pool tasks that borrow from the caller's stack, every one of them
//! ended before [`ThreadPoolExecutor::scope`] returns (`std::thread::scope` on a pool).
//!
//! The pool's queue holds `'static` jobs, so a scoped task's closure has its lifetime
//! erased on the way in; that is the one `unsafe` here. It is sound because `scope`
//! cannot return, normally or by unwinding, before every scoped closure has been
//! dropped (run or not): each closure is wrapped in a [`Scoped`] whose `Drop` drops the
//! closure first and only then counts it out, and `scope` waits, in a guard's `Drop`,
//! for the count to reach zero. A leaked handle does not matter: the count follows the
//! closures, not the handles. (The root README lists every file with `unsafe`.)

#![allow(
    unsafe_code,
    reason = "one lifetime erasure, sound by the join described in the module docs"
)]

use std::fmt;
use std::marker::PhantomData;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;

use crate::error::{FutureError, PanicError, SubmitError};
use crate::future::TaskRecord;
use crate::future::{self, FutureHandle};
use crate::panic_site;
use crate::sync::{Condvar, Mutex};
use crate::thread_pool::{Job, Ran, ThreadPoolExecutor};
use crate::unwind::contain;

/// A scope of [`ThreadPoolExecutor::scope`]: submits tasks that may borrow anything that
/// outlives the scope.
///
/// Like `std::thread::Scope`, the two lifetimes are `'scope` (the scope itself: tasks
/// may borrow for this long) and `'env` (what the tasks borrow from).
pub struct Scope<'scope, 'env: 'scope> {
    pool: &'env ThreadPoolExecutor,
    tasks: Arc<Outstanding>,
    /// Invariant in both lifetimes, as `std::thread::Scope` is, so that neither can be
    /// shortened or stretched to let a borrow escape.
    scope: PhantomData<&'scope mut &'scope ()>,
    env: PhantomData<&'env mut &'env ()>,
}

/// The number of scoped closures not yet dropped.
#[derive(Debug, Default)]
struct Outstanding {
    count: Mutex<usize>,
    zero: Condvar,
}

impl Outstanding {
    fn add(&self) {
        *self.count.lock() += 1;
    }

    fn done(&self) {
        let mut count = self.count.lock();
        *count -= 1;
        if *count == 0 {
            self.zero.notify_all();
        }
    }

    fn wait_for_zero(&self) {
        let mut count = self.count.lock();
        while *count > 0 {
            count = self.zero.wait(count);
        }
    }
}

/// What the pool asks of a scoped task: run it (saying how it ended before its result is
/// published), cancel it, or fail it.
enum Action<'a> {
    Run(&'a mut dyn FnMut(Ran)),
    Cancel,
    Fail(FutureError),
}

/// A scoped task's closure: does what the pool asks and completes the caller's future.
type ScopedFn<'scope> = Box<dyn FnOnce(Action<'_>) + Send + 'scope>;

/// A scoped task: its closure and the count it leaves when dropped.
pub(crate) struct Scoped<'scope> {
    task: Option<ScopedFn<'scope>>,
    tasks: Arc<Outstanding>,
}

impl Scoped<'_> {
    fn act(mut self, action: Action<'_>) {
        if let Some(task) = self.task.take() {
            task(action);
        }
    }
}

impl Drop for Scoped<'_> {
    fn drop(&mut self) {
        /// Counts the task out when dropped: after the closure, even when dropping the
        /// closure panics (a capture's `Drop`), so `scope` never waits for ever.
        struct CountOut<'a>(&'a Outstanding);
        impl Drop for CountOut<'_> {
            fn drop(&mut self) {
                self.0.done();
            }
        }
        let _out = CountOut(&self.tasks);
        // The closure (and everything it borrows) goes first; only then may `scope`
        // return.
        drop(self.task.take());
    }
}

/// A scoped task in the pool's queue: the record's own future is not the caller's (that
/// one is completed by the closure), so the record holds `()`.
impl Job for TaskRecord<(), Scoped<'static>> {
    fn run(self: Arc<Self>, before_publish: &mut dyn FnMut(Ran)) {
        let (scoped, _unused) = self.take();
        match scoped {
            Some(scoped) => scoped.act(Action::Run(before_publish)),
            None => before_publish(Ran::Cancelled),
        }
    }

    fn cancel(self: Arc<Self>) {
        let (scoped, _unused) = self.take();
        if let Some(scoped) = scoped {
            contain("cancelling a scoped task", move || {
                scoped.act(Action::Cancel)
            });
        }
    }

    fn fail(self: Arc<Self>, error: FutureError) {
        let (scoped, _unused) = self.take();
        if let Some(scoped) = scoped {
            contain("failing a scoped task", move || {
                scoped.act(Action::Fail(error))
            });
        }
    }
}

impl ThreadPoolExecutor {
    /// Runs `f` with a [`Scope`] whose tasks may borrow from the caller's stack, and
    /// returns once every task submitted in it has ended: `std::thread::scope` on the
    /// pool's threads, with a handle per task.
    ///
    /// Handles work as usual inside (`result`, [`wait`](crate::wait()),
    /// [`as_completed`](crate::as_completed())). A task's panic is its handle's
    /// [`FutureError::Panicked`], as with `submit`; a panic of `f` itself is resumed after
    /// the tasks ended.
    ///
    /// # Deadlock
    ///
    /// The scope waits for its tasks, so calling `scope` from a task of the same pool
    /// whose every worker is busy waiting in a scope deadlocks, as nested
    /// `submit(..).result()` does in Python's pools.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::{ThreadPoolExecutor, as_completed};
    ///
    /// let pool = ThreadPoolExecutor::new();
    /// let words = vec!["hello".to_string(), "scoped".to_string(), "world".to_string()];
    /// let mut total = 0;
    /// pool.scope(|s| {
    ///     // No Arc, no clone: the tasks borrow `words`.
    ///     let handles: Vec<_> = words.iter().map(|w| s.submit(|| w.len()).unwrap()).collect();
    ///     for done in as_completed(handles, None) {
    ///         total += done.unwrap().result().unwrap();
    ///     }
    /// });
    /// assert_eq!(total, 16);
    /// ```
    ///
    /// A borrow cannot escape the scope:
    ///
    /// ```compile_fail,E0373
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new();
    /// let leaked = pool.scope(|s| {
    ///     let local = String::from("dies with the closure");
    ///     s.submit(|| local.len()).unwrap()
    /// });
    /// ```
    pub fn scope<'env, F, R>(&'env self, f: F) -> R
    where
        F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
    {
        let scope = Scope {
            pool: self,
            tasks: Arc::new(Outstanding::default()),
            scope: PhantomData,
            env: PhantomData,
        };
        /// Waits for the scope's tasks when dropped: after `f` returns or unwinds.
        struct JoinOnDrop<'a>(&'a Outstanding);
        impl Drop for JoinOnDrop<'_> {
            fn drop(&mut self) {
                self.0.wait_for_zero();
            }
        }
        let outcome = {
            let _join = JoinOnDrop(&scope.tasks);
            catch_unwind(AssertUnwindSafe(|| f(&scope)))
        };
        match outcome {
            Ok(value) => value,
            Err(payload) => std::panic::resume_unwind(payload),
        }
    }
}

impl<'scope> Scope<'scope, '_> {
    /// Submits `task`, which may borrow anything that outlives the scope; its handle may
    /// be used inside the scope (and, when the value borrows nothing, after it).
    ///
    /// # Errors
    ///
    /// As for [`ThreadPoolExecutor::submit`]: the pool was shut down or is broken; the
    /// task comes back.
    pub fn submit<F, T>(&'scope self, task: F) -> Result<FutureHandle<T>, SubmitError<F>>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let tasks = &self.tasks;
        let mut handle = None;
        self.pool.submit_job(task, |task| {
            let (promise, made) = future::pending::<T>();
            handle = Some(made);
            tasks.add();
            let scoped = Scoped {
                task: Some(Box::new(move |action: Action<'_>| match action {
                    Action::Run(before_publish) => {
                        if !promise.set_running() {
                            contain("dropping a cancelled task", move || drop(task));
                            return before_publish(Ran::Cancelled);
                        }
                        panic_site::forget();
                        let outcome = catch_unwind(AssertUnwindSafe(task))
                            .map_err(|payload| FutureError::Panicked(PanicError::new(payload)));
                        before_publish(Ran::of(&outcome));
                        contain("completing a task", move || promise.complete(outcome));
                    }
                    Action::Cancel => {
                        drop(task);
                        promise.cancel();
                    }
                    Action::Fail(error) => {
                        drop(task);
                        promise.complete(Err(error));
                    }
                })),
                tasks: Arc::clone(tasks),
            };
            // The record's own future is not the caller's: nobody waits for it.
            let (record, unused) = future::with_task(erase_lifetime(scoped));
            (record as Arc<dyn Job>, unused)
        })?;
        // `make` ran (the pool took the task), so the handle is there.
        Ok(handle.unwrap_or_else(|| unreachable!("an accepted task has a handle")))
    }
}

/// Makes a scoped closure storable in the pool's `'static` queue.
fn erase_lifetime(scoped: Scoped<'_>) -> Scoped<'static> {
    // SAFETY: only the lifetime changes (same layout). `ThreadPoolExecutor::scope` does
    // not return, normally or by unwinding, before `Scoped::drop` ran for this value
    // (it waits for `Outstanding` to reach zero, and every `Scoped` counts itself out
    // in its `Drop`, after dropping the closure), so the closure and what it borrows are
    // never used after `'scope` ends. Nothing else stores a `Scoped`.
    unsafe { std::mem::transmute::<Scoped<'_>, Scoped<'static>>(scoped) }
}

impl fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("outstanding", &*self.tasks.count.lock())
            .finish_non_exhaustive()
    }
}
