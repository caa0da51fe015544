//! [`Cancel`]: the Ctrl-C token every mode watches.
//!
//! The Ctrl-C handler thread calls [`Cancel::cancel`]. Schedulers check [`Cancel::is_cancelled`]
//! before starting a download, register hooks (the thread pool's `shutdown(false, true)`), and
//! retry backoffs sleep through [`Cancel::sleep_blocking`] or [`Cancel::sleep_async`], which wake up
//! at once when the run is cancelled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::watch;

type Hook = Box<dyn FnOnce() + Send>;

/// A one-shot cancellation token, shared by the Ctrl-C handler and the download code.
pub struct Cancel {
    cancelled: AtomicBool,
    /// Set once the hooks of [`Cancel::cancel`] have all run.
    settled: AtomicBool,
    /// Guards the sleepers' view of `cancelled` and the hooks not yet run.
    state: Mutex<Vec<Hook>>,
    wake: Condvar,
    notify: watch::Sender<bool>,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel")
            .field("cancelled", &self.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Cancel {
    /// A token that is not cancelled.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            cancelled: AtomicBool::new(false),
            settled: AtomicBool::new(false),
            state: Mutex::new(Vec::new()),
            wake: Condvar::new(),
            notify: watch::Sender::new(false),
        })
    }

    fn hooks(&self) -> MutexGuard<'_, Vec<Hook>> {
        // The lock never covers user code, so a poisoned lock still holds consistent data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// Cancels the run: wakes every sleeper and runs the hooks (once, outside the lock).
    pub fn cancel(&self) {
        let hooks = {
            let mut hooks = self.hooks();
            if self.cancelled.swap(true, Ordering::AcqRel) {
                return;
            }
            std::mem::take(&mut *hooks)
        };
        self.wake.notify_all();
        self.notify.send_replace(true);
        for hook in hooks {
            hook();
        }
        let _guard = self.hooks();
        self.settled.store(true, Ordering::Release);
        self.wake.notify_all();
    }

    /// If the run was cancelled, waits until the hooks have run: the handler thread may still be
    /// printing the "Interrupted" note when the schedulers have already stopped.
    pub(crate) fn wait_settled(&self) {
        let mut guard = self.hooks();
        while self.is_cancelled() && !self.settled.load(Ordering::Acquire) {
            guard = self
                .wake
                .wait(guard)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Runs `hook` when the run is cancelled, or now if it already is.
    pub(crate) fn on_cancel(&self, hook: impl FnOnce() + Send + 'static) {
        {
            let mut hooks = self.hooks();
            if !self.is_cancelled() {
                hooks.push(Box::new(hook));
                return;
            }
        }
        hook();
    }

    /// Sleeps for `duration` unless the run is cancelled first; returns whether it slept it all.
    pub(crate) fn sleep_blocking(&self, duration: Duration) -> bool {
        let deadline = Instant::now() + duration;
        let mut guard = self.hooks();
        loop {
            if self.is_cancelled() {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            guard = self
                .wake
                .wait_timeout(guard, deadline - now)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Async [`Cancel::sleep_blocking`].
    pub(crate) async fn sleep_async(&self, duration: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => !self.is_cancelled(),
            () = self.cancelled() => false,
        }
    }

    /// Completes when the run is cancelled.
    pub(crate) async fn cancelled(&self) {
        let mut rx = self.notify.subscribe();
        // The sender lives as long as `self`, so `wait_for` cannot fail here.
        let _ = rx.wait_for(|&cancelled| cancelled).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn hooks_run_once_and_late_hooks_run_at_once() {
        let cancel = Cancel::new();
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&runs);
        cancel.on_cancel(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        cancel.wait_settled();
        cancel.cancel();
        cancel.cancel();
        cancel.wait_settled();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        let counter = Arc::clone(&runs);
        cancel.on_cancel(move || {
            counter.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn cancel_wakes_a_blocking_sleeper() {
        let cancel = Cancel::new();
        let sleeper = {
            let cancel = Arc::clone(&cancel);
            std::thread::spawn(move || cancel.sleep_blocking(Duration::from_secs(3600)))
        };
        cancel.cancel();
        assert_eq!(sleeper.join().ok(), Some(false));
        assert!(!cancel.sleep_blocking(Duration::ZERO));
    }

    #[test]
    fn cancel_wakes_an_async_sleeper() -> std::io::Result<()> {
        let cancel = Cancel::new();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let slept = rt.block_on(async {
            let sleeper = tokio::spawn({
                let cancel = Arc::clone(&cancel);
                async move { cancel.sleep_async(Duration::from_secs(3600)).await }
            });
            cancel.cancel();
            sleeper.await.ok()
        });
        assert_eq!(slept, Some(false));
        assert!(!rt.block_on(cancel.sleep_async(Duration::ZERO)));
        Ok(())
    }
}
