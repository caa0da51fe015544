//! [`CancelToken`]: cooperative cancellation, for a running task that can stop itself.
//!
//! A thread cannot be stopped from outside safely, so a running thread-pool task is
//! cancelled by asking it: [`ThreadPoolExecutor::submit_cancellable`] hands the task a
//! token, [`FutureHandle::cancel`] sets it, and the task looks at it where stopping is
//! safe (between requests, in a backoff sleep, in an `.await`).
//!
//! [`ThreadPoolExecutor::submit_cancellable`]: crate::ThreadPoolExecutor::submit_cancellable
//! [`FutureHandle::cancel`]: crate::FutureHandle::cancel

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::sync::{AtomicBool, Condvar, Mutex, Ordering};

/// A cancellation flag that tasks watch: set once, never cleared.
///
/// Cheap to clone (clones share the flag). Blocking code asks
/// [`is_cancelled`](Self::is_cancelled) or sleeps in [`wait_timeout`](Self::wait_timeout),
/// which wakes at once on cancellation; async code awaits [`cancelled`](Self::cancelled).
/// A [`child_token`](Self::child_token) is cancelled with its parent (and can be
/// cancelled alone), so one token can stop a whole group of tasks.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use concurrent_futures::{CancelToken, FutureError, ThreadPoolExecutor};
///
/// let pool = ThreadPoolExecutor::new();
/// let handle = pool.submit_cancellable(|token: &CancelToken| {
///     let mut rounds = 0;
///     // Work in steps, and stop between two steps once asked to.
///     while !token.wait_timeout(Duration::from_millis(1)) {
///         rounds += 1;
///     }
///     rounds
/// })?;
/// while !handle.is_running() {
///     std::thread::yield_now();
/// }
/// assert!(handle.cancel(), "a running cancellable task can be cancelled");
/// assert!(matches!(handle.result(), Err(FutureError::Cancelled)));
/// # Ok::<(), anyhow::Error>(())
/// ```
#[derive(Clone)]
pub struct CancelToken {
    inner: Arc<TokenInner>,
}

/// The shared flag.
///
/// Invariants: `cancelled` goes false → true once, written under `state`'s lock (so a
/// waiter that saw it false under the lock is registered before the notification);
/// readers may load it without the lock. Once it is true, `state` holds no wakers and no
/// children and never gains any.
struct TokenInner {
    cancelled: AtomicBool,
    state: Mutex<Listeners>,
    signal: Condvar,
}

#[derive(Default)]
struct Listeners {
    /// Async tasks waiting in [`Cancelled`], by the future's id: woken and dropped on
    /// cancellation, removed when their future is dropped first.
    wakers: HashMap<u64, Waker>,
    next_waker_id: u64,
    /// Child tokens, cancelled with this one. Dead children are pruned when the list
    /// doubles, so a long-lived parent with short-lived children stays small.
    children: Vec<Weak<TokenInner>>,
    prune_at: usize,
}

impl CancelToken {
    /// A token that is not cancelled.
    #[must_use]
    pub fn new() -> Self {
        Self {
            inner: Arc::new(TokenInner {
                cancelled: AtomicBool::new(false),
                state: Mutex::new(Listeners::default()),
                signal: Condvar::new(),
            }),
        }
    }

    /// A new token that is cancelled when this one is (at once, if it already is), and
    /// can also be cancelled on its own without touching this one.
    #[must_use]
    pub fn child_token(&self) -> CancelToken {
        let child = CancelToken::new();
        {
            let mut state = self.inner.state.lock();
            if !self.is_cancelled() {
                if state.children.len() >= state.prune_at.max(8) {
                    state.children.retain(|c| c.strong_count() > 0);
                    state.prune_at = state.children.len() * 2;
                }
                state.children.push(Arc::downgrade(&child.inner));
                return child;
            }
        }
        child.cancel();
        child
    }

    /// Sets the token: wakes every thread in [`wait_timeout`](Self::wait_timeout) and
    /// every task awaiting [`cancelled`](Self::cancelled), and cancels the children.
    /// Idempotent.
    pub fn cancel(&self) {
        let mut pending = vec![Arc::clone(&self.inner)];
        // Iterative, so a deep chain of children cannot overflow the stack.
        while let Some(token) = pending.pop() {
            let Listeners {
                wakers, children, ..
            } = {
                let mut state = token.state.lock();
                if token.cancelled.swap(true, Ordering::AcqRel) {
                    continue;
                }
                std::mem::take(&mut *state)
            };
            token.signal.notify_all();
            for waker in wakers.into_values() {
                waker.wake();
            }
            pending.extend(children.iter().filter_map(Weak::upgrade));
        }
    }

    /// True once the token was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.inner.cancelled.load(Ordering::Acquire)
    }

    /// Blocks until the token is cancelled.
    pub fn wait(&self) {
        self.wait_until(None);
    }

    /// Blocks until the token is cancelled or `timeout` passed; returns whether it is
    /// cancelled. A backoff sleep that ends early when the task is cancelled.
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(Instant::now().checked_add(timeout))
    }

    fn wait_until(&self, deadline: Option<Instant>) -> bool {
        if self.is_cancelled() {
            return true;
        }
        let mut state = self.inner.state.lock();
        while !self.is_cancelled() {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return false;
            }
            state = self.inner.signal.wait_until(state, deadline).0;
        }
        true
    }

    /// A future that completes once the token is cancelled, for async code
    /// (`tokio::select!` against a request, say). It owns a clone of the token, so it can
    /// be moved into a spawned task.
    pub fn cancelled(&self) -> Cancelled {
        Cancelled {
            token: self.clone(),
            waker_id: None,
        }
    }

    /// True when both are the same token (clones of one another).
    pub fn same_as(&self, other: &CancelToken) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Default for CancelToken {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CancelToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CancelToken")
            .field("cancelled", &self.is_cancelled())
            .finish()
    }
}

/// The future returned by [`CancelToken::cancelled`]: ready once the token is cancelled.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct Cancelled {
    token: CancelToken,
    /// Where this future's waker is registered in the token, once polled.
    waker_id: Option<u64>,
}

impl Future for Cancelled {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.token.is_cancelled() {
            return Poll::Ready(());
        }
        let this = &mut *self;
        let mut state = this.token.inner.state.lock();
        if this.token.is_cancelled() {
            return Poll::Ready(());
        }
        let id = *this.waker_id.get_or_insert_with(|| {
            state.next_waker_id += 1;
            state.next_waker_id
        });
        match state.wakers.get_mut(&id) {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            Some(waker) => waker.clone_from(cx.waker()),
            None => {
                state.wakers.insert(id, cx.waker().clone());
            }
        }
        Poll::Pending
    }
}

impl Drop for Cancelled {
    fn drop(&mut self) {
        if let Some(id) = self.waker_id {
            self.token.inner.state.lock().wakers.remove(&id);
        }
    }
}

#[cfg(all(test, not(cf_loom)))]
mod tests {
    use super::*;

    #[test]
    fn children_follow_their_parent_but_not_the_other_way() {
        let parent = CancelToken::new();
        let child = parent.child_token();
        let grandchild = child.child_token();
        let sibling = parent.child_token();
        sibling.cancel();
        assert!(!parent.is_cancelled() && !child.is_cancelled());
        parent.cancel();
        assert!(child.is_cancelled() && grandchild.is_cancelled());
        assert!(parent.child_token().is_cancelled(), "born cancelled");
    }

    #[test]
    fn wait_timeout_times_out_then_wakes_on_cancel() {
        let token = CancelToken::new();
        assert!(!token.wait_timeout(Duration::from_millis(1)));
        let other = token.clone();
        let sleeper = std::thread::spawn(move || other.wait_timeout(Duration::from_secs(3600)));
        token.cancel();
        assert!(sleeper.join().unwrap());
        assert!(token.wait_timeout(Duration::ZERO));
    }

    #[test]
    fn dead_children_are_pruned() {
        let parent = CancelToken::new();
        for _ in 0..10_000 {
            drop(parent.child_token());
        }
        assert!(parent.inner.state.lock().children.len() < 64);
    }

    #[test]
    fn cancelled_future_wakes_its_task() {
        use std::task::Wake;
        struct Flag(std::sync::atomic::AtomicBool);
        impl Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
        let token = CancelToken::new();
        let flag = Arc::new(Flag(std::sync::atomic::AtomicBool::new(false)));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let mut fut = token.cancelled();
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert!(Pin::new(&mut fut).poll(&mut cx).is_pending());
        assert_eq!(
            token.inner.state.lock().wakers.len(),
            1,
            "one waker per future"
        );
        token.cancel();
        assert!(flag.0.load(std::sync::atomic::Ordering::SeqCst));
        assert!(Pin::new(&mut fut).poll(&mut cx).is_ready());
    }
}
