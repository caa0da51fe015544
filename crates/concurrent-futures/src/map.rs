//! The lazy, bounded `map` shared by both pools: ordered ([`Map`]) and in completion
//! order ([`MapUnordered`]).
//!
//! The input is pulled on the consumer's thread, batched into chunks and submitted
//! through a [`ChunkSubmit`], with at most `window` chunks in flight. A panicking item
//! is caught and recorded at its position while the rest of its chunk goes on. With an
//! explicit `chunksize`, a chunk is one task that runs its items one after another
//! (Python's semantics). With automatic chunking, the chunk size follows the measured
//! cost of one call so that a chunk takes about [`AUTO_TARGET_NANOS`]: tiny calls are
//! batched by the thousand, slow calls (I/O) go one per task.
//!
//! # Slow items after fast ones (issue 12)
//!
//! The size is learnt from chunks already back, so when calls turn slow the chunk
//! in flight was sized for fast ones: twenty slow calls after a thousand fast ones
//! used to land in one chunk and run one after another on one worker while the others
//! idled. An automatic chunk must not serialise items that idle workers could run.
//!
//! - **Thread pool: shared chunks.** An automatic chunk is cut into blocks and
//!   submitted as a [`SharedChunk`] with one drainer task per worker (at most one per
//!   block): drainers claim the next block until none is left, so idle workers take the
//!   remaining blocks of a running chunk (work stealing of the chunk's tail). What
//!   holds by construction: while a block of a chunk is unclaimed, no worker of the
//!   pool is idle (a drainer leaves only when nothing is unclaimed, so the chunk's other
//!   drainers are queued or running). How fine the blocks are is the tuning: in the
//!   input's last chunk a block takes at most `ceil(left / (2 * drainers))` of the
//!   chunk's items left, so its last items are blocks of one; once calls are known to
//!   take [`BLOCK_MAX_NANOS`] or more, every block is one item; before the last chunk,
//!   a chunk of calls of known cost is one block, because later chunks keep idle
//!   workers busy and every block costs tiny calls throughput. So an item waits behind
//!   another only inside a block cut while the calls measured before were fast (before
//!   the last chunk, that is a whole chunk, and only the next chunks run beside it).
//!   Claiming every item alone would remove that too, but an atomic claim per item
//!   costs more than a tiny call and its hand-off together.
//! - **Process pool: bounded chunks.** A chunk is one message to one worker and cannot
//!   be shared once written to its pipe. When the input's `size_hint` gives an upper
//!   bound, an automatic chunk takes at most `ceil(left / (SPREAD * workers))` of the
//!   items left, so the input is spread over many more chunks than workers and its
//!   last `SPREAD * workers` items go one per chunk; and while those last items are
//!   submitted, at most `workers` chunks are in flight, and the pool writes a task to
//!   the worker with the fewest tasks queued. What holds: none of the input's last
//!   `SPREAD * workers` items is queued behind another chunk (when the map is the
//!   pool's only work), so they run on every idle worker. Earlier items can wait
//!   behind a slow chunk in a worker's pipe (the pipelining that hides the round trip
//!   of tiny tasks) and inside their own chunk, for as long as the slow calls ahead of
//!   them; without an upper bound in `size_hint` nothing bounds the chunks but the
//!   measured cost. The chunk size follows each chunk's measured cost, so it shrinks
//!   as soon as a chunk comes back slower.
//!
//! [`Map`] and [`MapUnordered`] are `Send` when the input iterator and the results are
//! (the submitter is boxed as `dyn ChunkSubmit + Send`), so a lazy map can be returned,
//! consumed on another thread or held across an `.await` in a spawned task. They are not
//! `Sync`, and need not be: an iterator advances through `&mut self`, so a shared
//! reference to one is of no use to another thread.

use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};

use crate::error::{
    FutureError, MapError, MapItemError, PanicError, ResultTimeoutError, WorkerError,
    WorkerErrorKind,
};
use crate::future::{self, FutureHandle, Promise};
use crate::sync::{AtomicBool, Mutex, Ordering};

/// The work one automatic chunk aims for, in nanoseconds.
pub(crate) const AUTO_TARGET_NANOS: u64 = 100_000;
/// The largest automatic chunk.
pub(crate) const AUTO_MAX_CHUNK: usize = 16_384;
/// The most work one block of a shared chunk holds at the measured cost of a call:
/// once calls are known to be slow, each is a block of its own.
const BLOCK_MAX_NANOS: u64 = AUTO_TARGET_NANOS / 4;
/// For a pool that cannot share chunks: an automatic chunk takes at most `1 / (SPREAD *
/// workers)` of the items left, so the last `SPREAD * workers` items go one per chunk.
const SPREAD: usize = 4;
/// The least work one block of a shared chunk holds at the measured cost of a call,
/// except in the input's last chunk: as much as a whole automatic chunk, so that a
/// chunk before it is one block when the cost is known (each block costs a claim, a
/// part and often a drainer's wake-up, which tiny calls feel, and while more chunks
/// follow an idle worker takes one of those).
const BLOCK_MIN_NANOS: u64 = AUTO_TARGET_NANOS;

/// Options of `map`, `map_with` and `map_unordered`.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use concurrent_futures::MapOptions;
///
/// let options = MapOptions::new()
///     .window(8)                        // at most 8 chunks in flight
///     .chunksize(16)                    // 16 items per task (default: adaptive)
///     .timeout(Duration::from_secs(5)); // measured from the call to map
/// # let _ = options;
/// ```
#[derive(Debug, Clone, Default)]
#[must_use]
pub struct MapOptions {
    window: Option<usize>,
    chunksize: Option<usize>,
    timeout: Option<Duration>,
}

impl MapOptions {
    /// The defaults: a window of twice the worker count, adaptive chunks, no timeout.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many chunks may be in flight (submitted and not yet consumed). Zero is refused.
    pub fn window(mut self, chunks: usize) -> Self {
        self.window = Some(chunks);
        self
    }

    /// A fixed number of items per task, Python's `chunksize`. Zero is refused. Without
    /// it the size adapts to the measured cost of a call.
    pub fn chunksize(mut self, items: usize) -> Self {
        self.chunksize = Some(items);
        self
    }

    /// A deadline for the whole map, measured from the call. A timeout too large to add
    /// to the current time means no deadline.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// The result of one chunk: the successful values in order and the failures with
/// their positions in the chunk.
#[derive(Debug)]
pub(crate) struct ChunkOutput<R> {
    pub(crate) values: Vec<R>,
    pub(crate) failures: Vec<(usize, FutureError)>,
    pub(crate) nanos_per_item: u64,
}

impl<R> ChunkOutput<R> {
    /// Runs `f` on each item of `chunk`, catching each panic at its position.
    pub(crate) fn run<A, F: Fn(A) -> R + ?Sized>(chunk: Vec<A>, f: &F) -> Self {
        let start = Instant::now();
        let len = chunk.len();
        let mut failures = Vec::new();
        let mut position = 0;
        // `into_iter().filter_map(..).collect()` runs in place when `A` and `R` have the
        // same layout (std reuses the chunk's buffer): no second allocation, and the
        // results stay in the cache lines the items came through.
        let values: Vec<R> = chunk
            .into_iter()
            .filter_map(|item| {
                let at = position;
                position += 1;
                catch_unwind(AssertUnwindSafe(|| f(item)))
                    .map_err(|payload| {
                        failures.push((at, FutureError::Panicked(PanicError::new(payload))));
                    })
                    .ok()
            })
            .collect();
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        Self {
            values,
            failures,
            nanos_per_item: nanos / len.max(1) as u64,
        }
    }
}

/// A finished chunk as the iterators take it: the successful values in input order,
/// in one part per block (so that blocks run by several tasks need no copy into one
/// vector), and the failures with their positions in the chunk.
#[derive(Debug)]
pub(crate) struct ChunkResults<R> {
    pub(crate) parts: Vec<Vec<R>>,
    pub(crate) failures: Vec<(usize, FutureError)>,
    pub(crate) nanos_per_item: u64,
}

impl<R> From<ChunkOutput<R>> for ChunkResults<R> {
    fn from(output: ChunkOutput<R>) -> Self {
        Self {
            parts: vec![output.values],
            failures: output.failures,
            nanos_per_item: output.nanos_per_item,
        }
    }
}

/// A chunk of input items on its way to a pool.
#[derive(Debug)]
pub(crate) enum Chunk<A> {
    /// One task runs every item: an explicit `chunksize`, Python's semantics, or a pool
    /// that cannot share a chunk between workers.
    Task(Vec<A>),
    /// An automatic chunk cut into blocks, in input order, for a [`SharedChunk`].
    Shared(Vec<Vec<A>>),
}

impl<A> Chunk<A> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Self::Task(items) => items.len(),
            Self::Shared(blocks) => blocks.iter().map(Vec::len).sum(),
        }
    }

    /// Every item in one vector, in order.
    pub(crate) fn into_items(self) -> Vec<A> {
        match self {
            Self::Task(items) => items,
            Self::Shared(mut blocks) if blocks.len() == 1 => blocks.pop().unwrap_or_default(),
            Self::Shared(blocks) => blocks.into_iter().flatten().collect(),
        }
    }
}

/// Submits one chunk of a map to a pool.
pub(crate) trait ChunkSubmit<A, R> {
    /// Submits `chunk`: a [`Chunk::Task`] as one task, a [`Chunk::Shared`] (only made
    /// for a pool that [`shares_chunks`](Self::shares_chunks)) as a [`SharedChunk`].
    fn submit_chunk(&self, chunk: Chunk<A>) -> Result<FutureHandle<ChunkResults<R>>, MapError>;

    /// Whether idle workers can take the unstarted items of a running automatic chunk
    /// (a [`SharedChunk`]). When not, the feeder bounds automatic chunks instead.
    fn shares_chunks(&self) -> bool;

    /// How many tasks the pool runs at once.
    fn workers(&self) -> usize;
}

/// An automatic chunk that several tasks (its drainers, one per worker at most) empty
/// together: each claims the next block of the chunk, runs it, records its results and
/// claims again until no block is left. The last block to finish completes the
/// chunk's future, with one part per block, in input order.
///
/// This is what keeps a pool's workers busy while items wait in a chunk: a drainer only
/// leaves when no block is unclaimed, so while a block waits every drainer is either
/// queued (a worker that runs out of work takes it) or running. How the feeder cuts
/// the blocks, and what that leaves, is in the module documentation.
pub(crate) struct SharedChunk<A, R, F: ?Sized> {
    f: Arc<F>,
    /// Everything the drainers share, taken for a claim and for recording a block.
    claims: Mutex<Claims<A, R>>,
    /// Set when the chunk's future is cancelled while it runs (the map was dropped):
    /// drainers stop claiming. Set by the cancel path's callback, read by the drainers.
    stop: Arc<AtomicBool>,
}

/// The state of a [`SharedChunk`], under its lock.
struct Claims<A, R> {
    /// The blocks nobody claimed yet, in input order, with the chunk position of their
    /// first item.
    unclaimed: VecDeque<(usize, Vec<A>)>,
    len: usize,
    /// Items whose results are not recorded yet (unclaimed or in a running block).
    unfinished: usize,
    /// Total run time of the finished blocks.
    nanos: u64,
    /// The finished blocks' values, by chunk position of the block's first item.
    parts: Vec<(usize, Vec<R>)>,
    failures: Vec<(usize, FutureError)>,
    /// Taken by the drainer that records the last block.
    promise: Option<Promise<ChunkResults<R>>>,
    /// Whether a drainer ran (the first one moves the future to running).
    started: bool,
}

impl<A, R, F> SharedChunk<A, R, F>
where
    F: Fn(A) -> R + ?Sized,
{
    /// A shared chunk of `blocks`, and the future of its results.
    pub(crate) fn new(
        blocks: Vec<Vec<A>>,
        f: Arc<F>,
    ) -> (Arc<Self>, FutureHandle<ChunkResults<R>>) {
        let (promise, handle) = future::pending();
        let mut start = 0;
        let unclaimed: VecDeque<(usize, Vec<A>)> = blocks
            .into_iter()
            .map(|block| {
                let at = start;
                start += block.len();
                (at, block)
            })
            .collect();
        let shared = Arc::new(Self {
            f,
            claims: Mutex::new(Claims {
                parts: Vec::with_capacity(unclaimed.len()),
                unclaimed,
                len: start,
                unfinished: start,
                nanos: 0,
                failures: Vec::new(),
                promise: Some(promise),
                started: false,
            }),
            stop: Arc::new(AtomicBool::new(false)),
        });
        (shared, handle)
    }

    /// The body of one drainer task: claims and runs blocks until none is unclaimed.
    pub(crate) fn drain(&self) {
        loop {
            let (start, block) = {
                let mut claims = self.claims.lock();
                if !claims.started {
                    claims.started = true;
                    self.start(&claims);
                }
                if self.stop.load(Ordering::Acquire) {
                    // Cancelled: the unclaimed items are dropped without running.
                    let dropped: usize = claims.unclaimed.drain(..).map(|(_, b)| b.len()).sum();
                    claims.unfinished -= dropped;
                }
                let Some(claimed) = claims.unclaimed.pop_front() else {
                    let done = Self::finish_if_done(&mut claims);
                    drop(claims);
                    if let Some((promise, results)) = done {
                        promise.complete(Ok(results));
                    }
                    return;
                };
                claimed
            };
            let size = block.len();
            let output = ChunkOutput::run(block, &*self.f);
            let done = {
                let mut claims = self.claims.lock();
                claims.nanos = claims
                    .nanos
                    .saturating_add(output.nanos_per_item.saturating_mul(size as u64));
                claims.failures.extend(
                    output
                        .failures
                        .into_iter()
                        .map(|(at, error)| (start + at, error)),
                );
                claims.parts.push((start, output.values));
                claims.unfinished -= size;
                Self::finish_if_done(&mut claims)
            };
            if let Some((promise, results)) = done {
                promise.complete(Ok(results));
            }
        }
    }

    /// The first drainer moves the future to running, so that cancelling it (dropping
    /// the map) stops the claims; a future already cancelled stops them at once.
    fn start(&self, claims: &Claims<A, R>) {
        let running = claims
            .promise
            .as_ref()
            .is_some_and(|promise| promise.set_running());
        let installed = running && {
            let stop = Arc::new(StopClaims(Arc::clone(&self.stop)));
            claims
                .promise
                .as_ref()
                .is_some_and(|promise| promise.set_stop_running(stop))
        };
        if !installed {
            self.stop.store(true, Ordering::Release);
        }
    }

    /// When every item's result is in: the promise and the chunk's results, to complete
    /// outside the lock.
    fn finish_if_done(
        claims: &mut Claims<A, R>,
    ) -> Option<(Promise<ChunkResults<R>>, ChunkResults<R>)> {
        if claims.unfinished != 0 {
            return None;
        }
        let promise = claims.promise.take()?;
        let mut parts = std::mem::take(&mut claims.parts);
        parts.sort_unstable_by_key(|(start, _)| *start);
        let mut failures = std::mem::take(&mut claims.failures);
        failures.sort_unstable_by_key(|(at, _)| *at);
        let results = ChunkResults {
            parts: parts.into_iter().map(|(_, part)| part).collect(),
            failures,
            nanos_per_item: claims.nanos / claims.len.max(1) as u64,
        };
        Some((promise, results))
    }
}

/// Cancelling a shared chunk (or dropping its map) stops the claims of blocks not yet
/// taken; blocks that run finish.
struct StopClaims(Arc<AtomicBool>);

impl future::StopRunning for StopClaims {
    fn can_stop(&self) -> bool {
        true
    }

    fn stop(&self) {
        self.0.store(true, Ordering::Release);
    }

    fn abandon(&self) {
        self.0.store(true, Ordering::Release);
    }
}

impl<A, R, F: ?Sized> Drop for SharedChunk<A, R, F> {
    fn drop(&mut self) {
        // No drainer ran (the pool cancelled them all at shutdown): the chunk was
        // cancelled, as a one-task chunk would have been.
        if let Some(promise) = self.claims.lock().promise.take() {
            promise.cancel();
        }
    }
}

/// The chunk size: fixed, or adapting to the measured cost of a call.
#[derive(Debug, Clone, Copy)]
enum Chunking {
    Fixed(usize),
    /// The size, and the measured cost of a call (0 before the first chunk is back).
    Auto {
        size: usize,
        nanos: u64,
    },
}

impl Chunking {
    fn size(self) -> usize {
        match self {
            Self::Fixed(size) | Self::Auto { size, .. } => size,
        }
    }

    fn observe(&mut self, nanos_per_item: u64) {
        if let Self::Auto { size, nanos } = self {
            let fit = AUTO_TARGET_NANOS / nanos_per_item.max(1);
            *size = usize::try_from(fit)
                .unwrap_or(AUTO_MAX_CHUNK)
                .clamp(1, AUTO_MAX_CHUNK);
            *nanos = nanos_per_item.max(1);
        }
    }

    /// Takes a finished chunk of `len` items for the iterators (learning the cost of a call
    /// from it): its values to yield straight when all succeeded, otherwise a drain.
    fn load<R>(&mut self, finished: Result<ChunkResults<R>, FutureError>, len: usize) -> Loaded<R> {
        match finished {
            Ok(results) => {
                self.observe(results.nanos_per_item);
                ChunkDrain::split(results, len)
            }
            Err(error) => (
                Vec::new().into_iter(),
                Vec::new().into_iter(),
                Some(ChunkDrain::failed(error, len)),
            ),
        }
    }
}

/// A loaded chunk: the values to yield now, the next parts, or a drain when some item
/// failed.
type Loaded<R> = (
    std::vec::IntoIter<R>,
    std::vec::IntoIter<Vec<R>>,
    Option<ChunkDrain<R>>,
);

/// What both map iterators share: the input, the submitter and the options.
struct Feeder<'a, I: Iterator, R> {
    submitter: Box<dyn ChunkSubmit<I::Item, R> + Send + 'a>,
    source: I,
    exhausted: bool,
    chunking: Chunking,
    window: usize,
    timeout: Option<Duration>,
    deadline: Option<Instant>,
    /// Why submitting stopped early; reported after the chunks in flight.
    stopped: Option<MapError>,
}

impl<'a, I: Iterator, R> Feeder<'a, I, R> {
    fn new(
        submitter: Box<dyn ChunkSubmit<I::Item, R> + Send + 'a>,
        source: I,
        default_window: usize,
        options: MapOptions,
    ) -> Result<Self, MapError> {
        let window = options.window.unwrap_or(default_window);
        if window == 0 {
            return Err(MapError::InvalidOption("window must be at least 1"));
        }
        let chunking = match options.chunksize {
            Some(0) => return Err(MapError::InvalidOption("chunksize must be at least 1")),
            Some(n) => Chunking::Fixed(n),
            None => Chunking::Auto { size: 1, nanos: 0 },
        };
        Ok(Self {
            submitter,
            source,
            exhausted: false,
            chunking,
            window,
            timeout: options.timeout,
            deadline: options.timeout.and_then(|t| Instant::now().checked_add(t)),
            stopped: None,
        })
    }

    /// Takes the next chunk from the input and submits it; `None` when the input is
    /// exhausted or submitting failed (recorded in `stopped`).
    fn submit_next(&mut self) -> Option<(FutureHandle<ChunkResults<R>>, usize)> {
        if self.exhausted || self.stopped.is_some() {
            return None;
        }
        let size = self.chunk_size();
        let chunk = match self.chunking {
            Chunking::Auto { nanos, .. } if self.submitter.shares_chunks() => {
                Chunk::Shared(self.blocks(size, nanos))
            }
            _ => {
                let items: Vec<I::Item> = self.source.by_ref().take(size).collect();
                if items.len() < size {
                    self.exhausted = true;
                }
                Chunk::Task(items)
            }
        };
        let len = chunk.len();
        if len == 0 {
            return None;
        }
        match self.submitter.submit_chunk(chunk) {
            Ok(handle) => Some((handle, len)),
            Err(e) => {
                self.stopped = Some(e);
                None
            }
        }
    }

    /// Takes the next automatic chunk of `size` items for a pool that shares chunks, cut
    /// into blocks (see [`SharedChunk`]): a block takes at most `ceil(left / (2 *
    /// workers))` of the chunk's items left and at most [`BLOCK_MAX_NANOS`] of work at
    /// `nanos` a call; outside the input's last chunk, at least [`BLOCK_MIN_NANOS`].
    fn blocks(&mut self, size: usize, nanos: u64) -> Vec<Vec<I::Item>> {
        let workers = self.workers();
        // The input's last chunk (as far as `size_hint` tells) gets no lower bound, so
        // that its last items are blocks of one: after it no chunk is left to keep an
        // idle worker busy. A chunk that would leave less than itself behind takes the
        // rest too: a short chunk after it would leave this one's last items (the
        // input's last but a few) in coarse blocks.
        let hint = self.source.size_hint().1;
        let last = hint.is_some_and(|left| left < size.saturating_mul(2));
        let planned = match hint {
            Some(left) if last => left,
            Some(left) => left.min(size),
            None => size,
        };
        let mut blocks = Vec::new();
        let mut collected = 0;
        for block in plan_blocks(planned, workers, nanos, last) {
            let items: Vec<I::Item> = self.source.by_ref().take(block).collect();
            collected += items.len();
            let short = items.len() < block;
            if !items.is_empty() {
                blocks.push(items);
            }
            if short {
                // The input ended early (it did not say when): this is its last chunk,
                // and its blocks are cut again for that, the one time they are copied.
                self.exhausted = true;
                let mut items = Chunk::Shared(blocks).into_items().into_iter();
                return plan_blocks(collected, workers, nanos, true)
                    .map(|block| items.by_ref().take(block).collect())
                    .collect();
            }
        }
        if planned < size {
            // `size_hint` said the input ends here; it is only a hint, so whatever
            // follows still goes in this chunk.
            let rest: Vec<I::Item> = self.source.by_ref().take(size - planned).collect();
            self.exhausted = rest.len() < size - planned;
            if !rest.is_empty() {
                blocks.push(rest);
            }
        }
        blocks
    }

    /// The size of the next chunk. An automatic chunk for a pool that cannot share a
    /// chunk's items between workers (the process pool: a chunk is one message to one
    /// worker) is also kept to `ceil(left / (SPREAD * workers))` items when the input
    /// says how many are left (an upper bound in `size_hint`), so the input is spread
    /// over many more chunks than workers and its last `SPREAD * workers` items go one
    /// per chunk.
    fn chunk_size(&self) -> usize {
        let size = self.chunking.size();
        match self.bounded_left() {
            Some(left) => size.min(left.div_ceil(self.workers() * SPREAD).max(1)),
            None => size,
        }
    }

    /// How many chunks may be in flight now. In the last `SPREAD * workers` items of an
    /// automatic map on a pool that cannot share chunks, no more than `workers`: a chunk
    /// is then only submitted while fewer than `workers` are unfinished, so some worker
    /// has nothing queued, and the pool hands a new task to the worker with the fewest
    /// queued (see the process pool's writer), so that none of these last items is
    /// queued behind another chunk.
    fn window_now(&self) -> usize {
        match self.bounded_left() {
            Some(left) if left <= SPREAD * self.workers() => self.window.min(self.workers()),
            _ => self.window,
        }
    }

    /// How many input items are left at most, for an automatic map on a pool that
    /// cannot share chunks between workers; `None` otherwise or when unknown.
    fn bounded_left(&self) -> Option<usize> {
        if !matches!(self.chunking, Chunking::Auto { .. }) || self.submitter.shares_chunks() {
            return None;
        }
        self.source.size_hint().1
    }

    fn workers(&self) -> usize {
        self.submitter.workers().max(1)
    }

    /// After the first fill: the error that refused the very first chunk, if nothing could
    /// be submitted (the map call then fails); otherwise it is reported after the chunks in
    /// flight.
    fn refused_at_start(&mut self, nothing_in_flight: bool) -> Result<(), MapError> {
        match self.stopped.take() {
            Some(e) if nothing_in_flight => Err(e),
            stopped => {
                self.stopped = stopped;
                Ok(())
            }
        }
    }

    /// The last item of a map whose submitting stopped early: why it stopped.
    fn stopped_item(&mut self) -> Option<Result<R, MapItemError>> {
        self.stopped.take().map(|e| Err(MapItemError::Stopped(e)))
    }

    fn timeout_error(&self) -> MapItemError {
        MapItemError::Timeout(self.timeout.unwrap_or(Duration::MAX))
    }
}

/// The block sizes of a shared chunk of `len` items (see [`Feeder::blocks`]).
fn plan_blocks(len: usize, workers: usize, nanos: u64, last: bool) -> impl Iterator<Item = usize> {
    let per_call = nanos.max(1);
    let most = usize::try_from(BLOCK_MAX_NANOS / per_call).unwrap_or(usize::MAX);
    let least = if last || nanos == 0 {
        1
    } else {
        usize::try_from(BLOCK_MIN_NANOS / per_call).unwrap_or(usize::MAX)
    };
    let mut left = len;
    std::iter::from_fn(move || {
        if left == 0 {
            return None;
        }
        let share = left.div_ceil(workers.max(1) * 2);
        let block = share.max(least).min(most).clamp(1, left);
        left -= block;
        Some(block)
    })
}

/// Yields one chunk's items in order.
struct ChunkDrain<R> {
    values: std::vec::IntoIter<R>,
    failures: VecDeque<(usize, FutureError)>,
    whole: Option<FutureError>,
    position: usize,
    len: usize,
}

impl<R> ChunkDrain<R> {
    fn new(results: ChunkResults<R>, len: usize) -> Self {
        // Only a chunk with failures comes here: the one copy of its values is rare.
        let values: Vec<R> = results.parts.into_iter().flatten().collect();
        Self {
            values: values.into_iter(),
            failures: results.failures.into(),
            whole: None,
            position: 0,
            len,
        }
    }

    /// A chunk that failed as a whole (cancelled, broken pool): every item gets the error.
    fn failed(error: FutureError, len: usize) -> Self {
        Self {
            values: Vec::new().into_iter(),
            failures: VecDeque::new(),
            whole: Some(error),
            position: 0,
            len,
        }
    }

    /// Splits a chunk's output for the iterators: when every item succeeded (the
    /// usual case), its values, to be yielded straight; otherwise a drain.
    fn split(results: ChunkResults<R>, len: usize) -> Loaded<R> {
        let values: usize = results.parts.iter().map(Vec::len).sum();
        if results.failures.is_empty() && values == len {
            let mut parts = results.parts.into_iter();
            let first = parts.next().unwrap_or_default();
            (first.into_iter(), parts, None)
        } else {
            (
                Vec::new().into_iter(),
                Vec::new().into_iter(),
                Some(Self::new(results, len)),
            )
        }
    }

    fn next(&mut self) -> Option<Result<R, MapItemError>> {
        if self.position == self.len {
            return None;
        }
        let position = self.position;
        self.position += 1;
        if let Some(error) = &self.whole {
            return Some(Err(MapItemError::Failed(error.describe())));
        }
        if self.failures.front().is_some_and(|(at, _)| *at == position) {
            return self
                .failures
                .pop_front()
                .map(|(_, e)| Err(MapItemError::Failed(e)));
        }
        Some(self.values.next().ok_or_else(|| {
            MapItemError::Failed(FutureError::WorkerFailed(WorkerError::new(
                WorkerErrorKind::Protocol,
                "a map chunk returned fewer results than items",
            )))
        }))
    }
}

/// The iterator of an ordered `map`: yields `Ok(value)` or the item's
/// [`MapItemError`], in input order.
///
/// Dropping it cancels the chunks that have not started; the running ones finish (a
/// process pool does not kill their workers) and their results are thrown away,
/// Python's rule for a dropped `map` iterator.
pub struct Map<'a, I: Iterator, R> {
    feeder: Feeder<'a, I, R>,
    in_flight: VecDeque<(FutureHandle<ChunkResults<R>>, usize)>,
    /// The values of the current part when all the chunk's items succeeded (the hot
    /// path).
    ready: std::vec::IntoIter<R>,
    /// The chunk's parts after the current one.
    parts: std::vec::IntoIter<Vec<R>>,
    /// The current chunk when some of its items failed.
    current: Option<ChunkDrain<R>>,
    finished: bool,
}

impl<'a, I: Iterator, R> Map<'a, I, R> {
    pub(crate) fn new(
        submitter: Box<dyn ChunkSubmit<I::Item, R> + Send + 'a>,
        source: I,
        default_window: usize,
        options: MapOptions,
    ) -> Result<Self, MapError> {
        let mut map = Self {
            feeder: Feeder::new(submitter, source, default_window, options)?,
            in_flight: VecDeque::new(),
            ready: Vec::new().into_iter(),
            parts: Vec::new().into_iter(),
            current: None,
            finished: false,
        };
        map.fill();
        map.feeder.refused_at_start(map.in_flight.is_empty())?;
        Ok(map)
    }

    fn fill(&mut self) {
        while self.in_flight.len() < self.feeder.window_now() {
            match self.feeder.submit_next() {
                Some(entry) => self.in_flight.push_back(entry),
                None => break,
            }
        }
    }

    fn cancel_all(&mut self) {
        for (handle, _) in self.in_flight.drain(..) {
            handle.abandon();
        }
    }
}

impl<I: Iterator, R> Iterator for Map<'_, I, R> {
    type Item = Result<R, MapItemError>;

    fn next(&mut self) -> Option<Self::Item> {
        // The hot path, kept small enough to inline.
        if let Some(value) = self.ready.next() {
            return Some(Ok(value));
        }
        self.next_slow()
    }

    // Internal iteration (`for_each`, `sum`, `count`, ...) takes a whole chunk's values in
    // a tight loop instead of one `next` call per item.
    fn fold<B, G>(mut self, init: B, mut g: G) -> B
    where
        G: FnMut(B, Self::Item) -> B,
    {
        let mut acc = init;
        loop {
            acc = self
                .ready
                .by_ref()
                .fold(acc, |acc, value| g(acc, Ok(value)));
            match self.next_slow() {
                Some(item) => acc = g(acc, item),
                None => return acc,
            }
        }
    }
}

impl<I: Iterator, R> Map<'_, I, R> {
    /// Collects every result in input order, stopping at the first item that failed
    /// (Python's `list(executor.map(f, items))`).
    ///
    /// The same as `.collect::<Result<Vec<R>, _>>()`, but each chunk's values are moved
    /// into the vector at once rather than one `next` call per item: for tiny calls it is
    /// several times faster. After a failure, the chunks that have not started are
    /// cancelled (the map is dropped).
    ///
    /// # Errors
    ///
    /// The first item's [`MapItemError`], in input order.
    ///
    /// # Examples
    ///
    /// ```
    /// use concurrent_futures::ThreadPoolExecutor;
    ///
    /// let pool = ThreadPoolExecutor::new();
    /// let squares = pool.map(|x: u64| x * x, 0..1000)?.try_collect_vec()?;
    /// assert_eq!(squares[999], 998_001);
    /// # Ok::<(), anyhow::Error>(())
    /// ```
    pub fn try_collect_vec(mut self) -> Result<Vec<R>, MapItemError> {
        // Room for what the input says is left, up to 16 MiB of results up front: an
        // iterator may claim `usize::MAX` items (an endless range), and the vector grows
        // past the first guess anyway.
        let most = (16 << 20) / std::mem::size_of::<R>().max(1);
        let mut out = Vec::with_capacity(self.feeder.source.size_hint().0.min(most));
        loop {
            // `Vec::extend` from an owned `vec::IntoIter` is one copy of its values.
            out.extend(std::mem::take(&mut self.ready));
            match self.next_slow() {
                Some(Ok(value)) => out.push(value),
                Some(Err(error)) => return Err(error),
                None => return Ok(out),
            }
        }
    }
}

impl<I: Iterator, R> Map<'_, I, R> {
    /// `next` at a chunk boundary or in a chunk with failures. Kept out of line so that
    /// `next`, called once per item, stays small enough to inline.
    #[inline(never)]
    fn next_slow(&mut self) -> Option<Result<R, MapItemError>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(value) = self.ready.next() {
                return Some(Ok(value));
            }
            if let Some(part) = self.parts.next() {
                self.ready = part.into_iter();
                continue;
            }
            if let Some(item) = self.current.as_mut().and_then(ChunkDrain::next) {
                return Some(item);
            }
            self.current = None;
            self.fill();
            let Some((handle, len)) = self.in_flight.pop_front() else {
                self.finished = true;
                return self.feeder.stopped_item();
            };
            let waited = match self.feeder.deadline {
                None => handle.result().map_err(ResultTimeoutError::Failed),
                Some(deadline) => {
                    handle.result_timeout(deadline.saturating_duration_since(Instant::now()))
                }
            };
            let finished = match waited {
                Ok(output) => Ok(output),
                Err(ResultTimeoutError::Failed(error)) => Err(error),
                Err(ResultTimeoutError::Timeout(handle)) => {
                    handle.abandon();
                    self.cancel_all();
                    self.finished = true;
                    return Some(Err(self.feeder.timeout_error()));
                }
            };
            (self.ready, self.parts, self.current) = self.feeder.chunking.load(finished, len);
        }
    }
}

impl<I: Iterator, R> Drop for Map<'_, I, R> {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

impl<I: Iterator, R> fmt::Debug for Map<'_, I, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("in_flight", &self.in_flight.len())
            .field("chunking", &self.feeder.chunking)
            .field("window", &self.feeder.window)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

/// The iterator of `map_unordered`: yields results as chunks complete.
///
/// Dropping it cancels the chunks that have not started; the running ones finish and
/// their results are thrown away (as for [`Map`]).
pub struct MapUnordered<'a, I: Iterator, R> {
    feeder: Feeder<'a, I, R>,
    in_flight: HashMap<u64, (FutureHandle<ChunkResults<R>>, usize)>,
    next_id: u64,
    completions: Receiver<u64>,
    notify: Sender<u64>,
    /// The values of the current part when all the chunk's items succeeded (the hot
    /// path).
    ready: std::vec::IntoIter<R>,
    /// The chunk's parts after the current one.
    parts: std::vec::IntoIter<Vec<R>>,
    /// The current chunk when some of its items failed.
    current: Option<ChunkDrain<R>>,
    finished: bool,
}

impl<'a, I: Iterator, R: Send + 'static> MapUnordered<'a, I, R> {
    pub(crate) fn new(
        submitter: Box<dyn ChunkSubmit<I::Item, R> + Send + 'a>,
        source: I,
        default_window: usize,
        options: MapOptions,
    ) -> Result<Self, MapError> {
        let (notify, completions) = crossbeam_channel::unbounded();
        let mut map = Self {
            feeder: Feeder::new(submitter, source, default_window, options)?,
            in_flight: HashMap::new(),
            next_id: 0,
            completions,
            notify,
            ready: Vec::new().into_iter(),
            parts: Vec::new().into_iter(),
            current: None,
            finished: false,
        };
        map.fill();
        map.feeder.refused_at_start(map.in_flight.is_empty())?;
        Ok(map)
    }

    fn fill(&mut self) {
        while self.in_flight.len() < self.feeder.window_now() {
            let Some((handle, len)) = self.feeder.submit_next() else {
                break;
            };
            let id = self.next_id;
            self.next_id += 1;
            let notify = self.notify.clone();
            handle.add_done_callback(move |_| {
                // The receiver lives as long as the iterator; after that nobody listens.
                let _ = notify.send(id);
            });
            self.in_flight.insert(id, (handle, len));
        }
    }
}

impl<I: Iterator, R> MapUnordered<'_, I, R> {
    fn cancel_all(&mut self) {
        for (_, (handle, _)) in self.in_flight.drain() {
            handle.abandon();
        }
    }
}

impl<I: Iterator, R: Send + 'static> Iterator for MapUnordered<'_, I, R> {
    type Item = Result<R, MapItemError>;

    fn next(&mut self) -> Option<Self::Item> {
        if let Some(value) = self.ready.next() {
            return Some(Ok(value));
        }
        self.next_slow()
    }
}

impl<I: Iterator, R: Send + 'static> MapUnordered<'_, I, R> {
    /// `next` at a chunk boundary or in a chunk with failures. Kept out of line so that
    /// `next`, called once per item, stays small enough to inline.
    #[inline(never)]
    fn next_slow(&mut self) -> Option<Result<R, MapItemError>> {
        loop {
            if self.finished {
                return None;
            }
            if let Some(value) = self.ready.next() {
                return Some(Ok(value));
            }
            if let Some(part) = self.parts.next() {
                self.ready = part.into_iter();
                continue;
            }
            if let Some(item) = self.current.as_mut().and_then(ChunkDrain::next) {
                return Some(item);
            }
            self.current = None;
            self.fill();
            if self.in_flight.is_empty() {
                self.finished = true;
                return self.feeder.stopped_item();
            }
            let id = match self.feeder.deadline {
                None => self
                    .completions
                    .recv()
                    .map_err(|_| RecvTimeoutError::Disconnected),
                Some(deadline) => self.completions.recv_deadline(deadline),
            };
            let Some((handle, len)) = id.ok().and_then(|id| self.in_flight.remove(&id)) else {
                // Only a timeout gets here: the iterator holds a sender, so the channel
                // never disconnects, and every id sent is in flight.
                self.cancel_all();
                self.finished = true;
                return Some(Err(self.feeder.timeout_error()));
            };
            (self.ready, self.parts, self.current) =
                self.feeder.chunking.load(handle.result(), len);
        }
    }
}

impl<I: Iterator, R> Drop for MapUnordered<'_, I, R> {
    fn drop(&mut self) {
        self.cancel_all();
    }
}

impl<I: Iterator, R> fmt::Debug for MapUnordered<'_, I, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapUnordered")
            .field("in_flight", &self.in_flight.len())
            .field("chunking", &self.feeder.chunking)
            .field("window", &self.feeder.window)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

#[cfg(all(test, not(cf_loom)))]
mod tests {
    use super::*;

    #[test]
    fn chunk_records_panics_at_their_positions() {
        let out = ChunkOutput::run(vec![1, 2, 3, 4, 5], &|x: i32| {
            assert!(x % 2 == 0, "odd {x}");
            x * 10
        });
        assert_eq!(out.values, vec![20, 40]);
        let positions: Vec<usize> = out.failures.iter().map(|(i, _)| *i).collect();
        assert_eq!(positions, vec![0, 2, 4]);
        let mut drain = ChunkDrain::new(out.into(), 5);
        let kinds: Vec<bool> = std::iter::from_fn(|| drain.next())
            .map(|r| r.is_ok())
            .collect();
        assert_eq!(kinds, vec![false, true, false, true, false]);
    }

    #[test]
    fn a_shared_chunk_drained_by_several_tasks_keeps_input_order() {
        let f = Arc::new(|x: u32| {
            assert!(x % 7 != 3, "item {x}");
            x * 2
        });
        let mut items = 0..1000;
        let blocks: Vec<Vec<u32>> = plan_blocks(1000, 3, 0, true)
            .map(|n| items.by_ref().take(n).collect())
            .collect();
        let (chunk, handle) = SharedChunk::new(blocks, f);
        std::thread::scope(|scope| {
            for _ in 0..3 {
                scope.spawn(|| chunk.drain());
            }
        });
        let results = handle.result().unwrap();
        let failed: Vec<usize> = results.failures.iter().map(|(at, _)| *at).collect();
        assert_eq!(failed, (0..1000).filter(|x| x % 7 == 3).collect::<Vec<_>>());
        let values: Vec<u32> = results.parts.into_iter().flatten().collect();
        let expected: Vec<u32> = (0..1000).filter(|x| x % 7 != 3).map(|x| x * 2).collect();
        assert_eq!(values, expected);
    }

    #[test]
    fn a_cancelled_shared_chunk_runs_nothing() {
        let (chunk, handle) = SharedChunk::new(
            vec![vec![1], vec![2, 3]],
            Arc::new(|_: i32| -> i32 { panic!("a cancelled chunk must not run") }),
        );
        assert!(handle.cancel());
        chunk.drain();
        assert!(handle.is_cancelled());
    }

    #[test]
    fn blocks_shrink_to_single_items_at_the_end_and_for_slow_calls() {
        let plan = |len, nanos, last| plan_blocks(len, 4, nanos, last).collect::<Vec<_>>();
        // Each block leaves items for the other drainers, so the last ones (from 2 x 4
        // left) are alone.
        let blocks = plan(1000, 0, true);
        assert_eq!(blocks.iter().sum::<usize>(), 1000);
        assert_eq!(blocks[0], 125);
        assert!(blocks.ends_with(&[1; 7]), "{blocks:?}");
        // Calls known to be slow are blocks of one.
        assert_eq!(plan(100, 50_000_000, false), vec![1; 100]);
        // Outside the input's last chunks, a chunk of tiny calls is one block.
        assert_eq!(plan(16_384, 1, false), vec![16_384]);
    }

    #[test]
    fn auto_chunking_follows_the_cost_of_a_call() {
        let mut chunking = Chunking::Auto { size: 1, nanos: 0 };
        chunking.observe(1);
        assert_eq!(chunking.size(), AUTO_MAX_CHUNK);
        chunking.observe(1_000_000_000);
        assert_eq!(chunking.size(), 1);
        chunking.observe(10_000);
        assert_eq!(chunking.size(), 10);
        let mut fixed = Chunking::Fixed(7);
        fixed.observe(1);
        assert_eq!(fixed.size(), 7);
    }
}
