//! [`wait`]: blocks until some or all of a set of futures are done.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::future::{AsHandle, Waiter};

/// When [`wait`] returns, Python's `FIRST_COMPLETED`, `FIRST_EXCEPTION` and
/// `ALL_COMPLETED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ReturnWhen {
    /// As soon as any future finishes or is cancelled.
    FirstCompleted,
    /// As soon as any future fails (panics or breaks; a cancellation is not a failure),
    /// or when all are done. A task that returned `Err` finished with a value: use
    /// [`wait_fallible`] to count it as a failure too.
    FirstException,
    /// When every future is done.
    #[default]
    AllCompleted,
}

/// The two sets [`wait`] returns, Python's `DoneAndNotDoneFutures`; each keeps the
/// order the handles were given in.
#[derive(Debug)]
pub struct DoneAndNotDone<H> {
    /// The futures that finished or were cancelled.
    pub done: Vec<H>,
    /// The others.
    pub not_done: Vec<H>,
}

/// Waits until the futures satisfy `return_when` or `timeout` passes, Python's
/// `concurrent.futures.wait`. A timeout is not an error: the sets say what finished.
///
/// Duplicates (the same handle passed twice by reference) are kept once. Cancellations
/// count as done at once, including those made by `shutdown(cancel_futures = true)`.
///
/// # Blocking
///
/// Blocks until the condition holds or `timeout` passes (`None`: no limit).
///
/// # Examples
///
/// ```
/// use concurrent_futures::{ReturnWhen, ThreadPoolExecutor, wait};
///
/// let pool = ThreadPoolExecutor::new();
/// let quick = pool.submit(|| true)?;
/// let (tx, rx) = std::sync::mpsc::channel::<()>();
/// let slow = pool.submit(move || rx.recv().is_ok())?;
/// let sets = wait([&quick, &slow], None, ReturnWhen::FirstCompleted);
/// assert_eq!(sets.done, [&quick]);
/// assert_eq!(sets.not_done, [&slow]);
/// tx.send(())?;
/// let sets = wait([quick, slow], None, ReturnWhen::AllCompleted);
/// assert_eq!((sets.done.len(), sets.not_done.len()), (2, 0));
/// # Ok::<(), anyhow::Error>(())
/// ```
pub fn wait<I, H>(
    handles: I,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> DoneAndNotDone<H>
where
    I: IntoIterator<Item = H>,
    H: AsHandle,
{
    wait_by(handles, timeout, return_when, |handle: &H| {
        handle.as_handle().shared.has_failed()
    })
}

/// [`wait`] for futures whose value is a `Result`: with [`ReturnWhen::FirstException`]
/// a task that returned `Err` counts as a failure too, as a raised exception does in
/// Python (where a task cannot return an error value). Everything else is as for `wait`.
///
/// # Blocking
///
/// Blocks until the condition holds or `timeout` passes (`None`: no limit).
///
/// # Examples
///
/// ```
/// use concurrent_futures::{ReturnWhen, ThreadPoolExecutor, wait_fallible};
///
/// let pool = ThreadPoolExecutor::new();
/// let (tx, rx) = std::sync::mpsc::channel::<()>();
/// let slow = pool.submit(move || rx.recv().map_err(|e| e.to_string()))?;
/// let failing = pool.submit(|| Err::<(), _>("no such file".to_owned()))?;
/// let sets = wait_fallible([&slow, &failing], None, ReturnWhen::FirstException);
/// assert_eq!(sets.done, [&failing]);
/// tx.send(())?;
/// # Ok::<(), anyhow::Error>(())
/// ```
pub fn wait_fallible<I, H, V, E>(
    handles: I,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
) -> DoneAndNotDone<H>
where
    I: IntoIterator<Item = H>,
    H: AsHandle<Output = Result<V, E>>,
{
    wait_by(handles, timeout, return_when, |handle: &H| {
        let shared = &handle.as_handle().shared;
        shared.has_failed() || shared.returned_err()
    })
}

/// The wait of [`wait`] and [`wait_fallible`]; `failed` says whether a done future
/// counts for [`ReturnWhen::FirstException`].
fn wait_by<I, H>(
    handles: I,
    timeout: Option<Duration>,
    return_when: ReturnWhen,
    failed_now: impl Fn(&H) -> bool,
) -> DoneAndNotDone<H>
where
    I: IntoIterator<Item = H>,
    H: AsHandle,
{
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let waiter = Waiter::new();
    let mut seen = HashSet::new();
    let mut items: Vec<H> = Vec::new();
    let mut done: Vec<bool> = Vec::new();
    let mut done_count = 0;
    let mut failed = false;
    for handle in handles {
        let shared = &handle.as_handle().shared;
        if !seen.insert(Arc::as_ptr(shared).cast::<()>()) {
            continue;
        }
        let is_done = !shared.add_waiter(&waiter, items.len());
        if is_done {
            done_count += 1;
            failed |= failed_now(&handle);
        }
        done.push(is_done);
        items.push(handle);
    }
    let mut tokens = Vec::new();
    loop {
        let satisfied = done_count == items.len()
            || match return_when {
                ReturnWhen::FirstCompleted => done_count > 0,
                ReturnWhen::FirstException => failed,
                ReturnWhen::AllCompleted => false,
            };
        if satisfied || !waiter.take(deadline, &mut tokens) {
            break;
        }
        for token in tokens.drain(..) {
            if let Some(flag) = done.get_mut(token).filter(|flag| !**flag) {
                *flag = true;
                done_count += 1;
                failed |= failed_now(&items[token]);
            }
        }
    }
    let mut sets = DoneAndNotDone {
        done: Vec::with_capacity(done_count),
        not_done: Vec::with_capacity(items.len() - done_count),
    };
    for (handle, seen_done) in items.into_iter().zip(done) {
        if seen_done || handle.as_handle().is_done() {
            sets.done.push(handle);
        } else {
            handle.as_handle().shared.remove_waiter(&waiter);
            sets.not_done.push(handle);
        }
    }
    sets
}
