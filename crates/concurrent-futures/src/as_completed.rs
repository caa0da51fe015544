//! [`as_completed`]: yields handles as their futures finish.

use std::collections::{HashSet, VecDeque};
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_core::Stream;

use crate::error::AsCompletedTimeout;
use crate::future::{AsHandle, Waiter};

/// Yields the given handles as their futures finish (or are cancelled), Python's
/// `as_completed`.
///
/// Futures already done come first, then the others in completion order. Each
/// distinct future is yielded once (passing the same handle twice by reference yields
/// it once). The work is O(n) for n handles: one waiter is installed on each pending
/// future and each completion is an O(1) notification. Handles may come from
/// different pools.
///
/// `timeout` is measured from this call. When it passes, the iterator yields one
/// [`AsCompletedTimeout`] saying how many of how many futures are unfinished, then
/// ends; [`AsCompleted::into_pending`] gives back the handles not yielded.
///
/// # Examples
///
/// ```
/// use concurrent_futures::{ThreadPoolExecutor, as_completed};
///
/// let pool = ThreadPoolExecutor::new();
/// let handles: Vec<_> = (0..5).map(|i| pool.submit(move || i * 2)).collect::<Result<_, _>>()?;
/// let mut total = 0;
/// for handle in as_completed(handles, None) {
///     total += handle?.result()?;
/// }
/// assert_eq!(total, 20);
/// # Ok::<(), anyhow::Error>(())
/// ```
///
/// Pairs keep a key with each handle:
///
/// ```
/// use concurrent_futures::{ThreadPoolExecutor, as_completed};
///
/// let pool = ThreadPoolExecutor::new();
/// let jobs = ["br", "cn", "in"].map(|cc| (cc, pool.submit(move || cc.len()).unwrap()));
/// for done in as_completed(jobs, None) {
///     let (cc, handle) = done?;
///     assert_eq!(handle.result()?, cc.len());
/// }
/// # Ok::<(), anyhow::Error>(())
/// ```
pub fn as_completed<I, H>(handles: I, timeout: Option<Duration>) -> AsCompleted<H>
where
    I: IntoIterator<Item = H>,
    H: AsHandle,
{
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    let waiter = Waiter::new();
    let mut seen = HashSet::new();
    let mut slots = Vec::new();
    let mut ready = VecDeque::new();
    for handle in handles {
        let shared = &handle.as_handle().shared;
        if !seen.insert(Arc::as_ptr(shared).cast::<()>()) {
            continue;
        }
        let token = slots.len();
        if !shared.add_waiter(&waiter, token) {
            ready.push_back(token);
        }
        slots.push(Some(handle));
    }
    AsCompleted {
        remaining: slots.len(),
        total: slots.len(),
        slots,
        ready,
        waiter,
        deadline,
        timeout,
        finished: false,
        tokens: Vec::new(),
    }
}

/// The iterator returned by [`as_completed`].
pub struct AsCompleted<H: AsHandle> {
    slots: Vec<Option<H>>,
    ready: VecDeque<usize>,
    waiter: Arc<Waiter>,
    deadline: Option<Instant>,
    timeout: Option<Duration>,
    total: usize,
    remaining: usize,
    finished: bool,
    tokens: Vec<usize>,
}

impl<H: AsHandle> AsCompleted<H> {
    /// The handles not yielded yet, in the order they were given.
    pub fn into_pending(mut self) -> Vec<H> {
        self.detach();
        self.slots.iter_mut().filter_map(Option::take).collect()
    }

    /// Removes this call's waiter from every future not yielded.
    fn detach(&mut self) {
        for handle in self.slots.iter().flatten() {
            handle.as_handle().shared.remove_waiter(&self.waiter);
        }
    }
}

impl<H: AsHandle> Iterator for AsCompleted<H> {
    type Item = Result<H, AsCompletedTimeout>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(token) = self.ready.pop_front() {
                if let Some(handle) = self.slots.get_mut(token).and_then(Option::take) {
                    self.remaining -= 1;
                    return Some(Ok(handle));
                }
                continue;
            }
            if self.remaining == 0 || self.finished {
                return None;
            }
            let mut tokens = std::mem::take(&mut self.tokens);
            let got = self.waiter.take(self.deadline, &mut tokens);
            self.ready.extend(tokens.drain(..));
            self.tokens = tokens;
            if !got {
                self.finished = true;
                self.detach();
                return Some(Err(AsCompletedTimeout {
                    unfinished: self.remaining,
                    total: self.total,
                    timeout: self.timeout.unwrap_or(Duration::MAX),
                }));
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.ready.len(), Some(self.remaining + 1))
    }
}

/// [`as_completed`] for async code: a [`Stream`] of the handles as their futures finish
/// (or are cancelled), without blocking a thread. Bound it with your runtime's timer
/// (`tokio::time::timeout` around `next()`), as asyncio code does with `wait_for`.
///
/// # Examples
///
/// ```
/// use concurrent_futures::{ThreadPoolExecutor, as_completed_stream};
/// use futures_util::StreamExt;
///
/// # tokio::runtime::Builder::new_current_thread().build()?.block_on(async {
/// let pool = ThreadPoolExecutor::new();
/// let handles: Vec<_> = (1..=3).map(|i| pool.submit(move || i * 10).unwrap()).collect();
/// let mut total = 0;
/// let mut done = as_completed_stream(handles);
/// while let Some(handle) = done.next().await {
///     total += handle.await?;
/// }
/// assert_eq!(total, 60);
/// # Ok::<(), anyhow::Error>(())
/// # })?;
/// # Ok::<(), anyhow::Error>(())
/// ```
pub fn as_completed_stream<I, H>(handles: I) -> AsCompletedStream<H>
where
    I: IntoIterator<Item = H>,
    H: AsHandle,
{
    AsCompletedStream {
        inner: as_completed(handles, None),
    }
}

/// The stream returned by [`as_completed_stream`].
pub struct AsCompletedStream<H: AsHandle> {
    inner: AsCompleted<H>,
}

impl<H: AsHandle> AsCompletedStream<H> {
    /// The handles not yielded yet, in the order they were given.
    pub fn into_pending(self) -> Vec<H> {
        self.inner.into_pending()
    }
}

impl<H: AsHandle> Unpin for AsCompletedStream<H> {}

impl<H: AsHandle> Stream for AsCompletedStream<H> {
    type Item = H;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<H>> {
        let this = &mut self.get_mut().inner;
        loop {
            if let Some(token) = this.ready.pop_front() {
                if let Some(handle) = this.slots.get_mut(token).and_then(Option::take) {
                    this.remaining -= 1;
                    return Poll::Ready(Some(handle));
                }
                continue;
            }
            if this.remaining == 0 {
                return Poll::Ready(None);
            }
            let mut tokens = std::mem::take(&mut this.tokens);
            let got = this.waiter.poll_take(cx, &mut tokens);
            this.ready.extend(tokens.drain(..));
            this.tokens = tokens;
            if !got {
                return Poll::Pending;
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (self.inner.ready.len(), Some(self.inner.remaining))
    }
}

impl<H: AsHandle> fmt::Debug for AsCompletedStream<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompletedStream")
            .field("total", &self.inner.total)
            .field("remaining", &self.inner.remaining)
            .finish_non_exhaustive()
    }
}

impl<H: AsHandle> Drop for AsCompleted<H> {
    fn drop(&mut self) {
        self.detach();
    }
}

impl<H: AsHandle> fmt::Debug for AsCompleted<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AsCompleted")
            .field("total", &self.total)
            .field("remaining", &self.remaining)
            .field("ready", &self.ready.len())
            .finish_non_exhaustive()
    }
}
