//! Synchronisation primitives, routed through one module so that the future's state
//! machine can be model-checked with loom (`RUSTFLAGS="--cfg cf_loom"`; a name of our own, because `--cfg loom` would also switch tokio, a dev-dependency, into its loom mode).
//!
//! Outside loom the types are parking_lot's: an uncontended lock is one atomic operation
//! and `notify_all` on a condition variable with no sleeper makes no system call, which
//! matters on the per-task hot path.

use std::time::Instant;

#[cfg(cf_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
#[cfg(not(cf_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};

/// A mutual-exclusion lock whose `lock` never fails (tasks run outside every lock, so a
/// lock is never poisoned).
#[derive(Debug, Default)]
pub(crate) struct Mutex<T> {
    #[cfg(not(cf_loom))]
    inner: parking_lot::Mutex<T>,
    #[cfg(cf_loom)]
    inner: loom::sync::Mutex<T>,
}

/// The guard of [`Mutex`].
#[cfg(not(cf_loom))]
pub(crate) type MutexGuard<'a, T> = parking_lot::MutexGuard<'a, T>;
/// The guard of [`Mutex`].
#[cfg(cf_loom)]
pub(crate) type MutexGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            #[cfg(not(cf_loom))]
            inner: parking_lot::Mutex::new(value),
            #[cfg(cf_loom)]
            inner: loom::sync::Mutex::new(value),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
        #[cfg(not(cf_loom))]
        {
            self.inner.lock()
        }
        #[cfg(cf_loom)]
        {
            // loom's lock only fails after a panic while locked; no user code runs under our locks.
            self.inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }
}

/// A condition variable paired with [`Mutex`].
#[derive(Debug, Default)]
pub(crate) struct Condvar {
    #[cfg(not(cf_loom))]
    inner: parking_lot::Condvar,
    #[cfg(cf_loom)]
    inner: loom::sync::Condvar,
}

impl Condvar {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Blocks until notified (or spuriously woken).
    pub(crate) fn wait<'a, T>(&self, guard: MutexGuard<'a, T>) -> MutexGuard<'a, T> {
        #[cfg(not(cf_loom))]
        {
            let mut guard = guard;
            self.inner.wait(&mut guard);
            guard
        }
        #[cfg(cf_loom)]
        {
            self.inner
                .wait(guard)
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }

    /// Blocks until notified or until `deadline`; `None` waits without a deadline.
    /// Returns the guard and whether the deadline passed.
    pub(crate) fn wait_until<'a, T>(
        &self,
        guard: MutexGuard<'a, T>,
        deadline: Option<Instant>,
    ) -> (MutexGuard<'a, T>, bool) {
        match deadline {
            None => (self.wait(guard), false),
            #[cfg(not(cf_loom))]
            Some(deadline) => {
                let mut guard = guard;
                let timed_out = self.inner.wait_until(&mut guard, deadline).timed_out();
                (guard, timed_out)
            }
            #[cfg(cf_loom)]
            Some(deadline) => {
                // loom has no clock: model a timed wait as a wait that may end at any time.
                let _ = deadline;
                (self.wait(guard), false)
            }
        }
    }

    pub(crate) fn notify_all(&self) {
        self.inner.notify_all();
    }

    pub(crate) fn notify_one(&self) {
        self.inner.notify_one();
    }
}

/// A lock that the thread holding it may take again (a future's outcome, lent to a
/// closure that formats or inspects the same future). It hands out shared access only:
/// put a `RefCell` inside to change the value.
#[derive(Debug, Default)]
pub(crate) struct ReentrantLock<T> {
    #[cfg(not(cf_loom))]
    inner: parking_lot::ReentrantMutex<T>,
    // loom has no reentrant lock; the models never take it twice in one thread.
    #[cfg(cf_loom)]
    inner: loom::sync::Mutex<T>,
}

/// The guard of [`ReentrantLock`].
#[cfg(not(cf_loom))]
pub(crate) type ReentrantGuard<'a, T> = parking_lot::ReentrantMutexGuard<'a, T>;
/// The guard of [`ReentrantLock`].
#[cfg(cf_loom)]
pub(crate) type ReentrantGuard<'a, T> = loom::sync::MutexGuard<'a, T>;

impl<T> ReentrantLock<T> {
    pub(crate) fn new(value: T) -> Self {
        Self {
            #[cfg(not(cf_loom))]
            inner: parking_lot::ReentrantMutex::new(value),
            #[cfg(cf_loom)]
            inner: loom::sync::Mutex::new(value),
        }
    }

    pub(crate) fn lock(&self) -> ReentrantGuard<'_, T> {
        #[cfg(not(cf_loom))]
        {
            self.inner.lock()
        }
        #[cfg(cf_loom)]
        {
            self.inner
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }
}

/// The identity of a thread (loom's threads share one OS thread, so they need loom's).
#[cfg(not(cf_loom))]
pub(crate) use std::thread::ThreadId;

/// The identity of a thread (loom's threads share one OS thread, so they need loom's).
#[cfg(cf_loom)]
pub(crate) use loom::thread::ThreadId;

/// The calling thread's [`ThreadId`].
pub(crate) fn current_thread_id() -> ThreadId {
    #[cfg(not(cf_loom))]
    {
        std::thread::current().id()
    }
    #[cfg(cf_loom)]
    {
        loom::thread::current().id()
    }
}
