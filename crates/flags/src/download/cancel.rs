//! [`Cancel`]: the token every mode watches, stopped by Ctrl-C (or SIGTERM).
//!
//! The flag itself, the sleeps that wake on it and the future that completes on it are
//! `concurrent_futures::CancelToken`'s. What this wrapper adds is what the token does not
//! do: it remembers *why* the run stopped (Ctrl-C or SIGTERM, which decide the exit status
//! and the report's last line), and it runs hooks once, on the thread that cancels. The
//! pool modes need those hooks: their scheduler blocks in `as_completed` on the calling
//! thread, so only the signal thread can shut the pool down at the moment of Ctrl-C, and
//! the "Interrupted" note must be printed then, not when the downloads in flight end.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

use concurrent_futures::CancelToken;

use crate::report::Stop;

type Hook = Box<dyn FnOnce() + Send>;

/// A one-shot cancellation token shared by the signal handler and the download code: a
/// `CancelToken`, the reason it was cancelled, and hooks run once when it is.
pub struct Cancel {
    token: CancelToken,
    /// Cancelled once the hooks of [`Cancel::cancel`] have all run.
    settled: CancelToken,
    reason: OnceLock<Stop>,
    /// The hooks not yet run. `token` is cancelled under this lock, so a hook is either
    /// queued before the cancellation (and run by it) or sees it and runs at once.
    hooks: Mutex<Vec<Hook>>,
}

impl std::fmt::Debug for Cancel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cancel")
            .field("stopped", &self.stopped())
            .finish_non_exhaustive()
    }
}

impl Cancel {
    /// A token that is not cancelled.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            token: CancelToken::new(),
            settled: CancelToken::new(),
            reason: OnceLock::new(),
            hooks: Mutex::new(Vec::new()),
        })
    }

    fn hooks(&self) -> MutexGuard<'_, Vec<Hook>> {
        // The lock never covers a hook, so a poisoned lock still holds consistent data.
        self.hooks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the run was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Why the run was cancelled, once it was.
    pub fn stopped(&self) -> Option<Stop> {
        self.reason.get().copied()
    }

    /// Cancels the run for `reason`: wakes every sleeper and runs the hooks (once, outside
    /// the lock). Later calls change nothing, the first reason stays.
    pub fn cancel(&self, reason: Stop) {
        let hooks = {
            let mut hooks = self.hooks();
            if self.token.is_cancelled() {
                return;
            }
            let _ = self.reason.set(reason);
            self.token.cancel();
            std::mem::take(&mut *hooks)
        };
        for hook in hooks {
            hook();
        }
        self.settled.cancel();
    }

    /// If the run was cancelled, waits until the hooks have run: the signal thread may
    /// still be printing the "Interrupted" note when the schedulers have already stopped.
    pub(crate) fn wait_settled(&self) {
        if self.is_cancelled() {
            self.settled.wait();
        }
    }

    /// Runs `hook` when the run is cancelled, or now if it already is.
    pub(crate) fn on_cancel(&self, hook: impl FnOnce() + Send + 'static) {
        {
            let mut hooks = self.hooks();
            if !self.token.is_cancelled() {
                hooks.push(Box::new(hook));
                return;
            }
        }
        hook();
    }

    /// Sleeps for `duration` unless the run is cancelled first; returns whether it slept it
    /// all.
    pub(crate) fn sleep_blocking(&self, duration: Duration) -> bool {
        !self.token.wait_timeout(duration)
    }

    /// Async [`Cancel::sleep_blocking`].
    pub(crate) async fn sleep_async(&self, duration: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => !self.is_cancelled(),
            () = self.token.cancelled() => false,
        }
    }

    /// Completes when the run is cancelled.
    pub(crate) fn cancelled(&self) -> concurrent_futures::Cancelled {
        self.token.cancelled()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

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
        assert_eq!(cancel.stopped(), None);
        cancel.cancel(Stop::Terminate);
        cancel.cancel(Stop::Interrupt);
        cancel.wait_settled();
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(
            cancel.stopped(),
            Some(Stop::Terminate),
            "the first reason stays"
        );
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
        cancel.cancel(Stop::Interrupt);
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
            cancel.cancel(Stop::Interrupt);
            sleeper.await.ok()
        });
        assert_eq!(slept, Some(false));
        assert!(!rt.block_on(cancel.sleep_async(Duration::ZERO)));
        Ok(())
    }

    #[test]
    fn exit_statuses() {
        assert_eq!(Stop::Interrupt.exit_status(), 130);
        assert_eq!(Stop::Terminate.exit_status(), 143);
    }
}
