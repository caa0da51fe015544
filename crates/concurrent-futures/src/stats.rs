//! [`PoolStats`]: what a pool is doing, cheap enough to poll from a progress bar.

/// A snapshot of a pool's work, from [`ThreadPoolExecutor::stats`](crate::ThreadPoolExecutor::stats).
///
/// Counters are read one after another without stopping the pool, so a snapshot taken
/// while tasks complete may be off by the tasks that completed while it was read; each
/// counter only grows, except `queued`, `running` and `workers`. A progress bar polls
/// [`done`](Self::done).
///
/// Counts are of the pool's tasks: a `submit` is one, a `map` chunk is one (or, for the
/// thread pool's shared chunks, one per worker that drains it). A task cancelled while it
/// waits in the queue stays in `queued` until a worker reaches it (or a shutdown drains
/// the queue), and only then counts as `cancelled`: counting it at the `cancel()` would
/// cost every task a pointer to its pool.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolStats {
    /// Tasks waiting for a worker.
    pub queued: usize,
    /// Tasks a worker runs now.
    pub running: usize,
    /// Tasks that returned (whatever they returned, `Ok` or `Err`).
    pub completed: usize,
    /// Tasks that panicked or whose worker failed.
    pub failed: usize,
    /// Tasks cancelled: before they started, or cooperatively while running.
    pub cancelled: usize,
    /// Worker threads or processes alive.
    pub workers: usize,
}

impl PoolStats {
    /// Tasks that ended, in any way: `completed + failed + cancelled`.
    pub fn done(&self) -> usize {
        self.completed + self.failed + self.cancelled
    }
}
